//! The ScyllaDB (or Cassandra) backend, through the `scylla` crate. Schema:
//! `schemas/cql/tally.cql`; why it is shaped the way it is, is said there.
//!
//! - Every statement is prepared once, at connect, with an explicit consistency level
//!   ([`ScyllaConfig::consistency`], LOCAL_QUORUM by default; LOCAL_SERIAL for the one
//!   compare-and-set).
//! - A projector's commit is a sequence of logged batches of 16 KiB of values each (Cassandra
//!   refuses batches over `batch_size_fail_threshold`, 50 KiB by default; Scylla's is 1 MiB),
//!   rows first and the checkpoint last, everything stamped with the checkpoint offset
//!   (`USING TIMESTAMP`). Neither database isolates across partitions, so a reader can see part
//!   of a commit while it is applied, and a projector that dies mid-commit leaves rows ahead of
//!   its stored checkpoint; never behind it. Its successor replays from that checkpoint: the
//!   replayed older values carry lower stamps and lose to the newer ones, and the commit it
//!   redoes writes the same values with the same stamps, so the rows converge to the fold.
//! - A checkpoint that would go back, or a commit to a retired version, is refused after a read
//!   (not atomically: two racing writers both pass, and the timestamps still make the higher
//!   checkpoint win).
//!
//! The traits are synchronous (the embedded store is), so this backend runs its futures on a
//! small runtime of its own: call it off async workers, as Tally's services do
//! (`tally_store::bridge::blocking`).

use crate::StoreError;
use crate::projections::{self, FIRST_VERSION, ProjectionStore, Scan, Version};
use crate::sinks::SinkStore;
use crate::snapshot::SnapshotStore;
use futures::TryStreamExt;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::frame::types::{Consistency, SerialConsistency};
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::value::CqlValue;
use std::collections::BTreeMap;
use tally_core::projection::{Change, Row, RowKey};
use tally_core::{AccountId, DocKey, TenantId};

/// The schema, with `{keyspace}` and `{replication}` to fill in.
pub const SCHEMA: &str = include_str!("../../../schemas/cql/tally.cql");

/// How to reach the cluster and where Tally's tables are.
#[derive(Debug, Clone)]
pub struct ScyllaConfig {
    /// Contact points, `host:port`.
    pub nodes: Vec<String>,
    /// The keyspace holding Tally's tables ([`SCHEMA`] creates it when the schema is applied).
    pub keyspace: String,
    /// The keyspace's replication map, as CQL.
    pub replication: String,
    /// Consistency of every read and write.
    pub consistency: Consistency,
    /// Username and password, when the cluster requires them.
    pub credentials: Option<(String, String)>,
}

impl ScyllaConfig {
    /// Production defaults: replication factor 3 with `NetworkTopologyStrategy`, `LOCAL_QUORUM`
    /// reads and writes, no credentials.
    pub fn new(nodes: Vec<String>, keyspace: impl Into<String>) -> ScyllaConfig {
        ScyllaConfig {
            nodes,
            keyspace: keyspace.into(),
            replication: "{'class': 'NetworkTopologyStrategy', 'replication_factor': 3}".into(),
            consistency: Consistency::LocalQuorum,
            credentials: None,
        }
    }
}

/// The tables that hold rows, one per kind of row key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Table {
    Accounts,
    Transactions,
    Documents,
    Outcomes,
    Postings,
    Events,
    EventsByTime,
    EventsByOffset,
}

const TABLES: [Table; 8] = [
    Table::Accounts,
    Table::Transactions,
    Table::Documents,
    Table::Outcomes,
    Table::Postings,
    Table::Events,
    Table::EventsByTime,
    Table::EventsByOffset,
];

/// The timeline's partitions are UTC days.
const DAY_MS: i64 = 86_400_000;

impl Table {
    fn name(self) -> &'static str {
        match self {
            Table::Accounts => "accounts",
            Table::Transactions => "transactions",
            Table::Documents => "documents",
            // Keyed by stream too since command ids are per stream (the table `outcomes` before).
            Table::Outcomes => "command_outcomes",
            Table::Postings => "postings",
            Table::Events => "events",
            Table::EventsByTime => "events_by_time",
            Table::EventsByOffset => "events_by_offset",
        }
    }

    /// The key columns after `version`, in order.
    fn key_columns(self) -> &'static [&'static str] {
        match self {
            Table::Accounts => &["tenant", "ledger", "account"],
            Table::Transactions => &["tenant", "ledger", "tx_id"],
            Table::Documents => &["tenant", "doc_type", "doc_key"],
            Table::Outcomes => &["tenant", "command_id", "stream"],
            Table::Postings => &["tenant", "ledger", "account", "asset", "offset", "line"],
            Table::Events => &["tenant", "stream", "stream_version"],
            Table::EventsByTime => &["tenant", "day", "time_ms", "partition", "offset"],
            Table::EventsByOffset => &["tenant", "partition", "offset"],
        }
    }

    /// The table of a row key and its key column values.
    fn of(key: &RowKey) -> (Table, Vec<CqlValue>) {
        let text = |s: &str| CqlValue::Text(s.to_owned());
        match key {
            RowKey::Account { tenant, ledger, account } => {
                (Table::Accounts, vec![text(tenant.as_str()), text(ledger.as_str()), text(account.as_str())])
            }
            RowKey::Transaction { tenant, ledger, tx_id } => (
                Table::Transactions,
                vec![text(tenant.as_str()), text(ledger.as_str()), text(tx_id.as_str())],
            ),
            RowKey::Document { tenant, doc_type, key } => {
                (Table::Documents, vec![text(tenant.as_str()), text(doc_type.as_str()), text(key.as_str())])
            }
            RowKey::Outcome { tenant, command_id, stream } => (
                Table::Outcomes,
                vec![text(tenant.as_str()), text(command_id.as_str()), CqlValue::Text(stream.to_string())],
            ),
            RowKey::Posting { tenant, ledger, account, asset, offset, line } => (
                Table::Postings,
                vec![
                    text(tenant.as_str()),
                    text(ledger.as_str()),
                    text(account.as_str()),
                    CqlValue::Text(asset.to_string()),
                    CqlValue::BigInt(*offset),
                    CqlValue::Int(*line as i32),
                ],
            ),
            RowKey::Event { tenant, stream, stream_version } => (
                Table::Events,
                vec![
                    text(tenant.as_str()),
                    CqlValue::Text(stream.to_string()),
                    CqlValue::BigInt(*stream_version as i64),
                ],
            ),
            RowKey::EventAt { tenant, time_ms, partition, offset } => (
                Table::EventsByTime,
                vec![
                    text(tenant.as_str()),
                    CqlValue::BigInt(time_ms.div_euclid(DAY_MS)),
                    CqlValue::BigInt(*time_ms),
                    CqlValue::Int(*partition),
                    CqlValue::BigInt(*offset),
                ],
            ),
            RowKey::EventByOffset { tenant, partition, offset } => (
                Table::EventsByOffset,
                vec![text(tenant.as_str()), CqlValue::Int(*partition), CqlValue::BigInt(*offset)],
            ),
        }
    }
}

/// Prepared statements of one row table.
#[derive(Debug)]
struct RowStatements {
    upsert: PreparedStatement,
    delete: PreparedStatement,
    get: PreparedStatement,
    /// Every row of a version (a filtered scan: for checks and for dropping, not for serving).
    scan: PreparedStatement,
}

/// Prepared statements of [`Scan`]s, one per kind.
#[derive(Debug)]
struct ScanStatements {
    accounts: PreparedStatement,
    documents: PreparedStatement,
    statement: PreparedStatement,
    outcomes: PreparedStatement,
    stream: PreparedStatement,
    /// A tenant's events in one events partition, between two offsets.
    partition: PreparedStatement,
    /// One day of a timeline.
    timeline_day: PreparedStatement,
    /// The days of a tenant's timeline that have events, in a range.
    timeline_days: PreparedStatement,
}

#[derive(Debug)]
struct Statements {
    rows: BTreeMap<Table, RowStatements>,
    scans: ScanStatements,
    checkpoint: PreparedStatement,
    /// Every partition's checkpoint of a version.
    checkpoints: PreparedStatement,
    checkpoint_put: PreparedStatement,
    checkpoints_drop: PreparedStatement,
    /// Records a day of a tenant's timeline as having events.
    timeline_day_put: PreparedStatement,
    /// Every (version, tenant) of the day index, to drop a version's.
    timeline_tenants: PreparedStatement,
    timeline_days_drop: PreparedStatement,
    versions: PreparedStatement,
    live: PreparedStatement,
    live_switch: PreparedStatement,
    snapshot_put: PreparedStatement,
    snapshot_delete: PreparedStatement,
    snapshots_newest: PreparedStatement,
    sinks: SinkStatements,
}

/// The sink runner's statements ([`SinkStore`]).
#[derive(Debug)]
struct SinkStatements {
    create: PreparedStatement,
    replace: PreparedStatement,
    get: PreparedStatement,
    all: PreparedStatement,
    delete: PreparedStatement,
    deliveries: PreparedStatement,
    delivery_put: PreparedStatement,
    deliveries_delete: PreparedStatement,
}

/// Tally's store on a ScyllaDB or Cassandra cluster.
pub struct ScyllaStore {
    /// Always `Some` until dropped (see `Drop`).
    runtime: Option<tokio::runtime::Runtime>,
    session: Session,
    statements: Statements,
    consistency: Consistency,
}

impl std::fmt::Debug for ScyllaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScyllaStore")
    }
}

impl Drop for ScyllaStore {
    fn drop(&mut self) {
        // A runtime may not be dropped (which blocks) inside another runtime's worker.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The wall clock since the Unix epoch (`None` for a clock set before 1970).
fn since_epoch() -> Option<std::time::Duration> {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok()
}

fn scylla_error(e: impl std::fmt::Display) -> StoreError {
    StoreError::Scylla(e.to_string())
}

impl ScyllaStore {
    /// Connects, creates the keyspace and tables if missing (when `apply_schema`), and prepares
    /// every statement. Blocks.
    pub fn connect(config: &ScyllaConfig, apply_schema: bool) -> Result<ScyllaStore, StoreError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("tally-scylla")
            .enable_all()
            .build()
            .map_err(scylla_error)?;
        let (session, statements) = runtime.block_on(async {
            let mut builder = SessionBuilder::new().known_nodes(&config.nodes);
            if let Some((user, password)) = &config.credentials {
                builder = builder.user(user, password);
            }
            let session = builder.build().await.map_err(scylla_error)?;
            if apply_schema {
                for statement in schema_statements(&config.keyspace, &config.replication) {
                    session.query_unpaged(statement, ()).await.map_err(scylla_error)?;
                }
                session.await_schema_agreement().await.map_err(scylla_error)?;
            }
            session.use_keyspace(&config.keyspace, false).await.map_err(scylla_error)?;
            if apply_schema {
                let first = "INSERT INTO projection_live (name, version) VALUES ('live', ?) IF NOT EXISTS";
                session.query_unpaged(first, (FIRST_VERSION as i32,)).await.map_err(scylla_error)?;
            }
            let statements = Statements::prepare(&session, config.consistency).await?;
            Ok::<_, StoreError>((session, statements))
        })?;
        Ok(ScyllaStore { runtime: Some(runtime), session, statements, consistency: config.consistency })
    }

    fn block_on<T, E: std::fmt::Display>(
        &self,
        f: impl Future<Output = Result<T, E>>,
    ) -> Result<T, StoreError> {
        self.runtime.as_ref().expect("present until dropped").block_on(f).map_err(scylla_error)
    }

    /// Runs a prepared point read (one page, no pager) and deserialises its row, if any.
    fn select_one<R>(
        &self,
        statement: &PreparedStatement,
        values: impl scylla::serialize::row::SerializeRow,
    ) -> Result<Option<R>, StoreError>
    where
        R: for<'f, 'm> scylla::deserialize::row::DeserializeRow<'f, 'm>,
    {
        let result = self.block_on(self.session.execute_unpaged(statement, values))?;
        let rows = result.into_rows_result().map_err(scylla_error)?;
        rows.maybe_first_row::<R>().map_err(scylla_error)
    }

    /// Runs a prepared read, page by page, and deserialises every row as `R`.
    fn select<R>(
        &self,
        statement: &PreparedStatement,
        values: impl scylla::serialize::row::SerializeRow,
    ) -> Result<Vec<R>, StoreError>
    where
        R: for<'f, 'm> scylla::deserialize::row::DeserializeRow<'f, 'm> + Send + 'static,
    {
        self.block_on(async {
            let pager = self.session.execute_iter(statement.clone(), values).await.map_err(scylla_error)?;
            pager
                .rows_stream::<R>()
                .map_err(scylla_error)?
                .try_collect::<Vec<R>>()
                .await
                .map_err(scylla_error)
        })
    }

    /// A timeline scan: one query per UTC day that has events (the `timeline_days` index) from
    /// the start's, until `limit` rows or the end (`to_ms`, else a day past the present) are
    /// reached.
    fn timeline(
        &self,
        version: Version,
        tenant: &TenantId,
        (from_ms, to_ms): (i64, Option<i64>),
        after: Option<(i64, i32, i64)>,
        limit: usize,
    ) -> Result<Vec<(RowKey, Row)>, StoreError> {
        // Exclusive bounds: just below `from_ms` (or `after`, if later) and `to_ms` itself.
        let lower =
            after.filter(|a| a.0 >= from_ms).unwrap_or((from_ms.saturating_sub(1), i32::MAX, i64::MAX));
        let to_ms =
            to_ms.unwrap_or_else(|| since_epoch().map_or(0, |d| d.as_millis() as i64).saturating_add(DAY_MS));
        let days: Vec<(i64,)> = self.select(
            &self.statements.scans.timeline_days,
            (version as i32, tenant.as_str(), lower.0.div_euclid(DAY_MS), to_ms.div_euclid(DAY_MS)),
        )?;
        let mut rows = Vec::new();
        for (day,) in days {
            let left = i32::try_from(limit - rows.len()).unwrap_or(i32::MAX);
            let values = (
                version as i32,
                tenant.as_str(),
                day,
                lower.0,
                lower.1,
                lower.2,
                to_ms,
                i32::MIN,
                i64::MIN,
                left,
            );
            let found: Vec<(Vec<u8>, Vec<u8>)> = self.select(&self.statements.scans.timeline_day, values)?;
            for (key, row) in found {
                rows.push((projections::decode(&key)?, projections::decode(&row)?));
            }
            if rows.len() >= limit {
                break;
            }
        }
        Ok(rows)
    }

    /// Deletes a whole keyspace (for tests that made their own).
    pub fn drop_keyspace(&self, keyspace: &str) -> Result<(), StoreError> {
        let statement = format!("DROP KEYSPACE IF EXISTS {keyspace}");
        self.block_on(self.session.query_unpaged(statement, ()))?;
        Ok(())
    }
}

/// The schema's statements for `keyspace`.
pub fn schema_statements(keyspace: &str, replication: &str) -> Vec<String> {
    let filled = SCHEMA.replace("{keyspace}", keyspace).replace("{replication}", replication);
    let without_comments: String =
        filled.lines().filter(|line| !line.trim_start().starts_with("--")).collect::<Vec<_>>().join("\n");
    without_comments
        .split(";\n")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches(';').to_owned())
        .collect()
}

impl Statements {
    async fn prepare(session: &Session, consistency: Consistency) -> Result<Statements, StoreError> {
        let prepare = |cql: String| async move {
            let mut statement = session.prepare(cql).await.map_err(scylla_error)?;
            statement.set_consistency(consistency);
            statement.set_serial_consistency(Some(SerialConsistency::LocalSerial));
            Ok::<_, StoreError>(statement)
        };
        let mut rows = BTreeMap::new();
        for table in TABLES {
            let (name, columns) = (table.name(), table.key_columns());
            let key_match = columns.iter().map(|c| format!(" AND {c} = ?")).collect::<String>();
            let markers = vec!["?"; columns.len()].join(", ");
            rows.insert(
                table,
                RowStatements {
                    upsert: prepare(format!(
                        "INSERT INTO {name} (version, {}, key, row) VALUES (?, {markers}, ?, ?) USING TIMESTAMP ?",
                        columns.join(", ")
                    ))
                    .await?,
                    delete: prepare(format!("DELETE FROM {name} USING TIMESTAMP ? WHERE version = ?{key_match}")).await?,
                    get: prepare(format!("SELECT row FROM {name} WHERE version = ?{key_match}")).await?,
                    scan: prepare(format!("SELECT key, row FROM {name} WHERE version = ? ALLOW FILTERING")).await?,
                },
            );
        }
        let select = "SELECT key, row FROM";
        let scans = ScanStatements {
            accounts: prepare(format!(
                "{select} accounts WHERE version = ? AND tenant = ? AND ledger = ? \
                 AND account >= ? AND account < ? LIMIT ?"
            ))
            .await?,
            documents: prepare(format!(
                "{select} documents WHERE version = ? AND tenant = ? AND doc_type = ? \
                 AND doc_key >= ? AND doc_key < ? LIMIT ?"
            ))
            .await?,
            statement: prepare(format!(
                "{select} postings WHERE version = ? AND tenant = ? AND ledger = ? AND account = ? \
                 AND asset = ? AND (offset, line) < (?, ?) LIMIT ?"
            ))
            .await?,
            outcomes: prepare(format!(
                "{select} command_outcomes WHERE version = ? AND tenant = ? AND command_id = ? LIMIT ?"
            ))
            .await?,
            stream: prepare(format!(
                "{select} events WHERE version = ? AND tenant = ? AND stream = ? AND stream_version > ? LIMIT ?"
            ))
            .await?,
            partition: prepare(format!(
                "{select} events_by_offset WHERE version = ? AND tenant = ? AND partition = ? \
                 AND offset > ? AND offset <= ? LIMIT ?"
            ))
            .await?,
            timeline_day: prepare(format!(
                "{select} events_by_time WHERE version = ? AND tenant = ? AND day = ? \
                 AND (time_ms, partition, offset) > (?, ?, ?) AND (time_ms, partition, offset) < (?, ?, ?) LIMIT ?"
            ))
            .await?,
            timeline_days: prepare(
                "SELECT day FROM timeline_days WHERE version = ? AND tenant = ? AND day >= ? AND day <= ?"
                    .into(),
            )
            .await?,
        };
        Ok(Statements {
            rows,
            scans,
            checkpoint: prepare("SELECT offset FROM checkpoints WHERE version = ? AND partition = ?".into())
                .await?,
            checkpoints: prepare("SELECT partition, offset FROM checkpoints WHERE version = ?".into())
                .await?,
            checkpoint_put: prepare(
                "INSERT INTO checkpoints (version, partition, offset) VALUES (?, ?, ?) USING TIMESTAMP ?"
                    .into(),
            )
            .await?,
            checkpoints_drop: prepare("DELETE FROM checkpoints WHERE version = ?".into()).await?,
            timeline_day_put: prepare(
                "INSERT INTO timeline_days (version, tenant, day) VALUES (?, ?, ?) USING TIMESTAMP ?".into(),
            )
            .await?,
            timeline_tenants: prepare("SELECT DISTINCT version, tenant FROM timeline_days".into()).await?,
            timeline_days_drop: prepare(
                "DELETE FROM timeline_days USING TIMESTAMP ? WHERE version = ? AND tenant = ?".into(),
            )
            .await?,
            versions: prepare("SELECT DISTINCT version FROM checkpoints".into()).await?,
            live: prepare("SELECT version FROM projection_live WHERE name = 'live'".into()).await?,
            live_switch: prepare(
                "UPDATE projection_live SET version = ? WHERE name = 'live' IF version = ?".into(),
            )
            .await?,
            snapshot_put: prepare(
                "INSERT INTO snapshots (log, partition, covers, bytes) VALUES (?, ?, ?, ?)".into(),
            )
            .await?,
            snapshot_delete: prepare(
                "DELETE FROM snapshots WHERE log = ? AND partition = ? AND covers = ?".into(),
            )
            .await?,
            snapshots_newest: prepare(
                "SELECT covers, bytes FROM snapshots WHERE log = ? AND partition = ? AND covers <= ? LIMIT ?"
                    .into(),
            )
            .await?,
            sinks: SinkStatements {
                create: prepare(
                    "INSERT INTO sink_destinations (tenant, id, value) VALUES (?, ?, ?) IF NOT EXISTS".into(),
                )
                .await?,
                replace: prepare(
                    "UPDATE sink_destinations SET value = ? WHERE tenant = ? AND id = ? IF value = ?".into(),
                )
                .await?,
                get: prepare("SELECT value FROM sink_destinations WHERE tenant = ? AND id = ?".into())
                    .await?,
                all: prepare("SELECT value FROM sink_destinations".into()).await?,
                delete: prepare("DELETE FROM sink_destinations WHERE tenant = ? AND id = ? IF EXISTS".into())
                    .await?,
                deliveries: prepare("SELECT partition, value FROM sink_deliveries WHERE uid = ?".into())
                    .await?,
                delivery_put: prepare(
                    "INSERT INTO sink_deliveries (uid, partition, value) VALUES (?, ?, ?)".into(),
                )
                .await?,
                deliveries_delete: prepare("DELETE FROM sink_deliveries WHERE uid = ?".into()).await?,
            },
        })
    }
}

/// The text bounds `[from, to)` of ids that start with `prefix` and come after `after`. Ids
/// are ASCII below 0x7F, so every id that starts with the prefix is below prefix + U+007F, and
/// the least text above `after` is `after` + U+0000.
fn id_bounds(prefix: Option<&str>, after: Option<&str>) -> (String, String) {
    let prefix = prefix.unwrap_or("");
    let from = match after {
        Some(after) if after >= prefix => format!("{after}\u{0}"),
        _ => prefix.to_owned(),
    };
    (from, format!("{prefix}\u{7f}"))
}

/// The most bytes of bound values in one logged batch. Cassandra refuses batches over
/// `batch_size_fail_threshold` (50 KiB by default; Scylla's is 1 MiB), and a projector batch of
/// a thousand transfers is about 1 MB: seen refused on Cassandra 5.0. Cassandra counts more
/// than the values (32 KiB of them measured 50.1 KiB there), hence half of that again.
const BATCH_BYTES_MAX: usize = 16 * 1024;

/// Splits `writes` into consecutive groups of at most `max_bytes` of bound values each (a
/// single larger write is a group of its own), in order.
fn batches_within<T>(writes: Vec<(T, Vec<CqlValue>)>, max_bytes: usize) -> Vec<Vec<(T, Vec<CqlValue>)>> {
    let mut batches: Vec<Vec<(T, Vec<CqlValue>)>> = Vec::new();
    let mut bytes = 0;
    for write in writes {
        let size: usize = write.1.iter().map(value_bytes).sum();
        match batches.last_mut() {
            Some(batch) if bytes + size <= max_bytes => batch.push(write),
            _ => {
                batches.push(vec![write]);
                bytes = 0;
            }
        }
        bytes += size;
    }
    batches
}

/// The serialised size of a bound value, about (the driver adds a few bytes of framing).
fn value_bytes(value: &CqlValue) -> usize {
    match value {
        CqlValue::Blob(bytes) => bytes.len(),
        CqlValue::Text(text) => text.len(),
        _ => 8,
    }
}

/// Bind values of a row's key: version then the key columns.
fn key_values(version: Version, parts: Vec<CqlValue>) -> Vec<CqlValue> {
    std::iter::once(CqlValue::Int(version as i32)).chain(parts).collect()
}

/// Most point reads of [`ProjectionStore::rows_named`] in flight at once.
const ROWS_NAMED_CONCURRENCY: usize = 64;

impl ProjectionStore for ScyllaStore {
    fn checkpoint(&self, version: Version, partition: i32) -> Result<Option<i64>, StoreError> {
        let found: Option<(i64,)> =
            self.select_one(&self.statements.checkpoint, (version as i32, partition))?;
        Ok(found.map(|(offset,)| offset))
    }

    fn checkpoints(&self, version: Version) -> Result<BTreeMap<i32, i64>, StoreError> {
        let found: Vec<(i32, i64)> = self.select(&self.statements.checkpoints, (version as i32,))?;
        Ok(found.into_iter().collect())
    }

    fn commit(
        &self,
        version: Version,
        partition: i32,
        changes: &[Change],
        checkpoint: i64,
    ) -> Result<(), StoreError> {
        let (live, stored) = (self.live_version()?, self.checkpoint(version, partition)?);
        projections::admit_commit(version, live, partition, stored, checkpoint)?;
        let mut writes: Vec<(&PreparedStatement, Vec<CqlValue>)> = Vec::with_capacity(changes.len() + 1);
        let mut days = std::collections::BTreeSet::new();
        for (key, row) in changes {
            if let (RowKey::EventAt { tenant, time_ms, .. }, Some(_)) = (key, row) {
                days.insert((tenant.as_str(), time_ms.div_euclid(DAY_MS)));
            }
            let (table, parts) = Table::of(key);
            let statements = &self.statements.rows[&table];
            let mut bound = Vec::new();
            match row {
                Some(row) => {
                    bound.extend(key_values(version, parts));
                    bound.push(CqlValue::Blob(projections::encode(key)));
                    bound.push(CqlValue::Blob(projections::encode(row)));
                    bound.push(CqlValue::BigInt(checkpoint));
                    writes.push((&statements.upsert, bound));
                }
                None => {
                    bound.push(CqlValue::BigInt(checkpoint));
                    bound.extend(key_values(version, parts));
                    writes.push((&statements.delete, bound));
                }
            }
        }
        for (tenant, day) in days {
            let (version, tenant) = (CqlValue::Int(version as i32), CqlValue::Text(tenant.to_owned()));
            let values = vec![version, tenant, CqlValue::BigInt(day), CqlValue::BigInt(checkpoint)];
            writes.push((&self.statements.timeline_day_put, values));
        }
        // The checkpoint goes last, in the last batch: rows are never behind it.
        let values = vec![
            CqlValue::Int(version as i32),
            CqlValue::Int(partition),
            CqlValue::BigInt(checkpoint),
            CqlValue::BigInt(checkpoint),
        ];
        writes.push((&self.statements.checkpoint_put, values));
        for chunk in batches_within(writes, BATCH_BYTES_MAX) {
            let mut batch = Batch::new(BatchType::Logged);
            batch.set_consistency(self.consistency);
            let mut values = Vec::with_capacity(chunk.len());
            for (statement, bound) in chunk {
                batch.append_statement(statement.clone());
                values.push(bound);
            }
            self.block_on(self.session.batch(&batch, values))?;
        }
        Ok(())
    }

    fn row(&self, version: Version, key: &RowKey) -> Result<Option<Row>, StoreError> {
        let (table, parts) = Table::of(key);
        let found: Option<(Vec<u8>,)> =
            self.select_one(&self.statements.rows[&table].get, key_values(version, parts))?;
        found.map(|(bytes,)| projections::decode(&bytes)).transpose()
    }

    /// Every key read at once (at most [`ROWS_NAMED_CONCURRENCY`] in flight), one round trip's
    /// wait for a batch instead of one per key.
    fn rows_named(&self, version: Version, keys: &[RowKey]) -> Result<Vec<(RowKey, Row)>, StoreError> {
        use futures::StreamExt;
        let reads = futures::stream::iter(keys.iter().map(|key| async move {
            let (table, parts) = Table::of(key);
            let statement = &self.statements.rows[&table].get;
            let result = self
                .session
                .execute_unpaged(statement, key_values(version, parts))
                .await
                .map_err(scylla_error)?;
            let first = result.into_rows_result().map_err(scylla_error)?.maybe_first_row::<(Vec<u8>,)>();
            let found = first.map_err(scylla_error)?;
            let row = found.map(|(bytes,)| projections::decode::<Row>(&bytes)).transpose()?;
            Ok::<_, StoreError>(row.map(|row| (key.clone(), row)))
        }));
        let all = reads.buffered(ROWS_NAMED_CONCURRENCY).try_collect::<Vec<_>>();
        let runtime = self.runtime.as_ref().expect("present until dropped");
        Ok(runtime.block_on(all)?.into_iter().flatten().collect())
    }

    fn rows(&self, version: Version) -> Result<BTreeMap<RowKey, Row>, StoreError> {
        let mut rows = BTreeMap::new();
        for table in TABLES {
            let found: Vec<(Vec<u8>, Vec<u8>)> =
                self.select(&self.statements.rows[&table].scan, (version as i32,))?;
            for (key, row) in found {
                rows.insert(projections::decode(&key)?, projections::decode(&row)?);
            }
        }
        Ok(rows)
    }

    fn scan(&self, version: Version, scan: &Scan, limit: usize) -> Result<Vec<(RowKey, Row)>, StoreError> {
        let text = |s: &str| CqlValue::Text(s.to_owned());
        let scans = &self.statements.scans;
        let (statement, mut values) = match scan {
            Scan::Accounts { tenant, ledger, prefix, after } => {
                let (from, to) =
                    id_bounds(prefix.as_ref().map(AccountId::as_str), after.as_ref().map(AccountId::as_str));
                (&scans.accounts, vec![text(tenant.as_str()), text(ledger.as_str()), text(&from), text(&to)])
            }
            Scan::Documents { tenant, doc_type, prefix, after } => {
                let (from, to) =
                    id_bounds(prefix.as_ref().map(DocKey::as_str), after.as_ref().map(DocKey::as_str));
                (
                    &scans.documents,
                    vec![text(tenant.as_str()), text(doc_type.as_str()), text(&from), text(&to)],
                )
            }
            Scan::Statement { tenant, ledger, account, asset, before } => {
                let (offset, line) = before.unwrap_or((i64::MAX, u32::MAX));
                let values = vec![
                    text(tenant.as_str()),
                    text(ledger.as_str()),
                    text(account.as_str()),
                    CqlValue::Text(asset.to_string()),
                    CqlValue::BigInt(offset),
                    CqlValue::Int(i32::try_from(line).unwrap_or(i32::MAX)),
                ];
                (&scans.statement, values)
            }
            Scan::Timeline { tenant, from_ms, to_ms, after } => {
                return self.timeline(version, tenant, (*from_ms, *to_ms), *after, limit);
            }
            Scan::Partition { tenant, partition, after, upto } => (
                &scans.partition,
                vec![
                    text(tenant.as_str()),
                    CqlValue::Int(*partition),
                    CqlValue::BigInt(*after),
                    CqlValue::BigInt(*upto),
                ],
            ),
            Scan::Outcomes { tenant, command_id } => {
                (&scans.outcomes, vec![text(tenant.as_str()), text(command_id.as_str())])
            }
            Scan::Stream { tenant, stream, after } => (
                &scans.stream,
                vec![
                    text(tenant.as_str()),
                    CqlValue::Text(stream.to_string()),
                    CqlValue::BigInt(i64::try_from(*after).unwrap_or(i64::MAX)),
                ],
            ),
        };
        values.push(CqlValue::Int(i32::try_from(limit).unwrap_or(i32::MAX)));
        let found: Vec<(Vec<u8>, Vec<u8>)> = self.select(statement, key_values(version, values))?;
        found.iter().map(|(key, row)| Ok((projections::decode(key)?, projections::decode(row)?))).collect()
    }

    fn live_version(&self) -> Result<Version, StoreError> {
        let found: Option<(i32,)> = self.select_one(&self.statements.live, ())?;
        Ok(found.map_or(FIRST_VERSION, |(v,)| v as Version))
    }

    fn switch_live(&self, from: Version, to: Version) -> Result<(), StoreError> {
        if self.applied(&self.statements.live_switch, (to as i32, from as i32))? {
            return Ok(());
        }
        // Not applied: someone else switched (the compare-and-set said so, whatever a re-read
        // shows now).
        Err(StoreError::LiveVersionMoved { expected: from, actual: self.live_version()? })
    }

    fn versions(&self) -> Result<Vec<Version>, StoreError> {
        let found: Vec<(i32,)> = self.select(&self.statements.versions, ())?;
        let mut versions: std::collections::BTreeSet<Version> =
            found.into_iter().map(|(v,)| v as Version).collect();
        versions.insert(self.live_version()?);
        Ok(versions.into_iter().collect())
    }

    fn drop_version(&self, version: Version) -> Result<(), StoreError> {
        projections::admit_drop(version, self.live_version()?)?;
        // The version is retired (commits to it are refused), so nothing writes it any more.
        // Deletes are stamped with the current time in microseconds, far above any offset
        // stamp, so they shadow every row write of the version.
        let now_us = since_epoch().map_or(i64::MAX / 2, |d| d.as_micros() as i64);
        for table in TABLES {
            let found: Vec<(Vec<u8>, Vec<u8>)> =
                self.select(&self.statements.rows[&table].scan, (version as i32,))?;
            for (key, _) in found {
                let key: RowKey = projections::decode(&key)?;
                let (_, parts) = Table::of(&key);
                let mut values = vec![CqlValue::BigInt(now_us)];
                values.extend(key_values(version, parts));
                self.block_on(self.session.execute_unpaged(&self.statements.rows[&table].delete, values))?;
            }
        }
        let tenants: Vec<(i32, String)> = self.select(&self.statements.timeline_tenants, ())?;
        for (_, tenant) in tenants.into_iter().filter(|(v, _)| *v == version as i32) {
            let values = (now_us, version as i32, tenant);
            self.block_on(self.session.execute_unpaged(&self.statements.timeline_days_drop, values))?;
        }
        self.block_on(self.session.execute_unpaged(&self.statements.checkpoints_drop, (version as i32,)))?;
        Ok(())
    }
}

impl SnapshotStore for ScyllaStore {
    fn put(
        &self,
        log: &str,
        partition: i32,
        covers: i64,
        bytes: &[u8],
        keep: usize,
    ) -> Result<(), StoreError> {
        self.block_on(
            self.session.execute_unpaged(&self.statements.snapshot_put, (log, partition, covers, bytes)),
        )?;
        let stale = self.newest_first(log, partition, i64::MAX, usize::MAX)?.into_iter().skip(keep);
        for (covers, _) in stale {
            self.block_on(
                self.session.execute_unpaged(&self.statements.snapshot_delete, (log, partition, covers)),
            )?;
        }
        Ok(())
    }

    fn newest_first(
        &self,
        log: &str,
        partition: i32,
        at_most: i64,
        limit: usize,
    ) -> Result<Vec<(i64, Vec<u8>)>, StoreError> {
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        self.select(&self.statements.snapshots_newest, (log, partition, at_most, limit))
    }
}

impl ScyllaStore {
    /// Runs a lightweight transaction and says whether it was applied (its `[applied]` column).
    fn applied(
        &self,
        statement: &PreparedStatement,
        values: impl scylla::serialize::row::SerializeRow,
    ) -> Result<bool, StoreError> {
        let result = self.block_on(self.session.execute_unpaged(statement, values))?;
        let rows = result.into_rows_result().map_err(scylla_error)?;
        let first = rows.first_row::<scylla::value::Row>().map_err(scylla_error)?;
        Ok(matches!(first.columns.first(), Some(Some(CqlValue::Boolean(true)))))
    }
}

impl SinkStore for ScyllaStore {
    fn create_destination(&self, tenant: &str, id: &str, value: &[u8]) -> Result<bool, StoreError> {
        self.applied(&self.statements.sinks.create, (tenant, id, value))
    }

    fn replace_destination(
        &self,
        tenant: &str,
        id: &str,
        current: &[u8],
        value: &[u8],
    ) -> Result<bool, StoreError> {
        self.applied(&self.statements.sinks.replace, (value, tenant, id, current))
    }

    fn destination(&self, tenant: &str, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let found: Option<(Vec<u8>,)> = self.select_one(&self.statements.sinks.get, (tenant, id))?;
        Ok(found.map(|(value,)| value))
    }

    fn destinations(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        let found: Vec<(Vec<u8>,)> = self.select(&self.statements.sinks.all, ())?;
        Ok(found.into_iter().map(|(value,)| value).collect())
    }

    fn delete_destination(&self, tenant: &str, id: &str) -> Result<bool, StoreError> {
        self.applied(&self.statements.sinks.delete, (tenant, id))
    }

    fn deliveries(&self, uid: &str) -> Result<Vec<(i32, Vec<u8>)>, StoreError> {
        self.select(&self.statements.sinks.deliveries, (uid,))
    }

    fn put_delivery(&self, uid: &str, partition: i32, value: &[u8]) -> Result<(), StoreError> {
        self.block_on(
            self.session.execute_unpaged(&self.statements.sinks.delivery_put, (uid, partition, value)),
        )?;
        Ok(())
    }

    fn delete_deliveries(&self, uid: &str) -> Result<(), StoreError> {
        self.block_on(self.session.execute_unpaged(&self.statements.sinks.deliveries_delete, (uid,)))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_file_splits_into_its_statements_with_the_keyspace_filled_in() {
        let statements = schema_statements("ks", "{'class': 'SimpleStrategy', 'replication_factor': 1}");
        assert_eq!(statements.len(), 15, "{statements:#?}");
        assert!(statements[0].starts_with("CREATE KEYSPACE IF NOT EXISTS ks WITH replication = {'class'"));
        for statement in &statements[1..] {
            assert!(statement.starts_with("CREATE TABLE IF NOT EXISTS ks."), "{statement}");
            assert!(!statement.contains('{') || statement.contains("CLUSTERING"), "unfilled: {statement}");
            assert!(!statement.contains("--") && !statement.ends_with(';'), "{statement}");
        }
    }

    #[test]
    fn writes_are_split_in_order_into_batches_within_the_byte_limit() {
        let write = |n: usize| (n, vec![CqlValue::Blob(vec![0; n])]);
        let sizes = [10, 20, 30, 50, 5, 100, 1];
        let batches = batches_within(sizes.iter().map(|&n| write(n)).collect(), 60);
        let ids: Vec<Vec<usize>> = batches.iter().map(|b| b.iter().map(|(id, _)| *id).collect()).collect();
        // In order; a write larger than the limit stands alone.
        assert_eq!(ids, vec![vec![10, 20, 30], vec![50, 5], vec![100], vec![1]]);
        assert!(batches_within(Vec::<(u8, Vec<CqlValue>)>::new(), 60).is_empty());
    }

    #[test]
    fn id_bounds_hold_exactly_the_ids_that_start_with_the_prefix_after_the_cursor() {
        let ids = ["a", "a.", "a0", "ab", "abz", "ac", "b", "z", "@"];
        for prefix in [None, Some("a"), Some("ab"), Some("q")] {
            for after in [None, Some("a"), Some("ab"), Some("0"), Some("zz")] {
                let (from, to) = id_bounds(prefix, after);
                for id in ids {
                    let inside = from.as_str() <= id && id < to.as_str();
                    let expected =
                        id.starts_with(prefix.unwrap_or("")) && after.is_none_or(|after| id > after);
                    assert_eq!(inside, expected, "{id} with prefix {prefix:?} after {after:?}");
                }
            }
        }
    }

    #[test]
    fn every_kind_of_row_key_has_its_own_table_with_as_many_key_columns() {
        use tally_core::{AccountId, Asset, CommandId, DocKey, DocType, LedgerId, TenantId, TxId};
        let (tenant, ledger) = (TenantId::parse("t").unwrap(), LedgerId::parse("l").unwrap());
        let keys = [
            RowKey::Account {
                tenant: tenant.clone(),
                ledger: ledger.clone(),
                account: AccountId::parse("a").unwrap(),
            },
            RowKey::Transaction { tenant: tenant.clone(), ledger, tx_id: TxId::parse("x").unwrap() },
            RowKey::Document {
                tenant: tenant.clone(),
                doc_type: DocType::parse("d").unwrap(),
                key: DocKey::parse("k").unwrap(),
            },
            RowKey::Outcome {
                tenant: tenant.clone(),
                command_id: CommandId::parse("c").unwrap(),
                stream: tally_core::StreamId::Ledger(LedgerId::parse("l").unwrap()),
            },
            RowKey::Posting {
                tenant: tenant.clone(),
                ledger: LedgerId::parse("l").unwrap(),
                account: AccountId::parse("a").unwrap(),
                asset: Asset::try_from("USD/2".to_owned()).unwrap(),
                offset: 7,
                line: 1,
            },
            RowKey::Event {
                tenant: tenant.clone(),
                stream: tally_core::StreamId::Ledger(LedgerId::parse("l").unwrap()),
                stream_version: 3,
            },
            RowKey::EventAt { tenant: tenant.clone(), time_ms: 1_700_000_000_000, partition: 2, offset: 9 },
            RowKey::EventByOffset { tenant, partition: 2, offset: 9 },
        ];
        let tables: Vec<Table> = keys.iter().map(|key| Table::of(key).0).collect();
        assert_eq!(tables, TABLES);
        for key in &keys {
            let (table, parts) = Table::of(key);
            assert_eq!(parts.len(), table.key_columns().len(), "{table:?}");
        }
    }
}

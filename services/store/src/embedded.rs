//! The embedded backend: one redb file under the data directory, or memory.

use crate::projections::{self, FIRST_VERSION, ProjectionStore, Scan, Version};
use crate::sinks::SinkStore;
use crate::snapshot::SnapshotStore;
use crate::{StoreError, keys};
use redb::{AccessGuard, Database, ReadableTable, TableDefinition};
use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use tally_core::projection::{Change, Row, RowKey};

/// (events topic, partition, covered offset) -> encoded snapshot.
const SNAPSHOTS: TableDefinition<(&str, i32, i64), &[u8]> = TableDefinition::new("snapshots");
/// (projection version, row key as `keys` bytes: they sort like the keys) -> encoded row.
const ROWS: TableDefinition<(u32, &[u8]), &[u8]> = TableDefinition::new("projection_rows");
/// (projection version, events partition) -> last offset the rows cover.
const CHECKPOINTS: TableDefinition<(u32, i32), i64> = TableDefinition::new("projection_checkpoints");
/// "live" -> the projection version readers read.
const LIVE: TableDefinition<&str, u32> = TableDefinition::new("projection_live");
/// (tenant, destination id) -> encoded destination.
const DESTINATIONS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("sink_destinations");
/// (destination uid, events partition) -> encoded delivery record.
const DELIVERIES: TableDefinition<(&str, i32), &[u8]> = TableDefinition::new("sink_deliveries");

/// The embedded backend: snapshots, projection rows, checkpoints and the live version in one
/// redb file (or in memory), with ACID write transactions. One process owns the file; opening
/// it twice fails with [`StoreError::Embedded`].
pub struct EmbeddedStore {
    db: Database,
    /// The live version, as committed: one process owns the file and only `switch_live` changes
    /// it, so readers take it from here instead of opening a read transaction for it (every
    /// query reads it). Commits still check the stored value, in their own transaction.
    live: AtomicU32,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EmbeddedStore")
    }
}

impl EmbeddedStore {
    /// redb's page cache when none is given: 1 GiB, redb's own default.
    pub const DEFAULT_CACHE_BYTES: usize = 1024 * 1024 * 1024;

    /// Opens (or creates) the store in the file `path`, with the default page cache.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with_cache(path, Self::DEFAULT_CACHE_BYTES)
    }

    /// Opens (or creates) the store in the file `path`, letting redb cache up to `cache_bytes`
    /// of its pages in memory (read cache and write buffer together). The cache fills as the
    /// file grows, so in a busy process it is most of the heap until it reaches this bound.
    pub fn open_with_cache(path: &Path, cache_bytes: usize) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Embedded(format!("{}: {e}", dir.display())))?;
        }
        Self::init(Database::builder().set_cache_size(cache_bytes).create(path)?)
    }

    /// A store that lives and dies with the process (`tally dev` without `--data-dir`, tests).
    pub fn in_memory() -> Result<Self, StoreError> {
        Self::init(Database::builder().create_with_backend(redb::backends::InMemoryBackend::new())?)
    }

    fn init(db: Database) -> Result<Self, StoreError> {
        let tx = db.begin_write()?;
        tx.open_table(SNAPSHOTS)?;
        tx.open_table(ROWS)?;
        tx.open_table(CHECKPOINTS)?;
        tx.open_table(LIVE)?;
        tx.open_table(DESTINATIONS)?;
        tx.open_table(DELIVERIES)?;
        tx.commit()?;
        let live = live_of(&db.begin_read()?.open_table(LIVE)?)?;
        Ok(EmbeddedStore { db, live: AtomicU32::new(live) })
    }
}

/// The live version in `table` (read or written in the caller's transaction).
fn live_of(table: &impl ReadableTable<&'static str, u32>) -> Result<Version, StoreError> {
    Ok(table.get("live")?.map_or(FIRST_VERSION, |v| v.value()))
}

/// The keys of `version`'s rows (the filter in `retain_in` covers `u32::MAX`).
fn version_rows(version: Version) -> std::ops::Range<(u32, &'static [u8])> {
    (version, &[][..])..(version.saturating_add(1), &[][..])
}

/// An entry of [`ROWS`] as a range over it yields it.
type RowEntry<'a> = (AccessGuard<'a, (u32, &'static [u8])>, AccessGuard<'a, &'static [u8]>);

/// An entry of [`ROWS`], as the row it is.
fn decode_row(entry: Result<RowEntry, redb::StorageError>) -> Result<(RowKey, Row), StoreError> {
    let (key, value) = entry?;
    Ok((keys::decode(key.value().1)?, projections::decode(value.value())?))
}

impl SnapshotStore for EmbeddedStore {
    fn put(
        &self,
        log: &str,
        partition: i32,
        covers: i64,
        bytes: &[u8],
        keep: usize,
    ) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        {
            let mut table = tx.open_table(SNAPSHOTS)?;
            table.insert((log, partition, covers), bytes)?;
            let stale: Vec<i64> = table
                .range((log, partition, i64::MIN)..=(log, partition, i64::MAX))?
                .rev()
                .skip(keep)
                .map(|entry| entry.map(|(k, _)| k.value().2))
                .collect::<Result<_, _>>()?;
            for offset in stale {
                table.remove((log, partition, offset))?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn newest_first(
        &self,
        log: &str,
        partition: i32,
        at_most: i64,
        limit: usize,
    ) -> Result<Vec<(i64, Vec<u8>)>, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(SNAPSHOTS)?;
        let found = table
            .range((log, partition, i64::MIN)..=(log, partition, at_most))?
            .rev()
            .take(limit)
            .map(|entry| entry.map(|(k, v)| (k.value().2, v.value().to_vec())))
            .collect::<Result<_, _>>()?;
        Ok(found)
    }
}

impl ProjectionStore for EmbeddedStore {
    fn checkpoint(&self, version: Version, partition: i32) -> Result<Option<i64>, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(CHECKPOINTS)?;
        Ok(table.get((version, partition))?.map(|v| v.value()))
    }

    fn checkpoints(&self, version: Version) -> Result<BTreeMap<i32, i64>, StoreError> {
        let table = self.db.begin_read()?.open_table(CHECKPOINTS)?;
        let range = table.range((version, i32::MIN)..=(version, i32::MAX))?;
        Ok(range.map(|entry| entry.map(|(k, v)| (k.value().1, v.value()))).collect::<Result<_, _>>()?)
    }

    fn commit(
        &self,
        version: Version,
        partition: i32,
        changes: &[Change],
        checkpoint: i64,
    ) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        {
            let mut checkpoints = tx.open_table(CHECKPOINTS)?;
            let stored = checkpoints.get((version, partition))?.map(|v| v.value());
            // On refusal, dropping the transaction aborts it: nothing of this batch is written.
            projections::admit_commit(
                version,
                live_of(&tx.open_table(LIVE)?)?,
                partition,
                stored,
                checkpoint,
            )?;
            checkpoints.insert((version, partition), checkpoint)?;
            let mut rows = tx.open_table(ROWS)?;
            for (key, value) in changes {
                let key = keys::encode(key);
                match value {
                    Some(row) => {
                        rows.insert((version, key.as_slice()), projections::encode(row).as_slice())?
                    }
                    None => rows.remove((version, key.as_slice()))?,
                };
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn row(&self, version: Version, key: &RowKey) -> Result<Option<Row>, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(ROWS)?;
        let key = keys::encode(key);
        table.get((version, key.as_slice()))?.map(|v| projections::decode(v.value())).transpose()
    }

    /// Every key in one read transaction.
    fn rows_named(&self, version: Version, keys: &[RowKey]) -> Result<Vec<(RowKey, Row)>, StoreError> {
        let table = self.db.begin_read()?.open_table(ROWS)?;
        let mut rows = Vec::with_capacity(keys.len());
        for key in keys {
            let encoded = keys::encode(key);
            if let Some(value) = table.get((version, encoded.as_slice()))? {
                rows.push((key.clone(), projections::decode(value.value())?));
            }
        }
        Ok(rows)
    }

    fn rows(&self, version: Version) -> Result<BTreeMap<RowKey, Row>, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(ROWS)?;
        table.range(version_rows(version))?.map(decode_row).collect()
    }

    fn scan(&self, version: Version, scan: &Scan, limit: usize) -> Result<Vec<(RowKey, Row)>, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(ROWS)?;
        let range = keys::range(scan);
        fn versioned(version: Version, bound: &Bound<Vec<u8>>) -> Bound<(u32, &[u8])> {
            bound.as_ref().map(|key| (version, key.as_slice()))
        }
        let bounds = (versioned(version, &range.start), versioned(version, &range.end));
        let entries = table.range::<(u32, &[u8])>(bounds)?;
        match range.backwards {
            true => entries.rev().take(limit).map(decode_row).collect(),
            false => entries.take(limit).map(decode_row).collect(),
        }
    }

    fn reads_block(&self) -> bool {
        false
    }

    fn live_version(&self) -> Result<Version, StoreError> {
        Ok(self.live.load(Ordering::Acquire))
    }

    fn switch_live(&self, from: Version, to: Version) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        {
            let mut live = tx.open_table(LIVE)?;
            projections::admit_switch(from, live_of(&live)?)?;
            live.insert("live", to)?;
        }
        tx.commit()?;
        // Before returning: new reads go to the new version before anyone drops the old one.
        self.live.store(to, Ordering::Release);
        Ok(())
    }

    fn versions(&self) -> Result<Vec<Version>, StoreError> {
        let tx = self.db.begin_read()?;
        let mut versions = std::collections::BTreeSet::from([live_of(&tx.open_table(LIVE)?)?]);
        for entry in tx.open_table(CHECKPOINTS)?.iter()? {
            versions.insert(entry?.0.value().0);
        }
        // Rows without a checkpoint cannot exist: they are committed together.
        Ok(versions.into_iter().collect())
    }

    fn drop_version(&self, version: Version) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        {
            // Checked in the same transaction, so a switch cannot slip in between.
            projections::admit_drop(version, live_of(&tx.open_table(LIVE)?)?)?;
            let mut rows = tx.open_table(ROWS)?;
            rows.retain_in(version_rows(version), |(v, _), _| v != version)?;
            let mut checkpoints = tx.open_table(CHECKPOINTS)?;
            checkpoints.retain_in((version, i32::MIN)..=(version, i32::MAX), |_, _| false)?;
        }
        tx.commit()?;
        Ok(())
    }
}

impl SinkStore for EmbeddedStore {
    fn create_destination(&self, tenant: &str, id: &str, value: &[u8]) -> Result<bool, StoreError> {
        let tx = self.db.begin_write()?;
        let created = {
            let mut table = tx.open_table(DESTINATIONS)?;
            let exists = table.get((tenant, id))?.is_some();
            if !exists {
                table.insert((tenant, id), value)?;
            }
            !exists
        };
        tx.commit()?;
        Ok(created)
    }

    fn replace_destination(
        &self,
        tenant: &str,
        id: &str,
        current: &[u8],
        value: &[u8],
    ) -> Result<bool, StoreError> {
        let tx = self.db.begin_write()?;
        let replaced = {
            let mut table = tx.open_table(DESTINATIONS)?;
            let holds = table.get((tenant, id))?.is_some_and(|stored| stored.value() == current);
            if holds {
                table.insert((tenant, id), value)?;
            }
            holds
        };
        tx.commit()?;
        Ok(replaced)
    }

    fn destination(&self, tenant: &str, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let table = self.db.begin_read()?.open_table(DESTINATIONS)?;
        Ok(table.get((tenant, id))?.map(|v| v.value().to_vec()))
    }

    fn destinations(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        let table = self.db.begin_read()?.open_table(DESTINATIONS)?;
        let all = table.iter()?.map(|entry| entry.map(|(_, v)| v.value().to_vec()));
        Ok(all.collect::<Result<_, _>>()?)
    }

    fn delete_destination(&self, tenant: &str, id: &str) -> Result<bool, StoreError> {
        let tx = self.db.begin_write()?;
        let deleted = tx.open_table(DESTINATIONS)?.remove((tenant, id))?.is_some();
        tx.commit()?;
        Ok(deleted)
    }

    fn deliveries(&self, uid: &str) -> Result<Vec<(i32, Vec<u8>)>, StoreError> {
        let table = self.db.begin_read()?.open_table(DELIVERIES)?;
        let range = table.range((uid, i32::MIN)..=(uid, i32::MAX))?;
        let all = range.map(|entry| entry.map(|(k, v)| (k.value().1, v.value().to_vec())));
        Ok(all.collect::<Result<_, _>>()?)
    }

    fn put_delivery(&self, uid: &str, partition: i32, value: &[u8]) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        tx.open_table(DELIVERIES)?.insert((uid, partition), value)?;
        tx.commit()?;
        Ok(())
    }

    fn delete_deliveries(&self, uid: &str) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        tx.open_table(DELIVERIES)?.retain_in((uid, i32::MIN)..=(uid, i32::MAX), |_, _| false)?;
        tx.commit()?;
        Ok(())
    }
}

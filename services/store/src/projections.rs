//! The projections' store: rows derived from the events log (see `tally_core::projection`) and,
//! per events partition, the checkpoint that says which offset they cover.
//!
//! The checkpoint is the source of truth for where a projector resumes (Kafka's committed
//! offsets are only a lag hint), so rows and checkpoint are written in one atomic commit, and a
//! checkpoint never goes backwards: a projector that lost its partition and still writes (a
//! zombie) or a replay from an older position is refused instead of rolling rows back.
//!
//! Rows live under a projection *version*, so a rebuild can fill a new version beside the live
//! one. The store keeps which version is live: readers read it, the projector writes it, and a
//! rebuild switches it once the new version has caught up ([`ProjectionStore::switch_live`]).

use crate::StoreError;
use std::collections::BTreeMap;
use tally_core::projection::{Change, Row, RowKey};
use tally_core::{AccountId, Asset, CommandId, DocKey, DocType, LedgerId, StreamId, TenantId};

/// A version of the projections: rows and checkpoints are kept apart per version.
pub type Version = u32;

/// The live version of a store nobody has switched yet.
pub const FIRST_VERSION: Version = 1;

/// A backend of the projections: rows and per-partition checkpoints (events offsets), kept per
/// [`Version`], with the live version. Implemented by [`crate::EmbeddedStore`] and
/// [`crate::ScyllaStore`], which pass the same conformance suite. Every method fails with
/// [`StoreError`]; refusals change nothing.
pub trait ProjectionStore: Send + Sync + std::fmt::Debug {
    /// The last events offset of `partition` that version `version` covers (`None`: nothing yet).
    fn checkpoint(&self, version: Version, partition: i32) -> Result<Option<i64>, StoreError>;

    /// Every partition's checkpoint of version `version` (partitions with none are absent).
    fn checkpoints(&self, version: Version) -> Result<BTreeMap<i32, i64>, StoreError>;

    /// Applies `changes` and moves the partition's checkpoint to `checkpoint`, all or nothing.
    /// Fails (and changes nothing) with [`StoreError::CheckpointBackwards`] when `checkpoint` is
    /// below the stored one, and with [`StoreError::VersionRetired`] when `version` is below the
    /// live version: once switched away from, a version is frozen (and can be dropped).
    fn commit(
        &self,
        version: Version,
        partition: i32,
        changes: &[Change],
        checkpoint: i64,
    ) -> Result<(), StoreError>;

    /// One row of a version.
    fn row(&self, version: Version, key: &RowKey) -> Result<Option<Row>, StoreError>;

    /// The rows of `keys` that a version has, with their keys, in the order of `keys` (a fold
    /// reading back what it forgot, `tally_core::memory`).
    fn rows_named(&self, version: Version, keys: &[RowKey]) -> Result<Vec<(RowKey, Row)>, StoreError> {
        let mut rows = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(row) = self.row(version, key)? {
                rows.push((key.clone(), row));
            }
        }
        Ok(rows)
    }

    /// Every row of a version (for comparisons and checks; not for serving).
    fn rows(&self, version: Version) -> Result<BTreeMap<RowKey, Row>, StoreError>;

    /// Up to `limit` rows of a version that `scan` selects, in its order. The typed reads in
    /// [`crate::reads`] are built on this and [`ProjectionStore::row`].
    fn scan(&self, version: Version, scan: &Scan, limit: usize) -> Result<Vec<(RowKey, Row)>, StoreError>;

    /// Whether a read can wait long (a network round trip), so that async callers must move it
    /// off their worker threads. Reads of the embedded store are lookups in a local B-tree
    /// (microseconds, from the page cache): moving them to another thread would cost more than
    /// they take (BENCHMARKS.md, query API).
    fn reads_block(&self) -> bool {
        true
    }

    /// The version readers read and the projector writes ([`FIRST_VERSION`] until switched).
    fn live_version(&self) -> Result<Version, StoreError>;

    /// Makes `to` the live version if `from` still is; fails with
    /// [`StoreError::LiveVersionMoved`] (and changes nothing) otherwise, so two rebuilds cannot
    /// both switch.
    fn switch_live(&self, from: Version, to: Version) -> Result<(), StoreError>;

    /// Versions that have rows or checkpoints, and the live one, in ascending order.
    fn versions(&self) -> Result<Vec<Version>, StoreError>;

    /// Deletes every row and checkpoint of `version`. Refuses the live version.
    fn drop_version(&self, version: Version) -> Result<(), StoreError>;
}

/// The ranges of rows readers page through: each is one partition of a Scylla table and one
/// contiguous range of the embedded store's keys. `after`/`before` are exclusive: the last
/// item of the previous page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scan {
    /// A ledger's accounts by id, those whose id starts with `prefix` (the first characters of
    /// an id are an id too).
    Accounts { tenant: TenantId, ledger: LedgerId, prefix: Option<AccountId>, after: Option<AccountId> },
    /// A type's documents by key, those whose key starts with `prefix`.
    Documents { tenant: TenantId, doc_type: DocType, prefix: Option<DocKey>, after: Option<DocKey> },
    /// An account's statement lines in one asset, newest first; `before` is (offset, line).
    Statement {
        tenant: TenantId,
        ledger: LedgerId,
        account: AccountId,
        asset: Asset,
        before: Option<(i64, u32)>,
    },
    /// The first answers to a command id in each stream that used it, by stream.
    Outcomes { tenant: TenantId, command_id: CommandId },
    /// A stream's events, oldest first, from stream version `after + 1`.
    Stream { tenant: TenantId, stream: StreamId, after: u64 },
    /// A tenant's timeline from `from_ms` to before `to_ms` (none: to the end), after the event
    /// at `after` (time, partition, offset).
    Timeline { tenant: TenantId, from_ms: i64, to_ms: Option<i64>, after: Option<(i64, i32, i64)> },
    /// A tenant's events in one events partition, in log order, at offsets after `after` and up
    /// to `upto` (both are offsets of the partition: `upto` is included).
    Partition { tenant: TenantId, partition: i32, after: i64, upto: i64 },
}

/// The rules every backend checks before a commit writes anything: the version is not retired
/// (below `live`) and the checkpoint does not go back from `stored`.
pub(crate) fn admit_commit(
    version: Version,
    live: Version,
    partition: i32,
    stored: Option<i64>,
    checkpoint: i64,
) -> Result<(), StoreError> {
    if version < live {
        return Err(StoreError::VersionRetired { version, live });
    }
    match stored {
        Some(stored) if stored > checkpoint => {
            Err(StoreError::CheckpointBackwards { partition, stored, proposed: checkpoint })
        }
        _ => Ok(()),
    }
}

/// The compare of [`ProjectionStore::switch_live`]: `from` must still be the live version.
pub(crate) fn admit_switch(from: Version, live: Version) -> Result<(), StoreError> {
    match live == from {
        true => Ok(()),
        false => Err(StoreError::LiveVersionMoved { expected: from, actual: live }),
    }
}

/// The check of [`ProjectionStore::drop_version`]: the live version is never dropped.
pub(crate) fn admit_drop(version: Version, live: Version) -> Result<(), StoreError> {
    match version == live {
        true => Err(StoreError::DropLive(version)),
        false => Ok(()),
    }
}

/// Row keys and values are stored as postcard bytes.
pub(crate) fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).expect("plain data serialises")
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

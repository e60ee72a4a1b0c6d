//! Tally's storage:
//! - [`snapshot`]: snapshots of a partition's state, so that an owner restores from the newest
//!   snapshot plus the log after it instead of the whole log (DESIGN.md section 2);
//! - [`projections`]: the rows the query side reads (accounts, transactions, documents, command
//!   outcomes, statement lines, the events index) with their per-partition checkpoints, written
//!   atomically together, per projection version;
//! - [`reads`]: what the query side asks of them, one small trait per concern, written once
//!   over every backend.
//!
//! Two backends pass one conformance suite per trait (`tests/`):
//! - [`EmbeddedStore`], the default (`tally dev`, most tests): [redb](https://docs.rs/redb), a
//!   pure-Rust embedded key-value store with ACID write transactions and a single file. One
//!   process owns the file. Chosen because the projector's contract is "rows and checkpoint in
//!   one atomic write", which redb's transactions give directly, and on measurement: with keys
//!   that sort like the rows ([`keys`]), redb folded faster than fjall (an LSM tree, measured
//!   beside it on the same events) with a lower p99 lag (BENCHMARKS.md).
//! - [`ScyllaStore`]: ScyllaDB or Cassandra for production ([`scylla`]); its suites run when
//!   `TALLY_SCYLLA_NODES` is set.

pub mod embedded;
mod keys;
pub mod metered;
pub mod projections;
pub mod reads;
pub mod scylla;
pub mod snapshot;

pub use embedded::EmbeddedStore;
pub use projections::ProjectionStore;
pub use scylla::{ScyllaConfig, ScyllaStore};
pub use snapshot::{Snapshot, SnapshotError, SnapshotStore};

/// Everything a Tally service keeps: projections and snapshots, on one backend.
pub trait Store: ProjectionStore + SnapshotStore {}

impl<T: ProjectionStore + SnapshotStore> Store for T {}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("embedded store: {0}")]
    Embedded(String),
    #[error("scylla: {0}")]
    Scylla(String),
    #[error("stored data does not decode: {0}")]
    Corrupt(String),
    #[error("checkpoint of partition {partition} would go back from {stored} to {proposed}")]
    CheckpointBackwards { partition: i32, stored: i64, proposed: i64 },
    #[error("the live projection version is {actual}, not {expected}")]
    LiveVersionMoved { expected: u32, actual: u32 },
    #[error("projection version {version} was retired: version {live} is live")]
    VersionRetired { version: u32, live: u32 },
    #[error("version {0} is the live projection version and cannot be dropped")]
    DropLive(u32),
}

macro_rules! embedded_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Embedded(e.to_string())
            }
        }
    )*};
}

embedded_errors!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

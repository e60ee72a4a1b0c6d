//! Tally's storage:
//! - [`snapshot`]: snapshots of a partition's state, so that an owner restores from the newest
//!   snapshot plus the log after it instead of the whole log (DESIGN.md section 2);
//! - [`projections`]: the rows the query side reads (accounts, transactions, documents, command
//!   outcomes, statement lines, the events index) with their per-partition checkpoints, written
//!   atomically together, per projection version;
//! - [`reads`]: what the query side asks of them, one small trait per concern, written once
//!   over every backend;
//! - [`sinks`]: the destinations of the sink runner and where each one's delivery stands;
//! - [`bridge`]: how async services call these synchronous traits.
//!
//! Two backends pass one conformance suite per trait (`tests/`):
//! - [`EmbeddedStore`], the default (`tally dev`, most tests): [redb](https://docs.rs/redb), a
//!   pure-Rust embedded key-value store with ACID write transactions and a single file. One
//!   process owns the file. Chosen because the projector's contract is "rows and checkpoint in
//!   one atomic write", which redb's transactions give directly, and on measurement: with keys
//!   that sort like the rows ([`keys`]), redb folded faster than fjall (an LSM tree, measured
//!   beside it on the same events) with a lower p99 lag (BENCHMARKS.md).
//! - [`ScyllaStore`]: ScyllaDB or Cassandra for production ([`scylla`]); its suites run when
//!   `TALLY_TEST_SCYLLA` is set.

pub mod bridge;
pub mod embedded;
mod keys;
pub mod metered;
pub mod projections;
pub mod reads;
pub mod scylla;
pub mod sinks;
pub mod snapshot;

pub use embedded::EmbeddedStore;
pub use projections::ProjectionStore;
pub use scylla::{ScyllaConfig, ScyllaStore};
pub use sinks::SinkStore;
pub use snapshot::{Snapshot, SnapshotError, SnapshotStore};

/// Everything a Tally service keeps: projections, snapshots and sink state, on one backend.
pub trait Store: ProjectionStore + SnapshotStore + SinkStore {}

impl<T: ProjectionStore + SnapshotStore + SinkStore> Store for T {}

/// Why a store operation failed: the backend failed, stored bytes do not decode, or a rule of
/// [`ProjectionStore`] refused the write (in which case nothing was changed).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The redb backend failed (opening the file, a transaction, a table, storage or commit).
    #[error("embedded store: {0}")]
    Embedded(String),
    /// The Scylla driver failed (connection, query or schema); the driver's message.
    #[error("scylla: {0}")]
    Scylla(String),
    /// A stored key or row does not decode (postcard), or is another kind of row than its key says.
    #[error("stored data does not decode: {0}")]
    Corrupt(String),
    /// A commit would move `partition`'s checkpoint (an events offset) back from `stored` to
    /// `proposed`: a superseded projector or a replay. Nothing was written.
    #[error("checkpoint of partition {partition} would go back from {stored} to {proposed}")]
    CheckpointBackwards { partition: i32, stored: i64, proposed: i64 },
    /// [`ProjectionStore::switch_live`] from `expected`, but `actual` is live: someone else
    /// switched first. Nothing was changed.
    #[error("the live projection version is {actual}, not {expected}")]
    LiveVersionMoved { expected: u32, actual: u32 },
    /// A commit to `version`, which is below the `live` version and so frozen. Nothing was written.
    #[error("projection version {version} was retired: version {live} is live")]
    VersionRetired { version: u32, live: u32 },
    /// [`ProjectionStore::drop_version`] of the live version (the number given), refused.
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

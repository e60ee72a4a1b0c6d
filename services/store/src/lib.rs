//! Tally's storage. Today: snapshots of a partition's state, so that an owner restores from the
//! newest snapshot plus the log after it instead of the whole log (DESIGN.md section 2). The
//! projections (accounts, postings, transactions, outcomes, documents, events index,
//! checkpoints) come next, behind the same kind of small traits, with redb and ScyllaDB backends.
//!
//! Backend: [redb](https://docs.rs/redb), a pure-Rust embedded key-value store with ACID write
//! transactions and a single file. Chosen over fjall (an LSM tree) because the projector's
//! contract is "rows and checkpoint in one atomic write", which redb's transactions give
//! directly, and because its read path (copy-on-write B-tree, no compaction) keeps latency flat.

pub mod embedded;
pub mod snapshot;

pub use embedded::EmbeddedStore;
pub use snapshot::{Snapshot, SnapshotError, SnapshotStore};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("embedded store: {0}")]
    Embedded(String),
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

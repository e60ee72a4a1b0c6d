//! The projections' store: rows derived from the events log (see `tally_core::projection`) and,
//! per events partition, the checkpoint that says which offset they cover.
//!
//! The checkpoint is the source of truth for where a projector resumes (Kafka's committed
//! offsets are only a lag hint), so rows and checkpoint are written in one atomic commit, and a
//! checkpoint never goes backwards: a projector that lost its partition and still writes (a
//! zombie) or a replay from an older position is refused instead of rolling rows back.
//!
//! Rows live under a projection *version*, so a rebuild can fill a new version beside the live
//! one and readers switch when it has caught up.

use crate::StoreError;
use std::collections::BTreeMap;
use tally_core::projection::{Change, Row, RowKey};

/// A version of the projections: rows and checkpoints are kept apart per version.
pub type Version = u32;

pub trait ProjectionStore: Send + Sync + std::fmt::Debug {
    /// The last events offset of `partition` that version `version` covers (`None`: nothing yet).
    fn checkpoint(&self, version: Version, partition: i32) -> Result<Option<i64>, StoreError>;

    /// Applies `changes` and moves the partition's checkpoint to `checkpoint`, all or nothing.
    /// Fails with [`StoreError::CheckpointBackwards`] (and changes nothing) when `checkpoint` is
    /// below the stored one.
    fn commit(
        &self,
        version: Version,
        partition: i32,
        changes: &[Change],
        checkpoint: i64,
    ) -> Result<(), StoreError>;

    /// One row of a version.
    fn row(&self, version: Version, key: &RowKey) -> Result<Option<Row>, StoreError>;

    /// Every row of a version (for comparisons and checks; not for serving).
    fn rows(&self, version: Version) -> Result<BTreeMap<RowKey, Row>, StoreError>;
}

/// Row keys and values are stored as postcard bytes.
pub(crate) fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).expect("plain data serialises")
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

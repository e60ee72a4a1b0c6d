//! Snapshots: a partition's [`Replica`] (reader position and state) as of one offset of its
//! events partition.
//!
//! A snapshot is only ever a shortcut: restoring from it and reading the log after it must give
//! what reading the whole log gives. So a snapshot is written only of a state known to equal the
//! log's fold up to `covers`, carries a format version and a checksum, and one that fails any
//! check is skipped with a warning (the next older one is tried, then the full log).
//!
//! Layout (little-endian): magic `TALLYSNP`, format version (u16), `covers` (i64),
//! `forgotten_upto` (i64, from format 4), payload length (u64), xxh3-128 of everything before it
//! and of the payload (u128), payload (postcard of the replica). Format 3, written before
//! processors forgot anything, is still read, as `forgotten_upto` -1.

use crate::StoreError;
use tally_core::log::Replica;

const MAGIC: &[u8; 8] = b"TALLYSNP";
/// Bumped whenever the layout or the payload's shape changes; formats other than this one and
/// [`FORMAT_VERSION_WITHOUT_FORGETTING`] are skipped, never misread.
pub const FORMAT_VERSION: u16 = 4;
/// The format before `forgotten_upto`: read as a snapshot of a state that forgot nothing.
pub const FORMAT_VERSION_WITHOUT_FORGETTING: u16 = 3;
/// Header bytes of format 4 (format 3 lacks the 8 of `forgotten_upto`), checksum included.
const HEADER_LEN: usize = 8 + 2 + 8 + 8 + 8 + 16;

/// The state of one partition after folding its events log up to and including `covers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The last events offset folded into `replica` (inclusive).
    pub covers: i64,
    /// The reader position and state after folding the log up to `covers`.
    pub replica: Replica,
    /// The highest offset whose changes the state forgot (`tally_core::memory::Window`): a
    /// replay from this snapshot reads them back from a projection that covers it. -1: the
    /// state holds every transaction and command id.
    pub forgotten_upto: i64,
}

/// Why stored bytes are not a usable snapshot. A reader skips such a snapshot with a warning and
/// tries the next older one (then the start of the log); it never misreads one.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SnapshotError {
    /// Fewer bytes (the number given) than a snapshot header (50 bytes; 42 in format 3).
    #[error("shorter than a snapshot header ({0} bytes)")]
    Truncated(usize),
    /// The first 8 bytes are not `TALLYSNP`.
    #[error("not a snapshot (bad magic)")]
    Magic,
    /// Written in a format version (the one given) this build does not read.
    #[error("snapshot format {0}, this build reads {FORMAT_VERSION_WITHOUT_FORGETTING} and {FORMAT_VERSION}")]
    Version(u16),
    /// The header's payload length (`expected`) is not the number of bytes after it (`actual`).
    #[error("payload is {actual} bytes, the header says {expected}")]
    Length { expected: u64, actual: usize },
    /// The xxh3-128 checksum over header and payload does not match: a torn or corrupt write.
    #[error("checksum mismatch")]
    Checksum,
    /// The checksum matches but the payload does not decode as a replica (postcard's message).
    #[error("payload: {0}")]
    Payload(String),
    /// Stored under offset `key` but its header says it covers `covers`.
    #[error("stored under offset {key} but covers {covers}")]
    Misfiled { key: i64, covers: i64 },
}

impl Snapshot {
    /// Encodes the snapshot in the module's layout: header, xxh3-128 checksum, postcard payload.
    pub fn encode(&self) -> Vec<u8> {
        // Serialising plain data into a Vec cannot fail.
        let payload = postcard::to_stdvec(&self.replica).expect("a replica serialises");
        let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&self.covers.to_le_bytes());
        out.extend_from_slice(&self.forgotten_upto.to_le_bytes());
        out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        let checksum = checksum(&out, &payload);
        out.extend_from_slice(&checksum.to_le_bytes());
        out.extend_from_slice(&payload);
        out
    }

    /// Reads bytes written by [`Snapshot::encode`], checking magic, format version, length and
    /// checksum first; fails with the [`SnapshotError`] of the first check that does not pass.
    pub fn decode(bytes: &[u8]) -> Result<Snapshot, SnapshotError> {
        const FORGOTTEN_LEN: usize = 8;
        let Some(start) = bytes.get(..10) else { return Err(SnapshotError::Truncated(bytes.len())) };
        if &start[..8] != MAGIC {
            return Err(SnapshotError::Magic);
        }
        let version = u16::from_le_bytes(start[8..10].try_into().expect("2 bytes"));
        let header_len = match version {
            FORMAT_VERSION => HEADER_LEN,
            FORMAT_VERSION_WITHOUT_FORGETTING => HEADER_LEN - FORGOTTEN_LEN,
            other => return Err(SnapshotError::Version(other)),
        };
        if bytes.len() < header_len {
            return Err(SnapshotError::Truncated(bytes.len()));
        }
        let (header, rest) = bytes.split_at(header_len - 16);
        let (sum, payload) = rest.split_at(16);
        let covers = i64::from_le_bytes(header[10..18].try_into().expect("8 bytes"));
        let (forgotten_upto, length) = match version {
            FORMAT_VERSION => {
                (i64::from_le_bytes(header[18..26].try_into().expect("8 bytes")), &header[26..34])
            }
            _ => (-1, &header[18..26]),
        };
        let expected = u64::from_le_bytes(length.try_into().expect("8 bytes"));
        if expected != payload.len() as u64 {
            return Err(SnapshotError::Length { expected, actual: payload.len() });
        }
        if u128::from_le_bytes(sum.try_into().expect("16 bytes")) != checksum(header, payload) {
            return Err(SnapshotError::Checksum);
        }
        let replica = postcard::from_bytes(payload).map_err(|e| SnapshotError::Payload(e.to_string()))?;
        Ok(Snapshot { covers, replica, forgotten_upto })
    }
}

fn checksum(header: &[u8], payload: &[u8]) -> u128 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(header);
    hasher.update(payload);
    hasher.digest128()
}

/// Where snapshots are kept. `log` names the events topic, so deployments sharing a store
/// never see each other's snapshots.
pub trait SnapshotStore: Send + Sync + std::fmt::Debug {
    /// Stores an encoded snapshot covering `covers`, and forgets all but the newest `keep` of
    /// the partition's.
    fn put(
        &self,
        log: &str,
        partition: i32,
        covers: i64,
        bytes: &[u8],
        keep: usize,
    ) -> Result<(), StoreError>;

    /// The partition's stored snapshots that cover at most offset `at_most`, newest first, at
    /// most `limit` of them, as stored (unchecked).
    fn newest_first(
        &self,
        log: &str,
        partition: i32,
        at_most: i64,
        limit: usize,
    ) -> Result<Vec<(i64, Vec<u8>)>, StoreError>;
}

/// How many snapshots per partition are kept: a corrupt newest one still leaves older ones.
pub const KEEP: usize = 3;

/// Saves `snapshot` for `log`/`partition`.
pub fn save(
    store: &dyn SnapshotStore,
    log: &str,
    partition: i32,
    snapshot: &Snapshot,
) -> Result<(), StoreError> {
    store.put(log, partition, snapshot.covers, &snapshot.encode(), KEEP)
}

/// The newest snapshot of the partition covering at most offset `at_most` that passes every
/// check; each one that does not is skipped with a warning. `None`: restore from the start of
/// the log.
pub fn newest_valid(
    store: &dyn SnapshotStore,
    log: &str,
    partition: i32,
    at_most: i64,
) -> Result<Option<Snapshot>, StoreError> {
    for (key, bytes) in store.newest_first(log, partition, at_most, KEEP * 2)? {
        match Snapshot::decode(&bytes).and_then(|s| filed_under(s, key)) {
            Ok(snapshot) => return Ok(Some(snapshot)),
            Err(e) => tracing::warn!(log, partition, covers = key, "skipping an unusable snapshot: {e}"),
        }
    }
    Ok(None)
}

/// Where a reader of a partition resumes: the fold of the log before `next`, and `next`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumePoint {
    /// The fold of the log before `next` (empty at the start of the log).
    pub replica: Replica,
    /// The offset to read on from.
    pub next: i64,
    /// The offset covered by the snapshot it comes from; `None`: the start of the log.
    pub snapshot: Option<i64>,
    /// What the snapshot's state forgot ([`Snapshot::forgotten_upto`]; -1: nothing).
    pub forgotten_upto: i64,
}

impl ResumePoint {
    /// The start of the log.
    pub fn start() -> Self {
        ResumePoint { replica: Replica::new(), next: 0, snapshot: None, forgotten_upto: -1 }
    }
}

/// Where a reader of the partition resumes: after the newest usable snapshot covering at most
/// `at_most`, or at the start of the log (also without a store). A store that cannot be read
/// costs a full replay (with a warning), not the reader. The processor and the outcome watcher
/// take the newest snapshot (`i64::MAX`); the projector one at or before its checkpoint.
pub fn resume_point(
    store: Option<&dyn SnapshotStore>,
    log: &str,
    partition: i32,
    at_most: i64,
) -> ResumePoint {
    let newest = store.and_then(|store| {
        newest_valid(store, log, partition, at_most)
            .inspect_err(|e| {
                tracing::warn!(log, partition, "reading snapshots: {e}; reading the log from its start")
            })
            .ok()
            .flatten()
    });
    match newest {
        Some(s) => ResumePoint {
            next: s.covers + 1,
            snapshot: Some(s.covers),
            forgotten_upto: s.forgotten_upto,
            replica: s.replica,
        },
        None => ResumePoint::start(),
    }
}

fn filed_under(snapshot: Snapshot, key: i64) -> Result<Snapshot, SnapshotError> {
    if snapshot.covers == key {
        Ok(snapshot)
    } else {
        Err(SnapshotError::Misfiled { key, covers: snapshot.covers })
    }
}

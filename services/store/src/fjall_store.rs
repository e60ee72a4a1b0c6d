//! A candidate embedded backend under evaluation: the projections on fjall, an LSM tree whose
//! write batches are atomic across its partitions. redb's commits grow costly with many rows per
//! batch (see BENCHMARKS.md, projector); this backend passes the same conformance suite and the
//! projector benchmark measures it beside redb in the same run. Not selectable with `--store`
//! yet and without snapshots: whichever store wins replaces the other.
//!
//! Each commit is durable when it returns (`fdatasync` of fjall's journal), like redb's.

use crate::StoreError;
use crate::projections::{self, FIRST_VERSION, ProjectionStore, Version};
use fjall::{Config, Keyspace, PartitionCreateOptions, PartitionHandle, PersistMode};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use tally_core::projection::{Change, Row, RowKey};

pub struct FjallStore {
    keyspace: Keyspace,
    rows: PartitionHandle,
    checkpoints: PartitionHandle,
    live: PartitionHandle,
    /// Commits read the checkpoint and the live version before writing: one at a time.
    writer: Mutex<()>,
}

impl std::fmt::Debug for FjallStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FjallStore")
    }
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Embedded(e.to_string())
}

fn checkpoint_key(version: Version, partition: i32) -> [u8; 8] {
    let mut key = [0; 8];
    key[..4].copy_from_slice(&version.to_be_bytes());
    key[4..].copy_from_slice(&((partition as u32) ^ 0x8000_0000).to_be_bytes());
    key
}

fn row_key(version: Version, key: &RowKey) -> Vec<u8> {
    let mut bytes = version.to_be_bytes().to_vec();
    bytes.extend(projections::encode(key));
    bytes
}

impl FjallStore {
    pub fn open(path: &Path) -> Result<FjallStore, StoreError> {
        let keyspace = Config::new(path).open().map_err(err)?;
        let open = |name| keyspace.open_partition(name, PartitionCreateOptions::default()).map_err(err);
        let (rows, checkpoints, live) = (open("rows")?, open("checkpoints")?, open("live")?);
        Ok(FjallStore { keyspace, rows, checkpoints, live, writer: Mutex::new(()) })
    }
}

impl ProjectionStore for FjallStore {
    fn checkpoint(&self, version: Version, partition: i32) -> Result<Option<i64>, StoreError> {
        let found = self.checkpoints.get(checkpoint_key(version, partition)).map_err(err)?;
        Ok(found.map(|v| i64::from_be_bytes(v.as_ref().try_into().expect("8 bytes"))))
    }

    fn commit(
        &self,
        version: Version,
        partition: i32,
        changes: &[Change],
        checkpoint: i64,
    ) -> Result<(), StoreError> {
        let _writer = self.writer.lock().expect("not poisoned");
        let (live, stored) = (self.live_version()?, self.checkpoint(version, partition)?);
        projections::admit_commit(version, live, partition, stored, checkpoint)?;
        let mut batch = self.keyspace.batch().durability(Some(PersistMode::SyncData));
        for (key, row) in changes {
            match row {
                Some(row) => batch.insert(&self.rows, row_key(version, key), projections::encode(row)),
                None => batch.remove(&self.rows, row_key(version, key)),
            }
        }
        batch.insert(&self.checkpoints, checkpoint_key(version, partition), checkpoint.to_be_bytes());
        batch.commit().map_err(err)
    }

    fn row(&self, version: Version, key: &RowKey) -> Result<Option<Row>, StoreError> {
        let found = self.rows.get(row_key(version, key)).map_err(err)?;
        found.map(|v| projections::decode(&v)).transpose()
    }

    fn rows(&self, version: Version) -> Result<BTreeMap<RowKey, Row>, StoreError> {
        let mut rows = BTreeMap::new();
        for entry in self.rows.prefix(version.to_be_bytes()) {
            let (key, value) = entry.map_err(err)?;
            rows.insert(projections::decode(&key[4..])?, projections::decode(&value)?);
        }
        Ok(rows)
    }

    fn live_version(&self) -> Result<Version, StoreError> {
        let found = self.live.get("live").map_err(err)?;
        Ok(found.map_or(FIRST_VERSION, |v| u32::from_be_bytes(v.as_ref().try_into().expect("4 bytes"))))
    }

    fn switch_live(&self, from: Version, to: Version) -> Result<(), StoreError> {
        let _writer = self.writer.lock().expect("not poisoned");
        projections::admit_switch(from, self.live_version()?)?;
        self.live.insert("live", to.to_be_bytes()).map_err(err)?;
        self.keyspace.persist(PersistMode::SyncAll).map_err(err)
    }

    fn versions(&self) -> Result<Vec<Version>, StoreError> {
        let mut versions = std::collections::BTreeSet::from([self.live_version()?]);
        for entry in self.checkpoints.iter() {
            let (key, _) = entry.map_err(err)?;
            versions.insert(u32::from_be_bytes(key[..4].try_into().expect("4 bytes")));
        }
        Ok(versions.into_iter().collect())
    }

    fn drop_version(&self, version: Version) -> Result<(), StoreError> {
        let _writer = self.writer.lock().expect("not poisoned");
        projections::admit_drop(version, self.live_version()?)?;
        let mut batch = self.keyspace.batch();
        for entry in self.rows.prefix(version.to_be_bytes()) {
            batch.remove(&self.rows, entry.map_err(err)?.0);
        }
        for entry in self.checkpoints.prefix(version.to_be_bytes()) {
            batch.remove(&self.checkpoints, entry.map_err(err)?.0);
        }
        batch.commit().map_err(err)
    }
}

//! The embedded backend: one redb file under the data directory, or memory.

use crate::StoreError;
use crate::snapshot::SnapshotStore;
use redb::{Database, ReadableTable, TableDefinition};
use std::path::Path;

/// (events topic, partition, covered offset) -> encoded snapshot.
const SNAPSHOTS: TableDefinition<(&str, i32, i64), &[u8]> = TableDefinition::new("snapshots");

pub struct EmbeddedStore {
    db: Database,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EmbeddedStore")
    }
}

impl EmbeddedStore {
    /// Opens (or creates) the store in the file `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Embedded(format!("{}: {e}", dir.display())))?;
        }
        Self::init(Database::create(path)?)
    }

    /// A store that lives and dies with the process (`tally dev` without `--data-dir`, tests).
    pub fn in_memory() -> Result<Self, StoreError> {
        Self::init(Database::builder().create_with_backend(redb::backends::InMemoryBackend::new())?)
    }

    fn init(db: Database) -> Result<Self, StoreError> {
        let tx = db.begin_write()?;
        tx.open_table(SNAPSHOTS)?;
        tx.commit()?;
        Ok(EmbeddedStore { db })
    }
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
        limit: usize,
    ) -> Result<Vec<(i64, Vec<u8>)>, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(SNAPSHOTS)?;
        let found = table
            .range((log, partition, i64::MIN)..=(log, partition, i64::MAX))?
            .rev()
            .take(limit)
            .map(|entry| entry.map(|(k, v)| (k.value().2, v.value().to_vec())))
            .collect::<Result<_, _>>()?;
        Ok(found)
    }
}

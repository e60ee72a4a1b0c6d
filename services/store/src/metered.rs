//! A store that times every operation of the store it wraps and counts its errors (metrics
//! `tally_store_operation_seconds` and `tally_store_errors_total`, by operation). The services
//! wrap whichever backend they open, so both are measured the same way.

use crate::projections::{ProjectionStore, Scan, Version};
use crate::sinks::SinkStore;
use crate::snapshot::SnapshotStore;
use crate::{Store, StoreError};
use prometheus::{HistogramVec, IntCounterVec, register_histogram_vec, register_int_counter_vec};
use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};
use tally_core::projection::{Change, Row, RowKey};

static SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "tally_store_operation_seconds",
        "Time of a store operation (commit, row, scan, checkpoint, snapshot_put, ...)",
        &["operation"],
        vec![0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]
    )
    .expect("registered once")
});

static ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "tally_store_errors_total",
        "Store operations that failed, by operation (refusals such as a checkpoint going back count too)",
        &["operation"]
    )
    .expect("registered once")
});

/// Times and counts the operations of `inner`.
#[derive(Debug)]
pub struct Metered {
    inner: Arc<dyn Store>,
}

impl Metered {
    /// Wraps `inner`; the metrics are registered in the default Prometheus registry on first use.
    pub fn new(inner: Arc<dyn Store>) -> Metered {
        Metered { inner }
    }
}

fn timed<T>(operation: &'static str, run: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
    let started = std::time::Instant::now();
    let result = run();
    SECONDS.with_label_values(&[operation]).observe(started.elapsed().as_secs_f64());
    if result.is_err() {
        ERRORS.with_label_values(&[operation]).inc();
    }
    result
}

impl ProjectionStore for Metered {
    fn checkpoint(&self, version: Version, partition: i32) -> Result<Option<i64>, StoreError> {
        timed("checkpoint", || self.inner.checkpoint(version, partition))
    }

    fn checkpoints(&self, version: Version) -> Result<BTreeMap<i32, i64>, StoreError> {
        timed("checkpoints", || self.inner.checkpoints(version))
    }

    fn commit(
        &self,
        version: Version,
        partition: i32,
        changes: &[Change],
        checkpoint: i64,
    ) -> Result<(), StoreError> {
        timed("commit", || self.inner.commit(version, partition, changes, checkpoint))
    }

    fn row(&self, version: Version, key: &RowKey) -> Result<Option<Row>, StoreError> {
        timed("row", || self.inner.row(version, key))
    }

    fn rows_named(&self, version: Version, keys: &[RowKey]) -> Result<Vec<(RowKey, Row)>, StoreError> {
        timed("rows_named", || self.inner.rows_named(version, keys))
    }

    fn rows(&self, version: Version) -> Result<BTreeMap<RowKey, Row>, StoreError> {
        timed("rows", || self.inner.rows(version))
    }

    fn scan(&self, version: Version, scan: &Scan, limit: usize) -> Result<Vec<(RowKey, Row)>, StoreError> {
        timed("scan", || self.inner.scan(version, scan, limit))
    }

    fn reads_block(&self) -> bool {
        self.inner.reads_block()
    }

    fn live_version(&self) -> Result<Version, StoreError> {
        timed("live_version", || self.inner.live_version())
    }

    fn switch_live(&self, from: Version, to: Version) -> Result<(), StoreError> {
        timed("switch_live", || self.inner.switch_live(from, to))
    }

    fn versions(&self) -> Result<Vec<Version>, StoreError> {
        timed("versions", || self.inner.versions())
    }

    fn drop_version(&self, version: Version) -> Result<(), StoreError> {
        timed("drop_version", || self.inner.drop_version(version))
    }
}

impl SnapshotStore for Metered {
    fn put(
        &self,
        log: &str,
        partition: i32,
        covers: i64,
        bytes: &[u8],
        keep: usize,
    ) -> Result<(), StoreError> {
        timed("snapshot_put", || self.inner.put(log, partition, covers, bytes, keep))
    }

    fn newest_first(
        &self,
        log: &str,
        partition: i32,
        at_most: i64,
        limit: usize,
    ) -> Result<Vec<(i64, Vec<u8>)>, StoreError> {
        timed("snapshot_read", || self.inner.newest_first(log, partition, at_most, limit))
    }
}

impl SinkStore for Metered {
    fn create_destination(&self, tenant: &str, id: &str, value: &[u8]) -> Result<bool, StoreError> {
        timed("destination_put", || self.inner.create_destination(tenant, id, value))
    }

    fn replace_destination(
        &self,
        tenant: &str,
        id: &str,
        current: &[u8],
        value: &[u8],
    ) -> Result<bool, StoreError> {
        timed("destination_put", || self.inner.replace_destination(tenant, id, current, value))
    }

    fn destination(&self, tenant: &str, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        timed("destination", || self.inner.destination(tenant, id))
    }

    fn destinations(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        timed("destinations", || self.inner.destinations())
    }

    fn delete_destination(&self, tenant: &str, id: &str) -> Result<bool, StoreError> {
        timed("destination_delete", || self.inner.delete_destination(tenant, id))
    }

    fn deliveries(&self, uid: &str) -> Result<Vec<(i32, Vec<u8>)>, StoreError> {
        timed("deliveries", || self.inner.deliveries(uid))
    }

    fn put_delivery(&self, uid: &str, partition: i32, value: &[u8]) -> Result<(), StoreError> {
        timed("delivery_put", || self.inner.put_delivery(uid, partition, value))
    }

    fn delete_deliveries(&self, uid: &str) -> Result<(), StoreError> {
        timed("deliveries_delete", || self.inner.delete_deliveries(uid))
    }
}

//! The projector's metrics: how far behind the log the projections are (from an event being
//! written to its rows being committed), the checkpoint of each partition, and batch sizes.

use prometheus::{Histogram, IntGaugeVec, register_histogram, register_int_gauge_vec};
use std::sync::LazyLock;

pub(crate) static LAG_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "tally_projection_lag_seconds",
        "From an event written to the log to the commit of its rows (the last event of each batch)",
        vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]
    )
    .expect("registered once")
});

pub(crate) static CHECKPOINT: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "tally_projection_checkpoint_offset",
        "The last events offset the live projection covers, per partition",
        &["partition"]
    )
    .expect("registered once")
});

pub(crate) static BATCH_ROWS: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "tally_projection_batch_rows",
        "Rows written per projector commit",
        vec![1.0, 10.0, 100.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 50000.0]
    )
    .expect("registered once")
});

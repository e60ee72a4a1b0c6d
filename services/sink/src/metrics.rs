//! The sink runner's metrics, per destination (labelled `tenant` and `destination`).

use prometheus::{IntCounterVec, IntGaugeVec, register_int_counter_vec, register_int_gauge_vec};
use std::sync::LazyLock;

pub static DELIVERED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "tally_sink_delivered_total",
        "Events delivered to a destination (a redelivery after a crash counts again)",
        &["tenant", "destination"]
    )
    .expect("registered once")
});

pub static FAILED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "tally_sink_failed_attempts_total",
        "Delivery attempts that failed (an error, a timeout, a status other than 2xx)",
        &["tenant", "destination"]
    )
    .expect("registered once")
});

pub static RETRIES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "tally_sink_retries_total",
        "Delivery attempts after a failed one, of the same event",
        &["tenant", "destination"]
    )
    .expect("registered once")
});

pub static LAG_EVENTS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "tally_sink_lag_records",
        "Events log records between a destination's position and the partition's end",
        &["tenant", "destination", "partition"]
    )
    .expect("registered once")
});

pub static LAG_MS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "tally_sink_lag_milliseconds",
        "Age of the last record a destination's lane passed, when it passed it (0 once caught up)",
        &["tenant", "destination", "partition"]
    )
    .expect("registered once")
});

pub static PARKED: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "tally_sink_parked",
        "1 while a destination's lane is parked on an event that failed every attempt",
        &["tenant", "destination", "partition"]
    )
    .expect("registered once")
});

/// Drops the series of a deleted destination's lane in `partition` (and its counters).
pub fn forget(tenant: &str, destination: &str, partition: i32) {
    let partition = partition.to_string();
    for gauge in [&LAG_EVENTS, &LAG_MS, &PARKED] {
        let _ = gauge.remove_label_values(&[tenant, destination, &partition]);
    }
    for counter in [&DELIVERED, &FAILED, &RETRIES] {
        let _ = counter.remove_label_values(&[tenant, destination]);
    }
}

//! The processor's metrics: commands by outcome and reason, dead letters by reason, batches
//! (size and time to answer), and when each partition last wrote a snapshot.

use prometheus::{
    Histogram, IntCounter, IntCounterVec, IntGaugeVec, register_histogram, register_int_counter,
    register_int_counter_vec, register_int_gauge_vec,
};
use std::sync::LazyLock;
use tally_core::{Answer, Event};

pub(crate) static COMMANDS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "tally_commands_total",
        "Commands answered, by outcome (accepted, deduplicated, rejected, repeated) and reason code",
        &["outcome", "reason"]
    )
    .expect("registered once")
});

pub(crate) static DEAD_LETTERS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "tally_dead_letters_total",
        "Command records copied to the dead-letter topic, by reason code",
        &["reason"]
    )
    .expect("registered once")
});

pub(crate) static BATCH_RECORDS: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "tally_processor_batch_records",
        "Command records answered per batch",
        vec![1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 5000.0]
    )
    .expect("registered once")
});

pub(crate) static BATCH_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "tally_processor_batch_seconds",
        "Time to answer a batch: decide, append to the log, durable",
        vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]
    )
    .expect("registered once")
});

pub(crate) static SNAPSHOT_WRITTEN: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "tally_snapshot_written_timestamp_seconds",
        "When each partition last wrote a snapshot (Unix time; the age is time() minus this)",
        &["partition"]
    )
    .expect("registered once")
});

pub(crate) static FORGOTTEN: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "tally_processor_forgotten_total",
        "Transactions and command ids dropped from memory (the live projection holds them)"
    )
    .expect("registered once")
});

pub(crate) static RECALLED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "tally_processor_recalled_total",
        "Transactions and command ids read back from the live projection for a command that named them"
    )
    .expect("registered once")
});

/// Counts the answer to one command.
pub(crate) fn answered(event: &Event) {
    let answer = event.body.answer();
    let reason = match answer {
        Answer::Rejected(reason) => reason.code(),
        _ => "",
    };
    COMMANDS.with_label_values(&[answer.label(), reason]).inc();
}

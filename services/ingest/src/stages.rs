//! Where a command's time goes, stage by stage, from the front door to its answer: one
//! histogram, `tally_command_stage_seconds{stage}`, fed by the front door, the processor and
//! the outcome watcher (one process or several: each exports what it measured).
//!
//! The stages follow one command in order, but they are measured by different clocks and not
//! all per command, so they do not add up exactly:
//! - `produce` (front door, per command): from handing the command record to the producer
//!   until the broker acknowledged it;
//! - `hand_over` (processor, per command record): from the record's timestamp (set by its
//!   producer when it was produced, millisecond resolution) until the processor starts the
//!   round that answers it: the fetch, and the wait behind earlier rounds. It overlaps the end
//!   of `produce` (the broker can hand the record on before its acknowledgement arrives);
//! - `decide` (processor, per round of a batch): deciding the round's commands and folding the
//!   answers;
//! - `append` (processor, per round): appending the round's records to `events` until durable;
//! - `watch` (outcome watcher, per answer): from the event record's timestamp (set when the
//!   processor produced it, so it includes the broker's part of `append`) until the watcher has
//!   handed the answer to the requests waiting for it;
//! - `answer_wait` (front door, per command): from the broker's acknowledgement of the command
//!   until its answer came; the processor's and the watcher's stages happen inside it.

use prometheus::{HistogramVec, register_histogram_vec};
use std::sync::LazyLock;
use std::time::Duration;

/// One stage of a command's way (see the module's documentation for what each one spans).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Produce,
    HandOver,
    Decide,
    Append,
    Watch,
    AnswerWait,
}

impl Stage {
    /// Every stage, in the order a command meets them.
    pub const ALL: [Stage; 6] =
        [Stage::Produce, Stage::HandOver, Stage::Decide, Stage::Append, Stage::Watch, Stage::AnswerWait];

    /// The value of the `stage` label.
    pub fn label(self) -> &'static str {
        match self {
            Stage::Produce => "produce",
            Stage::HandOver => "hand_over",
            Stage::Decide => "decide",
            Stage::Append => "append",
            Stage::Watch => "watch",
            Stage::AnswerWait => "answer_wait",
        }
    }

    /// Counts `took` against this stage.
    pub fn observe(self, took: Duration) {
        STAGE_SECONDS.with_label_values(&[self.label()]).observe(took.as_secs_f64());
    }

    /// Counts the time from `since_ms` to `now_ms` (milliseconds since the Unix epoch, as
    /// record timestamps are) against this stage; a clock that went back counts as zero.
    pub fn observe_since(self, since_ms: i64, now_ms: i64) {
        self.observe(Duration::from_millis(now_ms.saturating_sub(since_ms).max(0) as u64));
    }
}

/// The histogram's name, for readers of the default registry (the benchmarks).
pub const STAGE_SECONDS_NAME: &str = "tally_command_stage_seconds";

/// Buckets fine enough to see a few milliseconds apart: the front door's budget is 20 ms.
static STAGE_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        STAGE_SECONDS_NAME,
        "Time a command spends in each stage from the front door to its answer (see the stage label)",
        &["stage"],
        vec![
            0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5,
            1.0, 2.5, 5.0
        ]
    )
    .expect("registered once")
});

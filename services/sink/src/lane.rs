//! A lane: one destination's delivery through one events partition. Its durable record says
//! where it stands, and [`Lane::judge`] is the one rule of which log records go out: exactly
//! the events the projector folds (the [`LogReader`] rule, so a zombie's writes and duplicate
//! answers never leave), in log order.

use serde::{Deserialize, Serialize};
use std::time::Duration;
use tally_core::Event;
use tally_core::log::{LogReader, LogRecord, Verdict};

/// Where one destination's delivery stands in one events partition (stored per destination
/// incarnation and partition).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lane {
    /// The next events offset to read: every record before it was delivered or skipped.
    pub next_offset: i64,
    /// The reader's position after every record before `next_offset`.
    pub reader: LogReader,
    /// Events delivered so far (a redelivery after a crash counts again).
    pub delivered: u64,
    /// Set when an event failed every attempt: the lane stops on it until the destination
    /// is resumed.
    pub parked: Option<Parked>,
    /// Set while the lane retries an event whose last attempt failed (cleared once it is
    /// delivered), so an operator sees a struggling lane before it parks.
    #[serde(default)]
    pub failing: Option<Failing>,
}

/// The event a lane is retrying.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failing {
    pub offset: i64,
    pub event_id: String,
    /// Attempts so far, all failed.
    pub attempts: u32,
    /// The last attempt's error (cut to [`ERROR_LEN_MAX`] bytes).
    pub error: String,
    /// When the first attempt failed, in milliseconds since the Unix epoch.
    pub since_ms: i64,
}

/// The event a lane stopped on, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parked {
    /// The destination's replay count when this lane parked ([`crate::Destination::replay`]).
    pub replay: u64,
    /// The events offset and id of the event that failed.
    pub offset: i64,
    pub event_id: String,
    pub attempts: u32,
    /// The last attempt's error (cut to [`ERROR_LEN_MAX`] bytes).
    pub error: String,
    /// Milliseconds since the Unix epoch.
    pub at_ms: i64,
}

/// Longest error kept with a parked lane.
pub const ERROR_LEN_MAX: usize = 512;

impl Lane {
    /// Whether the lane is parked for the destination's current replay count (a resume, which
    /// raises the count, releases it).
    pub fn is_parked(&self, replay: u64) -> bool {
        self.parked.as_ref().is_some_and(|p| p.replay >= replay)
    }

    /// Reads the record at the lane's next offset: which event, if any, goes out (before the
    /// destination's own filter), and the reader's position after it. The lane itself does
    /// not move until [`Lane::passed`] (after the event was delivered): a lane stopped or
    /// parked on an event judges it again when it goes on.
    pub fn judge<'r>(&self, record: &'r LogRecord) -> (Option<&'r Event>, LogReader) {
        let mut after = self.reader;
        match (after.read(record), record) {
            (Verdict::Apply, LogRecord::Event { event, .. }) => (Some(event), after),
            _ => (None, after),
        }
    }

    /// The record at `offset` was delivered or skipped; `after` is what [`Lane::judge`] gave
    /// for it (the reader unchanged, for a record that could not be read at all).
    pub fn passed(&mut self, offset: i64, after: LogReader) {
        self.next_offset = offset + 1;
        self.reader = after;
    }

    /// The stored form.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a lane serialises")
    }

    /// Reads [`Lane::encode`]'s bytes.
    pub fn decode(bytes: &[u8]) -> Result<Lane, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// How long to wait after `failures` failed attempts (1 or more) at one event: exponential from
/// `base`, at most `cap`, with "equal jitter" (half fixed, half random; `jitter` in [0, 1) is
/// the random draw), so lanes that failed together do not retry together.
pub fn backoff(failures: u32, base: Duration, cap: Duration, jitter: f64) -> Duration {
    let exponent = failures.saturating_sub(1).min(30);
    tally_runtime::spread(base.saturating_mul(1 << exponent).min(cap), jitter)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tally_core::testkit;

    /// A partition's log with what goes wrong in one: a takeover while the old owner still
    /// writes (a zombie's events), the new owner answering commands again (duplicates), and
    /// dead-letter markers.
    fn troubled_log(events: Vec<Event>, takeover: usize) -> Vec<LogRecord> {
        let mut log = vec![LogRecord::Claim { epoch: 1, owner: "a".into() }];
        let at = takeover.min(events.len());
        let (before, after) = events.split_at(at);
        for (i, event) in before.iter().enumerate() {
            log.push(LogRecord::Event { epoch: 1, command_offset: i as i64, event: event.clone() });
        }
        log.push(LogRecord::Claim { epoch: 2, owner: "b".into() });
        for (i, event) in after.iter().enumerate() {
            let command_offset = (at + i) as i64;
            // The old owner's late write of the same answer: superseded.
            log.push(LogRecord::Event { epoch: 1, command_offset, event: event.clone() });
            log.push(LogRecord::Event { epoch: 2, command_offset, event: event.clone() });
            if i % 3 == 0 {
                // Answered again after a retry: already answered.
                log.push(LogRecord::Event { epoch: 2, command_offset, event: event.clone() });
            }
        }
        let next = events.len() as i64;
        log.push(LogRecord::DeadLettered { epoch: 2, command_offset: next, reason: "UNKNOWN_SCHEMA".into() });
        log
    }

    /// Runs a lane over `log` from `lane`, stopping (as a crash does) before offset `stop`.
    fn run(lane: &mut Lane, log: &[LogRecord], stop: usize, out: &mut Vec<Event>) {
        for (offset, record) in log.iter().enumerate().take(stop).skip(lane.next_offset as usize) {
            let (event, after) = lane.judge(record);
            out.extend(event.cloned());
            // Judging alone moves nothing: a lane that stops here judges the record again.
            assert_eq!(lane.judge(record).1, after);
            lane.passed(offset as i64, after);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Every event that counts goes out once and in log order; nothing a zombie wrote and no
        /// duplicate answer does; and a lane stopped anywhere and resumed from its stored record
        /// sends exactly what one run sends.
        #[test]
        fn a_lane_sends_what_counts_once_even_across_restarts(
            history in testkit::history(),
            takeover in 0usize..40,
            stops in proptest::collection::vec(0usize..200, 0..4),
        ) {
            let (_, events, _) = testkit::run(&history, |_, _| {});
            let log = troubled_log(events.clone(), takeover);

            let mut whole = Vec::new();
            run(&mut Lane::default(), &log, log.len(), &mut whole);
            prop_assert_eq!(&whole, &events);

            let mut stops = stops;
            stops.sort();
            let (mut resumed, mut stored) = (Vec::new(), Lane::default().encode());
            for stop in stops.into_iter().chain([log.len()]) {
                let mut lane = Lane::decode(&stored).unwrap();
                run(&mut lane, &log, stop, &mut resumed);
                stored = lane.encode();
            }
            prop_assert_eq!(resumed, events);
        }
    }

    #[test]
    fn backoff_doubles_to_its_cap_with_half_of_it_random() {
        let (base, cap) = (Duration::from_millis(100), Duration::from_secs(10));
        assert_eq!(backoff(1, base, cap, 0.0), Duration::from_millis(50));
        let most = backoff(1, base, cap, 0.999_999);
        assert!(most > Duration::from_millis(99) && most < base, "{most:?}");
        assert_eq!(backoff(4, base, cap, 0.0), Duration::from_millis(400));
        assert_eq!(backoff(30, base, cap, 0.0), Duration::from_secs(5));
        assert_eq!(backoff(u32::MAX, base, cap, 1.0), cap);
    }

    #[test]
    fn a_resume_releases_a_parked_lane() {
        let parked = Parked {
            replay: 2,
            offset: 5,
            event_id: "acme/main@3".into(),
            attempts: 10,
            error: "503".into(),
            at_ms: 0,
        };
        let lane = Lane { parked: Some(parked), ..Lane::default() };
        assert!(lane.is_parked(2) && lane.is_parked(1));
        assert!(!lane.is_parked(3));
        assert!(!Lane::default().is_parked(0));
    }
}

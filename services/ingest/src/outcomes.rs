//! Outcomes: the answer the log gives to each command, for callers waiting on it (the HTTP front
//! door) and for polling. A watcher folds every events partition through a [`LogReader`], so it
//! reports only answers that count: never a zombie's, never a second answer.
//!
//! A command's identity is its tenant, stream and command id ([`CommandId`]). The first answer
//! to an id is the one every repeat of the same command gets, byte for byte: a repeat is
//! answered in the log by a [`EventBody::CommandDeduplicated`] that names where the first
//! answer is, and the watcher serves that first answer (from memory, or read back from the log
//! when it is no longer kept). A conflicting command (same id, another fingerprint) gets its own
//! answer, which never replaces the id's first one. Waiting callers are matched by fingerprint,
//! so a caller is only ever given the answer to the command it sent.
//!
//! The watcher starts each partition after its newest snapshot when there is one (a snapshot
//! holds the reader's position: the current epoch and the next command offset), else at its
//! start: a reader cannot know which epoch is current at an arbitrary offset. Recent outcomes
//! are kept in memory, bounded; older ones, and those before the snapshot, are the query
//! service's job.

use crate::stages::Stage;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tally_codec::Codec;
use tally_core::log::{LogReader, LogRecord, Verdict};
use tally_core::{Answer, CommandId, Event, EventBody, StreamId, TenantId};
use tally_http::outcome::Outcome;
use tally_kafka::config::KafkaOptions;
use tally_kafka::{KafkaError, LogTail};
use tally_runtime::{Handle, now_ms};
use tally_store::snapshot::{self, SnapshotStore};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

type Key = (TenantId, CommandId);

/// Most answers to conflicting commands kept per command id (they are polled right after a 202).
const CONFLICTS_KEPT: usize = 8;

/// One command id in one stream: its first answer once known here, the answers to commands that
/// conflicted with it, and callers waiting.
struct Slot {
    stream: StreamId,
    first: Option<Arc<Outcome>>,
    /// Answers to other commands sent under the id (conflicts), newest last.
    conflicts: Vec<Arc<Outcome>>,
    /// Counts what was kept here: only the newest entry of `Inner::order` forgets the slot.
    kept: u64,
    /// Callers waiting for the answer to the command with this fingerprint (the command was
    /// produced, or is about to be).
    waiting: Vec<(u128, oneshot::Sender<Arc<Outcome>>)>,
}

/// Outcomes seen recently, and callers waiting for theirs.
pub struct Outcomes {
    inner: Mutex<Inner>,
    capacity: usize,
}

struct Inner {
    /// By tenant and command id; one slot per stream that used the id (almost always one).
    entries: HashMap<Key, Vec<Slot>>,
    /// Answers kept, oldest first (with the slot's count then): a slot's answers are forgotten
    /// when its newest entry is beyond `capacity`.
    order: VecDeque<(Key, StreamId, u64)>,
    /// Whether the watcher has read every partition to where it was at start.
    caught_up: bool,
}

impl Inner {
    fn slot(&mut self, key: &Key, stream: &StreamId) -> &mut Slot {
        let slots = self.entries.entry(key.clone()).or_default();
        match slots.iter().position(|s| &s.stream == stream) {
            Some(i) => &mut slots[i],
            None => {
                slots.push(Slot {
                    stream: stream.clone(),
                    first: None,
                    conflicts: Vec::new(),
                    kept: 0,
                    waiting: Vec::new(),
                });
                slots.last_mut().expect("pushed")
            }
        }
    }

    fn forget_oldest(&mut self) {
        let Some((key, stream, kept)) = self.order.pop_front() else { return };
        let Some(slots) = self.entries.get_mut(&key) else { return };
        if let Some(slot) = slots.iter_mut().find(|s| s.stream == stream && s.kept == kept) {
            slot.first = None;
            slot.conflicts.clear();
        }
        slots.retain(|s| s.first.is_some() || !s.conflicts.is_empty() || !s.waiting.is_empty());
        if slots.is_empty() {
            self.entries.remove(&key);
        }
    }
}

/// What a caller learns when it asks for an outcome.
pub enum Lookup {
    Done(Arc<Outcome>),
    /// Not known yet: the receiver gets the answer.
    Pending(oneshot::Receiver<Arc<Outcome>>),
}

/// The state of a command id on this instance.
pub enum Peek {
    Done(Arc<Outcome>),
    /// Awaited in this stream.
    Pending(StreamId),
    Unknown,
    /// The id was used in several streams of the tenant (each is its own command): which one?
    Ambiguous(Vec<StreamId>),
}

impl Outcomes {
    pub fn new(capacity: usize) -> Arc<Outcomes> {
        Arc::new(Outcomes {
            inner: Mutex::new(Inner { entries: HashMap::new(), order: VecDeque::new(), caught_up: false }),
            capacity,
        })
    }

    /// The first answer to `command_id` in `stream`, if it is known here and answers the command
    /// with `fingerprint`; otherwise a receiver for the answer to that command (registered
    /// before the command is produced, so the answer cannot slip by). A known answer to another
    /// command under the same id is never returned: that command gets its own (conflict) answer.
    pub fn wait(
        &self,
        tenant: &TenantId,
        stream: &StreamId,
        command_id: &CommandId,
        fingerprint: u128,
    ) -> Lookup {
        let mut inner = self.inner.lock().expect("not poisoned");
        let slot = inner.slot(&(tenant.clone(), command_id.clone()), stream);
        match &slot.first {
            Some(first) if first.answers(fingerprint) => Lookup::Done(first.clone()),
            _ => {
                let (tx, rx) = oneshot::channel();
                slot.waiting.retain(|(_, w)| !w.is_closed());
                slot.waiting.push((fingerprint, tx));
                Lookup::Pending(rx)
            }
        }
    }

    /// The state of a command id on this instance: answered, being waited for, or unknown;
    /// `stream` picks one when the id was used in several. With `fingerprint`, the answer to
    /// that very command (a conflicting command's own answer, not the id's first one).
    pub fn peek(
        &self,
        tenant: &TenantId,
        command_id: &CommandId,
        stream: Option<&StreamId>,
        fingerprint: Option<u128>,
    ) -> Peek {
        let inner = self.inner.lock().expect("not poisoned");
        let Some(slots) = inner.entries.get(&(tenant.clone(), command_id.clone())) else {
            return Peek::Unknown;
        };
        let chosen: Vec<&Slot> =
            slots.iter().filter(|s| stream.is_none_or(|wanted| &s.stream == wanted)).collect();
        match chosen.as_slice() {
            [] => Peek::Unknown,
            [slot] => {
                let answer = match fingerprint {
                    None => slot.first.as_ref(),
                    Some(f) => slot.first.iter().chain(&slot.conflicts).find(|o| o.answers(f)),
                };
                // A caller that was answered 202 has let go of its receiver; the command is still
                // on its way, so it is still awaited.
                let waited = slot.waiting.iter().any(|(f, _)| fingerprint.is_none_or(|wanted| *f == wanted));
                match answer {
                    Some(answer) => Peek::Done(answer.clone()),
                    None if waited => Peek::Pending(slot.stream.clone()),
                    None => Peek::Unknown,
                }
            }
            many => Peek::Ambiguous(many.iter().map(|s| s.stream.clone()).collect()),
        }
    }

    /// Whether the watcher has caught up with the log as it was when it started.
    pub fn caught_up(&self) -> bool {
        self.inner.lock().expect("not poisoned").caught_up
    }

    /// The first answer to the command of `event`, if kept here.
    fn first(&self, event: &Event) -> Option<Arc<Outcome>> {
        let inner = self.inner.lock().expect("not poisoned");
        let slots = inner.entries.get(&(event.tenant.clone(), event.command_id.clone()))?;
        slots.iter().find(|s| s.stream == event.stream)?.first.clone()
    }

    /// Hands `outcome` to the callers waiting for the answer to its command; keeps it as the
    /// id's answer if `first` and none is kept yet.
    fn publish(&self, tenant: &TenantId, stream: &StreamId, outcome: Arc<Outcome>, first: bool) {
        let key = (tenant.clone(), CommandId::parse(outcome.command_id.clone()).expect("from a valid event"));
        let mut inner = self.inner.lock().expect("not poisoned");
        let slot = inner.slot(&key, stream);
        let mut kept = None;
        if first && slot.first.is_none() {
            slot.first = Some(outcome.clone());
            slot.kept += 1;
            kept = Some(slot.kept);
        } else if !first {
            if slot.conflicts.len() == CONFLICTS_KEPT {
                slot.conflicts.remove(0);
            }
            slot.conflicts.push(outcome.clone());
            slot.kept += 1;
            kept = Some(slot.kept);
        }
        let (answered, still): (Vec<_>, Vec<_>) =
            slot.waiting.drain(..).partition(|(fingerprint, _)| outcome.answers(*fingerprint));
        slot.waiting = still;
        for (_, waiter) in answered {
            let _ = waiter.send(outcome.clone());
        }
        if let Some(kept) = kept {
            inner.order.push_back((key, stream.clone(), kept));
            while inner.order.len() > self.capacity {
                inner.forget_oldest();
            }
        }
    }

    fn set_caught_up(&self) {
        self.inner.lock().expect("not poisoned").caught_up = true;
    }
}

/// The outcome watcher, built and not yet running (the service recipe: [`OutcomeWatcher::build`],
/// then [`OutcomeWatcher::run`]): follows every partition of the events topic and publishes
/// each answer that counts to [`Outcomes`].
pub struct OutcomeWatcher {
    kafka: KafkaOptions,
    events_topic: String,
    partitions: i32,
    outcomes: Arc<Outcomes>,
    snapshots: Option<Arc<dyn SnapshotStore>>,
}

impl OutcomeWatcher {
    /// A watcher of the `partitions` partitions of `events_topic` that publishes to `outcomes`,
    /// starting each partition after its newest snapshot in `snapshots` (if any).
    pub fn build(
        kafka: KafkaOptions,
        events_topic: String,
        partitions: i32,
        outcomes: Arc<Outcomes>,
        snapshots: Option<Arc<dyn SnapshotStore>>,
    ) -> OutcomeWatcher {
        OutcomeWatcher { kafka, events_topic, partitions, outcomes, snapshots }
    }

    /// Follows the log on tokio's blocking pool (librdkafka blocks) until `cancel` fires. A
    /// broken read starts over from the snapshots, after a pause.
    pub fn run(self, cancel: CancellationToken) -> Handle {
        Handle::spawn_blocking("outcome watcher", cancel.clone(), (), move || {
            while !cancel.is_cancelled() {
                let starts = starts(self.snapshots.as_deref(), &self.events_topic, self.partitions);
                if let Err(e) = follow(&self.kafka, &self.events_topic, starts, &self.outcomes, &cancel) {
                    tracing::error!("outcome watcher: {e}; starting over");
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
            Ok::<_, KafkaError>(())
        })
    }
}

/// Where each partition's reading starts: after its newest usable snapshot, or at offset 0.
fn starts(snapshots: Option<&dyn SnapshotStore>, topic: &str, partitions: i32) -> Vec<(i64, LogReader)> {
    (0..partitions)
        .map(|p| {
            let resume = snapshot::resume_point(snapshots, topic, p, i64::MAX);
            (resume.next, resume.replica.reader)
        })
        .collect()
}

fn follow(
    kafka: &KafkaOptions,
    topic: &str,
    starts: Vec<(i64, LogReader)>,
    outcomes: &Outcomes,
    stop: &CancellationToken,
) -> Result<(), KafkaError> {
    let codec = Codec::new();
    let at: Vec<(i32, i64)> = starts.iter().enumerate().map(|(p, (from, _))| (p as i32, *from)).collect();
    let mut tail = LogTail::open_partitions(kafka, "outcomes", topic, &at)?;
    let start_ends = (0..starts.len() as i32).map(|p| tail.end_of(p)).collect::<Result<Vec<_>, _>>()?;
    let mut fetcher = Fetcher { kafka, topic, codec: &codec, tail: None };
    let mut readers: Vec<LogReader> = starts.into_iter().map(|(_, reader)| reader).collect();
    let mut caught_up = false;
    while !stop.is_cancelled() {
        if !caught_up && tail.positions().values().zip(&start_ends).all(|(at, end)| at >= end) {
            caught_up = true;
            outcomes.set_caught_up();
        }
        let Some(read) = tail.next(&codec, Duration::from_millis(100))? else { continue };
        let (Some(reader), Some(record)) = (readers.get_mut(read.partition as usize), read.record) else {
            continue;
        };
        if let (Verdict::Apply, LogRecord::Event { event, .. }) = (reader.read(&record), &record) {
            answer(outcomes, &mut fetcher, event, read.partition, read.offset);
            if let Some(appended_ms) = read.timestamp_ms {
                Stage::Watch.observe_since(appended_ms, now_ms());
            }
        }
    }
    Ok(())
}

/// Publishes the answer `event` (at `offset` of `partition`) gives its command: for a repeat,
/// the first answer (kept as the id's answer if it was forgotten); for a conflict, its own
/// answer, handed to its callers only.
fn answer(outcomes: &Outcomes, fetcher: &mut Fetcher, event: &Event, partition: i32, offset: i64) {
    let outcome = match event.body.answer() {
        Answer::Repeated { first_offset, .. } => match outcomes.first(event) {
            Some(first) => Ok(first),
            None => fetcher.first_answer(event, partition, first_offset).map(Arc::new),
        },
        _ => Outcome::of(event, partition, offset).map(Arc::new).map_err(|e| e.to_string()),
    };
    let conflict = matches!(event.body, EventBody::CommandRejected { conflicts_with: Some(_), .. });
    match outcome {
        Ok(outcome) => outcomes.publish(&event.tenant, &event.stream, outcome, !conflict),
        // Waiting callers get 202 and poll; nothing untrue is ever handed out.
        Err(e) => {
            tracing::error!(event_id = %event.event_id(), partition, offset, "answering a command: {e}")
        }
    }
}

/// Reads single records back from the events topic: the first answer to a repeated command
/// that is no longer kept in memory (after a restart, or beyond `--outcomes-kept`).
struct Fetcher<'a> {
    kafka: &'a KafkaOptions,
    topic: &'a str,
    codec: &'a Codec,
    /// Opened on the first fetch, repositioned for each.
    tail: Option<LogTail>,
}

/// How long reading back one first answer may take before the caller is answered 202.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

impl Fetcher<'_> {
    /// The first answer to the command `repeat` repeats, read at `offset` of `partition`, checked
    /// to be that command's.
    fn first_answer(&mut self, repeat: &Event, partition: i32, offset: i64) -> Result<Outcome, String> {
        let first = self.event_at(partition, offset)?;
        let same_command = first.tenant == repeat.tenant
            && first.stream == repeat.stream
            && first.command_id == repeat.command_id
            && first.command_fingerprint == repeat.command_fingerprint;
        if !same_command {
            return Err(format!(
                "the record at {partition}/{offset} is not the first answer to {}",
                repeat.command_id
            ));
        }
        Outcome::of(&first, partition, offset).map_err(|e| e.to_string())
    }

    fn event_at(&mut self, partition: i32, offset: i64) -> Result<Event, String> {
        let at = [(partition, offset)];
        let tail = match &mut self.tail {
            Some(tail) => {
                tail.assign(&at).map_err(|e| e.to_string())?;
                tail
            }
            None => self.tail.insert(
                LogTail::open_partitions(self.kafka, "outcomes-fetch", self.topic, &at)
                    .map_err(|e| e.to_string())?,
            ),
        };
        let started = Instant::now();
        while started.elapsed() < FETCH_TIMEOUT {
            let Some(read) = tail.next(self.codec, Duration::from_millis(100)).map_err(|e| e.to_string())?
            else {
                continue;
            };
            if read.partition != partition || read.offset != offset {
                continue;
            }
            return match read.record {
                Some(LogRecord::Event { event, .. }) => Ok(event),
                Some(_) => Err(format!("the record at {partition}/{offset} is not an event")),
                None => Err(format!("the record at {partition}/{offset} does not decode")),
            };
        }
        Err(format!("the record at {partition}/{offset} was not read within {FETCH_TIMEOUT:?}"))
    }
}

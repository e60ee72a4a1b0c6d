//! Outcomes: the answer the log gives to each command, for callers waiting on it (the HTTP front
//! door) and for polling. A watcher folds every events partition through a [`LogReader`], so it
//! reports only answers that count: never a zombie's, never a second answer.
//!
//! The watcher starts each partition after its newest snapshot when there is one (a snapshot
//! holds the reader's position: the current epoch and the next command offset), else at its
//! start: a reader cannot know which epoch is current at an arbitrary offset. Recent outcomes
//! are kept in memory, bounded; older ones, and those before the snapshot, are the query
//! service's job.

use crate::processor::ProcessorError;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tally_codec::Codec;
use tally_core::log::{LogReader, LogRecord, Verdict};
use tally_core::{CommandId, Event, EventBody, TenantId};
use tally_kafka::config::KafkaOptions;
use tally_store::snapshot::{self, SnapshotStore};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

/// How a command was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    /// The change was made.
    Accepted,
    /// A transaction id seen before with the same request: the first outcome stands.
    Deduplicated,
    /// Refused, with a reason; recorded in the log, nothing changed.
    Rejected,
}

/// The answer to one command, as the log holds it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Outcome {
    pub command_id: String,
    pub status: Status,
    /// Stable reason code when rejected (`INSUFFICIENT_FUNDS`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Where the event is in the log, as a token only this tenant can use: pass it to queries
    /// (`Tally-Position`) to read your own write.
    pub position: String,
    /// The event, as the events topic carries it.
    #[schema(value_type = Object)]
    pub event: serde_json::Value,
}

impl Outcome {
    fn of(event: &Event, partition: i32, offset: i64) -> Outcome {
        let (status, reason, detail) = match &event.body {
            EventBody::TransactionFailed { reason, detail, .. }
            | EventBody::CommandRejected { reason, detail, .. } => {
                (Status::Rejected, Some(reason.code().to_owned()), Some(detail.clone()))
            }
            EventBody::TransactionDeduplicated { .. } => (Status::Deduplicated, None, None),
            _ => (Status::Accepted, None, None),
        };
        Outcome {
            command_id: event.command_id.to_string(),
            status,
            reason,
            detail,
            position: tally_http::position::Position { partition, offset }.token(&event.tenant),
            event: serde_json::to_value(event).unwrap_or(serde_json::Value::Null),
        }
    }
}

type Key = (TenantId, CommandId);

enum Entry {
    /// Callers waiting for the answer (the command was produced, or is about to be).
    Waiting(Vec<oneshot::Sender<Arc<Outcome>>>),
    Done(Arc<Outcome>),
}

/// Outcomes seen recently, and callers waiting for theirs.
pub struct Outcomes {
    inner: Mutex<Inner>,
    capacity: usize,
}

struct Inner {
    entries: HashMap<Key, Entry>,
    /// Answered keys, oldest first: evicted beyond `capacity`.
    order: VecDeque<Key>,
    /// Whether the watcher has read every partition to where it was at start.
    caught_up: bool,
}

/// What a caller learns when it asks for an outcome.
pub enum Lookup {
    Done(Arc<Outcome>),
    Pending(oneshot::Receiver<Arc<Outcome>>),
}

impl Outcomes {
    pub fn new(capacity: usize) -> Arc<Outcomes> {
        Arc::new(Outcomes {
            inner: Mutex::new(Inner { entries: HashMap::new(), order: VecDeque::new(), caught_up: false }),
            capacity,
        })
    }

    /// The outcome if known; otherwise a receiver for it (registered before the command is
    /// produced, so the answer cannot slip by).
    pub fn wait(&self, tenant: &TenantId, command_id: &CommandId) -> Lookup {
        let mut inner = self.inner.lock().expect("not poisoned");
        let key = (tenant.clone(), command_id.clone());
        match inner.entries.entry(key).or_insert_with(|| Entry::Waiting(Vec::new())) {
            Entry::Done(outcome) => Lookup::Done(outcome.clone()),
            Entry::Waiting(waiters) => {
                let (tx, rx) = oneshot::channel();
                waiters.retain(|w| !w.is_closed());
                waiters.push(tx);
                Lookup::Pending(rx)
            }
        }
    }

    /// The state of a command id on this instance: answered, being waited for, or unknown.
    pub fn peek(&self, tenant: &TenantId, command_id: &CommandId) -> Peek {
        let inner = self.inner.lock().expect("not poisoned");
        match inner.entries.get(&(tenant.clone(), command_id.clone())) {
            Some(Entry::Done(outcome)) => Peek::Done(outcome.clone()),
            Some(Entry::Waiting(_)) => Peek::Pending,
            None => Peek::Unknown,
        }
    }

    /// Whether the watcher has caught up with the log as it was when it started.
    pub fn caught_up(&self) -> bool {
        self.inner.lock().expect("not poisoned").caught_up
    }

    fn publish(&self, event: &Event, partition: i32, offset: i64) {
        let outcome = Arc::new(Outcome::of(event, partition, offset));
        let key = (event.tenant.clone(), event.command_id.clone());
        let mut inner = self.inner.lock().expect("not poisoned");
        if let Some(Entry::Waiting(waiters)) = inner.entries.insert(key.clone(), Entry::Done(outcome.clone()))
        {
            for waiter in waiters {
                let _ = waiter.send(outcome.clone());
            }
        }
        inner.order.push_back(key);
        while inner.order.len() > self.capacity {
            if let Some(old) = inner.order.pop_front()
                && matches!(inner.entries.get(&old), Some(Entry::Done(_)))
            {
                inner.entries.remove(&old);
            }
        }
    }

    fn set_caught_up(&self) {
        self.inner.lock().expect("not poisoned").caught_up = true;
    }
}

/// The state of a command id on this instance.
pub enum Peek {
    Done(Arc<Outcome>),
    Pending,
    Unknown,
}

/// Follows every partition of the events topic and publishes each answer that counts. Runs on
/// its own thread (librdkafka blocks) until `stop`.
pub fn watch(
    kafka: KafkaOptions,
    events_topic: String,
    partitions: i32,
    outcomes: Arc<Outcomes>,
    snapshots: Option<Arc<dyn SnapshotStore>>,
    stop: CancellationToken,
) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("tally-outcomes".into())
        .spawn(move || {
            while !stop.is_cancelled() {
                let starts = starts(snapshots.as_deref(), &events_topic, partitions);
                if let Err(e) = follow(&kafka, &events_topic, starts, &outcomes, &stop) {
                    tracing::error!("outcome watcher: {e}; starting over");
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        })
        .expect("a thread can be spawned")
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
) -> Result<(), ProcessorError> {
    let codec = Codec::new();
    let consumer: BaseConsumer = kafka.reader("outcomes").create()?;
    let mut assignment = TopicPartitionList::new();
    let mut start_ends = Vec::new();
    for (p, (from, _)) in starts.iter().enumerate() {
        assignment.add_partition_offset(topic, p as i32, Offset::Offset(*from))?;
        start_ends.push(consumer.fetch_watermarks(topic, p as i32, Duration::from_secs(15))?.1);
    }
    consumer.assign(&assignment)?;
    let (mut positions, mut readers): (Vec<i64>, Vec<LogReader>) = starts.into_iter().unzip();
    let mut caught_up = false;
    while !stop.is_cancelled() {
        if !caught_up && positions.iter().zip(&start_ends).all(|(at, end)| at >= end) {
            caught_up = true;
            outcomes.set_caught_up();
        }
        let Some(message) = consumer.poll(Duration::from_millis(100)) else { continue };
        let message = message?;
        let (partition, offset) = (message.partition(), message.offset());
        let Some(reader) = readers.get_mut(partition as usize) else { continue };
        positions[partition as usize] = offset + 1;
        let Ok(record) = codec.decode_log_record(message.payload().unwrap_or_default()) else { continue };
        if let (Verdict::Apply, LogRecord::Event { event, .. }) = (reader.read(&record), &record) {
            outcomes.publish(event, partition, offset);
        }
    }
    Ok(())
}

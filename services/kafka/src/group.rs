//! Partition ownership through a consumer group, shared by the processor (over `commands`) and
//! the projector (over `events`).
//!
//! One thread runs the group consumer (librdkafka blocks): it follows the group's assignments,
//! starts a task per owned partition and positions each partition where its task says. Each
//! owned partition's records go to their own librdkafka queue, read by a thread of that
//! partition into a bounded channel to its task: a slow task blocks only its own reader, and
//! librdkafka stops fetching for that partition once its prefetch queue is full. (Pausing the
//! partition instead, as this module first did, stalls it for up to a second on every resume:
//! librdkafka's fetcher notices a resume on its own timer.)
//!
//! A task restores whatever it needs first and then says where to start
//! ([`Assignment::start_at`]): the task's own durable state decides where reading resumes, and
//! Kafka's committed offsets are only a lag hint ([`Assignment::done_before`]).

use crate::config::KafkaOptions;
use crate::record::Record;
use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long a stopping partition task may take to finish its batch.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How often stored offsets are committed (a lag hint only).
const COMMIT_INTERVAL: Duration = Duration::from_secs(1);
/// Pause before a failed partition task starts over (so a persistent fault does not spin).
const RESTART_DELAY: Duration = Duration::from_millis(200);

/// The owner of partitions: what runs for each partition this instance is assigned.
pub trait PartitionOwner: Send + Sync + 'static {
    type Error: std::fmt::Display + Send + 'static;

    /// Owns one partition until `assignment.cancel` fires or `records` closes. Returning (with
    /// an error or not) while the partition is still assigned starts it over. `records` holds
    /// the partition's records from the offset given to [`Assignment::start_at`] on.
    fn own(
        self: Arc<Self>,
        assignment: Assignment,
        records: mpsc::Receiver<Record>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static;

    /// Called on the group thread before a failed partition task starts over.
    fn before_restart(&self) {}
}

/// How a group is joined.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    pub kafka: KafkaOptions,
    pub topic: String,
    pub group_id: String,
    /// The client's role in logs and client ids ("processor", "projector").
    pub role: &'static str,
    /// Records queued per partition ahead of its task.
    pub queue: usize,
}

/// One partition given to a [`PartitionOwner`].
pub struct Assignment {
    pub partition: i32,
    /// Fires when the partition is revoked or the instance stops.
    pub cancel: CancellationToken,
    control: Sender<Control>,
}

impl Assignment {
    /// The task is ready: deliver the partition's records from `offset` on.
    pub fn start_at(&self, offset: i64) {
        // The group thread outlives every partition task it started.
        let _ = self.control.send(Control::Start { partition: self.partition, offset });
    }

    /// Every record before `next_offset` is durably handled (stored for the next commit, a lag
    /// hint for operators and for Kafka's tools).
    pub fn done_before(&self, next_offset: i64) {
        let _ = self.control.send(Control::Done { partition: self.partition, next_offset });
    }
}

/// Messages from partition tasks to the group thread.
#[derive(Debug)]
enum Control {
    Start { partition: i32, offset: i64 },
    Done { partition: i32, next_offset: i64 },
}

/// The partitions whose task has started reading (restored and positioned): shared between a
/// group and whoever reports on it, before and after it is joined.
#[derive(Debug, Clone, Default)]
pub struct RunningPartitions(Arc<Mutex<BTreeSet<i32>>>);

impl RunningPartitions {
    /// The partitions, ascending.
    pub fn get(&self) -> Vec<i32> {
        self.0.lock().expect("not poisoned").iter().copied().collect()
    }

    fn insert(&self, partition: i32) {
        self.0.lock().expect("not poisoned").insert(partition);
    }

    fn remove(&self, partition: i32) {
        self.0.lock().expect("not poisoned").remove(&partition);
    }
}

/// A joined group: its thread runs until [`PartitionGroup::stop`].
pub struct PartitionGroup {
    stop: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PartitionGroup {
    /// Joins the group and starts owning the partitions it assigns. Must be called within a
    /// tokio runtime (partition tasks run on it).
    pub fn join<O: PartitionOwner>(
        config: GroupConfig,
        owner: Arc<O>,
        running: RunningPartitions,
    ) -> Result<Self, crate::KafkaError> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| crate::KafkaError::Group("must start inside a tokio runtime".into()))?;
        let (membership_tx, membership) = std::sync::mpsc::channel();
        let context = GroupContext {
            group: config.group_id.clone(),
            topic: config.topic.clone(),
            membership: membership_tx,
        };
        let consumer: BaseConsumer<GroupContext> =
            config.kafka.consumer(config.role, &config.group_id).create_with_context(context)?;
        consumer.subscribe(&[&config.topic])?;
        let (control_tx, control) = std::sync::mpsc::channel();
        let stop = CancellationToken::new();
        let thread = GroupThread {
            config,
            owner,
            consumer: Arc::new(consumer),
            membership,
            control,
            control_tx,
            stop: stop.clone(),
            running,
            runtime,
            slots: HashMap::new(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("tally-{}-group", thread.config.role))
            .spawn(move || thread.run())
            .map_err(|e| crate::KafkaError::Group(format!("starting the group thread: {e}")))?;
        Ok(PartitionGroup { stop, thread: Some(thread) })
    }

    /// Joins the group, owns the partitions it assigns until `cancel` fires, then stops as
    /// [`PartitionGroup::stop`] does: the whole life of a partition-owning service.
    pub async fn serve<O: PartitionOwner>(
        config: GroupConfig,
        owner: Arc<O>,
        running: RunningPartitions,
        cancel: CancellationToken,
    ) -> Result<(), crate::KafkaError> {
        let group = PartitionGroup::join(config, owner, running)?;
        cancel.cancelled().await;
        group.stop().await;
        Ok(())
    }

    /// Stops taking records, lets each partition task finish its batch, leaves the group.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

impl Drop for PartitionGroup {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Assignment changes, as the consumer reports them from inside `poll`.
enum Membership {
    Assigned(Vec<i32>),
    Revoked(Vec<i32>),
}

struct GroupContext {
    group: String,
    topic: String,
    membership: Sender<Membership>,
}

/// Consumer lag per partition, from librdkafka's statistics (every
/// [`crate::config::STATISTICS_INTERVAL_MS`]), for the partitions this member owns.
static CONSUMER_LAG: std::sync::LazyLock<prometheus::IntGaugeVec> = std::sync::LazyLock::new(|| {
    prometheus::register_int_gauge_vec!(
        "tally_consumer_lag_records",
        "Records between a partition's end and the group's committed offset (owned partitions)",
        &["group", "topic", "partition"]
    )
    .expect("registered once")
});

impl ClientContext for GroupContext {
    fn stats(&self, statistics: rdkafka::Statistics) {
        let Some(topic) = statistics.topics.get(&self.topic) else { return };
        for (partition, stats) in &topic.partitions {
            if *partition < 0 {
                continue; // librdkafka's "unassigned" pseudo-partition
            }
            let labels = [self.group.as_str(), self.topic.as_str(), &partition.to_string()];
            match partition_lag(stats) {
                Some(lag) => CONSUMER_LAG.with_label_values(&labels).set(lag),
                // Not owned by this member: no figure rather than a stale one.
                None => {
                    let _ = CONSUMER_LAG.remove_label_values(&labels);
                }
            }
        }
    }
}

/// A partition's lag from its statistics: from the committed offset (else the partition's
/// start) to its last stable offset (else its end), at least 0; `None` when this member does
/// not own it or the offsets are not known yet. (librdkafka's own `consumer_lag` stays -1 on
/// partitions with nothing committed, and with transaction markers after the last commit.)
fn partition_lag(stats: &rdkafka::statistics::Partition) -> Option<i64> {
    let end = if stats.ls_offset >= 0 { stats.ls_offset } else { stats.hi_offset };
    let from = if stats.committed_offset >= 0 { stats.committed_offset } else { stats.lo_offset };
    let owned = stats.fetch_state != "none";
    (owned && end >= 0 && from >= 0).then(|| (end - from).max(0))
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let _ = self.membership.send(Membership::Revoked(self.partitions(tpl)));
        }
    }

    /// New partitions stay paused until their task is ready for them.
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                if let Err(e) = consumer.pause(tpl) {
                    tracing::error!("pausing new partitions: {e}");
                }
                let _ = self.membership.send(Membership::Assigned(self.partitions(tpl)));
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => tracing::error!("rebalance: {e}"),
        }
    }
}

impl GroupContext {
    fn partitions(&self, tpl: &TopicPartitionList) -> Vec<i32> {
        tpl.elements_for_topic(&self.topic).iter().map(|e| e.partition()).collect()
    }
}

/// One owned partition, from the group thread's side.
struct Slot<E> {
    task: JoinHandle<Result<(), E>>,
    cancel: CancellationToken,
    /// The sending end of the task's records, and the partition's own librdkafka queue, until
    /// the task says where to start (then the partition's reader thread owns both).
    waiting: Option<(mpsc::Sender<Record>, PartitionQueue<GroupContext>)>,
    reader: Option<std::thread::JoinHandle<()>>,
}

struct GroupThread<O: PartitionOwner> {
    config: GroupConfig,
    owner: Arc<O>,
    consumer: Arc<BaseConsumer<GroupContext>>,
    membership: Receiver<Membership>,
    control: Receiver<Control>,
    control_tx: Sender<Control>,
    stop: CancellationToken,
    running: RunningPartitions,
    runtime: tokio::runtime::Handle,
    slots: HashMap<i32, Slot<O::Error>>,
}

impl<O: PartitionOwner> GroupThread<O> {
    fn run(mut self) {
        let mut last_commit = Instant::now();
        while !self.stop.is_cancelled() {
            // Records come through each partition's own queue; this poll serves callbacks.
            let polled = self.consumer.poll(Duration::from_millis(20)).map(|r| r.map(|m| m.partition()));
            // The poll serves the rebalance callbacks; act on what they reported.
            while let Ok(change) = self.membership.try_recv() {
                match change {
                    Membership::Assigned(partitions) => partitions.into_iter().for_each(|p| self.start(p)),
                    Membership::Revoked(partitions) => partitions.into_iter().for_each(|p| self.stop(p)),
                }
            }
            while let Ok(message) = self.control.try_recv() {
                self.on_control(message);
            }
            match polled {
                // Fetched before the partition's queue was split off; its reader fetches again
                // from the position its task asks for.
                Some(Ok(partition)) => tracing::trace!(partition, "record left to its reader"),
                Some(Err(e)) => tracing::warn!(topic = self.config.topic, "group consumer: {e}"),
                None => {}
            }
            self.restart_failed();
            if last_commit.elapsed() > COMMIT_INTERVAL {
                // Nothing stored since the last commit is not an error worth a line.
                let _ = self.consumer.commit_consumer_state(CommitMode::Async);
                last_commit = Instant::now();
            }
        }
        let partitions: Vec<i32> = self.slots.keys().copied().collect();
        partitions.into_iter().for_each(|p| self.stop(p));
        while let Ok(Control::Done { partition, next_offset }) = self.control.try_recv() {
            self.store(partition, next_offset);
        }
        let _ = self.consumer.commit_consumer_state(CommitMode::Sync);
        self.consumer.unsubscribe();
    }

    /// Starts the task that owns `partition` (paused until the task says where to start).
    fn start(&mut self, partition: i32) {
        let Some(queue) = self.consumer.split_partition_queue(&self.config.topic, partition) else {
            tracing::error!(partition, topic = self.config.topic, "no queue for an assigned partition");
            return;
        };
        let (intake, records) = mpsc::channel(self.config.queue);
        let cancel = CancellationToken::new();
        let assignment = Assignment { partition, cancel: cancel.clone(), control: self.control_tx.clone() };
        let task = self.runtime.spawn(self.owner.clone().own(assignment, records));
        self.slots.insert(partition, Slot { task, cancel, waiting: Some((intake, queue)), reader: None });
    }

    /// Stops a partition's task after its current batch (bounded wait).
    fn stop(&mut self, partition: i32) {
        let Some(slot) = self.slots.remove(&partition) else { return };
        self.running.remove(partition);
        slot.cancel.cancel();
        match self.runtime.block_on(async { tokio::time::timeout(STOP_GRACE, slot.task).await }) {
            Ok(Ok(Ok(()))) => tracing::info!(partition, role = self.config.role, "partition released"),
            Ok(Ok(Err(e))) => tracing::warn!(partition, "partition task ended with: {e}"),
            Ok(Err(e)) => tracing::error!(partition, "partition task panicked: {e}"),
            // Still writing after this point makes it a zombie, which the owner's design must
            // make harmless (superseded epochs, checkpoints that never go back). Its reader
            // stops after the record it is handing over.
            Err(_) => {
                tracing::warn!(partition, "partition task did not stop within {STOP_GRACE:?}");
                return;
            }
        }
        join_reader(partition, slot.reader);
    }

    fn on_control(&mut self, message: Control) {
        match message {
            Control::Start { partition, offset } => {
                let Some(slot) = self.slots.get_mut(&partition) else { return };
                let Some((intake, queue)) = slot.waiting.take() else { return };
                let topic = &self.config.topic;
                let mut tpl = TopicPartitionList::new();
                let positioned = tpl
                    .add_partition_offset(topic, partition, Offset::Offset(offset))
                    .and_then(|()| self.consumer.seek_partitions(tpl, Duration::from_secs(10)))
                    .and_then(|_| self.consumer.resume(&single(topic, partition)));
                if let Err(e) = positioned {
                    // The task is told by its queue closing; the restart check starts over.
                    tracing::error!(partition, offset, topic, "positioning the partition: {e}");
                    slot.cancel.cancel();
                    return;
                }
                let cancel = slot.cancel.clone();
                let reader = std::thread::Builder::new()
                    .name(format!("tally-{}-{partition}", self.config.role))
                    .spawn(move || read_partition(&queue, partition, offset, &intake, &cancel));
                match reader {
                    Ok(reader) => {
                        slot.reader = Some(reader);
                        self.running.insert(partition);
                    }
                    Err(e) => {
                        tracing::error!(partition, "starting the partition's reader: {e}");
                        slot.cancel.cancel();
                    }
                }
            }
            Control::Done { partition, next_offset } => self.store(partition, next_offset),
        }
    }

    fn store(&self, partition: i32, next_offset: i64) {
        if self.slots.contains_key(&partition)
            && let Err(e) = self.consumer.store_offset(&self.config.topic, partition, next_offset)
        {
            tracing::debug!(partition, "storing offset {next_offset}: {e}");
        }
    }

    /// A partition task that ended while its partition is still assigned (an error, a panic)
    /// starts over: it restores again and says again where to start.
    fn restart_failed(&mut self) {
        let failed: Vec<i32> =
            self.slots.iter().filter(|(_, s)| s.task.is_finished()).map(|(p, _)| *p).collect();
        for partition in failed {
            let Some(slot) = self.slots.remove(&partition) else { continue };
            self.running.remove(partition);
            slot.cancel.cancel();
            match self.runtime.block_on(slot.task) {
                Ok(Ok(())) => tracing::warn!(partition, "partition task stopped; restarting it"),
                Ok(Err(e)) => tracing::error!(partition, "partition task failed: {e}; restarting it"),
                Err(e) => tracing::error!(partition, "partition task panicked: {e}; restarting it"),
            }
            // The task's records channel is closed: its reader stops (before the partition's
            // queue is split off again for the next task).
            join_reader(partition, slot.reader);
            let _ = self.consumer.pause(&single(&self.config.topic, partition));
            std::thread::sleep(RESTART_DELAY);
            self.owner.before_restart();
            self.start(partition);
        }
    }
}

/// How long a partition's reader waits for a record before it looks at its cancel token.
const READER_POLL: Duration = Duration::from_millis(100);

/// A partition's reader: hands its records from `from` on to the partition's task, in order,
/// blocking while the task's channel is full. Ends when the task is cancelled or gone.
fn read_partition(
    queue: &PartitionQueue<GroupContext>,
    partition: i32,
    from: i64,
    intake: &mpsc::Sender<Record>,
    cancel: &CancellationToken,
) {
    let mut next = from;
    while !cancel.is_cancelled() {
        match queue.poll(READER_POLL) {
            // Before the position the task asked for (fetched ahead of the seek): not its.
            Some(Ok(record)) if record.offset() < next => {}
            Some(Ok(record)) => {
                next = record.offset() + 1;
                if intake.blocking_send(Record::of(&record)).is_err() {
                    return;
                }
            }
            Some(Err(e)) => tracing::warn!(partition, "partition queue: {e}"),
            None => {}
        }
    }
}

fn join_reader(partition: i32, reader: Option<std::thread::JoinHandle<()>>) {
    if let Some(Err(e)) = reader.map(std::thread::JoinHandle::join) {
        tracing::error!(partition, "partition reader panicked: {e:?}");
    }
}

fn single(topic: &str, partition: i32) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    tpl
}

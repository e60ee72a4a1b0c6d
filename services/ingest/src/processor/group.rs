//! The group thread: the one place that touches the consumer of `commands`. It follows the
//! group's assignments, starts and stops partition tasks, positions each partition where its
//! task says, and hands records over.

use super::{Control, ProcessorError, Shared, partition};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::OwnedMessage;
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Records queued per partition ahead of its task (a few batches).
const INTAKE_BATCHES: usize = 4;
/// How long a stopping partition task may take to finish its batch.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How often stored offsets are committed (a lag hint only).
const COMMIT_INTERVAL: Duration = Duration::from_secs(1);

/// Assignment changes, as the consumer reports them from inside `poll`.
enum Membership {
    Assigned(Vec<i32>),
    Revoked(Vec<i32>),
}

struct GroupContext {
    topic: String,
    membership: Sender<Membership>,
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let _ = self.membership.send(Membership::Revoked(self.partitions(tpl)));
        }
    }

    /// New partitions stay paused until their task has restored and claimed them.
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
struct Slot {
    task: JoinHandle<Result<(), ProcessorError>>,
    cancel: CancellationToken,
    intake: mpsc::Sender<OwnedMessage>,
    /// Set once the task has restored and claimed: the next offset to hand over.
    next: Option<i64>,
    /// Records the task's queue had no room for; the partition is paused while any wait.
    waiting: VecDeque<OwnedMessage>,
}

pub(super) struct Group {
    shared: Arc<Shared>,
    consumer: BaseConsumer<GroupContext>,
    membership: Receiver<Membership>,
    control: Receiver<Control>,
    stop: CancellationToken,
    running: Arc<Mutex<BTreeSet<i32>>>,
    runtime: tokio::runtime::Handle,
    slots: HashMap<i32, Slot>,
}

impl Group {
    pub(super) fn join(
        shared: Arc<Shared>,
        control: Receiver<Control>,
        stop: CancellationToken,
        running: Arc<Mutex<BTreeSet<i32>>>,
    ) -> Result<Group, ProcessorError> {
        let (membership_tx, membership) = std::sync::mpsc::channel();
        let topic = shared.config.topics.commands.clone();
        let context = GroupContext { topic: topic.clone(), membership: membership_tx };
        let consumer: BaseConsumer<GroupContext> = shared
            .config
            .kafka
            .consumer("processor", &shared.config.group_id)
            .create_with_context(context)?;
        consumer.subscribe(&[&topic])?;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| ProcessorError::Restore("the processor must start inside a tokio runtime".into()))?;
        Ok(Group { shared, consumer, membership, control, stop, running, runtime, slots: HashMap::new() })
    }

    pub(super) fn run(mut self) {
        let mut last_commit = Instant::now();
        while !self.stop.is_cancelled() {
            let polled = self.consumer.poll(Duration::from_millis(20)).map(|r| r.map(|m| m.detach()));
            // Membership first: a record returned by this poll belongs to the new assignment.
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
                Some(Ok(record)) => self.hand_over(record),
                Some(Err(e)) => tracing::warn!("commands consumer: {e}"),
                None => {}
            }
            self.drain_waiting();
            self.restart_failed();
            if last_commit.elapsed() > COMMIT_INTERVAL {
                // Nothing stored since the last commit is not an error worth a line.
                let _ = self.consumer.commit_consumer_state(CommitMode::Async);
                last_commit = Instant::now();
            }
        }
        let partitions: Vec<i32> = self.slots.keys().copied().collect();
        partitions.into_iter().for_each(|p| self.stop(p));
        while let Ok(Control::Answered { partition, next_offset }) = self.control.try_recv() {
            self.store(partition, next_offset);
        }
        let _ = self.consumer.commit_consumer_state(CommitMode::Sync);
        self.consumer.unsubscribe();
    }

    /// Starts the task that restores and claims `partition` (paused meanwhile).
    fn start(&mut self, partition: i32) {
        let (intake, rx) = mpsc::channel(INTAKE_BATCHES * self.shared.config.batch_max);
        let cancel = CancellationToken::new();
        let task = self.runtime.spawn(partition::own(self.shared.clone(), partition, rx, cancel.clone()));
        self.slots.insert(partition, Slot { task, cancel, intake, next: None, waiting: VecDeque::new() });
    }

    /// Stops a partition's task after its current batch (bounded wait).
    fn stop(&mut self, partition: i32) {
        let Some(slot) = self.slots.remove(&partition) else { return };
        self.running.lock().expect("not poisoned").remove(&partition);
        slot.cancel.cancel();
        drop(slot.intake);
        match self.runtime.block_on(async { tokio::time::timeout(STOP_GRACE, slot.task).await }) {
            Ok(Ok(Ok(()))) => tracing::info!(partition, "partition released"),
            Ok(Ok(Err(e))) => tracing::warn!(partition, "partition task ended with: {e}"),
            Ok(Err(e)) => tracing::error!(partition, "partition task panicked: {e}"),
            // Still writing after this point makes it a zombie; its records are superseded.
            Err(_) => tracing::warn!(partition, "partition task did not stop within {STOP_GRACE:?}"),
        }
    }

    fn on_control(&mut self, message: Control) {
        match message {
            Control::Start { partition, offset } => {
                let Some(slot) = self.slots.get_mut(&partition) else { return };
                let topic = &self.shared.config.topics.commands;
                let mut tpl = TopicPartitionList::new();
                let positioned = tpl
                    .add_partition_offset(topic, partition, Offset::Offset(offset))
                    .and_then(|()| self.consumer.seek_partitions(tpl, Duration::from_secs(10)))
                    .and_then(|_| self.consumer.resume(&single(topic, partition)));
                match positioned {
                    Ok(()) => {
                        slot.next = Some(offset);
                        self.running.lock().expect("not poisoned").insert(partition);
                    }
                    Err(e) => {
                        // The task is told by its queue closing; the restart check starts over.
                        tracing::error!(partition, offset, "positioning the commands partition: {e}");
                        slot.cancel.cancel();
                    }
                }
            }
            Control::Answered { partition, next_offset } => self.store(partition, next_offset),
        }
    }

    fn store(&self, partition: i32, next_offset: i64) {
        if self.slots.contains_key(&partition)
            && let Err(e) =
                self.consumer.store_offset(&self.shared.config.topics.commands, partition, next_offset)
        {
            tracing::debug!(partition, "storing offset {next_offset}: {e}");
        }
    }

    /// Gives a record to its partition's task, unless the task is not positioned yet (the
    /// partition will be read again from its position) or the record is before it.
    fn hand_over(&mut self, record: OwnedMessage) {
        let partition = record.partition();
        tracing::trace!(partition, offset = record.offset(), "command record");
        let Some(slot) = self.slots.get_mut(&partition) else { return };
        let Some(next) = slot.next else { return };
        if record.offset() < next {
            return;
        }
        slot.next = Some(record.offset() + 1);
        if !slot.waiting.is_empty() {
            slot.waiting.push_back(record);
            return;
        }
        if let Err(mpsc::error::TrySendError::Full(record)) = slot.intake.try_send(record) {
            slot.waiting.push_back(record);
            let _ = self.consumer.pause(&single(&self.shared.config.topics.commands, partition));
        }
    }

    fn drain_waiting(&mut self) {
        let topic = &self.shared.config.topics.commands;
        for (partition, slot) in &mut self.slots {
            if slot.waiting.is_empty() {
                continue;
            }
            while let Some(record) = slot.waiting.pop_front() {
                if let Err(e) = slot.intake.try_send(record) {
                    match e {
                        mpsc::error::TrySendError::Full(record) => slot.waiting.push_front(record),
                        mpsc::error::TrySendError::Closed(_) => slot.waiting.clear(),
                    }
                    break;
                }
            }
            if slot.waiting.is_empty() {
                let _ = self.consumer.resume(&single(topic, *partition));
            }
        }
    }

    /// A partition task that ended while its partition is still assigned (an error, a panic)
    /// starts over from the log: restore, claim, resume where the log says.
    fn restart_failed(&mut self) {
        let failed: Vec<i32> =
            self.slots.iter().filter(|(_, s)| s.task.is_finished()).map(|(p, _)| *p).collect();
        for partition in failed {
            let Some(slot) = self.slots.remove(&partition) else { continue };
            self.running.lock().expect("not poisoned").remove(&partition);
            match self.runtime.block_on(slot.task) {
                Ok(Ok(())) => tracing::warn!(partition, "partition task stopped; restarting it"),
                Ok(Err(e)) => tracing::error!(partition, "partition task failed: {e}; restarting it"),
                Err(e) => tracing::error!(partition, "partition task panicked: {e}; restarting it"),
            }
            let _ = self.consumer.pause(&single(&self.shared.config.topics.commands, partition));
            std::thread::sleep(Duration::from_millis(200));
            if let Err(e) = self.shared.renew_failed_producer() {
                tracing::error!("creating a new log producer: {e}");
            }
            self.start(partition);
        }
    }
}

fn single(topic: &str, partition: i32) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    tpl
}

//! The sink runner: a consumer group over `events` that owns partitions, and in each owned
//! partition one lane per active destination.
//!
//! - Ownership only comes from the group: a lane reads its partition itself, from its own
//!   stored position ([`Lane`]), so a slow, failing or parked destination holds up nobody else.
//!   (The cost: one Kafka reader per destination and owned partition.)
//! - A lane sends one event at a time, in log order, so every stream's events arrive in order;
//!   at most one delivery per destination and partition is in flight.
//! - Its position is stored every `checkpoint_every` and when it stops, never ahead of what was
//!   delivered. After a crash the events since the last stored position are sent again, with
//!   the same ids: delivery is at least once, and a duplicate only follows a crash (or a
//!   partition moved while a delivery was in flight).
//! - An event that fails `max_attempts` times parks the lane on it; the rest of the destination's
//!   lanes and every other destination go on. A resume of the destination (which raises its
//!   replay count) sends the parked event first.
//! - Nothing here depends on the projections: a rebuild or a replay of them sends nothing.

use crate::destination::Destination;
use crate::lane::{ERROR_LEN_MAX, Failing, Lane, Parked, backoff};
use crate::metrics;
use crate::outlet::{Message, Outlets};
use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tally_codec::Codec;
use tally_core::Event;
use tally_core::log::LogRecord;
use tally_kafka::config::KafkaOptions;
use tally_kafka::{
    Assignment, GroupConfig, LogRead, LogTail, PartitionGroup, PartitionOwner, Producer, Record, TopicReader,
};
use tally_runtime::{Handle, now_ms};
use tally_store::bridge::blocking;
use tally_store::{SinkStore, SnapshotStore, StoreError, snapshot};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// What a sink runner needs to know.
#[derive(Clone)]
pub struct SinkConfig {
    pub kafka: KafkaOptions,
    /// The `events` topic.
    pub events: String,
    /// Consumer group of every sink runner of the deployment.
    pub group_id: String,
    /// Where destinations and lane positions are kept.
    pub store: Arc<dyn SinkStore>,
    /// The processor's snapshots: a new lane that starts late in the log (`start: now`)
    /// restores its reader from one instead of reading the log from offset 0.
    pub snapshots: Option<Arc<dyn SnapshotStore>>,
    /// How often each owned partition re-reads the destinations (new, changed, paused, resumed
    /// or deleted ones take effect within this).
    pub refresh: Duration,
    /// How often a lane stores its position while it delivers (and when it stops).
    pub checkpoint_every: Duration,
    /// Bound on one delivery attempt.
    pub attempt_timeout: Duration,
    /// Backoff after the first failed attempt; it doubles per failure up to `backoff_max`.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Whether webhooks may go to loopback, private and link-local addresses.
    pub private_webhooks: bool,
}

impl SinkConfig {
    /// The defaults: group `tally-sink`, refresh every second, positions stored every 200 ms,
    /// 5 s per attempt, backoff from 500 ms to 60 s, public webhooks only.
    pub fn new(kafka: KafkaOptions, events: impl Into<String>, store: Arc<dyn SinkStore>) -> SinkConfig {
        SinkConfig {
            kafka,
            events: events.into(),
            group_id: "tally-sink".into(),
            store,
            snapshots: None,
            refresh: Duration::from_secs(1),
            checkpoint_every: Duration::from_millis(200),
            attempt_timeout: Duration::from_secs(5),
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(60),
            private_webhooks: false,
        }
    }
}

/// Why the runner, a partition or a lane stopped.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("{0}")]
    Kafka(#[from] tally_kafka::KafkaError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("blocking task: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("{0}")]
    Setup(String),
    /// A lane's log reader ended without being told to.
    #[error("the log reader of partition {0} stopped")]
    ReaderStopped(i32),
}

/// What a running sink reports.
#[derive(Clone, Default)]
pub struct SinkStatus {
    owned: Arc<Mutex<BTreeSet<i32>>>,
}

impl SinkStatus {
    /// The events partitions this instance owns (and runs lanes in).
    pub fn owned_partitions(&self) -> Vec<i32> {
        self.owned.lock().expect("not poisoned").iter().copied().collect()
    }

    fn own(&self, partition: i32, owned: bool) {
        let mut set = self.owned.lock().expect("not poisoned");
        if owned {
            set.insert(partition)
        } else {
            set.remove(&partition)
        };
    }
}

/// A sink runner, built and not yet running (the service recipe: [`SinkRunner::build`], then
/// [`SinkRunner::run`]).
pub struct SinkRunner {
    shared: Arc<Shared>,
    group: GroupConfig,
}

struct Shared {
    config: SinkConfig,
    codec: Arc<Codec>,
    outlets: Outlets,
    status: SinkStatus,
}

impl SinkRunner {
    /// Prepares a runner: its HTTP client and Kafka producer (nothing is joined yet).
    pub fn build(config: SinkConfig) -> Result<SinkRunner, SinkError> {
        let producer = Arc::new(Producer::new(&config.kafka, "sink")?);
        let codec = Arc::new(Codec::new());
        let outlets = Outlets::new(producer, codec.clone(), config.attempt_timeout, config.private_webhooks)
            .map_err(SinkError::Setup)?;
        let group = GroupConfig {
            kafka: config.kafka.clone(),
            topic: config.events.clone(),
            group_id: config.group_id.clone(),
            role: "sink",
            queue: 1,
        };
        let shared = Shared { config, codec, outlets, status: SinkStatus::default() };
        Ok(SinkRunner { shared: Arc::new(shared), group })
    }

    /// Joins the group and delivers until `cancel` fires; then every lane stores its position
    /// and the instance leaves the group. Must be called within a tokio runtime.
    pub fn run(self, cancel: CancellationToken) -> Handle<SinkStatus> {
        let SinkRunner { shared, group } = self;
        let status = shared.status.clone();
        let running = tally_kafka::RunningPartitions::default();
        Handle::spawn("sink", cancel.clone(), status, PartitionGroup::serve(group, shared, running, cancel))
    }
}

impl PartitionOwner for Shared {
    type Error = SinkError;

    /// Owns the partition without reading it through the group (the partition stays paused
    /// there): each lane reads for itself.
    fn own(
        self: Arc<Self>,
        assignment: Assignment,
        _records: mpsc::Receiver<Record>,
    ) -> impl Future<Output = Result<(), SinkError>> + Send + 'static {
        own_partition(self, assignment)
    }
}

/// A lane running (or ended) in an owned partition.
struct RunningLane {
    destination: watch::Sender<Arc<Destination>>,
    cancel: CancellationToken,
    /// Set when the destination is deleted: the task drops the lane's series as it ends, after
    /// its last metric write (a write in flight while it is told to stop would bring them back).
    deleted: Arc<AtomicBool>,
    task: JoinHandle<LaneEnd>,
    /// How the task ended, once it has.
    ended: Option<LaneEnd>,
}

/// How a lane's task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LaneEnd {
    Stopped,
    /// Parked under this replay count: started again only after a resume raises it.
    Parked {
        replay: u64,
    },
    /// Failed (logged): started again at the next refresh.
    Failed,
}

async fn own_partition(shared: Arc<Shared>, assignment: Assignment) -> Result<(), SinkError> {
    let partition = assignment.partition;
    shared.status.own(partition, true);
    let mut lanes = Lanes::default();
    let mut idle_reader = None;
    let mut refresh = tokio::time::interval(shared.config.refresh);
    loop {
        tokio::select! {
            biased;
            _ = assignment.cancel.cancelled() => break,
            _ = refresh.tick() => {
                let reconciled = reconcile(&shared, partition, &mut lanes, &assignment.cancel, &mut idle_reader);
                if let Err(e) = reconciled.await {
                    tracing::warn!(partition, "reading the sink destinations: {e}");
                }
            }
        }
    }
    // Every lane finishes its delivery in flight and stores its position before the
    // partition is given up.
    for (uid, lane) in lanes.running.drain() {
        lanes.stopping.insert(uid, stop_lane(lane));
    }
    for (_, task) in lanes.stopping.drain() {
        if let Some(task) = task {
            let _ = task.await;
        }
    }
    shared.status.own(partition, false);
    Ok(())
}

/// The lanes of one owned partition.
#[derive(Default)]
struct Lanes {
    running: HashMap<String, RunningLane>,
    /// Lanes told to stop whose delivery in flight may not have ended yet: their destination
    /// gets no new lane here until they have (two lanes of one destination would race).
    /// Nothing waits for them meanwhile, so a receiver that hangs delays nobody else.
    stopping: HashMap<String, Option<JoinHandle<LaneEnd>>>,
}

/// Makes the partition's lanes match the stored destinations: starts lanes for active ones,
/// hands changed settings to running ones, stops those paused or deleted.
async fn reconcile(
    shared: &Arc<Shared>,
    partition: i32,
    lanes: &mut Lanes,
    owner: &CancellationToken,
    idle_reader: &mut Option<TopicReader>,
) -> Result<(), SinkError> {
    lanes.stopping.retain(|_, task| task.as_ref().is_some_and(|t| !t.is_finished()));
    let store = shared.config.store.clone();
    let stored = blocking(move || Ok::<_, SinkError>(store.destinations()?)).await?;
    let mut all: HashMap<String, Arc<Destination>> = HashMap::new();
    for bytes in stored {
        match Destination::decode(&bytes) {
            Ok(d) => {
                all.insert(d.uid.clone(), Arc::new(d));
            }
            Err(e) => tracing::error!("a stored sink destination does not decode: {e}"),
        }
    }
    let stopping: Vec<String> =
        lanes.running.keys().filter(|uid| all.get(*uid).is_none_or(|d| d.paused)).cloned().collect();
    for uid in stopping {
        let Some(lane) = lanes.running.remove(&uid) else { continue };
        let deleted = !all.contains_key(&uid);
        tracing::info!(partition, uid, deleted, "sink lane stopping: its destination was paused or deleted");
        let destination = lane.destination.borrow().clone();
        if deleted {
            // The flag before the forgetting: a task that ends later forgets again itself.
            lane.deleted.store(true, Ordering::SeqCst);
            metrics::forget(destination.tenant.as_str(), destination.id.as_str(), partition);
        }
        lanes.stopping.insert(uid, stop_lane(lane));
    }
    // Lanes that do not run (paused, parked): their lag is reported from here.
    let mut idle = Vec::new();
    for (uid, destination) in all {
        if destination.paused {
            idle.push(destination);
            continue;
        }
        if lanes.stopping.contains_key(&uid) {
            continue; // its previous lane is still finishing a delivery
        }
        let restart = match lanes.running.get_mut(&uid) {
            None => true,
            Some(lane) => {
                if lane.ended.is_none() && lane.task.is_finished() {
                    lane.ended = Some((&mut lane.task).await.unwrap_or(LaneEnd::Failed));
                }
                lane.destination.send_if_modified(|current| {
                    let changed = **current != *destination;
                    if changed {
                        *current = destination.clone();
                    }
                    changed
                });
                match lane.ended {
                    None => false,
                    Some(LaneEnd::Parked { replay }) => destination.replay > replay,
                    Some(LaneEnd::Stopped | LaneEnd::Failed) => true,
                }
            }
        };
        if restart {
            tracing::info!(partition, uid, "sink lane starting");
            let lane = start_lane(shared.clone(), partition, destination, owner.child_token());
            lanes.running.insert(uid, lane);
        } else if lanes.running.get(&uid).is_some_and(|l| l.ended.is_some()) {
            idle.push(destination);
        }
    }
    report_idle_lag(shared, partition, idle, idle_reader).await;
    Ok(())
}

/// Sets the lag gauge of lanes that do not run (their destination is paused, or they are
/// parked), from their stored positions and the partition's end: such a lane falls behind.
async fn report_idle_lag(
    shared: &Arc<Shared>,
    partition: i32,
    idle: Vec<Arc<Destination>>,
    reader: &mut Option<TopicReader>,
) {
    if idle.is_empty() {
        return;
    }
    let (config, taken) = (shared.config.clone(), reader.take());
    let measured = blocking(move || {
        let reader = match taken {
            Some(reader) => reader,
            None => TopicReader::open(&config.kafka, "sink", &config.events)?,
        };
        let end = reader.watermarks(partition)?.1;
        let mut lags = Vec::new();
        for destination in idle {
            let stored = config.store.deliveries(&destination.uid)?;
            let lane = stored.iter().find(|(p, _)| *p == partition).and_then(|(_, b)| Lane::decode(b).ok());
            if let Some(lane) = lane {
                lags.push((destination, (end - lane.next_offset).max(0)));
            }
        }
        Ok::<_, SinkError>((reader, lags))
    });
    match measured.await {
        Ok((kept, lags)) => {
            *reader = Some(kept);
            for (d, lag) in lags {
                let labels = [d.tenant.as_str(), d.id.as_str(), &partition.to_string()];
                metrics::LAG_EVENTS.with_label_values(&labels).set(lag);
            }
        }
        Err(e) => tracing::debug!(partition, "measuring the lag of idle sink lanes: {e}"),
    }
}

fn start_lane(
    shared: Arc<Shared>,
    partition: i32,
    destination: Arc<Destination>,
    cancel: CancellationToken,
) -> RunningLane {
    let (tenant, id) = (destination.tenant.to_string(), destination.id.to_string());
    let (sender, receiver) = watch::channel(destination);
    let deleted = Arc::new(AtomicBool::new(false));
    let lane = run_lane(shared, partition, receiver, cancel.clone());
    let forget_if_deleted = deleted.clone();
    let task = tokio::spawn(async move {
        let end = lane.await;
        if forget_if_deleted.load(Ordering::SeqCst) {
            metrics::forget(&tenant, &id, partition);
        }
        end
    });
    RunningLane { destination: sender, cancel, deleted, task, ended: None }
}

/// Tells a lane to stop; returns its task if it has not ended yet.
fn stop_lane(lane: RunningLane) -> Option<JoinHandle<LaneEnd>> {
    lane.cancel.cancel();
    lane.ended.is_none().then_some(lane.task)
}

async fn run_lane(
    shared: Arc<Shared>,
    partition: i32,
    destination: watch::Receiver<Arc<Destination>>,
    cancel: CancellationToken,
) -> LaneEnd {
    let (tenant, id) = {
        let d = destination.borrow();
        (d.tenant.to_string(), d.id.to_string())
    };
    let mut runner =
        LaneRunner { shared, partition, destination, cancel, labels: [tenant, id, partition.to_string()] };
    match runner.run().await {
        Ok(end) => end,
        Err(e) => {
            let [tenant, destination, _] = &runner.labels;
            tracing::warn!(partition, tenant, destination, "sink lane failed: {e}; it starts again");
            LaneEnd::Failed
        }
    }
}

/// One lane at work.
struct LaneRunner {
    shared: Arc<Shared>,
    partition: i32,
    destination: watch::Receiver<Arc<Destination>>,
    cancel: CancellationToken,
    /// tenant, destination id, partition.
    labels: [String; 3],
}

/// How one event's delivery ended.
enum Delivery {
    Delivered,
    /// Every attempt failed: the lane parks.
    Failed(Parked),
    /// The lane was told to stop between attempts.
    Cancelled,
}

impl LaneRunner {
    fn current(&self) -> Arc<Destination> {
        self.destination.borrow().clone()
    }

    fn labels(&self) -> [&str; 3] {
        [&self.labels[0], &self.labels[1], &self.labels[2]]
    }

    fn destination_labels(&self) -> [&str; 2] {
        [&self.labels[0], &self.labels[1]]
    }

    async fn run(&mut self) -> Result<LaneEnd, SinkError> {
        let destination = self.current();
        let mut lane = match self.load(&destination.uid).await? {
            Some(lane) => lane,
            None => self.first_lane(destination.starts_at(self.partition)).await?,
        };
        if lane.is_parked(destination.replay) {
            metrics::PARKED.with_label_values(&self.labels()).set(1);
            return Ok(LaneEnd::Parked { replay: lane.parked.as_ref().map_or(0, |p| p.replay) });
        }
        metrics::PARKED.with_label_values(&self.labels()).set(0);
        if lane.parked.take().is_some() {
            self.save(&destination.uid, &lane).await?;
        }
        let reader =
            LaneReader::spawn(&self.shared, self.partition, lane.next_offset, self.cancel.child_token())?;
        let start = destination.starts_at(self.partition);
        let end = self.deliver_all(&mut lane, reader, start).await;
        // Whatever ended the lane, what it delivered is stored (a parked lane stored already).
        self.save(&destination.uid, &lane).await?;
        end
    }

    /// Delivers what the lane reads, from the records at `start` on (those before it are only
    /// judged, to keep the reader's position).
    async fn deliver_all(
        &mut self,
        lane: &mut Lane,
        mut reader: LaneReader,
        start: i64,
    ) -> Result<LaneEnd, SinkError> {
        let uid = self.current().uid.clone();
        let mut flush = tokio::time::interval(self.shared.config.checkpoint_every);
        let mut dirty = false;
        loop {
            let read = tokio::select! {
                biased;
                _ = self.cancel.cancelled() => return Ok(LaneEnd::Stopped),
                _ = flush.tick() => {
                    if std::mem::take(&mut dirty) {
                        self.save(&uid, lane).await?;
                    }
                    let behind = (reader.end.load(Ordering::Relaxed) - lane.next_offset).max(0);
                    metrics::LAG_EVENTS.with_label_values(&self.labels()).set(behind);
                    if behind == 0 {
                        metrics::LAG_MS.with_label_values(&self.labels()).set(0);
                    }
                    continue;
                }
                read = reader.records.recv() => match read {
                    Some(read) => read?,
                    None => return Err(SinkError::ReaderStopped(self.partition)),
                },
            };
            let (event, after) = match &read.record {
                Some(record) => lane.judge(record),
                None => (None, lane.reader),
            };
            let wanted = event.filter(|e| read.offset >= start && self.current().wants(e));
            if let (Some(event), Some(record)) = (wanted, &read.record) {
                match self.deliver(lane, &uid, event, record, read.offset).await {
                    Delivery::Delivered => {
                        lane.delivered += 1;
                        metrics::DELIVERED.with_label_values(&self.destination_labels()).inc();
                    }
                    Delivery::Cancelled => return Ok(LaneEnd::Stopped),
                    Delivery::Failed(parked) => {
                        let replay = parked.replay;
                        tracing::warn!(
                            partition = self.partition,
                            tenant = self.labels[0],
                            destination = self.labels[1],
                            event = parked.event_id,
                            attempts = parked.attempts,
                            "delivery failed every attempt ({}); the lane is parked until the destination is resumed",
                            parked.error
                        );
                        lane.parked = Some(parked);
                        self.save(&uid, lane).await?;
                        metrics::PARKED.with_label_values(&self.labels()).set(1);
                        return Ok(LaneEnd::Parked { replay });
                    }
                }
            }
            lane.passed(read.offset, after);
            dirty = true;
            if let Some(written) = read.timestamp_ms {
                metrics::LAG_MS.with_label_values(&self.labels()).set((now_ms() - written).max(0));
            }
        }
    }

    /// Sends one event, retrying with backoff until it is delivered, every attempt failed, or
    /// the lane is told to stop.
    async fn deliver(
        &self,
        lane: &mut Lane,
        uid: &str,
        event: &Event,
        record: &LogRecord,
        offset: i64,
    ) -> Delivery {
        let message = Message::of(event, self.partition, offset);
        let config = &self.shared.config;
        let mut attempts = 0;
        loop {
            attempts += 1;
            // The newest settings each attempt: a rotated secret signs the retries.
            let destination = self.current();
            let error = match self.shared.outlets.send(&destination, &message, record, now_ms()).await {
                Ok(()) => {
                    lane.failing = None;
                    return Delivery::Delivered;
                }
                Err(e) => cut(e.to_string()),
            };
            metrics::FAILED.with_label_values(&self.destination_labels()).inc();
            if attempts >= destination.max_attempts {
                lane.failing = None;
                let (replay, event_id, at_ms) = (destination.replay, message.id, now_ms());
                return Delivery::Failed(Parked { replay, offset, event_id, attempts, error, at_ms });
            }
            if attempts == 1 {
                tracing::warn!(
                    partition = self.partition,
                    tenant = self.labels[0],
                    destination = self.labels[1],
                    event = message.id,
                    "delivery failed ({error}); retrying with backoff, {} attempts at most",
                    destination.max_attempts
                );
            }
            // Where the lane stands shows the struggle before it parks (the position is
            // unchanged: storing it is never ahead of what was delivered).
            let since_ms = lane.failing.as_ref().map_or_else(now_ms, |f| f.since_ms);
            lane.failing = Some(Failing { offset, event_id: message.id.clone(), attempts, error, since_ms });
            if let Err(e) = self.save(uid, lane).await {
                tracing::warn!(partition = self.partition, "storing a failing lane: {e}");
            }
            let wait = backoff(attempts, config.backoff_base, config.backoff_max, rand::random());
            tokio::select! {
                _ = self.cancel.cancelled() => return Delivery::Cancelled,
                _ = tokio::time::sleep(wait) => {}
            }
            metrics::RETRIES.with_label_values(&self.destination_labels()).inc();
        }
    }

    /// A lane that has never run: at offset 0 with a fresh reader, or, when it starts at
    /// `start` > 0, at the newest snapshot that covers no more than `start - 1` (its reader
    /// position is the log's there).
    async fn first_lane(&self, start: i64) -> Result<Lane, SinkError> {
        let Some(snapshots) = self.shared.config.snapshots.clone().filter(|_| start > 0) else {
            return Ok(Lane::default());
        };
        let (events, partition) = (self.shared.config.events.clone(), self.partition);
        let resume = blocking(move || {
            Ok::<_, SinkError>(snapshot::resume_point(
                Some(snapshots.as_ref()),
                &events,
                partition,
                start - 1,
            ))
        })
        .await?;
        Ok(Lane { next_offset: resume.next, reader: resume.replica.reader, ..Lane::default() })
    }

    async fn load(&self, uid: &str) -> Result<Option<Lane>, SinkError> {
        let (store, uid, partition) = (self.shared.config.store.clone(), uid.to_owned(), self.partition);
        let stored = blocking(move || Ok::<_, SinkError>(store.deliveries(&uid)?)).await?;
        let mine = stored.into_iter().find(|(p, _)| *p == partition);
        match mine.map(|(_, bytes)| Lane::decode(&bytes)).transpose() {
            Ok(lane) => Ok(lane),
            Err(e) => Err(SinkError::Store(StoreError::Corrupt(format!("sink lane: {e}")))),
        }
    }

    async fn save(&self, uid: &str, lane: &Lane) -> Result<(), SinkError> {
        let (store, uid, partition, bytes) =
            (self.shared.config.store.clone(), uid.to_owned(), self.partition, lane.encode());
        blocking(move || Ok::<_, SinkError>(store.put_delivery(&uid, partition, &bytes)?)).await
    }
}

/// A lane's own reader of its partition: a thread (librdkafka blocks) that hands records over
/// in order, and the partition's end as last seen (for the lag gauge).
struct LaneReader {
    records: mpsc::Receiver<Result<LogRead, tally_kafka::KafkaError>>,
    end: Arc<AtomicI64>,
}

/// Records a lane's reader may hold ahead of its deliveries.
const READ_AHEAD: usize = 256;
/// How often a lane's reader asks for its partition's end.
const END_EVERY: Duration = Duration::from_secs(1);

impl LaneReader {
    fn spawn(
        shared: &Shared,
        partition: i32,
        from: i64,
        cancel: CancellationToken,
    ) -> Result<LaneReader, SinkError> {
        let (sender, records) = mpsc::channel(READ_AHEAD);
        let end = Arc::new(AtomicI64::new(from));
        let (kafka, topic, codec, seen) =
            (shared.config.kafka.clone(), shared.config.events.clone(), shared.codec.clone(), end.clone());
        let read = move || {
            let mut tail = match LogTail::open_partitions(&kafka, "sink", &topic, &[(partition, from)]) {
                Ok(tail) => tail,
                Err(e) => return drop(sender.blocking_send(Err(e))),
            };
            let mut asked = Instant::now() - END_EVERY;
            while !cancel.is_cancelled() && !sender.is_closed() {
                if asked.elapsed() >= END_EVERY {
                    asked = Instant::now();
                    if let Ok(at) = tail.end() {
                        seen.store(at, Ordering::Relaxed);
                    }
                }
                let next = match tail.next(&codec, Duration::from_millis(100)) {
                    Ok(None) => continue,
                    Ok(Some(read)) => Ok(read),
                    Err(e) => Err(e),
                };
                let failed = next.is_err();
                if sender.blocking_send(next).is_err() || failed {
                    return;
                }
            }
        };
        std::thread::Builder::new()
            .name(format!("tally-sink-{partition}"))
            .spawn(read)
            .map_err(|e| SinkError::Setup(format!("starting a lane's reader: {e}")))?;
        Ok(LaneReader { records, end })
    }
}

/// An error cut to [`ERROR_LEN_MAX`] bytes (at a character boundary).
fn cut(mut error: String) -> String {
    if error.len() > ERROR_LEN_MAX {
        let mut at = ERROR_LEN_MAX;
        while !error.is_char_boundary(at) {
            at -= 1;
        }
        error.truncate(at);
    }
    error
}

//! # tally-projector
//!
//! Folds the `events` log into the projections the query side reads (DESIGN.md sections 2 and
//! 3), with the same pure fold the processor restores with ([`tally_core::projection::fold`]).
//!
//! Each `events` partition is owned by one instance of a consumer group
//! ([`tally_kafka::PartitionGroup`]). On assignment the owner reads its checkpoint, the last
//! offset the stored rows cover, and rebuilds the fold's state as of that offset: the newest
//! snapshot at or before it, then the log up to it. Then it reads on from checkpoint + 1 and
//! writes, per batch, the changed rows (each once, as of the batch's end) together with the new
//! checkpoint in one atomic commit.
//!
//! - The checkpoint is the source of truth: Kafka's committed offsets are only a lag hint.
//! - A crash between batches loses the unwritten batch only; it is folded again from the
//!   checkpoint. Rows are whole values, so writing them again converges.
//! - A checkpoint never goes back (the store refuses it): a former owner still writing after a
//!   rebalance fails its commit, and the partition task starts over from the stored checkpoint.
//!   Rows written by either are the same fold of the same log, so nothing rolls back.
//! - Records of superseded epochs (a zombie processor's) and repeats change nothing: the fold
//!   judges them exactly as the processor's restore does.
//!
//! A projector writes the store's live version and follows it: when a [`rebuild`] switches the
//! live version, each partition task notices within [`LIVE_CHECK`] and starts over on the new
//! version, from that version's checkpoint.

mod metrics;
pub mod rebuild;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use tally_codec::Codec;
use tally_core::log::{LogRecord, Replica};
use tally_core::{memory, projection};
use tally_kafka::config::KafkaOptions;
use tally_kafka::trace_context;
use tally_kafka::{
    Assignment, GroupConfig, LogTail, PartitionGroup, PartitionOwner, Record, RunningPartitions,
};
use tally_runtime::{Handle, now_ms};
use tally_store::bridge::blocking;
use tally_store::projections::{ProjectionStore, Version};
use tally_store::{SnapshotStore, StoreError, snapshot};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// What a projector instance needs to know.
#[derive(Debug, Clone)]
pub struct ProjectorConfig {
    pub kafka: KafkaOptions,
    /// The `events` topic.
    pub events: String,
    /// Consumer group of all projector instances writing one projection version.
    pub group_id: String,
    /// The projection version written.
    pub target: Target,
    /// Most events records folded into one commit.
    pub batch_max: usize,
    /// Where the rows and checkpoints go.
    pub store: Arc<dyn ProjectionStore>,
    /// The processor's snapshots, to restore the fold's state from; `None`: fold from offset 0.
    pub snapshots: Option<Arc<dyn SnapshotStore>>,
}

impl ProjectorConfig {
    pub fn new(kafka: KafkaOptions, events: impl Into<String>, store: Arc<dyn ProjectionStore>) -> Self {
        ProjectorConfig {
            kafka,
            events: events.into(),
            group_id: "tally-projector".into(),
            target: Target::Live,
            batch_max: 1000,
            store,
            snapshots: None,
        }
    }
}

/// Which projection version a projector writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The store's live version, following switches (the projector service).
    Live,
    /// One version, live or not (a rebuild filling a new version).
    Version(Version),
}

/// How often a partition task following the live version checks whether it was switched.
pub const LIVE_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// Why a partition task (or the projector) stopped; a partition task that fails starts over
/// from its checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum ProjectorError {
    /// Joining the group or reading the log failed.
    #[error("{0}")]
    Kafka(#[from] tally_kafka::KafkaError),
    /// The store refused or failed a read or commit (a retired version among them: a rebuild
    /// switched the live version).
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// A task on the blocking pool panicked or was cancelled.
    #[error("blocking task: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Where one partition's projection stands.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Progress {
    pub partition: i32,
    /// The projection version written.
    pub version: Version,
    /// The last offset the stored rows cover (`None`: nothing written yet).
    pub checkpoint: Option<i64>,
    /// Milliseconds from the broker's timestamp of the last record applied to its commit.
    pub lag_ms: i64,
    /// How the partition was taken over: the snapshot it restored from (the offset it covers)
    /// and how many log records it read to reach its checkpoint.
    pub snapshot: Option<i64>,
    pub records_read: u64,
}

/// Records queued per partition ahead of its task (a few batches).
const INTAKE_BATCHES: usize = 4;

/// A projector instance, built and not yet running (the service recipe: [`Projector::build`],
/// then [`Projector::run`]).
pub struct Projector {
    shared: Arc<Shared>,
    group: GroupConfig,
    status: ProjectorStatus,
}

/// What a projector reports while it runs (reachable through its [`Handle`]).
#[derive(Clone, Default)]
pub struct ProjectorStatus {
    running: RunningPartitions,
    progress: ProgressView,
}

impl ProjectorStatus {
    /// Partitions restored and being projected by this instance.
    pub fn running_partitions(&self) -> Vec<i32> {
        self.running.get()
    }

    /// Where each partition this instance has owned stands (for lag metrics and tests).
    pub fn progress(&self) -> Vec<Progress> {
        self.progress.get()
    }

    /// The same, as a handle that outlives the projector.
    pub fn progress_view(&self) -> ProgressView {
        self.progress.clone()
    }
}

/// A handle on where a projector's partitions stand, usable after the projector was moved.
#[derive(Clone, Default)]
pub struct ProgressView(Arc<Mutex<BTreeMap<i32, Progress>>>);

impl ProgressView {
    /// Where each partition this instance has owned stands.
    pub fn get(&self) -> Vec<Progress> {
        self.0.lock().expect("not poisoned").values().cloned().collect()
    }

    fn set(&self, progress: Progress) {
        self.0.lock().expect("not poisoned").insert(progress.partition, progress);
    }

    fn committed(&self, partition: i32, checkpoint: i64, lag_ms: i64) {
        if let Some(progress) = self.0.lock().expect("not poisoned").get_mut(&partition) {
            progress.checkpoint = Some(checkpoint);
            progress.lag_ms = lag_ms;
        }
    }
}

impl Projector {
    /// Prepares a projector from its configuration (nothing is joined or read yet).
    pub fn build(config: ProjectorConfig) -> Result<Projector, ProjectorError> {
        let group = GroupConfig {
            kafka: config.kafka.clone(),
            topic: config.events.clone(),
            group_id: config.group_id.clone(),
            role: "projector",
            queue: INTAKE_BATCHES * config.batch_max,
        };
        let status = ProjectorStatus::default();
        let shared = Arc::new(Shared { config, codec: Codec::new(), progress: status.progress.clone() });
        Ok(Projector { shared, group, status })
    }

    /// Joins the group and projects until `cancel` fires; then each partition finishes its
    /// batch and the instance leaves the group. Must be called within a tokio runtime.
    pub fn run(self, cancel: CancellationToken) -> Handle<ProjectorStatus> {
        let Projector { shared, group, status } = self;
        let running = status.running.clone();
        Handle::spawn(
            "projector",
            cancel.clone(),
            status,
            PartitionGroup::serve(group, shared, running, cancel),
        )
    }
}

struct Shared {
    config: ProjectorConfig,
    codec: Codec,
    progress: ProgressView,
}

impl Shared {
    async fn version_to_write(&self) -> Result<Version, ProjectorError> {
        match self.config.target {
            Target::Version(version) => Ok(version),
            Target::Live => {
                let store = self.config.store.clone();
                blocking(move || Ok::<_, ProjectorError>(store.live_version()?)).await
            }
        }
    }
}

impl PartitionOwner for Shared {
    type Error = ProjectorError;

    fn own(
        self: Arc<Self>,
        assignment: Assignment,
        records: mpsc::Receiver<Record>,
    ) -> impl Future<Output = Result<(), ProjectorError>> + Send + 'static {
        project(self, assignment, records)
    }
}

/// Restores the partition's fold to its checkpoint, then projects batches until cancelled.
async fn project(
    shared: Arc<Shared>,
    assignment: Assignment,
    mut records: mpsc::Receiver<Record>,
) -> Result<(), ProjectorError> {
    let mut owner = PartitionProjector::take_over(shared, assignment).await?;
    let start = owner.checkpoint.map_or(0, |c| c + 1);
    owner.assignment.start_at(start);
    let batch_max = owner.shared.config.batch_max;
    let mut batch = Vec::with_capacity(batch_max);
    let mut live_check = tokio::time::interval(LIVE_CHECK);
    let follows_live = owner.shared.config.target == Target::Live;
    loop {
        tokio::select! {
            biased;
            _ = owner.assignment.cancel.cancelled() => return Ok(()),
            _ = live_check.tick(), if follows_live => {
                let live = owner.shared.version_to_write().await?;
                if live != owner.version {
                    return start_over(owner.assignment.partition, owner.version, live);
                }
            }
            n = records.recv_many(&mut batch, batch_max) => {
                if n == 0 {
                    return Ok(());
                }
                match owner.apply(&mut batch).await {
                    Err(ProjectorError::Store(StoreError::VersionRetired { version, live })) => {
                        return start_over(owner.assignment.partition, version, live);
                    }
                    applied => applied?,
                }
            }
        }
    }
}

/// The live version moved on (a rebuild switched it): the task ends while still assigned, so
/// the group starts the partition over, on the new version.
fn start_over(partition: i32, from: Version, to: Version) -> Result<(), ProjectorError> {
    tracing::info!(partition, from, to, "live projection version switched; starting over on the new version");
    Ok(())
}

/// The owner of one partition's projection.
struct PartitionProjector {
    shared: Arc<Shared>,
    assignment: Assignment,
    version: Version,
    /// The fold's state as of `checkpoint`.
    replica: Replica,
    checkpoint: Option<i64>,
}

impl PartitionProjector {
    async fn take_over(shared: Arc<Shared>, assignment: Assignment) -> Result<Self, ProjectorError> {
        let partition = assignment.partition;
        let version = shared.version_to_write().await?;
        let store = shared.config.store.clone();
        let checkpoint =
            blocking(move || Ok::<_, ProjectorError>(store.checkpoint(version, partition)?)).await?;
        let (mut replica, snapshot, records_read) = match checkpoint {
            None => (Replica::new(), None, 0),
            Some(checkpoint) => restore(shared.clone(), (version, partition), checkpoint).await?,
        };
        // A processor's snapshot holds every transaction and command id; the rows hold them too.
        replica.state.forget_all_settled();
        tracing::info!(partition, version, ?checkpoint, ?snapshot, records_read, "projection restored");
        let progress = Progress { partition, version, checkpoint, lag_ms: 0, snapshot, records_read };
        shared.progress.set(progress);
        Ok(PartitionProjector { shared, assignment, version, replica, checkpoint })
    }

    /// Folds a batch and commits its rows with the checkpoint of its last record.
    async fn apply(&mut self, batch: &mut Vec<Record>) -> Result<(), ProjectorError> {
        let partition = self.assignment.partition;
        let fold_started = std::time::Instant::now();
        let mut records = Vec::with_capacity(batch.len());
        let (mut last, mut traces) = (None, Vec::new());
        for message in batch.drain(..) {
            let offset = message.offset;
            if self.checkpoint.is_some_and(|c| offset <= c) {
                continue; // delivered again after a seek: already covered
            }
            last = Some((offset, message.timestamp_ms));
            if traces.len() < TRACES_PER_BATCH_MAX && trace_context::is_traced(&message.headers) {
                traces.push(trace_context::context_of(&message.headers));
            }
            match self.shared.codec.decode_log_record(&message.payload) {
                Ok(record) => records.push((offset, record)),
                // Only Tally writes here; an unreadable record is skipped by every reader alike.
                Err(e) => tracing::warn!(partition, offset, "unreadable log record: {e}"),
            }
        }
        let batch_len = records.len();
        self.recall(&records).await?;
        let batch = records.iter().map(|(offset, record)| (*offset, record));
        let changes = projection::fold_batch(&mut self.replica, batch, partition);
        let Some((offset, written_at)) = last else { return Ok(()) };
        let (store, version) = (self.shared.config.store.clone(), self.version);
        let fold_us = fold_started.elapsed().as_micros() as u64;
        let (rows, started) = (changes.len(), std::time::Instant::now());
        blocking(move || Ok::<_, ProjectorError>(store.commit(version, partition, &changes, offset)?))
            .instrument(batch_span(partition, offset, &traces))
            .await?;
        let commit_us = started.elapsed().as_micros() as u64;
        tracing::trace!(
            partition,
            checkpoint = offset,
            records = batch_len,
            rows,
            fold_us,
            commit_us,
            "batch committed"
        );
        self.checkpoint = Some(offset);
        memory::forget_settled(&mut self.replica.state, records.iter().map(|(_, record)| record));
        self.assignment.done_before(offset + 1);
        let lag_ms = written_at.map_or(0, |at| (now_ms() - at).max(0));
        metrics::LAG_SECONDS.observe(lag_ms as f64 / 1000.0);
        metrics::BATCH_ROWS.observe(rows as f64);
        if self.shared.config.target == Target::Live {
            metrics::CHECKPOINT.with_label_values(&[&partition.to_string()]).set(offset);
        }
        self.shared.progress.committed(partition, offset, lag_ms);
        Ok(())
    }
}

impl PartitionProjector {
    /// Reads back from the store the transactions `records` name that the fold forgot
    /// (`tally_core::memory`): the store holds them as of the checkpoint, which is where the
    /// fold's state is.
    async fn recall(&mut self, records: &[(i64, LogRecord)]) -> Result<(), ProjectorError> {
        let keys =
            memory::keys_named_by_events(&self.replica.state, records.iter().map(|(_, record)| record));
        if keys.is_empty() {
            return Ok(());
        }
        let (store, version) = (self.shared.config.store.clone(), self.version);
        let rows = blocking(move || Ok::<_, ProjectorError>(store.rows_named(version, &keys)?)).await?;
        memory::recall(&mut self.replica.state, rows);
        Ok(())
    }
}

/// The fold's state as of `checkpoint`: the newest usable snapshot at or before it, then the
/// log up to and including it. Returns the state, the snapshot used and the records read.
async fn restore(
    shared: Arc<Shared>,
    (version, partition): (Version, i32),
    checkpoint: i64,
) -> Result<(Replica, Option<i64>, u64), ProjectorError> {
    blocking(move || {
        let config = &shared.config;
        let resume =
            snapshot::resume_point(config.snapshots.as_deref(), &config.events, partition, checkpoint);
        let mut replica = resume.replica;
        let mut tail = LogTail::open_at(&config.kafka, &config.events, partition, resume.next)?;
        // A snapshot may lack settled transactions its processor forgot; this version's rows
        // hold every one up to the checkpoint, which is at or after the snapshot.
        let recall = |replica: &mut Replica, keys: Vec<_>| {
            memory::recall(&mut replica.state, config.store.rows_named(version, &keys)?);
            Ok::<_, StoreError>(())
        };
        tail.read_until(&shared.codec, &mut replica, checkpoint + 1, recall)??;
        Ok::<_, ProjectorError>((replica, resume.snapshot, tail.records_read()))
    })
    .await
}

/// Most traced events a batch's span names (the first as its parent, the rest as links).
const TRACES_PER_BATCH_MAX: usize = 32;

/// The span of a batch's commit, in the trace of its first traced event and linked to the
/// traces of the others, so each command's trace ends where its rows were written.
fn batch_span(partition: i32, checkpoint: i64, traces: &[opentelemetry::Context]) -> tracing::Span {
    use opentelemetry::trace::TraceContextExt;
    let span = tracing::info_span!("project batch", partition, checkpoint);
    if let Some((first, rest)) = traces.split_first() {
        let _ = span.set_parent(first.clone());
        for other in rest {
            span.add_link(other.span().span_context().clone());
        }
    }
    span
}

//! The processor: owns partitions of `commands` through a consumer group and answers each
//! command record with exactly one record in the same partition number of `events`.
//!
//! Exactly-once rests on the log, not on broker transactions (DESIGN.md section 2, and
//! [`tally_core::log`]): on assignment a partition's owner restores the state by reading the
//! events partition, appends a claim with a higher epoch and reads on to it, then resumes the
//! commands partition at the first command the log has not answered. A former owner that keeps
//! writing (a zombie) writes under a superseded epoch, which every reader ignores. Kafka's
//! committed offsets are only a lag hint: the log says where to resume.
//!
//! Partitions are owned through [`tally_kafka::PartitionGroup`]: a task per partition, fed
//! through a bounded queue.

pub mod dead_letter;
pub mod intake;
mod metrics;
mod partition;
mod schemas;
mod window;

pub use schemas::SchemaLookup;
pub use window::StateWindow;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tally_auth::producers::ProducerTenants;
use tally_auth::reload::Reloading;
use tally_codec::Codec;
use tally_kafka::RunningPartitions;
use tally_kafka::config::KafkaOptions;
use tally_kafka::topics::Topics;
use tally_kafka::{Assignment, GroupConfig, LogWriter, PartitionGroup, PartitionOwner, Producer, Record};
use tally_runtime::Handle;
use tally_store::SnapshotStore;
use tokio_util::sync::CancellationToken;

/// What a processor instance needs to know.
#[derive(Debug, Clone)]
pub struct ProcessorConfig {
    pub kafka: KafkaOptions,
    pub topics: Topics,
    /// Consumer group of all processor instances of one deployment.
    pub group_id: String,
    /// This instance's name in claims (for operators reading the log).
    pub owner: String,
    /// Most command records answered in one batch (one round trip to the broker).
    pub batch_max: usize,
    /// How often each partition looks for pending transactions past their timeout.
    pub expiry_interval: Duration,
    /// Where partitions keep snapshots of their state; `None`: always restore from offset 0.
    pub snapshots: Option<Arc<dyn SnapshotStore>>,
    /// A partition snapshots its state after this many log records ...
    pub snapshot_every: u64,
    /// ... or after this long, whichever comes first (if it wrote anything since).
    pub snapshot_interval: Duration,
    /// Which tenants each producer of the commands topic may send for; `None`: any producer,
    /// any tenant.
    pub producers: Option<Arc<Reloading<ProducerTenants>>>,
    /// Where the writer schemas of Confluent-framed commands are fetched; `None`: such records
    /// are dead-lettered as `UNKNOWN_SCHEMA`.
    pub schemas: Option<Arc<SchemaLookup>>,
    /// Which transactions and command ids stay in memory, the rest being read back from the
    /// projection when named; `None`: every one stays, for as long as the log lives.
    pub window: Option<StateWindow>,
}

impl ProcessorConfig {
    pub fn new(kafka: KafkaOptions, topics: Topics) -> Self {
        ProcessorConfig {
            kafka,
            topics,
            group_id: "tally-processor".into(),
            owner: format!("processor-{}", std::process::id()),
            batch_max: 1000,
            expiry_interval: Duration::from_millis(500),
            snapshots: None,
            snapshot_every: 10_000,
            snapshot_interval: Duration::from_secs(60),
            producers: None,
            schemas: None,
            window: None,
        }
    }
}

/// Why a partition task (or the processor) stopped; a partition task that fails starts over
/// from the log.
#[derive(Debug, thiserror::Error)]
pub enum ProcessorError {
    /// Reading, appending or producing failed.
    #[error("{0}")]
    Kafka(#[from] tally_kafka::KafkaError),
    /// The partition's state could not be restored and claimed.
    #[error("restoring: {0}")]
    Restore(String),
    /// A task on the blocking pool panicked or was cancelled.
    #[error("blocking task: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// Reading the projection (what the state forgot, or its checkpoint) failed.
    #[error("projection store: {0}")]
    Store(#[from] tally_store::StoreError),
    /// What the state forgot cannot be read back yet (see [`StateWindow`]).
    #[error("{0}")]
    Recall(String),
}

/// The newest snapshot this instance wrote for a partition (snapshot age, for metrics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotWritten {
    pub partition: i32,
    /// The last events offset it covers.
    pub covers: i64,
    pub at: std::time::SystemTime,
}

/// What every partition task of one instance shares.
struct Shared {
    config: ProcessorConfig,
    codec: Arc<Codec>,
    /// Appends answers to `events`; its producer also sends dead letters and expiry commands.
    log: LogWriter,
    restores: Arc<Mutex<Vec<Restored>>>,
    snapshots_written: Arc<Mutex<BTreeMap<i32, SnapshotWritten>>>,
}

/// How a partition was restored when this instance took it over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    pub partition: i32,
    /// The offset the snapshot it started from covers; `None`: it read the log from the start.
    pub snapshot: Option<i64>,
    /// Log records read after the snapshot (or from the start), up to and including its claim.
    pub records_read: u64,
    pub epoch: u64,
}

impl Shared {
    fn producer(&self) -> &Producer {
        self.log.producer()
    }
}

impl PartitionOwner for Shared {
    type Error = ProcessorError;

    fn own(
        self: Arc<Self>,
        assignment: Assignment,
        records: tokio::sync::mpsc::Receiver<Record>,
    ) -> impl Future<Output = Result<(), ProcessorError>> + Send + 'static {
        partition::own(self, assignment, records)
    }

    /// A partition task that failed may have failed on a producer that refuses every later
    /// record (a fatal idempotence error): it gets a new one before it restarts from the log.
    fn before_restart(&self) {
        if let Err(e) = self.producer().renew_if_failed() {
            tracing::error!("creating a new log producer: {e}");
        }
    }
}

/// Records queued per partition ahead of its task (a few batches).
const INTAKE_BATCHES: usize = 4;

/// A processor instance, built and not yet running (the service recipe:
/// [`Processor::build`], then [`Processor::run`]).
pub struct Processor {
    shared: Arc<Shared>,
    group: GroupConfig,
    status: ProcessorStatus,
}

/// What a processor reports while it runs (reachable through its [`Handle`]).
#[derive(Clone, Default)]
pub struct ProcessorStatus {
    running: RunningPartitions,
    restores: Arc<Mutex<Vec<Restored>>>,
    snapshots_written: Arc<Mutex<BTreeMap<i32, SnapshotWritten>>>,
}

impl ProcessorStatus {
    /// Partitions restored, claimed and being answered by this instance.
    pub fn running_partitions(&self) -> Vec<i32> {
        self.running.get()
    }

    /// Every restore this instance did, oldest first.
    pub fn restores(&self) -> Vec<Restored> {
        self.restores.lock().expect("not poisoned").clone()
    }

    /// The newest snapshot this instance wrote per partition (its age is a metric: restores
    /// replay everything after it).
    pub fn snapshots_written(&self) -> Vec<SnapshotWritten> {
        self.snapshots_written.lock().expect("not poisoned").values().cloned().collect()
    }
}

impl Processor {
    /// Prepares a processor: creates its log producer (nothing is joined or read yet).
    pub fn build(config: ProcessorConfig) -> Result<Processor, ProcessorError> {
        let log = LogWriter::new(Producer::log_writer(&config.kafka, "processor")?, &config.topics.events);
        let group = GroupConfig {
            kafka: config.kafka.clone(),
            topic: config.topics.commands.clone(),
            group_id: config.group_id.clone(),
            role: "processor",
            queue: INTAKE_BATCHES * config.batch_max,
        };
        let status = ProcessorStatus::default();
        let shared = Arc::new(Shared {
            config,
            codec: Arc::new(Codec::new()),
            log,
            restores: status.restores.clone(),
            snapshots_written: status.snapshots_written.clone(),
        });
        Ok(Processor { shared, group, status })
    }

    /// Joins the group and answers commands until `cancel` fires; then it stops taking
    /// commands, lets each partition finish its batch and leaves the group. Must be called
    /// within a tokio runtime (partition tasks run on it).
    pub fn run(self, cancel: CancellationToken) -> Handle<ProcessorStatus> {
        let Processor { shared, group, status } = self;
        let running = status.running.clone();
        Handle::spawn(
            "processor",
            cancel.clone(),
            status,
            PartitionGroup::serve(group, shared, running, cancel),
        )
    }
}

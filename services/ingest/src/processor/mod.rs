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

pub mod intake;
mod metrics;
mod partition;

use rdkafka::message::OwnedHeaders;
use rdkafka::message::OwnedMessage;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tally_auth::producers::ProducerTenants;
use tally_auth::reload::Reloading;
use tally_codec::Codec;
use tally_core::log::LogRecord;
use tally_kafka::config::KafkaOptions;
use tally_kafka::topics::Topics;
use tally_kafka::{Assignment, GroupConfig, PartitionGroup, PartitionOwner};
use tally_store::SnapshotStore;

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
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProcessorError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("{0}")]
    Log(#[from] tally_kafka::KafkaError),
    #[error("restoring: {0}")]
    Restore(String),
    #[error("blocking task: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("the producer was dropped before delivering")]
    Canceled,
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
    /// Replaced when it fails fatally (see [`Shared::renew_failed_producer`]).
    producer: Mutex<FutureProducer>,
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
    fn producer(&self) -> FutureProducer {
        self.producer.lock().expect("not poisoned").clone()
    }

    /// An idempotent producer that hit a fatal error (the gapless guarantee tripped, its
    /// producer id was fenced) refuses every later record. Partition tasks that used it have
    /// failed; before they restart from the log, they get a new producer (a new producer id).
    /// Whatever the failed batch left in the log is what the restarted task restores from.
    fn renew_failed_producer(&self) -> Result<(), ProcessorError> {
        use rdkafka::producer::Producer;
        let mut producer = self.producer.lock().expect("not poisoned");
        if let Some(fatal) = producer.client().fatal_error() {
            tracing::error!("the log producer failed fatally ({fatal:?}); replacing it");
            *producer = self.config.kafka.log_writer("processor").create()?;
        }
        Ok(())
    }

    /// Appends one record to an events partition; returns its offset.
    async fn append(&self, partition: i32, record: &LogRecord) -> Result<i64, ProcessorError> {
        let (key, payload) = (log_key(record), self.codec.encode_log_record(record));
        self.send(self.to_log(partition, key.as_ref(), &payload)).await
    }

    /// The events-topic record for an encoded log record.
    fn to_log<'a>(
        &'a self,
        partition: i32,
        key: Option<&'a String>,
        payload: &'a Vec<u8>,
    ) -> FutureRecord<'a, String, Vec<u8>> {
        let out = FutureRecord::to(&self.config.topics.events).partition(partition).payload(payload);
        match key {
            Some(key) => out.key(key),
            None => out,
        }
    }

    /// Appends records in order, pipelined; returns their offsets once all are durable.
    async fn append_all(
        &self,
        partition: i32,
        records: &[LogRecord],
        traces: &[Option<OwnedHeaders>],
    ) -> Result<Vec<i64>, ProcessorError> {
        let producer = self.producer();
        let mut offsets = Vec::with_capacity(records.len());
        let mut in_flight = std::collections::VecDeque::with_capacity(records.len());
        for (record, trace) in records.iter().zip(traces) {
            let (key, payload) = (log_key(record), self.codec.encode_log_record(record));
            let mut out = self.to_log(partition, key.as_ref(), &payload);
            if let Some(trace) = trace {
                out = out.headers(trace.clone());
            }
            loop {
                match producer.send_result(out) {
                    Ok(delivery) => {
                        in_flight.push_back(delivery);
                        break;
                    }
                    Err((
                        rdkafka::error::KafkaError::MessageProduction(
                            rdkafka::types::RDKafkaErrorCode::QueueFull,
                        ),
                        back,
                    )) => {
                        out = back;
                        // The local queue is full: wait for the oldest record, or for a moment.
                        match in_flight.pop_front() {
                            Some(delivery) => offsets.push(settle(delivery.await)?),
                            None => tokio::time::sleep(Duration::from_millis(5)).await,
                        };
                    }
                    Err((e, _)) => return Err(e.into()),
                }
            }
        }
        for delivery in in_flight {
            offsets.push(settle(delivery.await)?);
        }
        Ok(offsets)
    }

    /// Sends one record and waits until it is durable; returns its offset.
    async fn send(&self, record: FutureRecord<'_, String, Vec<u8>>) -> Result<i64, ProcessorError> {
        let delivery = self.producer().send(record, Timeout::Never).await;
        delivery.map(|d| d.offset).map_err(|(e, _)| e.into())
    }

    /// Copies an unprocessable command record to the dead-letter topic, reason in headers.
    async fn dead_letter(
        &self,
        message: &OwnedMessage,
        why: &intake::Unprocessable,
    ) -> Result<(), ProcessorError> {
        use rdkafka::Message;
        let payload = message.payload().unwrap_or_default().to_vec();
        let key = message.key().map(|k| String::from_utf8_lossy(k).into_owned());
        let mut out = FutureRecord::to(&self.config.topics.dead_letter)
            .payload(&payload)
            .headers(intake::dead_letter_headers(message, why));
        if let Some(key) = &key {
            out = out.key(key);
        }
        self.send(out).await.map(drop)
    }
}

impl PartitionOwner for Shared {
    type Error = ProcessorError;

    fn own(
        self: Arc<Self>,
        assignment: Assignment,
        records: tokio::sync::mpsc::Receiver<OwnedMessage>,
    ) -> impl Future<Output = Result<(), ProcessorError>> + Send + 'static {
        partition::own(self, assignment, records)
    }

    fn before_restart(&self) {
        if let Err(e) = self.renew_failed_producer() {
            tracing::error!("creating a new log producer: {e}");
        }
    }
}

/// Records queued per partition ahead of its task (a few batches).
const INTAKE_BATCHES: usize = 4;

/// The offset of one delivered record (the future's error type is the producer's channel closing).
fn settle<Closed>(
    delivery: Result<rdkafka::producer::future_producer::OwnedDeliveryResult, Closed>,
) -> Result<i64, ProcessorError> {
    match delivery {
        Ok(Ok(delivery)) => Ok(delivery.offset),
        Ok(Err((e, _))) => Err(e.into()),
        Err(_) => Err(ProcessorError::Canceled),
    }
}

/// Events are keyed like their commands (`tenant/stream`), so consumers of other teams can
/// partition by stream too. Claims and markers have no key.
fn log_key(record: &LogRecord) -> Option<String> {
    match record {
        LogRecord::Event { event, .. } => Some(event.kafka_key()),
        LogRecord::Claim { .. } | LogRecord::DeadLettered { .. } => None,
    }
}

/// A running processor instance.
pub struct Processor {
    group: PartitionGroup,
    restores: Arc<Mutex<Vec<Restored>>>,
    snapshots_written: Arc<Mutex<BTreeMap<i32, SnapshotWritten>>>,
}

impl Processor {
    /// Joins the group and starts answering commands. Must be called within a tokio runtime
    /// (partition tasks run on it).
    pub fn start(config: ProcessorConfig) -> Result<Processor, ProcessorError> {
        let producer = Mutex::new(config.kafka.log_writer("processor").create()?);
        let restores = Arc::new(Mutex::new(Vec::new()));
        let group = GroupConfig {
            kafka: config.kafka.clone(),
            topic: config.topics.commands.clone(),
            group_id: config.group_id.clone(),
            role: "processor",
            queue: INTAKE_BATCHES * config.batch_max,
        };
        let snapshots_written = Arc::new(Mutex::new(BTreeMap::new()));
        let shared = Arc::new(Shared {
            config,
            codec: Arc::new(Codec::new()),
            producer,
            restores: restores.clone(),
            snapshots_written: snapshots_written.clone(),
        });
        Ok(Processor { group: PartitionGroup::join(group, shared)?, restores, snapshots_written })
    }

    /// Partitions restored, claimed and being answered by this instance.
    pub fn running_partitions(&self) -> Vec<i32> {
        self.group.running_partitions()
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

    /// Stops taking commands, lets each partition finish its batch, leaves the group.
    pub async fn stop(self) {
        self.group.stop().await;
    }
}

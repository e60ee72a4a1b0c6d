//! # tally-kafka
//!
//! Everything Tally says to Kafka goes through rdkafka, configured here with every option that
//! matters for correctness set explicitly ([`config`]). This is the only crate that names
//! librdkafka's types: the services see [`Record`]s, [`Headers`] and Tally's own readers and
//! writers. Here: topic administration ([`topics`]), the in-process Kafka-API broker used by
//! tests and `tally dev` ([`EmbeddedBroker`]), partition ownership through a consumer group
//! ([`group`]), sending records ([`Producer`]), appending to the events log ([`LogWriter`]),
//! reading topics ([`TopicReader`]) and the events log ([`LogTail`]), and trace context in
//! headers ([`trace_context`]).

pub mod config;
mod embedded;
pub mod group;
mod log_tail;
mod log_writer;
mod producer;
mod record;
pub mod topics;
pub mod trace_context;

pub use embedded::{BrokerStorage, EmbeddedBroker};
pub use group::{Assignment, GroupConfig, PartitionGroup, PartitionOwner, RunningPartitions};
pub use log_tail::{LogRead, LogTail, Start, TopicReader};
pub use log_writer::LogWriter;
pub use producer::{Delivered, Producer};
pub use record::{Headers, Outgoing, Record};

/// A client kept for readiness checks: whether the cluster answers a metadata request.
pub struct BrokerCheck(rdkafka::producer::BaseProducer);

impl BrokerCheck {
    pub fn new(kafka: &config::KafkaOptions) -> Result<BrokerCheck, KafkaError> {
        Ok(BrokerCheck(kafka.producer("health").create()?))
    }

    /// Asks the cluster for its metadata, waiting up to `timeout` (blocks: call it off the
    /// async workers).
    pub fn check(&self, timeout: std::time::Duration) -> Result<(), KafkaError> {
        use rdkafka::producer::Producer as _;
        self.0.client().fetch_metadata(None, timeout)?;
        Ok(())
    }
}

/// Kafka plumbing errors.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error("kafka client: {0}")]
    Client(#[from] rdkafka::error::KafkaError),
    #[error("topic {topic}: has {actual} partitions, configuration says {expected}")]
    PartitionMismatch { topic: String, expected: i32, actual: i32 },
    /// An existing topic that must keep every record is configured to delete or compact some.
    #[error(
        "topic {topic}: {setting}={value} would lose records ({why}); Tally refuses to run on it. \
         Set {setting} so that it keeps every record (retention.ms=-1, retention.bytes=-1, \
         cleanup.policy=delete), e.g. with kafka-configs.sh --alter --entity-type topics \
         --entity-name {topic} --add-config ..."
    )]
    LosesRecords { topic: String, setting: String, value: String, why: String },
    #[error("topic {topic}: {message}")]
    Topic { topic: String, message: String },
    #[error("embedded broker: {0}")]
    Broker(String),
    #[error("consumer group: {0}")]
    Group(String),
    #[error("reading the log: {0}")]
    Stalled(String),
    #[error("the producer was dropped before delivering")]
    Canceled,
}

//! # tally-kafka
//!
//! Everything Tally says to Kafka goes through rdkafka, configured here with every option that
//! matters for correctness set explicitly ([`config`]). Also: topic administration ([`topics`]),
//! the in-process Kafka-API broker used by tests and `tally dev` ([`EmbeddedBroker`]),
//! partition ownership through a consumer group ([`group`]) and reading one partition of the
//! events log into a replica ([`LogTail`]).

pub mod config;
mod embedded;
pub mod group;
mod log_tail;
pub mod topics;
pub mod trace_context;

pub use embedded::{BrokerStorage, EmbeddedBroker};
pub use group::{Assignment, GroupConfig, PartitionGroup, PartitionOwner};
pub use log_tail::LogTail;

/// Runs blocking work (librdkafka's consumer calls, store I/O) on tokio's blocking pool, off
/// the async workers.
pub async fn blocking<T, E>(f: impl FnOnce() -> Result<T, E> + Send + 'static) -> Result<T, E>
where
    T: Send + 'static,
    E: From<tokio::task::JoinError> + Send + 'static,
{
    tokio::task::spawn_blocking(f).await?
}

/// Milliseconds since the Unix epoch: the clock of Kafka's record timestamps and of the times
/// the processor decides at.
pub fn now_ms() -> i64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or(std::time::Duration::ZERO);
    since_epoch.as_millis() as i64
}

/// Kafka plumbing errors.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error("kafka client: {0}")]
    Client(#[from] rdkafka::error::KafkaError),
    #[error("topic {topic}: has {actual} partitions, configuration says {expected}")]
    PartitionMismatch { topic: String, expected: i32, actual: i32 },
    #[error("topic {topic}: {message}")]
    Topic { topic: String, message: String },
    #[error("embedded broker: {0}")]
    Broker(String),
    #[error("consumer group: {0}")]
    Group(String),
    #[error("reading the log: {0}")]
    Stalled(String),
}

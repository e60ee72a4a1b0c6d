//! # tally-kafka
//!
//! Everything Tally says to Kafka goes through rdkafka, configured here with every option that
//! matters for correctness set explicitly ([`config`]). Also: topic administration ([`topics`])
//! and the in-process Kafka-API broker used by tests and `tally dev` ([`EmbeddedBroker`]).

pub mod config;
mod embedded;
pub mod topics;

pub use embedded::{BrokerStorage, EmbeddedBroker};

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
}

//! Where the topics are and how they are laid out: the flags every Kafka-facing subcommand
//! shares, and creating or checking the topics at start.

use anyhow::Context;
use tally_kafka::config::KafkaOptions;
use tally_kafka::topics::{Topics, ensure_topics};

/// Where the topics are and how they are laid out; shared by `tally dev`, `tally ingest` and
/// `tally project`.
#[derive(clap::Args, Debug, Clone)]
pub struct TopicOptions {
    /// Prefix of the topic names (`<prefix>commands`, `<prefix>events`, `<prefix>dead-letter`).
    #[arg(long, default_value = "tally.", env = "TALLY_TOPIC_PREFIX")]
    pub topic_prefix: String,
    /// Partitions of each topic (the unit of parallelism; cannot be changed later). Topics that
    /// exist with another count are a start-up error.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(i32).range(1..=1024), env = "TALLY_PARTITIONS")]
    pub partitions: i32,
    /// Replication factor of topics Tally creates.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..=16), env = "TALLY_REPLICATION")]
    pub replication: i32,
}

/// Creates missing topics and refuses mismatched ones; returns their names.
pub async fn ensure(kafka: &KafkaOptions, topics: &TopicOptions) -> anyhow::Result<Topics> {
    let names = Topics::with_prefix(&topics.topic_prefix);
    ensure_topics(kafka, &names.specs(topics.partitions, topics.replication))
        .await
        .with_context(|| format!("checking topics on {}", kafka.bootstrap_servers))?;
    Ok(names)
}

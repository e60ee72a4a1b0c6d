//! `tally ingest`: the ingest service against a Kafka cluster (the processor; the HTTP front
//! door joins it here).

use anyhow::Context;
use std::time::Duration;
use tally_ingest::processor::{Processor, ProcessorConfig};
use tally_kafka::config::KafkaOptions;
use tally_kafka::topics::{Topics, ensure_topics};

/// Where the topics are and how they are laid out; shared by `tally dev` and `tally ingest`.
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

/// How the processor runs.
#[derive(clap::Args, Debug, Clone)]
pub struct ProcessorOptions {
    /// Consumer group shared by every processor instance of a deployment.
    #[arg(long, default_value = "tally-processor", env = "TALLY_PROCESSOR_GROUP")]
    pub processor_group: String,
    /// Most command records answered in one batch.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000), env = "TALLY_BATCH_MAX")]
    pub batch_max: u32,
    /// How often (milliseconds) each partition looks for pending transactions past their timeout.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(10..=60_000), env = "TALLY_EXPIRY_INTERVAL_MS")]
    pub expiry_interval_ms: u64,
}

#[derive(clap::Args, Debug)]
pub struct IngestOptions {
    /// Kafka bootstrap servers.
    #[arg(long, env = "TALLY_KAFKA")]
    kafka: String,
    #[command(flatten)]
    topics: TopicOptions,
    #[command(flatten)]
    processor: ProcessorOptions,
}

/// Creates missing topics, refuses mismatched ones, and starts the processor.
pub async fn start_processor(
    kafka: &KafkaOptions,
    topics: &TopicOptions,
    options: &ProcessorOptions,
) -> anyhow::Result<(Topics, Processor)> {
    let names = Topics::with_prefix(&topics.topic_prefix);
    ensure_topics(&kafka.admin(), &names.specs(topics.partitions, topics.replication))
        .await
        .with_context(|| format!("checking topics on {}", kafka.bootstrap_servers))?;
    let mut config = ProcessorConfig::new(kafka.clone(), names.clone());
    config.group_id = options.processor_group.clone();
    config.batch_max = options.batch_max as usize;
    config.expiry_interval = Duration::from_millis(options.expiry_interval_ms);
    let processor = Processor::start(config).context("starting the processor")?;
    Ok((names, processor))
}

pub async fn run(opts: IngestOptions) -> anyhow::Result<()> {
    let kafka = KafkaOptions::new(&opts.kafka);
    let (topics, processor) = start_processor(&kafka, &opts.topics, &opts.processor).await?;
    tracing::info!(commands = %topics.commands, events = %topics.events, "ingest running");
    crate::shutdown::signal().await;
    processor.stop().await;
    Ok(())
}

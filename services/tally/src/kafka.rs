//! Where the topics are and how they are laid out: the flags every Kafka-facing subcommand
//! shares, and creating or checking the topics at start.

use anyhow::Context;
use tally_kafka::config::KafkaOptions;
use tally_kafka::topics::{
    DEFAULT_COMMANDS_RETENTION_MS, DEFAULT_DEAD_LETTER_RETENTION_MS, TopicLayout, TopicSpec, Topics,
    UNLIMITED, ensure_topics,
};

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
    /// `min.insync.replicas` of topics Tally creates: replicas that must have a record before a
    /// write is acknowledged. Default: one below the replication factor, at least 1 (2 of 3).
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..=16), env = "TALLY_MIN_INSYNC_REPLICAS")]
    pub min_insync_replicas: Option<i32>,
    /// `retention.ms` of the commands topic Tally creates (-1: forever). The events topic always
    /// keeps every record.
    #[arg(long, default_value_t = DEFAULT_COMMANDS_RETENTION_MS, value_parser = retention_ms, allow_negative_numbers = true, env = "TALLY_COMMANDS_RETENTION_MS")]
    pub commands_retention_ms: i64,
    /// `retention.ms` of the dead-letter topic Tally creates (-1: forever).
    #[arg(long, default_value_t = DEFAULT_DEAD_LETTER_RETENTION_MS, value_parser = retention_ms, allow_negative_numbers = true, env = "TALLY_DEAD_LETTER_RETENTION_MS")]
    pub dead_letter_retention_ms: i64,
}

/// A retention: -1 (forever) or a positive number of milliseconds.
fn retention_ms(text: &str) -> Result<i64, String> {
    match text.trim().parse::<i64>() {
        Ok(ms) if ms == UNLIMITED || ms > 0 => Ok(ms),
        _ => Err(format!("{text:?} is not -1 (forever) or a positive number of milliseconds")),
    }
}

impl TopicOptions {
    /// The layout these flags describe; a `min.insync.replicas` above the replication factor
    /// is refused (every acknowledged write would fail).
    pub fn layout(&self) -> anyhow::Result<TopicLayout> {
        let mut layout = TopicLayout::new(self.partitions, self.replication);
        if let Some(min_insync) = self.min_insync_replicas {
            anyhow::ensure!(
                min_insync <= self.replication,
                "--min-insync-replicas {min_insync} is above --replication {}: no write could be acknowledged",
                self.replication
            );
            layout.min_insync_replicas = min_insync;
        }
        layout.commands_retention_ms = self.commands_retention_ms;
        layout.dead_letter_retention_ms = self.dead_letter_retention_ms;
        Ok(layout)
    }
}

/// Which broker the topics are on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broker {
    /// A Kafka cluster.
    Kafka,
    /// `tally dev`'s in-process broker ([`TopicSpec::for_in_process_broker`]).
    InProcess,
}

/// Creates missing topics with their configuration, refuses mismatched ones (another partition
/// count, an `events` topic that would lose records); returns their names.
pub async fn ensure(kafka: &KafkaOptions, topics: &TopicOptions, broker: Broker) -> anyhow::Result<Topics> {
    let names = Topics::with_prefix(&topics.topic_prefix);
    let mut specs = names.specs(&topics.layout()?);
    if broker == Broker::InProcess {
        specs = specs.into_iter().map(TopicSpec::for_in_process_broker).collect();
    }
    ensure_topics(kafka, &specs)
        .await
        .with_context(|| format!("checking topics on {}", kafka.bootstrap_servers))?;
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        topics: TopicOptions,
    }

    fn parse(args: &[&str]) -> Result<TopicOptions, clap::Error> {
        Cli::try_parse_from([&["tally"], args].concat()).map(|cli| cli.topics)
    }

    #[test]
    fn retention_is_minus_one_or_positive_and_min_insync_at_most_the_replication() {
        assert_eq!(parse(&["--commands-retention-ms", "-1"]).unwrap().commands_retention_ms, -1);
        assert_eq!(parse(&["--dead-letter-retention-ms", "-1"]).unwrap().dead_letter_retention_ms, -1);
        for bad in ["0", "-5", "abc", ""] {
            assert!(parse(&["--commands-retention-ms", bad]).is_err(), "{bad:?}");
        }
        assert_eq!(parse(&["--replication", "3"]).unwrap().layout().unwrap().min_insync_replicas, 2);
        assert_eq!(parse(&[]).unwrap().layout().unwrap().min_insync_replicas, 1);
        let above = parse(&["--replication", "1", "--min-insync-replicas", "2"]).unwrap();
        assert!(above.layout().is_err());
    }
}

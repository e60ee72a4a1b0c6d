//! The sink runner in `tally dev` and `tally project` (it runs where the store is): its flags,
//! and starting it with its admin routes (`/admin/destinations`).

use crate::runner::Runner;
use anyhow::Context;
use std::sync::Arc;
use std::time::Duration;
use tally_kafka::config::KafkaOptions;
use tally_kafka::topics::Topics;
use tally_registry::SchemaRegistry;
use tally_sink::api::Destinations;
use tally_sink::{SinkConfig, SinkRunner};
use tally_store::{SinkStore, SnapshotStore, Store};

/// How the sink runner delivers; shared by `tally dev` and `tally project`.
#[derive(clap::Args, Debug, Clone)]
pub struct SinkOptions {
    /// Consumer group shared by every sink runner of the deployment (each events partition's
    /// destinations are served by one member).
    #[arg(long, default_value = "tally-sink", env = "TALLY_SINK_GROUP")]
    pub sink_group: String,
    /// Let webhooks go to loopback, private and link-local addresses, and over plain http to
    /// them (a laptop, tests). Off, such URLs are refused, and so are host names that resolve
    /// to such addresses when a delivery connects.
    #[arg(long, env = "TALLY_SINK_ALLOW_PRIVATE_WEBHOOKS")]
    pub sink_allow_private_webhooks: bool,
    /// Bound on one delivery attempt (milliseconds).
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(100..=60_000), env = "TALLY_SINK_ATTEMPT_TIMEOUT_MS")]
    pub sink_attempt_timeout_ms: u64,
    /// Wait after an event's first failed attempt (milliseconds); it doubles per failure, with
    /// jitter, up to --sink-backoff-max-ms.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=600_000), env = "TALLY_SINK_BACKOFF_BASE_MS")]
    pub sink_backoff_base_ms: u64,
    /// Longest wait between two attempts at one event (milliseconds).
    #[arg(long, default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(1..=3_600_000), env = "TALLY_SINK_BACKOFF_MAX_MS")]
    pub sink_backoff_max_ms: u64,
    /// How often each owned partition re-reads the destinations (milliseconds): changes made
    /// through the API take effect within this.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..=60_000), env = "TALLY_SINK_REFRESH_MS")]
    pub sink_refresh_ms: u64,
}

/// Starts the sink runner over the events topic of `topics` (named with `topic_prefix`) on
/// `runner`; returns the destinations' admin routes (which register Avro destination topics'
/// subjects with `registry`, when one is configured).
pub fn start_sink(
    runner: &mut Runner,
    kafka: &KafkaOptions,
    topics: &Topics,
    topic_prefix: &str,
    options: &SinkOptions,
    store: Arc<dyn Store>,
    registry: Option<SchemaRegistry>,
) -> anyhow::Result<Destinations> {
    let events = topics.events.as_str();
    let snapshots: Arc<dyn SnapshotStore> = store.clone();
    let store: Arc<dyn SinkStore> = store;
    let config = SinkConfig {
        snapshots: Some(snapshots),
        group_id: options.sink_group.clone(),
        refresh: Duration::from_millis(options.sink_refresh_ms),
        attempt_timeout: Duration::from_millis(options.sink_attempt_timeout_ms),
        backoff_base: Duration::from_millis(options.sink_backoff_base_ms),
        backoff_max: Duration::from_millis(options.sink_backoff_max_ms.max(options.sink_backoff_base_ms)),
        private_webhooks: options.sink_allow_private_webhooks,
        ..SinkConfig::new(kafka.clone(), events, store.clone())
    };
    let sink = SinkRunner::build(config).context("building the sink runner")?;
    runner.start(|cancel| sink.run(cancel));
    let private = options.sink_allow_private_webhooks;
    Ok(Destinations::new(store, private, kafka.clone(), topics.clone(), topic_prefix, registry))
}

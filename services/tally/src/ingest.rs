//! `tally ingest`: the ingest service against a Kafka cluster: the processor and the HTTP front
//! door.

use crate::auth::AuthOptions;
use crate::health::Health;
use crate::project::{ProjectorOptions, start_projector};
use crate::query::{QueryOptions, start_query};
use anyhow::Context;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tally_auth::keys::KeyRing;
use tally_ingest::http::{Front, HttpConfig};
use tally_ingest::outcomes::{Outcomes, watch};
use tally_ingest::processor::{Processor, ProcessorConfig};
use tally_kafka::config::KafkaOptions;
use tally_kafka::topics::{Topics, ensure_topics};
use tally_store::SnapshotStore;
use tokio_util::sync::CancellationToken;

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
    /// A partition snapshots its state (to restore from later) after this many log records;
    /// 0 never snapshots.
    #[arg(long, default_value_t = 10_000, env = "TALLY_SNAPSHOT_EVERY")]
    pub snapshot_every: u64,
    /// ... or after this many milliseconds, whichever comes first.
    #[arg(long, default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(100..=86_400_000), env = "TALLY_SNAPSHOT_INTERVAL_MS")]
    pub snapshot_interval_ms: u64,
    #[command(flatten)]
    pub producers: crate::auth::ProducerOptions,
}

/// The HTTP front door.
#[derive(clap::Args, Debug, Clone)]
pub struct HttpOptions {
    /// Address of the HTTP front door.
    #[arg(long, default_value = "127.0.0.1:8080", env = "TALLY_HTTP_LISTEN")]
    pub http_listen: std::net::SocketAddr,
    /// How long (milliseconds) a request waits for its answer before replying 202.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..=60_000), env = "TALLY_HTTP_WAIT_MS")]
    pub http_wait_ms: u64,
    /// Recent outcomes kept in memory for polling (`GET /v1/commands/{id}`).
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000), env = "TALLY_OUTCOMES_KEPT")]
    pub outcomes_kept: u64,
}

/// The front door's routes, and the outcome watcher they answer from (it runs until `stop`).
pub fn front_door(
    kafka: &KafkaOptions,
    topics: &Topics,
    partitions: i32,
    options: &HttpOptions,
    snapshots: Option<Arc<dyn SnapshotStore>>,
    stop: CancellationToken,
) -> anyhow::Result<(axum::Router, std::thread::JoinHandle<()>)> {
    let outcomes = Outcomes::new(options.outcomes_kept as usize);
    let events = topics.events.clone();
    let watcher = watch(kafka.clone(), events, partitions, outcomes.clone(), snapshots, stop);
    let producer = kafka.producer("http").create().context("creating the HTTP producer")?;
    let config = HttpConfig { wait: Duration::from_millis(options.http_wait_ms), ..HttpConfig::default() };
    Ok((Front::new(producer, topics.commands.clone(), outcomes, config).router(), watcher))
}

/// Everything the ingest service takes; shared by `tally dev` and `tally ingest`.
#[derive(clap::Args, Debug, Clone)]
pub struct ServiceOptions {
    #[command(flatten)]
    pub topics: TopicOptions,
    #[command(flatten)]
    pub processor: ProcessorOptions,
    #[command(flatten)]
    pub http: HttpOptions,
    #[command(flatten)]
    pub store: crate::store::StoreOptions,
    /// Longest wait (milliseconds) of a consumer's fetch at the broker. Kafka answers as soon as
    /// records arrive; the in-process broker polls, which adds up to about half this value per
    /// hop (5 is a good value for `tally dev`; each idle consumer then fetches ~200 times/s).
    #[arg(long, default_value_t = tally_kafka::config::DEFAULT_FETCH_WAIT_MS, value_parser = clap::value_parser!(u32).range(1..=10_000), env = "TALLY_KAFKA_FETCH_WAIT_MS")]
    pub kafka_fetch_wait_ms: u32,
    #[command(flatten)]
    pub shutdown: crate::shutdown::ShutdownOptions,
    #[command(flatten)]
    pub auth: AuthOptions,
}

#[derive(clap::Args, Debug)]
pub struct IngestOptions {
    /// Kafka bootstrap servers.
    #[arg(long, env = "TALLY_KAFKA")]
    kafka: String,
    /// Keep the embedded store (snapshots) in `DIR/store/tally.redb`; without it, in memory
    /// (with --store embedded).
    #[arg(long, env = "TALLY_DATA_DIR")]
    data_dir: Option<std::path::PathBuf>,
    #[command(flatten)]
    service: ServiceOptions,
}

/// Creates missing topics and refuses mismatched ones; returns their names.
pub async fn ensure(kafka: &KafkaOptions, topics: &TopicOptions) -> anyhow::Result<Topics> {
    let names = Topics::with_prefix(&topics.topic_prefix);
    ensure_topics(&kafka.admin(), &names.specs(topics.partitions, topics.replication))
        .await
        .with_context(|| format!("checking topics on {}", kafka.bootstrap_servers))?;
    Ok(names)
}

/// Creates missing topics, refuses mismatched ones, and starts the processor.
pub async fn start_processor(
    kafka: &KafkaOptions,
    topics: &TopicOptions,
    options: &ProcessorOptions,
    snapshots: Option<Arc<dyn SnapshotStore>>,
    stop: &CancellationToken,
) -> anyhow::Result<(Topics, Processor)> {
    let names = ensure(kafka, topics).await?;
    let mut config = ProcessorConfig::new(kafka.clone(), names.clone());
    config.group_id = options.processor_group.clone();
    config.batch_max = options.batch_max as usize;
    config.expiry_interval = Duration::from_millis(options.expiry_interval_ms);
    config.producers = options.producers.allow_list(stop).await?;
    if options.snapshot_every > 0 {
        config.snapshots = snapshots;
        config.snapshot_every = options.snapshot_every;
        config.snapshot_interval = Duration::from_millis(options.snapshot_interval_ms);
    }
    let processor = Processor::start(config).context("starting the processor")?;
    Ok((names, processor))
}

/// Runs the processor, the HTTP front door and, when `read_side` is given, the projector and
/// the query API (all sharing one store) until Ctrl-C or SIGTERM; `ready` is told the topics
/// once all are up. `dev_key` is accepted when no credentials are configured.
pub async fn serve(
    bootstrap: &str,
    opts: &ServiceOptions,
    read_side: Option<(&ProjectorOptions, &QueryOptions)>,
    data_dir: Option<&Path>,
    dev_key: Option<KeyRing>,
    ready: impl FnOnce(&Topics),
) -> anyhow::Result<()> {
    let kafka = &KafkaOptions { fetch_wait_ms: opts.kafka_fetch_wait_ms, ..KafkaOptions::new(bootstrap) };
    let stop = CancellationToken::new();
    let security = opts.auth.security(dev_key, &stop).await?;
    let store = crate::store::open(&opts.store, data_dir).await?;
    let snapshots: Arc<dyn SnapshotStore> = store.clone();
    let (topics, processor) =
        start_processor(kafka, &opts.topics, &opts.processor, Some(snapshots.clone()), &stop).await?;
    let mut extra = Health::new().with_broker(kafka)?.with_store(store.clone()).router();
    let (projector, query) = match read_side {
        Some((projector, query)) => {
            let (projector, admin) =
                start_projector(kafka, &opts.topics, &topics.events, projector, store.clone())?;
            extra = extra.merge(admin.router());
            let query = start_query(query, store, &security, stop.clone()).await?;
            (Some(projector), Some(query))
        }
        None => (None, None),
    };
    let partitions = opts.topics.partitions;
    let (front, watcher) = front_door(kafka, &topics, partitions, &opts.http, Some(snapshots), stop.clone())?;
    let http = security.listen("http", opts.http.http_listen, front.merge(extra), stop.clone()).await?;
    ready(&topics);
    crate::shutdown::signal().await;
    let stopping = async {
        stop.cancel();
        let _ = http.await;
        let _ = tokio::task::spawn_blocking(move || watcher.join()).await;
        if let Some(query) = query {
            let _ = query.await;
        }
        processor.stop().await;
        if let Some(projector) = projector {
            projector.stop().await;
        }
    };
    opts.shutdown.within(stopping).await
}

pub async fn run(opts: IngestOptions) -> anyhow::Result<()> {
    serve(&opts.kafka, &opts.service, None, opts.data_dir.as_deref(), None, |topics| {
        tracing::info!(commands = %topics.commands, events = %topics.events, "ingest running");
    })
    .await
}

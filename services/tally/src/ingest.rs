//! `tally ingest`: the ingest service against a Kafka cluster: the processor, the outcome
//! watcher and the HTTP front door.

use crate::auth::AuthOptions;
use crate::health::Health;
use crate::kafka::{Broker, TopicOptions, ensure};
use crate::runner::Runner;
use anyhow::Context;
use std::sync::Arc;
use std::time::Duration;
use tally_ingest::http::{Front, HttpConfig};
use tally_ingest::outcomes::{OutcomeWatcher, Outcomes};
use tally_ingest::processor::{Processor, ProcessorConfig, StateWindow};
use tally_kafka::Producer;
use tally_kafka::config::KafkaOptions;
use tally_kafka::topics::Topics;
use tally_store::{SnapshotStore, Store};
use tokio_util::sync::CancellationToken;

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
    /// Transactions and command ids changed within the newest this-many events of a partition
    /// stay in the processor's memory; older ones that the live projection (in the same store)
    /// covers are dropped, and read back from it when a command names them, so memory does not
    /// grow with every command. 0 keeps every one in memory for as long as the log lives.
    #[arg(long, default_value_t = 100_000, env = "TALLY_STATE_WINDOW")]
    pub state_window: u64,
    #[command(flatten)]
    pub producers: crate::auth::ProducerOptions,
    #[command(flatten)]
    pub registry: crate::registry::RegistryOptions,
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
    #[command(flatten)]
    grpc: crate::query::GrpcOptions,
}

impl ProcessorOptions {
    /// The processor these flags describe, over `topics` (its producer allow-list, if any, is
    /// re-read until `reload` fires).
    async fn build(
        &self,
        kafka: &KafkaOptions,
        topics: &Topics,
        store: Arc<dyn Store>,
        reload: &CancellationToken,
    ) -> anyhow::Result<Processor> {
        let mut config = ProcessorConfig::new(kafka.clone(), topics.clone());
        config.group_id = self.processor_group.clone();
        config.batch_max = self.batch_max as usize;
        config.expiry_interval = Duration::from_millis(self.expiry_interval_ms);
        config.producers = self.producers.allow_list(reload).await?;
        config.schemas = self.registry.lookup(topics).await?;
        if self.state_window > 0 {
            config.window = Some(StateWindow { projections: store.clone(), events: self.state_window });
        }
        if self.snapshot_every > 0 {
            config.snapshots = Some(store);
            config.snapshot_every = self.snapshot_every;
            config.snapshot_interval = Duration::from_millis(self.snapshot_interval_ms);
        }
        Processor::build(config).context("building the processor")
    }
}

/// Starts the write side on `runner`: the processor, then the outcome watcher. Returns the
/// front door's routes, which answer from that watcher; the caller serves them last, with
/// whatever else shares their listener.
pub async fn start_write_side(
    runner: &mut Runner,
    kafka: &KafkaOptions,
    opts: &ServiceOptions,
    topics: &Topics,
    store: Arc<dyn Store>,
    reload: &CancellationToken,
) -> anyhow::Result<axum::Router> {
    let processor = opts.processor.build(kafka, topics, store.clone(), reload).await?;
    let snapshots: Arc<dyn SnapshotStore> = store;
    runner.start(|cancel| processor.run(cancel));
    let outcomes = Outcomes::new(opts.http.outcomes_kept as usize);
    let (events, partitions) = (topics.events.clone(), opts.topics.partitions);
    let watcher = OutcomeWatcher::build(kafka.clone(), events, partitions, outcomes.clone(), Some(snapshots));
    runner.start(|cancel| watcher.run(cancel));
    let producer = Producer::new(kafka, "http").context("creating the HTTP producer")?;
    let config = HttpConfig { wait: Duration::from_millis(opts.http.http_wait_ms), ..HttpConfig::default() };
    Ok(Front::new(producer, topics.commands.clone(), outcomes, config).router())
}

impl ServiceOptions {
    /// The Kafka client settings these flags describe, for the cluster at `bootstrap`.
    pub fn kafka(&self, bootstrap: &str) -> KafkaOptions {
        KafkaOptions { fetch_wait_ms: self.kafka_fetch_wait_ms, ..KafkaOptions::new(bootstrap) }
    }
}

/// Runs the processor, the outcome watcher and the front door until Ctrl-C or SIGTERM.
pub async fn run(opts: IngestOptions) -> anyhow::Result<()> {
    let service = &opts.service;
    let kafka = service.kafka(&opts.kafka);
    let reload = CancellationToken::new();
    let _stop_reloading = reload.clone().drop_guard();
    let mut runner = Runner::new(&service.shutdown);
    let started = async {
        let security = service.auth.security(None, &reload).await?;
        let store = crate::store::open(&service.store, opts.data_dir.as_deref()).await?;
        let topics = ensure(&kafka, &service.topics, Broker::Kafka).await?;
        let front = start_write_side(&mut runner, &kafka, service, &topics, store.clone(), &reload).await?;
        let health = Health::new().with_broker(&kafka)?.with_store(store).router();
        if let Some(address) = opts.grpc.grpc_listen {
            let grpc = security.grpc(address, Some(front.clone()), None).await?;
            runner.start(|cancel| grpc.run(cancel));
        }
        let http = security.server("http", service.http.http_listen, front.merge(health)).await?;
        runner.start(|cancel| http.run(cancel));
        tracing::info!(commands = %topics.commands, events = %topics.events, "ingest running");
        Ok(())
    }
    .await;
    runner.run_until(started, crate::shutdown::signal()).await
}

//! `tally project`: the projector service against a Kafka cluster: folds `events` into the
//! projections, serves the query API over them, and runs the sink runner (whose destinations
//! live in the same store).

use crate::kafka::{Broker, TopicOptions, ensure};
use crate::projections::Admin;
use crate::runner::Runner;
use anyhow::Context;
use std::sync::Arc;
use tally_kafka::config::KafkaOptions;
use tally_projector::{Projector, ProjectorConfig};
use tally_store::{SnapshotStore, Store};
use tokio_util::sync::CancellationToken;

/// How the projector runs; shared by `tally dev` and `tally project`.
#[derive(clap::Args, Debug, Clone)]
pub struct ProjectorOptions {
    /// Consumer group shared by every projector instance writing the same projections.
    #[arg(long, default_value = "tally-projector", env = "TALLY_PROJECTOR_GROUP")]
    pub projector_group: String,
    /// Most events folded into one store commit.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000), env = "TALLY_PROJECTOR_BATCH_MAX")]
    pub projector_batch_max: u32,
}

#[derive(clap::Args, Debug)]
pub struct ProjectOptions {
    /// Kafka bootstrap servers.
    #[arg(long, env = "TALLY_KAFKA")]
    kafka: String,
    /// Keep the projections in `DIR/store/tally.redb`; without it, in memory (with --store
    /// embedded). The embedded store belongs to one process: give each its own directory.
    #[arg(long, env = "TALLY_DATA_DIR")]
    data_dir: Option<std::path::PathBuf>,
    #[command(flatten)]
    topics: TopicOptions,
    #[command(flatten)]
    projector: ProjectorOptions,
    #[command(flatten)]
    store: crate::store::StoreOptions,
    #[command(flatten)]
    query: crate::query::QueryOptions,
    #[command(flatten)]
    grpc: crate::query::GrpcOptions,
    #[command(flatten)]
    sink: crate::sink::SinkOptions,
    #[command(flatten)]
    registry: crate::registry::RegistryOptions,
    #[command(flatten)]
    shutdown: crate::shutdown::ShutdownOptions,
    #[command(flatten)]
    auth: crate::auth::AuthOptions,
    /// Address of the admin routes (`tally projections --url http://ADDR`; they need the admin
    /// role).
    #[arg(long, default_value = "127.0.0.1:8081", env = "TALLY_ADMIN_LISTEN")]
    admin_listen: std::net::SocketAddr,
    /// Longest wait (milliseconds) of a consumer's fetch at the broker (see `tally ingest`).
    #[arg(long, default_value_t = tally_kafka::config::DEFAULT_FETCH_WAIT_MS, value_parser = clap::value_parser!(u32).range(1..=10_000), env = "TALLY_KAFKA_FETCH_WAIT_MS")]
    kafka_fetch_wait_ms: u32,
}

/// Starts projecting `events` into `store` on `runner`, restoring from the snapshots in it;
/// returns the projector's admin routes.
pub fn start_projector(
    runner: &mut Runner,
    kafka: &KafkaOptions,
    topics: &TopicOptions,
    events: &str,
    options: &ProjectorOptions,
    store: Arc<dyn Store>,
) -> anyhow::Result<Admin> {
    let mut config = ProjectorConfig::new(kafka.clone(), events, store.clone());
    config.group_id = options.projector_group.clone();
    config.batch_max = options.projector_batch_max as usize;
    config.snapshots = Some(store as Arc<dyn SnapshotStore>);
    let projector = Projector::build(config.clone()).context("building the projector")?;
    let status = runner.start(|cancel| projector.run(cancel));
    Ok(Admin::new(status.progress_view(), config, topics.partitions))
}

/// Runs the projector, the query API and the admin routes until Ctrl-C or SIGTERM.
pub async fn run(opts: ProjectOptions) -> anyhow::Result<()> {
    let reload = CancellationToken::new();
    let _stop_reloading = reload.clone().drop_guard();
    let mut runner = Runner::new(&opts.shutdown);
    let started = async {
        // Credentials first: a process that could serve no request stops before touching Kafka.
        let security = opts.auth.security(None, &reload).await?;
        let kafka =
            KafkaOptions { fetch_wait_ms: opts.kafka_fetch_wait_ms, ..KafkaOptions::new(&opts.kafka) };
        let topics = ensure(&kafka, &opts.topics, Broker::Kafka).await?;
        let store = crate::store::open(&opts.store, opts.data_dir.as_deref()).await?;
        let admin = start_projector(
            &mut runner,
            &kafka,
            &opts.topics,
            &topics.events,
            &opts.projector,
            store.clone(),
        )?;
        let prefix = &opts.topics.topic_prefix;
        let registry = opts.registry.client()?;
        let destinations = crate::sink::start_sink(
            &mut runner,
            &kafka,
            &topics,
            prefix,
            &opts.sink,
            store.clone(),
            registry,
        )?;
        let (query, grpc) =
            crate::query::query_servers(&opts.query, &opts.grpc, store.clone(), &security).await?;
        runner.start(|cancel| query.run(cancel));
        if let Some(grpc) = grpc {
            runner.start(|cancel| grpc.run(cancel));
        }
        let health = crate::health::Health::new().with_broker(&kafka)?.with_store(store).router();
        let routes = admin.router().merge(destinations.router()).merge(health);
        let admin = security.server("admin", opts.admin_listen, routes).await?;
        runner.start(|cancel| admin.run(cancel));
        tracing::info!(events = %topics.events, "projector running");
        Ok(())
    }
    .await;
    runner.run_until(started, crate::shutdown::signal()).await
}

//! `tally dev`: the whole of Tally in one process, for a laptop and for tests.

use crate::health::Health;
use crate::ingest::{ServiceOptions, start_write_side};
use crate::kafka::{Broker, ensure};
use crate::project::{ProjectorOptions, start_projector};
use crate::query::{QueryOptions, query_app};
use crate::runner::Runner;
use crate::sink::{SinkOptions, start_sink};
use anyhow::Context;
use std::path::PathBuf;
use tally_kafka::topics::Topics;
use tally_kafka::{BrokerStorage, EmbeddedBroker};
use tokio_util::sync::CancellationToken;

#[derive(clap::Args, Debug)]
pub struct DevOptions {
    /// Keep the broker's log and the store (snapshots, projections) here, so they survive a restart.
    /// Without it everything is in memory and lost on exit.
    #[arg(long, env = "TALLY_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Use this Kafka cluster (HOST:PORT[,...]) instead of the in-process broker.
    #[arg(long, env = "TALLY_KAFKA")]
    kafka: Option<String>,
    /// Port of the in-process broker (0 = any free port).
    #[arg(long, default_value_t = 9092, env = "TALLY_KAFKA_PORT")]
    kafka_port: u16,
    /// Address of the gRPC API: the commands and the queries, reflection, health and grpc-web.
    #[arg(long, default_value = "127.0.0.1:8083", env = "TALLY_GRPC_LISTEN")]
    grpc_listen: std::net::SocketAddr,
    #[command(flatten)]
    service: ServiceOptions,
    #[command(flatten)]
    projector: ProjectorOptions,
    #[command(flatten)]
    query: QueryOptions,
    #[command(flatten)]
    sink: SinkOptions,
}

pub async fn run(opts: DevOptions) -> anyhow::Result<()> {
    let (broker, bootstrap) = match &opts.kafka {
        Some(servers) => (None, servers.clone()),
        None => {
            let storage = match &opts.data_dir {
                Some(dir) => BrokerStorage::Sqlite(EmbeddedBroker::sqlite_path(dir)),
                None => BrokerStorage::Memory,
            };
            let broker = EmbeddedBroker::start(storage, opts.kafka_port)
                .await
                .with_context(|| format!("starting the in-process broker on port {}", opts.kafka_port))?;
            let bootstrap = broker.bootstrap_servers();
            (Some(broker), bootstrap)
        }
    };
    // Without configured credentials, tally dev makes its own key, printed in the banner.
    let dev_key = match opts.service.auth.credentials_configured() {
        false => Some(crate::auth::dev_key(opts.data_dir.as_deref())?),
        true => None,
    };
    let (token, keys) = dev_key.unzip();
    let reload = CancellationToken::new();
    let _stop_reloading = reload.clone().drop_guard();
    let mut runner = Runner::new(&opts.service.shutdown);
    let started = start(&opts, &bootstrap, keys, &reload, &mut runner).await;
    let started = started.map(|(topics, bound)| {
        print_banner(&opts, &bootstrap, &topics, &bound, broker.is_some(), token.as_deref());
    });
    let ran = runner.run_until(started, crate::shutdown::signal()).await;
    drop(broker);
    ran
}

/// Starts every service of `tally dev` on `runner` against the cluster at `bootstrap`: the
/// processor, the outcome watcher, the projector, the sink runner, the query API, and last the
/// front door (with the admin and health routes on its listener). Returns the topics and the
/// addresses bound.
async fn start(
    opts: &DevOptions,
    bootstrap: &str,
    keys: Option<tally_auth::keys::KeyRing>,
    reload: &CancellationToken,
    runner: &mut Runner,
) -> anyhow::Result<(Topics, Bound)> {
    let service = &opts.service;
    let kafka = service.kafka(bootstrap);
    let security = service.auth.security(keys, reload).await?;
    let store = crate::store::open(&service.store, opts.data_dir.as_deref()).await?;
    let broker = if opts.kafka.is_some() { Broker::Kafka } else { Broker::InProcess };
    let topics = ensure(&kafka, &service.topics, broker).await?;
    let front = start_write_side(runner, &kafka, service, &topics, store.clone(), reload).await?;
    let admin =
        start_projector(runner, &kafka, &service.topics, &topics.events, &opts.projector, store.clone())?;
    let prefix = &service.topics.topic_prefix;
    let registry = service.processor.registry.client()?;
    let destinations = start_sink(runner, &kafka, &topics, prefix, &opts.sink, store.clone(), registry)?;
    let query_app = query_app(&opts.query, store.clone());
    let query = security.server("query", opts.query.query_listen, query_app.clone()).await?;
    let query_addr = query.local_addr()?;
    runner.start(|cancel| query.run(cancel));
    let grpc = security.grpc(opts.grpc_listen, Some(front.clone()), Some(query_app)).await?;
    let grpc_addr = grpc.local_addr()?;
    runner.start(|cancel| grpc.run(cancel));
    let health = Health::new().with_broker(&kafka)?.with_store(store).router();
    let app = front.merge(admin.router()).merge(destinations.router()).merge(health);
    let http = security.server("http", service.http.http_listen, app).await?;
    let bound = Bound { http: http.local_addr()?, query: query_addr, grpc: grpc_addr };
    runner.start(|cancel| http.run(cancel));
    Ok((topics, bound))
}

/// The addresses the listeners bound (the ports the system chose for port 0).
struct Bound {
    http: std::net::SocketAddr,
    query: std::net::SocketAddr,
    grpc: std::net::SocketAddr,
}

fn print_banner(
    opts: &DevOptions,
    bootstrap: &str,
    topics: &Topics,
    bound: &Bound,
    embedded: bool,
    token: Option<&str>,
) {
    let storage = match (&opts.data_dir, embedded) {
        (_, false) => "external cluster".to_owned(),
        (Some(dir), true) => format!("in-process broker, data in {}", dir.display()),
        (None, true) => "in-process broker, in memory (lost on exit; --data-dir keeps it)".to_owned(),
    };
    println!("tally dev is running ({storage})");
    println!("kafka: {bootstrap}");
    println!(
        "topics: {}, {}, {} ({} partitions)",
        topics.commands, topics.events, topics.dead_letter, opts.service.topics.partitions
    );
    match token {
        Some(token) => {
            println!("token: {token}");
            println!(
                "  (a development API key for tenant `demo`, roles read, write and admin; --api-keys replaces it)"
            );
        }
        None => println!("credentials: as configured (--api-keys, JWKS)"),
    }
    println!();
    println!("Try, in another terminal:");
    let token = token.unwrap_or("<your API key>");
    println!("  export TALLY_TOKEN={token}");
    println!(
        "  tally send --kafka {bootstrap} --topic {} --tenant demo '{{\"DefineAsset\":{{\"ledger\":\"main\",\"asset\":\"USD/2\"}}}}'",
        topics.commands
    );
    println!("  tally tail --kafka {bootstrap} --topic {} --max 2", topics.events);
    println!();
    println!(
        "  curl -X POST -H \"authorization: Bearer $TALLY_TOKEN\" -d '{{\"asset\":\"USD/2\"}}' http://{}/v1/ledgers/main/assets",
        bound.http
    );
    println!("  curl -H \"authorization: Bearer $TALLY_TOKEN\" http://{}/v1/events?stream=main", bound.query);
    println!(
        "  grpcurl -plaintext -H \"authorization: Bearer $TALLY_TOKEN\" -d '{{\"ledger\":\"main\",\"account\":\"world\"}}' {} tally.v1.Queries/GetAccount",
        bound.grpc
    );
    println!("  tally projections status --url http://{}", bound.http);
    println!();
    println!(
        "Running: the command processor, the HTTP front door, the projector, the sink runner, the query API and the gRPC API."
    );
    println!("Ctrl-C stops.");
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::time::Duration;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        dev: DevOptions,
    }

    /// A process never runs on half-alive: when one service's task dies (here the front door's
    /// listener, killed as a crash would), the runner stops every other service and ends with an
    /// error naming it, which `main` turns into a non-zero exit.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_service_that_dies_stops_every_service_with_an_error() {
        let args = [
            "dev",
            "--http-listen",
            "127.0.0.1:0",
            "--query-listen",
            "127.0.0.1:0",
            "--grpc-listen",
            "127.0.0.1:0",
            "--partitions",
            "2",
        ];
        let opts = Cli::parse_from(args).dev;
        let broker = EmbeddedBroker::start(BrokerStorage::Memory, 0).await.unwrap();
        let (reload, mut runner) = (CancellationToken::new(), Runner::new(&opts.service.shutdown));
        let keys = Some(crate::auth::dev_key(None).unwrap().1);
        start(&opts, &broker.bootstrap_servers(), keys, &reload, &mut runner).await.unwrap();
        assert_eq!(
            runner.services(),
            ["processor", "outcome watcher", "projector", "sink", "query", "grpc", "http"]
        );
        assert!(runner.kill("http"), "the front door runs");
        let ran =
            tokio::time::timeout(Duration::from_secs(30), runner.run_until(Ok(()), std::future::pending()));
        let error = ran.await.expect("the runner noticed within 30 s").unwrap_err();
        let said = format!("{error:#}");
        assert!(said.contains("http: ") && said.contains("stopped every service"), "{said}");
        reload.cancel();
    }
}

//! `tally dev`: the whole of Tally in one process, for a laptop and for tests.

use crate::ingest::{ServiceOptions, serve};
use crate::project::ProjectorOptions;
use crate::query::QueryOptions;
use anyhow::Context;
use std::path::PathBuf;
use tally_kafka::topics::Topics;
use tally_kafka::{BrokerStorage, EmbeddedBroker};

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
    #[command(flatten)]
    service: ServiceOptions,
    #[command(flatten)]
    projector: ProjectorOptions,
    #[command(flatten)]
    query: QueryOptions,
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
    let read_side = Some((&opts.projector, &opts.query));
    // Without configured credentials, tally dev makes its own key, printed in the banner.
    let dev_key = match opts.service.auth.credentials_configured() {
        false => Some(crate::auth::dev_key(opts.data_dir.as_deref())?),
        true => None,
    };
    let (token, keys) = dev_key.unzip();
    serve(&bootstrap, &opts.service, read_side, opts.data_dir.as_deref(), keys, |topics| {
        print_banner(&opts, &bootstrap, topics, broker.is_some(), token.as_deref())
    })
    .await?;
    drop(broker);
    Ok(())
}

fn print_banner(opts: &DevOptions, bootstrap: &str, topics: &Topics, embedded: bool, token: Option<&str>) {
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
        opts.service.http.http_listen
    );
    println!(
        "  curl -H \"authorization: Bearer $TALLY_TOKEN\" http://{}/v1/events?stream=main",
        opts.query.query_listen
    );
    println!("  tally projections status --url http://{}", opts.service.http.http_listen);
    println!();
    println!("Running: the command processor, the HTTP front door, the projector and the query API.");
    println!("Ctrl-C stops.");
}

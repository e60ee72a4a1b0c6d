//! `tally`: one binary for every role. `tally dev` runs everything in one process; the other
//! subcommands are tools around a running deployment.

mod admin;
mod auth;
mod config;
mod destinations;
mod dev;
mod health;
mod ingest;
mod kafka;
mod project;
mod projections;
mod query;
mod registry;
mod runner;
mod shutdown;
mod sink;
mod store;
mod telemetry;
mod tools;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "tally", version, about = "Kafka-native, event-sourced ledger and application state")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// A TOML file of settings (keys are the long flag names); flags and TALLY_* variables
    /// override it. See docs/configuration.md.
    #[arg(long, global = true, env = "TALLY_CONFIG")]
    config: Option<std::path::PathBuf>,
    /// Print the effective settings (and where each came from; secrets redacted), then exit.
    #[arg(long, global = true)]
    dump_config: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Run everything in one process: an in-process Kafka broker, the topics, the processor,
    /// the HTTP front door, the projector, the sink runner and the query API. Memory only
    /// unless --data-dir is given.
    Dev(dev::DevOptions),
    /// The ingest service: the command processor (owns partitions of the commands topic
    /// through a consumer group; run as many instances as you like).
    Ingest(ingest::IngestOptions),
    /// The projector service: folds the events topic into the projections (owns partitions of
    /// events through a consumer group; one instance per embedded store), serves the query
    /// API, and runs the sink runner (the tenants' destinations).
    Project(project::ProjectOptions),
    /// The query API alone, over a shared store (--store scylla); `tally project` serves it
    /// over the embedded store.
    Query(query::QueryServiceOptions),
    /// Create Tally's keyspace and tables on Scylla when missing, then exit.
    Schema(store::SchemaOptions),
    /// Projection administration through a running projector's admin routes: status, rebuild.
    Projections(projections::ProjectionsOptions),
    /// The sink's destinations through a running tally dev or tally project: list, show,
    /// create, pause, resume (replays parked events), rotate-secret, delete.
    Destinations(destinations::DestinationsOptions),
    /// Produce one command (JSON, see README) to the commands topic, Avro-encoded.
    Send(tools::SendOptions),
    /// Print the records of a topic (commands or events) as JSON lines.
    Tail(tools::TailOptions),
    /// API keys: `tally keys new --tenant T --roles read,write`.
    Keys(auth::KeysOptions),
}

fn main() -> std::process::ExitCode {
    let command = Cli::command();
    let args = std::env::args_os().map(|a| a.to_string_lossy().into_owned()).collect();
    let (args, from_file) = match config::with_file(&command, args) {
        Ok(layered) => layered,
        Err(e) => {
            eprintln!("error: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let matches = command.clone().get_matches_from(args);
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if cli.dump_config {
        print!("{}", config::dump(&command, &matches, &from_file));
        return std::process::ExitCode::SUCCESS;
    }
    let traces = init_logging();
    let result = run(cli);
    traces.shutdown();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line with the whole cause chain; details are in the logs.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let ran = runtime.block_on(async {
        match cli.command {
            Command::Dev(opts) => dev::run(opts).await,
            Command::Ingest(opts) => ingest::run(opts).await,
            Command::Project(opts) => project::run(opts).await,
            Command::Query(opts) => query::run(opts).await,
            Command::Schema(opts) => store::apply_schema(opts).await,
            Command::Projections(opts) => projections::run(opts).await,
            Command::Destinations(opts) => destinations::run(opts).await,
            Command::Send(opts) => tools::send(opts).await,
            Command::Tail(opts) => tools::tail(opts).await,
            Command::Keys(opts) => auth::keys(opts),
        }
    });
    // Every service has stopped, or was told to and missed the shutdown deadline; a blocking
    // task still inside a librdkafka call must not hold the exit up.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    ran
}

/// Logs on stderr, filtered by `RUST_LOG` (default: info for Tally, warn for the rest), in the
/// format `TALLY_LOG_FORMAT` names: `text` (human-readable), `json` (one object a line, for
/// collectors), or `auto` (the default): text on a terminal, JSON otherwise (containers).
/// Traces: see [`telemetry`].
fn init_logging() -> telemetry::Traces {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(
            "warn,tally=info,tally_kafka=info,tally_ingest=info,tally_projector=info",
        )
    });
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let json = match std::env::var("TALLY_LOG_FORMAT").as_deref() {
        Ok("json") => true,
        Ok("text") => false,
        _ => !terminal,
    };
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = match json {
        true => logs.json().flatten_event(true).with_current_span(false).boxed(),
        // Colours only on a terminal.
        false => logs.with_ansi(terminal).boxed(),
    };
    let traces = telemetry::Traces::start();
    tracing_subscriber::registry().with(logs.with_filter(filter)).with(traces.layer()).init();
    traces
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/configuration.md is generated from the flag definitions; it must match them.
    #[test]
    fn the_configuration_reference_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/configuration.md");
        let generated = config::reference(&Cli::command());
        if std::env::var_os("TALLY_UPDATE_DOCS").is_some() {
            std::fs::write(path, &generated).unwrap();
        }
        let written = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            written == generated,
            "docs/configuration.md is out of date: run TALLY_UPDATE_DOCS=1 cargo test -p tally --bin tally"
        );
    }
}

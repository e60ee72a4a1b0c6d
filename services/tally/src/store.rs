//! Which store the services use, and opening it.

use anyhow::{Context, bail};
use std::path::Path;
use std::sync::Arc;
use tally_store::metered::Metered;
use tally_store::scylla::{ScyllaConfig, ScyllaStore};
use tally_store::{EmbeddedStore, Store};

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// redb in `DATA_DIR/store/tally.redb` (in memory without --data-dir); one process owns it.
    Embedded,
    /// A ScyllaDB or Cassandra cluster (--scylla-nodes); any number of processes.
    Scylla,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    One,
    LocalOne,
    LocalQuorum,
    Quorum,
    EachQuorum,
    All,
}

/// Where projections and snapshots are kept; shared by every service.
#[derive(clap::Args, Debug, Clone)]
pub struct StoreOptions {
    /// The store backend.
    #[arg(long, value_enum, default_value = "embedded", env = "TALLY_STORE")]
    pub store: Backend,
    /// Most memory (MiB) the embedded store's file may use to cache its pages (with --data-dir).
    /// The cache fills as the file grows: in a busy process it is the largest user of memory
    /// until it reaches this.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=1_048_576), env = "TALLY_STORE_CACHE_MIB")]
    pub store_cache_mib: u64,
    /// Scylla contact points, `host:port[,host:port...]` (with --store scylla).
    #[arg(long, value_delimiter = ',', env = "TALLY_SCYLLA_NODES")]
    pub scylla_nodes: Vec<String>,
    /// Keyspace of Tally's tables (letters, digits and `_`, starting with a letter).
    #[arg(long, default_value = "tally", env = "TALLY_SCYLLA_KEYSPACE")]
    pub scylla_keyspace: String,
    /// Replication of the keyspace when --scylla-apply-schema creates it, as a CQL map.
    #[arg(
        long,
        default_value = "{'class': 'NetworkTopologyStrategy', 'replication_factor': 3}",
        env = "TALLY_SCYLLA_REPLICATION"
    )]
    pub scylla_replication: String,
    /// Consistency level of every read and write.
    #[arg(long, value_enum, default_value = "local-quorum", env = "TALLY_SCYLLA_CONSISTENCY")]
    pub scylla_consistency: Consistency,
    /// Create the keyspace and tables (schemas/cql/tally.cql) when missing, at start-up.
    #[arg(long, env = "TALLY_SCYLLA_APPLY_SCHEMA")]
    pub scylla_apply_schema: bool,
    /// Username for a cluster that requires authentication (with --scylla-password).
    #[arg(long, env = "TALLY_SCYLLA_USERNAME", default_value = "")]
    pub scylla_username: String,
    /// Password of --scylla-username (prefer the environment variable: flags show in `ps`).
    #[arg(long, env = "TALLY_SCYLLA_PASSWORD", default_value = "", hide_env_values = true)]
    pub scylla_password: String,
}

/// Opens the configured store (the embedded one under `data_dir`, or in memory), timed and
/// counted for the metrics.
pub async fn open(options: &StoreOptions, data_dir: Option<&Path>) -> anyhow::Result<Arc<dyn Store>> {
    Ok(Arc::new(Metered::new(open_backend(options, data_dir).await?)))
}

async fn open_backend(options: &StoreOptions, data_dir: Option<&Path>) -> anyhow::Result<Arc<dyn Store>> {
    match options.store {
        Backend::Embedded => Ok(Arc::new(open_embedded(data_dir, options.store_cache_mib)?)),
        Backend::Scylla => {
            let config = scylla_config(options)?;
            let apply = options.scylla_apply_schema;
            let connect = move || ScyllaStore::connect(&config, apply);
            let store = tokio::task::spawn_blocking(connect).await?;
            let nodes = options.scylla_nodes.join(",");
            Ok(Arc::new(store.with_context(|| format!("connecting to Scylla at {nodes}"))?))
        }
    }
}

fn open_embedded(data_dir: Option<&Path>, cache_mib: u64) -> anyhow::Result<EmbeddedStore> {
    match data_dir {
        Some(dir) => {
            let path = dir.join("store").join("tally.redb");
            let cache_bytes = usize::try_from(cache_mib << 20).unwrap_or(usize::MAX);
            EmbeddedStore::open_with_cache(&path, cache_bytes)
                .with_context(|| format!("opening the store {}", path.display()))
        }
        None => EmbeddedStore::in_memory().context("creating the in-memory store"),
    }
}

fn scylla_config(options: &StoreOptions) -> anyhow::Result<ScyllaConfig> {
    if options.scylla_nodes.is_empty() {
        bail!("--store scylla needs --scylla-nodes (or TALLY_SCYLLA_NODES)");
    }
    let keyspace = &options.scylla_keyspace;
    let valid = keyspace.len() <= 48
        && keyspace.starts_with(|c: char| c.is_ascii_alphabetic())
        && keyspace.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        bail!("--scylla-keyspace {keyspace:?}: use up to 48 letters, digits and '_', starting with a letter");
    }
    let mut config = ScyllaConfig::new(options.scylla_nodes.clone(), keyspace);
    config.replication = options.scylla_replication.clone();
    config.credentials = match (options.scylla_username.as_str(), options.scylla_password.as_str()) {
        ("", "") => None,
        ("", _) => bail!("--scylla-password needs --scylla-username"),
        (user, password) => Some((user.to_owned(), password.to_owned())),
    };
    config.consistency = match options.scylla_consistency {
        Consistency::One => scylla::frame::types::Consistency::One,
        Consistency::LocalOne => scylla::frame::types::Consistency::LocalOne,
        Consistency::LocalQuorum => scylla::frame::types::Consistency::LocalQuorum,
        Consistency::Quorum => scylla::frame::types::Consistency::Quorum,
        Consistency::EachQuorum => scylla::frame::types::Consistency::EachQuorum,
        Consistency::All => scylla::frame::types::Consistency::All,
    };
    Ok(config)
}

#[derive(clap::Args, Debug)]
pub struct SchemaOptions {
    #[command(flatten)]
    store: StoreOptions,
}

/// `tally schema`: creates Tally's keyspace and tables on Scylla when missing (the statements
/// of `schemas/cql/tally.cql`), then exits. For deployments that apply the schema once, before
/// the services start (the Helm chart's job), rather than with `--scylla-apply-schema`.
pub async fn apply_schema(mut opts: SchemaOptions) -> anyhow::Result<()> {
    opts.store.store = Backend::Scylla;
    opts.store.scylla_apply_schema = true;
    open(&opts.store, None).await?;
    println!("schema applied: keyspace {}", opts.store.scylla_keyspace);
    Ok(())
}

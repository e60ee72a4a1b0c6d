//! The query API's listener: run by `tally dev` and `tally project` beside the projector (the
//! embedded store belongs to one process, so reads are served where the rows are written), and
//! alone by `tally query` over a shared store (Scylla).

use crate::auth::Security;
use crate::runner::Runner;
use crate::store::{Backend, StoreOptions};
use anyhow::bail;
use std::sync::Arc;
use std::time::Duration;
use tally_http::serve::HttpServer;
use tally_query::{Query, QueryConfig};
use tally_store::projections::ProjectionStore;
use tokio_util::sync::CancellationToken;

#[derive(clap::Args, Debug, Clone)]
pub struct QueryOptions {
    /// Address of the query API (balances, statements, transactions, documents, events).
    #[arg(long, default_value = "127.0.0.1:8082", env = "TALLY_QUERY_LISTEN")]
    pub query_listen: std::net::SocketAddr,
    /// Longest wait (milliseconds) of a query for the projection to reach the `Tally-Position`
    /// it names; then it answers 504.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..=60_000), env = "TALLY_QUERY_POSITION_WAIT_MS")]
    pub query_position_wait_ms: u64,
    /// How often (milliseconds) a live event stream (`/v1/events/live`) that has caught up
    /// reads the store for new events: the longest a new event waits there once readable, and
    /// one store read per open stream per interval while idle.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=60_000), env = "TALLY_QUERY_FOLLOW_POLL_MS")]
    pub query_follow_poll_ms: u64,
    /// Most live event streams (`/v1/events/live`, gRPC `FollowEvents`) open at once on this
    /// listener; one more is answered 503. Each open stream reads the store once per
    /// `--query-follow-poll-ms` while idle. Places are not reserved per tenant: this many
    /// divided by `--live-streams-per-tenant-max` tenants at their most fill it.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000), env = "TALLY_LIVE_STREAMS_MAX")]
    pub live_streams_max: u32,
    /// Most live event streams one tenant may have open at once; one more is answered 429.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1_000_000), env = "TALLY_LIVE_STREAMS_PER_TENANT_MAX")]
    pub live_streams_per_tenant_max: u32,
}

/// The query API over `store` (with its health routes), not yet behind the gate.
pub fn query_app(options: &QueryOptions, store: Arc<dyn ProjectionStore>) -> axum::Router {
    let config = QueryConfig {
        position_wait: Duration::from_millis(options.query_position_wait_ms),
        follow_poll: Duration::from_millis(options.query_follow_poll_ms),
        live_streams_max: options.live_streams_max as usize,
        live_streams_per_tenant_max: options.live_streams_per_tenant_max as usize,
        ..QueryConfig::default()
    };
    let health = crate::health::Health::new().with_store(store.clone()).router();
    Query::new(store, config).router().merge(health)
}

/// The query API over `store`, behind the gate, bound and ready to run; and its gRPC
/// listener when `grpc` asks for one.
pub async fn query_servers(
    options: &QueryOptions,
    grpc: &GrpcOptions,
    store: Arc<dyn ProjectionStore>,
    security: &Security,
) -> anyhow::Result<(HttpServer, Option<tally_grpc::GrpcServer>)> {
    let app = query_app(options, store);
    let http = security.server("query", options.query_listen, app.clone()).await?;
    let grpc = match grpc.grpc_listen {
        Some(address) => Some(security.grpc(address, None, Some(app)).await?),
        None => None,
    };
    Ok((http, grpc))
}

/// The gRPC listener of a service (`tally ingest`: the commands; `tally project` and
/// `tally query`: the queries). `tally dev` has its own, on by default, serving both.
#[derive(clap::Args, Debug, Clone)]
pub struct GrpcOptions {
    /// Address of the gRPC API (with reflection, health and grpc-web); none when not given.
    #[arg(long, env = "TALLY_GRPC_LISTEN")]
    pub grpc_listen: Option<std::net::SocketAddr>,
}

#[derive(clap::Args, Debug)]
pub struct QueryServiceOptions {
    #[command(flatten)]
    store: StoreOptions,
    #[command(flatten)]
    query: QueryOptions,
    #[command(flatten)]
    shutdown: crate::shutdown::ShutdownOptions,
    #[command(flatten)]
    auth: crate::auth::AuthOptions,
    #[command(flatten)]
    grpc: GrpcOptions,
}

/// `tally query`: the query API alone, over a store other processes write.
pub async fn run(opts: QueryServiceOptions) -> anyhow::Result<()> {
    if opts.store.store == Backend::Embedded {
        bail!(
            "tally query reads a shared store: give --store scylla. The embedded store belongs to \
             the process that writes it: `tally project` (and `tally dev`) serve the query API over it"
        );
    }
    let reload = CancellationToken::new();
    let _stop_reloading = reload.clone().drop_guard();
    let mut runner = Runner::new(&opts.shutdown);
    let started = async {
        let security = opts.auth.security(None, &reload).await?;
        let store = crate::store::open(&opts.store, None).await?;
        let (server, grpc) = query_servers(&opts.query, &opts.grpc, store, &security).await?;
        runner.start(|cancel| server.run(cancel));
        if let Some(grpc) = grpc {
            runner.start(|cancel| grpc.run(cancel));
        }
        Ok(())
    }
    .await;
    runner.run_until(started, crate::shutdown::signal()).await
}

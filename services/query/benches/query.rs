//! The query API's GET account against a bare axum endpoint that returns a constant, with the
//! same load generator in the same run. Prints figures; asserts nothing.
//!
//! `cargo bench -p tally-query --bench query`
//! (`TALLY_BENCH_SECONDS`, default 5 per phase; `TALLY_BENCH_CONNECTIONS`, default 32)
//!
//! 1. Throughput: `connections` clients in a closed loop (each sends its next request when the
//!    last is answered) for `seconds`, against each server in turn.
//! 2. Latency: requests due on a fixed schedule at half the query API's measured rate, spread
//!    over the same number of connections (wrk2's model); each request's latency runs from when
//!    it was due (not when it was sent), so a stalled server is not hidden by requests that were
//!    never sent. The bare endpoint at the same rate shows what the load generator and the
//!    shared cores add by themselves.
//!
//! The query API runs behind the gate, as deployed: each request carries an API key, which is
//! checked (SHA-256 and a lookup) before the read.
//!
//! The store: an embedded (redb) file holding a ledger of 10,000 accounts folded from 100,000
//! transfers; each request reads a different account. One process on the machine's cores runs
//! the servers and the load generator alike.

use axum::Router;
use axum::routing::get;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tally_auth::keys::{KeyRing, ring_for};
use tally_auth::reload::Reloading;
use tally_auth::{Authenticator, Role, Roles};
use tally_core::log::Replica;
use tally_core::{projection, testkit};
use tally_http::gate::{Gate, GateConfig};
use tally_query::{Query, QueryConfig};
use tally_store::EmbeddedStore;
use tally_store::projections::ProjectionStore;

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

const ACCOUNTS: u64 = 10_000;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A read key for tenant `acme`.
static KEYS: std::sync::LazyLock<(KeyRing, std::collections::HashMap<String, String>)> =
    std::sync::LazyLock::new(|| ring_for(&["acme"], Roles::of(&[Role::Read])));

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let seconds = Duration::from_secs(env("TALLY_BENCH_SECONDS", 5));
    let connections = env("TALLY_BENCH_CONNECTIONS", 32) as usize;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(&dir.path().join("tally.redb")).unwrap());
    fill(store.as_ref());
    let gate = Gate::new(
        Authenticator::new().with_keys(Reloading::fixed("API keys", KEYS.0.clone())),
        &GateConfig::default(),
    );
    let query = serve(gate.unwrap().protect(Query::new(store, QueryConfig::default()).router())).await;
    let bare = serve(Router::new().route("/constant", get(|| async { "constant" }))).await;
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let account = |i: u64| format!("/v1/ledgers/main/accounts/acct-{}", i * 7919 % ACCOUNTS);
    let constant = |_| "/constant".to_owned();
    println!("query benchmark: {connections} connections, {} s per phase", seconds.as_secs());

    let bare_rate = closed_loop(&client, &bare, constant, connections, seconds).await;
    println!("bare axum, constant:     {bare_rate:>9.0} requests/s");
    let query_rate = closed_loop(&client, &query, account, connections, seconds).await;
    println!("query API, GET account:  {query_rate:>9.0} requests/s");
    println!("  ratio query / bare: {:.2} (goal at least 0.6)", query_rate / bare_rate);
    let rate = query_rate / 2.0;
    let (p50, p99, n) = scheduled(&query, account, rate, connections, seconds).await;
    println!(
        "  latency at {rate:.0} requests/s (half the maximum), {n} requests: p50 {p50:.2} ms, p99 {p99:.2} ms"
    );
    let (p50, p99, n) = scheduled(&bare, constant, rate, connections, seconds).await;
    println!(
        "  bare axum at the same rate, {n} requests: p50 {p50:.2} ms, p99 {p99:.2} ms (the load generator's share)"
    );
}

/// 10,000 accounts of ledger `main` of tenant `acme`, folded from 100,000 transfers.
fn fill(store: &dyn ProjectionStore) {
    let log = testkit::transfers_log("acme", 100_000);
    let mut replica = Replica::new();
    for (i, batch) in log.chunks(1000).enumerate() {
        let first = i as i64 * 1000;
        let records = batch.iter().enumerate().map(|(j, r)| (first + j as i64, r));
        let changes = projection::fold_batch(&mut replica, records, 0);
        store.commit(1, 0, &changes, first + batch.len() as i64 - 1).unwrap();
    }
}

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// One GET as tenant `acme`; panics on anything but 200 (a benchmark of errors is no benchmark).
async fn get_ok(client: &HttpClient, addr: &str, path: &str) {
    let request = hyper::Request::get(format!("http://{addr}{path}"))
        .header("authorization", KEYS.1["acme"].as_str())
        .body(Empty::new())
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), 200, "{path}");
    response.into_body().collect().await.unwrap();
}

/// Requests per second of `connections` clients each sending its next request on an answer.
async fn closed_loop(
    client: &HttpClient,
    addr: &str,
    path: impl Fn(u64) -> String + Send + Sync + Copy + 'static,
    connections: usize,
    duration: Duration,
) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let clients: Vec<_> = (0..connections)
        .map(|c| {
            let (client, addr, done) = (client.clone(), addr.to_owned(), done.clone());
            tokio::spawn(async move {
                let mut i = c as u64;
                while started.elapsed() < duration {
                    get_ok(&client, &addr, &path(i)).await;
                    done.fetch_add(1, Ordering::Relaxed);
                    i += connections as u64;
                }
            })
        })
        .collect();
    for c in clients {
        c.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// p50 and p99 latency (ms) of requests due at `rate` per second for `duration`, each timed
/// from when it was due, over `connections` connections that each send their share of the
/// schedule in turn (request `i` on connection `i % connections`), as wrk2 does: a request due
/// while its connection is still busy waits, and the wait counts. Spawning a task per request
/// instead let the client open a connection whenever none was idle: about 1,800 in the first
/// second, whose handshakes were most of the p99 (see BENCHMARKS.md).
async fn scheduled(
    addr: &str,
    path: impl Fn(u64) -> String + Send + Sync + Copy + 'static,
    rate: f64,
    connections: usize,
    duration: Duration,
) -> (f64, f64, usize) {
    let interval = Duration::from_secs_f64(1.0 / rate);
    let started = tokio::time::Instant::now();
    let requests = (duration.as_secs_f64() * rate) as u64;
    let senders: Vec<_> = (0..connections as u64)
        .map(|c| {
            let addr = addr.to_owned();
            // One client per connection: its requests go one after another, so it keeps one.
            let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                for i in (c..requests).step_by(connections) {
                    let due = started + interval.mul_f64(i as f64);
                    tokio::time::sleep_until(due).await;
                    get_ok(&client, &addr, &path(i)).await;
                    latencies.push(due.elapsed().as_secs_f64() * 1000.0);
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(requests as usize);
    for s in senders {
        latencies.extend(s.await.unwrap());
    }
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    (at(0.50), at(0.99), latencies.len())
}

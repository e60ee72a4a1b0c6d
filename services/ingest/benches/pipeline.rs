//! End-to-end benchmark of the command pipeline on the in-process broker, or on a real Kafka.
//! Prints figures; asserts nothing.
//!
//! `cargo bench -p tally-ingest --bench pipeline`
//!
//! 1. Throughput: `N` transfer commands produced to `commands` (pipelined), until their `N`
//!    answers are read back from `events`, through the processor. Baseline in the same run: `N`
//!    records of the same size produced to a plain topic and consumed back, same clients, same
//!    broker. Each measurement uses fresh topics; rounds alternate and the median is reported.
//! 2. HTTP: the front door served over TCP; the highest rate of requests answered with 201 by a
//!    closed loop of many clients, then an open loop at half that rate over as many
//!    connections (wrk2's model). Latency is measured from each request's scheduled start (so a
//!    stall counts against every request it delays) to its answer. Run twice: with the default
//!    `fetch.wait.max.ms` and with 5 ms, because the in-process broker polls for new records
//!    during a fetch's wait instead of being woken.
//!
//! Knobs (environment): `TALLY_BENCH_COMMANDS` (default 50000), `TALLY_BENCH_ROUNDS` (3),
//! `TALLY_BENCH_PARTITIONS` (2), `TALLY_BENCH_HTTP_SECONDS` (10; 0 skips the HTTP part),
//! `TALLY_BENCH_HTTP_CLIENTS` (64), `TALLY_BENCH_BROKER` (`memory` or `sqlite`: the in-process
//! broker's storage; `kafka`: the real Kafka at `TALLY_TEST_KAFKA=host:port`, for example the
//! one `.ci/servers/servers.sh start DIR` starts).

#[path = "../tests/support/mod.rs"]
mod support;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::FutureRecord;
use rdkafka::{Message, Offset, TopicPartitionList};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use support::*;
use tally_auth::keys::{KeyRing, ring_for};
use tally_auth::reload::Reloading;
use tally_auth::{Authenticator, Role, Roles};
use tally_codec::Codec;
use tally_core::Command;
use tally_core::log::LogRecord;
use tally_http::gate::{Gate, GateConfig};
use tally_ingest::http::{Front, HttpConfig};
use tally_ingest::outcomes::{OutcomeWatcher, Outcomes};
use tally_ingest::processor::Processor;
use tally_kafka::config::KafkaOptions;
use tally_kafka::topics::{TopicSpec, ensure_topics};
use tally_kafka::{BrokerStorage, EmbeddedBroker};
use tokio_util::sync::CancellationToken;

const TENANTS: usize = 8;

/// A write key for each of the `TENANTS` tenants (`tenant0`...): the front door runs behind the
/// gate, as deployed.
static KEYS: std::sync::LazyLock<(KeyRing, std::collections::HashMap<String, String>)> =
    std::sync::LazyLock::new(|| {
        let tenants: Vec<String> = (0..TENANTS).map(|t| format!("tenant{t}")).collect();
        let tenants: Vec<&str> = tenants.iter().map(String::as_str).collect();
        ring_for(&tenants, Roles::of(&[Role::Read, Role::Write]))
    });

fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    // Criterion-style arguments (`--bench`) are accepted and ignored.
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(run());
}

async fn run() {
    init_logs();
    let n = knob("TALLY_BENCH_COMMANDS", 50_000) as usize;
    let rounds = knob("TALLY_BENCH_ROUNDS", 3) as usize;
    let partitions = knob("TALLY_BENCH_PARTITIONS", 2) as i32;
    // The broker's storage engine: `memory` (default) or `sqlite` (what `tally dev --data-dir`
    // uses), in a temporary directory.
    let engine = std::env::var("TALLY_BENCH_BROKER").unwrap_or_else(|_| "memory".into());
    let dir = tempfile::tempdir().unwrap();
    let storage = match engine.as_str() {
        "sqlite" => Some(BrokerStorage::Sqlite(EmbeddedBroker::sqlite_path(dir.path()))),
        "kafka" => None,
        _ => Some(BrokerStorage::Memory),
    };
    let broker = match storage {
        Some(storage) => Some(EmbeddedBroker::start(storage, 0).await.expect("broker starts")),
        None => None,
    };
    let in_process = broker.is_some();
    let bootstrap = match &broker {
        Some(broker) => broker.bootstrap_servers(),
        None => real_kafka().expect("TALLY_BENCH_BROKER=kafka needs TALLY_TEST_KAFKA=host:port"),
    };
    println!(
        "pipeline benchmark: {n} commands per round, {rounds} rounds, {partitions} partitions, broker {engine} ({bootstrap})"
    );

    let (mut pipeline, mut raw) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let h = Harness::on(bootstrap.clone(), in_process, partitions).await;
        let commands = transfers(&format!("r{round}-"), n);
        let size = commands.iter().map(|c| h.codec.encode_command(c).len()).sum::<usize>() / n;
        let raw_rate =
            raw_produce_consume(&h.kafka, &format!("{}raw", h.topics.commands), partitions, n, size).await;
        let pipeline_rate = through_processor(&h, &commands).await;
        println!(
            "round {round}: processor {pipeline_rate:>9.0} commands/s | raw rdkafka {raw_rate:>9.0} records/s ({size} B) | ratio {:.2}",
            pipeline_rate / raw_rate
        );
        pipeline.push(pipeline_rate);
        raw.push(raw_rate);
    }
    let (p, r) = (median(&mut pipeline), median(&mut raw));
    println!("median: processor {p:.0} commands/s, raw {r:.0} records/s, ratio {:.2} (goal >= 0.5)", p / r);

    if knob("TALLY_BENCH_HTTP_SECONDS", 10) == 0 {
        return;
    }
    for fetch_wait_ms in [tally_kafka::config::DEFAULT_FETCH_WAIT_MS, 5] {
        let mut h = Harness::on(bootstrap.clone(), in_process, partitions).await;
        h.kafka.fetch_wait_ms = fetch_wait_ms;
        println!("http, consumers' fetch.wait.max.ms = {fetch_wait_ms}:");
        let hop = hop_latency(&h.kafka, &format!("{}hop", h.topics.commands)).await;
        println!(
            "  baseline: one record produced and consumed, one at a time: p50 {:.1} ms, p99 {:.1} ms (an HTTP command takes two such hops)",
            hop.0, hop.1
        );
        http_latency(&h).await;
    }
    drop(broker);
}

/// Transfers from `world` to 1,000 accounts per tenant, spread over the tenants (and so over
/// partitions); ids start with `prefix`.
fn transfers(prefix: &str, n: usize) -> Vec<Command> {
    (0..n)
        .map(|i| {
            let tenant = format!("tenant{}", i % TENANTS);
            let to = format!("acct{}", i % 1000);
            transfer(&tenant, &format!("{prefix}{i}"), "world", &to, 1)
        })
        .collect()
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Commands per second from the first produce to the last answer read from `events`.
async fn through_processor(h: &Harness, commands: &[Command]) -> f64 {
    let processor = Processor::build(h.processor("bench")).unwrap().run(CancellationToken::new());
    // Warm up: the group forms, every partition is restored and answers.
    let setup: Vec<Command> = (0..TENANTS).map(|t| define_usd(&format!("tenant{t}"), "usd")).collect();
    h.send(&setup).await;
    h.settled(Duration::from_secs(60)).await;

    let payloads: Vec<(String, Vec<u8>)> =
        commands.iter().map(|c| (c.kafka_key(), h.codec.encode_command(c))).collect();
    let codec = Codec::new();
    let answers = follow(&h.kafka, &h.topics.events, h.partitions, commands.len(), move |payload| {
        matches!(codec.decode_log_record(payload), Ok(LogRecord::Event { event, .. })
            if event.command_id.as_str().starts_with('r'))
    });
    let started = Instant::now();
    produce_all(h, &h.topics.commands, &payloads).await;
    let finished = answers.await.unwrap();
    processor.stop().await.unwrap();
    commands.len() as f64 / (finished - started).as_secs_f64()
}

/// Records per second for `n` records of `size` bytes produced to a fresh topic and consumed back.
async fn raw_produce_consume(
    kafka: &KafkaOptions,
    topic: &str,
    partitions: i32,
    n: usize,
    size: usize,
) -> f64 {
    let spec = TopicSpec::plain(topic, partitions);
    ensure_topics(kafka, &[spec]).await.unwrap();
    let payloads: Vec<(String, Vec<u8>)> =
        (0..n).map(|i| (format!("tenant{}/main", i % TENANTS), vec![b'x'; size])).collect();
    let consumed = follow(kafka, topic, partitions, n, |_| true);
    let producer = kafka.producer("bench-raw").create().unwrap();
    let started = Instant::now();
    send_pipelined(&producer, topic, &payloads).await;
    let finished = consumed.await.unwrap();
    n as f64 / (finished - started).as_secs_f64()
}

async fn produce_all(h: &Harness, topic: &str, payloads: &[(String, Vec<u8>)]) {
    let producer = h.kafka.producer("bench").create().unwrap();
    send_pipelined(&producer, topic, payloads).await;
}

async fn send_pipelined(
    producer: &rdkafka::producer::FutureProducer,
    topic: &str,
    payloads: &[(String, Vec<u8>)],
) {
    let mut deliveries = Vec::with_capacity(payloads.len());
    for (key, payload) in payloads {
        loop {
            match producer.send_result(FutureRecord::to(topic).key(key).payload(payload)) {
                Ok(d) => break deliveries.push(d),
                Err((rdkafka::error::KafkaError::MessageProduction(_), _)) => {
                    tokio::time::sleep(Duration::from_millis(1)).await
                }
                Err((e, _)) => panic!("produce: {e}"),
            }
        }
    }
    for d in deliveries {
        d.await.unwrap().map_err(|(e, _)| e).expect("produced");
    }
}

/// Reads every partition of `topic` from the start on a thread; resolves to the instant the
/// `expected`-th record that `counts` was read.
fn follow(
    kafka: &KafkaOptions,
    topic: &str,
    partitions: i32,
    expected: usize,
    counts: impl Fn(&[u8]) -> bool + Send + 'static,
) -> tokio::task::JoinHandle<Instant> {
    let consumer: BaseConsumer = kafka.reader("bench-follow").create().unwrap();
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment.add_partition_offset(topic, p, Offset::Beginning).unwrap();
    }
    consumer.assign(&assignment).unwrap();
    tokio::task::spawn_blocking(move || {
        let mut seen = 0;
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            assert!(Instant::now() < deadline, "only {seen} of {expected} records in 600 s");
            if let Some(message) = consumer.poll(Duration::from_millis(100)) {
                let message = message.expect("consume");
                if counts(message.payload().unwrap_or_default()) {
                    seen += 1;
                    if seen == expected {
                        return Instant::now();
                    }
                }
            }
        }
    })
}

/// p50 and p99 (milliseconds) of one Kafka hop on this broker: a record produced, then read
/// by a consumer that was waiting for it; 300 times, one after the other.
async fn hop_latency(kafka: &KafkaOptions, topic: &str) -> (f64, f64) {
    let spec = TopicSpec::plain(topic, 1);
    ensure_topics(kafka, &[spec]).await.unwrap();
    let consumer: Arc<BaseConsumer> = Arc::new(kafka.reader("bench-hop").create().unwrap());
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, 0, Offset::Beginning).unwrap();
    consumer.assign(&assignment).unwrap();
    let producer = kafka.producer("bench-hop").create().unwrap();
    let mut hops = Vec::new();
    for i in 0..300 {
        let payload = format!("{i}");
        let waiting = {
            let consumer = consumer.clone();
            tokio::task::spawn_blocking(move || {
                while consumer.poll(Duration::from_millis(100)).is_none() {}
                Instant::now()
            })
        };
        let started = Instant::now();
        send_pipelined(&producer, topic, &[(payload.clone(), payload.into_bytes())]).await;
        hops.push((waiting.await.unwrap() - started).as_secs_f64() * 1e3);
    }
    hops.sort_by(f64::total_cmp);
    (hops[hops.len() / 2], hops[hops.len() * 99 / 100])
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// Per stage of [`tally_ingest::stages`]: the bucket bounds (seconds) with their cumulative
/// counts, the sum (seconds) and the count, as the process's default registry holds them now.
type StageHistograms = std::collections::BTreeMap<String, (Vec<(f64, u64)>, f64, u64)>;

fn stage_histograms() -> StageHistograms {
    let families = prometheus::gather();
    let Some(family) = families.iter().find(|f| f.name() == tally_ingest::stages::STAGE_SECONDS_NAME) else {
        return StageHistograms::new();
    };
    family
        .get_metric()
        .iter()
        .map(|m| {
            let stage = m.get_label().iter().find(|l| l.name() == "stage").unwrap().value().to_owned();
            let h = m.get_histogram();
            let buckets = h.get_bucket().iter().map(|b| (b.upper_bound(), b.cumulative_count())).collect();
            (stage, (buckets, h.get_sample_sum(), h.get_sample_count()))
        })
        .collect()
}

/// What each stage took between two readings: count, mean, and the p50 and p99 as the upper
/// bounds of the buckets they fall in (so "<= 2 ms" means between the bucket below and 2 ms).
fn print_stages(before: &StageHistograms, after: &StageHistograms) {
    println!("    where the time went (tally_command_stage_seconds; p50/p99 are bucket upper bounds):");
    for stage in tally_ingest::stages::Stage::ALL {
        let Some((buckets, sum, count)) = after.get(stage.label()) else { continue };
        let (old_buckets, old_sum, old_count) =
            before.get(stage.label()).cloned().unwrap_or((Vec::new(), 0.0, 0));
        let n = count - old_count;
        if n == 0 {
            continue;
        }
        let delta: Vec<(f64, u64)> = buckets
            .iter()
            .enumerate()
            .map(|(i, (bound, c))| (*bound, c - old_buckets.get(i).map_or(0, |b| b.1)))
            .collect();
        let quantile = |q: f64| {
            let rank = (n as f64 * q).ceil() as u64;
            delta.iter().find(|(_, c)| *c >= rank).map_or(f64::INFINITY, |(bound, _)| bound * 1e3)
        };
        println!(
            "      {:<12} {n:>8} observed, mean {:>7.2} ms, p50 <= {:>6.1} ms, p99 <= {:>6.1} ms",
            stage.label(),
            (sum - old_sum) / n as f64 * 1e3,
            quantile(0.50),
            quantile(0.99),
        );
    }
}

/// The front door over TCP: its highest answered rate, then latency at half that rate.
async fn http_latency(h: &Harness) {
    let seconds = knob("TALLY_BENCH_HTTP_SECONDS", 10);
    let clients = knob("TALLY_BENCH_HTTP_CLIENTS", 64);
    let processor = Processor::build(h.processor("bench-http")).unwrap().run(CancellationToken::new());
    let outcomes = Outcomes::new(1_000_000);
    let (events, partitions) = (h.topics.events.clone(), h.partitions);
    let watcher = OutcomeWatcher::build(h.kafka.clone(), events, partitions, outcomes.clone(), None)
        .run(CancellationToken::new());
    let producer = tally_kafka::Producer::new(&h.kafka, "bench-http").unwrap();
    let config = HttpConfig { wait: Duration::from_secs(30), ..HttpConfig::default() };
    let keys = Reloading::fixed("API keys", KEYS.0.clone());
    let gate = Gate::new(Authenticator::new().with_keys(keys), &GateConfig::default()).unwrap();
    let app = gate.protect(Front::new(producer, h.topics.commands.clone(), outcomes, config).router());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();

    let next = Arc::new(AtomicU64::new(0));
    for t in 0..TENANTS {
        let (status, _) = post(
            &client,
            &base,
            &format!("tenant{t}"),
            "/v1/ledgers/main/assets",
            r#"{"asset":"USD/2"}"#.into(),
        )
        .await;
        assert!(status == 201 || status == 200, "asset: {status}");
    }

    // Closed loop: the highest rate.
    let until = Instant::now() + Duration::from_secs(seconds / 2);
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let (client, base, next) = (client.clone(), base.clone(), next.clone());
            tokio::spawn(async move {
                let mut answered = 0u64;
                while Instant::now() < until {
                    let (status, _) = pay(&client, &base, next.fetch_add(1, Ordering::Relaxed)).await;
                    assert_eq!(status, 201);
                    answered += 1;
                }
                answered
            })
        })
        .collect();
    let started = Instant::now();
    let mut answered = 0;
    for w in workers {
        answered += w.await.unwrap();
    }
    let max_rate = answered as f64 / started.elapsed().as_secs_f64();
    println!("  highest answered rate {max_rate:.0} requests/s ({clients} clients in a closed loop)");

    // Open loop at half the highest rate, and at a low rate for the floor.
    for rate in [max_rate / 2.0, 100.0] {
        let before = stage_histograms();
        let latencies = open_loop(&base, &next, rate, seconds, clients).await;
        let stages = stage_histograms();
        let at = |q: f64, part: fn(&(Duration, Duration)) -> Duration| {
            let mut xs: Vec<Duration> = latencies.iter().map(part).collect();
            xs.sort();
            xs[((xs.len() as f64 * q) as usize).min(xs.len() - 1)].as_secs_f64() * 1e3
        };
        println!(
            "  at {rate:.0} requests/s for {seconds} s ({} requests): p50 {:.1} ms, p99 {:.1} ms (goal p99 <= 20 ms); \
             of which until the processor decided: p50 {:.0} ms, p99 {:.0} ms",
            latencies.len(),
            at(0.50, |l| l.0),
            at(0.99, |l| l.0),
            at(0.50, |l| l.1),
            at(0.99, |l| l.1),
        );
        print_stages(&before, &stages);
    }

    server.abort();
    watcher.stop().await.unwrap();
    processor.stop().await.unwrap();
}

/// Requests due at `rate` for `seconds` over `connections` connections, request `i` on
/// connection `i % connections` (wrk2's model): a request due while its connection is still
/// busy waits, and the wait counts. Per request: the time from when it was due to its answer,
/// and to the processor's decision (the event's time, millisecond resolution). A task per
/// request on one shared client, as this first did, let the client open a new connection for
/// every request that found none idle (see the query benchmark in BENCHMARKS.md).
async fn open_loop(
    base: &str,
    next: &Arc<AtomicU64>,
    rate: f64,
    seconds: u64,
    connections: u64,
) -> Vec<(Duration, Duration)> {
    let interval = Duration::from_secs_f64(1.0 / rate);
    let total = (rate * seconds as f64) as u64;
    let start = tokio::time::Instant::now();
    let senders: Vec<_> = (0..connections)
        .map(|c| {
            let (base, next) = (base.to_owned(), next.clone());
            // One client per connection: its requests go one after another, so it keeps one.
            let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                for i in (c..total).step_by(connections as usize) {
                    let scheduled = start + interval.mul_f64(i as f64);
                    tokio::time::sleep_until(scheduled).await;
                    let due_wall = std::time::SystemTime::now() - scheduled.elapsed();
                    let (status, body) = pay(&client, &base, next.fetch_add(1, Ordering::Relaxed)).await;
                    let took = scheduled.elapsed();
                    assert_eq!(status, 201);
                    let outcome: serde_json::Value = serde_json::from_slice(&body).unwrap();
                    let decided = std::time::UNIX_EPOCH
                        + Duration::from_millis(outcome["event"]["time_ms"].as_u64().unwrap());
                    latencies.push((took, decided.duration_since(due_wall).unwrap_or_default()));
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(total as usize);
    for s in senders {
        latencies.extend(s.await.unwrap());
    }
    latencies
}

async fn pay(client: &HttpClient, base: &str, i: u64) -> (u16, Bytes) {
    let tenant = format!("tenant{}", i as usize % TENANTS);
    let body = format!(
        r#"{{"tx_id":"h{i}","postings":[{{"source":"world","destination":"acct{}","asset":"USD/2","amount":1}}]}}"#,
        i % 1000
    );
    post(client, base, &tenant, "/v1/ledgers/main/transactions", body).await
}

async fn post(client: &HttpClient, base: &str, tenant: &str, path: &str, body: String) -> (u16, Bytes) {
    let request = hyper::Request::post(format!("{base}{path}"))
        .header("content-type", "application/json")
        .header("authorization", KEYS.1[tenant].as_str())
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let response = client.request(request).await.expect("http request");
    let status = response.status().as_u16();
    (status, response.into_body().collect().await.unwrap().to_bytes())
}

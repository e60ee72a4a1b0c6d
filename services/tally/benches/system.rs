//! The whole way a user cares about: an Avro command produced to `commands`, as another team's
//! producer would, until its effect is readable through the query API. Runs the real `tally dev`
//! binary (broker or real Kafka, processor, projector, query API in one process). Prints
//! figures; asserts nothing.
//!
//! `cargo bench -p tally --bench system`
//!
//! Knobs (environment):
//! - `TALLY_BENCH_COMMANDS` (default 20,000): transfers per throughput round;
//! - `TALLY_BENCH_ROUNDS` (default 3): rounds; figures are the median, with the range;
//! - `TALLY_BENCH_SECONDS` (default 10): length of the latency phase;
//! - `TALLY_BENCH_SOAK_SECONDS` (default 0: none): a last phase at half the sustained rate,
//!   with `tally dev`'s resident memory printed every 10 seconds; `TALLY_BENCH_SOAK_RATE`
//!   (commands per second) sets another rate;
//! - `TALLY_BENCH_FETCH_WAIT_MS` (default 50, tally dev's): `tally dev --kafka-fetch-wait-ms`,
//!   and the baseline consumer's `fetch.wait.max.ms`;
//! - `TALLY_BENCH_STATE_WINDOW` (default 100,000, tally dev's): `tally dev --state-window`;
//! - `TALLY_TEST_KAFKA=host:port`: a real Kafka (fresh topic prefix, projections in a redb file
//!   under a temporary `--data-dir`) instead of the in-process broker (memory) and store;
//! - `TALLY_BENCH_CASSANDRA=host:port` (with `TALLY_TEST_KAFKA`): projections in a fresh
//!   keyspace of that Cassandra or Scylla (replication factor 1) instead of the redb file.
//!
//! Each round: (1) the baseline, records of a transfer command's size produced to a fresh plain
//! topic of the same broker and consumed back (same client library, default settings); (2)
//! `TALLY_BENCH_COMMANDS` transfers produced as fast as the producer takes them, timed until
//! every one is readable (the system's rate; the processor's own rate is the pipeline
//! benchmark's). Then, at half the median system rate, each command is timed from when it
//! was due to when its event arrives on the query API's live stream of its ledger
//! (`/v1/events/live`, `tally dev --query-follow-poll-ms 1`, so the stream looks every
//! millisecond). Readable there means committed to the store with its rows: the live stream reads
//! the same store, after the same commit, as every other query.

#[path = "../../../tests/tally_dev/mod.rs"]
mod tally_dev;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, TopicPartitionList};
use std::collections::HashMap;
use std::io::BufRead;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tally_codec::Codec;
use tally_core::{AccountId, Actor, Asset, Command, CommandBody, CommandId, LedgerId, Posting, TenantId};
use tally_core::{TxId, TxRequest};

/// The streams written: two tenants (the test keys' acme and globex), two ledgers each.
const STREAMS: [(&str, &str, &str); 4] = [
    ("acme", "bench-a", tally_dev::ACME),
    ("acme", "bench-b", tally_dev::ACME),
    ("globex", "bench-a", tally_dev::GLOBEX),
    ("globex", "bench-b", tally_dev::GLOBEX),
];

/// Accounts the transfers pay into (from `world`).
const ACCOUNTS: usize = 10_000;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn command(tenant: &str, id: &str, body: CommandBody) -> Command {
    Command {
        tenant: TenantId::parse(tenant).unwrap(),
        command_id: CommandId::parse(id).unwrap(),
        actor: Actor::parse("bench").unwrap(),
        body,
    }
}

fn usd() -> Asset {
    Asset::parse("USD/2").unwrap()
}

/// Transfer `tx` of stream `s`: 1.00 USD from `world` to one of [`ACCOUNTS`].
fn transfer(s: usize, tx: &str, i: usize) -> Command {
    let (tenant, ledger, _) = STREAMS[s];
    let posting = Posting {
        source: AccountId::world(),
        destination: AccountId::parse(format!("acct-{}", i % ACCOUNTS)).unwrap(),
        asset: usd(),
        amount: 100,
    };
    let request = TxRequest::Transfer {
        postings: vec![posting],
        metadata: Default::default(),
        pending_timeout_ms: None,
    };
    let body = CommandBody::Transact {
        ledger: LedgerId::parse_ledger(ledger).unwrap(),
        tx_id: TxId::parse(tx).unwrap(),
        request,
    };
    command(tenant, tx, body)
}

/// When each transaction id was seen on the live streams.
type Seen = Arc<Mutex<HashMap<String, Instant>>>;

/// Follows stream `s` on the query API's live endpoint from the start, noting when each
/// transaction's event arrives. Runs until the process ends.
fn follow(query: String, s: usize, seen: Seen) {
    let (_, ledger, key) = STREAMS[s];
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let url = format!("http://{query}/v1/events/live?stream={ledger}");
    let response = agent.get(&url).header("authorization", key).call().expect("live stream");
    assert_eq!(response.status(), 200, "live stream of {ledger}");
    let reader = std::io::BufReader::new(response.into_body().into_reader());
    // The stream ends when tally dev does, at the end of the benchmark.
    for line in reader.lines().map_while(Result::ok) {
        let Some(data) = line.strip_prefix("data:") else { continue };
        let at = Instant::now();
        let view: serde_json::Value = serde_json::from_str(data.trim()).expect("event JSON");
        if let Some(tx) = find(&view, "tx_id") {
            seen.lock().unwrap().insert(format!("{}/{tx}", STREAMS[s].0), at);
        }
    }
}

/// The first string under key `name` anywhere in `value`.
fn find<'a>(value: &'a serde_json::Value, name: &str) -> Option<&'a str> {
    match value {
        serde_json::Value::Object(map) => {
            map.get(name).and_then(|v| v.as_str()).or_else(|| map.values().find_map(|v| find(v, name)))
        }
        serde_json::Value::Array(items) => items.iter().find_map(|v| find(v, name)),
        _ => None,
    }
}

/// The resident memory of process `pid`, in MiB (Linux `/proc`).
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok());
    kib.unwrap_or(f64::NAN) / 1024.0
}

struct Bench {
    dev: tally_dev::Dev,
    bootstrap: String,
    commands: String,
    producer: FutureProducer,
    codec: Codec,
    seen: Seen,
    /// Per stream, the id of the next transfer.
    next: [usize; STREAMS.len()],
}

impl Bench {
    /// Sends the commands (key: the stream, as Tally's own producers do); returns once every one
    /// was acknowledged by the broker.
    async fn send(&self, commands: &[Command]) {
        let mut deliveries = Vec::with_capacity(commands.len());
        for c in commands {
            let (key, payload) = (c.kafka_key(), self.codec.encode_command(c));
            let record = FutureRecord::to(&self.commands).key(&key).payload(&payload);
            deliveries.push(self.producer.send_result(record).map_err(|(e, _)| e).expect("queued"));
        }
        for d in deliveries {
            d.await.unwrap().map_err(|(e, _)| e).expect("produced");
        }
    }

    /// The next `n` transfers, spread over the streams, with the key each is seen under.
    fn transfers(&mut self, n: usize, round: &str) -> Vec<(String, Command)> {
        (0..n)
            .map(|i| {
                let s = i % STREAMS.len();
                let tx = format!("{round}-{s}-{}", self.next[s]);
                self.next[s] += 1;
                (format!("{}/{tx}", STREAMS[s].0), transfer(s, &tx, self.next[s]))
            })
            .collect()
    }

    async fn wait_seen(&self, keys: &[String], deadline: Duration) -> Instant {
        let started = Instant::now();
        loop {
            {
                let seen = self.seen.lock().unwrap();
                if keys.iter().all(|k| seen.contains_key(k)) {
                    return keys.iter().map(|k| seen[k]).max().unwrap();
                }
            }
            if started.elapsed() > deadline {
                let missing = keys.iter().filter(|k| !self.seen.lock().unwrap().contains_key(*k)).count();
                panic!("{missing} of {} commands not readable within {deadline:?}", keys.len());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// Raw produce-and-consume of `n` records of `size` bytes through a fresh 2-partition topic
/// of the same broker, the consumer waiting at most `fetch_wait_ms` for a fetch as Tally's do;
/// records per second from the first send to the last record read.
async fn baseline(bootstrap: &str, n: usize, size: usize, round: usize, fetch_wait_ms: &str) -> f64 {
    let topic = format!("bench-raw-{}-{round}-{}", std::process::id(), now_nanos());
    let admin: rdkafka::admin::AdminClient<_> =
        ClientConfig::new().set("bootstrap.servers", bootstrap).create().expect("admin");
    let new = rdkafka::admin::NewTopic::new(&topic, 2, rdkafka::admin::TopicReplication::Fixed(1));
    admin.create_topics([&new], &rdkafka::admin::AdminOptions::new()).await.expect("create raw topic");
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("{topic}-reader"))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", fetch_wait_ms)
        .create()
        .expect("consumer");
    let mut partitions = TopicPartitionList::new();
    partitions.add_partition_offset(&topic, 0, rdkafka::Offset::Beginning).unwrap();
    partitions.add_partition_offset(&topic, 1, rdkafka::Offset::Beginning).unwrap();
    consumer.assign(&partitions).unwrap();
    let producer: FutureProducer = ClientConfig::new().set("bootstrap.servers", bootstrap).create().unwrap();
    let payload = vec![7u8; size];
    let started = Instant::now();
    let reader = tokio::task::spawn_blocking(move || {
        let mut read = 0;
        while read < n {
            if let Some(message) = consumer.poll(Duration::from_millis(100)) {
                read += usize::from(message.expect("raw read").payload().is_some());
            }
        }
        Instant::now()
    });
    let mut deliveries = Vec::with_capacity(n);
    for i in 0..n {
        let key = format!("k{}", i % 64);
        let record = FutureRecord::to(&topic).key(&key).payload(&payload);
        deliveries.push(producer.send_result(record).map_err(|(e, _)| e).expect("queued"));
    }
    for d in deliveries {
        d.await.unwrap().map_err(|(e, _)| e).expect("produced");
    }
    let ended = reader.await.unwrap();
    n as f64 / ended.duration_since(started).as_secs_f64()
}

fn now_nanos() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
}

/// The median and the range of `values`.
fn median(values: &[f64]) -> (f64, f64, f64) {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    (sorted[sorted.len() / 2], sorted[0], sorted[sorted.len() - 1])
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n = env("TALLY_BENCH_COMMANDS", 20_000) as usize;
    let rounds = env("TALLY_BENCH_ROUNDS", 3) as usize;
    let latency_seconds = env("TALLY_BENCH_SECONDS", 10);
    let soak_seconds = env("TALLY_BENCH_SOAK_SECONDS", 0);
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().to_str().unwrap().to_owned();
    // tally dev's default fetch wait unless told otherwise; the baseline uses the same.
    let fetch_wait_ms = env("TALLY_BENCH_FETCH_WAIT_MS", 50).to_string();
    // tally dev's default window, not the few events the test harness gives every test.
    let state_window = env("TALLY_BENCH_STATE_WINDOW", 100_000).to_string();
    let mut args: Vec<String> = [
        "--query-follow-poll-ms",
        "1",
        "--kafka-fetch-wait-ms",
        &fetch_wait_ms,
        "--state-window",
        &state_window,
    ]
    .map(String::from)
    .to_vec();
    let real_kafka = std::env::var("TALLY_TEST_KAFKA").ok().filter(|s| !s.is_empty());
    let cassandra =
        std::env::var("TALLY_BENCH_CASSANDRA").ok().filter(|s| !s.is_empty() && real_kafka.is_some());
    if let Some(nodes) = &cassandra {
        let keyspace = format!("tally_bench_{}_{}", std::process::id(), now_nanos());
        let replication = "{'class': 'SimpleStrategy', 'replication_factor': 1}";
        let schema = [
            "schema",
            "--scylla-nodes",
            nodes,
            "--scylla-keyspace",
            &keyspace,
            "--scylla-replication",
            replication,
        ];
        let applied = tally_dev::tally(&schema);
        assert!(String::from_utf8_lossy(&applied.stdout).contains("schema applied"), "{applied:?}");
        args.extend(
            ["--store", "scylla", "--scylla-nodes", nodes, "--scylla-keyspace", &keyspace].map(String::from),
        );
    }
    let prefix = match &real_kafka {
        Some(kafka) => {
            let prefix = format!("bench-{}-{}.", std::process::id(), now_nanos());
            args.extend(
                ["--kafka", kafka, "--topic-prefix", &prefix, "--data-dir", &data_dir].map(String::from),
            );
            prefix
        }
        None => "tally.".to_owned(), // tally dev's default prefix
    };
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let dev = tally_dev::Dev::start(&args);
    dev.wait_until_writes_are_answered();
    let bootstrap = dev.kafka.clone();
    let on = match (real_kafka, &cassandra) {
        (Some(_), Some(nodes)) => format!("Kafka at {bootstrap}, projections in Cassandra at {nodes}"),
        (Some(_), None) => format!("Kafka at {bootstrap}, projections in a redb file"),
        (None, _) => "the in-process broker (memory), projections in memory (redb)".to_owned(),
    };
    let producer: FutureProducer = ClientConfig::new().set("bootstrap.servers", &bootstrap).create().unwrap();
    let mut bench = Bench {
        dev,
        bootstrap,
        commands: format!("{prefix}commands"),
        producer,
        codec: Codec::new(),
        seen: Arc::new(Mutex::new(HashMap::new())),
        next: [0; STREAMS.len()],
    };
    let setup: Vec<Command> = STREAMS
        .iter()
        .map(|&(tenant, ledger, _)| {
            let body =
                CommandBody::DefineAsset { ledger: LedgerId::parse_ledger(ledger).unwrap(), asset: usd() };
            command(tenant, &format!("define-{ledger}"), body)
        })
        .collect();
    bench.send(&setup).await;
    for s in 0..STREAMS.len() {
        let (query, seen) = (bench.dev.query.clone(), bench.seen.clone());
        std::thread::spawn(move || follow(query, s, seen));
    }
    // Warm-up: one transfer per stream, readable, before anything is timed.
    let warm = bench.transfers(STREAMS.len(), "warm");
    bench.send(&warm.iter().map(|(_, c)| c.clone()).collect::<Vec<_>>()).await;
    bench.wait_seen(&warm.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(), Duration::from_secs(60)).await;
    let size = bench.codec.encode_command(&warm[0].1).len();
    println!(
        "system benchmark: tally dev on {on}; {n} transfers per round ({size}-byte Avro commands), {rounds} rounds, {} streams",
        STREAMS.len()
    );

    let (mut raw, mut system) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        eprintln!("round {round}: baseline ...");
        let raw_rate = baseline(&bench.bootstrap, n, size, round, &fetch_wait_ms).await;
        eprintln!("round {round}: baseline {raw_rate:.0} records/s; producing {n} commands ...");
        let commands = bench.transfers(n, &format!("r{round}"));
        let keys: Vec<String> = commands.iter().map(|(k, _)| k.clone()).collect();
        let started = Instant::now();
        let batch: Vec<Command> = commands.into_iter().map(|(_, c)| c).collect();
        bench.send(&batch).await;
        eprintln!(
            "round {round}: produced in {:.1} s; waiting until readable ...",
            started.elapsed().as_secs_f64()
        );
        let readable = bench.wait_seen(&keys, Duration::from_secs(600)).await;
        let system_rate = n as f64 / readable.duration_since(started).as_secs_f64();
        println!(
            "round {round}: raw {raw_rate:>8.0} records/s | whole system (until readable) {system_rate:>7.0} commands/s | \
             ratio to raw {:.2} | rss {:.0} MiB",
            system_rate / raw_rate,
            rss_mib(bench.dev.pid())
        );
        raw.push(raw_rate);
        system.push(system_rate);
    }
    let ratios: Vec<f64> = system.iter().zip(&raw).map(|(s, r)| s / r).collect();
    let show = |(m, lo, hi): (f64, f64, f64)| format!("{m:.0} ({lo:.0}-{hi:.0})");
    let show2 = |(m, lo, hi): (f64, f64, f64)| format!("{m:.2} ({lo:.2}-{hi:.2})");
    println!("median (range) of {rounds} rounds:");
    println!("  raw produce+consume:            {} records/s", show(median(&raw)));
    println!("  whole system, until readable:   {} commands/s", show(median(&system)));
    println!("  ratio system / raw:             {}", show2(median(&ratios)));

    let rate = median(&system).0 / 2.0;
    let lags = paced(&mut bench, rate, Duration::from_secs(latency_seconds), "lat", |_| {}).await;
    let at = |q: f64| lags[((lags.len() - 1) as f64 * q) as usize];
    println!(
        "produce-to-readable at {rate:.0} commands/s (half the median), {} commands: p50 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms",
        lags.len(),
        at(0.5),
        at(0.99),
        at(0.999)
    );
    println!("resident memory of tally dev: {:.0} MiB", rss_mib(bench.dev.pid()));
    if soak_seconds > 0 {
        let rate = env("TALLY_BENCH_SOAK_RATE", rate as u64) as f64;
        println!("soak: {soak_seconds} s at {rate:.0} commands/s; tally dev's resident memory every 10 s:");
        let pid = bench.dev.pid();
        let mut last = Instant::now();
        let soak_started = Instant::now();
        let lags = paced(&mut bench, rate, Duration::from_secs(soak_seconds), "soak", move |sent| {
            if last.elapsed() >= Duration::from_secs(10) {
                last = Instant::now();
                let at = soak_started.elapsed().as_secs();
                println!("  {at:>4} s  {sent:>9} commands  rss {:.0} MiB", rss_mib(pid));
            }
        })
        .await;
        let at = |q: f64| lags[((lags.len() - 1) as f64 * q) as usize];
        println!(
            "  soak produce-to-readable: p50 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms",
            at(0.5),
            at(0.99),
            at(0.999)
        );
    }
}

/// Produces transfers at `rate` per second for `length`, each due at its place in the
/// schedule; returns each one's time from due to readable, in milliseconds, sorted. `tick` is
/// called about every millisecond with the number sent so far.
async fn paced(
    bench: &mut Bench,
    rate: f64,
    length: Duration,
    name: &str,
    mut tick: impl FnMut(usize),
) -> Vec<f64> {
    let total = (rate * length.as_secs_f64()) as usize;
    let commands = bench.transfers(total, name);
    let started = Instant::now();
    let mut due = Vec::with_capacity(total);
    // Acknowledgements are awaited beside the schedule, so a slow one does not delay the next send.
    let (acks, mut pending) = tokio::sync::mpsc::unbounded_channel::<rdkafka::producer::DeliveryFuture>();
    let acknowledged = tokio::spawn(async move {
        while let Some(d) = pending.recv().await {
            d.await.unwrap().map_err(|(e, _)| e).expect("produced");
        }
    });
    let mut sent = 0;
    while sent < total {
        let now = Instant::now();
        while sent < total && started + Duration::from_secs_f64(sent as f64 / rate) <= now {
            let (key, command) = &commands[sent];
            let (kafka_key, payload) = (command.kafka_key(), bench.codec.encode_command(command));
            let record = FutureRecord::to(&bench.commands).key(&kafka_key).payload(&payload);
            acks.send(bench.producer.send_result(record).map_err(|(e, _)| e).expect("queued")).unwrap();
            due.push((key.clone(), started + Duration::from_secs_f64(sent as f64 / rate)));
            sent += 1;
        }
        tick(sent);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    drop(acks);
    acknowledged.await.unwrap();
    let keys: Vec<String> = due.iter().map(|(k, _)| k.clone()).collect();
    bench.wait_seen(&keys, Duration::from_secs(600)).await;
    let seen = bench.seen.lock().unwrap();
    let mut lags: Vec<f64> =
        due.iter().map(|(k, at)| seen[k].saturating_duration_since(*at).as_secs_f64() * 1000.0).collect();
    lags.sort_by(f64::total_cmp);
    lags
}

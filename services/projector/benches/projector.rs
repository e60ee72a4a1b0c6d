//! The projector's throughput and lag on the in-process broker or a real Kafka, into the embedded
//! store and, when one is given, Cassandra or Scylla. Prints figures; asserts nothing.
//!
//! `cargo bench -p tally-projector --bench projector`
//! (`TALLY_BENCH_EVENTS`, default 200,000; `TALLY_BENCH_FETCH_WAIT_MS`, default 50;
//! `TALLY_BENCH_BATCH_MAX`, most events per commit, default the projector's 1,000;
//! `TALLY_TEST_KAFKA=host:port`: a real Kafka instead of the in-process broker;
//! `TALLY_TEST_SCYLLA=host:port`: also into a fresh keyspace there)
//!
//! 1. Throughput: the same events (transfers, as the processor writes them) are consumed by a
//!    group with a no-op handler, then folded by the projector into an embedded store on disk
//!    (one durable commit per batch). Ratio = projector rate / no-op rate.
//! 2. Lag: with the projector caught up, events are produced at half the projector's maximum
//!    rate; each event's lag is from just before it is produced to when a commit covering it is
//!    seen in the store (polled every millisecond).

use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tally_codec::Codec;
use tally_core::testkit;
use tally_kafka::config::KafkaOptions;
use tally_kafka::topics::{TopicLayout, TopicSpec, Topics, ensure_topics};
use tally_kafka::{Assignment, BrokerStorage, EmbeddedBroker, GroupConfig, PartitionGroup, PartitionOwner};
use tally_kafka::{Record, RunningPartitions};
use tally_projector::{Projector, ProjectorConfig, ProjectorStatus};
use tally_runtime::Handle;
use tally_store::projections::ProjectionStore;
use tally_store::{EmbeddedStore, ScyllaConfig, ScyllaStore};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const PARTITIONS: i32 = 2;

type Store = Arc<dyn ProjectionStore>;

/// Opens a fresh store at a path.
type Open = fn(&std::path::Path) -> Store;

/// The stores measured: the embedded one (a candidate to compare goes here; see BENCHMARKS.md),
/// and Cassandra or Scylla when `TALLY_TEST_SCYLLA` names one.
fn stores() -> Vec<(&'static str, Open)> {
    let mut stores: Vec<(&'static str, Open)> =
        vec![("redb-file", |path| Arc::new(EmbeddedStore::open(&path.with_extension("redb")).unwrap()))];
    if std::env::var("TALLY_TEST_SCYLLA").is_ok_and(|nodes| !nodes.is_empty()) {
        stores.push(("cassandra", open_cassandra));
    }
    stores
}

/// A fresh keyspace on `TALLY_TEST_SCYLLA` (replication 1; left behind for inspection).
fn open_cassandra(_: &std::path::Path) -> Store {
    let nodes = std::env::var("TALLY_TEST_SCYLLA").unwrap().split(',').map(str::to_owned).collect();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let mut config = ScyllaConfig::new(nodes, format!("tally_bench_{}_{nanos}", std::process::id()));
    config.replication = "{'class': 'SimpleStrategy', 'replication_factor': 1}".into();
    // The store's client runs a runtime of its own, which may not start on this one's workers.
    Arc::new(tokio::task::block_in_place(|| ScyllaStore::connect(&config, true)).unwrap())
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).init();
    let n = env("TALLY_BENCH_EVENTS", 200_000) as usize;
    let real_kafka = std::env::var("TALLY_TEST_KAFKA").ok().filter(|s| !s.is_empty());
    let broker = match real_kafka {
        Some(_) => None,
        None => Some(EmbeddedBroker::start(BrokerStorage::Memory, 0).await.expect("broker")),
    };
    let bootstrap = broker.as_ref().map_or_else(|| real_kafka.clone().unwrap(), |b| b.bootstrap_servers());
    let fetch_wait_ms = env("TALLY_BENCH_FETCH_WAIT_MS", 50) as u32;
    let kafka = KafkaOptions { fetch_wait_ms, ..KafkaOptions::new(bootstrap) };
    let codec = Codec::new();
    let logs: Vec<Vec<Vec<u8>>> = (0..PARTITIONS)
        .map(|p| {
            let records = testkit::transfers_log(&format!("bench-{p}"), n / PARTITIONS as usize);
            records.iter().map(|r| codec.encode_log_record(r)).collect()
        })
        .collect();
    let total: usize = logs.iter().map(Vec::len).sum();
    let topics = fresh_topics(&kafka, "tp", broker.is_some()).await;
    let producer: FutureProducer = kafka.producer("bench").create().unwrap();
    for (p, log) in logs.iter().enumerate() {
        produce_all(&producer, &topics.events, p as i32, log).await;
    }
    let on = if broker.is_some() {
        "the in-process broker".to_owned()
    } else {
        format!("Kafka at {}", kafka.bootstrap_servers)
    };
    println!(
        "projector benchmark: {total} events in {PARTITIONS} partitions on {on}, fetch wait {fetch_wait_ms} ms"
    );

    let noop = noop_rate(&kafka, &topics.events, total).await;
    println!("no-op consumer:         {noop:>9.0} events/s");
    let ends: Vec<i64> = logs.iter().map(|log| log.len() as i64 - 1).collect();
    for (name, open) in stores() {
        let dir = tempfile::tempdir().unwrap();
        let projected = projector_rate(&kafka, &topics.events, open(&dir.path().join("rate")), &ends).await;
        println!("projector ({name}): {projected:>9.0} events/s");
        println!("  ratio projector / no-op: {:.2} (goal at least 0.5)", projected / noop);
        let rate = projected / 2.0;
        let (p50, p99, count) =
            lag_at(&kafka, &codec, rate, name, open(&dir.path().join("lag")), broker.is_some()).await;
        println!(
            "  lag at {rate:.0} events/s (half the maximum), {count} events: p50 {p50:.1} ms, p99 {p99:.1} ms (goal p99 at most 50 ms)"
        );
    }
}

async fn fresh_topics(kafka: &KafkaOptions, name: &str, in_process: bool) -> Topics {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let topics = Topics::with_prefix(&format!("bench-{name}-{}-{nanos}.", std::process::id()));
    let mut specs = topics.specs(&TopicLayout::new(PARTITIONS, 1));
    if in_process {
        specs = specs.into_iter().map(TopicSpec::for_in_process_broker).collect();
    }
    ensure_topics(kafka, &specs).await.expect("topics");
    topics
}

async fn produce_all(producer: &FutureProducer, topic: &str, partition: i32, log: &[Vec<u8>]) {
    let mut in_flight = std::collections::VecDeque::new();
    for payload in log {
        let record = FutureRecord::<(), _>::to(topic).partition(partition).payload(payload);
        in_flight.push_back(producer.send_result(record).map_err(|(e, _)| e).expect("queued"));
        if in_flight.len() >= 10_000 {
            in_flight.pop_front().unwrap().await.unwrap().map_err(|(e, _)| e).expect("produced");
        }
    }
    for delivery in in_flight {
        delivery.await.unwrap().map_err(|(e, _)| e).expect("produced");
    }
}

/// Counts records and says they are handled; nothing else.
struct Noop {
    received: AtomicU64,
    started: Mutex<Option<Instant>>,
}

impl PartitionOwner for Noop {
    type Error = std::convert::Infallible;

    async fn own(
        self: Arc<Self>,
        assignment: Assignment,
        mut records: mpsc::Receiver<Record>,
    ) -> Result<(), Self::Error> {
        self.started.lock().unwrap().get_or_insert_with(Instant::now);
        assignment.start_at(0);
        let mut batch = Vec::with_capacity(1000);
        while records.recv_many(&mut batch, 1000).await > 0 {
            let next = batch.last().unwrap().offset + 1;
            self.received.fetch_add(batch.len() as u64, Ordering::Relaxed);
            assignment.done_before(next);
            batch.clear();
        }
        Ok(())
    }
}

/// Events per second through a group whose handler does nothing, from the first partition
/// task's start to the last record.
async fn noop_rate(kafka: &KafkaOptions, topic: &str, total: usize) -> f64 {
    let owner = Arc::new(Noop { received: AtomicU64::new(0), started: Mutex::new(None) });
    let config = GroupConfig {
        kafka: kafka.clone(),
        topic: topic.to_owned(),
        group_id: format!("{topic}-noop"),
        role: "bench",
        queue: 4000,
    };
    let group = PartitionGroup::join(config, owner.clone(), RunningPartitions::default()).unwrap();
    while owner.received.load(Ordering::Relaxed) < total as u64 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let started = owner.started.lock().unwrap().expect("started");
    let rate = total as f64 / started.elapsed().as_secs_f64();
    group.stop().await;
    rate
}

fn projector(kafka: &KafkaOptions, topic: &str, store: Store) -> Handle<ProjectorStatus> {
    let mut config = ProjectorConfig::new(kafka.clone(), topic, store);
    config.group_id = format!("{topic}-projector");
    config.batch_max = env("TALLY_BENCH_BATCH_MAX", config.batch_max as u64) as usize;
    Projector::build(config).unwrap().run(CancellationToken::new())
}

/// The stored checkpoints (-1: none). Blocks in place: Cassandra's client runs a runtime of its
/// own, which may not be entered from this one's workers.
fn checkpoints(store: &dyn ProjectionStore) -> Vec<i64> {
    let read = || (0..PARTITIONS).map(|p| store.checkpoint(1, p).unwrap().unwrap_or(-1)).collect();
    tokio::task::block_in_place(read)
}

/// Events per second folded and committed, from the partitions' restore to the last commit.
async fn projector_rate(kafka: &KafkaOptions, topic: &str, store: Store, ends: &[i64]) -> f64 {
    let projector = projector(kafka, topic, store.clone());
    while projector.progress().len() < PARTITIONS as usize {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let started = Instant::now();
    while checkpoints(store.as_ref()) != ends {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let rate = ends.iter().map(|e| e + 1).sum::<i64>() as f64 / started.elapsed().as_secs_f64();
    projector.stop().await.unwrap();
    rate
}

/// Produces events at `rate` for about 10 s to fresh topics with a caught-up projector; returns
/// the lag's p50 and p99 in milliseconds and the number of events.
async fn lag_at(
    kafka: &KafkaOptions,
    codec: &Codec,
    rate: f64,
    name: &str,
    store: Store,
    in_process: bool,
) -> (f64, f64, usize) {
    let topics = fresh_topics(kafka, &format!("lag-{name}"), in_process).await;
    let projector = projector(kafka, &topics.events, store.clone());
    while projector.running_partitions().len() < PARTITIONS as usize {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let per_partition = (rate * 10.0) as usize / PARTITIONS as usize;
    let logs: Vec<Vec<Vec<u8>>> = (0..PARTITIONS)
        .map(|p| {
            let records = testkit::transfers_log(&format!("lag-{p}"), per_partition);
            records.iter().map(|r| codec.encode_log_record(r)).collect()
        })
        .collect();
    let sent_at: Arc<Mutex<Vec<Vec<Instant>>>> = Arc::new(Mutex::new(vec![Vec::new(); PARTITIONS as usize]));
    let len = logs[0].len();
    let watcher = tokio::spawn(watch_commits(store.clone(), sent_at.clone(), len));
    let producer: FutureProducer = kafka.producer("bench-lag").create().unwrap();
    // Connect the producer and learn the topic's leaders first: the first records' lag would
    // otherwise include the producer's start-up (measured: p99 ~0.5 s in the first second).
    for p in 0..PARTITIONS {
        let record = FutureRecord::<(), _>::to(&topics.commands).partition(p).payload("warm-up");
        producer.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e).expect("warm-up");
    }
    producer.client().fetch_metadata(Some(&topics.events), Duration::from_secs(10)).expect("metadata");
    let started = Instant::now();
    let mut deliveries = Vec::new();
    for i in 0..len {
        // Paced: record i of each partition goes out at i / (rate / partitions) seconds.
        let due = started + Duration::from_secs_f64(i as f64 * PARTITIONS as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        for (p, log) in logs.iter().enumerate() {
            sent_at.lock().unwrap()[p].push(Instant::now());
            let record = FutureRecord::<(), _>::to(&topics.events).partition(p as i32).payload(&log[i]);
            deliveries.push(producer.send_result(record).map_err(|(e, _)| e).expect("queued"));
        }
    }
    for delivery in deliveries {
        delivery.await.unwrap().map_err(|(e, _)| e).expect("produced");
    }
    let mut lags = watcher.await.unwrap();
    projector.stop().await.unwrap();
    lags.sort_by(f64::total_cmp);
    let at = |q: f64| lags[((lags.len() - 1) as f64 * q) as usize];
    (at(0.5), at(0.99), lags.len())
}

/// Polls the checkpoints every millisecond; each record a new checkpoint covers gets its lag.
async fn watch_commits(store: Store, sent_at: Arc<Mutex<Vec<Vec<Instant>>>>, len: usize) -> Vec<f64> {
    let mut seen = vec![-1i64; PARTITIONS as usize];
    let mut lags = Vec::new();
    while seen.iter().any(|&c| c + 1 < len as i64) {
        tokio::time::sleep(Duration::from_millis(1)).await;
        let now = Instant::now();
        for (p, checkpoint) in checkpoints(store.as_ref()).into_iter().enumerate() {
            let sent = sent_at.lock().unwrap();
            for offset in seen[p] + 1..=checkpoint {
                lags.push(now.duration_since(sent[p][offset as usize]).as_secs_f64() * 1000.0);
            }
            seen[p] = seen[p].max(checkpoint);
        }
    }
    lags
}

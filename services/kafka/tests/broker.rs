//! The in-process broker through rdkafka: topics with N partitions, the idempotent producer, and
//! a two-member consumer group that rebalances (a member joins, then one leaves) without losing
//! or duplicating a record. Every offset and every record id is checked.

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientContext, Message};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tally_kafka::config::KafkaOptions;
use tally_kafka::topics::{TopicSpec, ensure_topics};
use tally_kafka::{BrokerStorage, EmbeddedBroker, KafkaError};

const TOPIC: &str = "rebalance-test";
const PARTITIONS: i32 = 4;
const RECORDS: u64 = 20_000;
const RECORD_LEN: usize = 150;

/// Commits what the member has stored before its partitions are taken away, so the next owner
/// starts exactly after it.
struct CommitOnRevoke {
    revocations: AtomicUsize,
    /// Partitions assigned after the latest rebalance.
    assigned: Arc<AtomicUsize>,
}

impl ClientContext for CommitOnRevoke {}

impl ConsumerContext for CommitOnRevoke {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(_) = rebalance {
            self.revocations.fetch_add(1, Ordering::SeqCst);
            // Nothing stored yet is not an error worth failing on.
            let _ = consumer.commit_consumer_state(CommitMode::Sync);
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => self.assigned.store(tpl.count(), Ordering::SeqCst),
            Rebalance::Revoke(_) => self.assigned.store(0, Ordering::SeqCst),
            Rebalance::Error(_) => {}
        }
    }
}

#[derive(Default)]
struct Seen {
    /// (partition, offset, record id) of every record a member processed.
    records: Mutex<Vec<(i32, i64, u64)>>,
}

struct Member {
    stop: Arc<AtomicBool>,
    assigned: Arc<AtomicUsize>,
    handle: std::thread::JoinHandle<(usize, usize)>,
}

/// Runs a group member on its own thread until stopped; returns (records seen, revocations).
fn member(opts: &KafkaOptions, name: &str, seen: Arc<Seen>) -> Member {
    let stop = Arc::new(AtomicBool::new(false));
    let assigned = Arc::new(AtomicUsize::new(0));
    let consumer: BaseConsumer<CommitOnRevoke> = opts
        .consumer(name, "rebalance-test-group")
        .create_with_context(CommitOnRevoke { revocations: AtomicUsize::new(0), assigned: assigned.clone() })
        .expect("consumer");
    consumer.subscribe(&[TOPIC]).expect("subscribe");
    let stop2 = stop.clone();
    let handle = std::thread::spawn(move || {
        let mut mine = 0;
        while !stop2.load(Ordering::SeqCst) {
            let Some(result) = consumer.poll(Duration::from_millis(100)) else {
                continue;
            };
            let m = result.expect("consume");
            let id = u64::from_be_bytes(m.payload().unwrap()[..8].try_into().unwrap());
            seen.records.lock().unwrap().push((m.partition(), m.offset(), id));
            mine += 1;
            consumer.store_offset_from_message(&m).expect("store offset");
            if mine % 500 == 0 {
                consumer.commit_consumer_state(CommitMode::Sync).expect("commit");
            }
        }
        let _ = consumer.commit_consumer_state(CommitMode::Sync);
        consumer.unsubscribe();
        (mine, consumer.context().revocations.load(Ordering::SeqCst))
    });
    Member { stop, assigned, handle }
}

/// Produces records with ids in `ids` (150 bytes, the id in the first 8) and waits for every
/// delivery report.
async fn produce(producer: &FutureProducer, ids: std::ops::Range<u64>) {
    let mut pending = Vec::new();
    for id in ids {
        let mut payload = vec![0u8; RECORD_LEN];
        payload[..8].copy_from_slice(&id.to_be_bytes());
        let key = format!("key-{}", id % 97);
        pending
            .push(producer.send_result(FutureRecord::to(TOPIC).key(&key).payload(&payload)).expect("queue"));
        if pending.len() == 1_000 {
            for d in pending.drain(..) {
                d.await.unwrap().expect("delivered");
            }
        }
    }
    for d in pending {
        d.await.unwrap().expect("delivered");
    }
}

fn count(seen: &Seen) -> usize {
    seen.records.lock().unwrap().len()
}

async fn wait_for(what: &str, deadline: Instant, cond: impl Fn() -> bool) {
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalancing_group_loses_and_duplicates_nothing() {
    let broker = EmbeddedBroker::start(BrokerStorage::Memory, 0).await.unwrap();
    let opts = KafkaOptions::new(broker.bootstrap_servers());
    ensure_topics(&opts, &[TopicSpec::plain(TOPIC, PARTITIONS)]).await.unwrap();

    let seen = Arc::new(Seen::default());
    let deadline = Instant::now() + Duration::from_secs(120);
    let producer: FutureProducer = opts.producer("test-producer").create().unwrap();
    let all = |n: u64| {
        let seen = seen.clone();
        move || count(&seen) >= n as usize
    };

    // Phase 1: member a alone owns every partition.
    let joining = Instant::now();
    let a = member(&opts, "member-a", seen.clone());
    produce(&producer, 0..8_000).await;
    wait_for("a to own all partitions", deadline, || {
        a.assigned.load(Ordering::SeqCst) == PARTITIONS as usize
    })
    .await;
    println!("first group join took {:?}", joining.elapsed());
    wait_for("phase 1 records", deadline, all(8_000)).await;

    // Phase 2: member b joins; the partitions are shared.
    let rebalancing = Instant::now();
    let b = member(&opts, "member-b", seen.clone());
    wait_for("b to get partitions", deadline, || b.assigned.load(Ordering::SeqCst) > 0).await;
    println!("rebalance on join took {:?}", rebalancing.elapsed());
    wait_for("a and b to share", deadline, || {
        a.assigned.load(Ordering::SeqCst) + b.assigned.load(Ordering::SeqCst) == PARTITIONS as usize
    })
    .await;
    produce(&producer, 8_000..16_000).await;
    wait_for("phase 2 records", deadline, all(16_000)).await;

    // Phase 3: member a leaves while records are produced; b takes over every partition.
    let more = {
        let p = producer.clone();
        tokio::spawn(async move { produce(&p, 16_000..RECORDS).await })
    };
    a.stop.store(true, Ordering::SeqCst);
    let leaving = Instant::now();
    let (a_count, a_revocations) = a.handle.join().unwrap();
    more.await.unwrap();
    wait_for("b to own all partitions", deadline, || {
        b.assigned.load(Ordering::SeqCst) == PARTITIONS as usize
    })
    .await;
    println!("rebalance on leave done {:?} after a stopped", leaving.elapsed());
    wait_for("every record", deadline, all(RECORDS)).await;
    // A moment more, to catch any duplicate delivered after the last expected record.
    tokio::time::sleep(Duration::from_secs(2)).await;
    b.stop.store(true, Ordering::SeqCst);
    let (b_count, b_revocations) = b.handle.join().unwrap();

    let records = seen.records.lock().unwrap().clone();
    println!(
        "member a: {a_count} records, {a_revocations} revocations; member b: {b_count} records, {b_revocations} revocations"
    );
    assert!(a_count > 0 && b_count > 0, "both members did work");
    assert!(a_revocations >= 1, "member a saw the rebalance when b joined");

    let ids: BTreeSet<u64> = records.iter().map(|r| r.2).collect();
    assert_eq!(records.len(), RECORDS as usize, "records delivered (duplicates or losses)");
    assert_eq!(ids, (0..RECORDS).collect::<BTreeSet<_>>(), "every record id exactly once");
    let mut offsets: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for (p, o, _) in &records {
        offsets.entry(*p).or_default().push(*o);
    }
    assert_eq!(offsets.len(), PARTITIONS as usize, "records in every partition");
    for (p, mut os) in offsets {
        os.sort();
        let n = os.len() as i64;
        assert_eq!(os, (0..n).collect::<Vec<_>>(), "partition {p}: every offset once, none missing");
    }
}

#[tokio::test]
async fn topics_are_created_with_their_partition_count_and_mismatches_refused() {
    let broker = EmbeddedBroker::start(BrokerStorage::Memory, 0).await.unwrap();
    let opts = KafkaOptions::new(broker.bootstrap_servers());
    let spec = TopicSpec::plain;
    ensure_topics(&opts, &[spec("a", 4), spec("b", 2)]).await.unwrap();
    // Idempotent.
    ensure_topics(&opts, &[spec("a", 4)]).await.unwrap();
    assert_eq!(tally_kafka::topics::partition_count(&opts, "a").await.unwrap(), Some(4));
    assert_eq!(tally_kafka::topics::partition_count(&opts, "b").await.unwrap(), Some(2));
    assert_eq!(tally_kafka::topics::partition_count(&opts, "none").await.unwrap(), None);
    let err = ensure_topics(&opts, &[spec("a", 3)]).await.unwrap_err();
    assert!(matches!(err, KafkaError::PartitionMismatch { expected: 3, actual: 4, .. }), "{err}");
}

//! The processor against the in-process broker (real Kafka protocol): every command record is
//! answered exactly once as readers see the log, whatever the owners do.

mod support;

use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;
use support::*;
use tally_core::log::Verdict;
use tally_core::*;
use tally_ingest::processor::{Processor, ProcessorConfig, ProcessorStatus};
use tokio_util::sync::CancellationToken;

const SETTLE: Duration = Duration::from_secs(90);

async fn wait_running(p: &ProcessorStatus, n: usize) {
    let deadline = std::time::Instant::now() + SETTLE;
    while p.running_partitions().len() < n {
        assert!(std::time::Instant::now() < deadline, "partitions not running: {:?}", p.running_partitions());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn garbage_goes_to_the_dead_letter_topic_and_valid_commands_around_it_are_answered() {
    let h = Harness::start(2).await;
    let processor = Processor::build(h.processor("p1")).unwrap().run(CancellationToken::new());
    h.send(&[define_usd("acme", "def")]).await;
    let mut valid = 1;
    let garbage_count = 1000;
    for i in 0..garbage_count {
        let other = transfer("acme", &format!("k{i}"), "world", "alice", 1);
        let payload = h.codec.encode_command(&other);
        match i % 5 {
            // Random bytes, with and without a key.
            0 => h.send_raw(Some(b"acme/main"), format!("garbage {i}").as_bytes(), Some(i % 2)).await,
            1 => h.send_raw(None, &[0xC3, 0x01, 1, 2, 3, 4, 5, 6, 7, 8, 9], Some(i % 2)).await,
            // A valid command under a key that is not its stream, or no key.
            2 => h.send_raw(Some(b"acme/other"), &payload, Some(i % 2)).await,
            3 => h.send_raw(None, &payload, Some(i % 2)).await,
            // Truncated.
            _ => h.send_raw(Some(b"acme/main"), &payload[..payload.len() / 2], Some(i % 2)).await,
        };
        if i % 10 == 0 {
            h.send(&[transfer("acme", &format!("t{i}"), "world", "alice", 100)]).await;
            valid += 1;
        }
    }
    let log = h.settled(SETTLE).await;
    let outcomes = log.outcomes();
    assert_eq!(outcomes.len(), valid, "every valid command answered once");
    assert!(outcomes.values().all(|e| !matches!(e.body, EventBody::TransactionFailed { .. })));
    assert_eq!(log.dead_lettered(), garbage_count as usize);
    assert_eq!(balance(&log, "acme", "alice"), 100 * (valid as i128 - 1));

    // Each garbage record is in the dead-letter topic, with its reason and where it came from.
    let (kafka, topic, partitions) = (h.kafka.clone(), h.topics.dead_letter.clone(), h.partitions);
    let sources = tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = kafka.reader("dlq").create().unwrap();
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(&topic, p, rdkafka::Offset::Beginning).unwrap();
        }
        consumer.assign(&tpl).unwrap();
        let mut sources = BTreeSet::new();
        let mut reasons = HashMap::<String, usize>::new();
        while let Some(m) = consumer.poll(Duration::from_secs(2)) {
            let m = m.unwrap();
            let headers = m.headers().expect("headers");
            let get = |name: &str| {
                headers
                    .iter()
                    .find(|h| h.key == name)
                    .and_then(|h| h.value)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .unwrap_or_else(|| panic!("header {name}"))
            };
            sources.insert((get("tally-source-partition"), get("tally-source-offset")));
            *reasons.entry(get("tally-dead-letter-reason")).or_default() += 1;
            assert!(!get("tally-dead-letter-detail").is_empty());
        }
        (sources, reasons)
    })
    .await
    .unwrap();
    assert_eq!(sources.0.len(), garbage_count as usize, "every garbage record, once per source offset");
    for code in ["UNDECODABLE", "UNKNOWN_SCHEMA", "KEY_MISMATCH", "KEY_MISSING"] {
        assert!(sources.1.contains_key(code), "{code} in {:?}", sources.1);
    }
    processor.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_command_produced_twice_takes_effect_once() {
    let h = Harness::start(1).await;
    let processor = Processor::build(h.processor("p1")).unwrap().run(CancellationToken::new());
    let pay = transfer("acme", "pay-1", "world", "alice", 500);
    h.send(&[define_usd("acme", "def"), pay.clone(), pay.clone()]).await;
    // A client retry with the same transaction id under a new command id.
    let mut retry = pay.clone();
    retry.command_id = CommandId::parse("pay-1-retry").unwrap();
    h.send(&[retry]).await;
    let log = h.settled(SETTLE).await;
    let bodies: Vec<&EventBody> = log.events().map(|e| &e.body).collect();
    let posted = bodies.iter().filter(|b| matches!(b, EventBody::TransactionPosted { .. })).count();
    // The same command twice (one command id): a repeat pointing at the first answer. The same
    // transaction under a new command id: the transaction's first outcome.
    let repeated = bodies.iter().filter(|b| matches!(b, EventBody::CommandDeduplicated { .. })).count();
    let deduplicated =
        bodies.iter().filter(|b| matches!(b, EventBody::TransactionDeduplicated { .. })).count();
    assert_eq!((posted, repeated, deduplicated), (1, 1, 1), "{bodies:?}");
    assert_eq!(balance(&log, "acme", "alice"), 500);
    processor.stop().await.unwrap();
}

/// Many clients race to drain one account while a second processor instance joins (the
/// partition moves mid-stream) and then leaves. The account never goes below zero, each
/// accepted transfer is in the log once, and every command is answered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_double_spend_across_two_processors_never_overdraws() {
    let h = std::sync::Arc::new(Harness::start(4).await);
    let first = Processor::build(h.processor("p1")).unwrap().run(CancellationToken::new());
    h.send(&[define_usd("acme", "def"), transfer("acme", "fund", "world", "alice", 1_000)]).await;
    wait_running(&first, 4).await;

    let clients = 8;
    let per_client = 40;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per_client {
                let id = format!("drain-{c}-{i}");
                h.send(&[transfer("acme", &id, "alice", &format!("thief-{c}"), 10)]).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = Processor::build(h.processor("p2")).unwrap().run(CancellationToken::new());
    // The group splits the partitions between the two; then the first leaves and the second
    // takes everything over. (The first leaves only once the group is steady: the embedded
    // broker's coordinator never completes a rebalance whose leader left during it.)
    let deadline = std::time::Instant::now() + SETTLE;
    while second.running_partitions().is_empty()
        || first.running_partitions().len() + second.running_partitions().len() < 4
    {
        assert!(std::time::Instant::now() < deadline, "the group did not settle with two members");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for t in tasks {
        t.await.unwrap();
    }
    first.stop().await.unwrap();
    let log = h.settled(SETTLE).await;
    second.stop().await.unwrap();

    let outcomes = log.outcomes();
    assert_eq!(outcomes.len(), 2 + clients * per_client);
    let accepted =
        outcomes.values().filter(|e| matches!(e.body, EventBody::TransactionPosted { .. })).count();
    let refused = outcomes
        .values()
        .filter(|e| matches!(&e.body, EventBody::TransactionFailed { reason: Reason::InsufficientFunds, .. }))
        .count();
    // 1,000 funds exactly 100 transfers of 10 (+1 for the funding itself).
    assert_eq!((accepted, refused), (101, clients * per_client - 100));
    assert_eq!(balance(&log, "acme", "alice"), 0);
    let stolen: Amount = (0..clients).map(|c| balance(&log, "acme", &format!("thief-{c}"))).sum();
    assert_eq!(stolen, 1_000);
    for p in &log.partitions {
        tally_core::testkit::check_invariants(&p.replica.state).unwrap();
    }
}

/// Split brain: two instances in different groups both own every partition. The later claim
/// wins; the earlier owner keeps answering as a zombie. Readers see each command answered
/// once, by the winner, and the same state a single processor would have produced.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_zombie_owner_changes_nothing_readers_see() {
    let h = Harness::start(1).await;
    let zombie = Processor::build(h.processor("zombie")).unwrap().run(CancellationToken::new());
    h.send(&[define_usd("acme", "def"), transfer("acme", "fund", "world", "alice", 100)]).await;
    wait_running(&zombie, 1).await;
    h.settled(SETTLE).await;

    let mut config: ProcessorConfig = h.processor("winner");
    config.group_id.push_str("-other-group");
    let winner = Processor::build(config).unwrap().run(CancellationToken::new());
    wait_running(&winner, 1).await;
    let spends: Vec<Command> =
        (0..30).map(|i| transfer("acme", &format!("spend-{i}"), "alice", "bob", 7)).collect();
    h.send(&spends).await;
    let log = h.settled(SETTLE).await;
    // Both wrote: the zombie's answers are there and superseded.
    let superseded = log.verdicts(Verdict::Superseded);
    assert!(superseded >= spends.len(), "the zombie answered too ({superseded} superseded records)");
    let outcomes = log.outcomes();
    assert_eq!(outcomes.len(), 2 + spends.len());
    let posted = outcomes.values().filter(|e| matches!(e.body, EventBody::TransactionPosted { .. })).count();
    assert_eq!(posted, 1 + 14, "100 funds 14 spends of 7");
    assert_eq!(balance(&log, "acme", "alice"), 2);
    assert_eq!(balance(&log, "acme", "bob"), 98);
    zombie.stop().await.unwrap();
    winner.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pending_transactions_expire_without_traffic() {
    let h = Harness::start(1).await;
    let mut config = h.processor("p1");
    config.expiry_interval = Duration::from_millis(100);
    let processor = Processor::build(config).unwrap().run(CancellationToken::new());
    let mut hold = transfer("acme", "hold-1", "world", "alice", 5);
    if let CommandBody::Transact { request: TxRequest::Transfer { pending_timeout_ms, .. }, .. } =
        &mut hold.body
    {
        *pending_timeout_ms = Some(1_000);
    }
    h.send(&[define_usd("acme", "def"), hold]).await;
    let deadline = std::time::Instant::now() + SETTLE;
    loop {
        let log = h.settled(SETTLE).await;
        let expired: Vec<&Event> =
            log.events().filter(|e| matches!(e.body, EventBody::PendingExpired { .. })).collect();
        if let [event] = expired.as_slice() {
            assert_eq!(event.actor.as_str(), "tally-expiry");
            break;
        }
        assert!(expired.is_empty(), "expired once: {expired:?}");
        assert!(std::time::Instant::now() < deadline, "the hold did not expire");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    processor.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_owner_restores_from_the_newest_good_snapshot() {
    use tally_store::snapshot::{self, KEEP, SnapshotStore};
    let h = Harness::start(1).await;
    let store = std::sync::Arc::new(tally_store::EmbeddedStore::in_memory().unwrap());
    let config = || {
        let mut config = h.processor("p");
        config.snapshots = Some(store.clone());
        config.snapshot_every = 100;
        config
    };
    let first = Processor::build(config()).unwrap().run(CancellationToken::new());
    h.send(&[define_usd("acme", "usd")]).await;
    let transfers = |from: usize, to: usize| -> Vec<Command> {
        (from..to).map(|i| transfer("acme", &format!("t{i}"), "world", "alice", 1)).collect()
    };
    h.send(&transfers(0, 500)).await;
    h.settled(SETTLE).await;
    assert_eq!(first.restores()[0].snapshot, None, "the first owner had no snapshot");
    let written = first.snapshots_written();
    assert_eq!(written.len(), 1, "the owner reports its newest snapshot (for its age)");
    first.stop().await.unwrap();

    // The newest snapshot is torn, as a crash while writing it would leave it: skipped.
    let good = snapshot::newest_valid(store.as_ref(), &h.topics.events, 0, i64::MAX)
        .unwrap()
        .expect("snapshots were written");
    assert_eq!(good.covers, written[0].covers, "the reported snapshot is the newest stored");
    let torn = snapshot::Snapshot { covers: good.covers + 50, ..good.clone() }.encode();
    store.put(&h.topics.events, 0, good.covers + 50, &torn[..torn.len() - 7], KEEP + 1).unwrap();

    let second = Processor::build(config()).unwrap().run(CancellationToken::new());
    h.send(&transfers(500, 700)).await;
    let log = h.settled(SETTLE).await;
    let restored = second.restores();
    // The outcome watcher starts after the newest snapshot too: it knows the answers after it,
    // not those before (those are the query service's).
    use tally_ingest::outcomes::{OutcomeWatcher, Outcomes, Peek};
    let outcomes = Outcomes::new(1000);
    let events = h.topics.events.clone();
    let watcher = OutcomeWatcher::build(h.kafka.clone(), events, 1, outcomes.clone(), Some(store.clone()))
        .run(CancellationToken::new());
    let (acme, first) = (TenantId::parse("acme").unwrap(), CommandId::parse("t0").unwrap());
    let later = transfers(700, 701);
    let (stream, fingerprint) = (later[0].body.stream(), tally_core::command_fingerprint(&later[0].body));
    let answer = outcomes.wait(&acme, &stream, &later[0].command_id, fingerprint);
    h.send(&later).await;
    let tally_ingest::outcomes::Lookup::Pending(answer) = answer else { panic!("t700 is not answered yet") };
    let answer = tokio::time::timeout(SETTLE, answer).await.expect("the watcher sees t700").unwrap();
    assert_eq!(answer.command_id, "t700");
    assert!(matches!(outcomes.peek(&acme, &first, None, None), Peek::Unknown), "t0 is before the snapshot");
    watcher.stop().await.unwrap();

    second.stop().await.unwrap();
    assert_eq!(restored[0].snapshot, Some(good.covers), "restored from the newest good snapshot");
    let log_len: usize = log.partitions[0].records.len();
    assert!(
        (restored[0].records_read as usize) < log_len / 2,
        "read {} records after the snapshot, of {log_len}",
        restored[0].records_read
    );
    let log = h.settled(SETTLE).await;
    assert_eq!(log.outcomes().len(), 702, "every command answered once");
    assert_eq!(balance(&log, "acme", "alice"), 701, "every transfer applied once");
}

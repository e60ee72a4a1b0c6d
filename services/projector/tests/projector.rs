//! The projector against the real pipeline on the in-process broker: whatever happens to the
//! projector instances, the stored rows end equal to a fresh fold of the log, row by row.

#[path = "../../ingest/tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use support::*;
use tally_core::projection::{Row, RowKey};
use tally_ingest::processor::Processor;
use tally_projector::rebuild::Rebuild;
use tally_projector::{Projector, ProjectorConfig, ProjectorStatus};
use tally_runtime::Handle;
use tally_store::projections::{ProjectionStore, Version};
use tally_store::{EmbeddedStore, SnapshotStore};
use tokio_util::sync::CancellationToken;

const TENANTS: [&str; 4] = ["acme", "globex", "initech", "umbrella"];

/// Commands `from..to` for every tenant: mostly transfers, with an overdraft every tenth (a
/// rejection, which has an outcome row too), a reversal of the transfer 21 steps back, and a
/// pending transfer committed or voided ten steps later: events that name transactions recorded batches
/// earlier, which the projector's fold has forgotten and must read back from its rows.
async fn wave(h: &Harness, from: usize, to: usize) {
    for i in from..to {
        let batch: Vec<_> = TENANTS.iter().map(|t| step(t, i)).collect();
        h.send(&batch).await;
    }
}

fn step(tenant: &str, i: usize) -> tally_core::Command {
    use tally_core::{CommandBody, Metadata, TxId, TxRequest};
    let body = match i % 10 {
        3 if i >= 23 => CommandBody::Transact {
            ledger: ledger("main"),
            tx_id: TxId::parse(format!("undo-{i}")).unwrap(),
            request: TxRequest::Reversal {
                original: TxId::parse(format!("pay-{}", i - 21)).unwrap(),
                metadata: Metadata::new(),
            },
        },
        5 => {
            let mut pending = transfer(tenant, &format!("hold-{i}"), "world", "user-9", 5).body;
            if let CommandBody::Transact { request: TxRequest::Transfer { pending_timeout_ms, .. }, .. } =
                &mut pending
            {
                *pending_timeout_ms = Some(3_600_000);
            }
            pending
        }
        // Each pending transfer is committed or voided in the next ten steps.
        7 if i >= 12 => {
            let (ledger, tx_id) = (ledger("main"), TxId::parse(format!("hold-{}", i - 12)).unwrap());
            match i / 10 % 2 {
                0 => CommandBody::CommitPending { ledger, tx_id, amounts: None },
                _ => CommandBody::VoidPending { ledger, tx_id },
            }
        }
        9 => return transfer(tenant, &format!("over-{i}"), "user-1", "user-2", 1_000_000_000),
        _ => return transfer(tenant, &format!("pay-{i}"), "world", &format!("user-{}", i % 7), 3),
    };
    command(tenant, &format!("cmd-{i}"), body)
}

fn projector(h: &Harness, store: &Arc<EmbeddedStore>) -> Handle<ProjectorStatus> {
    Projector::build(projector_config(h, store)).expect("projector builds").run(CancellationToken::new())
}

fn projector_config(h: &Harness, store: &Arc<EmbeddedStore>) -> ProjectorConfig {
    let mut config = ProjectorConfig::new(h.kafka.clone(), h.topics.events.clone(), store.clone());
    config.group_id = format!("{}projector", h.topics.events);
    config.batch_max = 20;
    config.snapshots = Some(store.clone() as Arc<dyn SnapshotStore>);
    config
}

/// Waits until the stored checkpoints of `version` reach `ends` (the log's last offsets).
async fn caught_up(store: &EmbeddedStore, version: Version, ends: &[Option<i64>]) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let checkpoints: Vec<Option<i64>> =
            (0..ends.len() as i32).map(|p| store.checkpoint(version, p).unwrap()).collect();
        if checkpoints.as_slice() == ends {
            return;
        }
        assert!(Instant::now() < deadline, "checkpoints {checkpoints:?} short of the log's ends {ends:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Compares row by row, naming the first difference.
fn assert_same_rows(stored: &BTreeMap<RowKey, Row>, fresh: &BTreeMap<RowKey, Row>) {
    for (key, row) in fresh {
        assert_eq!(stored.get(key), Some(row), "row {key:?}");
    }
    for key in stored.keys() {
        assert!(fresh.contains_key(key), "row {key:?} is not in a fresh fold");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_projectors_and_rebalances_mid_stream_end_with_the_rows_of_a_fresh_fold() {
    let h = Arc::new(Harness::start(3).await);
    let store = Arc::new(EmbeddedStore::in_memory().unwrap());
    let mut processor_config = h.processor("p1");
    processor_config.snapshots = Some(store.clone());
    processor_config.snapshot_every = 50;
    let processor = Processor::build(processor_config).unwrap().run(CancellationToken::new());
    h.send(&TENANTS.map(|t| define_usd(t, &format!("def-{t}")))).await;
    wave(&h, 0, 150).await;

    let first = projector(&h, &store);
    let deadline = Instant::now() + Duration::from_secs(60);
    while first.progress().iter().filter(|p| p.checkpoint.is_some()).count() < 3 {
        assert!(Instant::now() < deadline, "the first projector projects nothing");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A second instance joins while commands keep coming (partitions move to it), then the
    // first leaves (they move back): each move hands a partition over mid-stream.
    let more = tokio::spawn({
        let h = h.clone();
        async move { wave(&h, 150, 600).await }
    });
    let second = projector(&h, &store);
    let deadline = Instant::now() + Duration::from_secs(60);
    while second.running_partitions().is_empty() {
        assert!(Instant::now() < deadline, "the second projector never got a partition");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.stop().await.unwrap();
    more.await.unwrap();

    let log = h.settled(Duration::from_secs(120)).await;
    caught_up(&store, 1, &log.ends()).await;
    let taken_over = second.progress().into_iter().filter(|p| p.snapshot.is_some() || p.records_read > 0);
    assert!(taken_over.count() > 0, "the second projector took partitions over from checkpoints");
    let named_earlier = log.events().filter(|e| {
        use tally_core::EventBody::*;
        matches!(
            e.body,
            TransactionPosted { reverses: Some(_), .. } | PendingCommitted { .. } | PendingVoided { .. }
        )
    });
    let named_earlier = named_earlier.count();
    assert!(
        named_earlier >= TENANTS.len() * 110,
        "{named_earlier} reversals, commits and voids of earlier transactions"
    );
    let (stored, fresh) = (store.rows(1).unwrap(), log.projection());
    println!("{} rows; progress of the second projector: {:?}", fresh.len(), second.progress());
    assert_same_rows(&stored, &fresh);
    assert!(fresh.len() > TENANTS.len() * 600, "outcomes, accounts and transactions are all there");
    second.stop().await.unwrap();
    processor.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rebuild_while_writes_continue_switches_to_a_version_equal_to_a_fresh_fold() {
    let h = Arc::new(Harness::start(3).await);
    let store = Arc::new(EmbeddedStore::in_memory().unwrap());
    let processor = Processor::build(h.processor("p1")).unwrap().run(CancellationToken::new());
    h.send(&TENANTS.map(|t| define_usd(t, &format!("def-{t}")))).await;
    wave(&h, 0, 100).await;
    let live = projector(&h, &store);
    caught_up(&store, 1, &h.settled(Duration::from_secs(120)).await.ends()).await;

    // Writes go on until well after the switch.
    let (stop, waves) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(100)));
    let writer = tokio::spawn({
        let (h, stop, waves) = (h.clone(), stop.clone(), waves.clone());
        async move {
            while !stop.load(Ordering::SeqCst) {
                let i = waves.load(Ordering::SeqCst);
                wave(&h, i, i + 1).await;
                waves.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    // A rebuild stopped part way (as by a restart) is resumed from its checkpoints.
    let interrupted = Rebuild::start(projector_config(&h, &store), 3).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while interrupted.progress().await.unwrap().done == 0 {
        assert!(Instant::now() < deadline, "the rebuild never wrote anything");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    interrupted.abandon().await;
    assert_eq!(store.live_version().unwrap(), 1, "an abandoned rebuild switches nothing");
    let rebuild = Rebuild::start(projector_config(&h, &store), 3).await.unwrap();
    assert_eq!(rebuild.version(), 2, "the interrupted version is resumed, not a new one");
    assert!(rebuild.progress().await.unwrap().done > 0, "resumed from its checkpoints");
    let mut reports = Vec::new();
    let switched_to = rebuild.finish(|progress| reports.push(progress.clone())).await.unwrap();
    let waves_at_switch = waves.load(Ordering::SeqCst);
    assert_eq!(switched_to, 2);
    assert_eq!(store.live_version().unwrap(), 2);
    assert_eq!(store.versions().unwrap(), vec![2], "the old version is dropped");
    let (first, last) = (&reports[0], reports.last().unwrap());
    assert!(first.target > 400 && !first.caught_up, "the rebuild started behind the live version: {first:?}");
    assert!(last.caught_up && last.done >= last.target, "{last:?}");
    println!("rebuild: {} reports, last {last:?}", reports.len());

    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();
    assert!(waves.load(Ordering::SeqCst) > waves_at_switch, "writes continued after the switch");
    let log = h.settled(Duration::from_secs(120)).await;
    caught_up(&store, 2, &log.ends()).await;
    assert!(live.progress().iter().all(|p| p.version == 2), "the live projector follows the switch");
    assert_same_rows(&store.rows(2).unwrap(), &log.projection());
    live.stop().await.unwrap();
    processor.stop().await.unwrap();
}

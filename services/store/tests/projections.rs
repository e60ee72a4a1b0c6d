//! The projections' store: one conformance suite for every backend, and a projector that
//! crashes at random points between batches still ends with exactly the rows of a fresh fold.

mod scylla_env;

use proptest::prelude::*;
use std::collections::BTreeMap;
use tally_core::log::{LogRecord, Replica};
use tally_core::projection::{self, Row, RowKey};
use tally_core::{TenantId, testkit};
use tally_store::projections::{FIRST_VERSION, ProjectionStore};
use tally_store::{EmbeddedStore, StoreError};

fn outcome_key(tenant: &str, command: &str) -> RowKey {
    RowKey::Outcome {
        tenant: TenantId::parse(tenant).unwrap(),
        command_id: tally_core::CommandId::parse(command).unwrap(),
        stream: tally_core::StreamId::Ledger(tally_core::LedgerId::parse("main").unwrap()),
    }
}

/// The outcome row of the event at `offset` of a benchmark log (an asset definition, then
/// transfers).
fn outcome_row(offset: i64) -> Row {
    let log = testkit::transfers_log("acme", offset as usize + 1);
    let LogRecord::Event { event, .. } = &log[offset as usize] else { panic!("offset {offset} is a claim") };
    projection::outcome(event, 0, offset).1
}

/// What every backend must do. Written once; each backend's test calls it.
fn conformance(store: &dyn ProjectionStore) {
    let (a, b) = (outcome_key("acme", "c1"), outcome_key("acme", "c2"));
    assert_eq!(store.checkpoint(1, 0).unwrap(), None, "nothing projected yet");
    assert_eq!(store.row(1, &a).unwrap(), None);

    store.commit(1, 0, &[(a.clone(), Some(outcome_row(1))), (b.clone(), Some(outcome_row(2)))], 2).unwrap();
    assert_eq!(store.checkpoint(1, 0).unwrap(), Some(2));
    assert_eq!(store.row(1, &a).unwrap(), Some(outcome_row(1)));
    assert_eq!(store.rows(1).unwrap().len(), 2);

    // Replacing and removing rows.
    store.commit(1, 0, &[(a.clone(), Some(outcome_row(3))), (b.clone(), None)], 3).unwrap();
    assert_eq!(store.row(1, &a).unwrap(), Some(outcome_row(3)));
    assert_eq!(store.row(1, &b).unwrap(), None);

    // The same checkpoint again is a harmless replay; an older one is refused and writes nothing.
    store.commit(1, 0, &[(a.clone(), Some(outcome_row(3)))], 3).unwrap();
    let refused = store.commit(1, 0, &[(a.clone(), Some(outcome_row(1)))], 2);
    assert!(
        matches!(refused, Err(StoreError::CheckpointBackwards { partition: 0, stored: 3, proposed: 2 })),
        "{refused:?}"
    );
    assert_eq!(store.row(1, &a).unwrap(), Some(outcome_row(3)), "a refused commit changed a row");
    assert_eq!(store.checkpoint(1, 0).unwrap(), Some(3));

    // Partitions and versions are independent.
    assert_eq!(store.checkpoint(1, 1).unwrap(), None);
    store.commit(2, 0, &[(b.clone(), Some(outcome_row(9)))], 0).unwrap();
    assert_eq!(store.checkpoint(2, 0).unwrap(), Some(0));
    assert_eq!(store.rows(2).unwrap(), BTreeMap::from([(b.clone(), outcome_row(9))]));
    assert_eq!(store.rows(1).unwrap(), BTreeMap::from([(a.clone(), outcome_row(3))]));
    store.commit(1, 3, &[], 41).unwrap();
    assert_eq!(store.checkpoints(1).unwrap(), BTreeMap::from([(0, 3), (3, 41)]), "every partition's");
    assert_eq!(store.checkpoints(2).unwrap(), BTreeMap::from([(0, 0)]));
    assert_eq!(store.checkpoints(7).unwrap(), BTreeMap::new());

    // Every kind of row goes in and comes back as written (each has its own table in Scylla).
    let mut every_kind = BTreeMap::new();
    testkit::fold_into(
        &mut every_kind,
        testkit::transfers_log("acme", 3).iter().enumerate().map(|(o, r)| (o as i64, r)),
        0,
    );
    let doc = RowKey::Document {
        tenant: TenantId::parse("acme").unwrap(),
        doc_type: tally_core::DocType::parse("profile").unwrap(),
        key: tally_core::DocKey::parse("alice").unwrap(),
    };
    every_kind.insert(
        doc,
        Row::Document(tally_core::Document { stream_version: 1, version: 1, value: Some("{}".into()) }),
    );
    let kinds: std::collections::HashSet<_> = every_kind.keys().map(std::mem::discriminant).collect();
    assert_eq!(
        kinds.len(),
        8,
        "accounts, transactions, documents, outcomes, postings, events, by time, by offset"
    );
    let changes: Vec<_> = every_kind.iter().map(|(k, r)| (k.clone(), Some(r.clone()))).collect();
    store.commit(5, 0, &changes, 10).unwrap();
    assert_eq!(store.rows(5).unwrap(), every_kind);
    for (key, row) in &every_kind {
        assert_eq!(store.row(5, key).unwrap().as_ref(), Some(row), "{key:?}");
    }
    // A commit of a thousand transfers (about 1 MB of rows) is taken whole: Cassandra refuses
    // a single batch of that size.
    let mut big = BTreeMap::new();
    testkit::fold_into(
        &mut big,
        testkit::transfers_log("globex", 1000).iter().enumerate().map(|(o, r)| (o as i64, r)),
        1,
    );
    let changes: Vec<_> = big.iter().map(|(k, r)| (k.clone(), Some(r.clone()))).collect();
    store.commit(6, 1, &changes, 1000).unwrap();
    assert_eq!(store.checkpoint(6, 1).unwrap(), Some(1000));
    assert_eq!(store.rows(6).unwrap(), big);
    store.drop_version(6).unwrap();
    let removals: Vec<_> = every_kind.keys().map(|k| (k.clone(), None)).collect();
    store.commit(5, 0, &removals, 11).unwrap();
    assert_eq!(store.rows(5).unwrap(), BTreeMap::new());

    // The live version: 1 until switched; a switch from a version that is no longer live is
    // refused; the live version cannot be dropped, another one can, whole.
    assert_eq!(store.live_version().unwrap(), FIRST_VERSION);
    assert_eq!(store.versions().unwrap(), vec![1, 2, 5]);
    store.switch_live(1, 2).unwrap();
    assert_eq!(store.live_version().unwrap(), 2);
    let late = store.switch_live(1, 3);
    assert!(matches!(late, Err(StoreError::LiveVersionMoved { expected: 1, actual: 2 })), "{late:?}");
    assert!(matches!(store.drop_version(2), Err(StoreError::DropLive(2))));
    store.commit(3, 0, &[(a.clone(), Some(outcome_row(4)))], 0).unwrap();
    // A version switched away from is frozen: a projector that has not noticed is refused.
    let retired = store.commit(1, 0, &[(b.clone(), Some(outcome_row(5)))], 4);
    assert!(matches!(retired, Err(StoreError::VersionRetired { version: 1, live: 2 })), "{retired:?}");
    assert_eq!(store.row(1, &b).unwrap(), None, "a refused commit wrote a row");
    store.drop_version(1).unwrap();
    assert_eq!(store.rows(1).unwrap(), BTreeMap::new());
    assert_eq!(store.checkpoint(1, 0).unwrap(), None);
    assert_eq!(store.versions().unwrap(), vec![2, 3, 5]);
    assert_eq!(store.rows(2).unwrap().len(), 1, "dropping 1 touched 2");
    assert_eq!(store.rows(3).unwrap().len(), 1, "dropping 1 touched 3");
}

#[test]
fn embedded_in_memory_conforms() {
    conformance(&EmbeddedStore::in_memory().unwrap());
}

#[test]
fn scylla_conforms_when_tally_test_scylla_is_set() {
    scylla_env::with_scylla("the Scylla projections conformance suite", |store| conformance(store));
}

#[test]
fn embedded_file_conforms_and_keeps_rows_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tally.redb");
    conformance(&EmbeddedStore::open(&path).unwrap());
    let reopened = EmbeddedStore::open(&path).unwrap();
    assert_eq!(reopened.live_version().unwrap(), 2);
    assert_eq!(reopened.checkpoint(2, 0).unwrap(), Some(0));
    assert_eq!(reopened.rows(2).unwrap().len(), 1);
}

/// A partition's log for a random history: a claim, one event per command, and a zombie's
/// late writes (an old epoch) after a second claim, which must change nothing.
fn log_of(history: &[(tally_core::Command, i64)]) -> Vec<LogRecord> {
    let (_, events, _) = testkit::run(history, |_, _| {});
    let half = events.len() / 2;
    let event =
        |epoch, i: usize| LogRecord::Event { epoch, command_offset: i as i64, event: events[i].clone() };
    let mut log = vec![LogRecord::Claim { epoch: 1, owner: "a".into() }];
    log.extend((0..half).map(|i| event(1, i)));
    log.push(LogRecord::Claim { epoch: 2, owner: "b".into() });
    log.extend((half..events.len()).map(|i| event(1, i))); // the zombie: superseded
    log.extend((half..events.len()).map(|i| event(2, i)));
    log
}

/// Rows of a fresh fold of the whole log.
fn fresh_fold(log: &[LogRecord]) -> BTreeMap<RowKey, Row> {
    let mut rows = BTreeMap::new();
    testkit::fold_into(&mut rows, log.iter().enumerate().map(|(offset, r)| (offset as i64, r)), 0);
    rows
}

/// Projects `log` in batches of `batch` records, "crashing" (losing everything in memory and
/// reopening the store) after the commits listed in `crashes`.
fn project_with_crashes(log: &[LogRecord], path: &std::path::Path, batch: usize, crashes: &[usize]) {
    let mut commits = 0;
    'restart: loop {
        let store = EmbeddedStore::open(path).unwrap();
        // Restore: the state as of the checkpoint, then go on from the record after it.
        let next = store.checkpoint(1, 0).unwrap().map_or(0, |c| c as usize + 1);
        let mut replica = Replica::new();
        for (offset, record) in log[..next].iter().enumerate() {
            projection::fold(&mut replica, record, 0, offset as i64);
        }
        for start in (next..log.len()).step_by(batch) {
            let end = (start + batch).min(log.len());
            let batch = (start..end).map(|offset| (offset as i64, &log[offset]));
            let changes = projection::fold_batch(&mut replica, batch, 0);
            store.commit(1, 0, &changes, end as i64 - 1).unwrap();
            commits += 1;
            if crashes.contains(&commits) {
                continue 'restart;
            }
        }
        return;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn a_projector_crashing_between_batches_ends_with_the_rows_of_a_fresh_fold(
        history in testkit::history(),
        batch in 1usize..20,
        crashes in prop::collection::vec(1usize..40, 0..4),
    ) {
        let log = log_of(&history);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tally.redb");
        project_with_crashes(&log, &path, batch, &crashes);
        let stored = EmbeddedStore::open(&path).unwrap().rows(1).unwrap();
        prop_assert_eq!(stored, fresh_fold(&log));
    }
}

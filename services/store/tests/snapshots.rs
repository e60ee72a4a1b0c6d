//! Snapshots: restoring from one and reading the rest of the log equals reading the whole log;
//! a damaged snapshot is never trusted.

mod scylla_env;

use proptest::prelude::*;
use tally_core::log::{LogRecord, Replica};
use tally_core::testkit;
use tally_store::EmbeddedStore;
use tally_store::snapshot::{self, KEEP, Snapshot, SnapshotError, SnapshotStore};

/// A partition's log for a random history: a claim, then one event per command.
fn log_of(history: &[(tally_core::Command, i64)]) -> Vec<LogRecord> {
    let (_, events, _) = testkit::run(history, |_, _| {});
    let claim = LogRecord::Claim { epoch: 1, owner: "p".into() };
    let answers = events.into_iter().enumerate().map(|(i, event)| LogRecord::Event {
        epoch: 1,
        command_offset: i as i64,
        event,
    });
    std::iter::once(claim).chain(answers).collect()
}

/// Folds `records`, the first of which is at offset `first`.
fn fold(replica: &mut Replica, records: &[LogRecord], first: usize) {
    for (i, r) in records.iter().enumerate() {
        replica.read((first + i) as i64, r);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn snapshot_and_tail_equal_the_whole_log(history in testkit::history(), cut in any::<prop::sample::Index>()) {
        let log = log_of(&history);
        let mut whole = Replica::new();
        fold(&mut whole, &log, 0);

        let at = cut.index(log.len() + 1);
        let mut prefix = Replica::new();
        fold(&mut prefix, &log[..at], 0);
        let stored = Snapshot { covers: at as i64 - 1, replica: prefix, forgotten_upto: -1 }.encode();
        let mut restored = Snapshot::decode(&stored).unwrap().replica;
        fold(&mut restored, &log[at..], at);
        prop_assert_eq!(restored, whole);
    }
}

fn some_snapshot(covers: i64) -> Snapshot {
    let history: Vec<_> = (0..20)
        .map(|i| {
            let body = tally_core::CommandBody::DefineAsset {
                ledger: tally_core::LedgerId::parse_ledger("main").unwrap(),
                asset: tally_core::Asset::parse(&format!("A{i}/2")).unwrap(),
            };
            (testkit::command(tally_core::TenantId::parse("acme").unwrap(), body), i)
        })
        .collect();
    let mut replica = Replica::new();
    fold(&mut replica, &log_of(&history), 0);
    Snapshot { covers, replica, forgotten_upto: -1 }
}

#[test]
fn every_kind_of_damage_is_detected() {
    let good = some_snapshot(41).encode();
    assert_eq!(Snapshot::decode(&good).unwrap(), some_snapshot(41));
    let mut flipped = good.clone();
    *flipped.last_mut().unwrap() ^= 1;
    assert_eq!(Snapshot::decode(&flipped), Err(SnapshotError::Checksum));
    let mut covers_changed = good.clone();
    covers_changed[10] ^= 1;
    assert_eq!(Snapshot::decode(&covers_changed), Err(SnapshotError::Checksum));
    let mut forgotten_changed = good.clone();
    forgotten_changed[20] ^= 1;
    assert_eq!(Snapshot::decode(&forgotten_changed), Err(SnapshotError::Checksum));
    assert!(matches!(Snapshot::decode(&good[..good.len() - 1]), Err(SnapshotError::Length { .. })));
    assert!(matches!(Snapshot::decode(&good[..20]), Err(SnapshotError::Truncated(20))));
    let mut other_version = good.clone();
    other_version[8] = 9;
    assert_eq!(Snapshot::decode(&other_version), Err(SnapshotError::Version(9)));
    assert_eq!(Snapshot::decode(&[b'x'; 100]), Err(SnapshotError::Magic));
}

/// A snapshot written before processors forgot anything (format 3: no `forgotten_upto` in its
/// header) is still read, as one of a state that forgot nothing.
#[test]
fn a_format_3_snapshot_reads_as_one_that_forgot_nothing() {
    let snapshot = Snapshot { forgotten_upto: 17, ..some_snapshot(41) };
    let format_4 = snapshot.encode();
    assert_eq!(Snapshot::decode(&format_4).unwrap(), snapshot);
    // Format 3: magic, version, covers, payload length, checksum, payload.
    let mut header = format_4[..18].to_vec();
    header[8..10].copy_from_slice(&3u16.to_le_bytes());
    header.extend_from_slice(&format_4[26..34]);
    let payload = &format_4[50..];
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(&header);
    hasher.update(payload);
    let format_3 = [&header[..], &hasher.digest128().to_le_bytes(), payload].concat();
    assert_eq!(Snapshot::decode(&format_3).unwrap(), Snapshot { forgotten_upto: -1, ..snapshot });
}

/// The contract of a snapshot store, written once for every backend.
fn conformance(store: &dyn SnapshotStore) {
    let (log, other) = ("t.events", "u.events");
    assert_eq!(snapshot::newest_valid(store, log, 0, i64::MAX).unwrap(), None, "empty: restore from the log");
    for covers in [10, 20, 30, 40, 50] {
        snapshot::save(store, log, 0, &some_snapshot(covers)).unwrap();
    }
    snapshot::save(store, other, 0, &some_snapshot(99)).unwrap();
    snapshot::save(store, log, 1, &some_snapshot(7)).unwrap();
    let kept: Vec<i64> =
        store.newest_first(log, 0, i64::MAX, 10).unwrap().into_iter().map(|(c, _)| c).collect();
    assert_eq!(kept, [50, 40, 30], "the newest {KEEP} are kept");
    assert_eq!(snapshot::newest_valid(store, log, 0, i64::MAX).unwrap().unwrap().covers, 50);
    assert_eq!(snapshot::newest_valid(store, log, 1, i64::MAX).unwrap().unwrap().covers, 7, "per partition");
    assert_eq!(snapshot::newest_valid(store, other, 0, i64::MAX).unwrap().unwrap().covers, 99, "per log");
    // A reader that must not go past an offset (the projector's checkpoint) gets one at or before it.
    assert_eq!(snapshot::newest_valid(store, log, 0, 45).unwrap().unwrap().covers, 40);
    assert_eq!(snapshot::newest_valid(store, log, 0, 40).unwrap().unwrap().covers, 40);
    assert_eq!(snapshot::newest_valid(store, log, 0, 29).unwrap(), None, "none that early is kept");

    // A crash while writing leaves a torn newest snapshot; one filed under the wrong offset is
    // as bad: both are skipped for the next older good one.
    let torn = some_snapshot(60).encode();
    store.put(log, 0, 60, &torn[..torn.len() / 2], KEEP + 2).unwrap();
    store.put(log, 0, 70, &some_snapshot(65).encode(), KEEP + 2).unwrap();
    assert_eq!(snapshot::newest_valid(store, log, 0, i64::MAX).unwrap().unwrap().covers, 50);
    for (covers, _) in store.newest_first(log, 0, i64::MAX, 10).unwrap() {
        store.put(log, 0, covers, b"garbage", KEEP + 2).unwrap();
    }
    assert_eq!(
        snapshot::newest_valid(store, log, 0, i64::MAX).unwrap(),
        None,
        "nothing usable: the whole log"
    );
}

#[test]
fn embedded_in_memory_store_conforms() {
    conformance(&EmbeddedStore::in_memory().unwrap());
}

#[test]
fn scylla_store_conforms_when_tally_test_scylla_is_set() {
    scylla_env::with_scylla("the Scylla snapshots conformance suite", |store| conformance(store));
}

#[test]
fn embedded_file_store_conforms_and_keeps_snapshots_across_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store").join("tally.redb");
    conformance(&EmbeddedStore::open(&path).unwrap());
    let store = EmbeddedStore::open(&path).unwrap();
    snapshot::save(&store, "t.events", 3, &some_snapshot(5)).unwrap();
    drop(store);
    let reopened = EmbeddedStore::open(&path).unwrap();
    assert_eq!(snapshot::newest_valid(&reopened, "t.events", 3, i64::MAX).unwrap(), Some(some_snapshot(5)));
}

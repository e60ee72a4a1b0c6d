//! The typed reads (`tally_store::reads`) on every backend: for random histories, every list
//! paged through small pages visits exactly the rows of a fresh fold, once each and in order,
//! and the balance at an instant equals the fold of the log up to that instant.

mod scylla_env;

use proptest::prelude::*;
use std::collections::BTreeMap;
use tally_core::log::LogRecord;
use tally_core::projection::{self, EventRef, Row, RowKey};
use tally_core::{AccountId, Amount, Asset, DocKey, Event, LedgerId, State, TenantId, testkit};
use tally_store::EmbeddedStore;
use tally_store::projections::ProjectionStore;
use tally_store::reads::{
    Accounts, Documents, EventsIndex, Outcomes, PAGE_MAX, Page, Statements, Transactions,
};

/// Small pages, so that lists take many.
const PAGE: usize = 2;

/// Every page of a list, from the first, following each page's cursor.
fn all_pages<T, C: Clone>(mut read: impl FnMut(Option<C>) -> Page<T, C>) -> Vec<T> {
    let (mut items, mut cursor) = (Vec::new(), None);
    loop {
        let page = read(cursor.clone());
        assert!(page.items.len() <= PAGE, "a page is longer than its limit");
        items.extend(page.items);
        match page.next {
            Some(next) => cursor = Some(next),
            None => return items,
        }
    }
}

/// The log a processor would write for these events (one claim, then the events).
fn log_of(events: &[Event]) -> Vec<LogRecord> {
    let claim = LogRecord::Claim { epoch: 1, owner: "a".into() };
    let events = events.iter().enumerate().map(|(i, event)| LogRecord::Event {
        epoch: 1,
        command_offset: i as i64,
        event: event.clone(),
    });
    std::iter::once(claim).chain(events).collect()
}

/// Folds `events` into `version` of `store` (in batches of 7) and returns the fresh fold.
fn project(store: &dyn ProjectionStore, version: u32, events: &[Event]) -> BTreeMap<RowKey, Row> {
    let log = log_of(events);
    let mut replica = tally_core::log::Replica::new();
    for (i, batch) in log.chunks(7).enumerate() {
        let first = (i * 7) as i64;
        let records = batch.iter().enumerate().map(|(j, r)| (first + j as i64, r));
        let changes = projection::fold_batch(&mut replica, records, 0);
        store.commit(version, 0, &changes, first + batch.len() as i64 - 1).unwrap();
    }
    let mut rows = BTreeMap::new();
    testkit::fold_into(&mut rows, log.iter().enumerate().map(|(o, r)| (o as i64, r)), 0);
    rows
}

/// The posted balance of an account in an asset after every event stamped at or before `at_ms`.
fn balance_by_replay(
    events: &[Event],
    at_ms: i64,
    (tenant, ledger, account, asset): (&TenantId, &LedgerId, &AccountId, &Asset),
) -> Amount {
    let mut state = State::new();
    for event in events.iter().filter(|e| e.time_ms <= at_ms) {
        tally_core::apply(&mut state, event);
    }
    let balances = state.ledger(tenant, ledger).and_then(|l| l.accounts.get(account)).map(|a| &a.balances);
    balances.and_then(|b| b.get(asset)).map_or(0, |b| b.posted)
}

/// Checks every typed read of `version` against `rows`, the fresh fold of `events`.
fn reads_conform(store: &dyn ProjectionStore, version: u32, rows: &BTreeMap<RowKey, Row>, events: &[Event]) {
    for (key, row) in rows {
        match (key, row) {
            (RowKey::Account { tenant, ledger, account }, Row::Account(expected)) => {
                check_account(store, version, rows, events, (tenant, ledger, account), expected)
            }
            (RowKey::Transaction { tenant, ledger, tx_id }, Row::Transaction(expected)) => {
                let found = store.transaction(version, tenant, ledger, tx_id).unwrap();
                assert_eq!(found.as_ref(), Some(expected));
            }
            (RowKey::Outcome { tenant, command_id, stream }, Row::Outcome(expected)) => {
                let found = store.outcomes(version, tenant, command_id).unwrap();
                // Every stream that used the id has its own first answer.
                let in_stream: Vec<_> = found.iter().filter(|(s, _)| s == stream).map(|(_, o)| o).collect();
                assert_eq!(in_stream, vec![expected]);
                let streams = rows.keys().filter(|k| matches!(k, RowKey::Outcome { tenant: t, command_id: c, .. } if t == tenant && c == command_id)).count();
                assert_eq!(found.len(), streams);
            }
            (RowKey::Document { tenant, doc_type, key }, Row::Document(expected)) => {
                assert_eq!(store.document(version, tenant, doc_type, key).unwrap().as_ref(), Some(expected));
                let prefix = DocKey::parse(&key.as_str()[..1]).unwrap();
                let listed = all_pages(|after| {
                    store.documents(version, tenant, doc_type, Some(&prefix), after.as_ref(), PAGE).unwrap()
                });
                let expected: Vec<_> = rows
                    .iter()
                    .filter_map(|(k, r)| match (k, r) {
                        (RowKey::Document { tenant: t, doc_type: d, key }, Row::Document(doc))
                            if t == tenant && d == doc_type && key.as_str().starts_with(prefix.as_str()) =>
                        {
                            Some((key.clone(), doc.clone()))
                        }
                        _ => None,
                    })
                    .collect();
                assert_eq!(listed, expected, "documents of {doc_type} starting with {prefix}");
            }
            (RowKey::Event { tenant, stream, stream_version }, Row::Event(_)) if *stream_version == 1 => {
                let listed = all_pages(|after| {
                    store.stream_events(version, tenant, stream, after.unwrap_or(0), PAGE).unwrap()
                });
                let expected: Vec<_> = rows
                    .iter()
                    .filter_map(|(k, r)| match (k, r) {
                        (RowKey::Event { tenant: t, stream: s, .. }, Row::Event(e))
                            if t == tenant && s == stream =>
                        {
                            Some(e.clone())
                        }
                        _ => None,
                    })
                    .collect();
                assert!(!expected.is_empty());
                assert_eq!(listed, expected, "events of {stream}");
            }
            _ => {}
        }
    }
    let tenants: std::collections::BTreeSet<&TenantId> = rows
        .keys()
        .filter_map(|k| match k {
            RowKey::EventAt { tenant, .. } => Some(tenant),
            _ => None,
        })
        .collect();
    for tenant in tenants {
        check_timeline(store, version, rows, tenant);
        check_partitions(store, version, rows, tenant);
    }
}

/// A tenant's events partition by partition, whole and between two offsets, page by page: the
/// same events as its timeline, in log order.
fn check_partitions(
    store: &dyn ProjectionStore,
    version: u32,
    rows: &BTreeMap<RowKey, Row>,
    tenant: &TenantId,
) {
    let mut by_partition: BTreeMap<i32, Vec<(i64, EventRef)>> = BTreeMap::new();
    for (key, row) in rows {
        if let (RowKey::EventAt { tenant: t, partition, offset, .. }, Row::EventAt(at)) = (key, row)
            && t == tenant
        {
            by_partition.entry(*partition).or_default().push((*offset, at.clone()));
        }
    }
    for (partition, mut expected) in by_partition {
        expected.sort_by_key(|(offset, _)| *offset);
        let (first, last) = (expected[0].0, expected[expected.len() - 1].0);
        for (after, upto) in [(i64::MIN, i64::MAX), (first, last - 1), (last, i64::MAX), (last, first)] {
            let listed = all_pages(|from| {
                store
                    .partition_events(version, tenant, (partition, from.unwrap_or(after), upto), PAGE)
                    .unwrap()
            });
            let within: Vec<_> = expected.iter().filter(|(o, _)| *o > after && *o <= upto).cloned().collect();
            assert_eq!(listed, within, "partition {partition} of {tenant} in ({after}, {upto}]");
        }
    }
}

/// A tenant's timeline, whole and in a window of time, page by page; every entry names its event.
fn check_timeline(
    store: &dyn ProjectionStore,
    version: u32,
    rows: &BTreeMap<RowKey, Row>,
    tenant: &TenantId,
) {
    let entries: Vec<_> = rows
        .iter()
        .filter_map(|(k, r)| match (k, r) {
            (RowKey::EventAt { tenant: t, time_ms, partition, offset }, Row::EventAt(at)) if t == tenant => {
                Some(((*time_ms, *partition, *offset), at.clone()))
            }
            _ => None,
        })
        .collect();
    let times: Vec<i64> = entries.iter().map(|((t, _, _), _)| *t).collect();
    let (first, last) = (times[0], times[times.len() - 1]);
    for (from, to) in [(i64::MIN, None), (first + 1, Some(last)), (last, Some(last + 1)), (last + 1, None)] {
        let listed = all_pages(|after| store.timeline(version, tenant, (from, to), after, PAGE).unwrap());
        let expected: Vec<_> = entries
            .iter()
            .filter(|((t, _, _), _)| *t >= from && to.is_none_or(|to| *t < to))
            .cloned()
            .collect();
        assert_eq!(listed, expected, "timeline of {tenant} from {from} to {to:?}");
    }
    for ((_, partition, offset), at) in entries {
        let event = store.stream_event(version, tenant, &at.stream, at.stream_version).unwrap().unwrap();
        assert_eq!(
            (event.partition, event.offset, event.event.body.kind()),
            (partition, offset, at.kind.as_str())
        );
    }
}

/// An account, its ledger's listing by the first letter of its id, its statement (whole and
/// per asset) and its balance at every instant that matters.
fn check_account(
    store: &dyn ProjectionStore,
    version: u32,
    rows: &BTreeMap<RowKey, Row>,
    events: &[Event],
    (tenant, ledger, account): (&TenantId, &LedgerId, &AccountId),
    expected: &tally_core::Account,
) {
    assert_eq!(store.account(version, tenant, ledger, account).unwrap().as_ref(), Some(expected));
    let prefix = AccountId::parse(&account.as_str()[..1]).unwrap();
    for prefix in [None, Some(&prefix)] {
        let listed =
            all_pages(|after| store.accounts(version, tenant, ledger, prefix, after.as_ref(), PAGE).unwrap());
        let expected: Vec<_> = rows
            .iter()
            .filter_map(|(k, r)| match (k, r) {
                (RowKey::Account { tenant: t, ledger: l, account }, Row::Account(a))
                    if t == tenant
                        && l == ledger
                        && prefix.is_none_or(|p| account.as_str().starts_with(p.as_str())) =>
                {
                    Some((account.clone(), a.clone()))
                }
                _ => None,
            })
            .collect();
        assert_eq!(listed, expected, "accounts of {ledger} starting with {prefix:?}");
    }

    let lines_of = |asset: Option<&Asset>| -> Vec<_> {
        let mut lines: Vec<_> = rows
            .iter()
            .filter_map(|(k, r)| match (k, r) {
                (
                    RowKey::Posting { tenant: t, ledger: l, account: a, asset: s, offset, line },
                    Row::Posting(row),
                ) if t == tenant && l == ledger && a == account && asset.is_none_or(|asset| asset == s) => {
                    Some(((*offset, *line), s.clone(), row.clone()))
                }
                _ => None,
            })
            .collect();
        lines.sort_by_key(|line| std::cmp::Reverse(line.0));
        lines
    };
    let statement = |asset: Option<&Asset>| -> Vec<_> {
        let pages = all_pages(|before| {
            store.statement(version, tenant, ledger, account, asset, before, PAGE).unwrap()
        });
        pages.into_iter().map(|l| (l.position, l.asset, l.line)).collect()
    };
    assert_eq!(statement(None), lines_of(None), "statement of {account}");
    for asset in expected.balances.keys() {
        let lines = lines_of(Some(asset));
        assert_eq!(statement(Some(asset)), lines, "statement of {account} in {asset}");
        // Every line's instant, just before it, and long after the last.
        let mut instants: Vec<i64> = lines.iter().flat_map(|(_, _, l)| [l.time_ms, l.time_ms - 1]).collect();
        instants.push(i64::MAX);
        for at in instants {
            let found = store.balance_at(version, tenant, ledger, account, asset, at).unwrap();
            let expected = balance_by_replay(events, at, (tenant, ledger, account, asset));
            assert_eq!(found, expected, "balance of {account} in {asset} at {at}");
        }
    }
}

/// One history's reads on the embedded store, and then on a store that also holds a second
/// version (a rebuild beside the live one): reads of one version never see the other's rows.
fn embedded_case(history: &[(tally_core::Command, i64)]) {
    let (_, events, _) = testkit::run(history, |_, _| {});
    let store = EmbeddedStore::in_memory().unwrap();
    let rows = project(&store, 1, &events);
    project(&store, 2, &events[..events.len() / 2]);
    reads_conform(&store, 1, &rows, &events);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn embedded_reads_page_through_exactly_the_rows_of_a_fresh_fold(history in testkit::history()) {
        embedded_case(&history);
    }
}

#[test]
fn scylla_reads_conform_when_tally_test_scylla_is_set() {
    scylla_env::with_scylla("the Scylla reads suite", |store| {
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(8));
        // A version per case: the cases share the keyspace.
        let version = std::sync::atomic::AtomicU32::new(0);
        runner
            .run(&testkit::history(), |history| {
                let version = version.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                let (_, events, _) = testkit::run(&history, |_, _| {});
                let rows = project(store, version, &events);
                reads_conform(store, version, &rows, &events);
                Ok(())
            })
            .unwrap();
    });
}

#[test]
fn a_limit_of_zero_or_past_the_maximum_is_clamped() {
    let log = testkit::transfers_log("acme", PAGE_MAX + 200);
    let store = EmbeddedStore::in_memory().unwrap();
    let changes = projection::fold_batch(
        &mut tally_core::log::Replica::new(),
        log.iter().enumerate().map(|(o, r)| (o as i64, r)),
        0,
    );
    store.commit(1, 0, &changes, log.len() as i64 - 1).unwrap();
    let (tenant, ledger) = (TenantId::parse("acme").unwrap(), LedgerId::parse("main").unwrap());
    let page = store.accounts(1, &tenant, &ledger, None, None, usize::MAX).unwrap();
    assert_eq!(page.items.len(), PAGE_MAX);
    assert_eq!(page.next.as_ref(), Some(&page.items[PAGE_MAX - 1].0));
    let page = store.accounts(1, &tenant, &ledger, None, None, 0).unwrap();
    assert_eq!(page.items.len(), 1, "a limit of 0 reads one item");
    assert_eq!(page.next, Some(page.items[0].0.clone()));
}

//! Projections built event by event equal the rows the final state implies, for random
//! histories: no event forgets a row it changed, and none writes a row it should not.

use proptest::prelude::*;
use std::collections::BTreeMap;
use tally_core::log::{LogRecord, Replica};
use tally_core::memory;
use tally_core::projection::{self, Row, RowKey};
use tally_core::testkit;

/// Every account's statement in every asset runs from 0 through each line to its posted balance
/// in `state`: no posting is missing, doubled or carries a wrong balance.
fn check_statements(rows: &BTreeMap<RowKey, Row>, state: &tally_core::State) -> Result<(), TestCaseError> {
    let mut running: BTreeMap<_, i128> = BTreeMap::new();
    for (key, row) in rows {
        let (RowKey::Posting { tenant, ledger, account, asset, .. }, Row::Posting(line)) = (key, row) else {
            continue;
        };
        let before =
            running.entry((tenant.clone(), ledger.clone(), account.clone(), asset.clone())).or_insert(0);
        prop_assert_eq!(line.balance_after - line.amount, *before, "line {:?} does not follow on", key);
        *before = line.balance_after;
    }
    for (tenant, ledger_id, ledger) in state.ledgers() {
        for (account_id, account) in &ledger.accounts {
            for (asset, balance) in &account.balances {
                let key = (tenant.clone(), ledger_id.clone(), account_id.clone(), asset.clone());
                let stated = running.remove(&key).unwrap_or(0);
                prop_assert_eq!(stated, balance.posted, "statement of {:?} ends off its balance", key);
            }
        }
    }
    prop_assert!(running.values().all(|&b| b == 0), "lines of accounts without balances: {:?}", running);
    Ok(())
}

/// A partition's log: its owner's claim, then the events answering commands 0, 1, ...
fn log_of(events: Vec<tally_core::Event>) -> Vec<LogRecord> {
    let answers = events.into_iter().enumerate().map(|(i, event)| LogRecord::Event {
        epoch: 1,
        command_offset: i as i64,
        event,
    });
    std::iter::once(LogRecord::Claim { epoch: 1, owner: "p".into() }).chain(answers).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn rows_folded_event_by_event_equal_the_rows_of_the_final_state(history in testkit::history()) {
        let (state, events, _) = testkit::run(&history, |_, _| {});
        let mut replica = Replica::new();
        let mut rows: BTreeMap<RowKey, Row> = BTreeMap::new();
        let claim = LogRecord::Claim { epoch: 1, owner: "p".into() };
        prop_assert!(projection::fold(&mut replica, &claim, 0, 0).is_empty());
        for (i, event) in events.iter().enumerate() {
            let record = LogRecord::Event { epoch: 1, command_offset: i as i64, event: event.clone() };
            testkit::write_changes(&mut rows, projection::fold(&mut replica, &record, 0, i as i64 + 1));
        }
        let outcomes = rows.keys().filter(|k| matches!(k, RowKey::Outcome { .. })).count();
        let distinct_commands: std::collections::BTreeSet<_> =
            events.iter().map(|e| (e.tenant.clone(), e.command_id.clone())).collect();
        prop_assert_eq!(outcomes, distinct_commands.len(), "one outcome row per command");
        let indexed = rows.keys().filter(|k| matches!(k, RowKey::Event { .. })).count();
        prop_assert_eq!(indexed, events.len(), "one events-index row per event");
        let timeline: Vec<_> = rows.iter().filter_map(|(k, r)| match (k, r) {
            (RowKey::EventAt { .. }, Row::EventAt(at)) => Some((at.stream.clone(), at.stream_version)),
            _ => None,
        }).collect();
        // Per tenant, in log order (times never go back in these histories).
        let mut by_tenant: Vec<&tally_core::Event> = events.iter().collect();
        by_tenant.sort_by_key(|e| e.tenant.clone());
        let expected: Vec<_> = by_tenant.iter().map(|e| (e.stream.clone(), e.stream_version)).collect();
        prop_assert_eq!(timeline, expected, "the timeline lists every event of a tenant, in time order");
        check_statements(&rows, &state)?;
        rows.retain(|k, _| !k.is_from_events());
        prop_assert_eq!(rows, projection::rows_of(&state));
        prop_assert_eq!(replica.state, state);
    }

    /// A batch writes each row once, with its value after the batch; the rows a store ends with
    /// are the same however the log is cut into batches.
    #[test]
    fn rows_folded_in_batches_equal_rows_folded_event_by_event(
        history in testkit::history(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let (_, events, _) = testkit::run(&history, |_, _| {});
        let log = log_of(events);
        let (mut one_by_one, mut replica) = (BTreeMap::new(), Replica::new());
        for (offset, record) in log.iter().enumerate() {
            testkit::write_changes(&mut one_by_one, projection::fold(&mut replica, record, 0, offset as i64));
        }
        let mut bounds: Vec<usize> = cuts.iter().map(|c| c.index(log.len() + 1)).collect();
        bounds.extend([0, log.len()]);
        bounds.sort();
        bounds.dedup();
        let (mut batched, mut replica) = (BTreeMap::new(), Replica::new());
        for range in bounds.windows(2) {
            let batch = (range[0]..range[1]).map(|offset| (offset as i64, &log[offset]));
            let changes = projection::fold_batch(&mut replica, batch, 0);
            let keys: std::collections::BTreeSet<_> = changes.iter().map(|(k, _)| k).collect();
            prop_assert_eq!(keys.len(), changes.len(), "each row once per batch");
            testkit::write_changes(&mut batched, changes);
        }
        prop_assert_eq!(batched, one_by_one);
    }

    /// A fold that forgets command records and settled transactions once a batch is written,
    /// and reads them back from its own rows when a later event names one, writes the same
    /// rows as a fold that keeps everything, and holds nothing but pending transactions between
    /// batches: its memory does not grow with the commands answered. It starts forgetting at a random
    /// batch, from a state that kept everything until then (as one restored from a processor's
    /// snapshot does).
    #[test]
    fn a_fold_that_forgets_what_its_rows_hold_writes_the_same_rows(
        history in testkit::history(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
        restored_at in any::<prop::sample::Index>(),
    ) {
        let (state, events, _) = testkit::run(&history, |_, _| {});
        let log = log_of(events);
        let mut keeping = BTreeMap::new();
        testkit::fold_into(&mut keeping, log.iter().enumerate().map(|(o, r)| (o as i64, r)), 0);
        let mut bounds: Vec<usize> = cuts.iter().map(|c| c.index(log.len() + 1)).collect();
        bounds.extend([0, log.len()]);
        bounds.sort();
        bounds.dedup();
        let restored_at = bounds[restored_at.index(bounds.len() - 1)];
        let (mut rows, mut replica, mut forgetting) = (BTreeMap::new(), Replica::new(), false);
        for range in bounds.windows(2) {
            let batch: Vec<_> = (range[0]..range[1]).map(|offset| (offset as i64, &log[offset])).collect();
            let wanted = memory::keys_named_by_events(&replica.state, batch.iter().map(|(_, r)| *r));
            let found: Vec<_> =
                wanted.into_iter().filter_map(|k| rows.get(&k).cloned().map(|row| (k, row))).collect();
            memory::recall(&mut replica.state, found);
            testkit::write_changes(&mut rows, projection::fold_batch(&mut replica, batch.iter().copied(), 0));
            if range[1] <= restored_at {
                continue; // until then, a state that keeps everything (as a snapshot's does)
            }
            if !forgetting {
                replica.state.forget_all_settled();
                forgetting = true;
            }
            memory::forget_settled(&mut replica.state, batch.iter().map(|(_, r)| *r));
            prop_assert_eq!(replica.state.commands_len(), 0, "no command record kept");
            let settled = projection::rows_of(&replica.state)
                .values()
                .filter(|r| matches!(r, Row::Transaction(tx) if tx.status != tally_core::TxStatus::Pending))
                .count();
            prop_assert_eq!(settled, 0, "no settled transaction kept");
        }
        prop_assert_eq!(rows, keeping);
        let pending_at_end = state.ledgers().flat_map(|(_, _, l)| l.transactions.values())
            .filter(|tx| tx.status == tally_core::TxStatus::Pending).count();
        prop_assert_eq!(replica.state.transactions_len(), pending_at_end);
    }
}

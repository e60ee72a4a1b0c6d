//! A processor that forgets what a projection holds answers every command exactly as one that
//! keeps everything: random histories with retried and conflicting command ids, reused
//! transaction ids, reversals, commits and voids of transactions recorded long before, a
//! projection that lags by random amounts, windows down to zero events, and restarts from
//! snapshots of the forgetting state (replayed with recall).

use proptest::prelude::*;
use proptest::sample::Index;
use std::collections::BTreeMap;
use tally_core::log::{LogRecord, Replica};
use tally_core::memory::{self, Window};
use tally_core::projection::{self, Row, RowKey};
use tally_core::{CommandId, decide, testkit};

/// The projection the forgetting processor reads back from: the rows of the log folded up to
/// `checkpoint`.
struct Projection {
    replica: Replica,
    rows: BTreeMap<RowKey, Row>,
    checkpoint: i64,
}

impl Projection {
    /// Folds the log on up to and including offset `to` (never back).
    fn advance(&mut self, log: &[LogRecord], to: i64) {
        while self.checkpoint < to {
            self.checkpoint += 1;
            let offset = self.checkpoint;
            let changes = projection::fold(&mut self.replica, &log[offset as usize], 0, offset);
            testkit::write_changes(&mut self.rows, changes);
        }
    }

    /// The rows of `keys` it has (what `ProjectionStore::rows_named` returns).
    fn rows_named(&self, keys: Vec<RowKey>) -> Vec<(RowKey, Row)> {
        keys.into_iter().filter_map(|k| self.rows.get(&k).cloned().map(|row| (k, row))).collect()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn a_processor_that_forgets_answers_every_command_as_one_that_keeps_everything(
        history in testkit::history(),
        window_events in 0i64..6,
        reused_ids in prop::collection::vec(prop::option::weighted(0.2, any::<Index>()), 64),
        lags in prop::collection::vec(0i64..10, 1..16),
        restarts in prop::collection::vec(any::<Index>(), 0..3),
    ) {
        let claim = LogRecord::Claim { epoch: 1, owner: "p".into() };
        let mut log = vec![claim.clone()];
        let (mut keeping, mut forgetting) = (Replica::new(), Replica::new());
        keeping.read(0, &claim);
        forgetting.read(0, &claim);
        let mut window = Window::after(-1);
        let mut projected = Projection { replica: Replica::new(), rows: BTreeMap::new(), checkpoint: -1 };
        let mut snapshots: Vec<(i64, Replica)> = Vec::new();
        let restart_at: Vec<usize> = restarts.iter().map(|r| r.index(history.len())).collect();
        let mut now = 1_700_000_000_000i64;
        for (i, (command, dt)) in history.iter().enumerate() {
            now += dt;
            let mut command = command.clone();
            // Some commands reuse an earlier command's id: a retry or a conflict, found only
            // among the forgotten ones once the first answer is old enough.
            let id = reused_ids[i % reused_ids.len()].map_or(i, |earlier| earlier.index(i + 1));
            command.command_id = CommandId::parse(format!("c{id}")).unwrap();

            if window.forgotten_upto() >= 0 {
                prop_assert!(projected.checkpoint >= window.forgotten_upto(), "recall reads a projection that covers what was forgotten");
                let found = projected.rows_named(memory::keys_read_by_command(&forgetting.state, &command));
                window.recalled(found.iter().map(|(key, _)| key));
                memory::recall(&mut forgetting.state, found);
            }
            let expected = decide(&keeping.state, &command, now);
            prop_assert_eq!(&decide(&forgetting.state, &command, now), &expected, "command {}", i);

            let offset = log.len() as i64;
            let record = LogRecord::Event { epoch: 1, command_offset: i as i64, event: expected };
            keeping.read(offset, &record);
            forgetting.read(offset, &record);
            window.changed(offset, &record);
            log.push(record);

            projected.advance(&log, offset - lags[i % lags.len()]);
            window.forget_upto(projected.checkpoint.min(offset - window_events), &mut forgetting.state);
            if i % 7 == 0 {
                snapshots.push((offset, forgetting.clone()));
            }
            if restart_at.contains(&i) && let Some((covers, snapshot)) = snapshots.get(i % snapshots.len().max(1)) {
                // A new owner: the snapshot, then the log after it, reading back what the
                // snapshot's owner forgot (the real one waits until the projection covers it).
                projected.advance(&log, *covers);
                let mut restored = snapshot.clone();
                for (offset, record) in log.iter().enumerate().skip(*covers as usize + 1) {
                    let wanted = memory::keys_named_by_events(&restored.state, [record]);
                    memory::recall(&mut restored.state, projected.rows_named(wanted));
                    restored.read(offset as i64, record);
                }
                forgetting = restored;
                window = Window::after(*covers);
                window.changed_all(offset, &forgetting.state);
            }
        }
        // Once the projection covers the whole log, nothing but pending transactions needs
        // to stay in memory.
        let head = log.len() as i64 - 1;
        projected.advance(&log, head);
        window.forget_upto(head, &mut forgetting.state);
        let pending = keeping.state.ledgers().flat_map(|(_, _, l)| l.transactions.values())
            .filter(|tx| tx.status == tally_core::TxStatus::Pending).count();
        prop_assert_eq!(forgetting.state.commands_len(), 0);
        prop_assert_eq!(forgetting.state.transactions_len(), pending);
    }
}

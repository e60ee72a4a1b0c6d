//! Projections built event by event equal the rows the final state implies, for random
//! histories: no event forgets a row it changed, and none writes a row it should not.

use proptest::prelude::*;
use std::collections::BTreeMap;
use tally_core::log::{LogRecord, Replica};
use tally_core::projection::{self, Row, RowKey};
use tally_core::testkit;

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
            for (key, value) in projection::fold(&mut replica, &record, 0, i as i64 + 1) {
                match value {
                    Some(v) => rows.insert(key, v),
                    None => rows.remove(&key),
                };
            }
        }
        let outcomes = rows.keys().filter(|k| matches!(k, RowKey::Outcome { .. })).count();
        let distinct_commands: std::collections::BTreeSet<_> =
            events.iter().map(|e| (e.tenant.clone(), e.command_id.clone())).collect();
        prop_assert_eq!(outcomes, distinct_commands.len(), "one outcome row per command");
        rows.retain(|k, _| !matches!(k, RowKey::Outcome { .. }));
        prop_assert_eq!(rows, projection::rows_of(&state));
        prop_assert_eq!(replica.state, state);
    }
}

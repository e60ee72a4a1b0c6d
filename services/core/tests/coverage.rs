//! Guards the generator: random histories must reach the outcomes the properties are about,
//! or the properties would pass vacuously.

use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;
use std::collections::BTreeMap;

#[test]
fn histories_reach_every_interesting_outcome() {
    let mut runner = TestRunner::deterministic();
    let mut kinds: BTreeMap<String, u32> = BTreeMap::new();
    for _ in 0..2_000 {
        let h = tally_core::testkit::history().new_tree(&mut runner).unwrap().current();
        tally_core::testkit::run(&h, |_, e| {
            let k = match e.body.rejection() {
                Some(r) => format!("{}:{}", e.body.kind(), r.code()),
                None => e.body.kind().to_owned(),
            };
            *kinds.entry(k).or_default() += 1;
        });
    }
    println!("{kinds:#?}");
    for must in [
        "TransactionPosted",
        "TransactionPending",
        "TransactionDeduplicated",
        "PendingCommitted",
        "PendingVoided",
        "PendingExpired",
        "AccountOpened",
        "AccountUpdated",
        "AccountClosed",
        "DocumentPut",
        "DocumentDeleted",
        "TransactionFailed:INSUFFICIENT_FUNDS",
        "TransactionFailed:NON_POSITIVE_AMOUNT",
        "TransactionFailed:UNKNOWN_ASSET",
        "TransactionFailed:SELF_POSTING",
        "TransactionFailed:OVERFLOW",
        "CommandRejected:ID_CONFLICT",
        "CommandRejected:NOT_PENDING",
        "TransactionFailed:ALREADY_REVERSED",
    ] {
        assert!(kinds.get(must).copied().unwrap_or(0) >= 5, "histories rarely reach {must}: {kinds:#?}");
    }
}

//! Properties of the core that must hold for every history. 10,000 cases each.

use proptest::prelude::*;
use std::collections::HashMap;
use tally_core::testkit::*;
use tally_core::*;

fn config() -> ProptestConfig {
    ProptestConfig { cases: 10_000, max_shrink_iters: 10_000, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(config())]

    /// Per ledger and asset the balances sum to zero, and no account is below its limit counting
    /// pending holds, after every single event.
    #[test]
    fn invariants_hold_after_every_event(history in history()) {
        let mut broken = None;
        run(&history, |state, event| {
            if broken.is_none() {
                broken = check_invariants(state).err().map(|e| format!("after {}: {e}", event.event_id()));
            }
        });
        prop_assert!(broken.is_none(), "{}", broken.unwrap());
    }

    /// Replaying the produced events into a fresh state gives an identical state.
    #[test]
    fn replay_rebuilds_identical_state(history in history()) {
        let (state, events, _) = run(&history, |_, _| {});
        let mut replayed = log::Replica::new();
        for (i, event) in events.into_iter().enumerate() {
            // As `run` places them: event i at offset i + 1, after the owner's claim.
            let record = log::LogRecord::Event { epoch: 0, command_offset: i as i64, event };
            prop_assert_eq!(replayed.read(i as i64 + 1, &record), log::Verdict::Apply);
        }
        prop_assert_eq!(replayed.state, state);
    }

    /// A command id names one command in its stream: the same command sent again under it has
    /// no effect and is answered by a pointer to the first answer; another command under it is
    /// a conflict with no effect (only the stream's version counts the rejection).
    #[test]
    fn a_command_id_has_one_effect_and_one_first_answer(history in history(), pick in any::<prop::sample::Index>(), later in 0i64..100_000) {
        let (state, events, now) = run(&history, |_, _| {});
        let i = pick.index(events.len());
        let first = &events[i];
        let mut repeat = history[i].0.clone();
        repeat.command_id = first.command_id.clone();
        let again = decide(&state, &repeat, now + later);
        prop_assert_eq!(&again.body, &EventBody::CommandDeduplicated { first_version: first.stream_version, first_offset: i as i64 + 1 });
        // Another command of the same stream (another stream would be another command).
        let other = match repeat.body.stream() {
            StreamId::Ledger(ledger) => CommandBody::CloseAccount { ledger, account: AccountId::parse("nobody").unwrap() },
            StreamId::Document(doc_type, key) => CommandBody::DeleteDocument { doc_type, key, expected_version: Some(999) },
        };
        let conflicting = Command { body: other, ..repeat.clone() };
        let refused = decide(&state, &conflicting, now + later);
        prop_assert!(matches!(refused.body, EventBody::CommandRejected { reason: Reason::CommandIdConflict, conflicts_with: Some(v), .. } if v == first.stream_version), "{:?}", refused.body);
        for event in [again, refused] {
            let mut after = state.clone();
            apply(&mut after, &event);
            prop_assert_eq!(after.stream_version(&event.tenant, &event.stream), state.stream_version(&event.tenant, &event.stream) + 1);
            // Nothing but the stream's version moved: as a plain rejection (remembering no id).
            let mut before = state.clone();
            let body = EventBody::CommandRejected { command: "x".into(), reason: Reason::NoPostings, detail: String::new(), conflicts_with: None };
            apply(&mut before, &Event { body, command_fingerprint: 0, ..event.clone() });
            prop_assert_eq!(after, before);
        }
    }

    /// The same transaction id twice has one effect: the same body returns the first outcome and
    /// changes nothing; a different body is a conflict and changes nothing.
    #[test]
    fn same_transaction_id_twice_has_one_effect(history in history(), retry_at in 0i64..5000) {
        let (state, _, now) = run(&history, |_, _| {});
        let mut first_requests: HashMap<(TenantId, LedgerId, TxId), TxRequest> = HashMap::new();
        for (command, _) in &history {
            if let CommandBody::Transact { ledger, tx_id, request } = &command.body {
                first_requests.entry((command.tenant.clone(), ledger.clone(), tx_id.clone())).or_insert_with(|| request.clone());
            }
        }
        for ((tenant, ledger, tx_id), request) in first_requests {
            let before = state.ledger(&tenant, &ledger).expect("ledger of a sent transaction exists");
            let first = before.transactions.get(&tx_id).expect("first use of an id is recorded").clone();
            let changed = match &request {
                TxRequest::Transfer { postings, metadata, pending_timeout_ms } => {
                    let mut p = postings.clone();
                    p[0].amount = p[0].amount.wrapping_add(1);
                    TxRequest::Transfer { postings: p, metadata: metadata.clone(), pending_timeout_ms: *pending_timeout_ms }
                }
                TxRequest::Reversal { original, metadata } => {
                    let mut m = metadata.clone();
                    m.insert("changed".into(), "yes".into());
                    TxRequest::Reversal { original: original.clone(), metadata: m }
                }
            };
            for (req, expect_dup) in [(request, true), (changed, false)] {
                let command = Command {
                    tenant: tenant.clone(),
                    command_id: CommandId::parse("retry").unwrap(),
                    actor: Actor::parse("tester").unwrap(),
                    body: CommandBody::Transact { ledger: ledger.clone(), tx_id: tx_id.clone(), request: req },
                };
                let event = decide(&state, &command, now + retry_at);
                if expect_dup {
                    let is_dup = matches!(event.body, EventBody::TransactionDeduplicated { .. });
                    prop_assert!(is_dup, "retry of {} gave {:?}", tx_id, event.body);
                } else {
                    prop_assert_eq!(event.body.rejection(), Some(Reason::IdConflict));
                }
                let mut after = state.clone();
                apply(&mut after, &event);
                let after = after.ledger(&tenant, &ledger).unwrap();
                prop_assert_eq!(after.transactions.get(&tx_id), Some(&first));
                prop_assert_eq!(&after.accounts, &before.accounts);
                prop_assert_eq!(after.transactions.len(), before.transactions.len());
            }
        }
    }

    /// Pending holds are released exactly once: by commit, void or expiry, never two of them;
    /// and once every deadline has passed, sweeping expiries leaves no hold anywhere.
    #[test]
    fn pending_holds_are_released_exactly_once(history in history()) {
        let (mut state, events, now) = run(&history, |_, _| {});
        let mut releases: HashMap<(TenantId, LedgerId, TxId), u32> = HashMap::new();
        let mut pendings: HashMap<(TenantId, LedgerId, TxId), u32> = HashMap::new();
        for e in &events {
            match &e.body {
                EventBody::TransactionPending { ledger, tx_id, .. } => {
                    *pendings.entry((e.tenant.clone(), ledger.clone(), tx_id.clone())).or_default() += 1;
                }
                EventBody::PendingCommitted { ledger, tx_id, .. }
                | EventBody::PendingVoided { ledger, tx_id }
                | EventBody::PendingExpired { ledger, tx_id } => {
                    let key = (e.tenant.clone(), ledger.clone(), tx_id.clone());
                    prop_assert!(pendings.contains_key(&key), "{} released but never pending", tx_id);
                    *releases.entry(key).or_default() += 1;
                }
                _ => {}
            }
        }
        prop_assert!(pendings.values().all(|n| *n == 1));
        prop_assert!(releases.values().all(|n| *n == 1), "released twice: {:?}", releases);

        // Sweep: after the longest timeout every pending transaction expires, each once.
        let later = now + 1_000_000;
        for (tenant, ledger, tx_id) in state.expired_pending(later) {
            let command = Command {
                tenant,
                command_id: CommandId::parse(format!("sweep-{tx_id}")).unwrap(),
                actor: Actor::parse("timer").unwrap(),
                body: CommandBody::ExpirePending { ledger, tx_id },
            };
            let event = decide(&state, &command, later);
            prop_assert!(matches!(event.body, EventBody::PendingExpired { .. }), "{:?}", event.body);
            apply(&mut state, &event);
        }
        prop_assert!(state.expired_pending(later).is_empty());
        for (_, _, ledger) in state.ledgers() {
            for account in ledger.accounts.values() {
                for b in account.balances.values() {
                    prop_assert_eq!((b.pending_out, b.pending_in), (0, 0));
                }
            }
        }
        check_invariants(&state).map_err(TestCaseError::fail)?;
    }
}

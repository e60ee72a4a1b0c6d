//! One example per rule: what is accepted, and each rejection with its reason code.

use tally_core::*;

const T0: i64 = 1_700_000_000_000;

struct Ledger1 {
    state: State,
    now: i64,
    n: u32,
}

fn id<T: TryFrom<String>>(s: &str) -> T
where
    T::Error: std::fmt::Debug,
{
    T::try_from(s.to_owned()).unwrap()
}

fn usd() -> Asset {
    Asset::parse("USD/2").unwrap()
}

fn posting(from: &str, to: &str, amount: Amount) -> Posting {
    Posting { source: id(from), destination: id(to), asset: usd(), amount }
}

fn transfer(postings: Vec<Posting>) -> TxRequest {
    TxRequest::Transfer { postings, metadata: Metadata::new(), pending_timeout_ms: None }
}

fn hold(postings: Vec<Posting>, timeout_ms: u64) -> TxRequest {
    TxRequest::Transfer { postings, metadata: Metadata::new(), pending_timeout_ms: Some(timeout_ms) }
}

impl Ledger1 {
    /// A ledger `main` of tenant `acme` with USD/2 defined.
    fn new() -> Self {
        let mut l = Ledger1 { state: State::new(), now: T0, n: 0 };
        l.ok(CommandBody::DefineAsset { ledger: id("main"), asset: usd() });
        l
    }

    fn send(&mut self, body: CommandBody) -> Event {
        self.n += 1;
        let command = Command {
            tenant: id("acme"),
            command_id: id(&format!("c{}", self.n)),
            actor: id("tester"),
            body,
        };
        let event = decide(&self.state, &command, self.now);
        apply(&mut self.state, &event);
        event
    }

    fn ok(&mut self, body: CommandBody) -> Event {
        let e = self.send(body);
        assert_eq!(e.body.rejection(), None, "{:?}", e.body);
        e
    }

    fn rejected(&mut self, body: CommandBody, reason: Reason) {
        let before = self.state.ledger(&id("acme"), &id("main")).cloned();
        let e = self.send(body);
        assert_eq!(e.body.rejection(), Some(reason), "{:?}", e.body);
        let after = self.state.ledger(&id("acme"), &id("main")).cloned();
        if let (Some(b), Some(a)) = (before, after) {
            assert_eq!(a.accounts, b.accounts, "a rejection changed balances");
        }
    }

    fn tx(&mut self, tx_id: &str, request: TxRequest) -> Event {
        self.send(CommandBody::Transact { ledger: id("main"), tx_id: id(tx_id), request })
    }

    fn balance(&self, account: &str) -> Balance {
        let l = self.state.ledger(&id("acme"), &id("main")).unwrap();
        l.accounts.get(&id::<AccountId>(account)).map(|a| a.balance(&usd())).unwrap_or_default()
    }

    fn status(&self, tx_id: &str) -> TxStatus {
        self.state.ledger(&id("acme"), &id("main")).unwrap().transactions[&id::<TxId>(tx_id)].status
    }
}

#[test]
fn transfers_move_money_and_auto_create_accounts() {
    let mut l = Ledger1::new();
    let e = l.tx("t1", transfer(vec![posting("world", "alice", 1000), posting("alice", "bob", 300)]));
    assert!(matches!(e.body, EventBody::TransactionPosted { .. }));
    assert_eq!(
        (l.balance("world").posted, l.balance("alice").posted, l.balance("bob").posted),
        (-1000, 700, 300)
    );
    assert_eq!(e.stream_version, 2);
    assert_eq!(e.event_id(), "acme/main@2");
    assert_eq!(l.status("t1"), TxStatus::Posted);
}

#[test]
fn each_bad_posting_has_its_reason_and_records_the_transaction_failed() {
    let mut l = Ledger1::new();
    let cases = [
        ("z", transfer(vec![posting("world", "alice", 0)]), Reason::NonPositiveAmount),
        ("n", transfer(vec![posting("world", "alice", -5)]), Reason::NonPositiveAmount),
        ("s", transfer(vec![posting("alice", "alice", 5)]), Reason::SelfPosting),
        ("e", transfer(vec![]), Reason::NoPostings),
        ("i", transfer(vec![posting("alice", "bob", 1)]), Reason::InsufficientFunds),
        ("m", transfer(vec![posting("world", "a", 1); limits::POSTINGS_MAX + 1]), Reason::TooManyPostings),
        ("to", hold(vec![posting("world", "a", 1)], 0), Reason::InvalidTimeout),
    ];
    for (tx_id, request, reason) in cases {
        let e = l.tx(tx_id, request);
        assert!(
            matches!(e.body, EventBody::TransactionFailed { reason: r, .. } if r == reason),
            "{tx_id}: {:?}",
            e.body
        );
        assert_eq!(l.status(tx_id), TxStatus::Failed(Failure::Rejected(reason)));
    }
    let eur = Posting { asset: Asset::parse("EUR/2").unwrap(), ..posting("world", "alice", 1) };
    l.rejected(
        CommandBody::Transact { ledger: id("main"), tx_id: id("u"), request: transfer(vec![eur]) },
        Reason::UnknownAsset,
    );
    let usd3 = Posting { asset: Asset::parse("USD/3").unwrap(), ..posting("world", "alice", 1) };
    l.rejected(
        CommandBody::Transact { ledger: id("main"), tx_id: id("u3"), request: transfer(vec![usd3]) },
        Reason::UnknownAsset,
    );
}

#[test]
fn overflow_is_rejected() {
    let mut l = Ledger1::new();
    l.ok(CommandBody::Transact {
        ledger: id("main"),
        tx_id: id("a"),
        request: transfer(vec![posting("world", "alice", i128::MAX)]),
    });
    let e = l.tx("b", transfer(vec![posting("world", "alice", 1)]));
    assert_eq!(e.body.rejection(), Some(Reason::Overflow));
    let e = l.tx("c", transfer(vec![posting("world", "bob", i128::MAX), posting("world", "bob", i128::MAX)]));
    assert_eq!(e.body.rejection(), Some(Reason::Overflow));
    assert_eq!(l.balance("alice").posted, i128::MAX);
    // Net zero for world, but applied posting by posting world would pass i128::MIN on the way.
    let e = l.tx("d", transfer(vec![posting("world", "bob", 10), posting("bob", "world", 10)]));
    assert_eq!(e.body.rejection(), Some(Reason::Overflow));
}

#[test]
fn a_transaction_id_is_unique_forever() {
    let mut l = Ledger1::new();
    let req = transfer(vec![posting("world", "alice", 10)]);
    l.tx("t", req.clone());
    assert!(matches!(l.tx("t", req).body, EventBody::TransactionDeduplicated { .. }));
    assert_eq!(l.balance("alice").posted, 10);
    l.rejected(
        CommandBody::Transact {
            ledger: id("main"),
            tx_id: id("t"),
            request: transfer(vec![posting("world", "alice", 11)]),
        },
        Reason::IdConflict,
    );
    // A failed id stays failed: retrying the same request returns the first outcome.
    let broke = transfer(vec![posting("bob", "alice", 10)]);
    assert_eq!(l.tx("f", broke.clone()).body.rejection(), Some(Reason::InsufficientFunds));
    l.tx("fund", transfer(vec![posting("world", "bob", 100)]));
    assert!(matches!(l.tx("f", broke).body, EventBody::TransactionDeduplicated { .. }));
    assert_eq!(l.status("f"), TxStatus::Failed(Failure::Rejected(Reason::InsufficientFunds)));
}

#[test]
fn pending_holds_limit_available_and_commit_partially() {
    let mut l = Ledger1::new();
    l.tx("fund", transfer(vec![posting("world", "alice", 100)]));
    assert!(matches!(
        l.tx("h", hold(vec![posting("alice", "bob", 80)], 60_000)).body,
        EventBody::TransactionPending { .. }
    ));
    assert_eq!(l.balance("alice"), Balance { posted: 100, pending_out: 80, pending_in: 0 });
    assert_eq!(l.balance("bob"), Balance { posted: 0, pending_out: 0, pending_in: 80 });
    // Only 20 is available now.
    assert_eq!(
        l.tx("x", transfer(vec![posting("alice", "carol", 21)])).body.rejection(),
        Some(Reason::InsufficientFunds)
    );
    l.rejected(
        CommandBody::CommitPending { ledger: id("main"), tx_id: id("h"), amounts: Some(vec![81]) },
        Reason::InvalidCommitAmounts,
    );
    l.rejected(
        CommandBody::CommitPending { ledger: id("main"), tx_id: id("h"), amounts: Some(vec![0]) },
        Reason::InvalidCommitAmounts,
    );
    l.ok(CommandBody::CommitPending { ledger: id("main"), tx_id: id("h"), amounts: Some(vec![50]) });
    assert_eq!(l.balance("alice"), Balance { posted: 50, pending_out: 0, pending_in: 0 });
    assert_eq!(l.balance("bob"), Balance { posted: 50, pending_out: 0, pending_in: 0 });
    assert_eq!(l.status("h"), TxStatus::Posted);
    l.rejected(CommandBody::VoidPending { ledger: id("main"), tx_id: id("h") }, Reason::NotPending);
    l.rejected(
        CommandBody::CommitPending { ledger: id("main"), tx_id: id("nope"), amounts: None },
        Reason::TransactionNotFound,
    );
}

#[test]
fn pending_transactions_void_and_expire() {
    let mut l = Ledger1::new();
    l.tx("fund", transfer(vec![posting("world", "alice", 100)]));
    l.tx("v", hold(vec![posting("alice", "bob", 10)], 1_000));
    l.ok(CommandBody::VoidPending { ledger: id("main"), tx_id: id("v") });
    assert_eq!(l.status("v"), TxStatus::Failed(Failure::Voided));
    l.tx("x", hold(vec![posting("alice", "bob", 10)], 1_000));
    l.rejected(CommandBody::ExpirePending { ledger: id("main"), tx_id: id("x") }, Reason::NotYetExpired);
    assert!(l.state.expired_pending(l.now + 999).is_empty());
    l.now += 1_000;
    assert_eq!(l.state.expired_pending(l.now).len(), 1);
    l.rejected(
        CommandBody::CommitPending { ledger: id("main"), tx_id: id("x"), amounts: None },
        Reason::PendingExpired,
    );
    l.ok(CommandBody::ExpirePending { ledger: id("main"), tx_id: id("x") });
    assert_eq!(l.status("x"), TxStatus::Failed(Failure::Expired));
    assert_eq!(l.balance("alice"), Balance { posted: 100, pending_out: 0, pending_in: 0 });
    l.rejected(CommandBody::ExpirePending { ledger: id("main"), tx_id: id("x") }, Reason::NotPending);
}

#[test]
fn reversals_post_the_compensating_transaction_once() {
    let mut l = Ledger1::new();
    l.tx("t", transfer(vec![posting("world", "alice", 100), posting("alice", "bob", 40)]));
    let rev = |original: &str| TxRequest::Reversal { original: id(original), metadata: Metadata::new() };
    let e = l.tx("r", rev("t"));
    let EventBody::TransactionPosted { postings, .. } = e.body else { panic!("{:?}", e.body) };
    assert_eq!(postings, vec![posting("alice", "world", 100), posting("bob", "alice", 40)]);
    assert_eq!((l.balance("alice").posted, l.balance("bob").posted, l.balance("world").posted), (0, 0, 0));
    assert_eq!(l.tx("r2", rev("t")).body.rejection(), Some(Reason::AlreadyReversed));
    assert_eq!(l.tx("r3", rev("missing")).body.rejection(), Some(Reason::TransactionNotFound));
    l.tx("p", hold(vec![posting("world", "carol", 5)], 10_000));
    assert_eq!(l.tx("r4", rev("p")).body.rejection(), Some(Reason::NotReversible));
}

#[test]
fn accounts_open_with_limits_update_and_close() {
    let mut l = Ledger1::new();
    let limit = |min| vec![AssetLimit { asset: usd(), min_balance: min }];
    let open = |account: &str, limits: Vec<AssetLimit>| CommandBody::OpenAccount {
        ledger: id("main"),
        account: id(account),
        limits,
        metadata: Metadata::new(),
    };
    l.ok(open("credit", limit(Some(-500))));
    l.rejected(open("credit", vec![]), Reason::AccountExists);
    l.rejected(open("world", vec![]), Reason::WorldAccount);
    // A positive minimum on an empty account would start it below its limit.
    l.rejected(open("savings", limit(Some(1))), Reason::LimitBelowBalance);
    l.rejected(
        open("eur", vec![AssetLimit { asset: Asset::parse("EUR/2").unwrap(), min_balance: None }]),
        Reason::UnknownAsset,
    );
    // A credit line of 500.
    l.tx("c1", transfer(vec![posting("credit", "bob", 500)]));
    assert_eq!(l.balance("credit").posted, -500);
    assert_eq!(
        l.tx("c2", transfer(vec![posting("credit", "bob", 1)])).body.rejection(),
        Some(Reason::InsufficientFunds)
    );
    let update = |limits| CommandBody::UpdateAccount {
        ledger: id("main"),
        account: id("credit"),
        limits,
        metadata: Metadata::new(),
    };
    l.rejected(update(limit(Some(-499))), Reason::LimitBelowBalance);
    l.ok(update(limit(None)));
    l.tx("c3", transfer(vec![posting("credit", "bob", 1_000)]));
    let close = |account: &str| CommandBody::CloseAccount { ledger: id("main"), account: id(account) };
    l.rejected(close("credit"), Reason::AccountNotEmpty);
    l.rejected(close("nobody"), Reason::AccountNotFound);
    l.tx("back", transfer(vec![posting("bob", "credit", 1_500)]));
    l.ok(close("credit"));
    assert_eq!(
        l.tx("late", transfer(vec![posting("world", "credit", 1)])).body.rejection(),
        Some(Reason::AccountClosed)
    );
    l.rejected(close("credit"), Reason::AccountClosed);
}

#[test]
fn assets_are_defined_once_per_ledger() {
    let mut l = Ledger1::new();
    l.ok(CommandBody::DefineAsset { ledger: id("main"), asset: usd() });
    l.rejected(
        CommandBody::DefineAsset { ledger: id("main"), asset: Asset::parse("USD/3").unwrap() },
        Reason::AssetConflict,
    );
}

#[test]
fn documents_put_delete_with_expected_versions() {
    let mut l = Ledger1::new();
    let put = |value: &str, expected| CommandBody::PutDocument {
        doc_type: id("orders"),
        key: id("o1"),
        value: value.into(),
        expected_version: expected,
    };
    let del = |expected| CommandBody::DeleteDocument {
        doc_type: id("orders"),
        key: id("o1"),
        expected_version: expected,
    };
    l.rejected(del(None), Reason::DocumentNotFound);
    let e = l.ok(put("{\"a\":1}", Some(0)));
    assert!(matches!(e.body, EventBody::DocumentPut { version: 1, .. }));
    assert_eq!(e.stream, StreamId::Document(id("orders"), id("o1")));
    assert_eq!(e.event_id(), "acme/state/orders/o1@2");
    l.rejected(put("{}", Some(0)), Reason::VersionMismatch);
    l.rejected(put("{", None), Reason::InvalidJson);
    l.rejected(put(&format!("\"{}\"", "x".repeat(limits::DOCUMENT_LEN_MAX)), None), Reason::DocumentTooLarge);
    l.ok(put("{\"a\":2}", Some(1)));
    l.rejected(del(Some(1)), Reason::VersionMismatch);
    assert!(matches!(l.ok(del(Some(2))).body, EventBody::DocumentDeleted { version: 3, .. }));
    let doc = l.state.document(&id("acme"), &id("orders"), &id("o1")).unwrap();
    assert_eq!((doc.version, doc.value.as_deref()), (3, None));
    // After a delete, "must not exist" holds again and versions keep counting.
    assert!(matches!(l.ok(put("{}", Some(0))).body, EventBody::DocumentPut { version: 4, .. }));
}

#[test]
fn metadata_is_bounded() {
    let mut l = Ledger1::new();
    let big: Metadata = (0..=limits::METADATA_ENTRIES_MAX).map(|i| (format!("k{i}"), "v".into())).collect();
    let req = TxRequest::Transfer {
        postings: vec![posting("world", "a", 1)],
        metadata: big,
        pending_timeout_ms: None,
    };
    assert_eq!(l.tx("m", req).body.rejection(), Some(Reason::MetadataTooLarge));
}

#[test]
fn tenants_and_ledgers_are_isolated() {
    let mut l = Ledger1::new();
    l.tx("t", transfer(vec![posting("world", "alice", 10)]));
    let other = Command {
        tenant: id("globex"),
        command_id: id("g1"),
        actor: id("tester"),
        body: CommandBody::Transact {
            ledger: id("main"),
            tx_id: id("t"),
            request: transfer(vec![posting("world", "alice", 10)]),
        },
    };
    // Same ledger and tx id in another tenant: a different id space, and USD is not defined there.
    let e = decide(&l.state, &other, T0);
    assert_eq!(e.body.rejection(), Some(Reason::UnknownAsset));
    assert_eq!(e.stream_version, 1);
}

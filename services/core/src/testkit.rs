//! Test support (feature `testkit`): random command histories over a small universe, so that
//! ids, accounts and assets collide often (retries, conflicts, overdrafts, double releases and
//! closed accounts all happen), and the invariants every state must satisfy.

use crate::*;
use proptest::prelude::*;
use proptest::sample::Index;

/// The tenants histories draw from.
pub const TENANTS: &[&str] = &["acme", "globex"];
/// The ledgers histories draw from.
pub const LEDGERS: &[&str] = &["main", "ops"];
/// The accounts histories draw from, `world` included.
pub const ACCOUNTS: &[&str] = &["world", "alice", "bob", "carol", "dave"];
/// Few transaction ids, so that retries, conflicts and reversals of known ids are frequent.
pub const TX_IDS: &[&str] = &["tx0", "tx1", "tx2", "tx3", "tx4", "tx5", "tx6", "tx7"];
/// The document keys histories draw from (of type `orders`).
pub const DOC_KEYS: &[&str] = &["k1", "k2"];

fn pick<T: Clone + std::fmt::Debug + 'static>(
    items: &'static [&'static str],
    f: fn(&str) -> T,
) -> impl Strategy<Value = T> {
    proptest::sample::select(items).prop_map(f)
}

/// One of [`TENANTS`].
pub fn tenant() -> impl Strategy<Value = TenantId> {
    pick(TENANTS, |s| TenantId::parse(s).unwrap())
}
/// One of [`LEDGERS`].
pub fn ledger() -> impl Strategy<Value = LedgerId> {
    pick(LEDGERS, |s| LedgerId::parse_ledger(s).unwrap())
}
/// One of [`ACCOUNTS`].
pub fn account() -> impl Strategy<Value = AccountId> {
    pick(ACCOUNTS, |s| AccountId::parse(s).unwrap())
}
/// Mostly defined assets; `USD/3` conflicts with `USD/2` and is never usable.
pub fn asset() -> impl Strategy<Value = Asset> {
    let a = |s: &str| Just(Asset::parse(s).unwrap());
    prop_oneof![5 => a("USD/2"), 3 => a("EUR/2"), 1 => a("BTC/8"), 1 => a("USD/3")]
}

/// Mostly `world` as a source, so that money flows in and accounts have funds to spend.
pub fn source() -> impl Strategy<Value = AccountId> {
    prop_oneof![2 => Just(AccountId::world()), 3 => account()]
}
/// One of [`TX_IDS`].
pub fn tx_id() -> impl Strategy<Value = TxId> {
    pick(TX_IDS, |s| TxId::parse(s).unwrap())
}

/// Mostly small positive amounts; sometimes zero, negative or near the edge of i128.
pub fn amount() -> impl Strategy<Value = Amount> {
    prop_oneof![
        24 => 1i128..=500,
        1 => Just(0i128),
        1 => -500i128..0,
        1 => (i128::MAX - 1000)..=i128::MAX,
    ]
}

/// A posting from [`source`] to [`account`] (possibly the same account) of an [`amount`].
pub fn posting() -> impl Strategy<Value = Posting> {
    (source(), account(), asset(), amount()).prop_map(|(source, destination, asset, amount)| Posting {
        source,
        destination,
        asset,
        amount,
    })
}

/// Mostly empty metadata; sometimes one short entry.
pub fn metadata() -> impl Strategy<Value = Metadata> {
    prop_oneof![
        4 => Just(Metadata::new()),
        1 => ("[a-c]", "[x-z]{0,3}").prop_map(|(k, v)| Metadata::from([(k, v)])),
    ]
}

/// A limit in an [`asset()`]: unbounded, or a minimum from -300 to 100 minor units.
pub fn limit() -> impl Strategy<Value = AssetLimit> {
    let min = prop_oneof![Just(None), (-300i128..=100).prop_map(Some)];
    (asset(), min).prop_map(|(asset, min_balance)| AssetLimit { asset, min_balance })
}

/// A transfer of 1 to 3 postings; sometimes pending, with a timeout of 0 to 20,000 ms.
pub fn transfer() -> impl Strategy<Value = TxRequest> {
    let timeout = prop_oneof![6 => Just(None), 4 => (1u64..=20_000).prop_map(Some), 1 => Just(Some(0))];
    (prop_oneof![3 => proptest::collection::vec(posting(), 1..=1), 1 => proptest::collection::vec(posting(), 2..=3)], metadata(), timeout)
        .prop_map(|(postings, metadata, pending_timeout_ms)| TxRequest::Transfer { postings, metadata, pending_timeout_ms })
}

/// Mostly a [`transfer`]; sometimes a reversal of one of [`TX_IDS`].
pub fn request() -> impl Strategy<Value = TxRequest> {
    prop_oneof![
        5 => transfer(),
        1 => (tx_id(), metadata()).prop_map(|(original, metadata)| TxRequest::Reversal { original, metadata }),
    ]
}

/// Any command body, weighted towards transactions.
pub fn body() -> impl Strategy<Value = CommandBody> {
    let doc_type = || Just(DocType::parse("orders").unwrap());
    let doc_key = || pick(DOC_KEYS, |s| DocKey::parse(s).unwrap());
    let partial =
        prop_oneof![3 => Just(None), 1 => proptest::collection::vec(0i128..=600, 1..=3).prop_map(Some)];
    prop_oneof![
        3 => (ledger(), asset()).prop_map(|(ledger, asset)| CommandBody::DefineAsset { ledger, asset }),
        2 => (ledger(), account(), proptest::collection::vec(limit(), 0..=2), metadata())
            .prop_map(|(ledger, account, limits, metadata)| CommandBody::OpenAccount { ledger, account, limits, metadata }),
        1 => (ledger(), account(), proptest::collection::vec(limit(), 0..=2), metadata())
            .prop_map(|(ledger, account, limits, metadata)| CommandBody::UpdateAccount { ledger, account, limits, metadata }),
        1 => (ledger(), account()).prop_map(|(ledger, account)| CommandBody::CloseAccount { ledger, account }),
        12 => (ledger(), tx_id(), request()).prop_map(|(ledger, tx_id, request)| CommandBody::Transact { ledger, tx_id, request }),
        3 => (ledger(), tx_id(), partial).prop_map(|(ledger, tx_id, amounts)| CommandBody::CommitPending { ledger, tx_id, amounts }),
        2 => (ledger(), tx_id()).prop_map(|(ledger, tx_id)| CommandBody::VoidPending { ledger, tx_id }),
        2 => (ledger(), tx_id()).prop_map(|(ledger, tx_id)| CommandBody::ExpirePending { ledger, tx_id }),
        1 => (doc_type(), doc_key(), prop_oneof![Just("{\"n\":1}".to_owned()), Just("not json".to_owned())], proptest::option::of(0u64..3))
            .prop_map(|(doc_type, key, value, expected_version)| CommandBody::PutDocument { doc_type, key, value, expected_version }),
        1 => (doc_type(), doc_key(), proptest::option::of(0u64..3))
            .prop_map(|(doc_type, key, expected_version)| CommandBody::DeleteDocument { doc_type, key, expected_version }),
    ]
}

/// A command with the time that passed before it (ms).
pub fn step() -> impl Strategy<Value = (Command, i64)> {
    let dt = prop_oneof![9 => 0i64..=300, 1 => 0i64..=30_000];
    (tenant(), body(), dt).prop_map(|(tenant, body, dt)| (command(tenant, body), dt))
}

/// Every tenant's ledgers start with their assets defined, then random commands follow.
pub fn history() -> impl Strategy<Value = Vec<(Command, i64)>> {
    let follow_ups = proptest::collection::vec((any::<Index>(), any::<Index>(), 0u8..4), 0..10);
    (proptest::collection::vec(step(), 1..=64), follow_ups).prop_map(|(mut steps, follow_ups)| {
        // Follow some transactions up later: a client retry (same id and body), a commit, a void,
        // or a reversal under a new id (reversing the same original twice must fail).
        for (n, (from, to, kind)) in follow_ups.into_iter().enumerate() {
            let from = from.index(steps.len());
            let (first, _) = steps[from].clone();
            let CommandBody::Transact { ledger, tx_id, .. } = &first.body else {
                continue;
            };
            let (ledger, tx_id) = (ledger.clone(), tx_id.clone());
            let reversal = |attempt: u8| CommandBody::Transact {
                ledger: ledger.clone(),
                tx_id: TxId::parse(format!("{tx_id}r{n}-{attempt}")).unwrap(),
                request: TxRequest::Reversal { original: tx_id.clone(), metadata: Metadata::new() },
            };
            let bodies = match kind {
                0 => vec![first.body.clone()],
                1 => vec![CommandBody::CommitPending { ledger, tx_id, amounts: None }],
                2 => vec![CommandBody::VoidPending { ledger, tx_id }],
                _ => vec![reversal(0), reversal(1)],
            };
            let to = from + to.index(steps.len() - from);
            for body in bodies.into_iter().rev() {
                steps.insert(to + 1, (command(first.tenant.clone(), body), 0));
            }
        }
        let mut setup = Vec::new();
        for tenant in TENANTS {
            for ledger in LEDGERS {
                for asset in ["USD/2", "EUR/2", "BTC/8"] {
                    let body = CommandBody::DefineAsset {
                        ledger: LedgerId::parse_ledger(*ledger).unwrap(),
                        asset: Asset::parse(asset).unwrap(),
                    };
                    setup.push((command(TenantId::parse(*tenant).unwrap(), body), 0));
                }
            }
        }
        setup.extend(steps);
        setup
    })
}

/// `body` as a command of `tenant`, with command id `c` and actor `tester`.
pub fn command(tenant: TenantId, body: CommandBody) -> Command {
    Command {
        tenant,
        command_id: CommandId::parse("c").unwrap(),
        actor: Actor::parse("tester").unwrap(),
        body,
    }
}

/// Runs a history from an empty state; calls `check` after every event. Returns the state, the
/// events and the final time. Event `i` is placed at offset `i + 1` of its partition, as in a
/// log that starts with its owner's claim.
pub fn run(history: &[(Command, i64)], mut check: impl FnMut(&State, &Event)) -> (State, Vec<Event>, i64) {
    let mut state = State::new();
    let mut events = Vec::with_capacity(history.len());
    let mut now = 1_700_000_000_000i64;
    for (i, (command, dt)) in history.iter().enumerate() {
        now += dt;
        let mut command = command.clone();
        command.command_id = CommandId::parse(format!("c{i}")).unwrap();
        let event = decide(&state, &command, now);
        apply(&mut state, &event);
        state.place_command(
            &event.tenant,
            &event.stream,
            &event.command_id,
            event.stream_version,
            i as i64 + 1,
        );
        check(&state, &event);
        events.push(event);
    }
    (state, events, now)
}

/// Per ledger and asset, posted balances sum to zero and holds out equal holds in; every
/// account is at or above its limit counting holds; holds equal what pending transactions hold.
pub fn check_invariants(state: &State) -> Result<(), String> {
    use std::collections::BTreeMap;
    for (tenant, ledger_id, ledger) in state.ledgers() {
        let mut sums: BTreeMap<&Asset, (Wide, Wide, Wide)> = BTreeMap::new();
        let mut expected_holds: BTreeMap<(&AccountId, &Asset), (Amount, Amount)> = BTreeMap::new();
        for tx in ledger.transactions.values().filter(|t| t.status == TxStatus::Pending) {
            for p in &tx.postings {
                expected_holds.entry((&p.source, &p.asset)).or_default().0 += p.amount;
                expected_holds.entry((&p.destination, &p.asset)).or_default().1 += p.amount;
            }
        }
        for (id, account) in &ledger.accounts {
            for asset in account.limits.keys() {
                let available = account.balance(asset).available().ok_or("available overflows")?;
                if account.min_balance(id, asset).is_some_and(|min| available < min) {
                    return Err(format!(
                        "{tenant}/{ledger_id}/{id} {asset}: available {available} below its limit"
                    ));
                }
            }
            for (asset, b) in &account.balances {
                let s = sums.entry(asset).or_default();
                s.0.add(b.posted);
                s.1.add(b.pending_out);
                s.2.add(b.pending_in);
                let available = b.available().ok_or("available overflows")?;
                if let Some(min) = account.min_balance(id, asset)
                    && available < min
                {
                    return Err(format!(
                        "{tenant}/{ledger_id}/{id} {asset}: available {available} < limit {min}"
                    ));
                }
                let holds = expected_holds.get(&(id, asset)).copied().unwrap_or_default();
                if (b.pending_out, b.pending_in) != holds {
                    return Err(format!(
                        "{tenant}/{ledger_id}/{id} {asset}: holds {b:?} != pending transactions {holds:?}"
                    ));
                }
                if account.status == AccountStatus::Closed && *b != Balance::default() {
                    return Err(format!("{tenant}/{ledger_id}/{id} is closed but holds {asset} {b:?}"));
                }
            }
        }
        for (asset, (posted, out, inc)) in sums {
            if posted != Wide::default() || out != inc {
                return Err(format!(
                    "{tenant}/{ledger_id} {asset}: posted sum {posted:?}, holds out {out:?} in {inc:?}"
                ));
            }
        }
    }
    Ok(())
}

/// A 256-bit sum: balances near the edges of i128 must not overflow the check itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Wide {
    high: i128,
    low: u128,
}

impl Wide {
    fn add(&mut self, v: Amount) {
        let (low, carry) = self.low.overflowing_add(v as u128);
        self.low = low;
        self.high += i128::from(carry) - i128::from(v < 0);
    }
}

/// A partition's log as the processor writes it, for benchmarks: a claim, an asset definition
/// for `tenant`, then transfers from `world` to 10,000 accounts of ledger `main`, `n` records
/// in all after the claim. Event `i` is stamped `i` ms.
pub fn transfers_log(tenant: &str, n: usize) -> Vec<crate::log::LogRecord> {
    transfers_log_of(tenant, "main", n)
}

/// [`transfers_log`] on another ledger.
pub fn transfers_log_of(tenant: &str, ledger: &str, n: usize) -> Vec<crate::log::LogRecord> {
    use crate::log::{LogRecord, Replica};
    let tenant = TenantId::parse(tenant).unwrap();
    let ledger = LedgerId::parse_ledger(ledger).unwrap();
    let usd = Asset::parse("USD/2").unwrap();
    let command = |i: usize, body: CommandBody| Command {
        tenant: tenant.clone(),
        command_id: CommandId::parse(format!("c{i}")).unwrap(),
        actor: Actor::parse("bench").unwrap(),
        body,
    };
    let mut replica = Replica::new();
    let mut log = Vec::with_capacity(n + 1);
    let mut append = |replica: &mut Replica, record: LogRecord| {
        replica.read(log.len() as i64, &record);
        log.push(record);
    };
    append(&mut replica, LogRecord::Claim { epoch: 1, owner: "bench".into() });
    let define = command(0, CommandBody::DefineAsset { ledger: ledger.clone(), asset: usd.clone() });
    let event = decide(&replica.state, &define, 0);
    append(&mut replica, LogRecord::Event { epoch: 1, command_offset: 0, event });
    for i in 1..n {
        let request = TxRequest::Transfer {
            postings: vec![Posting {
                source: AccountId::world(),
                destination: AccountId::parse(format!("acct-{}", i % 10_000)).unwrap(),
                asset: usd.clone(),
                amount: 1,
            }],
            metadata: Default::default(),
            pending_timeout_ms: None,
        };
        let tx_id = TxId::parse(format!("tx-{i}")).unwrap();
        let transact = command(i, CommandBody::Transact { ledger: ledger.clone(), tx_id, request });
        let event = decide(&replica.state, &transact, i as i64);
        append(&mut replica, LogRecord::Event { epoch: 1, command_offset: i as i64, event });
    }
    log
}

/// What a projection store does with changes: writes or removes each row.
pub fn write_changes(
    rows: &mut std::collections::BTreeMap<projection::RowKey, projection::Row>,
    changes: Vec<projection::Change>,
) {
    for (key, value) in changes {
        match value {
            Some(row) => rows.insert(key, row),
            None => rows.remove(&key),
        };
    }
}

/// Writes into `rows` a fresh fold of one events partition's records (with their offsets),
/// event by event from an empty state: what every projection of that partition must equal.
pub fn fold_into<'a>(
    rows: &mut std::collections::BTreeMap<projection::RowKey, projection::Row>,
    records: impl IntoIterator<Item = (i64, &'a log::LogRecord)>,
    partition: i32,
) {
    let mut replica = log::Replica::new();
    for (offset, record) in records {
        write_changes(rows, projection::fold(&mut replica, record, partition, offset));
    }
}

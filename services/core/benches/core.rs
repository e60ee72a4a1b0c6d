//! Throughput of the pure core on one core: commands validated and applied per second.
//!
//! `cargo bench -p tally-core --bench core`
//!
//! Baseline in the same run: the least any ledger must do per transfer (look up two balances in
//! a hash map, move the amount, remember the id), so the ratio shows what the rules cost.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use std::collections::HashMap;
use std::hint::black_box;
use tally_core::*;

const BATCH: usize = 10_000;
const ACCOUNTS: usize = 1_000;

fn id<T: TryFrom<String>>(s: String) -> T
where
    T::Error: std::fmt::Debug,
{
    T::try_from(s).unwrap()
}

fn usd() -> Asset {
    Asset::parse("USD/2").unwrap()
}

fn command(body: CommandBody) -> Command {
    Command { tenant: id("bench".into()), command_id: id("c".into()), actor: id("bench".into()), body }
}

/// A ledger with USD defined and every account funded from `world`.
fn funded_state() -> State {
    let mut state = State::new();
    let mut send = |body| {
        let e = decide(&state, &command(body), 0);
        assert_eq!(e.body.rejection(), None);
        apply(&mut state, &e);
    };
    send(CommandBody::DefineAsset { ledger: id("main".into()), asset: usd() });
    for a in 0..ACCOUNTS {
        let postings = vec![Posting {
            source: AccountId::world(),
            destination: id(format!("acct-{a}")),
            asset: usd(),
            amount: 1_000_000_000,
        }];
        send(CommandBody::Transact {
            ledger: id("main".into()),
            tx_id: id(format!("fund-{a}")),
            request: TxRequest::Transfer { postings, metadata: Metadata::new(), pending_timeout_ms: None },
        });
    }
    state
}

/// `BATCH` transactions with fresh ids, each of `postings` postings between funded accounts.
fn transfers(start: &mut u64, postings: usize) -> Vec<Command> {
    (0..BATCH)
        .map(|_| {
            *start += 1;
            let n = *start as usize;
            let postings = (0..postings)
                .map(|p| Posting {
                    source: id(format!("acct-{}", (n + p) % ACCOUNTS)),
                    destination: id(format!("acct-{}", (n + p + 1) % ACCOUNTS)),
                    asset: usd(),
                    amount: 1,
                })
                .collect();
            command(CommandBody::Transact {
                ledger: id("main".into()),
                tx_id: id(format!("tx-{n}")),
                request: TxRequest::Transfer {
                    postings,
                    metadata: Metadata::new(),
                    pending_timeout_ms: None,
                },
            })
        })
        .collect()
}

/// Each batch starts from the funded ledger (a clone, outside the timing): a state that grew
/// over the whole run would put hash-map resizes of millions of entries into random samples.
fn bench_transfers(c: &mut Criterion, name: &str, postings: usize) {
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(BATCH as u64));
    let funded = funded_state();
    let mut next = 0;
    group.bench_function("decide+apply", |b| {
        b.iter_batched_ref(
            || (funded.clone(), transfers(&mut next, postings)),
            |(state, commands)| {
                for (i, c) in commands.iter().enumerate() {
                    let e = decide(state, c, i as i64);
                    debug_assert!(matches!(e.body, EventBody::TransactionPosted { .. }));
                    apply(state, &e);
                }
            },
            BatchSize::LargeInput,
        )
    });
    let funded: HashMap<String, i128> = (0..ACCOUNTS).map(|a| (format!("acct-{a}"), 1_000_000_000)).collect();
    let mut next = 0;
    group.bench_function("baseline: hash map moves", |b| {
        b.iter_batched_ref(
            || (funded.clone(), HashMap::<String, ()>::new(), transfers(&mut next, postings)),
            |(balances, seen, commands)| {
                for c in commands.iter() {
                    let CommandBody::Transact {
                        tx_id, request: TxRequest::Transfer { postings, .. }, ..
                    } = &c.body
                    else {
                        unreachable!()
                    };
                    for p in postings {
                        *balances.get_mut(p.source.as_str()).unwrap() -= p.amount;
                        *balances.get_mut(p.destination.as_str()).unwrap() += p.amount;
                    }
                    seen.insert(tx_id.as_str().to_owned(), ());
                }
                black_box(&balances);
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

fn simple_transfers(c: &mut Criterion) {
    bench_transfers(c, "simple transfer", 1);
}

fn ten_posting_transactions(c: &mut Criterion) {
    bench_transfers(c, "10-posting transaction", 10);
}

criterion_group!(benches, simple_transfers, ten_posting_transactions);
criterion_main!(benches);

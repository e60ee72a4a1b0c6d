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

/// A command under its default id (`tx:<tx_id>` for a transaction): every transaction is a new
/// command id, as when clients send no `Idempotency-Key`.
fn command(body: CommandBody) -> Command {
    let command_id = CommandId::default_for(&body).unwrap_or_else(|| id("c".into()));
    Command { tenant: id("bench".into()), command_id, actor: id("bench".into()), body }
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

/// Resident memory of this process, in bytes (Linux: /proc/self/statm).
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// What `build` returns, and how much the process's resident memory grew while it ran (`None`
/// without /proc/self/statm).
fn grown_by<T>(build: impl FnOnce() -> T) -> Option<(u64, T)> {
    let before = resident_bytes()?;
    let built = build();
    Some((resident_bytes()?.saturating_sub(before), built))
}

/// What remembering command ids costs: the same 500,000 transfers folded twice, once as they
/// are and once with their fingerprints cleared (so no id is remembered); the difference in
/// resident memory per id. Printed, not timed.
fn command_id_memory(_: &mut Criterion) {
    const N: usize = 500_000;
    let mut start = 0;
    let events: Vec<Event> = {
        let mut state = funded_state();
        (0..N / BATCH)
            .flat_map(|_| transfers(&mut start, 1))
            .map(|c| {
                let e = decide(&state, &c, 0);
                apply(&mut state, &e);
                e
            })
            .collect()
    };
    // Each state is kept alive until both are measured, so neither reuses the other's memory.
    let measure = |remember: bool| {
        grown_by(|| {
            let mut state = funded_state();
            for e in &events {
                let e = if remember { e.clone() } else { Event { command_fingerprint: 0, ..e.clone() } };
                apply(&mut state, &e);
            }
            state
        })
    };
    let (Some((without, _kept)), Some((with, state))) = (measure(false), measure(true)) else {
        println!("command id memory: no /proc/self/statm here");
        return;
    };
    let ids = state.commands_len();
    println!(
        "command id memory: {N} transfers folded: {:.1} MiB without remembering ids, {:.1} MiB with {ids} ids remembered: {:.0} bytes per id",
        without as f64 / 1048576.0,
        with as f64 / 1048576.0,
        with.saturating_sub(without) as f64 / ids.max(1) as f64
    );
}

/// What a projector's fold keeps in memory: the same 500,000 transfers folded as a projector
/// folds them (`projection::fold_batch`, 1,000 events a batch), once keeping every transaction
/// and command id and once forgetting them after each batch (`projection::forget_settled`,
/// as the projector does once a batch's rows are committed); resident memory grown, and what
/// the forgetting fold holds at the end. The second run may grow into memory the process freed
/// before it, so its resident figure can read low: the records it holds are the bound. Printed,
/// not timed.
fn projector_fold_memory(_: &mut Criterion) {
    use tally_core::log::{LogRecord, Replica};
    const N: usize = 500_000;
    let mut start = 0;
    let records: Vec<LogRecord> = {
        let mut state = funded_state();
        let commands = (0..N / BATCH).flat_map(|_| transfers(&mut start, 1));
        let events = commands.map(|c| {
            let e = decide(&state, &c, 0);
            apply(&mut state, &e);
            e
        });
        let claim = LogRecord::Claim { epoch: 1, owner: "bench".into() };
        let answers = events.enumerate().map(|(i, event)| LogRecord::Event {
            epoch: 1,
            command_offset: i as i64,
            event,
        });
        std::iter::once(claim).chain(answers).collect()
    };
    let measure = |forget: bool| {
        grown_by(|| {
            let mut replica = Replica { state: funded_state(), ..Replica::new() };
            for (n, batch) in records.chunks(1_000).enumerate() {
                let offsets = (n * 1_000) as i64..;
                black_box(projection::fold_batch(&mut replica, offsets.zip(batch), 0));
                if forget {
                    memory::forget_settled(&mut replica.state, batch);
                }
            }
            replica
        })
    };
    let (Some((keeping, _kept)), Some((forgetting, replica))) = (measure(false), measure(true)) else {
        println!("projector fold memory: no /proc/self/statm here");
        return;
    };
    println!(
        "projector fold memory: {N} transfers folded in batches of 1,000: {:.1} MiB keeping every transaction and command id ({:.0} bytes per event), {:.1} MiB forgetting them after each batch ({} transactions held at the end)",
        keeping as f64 / 1048576.0,
        keeping as f64 / N as f64,
        forgetting as f64 / 1048576.0,
        replica.state.transactions_len(),
    );
}

/// What the processor's state keeps in memory with a window: 500,000 transfers decided and
/// applied as a processor does, once keeping every transaction and command id and once with a
/// window of 10,000 events (`memory::Window`, horizon = newest offset - 10,000: a projection
/// that keeps up); resident memory grown, and what the windowed state holds at the end (the
/// second run's resident figure can read low, as above). Every id is new here, so nothing needs
/// recalling. Printed, not timed.
fn processor_window_memory(_: &mut Criterion) {
    use tally_core::log::{LogRecord, Replica};
    const N: usize = 500_000;
    const WINDOW: i64 = 10_000;
    let commands: Vec<Command> = {
        let mut start = 0;
        (0..N / BATCH).flat_map(|_| transfers(&mut start, 1)).collect()
    };
    let measure = |window: Option<i64>| {
        grown_by(|| {
            let mut replica = Replica { state: funded_state(), ..Replica::new() };
            let claim = LogRecord::Claim { epoch: 1, owner: "bench".into() };
            replica.read(0, &claim);
            let mut remembered = memory::Window::after(-1);
            for (i, command) in commands.iter().enumerate() {
                let offset = i as i64 + 1;
                let event = decide(&replica.state, command, 0);
                let record = LogRecord::Event { epoch: 1, command_offset: i as i64, event };
                replica.read(offset, &record);
                if let Some(window) = window {
                    remembered.changed(offset, &record);
                    remembered.forget_upto(offset - window, &mut replica.state);
                }
            }
            replica
        })
    };
    let (Some((keeping, _kept)), Some((windowed, replica))) = (measure(None), measure(Some(WINDOW))) else {
        println!("processor window memory: no /proc/self/statm here");
        return;
    };
    println!(
        "processor window memory: {N} transfers: {:.1} MiB keeping every transaction and command id ({:.0} bytes per transfer), {:.1} MiB with a window of {WINDOW} events ({} transactions and {} command ids held at the end)",
        keeping as f64 / 1048576.0,
        keeping as f64 / N as f64,
        windowed as f64 / 1048576.0,
        replica.state.transactions_len(),
        replica.state.commands_len(),
    );
}

criterion_group!(
    benches,
    command_id_memory,
    projector_fold_memory,
    processor_window_memory,
    simple_transfers,
    ten_posting_transactions
);
criterion_main!(benches);

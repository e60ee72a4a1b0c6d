//! The exactly-once log protocol, modelled: owners take a partition over (claim, then restore up
//! to their claim), process commands, and keep writing after they were superseded (zombies);
//! two owners may claim from stale views at once; owners' clocks differ. Whatever the
//! interleaving, a reader sees each command answered exactly once, in order, and each event is
//! what a correct processor decides on exactly the events before it. Some command records are
//! garbage: they are answered by a dead-letter marker, exactly once too.

use proptest::prelude::*;
use proptest::sample::Index;
use tally_core::log::{LogReader, LogRecord, Replica, Verdict};
use tally_core::testkit::history;
use tally_core::*;

/// Each owner reads its own clock: owner `k` is `7k` seconds ahead (pending timeouts are 1-20 s), so a zombie and the owner
/// that superseded it decide different events (expiry, timestamps) for the same command.
fn clock(owner: usize, offset: i64) -> i64 {
    1_700_000_000_000 + offset * 100 + owner as i64 * 7_000
}

#[derive(Debug, Clone)]
enum Action {
    /// A new owner claims from a view of the first `prefix` records of the log (possibly stale).
    TakeOver { prefix: Index },
    /// An owner (current or superseded) processes its next command.
    Process { owner: Index },
    /// An owner stops for good (crash without restart).
    Stop { owner: Index },
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        1 => any::<Index>().prop_map(|prefix| Action::TakeOver { prefix }),
        8 => any::<Index>().prop_map(|owner| Action::Process { owner }),
        1 => any::<Index>().prop_map(|owner| Action::Stop { owner }),
    ]
}

struct Owner {
    name: usize,
    epoch: u64,
    state: State,
    next: i64,
    running: bool,
}

/// Folds `log[..end]` as every reader does.
fn restore(log: &[LogRecord], end: usize) -> (LogReader, State, Vec<Verdict>) {
    let mut replica = Replica::new();
    let verdicts =
        log[..end].iter().enumerate().map(|(at, record)| replica.read(at as i64, record)).collect();
    (replica.reader, replica.state, verdicts)
}

/// Claims from a view of `log[..view]`, then restores up to the claim; claims again while it
/// loses to an equal epoch. Returns the new owner.
fn take_over(log: &mut Vec<LogRecord>, view: usize, name: usize) -> Owner {
    let mut epoch = restore(log, view).0.epoch() + 1;
    loop {
        log.push(LogRecord::Claim { epoch, owner: format!("owner-{name}") });
        let (reader, state, verdicts) = restore(log, log.len());
        if verdicts.last() == Some(&Verdict::NewEpoch) {
            return Owner { name, epoch, state, next: reader.next_command_offset(), running: true };
        }
        epoch = reader.epoch() + 1;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10_000, ..ProptestConfig::default() })]

    #[test]
    fn readers_see_every_command_answered_once_whatever_the_owners_do(
        history in history(),
        actions in proptest::collection::vec(action(), 1..80),
        garbage in proptest::collection::btree_set(0usize..60, 0..8),
    ) {
        // The commands partition: `None` is a record no processor can decode.
        // Command ids shared by neighbours: repeats and conflicts of ids are part of the log too.
        let mut commands: Vec<Option<Command>> = history
            .into_iter()
            .enumerate()
            .map(|(i, (c, _))| Some(Command { command_id: CommandId::parse(format!("c{}", i / 2)).unwrap(), ..c }))
            .collect();
        for at in garbage.into_iter().rev() {
            commands.insert(at.min(commands.len()), None);
        }
        let mut log: Vec<LogRecord> = Vec::new();
        let mut owners: Vec<Owner> = Vec::new();
        for action in actions {
            match action {
                Action::TakeOver { prefix } => {
                    let view = prefix.index(log.len() + 1);
                    let owner = take_over(&mut log, view, owners.len());
                    owners.push(owner);
                }
                Action::Process { owner } if !owners.is_empty() => {
                    let i = owner.index(owners.len());
                    let o = &mut owners[i];
                    let Some(input) = commands.get(o.next as usize).filter(|_| o.running) else { continue };
                    let (epoch, command_offset) = (o.epoch, o.next);
                    log.push(match input {
                        Some(command) => {
                            let event = decide(&o.state, command, clock(o.name, o.next));
                            let record = LogRecord::Event { epoch, command_offset, event };
                            // The owner folds its own answer at the offset it lands on.
                            let mut own = Replica {
                                reader: LogReader::resume(epoch, command_offset),
                                state: std::mem::take(&mut o.state),
                            };
                            prop_assert_eq!(own.read(log.len() as i64, &record), Verdict::Apply);
                            o.state = own.state;
                            record
                        }
                        None => LogRecord::DeadLettered { epoch, command_offset, reason: "garbage".into() },
                    });
                    o.next += 1;
                }
                Action::Stop { owner } if !owners.is_empty() => {
                    let i = owner.index(owners.len());
                    owners[i].running = false;
                }
                _ => {}
            }
        }

        // What a reader accepts, against one correct processor over the same commands.
        let mut reader = LogReader::new();
        let mut accepted = Vec::new();
        for (at, record) in log.iter().enumerate() {
            if reader.read(record) == Verdict::Apply {
                accepted.push((at as i64, record));
            }
        }
        // One correct processor over the accepted records, each at its place in the log.
        let mut single = Replica::new();
        for (i, (at, record)) in accepted.iter().enumerate() {
            match (record, &commands[i]) {
                (LogRecord::Event { command_offset, event, .. }, Some(command)) => {
                    prop_assert_eq!(*command_offset, i as i64, "command offsets answered once each, in order");
                    // The event a correct processor decides on exactly the accepted prefix, at its time.
                    let expected = decide(&single.state, command, event.time_ms);
                    prop_assert_eq!(event, &expected, "an event decided on a state readers never saw");
                    single.read_unplaced(&LogRecord::Event { epoch: 0, command_offset: i as i64, event: expected });
                    single.place(record, *at);
                }
                (LogRecord::DeadLettered { command_offset, .. }, None) => {
                    prop_assert_eq!(*command_offset, i as i64, "command offsets answered once each, in order");
                }
                (record, input) => prop_assert!(false, "offset {i}: {record:?} answers {input:?}"),
            }
        }
        prop_assert_eq!(reader.next_command_offset(), accepted.len() as i64);
        // Owners that won a claim hold distinct epochs.
        let unique: std::collections::BTreeSet<u64> = owners.iter().map(|o| o.epoch).collect();
        prop_assert_eq!(unique.len(), owners.len());
    }
}

#[test]
fn zombie_writes_and_repeated_epochs_are_ignored() {
    let e = |epoch, command_offset| LogRecord::Event {
        epoch,
        command_offset,
        event: Event {
            tenant: TenantId::parse("t").unwrap(),
            stream: StreamId::Ledger(LedgerId::parse_ledger("main").unwrap()),
            stream_version: command_offset as u64 + 1,
            command_id: CommandId::parse("c").unwrap(),
            command_fingerprint: 1,
            actor: Actor::parse("a").unwrap(),
            time_ms: 0,
            body: EventBody::CommandRejected {
                command: "x".into(),
                reason: Reason::NoPostings,
                detail: String::new(),
                conflicts_with: None,
            },
        },
    };
    let claim = |epoch| LogRecord::Claim { epoch, owner: format!("o{epoch}") };
    let dead = |epoch, command_offset| LogRecord::DeadLettered { epoch, command_offset, reason: "x".into() };
    let mut r = LogReader::new();
    let verdicts: Vec<Verdict> = [
        claim(1),
        e(1, 0),
        e(1, 1),
        claim(2),
        e(1, 2),
        e(2, 2),
        claim(2),
        e(3, 3),
        e(2, 2),
        e(2, 3),
        dead(1, 4),
        dead(2, 3),
        dead(2, 4),
    ]
    .iter()
    .map(|rec| r.read(rec))
    .collect();
    use Verdict::*;
    assert_eq!(
        verdicts,
        [
            NewEpoch,
            Apply,
            Apply,
            NewEpoch,
            Superseded,
            Apply,
            Invalid,
            Invalid,
            AlreadyAnswered,
            Apply,
            Superseded,
            AlreadyAnswered,
            Apply
        ]
    );
    assert_eq!((r.epoch(), r.next_command_offset()), (2, 5));
}

//! Projections: the rows the query side reads, derived from the same fold the processor uses.
//!
//! The projector folds each events partition through a [`crate::log::Replica`], a batch at a
//! time ([`fold_batch`]). For every event that counts it asks [`touched`] (before folding) which
//! rows the event changes and folds it; after the batch it reads those rows' new values with
//! [`row`] and writes them, whole, with the checkpoint. Rows are
//! whole values rather than deltas, so writing the same event twice (a replay after a crash)
//! converges instead of counting twice.
//!
//! Some rows come from events rather than state and are only ever added: command outcomes,
//! statement lines (one per posting side, with the balance after it) and the events index (each
//! event in its stream, and in its tenant's timeline). [`rows_of`] lists every other row a state implies; a projection built event by event
//! must equal it. The property tests hold both to that, and statements to the balances.
//!
//! A projector's fold need not keep every transaction and command id: see [`crate::memory`].

use crate::log::{LogRecord, Replica, Verdict};
use crate::{Account, AccountId, Amount, Asset, CommandId, DocKey, DocType, Document, Event, EventBody};
use crate::{LedgerId, State, StreamId, TenantId, TxId, TxRecord};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Which row: every key is scoped by its tenant.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RowKey {
    Account {
        tenant: TenantId,
        ledger: LedgerId,
        account: AccountId,
    },
    Transaction {
        tenant: TenantId,
        ledger: LedgerId,
        tx_id: TxId,
    },
    Document {
        tenant: TenantId,
        doc_type: DocType,
        key: DocKey,
    },
    /// The first answer to a command, for callers that poll by command id. A command id names
    /// one command per stream, so the stream is part of the key.
    Outcome {
        tenant: TenantId,
        command_id: CommandId,
        stream: StreamId,
    },
    /// One side of a posting on an account's statement in one asset, in log order: `offset` of
    /// the event in its events partition (an account's events are all in one partition), `line`
    /// within the event.
    Posting {
        tenant: TenantId,
        ledger: LedgerId,
        account: AccountId,
        asset: Asset,
        offset: i64,
        line: u32,
    },
    /// One event of a stream, for history and search.
    Event {
        tenant: TenantId,
        stream: StreamId,
        stream_version: u64,
    },
    /// An event's place in its tenant's timeline, for search by time across streams: its time,
    /// then its place in the log (events of one instant keep their order within a partition).
    EventAt {
        tenant: TenantId,
        time_ms: i64,
        partition: i32,
        offset: i64,
    },
    /// An event's place in its events partition, per tenant: what a live stream across the
    /// tenant's streams reads, partition by partition in log order, so that it only ever reads
    /// the events it has not shown (the timeline, in time order, cannot say which those are).
    EventByOffset {
        tenant: TenantId,
        partition: i32,
        offset: i64,
    },
}

impl RowKey {
    /// Rows that events add and nothing changes again (not implied by state).
    pub fn is_from_events(&self) -> bool {
        matches!(
            self,
            RowKey::Outcome { .. }
                | RowKey::Posting { .. }
                | RowKey::Event { .. }
                | RowKey::EventAt { .. }
                | RowKey::EventByOffset { .. }
        )
    }
}

/// A row's value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Row {
    Account(Account),
    Transaction(TxRecord),
    Document(Document),
    /// The first answer to a command: the answering event where the log holds it (the HTTP
    /// view of it is `tally_http::outcome::Outcome`).
    Outcome(EventRow),
    Posting(StatementLine),
    Event(EventRow),
    /// The value of [`RowKey::EventAt`] and [`RowKey::EventByOffset`].
    EventAt(EventRef),
}

/// One posting as an account's statement shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementLine {
    pub tx_id: TxId,
    /// The other account of the posting.
    pub counterparty: AccountId,
    /// Credit (positive) or debit (negative) to this account, in minor units.
    pub amount: Amount,
    /// The account's posted balance in the asset right after this line.
    pub balance_after: Amount,
    /// When the posting took effect: its event's time (ms since the Unix epoch).
    pub time_ms: i64,
    /// The event that posted it (`tenant/stream@version`).
    pub event_id: String,
}

/// An event with its place in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRow {
    /// The events partition the event is in.
    pub partition: i32,
    /// Its offset in that partition.
    pub offset: i64,
    pub event: Event,
}

/// Which event a timeline or partition entry is (the event itself is its stream's [`RowKey::Event`] row),
/// and its kind, so that a search by kind reads only the events it wants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRef {
    pub stream: StreamId,
    /// The event's version in that stream ([`RowKey::Event`] of the same stream and version).
    pub stream_version: u64,
    /// The event's type name ([`crate::EventBody::kind`]), for searches by type.
    pub kind: String,
}

/// A row's new value; `None` removes it.
pub type Change = (RowKey, Option<Row>);

/// Reads the record at `offset` of events partition `partition` into `replica` and returns the
/// rows it changed, with their new values (nothing when the record does not count: a claim, a
/// zombie's write, a repeat).
pub fn fold(replica: &mut Replica, record: &LogRecord, partition: i32, offset: i64) -> Vec<Change> {
    fold_batch(replica, [(offset, record)], partition)
}

/// Reads consecutive records (with their offsets) of events partition `partition` into
/// `replica` and returns every row they changed once, with its value after the last of them:
/// what a store must hold once it covers the batch. A row touched by many events of the batch
/// (a busy account) is read and written once, not once per event.
pub fn fold_batch<'a>(
    replica: &mut Replica,
    records: impl IntoIterator<Item = (i64, &'a LogRecord)>,
    partition: i32,
) -> Vec<Change> {
    let mut keys = std::collections::BTreeSet::new();
    let mut added = Vec::new();
    for (offset, record) in records {
        let touched = match record {
            LogRecord::Event { event, .. } => touched(&replica.state, event),
            _ => Vec::new(),
        };
        if replica.read(offset, record) != Verdict::Apply {
            continue;
        }
        // A dead-letter marker only advances the position.
        if let LogRecord::Event { event, .. } = record {
            keys.extend(touched);
            // A command id keeps its first answer: a repeat or a conflict does not replace it.
            if event.body.answers_first() {
                added.push(outcome(event, partition, offset));
            }
            added.extend(statement_lines(&replica.state, event, offset));
            added.extend(event_rows(event, partition, offset));
        }
    }
    let rows = keys.into_iter().map(|key| {
        let value = row(&replica.state, &key);
        (key, value)
    });
    rows.chain(added.into_iter().map(|(key, row)| (key, Some(row)))).collect()
}

/// The statement lines of an event that moved posted balances, read from the state right
/// after it: each posting debits its source and credits its destination, and each line carries
/// the balance after it (the lines of one event add up to the event's change).
pub fn statement_lines(after: &State, event: &Event, offset: i64) -> Vec<(RowKey, Row)> {
    let (ledger, tx_id) = match &event.body {
        EventBody::TransactionPosted { ledger, tx_id, .. }
        | EventBody::PendingCommitted { ledger, tx_id, .. } => (ledger, tx_id),
        _ => return Vec::new(),
    };
    let Some(ledger_state) = after.ledger(&event.tenant, ledger) else { return Vec::new() };
    let Some(tx) = ledger_state.transactions.get(tx_id) else { return Vec::new() };
    let sides: Vec<_> = tx
        .postings
        .iter()
        .flat_map(|p| {
            [
                (&p.source, &p.destination, &p.asset, -p.amount),
                (&p.destination, &p.source, &p.asset, p.amount),
            ]
        })
        .collect();
    // Walk backwards from each balance after the event, so earlier lines get earlier balances.
    let mut balance: BTreeMap<(&AccountId, &Asset), Amount> = BTreeMap::new();
    let mut lines = Vec::with_capacity(sides.len());
    for (line, &(account, counterparty, asset, amount)) in sides.iter().enumerate().rev() {
        let balance_after = *balance.entry((account, asset)).or_insert_with(|| {
            let balances = ledger_state.accounts.get(account).map(|a| &a.balances);
            balances.and_then(|b| b.get(asset)).map_or(0, |b| b.posted)
        });
        balance.insert((account, asset), balance_after - amount);
        let key = RowKey::Posting {
            tenant: event.tenant.clone(),
            ledger: ledger.clone(),
            account: account.clone(),
            asset: asset.clone(),
            offset,
            line: line as u32,
        };
        let value = StatementLine {
            tx_id: tx_id.clone(),
            counterparty: counterparty.clone(),
            amount,
            balance_after,
            time_ms: event.time_ms,
            event_id: event.event_id(),
        };
        lines.push((key, Row::Posting(value)));
    }
    lines.reverse();
    lines
}

/// The events index rows of an event at `offset` of events partition `partition`: in its
/// stream, in its tenant's timeline, and in its tenant's share of the partition.
pub fn event_rows(event: &Event, partition: i32, offset: i64) -> [(RowKey, Row); 3] {
    let in_stream = RowKey::Event {
        tenant: event.tenant.clone(),
        stream: event.stream.clone(),
        stream_version: event.stream_version,
    };
    let at = RowKey::EventAt { tenant: event.tenant.clone(), time_ms: event.time_ms, partition, offset };
    let by_offset = RowKey::EventByOffset { tenant: event.tenant.clone(), partition, offset };
    let reference = EventRef {
        stream: event.stream.clone(),
        stream_version: event.stream_version,
        kind: event.body.kind().to_owned(),
    };
    [
        (in_stream, Row::Event(EventRow { partition, offset, event: event.clone() })),
        (at, Row::EventAt(reference.clone())),
        (by_offset, Row::EventAt(reference)),
    ]
}

/// The rows `event` will change, read from the state *before* it is folded (a commit or void
/// releases holds on accounts that only the transaction's held postings name). The outcome row is
/// not listed: it comes from the event itself ([`outcome`]).
pub fn touched(before: &State, event: &Event) -> Vec<RowKey> {
    let tenant = &event.tenant;
    let ledger = match &event.stream {
        StreamId::Ledger(ledger) => ledger,
        StreamId::Document(doc_type, key) => {
            return vec![RowKey::Document {
                tenant: tenant.clone(),
                doc_type: doc_type.clone(),
                key: key.clone(),
            }];
        }
    };
    let account = |account: &AccountId| RowKey::Account {
        tenant: tenant.clone(),
        ledger: ledger.clone(),
        account: account.clone(),
    };
    let transaction = |tx_id: &TxId| RowKey::Transaction {
        tenant: tenant.clone(),
        ledger: ledger.clone(),
        tx_id: tx_id.clone(),
    };
    let with_accounts = |tx_id: &TxId, postings: &[crate::Posting]| {
        let mut keys = vec![transaction(tx_id)];
        for p in postings {
            keys.push(account(&p.source));
            keys.push(account(&p.destination));
        }
        keys
    };
    use EventBody::*;
    let mut keys = match &event.body {
        AccountOpened { account: a, .. }
        | AccountUpdated { account: a, .. }
        | AccountClosed { account: a, .. } => {
            vec![account(a)]
        }
        TransactionPosted { tx_id, postings, reverses, .. } => {
            let mut keys = with_accounts(tx_id, postings);
            keys.extend(reverses.iter().map(transaction));
            keys
        }
        TransactionPending { tx_id, postings, .. } => with_accounts(tx_id, postings),
        TransactionFailed { tx_id, .. } => vec![transaction(tx_id)],
        PendingCommitted { tx_id, .. } | PendingVoided { tx_id, .. } | PendingExpired { tx_id, .. } => {
            let held = before
                .ledger(tenant, ledger)
                .and_then(|l| l.transactions.get(tx_id))
                .map_or(&[][..], |tx| &tx.postings[..]);
            with_accounts(tx_id, held)
        }
        AssetDefined { .. }
        | TransactionDeduplicated { .. }
        | CommandDeduplicated { .. }
        | CommandRejected { .. } => Vec::new(),
        DocumentPut { .. } | DocumentDeleted { .. } => Vec::new(), // only on document streams
    };
    keys.sort();
    keys.dedup();
    keys
}

/// The current value of one row in `state` (`None`: the row does not exist).
pub fn row(state: &State, key: &RowKey) -> Option<Row> {
    match key {
        RowKey::Account { tenant, ledger, account } => {
            state.ledger(tenant, ledger)?.accounts.get(account).cloned().map(Row::Account)
        }
        RowKey::Transaction { tenant, ledger, tx_id } => {
            state.ledger(tenant, ledger)?.transactions.get(tx_id).cloned().map(Row::Transaction)
        }
        RowKey::Document { tenant, doc_type, key } => {
            state.document(tenant, doc_type, key).cloned().map(Row::Document)
        }
        // Not state: see `outcome`, `statement_lines`, `event_rows`.
        RowKey::Outcome { .. }
        | RowKey::Posting { .. }
        | RowKey::Event { .. }
        | RowKey::EventAt { .. }
        | RowKey::EventByOffset { .. } => None,
    }
}

/// The outcome row for an event at `offset` of events partition `partition`.
pub fn outcome(event: &Event, partition: i32, offset: i64) -> (RowKey, Row) {
    let key = RowKey::Outcome {
        tenant: event.tenant.clone(),
        command_id: event.command_id.clone(),
        stream: event.stream.clone(),
    };
    (key, Row::Outcome(EventRow { partition, offset, event: event.clone() }))
}

/// Every row that `state` implies (all but those from events: [`RowKey::is_from_events`]).
pub fn rows_of(state: &State) -> BTreeMap<RowKey, Row> {
    let mut rows = BTreeMap::new();
    for (tenant, ledger_id, ledger) in state.ledgers() {
        for (account, a) in &ledger.accounts {
            let key = RowKey::Account {
                tenant: tenant.clone(),
                ledger: ledger_id.clone(),
                account: account.clone(),
            };
            rows.insert(key, Row::Account(a.clone()));
        }
        for (tx_id, tx) in &ledger.transactions {
            let key = RowKey::Transaction {
                tenant: tenant.clone(),
                ledger: ledger_id.clone(),
                tx_id: tx_id.clone(),
            };
            rows.insert(key, Row::Transaction(tx.clone()));
        }
    }
    for (tenant, (doc_type, key), doc) in state.documents() {
        let key = RowKey::Document { tenant: tenant.clone(), doc_type: doc_type.clone(), key: key.clone() };
        rows.insert(key, Row::Document(doc.clone()));
    }
    rows
}

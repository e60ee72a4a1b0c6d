//! What a fold keeps in memory, and how it gets back what it let go.
//!
//! Besides accounts and documents, a partition's state remembers every transaction and the
//! first answer to every command id: that is what keeps a transaction id unique for ever and
//! answers a repeated command as the first time. Kept in memory for ever they grow with every
//! command answered (about 700 bytes per transaction, BENCHMARKS.md). Both are rows of the
//! projection too, written in the same commit as the checkpoint that covers them:
//! [`RowKey::Transaction`] holds the [`crate::TxRecord`] whole, and [`RowKey::Outcome`] the
//! answering event, with its command fingerprint, stream version and offset. So a fold may
//! forget one once a projection covers its last change, and read it back from that projection
//! (recall it) before an event or a command needs it:
//!
//! - The projector forgets, after each commit, the command records and settled transactions of
//!   the batch ([`forget_settled`]); before folding a batch it recalls, from its own rows, the
//!   transactions the batch's events name that it lacks ([`keys_named_by_events`]).
//! - The processor forgets what was last changed more than a window of events ago and is
//!   covered by the live projection ([`Window`]); before deciding, it recalls what the commands
//!   name ([`keys_read_by_command`]). A key found neither in memory nor among the rows was never
//!   used, provided the rows were read from a projection whose checkpoint covers everything
//!   forgotten ([`Window::forgotten_upto`]): that is how "unique for ever" survives forgetting.
//!
//! Pending transactions are never forgotten: their commit, void or expiry reads their holds,
//! and the expiry timer looks for them in memory. A row recalled by a replay that is behind
//! the projection (a restore from a snapshot older than the checkpoint) may be newer than the
//! replay's position: a settled transaction changes at most once more (a reversal sets
//! `reversed_by`), and replaying that reversal sets it to the same value, so the state reached
//! is the same.

use crate::log::LogRecord;
use crate::projection::{Row, RowKey};
use crate::{Command, CommandBody, CommandRecord, EventBody, LedgerId, State, TxId, TxRequest};
use std::collections::{BTreeSet, HashMap, VecDeque};

/// The transaction rows that `records`' events name and `state` lacks (a reversal's original;
/// the pending transaction a commit, void or expiry settles), in key order: what to read from
/// the projection and hand to [`recall`] before folding them.
pub fn keys_named_by_events<'a>(
    state: &State,
    records: impl IntoIterator<Item = &'a LogRecord>,
) -> Vec<RowKey> {
    let mut keys = BTreeSet::new();
    for record in records {
        let LogRecord::Event { event, .. } = record else { continue };
        if let Some((ledger, earlier)) = earlier_transaction(&event.body) {
            keys.insert(transaction_key(&event.tenant, ledger, earlier));
        }
    }
    keys.retain(|key| !holds(state, key));
    keys.into_iter().collect()
}

/// The rows `decide` reads for `command` that `state` lacks: the first answer to its command
/// id in its stream, and the transactions it names (its own id, a reversal's original, the
/// pending transaction it settles).
pub fn keys_read_by_command(state: &State, command: &Command) -> Vec<RowKey> {
    let mut keys = vec![RowKey::Outcome {
        tenant: command.tenant.clone(),
        command_id: command.command_id.clone(),
        stream: command.body.stream(),
    }];
    let transaction = |ledger, tx_id| transaction_key(&command.tenant, ledger, tx_id);
    match &command.body {
        CommandBody::Transact { ledger, tx_id, request } => {
            keys.push(transaction(ledger, tx_id));
            if let TxRequest::Reversal { original, .. } = request {
                keys.push(transaction(ledger, original));
            }
        }
        CommandBody::CommitPending { ledger, tx_id, .. }
        | CommandBody::VoidPending { ledger, tx_id }
        | CommandBody::ExpirePending { ledger, tx_id } => keys.push(transaction(ledger, tx_id)),
        _ => {}
    }
    keys.retain(|key| !holds(state, key));
    keys
}

/// Puts rows read for [`keys_named_by_events`] or [`keys_read_by_command`] back into `state`:
/// a transaction row as the transaction's record, an outcome row as its command id's record.
/// Other rows are ignored, and so is a row whose record the state holds (it is never older).
pub fn recall(state: &mut State, rows: impl IntoIterator<Item = (RowKey, Row)>) {
    for (key, row) in rows {
        match (key, row) {
            (RowKey::Transaction { tenant, ledger, tx_id }, Row::Transaction(record)) => {
                state.recall_transaction(&tenant, &ledger, &tx_id, record)
            }
            // An answer from before command fingerprints (0) is not remembered by `apply`.
            (RowKey::Outcome { tenant, command_id, stream }, Row::Outcome(first))
                if first.event.command_fingerprint != 0 =>
            {
                let record = CommandRecord {
                    fingerprint: first.event.command_fingerprint,
                    version: first.event.stream_version,
                    offset: first.offset,
                };
                state.recall_command(&tenant, &stream, &command_id, record)
            }
            _ => {}
        }
    }
}

/// Forgets, once the rows of `records` are committed, what their events recorded that a
/// projection's later events do not read: every command record (a projection answers no
/// command: repeats are told apart by the log reader's offsets, and outcome rows come from the
/// events) and every transaction they named that is now settled.
pub fn forget_settled<'a>(state: &mut State, records: impl IntoIterator<Item = &'a LogRecord>) {
    for record in records {
        let LogRecord::Event { event, .. } = record else { continue };
        for key in keys_changed_by(event) {
            state.forget(&key);
        }
    }
}

/// The processor's window: which transactions and command ids each event changed, in log
/// order, so that those last changed at or before a horizon can be forgotten. It holds one
/// entry per key changed since the horizon, so its size is bounded by the events after it.
#[derive(Debug)]
pub struct Window {
    /// (offset, key), in the order the events were folded.
    changes: VecDeque<(i64, RowKey)>,
    /// The offset of each key's last change among `changes`.
    last: HashMap<RowKey, i64>,
    /// The highest offset at which something was forgotten (-1: nothing yet).
    forgotten_upto: i64,
    /// The highest offset noted (-1: none).
    newest: i64,
}

impl Window {
    /// An empty window over a state that may already lack what was changed at or before
    /// `forgotten_upto` (a state restored from a snapshot of one that forgot; -1: nothing).
    pub fn after(forgotten_upto: i64) -> Self {
        Window { changes: VecDeque::new(), last: HashMap::new(), forgotten_upto, newest: -1 }
    }

    /// Notes what the event at `offset` changed (`record` read as counting).
    pub fn changed(&mut self, offset: i64, record: &LogRecord) {
        let LogRecord::Event { event, .. } = record else { return };
        for key in keys_changed_by(event) {
            self.note(offset, key);
        }
    }

    /// Notes every transaction and command id `state` holds as changed at `offset` (a state
    /// restored from a snapshot, whose own changes are not known).
    pub fn changed_all(&mut self, offset: i64, state: &State) {
        for key in state.remembered() {
            self.note(offset, key);
        }
    }

    /// Notes records just read back into the state ([`recall`]) as changed at the newest
    /// offset noted, so that they are forgotten again once that is past the horizon (a record
    /// a command only reads, as a retry does, would otherwise stay for ever).
    pub fn recalled<'a>(&mut self, keys: impl IntoIterator<Item = &'a RowKey>) {
        for key in keys {
            self.note(self.newest, key.clone());
        }
    }

    fn note(&mut self, offset: i64, key: RowKey) {
        self.newest = self.newest.max(offset);
        self.last.insert(key.clone(), offset);
        self.changes.push_back((offset, key));
    }

    /// Forgets from `state` every transaction and command id last changed at or before
    /// `horizon`, pending transactions excepted (they are noted again when settled). Returns
    /// how many records were forgotten.
    pub fn forget_upto(&mut self, horizon: i64, state: &mut State) -> usize {
        let mut forgotten = 0;
        while let Some((offset, _)) = self.changes.front()
            && *offset <= horizon
        {
            let (offset, key) = self.changes.pop_front().expect("front exists");
            if self.last.get(&key) != Some(&offset) {
                continue; // changed again later: that later entry decides
            }
            self.last.remove(&key);
            if state.forget(&key) {
                forgotten += 1;
                self.forgotten_upto = self.forgotten_upto.max(offset);
            }
        }
        forgotten
    }

    /// The highest offset whose changes were forgotten (-1: none): a projection read for
    /// [`recall`] must cover it, or a row missing there may be one forgotten here.
    pub fn forgotten_upto(&self) -> i64 {
        self.forgotten_upto
    }
}

/// The transactions and command id an event records or changes (what a fold may later forget).
fn keys_changed_by(event: &crate::Event) -> Vec<RowKey> {
    let mut keys = Vec::with_capacity(3);
    if event.body.answers_first() {
        keys.push(RowKey::Outcome {
            tenant: event.tenant.clone(),
            command_id: event.command_id.clone(),
            stream: event.stream.clone(),
        });
    }
    if let EventBody::TransactionPosted { ledger, tx_id, .. }
    | EventBody::TransactionPending { ledger, tx_id, .. }
    | EventBody::TransactionFailed { ledger, tx_id, .. } = &event.body
    {
        keys.push(transaction_key(&event.tenant, ledger, tx_id));
    }
    if let Some((ledger, earlier)) = earlier_transaction(&event.body) {
        keys.push(transaction_key(&event.tenant, ledger, earlier));
    }
    keys
}

/// The transaction an event changes that an earlier event recorded: a reversal's original, or
/// the pending transaction a commit, void or expiry settles.
fn earlier_transaction(body: &EventBody) -> Option<(&LedgerId, &TxId)> {
    match body {
        EventBody::TransactionPosted { ledger, reverses: Some(original), .. } => Some((ledger, original)),
        EventBody::PendingCommitted { ledger, tx_id, .. }
        | EventBody::PendingVoided { ledger, tx_id }
        | EventBody::PendingExpired { ledger, tx_id } => Some((ledger, tx_id)),
        _ => None,
    }
}

fn transaction_key(tenant: &crate::TenantId, ledger: &LedgerId, tx_id: &TxId) -> RowKey {
    RowKey::Transaction { tenant: tenant.clone(), ledger: ledger.clone(), tx_id: tx_id.clone() }
}

/// Whether `state` holds the record behind a transaction or outcome key.
fn holds(state: &State, key: &RowKey) -> bool {
    match key {
        RowKey::Transaction { tenant, ledger, tx_id } => {
            state.ledger(tenant, ledger).is_some_and(|l| l.transactions.contains_key(tx_id))
        }
        RowKey::Outcome { tenant, command_id, stream } => state.command(tenant, stream, command_id).is_some(),
        _ => true,
    }
}

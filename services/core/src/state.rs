//! The in-memory state a processor validates against: the fold of a partition's events.

use crate::projection::RowKey;
use crate::{
    AccountId, Amount, Asset, CommandId, DocKey, DocType, LedgerId, Posting, Reason, StreamId, TenantId, TxId,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// The state's hash maps: foldhash is several times faster than SipHash on short keys and
/// still seeded per process.
pub(crate) type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Everything one partition knows. Built only by `apply`; compared whole by the tests.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub(crate) tenants: Map<TenantId, TenantState>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TenantState {
    pub(crate) ledgers: Map<LedgerId, Ledger>,
    pub(crate) documents: Map<(DocType, DocKey), Document>,
    /// The command ids answered in the tenant's streams: a repeat is answered with the first
    /// answer at any later time (see [`CommandId`] for the scope). Every one, unless a fold
    /// forgot older ones that a projection holds ([`crate::memory`]).
    pub(crate) commands: Map<(StreamId, CommandId), CommandRecord>,
}

/// What the log remembers of a command id in a stream: which command used it first, and where
/// its answer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandRecord {
    /// [`crate::command_fingerprint`] of the command that first used the id.
    pub fingerprint: u128,
    /// The stream version of the event that answered it.
    pub version: u64,
    /// That event's offset in its events partition; [`CommandRecord::UNPLACED`] until the
    /// reader that folded it knows the offset (see [`crate::log::Replica::place`]).
    pub offset: i64,
}

impl CommandRecord {
    /// The offset of an answer whose place in the log is not known yet.
    pub const UNPLACED: i64 = -1;
}

/// One ledger: its assets, accounts and every transaction id it has seen.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    /// Version of the ledger's stream: the number of events it has.
    pub stream_version: u64,
    /// Defined assets by code.
    pub assets: Map<String, Asset>,
    /// Every account opened or used, closed ones included.
    pub accounts: Map<AccountId, Account>,
    /// The transaction ids the ledger has seen, failed ones included (ids are unique forever):
    /// every one, unless a fold forgot settled ones that a projection holds ([`crate::memory`]).
    pub transactions: Map<TxId, TxRecord>,
}

/// Whether an account still takes postings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccountStatus {
    /// Takes postings (the status of an account created by its first use, too).
    Open,
    /// Closed with zero balances and no holds; refuses postings and updates.
    Closed,
}

/// An account's limits, metadata and balances per asset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// Open, or closed for good.
    pub status: AccountStatus,
    /// Minimum available balance per asset; absent means 0, `None` means unbounded.
    pub limits: BTreeMap<Asset, Option<Amount>>,
    /// Free-form metadata, as last set by opening or updating the account.
    pub metadata: BTreeMap<String, String>,
    /// Balances per asset the account has used; an absent asset is all zeros.
    pub balances: BTreeMap<Asset, Balance>,
}

/// Balances of one account in one asset, in minor units.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balance {
    /// Sum of posted credits minus posted debits.
    pub posted: Amount,
    /// Held by pending transactions that debit this account.
    pub pending_out: Amount,
    /// Promised by pending transactions that credit this account (not spendable).
    pub pending_in: Amount,
}

impl Balance {
    /// What limits apply to: posted minus outgoing holds. `None` on overflow.
    pub fn available(&self) -> Option<Amount> {
        self.posted.checked_sub(self.pending_out)
    }
}

/// How a transaction ended up, or where it stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxStatus {
    /// Holds funds until committed, voided or expired.
    Pending,
    /// Took effect (at once, or by a commit of a pending transaction).
    Posted,
    /// Ended without moving anything (see [`Failure`]).
    Failed(Failure),
}

/// Why a transaction is FAILED.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Failure {
    /// Its first request was refused, for this reason.
    Rejected(Reason),
    /// It was pending and was voided.
    Voided,
    /// It was pending and its timeout passed.
    Expired,
}

/// What the processor remembers of a transaction id (forever: ids are unique forever).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxRecord {
    /// Fingerprint of the request that first used the id: same request = a retry.
    pub fingerprint: u128,
    /// Where the transaction stands now.
    pub status: TxStatus,
    /// What moved, or is held (empty for a failed transaction).
    pub postings: Vec<Posting>,
    /// When a pending transaction expires (ms since the Unix epoch); `None` if it never pended.
    pub expires_at_ms: Option<i64>,
    /// The reversal that compensated this transaction, once there is one.
    pub reversed_by: Option<TxId>,
    /// The request's metadata (a failed transaction keeps its request's too).
    pub metadata: crate::Metadata,
    /// When the transaction was first recorded, and when its status last changed (ms since the
    /// Unix epoch, the times of those events).
    pub created_ms: i64,
    /// When the status last changed (ms since the Unix epoch).
    pub updated_ms: i64,
}

impl TxRecord {
    /// A transaction as first recorded at `time_ms`, neither expiring nor reversed.
    pub(crate) fn new(
        fingerprint: u128,
        status: TxStatus,
        postings: Vec<Posting>,
        metadata: crate::Metadata,
        time_ms: i64,
    ) -> TxRecord {
        TxRecord {
            fingerprint,
            status,
            postings,
            expires_at_ms: None,
            reversed_by: None,
            metadata,
            created_ms: time_ms,
            updated_ms: time_ms,
        }
    }
}

/// A state document; `value: None` is a tombstone that keeps the version counting.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Document {
    /// Version of the document's stream: the number of events it has (rejections included).
    pub stream_version: u64,
    /// The document's own version: 1 after the first put, +1 per put or delete.
    pub version: u64,
    /// The JSON text; `None` once deleted.
    pub value: Option<String>,
}

impl Account {
    /// An account created by its first use: open, default limits, no metadata.
    pub(crate) fn auto_created() -> Self {
        Account {
            status: AccountStatus::Open,
            limits: BTreeMap::new(),
            metadata: BTreeMap::new(),
            balances: BTreeMap::new(),
        }
    }

    /// The lowest available balance allowed in `asset`; `None` = unbounded (always for `world`).
    pub fn min_balance(&self, id: &AccountId, asset: &Asset) -> Option<Amount> {
        if id.is_world() {
            return None;
        }
        self.limits.get(asset).copied().unwrap_or(Some(0))
    }

    /// The balances in `asset` (all zero if the account never used it).
    pub fn balance(&self, asset: &Asset) -> Balance {
        self.balances.get(asset).copied().unwrap_or_default()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.balances.values().all(|b| *b == Balance::default())
    }
}

impl State {
    /// An empty state: no tenants.
    pub fn new() -> Self {
        Self::default()
    }

    /// The ledger `ledger` of `tenant`, if any event made it.
    pub fn ledger(&self, tenant: &TenantId, ledger: &LedgerId) -> Option<&Ledger> {
        self.tenants.get(tenant)?.ledgers.get(ledger)
    }

    /// The document (type, key) of `tenant`, if any event made it (a deleted one too, with
    /// `value: None`).
    pub fn document(&self, tenant: &TenantId, doc_type: &DocType, key: &DocKey) -> Option<&Document> {
        self.tenants.get(tenant)?.documents.get(&(doc_type.clone(), key.clone()))
    }

    /// Every ledger of every tenant (for invariant checks and snapshots).
    pub fn ledgers(&self) -> impl Iterator<Item = (&TenantId, &LedgerId, &Ledger)> {
        self.tenants.iter().flat_map(|(t, ts)| ts.ledgers.iter().map(move |(l, ledger)| (t, l, ledger)))
    }

    /// What is known of `command_id` in `stream` of `tenant`: the first command that used it.
    pub fn command(
        &self,
        tenant: &TenantId,
        stream: &StreamId,
        command_id: &CommandId,
    ) -> Option<&CommandRecord> {
        self.tenants.get(tenant)?.commands.get(&(stream.clone(), command_id.clone()))
    }

    /// Records where the answer to `command_id` is in the log, if it is that id's first answer
    /// (`version`) and its place was not known yet.
    pub(crate) fn place_command(
        &mut self,
        tenant: &TenantId,
        stream: &StreamId,
        command_id: &CommandId,
        version: u64,
        offset: i64,
    ) {
        let Some(ts) = self.tenants.get_mut(tenant) else { return };
        if let Some(record) = ts.commands.get_mut(&(stream.clone(), command_id.clone()))
            && record.version == version
        {
            record.offset = offset;
        }
    }

    /// Forgets the record behind `key`, a [`RowKey::Transaction`] or [`RowKey::Outcome`] (a
    /// command id's first answer), so that memory does not grow with every command: see
    /// [`crate::memory`] for when that is safe and how the record comes back. A pending
    /// transaction is kept (its settlement reads its holds, the expiry timer looks for it).
    /// Returns whether a record was forgotten.
    pub fn forget(&mut self, key: &RowKey) -> bool {
        match key {
            RowKey::Transaction { tenant, ledger, tx_id } => {
                let Some(l) = self.tenants.get_mut(tenant).and_then(|ts| ts.ledgers.get_mut(ledger)) else {
                    return false;
                };
                let settled = l.transactions.get(tx_id).is_some_and(|tx| tx.status != TxStatus::Pending);
                settled && l.transactions.remove(tx_id).is_some()
            }
            RowKey::Outcome { tenant, command_id, stream } => self
                .tenants
                .get_mut(tenant)
                .is_some_and(|ts| ts.commands.remove(&(stream.clone(), command_id.clone())).is_some()),
            _ => false,
        }
    }

    /// [`State::forget`] for every command record and settled transaction the state holds (a
    /// projector's fold restored from a processor's snapshot, which may hold any of them).
    pub fn forget_all_settled(&mut self) {
        for ts in self.tenants.values_mut() {
            ts.commands = Map::default();
            for l in ts.ledgers.values_mut() {
                l.transactions.retain(|_, tx| tx.status == TxStatus::Pending);
            }
        }
    }

    /// Puts back a transaction record forgotten by [`State::forget`], as it was when
    /// forgotten (read from the projection). A record the state holds wins: it is never older
    /// than the one given.
    pub fn recall_transaction(
        &mut self,
        tenant: &TenantId,
        ledger: &LedgerId,
        tx_id: &TxId,
        record: TxRecord,
    ) {
        let ts = self.tenants.entry(tenant.clone()).or_default();
        let l = ts.ledgers.entry(ledger.clone()).or_default();
        l.transactions.entry(tx_id.clone()).or_insert(record);
    }

    /// Puts back the record of a command id's first answer forgotten by [`State::forget`]; a
    /// record the state holds wins.
    pub fn recall_command(
        &mut self,
        tenant: &TenantId,
        stream: &StreamId,
        command_id: &CommandId,
        record: CommandRecord,
    ) {
        let ts = self.tenants.entry(tenant.clone()).or_default();
        ts.commands.entry((stream.clone(), command_id.clone())).or_insert(record);
    }

    /// The key of every transaction and command record the state holds (what [`State::forget`]
    /// takes).
    pub fn remembered(&self) -> impl Iterator<Item = RowKey> + '_ {
        self.tenants.iter().flat_map(|(tenant, ts)| {
            let commands = ts.commands.keys().map(move |(stream, command_id)| RowKey::Outcome {
                tenant: tenant.clone(),
                command_id: command_id.clone(),
                stream: stream.clone(),
            });
            let transactions = ts.ledgers.iter().flat_map(move |(ledger, l)| {
                l.transactions.keys().map(move |tx_id| RowKey::Transaction {
                    tenant: tenant.clone(),
                    ledger: ledger.clone(),
                    tx_id: tx_id.clone(),
                })
            });
            commands.chain(transactions)
        })
    }

    /// Number of transaction records held, over every ledger (for memory figures and tests).
    pub fn transactions_len(&self) -> usize {
        self.ledgers().map(|(_, _, l)| l.transactions.len()).sum()
    }

    /// Number of command ids remembered (for memory figures).
    pub fn commands_len(&self) -> usize {
        self.tenants.values().map(|t| t.commands.len()).sum()
    }

    /// Every state document of every tenant, tombstones included.
    pub fn documents(&self) -> impl Iterator<Item = (&TenantId, &(DocType, DocKey), &Document)> {
        self.tenants.iter().flat_map(|(t, ts)| ts.documents.iter().map(move |(k, d)| (t, k, d)))
    }

    /// The current version of a stream (0 if it has no events).
    pub fn stream_version(&self, tenant: &TenantId, stream: &StreamId) -> u64 {
        let Some(ts) = self.tenants.get(tenant) else {
            return 0;
        };
        match stream {
            StreamId::Ledger(l) => ts.ledgers.get(l).map_or(0, |l| l.stream_version),
            StreamId::Document(t, k) => {
                ts.documents.get(&(t.clone(), k.clone())).map_or(0, |d| d.stream_version)
            }
        }
    }

    /// Pending transactions whose timeout has passed at `now_ms`: the processor's timer sends
    /// `ExpirePending` for each.
    pub fn expired_pending(&self, now_ms: i64) -> Vec<(TenantId, LedgerId, TxId)> {
        let mut out = Vec::new();
        for (tenant, ledger_id, ledger) in self.ledgers() {
            for (tx_id, tx) in &ledger.transactions {
                if tx.status == TxStatus::Pending && tx.expires_at_ms.is_some_and(|t| t <= now_ms) {
                    out.push((tenant.clone(), ledger_id.clone(), tx_id.clone()));
                }
            }
        }
        out.sort();
        out
    }
}

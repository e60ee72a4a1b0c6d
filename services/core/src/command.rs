//! Commands: what a client asks for. A command is validated against state and becomes
//! exactly one event (an accepted change, or a recorded rejection).

use crate::{AccountId, Actor, Amount, Asset, CommandId, DocKey, DocType, LedgerId, TenantId, TxId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Free-form string metadata on accounts and transactions (bounded, see `limits`).
pub type Metadata = BTreeMap<String, String>;

/// One movement of `amount` of `asset` from `source` to `destination`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Posting {
    pub source: AccountId,
    pub destination: AccountId,
    pub asset: Asset,
    /// Minor units of `asset`; must be positive.
    pub amount: Amount,
}

/// The lowest available balance an account may reach in one asset.
/// Negative values are a credit line; `None` means unbounded (like `world`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AssetLimit {
    pub asset: Asset,
    /// Lowest available balance, in minor units (negative: a credit line); `None`: unbounded.
    pub min_balance: Option<Amount>,
}

/// What a client asked of a new transaction id. Kept (as a fingerprint) so that a retry with
/// the same id can be told apart from a different request that reuses the id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TxRequest {
    /// Postings applied atomically; with `pending_timeout_ms` they are held, not posted.
    Transfer { postings: Vec<Posting>, metadata: Metadata, pending_timeout_ms: Option<u64> },
    /// Post the compensating transaction of `original`.
    Reversal { original: TxId, metadata: Metadata },
}

/// The envelope every command travels in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// Whose data the command acts on (over HTTP, the tenant of the caller's credential).
    pub tenant: TenantId,
    /// Chosen by the client; one effect and one first answer per (tenant, stream, id).
    pub command_id: CommandId,
    /// Who sent it (over HTTP, the authenticated subject); recorded in the event.
    pub actor: Actor,
    pub body: CommandBody,
}

impl Command {
    /// The Kafka key: `tenant/stream` (`acme/main`, `acme/state/orders/o-1`). Every command of a
    /// stream lands in one partition, so one processor sees them in order.
    pub fn kafka_key(&self) -> String {
        format!("{}/{}", self.tenant, self.body.stream())
    }
}

/// Everything Tally can be asked to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandBody {
    /// Make an asset (`USD/2`) usable in a ledger. Defining it again with the same decimals is a no-op.
    DefineAsset { ledger: LedgerId, asset: Asset },
    /// Open an account explicitly, with limits and metadata. Accounts are otherwise auto-created on
    /// first use with a minimum balance of zero in every asset.
    OpenAccount { ledger: LedgerId, account: AccountId, limits: Vec<AssetLimit>, metadata: Metadata },
    /// Replace the limits and metadata of an open account.
    UpdateAccount { ledger: LedgerId, account: AccountId, limits: Vec<AssetLimit>, metadata: Metadata },
    /// Close an account whose balances and holds are all zero.
    CloseAccount { ledger: LedgerId, account: AccountId },
    /// Create a transaction (posted at once, or pending).
    Transact { ledger: LedgerId, tx_id: TxId, request: TxRequest },
    /// Post a pending transaction, in full (`amounts: None`) or partially (one amount per posting,
    /// each at most the held amount; the rest is released).
    CommitPending { ledger: LedgerId, tx_id: TxId, amounts: Option<Vec<Amount>> },
    /// Release a pending transaction's holds.
    VoidPending { ledger: LedgerId, tx_id: TxId },
    /// Release a pending transaction whose timeout has passed (sent by the processor's timer).
    ExpirePending { ledger: LedgerId, tx_id: TxId },
    /// Create or replace a state document; `expected_version: Some(0)` means "must not exist".
    PutDocument { doc_type: DocType, key: DocKey, value: String, expected_version: Option<u64> },
    /// Delete a state document.
    DeleteDocument { doc_type: DocType, key: DocKey, expected_version: Option<u64> },
}

impl CommandBody {
    /// The stream (consistency unit within the tenant) the command belongs to.
    pub fn stream(&self) -> crate::StreamId {
        use CommandBody::*;
        match self {
            DefineAsset { ledger, .. }
            | OpenAccount { ledger, .. }
            | UpdateAccount { ledger, .. }
            | CloseAccount { ledger, .. }
            | Transact { ledger, .. }
            | CommitPending { ledger, .. }
            | VoidPending { ledger, .. }
            | ExpirePending { ledger, .. } => crate::StreamId::Ledger(ledger.clone()),
            PutDocument { doc_type, key, .. } | DeleteDocument { doc_type, key, .. } => {
                crate::StreamId::Document(doc_type.clone(), key.clone())
            }
        }
    }

    /// A stable name, used in rejections, metrics and logs.
    pub fn kind(&self) -> &'static str {
        use CommandBody::*;
        match self {
            DefineAsset { .. } => "DefineAsset",
            OpenAccount { .. } => "OpenAccount",
            UpdateAccount { .. } => "UpdateAccount",
            CloseAccount { .. } => "CloseAccount",
            Transact { .. } => "Transact",
            CommitPending { .. } => "CommitPending",
            VoidPending { .. } => "VoidPending",
            ExpirePending { .. } => "ExpirePending",
            PutDocument { .. } => "PutDocument",
            DeleteDocument { .. } => "DeleteDocument",
        }
    }
}

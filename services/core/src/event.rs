//! Events: immutable facts. State is the fold of events with `apply`.

use crate::{
    AccountId, Actor, Amount, Asset, AssetLimit, CommandId, DocKey, DocType, LedgerId, Metadata, Posting,
    Reason, TenantId, TxId, TxRequest,
};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The consistency unit of a tenant: a ledger, or one state document.
/// The Kafka key of its commands and events is `tenant/stream`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum StreamId {
    Ledger(LedgerId),
    Document(DocType, DocKey),
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamId::Ledger(l) => write!(f, "{l}"),
            StreamId::Document(t, k) => write!(f, "{}/{t}/{k}", crate::STATE_STREAM_PREFIX),
        }
    }
}

impl StreamId {
    /// Reads a stream as [`Display`](fmt::Display) writes it: `state/TYPE/KEY` for a document,
    /// else a ledger id.
    pub fn parse(s: &str) -> Result<StreamId, crate::IdError> {
        match s.split_once('/') {
            Some((crate::STATE_STREAM_PREFIX, rest)) => {
                let (doc_type, key) =
                    rest.split_once('/').ok_or(crate::IdError::Empty { kind: "document key" })?;
                Ok(StreamId::Document(DocType::parse(doc_type)?, DocKey::parse(key)?))
            }
            _ => Ok(StreamId::Ledger(LedgerId::parse_ledger(s)?)),
        }
    }
}

/// The envelope every event carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub tenant: TenantId,
    pub stream: StreamId,
    /// 1 for the first event of the stream, then +1 per event (rejections included).
    pub stream_version: u64,
    pub command_id: CommandId,
    pub actor: Actor,
    /// Milliseconds since the Unix epoch, as decided by the processor.
    pub time_ms: i64,
    pub body: EventBody,
}

impl Event {
    /// The Kafka key, the same as its command's: `tenant/stream`.
    pub fn kafka_key(&self) -> String {
        format!("{}/{}", self.tenant, self.stream)
    }

    /// Unique and stable: `tenant/stream@version`.
    pub fn event_id(&self) -> String {
        format!("{}/{}@{}", self.tenant, self.stream, self.stream_version)
    }
}

/// Everything that can happen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventBody {
    AssetDefined {
        ledger: LedgerId,
        asset: Asset,
    },
    AccountOpened {
        ledger: LedgerId,
        account: AccountId,
        limits: Vec<AssetLimit>,
        metadata: Metadata,
    },
    AccountUpdated {
        ledger: LedgerId,
        account: AccountId,
        limits: Vec<AssetLimit>,
        metadata: Metadata,
    },
    AccountClosed {
        ledger: LedgerId,
        account: AccountId,
    },
    /// A transaction took effect: `postings` moved. A reversal names the transaction it
    /// compensates in `reverses` (its postings are the inverse of the original's).
    TransactionPosted {
        ledger: LedgerId,
        tx_id: TxId,
        postings: Vec<Posting>,
        metadata: Metadata,
        reverses: Option<TxId>,
    },
    /// A transaction holds funds until committed, voided or expired at `expires_at_ms`.
    TransactionPending {
        ledger: LedgerId,
        tx_id: TxId,
        postings: Vec<Posting>,
        metadata: Metadata,
        timeout_ms: u64,
        expires_at_ms: i64,
    },
    /// A new transaction id was rejected: the transaction is recorded FAILED with its reason.
    TransactionFailed {
        ledger: LedgerId,
        tx_id: TxId,
        request: TxRequest,
        reason: Reason,
        detail: String,
    },
    /// A repeated request (same id, same body): nothing changed; the first outcome stands.
    TransactionDeduplicated {
        ledger: LedgerId,
        tx_id: TxId,
    },
    /// A pending transaction was posted with these (possibly partial) amounts; the rest was released.
    PendingCommitted {
        ledger: LedgerId,
        tx_id: TxId,
        amounts: Vec<Amount>,
    },
    PendingVoided {
        ledger: LedgerId,
        tx_id: TxId,
    },
    PendingExpired {
        ledger: LedgerId,
        tx_id: TxId,
    },
    DocumentPut {
        doc_type: DocType,
        key: DocKey,
        value: String,
        version: u64,
    },
    DocumentDeleted {
        doc_type: DocType,
        key: DocKey,
        version: u64,
    },
    /// Any other command that could not be carried out. Changes nothing but the stream version.
    CommandRejected {
        command: String,
        reason: Reason,
        detail: String,
    },
}

impl EventBody {
    /// A stable name for the event type (Avro record name, search filter, metrics label).
    pub fn kind(&self) -> &'static str {
        use EventBody::*;
        match self {
            AssetDefined { .. } => "AssetDefined",
            AccountOpened { .. } => "AccountOpened",
            AccountUpdated { .. } => "AccountUpdated",
            AccountClosed { .. } => "AccountClosed",
            TransactionPosted { .. } => "TransactionPosted",
            TransactionPending { .. } => "TransactionPending",
            TransactionFailed { .. } => "TransactionFailed",
            TransactionDeduplicated { .. } => "TransactionDeduplicated",
            PendingCommitted { .. } => "PendingCommitted",
            PendingVoided { .. } => "PendingVoided",
            PendingExpired { .. } => "PendingExpired",
            DocumentPut { .. } => "DocumentPut",
            DocumentDeleted { .. } => "DocumentDeleted",
            CommandRejected { .. } => "CommandRejected",
        }
    }

    /// The rejection carried by this event, if the command it answers was refused.
    pub fn rejection(&self) -> Option<Reason> {
        match self {
            EventBody::TransactionFailed { reason, .. } | EventBody::CommandRejected { reason, .. } => {
                Some(*reason)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_parse_back_from_their_text() {
        let ledger = StreamId::Ledger(LedgerId::parse("main").unwrap());
        let document = StreamId::Document(DocType::parse("orders").unwrap(), DocKey::parse("o-1").unwrap());
        for stream in [ledger, document] {
            assert_eq!(StreamId::parse(&stream.to_string()), Ok(stream));
        }
        for bad in ["", "state", "state/orders", "state/orders/", "state//k", "main/x", "a b"] {
            assert!(StreamId::parse(bad).is_err(), "{bad}");
        }
    }
}

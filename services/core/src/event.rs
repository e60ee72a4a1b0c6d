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
    /// A ledger: its accounts, assets and transactions. Written as the ledger id.
    Ledger(LedgerId),
    /// One state document, by type and key. Written as `state/TYPE/KEY`.
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
    /// The client's id of the command this event answers.
    pub command_id: CommandId,
    /// [`crate::command_fingerprint`] of the command this event answers (0 for events written
    /// before commands had fingerprints): how a later command with the same id is told to be a
    /// repeat or a conflict. Written as 32 hex digits in JSON.
    #[serde(with = "hex_u128", default)]
    pub command_fingerprint: u128,
    /// Who sent the command (copied from it).
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
    /// `asset` became usable in `ledger`.
    AssetDefined { ledger: LedgerId, asset: Asset },
    /// An account was opened explicitly with these limits and metadata. (An account auto-created
    /// by its first posting has no event of its own.)
    AccountOpened { ledger: LedgerId, account: AccountId, limits: Vec<AssetLimit>, metadata: Metadata },
    /// An open account's limits and metadata were replaced by these.
    AccountUpdated { ledger: LedgerId, account: AccountId, limits: Vec<AssetLimit>, metadata: Metadata },
    /// An account with zero balances and no holds was closed.
    AccountClosed { ledger: LedgerId, account: AccountId },
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
    TransactionFailed { ledger: LedgerId, tx_id: TxId, request: TxRequest, reason: Reason, detail: String },
    /// A repeated transaction request under another command id (same transaction id, same
    /// body): nothing changed; the transaction's first outcome stands. `first_rejection` is the
    /// reason its first request was refused, if it was (the answer is then that refusal again).
    TransactionDeduplicated { ledger: LedgerId, tx_id: TxId, first_rejection: Option<Reason> },
    /// A pending transaction was posted with these (possibly partial) amounts; the rest was released.
    PendingCommitted { ledger: LedgerId, tx_id: TxId, amounts: Vec<Amount> },
    /// A pending transaction was voided: its holds were released, nothing moved.
    PendingVoided { ledger: LedgerId, tx_id: TxId },
    /// A pending transaction's timeout passed: its holds were released, nothing moved.
    PendingExpired { ledger: LedgerId, tx_id: TxId },
    /// A state document was created or replaced with `value` (JSON text); `version` is the
    /// document's previous version + 1 (1 for a new one).
    DocumentPut { doc_type: DocType, key: DocKey, value: String, version: u64 },
    /// A state document was deleted; `version` is its previous version + 1.
    DocumentDeleted { doc_type: DocType, key: DocKey, version: u64 },
    /// A command id seen before in this stream with the same command: nothing changed, and the
    /// answer is the first one, the event at version `first_version` of the stream, which is at
    /// offset `first_offset` of the same events partition.
    CommandDeduplicated { first_version: u64, first_offset: i64 },
    /// Any other command that could not be carried out. Changes nothing but the stream version.
    /// `conflicts_with` is set when the command reused a command id answered before for
    /// another command: the version of that first answer (which stays the id's answer).
    CommandRejected { command: String, reason: Reason, detail: String, conflicts_with: Option<u64> },
}

/// Every [`EventBody::kind`], in declaration order (filters check names against it).
pub const EVENT_KINDS: [&str; 15] = [
    "AssetDefined",
    "AccountOpened",
    "AccountUpdated",
    "AccountClosed",
    "TransactionPosted",
    "TransactionPending",
    "TransactionFailed",
    "TransactionDeduplicated",
    "PendingCommitted",
    "PendingVoided",
    "PendingExpired",
    "DocumentPut",
    "DocumentDeleted",
    "CommandDeduplicated",
    "CommandRejected",
];

impl EventBody {
    /// The accounts this event names: the account of an account event, the sources and
    /// destinations of a transaction's postings (a failed transfer's too). Events that name a
    /// transaction only (commit, void, expiry, a deduplicated request) name no account.
    pub fn accounts(&self) -> Vec<&AccountId> {
        match self {
            EventBody::AccountOpened { account, .. }
            | EventBody::AccountUpdated { account, .. }
            | EventBody::AccountClosed { account, .. } => vec![account],
            EventBody::TransactionPosted { postings, .. }
            | EventBody::TransactionPending { postings, .. } => postings_accounts(postings),
            EventBody::TransactionFailed { request: TxRequest::Transfer { postings, .. }, .. } => {
                postings_accounts(postings)
            }
            _ => vec![],
        }
    }

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
            CommandDeduplicated { .. } => "CommandDeduplicated",
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

/// How the log answered the command an event answers: the one classification the HTTP answers,
/// the outcome rows and the metrics share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The change was made.
    Accepted,
    /// The transaction id was used before with the same request, which was accepted: nothing
    /// changed, the first outcome stands.
    Deduplicated,
    /// Refused for this reason; nothing changed but the stream's version.
    Rejected(Reason),
    /// The command id was answered before with the same command: the answer is that first one,
    /// at `first_offset` of the same events partition.
    Repeated { first_version: u64, first_offset: i64 },
}

impl Answer {
    /// A stable lowercase name (`accepted`, `deduplicated`, `rejected`, `repeated`), for metrics.
    pub fn label(self) -> &'static str {
        match self {
            Answer::Accepted => "accepted",
            Answer::Deduplicated => "deduplicated",
            Answer::Rejected(_) => "rejected",
            Answer::Repeated { .. } => "repeated",
        }
    }
}

impl EventBody {
    /// Whether this event is the first answer to its command id, the one a repeat of the same
    /// command gets: not a repeat (which points at the first), not a command id conflict (which
    /// answers a command that is not the id's).
    pub fn answers_first(&self) -> bool {
        !matches!(
            self,
            EventBody::CommandDeduplicated { .. }
                | EventBody::CommandRejected { conflicts_with: Some(_), .. }
        )
    }

    /// How the command this event answers was answered.
    pub fn answer(&self) -> Answer {
        match self {
            EventBody::TransactionFailed { reason, .. } | EventBody::CommandRejected { reason, .. } => {
                Answer::Rejected(*reason)
            }
            EventBody::TransactionDeduplicated { first_rejection: Some(reason), .. } => {
                Answer::Rejected(*reason)
            }
            EventBody::TransactionDeduplicated { first_rejection: None, .. } => Answer::Deduplicated,
            EventBody::CommandDeduplicated { first_version, first_offset } => {
                Answer::Repeated { first_version: *first_version, first_offset: *first_offset }
            }
            _ => Answer::Accepted,
        }
    }
}

fn postings_accounts(postings: &[Posting]) -> Vec<&AccountId> {
    postings.iter().flat_map(|p| [&p.source, &p.destination]).collect()
}

/// A u128 as 32 lowercase hex digits: JSON readers that hold numbers as doubles keep it exact.
mod hex_u128 {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(v: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{v:032x}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        u128::from_str_radix(&text, 16).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_listed() {
        use crate::testkit;
        use proptest::strategy::{Strategy, ValueTree};
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let history = testkit::history().new_tree(&mut runner).unwrap().current();
            let (_, events, _) = testkit::run(&history, |_, _| {});
            for event in events {
                assert!(EVENT_KINDS.contains(&event.body.kind()), "{} is not listed", event.body.kind());
                seen.insert(event.body.kind());
            }
        }
        assert!(seen.len() >= 10, "the histories cover few kinds: {seen:?}");
    }

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

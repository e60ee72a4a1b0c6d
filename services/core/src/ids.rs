//! Identifiers. Each is a validated newtype: once you hold one, it is well formed.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// Longest identifier accepted anywhere (tenant, ledger, account, transaction, command, ...).
pub const ID_LEN_MAX: usize = 128;

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The text is empty; `kind` names the identifier (`tenant`, `account`, ...).
    #[error("{kind} is empty")]
    Empty { kind: &'static str },
    /// Longer than `len_max` bytes ([`ID_LEN_MAX`], or [`COMMAND_ID_LEN_MAX`] for command ids).
    #[error("{kind} is longer than {len_max} bytes")]
    TooLong { kind: &'static str, len_max: usize },
    /// Holds `found`, which is not an ASCII letter or digit nor one of `- _ . : @`.
    #[error("{kind} contains {found:?}; allowed are letters, digits and - _ . : @")]
    BadChar { kind: &'static str, found: char },
}

/// Longest command id: an identifier, plus room for the prefix of a default id
/// ([`CommandId::default_for`]).
pub const COMMAND_ID_LEN_MAX: usize = ID_LEN_MAX + DEFAULT_TX_COMMAND_PREFIX.len();

/// The prefix of a transaction's default command id (`tx:` + its transaction id). An explicit
/// command id (the HTTP `Idempotency-Key`) may not start with it, so a default id can never
/// equal an id a client chose for another command.
pub const DEFAULT_TX_COMMAND_PREFIX: &str = "tx:";

/// Letters, digits and a few separators. No `/`: it separates the parts of a Kafka key.
fn check_id(kind: &'static str, s: &str, len_max: usize) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if s.len() > len_max {
        return Err(IdError::TooLong { kind, len_max });
    }
    match s.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '@'))) {
        Some(found) => Err(IdError::BadChar { kind, found }),
        None => Ok(()),
    }
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        id_type!($(#[$doc])* $name, $kind, ID_LEN_MAX);
    };
    ($(#[$doc:meta])* $name:ident, $kind:literal, $len_max:expr) => {
        $(#[$doc])*
        /// Shared, immutable text: cloning one (into events, records, keys) bumps a count
        /// instead of copying the string.
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
        #[serde(try_from = "String")]
        pub struct $name(Arc<str>);

        /// As its text. Written by hand: `serde(into = "String")` copied the text into a new
        /// `String` for every id of every row encoded (BENCHMARKS.md, projector).
        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl $name {
            /// Parses and validates; the only way to build one.
            pub fn parse(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                check_id($kind, &s, $len_max)?;
                Ok(Self(s.into()))
            }

            /// The identifier's text, as parsed.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0.to_string()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }
    };
}

id_type!(
    /// An isolated customer of the deployment; every key, event and row carries one.
    TenantId, "tenant id");
id_type!(
    /// A named ledger within a tenant. `state` is reserved (it prefixes document streams).
    LedgerId, "ledger id");
id_type!(
    /// An account within a ledger. `world` is the ledger's unbounded source and sink.
    AccountId, "account id");
id_type!(
    /// A client-chosen transaction id, unique forever within its ledger.
    TxId, "transaction id");
id_type!(
    /// The id of one command; maps to the HTTP `Idempotency-Key`.
    ///
    /// Scope: a command id names one command within its tenant and stream (a ledger, or one
    /// document), the unit that one partition owner decides alone. The same id with the same
    /// command gets the first outcome; the same id with another command is a conflict
    /// (`COMMAND_ID_CONFLICT`, or `ID_CONFLICT` for a transaction's default id) and changes
    /// nothing. The same id on another stream is another command.
    CommandId, "command id", COMMAND_ID_LEN_MAX);
id_type!(
    /// The authenticated subject that sent a command.
    Actor, "actor");
id_type!(
    /// The type of a state document (`orders`, `carts`, ...).
    DocType, "document type");
id_type!(
    /// The key of a state document within its type.
    DocKey, "document key");
id_type!(
    /// A tenant's name for one of its sink destinations (a webhook, a Kafka topic).
    DestinationId, "destination id");

/// The name of the per-ledger account that may go negative: where money enters and leaves.
pub const WORLD: &str = "world";

/// The ledger name reserved for document streams (`tenant/state/type/key`).
pub const STATE_STREAM_PREFIX: &str = "state";

impl AccountId {
    /// The ledger's [`WORLD`] account.
    pub fn world() -> Self {
        Self(WORLD.into())
    }

    /// Whether this is the [`WORLD`] account (exempt from limits: it may go negative).
    pub fn is_world(&self) -> bool {
        &*self.0 == WORLD
    }
}

impl CommandId {
    /// The command id a command gets when its sender names none: `tx:<tx_id>` for a
    /// transaction (so that a retry of the same transaction is recognised whatever path it takes),
    /// `None` for every other command (the sender then uses a fresh unique id).
    pub fn default_for(body: &crate::CommandBody) -> Option<CommandId> {
        match body {
            crate::CommandBody::Transact { tx_id, .. } => {
                Some(CommandId(format!("{DEFAULT_TX_COMMAND_PREFIX}{tx_id}").into()))
            }
            _ => None,
        }
    }

    /// Whether a client may choose this id itself: not in the shape of a default id.
    pub fn is_reserved(&self) -> bool {
        self.0.starts_with(DEFAULT_TX_COMMAND_PREFIX)
    }
}

impl LedgerId {
    /// Parses a ledger id and refuses the reserved name used by document streams.
    pub fn parse_ledger(s: impl Into<String>) -> Result<Self, IdError> {
        let id = Self::parse(s)?;
        if &*id.0 == STATE_STREAM_PREFIX {
            return Err(IdError::BadChar { kind: "ledger id (reserved name)", found: 's' });
        }
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_validated() {
        assert!(AccountId::parse("users:42.wallet@eu-1_x").is_ok());
        assert_eq!(AccountId::parse(""), Err(IdError::Empty { kind: "account id" }));
        assert!(matches!(AccountId::parse("a/b"), Err(IdError::BadChar { found: '/', .. })));
        assert!(matches!(AccountId::parse("a b"), Err(IdError::BadChar { found: ' ', .. })));
        assert!(AccountId::parse("x".repeat(ID_LEN_MAX)).is_ok());
        assert!(matches!(AccountId::parse("x".repeat(ID_LEN_MAX + 1)), Err(IdError::TooLong { .. })));
        assert!(CommandId::parse("x".repeat(COMMAND_ID_LEN_MAX)).is_ok());
        assert!(CommandId::parse("x".repeat(COMMAND_ID_LEN_MAX + 1)).is_err());
        assert!(LedgerId::parse_ledger("state").is_err());
        assert!(LedgerId::parse_ledger("main").is_ok());
    }

    /// Ids of every allowed character, from one character to the longest allowed (past 127
    /// bytes postcard's length prefix takes two bytes).
    fn any_id_text(len_max: usize) -> impl proptest::strategy::Strategy<Value = String> {
        proptest::string::string_regex(&format!("[A-Za-z0-9._:@-]{{1,{len_max}}}")).unwrap()
    }

    /// Assets of every allowed code shape and every scale, the longest and largest included.
    fn any_asset() -> impl proptest::strategy::Strategy<Value = crate::Asset> {
        use crate::asset::{ASSET_CODE_LEN_MAX, ASSET_SCALE_MAX};
        let code =
            proptest::string::string_regex(&format!("[A-Z][A-Z0-9_-]{{0,{}}}", ASSET_CODE_LEN_MAX - 1));
        (code.unwrap(), 0..=ASSET_SCALE_MAX)
            .prop_map(|(code, scale)| crate::Asset::new(&code, scale).unwrap())
    }

    /// `value` is written exactly as `text` would be, in JSON and in postcard (stored rows written
    /// before the serializers were hand-written still decode), and is read back equal.
    fn serializes_as_text<T>(value: &T, text: &str) -> Result<(), proptest::test_runner::TestCaseError>
    where
        T: Serialize + serde::de::DeserializeOwned + PartialEq + fmt::Debug,
    {
        let (json, bytes) = (serde_json::to_string(value).unwrap(), postcard::to_stdvec(value).unwrap());
        proptest::prop_assert_eq!(&json, &serde_json::to_string(text).unwrap());
        proptest::prop_assert_eq!(&bytes, &postcard::to_stdvec(text).unwrap());
        proptest::prop_assert_eq!(&serde_json::from_str::<T>(&json).unwrap(), value);
        proptest::prop_assert_eq!(&postcard::from_bytes::<T>(&bytes).unwrap(), value);
        Ok(())
    }

    use proptest::strategy::Strategy;

    proptest::proptest! {
        /// The same text as several kinds of id (they collide on purpose) and as an asset.
        #[test]
        fn ids_and_assets_serialize_as_their_text(
            text in any_id_text(ID_LEN_MAX),
            command in any_id_text(COMMAND_ID_LEN_MAX),
            asset in any_asset(),
        ) {
            serializes_as_text(&AccountId::parse(text.as_str()).unwrap(), &text)?;
            serializes_as_text(&TenantId::parse(text.as_str()).unwrap(), &text)?;
            serializes_as_text(&TxId::parse(text.as_str()).unwrap(), &text)?;
            serializes_as_text(&CommandId::parse(command.as_str()).unwrap(), &command)?;
            serializes_as_text(&asset, &asset.to_string())?;
        }
    }

    #[test]
    fn serde_refuses_invalid_ids() {
        assert!(serde_json::from_str::<TxId>("\"ok-1\"").is_ok());
        assert!(serde_json::from_str::<TxId>("\"not ok\"").is_err());
    }
}

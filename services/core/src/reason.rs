//! Machine-readable reasons a command is refused. Each is a stable code in events and APIs.

use serde::{Deserialize, Serialize};

/// A rejection: a stable reason code and a human-readable detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The stable reason code (`INSUFFICIENT_FUNDS`, ...).
    pub reason: Reason,
    /// What exactly was wrong, for people; not stable, not to be matched on.
    pub detail: String,
}

impl Rejection {
    /// A rejection for `reason`, explained by `detail`.
    pub fn new(reason: Reason, detail: impl Into<String>) -> Self {
        Self { reason, detail: detail.into() }
    }
}

macro_rules! reasons {
    ($($(#[$doc:meta])* $name:ident = $code:literal,)*) => {
        /// Why a command was refused.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum Reason { $($(#[$doc])* $name,)* }

        impl Reason {
            /// Every reason, in declaration order (also the order of the Avro enum symbols).
            pub const ALL: &'static [Reason] = &[$(Reason::$name,)*];

            /// The stable code (`INSUFFICIENT_FUNDS`), as in the Avro enum and HTTP problems.
            pub fn code(self) -> &'static str {
                match self { $(Reason::$name => $code,)* }
            }

            /// The reason whose [`Reason::code`] is `code` exactly; `None` for an unknown code.
            pub fn from_code(code: &str) -> Option<Self> {
                match code { $($code => Some(Reason::$name),)* _ => None }
            }
        }
    };
}

reasons! {
    /// An account would go below its limit (available = posted - pending holds).
    InsufficientFunds = "INSUFFICIENT_FUNDS",
    /// A posting amount is zero or negative.
    NonPositiveAmount = "NON_POSITIVE_AMOUNT",
    /// A balance would leave the range of i128.
    Overflow = "OVERFLOW",
    /// The asset is not defined in this ledger (or with other decimals).
    UnknownAsset = "UNKNOWN_ASSET",
    /// The asset is already defined with other decimals.
    AssetConflict = "ASSET_CONFLICT",
    /// A posting's source and destination are the same account.
    SelfPosting = "SELF_POSTING",
    /// A transaction has no postings.
    NoPostings = "NO_POSTINGS",
    /// A transaction has more postings than allowed.
    TooManyPostings = "TOO_MANY_POSTINGS",
    /// Metadata has too many entries or too long keys or values.
    MetadataTooLarge = "METADATA_TOO_LARGE",
    /// The account is closed.
    AccountClosed = "ACCOUNT_CLOSED",
    /// The account does not exist (or was never used).
    AccountNotFound = "ACCOUNT_NOT_FOUND",
    /// The account already exists.
    AccountExists = "ACCOUNT_EXISTS",
    /// The account still holds balances or pending holds.
    AccountNotEmpty = "ACCOUNT_NOT_EMPTY",
    /// The `world` account cannot be opened, updated or closed.
    WorldAccount = "WORLD_ACCOUNT",
    /// A new limit would put the account below it.
    LimitBelowBalance = "LIMIT_BELOW_BALANCE",
    /// The transaction id was used before with a different request.
    IdConflict = "ID_CONFLICT",
    /// The transaction does not exist.
    TransactionNotFound = "TRANSACTION_NOT_FOUND",
    /// The transaction is not pending (already committed, voided, expired or never pending).
    NotPending = "NOT_PENDING",
    /// The pending transaction's timeout has passed; it can only expire.
    PendingExpired = "PENDING_EXPIRED",
    /// The pending transaction's timeout has not passed yet.
    NotYetExpired = "NOT_YET_EXPIRED",
    /// The pending timeout is zero or too long.
    InvalidTimeout = "INVALID_TIMEOUT",
    /// Partial commit amounts do not match the postings or exceed the held amounts.
    InvalidCommitAmounts = "INVALID_COMMIT_AMOUNTS",
    /// Only posted transactions can be reversed.
    NotReversible = "NOT_REVERSIBLE",
    /// The transaction was already reversed.
    AlreadyReversed = "ALREADY_REVERSED",
    /// The document's version is not the expected one.
    VersionMismatch = "VERSION_MISMATCH",
    /// The document does not exist.
    DocumentNotFound = "DOCUMENT_NOT_FOUND",
    /// The document value is not valid JSON.
    InvalidJson = "INVALID_JSON",
    /// The document value is too large.
    DocumentTooLarge = "DOCUMENT_TOO_LARGE",
    /// The command id was used before in this stream for a different command; nothing changed.
    CommandIdConflict = "COMMAND_ID_CONFLICT",
}

impl Reason {
    /// Whether the command conflicts with what exists (HTTP 409) rather than being refused by a
    /// rule (HTTP 422): an id or a version already taken, something that already exists otherwise.
    pub fn is_conflict(self) -> bool {
        matches!(
            self,
            Reason::IdConflict
                | Reason::CommandIdConflict
                | Reason::AccountExists
                | Reason::AssetConflict
                | Reason::VersionMismatch
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for r in Reason::ALL {
            assert_eq!(Reason::from_code(r.code()), Some(*r));
            assert!(seen.insert(r.code()), "duplicate code {}", r.code());
        }
        assert_eq!(Reason::from_code("NOPE"), None);
    }
}

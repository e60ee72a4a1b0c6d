//! Bounds on everything a command may carry. Exceeding one is a rejection, never a panic.

/// Most postings in one transaction.
pub const POSTINGS_MAX: usize = 128;
/// Most metadata entries on an account or transaction.
pub const METADATA_ENTRIES_MAX: usize = 32;
/// Longest metadata key, in bytes.
pub const METADATA_KEY_LEN_MAX: usize = 64;
/// Longest metadata value, in bytes.
pub const METADATA_VALUE_LEN_MAX: usize = 512;
/// Most per-asset limits on one account.
pub const ACCOUNT_LIMITS_MAX: usize = 64;
/// Longest pending timeout: 30 days.
pub const PENDING_TIMEOUT_MS_MAX: u64 = 30 * 24 * 3600 * 1000;
/// Largest state document value, in bytes of JSON.
pub const DOCUMENT_LEN_MAX: usize = 64 * 1024;

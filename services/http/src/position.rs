//! Positions in the log, as the `Tally-Position` token a write answers with and a query sends
//! back to read that write. A token reads `<partition>-<offset>.<tag>`, e.g.
//! `3-1234.822b33ad87c148a0`: the events partition (0 to 1023) and the event's offset in it,
//! both in decimal, then the tag, 16 lowercase hex digits (the first 64 bits of SHA-256 over
//! the tenant id). So a token is only accepted from the tenant whose write made it. Another
//! tenant's token is refused the same way as nonsense, and the tag does not show the tenant.

use sha2::{Digest, Sha256};
use std::fmt;
use tally_core::TenantId;

/// Highest partition number a position may name (Tally's topics have at most 1,024).
const PARTITION_MAX: i32 = 1023;

/// A place in the events topic: the event at `offset` of `partition`. Displays as
/// `<partition>-<offset>` (without the tag: that is [`Position::token`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// The events partition, 0 to 1023 in a token.
    pub partition: i32,
    /// The offset in that partition, at least 0 in a token.
    pub offset: i64,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.partition, self.offset)
    }
}

impl Position {
    /// The token for this position, usable by `tenant` only: `<partition>-<offset>.<tag>`.
    pub fn token(self, tenant: &TenantId) -> String {
        format!("{self}.{}", tag(tenant))
    }

    /// The position a token names, if it was made for `tenant`. Anything else (another
    /// tenant's tag, a missing tag, a partition outside 0 to 1023, a negative offset, not a
    /// token at all) is the same error, a message for a 400 answer.
    pub fn from_token(token: &str, tenant: &TenantId) -> Result<Position, String> {
        let refused = || {
            format!(
                "{}: {token:?} is not a position of yours (pass the token a write answered with)",
                crate::POSITION_HEADER
            )
        };
        let (place, given) = token.split_once('.').ok_or_else(refused)?;
        let (partition, offset) = place.split_once('-').ok_or_else(refused)?;
        let partition: i32 = partition.parse().map_err(|_| refused())?;
        let offset: i64 = offset.parse().map_err(|_| refused())?;
        let fits = (0..=PARTITION_MAX).contains(&partition) && offset >= 0;
        match fits && given == tag(tenant) {
            true => Ok(Position { partition, offset }),
            false => Err(refused()),
        }
    }
}

/// 64 bits of SHA-256 over the tenant: enough that no other tenant's tag matches by chance.
fn tag(tenant: &TenantId) -> String {
    let digest = Sha256::digest(tenant.as_str().as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_reads_back_for_its_tenant_only_and_nonsense_is_refused() {
        let (acme, globex) = (TenantId::parse("acme").unwrap(), TenantId::parse("globex").unwrap());
        let p = Position { partition: 3, offset: 1234 };
        let token = p.token(&acme);
        assert_eq!(Position::from_token(&token, &acme), Ok(p));
        assert!(Position::from_token(&token, &globex).is_err());
        assert!(!token.contains("acme"));
        let tag = token.split_once('.').unwrap().1;
        for bad in ["", "3", "3-", "-1", "a-1", "3-x", "-1-5", "3--5", "1024-0", "3-1-2", "99999999999-1"] {
            assert!(Position::from_token(bad, &acme).is_err(), "{bad}");
            assert!(Position::from_token(&format!("{bad}.{tag}"), &acme).is_err(), "{bad}.tag");
        }
        assert!(Position::from_token("3-1234", &acme).is_err(), "a token without its tag");
        assert!(Position::from_token(&format!("3-1234.{tag}x"), &acme).is_err());
    }
}

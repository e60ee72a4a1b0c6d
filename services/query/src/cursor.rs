//! Opaque page cursors. A cursor names the list it belongs to (the tenant and what was asked)
//! and the last item's place in it; it is only accepted back for the same list, so a cursor
//! from one tenant, or from another list, is refused instead of read.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use tally_core::{AccountId, DocKey, TenantId};
use tally_http::Problem;

/// Where the next page starts: the last item of the previous one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum After {
    /// An account list: the last account id shown.
    Account(AccountId),
    /// A statement line: (offset, line).
    Line(i64, u32),
    /// A document list: the last key shown.
    Document(DocKey),
    /// A stream's events: the last stream version shown.
    StreamVersion(u64),
    /// A tenant's timeline, read in passes ([`TimelinePass`]).
    Timeline(TimelinePass),
    /// A live stream across streams: per events partition, the offset up to which everything
    /// was shown (`crate::events::Shown`).
    Partitions(Vec<(i32, i64)>),
}

/// Where a reading of a tenant's timeline (the search across streams, by time) stands.
///
/// Partitions are projected independently, so an event can become readable after another
/// with a later time was read. A reading therefore goes in passes over the time range: a pass
/// reads the rows of each partition up to the checkpoint it pinned when it began (`upto`), in
/// time order, and skips those an earlier pass showed (`seen`). When a pass ends, its `upto`
/// becomes the next pass's `seen`: every event in the range is shown once, in the first pass
/// that began after it was projected, and none twice.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelinePass {
    /// The last place shown in this pass, (time, partition, offset); `None`: the pass begins.
    pub after: Option<(i64, i32, i64)>,
    /// Per partition, the offset up to which earlier passes showed everything.
    pub seen: Vec<(i32, i64)>,
    /// Per partition, the checkpoint this pass reads up to; `None`: pinned when it begins.
    pub upto: Option<Vec<(i32, i64)>>,
}

#[derive(Serialize, Deserialize)]
struct Body {
    tenant: TenantId,
    /// The list: route and the parameters that shape it.
    list: String,
    after: After,
}

/// Longest cursor accepted, in characters: a timeline's carries two offsets per partition (some
/// 19 KB for the most partitions a topic may have here, 1,024); the others are shorter.
const CURSOR_LEN_MAX: usize = 32 * 1024;

/// The cursor for `tenant`'s `list` after `after`: the postcard bytes of all three and their
/// CRC-32 (ISO-HDLC, big-endian), base64url without padding (RFC 4648 section 5). Opaque to
/// clients; not signed, but only ever accepted for the same tenant and list. The checksum
/// turns a damaged cursor (a character changed in a copy) into a 400 instead of a read from
/// another place, which for a live stream would skip or repeat events.
pub fn encode(tenant: &TenantId, list: &str, after: After) -> String {
    let body = Body { tenant: tenant.clone(), list: list.to_owned(), after };
    let mut bytes = postcard::to_stdvec(&body).expect("plain data serialises");
    bytes.extend_from_slice(&crc32fast::hash(&bytes).to_be_bytes());
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The place a cursor names, if it was made for this tenant's `list`; `field` names where the
/// request gave it (`cursor`, `resume`, `Last-Event-ID`) in the 400 otherwise.
pub fn decode(cursor: &str, tenant: &TenantId, list: &str, field: &str) -> Result<After, Problem> {
    let malformed = || Problem::bad_request(format!("{field}: not a token this API returned"));
    if cursor.len() > CURSOR_LEN_MAX {
        return Err(malformed());
    }
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| malformed())?;
    let (bytes, checksum) = bytes.split_at_checked(bytes.len().wrapping_sub(4)).ok_or_else(malformed)?;
    if crc32fast::hash(bytes).to_be_bytes() != checksum {
        return Err(malformed());
    }
    let body: Body = postcard::from_bytes(bytes).map_err(|_| malformed())?;
    match (&body.tenant == tenant, body.list == list) {
        (true, true) => Ok(body.after),
        // The same answer for another tenant's cursor as for another list's: nothing is learnt.
        _ => {
            Err(Problem::bad_request(format!("{field}: it belongs to another list; start again without it")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back_only_for_its_own_tenant_and_list() {
        let (acme, globex) = (TenantId::parse("acme").unwrap(), TenantId::parse("globex").unwrap());
        let after = After::Line(7, 1);
        let cursor = encode(&acme, "statement/main/alice", after.clone());
        assert_eq!(decode(&cursor, &acme, "statement/main/alice", "cursor").unwrap(), after);
        assert!(decode(&cursor, &globex, "statement/main/alice", "cursor").is_err());
        assert!(decode(&cursor, &acme, "statement/main/bob", "cursor").is_err());
        assert!(decode("not a cursor!", &acme, "x", "cursor").is_err());
        assert!(decode(&"A".repeat(CURSOR_LEN_MAX + 1), &acme, "x", "cursor").is_err());
        assert!(decode(&cursor[..cursor.len() - 2], &acme, "statement/main/alice", "cursor").is_err());
        assert!(decode("", &acme, "x", "cursor").is_err());
    }

    /// Any one character of a cursor changed (to any other base64url character) is refused,
    /// not read as another place.
    #[test]
    fn a_damaged_cursor_is_refused() {
        let acme = TenantId::parse("acme").unwrap();
        let after = After::Partitions(vec![(0, 1_234), (1, 99_999), (2, 7)]);
        let cursor = encode(&acme, "live//", after.clone());
        assert_eq!(decode(&cursor, &acme, "live//", "resume").unwrap(), after);
        let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        for at in 0..cursor.len() {
            for other in alphabet.chars().filter(|c| *c != cursor.as_bytes()[at] as char) {
                let mut damaged = cursor.clone();
                damaged.replace_range(at..at + 1, &other.to_string());
                assert!(decode(&damaged, &acme, "live//", "resume").is_err(), "{damaged}");
            }
        }
    }
}

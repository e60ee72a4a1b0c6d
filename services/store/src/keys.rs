//! Row keys as bytes that sort like the keys: the embedded store's keys, so that a range of
//! bytes is a range of rows (a ledger's accounts by id prefix, an account's statement in log
//! order, a stream's events in order).
//!
//! The layout is small and fixed: a tag byte per kind of row (in `RowKey`'s variant order),
//! then the key's fields in order: identifiers as their text and a 0 byte (identifiers never
//! contain 0, so a shorter id sorts first, and an id's text is a prefix of every longer id
//! that starts with it), integers big-endian (signed ones with the sign bit flipped).
//! Generic order-preserving formats (storekey and friends) would do the same, but prefix
//! scans depend on exactly this layout, so it is written down here, next to them.

use crate::StoreError;
use crate::projections::Scan;
use std::ops::Bound::{self, Excluded, Included};
use tally_core::projection::RowKey;
use tally_core::{AccountId, Asset, CommandId, DocKey, DocType, LedgerId, StreamId, TenantId};

/// The first byte of each kind of key.
mod tag {
    pub const ACCOUNT: u8 = 1;
    pub const TRANSACTION: u8 = 2;
    pub const DOCUMENT: u8 = 3;
    pub const OUTCOME: u8 = 4;
    pub const POSTING: u8 = 5;
    pub const EVENT: u8 = 6;
    pub const EVENT_AT: u8 = 7;
    pub const EVENT_BY_OFFSET: u8 = 8;
    pub const STREAM_LEDGER: u8 = 1;
    pub const STREAM_DOCUMENT: u8 = 2;
}

/// Builds keys and key prefixes field by field.
#[derive(Debug, Clone, Default)]
pub(crate) struct KeyBytes(Vec<u8>);

impl KeyBytes {
    fn tag(tag: u8) -> Self {
        KeyBytes(vec![tag])
    }

    fn id(mut self, id: &str) -> Self {
        self.0.extend_from_slice(id.as_bytes());
        self.0.push(0);
        self
    }

    fn asset(self, asset: &Asset) -> Self {
        let mut key = self.id(asset.code());
        key.0.push(asset.scale());
        key
    }

    fn stream(mut self, stream: &StreamId) -> Self {
        match stream {
            StreamId::Ledger(ledger) => {
                self.0.push(tag::STREAM_LEDGER);
                self.id(ledger.as_str())
            }
            StreamId::Document(doc_type, key) => {
                self.0.push(tag::STREAM_DOCUMENT);
                self.id(doc_type.as_str()).id(key.as_str())
            }
        }
    }

    fn i64(mut self, n: i64) -> Self {
        self.0.extend_from_slice(&((n as u64) ^ (1 << 63)).to_be_bytes());
        self
    }

    fn i32(mut self, n: i32) -> Self {
        self.0.extend_from_slice(&((n as u32) ^ (1 << 31)).to_be_bytes());
        self
    }

    fn u32(mut self, n: u32) -> Self {
        self.0.extend_from_slice(&n.to_be_bytes());
        self
    }

    fn u64(mut self, n: u64) -> Self {
        self.0.extend_from_slice(&n.to_be_bytes());
        self
    }

    /// Appends an identifier's first characters without its terminator: a prefix of the keys
    /// of every identifier that starts with them.
    pub(crate) fn id_prefix(mut self, prefix: &str) -> Self {
        self.0.extend_from_slice(prefix.as_bytes());
        self
    }

    /// The smallest bytes above every key that starts with these bytes: the last byte below
    /// 0xFF, incremented, with what followed it dropped. (A prefix always starts with a tag,
    /// which is below 0xFF.)
    pub(crate) fn prefix_end(mut self) -> Vec<u8> {
        while let Some(last) = self.0.pop() {
            if last < u8::MAX {
                self.0.push(last + 1);
                break;
            }
        }
        self.0
    }

    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.0
    }

    /// A ledger's accounts.
    pub(crate) fn accounts(tenant: &TenantId, ledger: &LedgerId) -> Self {
        KeyBytes::tag(tag::ACCOUNT).id(tenant.as_str()).id(ledger.as_str())
    }

    /// The first answers to a command id, one per stream that used it.
    pub(crate) fn outcomes(tenant: &TenantId, command_id: &CommandId) -> Self {
        KeyBytes::tag(tag::OUTCOME).id(tenant.as_str()).id(command_id.as_str())
    }

    /// A type's documents.
    pub(crate) fn documents(tenant: &TenantId, doc_type: &DocType) -> Self {
        KeyBytes::tag(tag::DOCUMENT).id(tenant.as_str()).id(doc_type.as_str())
    }

    /// An account's statement in one asset.
    pub(crate) fn postings(tenant: &TenantId, ledger: &LedgerId, account: &AccountId, asset: &Asset) -> Self {
        KeyBytes::tag(tag::POSTING).id(tenant.as_str()).id(ledger.as_str()).id(account.as_str()).asset(asset)
    }

    /// A statement line's place after [`KeyBytes::postings`].
    pub(crate) fn line(self, offset: i64, line: u32) -> Self {
        self.i64(offset).u32(line)
    }

    /// A stream's events.
    pub(crate) fn stream_events(tenant: &TenantId, stream: &StreamId) -> Self {
        KeyBytes::tag(tag::EVENT).id(tenant.as_str()).stream(stream)
    }

    /// A tenant's timeline of events.
    pub(crate) fn timeline(tenant: &TenantId) -> Self {
        KeyBytes::tag(tag::EVENT_AT).id(tenant.as_str())
    }

    /// A tenant's events in one events partition.
    pub(crate) fn partition_events(tenant: &TenantId, partition: i32) -> Self {
        KeyBytes::tag(tag::EVENT_BY_OFFSET).id(tenant.as_str()).i32(partition)
    }

    /// A place in a timeline after [`KeyBytes::timeline`]: an instant, or (with the rest) an
    /// event.
    pub(crate) fn at(self, (time_ms, partition, offset): (i64, i32, i64)) -> Self {
        self.i64(time_ms).i32(partition).i64(offset)
    }

    /// An event's place after [`KeyBytes::stream_events`].
    pub(crate) fn stream_version(self, version: u64) -> Self {
        self.u64(version)
    }
}

/// The bytes of a row key.
pub(crate) fn encode(key: &RowKey) -> Vec<u8> {
    let key = match key {
        RowKey::Account { tenant, ledger, account } => {
            KeyBytes::accounts(tenant, ledger).id(account.as_str())
        }
        RowKey::Transaction { tenant, ledger, tx_id } => {
            KeyBytes::tag(tag::TRANSACTION).id(tenant.as_str()).id(ledger.as_str()).id(tx_id.as_str())
        }
        RowKey::Document { tenant, doc_type, key } => KeyBytes::documents(tenant, doc_type).id(key.as_str()),
        RowKey::Outcome { tenant, command_id, stream } => {
            KeyBytes::outcomes(tenant, command_id).stream(stream)
        }
        RowKey::Posting { tenant, ledger, account, asset, offset, line } => {
            KeyBytes::postings(tenant, ledger, account, asset).line(*offset, *line)
        }
        RowKey::Event { tenant, stream, stream_version } => {
            KeyBytes::stream_events(tenant, stream).stream_version(*stream_version)
        }
        RowKey::EventAt { tenant, time_ms, partition, offset } => {
            KeyBytes::timeline(tenant).at((*time_ms, *partition, *offset))
        }
        RowKey::EventByOffset { tenant, partition, offset } => {
            KeyBytes::partition_events(tenant, *partition).i64(*offset)
        }
    };
    key.into_bytes()
}

/// The keys a [`Scan`] selects: one contiguous range, read forwards or backwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ByteRange {
    pub start: Bound<Vec<u8>>,
    pub end: Bound<Vec<u8>>,
    pub backwards: bool,
}

pub(crate) fn range(scan: &Scan) -> ByteRange {
    match scan {
        Scan::Accounts { tenant, ledger, prefix, after } => id_range(
            || KeyBytes::accounts(tenant, ledger),
            prefix.as_ref().map(AccountId::as_str),
            after.as_ref().map(AccountId::as_str),
        ),
        Scan::Documents { tenant, doc_type, prefix, after } => id_range(
            || KeyBytes::documents(tenant, doc_type),
            prefix.as_ref().map(DocKey::as_str),
            after.as_ref().map(DocKey::as_str),
        ),
        Scan::Statement { tenant, ledger, account, asset, before } => {
            let lines = || KeyBytes::postings(tenant, ledger, account, asset);
            let end = match before {
                Some((offset, line)) => Excluded(lines().line(*offset, *line).into_bytes()),
                None => Excluded(lines().prefix_end()),
            };
            ByteRange { start: Included(lines().into_bytes()), end, backwards: true }
        }
        Scan::Timeline { tenant, from_ms, to_ms, after } => {
            let timeline = || KeyBytes::timeline(tenant);
            let from = timeline().i64(*from_ms).into_bytes();
            let start = match after.map(|place| timeline().at(place).into_bytes()) {
                Some(after) if after >= from => Excluded(after),
                _ => Included(from),
            };
            let end = match to_ms {
                Some(to_ms) => Excluded(timeline().i64(*to_ms).into_bytes()),
                None => Excluded(timeline().prefix_end()),
            };
            ByteRange { start, end, backwards: false }
        }
        Scan::Partition { tenant, partition, after, upto } => {
            let events = || KeyBytes::partition_events(tenant, *partition);
            ByteRange {
                start: Excluded(events().i64(*after).into_bytes()),
                // Never below the start: an empty range, not an inverted one.
                end: Included(events().i64((*upto).max(*after)).into_bytes()),
                backwards: false,
            }
        }
        Scan::Outcomes { tenant, command_id } => {
            let outcomes = || KeyBytes::outcomes(tenant, command_id);
            ByteRange {
                start: Included(outcomes().into_bytes()),
                end: Excluded(outcomes().prefix_end()),
                backwards: false,
            }
        }
        Scan::Stream { tenant, stream, after } => {
            let events = || KeyBytes::stream_events(tenant, stream);
            ByteRange {
                start: Excluded(events().stream_version(*after).into_bytes()),
                end: Excluded(events().prefix_end()),
                backwards: false,
            }
        }
    }
}

/// Ids under `within` that start with `prefix`, after `after`.
fn id_range(within: impl Fn() -> KeyBytes, prefix: Option<&str>, after: Option<&str>) -> ByteRange {
    let prefixed = || within().id_prefix(prefix.unwrap_or(""));
    let from = prefixed().into_bytes();
    let start = match after.map(|after| within().id(after).into_bytes()) {
        Some(after) if after >= from => Excluded(after),
        _ => Included(from),
    };
    ByteRange { start, end: Excluded(prefixed().prefix_end()), backwards: false }
}

/// The row key of `bytes` (written by [`encode`]).
pub(crate) fn decode(bytes: &[u8]) -> Result<RowKey, StoreError> {
    let mut r = Reader { bytes, at: 0 };
    let key = match r.u8()? {
        tag::ACCOUNT => RowKey::Account { tenant: r.id()?, ledger: r.id()?, account: r.id()? },
        tag::TRANSACTION => RowKey::Transaction { tenant: r.id()?, ledger: r.id()?, tx_id: r.id()? },
        tag::DOCUMENT => RowKey::Document { tenant: r.id()?, doc_type: r.id()?, key: r.id()? },
        tag::OUTCOME => RowKey::Outcome { tenant: r.id()?, command_id: r.id()?, stream: r.stream()? },
        tag::POSTING => RowKey::Posting {
            tenant: r.id()?,
            ledger: r.id()?,
            account: r.id()?,
            asset: r.asset()?,
            offset: r.i64()?,
            line: u32::from_be_bytes(r.array()?),
        },
        tag::EVENT => RowKey::Event {
            tenant: r.id()?,
            stream: r.stream()?,
            stream_version: u64::from_be_bytes(r.array()?),
        },
        tag::EVENT_AT => {
            RowKey::EventAt { tenant: r.id()?, time_ms: r.i64()?, partition: r.i32()?, offset: r.i64()? }
        }
        tag::EVENT_BY_OFFSET => {
            RowKey::EventByOffset { tenant: r.id()?, partition: r.i32()?, offset: r.i64()? }
        }
        other => return Err(corrupt(format!("unknown row key tag {other}"))),
    };
    match r.at == bytes.len() {
        true => Ok(key),
        false => Err(corrupt(format!("{} bytes after the row key", bytes.len() - r.at))),
    }
}

fn corrupt(what: String) -> StoreError {
    StoreError::Corrupt(what)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], StoreError> {
        let taken =
            self.bytes.get(self.at..self.at + n).ok_or_else(|| corrupt("row key too short".into()))?;
        self.at += n;
        Ok(taken)
    }

    fn u8(&mut self) -> Result<u8, StoreError> {
        Ok(self.take(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], StoreError> {
        Ok(self.take(N)?.try_into().expect("took N bytes"))
    }

    fn i64(&mut self) -> Result<i64, StoreError> {
        Ok((u64::from_be_bytes(self.array()?) ^ (1 << 63)) as i64)
    }

    fn i32(&mut self) -> Result<i32, StoreError> {
        Ok((u32::from_be_bytes(self.array()?) ^ (1 << 31)) as i32)
    }

    fn text(&mut self) -> Result<&str, StoreError> {
        let rest = &self.bytes[self.at..];
        let end = rest.iter().position(|b| *b == 0).ok_or_else(|| corrupt("unterminated id".into()))?;
        let text = std::str::from_utf8(&rest[..end]).map_err(|e| corrupt(e.to_string()))?;
        self.at += end + 1;
        Ok(text)
    }

    /// Any identifier type (they all parse from a string).
    fn id<T: TryFrom<String, Error: std::fmt::Display>>(&mut self) -> Result<T, StoreError> {
        T::try_from(self.text()?.to_owned()).map_err(|e| corrupt(e.to_string()))
    }

    fn asset(&mut self) -> Result<Asset, StoreError> {
        let code = self.text()?.to_owned();
        Asset::new(&code, self.u8()?).map_err(|e| corrupt(e.to_string()))
    }

    fn stream(&mut self) -> Result<StreamId, StoreError> {
        match self.u8()? {
            tag::STREAM_LEDGER => Ok(StreamId::Ledger(self.id()?)),
            tag::STREAM_DOCUMENT => Ok(StreamId::Document(self.id::<DocType>()?, self.id::<DocKey>()?)),
            other => Err(corrupt(format!("unknown stream tag {other}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Short ids from a tiny alphabet, so that keys share prefixes and collide often.
    fn id<T: TryFrom<String, Error: std::fmt::Debug> + std::fmt::Debug>() -> impl Strategy<Value = T> {
        "[ab.]{1,3}".prop_map(|s| T::try_from(s).unwrap())
    }

    fn asset() -> impl Strategy<Value = Asset> {
        ("[AB]{1,2}", 0u8..3).prop_map(|(code, scale)| Asset::new(&code, scale).unwrap())
    }

    fn stream() -> impl Strategy<Value = StreamId> {
        prop_oneof![id().prop_map(StreamId::Ledger), (id(), id()).prop_map(|(t, k)| StreamId::Document(t, k))]
    }

    fn row_key() -> impl Strategy<Value = RowKey> {
        let offset = || prop_oneof![Just(i64::MIN), -2i64..3, Just(i64::MAX)];
        prop_oneof![
            (id(), id(), id()).prop_map(|(tenant, ledger, account)| RowKey::Account {
                tenant,
                ledger,
                account
            }),
            (id(), id(), id()).prop_map(|(tenant, ledger, tx_id)| RowKey::Transaction {
                tenant,
                ledger,
                tx_id
            }),
            (id(), id(), id()).prop_map(|(tenant, doc_type, key)| RowKey::Document { tenant, doc_type, key }),
            (id(), id(), stream()).prop_map(|(tenant, command_id, stream)| RowKey::Outcome {
                tenant,
                command_id,
                stream
            }),
            (id(), id(), id(), asset(), offset(), 0u32..300).prop_map(
                |(tenant, ledger, account, asset, offset, line)| RowKey::Posting {
                    tenant,
                    ledger,
                    account,
                    asset,
                    offset,
                    line
                }
            ),
            (id(), stream(), 0u64..300).prop_map(|(tenant, stream, stream_version)| RowKey::Event {
                tenant,
                stream,
                stream_version
            }),
            (id(), offset(), prop_oneof![Just(i32::MIN), -2i32..3, Just(i32::MAX)], offset()).prop_map(
                |(tenant, time_ms, partition, offset)| RowKey::EventAt { tenant, time_ms, partition, offset }
            ),
            (id(), prop_oneof![Just(i32::MIN), -2i32..3, Just(i32::MAX)], offset())
                .prop_map(|(tenant, partition, offset)| RowKey::EventByOffset { tenant, partition, offset }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        /// The bytes sort exactly like the keys, and decode back to them.
        #[test]
        fn bytes_sort_like_keys_and_decode_back(a in row_key(), b in row_key()) {
            let (ea, eb) = (encode(&a), encode(&b));
            prop_assert_eq!(ea.cmp(&eb), a.cmp(&b), "{:?} {:?}", a, b);
            prop_assert_eq!(decode(&ea).unwrap(), a);
        }

        /// An account id prefix selects exactly the ledger's accounts whose id starts with it.
        #[test]
        fn an_id_prefix_range_holds_exactly_the_ids_that_start_with_it(key in row_key(), prefix in "[ab.]{0,2}") {
            if let RowKey::Account { tenant, ledger, account } = &key {
                let start = KeyBytes::accounts(tenant, ledger).id_prefix(&prefix).into_bytes();
                let end = KeyBytes::accounts(tenant, ledger).id_prefix(&prefix).prefix_end();
                let bytes = encode(&key);
                let inside = start <= bytes && bytes < end;
                prop_assert_eq!(inside, account.as_str().starts_with(&prefix));
            }
        }
    }

    #[test]
    fn a_prefix_end_is_above_every_key_with_that_prefix_even_when_integers_follow() {
        let (tenant, ledger) = (TenantId::parse("t").unwrap(), LedgerId::parse("l").unwrap());
        let (account, asset) = (AccountId::parse("a").unwrap(), Asset::new("USD", 2).unwrap());
        let prefix = || KeyBytes::postings(&tenant, &ledger, &account, &asset);
        let last = prefix().line(i64::MAX, u32::MAX).into_bytes();
        assert!(prefix().into_bytes() < last && last < prefix().prefix_end());
    }

    #[test]
    fn damaged_keys_are_errors_not_panics() {
        let key = RowKey::Outcome {
            tenant: TenantId::parse("t").unwrap(),
            command_id: CommandId::parse("c").unwrap(),
            stream: StreamId::Ledger(LedgerId::parse("l").unwrap()),
        };
        let bytes = encode(&key);
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "{cut}");
        }
        assert!(decode(&[bytes.as_slice(), &[7]].concat()).is_err());
        assert!(decode(&[99]).is_err());
    }
}

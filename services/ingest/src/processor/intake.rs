//! What a record on the `commands` topic must be before the core sees it. Records that fail
//! here go to the dead-letter topic with the reason in headers; processing continues.

use rdkafka::Message;
use rdkafka::message::{Header, Headers, OwnedHeaders, OwnedMessage};
use tally_auth::producers::{PRODUCER_HEADER, ProducerTenants};
use tally_codec::{Codec, CodecError};
use tally_core::Command;

/// Why a command record was dead-lettered: a stable code (header `tally-dead-letter-reason`)
/// and a human-readable detail (header `tally-dead-letter-detail`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unprocessable {
    pub code: &'static str,
    pub detail: String,
}

impl Unprocessable {
    fn new(code: &'static str, detail: impl Into<String>) -> Self {
        Unprocessable { code, detail: detail.into() }
    }

    /// The text of the dead-letter marker in the log.
    pub fn marker_reason(&self) -> String {
        format!("{}: {}", self.code, self.detail)
    }
}

/// Decodes a command record and checks its key: the key is how the record found its
/// partition, so a key that does not match the body would put the stream's commands in two
/// partitions (two processors, no ordering). With an allow-list of producers, checks that the
/// record's producer may send for the command's tenant.
pub fn classify(
    codec: &Codec,
    record: &OwnedMessage,
    producers: Option<&ProducerTenants>,
) -> Result<Command, Unprocessable> {
    let payload = record.payload().filter(|p| !p.is_empty());
    let payload = payload.ok_or_else(|| Unprocessable::new("EMPTY", "the record has no value"))?;
    let command = codec.decode_command(payload).map_err(|e| {
        let code = match &e {
            CodecError::UnknownFingerprint { .. } | CodecError::UnknownSchemaId(..) => "UNKNOWN_SCHEMA",
            CodecError::TooLarge(_) => "TOO_LARGE",
            CodecError::Invalid { field: "tenant", .. } => "MISSING_TENANT",
            _ => "UNDECODABLE",
        };
        Unprocessable::new(code, e.to_string())
    })?;
    let expected = command.kafka_key();
    match record.key() {
        None => {
            Err(Unprocessable::new("KEY_MISSING", format!("the record has no key; expected {expected:?}")))
        }
        Some(key) if key == expected.as_bytes() => match producers {
            Some(producers) => producers
                .check(producer(record), &command.tenant)
                .map(|()| command)
                .map_err(|refused| Unprocessable::new(refused.code, refused.detail)),
            None => Ok(command),
        },
        Some(key) => Err(Unprocessable::new(
            "KEY_MISMATCH",
            format!(
                "key {:?} does not match the command's stream; expected {expected:?}",
                String::from_utf8_lossy(key)
            ),
        )),
    }
}

/// The producer a record names in its `tally-producer` header (`None` when absent or not text).
fn producer(record: &OwnedMessage) -> Option<&str> {
    let header = record.headers()?.iter().find(|h| h.key == PRODUCER_HEADER)?;
    std::str::from_utf8(header.value?).ok()
}

/// Header names on dead-letter records (beside the original record's own headers).
pub mod header {
    pub const REASON: &str = "tally-dead-letter-reason";
    pub const DETAIL: &str = "tally-dead-letter-detail";
    pub const SOURCE_TOPIC: &str = "tally-source-topic";
    pub const SOURCE_PARTITION: &str = "tally-source-partition";
    pub const SOURCE_OFFSET: &str = "tally-source-offset";
}

/// The headers of the dead-letter copy of `record`: its own, then where it came from and why.
/// Source topic, partition and offset identify it: after a crash the copy may be written twice,
/// and consumers of the dead-letter topic deduplicate on them.
pub fn dead_letter_headers(record: &OwnedMessage, why: &Unprocessable) -> OwnedHeaders {
    let mut headers = OwnedHeaders::new();
    if let Some(original) = record.headers() {
        for h in original.iter() {
            headers = headers.insert(Header { key: h.key, value: h.value });
        }
    }
    let (partition, offset) = (record.partition().to_string(), record.offset().to_string());
    for (key, value) in [
        (header::REASON, why.code),
        (header::DETAIL, why.detail.as_str()),
        (header::SOURCE_TOPIC, record.topic()),
        (header::SOURCE_PARTITION, partition.as_str()),
        (header::SOURCE_OFFSET, offset.as_str()),
    ] {
        headers = headers.insert(Header { key, value: Some(value) });
    }
    headers
}

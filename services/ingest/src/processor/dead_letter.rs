//! The dead-letter path: why a command record cannot be processed ([`Reason`], a stable code),
//! the headers its copy carries, and sending the copy to the dead-letter topic. The log answers
//! the record with a `DeadLettered` marker ([`Unprocessable::marker_reason`]); processing goes on.

use tally_auth::producers::Refusal;
use tally_kafka::{Headers, KafkaError, Outgoing, Producer, Record};

/// Why a command record was dead-lettered; its code is the `tally-dead-letter-reason` header
/// and the `reason` label of `tally_dead_letters_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The record has no value.
    Empty,
    /// Its schema (fingerprint or Confluent id) is not one Tally knows, nor (with a schema
    /// registry) one the registry has.
    UnknownSchema,
    /// Its Confluent schema id names a schema commands cannot be read with: not Avro, or not
    /// resolvable to Tally's command schema.
    SchemaUnreadable,
    /// Larger than a command may be (`tally_codec::RECORD_LEN_MAX`).
    TooLarge,
    /// The command names no tenant.
    MissingTenant,
    /// The value does not decode as a command.
    Undecodable,
    /// The record has no key (the key places a stream's commands in one partition).
    KeyMissing,
    /// The key is not the command's `tenant/stream`.
    KeyMismatch,
    /// With a producer allow-list: the producer is unnamed or not on the list.
    ProducerUnknown,
    /// With a producer allow-list: the producer may not send for the command's tenant.
    TenantNotAllowed,
}

impl Reason {
    /// The stable code.
    pub fn code(self) -> &'static str {
        match self {
            Reason::Empty => "EMPTY",
            Reason::UnknownSchema => "UNKNOWN_SCHEMA",
            Reason::SchemaUnreadable => "SCHEMA_UNREADABLE",
            Reason::TooLarge => "TOO_LARGE",
            Reason::MissingTenant => "MISSING_TENANT",
            Reason::Undecodable => "UNDECODABLE",
            Reason::KeyMissing => "KEY_MISSING",
            Reason::KeyMismatch => "KEY_MISMATCH",
            Reason::ProducerUnknown => "PRODUCER_UNKNOWN",
            Reason::TenantNotAllowed => "TENANT_NOT_ALLOWED",
        }
    }
}

impl From<Refusal> for Reason {
    fn from(refusal: Refusal) -> Reason {
        match refusal {
            Refusal::ProducerUnknown => Reason::ProducerUnknown,
            Refusal::TenantNotAllowed => Reason::TenantNotAllowed,
        }
    }
}

/// Longest detail kept, in bytes: the detail is in a header of the dead-letter copy and in the
/// marker on `events`, which is kept forever, so a decoder's message about a huge input must not
/// make a small record cost kilobytes there.
pub const DETAIL_LEN_MAX: usize = 1024;

/// Why a record was dead-lettered: the reason and what was wrong, for people (the
/// `tally-dead-letter-detail` header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unprocessable {
    pub reason: Reason,
    pub detail: String,
}

impl Unprocessable {
    /// `detail` is cut to [`DETAIL_LEN_MAX`] bytes (at a character boundary, ending in `...`).
    pub fn new(reason: Reason, detail: impl Into<String>) -> Self {
        let mut detail = detail.into();
        if detail.len() > DETAIL_LEN_MAX {
            let cut = (0..=DETAIL_LEN_MAX - 3).rev().find(|i| detail.is_char_boundary(*i)).unwrap_or(0);
            detail.truncate(cut);
            detail.push_str("...");
        }
        Unprocessable { reason, detail }
    }

    /// The text of the dead-letter marker in the log: `CODE: detail`.
    pub fn marker_reason(&self) -> String {
        format!("{}: {}", self.reason.code(), self.detail)
    }
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
pub fn headers(record: &Record, why: &Unprocessable) -> Headers {
    record
        .headers
        .clone()
        .with(header::REASON, why.reason.code())
        .with(header::DETAIL, &why.detail)
        .with(header::SOURCE_TOPIC, &record.topic)
        .with(header::SOURCE_PARTITION, record.partition.to_string())
        .with(header::SOURCE_OFFSET, record.offset.to_string())
}

/// Copies `record` (key and value as they were) to `topic`, reason in headers; returns once the
/// broker has it.
pub async fn send(
    producer: &Producer,
    topic: &str,
    record: &Record,
    why: &Unprocessable,
) -> Result<(), KafkaError> {
    let headers = headers(record, why);
    let mut out = Outgoing::to(topic, &record.payload).headers(&headers);
    if let Some(key) = &record.key {
        out = out.key(key);
    }
    producer.send(out, None).await.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_details_are_cut_at_a_character_boundary() {
        for text in ["a".repeat(5000), "é".repeat(3000), "x".repeat(DETAIL_LEN_MAX), String::new()] {
            let why = Unprocessable::new(Reason::Undecodable, text.clone());
            assert!(why.detail.len() <= DETAIL_LEN_MAX, "{}", why.detail.len());
            if text.len() <= DETAIL_LEN_MAX {
                assert_eq!(why.detail, text);
            } else {
                assert!(why.detail.ends_with("...") && text.starts_with(why.detail.trim_end_matches("...")));
            }
        }
    }
}

//! What a record on the `commands` topic must be before the core sees it. Records that fail
//! here go to the dead-letter topic ([`super::dead_letter`]); processing continues.

use super::dead_letter::{Reason, Unprocessable};
use super::schemas::BatchSchemas;
use tally_auth::producers::{PRODUCER_HEADER, ProducerTenants};
use tally_codec::{Codec, CodecError};
use tally_core::Command;
use tally_kafka::Record;

/// Decodes a command record and checks its key: the key is how the record found its
/// partition, so a key that does not match the body would put the stream's commands in two
/// partitions (two processors, no ordering). With an allow-list of producers, checks that the
/// record's producer (its `tally-producer` header) may send for the command's tenant.
/// Confluent-framed records decode with the writers of `schemas`, or are refused for the reason
/// it gives.
pub(super) fn classify(
    codec: &Codec,
    record: &Record,
    producers: Option<&ProducerTenants>,
    schemas: &BatchSchemas,
) -> Result<Command, Unprocessable> {
    if record.payload.is_empty() {
        return Err(Unprocessable::new(Reason::Empty, "the record has no value"));
    }
    let command = codec.decode_command_with(&record.payload, &schemas.writers).map_err(|e| {
        if let CodecError::UnknownSchemaId(id, _) = &e
            && let Some(why) = schemas.refused.get(id)
        {
            return why.clone();
        }
        let reason = match &e {
            CodecError::UnknownFingerprint { .. } | CodecError::UnknownSchemaId(..) => Reason::UnknownSchema,
            CodecError::TooLarge(_) => Reason::TooLarge,
            CodecError::Invalid { field: "tenant", .. } => Reason::MissingTenant,
            _ => Reason::Undecodable,
        };
        Unprocessable::new(reason, e.to_string())
    })?;
    let expected = command.kafka_key();
    match record.key.as_deref() {
        None => Err(Unprocessable::new(
            Reason::KeyMissing,
            format!("the record has no key; expected {expected:?}"),
        )),
        Some(key) if key == expected.as_bytes() => match producers {
            Some(producers) => producers
                .check(record.headers.text(PRODUCER_HEADER), &command.tenant)
                .map(|()| command)
                .map_err(|refused| Unprocessable::new(refused.refusal.into(), refused.detail)),
            None => Ok(command),
        },
        Some(_) => Err(Unprocessable::new(
            Reason::KeyMismatch,
            format!(
                "key {:?} does not match the command's stream; expected {expected:?}",
                record.key_text().unwrap_or_default()
            ),
        )),
    }
}

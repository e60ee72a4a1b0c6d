//! # tally-codec
//!
//! Tally's commands and events on the wire: Avro, with the schemas in `schemas/avro/` embedded
//! in the binary.
//!
//! - Encoding is always Avro single-object encoding: `C3 01`, the 8-byte CRC-64-AVRO fingerprint
//!   of the writer schema (little-endian), then the datum.
//! - Decoding also accepts the Confluent framing (`00`, a 4-byte big-endian schema id, the datum)
//!   for producers that use a schema registry, with the writer schemas of the ids given to
//!   [`Codec::decode_command_with`] ([`Codec::confluent_writer`] checks each; the processor
//!   fetches them from the registry with `tally-registry`).
//! - Data written with any committed version of a schema (`schemas/avro/history/`) is resolved
//!   to the current one.
//!
//! Decoding untrusted bytes never panics: every failure is a [`CodecError`].

mod framing;
mod readable;
mod schemas;
mod values;
mod wire;

pub use framing::{
    CONFLUENT_MAGIC, Framing, SINGLE_OBJECT_MAGIC, as_confluent, confluent_header, confluent_schema_id,
};
pub use readable::WRITER_DEPTH_MAX;
pub use schemas::{Kind, SchemaVersion, canonical_form, crc64_avro, fingerprint, history, source};
pub use wire::{Codec, ConfluentWriter, ConfluentWriters};

/// Largest record accepted for decoding.
pub const RECORD_LEN_MAX: usize = 1024 * 1024;
/// Largest allocation the Avro decoder may make for one value (strings, arrays, maps).
pub const ALLOCATION_MAX: usize = 4 * 1024 * 1024;

/// Why bytes could not be decoded into a command or event (or a value not encoded).
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// Zero bytes.
    #[error("record is empty")]
    Empty,
    /// Longer (the byte count given) than [`RECORD_LEN_MAX`] (1 MiB); not read at all.
    #[error("record is {0} bytes; the limit is {RECORD_LEN_MAX}")]
    TooLarge(usize),
    /// The first byte (given) starts neither single-object encoding (`C3 01`) nor the Confluent
    /// wire format (`00`).
    #[error("unknown framing: first byte {0:#04x} is neither single-object (C3 01) nor Confluent (00)")]
    UnknownFraming(u8),
    /// The bytes end inside the part named: the `fingerprint`, the `schema id` or the `datum`.
    #[error("record is truncated: {0}")]
    Truncated(&'static str),
    /// Single-object framing with a fingerprint of no embedded schema version of `kind` (for the
    /// events topic, `kind` is `event`, though claims and markers are looked up too).
    #[error("no known {kind} schema has fingerprint {fingerprint:016x}")]
    UnknownFingerprint { kind: Kind, fingerprint: u64 },
    /// Confluent framing with a schema id not among those given for this kind of record
    /// ([`Codec::decode_command_with`]).
    #[error("Confluent schema id {0} is not known for {1} records")]
    UnknownSchemaId(u32, Kind),
    /// The datum does not decode with its writer schema, or has bytes left after it; the
    /// message says which.
    #[error("Avro data does not match the schema: {0}")]
    Avro(String),
    /// A writer schema (from a registry) that records cannot be read with: it does not parse,
    /// or breaks Tally's rule for writer schemas (`readable.rs`); the message says where and why.
    #[error("{0}")]
    UnreadableSchema(String),
    /// The datum decodes but a field breaks Tally's rules (an id, asset, amount or branch that is
    /// not allowed); `field` names it.
    #[error("field {field}: {why}")]
    Invalid { field: &'static str, why: String },
}

impl From<apache_avro::Error> for CodecError {
    fn from(e: apache_avro::Error) -> Self {
        CodecError::Avro(e.to_string())
    }
}

//! The embedded schemas: the current version of each, and every committed earlier version.

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::writer::datum::GenericDatumWriter;
use std::fmt;

/// Which record family a schema describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Commands, on the commands topic.
    Command,
    /// Events, on the events topic.
    Event,
    /// Ownership claims, on the events topic beside the events.
    Claim,
    /// Markers answering a command record that went to the dead-letter topic (events topic).
    DeadLettered,
}

impl Kind {
    /// Every kind, in this order.
    pub const ALL: [Kind; 4] = [Kind::Command, Kind::Event, Kind::Claim, Kind::DeadLettered];
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Command => "command",
            Kind::Event => "event",
            Kind::Claim => "claim",
            Kind::DeadLettered => "dead_lettered",
        })
    }
}

/// One committed version of a schema, as a file name and its JSON text.
#[derive(Debug, Clone, Copy)]
pub struct SchemaVersion {
    /// The file name under `schemas/avro/history/`, `<kind>.vN.avsc`.
    pub file: &'static str,
    /// The schema's JSON text, as committed.
    pub json: &'static str,
}

/// The current schema text (`schemas/avro/<kind>.avsc`).
pub fn source(kind: Kind) -> &'static str {
    match kind {
        Kind::Command => include_str!("../../../schemas/avro/command.avsc"),
        Kind::Event => include_str!("../../../schemas/avro/event.avsc"),
        Kind::Claim => include_str!("../../../schemas/avro/claim.avsc"),
        Kind::DeadLettered => include_str!("../../../schemas/avro/dead_lettered.avsc"),
    }
}

/// Every committed version, oldest first (`schemas/avro/history/<kind>.vN.avsc`). A changed
/// schema gets a new file here; the compatibility test checks that the current schema reads
/// data written with each of them.
pub fn history(kind: Kind) -> &'static [SchemaVersion] {
    macro_rules! v {
        ($file:literal) => {
            SchemaVersion {
                file: $file,
                json: include_str!(concat!("../../../schemas/avro/history/", $file)),
            }
        };
    }
    match kind {
        Kind::Command => &[v!("command.v1.avsc")],
        Kind::Event => &[v!("event.v1.avsc"), v!("event.v2.avsc"), v!("event.v3.avsc")],
        Kind::Claim => &[v!("claim.v1.avsc")],
        Kind::DeadLettered => &[v!("dead_lettered.v1.avsc")],
    }
}

/// The CRC-64-AVRO fingerprint of a schema's Parsing Canonical Form, as the single-object
/// header carries it (little-endian).
pub fn fingerprint(schema: &Schema) -> u64 {
    crc64_avro(canonical_form(schema).as_bytes())
}

/// The Parsing Canonical Form as the Avro specification defines it. apache-avro 0.22 gets the
/// full names, order and whitespace right but keeps attributes of logical types
/// (`{"type":"bytes","precision":39,"scale":0}`) where the specification, Java and fastavro
/// strip them and write the primitive bare (`"bytes"`); its fingerprints would differ from
/// every other producer's. This applies the specification's [STRIP] and [PRIMITIVES] rules to
/// apache-avro's form.
pub fn canonical_form(schema: &Schema) -> String {
    let parsed: serde_json::Value =
        serde_json::from_str(&schema.canonical_form()).expect("apache-avro's canonical form is JSON");
    serde_json::to_string(&strip(parsed)).expect("JSON values serialize")
}

/// The attributes the Parsing Canonical Form keeps.
const PARSING_ATTRIBUTES: [&str; 7] = ["name", "type", "fields", "symbols", "items", "values", "size"];
const PRIMITIVES: [&str; 8] = ["null", "boolean", "int", "long", "float", "double", "bytes", "string"];

fn strip(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Object(m) => {
            let kept: serde_json::Map<String, Value> = m
                .into_iter()
                .filter(|(k, _)| PARSING_ATTRIBUTES.contains(&k.as_str()))
                .map(|(k, v)| (k, strip(v)))
                .collect();
            match kept.get("type") {
                Some(Value::String(t)) if kept.len() == 1 && PRIMITIVES.contains(&t.as_str()) => {
                    Value::String(t.clone())
                }
                _ => Value::Object(kept),
            }
        }
        Value::Array(items) => Value::Array(items.into_iter().map(strip).collect()),
        other => other,
    }
}

/// CRC-64-AVRO (Rabin), as the Avro specification gives it.
pub fn crc64_avro(bytes: &[u8]) -> u64 {
    const EMPTY: u64 = 0xc15d_213a_a4d7_a795;
    static TABLE: std::sync::LazyLock<[u64; 256]> = std::sync::LazyLock::new(|| {
        let mut t = [0u64; 256];
        for (i, slot) in t.iter_mut().enumerate() {
            *slot = (0..8).fold(i as u64, |fp, _| (fp >> 1) ^ (EMPTY & (fp & 1).wrapping_neg()));
        }
        t
    });
    bytes.iter().fold(EMPTY, |fp, b| (fp >> 8) ^ TABLE[((fp ^ u64::from(*b)) & 0xff) as usize])
}

/// One schema a record may have been written with, and the names of its `body` union
/// branches in that schema's order.
pub(crate) struct Writer {
    /// The schema with its datum reader and writer, built once: building them resolves every
    /// name in the schema, which cost more than the decoding itself when done per record.
    datum: Datum,
    pub body_kinds: Vec<String>,
}

/// A datum reader and writer borrow the schema they were built for.
struct Codecs<'s> {
    reader: GenericDatumReader<'s>,
    writer: GenericDatumWriter<'s>,
}

self_cell::self_cell!(
    struct Datum {
        owner: Schema,
        #[covariant]
        dependent: Codecs,
    }
);

impl Writer {
    pub fn new(schema: Schema) -> Result<Self, apache_avro::Error> {
        let body_kinds = union_names(&schema, "body");
        let datum = Datum::try_new(schema, |schema| {
            Ok::<_, apache_avro::Error>(Codecs {
                reader: GenericDatumReader::builder(schema).build()?,
                writer: GenericDatumWriter::builder(schema).build()?,
            })
        })?;
        Ok(Writer { datum, body_kinds })
    }

    pub fn schema(&self) -> &Schema {
        self.datum.borrow_owner()
    }

    pub fn reader(&self) -> &GenericDatumReader<'_> {
        &self.datum.borrow_dependent().reader
    }

    pub fn writer(&self) -> &GenericDatumWriter<'_> {
        &self.datum.borrow_dependent().writer
    }
}

/// The parsed schemas of one kind: the current one and every earlier committed version.
pub(crate) struct Family {
    pub kind: Kind,
    pub current_fingerprint: u64,
    /// (fingerprint, writer) of every known version; the current one first.
    pub writers: Vec<(u64, Writer)>,
}

impl Family {
    pub fn load(kind: Kind) -> Self {
        // The embedded schemas are part of the binary and tested; failing here is a build defect.
        let current = Schema::parse_str(source(kind)).expect("embedded schema parses");
        let current_fingerprint = fingerprint(&current);
        let mut writers =
            vec![(current_fingerprint, Writer::new(current).expect("embedded schema resolves"))];
        for v in history(kind) {
            let s = Schema::parse_str(v.json).expect("embedded history schema parses");
            let fp = fingerprint(&s);
            if !writers.iter().any(|(f, _)| *f == fp) {
                writers.push((fp, Writer::new(s).expect("embedded history schema resolves")));
            }
        }
        Family { kind, current_fingerprint, writers }
    }

    pub fn current(&self) -> &Writer {
        &self.writers[0].1
    }

    pub fn writer(&self, fingerprint: u64) -> Option<&Writer> {
        self.writers.iter().find(|(f, _)| *f == fingerprint).map(|(_, w)| w)
    }

    pub fn body_index(&self, kind: &str) -> u32 {
        let kinds = &self.current().body_kinds;
        let i = kinds.iter().position(|k| k == kind).expect("every body kind is in the schema");
        i as u32
    }
}

/// The record names of a union field of a record schema.
/// (Empty for a schema without that field, like claims and dead-letter markers.)
pub(crate) fn union_names(schema: &Schema, field: &str) -> Vec<String> {
    let Schema::Record(record) = schema else { panic!("top-level schema is a record") };
    let Some(f) = record.fields.iter().find(|f| f.name == field) else { return Vec::new() };
    let Schema::Union(union) = &f.schema else { panic!("{field} is a union") };
    union
        .variants()
        .iter()
        .map(|v| match v {
            Schema::Record(r) => r.name.name().to_owned(),
            other => panic!("{field} branch is not a record: {other:?}"),
        })
        .collect()
}

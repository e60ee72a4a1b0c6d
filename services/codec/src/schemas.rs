//! The embedded schemas: the current version of each, and every committed earlier version.

use apache_avro::Schema;
use apache_avro::rabin::Rabin;
use std::fmt;

/// Which record family a schema describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Command,
    Event,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Command => "command",
            Kind::Event => "event",
        })
    }
}

/// One committed version of a schema, as a file name and its JSON text.
#[derive(Debug, Clone, Copy)]
pub struct SchemaVersion {
    pub file: &'static str,
    pub json: &'static str,
}

/// The current schema text (`schemas/avro/<kind>.avsc`).
pub fn source(kind: Kind) -> &'static str {
    match kind {
        Kind::Command => include_str!("../../../schemas/avro/command.avsc"),
        Kind::Event => include_str!("../../../schemas/avro/event.avsc"),
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
        Kind::Event => &[v!("event.v1.avsc")],
    }
}

/// The CRC-64-AVRO fingerprint of a schema, as the single-object header carries it.
pub fn fingerprint(schema: &Schema) -> u64 {
    let bytes = schema.fingerprint::<Rabin>().bytes;
    u64::from_le_bytes(bytes.try_into().expect("a Rabin fingerprint is 8 bytes"))
}

/// One schema a record may have been written with, and the names of its `body` union
/// branches in that schema's order.
pub(crate) struct Writer {
    pub schema: Schema,
    pub body_kinds: Vec<String>,
}

impl Writer {
    pub fn new(schema: Schema) -> Self {
        let body_kinds = union_names(&schema, "body");
        Writer { schema, body_kinds }
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
        let mut writers = vec![(current_fingerprint, Writer::new(current))];
        for v in history(kind) {
            let s = Schema::parse_str(v.json).expect("embedded history schema parses");
            let fp = fingerprint(&s);
            if !writers.iter().any(|(f, _)| *f == fp) {
                writers.push((fp, Writer::new(s)));
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
pub(crate) fn union_names(schema: &Schema, field: &str) -> Vec<String> {
    let Schema::Record(record) = schema else { panic!("top-level schema is a record") };
    let f = record.fields.iter().find(|f| f.name == field).expect("union field exists");
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

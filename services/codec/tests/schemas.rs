//! The committed schemas: parseable, compatible with every earlier version, in step with the
//! code, and fingerprinted as the Avro specification says.

use apache_avro::Schema;
use apache_avro::schema_compatibility::SchemaCompatibility;
use tally_codec::{Codec, Kind, history, source};
use tally_core::Reason;

/// The current schema must read data written with every committed version (backward
/// transitive), and the newest committed version must be the current schema: changing a schema
/// means adding a history file, which this test then checks.
#[test]
fn current_schemas_read_every_committed_version() {
    for kind in [Kind::Command, Kind::Event] {
        let current = Schema::parse_str(source(kind)).unwrap();
        let versions = history(kind);
        for v in versions {
            let old = Schema::parse_str(v.json).unwrap_or_else(|e| panic!("{}: {e}", v.file));
            SchemaCompatibility::can_read(&old, &current)
                .unwrap_or_else(|e| panic!("current {kind} schema cannot read {}: {e}", v.file));
        }
        let newest = Schema::parse_str(versions.last().unwrap().json).unwrap();
        assert_eq!(
            newest.canonical_form(),
            current.canonical_form(),
            "schemas/avro/{kind}.avsc changed: copy it to schemas/avro/history/{kind}.vN.avsc (the next N) and list it in services/codec/src/schemas.rs"
        );
    }
}

/// A change that drops a field without a default must be caught by the check above.
#[test]
fn an_incompatible_change_is_detected() {
    let old = Schema::parse_str(source(Kind::Event)).unwrap();
    let broken =
        source(Kind::Event).replacen(r#""name": "stream_version""#, r#""name": "stream_version_renamed""#, 1);
    let broken = Schema::parse_str(&broken).unwrap();
    assert!(SchemaCompatibility::can_read(&old, &broken).is_err());
}

#[test]
fn reason_enum_matches_the_code() {
    let symbols: Vec<&str> = Reason::ALL.iter().map(|r| r.code()).collect();
    let json: serde_json::Value = serde_json::from_str(source(Kind::Event)).unwrap();
    let text = json.to_string();
    let start = text.find(r#""name":"Reason""#).expect("Reason enum in event schema");
    let enum_json = &text[start..];
    let symbols_at = enum_json.find(r#""symbols":["#).unwrap() + r#""symbols":["#.len();
    let end = enum_json[symbols_at..].find(']').unwrap();
    let in_schema: Vec<&str> =
        enum_json[symbols_at..symbols_at + end].split(',').map(|s| s.trim_matches('"')).collect();
    assert_eq!(in_schema, symbols, "Reason codes and the Avro enum differ (order matters)");
}

/// CRC-64-AVRO as the specification defines it, written out independently of apache-avro.
fn crc64_avro(bytes: &[u8]) -> u64 {
    const EMPTY: u64 = 0xc15d_213a_a4d7_a795;
    let table: Vec<u64> =
        (0..256u64).map(|i| (0..8).fold(i, |fp, _| (fp >> 1) ^ (EMPTY & (fp & 1).wrapping_neg()))).collect();
    bytes.iter().fold(EMPTY, |fp, b| (fp >> 8) ^ table[((fp ^ *b as u64) & 0xff) as usize])
}

#[test]
fn single_object_header_carries_the_spec_fingerprint_little_endian() {
    let codec = Codec::new();
    for kind in [Kind::Command, Kind::Event] {
        let canonical = Schema::parse_str(source(kind)).unwrap().canonical_form();
        assert_eq!(codec.fingerprint(kind), crc64_avro(canonical.as_bytes()), "{kind}");
    }
    // The specification's example: the fingerprint of "int".
    assert_eq!(crc64_avro(br#""int""#).to_le_bytes(), [0x8f, 0x5c, 0x39, 0x3f, 0x1a, 0xd5, 0x75, 0x72]);
}

//! The committed schemas: parseable, compatible with every earlier version, in step with the
//! code, and fingerprinted as the Avro specification says.

use apache_avro::Schema;
use apache_avro::schema_compatibility::SchemaCompatibility;
use tally_codec::{Codec, Kind, canonical_form, crc64_avro, history, source};
use tally_core::Reason;

/// The current schema must read data written with every committed version (backward
/// transitive), and the newest committed version must be the current schema: changing a schema
/// means adding a history file, which this test then checks.
#[test]
fn current_schemas_read_every_committed_version() {
    for kind in Kind::ALL {
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

#[test]
fn single_object_header_carries_the_spec_fingerprint() {
    let codec = Codec::new();
    for kind in Kind::ALL {
        let schema = Schema::parse_str(source(kind)).unwrap();
        let canonical = canonical_form(&schema);
        // The specification's canonical form writes primitives bare, logical types dropped.
        assert!(
            !canonical.contains(r#"{"type":"long"}"#) && !canonical.contains("logicalType"),
            "{canonical}"
        );
        assert_eq!(codec.fingerprint(kind), crc64_avro(canonical.as_bytes()), "{kind}");
    }
    // The specification's example: the fingerprint of "int", as a single-object header carries it.
    assert_eq!(crc64_avro(br#""int""#).to_le_bytes(), [0x8f, 0x5c, 0x39, 0x3f, 0x1a, 0xd5, 0x75, 0x72]);
    // Without logical types, apache-avro's own Rabin digest agrees.
    let plain =
        Schema::parse_str(r#"{"type":"record","name":"R","fields":[{"name":"a","type":"long"}]}"#).unwrap();
    let rabin = plain.fingerprint::<apache_avro::rabin::Rabin>().bytes;
    assert_eq!(crc64_avro(canonical_form(&plain).as_bytes()).to_le_bytes().to_vec(), rabin);
}

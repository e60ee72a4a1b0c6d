//! Every command and event survives encode -> decode unchanged; hostile bytes are errors.

use proptest::prelude::*;
use std::collections::BTreeSet;
use std::sync::LazyLock;
use tally_codec::{Codec, CodecError, ConfluentWriters, Kind, confluent_header};
use tally_core::log::LogRecord;
use tally_core::testkit::{history, run};
use tally_core::*;

static CODEC: LazyLock<Codec> = LazyLock::new(Codec::new);

/// An event as the processor writes it: with its writer's epoch and its command's offset.
fn logged(event: &Event) -> LogRecord {
    LogRecord::Event { epoch: 3, command_offset: event.stream_version as i64 * 10, event: event.clone() }
}

fn encode(event: &Event) -> Vec<u8> {
    CODEC.encode_log_record(&logged(event))
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig { cases, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(config(2_000))]

    /// Random histories reach every command and event type (the core's coverage test checks
    /// that); each record round-trips exactly.
    #[test]
    fn commands_and_events_round_trip(history in history()) {
        for (command, _) in &history {
            let bytes = CODEC.encode_command(command);
            prop_assert_eq!(&CODEC.decode_command(&bytes).unwrap(), command);
        }
        let (_, events, _) = run(&history, |_, _| {});
        for event in &events {
            let bytes = encode(event);
            prop_assert_eq!(CODEC.decode_log_record(&bytes).unwrap(), logged(event));
        }
    }
}

proptest! {
    #![proptest_config(config(10_000))]

    /// Random bytes, with or without a valid header, are an error and never a panic.
    #[test]
    fn garbage_is_an_error(bytes in proptest::collection::vec(any::<u8>(), 0..256), header in 0u8..3) {
        let mut input = match header {
            0 => Vec::new(),
            1 => tally_codec::SINGLE_OBJECT_MAGIC.iter().copied().chain(CODEC.fingerprint(Kind::Command).to_le_bytes()).collect(),
            _ => tally_codec::SINGLE_OBJECT_MAGIC.iter().copied().chain(CODEC.fingerprint(Kind::Event).to_le_bytes()).collect(),
        };
        input.extend(bytes);
        let _ = CODEC.decode_command(&input);
        let _ = CODEC.decode_log_record(&input);
    }

    /// Flipping any byte of a valid record gives an error or a (different) valid record; never a panic.
    #[test]
    fn corrupted_records_never_panic(history in history(), at in any::<prop::sample::Index>(), xor in 1u8..=255) {
        let (_, events, _) = run(&history, |_, _| {});
        for event in events.iter().take(8) {
            let mut bytes = encode(event);
            let i = at.index(bytes.len());
            bytes[i] ^= xor;
            let _ = CODEC.decode_log_record(&bytes);
        }
    }
}

fn sample_events() -> Vec<Event> {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    while seen.len() < 14 {
        let h = proptest::strategy::ValueTree::current(
            &proptest::strategy::Strategy::new_tree(&history(), &mut runner).unwrap(),
        );
        for e in run(&h, |_, _| {}).1 {
            if seen.insert(e.body.kind()) {
                out.push(e);
            }
        }
    }
    out
}

#[test]
fn truncated_records_are_errors() {
    for event in sample_events() {
        let bytes = encode(&event);
        for len in 0..bytes.len() {
            assert!(
                CODEC.decode_log_record(&bytes[..len]).is_err(),
                "{} truncated to {len} decoded",
                event.body.kind()
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(CODEC.decode_log_record(&longer).is_err(), "trailing byte accepted");
    }
}

#[test]
fn wrong_schema_is_an_error() {
    let event = &sample_events()[0];
    let bytes = encode(event);
    assert!(matches!(
        CODEC.decode_command(&bytes),
        Err(CodecError::UnknownFingerprint { kind: Kind::Command, .. })
    ));
    assert!(matches!(CODEC.decode_log_record(b"\x01garbage"), Err(CodecError::UnknownFraming(0x01))));
    assert!(matches!(CODEC.decode_log_record(b""), Err(CodecError::Empty)));
    assert!(matches!(CODEC.decode_log_record(&[0xC3, 0x01, 1, 2]), Err(CodecError::Truncated(_))));
    assert!(matches!(
        CODEC.decode_log_record(&vec![0u8; tally_codec::RECORD_LEN_MAX + 1]),
        Err(CodecError::TooLarge(_))
    ));
}

#[test]
fn confluent_framing_is_accepted_for_the_ids_given() {
    let event = &sample_events()[0];
    let datum = encode(event)[10..].to_vec();
    let framed: Vec<u8> = confluent_header(42).iter().copied().chain(datum).collect();
    assert!(matches!(CODEC.decode_log_record(&framed), Err(CodecError::UnknownSchemaId(42, Kind::Event))));

    let writer = CODEC.confluent_writer(42, Kind::Event, tally_codec::source(Kind::Event)).unwrap();
    let writers = ConfluentWriters::from([(42, writer)]);
    assert_eq!(CODEC.decode_log_record_with(&framed, &writers).unwrap(), logged(event));
    // An id checked for events is not a command schema.
    assert!(matches!(
        CODEC.decode_command_with(&framed, &writers),
        Err(CodecError::UnknownSchemaId(42, Kind::Command))
    ));
    // Schemas that cannot be read as ours are refused, each with its reason.
    let foreign =
        r#"{"type":"record","name":"Event","namespace":"io.tally","fields":[{"name":"x","type":"int"}]}"#;
    for (json, why) in [
        (foreign, "not readable as the current event schema"),
        ("{not json", "not an Avro schema"),
        (r#""long""#, "not readable"),
    ] {
        let e = CODEC.confluent_writer(7, Kind::Event, json).unwrap_err().to_string();
        assert!(e.contains("schema id 7") && e.contains(why), "{e}");
    }
    // Every committed version of the command schema is a usable writer: producers that
    // registered an older one keep working.
    for version in tally_codec::history(Kind::Command) {
        CODEC.confluent_writer(1, Kind::Command, version.json).unwrap();
    }
}

#[test]
fn amounts_keep_every_i128() {
    for amount in [1, 255, 256, i128::MAX, i128::MIN, -1, 0, 1 << 64, -(1 << 64)] {
        let p = Posting {
            source: AccountId::world(),
            destination: AccountId::parse("a").unwrap(),
            asset: Asset::parse("USD/2").unwrap(),
            amount,
        };
        let command = Command {
            tenant: TenantId::parse("t").unwrap(),
            command_id: CommandId::parse("c").unwrap(),
            actor: Actor::parse("a").unwrap(),
            body: CommandBody::Transact {
                ledger: LedgerId::parse_ledger("main").unwrap(),
                tx_id: TxId::parse("x").unwrap(),
                request: TxRequest::Transfer {
                    postings: vec![p],
                    metadata: Metadata::new(),
                    pending_timeout_ms: Some(5),
                },
            },
        };
        assert_eq!(CODEC.decode_command(&CODEC.encode_command(&command)).unwrap(), command);
    }
}

#[test]
fn claims_and_dead_letter_markers_round_trip_and_are_told_from_events() {
    let records = [
        (LogRecord::Claim { epoch: 42, owner: "ingest-7f3a".into() }, Kind::Claim),
        (
            LogRecord::DeadLettered { epoch: 7, command_offset: 1234, reason: "UNDECODABLE: bad".into() },
            Kind::DeadLettered,
        ),
    ];
    for (record, kind) in records {
        let bytes = CODEC.encode_log_record(&record);
        assert_eq!(CODEC.decode_log_record(&bytes).unwrap(), record);
        assert_eq!(bytes[2..10], CODEC.fingerprint(kind).to_le_bytes());
        assert!(matches!(CODEC.decode_command(&bytes), Err(CodecError::UnknownFingerprint { .. })));
        for len in 0..bytes.len() {
            assert!(CODEC.decode_log_record(&bytes[..len]).is_err());
        }
    }
}

/// Events written with event schema v1 (before `epoch` and `command_offset`) still decode,
/// as unclaimed records (epoch 0, no command offset). The fixture holds one event of every type,
/// encoded by the v1 codec: its JSON form and its bytes.
#[test]
fn events_written_with_schema_v1_still_decode() {
    let fixture = include_str!("fixtures/events.v1.tsv");
    let mut n = 0;
    for line in fixture.lines() {
        let (json, hex) = line.split_once('\t').unwrap();
        let expected: Event = serde_json::from_str(json).unwrap();
        let bytes: Vec<u8> =
            (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
        let decoded =
            CODEC.decode_log_record(&bytes).unwrap_or_else(|e| panic!("{}: {e}", expected.body.kind()));
        assert_eq!(decoded, LogRecord::Event { epoch: 0, command_offset: -1, event: expected });
        n += 1;
    }
    assert_eq!(n, 14, "one fixture per event type");
}

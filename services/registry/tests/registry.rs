//! The client against a real Confluent-compatible registry: the one `TALLY_TEST_SCHEMA_REGISTRY`
//! names (the README's test command starts Apicurio Registry and sets it); without it, each
//! test prints that it skipped. Every test uses subjects of its own.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tally_codec::{Codec, Kind};
use tally_registry::{RegistryConfig, RegistryError, SchemaRegistry, StartError};

fn registry() -> Option<SchemaRegistry> {
    let url = std::env::var("TALLY_TEST_SCHEMA_REGISTRY").ok().filter(|s| !s.is_empty());
    let Some(url) = url else {
        println!("skipped: TALLY_TEST_SCHEMA_REGISTRY is not set (no schema registry to test against)");
        return None;
    };
    Some(SchemaRegistry::new(RegistryConfig::new(url.parse().expect("a URL"))).unwrap())
}

/// Subjects no other test or run has used.
fn fresh(name: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("t{nanos}-{}-{}.{name}-value", std::process::id(), N.fetch_add(1, Ordering::SeqCst))
}

#[tokio::test]
async fn tally_registers_its_schemas_once_and_reads_them_back_by_id() {
    let Some(registry) = registry() else { return };
    let codec = Codec::new();
    let (commands, events) = (fresh("commands"), fresh("events"));
    let first = registry.register_tally_schemas(&codec, &commands, &events).await.unwrap();
    assert_eq!(
        first.iter().map(|r| (r.subject.as_str(), r.kind)).collect::<Vec<_>>(),
        [(commands.as_str(), Kind::Command), (events.as_str(), Kind::Event)]
    );
    // A restart registers nothing new: the same ids.
    let again = registry.register_tally_schemas(&codec, &commands, &events).await.unwrap();
    assert_eq!(first, again);
    for r in &first {
        let found = registry.schema_by_id(r.id).await.unwrap();
        assert_eq!(found.schema_type, "AVRO");
        let parsed = codec.readable_as_current(r.kind, &found.schema).unwrap();
        assert_eq!(
            tally_codec::fingerprint(&parsed),
            codec.fingerprint(r.kind),
            "the registry keeps the schema"
        );
        let latest = registry.latest(&r.subject).await.unwrap().unwrap();
        assert_eq!(latest.id, r.id);
    }
    assert_eq!(registry.latest(&fresh("never")).await.unwrap(), None);
}

#[tokio::test]
async fn a_subject_holding_a_schema_tally_cannot_read_refuses_the_start() {
    let Some(registry) = registry() else { return };
    let (commands, events) = (fresh("commands"), fresh("events"));
    // Another team registered its own record under the commands topic's subject.
    let foreign = r#"{"type":"record","name":"Order","fields":[{"name":"sku","type":"string"}]}"#;
    registry.register(&commands, foreign).await.unwrap();
    let refused = registry.register_tally_schemas(&Codec::new(), &commands, &events).await.unwrap_err();
    let StartError::Incompatible { subject, why } = &refused else { panic!("{refused}") };
    assert_eq!(subject, &commands);
    assert!(why.contains("not readable as the current command schema"), "{why}");
    assert!(refused.to_string().contains("refuses to start"), "{refused}");
    // Nothing was registered under the events subject after the refusal.
    assert_eq!(registry.latest(&events).await.unwrap(), None);
}

#[tokio::test]
async fn an_id_the_registry_lacks_is_not_found_and_a_dead_registry_is_unavailable() {
    let Some(registry) = registry() else { return };
    let missing = registry.schema_by_id(2_000_000_000).await.unwrap_err();
    assert!(matches!(missing, RegistryError::NotFound { .. }), "{missing}");

    // The same registry under a wrong base path answers 404 without an error code: that is
    // not "no such schema" (records would be dead-lettered for a typo in the URL).
    let mut wrong = registry.url().clone();
    wrong.set_path("/no/such/api");
    let wrong = SchemaRegistry::new(RegistryConfig::new(wrong)).unwrap();
    let e = wrong.schema_by_id(1).await.unwrap_err();
    assert!(matches!(e, RegistryError::Unavailable { .. }), "{e}");

    // A port where nothing listens.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut config = RegistryConfig::new(format!("http://{closed}").parse().unwrap());
    config.timeout = Duration::from_secs(2);
    let e = SchemaRegistry::new(config).unwrap().schema_by_id(1).await.unwrap_err();
    assert!(matches!(e, RegistryError::Unavailable { .. }), "{e}");
    assert!(e.to_string().contains("schema id 1"), "{e}");
}

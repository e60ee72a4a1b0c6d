//! Commands from producers that use a schema registry (the Confluent framing: `00`, the
//! registry's schema id, the datum), against a real Confluent-compatible registry (Apicurio, the
//! one `TALLY_TEST_SCHEMA_REGISTRY` names) and a real outside producer (Python confluent-kafka's
//! AvroSerializer with its SchemaRegistryClient). Without either, each test prints that it
//! skipped. The processor reaches the registry through a proxy the test can cut, to show that
//! an unavailable registry delays records and dead-letters none of them.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command as Process;
use std::sync::Arc;
use std::time::Duration;
use support::*;
use tally_codec::{Codec, Kind, confluent_header};
use tally_core::log::LogRecord;
use tally_core::*;
use tally_ingest::processor::{Processor, SchemaLookup};
use tally_registry::{RegistryConfig, SchemaRegistry, value_subject};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const SETTLE: Duration = Duration::from_secs(90);

fn registry_url() -> Option<String> {
    let url = std::env::var("TALLY_TEST_SCHEMA_REGISTRY").ok().filter(|s| !s.is_empty());
    if url.is_none() {
        println!("skipped: TALLY_TEST_SCHEMA_REGISTRY is not set (no schema registry to test against)");
        return None;
    }
    let python = Process::new("python3")
        .args(["-c", "import fastavro, confluent_kafka.schema_registry.avro"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !python {
        println!("skipped: python3 with confluent-kafka[avro] is not available");
        return None;
    }
    url
}

/// A TCP proxy to the registry that can be cut: cutting it closes the connections it carries
/// (the client's pooled ones too), and while it is cut it accepts and drops each new connection
/// at once (as a registry restarting behind a load balancer would look).
struct Proxy {
    address: std::net::SocketAddr,
    up: tokio::sync::watch::Sender<bool>,
}

impl Proxy {
    async fn to(target: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (up, watching) = tokio::sync::watch::channel(true);
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !*watching.borrow() {
                    continue; // dropped: the connection closes
                }
                let (target, mut cut) = (target.clone(), watching.clone());
                tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(&target).await {
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                            _ = cut.wait_for(|up| !*up) => {}
                        }
                    }
                });
            }
        });
        Proxy { address, up }
    }

    /// The registry's URL through this proxy.
    fn url(&self, registry: &url::Url) -> url::Url {
        let mut url = registry.clone();
        url.set_ip_host(self.address.ip()).unwrap();
        url.set_port(Some(self.address.port())).unwrap();
        url
    }

    fn set_up(&self, up: bool) {
        self.up.send_replace(up);
    }
}

/// The current command schema with one more field (a default given), as a producer's own
/// version of it: another schema id, which the processor must fetch and resolve.
fn variant_schema(field: &str) -> String {
    let mut schema: serde_json::Value = serde_json::from_str(tally_codec::source(Kind::Command)).unwrap();
    let fields = schema["fields"].as_array_mut().unwrap();
    fields.push(serde_json::json!({"name": field, "type": "string", "default": "from another team"}));
    schema.to_string()
}

/// Produces `commands` with the Python producer, serialized with `writer_schema` under
/// `subject`; tells the harness where each landed. Returns the schema ids the records carry.
fn python_produce(
    h: &Harness,
    registry: &str,
    subject: &str,
    writer_schema: &str,
    commands: &[Command],
) -> Vec<u32> {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let writer = write("writer.avsc", writer_schema.as_bytes());
    let current = write("command.avsc", tally_codec::source(Kind::Command).as_bytes());
    let codec = Codec::new();
    let mut manifest = String::new();
    for (i, c) in commands.iter().enumerate() {
        let file = write(&format!("{i}.avro"), &codec.encode_command(c));
        manifest.push_str(&serde_json::json!({"key": c.kafka_key(), "file": file}).to_string());
        manifest.push('\n');
    }
    let manifest = write("manifest.jsonl", manifest.as_bytes());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/registry_producer.py");
    let out = Process::new("python3")
        .arg(script)
        .args([&h.kafka.bootstrap_servers, &h.topics.commands, registry, subject])
        .args([&writer, &current, &manifest])
        .output()
        .unwrap();
    assert!(out.status.success(), "the Python producer failed: {}", String::from_utf8_lossy(&out.stderr));
    let mut ids = Vec::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let d: serde_json::Value = serde_json::from_str(line).unwrap();
        h.record_sent(d["partition"].as_i64().unwrap() as i32, d["offset"].as_i64().unwrap());
        ids.push(d["schema_id"].as_u64().unwrap() as u32);
    }
    assert_eq!(ids.len(), commands.len(), "one delivery per command");
    ids
}

/// Transfers `{tag}-{i}` for `i` in `range` from `world`, added to the model `expected`.
fn pays(range: std::ops::Range<usize>, tag: &str, expected: &mut BTreeMap<String, i128>) -> Vec<Command> {
    let mut out = Vec::new();
    for i in range {
        let (to, amount) = (format!("user-{}", i % 5), (i as i128 % 7) + 1);
        *expected.entry(to.clone()).or_default() += amount;
        out.push(transfer("acme", &format!("{tag}-{i}"), "world", &to, amount));
    }
    out
}

fn waits() -> f64 {
    prometheus::gather()
        .iter()
        .find(|f| f.name() == "tally_schema_registry_waits_total")
        .map_or(0.0, |f| f.get_metric()[0].get_counter().get_value())
}

/// The dead-letter markers of the log, by the command offset they answer: their reason texts.
fn dead_letter_reasons(log: &Log) -> Vec<String> {
    let markers = log.partitions.iter().flat_map(|p| &p.records);
    markers
        .filter_map(|(_, r, _)| match r {
            LogRecord::DeadLettered { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn registry_producers_are_processed_and_a_down_registry_delays_without_dead_letters() {
    let Some(registry_url) = registry_url() else { return };
    let registry_url: url::Url = registry_url.parse().unwrap();
    let h = Harness::start(2).await;
    let target = format!("{}:{}", registry_url.host_str().unwrap(), registry_url.port().unwrap());
    let proxy = Proxy::to(target).await;
    let mut config = RegistryConfig::new(proxy.url(&registry_url));
    config.timeout = Duration::from_secs(2);
    let registry = SchemaRegistry::new(config).unwrap();
    let (commands_subject, events_subject) =
        (value_subject(&h.topics.commands), value_subject(&h.topics.events));
    let registered =
        registry.register_tally_schemas(&Codec::new(), &commands_subject, &events_subject).await.unwrap();
    let mut config = h.processor("p1");
    config.schemas = Some(Arc::new(SchemaLookup::new(registry.clone(), 2)));
    let processor = Processor::build(config).unwrap().run(CancellationToken::new());

    // The model: what each account must hold once every accepted transfer is in.
    let mut expected = BTreeMap::<String, i128>::new();

    // 1. Tally's own schema, as a producer that registers it under the topic's subject: the
    //    registry gives the id Tally registered. Then a producer's own version (a field added):
    //    a new id, fetched by the processor and resolved. Two kept schemas at most: a third id
    //    evicts one, which is fetched again when needed.
    let mut first = vec![define_usd("acme", "def")];
    first.extend(pays(0..40, "own", &mut expected));
    let own = python_produce(
        &h,
        registry_url.as_str(),
        &commands_subject,
        tally_codec::source(Kind::Command),
        &first,
    );
    assert!(own.iter().all(|id| *id == registered[0].id), "{own:?} vs {registered:?}");
    let variant_subject = format!("{}.variant-value", h.topics.commands);
    let variant = python_produce(
        &h,
        registry_url.as_str(),
        &variant_subject,
        &variant_schema("note"),
        &pays(40..80, "variant", &mut expected),
    );
    assert!(variant.iter().all(|id| *id != registered[0].id));
    let other_subject = format!("{}.other-value", h.topics.commands);
    python_produce(
        &h,
        registry_url.as_str(),
        &other_subject,
        &variant_schema("origin"),
        &pays(80..100, "other", &mut expected),
    );
    python_produce(
        &h,
        registry_url.as_str(),
        &commands_subject,
        tally_codec::source(Kind::Command),
        &pays(100..110, "own-again", &mut expected),
    );

    // 2. Records whose ids are the record's fault: an id the registry lacks, a schema that is
    //    not a command's, and a recursive one (Avro resolution would accept it, and a small
    //    datum could then drive the decoder's recursion until the stack overflows).
    let datum = h.codec.encode_command(&transfer("acme", "bad-1", "world", "user-1", 1))[10..].to_vec();
    let unknown: Vec<u8> = confluent_header(2_000_000_000).iter().copied().chain(datum.clone()).collect();
    let key = transfer("acme", "bad-1", "world", "user-1", 1).kafka_key();
    h.send_raw(Some(key.as_bytes()), &unknown, None).await;
    let foreign_id = registry
        .register(
            &format!("{}.foreign-value", h.topics.commands),
            r#"{"type":"record","name":"Order","fields":[{"name":"sku","type":"string"}]}"#,
        )
        .await
        .unwrap();
    let unreadable: Vec<u8> = confluent_header(foreign_id).iter().copied().chain(datum.clone()).collect();
    h.send_raw(Some(key.as_bytes()), &unreadable, None).await;
    let mut recursive: serde_json::Value = serde_json::from_str(&variant_schema("next")).unwrap();
    let fields = recursive["fields"].as_array_mut().unwrap();
    fields.pop();
    fields.push(serde_json::json!({"name": "next", "default": null, "type": ["null",
        {"type": "record", "name": "Node", "fields": [{"name": "n", "type": ["null", "Node"]}]}]}));
    let subject = format!("{}.recursive-value", h.topics.commands);
    let recursive_id = registry.register(&subject, &recursive.to_string()).await.unwrap();
    let deep: Vec<u8> =
        confluent_header(recursive_id).iter().copied().chain(datum).chain([2; 100_000]).collect();
    h.send_raw(Some(key.as_bytes()), &deep, None).await;

    let log = h.settled(SETTLE).await;
    let reasons = dead_letter_reasons(&log);
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("SCHEMA_UNREADABLE") && r.contains("io.tally.Node contains itself")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.starts_with("UNKNOWN_SCHEMA") && r.contains("has no schema id 2000000000")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("SCHEMA_UNREADABLE") && r.contains(&format!("schema id {foreign_id}"))),
        "{reasons:?}"
    );
    let outcomes = log.outcomes();
    assert_eq!(outcomes.len(), 111, "every produced command answered once");
    assert!(
        outcomes
            .values()
            .all(|e| matches!(e.body, EventBody::AssetDefined { .. } | EventBody::TransactionPosted { .. }))
    );
    for (who, amount) in &expected {
        assert_eq!(balance(&log, "acme", who), *amount, "{who}");
    }

    // 3. The registry goes away; a producer with yet another schema version goes on (it reaches
    //    the registry directly). Its records wait: nothing is answered or dead-lettered for
    //    them until the registry is back, and then all of them are answered.
    proxy.set_up(false);
    let waits_before = waits();
    let late_subject = format!("{}.late-value", h.topics.commands);
    python_produce(
        &h,
        registry_url.as_str(),
        &late_subject,
        &variant_schema("late"),
        &pays(200..230, "late", &mut expected),
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    let during = h.log().await;
    assert_eq!(during.outcomes().len(), 111, "nothing is decided while the schema is out of reach");
    assert_eq!(dead_letter_reasons(&during).len(), 3, "and nothing is dead-lettered for it");
    assert!(waits() > waits_before, "the waits are counted");
    proxy.set_up(true);
    let log = h.settled(SETTLE).await;
    assert_eq!(log.outcomes().len(), 141);
    assert_eq!(dead_letter_reasons(&log).len(), 3);
    for (who, amount) in &expected {
        assert_eq!(balance(&log, "acme", who), *amount, "{who}");
    }
    processor.stop().await.unwrap();
}

//! Tally's topics as a broker keeps them: `events` created to keep every record forever (time
//! and size), `commands` and the dead-letter topic with their explicit retention, and an
//! existing `events` topic that would delete or compact records refused by name of the setting.
//! Runs on the real Kafka that `TALLY_TEST_KAFKA` names, else on the in-process broker.

use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::time::{Duration, Instant};
use tally_kafka::config::KafkaOptions;
use tally_kafka::topics::{TopicLayout, TopicSpec, Topics, ensure_topics, partition_count, topic_configs};
use tally_kafka::{BrokerStorage, EmbeddedBroker, KafkaError};

/// The real Kafka of `TALLY_TEST_KAFKA`, or `None`.
fn real_kafka() -> Option<String> {
    std::env::var("TALLY_TEST_KAFKA").ok().filter(|s| !s.is_empty())
}

/// A topic prefix no other run uses.
fn fresh_prefix(name: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{name}-{}-{nanos}.", std::process::id())
}

/// The broker to test on: real Kafka, or a new in-process broker (kept alive by the caller).
async fn broker() -> (KafkaOptions, Option<EmbeddedBroker>) {
    match real_kafka() {
        Some(bootstrap) => (KafkaOptions::new(bootstrap), None),
        None => {
            let broker = EmbeddedBroker::start(BrokerStorage::Memory, 0).await.unwrap();
            (KafkaOptions::new(broker.bootstrap_servers()), Some(broker))
        }
    }
}

/// The specs as Tally gives them to this broker.
fn specs_for(topics: &Topics, layout: &TopicLayout, in_process: bool) -> Vec<TopicSpec> {
    let specs = topics.specs(layout);
    if in_process { specs.into_iter().map(TopicSpec::for_in_process_broker).collect() } else { specs }
}

#[tokio::test]
async fn events_keeps_every_record_and_the_other_topics_have_their_retention() {
    let (kafka, embedded) = broker().await;
    let topics = Topics::with_prefix(&fresh_prefix("layout"));
    let mut layout = TopicLayout::new(2, 1);
    layout.commands_retention_ms = 3_600_000;
    ensure_topics(&kafka, &specs_for(&topics, &layout, embedded.is_some())).await.unwrap();

    let events = topic_configs(&kafka, &topics.events).await.unwrap();
    assert_eq!(events.get("retention.ms").map(String::as_str), Some("-1"), "{events:?}");
    assert_eq!(events.get("retention.bytes").map(String::as_str), Some("-1"), "{events:?}");
    assert_eq!(events.get("min.insync.replicas").map(String::as_str), Some("1"), "{events:?}");
    if embedded.is_none() {
        // Kafka describes every setting; the in-process broker only those set.
        assert_eq!(events.get("cleanup.policy").map(String::as_str), Some("delete"), "{events:?}");
    }
    let commands = topic_configs(&kafka, &topics.commands).await.unwrap();
    assert_eq!(commands.get("retention.ms").map(String::as_str), Some("3600000"), "{commands:?}");
    assert_eq!(commands.get("cleanup.policy").map(String::as_str), Some("delete"), "{commands:?}");
    let dead_letter = topic_configs(&kafka, &topics.dead_letter).await.unwrap();
    assert_eq!(dead_letter.get("retention.ms").map(String::as_str), Some("2592000000"), "{dead_letter:?}");

    // Checked again on every start: an unchanged layout passes.
    ensure_topics(&kafka, &specs_for(&topics, &layout, embedded.is_some())).await.unwrap();
}

#[tokio::test]
async fn an_events_topic_that_would_delete_or_compact_records_is_refused_by_setting() {
    let (kafka, embedded) = broker().await;
    let layout = TopicLayout::new(1, 1);
    let cases = [
        ("retention.ms", "604800000", vec![("cleanup.policy", "delete"), ("retention.ms", "604800000")]),
        ("retention.bytes", "1073741824", vec![("retention.ms", "-1"), ("retention.bytes", "1073741824")]),
        ("cleanup.policy", "compact", vec![("cleanup.policy", "compact"), ("retention.ms", "-1")]),
    ];
    for (setting, value, configs) in cases {
        let topics = Topics::with_prefix(&fresh_prefix("refused"));
        // Someone made `events` by hand, with settings that lose records.
        let mut existing = TopicSpec::plain(&topics.events, 1);
        existing.configs = configs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        ensure_topics(&kafka, &[existing]).await.unwrap();

        let refused = ensure_topics(&kafka, &specs_for(&topics, &layout, embedded.is_some())).await;
        match refused {
            Err(KafkaError::LosesRecords { topic, setting: named, value: found, .. }) => {
                assert_eq!(
                    (topic.as_str(), named.as_str(), found.as_str()),
                    (topics.events.as_str(), setting, value)
                );
            }
            other => panic!("{setting}={value} on events was not refused: {other:?}"),
        }
        // Checked before anything is created: nothing left behind to trip the next start.
        assert_eq!(partition_count(&kafka, &topics.commands).await.unwrap(), None);
    }

    // An input topic may expire records, but compaction would silently drop requests.
    let topics = Topics::with_prefix(&fresh_prefix("compacted"));
    let mut existing = TopicSpec::plain(&topics.commands, 1);
    existing.configs = vec![("cleanup.policy".into(), "compact".into())];
    ensure_topics(&kafka, &[existing]).await.unwrap();
    let refused = ensure_topics(&kafka, &specs_for(&topics, &layout, embedded.is_some())).await;
    assert!(
        matches!(&refused, Err(KafkaError::LosesRecords { setting, .. }) if setting == "cleanup.policy"),
        "{refused:?}"
    );
}

/// Every record of `topic`'s partition 0, read from the start until the broker has no more.
fn read_all(kafka: &KafkaOptions, topic: &str) -> Vec<Vec<u8>> {
    let consumer: BaseConsumer = kafka.reader("topics-test").create().unwrap();
    let mut assignment = rdkafka::TopicPartitionList::new();
    assignment.add_partition_offset(topic, 0, rdkafka::Offset::Beginning).unwrap();
    consumer.assign(&assignment).unwrap();
    let (mut records, mut idle_since) = (Vec::new(), Instant::now());
    while idle_since.elapsed() < Duration::from_secs(2) {
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            records.push(message.unwrap().payload().unwrap_or_default().to_vec());
            idle_since = Instant::now();
        }
    }
    records
}

/// nisshi's retention sweep runs when the broker starts and every ten minutes after. It reads
/// `retention.ms=-1` as "delete every record", so a topic Tally creates to keep everything must
/// not carry a `delete` policy there: this would fail if `for_in_process_broker` stopped
/// leaving it out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_process_broker_keeps_events_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let storage = BrokerStorage::Sqlite(EmbeddedBroker::sqlite_path(dir.path()));
    let topics = Topics::with_prefix("restart.");
    let broker = EmbeddedBroker::start(storage.clone(), 0).await.unwrap();
    let kafka = KafkaOptions::new(broker.bootstrap_servers());
    ensure_topics(&kafka, &specs_for(&topics, &TopicLayout::new(1, 1), true)).await.unwrap();
    let producer: FutureProducer = kafka.producer("topics-test").create().unwrap();
    for i in 0..5 {
        let payload = format!("event-{i}");
        let record = FutureRecord::<(), _>::to(&topics.events).payload(&payload).partition(0);
        producer.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e).unwrap();
    }
    drop(producer);
    let (reader, events) = (kafka.clone(), topics.events.clone());
    assert_eq!(tokio::task::spawn_blocking(move || read_all(&reader, &events)).await.unwrap().len(), 5);
    drop(broker);

    let broker = EmbeddedBroker::start(storage, 0).await.unwrap();
    let kafka = KafkaOptions::new(broker.bootstrap_servers());
    // Give the sweep that runs at start time to finish.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let kept = tokio::task::spawn_blocking(move || read_all(&kafka, &topics.events)).await.unwrap();
    assert_eq!(kept.len(), 5, "the in-process broker deleted events on restart");
}

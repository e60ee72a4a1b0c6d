//! The processor on librdkafka's mock cluster, where faults can be injected: produce errors that
//! are retried, partition leaders that move, a broker that goes down and comes back, and a
//! permanent produce error in the middle of a batch, which makes the log producer fail fatally
//! (the gapless guarantee) so that the partition tasks restart from the log with a new producer.
//! Through all of it: every command answered exactly once, every transfer applied once.

mod support;

use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use std::time::Duration;
use support::*;
use tally_core::log::Verdict;
use tally_ingest::processor::Processor;
use tally_kafka::topics::{TopicLayout, TopicSpec, Topics};
use tokio_util::sync::CancellationToken;

const PARTITIONS: i32 = 2;
const TENANTS: usize = 4;
const SETTLE: Duration = Duration::from_secs(120);

fn tenant(i: usize) -> String {
    format!("tenant{}", i % TENANTS)
}

/// `n` transfers of 1 from `world` to `alice`, ids `<prefix><i>`, spread over the tenants.
fn round(prefix: &str, n: usize) -> Vec<tally_core::Command> {
    (0..n).map(|i| transfer(&tenant(i), &format!("{prefix}{i}"), "world", "alice", 1)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broker_faults_lose_and_double_nothing() {
    init_logs();
    let mock = MockCluster::new(3).expect("mock cluster");
    // The mock cluster has no CreateTopics: the topics exist before the harness looks for them.
    let topics = Topics::with_prefix("faults.");
    for spec in topics.specs(&TopicLayout::new(PARTITIONS, 3)) {
        mock.create_topic(&spec.name, spec.partitions, 3).expect("topic");
    }
    // It has no DescribeConfigs either: its topics are checked for their partition count only.
    let plain: Vec<_> = topics
        .specs(&TopicLayout::new(PARTITIONS, 3))
        .into_iter()
        .map(|s| TopicSpec::plain(s.name, s.partitions))
        .collect();
    let h = Harness::with_topics(mock.bootstrap_servers(), topics.clone(), &plain, PARTITIONS).await;
    let processor = Processor::build(h.processor("p1")).unwrap().run(CancellationToken::new());
    h.send(&(0..TENANTS).map(|t| define_usd(&tenant(t), "usd")).collect::<Vec<_>>()).await;
    h.settled(SETTLE).await;
    let mut sent = 0;

    // Retriable produce errors, for every producer (the commands' and the log's).
    use RDKafkaRespErr::*;
    let retriable = [
        RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
        RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
        RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
        RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND,
    ];
    mock.request_errors(RDKafkaApiKey::Produce, &retriable.repeat(3));
    h.send(&round("retried-", 500)).await;
    sent += 500;

    // Leaders move and a broker goes away while commands keep coming.
    for p in 0..PARTITIONS {
        mock.partition_leader(&topics.events, p, Some(2)).unwrap();
        mock.partition_leader(&topics.commands, p, Some(3)).unwrap();
    }
    h.send(&round("moved-", 500)).await;
    sent += 500;
    mock.broker_down(2).unwrap(); // the events leader: appends wait, nothing is given up
    let down = round("down-", 300);
    let during = h.send(&down);
    let (_, ()) = tokio::join!(during, async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        mock.broker_up(2).unwrap();
    });
    sent += 300;
    h.settled(SETTLE).await;

    // A permanent error in the middle of appending: the events leader goes away, so the
    // processor's appends queue up; the commands keep arriving; then the first appends are
    // refused for good. librdkafka cannot retry them without a gap, so the log producer fails
    // fatally, and each partition starts over from what the log holds.
    // (Not by leaving the partitions leaderless: librdkafka 2.12's mock broker dereferences the
    // missing leader when it answers a Produce with NOT_LEADER_FOR_PARTITION, and crashes.)
    let claims_before = claims(&h.log().await);
    mock.broker_down(2).unwrap();
    h.send(&round("fatal-", 400)).await;
    sent += 400;
    mock.request_errors(RDKafkaApiKey::Produce, &[RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; 2]);
    mock.broker_up(2).unwrap();
    let log = h.settled(SETTLE).await;

    let outcomes = log.outcomes(); // panics on a second answer to any command
    assert_eq!(outcomes.len(), TENANTS + sent, "every command answered once");
    for t in 0..TENANTS {
        // Every round's size is a multiple of TENANTS, so each tenant got a quarter.
        let applied = balance(&log, &tenant(t), "alice");
        assert_eq!(applied, (sent / TENANTS) as i128, "{}: every transfer applied exactly once", tenant(t));
    }
    for p in &log.partitions {
        tally_core::testkit::check_invariants(&p.replica.state).unwrap();
    }
    assert!(
        claims(&log) > claims_before,
        "the fatal produce error restarted partitions (new claims): {} then {}",
        claims_before,
        claims(&log)
    );
    assert!(log.verdicts(Verdict::Apply) > sent);
    processor.stop().await.unwrap();
}

/// Claims that raised an epoch: one per time a partition was taken over.
fn claims(log: &Log) -> usize {
    log.verdicts(Verdict::NewEpoch)
}

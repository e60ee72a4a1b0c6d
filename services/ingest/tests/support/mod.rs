//! A Tally deployment in the test process: the in-process broker (or the real Kafka that
//! `TALLY_TEST_KAFKA` names), topics with a fresh prefix,
//! and a view of the events log as every reader folds it.

#![allow(dead_code, reason = "each test file uses a different part")]

use rdkafka::producer::{FutureProducer, FutureRecord};
use std::time::{Duration, Instant};
use tally_codec::Codec;
use tally_core::log::{LogRecord, Replica, Verdict};
use tally_core::projection;
use tally_core::*;
use tally_ingest::processor::ProcessorConfig;
use tally_kafka::LogTail;
use tally_kafka::config::KafkaOptions;
use tally_kafka::topics::{TopicLayout, TopicSpec, Topics, ensure_topics};
use tally_kafka::{BrokerStorage, EmbeddedBroker};

pub struct Harness {
    pub broker: Option<EmbeddedBroker>,
    pub kafka: KafkaOptions,
    pub topics: Topics,
    pub partitions: i32,
    pub codec: Codec,
    producer: FutureProducer,
    /// The highest offset produced to each commands partition by this harness.
    sent: std::sync::Mutex<std::collections::BTreeMap<i32, i64>>,
}

/// The real Kafka the broker-facing suites run on when `TALLY_TEST_KAFKA` names one
/// (`host:port`; the README's test command sets it for a second run of those suites), else
/// `None`: the in-process broker.
pub fn real_kafka() -> Option<String> {
    std::env::var("TALLY_TEST_KAFKA").ok().filter(|s| !s.is_empty())
}

impl Harness {
    /// Fresh topics of `partitions` partitions on the real Kafka of [`real_kafka`], or on a new
    /// in-process broker.
    pub async fn start(partitions: i32) -> Harness {
        init_logs();
        match real_kafka() {
            Some(bootstrap) => Self::on(bootstrap, false, partitions).await,
            None => {
                let broker = EmbeddedBroker::start(BrokerStorage::Memory, 0).await.expect("broker starts");
                let mut h = Self::on(broker.bootstrap_servers(), true, partitions).await;
                h.broker = Some(broker);
                h
            }
        }
    }

    /// Fresh topics on the broker at `bootstrap` (`in_process`: Tally's in-process broker).
    pub async fn on(bootstrap: String, in_process: bool, partitions: i32) -> Harness {
        let topics = Topics::with_prefix(&format!("t{}.", uuid_like()));
        let mut specs = topics.specs(&TopicLayout::new(partitions, 1));
        if in_process {
            specs = specs.into_iter().map(TopicSpec::for_in_process_broker).collect();
        }
        Self::with_topics(bootstrap, topics, &specs, partitions).await
    }

    /// With topics of these names, created as `specs` say unless they exist.
    pub async fn with_topics(
        bootstrap: String,
        topics: Topics,
        specs: &[TopicSpec],
        partitions: i32,
    ) -> Harness {
        let kafka = KafkaOptions::new(bootstrap);
        ensure_topics(&kafka, specs).await.expect("topics");
        let producer = kafka.producer("test").create().expect("producer");
        Harness {
            broker: None,
            kafka,
            topics,
            partitions,
            codec: Codec::new(),
            producer,
            sent: Default::default(),
        }
    }

    pub fn processor(&self, owner: &str) -> ProcessorConfig {
        let mut config = ProcessorConfig::new(self.kafka.clone(), self.topics.clone());
        config.owner = owner.to_owned();
        config.group_id = format!("{}processor", self.topics.commands);
        config
    }

    /// Produces commands keyed by their stream, as any producer would, pipelined (in order per
    /// partition); returns where each landed.
    pub async fn send(&self, commands: &[Command]) -> Vec<(i32, i64)> {
        let mut deliveries = Vec::with_capacity(commands.len());
        for c in commands {
            let (key, payload) = (c.kafka_key(), self.codec.encode_command(c));
            let record = FutureRecord::to(&self.topics.commands).key(&key).payload(&payload);
            deliveries.push(self.producer.send_result(record).map_err(|(e, _)| e).expect("queued"));
        }
        let mut out = Vec::with_capacity(deliveries.len());
        for d in deliveries {
            let d = d.await.unwrap().map_err(|(e, _)| e).expect("produced");
            out.push(self.record_sent(d.partition, d.offset));
        }
        out
    }

    /// For each `i` in `range` and each tenant, a transfer `pay-{i}` of 3 from `world` to
    /// `user-{i % 7}`: the steady workload of the kill tests.
    pub async fn send_transfers(&self, tenants: &[&str], range: std::ops::Range<usize>) {
        for i in range {
            let batch: Vec<_> = tenants
                .iter()
                .map(|t| transfer(t, &format!("pay-{i}"), "world", &format!("user-{}", i % 7), 3))
                .collect();
            self.send(&batch).await;
        }
    }

    /// Notes a command record produced to `partition` at `offset` by someone else (so that
    /// [`Harness::settled`] waits for its answer too).
    pub fn record_sent(&self, partition: i32, offset: i64) -> (i32, i64) {
        let mut sent = self.sent.lock().unwrap();
        let highest = sent.entry(partition).or_insert(offset);
        *highest = (*highest).max(offset);
        (partition, offset)
    }

    pub async fn send_raw(&self, key: Option<&[u8]>, payload: &[u8], partition: Option<i32>) -> (i32, i64) {
        let mut record = FutureRecord::<[u8], [u8]>::to(&self.topics.commands).payload(payload);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(p) = partition {
            record = record.partition(p);
        }
        let d =
            self.producer.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e).expect("produced");
        self.record_sent(d.partition, d.offset)
    }

    /// Reads the whole log as readers do (everything there is: the embedded broker's high
    /// watermark can be short of the last record).
    pub async fn log(&self) -> Log {
        let (kafka, topic, n) = (self.kafka.clone(), self.topics.events.clone(), self.partitions);
        tokio::task::spawn_blocking(move || {
            let codec = Codec::new();
            let partitions = (0..n)
                .map(|p| {
                    let mut tail = LogTail::open(&kafka, &topic, p).unwrap();
                    let mut part = PartitionLog::default();
                    tail.for_each_available(&codec, Duration::from_millis(300), |offset, record| {
                        let verdict = part.replica.read(offset, &record);
                        part.records.push((offset, record, verdict));
                        verdict
                    })
                    .unwrap();
                    part
                })
                .collect();
            Log { partitions }
        })
        .await
        .unwrap()
    }

    /// Waits until the log answers every command record this harness produced.
    pub async fn settled(&self, timeout: Duration) -> Log {
        let deadline = Instant::now() + timeout;
        loop {
            let ends: Vec<i64> = {
                let sent = self.sent.lock().unwrap();
                (0..self.partitions).map(|p| sent.get(&p).map_or(0, |o| o + 1)).collect()
            };
            let log = self.log().await;
            let answered: Vec<i64> =
                log.partitions.iter().map(|p| p.replica.reader.next_command_offset()).collect();
            if answered.iter().zip(&ends).all(|(a, e)| a >= e) {
                return log;
            }
            if Instant::now() > deadline {
                for (p, part) in log.partitions.iter().enumerate() {
                    for (offset, record, verdict) in &part.records {
                        eprintln!("events {p}@{offset}: {verdict:?} {record:?}");
                    }
                }
                panic!("not settled in {timeout:?}: answered {answered:?} of {ends:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[derive(Default)]
pub struct PartitionLog {
    pub replica: Replica,
    /// Every record with its offset and verdict.
    pub records: Vec<(i64, LogRecord, Verdict)>,
}

pub struct Log {
    pub partitions: Vec<PartitionLog>,
}

impl Log {
    /// The events readers accept, across partitions.
    pub fn events(&self) -> impl Iterator<Item = &Event> {
        self.partitions.iter().flat_map(|p| {
            p.records.iter().filter_map(|(_, r, v)| match (r, v) {
                (LogRecord::Event { event, .. }, Verdict::Apply) => Some(event),
                _ => None,
            })
        })
    }

    /// The first answer to each `tenant/command id` (panics if one has two); repeats and
    /// command id conflicts answer commands that are not the id's first.
    pub fn outcomes(&self) -> std::collections::HashMap<String, Event> {
        let mut out = std::collections::HashMap::new();
        for e in self.events().filter(|e| e.body.answers_first()) {
            let id = format!("{}/{}", e.tenant, e.command_id);
            let previous = out.insert(id.clone(), e.clone());
            assert!(previous.is_none(), "command {id} answered twice");
        }
        out
    }

    pub fn dead_lettered(&self) -> usize {
        self.partitions
            .iter()
            .flat_map(|p| &p.records)
            .filter(|(_, r, v)| matches!((r, v), (LogRecord::DeadLettered { .. }, Verdict::Apply)))
            .count()
    }

    /// The projection rows of a fresh fold of the whole log, every partition from offset 0.
    pub fn projection(&self) -> std::collections::BTreeMap<projection::RowKey, projection::Row> {
        let mut rows = std::collections::BTreeMap::new();
        for (partition, part) in self.partitions.iter().enumerate() {
            let records = part.records.iter().map(|(offset, record, _)| (*offset, record));
            testkit::fold_into(&mut rows, records, partition as i32);
        }
        rows
    }

    /// The last offset of each partition.
    pub fn ends(&self) -> Vec<Option<i64>> {
        self.partitions.iter().map(|p| p.records.last().map(|(offset, _, _)| *offset)).collect()
    }

    pub fn verdicts(&self, wanted: Verdict) -> usize {
        self.partitions.iter().flat_map(|p| &p.records).filter(|(_, _, v)| *v == wanted).count()
    }
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst))
}

pub fn command(tenant: &str, id: &str, body: CommandBody) -> Command {
    Command {
        tenant: TenantId::parse(tenant).unwrap(),
        command_id: CommandId::parse(id).unwrap(),
        actor: Actor::parse("test").unwrap(),
        body,
    }
}

pub fn ledger(s: &str) -> LedgerId {
    LedgerId::parse_ledger(s).unwrap()
}

pub fn define_usd(tenant: &str, id: &str) -> Command {
    command(
        tenant,
        id,
        CommandBody::DefineAsset { ledger: ledger("main"), asset: Asset::parse("USD/2").unwrap() },
    )
}

pub fn transfer(tenant: &str, id: &str, from: &str, to: &str, amount: Amount) -> Command {
    command(
        tenant,
        id,
        CommandBody::Transact {
            ledger: ledger("main"),
            tx_id: TxId::parse(id).unwrap(),
            request: TxRequest::Transfer {
                postings: vec![Posting {
                    source: AccountId::parse(from).unwrap(),
                    destination: AccountId::parse(to).unwrap(),
                    asset: Asset::parse("USD/2").unwrap(),
                    amount,
                }],
                metadata: Default::default(),
                pending_timeout_ms: None,
            },
        },
    )
}

pub fn account(s: &str) -> AccountId {
    AccountId::parse(s).unwrap()
}

pub fn usd() -> Asset {
    Asset::parse("USD/2").unwrap()
}

pub fn posted(state: &State, tenant: &str, who: &str) -> Amount {
    let tenant = TenantId::parse(tenant).unwrap();
    let Some(ledger) = state.ledger(&tenant, &ledger("main")) else { return 0 };
    ledger.accounts.get(&account(who)).and_then(|a| a.balances.get(&usd())).map_or(0, |b| b.posted)
}

/// The state of every partition merged (tests use one tenant per partition key, so no overlap).
pub fn balance(log: &Log, tenant: &str, who: &str) -> Amount {
    log.partitions.iter().map(|p| posted(&p.replica.state, tenant, who)).sum()
}

/// Logs to the test's output (shown for failing tests); `RUST_LOG` filters.
pub fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("warn,tally_ingest=info,tally_projector=info")
    });
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
}

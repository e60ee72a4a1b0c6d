//! Small Kafka tools: produce one command, print a topic.

use anyhow::{Context, bail};
use std::collections::HashMap;
use std::time::Duration;
use tally_codec::Codec;
use tally_core::log::LogRecord;
use tally_core::{Actor, Command, CommandBody, CommandId, TenantId};
use tally_kafka::config::KafkaOptions;
use tally_kafka::{Headers, Outgoing, Producer, Start, TopicReader};

#[derive(clap::Args, Debug)]
pub struct SendOptions {
    /// Kafka bootstrap servers.
    #[arg(long, env = "TALLY_KAFKA")]
    kafka: String,
    #[arg(long, default_value = "tally.commands")]
    topic: String,
    #[arg(long)]
    tenant: String,
    /// Command id (idempotency key); if not given, the body's default id (`tx:<tx_id>` for a
    /// transaction, as over HTTP), else a fresh one.
    #[arg(long)]
    command_id: Option<String>,
    #[arg(long, default_value = "cli")]
    actor: String,
    /// The producer's name, in the `tally-producer` header (what a --producer-allow-list
    /// checks).
    #[arg(long)]
    producer: Option<String>,
    /// The command body as JSON, e.g. {"DefineAsset":{"ledger":"main","asset":"USD/2"}}.
    body: String,
}

/// Largest JSON body accepted on the command line.
const BODY_LEN_MAX: usize = 1024 * 1024;

pub async fn send(opts: SendOptions) -> anyhow::Result<()> {
    if opts.body.len() > BODY_LEN_MAX {
        bail!("the command body is {} bytes; the limit is {BODY_LEN_MAX}", opts.body.len());
    }
    let body: CommandBody =
        serde_json::from_str(&opts.body).context("the command body is not a valid command")?;
    let command_id = match opts.command_id {
        Some(id) => CommandId::parse(id).context("--command-id")?,
        None => CommandId::default_for(&body).unwrap_or_else(|| {
            CommandId::parse(uuid::Uuid::now_v7().to_string()).expect("a uuid is a valid id")
        }),
    };
    let command = Command {
        tenant: TenantId::parse(opts.tenant).context("--tenant")?,
        command_id,
        actor: Actor::parse(opts.actor).context("--actor")?,
        body,
    };
    let producer = Producer::new(&KafkaOptions::new(&opts.kafka), "send")?;
    let key = command.kafka_key();
    let payload = Codec::new().encode_command(&command);
    let headers = match &opts.producer {
        Some(name) => Headers::new().with(tally_auth::producers::PRODUCER_HEADER, name),
        None => Headers::new(),
    };
    let record = Outgoing::to(&opts.topic, &payload).key(key.as_bytes()).headers(&headers);
    let delivery = producer
        .send(record, Some(Duration::from_secs(30)))
        .await
        .with_context(|| format!("producing to {} on {}", opts.topic, opts.kafka))?;
    println!(
        "{{\"command_id\":{:?},\"key\":{key:?},\"partition\":{},\"offset\":{}}}",
        command.command_id.as_str(),
        delivery.partition,
        delivery.offset
    );
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct TailOptions {
    /// Kafka bootstrap servers.
    #[arg(long, env = "TALLY_KAFKA")]
    kafka: String,
    /// A commands or events topic (the record type is told from the schema fingerprint).
    #[arg(long, default_value = "tally.events")]
    topic: String,
    /// Stop after this many records.
    #[arg(long)]
    max: Option<u64>,
    /// Stop at the end of the topic instead of following it: at each partition's high
    /// watermark, then once nothing more arrives for half a second (the in-process broker's
    /// watermark can be short of the last record).
    #[arg(long)]
    to_end: bool,
}

/// With --to-end, how long no record may arrive after the watermarks before the end.
const TO_END_IDLE: Duration = Duration::from_millis(500);

pub async fn tail(opts: TailOptions) -> anyhow::Result<()> {
    // librdkafka's consumer blocks; keep it off the async workers.
    tokio::task::spawn_blocking(move || tail_blocking(opts)).await?
}

fn tail_blocking(opts: TailOptions) -> anyhow::Result<()> {
    let reader = TopicReader::open(&KafkaOptions::new(&opts.kafka), "tail", &opts.topic)?;
    let partitions = reader.partition_count()?;
    if partitions == 0 {
        bail!("topic {} does not exist on {}", opts.topic, opts.kafka);
    }
    // With --to-end: the offset each partition must reach (its high watermark now).
    let mut remaining: HashMap<i32, i64> = HashMap::new();
    for p in 0..partitions {
        let (low, high) = reader.watermarks(p)?;
        if high > low {
            remaining.insert(p, high);
        }
    }
    let starts: Vec<(i32, Start)> = (0..partitions).map(|p| (p, Start::Beginning)).collect();
    reader.assign(&starts)?;
    let codec = Codec::new();
    let (mut printed, mut last_record) = (0u64, std::time::Instant::now());
    while opts.max.is_none_or(|max| printed < max) {
        if opts.to_end && remaining.is_empty() && last_record.elapsed() >= TO_END_IDLE {
            break;
        }
        let Some(record) = reader.poll(Duration::from_millis(100))? else {
            continue;
        };
        last_record = std::time::Instant::now();
        let bytes = &record.payload;
        // A topic holds one family; the command decoder runs only if the record is not a log record.
        let json = match codec.decode_log_record(bytes) {
            Ok(LogRecord::Event { epoch, command_offset, event }) => format!(
                "{{\"epoch\":{epoch},\"command_offset\":{command_offset},\"event\":{}}}",
                serde_json::to_string(&event)?
            ),
            Ok(LogRecord::Claim { epoch, owner }) => {
                format!("{{\"claim\":{{\"epoch\":{epoch},\"owner\":{owner:?}}}}}")
            }
            Ok(LogRecord::DeadLettered { epoch, command_offset, reason }) => format!(
                "{{\"dead_lettered\":{{\"epoch\":{epoch},\"command_offset\":{command_offset},\"reason\":{}}}}}",
                serde_json::to_string(&reason)?
            ),
            Err(log_error) => match codec.decode_command(bytes) {
                Ok(command) => serde_json::to_string(&command)?,
                Err(_) => format!("{{\"undecodable\":{:?}}}", log_error.to_string()),
            },
        };
        let headers: serde_json::Map<String, serde_json::Value> = record
            .headers
            .iter()
            .map(|(name, value)| {
                let text = String::from_utf8_lossy(value.unwrap_or_default()).into_owned();
                (name.to_owned(), serde_json::Value::String(text))
            })
            .collect();
        println!(
            "{{\"partition\":{},\"offset\":{},\"headers\":{},\"record\":{json}}}",
            record.partition,
            record.offset,
            serde_json::Value::Object(headers)
        );
        printed += 1;
        if remaining.get(&record.partition).is_some_and(|high| record.offset + 1 >= *high) {
            remaining.remove(&record.partition);
        }
    }
    Ok(())
}

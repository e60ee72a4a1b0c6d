//! Appending to one topic's partitions of the `events` log: the writing side of [`crate::LogTail`].

use crate::KafkaError;
use crate::producer::Producer;
use crate::record::{Headers, Outgoing};

use std::sync::Arc;
use tally_codec::Codec;
use tally_core::log::LogRecord;

/// Appends log records to the events topic through an idempotent producer, so one partition's
/// appends land in the order given and without gaps, or fail.
#[derive(Clone)]
pub struct LogWriter {
    producer: Producer,
    topic: String,
    codec: Arc<Codec>,
}

impl LogWriter {
    /// A writer to `topic` through `producer` (made with [`Producer::log_writer`]).
    pub fn new(producer: Producer, topic: &str) -> LogWriter {
        LogWriter { producer, topic: topic.to_owned(), codec: Arc::new(Codec::new()) }
    }

    /// The producer underneath, for the writer's other records (dead letters, expiry commands).
    pub fn producer(&self) -> &Producer {
        &self.producer
    }

    /// Appends one record to `partition`; returns its offset once durable.
    pub async fn append(&self, partition: i32, record: &LogRecord) -> Result<i64, KafkaError> {
        Ok(self.append_all(partition, std::slice::from_ref(record), &[None]).await?[0])
    }

    /// Appends records to `partition` in order, pipelined, each with its trace headers (`traces`
    /// is as long as `records`); returns their offsets once all are durable.
    pub async fn append_all(
        &self,
        partition: i32,
        records: &[LogRecord],
        traces: &[Option<Headers>],
    ) -> Result<Vec<i64>, KafkaError> {
        let encoded: Vec<(Option<String>, Vec<u8>)> =
            records.iter().map(|record| (log_key(record), self.codec.encode_log_record(record))).collect();
        let mut outgoing = Vec::with_capacity(encoded.len());
        for ((key, payload), trace) in encoded.iter().zip(traces) {
            outgoing.push(Outgoing {
                topic: &self.topic,
                partition: Some(partition),
                key: key.as_deref().map(str::as_bytes),
                payload,
                headers: trace.as_ref(),
            });
        }
        self.producer.send_all(outgoing).await
    }
}

/// Events are keyed like their commands (`tenant/stream`), so consumers of other teams can
/// partition by stream too. Claims and markers have no key.
fn log_key(record: &LogRecord) -> Option<String> {
    match record {
        LogRecord::Event { event, .. } => Some(event.kafka_key()),
        LogRecord::Claim { .. } | LogRecord::DeadLettered { .. } => None,
    }
}

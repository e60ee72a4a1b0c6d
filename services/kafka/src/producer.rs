//! Sending records: [`Producer`] waits until the broker has each one, and can keep many in
//! flight in order ([`Producer::send_all`]).

use crate::KafkaError;
use crate::config::KafkaOptions;
use crate::record::Outgoing;
use rdkafka::error::KafkaError as RdError;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Where a sent record landed: its partition and offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    pub partition: i32,
    pub offset: i64,
}

/// A producer of one role ("http", "processor", ...). Cheap to clone (one client underneath).
#[derive(Clone)]
pub struct Producer {
    client: Arc<Mutex<FutureProducer>>,
    kafka: KafkaOptions,
    role: &'static str,
    /// The log writer's settings (idempotent, in order) rather than a plain producer's.
    log_writer: bool,
}

impl Producer {
    /// A producer with the settings of [`KafkaOptions::producer`] (acks from all replicas).
    pub fn new(kafka: &KafkaOptions, role: &'static str) -> Result<Producer, KafkaError> {
        Producer::create(kafka, role, false)
    }

    /// A producer with the settings of [`KafkaOptions::log_writer`]: idempotent, one partition's
    /// records land in the order sent and without gaps, or the producer fails.
    pub fn log_writer(kafka: &KafkaOptions, role: &'static str) -> Result<Producer, KafkaError> {
        Producer::create(kafka, role, true)
    }

    fn create(kafka: &KafkaOptions, role: &'static str, log_writer: bool) -> Result<Producer, KafkaError> {
        let client = Producer::client(kafka, role, log_writer)?;
        Ok(Producer { client: Arc::new(Mutex::new(client)), kafka: kafka.clone(), role, log_writer })
    }

    fn client(kafka: &KafkaOptions, role: &str, log_writer: bool) -> Result<FutureProducer, KafkaError> {
        let config = if log_writer { kafka.log_writer(role) } else { kafka.producer(role) };
        Ok(config.create()?)
    }

    fn current(&self) -> FutureProducer {
        self.client.lock().expect("not poisoned").clone()
    }

    /// Sends one record and waits until the broker has it, for at most `timeout` in librdkafka's
    /// queue (`None`: until delivered or failed).
    pub async fn send(
        &self,
        record: Outgoing<'_>,
        timeout: Option<Duration>,
    ) -> Result<Delivered, KafkaError> {
        let timeout = timeout.map_or(Timeout::Never, Timeout::After);
        let owned = record.headers.map(|h| h.to_owned_headers());
        let delivery = self.current().send(future_record(&record, owned), timeout).await;
        delivery.map(|d| Delivered { partition: d.partition, offset: d.offset }).map_err(|(e, _)| e.into())
    }

    /// Sends records in order, many in flight at once; returns their offsets once all are
    /// durable. When librdkafka's local queue is full it waits for the oldest one.
    pub async fn send_all(&self, records: Vec<Outgoing<'_>>) -> Result<Vec<i64>, KafkaError> {
        let producer = self.current();
        let mut offsets = Vec::with_capacity(records.len());
        let mut in_flight = VecDeque::new();
        for record in records {
            let owned = record.headers.map(|h| h.to_owned_headers());
            let mut out = future_record(&record, owned);
            loop {
                match producer.send_result(out) {
                    Ok(delivery) => {
                        in_flight.push_back(delivery);
                        break;
                    }
                    Err((RdError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        out = back;
                        match in_flight.pop_front() {
                            Some(delivery) => offsets.push(settle(delivery.await)?),
                            None => tokio::time::sleep(Duration::from_millis(5)).await,
                        };
                    }
                    Err((e, _)) => return Err(e.into()),
                }
            }
        }
        for delivery in in_flight {
            offsets.push(settle(delivery.await)?);
        }
        Ok(offsets)
    }

    /// An idempotent producer that hit a fatal error (the gapless guarantee tripped, its
    /// producer id was fenced) refuses every later record: this replaces it with a new client (a
    /// new producer id). Returns whether it did.
    pub fn renew_if_failed(&self) -> Result<bool, KafkaError> {
        let mut client = self.client.lock().expect("not poisoned");
        let Some(fatal) = client.client().fatal_error() else { return Ok(false) };
        tracing::error!(role = self.role, "the producer failed fatally ({fatal:?}); replacing it");
        *client = Producer::client(&self.kafka, self.role, self.log_writer)?;
        Ok(true)
    }
}

fn future_record<'a>(
    record: &Outgoing<'a>,
    headers: Option<rdkafka::message::OwnedHeaders>,
) -> FutureRecord<'a, [u8], [u8]> {
    let mut out = FutureRecord::to(record.topic).payload(record.payload);
    if let Some(partition) = record.partition {
        out = out.partition(partition);
    }
    if let Some(key) = record.key {
        out = out.key(key);
    }
    if let Some(headers) = headers {
        out = out.headers(headers);
    }
    out
}

/// The offset of one delivered record (the outer error is the producer's channel closing).
fn settle<Closed>(
    delivery: Result<rdkafka::producer::future_producer::OwnedDeliveryResult, Closed>,
) -> Result<i64, KafkaError> {
    match delivery {
        Ok(Ok(delivery)) => Ok(delivery.offset),
        Ok(Err((e, _))) => Err(e.into()),
        Err(_) => Err(KafkaError::Canceled),
    }
}

//! Sending one event to a destination: a signed webhook POST or a Kafka record. One attempt
//! here; retries, backoff and parking are the runner's.

use crate::destination::{Destination, KafkaFormat, Target, is_private_ip};
use crate::signature;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tally_codec::Codec;
use tally_core::Event;
use tally_core::log::LogRecord;
use tally_kafka::{Headers, Outgoing, Producer};

/// Header of a Kafka destination's records: the event id (`tenant/stream@version`).
pub const EVENT_ID_HEADER: &str = "tally-event-id";
/// Header of a Kafka destination's records: the event kind (`TransactionPosted`, ...).
pub const EVENT_TYPE_HEADER: &str = "tally-event-type";
/// `content-type` header of an Avro destination's records.
pub const AVRO_CONTENT_TYPE: &str = "application/vnd.apache.avro.single-object";
/// `content-type` header of an Avro destination's records in the Confluent framing.
pub const CONFLUENT_CONTENT_TYPE: &str = "application/vnd.confluent.avro";
/// Most bytes of a failing webhook's answer read back, for the error message.
const RESPONSE_EXCERPT_MAX: usize = 200;

/// One event as it goes out, with where it is in the log.
#[derive(Debug, serde::Serialize)]
pub struct Message<'e> {
    /// The event kind (`TransactionPosted`, ...).
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The event id, `tenant/stream@version`: the same on every delivery of this event.
    pub id: String,
    /// When the processor decided it (RFC 3339, UTC, milliseconds).
    pub timestamp: String,
    /// The events partition and offset it was read at.
    pub partition: i32,
    pub offset: i64,
    /// The event, as the events topic and `/v1/events` carry it.
    pub data: &'e Event,
}

impl<'e> Message<'e> {
    pub fn of(event: &'e Event, partition: i32, offset: i64) -> Message<'e> {
        let timestamp = chrono::DateTime::from_timestamp_millis(event.time_ms)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            .unwrap_or_default();
        Message { kind: event.body.kind(), id: event.event_id(), timestamp, partition, offset, data: event }
    }
}

/// Why one attempt failed (every failure is retried until the destination's attempts run out).
#[derive(Debug, thiserror::Error)]
pub enum AttemptError {
    #[error("HTTP {status}: {excerpt}")]
    Status { status: u16, excerpt: String },
    #[error("{0}")]
    Transport(String),
    #[error("kafka: {0}")]
    Kafka(#[from] tally_kafka::KafkaError),
}

/// What the runner sends with: one HTTP client and one Kafka producer for every destination.
#[derive(Clone)]
pub struct Outlets {
    http: reqwest::Client,
    producer: Arc<Producer>,
    codec: Arc<Codec>,
    timeout: Duration,
}

impl Outlets {
    /// `timeout` bounds each attempt. Unless `private_allowed`, webhooks are never sent to a
    /// loopback, private or link-local address, whatever their host name resolves to.
    pub fn new(
        producer: Arc<Producer>,
        codec: Arc<Codec>,
        timeout: Duration,
        private_allowed: bool,
    ) -> Result<Outlets, String> {
        let mut http = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("tally-sink/", env!("CARGO_PKG_VERSION")));
        if !private_allowed {
            http = http.dns_resolver(Arc::new(PublicOnly));
        }
        Ok(Outlets { http: http.build().map_err(|e| e.to_string())?, producer, codec, timeout })
    }

    /// One attempt at sending `message` to `destination`, at `now_ms`. `record` is the log
    /// record the message's event was read from (what an Avro destination gets).
    pub async fn send(
        &self,
        destination: &Destination,
        message: &Message<'_>,
        record: &LogRecord,
        now_ms: i64,
    ) -> Result<(), AttemptError> {
        let json = || serde_json::to_vec(message).expect("an event serialises");
        match &destination.target {
            Target::Webhook { url } => self.post(destination, url, &message.id, &json(), now_ms).await,
            Target::Kafka { topic, format, schema_id } => {
                let (body, content_type) = match (format, schema_id) {
                    (KafkaFormat::Json, _) => (json(), "application/json"),
                    (KafkaFormat::Avro, None) => (self.codec.encode_log_record(record), AVRO_CONTENT_TYPE),
                    (KafkaFormat::Avro, Some(id)) => {
                        let single_object = self.codec.encode_log_record(record);
                        (tally_codec::as_confluent(&single_object, *id), CONFLUENT_CONTENT_TYPE)
                    }
                };
                let headers = Headers::new()
                    .with(EVENT_ID_HEADER, &message.id)
                    .with(EVENT_TYPE_HEADER, message.kind)
                    .with("content-type", content_type);
                let key = message.data.kafka_key();
                let record = Outgoing::to(topic, &body).key(key.as_bytes()).headers(&headers);
                // Bounded like a webhook: librdkafka would otherwise wait out its own message
                // timeout (a missing topic, an unreachable broker). A record still delivered
                // after this is a duplicate with the same id, as after a crash.
                let sent = tokio::time::timeout(self.timeout, self.producer.send(record, Some(self.timeout)));
                match sent.await {
                    Ok(delivered) => delivered.map(|_| ()).map_err(AttemptError::Kafka),
                    Err(_) => {
                        Err(AttemptError::Transport(format!("no acknowledgement within {:?}", self.timeout)))
                    }
                }
            }
        }
    }

    async fn post(
        &self,
        destination: &Destination,
        url: &str,
        id: &str,
        body: &[u8],
        now_ms: i64,
    ) -> Result<(), AttemptError> {
        let timestamp_s = now_ms.div_euclid(1000);
        let keys = destination.signing_keys(now_ms);
        let signature = signature::signature_header(keys.iter().map(Vec::as_slice), id, timestamp_s, body);
        let response = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp_s.to_string())
            .header("webhook-signature", signature)
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| AttemptError::Transport(tally_runtime::error_chain(&e)))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        Err(AttemptError::Status { status: status.as_u16(), excerpt: excerpt(response).await })
    }
}

/// The start of a failing answer's body, for the error message: at most
/// [`RESPONSE_EXCERPT_MAX`] bytes are read, whatever the receiver sends.
async fn excerpt(mut response: reqwest::Response) -> String {
    let mut start = Vec::new();
    while start.len() < RESPONSE_EXCERPT_MAX {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                start.extend_from_slice(&chunk[..chunk.len().min(RESPONSE_EXCERPT_MAX - start.len())])
            }
            _ => break,
        }
    }
    String::from_utf8_lossy(&start).into_owned()
}

/// A resolver that drops loopback, private and link-local addresses, so a webhook host name
/// that resolves to one (or is changed to later) is not reached.
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let public: Vec<SocketAddr> = found.filter(|a| !is_private_ip(a.ip())).collect();
            if public.is_empty() {
                let refused = format!("{host} resolves to no public address (private webhooks are refused)");
                return Err(refused.into());
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

//! The destinations API: `/admin/destinations`, per tenant (the caller's), admin role (the gate
//! asks for it on every `/admin/` route). Errors are problem details (RFC 9457).
//!
//! | method and path | does |
//! |---|---|
//! | `POST /admin/destinations` | creates one (201; a webhook's answer holds its signing secret) |
//! | `GET /admin/destinations` | lists the tenant's, with each lane's position |
//! | `GET /admin/destinations/{id}` | one, with each lane's position and parked event |
//! | `DELETE /admin/destinations/{id}` | deletes one (204); its lanes stop within a refresh |
//! | `POST /admin/destinations/{id}/pause` | stops delivering (nothing is skipped) |
//! | `POST /admin/destinations/{id}/resume` | unpauses, and sends parked events again |
//! | `POST /admin/destinations/{id}/rotate-secret` | a new signing secret; the old ones sign on for `overlap_seconds` |

#![allow(
    clippy::result_large_err,
    reason = "a Problem is the error of a request that is answered right away; its size costs nothing worth boxing"
)]

use crate::destination::{
    ATTEMPTS_DEFAULT, ATTEMPTS_MAX, Destination, Filter, KafkaFormat, PER_TENANT_MAX, Start, Target, new_uid,
};
use crate::lane::{Failing, Lane, Parked};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use tally_codec::{Codec, Kind};
use tally_core::{DestinationId, TenantId};
use tally_http::Problem;
use tally_http::gate::Caller;
use tally_kafka::TopicReader;
use tally_kafka::config::KafkaOptions;
use tally_kafka::topics::Topics;
use tally_registry::{SchemaRegistry, StartError, value_subject};
use tally_runtime::now_ms;
use tally_store::SinkStore;
use tally_store::bridge::blocking;

/// Largest request body of these routes.
const BODY_MAX: usize = 64 * 1024;
/// How long rotated secrets keep signing, unless the request says: 24 hours.
pub const ROTATION_OVERLAP_DEFAULT_S: u64 = 24 * 3600;
/// Longest overlap a rotation may ask for: 30 days.
pub const ROTATION_OVERLAP_MAX_S: u64 = 30 * 24 * 3600;

/// The routes' state: the store, the rule for webhook addresses, and the log (where a new
/// destination with `start: now` starts).
#[derive(Clone)]
pub struct Destinations {
    store: Arc<dyn SinkStore>,
    private_webhooks: bool,
    log: Arc<Log>,
    /// Held while a create counts the tenant's destinations and stores one, so concurrent
    /// creates in this process cannot pass the limit together.
    creating: Arc<tokio::sync::Mutex<()>>,
}

/// The cluster and Tally's own topics on it (which no destination may write), and the schema
/// registry, if one is configured (Avro destination topics then get their subject).
struct Log {
    kafka: KafkaOptions,
    topics: Topics,
    /// The prefix of Tally's topics (`--topic-prefix`); no destination topic may start with it.
    prefix: String,
    registry: Option<SchemaRegistry>,
    codec: Codec,
}

impl Destinations {
    /// Routes over `store` for Tally's `topics` (named with `prefix`) on `kafka`; webhooks to
    /// private addresses are refused unless `private_webhooks` (the runner's
    /// `--sink-allow-private-webhooks`). With a `registry`, an Avro destination's topic gets
    /// Tally's event schema under `<topic>-value` and its records the Confluent framing.
    pub fn new(
        store: Arc<dyn SinkStore>,
        private_webhooks: bool,
        kafka: KafkaOptions,
        topics: Topics,
        prefix: &str,
        registry: Option<SchemaRegistry>,
    ) -> Destinations {
        let log = Log { kafka, topics, prefix: prefix.to_owned(), registry, codec: Codec::new() };
        Destinations { store, private_webhooks, log: Arc::new(log), creating: Arc::default() }
    }

    /// Where each events partition ends now (one past its last record, as the broker says).
    async fn log_ends(&self) -> Result<BTreeMap<i32, i64>, Problem> {
        let log = self.log.clone();
        let ends = blocking(move || {
            let reader = TopicReader::open(&log.kafka, "sink-admin", &log.topics.events)?;
            let partitions = reader.partition_count()?;
            (0..partitions).map(|p| Ok((p, reader.watermarks(p)?.1))).collect::<Result<_, crate::SinkError>>()
        });
        ends.await.map_err(|e| {
            tracing::error!("reading the events partitions' ends: {e}");
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily unavailable",
                "the events log could not be read right now; retry",
            )
        })
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/admin/destinations", post(create).get(list))
            .route("/admin/destinations/{id}", get(show).delete(delete))
            .route("/admin/destinations/{id}/pause", post(pause))
            .route("/admin/destinations/{id}/resume", post(resume))
            .route("/admin/destinations/{id}/rotate-secret", post(rotate_secret))
            .layer(DefaultBodyLimit::max(BODY_MAX))
            .with_state(self.clone())
            .layer(axum::middleware::map_response(tally_http::as_problem))
    }

    /// Runs a store call off the async workers; a failure is logged and answered 503.
    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn SinkStore) -> Result<T, tally_store::StoreError> + Send + 'static,
    ) -> Result<T, Problem> {
        let store = self.store.clone();
        blocking(move || f(store.as_ref()).map_err(crate::SinkError::from)).await.map_err(|e| unavailable(&e))
    }

    /// Refuses a Kafka destination's topic when it is one of Tally's own (or has their prefix),
    /// does not exist, or is another tenant's destination topic.
    async fn check_topic(&self, destination: &Destination, others: &[Destination]) -> Result<(), Problem> {
        let Target::Kafka { topic, .. } = &destination.target else { return Ok(()) };
        let own = [&self.log.topics.commands, &self.log.topics.events, &self.log.topics.dead_letter];
        let prefixed = !self.log.prefix.is_empty() && topic.starts_with(&self.log.prefix);
        if own.contains(&topic) || prefixed {
            let detail =
                format!("{topic:?} is one of Tally's own topics (or has their prefix {:?})", self.log.prefix);
            return Err(Problem::bad_request(detail));
        }
        let taken = others.iter().any(|d| {
            d.tenant != destination.tenant
                && matches!(&d.target, Target::Kafka { topic: t, .. } if t == topic)
        });
        if taken {
            let detail = format!("topic {topic:?} is another tenant's destination");
            return Err(Problem::new(StatusCode::CONFLICT, "topic taken", detail));
        }
        let (log, name) = (self.log.clone(), topic.clone());
        let partitions = blocking(move || {
            Ok::<_, crate::SinkError>(TopicReader::open(&log.kafka, "sink-admin", &name)?.partition_count()?)
        });
        match partitions.await {
            Ok(0) => Err(Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "no such topic",
                format!("topic {topic:?} does not exist on Tally's Kafka cluster; create it first"),
            )),
            Ok(_) => Ok(()),
            Err(e) => Err(unavailable(&e)),
        }
    }

    /// With a schema registry, registers Tally's event schema under an Avro destination
    /// topic's subject and keeps the id it gets (its records are then Confluent-framed).
    async fn register_schema(&self, destination: &mut Destination) -> Result<(), Problem> {
        let Some(registry) = &self.log.registry else { return Ok(()) };
        let Target::Kafka { topic, format: KafkaFormat::Avro, schema_id } = &mut destination.target else {
            return Ok(());
        };
        let subject = value_subject(topic);
        match registry.register_tally_schema(&self.log.codec, &subject, Kind::Event).await {
            Ok(registered) => {
                *schema_id = Some(registered.id);
                Ok(())
            }
            Err(StartError::Incompatible { why, .. }) => Err(Problem::new(
                StatusCode::CONFLICT,
                "schema incompatible",
                format!("subject {subject} of the schema registry: {why}"),
            )),
            Err(StartError::Registry(e)) => Err(unavailable(&e)),
        }
    }

    async fn get(&self, tenant: &TenantId, id: &str) -> Result<Destination, Problem> {
        Ok(self.read(tenant, id).await?.0)
    }

    /// The stored destination and its bytes (what a replace compares with); 404 for an id
    /// that is not the tenant's, or not an id at all (not echoed back: it may be anything).
    async fn read(&self, tenant: &TenantId, id: &str) -> Result<(Destination, Vec<u8>), Problem> {
        let missing = || Problem::not_found("no such destination");
        let id = DestinationId::parse(id).map_err(|_| missing())?;
        let (tenant_text, id_text) = (tenant.to_string(), id.to_string());
        let stored = self.call(move |s| s.destination(&tenant_text, &id_text)).await?;
        let bytes = stored.ok_or_else(missing)?;
        Ok((Destination::decode(&bytes).map_err(|e| corrupt(&e))?, bytes))
    }

    async fn view(&self, destination: Destination) -> Result<View, Problem> {
        let (uid, replay) = (destination.uid.clone(), destination.replay);
        let lanes = self.call(move |s| s.deliveries(&uid)).await?;
        let lanes = lanes
            .into_iter()
            .map(|(partition, bytes)| Lane::decode(&bytes).map(|lane| LaneView::of(partition, lane, replay)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| corrupt(&e))?;
        Ok(View::of(destination, lanes))
    }

    /// Replaces a stored destination after `change`, if nobody changed it since it was read
    /// (else reads it again and applies `change` to that, a few times); 404 if it is gone.
    async fn update(
        &self,
        caller: &Caller,
        id: &str,
        mut change: impl FnMut(&mut Destination) + Send,
    ) -> Result<Destination, Problem> {
        for _ in 0..UPDATE_TRIES {
            let (mut destination, current) = self.read(caller.tenant(), id).await?;
            change(&mut destination);
            let (tenant, id_text, bytes) = (caller.tenant().to_string(), id.to_owned(), destination.encode());
            if self.call(move |s| s.replace_destination(&tenant, &id_text, &current, &bytes)).await? {
                return Ok(destination);
            }
        }
        let detail = "the destination is being changed by others right now; retry";
        Err(Problem::new(StatusCode::CONFLICT, "changed meanwhile", detail))
    }
}

/// Attempts of one change against concurrent ones before it gives up with 409.
const UPDATE_TRIES: usize = 16;

fn unavailable(e: &dyn std::fmt::Display) -> Problem {
    tracing::error!("sink destinations: {e}");
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily unavailable",
        "the destinations could not be read or written right now; retry",
    )
}

fn corrupt(e: &dyn std::fmt::Display) -> Problem {
    tracing::error!("a stored sink destination does not decode: {e}");
    Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error", "the destination could not be read")
}

/// `POST /admin/destinations`: exactly one of `webhook` and `kafka`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    pub id: String,
    pub webhook: Option<WebhookSpec>,
    pub kafka: Option<KafkaSpec>,
    #[serde(default)]
    pub filter: Filter,
    /// `now` (default): events decided from now on; `beginning`: every event in the log.
    pub start: Option<Start>,
    /// Attempts at one event before the lane parks (1 to 100, default 10).
    pub max_attempts: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSpec {
    pub url: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSpec {
    pub topic: String,
    /// `json` (default) or `avro`.
    #[serde(default)]
    pub format: KafkaFormat,
}

impl CreateRequest {
    /// The destination this asks for, of `tenant`, created at `now_ms`; 400 with the reason if
    /// anything is malformed.
    fn destination(
        self,
        tenant: &TenantId,
        private_webhooks: bool,
        now_ms: i64,
    ) -> Result<(Destination, Option<String>), Problem> {
        let bad = |e: String| Problem::bad_request(e);
        let id = DestinationId::parse(self.id).map_err(|e| bad(e.to_string()))?;
        let target = match (self.webhook, self.kafka) {
            (Some(WebhookSpec { url }), None) => Target::Webhook { url },
            (None, Some(KafkaSpec { topic, format })) => Target::Kafka { topic, format, schema_id: None },
            _ => return Err(bad("give exactly one of `webhook` and `kafka`".into())),
        };
        target.check(private_webhooks).map_err(bad)?;
        self.filter.check().map_err(bad)?;
        let max_attempts = self.max_attempts.unwrap_or(ATTEMPTS_DEFAULT);
        if !(1..=ATTEMPTS_MAX).contains(&max_attempts) {
            return Err(bad(format!("max_attempts is 1 to {ATTEMPTS_MAX}")));
        }
        let mut destination = Destination {
            uid: new_uid(tenant, &id, now_ms),
            tenant: tenant.clone(),
            id,
            target,
            filter: self.filter,
            start: self.start.unwrap_or(Start::Now),
            start_offsets: BTreeMap::new(),
            max_attempts,
            paused: false,
            replay: 0,
            created_ms: now_ms,
            secrets: vec![],
        };
        let secret = matches!(destination.target, Target::Webhook { .. })
            .then(|| destination.rotate_secret(now_ms, 0));
        Ok((destination, secret))
    }
}

/// A destination as the API shows it (secrets are shown once, when made).
#[derive(Debug, Serialize, Deserialize)]
pub struct View {
    pub id: String,
    /// `{"webhook": {"url"}}` or `{"kafka": {"topic", "format"}}`.
    #[serde(flatten)]
    pub target: Target,
    pub filter: Filter,
    pub start: Start,
    pub max_attempts: u32,
    /// `active`, `paused`, or `parked` (some lane stopped on an event that failed every attempt).
    pub state: String,
    /// RFC 3339.
    pub created: String,
    /// Signing secrets that sign deliveries now (the current one and rotated ones still valid).
    pub signing_secrets: usize,
    pub lanes: Vec<LaneView>,
    /// The new signing secret: only in the answers of a create and a rotation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// Where a destination's delivery stands in one events partition.
#[derive(Debug, Serialize, Deserialize)]
pub struct LaneView {
    pub partition: i32,
    /// The next events offset to deliver or skip.
    pub next_offset: i64,
    pub delivered: u64,
    /// The event the lane is parked on (until the destination is resumed).
    pub parked: Option<Parked>,
    /// The event the lane is retrying now, if its last attempt failed.
    pub failing: Option<Failing>,
}

impl LaneView {
    /// The view of `lane` in `partition` of a destination resumed `replay` times.
    fn of(partition: i32, lane: Lane, replay: u64) -> LaneView {
        let parked = lane.parked.filter(|p| p.replay >= replay);
        LaneView {
            partition,
            next_offset: lane.next_offset,
            delivered: lane.delivered,
            parked,
            failing: lane.failing,
        }
    }
}

impl View {
    fn of(destination: Destination, lanes: Vec<LaneView>) -> View {
        let parked = lanes.iter().any(|l| l.parked.is_some());
        let state = match (destination.paused, parked) {
            (true, _) => "paused",
            (false, true) => "parked",
            (false, false) => "active",
        };
        let created = chrono::DateTime::from_timestamp_millis(destination.created_ms)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            .unwrap_or_default();
        View {
            id: destination.id.to_string(),
            target: destination.target.clone(),
            signing_secrets: destination.signing_keys(now_ms()).len(),
            filter: destination.filter,
            start: destination.start,
            max_attempts: destination.max_attempts,
            state: state.into(),
            created,
            lanes,
            secret: None,
        }
    }
}

async fn create(State(api): State<Destinations>, caller: Caller, body: Bytes) -> Response {
    let answer = async {
        let request: CreateRequest = json_body(&body)?;
        let (mut destination, secret) =
            request.destination(caller.tenant(), api.private_webhooks, now_ms())?;
        let _one_at_a_time = api.creating.lock().await;
        let others: Vec<Destination> = api
            .call(|s| s.destinations())
            .await?
            .iter()
            .filter_map(|b| Destination::decode(b).ok())
            .collect();
        if others.iter().filter(|d| d.tenant == destination.tenant).count() >= PER_TENANT_MAX {
            let detail = format!("a tenant has at most {PER_TENANT_MAX} destinations");
            return Err(Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "too many destinations", detail));
        }
        api.check_topic(&destination, &others).await?;
        api.register_schema(&mut destination).await?;
        if destination.start == Start::Now {
            destination.start_offsets = api.log_ends().await?;
        }
        let (tenant, id, bytes) =
            (destination.tenant.to_string(), destination.id.to_string(), destination.encode());
        if !api.call(move |s| s.create_destination(&tenant, &id, &bytes)).await? {
            let detail = format!(
                "destination {:?} exists; delete it first or use another id",
                destination.id.as_str()
            );
            return Err(Problem::new(StatusCode::CONFLICT, "destination exists", detail));
        }
        tracing::info!(tenant = %destination.tenant, destination = %destination.id, "sink destination created");
        let mut view = View::of(destination, vec![]);
        view.secret = secret;
        Ok::<_, Problem>((StatusCode::CREATED, Json(view)))
    };
    answer.await.into_response()
}

/// A JSON request body, whatever its `content-type` says (as the `/v1` routes read theirs);
/// 400 with serde's message when it does not parse.
fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Problem> {
    let bad = |e: serde_json::Error| Problem::bad_request(format!("the body is not a valid request: {e}"));
    let value: serde_json::Value = serde_json::from_slice(body).map_err(bad)?;
    if !value.is_object() {
        return Err(Problem::bad_request("the body must be a JSON object"));
    }
    serde_json::from_value(value).map_err(bad)
}

async fn list(State(api): State<Destinations>, caller: Caller) -> Response {
    let answer = async {
        let tenant = caller.tenant().clone();
        let stored = api.call(|s| s.destinations()).await?;
        let mut mine = Vec::new();
        for bytes in stored {
            let destination = Destination::decode(&bytes).map_err(|e| corrupt(&e))?;
            if destination.tenant == tenant {
                mine.push(api.view(destination).await?);
            }
        }
        mine.sort_by(|a, b| a.id.cmp(&b.id));
        Ok::<_, Problem>(Json(serde_json::json!({ "destinations": mine })))
    };
    answer.await.into_response()
}

async fn show(State(api): State<Destinations>, caller: Caller, Path(id): Path<String>) -> Response {
    let answer = async { api.view(api.get(caller.tenant(), &id).await?).await.map(Json) };
    answer.await.into_response()
}

async fn delete(State(api): State<Destinations>, caller: Caller, Path(id): Path<String>) -> Response {
    let answer = async {
        let destination = api.get(caller.tenant(), &id).await?;
        let (tenant, id_text, uid) = (caller.tenant().to_string(), id.clone(), destination.uid.clone());
        if !api.call(move |s| s.delete_destination(&tenant, &id_text)).await? {
            return Err(Problem::not_found("no such destination"));
        }
        // Positions are per incarnation: left behind they would never be read again.
        api.call(move |s| s.delete_deliveries(&uid)).await?;
        tracing::info!(tenant = %caller.tenant(), destination = id, "sink destination deleted");
        Ok::<_, Problem>(StatusCode::NO_CONTENT)
    };
    answer.await.into_response()
}

async fn pause(State(api): State<Destinations>, caller: Caller, Path(id): Path<String>) -> Response {
    let answer = async {
        let destination = api.update(&caller, &id, |d| d.paused = true).await?;
        api.view(destination).await.map(Json)
    };
    answer.await.into_response()
}

/// Unpauses, and raises the replay count so that parked lanes send their event again.
async fn resume(State(api): State<Destinations>, caller: Caller, Path(id): Path<String>) -> Response {
    let answer = async {
        let destination = api
            .update(&caller, &id, |d| {
                d.paused = false;
                d.replay += 1;
            })
            .await?;
        api.view(destination).await.map(Json)
    };
    answer.await.into_response()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateRequest {
    /// How long the previous secrets keep signing, in seconds (default 24 hours, at most 30
    /// days; 0 ends them now).
    pub overlap_seconds: Option<u64>,
}

async fn rotate_secret(
    State(api): State<Destinations>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let answer = async {
        let request: RotateRequest =
            if body.is_empty() { RotateRequest::default() } else { json_body(&body)? };
        let overlap_s = request.overlap_seconds.unwrap_or(ROTATION_OVERLAP_DEFAULT_S);
        if overlap_s > ROTATION_OVERLAP_MAX_S {
            return Err(Problem::bad_request(format!("overlap_seconds is at most {ROTATION_OVERLAP_MAX_S}")));
        }
        let current = api.get(caller.tenant(), &id).await?;
        if !matches!(current.target, Target::Webhook { .. }) {
            return Err(Problem::bad_request("only webhooks are signed"));
        }
        let mut secret = None;
        let destination = api
            .update(&caller, &id, |d| secret = Some(d.rotate_secret(now_ms(), overlap_s as i64 * 1000)))
            .await?;
        let mut view = api.view(destination).await?;
        view.secret = secret;
        Ok(Json(view))
    };
    answer.await.into_response()
}

//! The HTTP front door. Each write request becomes one command on the `commands` topic; the
//! handler waits, bounded, for the command's answer in the log and replies with it, or with 202
//! and a URL to poll when the wait runs out.
//!
//! Who calls: the [`Caller`] the gate (`tally_http::gate`) authenticated. Its tenant scopes
//! every command and its subject is the actor recorded in the events.

#![allow(
    clippy::result_large_err,
    reason = "a Problem is the error of a request that is answered right away; its size costs nothing worth boxing"
)]

mod api;
mod integers;

use crate::outcomes::{Lookup, Outcomes};
use crate::stages::Stage;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use std::time::Duration;
use tally_auth::producers::{FRONT_DOOR, PRODUCER_HEADER};
use tally_codec::Codec;
use tally_core::{Command, CommandBody, CommandId, DEFAULT_TX_COMMAND_PREFIX, StreamId, command_fingerprint};
use tally_http::outcome::Outcome;
use tally_kafka::{Outgoing, Producer};
use utoipa::OpenApi;

pub use api::ApiDoc;
use tally_http::header_text;
pub use tally_http::{Caller, POSITION_HEADER, Problem};

/// Knobs of the front door.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// How long a request waits for its command's answer before replying 202.
    pub wait: Duration,
    /// Largest request body, in bytes.
    pub body_limit: usize,
    /// Most transactions in one batch request.
    pub batch_max: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig { wait: Duration::from_secs(5), body_limit: 256 * 1024, batch_max: 100 }
    }
}

/// What every handler shares.
#[derive(Clone)]
pub struct Front {
    inner: Arc<Inner>,
}

struct Inner {
    producer: Producer,
    commands_topic: String,
    outcomes: Arc<Outcomes>,
    codec: Codec,
    config: HttpConfig,
}

/// A command in the log (or answered already), its answer awaited.
enum Sent {
    Answered(Arc<Outcome>),
    Awaited {
        receiver: tokio::sync::oneshot::Receiver<Arc<Outcome>>,
        command_id: CommandId,
        stream: StreamId,
        fingerprint: u128,
        /// When the broker acknowledged the command.
        acknowledged: std::time::Instant,
    },
}

impl Sent {
    /// The answer, or [`Reply::Pending`] if it has not come by `deadline`.
    async fn reply(self, deadline: tokio::time::Instant) -> Result<Reply, Problem> {
        match self {
            Sent::Answered(outcome) => Ok(Reply::Done(outcome)),
            Sent::Awaited { receiver, command_id, stream, fingerprint, acknowledged } => {
                match tokio::time::timeout_at(deadline, receiver).await {
                    Ok(Ok(outcome)) => {
                        Stage::AnswerWait.observe(acknowledged.elapsed());
                        Ok(Reply::Done(outcome))
                    }
                    _ => Ok(Reply::Pending(command_id, stream, fingerprint)),
                }
            }
        }
    }
}

/// How a submitted command ended, as far as this request knows.
pub enum Reply {
    Done(Arc<Outcome>),
    /// Not answered within the wait: poll `/v1/commands/{id}?stream=...&fingerprint=...` (the
    /// command's id, stream and fingerprint).
    Pending(CommandId, StreamId, u128),
}

impl Front {
    /// The front door over `producer` (made with [`Producer::new`]), sending to
    /// `commands_topic` and answering from `outcomes` (fed by an [`crate::outcomes::OutcomeWatcher`]).
    pub fn new(
        producer: Producer,
        commands_topic: String,
        outcomes: Arc<Outcomes>,
        config: HttpConfig,
    ) -> Front {
        Front { inner: Arc::new(Inner { producer, commands_topic, outcomes, codec: Codec::new(), config }) }
    }

    pub fn router(self) -> Router {
        let limit = self.inner.config.body_limit;
        api::routes()
            .route_layer(axum::middleware::from_fn(|request, next| {
                tally_http::metrics::observe("ingest", request, next)
            }))
            .with_state(self)
            .layer(axum::middleware::from_fn(tally_http::trace::traced))
            .layer(DefaultBodyLimit::max(limit))
            .layer(axum::middleware::map_response(tally_http::as_problem))
    }

    /// Produces the command (unless its answer is already known) and waits for the answer.
    pub async fn submit(&self, command: Command) -> Result<Reply, Problem> {
        self.submit_until(command, tokio::time::Instant::now() + self.inner.config.wait).await
    }

    /// [`Front::submit`], waiting until `deadline`.
    async fn submit_until(&self, command: Command, deadline: tokio::time::Instant) -> Result<Reply, Problem> {
        self.send(command).await?.reply(deadline).await
    }

    /// Produces the command and registers for its answer; returns once the broker has it (or
    /// the answer is known). Commands sent one after another are in the log in that order.
    ///
    /// Every request is produced, a repeat too: the log then holds one command record per
    /// request whatever this instance remembers, so what the log holds (and every stream's
    /// versions) never depends on a cache. An answer known here is given at once, but only if
    /// it answers this very command (same fingerprint); a command that reuses an id for
    /// something else waits for its own (conflict) answer.
    async fn send(&self, command: Command) -> Result<Sent, Problem> {
        let stream = command.body.stream();
        let fingerprint = command_fingerprint(&command.body);
        let lookup = self.inner.outcomes.wait(&command.tenant, &stream, &command.command_id, fingerprint);
        let producing = std::time::Instant::now();
        let produced = self.produce(&command).await;
        let acknowledged = std::time::Instant::now();
        let receiver = match lookup {
            // The answer stands whether or not the repeat reached the log.
            Lookup::Done(outcome) => return Ok(Sent::Answered(outcome)),
            Lookup::Pending(receiver) => receiver,
        };
        produced?;
        Stage::Produce.observe(acknowledged - producing);
        Ok(Sent::Awaited { receiver, command_id: command.command_id, stream, fingerprint, acknowledged })
    }

    /// Produces `command` to the commands topic, waiting until the broker has it.
    async fn produce(&self, command: &Command) -> Result<(), Problem> {
        let (key, payload) = (command.kafka_key(), self.inner.codec.encode_command(command));
        // The request's trace goes on in the command record's headers, beside who produced it.
        let headers = tally_kafka::trace_context::current_headers().with(PRODUCER_HEADER, FRONT_DOOR);
        let record = Outgoing::to(&self.inner.commands_topic, &payload).key(key.as_bytes()).headers(&headers);
        if let Err(e) = self.inner.producer.send(record, Some(self.inner.config.wait)).await {
            tracing::error!(command_id = %command.command_id, "producing a command: {e}");
            return Err(Problem::unavailable());
        }
        Ok(())
    }

    /// The answers this instance knows and awaits.
    fn outcomes(&self) -> &Outcomes {
        &self.inner.outcomes
    }

    /// Whether every answer already in the log when this instance started is known here.
    fn caught_up(&self) -> bool {
        self.inner.outcomes.caught_up()
    }

    fn batch_max(&self) -> usize {
        self.inner.config.batch_max
    }

    /// The front door's OpenAPI document, for this instance's configuration.
    fn openapi(&self) -> serde_json::Value {
        openapi(&self.inner.config)
    }

    fn deadline(&self) -> tokio::time::Instant {
        tokio::time::Instant::now() + self.inner.config.wait
    }
}

/// The header that names a request's command id.
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// The command `caller` asks for with `body`. Its id is the `Idempotency-Key` header, else the
/// body's default id ([`CommandId::default_for`]: `tx:<tx_id>` for a transaction), else a
/// fresh unique one. A key in the shape of a default id is refused, so that a key a client chose
/// for one command can never be taken for another command's default id.
pub fn command(caller: &Caller, headers: &HeaderMap, body: CommandBody) -> Result<Command, Problem> {
    if headers.get_all(IDEMPOTENCY_HEADER).iter().nth(1).is_some() {
        return Err(Problem::bad_request(format!("{IDEMPOTENCY_HEADER}: give one key, not several")));
    }
    let command_id = match header_text(headers, IDEMPOTENCY_HEADER)? {
        Some(key) => {
            let id = CommandId::parse(key)
                .map_err(|e| Problem::bad_request(format!("{IDEMPOTENCY_HEADER}: {e}")))?;
            if id.is_reserved() {
                return Err(Problem::bad_request(format!(
                    "{IDEMPOTENCY_HEADER}: keys starting with {DEFAULT_TX_COMMAND_PREFIX:?} are reserved for default ids"
                )));
            }
            id
        }
        None => match CommandId::default_for(&body) {
            Some(id) => id,
            None => CommandId::parse(uuid::Uuid::now_v7().to_string()).expect("a uuid is a valid id"),
        },
    };
    Ok(Command { tenant: caller.tenant().clone(), command_id, actor: caller.actor().clone(), body })
}

/// The response for a reply: the outcome ([`Outcome::respond`]), or 202 with where to poll.
pub fn respond(reply: Reply, created: bool) -> Response {
    match reply {
        Reply::Done(outcome) => outcome.respond(created),
        Reply::Pending(command_id, stream, fingerprint) => pending(&command_id, &stream, Some(fingerprint)),
    }
}

/// Where to poll for the answer to the command with `fingerprint` sent as `command_id` in
/// `stream`: that command's own answer, even when it conflicted with the id's first command
/// (without `fingerprint`: the id's first answer).
fn poll_url(command_id: &CommandId, stream: &StreamId, fingerprint: Option<u128>) -> String {
    match fingerprint {
        Some(f) => format!("/v1/commands/{command_id}?stream={stream}&fingerprint={f:032x}"),
        None => format!("/v1/commands/{command_id}?stream={stream}"),
    }
}

fn pending(command_id: &CommandId, stream: &StreamId, fingerprint: Option<u128>) -> Response {
    let poll = poll_url(command_id, stream, fingerprint);
    let body =
        api::PendingBody { command_id: command_id.to_string(), status: "PENDING".into(), poll: poll.clone() };
    let mut response = (StatusCode::ACCEPTED, axum::Json(body)).into_response();
    if let Ok(location) = HeaderValue::from_str(&poll) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// The OpenAPI document of the front door (OpenAPI 3.1, as JSON), with the server's checks
/// declared ([`tally_http::openapi`]) for `config`'s limits.
pub fn openapi(config: &HttpConfig) -> serde_json::Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the document serialises");
    tally_http::openapi::declare_checks(
        &mut doc,
        tally_http::openapi::Configured { batch_max: Some(config.batch_max) },
    );
    doc
}

//! Routes, request bodies and the OpenAPI document (generated from these definitions).

use super::{Caller, Front, Problem, Reply, integers, pending, respond};
use crate::outcomes::Peek;
use axum::Router;
use axum::body::Bytes;
use axum::extract::FromRequestParts;
use axum::extract::Query;
use axum::extract::{Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tally_core::*;
use tally_http::gate::BearerAuth;
use tally_http::outcome::Outcome;
use utoipa::{OpenApi, ToSchema};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tally ingest",
        description = "Commands over HTTP: each request becomes one command; the answer comes from the events log."
    ),
    paths(
        define_asset,
        open_account,
        update_account,
        close_account,
        post_transaction,
        post_batch,
        commit_pending,
        void_pending,
        reverse,
        put_document,
        delete_document,
        command_outcome
    ),
    components(schemas(Outcome, Problem, PendingBody, BatchResult, BatchItem)),
    modifiers(&BearerAuth, &CommandAnswers),
    security(("bearer" = []))
)]
/// The front door's OpenAPI document (`GET /openapi.json`).
pub struct ApiDoc;

pub(super) fn routes() -> Router<Front> {
    Router::new()
        .route("/v1/ledgers/{ledger}/assets", post(define_asset))
        .route("/v1/ledgers/{ledger}/accounts", post(open_account))
        .route("/v1/ledgers/{ledger}/accounts/{account}", put(update_account))
        .route("/v1/ledgers/{ledger}/accounts/{account}/close", post(close_account))
        .route("/v1/ledgers/{ledger}/transactions", post(post_transaction))
        .route("/v1/ledgers/{ledger}/transactions/batch", post(post_batch))
        .route("/v1/ledgers/{ledger}/transactions/{tx_id}/commit", post(commit_pending))
        .route("/v1/ledgers/{ledger}/transactions/{tx_id}/void", post(void_pending))
        .route("/v1/ledgers/{ledger}/transactions/{tx_id}/reverse", post(reverse))
        .route("/v1/state/{doc_type}/{key}", put(put_document).delete(delete_document))
        .route("/v1/commands/{command_id}", get(command_outcome))
        .route(
            "/openapi.json",
            get(|State(front): State<Front>| async move { tally_http::openapi::response(&front.openapi()) }),
        )
        .fallback(|| async { Problem::not_found("no such route") })
}

// ---- bodies -------------------------------------------------------------------------------

/// The headers every request may carry, for the OpenAPI document.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header, rename_all = "kebab-case")]
#[allow(dead_code, reason = "only documents the headers")]
struct CommandHeaders {
    /// The command id. It names one command within the caller's tenant and the command's stream
    /// (a ledger, or one document); the same id on another stream is another command. The same
    /// id with the same command gets the first answer, exactly (status, body, position), on any
    /// instance and after any restart, over HTTP or Kafka, and has one effect however often it
    /// is sent; the same id with another command is a 409 `COMMAND_ID_CONFLICT` and changes
    /// nothing. Without it, a transaction's id is `tx:<tx_id>` (so a resend of the same
    /// transaction is recognised, and another body under that transaction id is a 409
    /// `ID_CONFLICT`), and any other command gets a fresh unique id. Keys starting with `tx:`
    /// are refused (400). A transaction sent again under a new key with the same body gets the
    /// transaction's first outcome: 200 `DEDUPLICATED` if it was accepted, the same 422 or 409
    /// with the same reason if it was refused.
    idempotency_key: Option<String>,
}

/// The conditions a document's put or delete may carry, for the OpenAPI document.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header, rename_all = "kebab-case")]
#[allow(dead_code, reason = "only documents the headers")]
struct ConditionHeaders {
    /// Expect this version of the document (`"3"`, `3` or `W/"3"`): another version is a 409
    /// `VERSION_MISMATCH` and changes nothing.
    if_match: Option<String>,
    /// `*`: expect no document (a put that creates only); another value is a 400.
    if_none_match: Option<String>,
}

/// 202: the command is in the log's queue; its answer will be at `poll`.
#[derive(Debug, Serialize, ToSchema)]
pub struct PendingBody {
    pub command_id: String,
    /// Always `PENDING`.
    pub status: String,
    /// The URL to poll (also in `Location`).
    pub poll: String,
}

/// `POST /v1/ledgers/{ledger}/assets`: the asset to define.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DefineAssetBody {
    /// `CODE/DECIMALS`, e.g. `USD/2`.
    asset: String,
}

/// A lower bound on an account's available balance in one asset.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitBody {
    asset: String,
    /// Lowest available balance in minor units (negative: a credit line); absent: unbounded.
    #[serde(default, deserialize_with = "integers::optional_integer")]
    min_balance: Option<i128>,
}

/// `POST /v1/ledgers/{ledger}/accounts`: the account id, its limits and metadata (text to text).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenAccountBody {
    account: String,
    #[serde(default)]
    limits: Vec<LimitBody>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

/// `PUT /v1/ledgers/{ledger}/accounts/{account}`: the new limits and metadata (they replace the old).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateAccountBody {
    #[serde(default)]
    limits: Vec<LimitBody>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

/// One movement of a transaction: `amount` of `asset` from `source` to `destination`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PostingBody {
    source: String,
    destination: String,
    asset: String,
    /// Minor units (cents for `USD/2`), positive: a JSON integer of up to 39 digits (i128),
    /// kept exactly. Answers write amounts the same way; a client whose JSON parser turns
    /// numbers into doubles must read them with one that keeps big integers (for example
    /// `JSON.parse` with a reviver that reads the source text, or a big-number JSON library),
    /// or read the `events` topic, where amounts are Avro decimals. Any JSON form of an
    /// integer is read exactly (`250`, `250.0`, `2.5e2`).
    #[serde(deserialize_with = "integers::integer")]
    amount: i128,
}

/// `POST /v1/ledgers/{ledger}/transactions`: postings applied all or none.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransactionBody {
    /// Unique forever within the ledger; also the command id unless Idempotency-Key is given.
    tx_id: String,
    postings: Vec<PostingBody>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    /// Hold the funds as a pending transaction for this long (milliseconds; the log carries it
    /// as an Avro `long`, so at most 2^63 - 1 is well formed).
    #[serde(default, deserialize_with = "integers::optional_long")]
    pending_timeout_ms: Option<u64>,
}

/// `POST /v1/ledgers/{ledger}/transactions/batch`: 1 to `batch_max` (100) transactions.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchBody {
    /// Each is its own command (not atomic across them); ids are the transactions' ids.
    transactions: Vec<TransactionBody>,
}

/// How one transaction of a batch was answered: its outcome, or where to poll for it.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchItem {
    pub tx_id: String,
    /// The status a single request would have been answered with.
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub poll: Option<String>,
}

/// The answers to a batch, in request order.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchResult {
    pub results: Vec<BatchItem>,
}

/// `POST .../transactions/{tx_id}/commit`: an empty body commits everything held.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommitBody {
    /// Amounts to commit per posting (partial commit); absent: everything held.
    #[serde(default, deserialize_with = "integers::optional_integers")]
    amounts: Option<Vec<i128>>,
}

/// `POST .../transactions/{tx_id}/reverse`: the compensating transaction's id and metadata.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReverseBody {
    /// Id of the compensating transaction.
    tx_id: String,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

// ---- parsing ------------------------------------------------------------------------------

fn json<T: DeserializeOwned>(body: &Bytes) -> Result<T, Problem> {
    serde_json::from_slice(body).map_err(|e| Problem::bad_request(format!("body: {e}")))
}

/// An optional body: empty means the default.
fn json_or_default<T: DeserializeOwned + Default>(body: &Bytes) -> Result<T, Problem> {
    if body.iter().all(u8::is_ascii_whitespace) { Ok(T::default()) } else { json(body) }
}

fn field<T, E: std::fmt::Display>(name: &str, parsed: Result<T, E>) -> Result<T, Problem> {
    parsed.map_err(|e| Problem::bad_request(format!("{name}: {e}")))
}

fn ledger_id(s: &str) -> Result<LedgerId, Problem> {
    field("ledger", LedgerId::parse_ledger(s))
}

fn limits(body: Vec<LimitBody>) -> Result<Vec<AssetLimit>, Problem> {
    body.into_iter()
        .map(|l| {
            Ok(AssetLimit {
                asset: field("limits.asset", Asset::parse(&l.asset))?,
                min_balance: l.min_balance,
            })
        })
        .collect()
}

fn transfer(ledger: &LedgerId, body: TransactionBody) -> Result<(String, CommandBody), Problem> {
    let postings = body
        .postings
        .into_iter()
        .map(|p| {
            Ok(Posting {
                source: field("postings.source", AccountId::parse(p.source))?,
                destination: field("postings.destination", AccountId::parse(p.destination))?,
                asset: field("postings.asset", Asset::parse(&p.asset))?,
                amount: p.amount,
            })
        })
        .collect::<Result<Vec<_>, Problem>>()?;
    let tx_id = field("tx_id", TxId::parse(body.tx_id.clone()))?;
    let request = TxRequest::Transfer {
        postings,
        metadata: body.metadata,
        pending_timeout_ms: body.pending_timeout_ms,
    };
    Ok((body.tx_id, CommandBody::Transact { ledger: ledger.clone(), tx_id, request }))
}

/// A document body: a JSON object (queries filter documents on their top-level fields), kept
/// as sent, so that every number keeps every digit it was sent with (a big integer or a long
/// fraction would be rounded by a round trip through doubles). Only the surrounding whitespace
/// is dropped.
fn document(body: &Bytes) -> Result<String, Problem> {
    let text = std::str::from_utf8(body)
        .map_err(|e| Problem::bad_request(format!("a document is UTF-8 JSON: {e}")))?;
    // Readers (field filters, response policies) read documents as JSON values: every number
    // must fit a double, and the nesting must leave room under their limits. One parse checks
    // it all; the text itself is what is kept.
    let value = serde_json::from_str::<serde_json::Value>(text).map_err(|e| {
        let rule =
            format!("numbers that fit a double (about ±1.8e308), at most {DOCUMENT_DEPTH_MAX} levels deep");
        Problem::bad_request(format!("a document is a JSON object with {rule}: {e}"))
    })?;
    if !value.is_object() {
        return Err(Problem::bad_request("a document is a JSON object"));
    }
    if depth(&value) > DOCUMENT_DEPTH_MAX {
        return Err(Problem::bad_request(format!("a document nests at most {DOCUMENT_DEPTH_MAX} levels")));
    }
    Ok(text.trim().to_owned())
}

/// Deepest nesting of a document (objects and arrays), leaving room under serde_json's and the
/// policy engine's limit of 128 for the answers that hold documents, and under protobuf's 100
/// (the common decoders' default) for the gRPC API's, which carries a document as a
/// `google.protobuf.Struct`: two protobuf levels per JSON level, and three around it.
const DOCUMENT_DEPTH_MAX: usize = 32;

/// How deep `value` nests: 1 for a flat object.
fn depth(value: &serde_json::Value) -> usize {
    match value {
        serde_json::Value::Object(members) => 1 + members.values().map(depth).max().unwrap_or(0),
        serde_json::Value::Array(elements) => 1 + elements.iter().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// `If-Match: "3"` (or `3`, `W/"3"`) expects version 3; `If-None-Match: *` expects no document
/// (version 0). Both must hold when both are given (RFC 9110 section 13.2.2): only with
/// `If-Match: 0` can they, and otherwise the answer is 412 at once, with nothing sent.
fn expected_version(headers: &HeaderMap) -> Result<Option<u64>, Problem> {
    let none_match = match headers.get("if-none-match").map(|v| v.to_str().unwrap_or_default().trim()) {
        Some("*") => Some(0),
        Some(_) => return Err(Problem::bad_request("If-None-Match: only * is supported")),
        None => None,
    };
    let Some(v) = headers.get("if-match") else { return Ok(none_match) };
    let text = v.to_str().unwrap_or_default().trim().trim_start_matches("W/").trim_matches('"');
    // The log carries the version as an Avro `long`.
    let version = text
        .parse::<u64>()
        .ok()
        .filter(|v| i64::try_from(*v).is_ok())
        .ok_or_else(|| Problem::bad_request("If-Match: expected a version number (at most 2^63 - 1)"))?;
    match none_match {
        Some(none) if none != version => Err(Problem::new(
            StatusCode::PRECONDITION_FAILED,
            "precondition failed",
            "If-Match names a version and If-None-Match: * expects no document: both cannot hold",
        )),
        _ => Ok(Some(version)),
    }
}

// ---- handlers -----------------------------------------------------------------------------

/// What every single-command handler takes: who calls, the request's headers (the
/// `Idempotency-Key`, conditions), and the front door to submit through.
struct Submit {
    front: Front,
    caller: Caller,
    headers: HeaderMap,
}

impl FromRequestParts<Front> for Submit {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, front: &Front) -> Result<Submit, Problem> {
        let caller = Caller::from_request_parts(parts, front).await?;
        Ok(Submit { front: front.clone(), caller, headers: parts.headers.clone() })
    }
}

impl Submit {
    /// Builds the command body with `build` (given the headers), submits it and answers with its
    /// outcome (`created`: 201 when accepted), or with the problem building it hit.
    async fn send(
        self,
        created: bool,
        build: impl FnOnce(&HeaderMap) -> Result<CommandBody, Problem>,
    ) -> Response {
        let submitted = async {
            let command = super::command(&self.caller, &self.headers, build(&self.headers)?)?;
            self.front.submit(command).await
        };
        match submitted.await {
            Ok(reply) => respond(reply, created),
            Err(problem) => problem.into_response(),
        }
    }
}

impl Submit {
    /// [`Submit::send`] of the command `build` makes from the JSON body (400 when it does not
    /// parse as `T`).
    async fn send_json<T: DeserializeOwned>(
        self,
        created: bool,
        body: &Bytes,
        build: impl FnOnce(T) -> Result<CommandBody, Problem>,
    ) -> Response {
        self.send(created, |_| build(json(body)?)).await
    }
}

/// Ids from the request's path, parsed (a 400 naming the segment when one is not valid).
struct Ids<T>(T);

/// What a path's segments are, in order.
trait FromSegments: Sized {
    fn from_segments(segments: Vec<String>) -> Result<Self, Problem>;
}

impl<T: FromSegments> FromRequestParts<Front> for Ids<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, front: &Front) -> Result<Ids<T>, Problem> {
        let Path(segments) = Path::<Vec<String>>::from_request_parts(parts, front)
            .await
            .map_err(|e| Problem::bad_request(e.body_text()))?;
        T::from_segments(segments).map(Ids)
    }
}

/// A ledger's account, from `/v1/ledgers/{ledger}/accounts/{account}...`.
type AccountIds = Ids<(LedgerId, AccountId)>;
/// A ledger's transaction, from `/v1/ledgers/{ledger}/transactions/{tx_id}/...`.
type TxIds = Ids<(LedgerId, TxId)>;
/// A document, from `/v1/state/{doc_type}/{key}`.
type DocIds = Ids<(DocType, DocKey)>;

/// The two segments of a path with two parameters.
fn two(segments: Vec<String>) -> Result<(String, String), Problem> {
    <[String; 2]>::try_from(segments)
        .map(|[a, b]| (a, b))
        .map_err(|_| Problem::bad_request("expected two path segments"))
}

impl FromSegments for LedgerId {
    fn from_segments(segments: Vec<String>) -> Result<Self, Problem> {
        ledger_id(segments.first().map_or("", String::as_str))
    }
}

impl FromSegments for (LedgerId, AccountId) {
    fn from_segments(segments: Vec<String>) -> Result<Self, Problem> {
        let (ledger, account) = two(segments)?;
        Ok((ledger_id(&ledger)?, field("account", AccountId::parse(account))?))
    }
}

impl FromSegments for (LedgerId, TxId) {
    fn from_segments(segments: Vec<String>) -> Result<Self, Problem> {
        let (ledger, tx_id) = two(segments)?;
        Ok((ledger_id(&ledger)?, field("tx_id", TxId::parse(tx_id))?))
    }
}

impl FromSegments for (DocType, DocKey) {
    fn from_segments(segments: Vec<String>) -> Result<Self, Problem> {
        let (doc_type, key) = two(segments)?;
        Ok((field("doc_type", DocType::parse(doc_type))?, field("key", DocKey::parse(key))?))
    }
}

/// Declares what every single-command operation may answer besides its success: 202 while the
/// answer is awaited, 400 for a malformed request, 409 and 422 for a rejection (a problem with
/// the reason code). The batch route answers each item in its body instead.
struct CommandAnswers;

impl utoipa::Modify for CommandAnswers {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let pending = ContentBuilder::new().schema(Some(Ref::from_schema_name("PendingBody"))).build();
        let accepted = ResponseBuilder::new()
            .description("not answered within the wait: poll the URL in `poll` (and `Location`)")
            .content("application/json", pending)
            .build();
        let single_commands = |operation_id: &str| operation_id != "post_batch";
        tally_http::document_on_operations(openapi, single_commands, &[("202", accepted)]);
        tally_http::document_problems_on_operations(
            openapi,
            single_commands,
            &[
                ("400", "a malformed request: body, path, Idempotency-Key or condition"),
                (
                    "409",
                    "rejected as a conflict (reason COMMAND_ID_CONFLICT: the command id was used for \
                     another command; ID_CONFLICT, ACCOUNT_EXISTS, ASSET_CONFLICT, VERSION_MISMATCH); on \
                     GET /v1/commands: also an id used in several streams without `stream`",
                ),
                ("422", "rejected by the rules; `reason` says why (INSUFFICIENT_FUNDS, ...)"),
            ],
        );
    }
}

/// Define an asset (code and decimals) in a ledger.
#[utoipa::path(post, path = "/v1/ledgers/{ledger}/assets", params(("ledger" = String, Path, description = "ledger id"), CommandHeaders), request_body = DefineAssetBody,
    responses((status = 201, body = Outcome)))]
async fn define_asset(submit: Submit, Ids(ledger): Ids<LedgerId>, body: Bytes) -> Response {
    let build = |b: DefineAssetBody| {
        Ok(CommandBody::DefineAsset { ledger, asset: field("asset", Asset::parse(&b.asset))? })
    };
    submit.send_json(true, &body, build).await
}

/// Open an account with limits and metadata.
#[utoipa::path(post, path = "/v1/ledgers/{ledger}/accounts", params(("ledger" = String, Path, description = "ledger id"), CommandHeaders), request_body = OpenAccountBody,
    responses((status = 201, body = Outcome)))]
async fn open_account(submit: Submit, Ids(ledger): Ids<LedgerId>, body: Bytes) -> Response {
    let build = |b: OpenAccountBody| {
        let account = field("account", AccountId::parse(b.account))?;
        Ok(CommandBody::OpenAccount { ledger, account, limits: limits(b.limits)?, metadata: b.metadata })
    };
    submit.send_json(true, &body, build).await
}

/// Replace an account's limits and metadata.
#[utoipa::path(put, path = "/v1/ledgers/{ledger}/accounts/{account}", params(("ledger" = String, Path, description = "ledger id"), ("account" = String, Path, description = "account id"), CommandHeaders), request_body = UpdateAccountBody,
    responses((status = 200, body = Outcome)))]
async fn update_account(submit: Submit, Ids((ledger, account)): AccountIds, body: Bytes) -> Response {
    let build = |b: UpdateAccountBody| {
        Ok(CommandBody::UpdateAccount { ledger, account, limits: limits(b.limits)?, metadata: b.metadata })
    };
    submit.send_json(false, &body, build).await
}

/// Close an account whose balances and holds are zero.
#[utoipa::path(post, path = "/v1/ledgers/{ledger}/accounts/{account}/close", params(("ledger" = String, Path, description = "ledger id"), ("account" = String, Path, description = "account id"), CommandHeaders),
    responses((status = 200, body = Outcome)))]
async fn close_account(submit: Submit, Ids((ledger, account)): AccountIds) -> Response {
    submit.send(false, |_| Ok(CommandBody::CloseAccount { ledger, account })).await
}

/// Post a transaction (or hold it as pending with `pending_timeout_ms`).
#[utoipa::path(post, path = "/v1/ledgers/{ledger}/transactions", params(("ledger" = String, Path, description = "ledger id"), CommandHeaders), request_body = TransactionBody,
    responses((status = 201, body = Outcome), (status = 200, description = "deduplicated: the first outcome stands", body = Outcome)))]
async fn post_transaction(submit: Submit, Ids(ledger): Ids<LedgerId>, body: Bytes) -> Response {
    submit.send(true, |_| Ok(transfer(&ledger, json(&body)?)?.1)).await
}

/// Post many transactions; each is its own command, put in the log in request order and
/// answered in `results` in request order. Each transaction's command id is its default
/// (`tx:<tx_id>`): `Idempotency-Key` is refused here.
#[utoipa::path(post, path = "/v1/ledgers/{ledger}/transactions/batch", params(("ledger" = String, Path, description = "ledger id")), request_body = BatchBody,
    responses((status = 200, body = BatchResult), (status = 400, body = Problem, content_type = "application/problem+json")))]
async fn post_batch(
    State(front): State<Front>,
    caller: Caller,
    Ids(ledger): Ids<LedgerId>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let commands = (|| {
        if headers.contains_key(super::IDEMPOTENCY_HEADER) {
            return Err(Problem::bad_request(format!(
                "{}: a batch's transactions take their own ids (tx:<tx_id>); send one key per single request",
                super::IDEMPOTENCY_HEADER
            )));
        }
        let b: BatchBody = json(&body)?;
        if b.transactions.is_empty() || b.transactions.len() > front.batch_max() {
            return Err(Problem::bad_request(format!(
                "a batch holds 1 to {} transactions",
                front.batch_max()
            )));
        }
        b.transactions
            .into_iter()
            .map(|t| {
                let (tx_id, c) = transfer(&ledger, t)?;
                Ok((tx_id, super::command(&caller, &HeaderMap::new(), c)?))
            })
            .collect::<Result<Vec<_>, Problem>>()
    })();
    let commands = match commands {
        Ok(c) => c,
        Err(p) => return p.into_response(),
    };
    let deadline = front.deadline();
    // In the log in request order (each is with the broker before the next is sent), so a
    // later transaction sees the effect of an earlier one; then every answer is awaited at once.
    let mut sent = Vec::with_capacity(commands.len());
    for (tx_id, command) in commands {
        sent.push((tx_id, front.send(command).await));
    }
    let replies = futures::future::join_all(sent.into_iter().map(|(tx_id, sent)| async move {
        let reply = match sent {
            Ok(sent) => sent.reply(deadline).await,
            Err(problem) => Err(problem),
        };
        (tx_id, reply)
    }));
    let results = replies
        .await
        .into_iter()
        .map(|(tx_id, reply)| match reply {
            Ok(Reply::Done(outcome)) => BatchItem {
                tx_id,
                status: outcome.status_code(true).as_u16(),
                outcome: Some(outcome.as_ref().clone()),
                poll: None,
            },
            Ok(Reply::Pending(id, stream, fingerprint)) => BatchItem {
                tx_id,
                status: 202,
                outcome: None,
                poll: Some(super::poll_url(&id, &stream, Some(fingerprint))),
            },
            Err(problem) => BatchItem { tx_id, status: problem.status, outcome: None, poll: None },
        })
        .collect();
    axum::Json(BatchResult { results }).into_response()
}

/// Commit a pending transaction, fully or partially (`amounts` per posting).
#[utoipa::path(post, path = "/v1/ledgers/{ledger}/transactions/{tx_id}/commit", params(("ledger" = String, Path, description = "ledger id"), ("tx_id" = String, Path, description = "transaction id"), CommandHeaders), request_body = CommitBody,
    responses((status = 200, body = Outcome)))]
async fn commit_pending(submit: Submit, Ids((ledger, tx_id)): TxIds, body: Bytes) -> Response {
    let build = |b: CommitBody| Ok(CommandBody::CommitPending { ledger, tx_id, amounts: b.amounts });
    submit.send(false, |_| build(json_or_default(&body)?)).await
}

/// Void a pending transaction: release its holds.
#[utoipa::path(post, path = "/v1/ledgers/{ledger}/transactions/{tx_id}/void", params(("ledger" = String, Path, description = "ledger id"), ("tx_id" = String, Path, description = "transaction id"), CommandHeaders),
    responses((status = 200, body = Outcome)))]
async fn void_pending(submit: Submit, Ids((ledger, tx_id)): TxIds) -> Response {
    submit.send(false, |_| Ok(CommandBody::VoidPending { ledger, tx_id })).await
}

/// Post the compensating transaction of a posted one, under a new id.
#[utoipa::path(post, path = "/v1/ledgers/{ledger}/transactions/{tx_id}/reverse", params(("ledger" = String, Path, description = "ledger id"), ("tx_id" = String, Path, description = "transaction id"), CommandHeaders), request_body = ReverseBody,
    responses((status = 201, body = Outcome)))]
async fn reverse(submit: Submit, Ids((ledger, original)): TxIds, body: Bytes) -> Response {
    let build = |b: ReverseBody| {
        let request = TxRequest::Reversal { original, metadata: b.metadata };
        Ok(CommandBody::Transact { ledger, tx_id: field("tx_id", TxId::parse(b.tx_id))?, request })
    };
    submit.send_json(true, &body, build).await
}

/// Put a state document (a JSON object). `If-Match: "<version>"` or `If-None-Match: *`
/// make it conditional.
#[utoipa::path(put, path = "/v1/state/{doc_type}/{key}", params(("doc_type" = String, Path, description = "document type"), ("key" = String, Path, description = "document key"), CommandHeaders, ConditionHeaders), request_body(content = Object, description = "the document, a JSON object"),
    responses((status = 200, body = Outcome), (status = 412, body = Problem, content_type = "application/problem+json", description = "If-Match and If-None-Match that cannot both hold")))]
async fn put_document(submit: Submit, Ids((doc_type, key)): DocIds, body: Bytes) -> Response {
    submit
        .send(false, |headers| {
            let (value, expected_version) = (document(&body)?, expected_version(headers)?);
            Ok(CommandBody::PutDocument { doc_type, key, value, expected_version })
        })
        .await
}

/// Delete a state document (`If-Match` makes it conditional).
#[utoipa::path(delete, path = "/v1/state/{doc_type}/{key}", params(("doc_type" = String, Path, description = "document type"), ("key" = String, Path, description = "document key"), CommandHeaders, ConditionHeaders),
    responses((status = 200, body = Outcome), (status = 412, body = Problem, content_type = "application/problem+json", description = "If-Match and If-None-Match that cannot both hold")))]
async fn delete_document(submit: Submit, Ids((doc_type, key)): DocIds) -> Response {
    submit
        .send(false, |headers| {
            Ok(CommandBody::DeleteDocument { doc_type, key, expected_version: expected_version(headers)? })
        })
        .await
}

/// A command fingerprint as a poll URL carries it: exactly 32 hex digits.
fn fingerprint_of(text: &str) -> Result<u128, &'static str> {
    let digits = text.len() == 32 && text.bytes().all(|b| b.is_ascii_hexdigit());
    digits.then(|| u128::from_str_radix(text, 16).ok()).flatten().ok_or("expected 32 hex digits")
}

/// Which of the streams that used a command id is meant (`GET /v1/commands/{id}`).
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct OutcomeQuery {
    /// The command's stream: its ledger, or `state/TYPE/KEY` for a document. A command id names
    /// one command per stream; needed only when the id was used in several (else 409).
    stream: Option<String>,
    /// The fingerprint of one command sent under the id (32 hex digits, as a 202's poll URL
    /// gives it): that command's own answer, also when it conflicted with the id's first
    /// command. Without it: the id's first answer.
    fingerprint: Option<String>,
}

/// The outcome of a command: 200 with it, 202 while it is awaited, 404 if this instance does
/// not know it (outcomes are kept in memory, bounded; older ones are the query service's), 409
/// when the id was used in several streams and `stream` does not say which, 503 while the
/// instance is still reading the answers already in the log after a start.
#[utoipa::path(get, path = "/v1/commands/{command_id}", params(("command_id" = String, Path, description = "command id (the Idempotency-Key it was sent with, or the default id the write answered with)"), OutcomeQuery),
    responses((status = 200, body = Outcome), (status = 404, body = Problem, content_type = "application/problem+json"), (status = 503, body = Problem, content_type = "application/problem+json")))]
async fn command_outcome(
    State(front): State<Front>,
    caller: Caller,
    Path(command_id): Path<String>,
    query: Result<Query<OutcomeQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let parsed = (|| {
        let Query(query) = query.map_err(|e| Problem::bad_request(e.body_text()))?;
        let command_id = field("command_id", CommandId::parse(command_id))?;
        let stream = query.stream.map(|s| field("stream", StreamId::parse(&s))).transpose()?;
        let fingerprint = query.fingerprint.map(|f| field("fingerprint", fingerprint_of(&f))).transpose()?;
        Ok::<_, Problem>((command_id, stream, fingerprint))
    })();
    let (command_id, stream, fingerprint) = match parsed {
        Ok(parsed) => parsed,
        Err(problem) => return problem.into_response(),
    };
    match front.outcomes().peek(caller.tenant(), &command_id, stream.as_ref(), fingerprint) {
        Peek::Done(outcome) => outcome.respond(false),
        Peek::Pending(stream) => pending(&command_id, &stream, fingerprint),
        Peek::Ambiguous(streams) => {
            tally_http::outcome::ambiguous(command_id.as_str(), &streams).into_response()
        }
        Peek::Unknown if !front.caught_up() => Problem::catching_up().into_response(),
        Peek::Unknown => Problem::new(
            StatusCode::NOT_FOUND,
            "unknown command",
            format!(
                "no outcome of {command_id} is known here: never sent here, or forgotten (only the \
                 newest --outcomes-kept answers are kept); send the command again with the same \
                 Idempotency-Key to get its answer"
            ),
        )
        .into_response(),
    }
}

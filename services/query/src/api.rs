//! Routes, parameters and the OpenAPI document (generated from these definitions).

use crate::cursor::{self, After, TimelinePass};
use crate::events::{EventFilter, next_pass, stream_page, timeline_page};
use crate::filtered::filtered;
use crate::params::*;
use crate::position::Reader;
use crate::views::*;
use crate::{Query, live};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use std::collections::HashMap;
use tally_core::projection::EventRow;
use tally_core::{AccountId, CommandId, DocKey, DocType, LedgerId, StreamId, TenantId, TxId};
use tally_http::Problem;
use tally_http::gate::BearerAuth;
use tally_http::outcome::Outcome;
use tally_store::reads::{self, Accounts, Documents, Outcomes, Statements, Transactions};
use utoipa::{IntoParams, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tally query",
        description = "Reads of the projections: balances, statements, transactions, state documents and events. \
            Send the Tally-Position a write returned to read that write (waits, bounded; 504 when it cannot)."
    ),
    paths(
        get_account,
        list_accounts,
        statement,
        balance_at,
        get_transaction,
        get_outcome,
        get_document,
        list_documents,
        search_events,
        live::follow_events
    ),
    components(schemas(
        Problem,
        AccountView,
        BalanceView,
        LimitView,
        LineView,
        BalancesAtView,
        BalanceAtView,
        TransactionView,
        PostingView,
        Outcome,
        DocumentView,
        EventView
    )),
    modifiers(&BearerAuth, &ReaderAnswers),
    security(("bearer" = []))
)]
/// The query API's OpenAPI document (`GET /openapi.json`).
pub struct ApiDoc;

/// Declares what every query may answer because every handler takes a [`Reader`]: 400 (a
/// malformed parameter, cursor or position token) and 504 (the position's wait ran out).
struct ReaderAnswers;

impl utoipa::Modify for ReaderAnswers {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        tally_http::document_on_every_operation(
            openapi,
            &[
                ("400", "a malformed parameter, cursor or Tally-Position"),
                ("504", "the projection did not reach the request's Tally-Position in time; retry"),
            ],
        );
    }
}

pub(crate) fn routes() -> Router<Query> {
    Router::new()
        .route("/v1/ledgers/{ledger}/accounts", get(list_accounts))
        .route("/v1/ledgers/{ledger}/accounts/{account}", get(get_account))
        .route("/v1/ledgers/{ledger}/accounts/{account}/statement", get(statement))
        .route("/v1/ledgers/{ledger}/accounts/{account}/balance", get(balance_at))
        .route("/v1/ledgers/{ledger}/transactions/{tx_id}", get(get_transaction))
        .route("/v1/commands/{command_id}", get(get_outcome))
        .route("/v1/state/{doc_type}", get(list_documents))
        .route("/v1/state/{doc_type}/{key}", get(get_document))
        .route("/v1/events", get(search_events))
        .route("/v1/events/live", get(live::follow_events))
        .route("/openapi.json", get(|| async { tally_http::openapi::response(&crate::openapi()) }))
        .fallback(|| async { Problem::not_found("no such route") })
}

// ---- parameters -----------------------------------------------------------------------------

/// The headers every request may carry, for the OpenAPI document.
#[derive(IntoParams)]
#[into_params(parameter_in = Header, rename_all = "kebab-case")]
#[allow(dead_code, reason = "only documents the headers")]
struct ReadHeaders {
    /// A position token a write returned: wait until the projection covers it.
    tally_position: Option<String>,
}

/// Paging of a list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListParams {
    /// Only ids (keys) that start with this.
    prefix: Option<String>,
    /// Items per page: default 100, at most 1,000 (larger values are capped).
    #[param(minimum = 1)]
    limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct StatementParams {
    /// Only this asset (`USD/2`); default: every asset of the account, merged.
    asset: Option<String>,
    /// Items per page: default 100, at most 1,000 (larger values are capped).
    #[param(minimum = 1)]
    limit: Option<usize>,
    cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct BalanceParams {
    /// The instant, RFC 3339 (`2026-11-23T10:00:00Z`).
    at: String,
    /// Only this asset; default: every asset of the account.
    asset: Option<String>,
}

/// Events: which ones.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventParams {
    /// The stream: a ledger id, or `state/TYPE/KEY` for a document. Without it, every stream of
    /// the tenant, in time order (in passes: see `resume_cursor`).
    stream: Option<String>,
    /// Only these kinds of event, comma-separated (`TransactionPosted,PendingCommitted`); an
    /// unknown kind is 400, and naming none (`type=`) is no filter.
    #[serde(rename = "type")]
    kinds: Option<String>,
    /// Only events at or after this instant (RFC 3339).
    from: Option<String>,
    /// Only events before this instant (RFC 3339).
    to: Option<String>,
    /// Items per page: default 100, at most 1,000 (larger values are capped).
    #[param(minimum = 1)]
    limit: Option<usize>,
    cursor: Option<String>,
}

// ---- accounts -------------------------------------------------------------------------------

#[utoipa::path(get, path = "/v1/ledgers/{ledger}/accounts/{account}",
    params(("ledger" = String, Path), ("account" = String, Path), ReadHeaders),
    responses((status = 200, body = AccountView), (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn get_account(
    State(query): State<Query>,
    Reader { tenant }: Reader,
    Path((ledger, account)): Path<(String, String)>,
) -> Result<Json<AccountView>, Problem> {
    let (ledger_id, account_id): (LedgerId, AccountId) = (id("ledger", &ledger)?, id("account", &account)?);
    let found = query.read_live(|s, v| s.account(v, &tenant, &ledger_id, &account_id))?;
    let found =
        found.ok_or_else(|| Problem::not_found(format!("no account {account} in ledger {ledger}")))?;
    Ok(Json(AccountView::of(&ledger, &account, found)))
}

#[utoipa::path(get, path = "/v1/ledgers/{ledger}/accounts", params(("ledger" = String, Path), ListParams, ReadHeaders),
    responses((status = 200, body = Page<AccountView>), (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn list_accounts(
    State(query): State<Query>,
    Reader { tenant }: Reader,
    Path(ledger): Path<String>,
    params: axum::extract::Query<ListParams>,
) -> Result<Json<Page<AccountView>>, Problem> {
    let ledger_id: LedgerId = id("ledger", &ledger)?;
    let prefix: Option<AccountId> = params.prefix.as_deref().map(|p| id("prefix", p)).transpose()?;
    let limit = page_size(&query, params.limit)?;
    let list = format!("accounts/{ledger}/{}", params.prefix.as_deref().unwrap_or(""));
    let after = resume(params.cursor.as_deref(), &tenant, &list, |a| match a {
        After::Account(after) => Some(after),
        _ => None,
    })?;
    let page = query
        .read_live(|s, v| {
            if !ledger_exists(s, v, &tenant, &ledger_id)? {
                return Ok(None);
            }
            s.accounts(v, &tenant, &ledger_id, prefix.as_ref(), after.as_ref(), limit).map(Some)
        })?
        .ok_or_else(|| Problem::not_found(format!("no ledger {ledger}")))?;
    Ok(Json(Page::new(
        page.items.into_iter().map(|(id, a)| AccountView::of(&ledger, id.as_str(), a)).collect(),
        page.next.map(|last| cursor::encode(&tenant, &list, After::Account(last))),
    )))
}

#[utoipa::path(get, path = "/v1/ledgers/{ledger}/accounts/{account}/statement",
    params(("ledger" = String, Path), ("account" = String, Path), StatementParams, ReadHeaders),
    responses((status = 200, body = Page<LineView>), (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn statement(
    State(query): State<Query>,
    Reader { tenant }: Reader,
    Path((ledger, account)): Path<(String, String)>,
    params: axum::extract::Query<StatementParams>,
) -> Result<Json<Page<LineView>>, Problem> {
    let (ledger_id, account_id): (LedgerId, AccountId) = (id("ledger", &ledger)?, id("account", &account)?);
    let only = params.asset.as_deref().map(asset).transpose()?;
    let limit = page_size(&query, params.limit)?;
    let list = format!("statement/{ledger}/{account}/{}", params.asset.as_deref().unwrap_or("*"));
    let before = resume(params.cursor.as_deref(), &tenant, &list, |a| match a {
        After::Line(offset, line) => Some((offset, line)),
        _ => None,
    })?;
    let page = query
        .read_live(|s, v| {
            if s.account(v, &tenant, &ledger_id, &account_id)?.is_none() {
                return Ok(None);
            }
            s.statement(v, &tenant, &ledger_id, &account_id, only.as_ref(), before, limit).map(Some)
        })?
        .ok_or_else(|| Problem::not_found(format!("no account {account} in ledger {ledger}")))?;
    Ok(Json(Page::new(
        page.items.into_iter().map(LineView::of).collect(),
        page.next.map(|(offset, line)| cursor::encode(&tenant, &list, After::Line(offset, line))),
    )))
}

#[utoipa::path(get, path = "/v1/ledgers/{ledger}/accounts/{account}/balance",
    params(("ledger" = String, Path), ("account" = String, Path), BalanceParams, ReadHeaders),
    responses((status = 200, body = BalancesAtView), (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn balance_at(
    State(query): State<Query>,
    Reader { tenant }: Reader,
    Path((ledger, account)): Path<(String, String)>,
    params: axum::extract::Query<BalanceParams>,
) -> Result<Json<BalancesAtView>, Problem> {
    let (ledger_id, account_id): (LedgerId, AccountId) = (id("ledger", &ledger)?, id("account", &account)?);
    let at_ms = instant("at", &params.at)?;
    let only = params.asset.as_deref().map(asset).transpose()?;
    let balances = query
        .read_live(|s, v| {
            let Some(found) = s.account(v, &tenant, &ledger_id, &account_id)? else { return Ok(None) };
            let assets = match only {
                Some(asset) => vec![asset],
                None => found.balances.into_keys().collect(),
            };
            let mut balances = Vec::with_capacity(assets.len());
            for asset in assets {
                let posted = s.balance_at(v, &tenant, &ledger_id, &account_id, &asset, at_ms)?;
                balances.push(BalanceAtView { asset: asset.to_string(), posted });
            }
            Ok(Some(balances))
        })?
        .ok_or_else(|| Problem::not_found(format!("no account {account} in ledger {ledger}")))?;
    Ok(Json(BalancesAtView { ledger, account, at: time(at_ms), balances }))
}

// ---- transactions and outcomes --------------------------------------------------------------

#[utoipa::path(get, path = "/v1/ledgers/{ledger}/transactions/{tx_id}",
    params(("ledger" = String, Path), ("tx_id" = String, Path), ReadHeaders),
    responses((status = 200, body = TransactionView), (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn get_transaction(
    State(query): State<Query>,
    Reader { tenant }: Reader,
    Path((ledger, tx_id)): Path<(String, String)>,
) -> Result<Json<TransactionView>, Problem> {
    let (ledger_id, tx): (LedgerId, TxId) = (id("ledger", &ledger)?, id("tx_id", &tx_id)?);
    let found = query.read_live(|s, v| s.transaction(v, &tenant, &ledger_id, &tx))?;
    let found =
        found.ok_or_else(|| Problem::not_found(format!("no transaction {tx_id} in ledger {ledger}")))?;
    Ok(Json(TransactionView::of(&ledger, &tx_id, found)))
}

/// Which command a command id names (`GET /v1/commands/{id}`).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct OutcomeParams {
    /// The command's stream: its ledger, or `state/TYPE/KEY` for a document. A command id names
    /// one command per stream; needed only when the id was used in several (else 409).
    stream: Option<String>,
}

/// The first answer to a command (a repeat or a conflict under the same id never replaces it),
/// answered as the write that sent it was: the outcome, or for a rejection a problem with its
/// reason (the same view and statuses as the front door's `GET /v1/commands/{id}`).
#[utoipa::path(get, path = "/v1/commands/{command_id}", params(("command_id" = String, Path), OutcomeParams, ReadHeaders),
    responses((status = 200, body = Outcome), (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "rejected as a conflict (COMMAND_ID_CONFLICT, ID_CONFLICT, ...), or the id names a command in several streams: pass stream", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "rejected by the rules; `reason` says why", body = Problem, content_type = "application/problem+json")))]
async fn get_outcome(
    State(query): State<Query>,
    Reader { tenant }: Reader,
    Path(command_id): Path<String>,
    params: axum::extract::Query<OutcomeParams>,
) -> Result<Response, Problem> {
    let command: CommandId = id("command_id", &command_id)?;
    let wanted = params.stream.as_deref().map(stream).transpose()?;
    let mut found = query.read_live(|s, v| s.outcomes(v, &tenant, &command))?;
    found.retain(|(s, _)| wanted.as_ref().is_none_or(|wanted| wanted == s));
    match found.len() {
        0 => Err(Problem::not_found(format!("no outcome of command {command_id} yet"))),
        1 => {
            let row = found.remove(0).1;
            let outcome = Outcome::of(&row.event, row.partition, row.offset).map_err(|e| {
                tracing::error!(%command_id, "writing an outcome: {e}");
                Problem::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error",
                    "the outcome could not be written",
                )
            })?;
            Ok(outcome.respond(false))
        }
        _ => {
            let streams: Vec<&StreamId> = found.iter().map(|(s, _)| s).collect();
            Err(tally_http::outcome::ambiguous(&command_id, &streams))
        }
    }
}

// ---- state documents ------------------------------------------------------------------------

#[utoipa::path(get, path = "/v1/state/{doc_type}/{key}", params(("doc_type" = String, Path), ("key" = String, Path), ReadHeaders),
    responses((status = 200, body = DocumentView, headers(("etag" = String, description = "the version, quoted"))),
        (status = 304, description = "If-None-Match names the current version"), (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn get_document(
    State(query): State<Query>,
    Reader { tenant }: Reader,
    headers: HeaderMap,
    Path((doc_type, key)): Path<(String, String)>,
) -> Result<Response, Problem> {
    let (t, k): (DocType, DocKey) = (id("doc_type", &doc_type)?, id("key", &key)?);
    let found = query.read_live(|s, v| s.document(v, &tenant, &t, &k))?;
    let view = match found {
        Some(doc) => DocumentView::of(&doc_type, &key, doc)?,
        None => None,
    }
    .ok_or_else(|| Problem::not_found(format!("no document {doc_type}/{key}")))?;
    let etag = format!("\"{}\"", view.version);
    let matches = headers.get(header::IF_NONE_MATCH).is_some_and(|v| v.as_bytes() == etag.as_bytes());
    let mut response = match matches {
        true => StatusCode::NOT_MODIFIED.into_response(),
        false => Json(view).into_response(),
    };
    let etag = HeaderValue::from_str(&etag).expect("digits and quotes");
    response.headers_mut().insert(header::ETAG, etag);
    Ok(response)
}

/// Most field filters in one request.
const FILTERS_MAX: usize = 8;

/// `?field.NAME=VALUE`: a document's top-level field NAME equals VALUE, as a string or, when
/// VALUE is JSON (a number, `true`, `false`, `null`), as that value.
fn field_filters(raw: &str) -> Result<(ListParams, Vec<(String, String)>), Problem> {
    let (mut paging, mut filters) = (Vec::new(), Vec::new());
    for (name, value) in url::form_urlencoded::parse(raw.as_bytes()) {
        match name.strip_prefix("field.") {
            Some("") => return Err(Problem::bad_request("field.: a filter needs a field name")),
            Some(field) => filters.push((field.to_owned(), value.into_owned())),
            None => paging.push((name.into_owned(), value.into_owned())),
        }
    }
    if filters.len() > FILTERS_MAX {
        return Err(Problem::bad_request(format!("at most {FILTERS_MAX} field filters")));
    }
    let query = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(paging).finish();
    let params = serde_urlencoded_params(&query)?;
    Ok((params, filters))
}

/// The paging parameters, with the same errors axum's extractor gives.
fn serde_urlencoded_params(query: &str) -> Result<ListParams, Problem> {
    let uri: axum::http::Uri =
        format!("/?{query}").parse().map_err(|_| Problem::bad_request("malformed query"))?;
    axum::extract::Query::<ListParams>::try_from_uri(&uri)
        .map(|q| q.0)
        .map_err(|e| Problem::bad_request(e.body_text()))
}

/// Whether a document's top-level fields equal `filters`. A field that cannot be read as a
/// JSON value here (a number beyond a double, nesting past serde_json's limit: documents
/// written before the front door refused those) matches nothing.
fn matches_filters(value: &serde_json::value::RawValue, filters: &[(String, String)]) -> bool {
    use serde_json::Value;
    let fields = serde_json::from_str::<HashMap<String, &serde_json::value::RawValue>>(value.get());
    let Ok(fields) = fields else { return false };
    filters.iter().all(|(field, wanted)| {
        match fields.get(field).map(|raw| serde_json::from_str::<Value>(raw.get())) {
            Some(Ok(Value::String(s))) => &s == wanted,
            Some(Ok(other)) => serde_json::from_str::<Value>(wanted).is_ok_and(|w| w == other),
            Some(Err(_)) | None => false,
        }
    })
}

#[utoipa::path(get, path = "/v1/state/{doc_type}",
    params(("doc_type" = String, Path), ListParams,
        ("field.NAME" = Option<String>, Query, description = "only documents whose top-level field NAME equals this (repeatable, up to 8)"),
        ReadHeaders),
    responses((status = 200, body = Page<DocumentView>)))]
async fn list_documents(
    State(query): State<Query>,
    Reader { tenant }: Reader,
    Path(doc_type): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Page<DocumentView>>, Problem> {
    let t: DocType = id("doc_type", &doc_type)?;
    let (params, filters) = field_filters(raw.as_deref().unwrap_or(""))?;
    let prefix: Option<DocKey> = params.prefix.as_deref().map(|p| id("prefix", p)).transpose()?;
    let limit = page_size(&query, params.limit)?;
    let list = format!("state/{doc_type}/{}/{filters:?}", params.prefix.as_deref().unwrap_or(""));
    let after = resume(params.cursor.as_deref(), &tenant, &list, |a| match a {
        After::Document(after) => Some(after),
        _ => None,
    })?;
    let scan_max = query.config().scan_max;
    let found = query.read_live(|s, v| {
        let read =
            |after: Option<&DocKey>| s.documents(v, &tenant, &t, prefix.as_ref(), after, reads::PAGE_MAX);
        let keep = |(key, doc): (DocKey, _)| {
            let view = DocumentView::of(doc_type.as_str(), key.as_str(), doc)
                .map_err(|problem| tally_store::StoreError::Corrupt(problem.detail))?;
            Ok(view.filter(|view| filters.is_empty() || matches_filters(&view.value, &filters)))
        };
        filtered(after, (limit, scan_max), read, |(key, _)| key.clone(), keep)
    })?;
    let next =
        found.more.then(|| found.last.map(|last| cursor::encode(&tenant, &list, After::Document(last))));
    Ok(Json(Page::new(found.items, next.flatten())))
}

// ---- events ---------------------------------------------------------------------------------

#[utoipa::path(get, path = "/v1/events", params(EventParams, ReadHeaders),
    responses((status = 200, body = Page<EventView>)))]
async fn search_events(
    State(query): State<Query>,
    Reader { tenant }: Reader,
    params: axum::extract::Query<EventParams>,
) -> Result<Json<Page<EventView>>, Problem> {
    let filter = EventFilter::parse(params.kinds.as_deref(), params.from.as_deref(), params.to.as_deref())?;
    let limit = page_size(&query, params.limit)?;
    let list = format!(
        "events/{}/{}/{}/{}",
        params.stream.as_deref().unwrap_or("*"),
        params.kinds.as_deref().unwrap_or(""),
        params.from.as_deref().unwrap_or(""),
        params.to.as_deref().unwrap_or("")
    );
    let cursor = params.cursor.as_deref();
    let EventsFound { rows, next, resume } = match params.stream.as_deref() {
        Some(name) => {
            let (rows, next) = in_stream(&query, (&tenant, stream(name)?), &filter, (cursor, &list), limit)?;
            EventsFound { rows, next, resume: None }
        }
        None => across_streams(&query, &tenant, &filter, (cursor, &list), limit)?,
    };
    let items = rows.into_iter().map(EventView::of).collect::<Result<_, _>>()?;
    let mut page = Page::new(items, next.map(|next| cursor::encode(&tenant, &list, next)));
    page.resume_cursor = resume.map(|resume| cursor::encode(&tenant, &list, resume));
    Ok(Json(page))
}

/// A page of an event search: its rows, where the next page starts, and (at the end of a
/// search across streams) where the next pass starts.
struct EventsFound {
    rows: Vec<EventRow>,
    next: Option<After>,
    resume: Option<After>,
}

/// A search within one stream, in stream order.
fn in_stream(
    query: &Query,
    (tenant, stream): (&TenantId, StreamId),
    filter: &EventFilter,
    (cursor, list): (Option<&str>, &str),
    limit: usize,
) -> Result<(Vec<EventRow>, Option<After>), Problem> {
    let after = resume(cursor, tenant, list, |a| match a {
        After::StreamVersion(after) => Some(after),
        _ => None,
    })?;
    let bounds = (limit, query.config().scan_max);
    let found =
        query.read_live(|s, v| stream_page(s, v, (tenant, &stream), filter, after.unwrap_or(0), bounds))?;
    let next = found.last.filter(|_| found.more).map(After::StreamVersion);
    Ok((found.items, next))
}

/// A search across all of a tenant's streams, in time order within each pass
/// ([`TimelinePass`]), from `from` (default: the first event) to `to` (default: no end). A page
/// reads at most `scan_max` timeline rows whatever the range (both stores skip days without
/// events), so no range is too long. Kinds are in the timeline itself: only the events wanted
/// are read. Returns the rows, the next page's place, and, when the pass is over, where the
/// next pass starts.
fn across_streams(
    query: &Query,
    tenant: &TenantId,
    filter: &EventFilter,
    (cursor, list): (Option<&str>, &str),
    limit: usize,
) -> Result<EventsFound, Problem> {
    let pass = resume(cursor, tenant, list, |a| match a {
        After::Timeline(pass) => Some(pass),
        _ => None,
    })?
    .unwrap_or_default();
    let bounds = (limit, query.config().scan_max);
    let (found, upto) = query.read_live(|s, v| timeline_page(s, v, tenant, filter, &pass, bounds))?;
    if found.more {
        let next = TimelinePass { after: found.last, seen: pass.seen.clone(), upto: Some(upto) };
        return Ok(EventsFound { rows: found.items, next: Some(After::Timeline(next)), resume: None });
    }
    // The pass is over: the next one shows what was projected after this one pinned.
    let resume = After::Timeline(next_pass(&pass, &upto));
    Ok(EventsFound { rows: found.items, next: None, resume: Some(resume) })
}

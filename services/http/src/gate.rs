//! The gate in front of every Tally HTTP listener: header size limit, authentication, the rate
//! limit per caller, and authorization, in that order; then CORS around all of it.
//!
//! - Health, metrics and the OpenAPI document are public ([`PUBLIC_PATHS`]).
//! - The action is read for `GET`/`HEAD`, admin under `/admin/`, write otherwise.
//! - The authenticated caller goes into the request's extensions; handlers take it as a
//!   [`Caller`], so a handler cannot run without one.
//! - When the policy judges answers (`data.tally.response`), a successful answer to a read goes
//!   through it on the way out ([`crate::answers`]).

use crate::Problem;
use axum::Router;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use prometheus::{IntCounterVec, register_int_counter_vec};
use std::num::NonZeroU32;
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use tally_auth::{Access, Action, AuthError, Authenticator, Principal};
use tally_core::{Actor, TenantId};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// Paths anyone may read: probes, scrapes and the API description.
pub const PUBLIC_PATHS: [&str; 4] = ["/healthz", "/readyz", "/metrics", "/openapi.json"];

/// Rate-limit entries kept before idle callers are forgotten.
const LIMITER_KEYS_MAX: usize = 10_000;

static REFUSED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "tally_http_refused_total",
        "Requests the gate refused before any handler ran, by status (401, 403, 429, 431)",
        &["status"]
    )
    .expect("registered once")
});

/// Knobs of the gate.
#[derive(Debug, Clone)]
pub struct GateConfig {
    /// Requests per second each caller may make on average; 0 = no limit.
    pub rate_per_second: u32,
    /// Requests a caller may make at once above the average.
    pub rate_burst: u32,
    /// Largest total size of a request's headers (names and values), in bytes.
    pub header_bytes_max: usize,
    /// Browser origins allowed to call (`https://app.example`); empty = no CORS headers, so
    /// browsers on other origins are refused; `*` = any origin.
    pub cors_origins: Vec<String>,
}

impl Default for GateConfig {
    fn default() -> Self {
        GateConfig {
            rate_per_second: 0,
            rate_burst: 50,
            header_bytes_max: 16 * 1024,
            cors_origins: Vec::new(),
        }
    }
}

/// The gate: authenticator, rate limiter and CORS settings. Cheap to clone; clones share one
/// rate limiter, so a caller's limit counts across every router they protect.
#[derive(Clone)]
pub struct Gate {
    inner: Arc<Inner>,
}

struct Inner {
    auth: Authenticator,
    limiter: Option<DefaultKeyedRateLimiter<String>>,
    header_bytes_max: usize,
    cors: Option<CorsLayer>,
    /// The same origins, for the gRPC listener's grpc-web calls (other headers and methods).
    grpc_cors: Option<CorsLayer>,
}

impl Gate {
    /// A gate that authenticates and authorizes with `auth` under `config`; fails when a CORS
    /// origin is not a valid header value.
    pub fn new(auth: Authenticator, config: &GateConfig) -> Result<Gate, String> {
        let limiter = NonZeroU32::new(config.rate_per_second).map(|rate| {
            let burst = NonZeroU32::new(config.rate_burst).unwrap_or(rate);
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        let origins = allowed_origins(&config.cors_origins)?;
        let cors = origins.clone().map(http_cors);
        let grpc_cors = origins.map(grpc_cors);
        let header_bytes_max = config.header_bytes_max;
        Ok(Gate { inner: Arc::new(Inner { auth, limiter, header_bytes_max, cors, grpc_cors }) })
    }

    /// CORS for the gRPC listener, so that a browser on an allowed origin can make grpc-web
    /// calls (its preflight answered, gRPC's status and Tally's headers readable); `None`
    /// when no origin is allowed.
    pub fn grpc_cors(&self) -> Option<CorsLayer> {
        self.inner.grpc_cors.clone()
    }

    /// `router` behind the gate.
    pub fn protect(&self, router: Router) -> Router {
        let router = router.layer(axum::middleware::from_fn_with_state(self.clone(), check));
        match &self.inner.cors {
            Some(cors) => router.layer(cors.clone()),
            None => router,
        }
    }
}

/// The origins `origins` allows (`*`: any); `None` when empty (no CORS headers at all).
fn allowed_origins(origins: &[String]) -> Result<Option<AllowOrigin>, String> {
    if origins.is_empty() {
        return Ok(None);
    }
    if origins.iter().any(|o| o == "*") {
        return Ok(Some(AllowOrigin::any()));
    }
    let parsed: Result<Vec<HeaderValue>, String> = origins
        .iter()
        .map(|o| HeaderValue::from_str(o).map_err(|_| format!("CORS origin {o:?} is not a header value")))
        .collect();
    Ok(Some(AllowOrigin::list(parsed?)))
}

fn names(names: &[&'static str]) -> Vec<HeaderName> {
    names.iter().map(|n| HeaderName::from_static(n)).collect()
}

/// Request headers of Tally's own that a browser may send, over HTTP and gRPC alike.
const TALLY_REQUEST_HEADERS: [&str; 8] = [
    "authorization",
    "content-type",
    "idempotency-key",
    "if-match",
    "if-none-match",
    crate::POSITION_HEADER,
    "traceparent",
    "tracestate",
];

/// How long a browser may keep a preflight's answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

fn http_cors(allow: AllowOrigin) -> CorsLayer {
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
        .allow_headers([names(&TALLY_REQUEST_HEADERS), names(&["last-event-id"])].concat())
        .expose_headers(names(&["etag", "location", "retry-after", crate::POSITION_HEADER]))
        .max_age(PREFLIGHT_MAX_AGE)
}

/// grpc-web's own headers besides Tally's (as the grpc-web protocol and its clients use them:
/// github.com/grpc/grpc/blob/master/doc/PROTOCOL-WEB.md).
fn grpc_cors(allow: AllowOrigin) -> CorsLayer {
    let grpc_web = ["x-grpc-web", "x-user-agent", "grpc-timeout"];
    let grpc_status = ["grpc-status", "grpc-message", "grpc-status-details-bin"];
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::POST])
        .allow_headers([names(&TALLY_REQUEST_HEADERS), names(&grpc_web)].concat())
        .expose_headers([names(&grpc_status), names(&["etag", crate::POSITION_HEADER])].concat())
        .max_age(PREFLIGHT_MAX_AGE)
}

async fn check(State(gate): State<Gate>, mut request: Request, next: Next) -> Response {
    match admit(&gate.inner, &mut request) {
        Ok(None) => next.run(request).await,
        Ok(Some(read)) => {
            let answer = next.run(request).await;
            crate::answers::judged(gate.inner.auth.clone(), read, answer).await
        }
        Err(refusal) => {
            REFUSED.with_label_values(&[refusal.status().as_str()]).inc();
            refusal
        }
    }
}

/// Lets the request through (with its caller in the extensions), or answers for it. A read
/// comes back, for its answer to be judged ([`crate::answers`]).
fn admit(gate: &Inner, request: &mut Request) -> Result<Option<crate::answers::Read>, Response> {
    let header_bytes: usize = request.headers().iter().map(|(k, v)| k.as_str().len() + v.len()).sum();
    if header_bytes > gate.header_bytes_max {
        let detail =
            format!("the headers are {header_bytes} bytes; at most {} are accepted", gate.header_bytes_max);
        return Err(Problem::new(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "headers too large", detail)
            .into_response());
    }
    if PUBLIC_PATHS.contains(&request.uri().path()) {
        return Ok(None);
    }
    let token = bearer(request)?.map(str::to_owned);
    let who = gate.auth.authenticate(token.as_deref()).map_err(refused)?;
    if let Some(limiter) = &gate.limiter {
        if limiter.len() > LIMITER_KEYS_MAX {
            limiter.retain_recent();
        }
        limiter.check_key(&who.limit_key).map_err(|_| too_many())?;
    }
    // The routes decode the path's parameters, so the policy reads the path decoded too.
    let path = percent_encoding::percent_decode_str(request.uri().path())
        .decode_utf8()
        .map_err(|_| Problem::bad_request("the path is not UTF-8 once percent-decoded").into_response())?;
    let query = request.uri().query().unwrap_or_default();
    let access = Access { action: action(request), method: request.method().as_str(), path: &path, query };
    gate.auth.authorize(&who, access).map_err(refused)?;
    let read = (access.action == Action::Read).then(|| crate::answers::Read {
        who: who.clone(),
        token: token.clone(),
        method: access.method.to_owned(),
        path: path.clone().into_owned(),
        query: query.to_owned(),
        head: request.method() == Method::HEAD,
    });
    if read.is_some() && gate.auth.judges_responses() {
        // A judged read is answered in full: a 304 has no body to judge (and would tell a
        // caller the policy refuses that a document exists at that version), and a HEAD is
        // answered as the GET it stands for would be, once judged. A write's If-None-Match is
        // its condition, and stays.
        request.headers_mut().remove(header::IF_NONE_MATCH);
        if request.method() == Method::HEAD {
            *request.method_mut() = Method::GET;
        }
    }
    request.extensions_mut().insert(who);
    Ok(read)
}

fn action(request: &Request) -> Action {
    match request.method() {
        _ if request.uri().path().starts_with("/admin/") => Action::Admin,
        &Method::GET | &Method::HEAD => Action::Read,
        _ => Action::Write,
    }
}

/// The bearer token of the `Authorization` header, if any.
fn bearer(request: &Request) -> Result<Option<&str>, Response> {
    let Some(value) = request.headers().get(header::AUTHORIZATION) else { return Ok(None) };
    let scheme_and_token = value.to_str().ok().and_then(|v| v.split_once(' '));
    match scheme_and_token {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => Ok(Some(token.trim())),
        _ => Err(refused(AuthError::Invalid("the Authorization header is not `Bearer <token>`".into()))),
    }
}

fn refused(e: AuthError) -> Response {
    let (status, title, challenge) = match &e {
        AuthError::Missing => (StatusCode::UNAUTHORIZED, "unauthorized", r#"Bearer realm="tally""#),
        AuthError::Invalid(_) => {
            (StatusCode::UNAUTHORIZED, "unauthorized", r#"Bearer realm="tally", error="invalid_token""#)
        }
        AuthError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", ""),
    };
    let mut response = Problem::new(status, title, e.to_string()).into_response();
    if !challenge.is_empty() {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    }
    response
}

fn too_many() -> Response {
    let problem = Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too many requests",
        "this caller's rate limit is used up; retry shortly",
    );
    let mut response = problem.into_response();
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// Who is calling: the tenant every read and write of the request is scoped to, and the actor
/// recorded in the events it causes. Only the gate can provide it.
#[derive(Debug, Clone)]
pub struct Caller(Arc<Principal>);

impl Caller {
    /// The caller's tenant: the only one whose data this request may read or change.
    pub fn tenant(&self) -> &TenantId {
        &self.0.tenant
    }

    /// The caller's subject (`key:<id>` for an API key, the JWT's `sub`), recorded in events.
    pub fn actor(&self) -> &Actor {
        &self.0.subject
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Caller, Problem> {
        match parts.extensions.get::<Arc<Principal>>() {
            Some(who) => Ok(Caller(who.clone())),
            // Only a listener wired without the gate gets here.
            None => {
                Err(Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", AuthError::Missing.to_string()))
            }
        }
    }
}

/// Declares, in an OpenAPI document (`modifiers(&BearerAuth)`), the bearer scheme and the
/// answers the gate may give to any operation (401, 403, 429, 431).
pub struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some("An API key (`tly_...`) or a JWT from the configured identity provider"))
            .build();
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme("bearer", SecurityScheme::Http(scheme));
        crate::problem::document_on_every_operation(
            openapi,
            &[
                ("401", "no credentials, or credentials that were refused"),
                ("403", "the caller's roles or the policy do not allow this"),
                ("429", "the caller's rate limit is used up"),
                ("431", "the request's headers are too large"),
            ],
        );
    }
}

//! Errors as RFC 9457 problem details (`application/problem+json`). Details describe the
//! client's input, never the server's insides: broker and internal errors are logged and
//! answered with a generic 503.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An error answer: an RFC 9457 problem details document (`application/problem+json`) with
/// `title`, `status`, `detail` and Tally's extension members. It has no `type` member, which
/// RFC 9457 reads as `about:blank`. 503 answers also get `Retry-After: 1`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A short, stable summary of the problem type.
    pub title: String,
    /// The HTTP status code, repeated in the body (advisory: RFC 9457 section 3.1.2).
    pub status: u16,
    /// What was wrong with this request.
    pub detail: String,
    /// Stable reason code of a rejected command (`INSUFFICIENT_FUNDS`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The command this is about, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command_id: Option<String>,
    /// A `Tally-Position` token: where a rejected command's event is in the log (a rejected
    /// command is still recorded), or, on the query API's 504, how far the projection has got.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<String>,
}

impl Problem {
    /// A problem with `status`, a short `title` and the `detail` of this request.
    pub fn new(status: StatusCode, title: &str, detail: impl Into<String>) -> Problem {
        Problem {
            title: title.to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            reason: None,
            command_id: None,
            position: None,
        }
    }

    /// 400, "invalid request": malformed input, nothing done.
    pub fn bad_request(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, "invalid request", detail)
    }

    /// 404, "not found" (also what another tenant's things answer).
    pub fn not_found(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, "not found", detail)
    }

    /// The broker could not take the command; the caller may retry with the same id.
    pub fn unavailable() -> Problem {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily unavailable",
            "the command could not be accepted right now; retry with the same Idempotency-Key",
        )
    }

    /// The outcomes already in the log are still being read after a start: an unknown command
    /// may be answered there. The caller retries shortly.
    pub fn catching_up() -> Problem {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "catching up",
            "this instance is still reading the outcomes already in the log; retry shortly",
        )
    }

    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

/// Error responses that axum's extractors and layers produce on their own (a body over the
/// limit, a malformed path, a wrong method) come as text; they are rewritten as problems so that
/// every error a client sees has one shape.
pub async fn as_problem(response: Response) -> Response {
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"application/problem+json"));
    // A JSON answer is deliberate (`/readyz`'s 503 lists its checks); only text is rewritten.
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_problem || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let detail = match std::str::from_utf8(&text).map(str::trim) {
        Ok(text) if !text.is_empty() => text.to_owned(),
        _ => status.canonical_reason().unwrap_or("error").to_owned(),
    };
    // One title per status: a 400 is "invalid request" whether a route or the framework found
    // the input malformed.
    let title = match status {
        StatusCode::BAD_REQUEST => "invalid request".to_owned(),
        _ => status.canonical_reason().unwrap_or("error").to_ascii_lowercase(),
    };
    let mut problem = Problem::new(status, &title, detail).into_response();
    for name in [header::ALLOW, header::RETRY_AFTER] {
        if let Some(value) = parts.headers.get(&name) {
            problem.headers_mut().insert(name, value.clone());
        }
    }
    problem
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let mut response = (status, axum::Json(self)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// Declares `answers` (status, description), each a problem document, on every operation of
/// `openapi`: for answers that something in front of every handler may give (the gate, an
/// extractor every handler takes).
pub fn document_on_every_operation(openapi: &mut utoipa::openapi::OpenApi, answers: &[(&str, &str)]) {
    document_problems_on_operations(openapi, |_| true, answers);
}

/// Declares `answers` (status, description), each a problem document, on the operations of
/// `openapi` whose operation id (the handler's name) passes `which`.
pub fn document_problems_on_operations(
    openapi: &mut utoipa::openapi::OpenApi,
    which: impl Fn(&str) -> bool,
    answers: &[(&str, &str)],
) {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    let problem = ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build();
    let responses: Vec<_> = answers
        .iter()
        .map(|(status, description)| {
            let response = ResponseBuilder::new()
                .description(*description)
                .content("application/problem+json", problem.clone())
                .build();
            (*status, response)
        })
        .collect();
    document_on_operations(openapi, which, &responses);
}

/// Declares `answers` (status, response) on the operations of `openapi` whose operation id
/// passes `which`, replacing what an operation declared for the same status.
pub fn document_on_operations(
    openapi: &mut utoipa::openapi::OpenApi,
    which: impl Fn(&str) -> bool,
    answers: &[(&str, utoipa::openapi::Response)],
) {
    for item in openapi.paths.paths.values_mut() {
        let operations = [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch];
        for operation in operations.into_iter().flatten() {
            if !which(operation.operation_id.as_deref().unwrap_or_default()) {
                continue;
            }
            for (status, response) in answers {
                operation.responses.responses.insert((*status).to_owned(), response.clone().into());
            }
        }
    }
}

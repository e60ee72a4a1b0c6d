//! Errors as RFC 9457 problem details (`application/problem+json`). Details describe the
//! client's input, never the server's insides: broker and internal errors are logged and
//! answered with a generic 503.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A short, stable summary of the problem type.
    pub title: String,
    pub status: u16,
    /// What was wrong with this request.
    pub detail: String,
    /// Stable reason code of a rejected command (`INSUFFICIENT_FUNDS`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The command this is about, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command_id: Option<String>,
    /// Where the rejection is in the log (a rejected command is still recorded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<String>,
}

impl Problem {
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

    pub fn bad_request(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, "invalid request", detail)
    }

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

    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let mut response = (status, axum::Json(self)).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        response
    }
}

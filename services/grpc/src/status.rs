//! The one mapping from Tally's answers to gRPC status codes.
//!
//! A refusal's reason code (`INSUFFICIENT_FUNDS`, ...) decides its code where there is one
//! ([`code_of_reason`], following the guidance of google.rpc.Code and AIP-193: a rule of the
//! ledger refusing the current state is FAILED_PRECONDITION, something that exists already is
//! ALREADY_EXISTS, a concurrent change is ABORTED); otherwise the HTTP status does
//! ([`code_of_http`]). Every error status carries a `google.rpc.ErrorInfo` with domain
//! [`DOMAIN`], the reason (or the problem's kind, `INVALID_REQUEST`, ...), and metadata
//! `http_status`, `command_id` and `position` when known.

use serde::Deserialize;
use std::collections::HashMap;
use tally_core::Reason;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The `domain` of every ErrorInfo Tally gives.
pub const DOMAIN: &str = "tally";

/// The gRPC code of a refusal for `reason`.
pub fn code_of_reason(reason: Reason) -> Code {
    use Reason::*;
    match reason {
        AccountExists | AssetConflict | IdConflict | CommandIdConflict => Code::AlreadyExists,
        VersionMismatch => Code::Aborted,
        AccountNotFound | TransactionNotFound | DocumentNotFound => Code::NotFound,
        Overflow => Code::OutOfRange,
        NonPositiveAmount | SelfPosting | NoPostings | TooManyPostings | MetadataTooLarge
        | InvalidTimeout | InvalidCommitAmounts | InvalidJson | DocumentTooLarge => Code::InvalidArgument,
        InsufficientFunds | UnknownAsset | AccountClosed | AccountNotEmpty | WorldAccount
        | LimitBelowBalance | NotPending | PendingExpired | NotYetExpired | NotReversible
        | AlreadyReversed => Code::FailedPrecondition,
    }
}

/// The gRPC code of an HTTP status that is not a success.
pub fn code_of_http(status: u16) -> Code {
    match status {
        400 | 405 | 413 | 415 => Code::InvalidArgument,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::NotFound,
        409 => Code::AlreadyExists,
        412 | 422 => Code::FailedPrecondition,
        429 | 431 => Code::ResourceExhausted,
        501 => Code::Unimplemented,
        503 => Code::Unavailable,
        504 => Code::DeadlineExceeded,
        _ => Code::Internal,
    }
}

/// A problem (RFC 9457) as the HTTP API answers it.
#[derive(Debug, Default, Deserialize)]
struct Problem {
    #[serde(default)]
    title: String,
    #[serde(default)]
    detail: String,
    reason: Option<String>,
    command_id: Option<String>,
    position: Option<String>,
}

/// The status for an HTTP answer `status` with `body` (a problem, or any text) and `headers`
/// (the answer's metadata, as on a success; `retry-after` also as a RetryInfo).
pub fn of_answer(status: u16, body: &[u8], headers: &http::HeaderMap) -> Status {
    let problem: Problem = serde_json::from_slice(body).unwrap_or_else(|_| Problem {
        title: String::from_utf8_lossy(body).chars().take(200).collect(),
        ..Problem::default()
    });
    let known = problem.reason.as_deref().and_then(Reason::from_code);
    let code = known.map_or_else(|| code_of_http(status), code_of_reason);
    let reason = match (&problem.reason, status) {
        (Some(reason), _) => reason.clone(),
        // Every malformed request is one kind, whoever found it (a route or its extractor).
        (None, 400) => "INVALID_REQUEST".to_owned(),
        (None, _) => kind(&problem.title, status),
    };
    let mut metadata = HashMap::from([("http_status".to_owned(), status.to_string())]);
    metadata.extend(problem.command_id.map(|id| ("command_id".to_owned(), id)));
    metadata.extend(problem.position.map(|p| ("position".to_owned(), p)));
    let message = match (problem.detail.is_empty(), problem.title.is_empty()) {
        (false, _) => problem.detail,
        (true, false) => problem.title,
        (true, true) => format!("HTTP {status}"),
    };
    let mut details = ErrorDetails::with_error_info(reason, DOMAIN, metadata);
    let retry_after =
        headers.get(http::header::RETRY_AFTER).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if let Some(seconds) = retry_after {
        details.set_retry_info(Some(std::time::Duration::from_secs(seconds)));
    }
    Status::with_error_details_and_metadata(
        code,
        message,
        details,
        crate::transcode::answer_metadata(headers),
    )
}

/// A problem's title as an ErrorInfo reason: `invalid request` -> `INVALID_REQUEST` (the
/// HTTP status's name when the title is not one).
fn kind(title: &str, status: u16) -> String {
    let upper: String =
        title.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect();
    let valid = !upper.is_empty() && upper.len() <= 63 && upper.starts_with(|c: char| c.is_ascii_uppercase());
    match valid {
        true => upper,
        false => format!("HTTP_{status}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_keeps_its_code_and_is_never_ok_nor_internal() {
        for reason in Reason::ALL {
            let body = serde_json::json!({"title": "command rejected", "detail": "no", "reason": reason.code(), "command_id": "c", "position": "0-1.x"});
            let status = of_answer(422, body.to_string().as_bytes(), &http::HeaderMap::new());
            assert_eq!(status.code(), code_of_reason(*reason), "{reason:?}");
            assert!(!matches!(status.code(), Code::Ok | Code::Internal | Code::Unknown));
            let info = status.get_error_details().error_info().cloned().expect("an ErrorInfo");
            assert_eq!(info.reason, reason.code());
            assert_eq!(info.domain, DOMAIN);
            assert_eq!(info.metadata["command_id"], "c");
            assert_eq!(info.metadata["position"], "0-1.x");
            assert_eq!(info.metadata["http_status"], "422");
        }
    }

    #[test]
    fn problems_without_a_reason_take_their_kind_and_the_http_status() {
        let none = http::HeaderMap::new();
        let status =
            of_answer(400, br#"{"title":"invalid request","status":400,"detail":"ledger: empty"}"#, &none);
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "ledger: empty");
        assert_eq!(status.get_error_details().error_info().unwrap().reason, "INVALID_REQUEST");
        let status = of_answer(413, b"length limit exceeded", &none);
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.get_error_details().error_info().unwrap().reason, "LENGTH_LIMIT_EXCEEDED");
        assert_eq!(of_answer(502, b"", &none).get_error_details().error_info().unwrap().reason, "HTTP_502");
        assert_eq!(
            of_answer(400, b"{\"title\":\"Bad Request\"}", &none)
                .get_error_details()
                .error_info()
                .unwrap()
                .reason,
            "INVALID_REQUEST"
        );
        let mut limited = http::HeaderMap::new();
        limited.insert("retry-after", "2".parse().unwrap());
        let status = of_answer(429, b"{}", &limited);
        assert_eq!(
            status.get_error_details().retry_info().unwrap().retry_delay,
            Some(std::time::Duration::from_secs(2))
        );
        assert_eq!(status.metadata().get("retry-after").unwrap(), "2");
        for (http, code) in [
            (401, Code::Unauthenticated),
            (403, Code::PermissionDenied),
            (429, Code::ResourceExhausted),
            (503, Code::Unavailable),
            (504, Code::DeadlineExceeded),
        ] {
            assert_eq!(of_answer(http, b"{}", &none).code(), code);
        }
    }
}

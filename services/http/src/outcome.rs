//! The answer to a command as HTTP serves it: one view ([`Outcome`]) and one response
//! ([`Outcome::respond`]) for every place that answers a command: the write that sent it, the
//! front door's `GET /v1/commands/{id}` while it is fresh, and the query API's
//! `GET /v1/commands/{id}` from the outcome rows later. A client gets the same status and the
//! same JSON wherever and whenever it asks.
//!
//! The classification itself (accepted, deduplicated, rejected with a reason; which reasons are
//! conflicts) is the core's [`tally_core::Answer`] and [`tally_core::Reason::is_conflict`]:
//! this module only shapes it for HTTP.

use crate::position::Position;
use crate::{POSITION_HEADER, Problem};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::value::RawValue;
use tally_core::{Answer, Event, EventBody, Reason};

/// How a command was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    /// The change was made.
    Accepted,
    /// A transaction id seen before with the same request, which was accepted: the first
    /// outcome stands.
    Deduplicated,
    /// Refused, with a reason; recorded in the log, nothing changed.
    Rejected,
}

/// The answer to one command, as the log holds it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Outcome {
    pub command_id: String,
    pub status: Status,
    /// Stable reason code when rejected (`INSUFFICIENT_FUNDS`, ...).
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "reason_code")]
    #[schema(value_type = Option<String>)]
    pub reason: Option<Reason>,
    /// What was wrong, in words, when rejected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Where the event is in the log, as a token only this tenant can use: pass it to queries
    /// (`Tally-Position`) to read your own write.
    pub position: String,
    /// The event, as the events topic carries it. Amounts are JSON integers of up to 39 digits
    /// (i128 minor units), written exactly: read them with a parser that keeps big integers.
    #[schema(value_type = Object)]
    pub event: Box<RawValue>,
    /// The fingerprint of the command this answers (who waits for it; not served).
    #[serde(skip)]
    fingerprint: u128,
}

fn reason_code<S: serde::Serializer>(reason: &Option<Reason>, s: S) -> Result<S::Ok, S::Error> {
    match reason {
        Some(reason) => s.serialize_str(reason.code()),
        None => s.serialize_none(),
    }
}

impl Outcome {
    /// The outcome an event at `offset` of events partition `partition` gives its command. For
    /// a repeat ([`Answer::Repeated`]) that is the repeat's own event; callers serve the first
    /// answer instead. Fails only if the event cannot be written as JSON.
    pub fn of(event: &Event, partition: i32, offset: i64) -> Result<Outcome, serde_json::Error> {
        let (status, reason, detail) = match (event.body.answer(), &event.body) {
            (
                Answer::Rejected(reason),
                EventBody::TransactionFailed { detail, .. } | EventBody::CommandRejected { detail, .. },
            ) => (Status::Rejected, Some(reason), Some(detail.clone())),
            (Answer::Rejected(reason), EventBody::TransactionDeduplicated { tx_id, .. }) => {
                let detail = format!("transaction {tx_id} was refused before with the same request");
                (Status::Rejected, Some(reason), Some(detail))
            }
            (Answer::Rejected(reason), _) => (Status::Rejected, Some(reason), None),
            (Answer::Deduplicated, _) => (Status::Deduplicated, None, None),
            (Answer::Accepted | Answer::Repeated { .. }, _) => (Status::Accepted, None, None),
        };
        Ok(Outcome {
            command_id: event.command_id.to_string(),
            status,
            reason,
            detail,
            position: Position { partition, offset }.token(&event.tenant),
            event: serde_json::value::to_raw_value(event)?,
            fingerprint: event.command_fingerprint,
        })
    }

    /// Whether this answers a command with `fingerprint` ([`tally_core::command_fingerprint`]).
    pub fn answers(&self, fingerprint: u128) -> bool {
        self.fingerprint == fingerprint
    }

    /// The HTTP status of this answer: 201 for an accepted request that makes something
    /// (`created`), else 200; a rejection is 409 when its reason is a conflict, else 422.
    pub fn status_code(&self, created: bool) -> StatusCode {
        match (self.status, self.reason) {
            (Status::Accepted, _) if created => StatusCode::CREATED,
            (Status::Accepted | Status::Deduplicated, _) => StatusCode::OK,
            (Status::Rejected, Some(reason)) if reason.is_conflict() => StatusCode::CONFLICT,
            (Status::Rejected, _) => StatusCode::UNPROCESSABLE_ENTITY,
        }
    }

    /// The response: the outcome as JSON, or for a rejection a problem (RFC 9457) with its
    /// reason, command id and position; the position also in the `Tally-Position` header.
    pub fn respond(&self, created: bool) -> Response {
        let status = self.status_code(created);
        let mut response = if self.status == Status::Rejected {
            let mut problem =
                Problem::new(status, "command rejected", self.detail.clone().unwrap_or_default());
            problem.reason = self.reason.map(|r| r.code().to_owned());
            problem.command_id = Some(self.command_id.clone());
            problem.position = Some(self.position.clone());
            problem.into_response()
        } else {
            (status, axum::Json(self)).into_response()
        };
        if let Ok(position) = HeaderValue::from_str(&self.position) {
            response.headers_mut().insert(POSITION_HEADER, position);
        }
        response
    }
}

/// The problem (409) for `GET /v1/commands/{id}` without `stream` when the id names a command in
/// each of `streams`.
pub fn ambiguous(command_id: &str, streams: &[impl std::fmt::Display]) -> Problem {
    let streams: Vec<String> = streams.iter().map(ToString::to_string).collect();
    Problem::new(
        StatusCode::CONFLICT,
        "ambiguous command id",
        format!(
            "{command_id} names a command in each of these streams; pass stream=: {}",
            streams.join(", ")
        ),
    )
}

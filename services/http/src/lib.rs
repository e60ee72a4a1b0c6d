//! What Tally's HTTP services (the ingest front door, the query API, the admin routes) share:
//! errors as problem details, the gate that says who is calling ([`gate`]), log positions, the
//! answer to a command ([`outcome`]), and serving (with TLS when configured).

#![allow(
    clippy::result_large_err,
    reason = "a Problem is the error of a request that is answered right away; its size costs nothing worth boxing"
)]

mod answers;
pub mod gate;
pub mod metrics;
pub mod openapi;
pub mod outcome;
pub mod position;
mod problem;
pub mod serve;
pub mod trace;

pub use gate::Caller;
pub use problem::{
    Problem, as_problem, document_on_every_operation, document_on_operations, document_problems_on_operations,
};

use axum::http::HeaderMap;

/// The header of a position token, `<partition>-<offset>.<tag>` (see [`position`]): where a
/// write's event is in the log, usable by the writer's tenant only. A write answers with it, and
/// a query that passes it reads that write.
pub const POSITION_HEADER: &str = "tally-position";

/// A header's value as text (`None` when absent; a problem when not text).
pub fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, Problem> {
    headers
        .get(name)
        .map(|v| v.to_str().map_err(|_| Problem::bad_request(format!("the {name} header is not text"))))
        .transpose()
}

//! What Tally's HTTP services (the ingest front door, the query API) share: errors as problem
//! details, and who is calling.
//!
//! Caller identity: until authentication lands (security issue), the tenant comes from the
//! `Tally-Tenant` header and the actor from `Tally-Actor`.

#![allow(
    clippy::result_large_err,
    reason = "a Problem is the error of a request that is answered right away; its size costs nothing worth boxing"
)]

pub mod metrics;
mod problem;
pub mod trace;

pub use problem::{Problem, as_problem};

use axum::http::HeaderMap;
use tally_core::TenantId;

pub const TENANT_HEADER: &str = "tally-tenant";
pub const ACTOR_HEADER: &str = "tally-actor";
/// Where a write's event is in the log (`<partition>-<offset>`): a write answers with it, and a
/// query that passes it reads that write.
pub const POSITION_HEADER: &str = "tally-position";

/// A header's value as text (`None` when absent; a problem when not text).
pub fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, Problem> {
    headers
        .get(name)
        .map(|v| v.to_str().map_err(|_| Problem::bad_request(format!("the {name} header is not text"))))
        .transpose()
}

/// The caller's tenant, from the `Tally-Tenant` header (required).
pub fn tenant(headers: &HeaderMap) -> Result<TenantId, Problem> {
    let tenant = header_text(headers, TENANT_HEADER)?
        .ok_or_else(|| Problem::bad_request(format!("the {TENANT_HEADER} header is required")))?;
    TenantId::parse(tenant).map_err(|e| Problem::bad_request(format!("{TENANT_HEADER}: {e}")))
}

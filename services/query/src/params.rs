//! What requests name, parsed and checked: ids, streams, instants, page sizes, cursors. A
//! malformed value is a 400 problem naming it.

use crate::Query;
use crate::cursor::{self, After};
use tally_core::{Asset, LedgerId, StreamId, TenantId};
use tally_http::Problem;
use tally_store::projections::{ProjectionStore, Version};
use tally_store::reads::{self, EventsIndex};

/// A path or query value as an id; malformed is 400.
pub(crate) fn id<T: TryFrom<String, Error: std::fmt::Display>>(
    what: &str,
    value: &str,
) -> Result<T, Problem> {
    T::try_from(value.to_owned()).map_err(|e| Problem::bad_request(format!("{what}: {e}")))
}

pub(crate) fn asset(value: &str) -> Result<Asset, Problem> {
    Asset::parse(value).map_err(|e| Problem::bad_request(format!("asset: {e}")))
}

pub(crate) fn stream(value: &str) -> Result<StreamId, Problem> {
    StreamId::parse(value).map_err(|e| Problem::bad_request(format!("stream: {e}")))
}

/// Milliseconds since the Unix epoch of an RFC 3339 instant.
pub(crate) fn instant(what: &str, value: &str) -> Result<i64, Problem> {
    chrono::DateTime::parse_from_rfc3339(value)
        .map(|t| t.timestamp_millis())
        .map_err(|e| Problem::bad_request(format!("{what}: {value:?} is not an RFC 3339 time ({e})")))
}

/// The page size asked for: default when absent, capped at the store's maximum, never 0.
pub(crate) fn page_size(query: &Query, limit: Option<usize>) -> Result<usize, Problem> {
    match limit {
        Some(0) => Err(Problem::bad_request("limit: must be at least 1")),
        Some(limit) => Ok(limit.min(reads::PAGE_MAX)),
        None => Ok(query.config().page_default),
    }
}

/// The place a request's cursor names in `list`, if it gave one, as `pick` takes it apart.
pub(crate) fn resume<T>(
    cursor: Option<&str>,
    tenant: &TenantId,
    list: &str,
    pick: fn(After) -> Option<T>,
) -> Result<Option<T>, Problem> {
    let Some(cursor) = cursor else { return Ok(None) };
    let wrong = || Problem::bad_request("cursor: it belongs to another list; start again without it");
    pick(cursor::decode(cursor, tenant, list, "cursor")?).map(Some).ok_or_else(wrong)
}

/// Whether a ledger has any event (else it is unknown: 404).
pub(crate) fn ledger_exists(
    store: &dyn ProjectionStore,
    version: Version,
    tenant: &TenantId,
    ledger: &LedgerId,
) -> Result<bool, tally_store::StoreError> {
    let first = store.stream_events(version, tenant, &StreamId::Ledger(ledger.clone()), 0, 1)?;
    Ok(!first.items.is_empty())
}

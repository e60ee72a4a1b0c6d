//! Which events a search or a live stream wants ([`EventFilter`]), and a filtered page of one
//! stream's events ([`stream_page`]): shared by `GET /v1/events` and `GET /v1/events/live`.

use crate::filtered::{Filtered, filtered};
use crate::params::instant;
use tally_core::projection::EventRow;
use tally_core::{StreamId, TenantId};
use tally_http::Problem;
use tally_store::projections::{ProjectionStore, Version};
use tally_store::reads::{self, EventsIndex};

/// Which of a stream's events a search or a live stream wants.
#[derive(Debug, Clone)]
pub(crate) struct EventFilter {
    pub kinds: Option<Vec<String>>,
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
}

impl EventFilter {
    pub fn parse(kinds: Option<&str>, from: Option<&str>, to: Option<&str>) -> Result<EventFilter, Problem> {
        let kinds =
            kinds.map(|k| k.split(',').map(str::trim).filter(|k| !k.is_empty()).map(str::to_owned).collect());
        let from_ms = from.map(|f| instant("from", f)).transpose()?;
        let to_ms = to.map(|t| instant("to", t)).transpose()?;
        Ok(EventFilter { kinds, from_ms, to_ms })
    }

    pub fn admits_kind(&self, kind: &str) -> bool {
        self.kinds.as_ref().is_none_or(|kinds| kinds.iter().any(|k| k == kind))
    }

    pub fn admits(&self, row: &EventRow) -> bool {
        self.admits_kind(row.event.body.kind())
            && self.from_ms.is_none_or(|from| row.event.time_ms >= from)
            && self.to_ms.is_none_or(|to| row.event.time_ms < to)
    }
}

/// A stream's events after stream version `after` that `filter` admits: up to `limit`, reading
/// at most `scan_max`.
pub(crate) fn stream_page(
    store: &dyn ProjectionStore,
    version: Version,
    (tenant, stream): (&TenantId, &StreamId),
    filter: &EventFilter,
    after: u64,
    bounds: (usize, usize),
) -> Result<Filtered<EventRow, u64>, tally_store::StoreError> {
    let read = |after: Option<&u64>| {
        store.stream_events(version, tenant, stream, after.copied().unwrap_or(0), reads::PAGE_MAX)
    };
    let keep = |row: EventRow| Ok(filter.admits(&row).then_some(row));
    filtered(Some(after), bounds, read, |row| row.event.stream_version, keep)
}

//! Which events a search or a live stream wants ([`EventFilter`]), a filtered page of one
//! stream's events ([`stream_page`]), and a page of a tenant's timeline in passes
//! ([`timeline_page`]): shared by `GET /v1/events` and `GET /v1/events/live`.

use crate::cursor::TimelinePass;
use crate::filtered::{Filtered, filtered};
use crate::params::instant;
use std::collections::BTreeMap;
use tally_core::projection::{EventRef, EventRow};
use tally_core::{DocType, EVENT_KINDS, StreamId, TenantId};
use tally_http::Problem;
use tally_store::projections::{ProjectionStore, Version};
use tally_store::reads::{self, EventsIndex, TimelinePlace};

/// Which events a search or a live stream wants.
#[derive(Debug, Clone)]
pub(crate) struct EventFilter {
    pub kinds: Option<Vec<String>>,
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    /// Only the events of documents of this type.
    pub doc_type: Option<DocType>,
}

impl EventFilter {
    /// The filter of a request's `type` (event kinds, comma-separated, blanks around them
    /// allowed), `from` and `to`; 400 for a kind that is not one of [`EVENT_KINDS`] (it would
    /// match nothing, for ever) or a malformed instant.
    pub fn parse(kinds: Option<&str>, from: Option<&str>, to: Option<&str>) -> Result<EventFilter, Problem> {
        // Spaces and tabs only, as the OpenAPI documents' pattern says.
        let kinds: Option<Vec<String>> = kinds.map(|k| {
            k.split(',')
                .map(|k| k.trim_matches([' ', '\t']))
                .filter(|k| !k.is_empty())
                .map(str::to_owned)
                .collect()
        });
        if let Some(unknown) = kinds.iter().flatten().find(|k| !EVENT_KINDS.contains(&k.as_str())) {
            // Named as given, cut short: the answer does not grow with the request.
            let shown: String = unknown.chars().take(64).collect();
            return Err(Problem::bad_request(format!(
                "type: unknown event kind {shown:?}; known are {}",
                EVENT_KINDS.join(", ")
            )));
        }
        // `type=` (or only commas and blanks) names no kind: no filter, not "nothing".
        let kinds = kinds.filter(|k: &Vec<String>| !k.is_empty());
        let from_ms = from.map(|f| instant("from", f)).transpose()?;
        let to_ms = to.map(|t| instant("to", t)).transpose()?;
        Ok(EventFilter { kinds, from_ms, to_ms, doc_type: None })
    }

    pub fn admits_kind(&self, kind: &str) -> bool {
        self.kinds.as_ref().is_none_or(|kinds| kinds.iter().any(|k| k == kind))
    }

    pub fn admits_stream(&self, stream: &StreamId) -> bool {
        self.doc_type.as_ref().is_none_or(|t| matches!(stream, StreamId::Document(of, _) if of == t))
    }

    pub fn admits(&self, row: &EventRow) -> bool {
        self.admits_kind(row.event.body.kind())
            && self.admits_stream(&row.event.stream)
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

/// Per partition, an offset of the events topic.
pub(crate) type Offsets = Vec<(i32, i64)>;

/// Where a row sits in the timeline.
pub(crate) fn place(row: &EventRow) -> TimelinePlace {
    (row.event.time_ms, row.partition, row.offset)
}

/// A page of a tenant's timeline ([`TimelinePass`]): the rows `filter` admits in the pass, in
/// time order, up to `limit` (reading at most `scan_max` rows), and the pass's partition
/// checkpoints (pinned now, when the pass begins). `more`: the pass goes on after `last`.
pub(crate) fn timeline_page(
    store: &dyn ProjectionStore,
    version: Version,
    tenant: &TenantId,
    filter: &EventFilter,
    pass: &TimelinePass,
    bounds: (usize, usize),
) -> Result<(Filtered<EventRow, TimelinePlace>, Offsets), tally_store::StoreError> {
    let from_ms = filter.from_ms.unwrap_or(i64::MIN);
    // A range that ends before it begins is empty (and no store is asked for an inverted range).
    let to_ms = filter.to_ms.map(|to_ms| to_ms.max(from_ms));
    let upto: BTreeMap<i32, i64> = match &pass.upto {
        Some(pinned) => pinned.iter().copied().collect(),
        None => store.checkpoints(version)?,
    };
    let seen: BTreeMap<i32, i64> = pass.seen.iter().copied().collect();
    // In this pass: above what earlier passes showed, up to what this one pinned.
    let in_pass = |partition: i32, offset: i64| {
        seen.get(&partition).is_none_or(|s| offset > *s) && upto.get(&partition).is_some_and(|u| offset <= *u)
    };
    let read = |after: Option<&TimelinePlace>| {
        store.timeline(version, tenant, (from_ms, to_ms), after.copied(), reads::PAGE_MAX)
    };
    let keep = |((_, partition, offset), at): (TimelinePlace, EventRef)| match in_pass(partition, offset)
        && filter.admits_kind(&at.kind)
        && filter.admits_stream(&at.stream)
    {
        true => store.stream_event(version, tenant, &at.stream, at.stream_version),
        false => Ok(None),
    };
    let found = filtered(pass.after, bounds, read, |(place, _)| *place, keep)?;
    Ok((found, upto.into_iter().collect()))
}

/// The pass after `pass` (which pinned `upto`): it shows what was projected after those.
pub(crate) fn next_pass(pass: &TimelinePass, upto: &[(i32, i64)]) -> TimelinePass {
    let mut seen: BTreeMap<i32, i64> = pass.seen.iter().copied().collect();
    for (partition, offset) in upto {
        let shown = seen.entry(*partition).or_insert(*offset);
        *shown = (*shown).max(*offset);
    }
    TimelinePass { after: None, seen: seen.into_iter().collect(), upto: None }
}

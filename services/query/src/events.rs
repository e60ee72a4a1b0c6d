//! Which events a search or a live stream wants ([`EventFilter`]), a filtered page of one
//! stream's events ([`stream_page`]), a page of a tenant's timeline in passes
//! ([`timeline_page`]), shared by `GET /v1/events` and `GET /v1/events/live`, and what a live
//! stream across streams reads next, partition by partition ([`partitions_read`]).

use crate::cursor::TimelinePass;
use crate::filtered::{Filtered, filtered};
use crate::params::instant;
use std::collections::{BTreeMap, VecDeque};
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

/// Per events partition, the offset up to which a live stream across streams has shown (or
/// passed over) every event of its tenant: where it resumes.
pub(crate) type Shown = BTreeMap<i32, i64>;

/// What [`partitions_read`] found.
pub(crate) struct PartitionsRead {
    /// The events to show, in order, each with where every partition stands once it is shown.
    pub items: Vec<(EventRow, Shown)>,
    /// Where every partition stands after the last of them (and the rows passed over).
    pub shown: Shown,
    /// Whether more was projected than this read took.
    pub more: bool,
}

/// The tenant's events projected after `shown` that `filter` admits: for each events
/// partition, the rows of the partition index ([`EventsIndex::partition_events`]) after its
/// offset in `shown` and up to its checkpoint (pinned when the read begins), at most
/// [`reads::PAGE_MAX`] per partition and about `scan_max` in all. Each partition's events come
/// in log order; across partitions the earliest time goes first. An idle reader reads only the
/// checkpoints: what it costs does not grow with the tenant's history.
pub(crate) fn partitions_read(
    store: &dyn ProjectionStore,
    version: Version,
    tenant: &TenantId,
    filter: &EventFilter,
    shown: &Shown,
    scan_max: usize,
) -> Result<PartitionsRead, tally_store::StoreError> {
    let checkpoints = store.checkpoints(version)?;
    // Only the partitions the projection has: a genuine token names no other, and one that
    // did (forged) would carry them into every event's token.
    let mut shown: Shown =
        shown.iter().filter(|(p, _)| checkpoints.contains_key(p)).map(|(p, o)| (*p, *o)).collect();
    let (mut lanes, mut read, mut more) = (Vec::new(), 0, false);
    for (partition, upto) in checkpoints {
        let after = shown.get(&partition).copied().unwrap_or(i64::MIN);
        if upto <= after {
            continue;
        }
        if read >= scan_max {
            more = true;
            break;
        }
        let page = store.partition_events(version, tenant, (partition, after, upto), reads::PAGE_MAX)?;
        read += page.items.len();
        let mut rows = VecDeque::with_capacity(page.items.len());
        for (offset, at) in page.items {
            let row = match filter.admits_kind(&at.kind) && filter.admits_stream(&at.stream) {
                true => store.stream_event(version, tenant, &at.stream, at.stream_version)?,
                false => None,
            };
            rows.push_back((offset, row));
        }
        more |= page.next.is_some();
        // A partition read to its checkpoint is shown up to it: the offsets between are other
        // tenants' events.
        lanes.push(Lane { partition, rows, end: page.next.unwrap_or(upto) });
    }
    let mut items = Vec::new();
    loop {
        for lane in &mut lanes {
            lane.pass_over_hidden(&mut shown);
        }
        let earliest = lanes
            .iter_mut()
            .filter_map(|lane| lane.head_time().map(|at| (at, lane)))
            .min_by_key(|(at, _)| *at);
        let Some((_, lane)) = earliest else { break };
        let (offset, row) = lane.rows.pop_front().expect("a lane with a head");
        shown.insert(lane.partition, offset);
        items.push((row.expect("hidden rows were passed over"), shown.clone()));
    }
    Ok(PartitionsRead { items, shown, more })
}

/// One partition's rows in a [`partitions_read`]: `None` for a row the filter hides.
struct Lane {
    partition: i32,
    rows: VecDeque<(i64, Option<EventRow>)>,
    /// Where the partition stands once every row is shown.
    end: i64,
}

impl Lane {
    /// Passes over the hidden rows at the head, and to `end` once no row is left.
    fn pass_over_hidden(&mut self, shown: &mut Shown) {
        while let Some((offset, None)) = self.rows.front() {
            shown.insert(self.partition, *offset);
            self.rows.pop_front();
        }
        if self.rows.is_empty() {
            shown.insert(self.partition, self.end);
        }
    }

    /// The head's place in time order: (time, partition, offset).
    fn head_time(&self) -> Option<TimelinePlace> {
        let (offset, row) = self.rows.front()?;
        Some((row.as_ref()?.event.time_ms, self.partition, *offset))
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use tally_core::projection::{Change, RowKey, fold};
    use tally_core::{log::Replica, testkit};
    use tally_store::EmbeddedStore;

    /// The changes of each event of `tenant`'s transfers on `ledger` (`n` records), placed at
    /// offsets `first`, `first + step`, ... of `partition`.
    fn placed(
        tenant: &str,
        ledger: &str,
        n: usize,
        partition: i32,
        (first, step): (i64, i64),
    ) -> Vec<(i64, Vec<Change>)> {
        let mut replica = Replica::new();
        let log = testkit::transfers_log_of(tenant, ledger, n);
        let offsets = (0..).map(|k| first + k * step);
        log.iter()
            .zip(offsets)
            .map(|(record, offset)| (offset, fold(&mut replica, record, partition, offset)))
            .collect()
    }

    /// Reads on from `shown` until nothing more is projected.
    fn read_all(
        store: &dyn ProjectionStore,
        filter: &EventFilter,
        shown: &mut Shown,
        into: &mut Vec<(EventRow, Shown)>,
    ) {
        let acme = TenantId::parse("acme").unwrap();
        loop {
            let read = partitions_read(store, 1, &acme, filter, shown, 10_000).unwrap();
            into.extend(read.items);
            *shown = read.shown;
            if !read.more {
                return;
            }
        }
    }

    /// A token naming partitions the projection does not have (none is ever handed out) does
    /// not carry them into the tokens of what it reads.
    #[test]
    fn partitions_the_projection_does_not_have_are_dropped_from_the_tokens() {
        let store = EmbeddedStore::in_memory().unwrap();
        let records = placed("acme", "main", 3, 0, (0, 1));
        let changes: Vec<Change> = records.iter().flat_map(|(_, c)| c.clone()).collect();
        store.commit(1, 0, &changes, 3).unwrap();
        let filter = EventFilter { kinds: None, from_ms: None, to_ms: None, doc_type: None };
        let forged: Shown = (0..8_000).map(|p| (p, i64::from(p == 0) - 1)).collect();
        let read =
            partitions_read(&store, 1, &TenantId::parse("acme").unwrap(), &filter, &forged, 100).unwrap();
        assert_eq!(read.items.len(), 3, "the define and two transfers, at offsets 1 to 3");
        assert!(read.items.iter().all(|(_, shown)| shown.keys().eq([&0])));
        assert_eq!(read.shown, Shown::from([(0, 3)]));
    }

    /// Two partitions projected a batch at a time, each holding more than a page of the
    /// tenant's events (with another tenant's between them in one): a follower that reads after
    /// every third batch (so that a partition has more than a page to show), and sometimes
    /// drops what it read after some token and resumes from that token, gets every event it
    /// wants exactly once, each partition's in log order.
    #[test]
    fn a_follower_resumed_anywhere_gets_every_event_once_in_log_order() {
        for kinds in [None, Some(vec!["TransactionPosted".to_owned()])] {
            let filter = EventFilter { kinds, from_ms: None, to_ms: None, doc_type: None };
            let store = EmbeddedStore::in_memory().unwrap();
            let mut zero: Vec<_> = placed("acme", "main", 2_500, 0, (0, 2));
            zero.extend(placed("globex", "main", 500, 0, (1, 2)));
            zero.sort_by_key(|(offset, _)| *offset);
            let one = placed("acme", "other", 800, 1, (7, 3));
            let batches = [(0, zero), (1, one)]
                .map(|(p, records)| records.chunks(450).map(|chunk| (p, chunk.to_vec())).collect::<Vec<_>>());
            let (mut got, mut shown) = (Vec::new(), Shown::new());
            let [zero, one] = batches;
            let interleaved = zero.into_iter().zip(one.into_iter().map(Some).chain(std::iter::repeat(None)));
            for (n, (a, b)) in interleaved.enumerate() {
                for (partition, chunk) in [Some(a), b].into_iter().flatten() {
                    let changes: Vec<Change> = chunk.iter().flat_map(|(_, c)| c.clone()).collect();
                    store.commit(1, partition, &changes, chunk.last().unwrap().0).unwrap();
                }
                if n % 3 != 2 {
                    continue;
                }
                read_all(&store, &filter, &mut shown, &mut got);
                if n % 6 == 2 {
                    // The connection drops: resume from a token somewhere back.
                    got.truncate(got.len() - 1 - (n * 7) % 10);
                    shown = got.last().unwrap().1.clone();
                }
            }
            read_all(&store, &filter, &mut shown, &mut got);
            let rows = store.rows(1).unwrap();
            let expected: BTreeMap<(i32, i64), String> = rows
                .iter()
                .filter_map(|(key, row)| match (key, row) {
                    (RowKey::Event { tenant, .. }, tally_core::projection::Row::Event(e))
                        if tenant.as_str() == "acme" && filter.admits(e) =>
                    {
                        Some(((e.partition, e.offset), e.event.event_id()))
                    }
                    _ => None,
                })
                .collect();
            assert!(expected.len() > 3_000, "{}", expected.len());
            let mut last: BTreeMap<i32, i64> = BTreeMap::new();
            for (row, _) in &got {
                let before = last.insert(row.partition, row.offset);
                assert!(
                    before.is_none_or(|b| b < row.offset),
                    "{} after offset {before:?}",
                    row.event.event_id()
                );
            }
            let ids: Vec<String> = got.iter().map(|(row, _)| row.event.event_id()).collect();
            assert_eq!(ids.len(), expected.len(), "as many events as were projected, none twice");
            let ids: std::collections::BTreeSet<String> = ids.into_iter().collect();
            assert_eq!(ids, expected.into_values().collect(), "every event wanted, and no other");
        }
    }
}

//! Events as Server-Sent Events: catch up from where the client says, then follow new events as
//! the projection adds them.
//!
//! - **One stream** (`stream`: a ledger, or one document): in stream order. Each SSE event's id
//!   is its stream version; a client that reconnects with the last id it saw (`Last-Event-ID`,
//!   or `after`) misses nothing and repeats nothing.
//! - **Across streams** (no `stream`: every stream of the tenant, or with `doc_type` every
//!   document of that type): the tenant's events partition by partition, in log order, after
//!   the offset each partition was shown up to ([`partitions_read`]), never past a partition's
//!   checkpoint. Each SSE event's id (and its `resume` field) is a token of those offsets after
//!   it; reconnecting with it misses nothing and repeats nothing. Order: each partition's
//!   events (so each stream's) in log order; across partitions, earliest time first within
//!   one read, and nothing more.

use crate::Query;
use crate::cursor;
use crate::events::{EventFilter, Shown, partitions_read, stream_page};
use crate::live_limit::LiveSlot;
use crate::params::{id, stream};
use crate::position::Reader;
use crate::views::EventView;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde::Deserialize;
use std::collections::VecDeque;
use std::convert::Infallible;
use tally_core::projection::EventRow;
use tally_core::{DocType, StreamId, TenantId};
use tally_http::Problem;
use tally_store::reads::PAGE_MAX;
use utoipa::IntoParams;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct LiveParams {
    /// The stream: a ledger id (every event of the ledger), or `state/TYPE/KEY` for a document.
    /// Without it: every stream of the tenant (or of `doc_type`), across partitions.
    stream: Option<String>,
    /// Only the events of documents of this type.
    doc_type: Option<String>,
    /// Only these kinds of event, comma-separated (`TransactionPosted,PendingCommitted`); an
    /// unknown kind is 400, and naming none (`type=`) is no filter.
    #[serde(rename = "type")]
    kinds: Option<String>,
    /// With `stream`: start after this stream version (default 0: from the first event). A
    /// `Last-Event-ID` header takes precedence.
    after: Option<u64>,
    /// Without `stream`: resume after the event whose id (or `resume` field) this is. A
    /// `Last-Event-ID` header takes precedence.
    resume: Option<String>,
}

/// What is followed, and where it stands.
enum Place {
    /// One stream, after this version.
    Stream(StreamId, u64),
    /// The tenant's events, each partition after the offset it was shown up to; `list` names
    /// the filters its tokens belong to.
    Partitions(Shown, String),
}

/// What the live stream carries from one poll to the next.
struct Follow {
    query: Query,
    tenant: TenantId,
    filter: EventFilter,
    place: Place,
    /// Events read and not sent yet, each with its SSE id.
    buffered: VecDeque<(EventRow, String)>,
    /// The stream's place among the open ones, freed when it ends.
    _slot: LiveSlot,
}

#[utoipa::path(get, path = "/v1/events/live",
    params(LiveParams, ("last-event-id" = Option<String>, Header, description = "the id of the last event received, to resume after it")),
    responses((status = 200, content_type = "text/event-stream", description = "one SSE event per event: id = stream version (one stream) or a resume token (across streams), event = kind, data = the event view as JSON"),
        (status = 429, body = Problem, content_type = "application/problem+json", description = "the tenant has the most live streams open (--live-streams-per-tenant-max)"),
        (status = 503, body = Problem, content_type = "application/problem+json", description = "the server has the most live streams open (--live-streams-max)")))]
pub(crate) async fn follow_events(
    State(query): State<Query>,
    Reader { tenant }: Reader,
    headers: HeaderMap,
    params: axum::extract::Query<LiveParams>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Problem> {
    let mut filter = EventFilter::parse(params.kinds.as_deref(), None, None)?;
    filter.doc_type = params.doc_type.as_deref().map(|t| id::<DocType>("doc_type", t)).transpose()?;
    let last = tally_http::header_text(&headers, "last-event-id")?;
    let place = match params.stream.as_deref() {
        Some(_) if filter.doc_type.is_some() => {
            return Err(Problem::bad_request(
                "doc_type: only without stream (a stream is one document already)",
            ));
        }
        None if params.after.is_some() => {
            return Err(Problem::bad_request(
                "after: only with stream (across streams, resume with a token)",
            ));
        }
        Some(name) => {
            if params.resume.is_some() {
                return Err(Problem::bad_request(
                    "resume: only without stream (give after, or Last-Event-ID)",
                ));
            }
            let after = match last {
                Some(last) => id::<String>("Last-Event-ID", last)?.parse().map_err(|_| {
                    Problem::bad_request("Last-Event-ID: not an id this stream sent (a stream version)")
                })?,
                None => params.after.unwrap_or(0),
            };
            Place::Stream(stream(name)?, after)
        }
        None => {
            let list = timeline_list(&filter);
            let given = match last {
                Some(last) => Some((last, "Last-Event-ID")),
                None => params.resume.as_deref().map(|token| (token, "resume")),
            };
            let shown = match given {
                Some((token, field)) => match cursor::decode(token, &tenant, &list, field)? {
                    cursor::After::Partitions(shown) => shown_of(shown, field)?,
                    // (Tokens of releases before 2026-12 held timeline passes and no checksum:
                    // `decode` refuses them.)
                    _ => {
                        return Err(Problem::bad_request(format!(
                            "{field}: not a token of this live stream"
                        )));
                    }
                },
                None => Shown::new(),
            };
            Place::Partitions(shown, list)
        }
    };
    let _slot = query.live_streams().admit(&tenant)?;
    let follow = Follow { query, tenant, filter, place, buffered: VecDeque::new(), _slot };
    Ok(Sse::new(futures::stream::unfold(follow, next_event)).keep_alive(KeepAlive::default()))
}

/// What the tokens of a live stream across streams belong to: its filters, as parsed (kinds in
/// order, once each), so that the same filter written another way takes the same tokens.
fn timeline_list(filter: &EventFilter) -> String {
    let mut kinds = filter.kinds.clone().unwrap_or_default();
    kinds.sort();
    kinds.dedup();
    format!("live/{}/{}", filter.doc_type.as_ref().map_or("", |t| t.as_str()), kinds.join(","))
}

/// The most partitions a token may name: the most a topic may have here.
const TOKEN_PARTITIONS_MAX: usize = 1024;

/// The offsets of a token, if they are as the server hands them out: partitions in ascending
/// order, each once, none negative, offsets not negative, at most [`TOKEN_PARTITIONS_MAX`].
/// (A token is checked, not signed: one forged by its holder for its own tenant can still
/// resume elsewhere in that tenant.)
fn shown_of(offsets: Vec<(i32, i64)>, field: &str) -> Result<Shown, Problem> {
    let ascending = offsets.windows(2).all(|w| w[0].0 < w[1].0);
    let in_range = offsets.iter().all(|(partition, offset)| *partition >= 0 && *offset >= 0);
    match ascending && in_range && offsets.len() <= TOKEN_PARTITIONS_MAX {
        true => Ok(offsets.into_iter().collect()),
        false => Err(Problem::bad_request(format!("{field}: not a token this API returned"))),
    }
}

/// The next SSE event: a buffered one, else what the next read finds, else (caught up) wait and
/// read again. A failed read ends the stream; the client reconnects with `Last-Event-ID`.
async fn next_event(mut follow: Follow) -> Option<(Result<Event, Infallible>, Follow)> {
    loop {
        if let Some((row, id)) = follow.buffered.pop_front() {
            let kind = row.event.body.kind();
            let mut view = EventView::of(row).ok()?;
            if matches!(follow.place, Place::Partitions(..)) {
                view.resume = Some(id.clone());
            }
            let event = Event::default().id(id).event(kind).json_data(view).ok()?;
            return Some((Ok(event), follow));
        }
        let more = match &mut follow.place {
            Place::Stream(stream, after) => {
                let (scope, bounds) =
                    ((&follow.tenant, &*stream), (PAGE_MAX, follow.query.config().scan_max));
                let filter = &follow.filter;
                let page =
                    follow.query.read_live(|s, v| stream_page(s, v, scope, filter, *after, bounds)).ok()?;
                *after = page.last.unwrap_or(*after);
                follow.buffered.extend(page.items.into_iter().map(|row| {
                    let id = row.event.stream_version.to_string();
                    (row, id)
                }));
                page.more
            }
            Place::Partitions(shown, list) => {
                let (tenant, filter) = (&follow.tenant, &follow.filter);
                let scan_max = follow.query.config().scan_max;
                let read = follow
                    .query
                    .read_live(|s, v| partitions_read(s, v, tenant, filter, shown, scan_max))
                    .ok()?;
                for (row, after) in read.items {
                    let after = cursor::After::Partitions(after.into_iter().collect());
                    follow.buffered.push_back((row, cursor::encode(tenant, list, after)));
                }
                *shown = read.shown;
                read.more
            }
        };
        if follow.buffered.is_empty() && !more {
            tokio::time::sleep(follow.query.config().follow_poll).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_taken_only_as_the_server_hands_them_out() {
        assert_eq!(shown_of(vec![(0, 0), (1, 7), (3, 9)], "resume").unwrap().len(), 3);
        assert!(shown_of(vec![], "resume").unwrap().is_empty());
        for forged in [
            vec![(1, 0), (0, 0)],
            vec![(0, 5), (0, 0)],
            vec![(-1, 0)],
            vec![(0, -1)],
            (0..1025).map(|p| (p, 0)).collect(),
        ] {
            let refused = shown_of(forged.clone(), "resume").unwrap_err();
            assert_eq!(refused.status, 400, "{forged:?}");
        }
    }

    #[test]
    fn the_same_filter_written_another_way_takes_the_same_tokens() {
        let list = |kinds: Option<&str>| timeline_list(&EventFilter::parse(kinds, None, None).unwrap());
        assert_eq!(
            list(Some("DocumentPut,AssetDefined")),
            list(Some(" AssetDefined ,DocumentPut,DocumentPut"))
        );
        assert_eq!(list(Some(",,,")), list(None));
        assert_ne!(list(Some("DocumentPut")), list(None));
    }
}

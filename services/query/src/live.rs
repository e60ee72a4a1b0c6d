//! A stream's events as Server-Sent Events: the stream first catches up from where the client
//! says (`after`, or the `Last-Event-ID` of a dropped connection), then follows new events as
//! the projection adds them. Each SSE event's id is its stream version, so a client that
//! reconnects with the last id it saw misses nothing and repeats nothing.

use crate::Query;
use crate::events::{EventFilter, stream_page};
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
use tally_core::StreamId;
use tally_core::TenantId;
use tally_core::projection::EventRow;
use tally_http::Problem;
use tally_store::reads::PAGE_MAX;
use utoipa::IntoParams;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct LiveParams {
    /// The stream: a ledger id, or `state/TYPE/KEY` for a document.
    stream: String,
    /// Only these kinds of event, comma-separated.
    #[serde(rename = "type")]
    kinds: Option<String>,
    /// Start after this stream version (default 0: from the first event). A `Last-Event-ID`
    /// header takes precedence.
    after: Option<u64>,
}

/// What the live stream carries from one poll to the next.
struct Follow {
    query: Query,
    tenant: TenantId,
    stream: StreamId,
    filter: EventFilter,
    after: u64,
    buffered: VecDeque<EventRow>,
}

#[utoipa::path(get, path = "/v1/events/live",
    params(LiveParams, ("last-event-id" = Option<u64>, Header, description = "the id of the last event received, to resume after it")),
    responses((status = 200, content_type = "text/event-stream", description = "one SSE event per stream event: id = stream version, event = kind, data = the event view as JSON")))]
pub(crate) async fn follow_events(
    State(query): State<Query>,
    Reader { tenant }: Reader,
    headers: HeaderMap,
    params: axum::extract::Query<LiveParams>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Problem> {
    let stream = stream(&params.stream)?;
    let filter = EventFilter::parse(params.kinds.as_deref(), None, None)?;
    let after = match tally_http::header_text(&headers, "last-event-id")? {
        Some(last) => id::<String>("Last-Event-ID", last)?.parse().map_err(|_| {
            Problem::bad_request("Last-Event-ID: not an id this stream sent (a stream version)")
        })?,
        None => params.after.unwrap_or(0),
    };
    let follow = Follow { query, tenant, stream, filter, after, buffered: VecDeque::new() };
    Ok(Sse::new(futures::stream::unfold(follow, next_event)).keep_alive(KeepAlive::default()))
}

/// The next SSE event: a buffered one, else what the next read finds, else (caught up) wait and
/// read again. A failed read ends the stream; the client reconnects with `Last-Event-ID`.
async fn next_event(mut follow: Follow) -> Option<(Result<Event, Infallible>, Follow)> {
    loop {
        if let Some(row) = follow.buffered.pop_front() {
            let id = row.event.stream_version.to_string();
            let kind = row.event.body.kind();
            let event = Event::default().id(id).event(kind).json_data(EventView::of(row).ok()?).ok()?;
            return Some((Ok(event), follow));
        }
        let (after, bounds) = (follow.after, (PAGE_MAX, follow.query.config().scan_max));
        let scope = (&follow.tenant, &follow.stream);
        let page =
            follow.query.read_live(|s, v| stream_page(s, v, scope, &follow.filter, after, bounds)).ok()?;
        follow.after = page.last.unwrap_or(after);
        follow.buffered.extend(page.items);
        if follow.buffered.is_empty() && !page.more {
            tokio::time::sleep(follow.query.config().follow_poll).await;
        }
    }
}

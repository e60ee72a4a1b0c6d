"""Schemathesis hooks for `tests/dev.rs`: what a client does with Tally's opaque tokens.

A page cursor is valid only as the API returned it (it names the tenant, the list and a place
in it), which no schema can say; the documents describe it as such. So generated requests do
not invent cursors, live resume tokens or `Last-Event-ID`s: the stateful phase follows the
cursors the API returns. A position
(`Tally-Position`) is fixed in `schemathesis.toml` to one a write of the fuzz tenant returned.
"""

import schemathesis


@schemathesis.hook
def filter_case(context, case):
    query = case.query or {}
    invented_token = "cursor" in query or "resume" in query
    # A live stream takes `after` with `stream` only and `doc_type` without it (400 otherwise),
    # which a schema cannot say.
    live = case.path == "/v1/events/live"
    if live and "after" in query and "stream" not in query:
        return False
    if live and "doc_type" in query and "stream" in query:
        return False
    invented_event_id = case.headers and "last-event-id" in {k.lower() for k in case.headers}
    return not (invented_token or invented_event_id)

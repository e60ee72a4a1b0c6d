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
    invented_token = case.query and ("cursor" in case.query or "resume" in case.query)
    invented_event_id = case.headers and "last-event-id" in {k.lower() for k in case.headers}
    return not (invented_token or invented_event_id)

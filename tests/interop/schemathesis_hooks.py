"""Schemathesis hooks for `tests/dev.rs`: what a client does with Tally's opaque tokens.

A page cursor is valid only as the API returned it (it names the tenant, the list and a place
in it), which no schema can say; the documents describe it as such. So generated requests do
not invent cursors: the stateful phase follows the ones the API returns. A position
(`Tally-Position`) is fixed in `schemathesis.toml` to one a write of the fuzz tenant returned.
"""

import schemathesis


@schemathesis.hook
def filter_case(context, case):
    return not (case.query and "cursor" in case.query)

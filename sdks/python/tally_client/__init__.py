"""A Python client for Tally's gRPC API (docs/grpc.md).

Answers come back as `Record`s (attribute access, `==`, a readable repr) converted from the
response messages: amounts (the string fields with the `(tally.v1.json)` option) are Python
ints, a whole event is a dict, a document is a dict, enums are their names, and an
`optional` field that is absent is None. Amounts given to a call must be ints too.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import uuid
from collections.abc import Iterator, Mapping
from types import SimpleNamespace
from typing import Any

import grpc
from google.protobuf import json_format
from google.rpc import error_details_pb2, status_pb2

from ._gen import options_pb2, tally_pb2, tally_pb2_grpc

__all__ = ["Client", "Record", "TallyError", "I128_MIN", "I128_MAX"]

Record = SimpleNamespace

I128_MIN = -(2**127)
I128_MAX = 2**127 - 1

# Codes after which a call is tried again (a write with the same idempotency key).
RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
BACKOFF_FIRST, BACKOFF_MAX = 0.1, 2.0  # seconds; doubled each attempt up to the max
# A subscription's call that lasted this long before it broke was a working one: the count of
# failed calls starts over.
WORKING_CALL_SECONDS = 5.0
# An HTTP/2 ping this often on a channel with a call open, so a connection gone silent (a
# half-open TCP connection) is noticed and a subscription resumes on a new one.
KEEPALIVE = [("grpc.keepalive_time_ms", 30_000), ("grpc.keepalive_timeout_ms", 10_000)]


def _backoff(attempt: int) -> None:
    time.sleep(min(BACKOFF_MAX, BACKOFF_FIRST * 2**attempt))


class TallyError(Exception):
    """A refused call: its gRPC `code` and `message`, and from the status details'
    google.rpc.ErrorInfo the `reason` (`INSUFFICIENT_FUNDS`, `NOT_FOUND`, ...) and
    `metadata` (`http_status`, and `command_id` and `position` for a command's answer).

    For a write, `command_id` is the idempotency key it was sent with: a write that failed
    UNAVAILABLE or DEADLINE_EXCEEDED after its retries may still have been made, so send it
    again with that key (it is made at most once) or ask `get_outcome(command_id, stream)`."""

    def __init__(self, code: grpc.StatusCode, message: str, reason: str | None = None,
                 metadata: Mapping[str, str] | None = None):
        super().__init__(f"{code.name}: {message}" + (f" ({reason})" if reason else ""))
        self.code = code
        self.message = message
        self.reason = reason
        self.metadata = dict(metadata or {})
        self.command_id: str | None = None

    @classmethod
    def from_rpc_error(cls, err: grpc.RpcError) -> TallyError:
        reason, metadata = None, {}
        for key, value in err.trailing_metadata() or ():
            if key == "grpc-status-details-bin":
                for detail in status_pb2.Status.FromString(value).details:
                    info = error_details_pb2.ErrorInfo()
                    if detail.Unpack(info):
                        reason, metadata = info.reason, dict(info.metadata)
        return cls(err.code(), err.details() or "", reason, metadata)


# --- Messages <-> Python values ---

def _is_json(field) -> bool:
    return field.GetOptions().Extensions[options_pb2.json]


def _is_map(field) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def _is_struct(field) -> bool:
    return field.message_type is not None and field.message_type.full_name == "google.protobuf.Struct"


def _amount_text(value: int) -> str:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"an amount must be an int, not {type(value).__name__}")
    if not I128_MIN <= value <= I128_MAX:
        raise ValueError(f"amount {value} is outside the i128 range")
    return str(value)


def _fill(msg, fields: Mapping[str, Any]):
    """Sets `msg`'s fields from Python values (None: left unset), recursively."""
    for name, value in fields.items():
        if value is None:
            continue
        field = msg.DESCRIPTOR.fields_by_name[name]
        repeated = field.is_repeated
        if _is_map(field) or _is_struct(field):  # a document was checked by _document
            getattr(msg, name).update(value)
        elif field.message_type is not None:
            if repeated:
                for item in value:
                    _fill(getattr(msg, name).add(), item)
            else:
                _fill(getattr(msg, name), value)
        elif _is_json(field):
            if repeated:
                getattr(msg, name).extend(_amount_text(v) for v in value)
            else:
                setattr(msg, name, _amount_text(value))
        elif repeated:
            getattr(msg, name).extend(value)
        else:
            setattr(msg, name, value)
    return msg


# Struct numbers are doubles: integers beyond this would arrive changed.
EXACT_INT_MAX = 2**53


def _document(value):
    """`value` checked to be a dict of JSON values a Struct carries exactly (TypeError,
    ValueError: an int beyond 2**53, NaN or an infinity would be stored changed)."""
    def check(v, at):
        if v is None or isinstance(v, (str, bool)):
            return
        if isinstance(v, int):
            if abs(v) > EXACT_INT_MAX:
                raise ValueError(f"{at} is {v}: beyond 2**53 a document number is not exact")
        elif isinstance(v, float):
            if v != v or v in (float("inf"), float("-inf")):
                raise ValueError(f"{at} is {v}: JSON has no such number")
        elif isinstance(v, list):
            for i, item in enumerate(v):
                check(item, f"{at}[{i}]")
        elif isinstance(v, dict):
            for k, item in v.items():
                if not isinstance(k, str):
                    raise TypeError(f"{at} has a key {k!r} that is not a string")
                check(item, f"{at}.{k}")
        else:
            raise TypeError(f"{at} is a {type(v).__name__}: a document holds only JSON values")
    if not isinstance(value, dict):
        raise TypeError("a document must be a dict")
    check(value, "value")
    return value


def _whole_numbers(value):
    """Struct numbers are doubles; the server stores whole numbers as integers."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _whole_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_whole_numbers(v) for v in value]
    return value


def _value(field, value):
    if _is_struct(field):
        return _whole_numbers(json_format.MessageToDict(value))
    if field.message_type is not None:
        return _record(value)
    if field.enum_type is not None:
        return field.enum_type.values_by_number[value].name
    if _is_json(field):
        # JSON text of an integer: json.loads gives the exact int, at any size.
        return json.loads(value) if value else None
    return value


def _record(msg) -> Record:
    out = {}
    for field in msg.DESCRIPTOR.fields:
        value = getattr(msg, field.name)
        if _is_map(field):
            out[field.name] = dict(value)
        elif field.is_repeated:
            out[field.name] = [_value(field, v) for v in value]
        elif field.has_presence and not msg.HasField(field.name):
            out[field.name] = None
        else:
            out[field.name] = _value(field, value)
    return Record(**out)


# --- The client ---

class Client:
    """A connection to Tally's gRPC API.

    `token` is the API key or JWT (sent as `authorization: Bearer <token>`). Each attempt of a
    call has `timeout` seconds; a call refused UNAVAILABLE or DEADLINE_EXCEEDED is tried again
    up to `retries` times, with backoff (a write with the same idempotency key, so it is
    made once). Without `credentials` the channel is plaintext.
    """

    def __init__(self, address: str, token: str, *, retries: int = 3, timeout: float = 10.0,
                 credentials: grpc.ChannelCredentials | None = None,
                 interceptors: tuple = ()):
        channel = (grpc.secure_channel(address, credentials, options=KEEPALIVE) if credentials
                   else grpc.insecure_channel(address, options=KEEPALIVE))
        self._channel = channel
        channel = grpc.intercept_channel(channel, *interceptors)
        self._commands = tally_pb2_grpc.CommandsStub(channel)
        self._queries = tally_pb2_grpc.QueriesStub(channel)
        self._auth = ("authorization", token if token.startswith("Bearer ") else f"Bearer {token}")
        self.retries = retries
        self.timeout = timeout
        #: The position of the last write this client made (None before the first).
        self.last_position: str | None = None

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, method, request_type, fields, metadata):
        request = _fill(request_type(), fields)
        metadata = [self._auth, *metadata]
        for attempt in range(self.retries + 1):
            try:
                response, call = method.with_call(request, metadata=metadata, timeout=self.timeout)
                return _record(response), dict(call.initial_metadata())
            except grpc.RpcError as err:
                if err.code() not in RETRYABLE or attempt == self.retries:
                    raise TallyError.from_rpc_error(err) from None
            _backoff(attempt)

    def _write(self, method, request_type, fields, *, idempotency_key=None, keyed=True,
               if_match=None, create_only=False) -> Record:
        key = (idempotency_key or str(uuid.uuid4())) if keyed else None
        metadata = [("idempotency-key", key)] if key else []
        if if_match is not None:
            metadata.append(("if-match", str(if_match)))
        if create_only:
            metadata.append(("if-none-match", "*"))
        try:
            answer, headers = self._call(method, request_type, fields, metadata)
        except TallyError as error:
            error.command_id = key
            raise
        # A batch's answer has no position of its own: its last command's is the latest.
        outcomes = ([r.outcome for r in answer.results if r.outcome]
                    if hasattr(answer, "results") else [answer])
        position = headers.get("tally-position") or next(
            (o.position for o in reversed(outcomes) if o.position), None)
        if position:
            self.last_position = position
        return answer

    def _read(self, method, request_type, fields, position=None, after_last_write=False):
        position = position or (self.last_position if after_last_write else None)
        metadata = [("tally-position", position)] if position else []
        return self._call(method, request_type, fields, metadata)[0]

    def _items(self, method, request_type, fields, **read) -> Iterator[Record]:
        cursor = None
        while True:
            page = self._read(method, request_type, {**fields, "cursor": cursor}, **read)
            yield from page.items
            cursor = page.next_cursor
            if not cursor:
                return

    # Writes. Each (but post_batch) takes `idempotency_key=`: default a fresh uuid4 per call,
    # kept across its retries. Each returns the answer, a CommandAnswer (`status`, `position`,
    # `event`, ...) or for post_batch a BatchAnswer; `last_position` is then the write's.

    def define_asset(self, ledger: str, asset: str, *, idempotency_key: str | None = None) -> Record:
        return self._write(self._commands.DefineAsset, tally_pb2.DefineAssetRequest,
                           dict(ledger=ledger, asset=asset), idempotency_key=idempotency_key)

    def open_account(self, ledger: str, account: str, *, limits: list[Mapping] | None = None,
                     metadata: Mapping[str, str] | None = None,
                     idempotency_key: str | None = None) -> Record:
        """`limits`: [{"asset": "USD/2", "min_balance": 0}, ...]."""
        return self._write(self._commands.OpenAccount, tally_pb2.OpenAccountRequest,
                           dict(ledger=ledger, account=account, limits=limits, metadata=metadata),
                           idempotency_key=idempotency_key)

    def update_account(self, ledger: str, account: str, *, limits: list[Mapping] | None = None,
                       metadata: Mapping[str, str] | None = None,
                       idempotency_key: str | None = None) -> Record:
        return self._write(self._commands.UpdateAccount, tally_pb2.UpdateAccountRequest,
                           dict(ledger=ledger, account=account, limits=limits, metadata=metadata),
                           idempotency_key=idempotency_key)

    def close_account(self, ledger: str, account: str, *, idempotency_key: str | None = None) -> Record:
        return self._write(self._commands.CloseAccount, tally_pb2.CloseAccountRequest,
                           dict(ledger=ledger, account=account), idempotency_key=idempotency_key)

    def post_transaction(self, ledger: str, tx_id: str, postings: list[Mapping], *,
                         metadata: Mapping[str, str] | None = None,
                         pending_timeout_ms: int | None = None,
                         idempotency_key: str | None = None) -> Record:
        """`postings`: [{"source": ..., "destination": ..., "asset": ..., "amount": int}, ...]."""
        return self._write(self._commands.PostTransaction, tally_pb2.PostTransactionRequest,
                           dict(ledger=ledger, tx_id=tx_id, postings=postings, metadata=metadata,
                                pending_timeout_ms=pending_timeout_ms),
                           idempotency_key=idempotency_key)

    def post_batch(self, ledger: str, transactions: list[Mapping]) -> Record:
        """`transactions`: [{"tx_id": ..., "postings": [...], "metadata": {...}}, ...]. Sent
        without an idempotency key (the server refuses one): each transaction's id is its
        key, so a retry gets the first answers."""
        return self._write(self._commands.PostBatch, tally_pb2.PostBatchRequest,
                           dict(ledger=ledger, transactions=transactions), keyed=False)

    def commit_pending(self, ledger: str, tx_id: str, amounts: list[int] | None = None, *,
                       idempotency_key: str | None = None) -> Record:
        return self._write(self._commands.CommitPending, tally_pb2.CommitPendingRequest,
                           dict(ledger=ledger, tx_id=tx_id, amounts=amounts),
                           idempotency_key=idempotency_key)

    def void_pending(self, ledger: str, tx_id: str, *, idempotency_key: str | None = None) -> Record:
        return self._write(self._commands.VoidPending, tally_pb2.VoidPendingRequest,
                           dict(ledger=ledger, tx_id=tx_id), idempotency_key=idempotency_key)

    def reverse(self, ledger: str, original_tx_id: str, tx_id: str, *,
                metadata: Mapping[str, str] | None = None,
                idempotency_key: str | None = None) -> Record:
        return self._write(self._commands.Reverse, tally_pb2.ReverseRequest,
                           dict(ledger=ledger, original_tx_id=original_tx_id, tx_id=tx_id,
                                metadata=metadata),
                           idempotency_key=idempotency_key)

    def put_document(self, doc_type: str, key: str, value: Mapping[str, Any], *,
                     if_match: int | None = None, create_only: bool = False,
                     idempotency_key: str | None = None) -> Record:
        """Writes only if the document is at version `if_match`, or (`create_only`) is new."""
        return self._write(self._commands.PutDocument, tally_pb2.PutDocumentRequest,
                           dict(doc_type=doc_type, key=key, value=_document(value)),
                           idempotency_key=idempotency_key, if_match=if_match,
                           create_only=create_only)

    def delete_document(self, doc_type: str, key: str, *, if_match: int | None = None,
                        idempotency_key: str | None = None) -> Record:
        return self._write(self._commands.DeleteDocument, tally_pb2.DeleteDocumentRequest,
                           dict(doc_type=doc_type, key=key),
                           idempotency_key=idempotency_key, if_match=if_match)

    def get_command(self, command_id: str, stream: str, fingerprint: str) -> Record:
        """A command's answer from the instance that took it (to poll a PENDING answer)."""
        return self._call(self._commands.GetCommand, tally_pb2.GetCommandRequest,
                          dict(command_id=command_id, stream=stream, fingerprint=fingerprint),
                          [])[0]

    def settle(self, answer: Record, *, timeout: float = 30.0, interval: float = 0.05) -> Record:
        """The final answer to a write that came back PENDING (the server's wait ran out
        first): polls the instance that took it (`get_command` with the stream and fingerprint
        of its `poll` route) every `interval` seconds for at most `timeout`, then raises a
        DEADLINE_EXCEEDED TallyError with the write's `command_id` (send the write again with
        that key). Any other answer comes back as it is. A poll refused NOT_FOUND means the
        instance forgot the answer: send the write again with the same key too."""
        deadline = time.monotonic() + timeout
        while answer.status == "PENDING":
            if time.monotonic() >= deadline:
                late = TallyError(grpc.StatusCode.DEADLINE_EXCEEDED,
                                  f"no answer to {answer.command_id} yet")
                late.command_id = answer.command_id
                raise late
            time.sleep(interval)
            poll = urllib.parse.parse_qs(urllib.parse.urlsplit(answer.poll).query)
            answer = self.get_command(answer.command_id, poll["stream"][0], poll["fingerprint"][0])
        if answer.position:
            self.last_position = answer.position
        return answer

    # Reads. Each takes `position=` (a write's position: the read waits until it sees that
    # write) or `after_last_write=True` (the position of this client's last write).

    def get_account(self, ledger: str, account: str, **read) -> Record:
        return self._read(self._queries.GetAccount, tally_pb2.GetAccountRequest,
                          dict(ledger=ledger, account=account), **read)

    def get_transaction(self, ledger: str, tx_id: str, **read) -> Record:
        return self._read(self._queries.GetTransaction, tally_pb2.GetTransactionRequest,
                          dict(ledger=ledger, tx_id=tx_id), **read)

    def get_balance_at(self, ledger: str, account: str, at: str, *, asset: str | None = None,
                       **read) -> Record:
        return self._read(self._queries.GetBalanceAt, tally_pb2.GetBalanceAtRequest,
                          dict(ledger=ledger, account=account, at=at, asset=asset), **read)

    def get_outcome(self, command_id: str, stream: str, **read) -> Record:
        """A command's first answer, from the projections."""
        return self._read(self._queries.GetCommand, tally_pb2.GetOutcomeRequest,
                          dict(command_id=command_id, stream=stream), **read)

    def get_document(self, doc_type: str, key: str, **read) -> Record:
        return self._read(self._queries.GetDocument, tally_pb2.GetDocumentRequest,
                          dict(doc_type=doc_type, key=key), **read)

    # Lists: all items, page after page (`page_size`: items per page; None: the server's).

    def accounts(self, ledger: str, *, prefix: str | None = None, page_size: int | None = None,
                 **read) -> Iterator[Record]:
        return self._items(self._queries.ListAccounts, tally_pb2.ListAccountsRequest,
                           dict(ledger=ledger, prefix=prefix, limit=page_size), **read)

    def statement(self, ledger: str, account: str, *, asset: str | None = None,
                  page_size: int | None = None, **read) -> Iterator[Record]:
        return self._items(self._queries.GetStatement, tally_pb2.GetStatementRequest,
                           dict(ledger=ledger, account=account, asset=asset, limit=page_size),
                           **read)

    def documents(self, doc_type: str, *, prefix: str | None = None,
                  field: Mapping[str, str] | None = None, page_size: int | None = None,
                  **read) -> Iterator[Record]:
        """`field`: top-level field equalities, {"NAME": "VALUE"}."""
        return self._items(self._queries.ListDocuments, tally_pb2.ListDocumentsRequest,
                           dict(doc_type=doc_type, prefix=prefix, field=field, limit=page_size),
                           **read)

    def events(self, stream: str | None = None, *, type: str | None = None,
               from_: str | None = None, to: str | None = None, page_size: int | None = None,
               **read) -> Iterator[Record]:
        return self._items(self._queries.SearchEvents, tally_pb2.SearchEventsRequest,
                           {"stream": stream, "type": type, "from": from_, "to": to,
                            "limit": page_size}, **read)

    def follow(self, stream: str | None = None, *, doc_type: str | None = None,
               type: str | None = None, after: int | None = None,
               resume: str | None = None) -> Iterator[Record]:
        """Yields events as they are projected, without end: one stream's from after version
        `after`, or (no `stream`) every stream's, or `doc_type`'s documents', from after the
        event whose `resume` token is given. When the stream drops (UNAVAILABLE) or ends, it
        calls again from after the last event received, so each event is seen once; it
        raises TallyError after `retries` failed calls in a row (a call that worked for
        WORKING_CALL_SECONDS before it broke does not count, so a quiet stream behind a proxy
        that cuts idle connections is followed for ever), or on any other error.
        Close the generator (or stop iterating it) to cancel the call."""
        attempt = 0
        while True:
            fields = dict(stream=stream, doc_type=doc_type, type=type, after=after, resume=resume)
            call = self._queries.FollowEvents(_fill(tally_pb2.FollowEventsRequest(), fields),
                                              metadata=[self._auth])
            started = time.monotonic()
            try:
                for message in call:
                    attempt = 0
                    event = _record(message)
                    if stream:
                        after = event.stream_version
                    else:
                        resume = event.resume
                    yield event
            except grpc.RpcError as err:
                if time.monotonic() - started >= WORKING_CALL_SECONDS:
                    attempt = 0
                if err.code() not in RETRYABLE or attempt >= self.retries:
                    raise TallyError.from_rpc_error(err) from None
            finally:
                call.cancel()
            _backoff(attempt)
            attempt += 1

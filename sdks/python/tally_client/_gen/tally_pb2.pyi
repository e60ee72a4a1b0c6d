from google.protobuf import struct_pb2 as _struct_pb2
from . import options_pb2 as _options_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CommandStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COMMAND_STATUS_UNSPECIFIED: _ClassVar[CommandStatus]
    ACCEPTED: _ClassVar[CommandStatus]
    DEDUPLICATED: _ClassVar[CommandStatus]
    REJECTED: _ClassVar[CommandStatus]
    PENDING: _ClassVar[CommandStatus]
COMMAND_STATUS_UNSPECIFIED: CommandStatus
ACCEPTED: CommandStatus
DEDUPLICATED: CommandStatus
REJECTED: CommandStatus
PENDING: CommandStatus

class DefineAssetRequest(_message.Message):
    __slots__ = ("ledger", "asset")
    LEDGER_FIELD_NUMBER: _ClassVar[int]
    ASSET_FIELD_NUMBER: _ClassVar[int]
    ledger: str
    asset: str
    def __init__(self, ledger: _Optional[str] = ..., asset: _Optional[str] = ...) -> None: ...

class Limit(_message.Message):
    __slots__ = ("asset", "min_balance")
    ASSET_FIELD_NUMBER: _ClassVar[int]
    MIN_BALANCE_FIELD_NUMBER: _ClassVar[int]
    asset: str
    min_balance: str
    def __init__(self, asset: _Optional[str] = ..., min_balance: _Optional[str] = ...) -> None: ...

class OpenAccountRequest(_message.Message):
    __slots__ = ("ledger", "account", "limits", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    LEDGER_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    ledger: str
    account: str
    limits: _containers.RepeatedCompositeFieldContainer[Limit]
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, ledger: _Optional[str] = ..., account: _Optional[str] = ..., limits: _Optional[_Iterable[_Union[Limit, _Mapping]]] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class UpdateAccountRequest(_message.Message):
    __slots__ = ("ledger", "account", "limits", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    LEDGER_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    ledger: str
    account: str
    limits: _containers.RepeatedCompositeFieldContainer[Limit]
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, ledger: _Optional[str] = ..., account: _Optional[str] = ..., limits: _Optional[_Iterable[_Union[Limit, _Mapping]]] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class CloseAccountRequest(_message.Message):
    __slots__ = ("ledger", "account")
    LEDGER_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    ledger: str
    account: str
    def __init__(self, ledger: _Optional[str] = ..., account: _Optional[str] = ...) -> None: ...

class Posting(_message.Message):
    __slots__ = ("source", "destination", "asset", "amount")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    ASSET_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    source: str
    destination: str
    asset: str
    amount: str
    def __init__(self, source: _Optional[str] = ..., destination: _Optional[str] = ..., asset: _Optional[str] = ..., amount: _Optional[str] = ...) -> None: ...

class PostTransactionRequest(_message.Message):
    __slots__ = ("ledger", "tx_id", "postings", "metadata", "pending_timeout_ms")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    LEDGER_FIELD_NUMBER: _ClassVar[int]
    TX_ID_FIELD_NUMBER: _ClassVar[int]
    POSTINGS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    PENDING_TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    ledger: str
    tx_id: str
    postings: _containers.RepeatedCompositeFieldContainer[Posting]
    metadata: _containers.ScalarMap[str, str]
    pending_timeout_ms: int
    def __init__(self, ledger: _Optional[str] = ..., tx_id: _Optional[str] = ..., postings: _Optional[_Iterable[_Union[Posting, _Mapping]]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., pending_timeout_ms: _Optional[int] = ...) -> None: ...

class BatchTransaction(_message.Message):
    __slots__ = ("tx_id", "postings", "metadata", "pending_timeout_ms")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TX_ID_FIELD_NUMBER: _ClassVar[int]
    POSTINGS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    PENDING_TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    tx_id: str
    postings: _containers.RepeatedCompositeFieldContainer[Posting]
    metadata: _containers.ScalarMap[str, str]
    pending_timeout_ms: int
    def __init__(self, tx_id: _Optional[str] = ..., postings: _Optional[_Iterable[_Union[Posting, _Mapping]]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., pending_timeout_ms: _Optional[int] = ...) -> None: ...

class PostBatchRequest(_message.Message):
    __slots__ = ("ledger", "transactions")
    LEDGER_FIELD_NUMBER: _ClassVar[int]
    TRANSACTIONS_FIELD_NUMBER: _ClassVar[int]
    ledger: str
    transactions: _containers.RepeatedCompositeFieldContainer[BatchTransaction]
    def __init__(self, ledger: _Optional[str] = ..., transactions: _Optional[_Iterable[_Union[BatchTransaction, _Mapping]]] = ...) -> None: ...

class BatchItem(_message.Message):
    __slots__ = ("tx_id", "status", "outcome", "poll")
    TX_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    POLL_FIELD_NUMBER: _ClassVar[int]
    tx_id: str
    status: int
    outcome: CommandAnswer
    poll: str
    def __init__(self, tx_id: _Optional[str] = ..., status: _Optional[int] = ..., outcome: _Optional[_Union[CommandAnswer, _Mapping]] = ..., poll: _Optional[str] = ...) -> None: ...

class BatchAnswer(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[BatchItem]
    def __init__(self, results: _Optional[_Iterable[_Union[BatchItem, _Mapping]]] = ...) -> None: ...

class CommitPendingRequest(_message.Message):
    __slots__ = ("ledger", "tx_id", "amounts")
    LEDGER_FIELD_NUMBER: _ClassVar[int]
    TX_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNTS_FIELD_NUMBER: _ClassVar[int]
    ledger: str
    tx_id: str
    amounts: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, ledger: _Optional[str] = ..., tx_id: _Optional[str] = ..., amounts: _Optional[_Iterable[str]] = ...) -> None: ...

class VoidPendingRequest(_message.Message):
    __slots__ = ("ledger", "tx_id")
    LEDGER_FIELD_NUMBER: _ClassVar[int]
    TX_ID_FIELD_NUMBER: _ClassVar[int]
    ledger: str
    tx_id: str
    def __init__(self, ledger: _Optional[str] = ..., tx_id: _Optional[str] = ...) -> None: ...

class ReverseRequest(_message.Message):
    __slots__ = ("ledger", "original_tx_id", "tx_id", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    LEDGER_FIELD_NUMBER: _ClassVar[int]
    ORIGINAL_TX_ID_FIELD_NUMBER: _ClassVar[int]
    TX_ID_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    ledger: str
    original_tx_id: str
    tx_id: str
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, ledger: _Optional[str] = ..., original_tx_id: _Optional[str] = ..., tx_id: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class PutDocumentRequest(_message.Message):
    __slots__ = ("doc_type", "key", "value")
    DOC_TYPE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    doc_type: str
    key: str
    value: _struct_pb2.Struct
    def __init__(self, doc_type: _Optional[str] = ..., key: _Optional[str] = ..., value: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class DeleteDocumentRequest(_message.Message):
    __slots__ = ("doc_type", "key")
    DOC_TYPE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    doc_type: str
    key: str
    def __init__(self, doc_type: _Optional[str] = ..., key: _Optional[str] = ...) -> None: ...

class GetCommandRequest(_message.Message):
    __slots__ = ("command_id", "stream", "fingerprint")
    COMMAND_ID_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    command_id: str
    stream: str
    fingerprint: str
    def __init__(self, command_id: _Optional[str] = ..., stream: _Optional[str] = ..., fingerprint: _Optional[str] = ...) -> None: ...

class GetOutcomeRequest(_message.Message):
    __slots__ = ("command_id", "stream")
    COMMAND_ID_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    command_id: str
    stream: str
    def __init__(self, command_id: _Optional[str] = ..., stream: _Optional[str] = ...) -> None: ...

class CommandAnswer(_message.Message):
    __slots__ = ("command_id", "status", "reason", "detail", "position", "event", "poll")
    COMMAND_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    POLL_FIELD_NUMBER: _ClassVar[int]
    command_id: str
    status: CommandStatus
    reason: str
    detail: str
    position: str
    event: str
    poll: str
    def __init__(self, command_id: _Optional[str] = ..., status: _Optional[_Union[CommandStatus, str]] = ..., reason: _Optional[str] = ..., detail: _Optional[str] = ..., position: _Optional[str] = ..., event: _Optional[str] = ..., poll: _Optional[str] = ...) -> None: ...

class GetAccountRequest(_message.Message):
    __slots__ = ("ledger", "account")
    LEDGER_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    ledger: str
    account: str
    def __init__(self, ledger: _Optional[str] = ..., account: _Optional[str] = ...) -> None: ...

class Balance(_message.Message):
    __slots__ = ("asset", "posted", "pending_out", "pending_in", "available")
    ASSET_FIELD_NUMBER: _ClassVar[int]
    POSTED_FIELD_NUMBER: _ClassVar[int]
    PENDING_OUT_FIELD_NUMBER: _ClassVar[int]
    PENDING_IN_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    asset: str
    posted: str
    pending_out: str
    pending_in: str
    available: str
    def __init__(self, asset: _Optional[str] = ..., posted: _Optional[str] = ..., pending_out: _Optional[str] = ..., pending_in: _Optional[str] = ..., available: _Optional[str] = ...) -> None: ...

class Account(_message.Message):
    __slots__ = ("ledger", "account", "status", "balances", "limits", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    LEDGER_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    BALANCES_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    ledger: str
    account: str
    status: str
    balances: _containers.RepeatedCompositeFieldContainer[Balance]
    limits: _containers.RepeatedCompositeFieldContainer[Limit]
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, ledger: _Optional[str] = ..., account: _Optional[str] = ..., status: _Optional[str] = ..., balances: _Optional[_Iterable[_Union[Balance, _Mapping]]] = ..., limits: _Optional[_Iterable[_Union[Limit, _Mapping]]] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ListAccountsRequest(_message.Message):
    __slots__ = ("ledger", "prefix", "limit", "cursor")
    LEDGER_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    ledger: str
    prefix: str
    limit: int
    cursor: str
    def __init__(self, ledger: _Optional[str] = ..., prefix: _Optional[str] = ..., limit: _Optional[int] = ..., cursor: _Optional[str] = ...) -> None: ...

class AccountPage(_message.Message):
    __slots__ = ("items", "next_cursor", "resume_cursor")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    RESUME_CURSOR_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[Account]
    next_cursor: str
    resume_cursor: str
    def __init__(self, items: _Optional[_Iterable[_Union[Account, _Mapping]]] = ..., next_cursor: _Optional[str] = ..., resume_cursor: _Optional[str] = ...) -> None: ...

class GetStatementRequest(_message.Message):
    __slots__ = ("ledger", "account", "asset", "limit", "cursor")
    LEDGER_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    ASSET_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    ledger: str
    account: str
    asset: str
    limit: int
    cursor: str
    def __init__(self, ledger: _Optional[str] = ..., account: _Optional[str] = ..., asset: _Optional[str] = ..., limit: _Optional[int] = ..., cursor: _Optional[str] = ...) -> None: ...

class StatementLine(_message.Message):
    __slots__ = ("asset", "amount", "balance_after", "tx_id", "counterparty", "time", "event_id")
    ASSET_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    BALANCE_AFTER_FIELD_NUMBER: _ClassVar[int]
    TX_ID_FIELD_NUMBER: _ClassVar[int]
    COUNTERPARTY_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    asset: str
    amount: str
    balance_after: str
    tx_id: str
    counterparty: str
    time: str
    event_id: str
    def __init__(self, asset: _Optional[str] = ..., amount: _Optional[str] = ..., balance_after: _Optional[str] = ..., tx_id: _Optional[str] = ..., counterparty: _Optional[str] = ..., time: _Optional[str] = ..., event_id: _Optional[str] = ...) -> None: ...

class StatementPage(_message.Message):
    __slots__ = ("items", "next_cursor", "resume_cursor")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    RESUME_CURSOR_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[StatementLine]
    next_cursor: str
    resume_cursor: str
    def __init__(self, items: _Optional[_Iterable[_Union[StatementLine, _Mapping]]] = ..., next_cursor: _Optional[str] = ..., resume_cursor: _Optional[str] = ...) -> None: ...

class GetBalanceAtRequest(_message.Message):
    __slots__ = ("ledger", "account", "at", "asset")
    LEDGER_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    ASSET_FIELD_NUMBER: _ClassVar[int]
    ledger: str
    account: str
    at: str
    asset: str
    def __init__(self, ledger: _Optional[str] = ..., account: _Optional[str] = ..., at: _Optional[str] = ..., asset: _Optional[str] = ...) -> None: ...

class BalanceAt(_message.Message):
    __slots__ = ("asset", "posted")
    ASSET_FIELD_NUMBER: _ClassVar[int]
    POSTED_FIELD_NUMBER: _ClassVar[int]
    asset: str
    posted: str
    def __init__(self, asset: _Optional[str] = ..., posted: _Optional[str] = ...) -> None: ...

class BalancesAt(_message.Message):
    __slots__ = ("ledger", "account", "at", "balances")
    LEDGER_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    BALANCES_FIELD_NUMBER: _ClassVar[int]
    ledger: str
    account: str
    at: str
    balances: _containers.RepeatedCompositeFieldContainer[BalanceAt]
    def __init__(self, ledger: _Optional[str] = ..., account: _Optional[str] = ..., at: _Optional[str] = ..., balances: _Optional[_Iterable[_Union[BalanceAt, _Mapping]]] = ...) -> None: ...

class GetTransactionRequest(_message.Message):
    __slots__ = ("ledger", "tx_id")
    LEDGER_FIELD_NUMBER: _ClassVar[int]
    TX_ID_FIELD_NUMBER: _ClassVar[int]
    ledger: str
    tx_id: str
    def __init__(self, ledger: _Optional[str] = ..., tx_id: _Optional[str] = ...) -> None: ...

class TransactionPosting(_message.Message):
    __slots__ = ("source", "destination", "asset", "amount")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    ASSET_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    source: str
    destination: str
    asset: str
    amount: str
    def __init__(self, source: _Optional[str] = ..., destination: _Optional[str] = ..., asset: _Optional[str] = ..., amount: _Optional[str] = ...) -> None: ...

class Transaction(_message.Message):
    __slots__ = ("ledger", "tx_id", "status", "postings", "metadata", "created_at", "updated_at", "expires_at", "failure", "reason", "reversed_by")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    LEDGER_FIELD_NUMBER: _ClassVar[int]
    TX_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    POSTINGS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REVERSED_BY_FIELD_NUMBER: _ClassVar[int]
    ledger: str
    tx_id: str
    status: str
    postings: _containers.RepeatedCompositeFieldContainer[TransactionPosting]
    metadata: _containers.ScalarMap[str, str]
    created_at: str
    updated_at: str
    expires_at: str
    failure: str
    reason: str
    reversed_by: str
    def __init__(self, ledger: _Optional[str] = ..., tx_id: _Optional[str] = ..., status: _Optional[str] = ..., postings: _Optional[_Iterable[_Union[TransactionPosting, _Mapping]]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., created_at: _Optional[str] = ..., updated_at: _Optional[str] = ..., expires_at: _Optional[str] = ..., failure: _Optional[str] = ..., reason: _Optional[str] = ..., reversed_by: _Optional[str] = ...) -> None: ...

class GetDocumentRequest(_message.Message):
    __slots__ = ("doc_type", "key")
    DOC_TYPE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    doc_type: str
    key: str
    def __init__(self, doc_type: _Optional[str] = ..., key: _Optional[str] = ...) -> None: ...

class Document(_message.Message):
    __slots__ = ("doc_type", "key", "version", "value")
    DOC_TYPE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    doc_type: str
    key: str
    version: int
    value: _struct_pb2.Struct
    def __init__(self, doc_type: _Optional[str] = ..., key: _Optional[str] = ..., version: _Optional[int] = ..., value: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class ListDocumentsRequest(_message.Message):
    __slots__ = ("doc_type", "prefix", "limit", "cursor", "field")
    class FieldEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    DOC_TYPE_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    doc_type: str
    prefix: str
    limit: int
    cursor: str
    field: _containers.ScalarMap[str, str]
    def __init__(self, doc_type: _Optional[str] = ..., prefix: _Optional[str] = ..., limit: _Optional[int] = ..., cursor: _Optional[str] = ..., field: _Optional[_Mapping[str, str]] = ...) -> None: ...

class DocumentPage(_message.Message):
    __slots__ = ("items", "next_cursor", "resume_cursor")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    RESUME_CURSOR_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[Document]
    next_cursor: str
    resume_cursor: str
    def __init__(self, items: _Optional[_Iterable[_Union[Document, _Mapping]]] = ..., next_cursor: _Optional[str] = ..., resume_cursor: _Optional[str] = ...) -> None: ...

class SearchEventsRequest(_message.Message):
    __slots__ = ("stream", "type", "to", "limit", "cursor")
    STREAM_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    FROM_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    stream: str
    type: str
    to: str
    limit: int
    cursor: str
    def __init__(self, stream: _Optional[str] = ..., type: _Optional[str] = ..., to: _Optional[str] = ..., limit: _Optional[int] = ..., cursor: _Optional[str] = ..., **kwargs) -> None: ...

class Event(_message.Message):
    __slots__ = ("event_id", "stream_version", "kind", "time", "position", "event", "resume")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    STREAM_VERSION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    RESUME_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    stream_version: int
    kind: str
    time: str
    position: str
    event: str
    resume: str
    def __init__(self, event_id: _Optional[str] = ..., stream_version: _Optional[int] = ..., kind: _Optional[str] = ..., time: _Optional[str] = ..., position: _Optional[str] = ..., event: _Optional[str] = ..., resume: _Optional[str] = ...) -> None: ...

class EventPage(_message.Message):
    __slots__ = ("items", "next_cursor", "resume_cursor")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    RESUME_CURSOR_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[Event]
    next_cursor: str
    resume_cursor: str
    def __init__(self, items: _Optional[_Iterable[_Union[Event, _Mapping]]] = ..., next_cursor: _Optional[str] = ..., resume_cursor: _Optional[str] = ...) -> None: ...

class FollowEventsRequest(_message.Message):
    __slots__ = ("stream", "type", "after", "doc_type", "resume")
    STREAM_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    DOC_TYPE_FIELD_NUMBER: _ClassVar[int]
    RESUME_FIELD_NUMBER: _ClassVar[int]
    stream: str
    type: str
    after: int
    doc_type: str
    resume: str
    def __init__(self, stream: _Optional[str] = ..., type: _Optional[str] = ..., after: _Optional[int] = ..., doc_type: _Optional[str] = ..., resume: _Optional[str] = ...) -> None: ...

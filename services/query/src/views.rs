//! What the query API answers with: JSON views of the projections' rows. Amounts are integers
//! in minor units, times RFC 3339 in UTC with milliseconds.

use serde::Serialize;
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use tally_core::projection::EventRow;
use tally_core::{Account, AccountStatus, Amount, Document, Failure, TxRecord, TxStatus};
use tally_http::Problem;
use tally_http::position::Position;
use tally_store::reads::PostedLine;
use utoipa::ToSchema;

/// A list's page: its items and the cursor of the next page (absent on the last page).
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    /// On the last page of a search across streams (`/v1/events` without `stream`): the cursor
    /// that goes on later with exactly the events of the range that were not shown yet (those
    /// projected since, whatever their time). Pass it as `cursor` to read them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resume_cursor: Option<String>,
}

impl<T> Page<T> {
    /// A page of `items`, with the next page's cursor if the list goes on.
    pub fn new(items: Vec<T>, next_cursor: Option<String>) -> Page<T> {
        Page { items, next_cursor, resume_cursor: None }
    }
}

/// RFC 3339, UTC, milliseconds.
pub fn time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map_or_else(|| ms.to_string(), |t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

/// An account's balance in one asset, in minor units.
#[derive(Debug, Serialize, ToSchema)]
pub struct BalanceView {
    /// `CODE/DECIMALS`, e.g. `USD/2`.
    pub asset: String,
    /// Posted credits minus posted debits.
    pub posted: Amount,
    /// Held by pending transactions that debit the account.
    pub pending_out: Amount,
    /// Promised by pending transactions that credit the account.
    pub pending_in: Amount,
    /// Posted minus held: what limits apply to (absent if it overflows).
    pub available: Option<Amount>,
}

/// An account's lower bound in one asset.
#[derive(Debug, Serialize, ToSchema)]
pub struct LimitView {
    pub asset: String,
    /// Lowest available balance allowed; absent: no lower bound.
    pub min_balance: Option<Amount>,
}

/// `GET /v1/ledgers/{ledger}/accounts/{account}`: status, balances, limits and metadata.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountView {
    pub ledger: String,
    pub account: String,
    /// `OPEN` or `CLOSED`.
    pub status: &'static str,
    pub balances: Vec<BalanceView>,
    /// Per-asset limits set when the account was opened or updated (assets not listed: may not
    /// go below zero, except `world`).
    pub limits: Vec<LimitView>,
    pub metadata: BTreeMap<String, String>,
}

impl AccountView {
    pub fn of(ledger: &str, account: &str, row: Account) -> AccountView {
        let balances = row
            .balances
            .iter()
            .map(|(asset, b)| BalanceView {
                asset: asset.to_string(),
                posted: b.posted,
                pending_out: b.pending_out,
                pending_in: b.pending_in,
                available: b.available(),
            })
            .collect();
        let limits = row
            .limits
            .iter()
            .map(|(asset, min_balance)| LimitView { asset: asset.to_string(), min_balance: *min_balance })
            .collect();
        let status = match row.status {
            AccountStatus::Open => "OPEN",
            AccountStatus::Closed => "CLOSED",
        };
        AccountView {
            ledger: ledger.to_owned(),
            account: account.to_owned(),
            status,
            balances,
            limits,
            metadata: row.metadata,
        }
    }
}

/// One posting on an account's statement.
#[derive(Debug, Serialize, ToSchema)]
pub struct LineView {
    pub asset: String,
    /// Credit (positive) or debit (negative) to this account.
    pub amount: Amount,
    /// The account's posted balance in the asset right after this line.
    pub balance_after: Amount,
    pub tx_id: String,
    /// The other account of the posting.
    pub counterparty: String,
    pub time: String,
    pub event_id: String,
}

impl LineView {
    pub fn of(line: PostedLine) -> LineView {
        LineView {
            asset: line.asset.to_string(),
            amount: line.line.amount,
            balance_after: line.line.balance_after,
            tx_id: line.line.tx_id.to_string(),
            counterparty: line.line.counterparty.to_string(),
            time: time(line.line.time_ms),
            event_id: line.line.event_id,
        }
    }
}

/// One asset's posted balance at an instant.
#[derive(Debug, Serialize, ToSchema)]
pub struct BalanceAtView {
    pub asset: String,
    /// Posted balance at the instant.
    pub posted: Amount,
}

/// `GET .../accounts/{account}/balance?at=`: posted balances as of an instant.
#[derive(Debug, Serialize, ToSchema)]
pub struct BalancesAtView {
    pub ledger: String,
    pub account: String,
    pub at: String,
    pub balances: Vec<BalanceAtView>,
}

/// One posting of a transaction.
#[derive(Debug, Serialize, ToSchema)]
pub struct PostingView {
    pub source: String,
    pub destination: String,
    pub asset: String,
    pub amount: Amount,
}

/// `GET /v1/ledgers/{ledger}/transactions/{tx_id}`: a transaction as it stands now.
#[derive(Debug, Serialize, ToSchema)]
pub struct TransactionView {
    pub ledger: String,
    pub tx_id: String,
    /// `PENDING`, `POSTED` or `FAILED`.
    pub status: &'static str,
    /// Why it FAILED: `REJECTED`, `VOIDED` or `EXPIRED`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<&'static str>,
    /// The reason code of a rejection (`INSUFFICIENT_FUNDS`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// What moved (POSTED) or is held (PENDING); empty when FAILED.
    pub postings: Vec<PostingView>,
    pub metadata: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reversed_by: Option<String>,
    pub created_at: String,
    /// When the status last changed.
    pub updated_at: String,
}

impl TransactionView {
    pub fn of(ledger: &str, tx_id: &str, tx: TxRecord) -> TransactionView {
        let (status, failure, reason) = match tx.status {
            TxStatus::Pending => ("PENDING", None, None),
            TxStatus::Posted => ("POSTED", None, None),
            TxStatus::Failed(Failure::Rejected(reason)) => ("FAILED", Some("REJECTED"), Some(reason.code())),
            TxStatus::Failed(Failure::Voided) => ("FAILED", Some("VOIDED"), None),
            TxStatus::Failed(Failure::Expired) => ("FAILED", Some("EXPIRED"), None),
        };
        let postings = tx
            .postings
            .into_iter()
            .map(|p| PostingView {
                source: p.source.to_string(),
                destination: p.destination.to_string(),
                asset: p.asset.to_string(),
                amount: p.amount,
            })
            .collect();
        TransactionView {
            ledger: ledger.to_owned(),
            tx_id: tx_id.to_owned(),
            status,
            failure,
            reason,
            postings,
            metadata: tx.metadata,
            expires_at: tx.expires_at_ms.map(time),
            reversed_by: tx.reversed_by.map(|id| id.to_string()),
            created_at: time(tx.created_ms),
            updated_at: time(tx.updated_ms),
        }
    }
}

/// `GET /v1/state/{type}/{key}`: a state document as written, with its version.
#[derive(Debug, Serialize, ToSchema)]
pub struct DocumentView {
    pub doc_type: String,
    pub key: String,
    /// Counts puts and deletes; also the ETag.
    pub version: u64,
    /// The document exactly as it was written: numbers keep every digit they were sent with.
    #[schema(value_type = Object)]
    pub value: Box<RawValue>,
}

impl DocumentView {
    /// The view of a live document (`None` for a deleted one). A stored value that is not JSON
    /// (it never is: the processor refuses those) is an error, never a null.
    pub fn of(doc_type: &str, key: &str, doc: Document) -> Result<Option<DocumentView>, Problem> {
        let Some(value) = doc.value else { return Ok(None) };
        let value =
            RawValue::from_string(value).map_err(|e| unservable(&format!("document {doc_type}/{key}"), e))?;
        Ok(Some(DocumentView {
            doc_type: doc_type.to_owned(),
            key: key.to_owned(),
            version: doc.version,
            value,
        }))
    }
}

/// A stored row that cannot be written as JSON: logged, and answered as a server error.
fn unservable(what: &str, e: serde_json::Error) -> Problem {
    tracing::error!("serving {what}: {e}");
    Problem::new(
        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
        "internal error",
        format!("{what} could not be served"),
    )
}

/// An event with its place in the log.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventView {
    pub event_id: String,
    pub stream_version: u64,
    /// The kind of event (`TransactionPosted`, ...).
    pub kind: String,
    pub time: String,
    pub position: String,
    /// The whole event, as the events topic carries it. Amounts are JSON integers of up to 39
    /// digits (i128 minor units), written exactly: read them with a parser that keeps big
    /// integers (or read the events topic, where they are Avro decimals).
    #[schema(value_type = Object)]
    pub event: Box<RawValue>,
    /// On a live stream across streams (`/v1/events/live` without `stream`): the token to
    /// resume after this event (its SSE id too).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resume: Option<String>,
}

impl EventView {
    pub fn of(row: EventRow) -> Result<EventView, Problem> {
        let event = serde_json::value::to_raw_value(&row.event)
            .map_err(|e| unservable(&format!("event {}", row.event.event_id()), e))?;
        Ok(EventView {
            event_id: row.event.event_id(),
            stream_version: row.event.stream_version,
            kind: row.event.body.kind().to_owned(),
            time: time(row.event.time_ms),
            position: Position { partition: row.partition, offset: row.offset }.token(&row.event.tenant),
            event,
            resume: None,
        })
    }
}

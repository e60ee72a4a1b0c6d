//! What the query side reads, one small trait per concern. Each is written once, over
//! [`ProjectionStore::row`] and [`ProjectionStore::scan`], so every backend answers alike.
//!
//! Lists come a page at a time: at most `limit` items (capped at [`PAGE_MAX`]) and the cursor
//! of the next page, which is the last item's place in the list: a page is never skipped or
//! repeated while rows are added, because every list is in key order.

use crate::StoreError;
use crate::projections::{ProjectionStore, Scan, Version};
use tally_core::projection::{EventRef, EventRow, Row, RowKey, StatementLine};
use tally_core::{Account, AccountId, Amount, Asset, CommandId, DocKey, DocType, Document, LedgerId};
use tally_core::{StreamId, TenantId, TxId, TxRecord};

/// The most items one page holds, whatever `limit` asks for.
pub const PAGE_MAX: usize = 1000;

/// Some items of a list and where the next page starts (`None`: there is no next page).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T, C> {
    /// At most the `limit` asked for (and never more than [`PAGE_MAX`]), in the list's order.
    pub items: Vec<T>,
    /// Where the next page starts (from the last item); `None`: no next page. A full page always
    /// has one, though the next page may be empty.
    pub next: Option<C>,
}

impl<T, C> Page<T, C> {
    /// A page of `items` read with `limit`: only a full page can have a successor.
    fn of(items: Vec<T>, limit: usize, cursor: impl Fn(&T) -> C) -> Self {
        let next = match items.len() == limit {
            true => items.last().map(cursor),
            false => None,
        };
        Page { items, next }
    }
}

fn page_size(limit: usize) -> usize {
    limit.clamp(1, PAGE_MAX)
}

/// The row at `key`, if there is one, taken apart by `pick`.
fn typed<S: ProjectionStore + ?Sized, T>(
    store: &S,
    version: Version,
    key: RowKey,
    pick: fn(Row) -> Option<T>,
) -> Result<Option<T>, StoreError> {
    match store.row(version, &key)? {
        None => Ok(None),
        Some(row) => pick(row)
            .map(Some)
            .ok_or_else(|| StoreError::Corrupt(format!("{key:?} holds another kind of row"))),
    }
}

/// Scans and takes every row apart with `pick`.
fn scanned<S: ProjectionStore + ?Sized, T>(
    store: &S,
    version: Version,
    scan: &Scan,
    limit: usize,
    pick: fn(RowKey, Row) -> Option<T>,
) -> Result<Vec<T>, StoreError> {
    let rows = store.scan(version, scan, limit)?;
    let pick = |(key, row): (RowKey, Row)| {
        let what = format!("{key:?} in {scan:?}");
        pick(key, row).ok_or_else(|| StoreError::Corrupt(format!("{what} is another kind of row")))
    };
    rows.into_iter().map(pick).collect()
}

/// A page of the rows `scan` selects, each taken apart by `pick`, with the cursor `cursor`
/// makes from the last one.
fn page_of<S: ProjectionStore + ?Sized, T, C>(
    store: &S,
    version: Version,
    scan: &Scan,
    limit: usize,
    pick: fn(RowKey, Row) -> Option<T>,
    cursor: impl Fn(&T) -> C,
) -> Result<Page<T, C>, StoreError> {
    let limit = page_size(limit);
    Ok(Page::of(scanned(store, version, scan, limit, pick)?, limit, cursor))
}

/// Balances, limits, metadata and status of accounts.
pub trait Accounts: ProjectionStore {
    /// One account of a ledger in `version`; `None` if no event made it.
    fn account(
        &self,
        version: Version,
        tenant: &TenantId,
        ledger: &LedgerId,
        account: &AccountId,
    ) -> Result<Option<Account>, StoreError> {
        let key =
            RowKey::Account { tenant: tenant.clone(), ledger: ledger.clone(), account: account.clone() };
        typed(self, version, key, |row| match row {
            Row::Account(account) => Some(account),
            _ => None,
        })
    }

    /// A ledger's accounts by id: those whose id starts with `prefix`, after `after`.
    fn accounts(
        &self,
        version: Version,
        tenant: &TenantId,
        ledger: &LedgerId,
        prefix: Option<&AccountId>,
        after: Option<&AccountId>,
        limit: usize,
    ) -> Result<Page<(AccountId, Account), AccountId>, StoreError> {
        let scan = Scan::Accounts {
            tenant: tenant.clone(),
            ledger: ledger.clone(),
            prefix: prefix.cloned(),
            after: after.cloned(),
        };
        let pick = |key, row| match (key, row) {
            (RowKey::Account { account, .. }, Row::Account(row)) => Some((account, row)),
            _ => None,
        };
        page_of(self, version, &scan, limit, pick, |(id, _)| id.clone())
    }
}

impl<S: ProjectionStore + ?Sized> Accounts for S {}

/// Where a statement line is: its event's offset in the events partition and its line in the
/// event. Lines of one account are ordered by it across assets (an account's events are all in
/// one partition).
pub type LinePosition = (i64, u32);

/// One line of a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostedLine {
    pub asset: Asset,
    /// Where the line is: (event offset, line in the event).
    pub position: LinePosition,
    pub line: StatementLine,
}

/// Accounts' statements: postings newest first with the balance after each.
pub trait Statements: ProjectionStore {
    /// An account's lines before `before`, newest first: in one asset, or (`None`) in all the
    /// assets its balances name, merged.
    #[allow(clippy::too_many_arguments)]
    fn statement(
        &self,
        version: Version,
        tenant: &TenantId,
        ledger: &LedgerId,
        account: &AccountId,
        asset: Option<&Asset>,
        before: Option<LinePosition>,
        limit: usize,
    ) -> Result<Page<PostedLine, LinePosition>, StoreError> {
        let limit = page_size(limit);
        let assets: Vec<Asset> = match asset {
            Some(asset) => vec![asset.clone()],
            None => self
                .account(version, tenant, ledger, account)?
                .map_or_else(Vec::new, |found| found.balances.into_keys().collect()),
        };
        let mut lines = Vec::new();
        for asset in assets {
            let scan = Scan::Statement {
                tenant: tenant.clone(),
                ledger: ledger.clone(),
                account: account.clone(),
                asset,
                before,
            };
            lines.extend(scanned(self, version, &scan, limit, |key, row| match (key, row) {
                (RowKey::Posting { asset, offset, line, .. }, Row::Posting(row)) => {
                    Some(PostedLine { asset, position: (offset, line), line: row })
                }
                _ => None,
            })?);
        }
        lines.sort_by_key(|line| std::cmp::Reverse(line.position));
        lines.truncate(limit);
        Ok(Page::of(lines, limit, |line| line.position))
    }

    /// The posted balance in `asset` after the newest line stamped at or before `at_ms`
    /// (0 before the first). Event times come from the processor's clock, so they follow the
    /// log's order as far as that clock does. Reads every line after `at_ms`: the cost grows
    /// with how far back it is.
    fn balance_at(
        &self,
        version: Version,
        tenant: &TenantId,
        ledger: &LedgerId,
        account: &AccountId,
        asset: &Asset,
        at_ms: i64,
    ) -> Result<Amount, StoreError> {
        let mut before = None;
        loop {
            let page = self.statement(version, tenant, ledger, account, Some(asset), before, PAGE_MAX)?;
            if let Some(found) = page.items.iter().find(|line| line.line.time_ms <= at_ms) {
                return Ok(found.line.balance_after);
            }
            match page.next {
                Some(next) => before = Some(next),
                None => return Ok(0),
            }
        }
    }
}

impl<S: ProjectionStore + ?Sized> Statements for S {}

/// Transactions by id, with their status, postings and why they failed.
pub trait Transactions: ProjectionStore {
    /// One transaction of a ledger by id in `version`; `None` if the id was never used.
    fn transaction(
        &self,
        version: Version,
        tenant: &TenantId,
        ledger: &LedgerId,
        tx_id: &TxId,
    ) -> Result<Option<TxRecord>, StoreError> {
        let key =
            RowKey::Transaction { tenant: tenant.clone(), ledger: ledger.clone(), tx_id: tx_id.clone() };
        typed(self, version, key, |row| match row {
            Row::Transaction(tx) => Some(tx),
            _ => None,
        })
    }
}

impl<S: ProjectionStore + ?Sized> Transactions for S {}

/// Most streams one command id is looked up in (a client reusing one id in more streams than
/// this is told the first ones).
pub const OUTCOME_STREAMS_MAX: usize = 100;

/// How each command was answered, for callers that sent it without waiting.
pub trait Outcomes: ProjectionStore {
    /// The first answer to `command` in each stream of `tenant` that used the id (a command id
    /// names one command per stream), in stream order; at most [`OUTCOME_STREAMS_MAX`].
    fn outcomes(
        &self,
        version: Version,
        tenant: &TenantId,
        command: &CommandId,
    ) -> Result<Vec<(StreamId, EventRow)>, StoreError> {
        let scan = Scan::Outcomes { tenant: tenant.clone(), command_id: command.clone() };
        let rows = self.scan(version, &scan, OUTCOME_STREAMS_MAX)?;
        Ok(rows
            .into_iter()
            .filter_map(|row| match row {
                (RowKey::Outcome { stream, .. }, Row::Outcome(outcome)) => Some((stream, outcome)),
                _ => None,
            })
            .collect())
    }
}

impl<S: ProjectionStore + ?Sized> Outcomes for S {}

/// State documents by (type, key), deleted ones included (their value is `None`).
pub trait Documents: ProjectionStore {
    /// One state document in `version`; `None` if no event made it (a deleted one is there,
    /// with `value: None`).
    fn document(
        &self,
        version: Version,
        tenant: &TenantId,
        doc_type: &DocType,
        key: &DocKey,
    ) -> Result<Option<Document>, StoreError> {
        let key = RowKey::Document { tenant: tenant.clone(), doc_type: doc_type.clone(), key: key.clone() };
        typed(self, version, key, |row| match row {
            Row::Document(document) => Some(document),
            _ => None,
        })
    }

    /// A type's documents by key: those whose key starts with `prefix`, after `after`.
    fn documents(
        &self,
        version: Version,
        tenant: &TenantId,
        doc_type: &DocType,
        prefix: Option<&DocKey>,
        after: Option<&DocKey>,
        limit: usize,
    ) -> Result<Page<(DocKey, Document), DocKey>, StoreError> {
        let scan = Scan::Documents {
            tenant: tenant.clone(),
            doc_type: doc_type.clone(),
            prefix: prefix.cloned(),
            after: after.cloned(),
        };
        let pick = |key, row| match (key, row) {
            (RowKey::Document { key, .. }, Row::Document(row)) => Some((key, row)),
            _ => None,
        };
        page_of(self, version, &scan, limit, pick, |(key, _)| key.clone())
    }
}

impl<S: ProjectionStore + ?Sized> Documents for S {}

/// An event's place in its tenant's timeline: (time, events partition, offset).
pub type TimelinePlace = (i64, i32, i64);

/// The events index: each stream's events in order, with their place in the log, and each
/// tenant's events in time order.
pub trait EventsIndex: ProjectionStore {
    /// One event of a stream.
    fn stream_event(
        &self,
        version: Version,
        tenant: &TenantId,
        stream: &StreamId,
        stream_version: u64,
    ) -> Result<Option<EventRow>, StoreError> {
        let key = RowKey::Event { tenant: tenant.clone(), stream: stream.clone(), stream_version };
        typed(self, version, key, |row| match row {
            Row::Event(event) => Some(event),
            _ => None,
        })
    }

    /// A tenant's events stamped in `between` (from, and before; none: no end), in time order,
    /// after `after`; each names its event ([`EventsIndex::stream_event`] reads it).
    fn timeline(
        &self,
        version: Version,
        tenant: &TenantId,
        (from_ms, to_ms): (i64, Option<i64>),
        after: Option<TimelinePlace>,
        limit: usize,
    ) -> Result<Page<(TimelinePlace, EventRef), TimelinePlace>, StoreError> {
        let scan = Scan::Timeline { tenant: tenant.clone(), from_ms, to_ms, after };
        let pick = |key, row| match (key, row) {
            (RowKey::EventAt { time_ms, partition, offset, .. }, Row::EventAt(event)) => {
                Some(((time_ms, partition, offset), event))
            }
            _ => None,
        };
        page_of(self, version, &scan, limit, pick, |(place, _)| *place)
    }

    /// A tenant's events in events partition `partition` at offsets in `(after, upto]`, in log
    /// order; each names its event ([`EventsIndex::stream_event`] reads it). The cursor is the
    /// last offset.
    fn partition_events(
        &self,
        version: Version,
        tenant: &TenantId,
        (partition, after, upto): (i32, i64, i64),
        limit: usize,
    ) -> Result<Page<(i64, EventRef), i64>, StoreError> {
        let scan = Scan::Partition { tenant: tenant.clone(), partition, after, upto };
        let pick = |key, row| match (key, row) {
            (RowKey::EventByOffset { offset, .. }, Row::EventAt(event)) => Some((offset, event)),
            _ => None,
        };
        page_of(self, version, &scan, limit, pick, |(offset, _)| *offset)
    }

    /// A stream's events from stream version `after + 1` on.
    fn stream_events(
        &self,
        version: Version,
        tenant: &TenantId,
        stream: &StreamId,
        after: u64,
        limit: usize,
    ) -> Result<Page<EventRow, u64>, StoreError> {
        let scan = Scan::Stream { tenant: tenant.clone(), stream: stream.clone(), after };
        let pick = |_, row| match row {
            Row::Event(event) => Some(event),
            _ => None,
        };
        page_of(self, version, &scan, limit, pick, |row: &EventRow| row.event.stream_version)
    }
}

impl<S: ProjectionStore + ?Sized> EventsIndex for S {}

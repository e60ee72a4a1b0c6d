//! The rules: `validate` decides what a command does to a state, `apply` folds an event into it.
//! Both are pure. `decide` wraps `validate` into the one event every command produces.

use crate::limits::*;
use crate::state::CommandRecord;
use crate::state::{Account, AccountStatus, Balance, Document, Failure, Ledger, TxRecord, TxStatus};
use crate::{
    AccountId, Amount, Asset, AssetLimit, Command, CommandBody, CommandId, DocKey, DocType, Event, EventBody,
    LedgerId, Metadata, Posting, Reason, Rejection, State, TxId, TxRequest, command_fingerprint, fingerprint,
    reversal_fingerprint, transfer_fingerprint,
};
use std::collections::{BTreeMap, HashMap};

type Verdict = Result<EventBody, Rejection>;

fn reject(reason: Reason, detail: impl Into<String>) -> Verdict {
    Err(Rejection::new(reason, detail))
}

/// Decides what `command` does to `state` at `now_ms`: the event body of the accepted change,
/// or why it is refused. Never mutates; never panics.
pub fn validate(state: &State, command: &Command, now_ms: i64) -> Verdict {
    let tenant = state.tenants.get(&command.tenant);
    let empty = Ledger::default();
    let ledger_of = |id: &LedgerId| tenant.and_then(|t| t.ledgers.get(id)).unwrap_or(&empty);
    use CommandBody::*;
    match &command.body {
        DefineAsset { ledger, asset } => define_asset(ledger_of(ledger), ledger, asset),
        OpenAccount { ledger, account, limits, metadata } => {
            open_account(ledger_of(ledger), ledger, account, limits, metadata)
        }
        UpdateAccount { ledger, account, limits, metadata } => {
            update_account(ledger_of(ledger), ledger, account, limits, metadata)
        }
        CloseAccount { ledger, account } => close_account(ledger_of(ledger), ledger, account),
        Transact { ledger, tx_id, request } => transact(ledger_of(ledger), ledger, tx_id, request, now_ms),
        CommitPending { ledger, tx_id, amounts } => {
            commit_pending(ledger_of(ledger), ledger, tx_id, amounts.as_deref(), now_ms)
        }
        VoidPending { ledger, tx_id } => {
            pending(ledger_of(ledger), tx_id)?;
            Ok(EventBody::PendingVoided { ledger: ledger.clone(), tx_id: tx_id.clone() })
        }
        ExpirePending { ledger, tx_id } => expire_pending(ledger_of(ledger), ledger, tx_id, now_ms),
        PutDocument { doc_type, key, value, expected_version } => {
            let doc = tenant.and_then(|t| t.documents.get(&(doc_type.clone(), key.clone())));
            put_document(doc, doc_type, key, value, *expected_version)
        }
        DeleteDocument { doc_type, key, expected_version } => {
            let doc = tenant.and_then(|t| t.documents.get(&(doc_type.clone(), key.clone())));
            delete_document(doc, doc_type, key, *expected_version)
        }
    }
}

/// The one event a command produces at `now_ms`.
///
/// First the command id (scoped to the tenant and the command's stream, see [`CommandId`]):
/// an id answered before with the same command is answered by [`EventBody::CommandDeduplicated`]
/// pointing at the first answer; with another command, by a conflict that changes nothing
/// (`ID_CONFLICT` when the id is the transaction's default id, else `COMMAND_ID_CONFLICT`).
/// A new id is [`validate`]d: the accepted change, or its rejection recorded as an event (a new
/// transaction id is recorded FAILED with the reason).
pub fn decide(state: &State, command: &Command, now_ms: i64) -> Event {
    let stream = command.body.stream();
    let command_fingerprint = command_fingerprint(&command.body);
    let body = match state.command(&command.tenant, &stream, &command.command_id) {
        Some(first) if first.fingerprint == command_fingerprint => {
            EventBody::CommandDeduplicated { first_version: first.version, first_offset: first.offset }
        }
        Some(first) => EventBody::CommandRejected {
            command: command.body.kind().to_owned(),
            reason: command_id_conflict(command),
            detail: format!("command id {} was used before for a different command", command.command_id),
            conflicts_with: Some(first.version),
        },
        None => validate(state, command, now_ms).unwrap_or_else(|r| rejection_event(&command.body, r)),
    };
    Event {
        tenant: command.tenant.clone(),
        stream_version: state.stream_version(&command.tenant, &stream) + 1,
        stream,
        command_id: command.command_id.clone(),
        command_fingerprint,
        actor: command.actor.clone(),
        time_ms: now_ms,
        body,
    }
}

/// A transaction sent again without an explicit id, with another body, reused its transaction
/// id: that is the conflict to report. Any other reuse is the command id's.
fn command_id_conflict(command: &Command) -> Reason {
    if CommandId::default_for(&command.body).as_ref() == Some(&command.command_id) {
        Reason::IdConflict
    } else {
        Reason::CommandIdConflict
    }
}

fn rejection_event(command: &CommandBody, r: Rejection) -> EventBody {
    match command {
        // A conflict must not touch the record of the id's first use.
        CommandBody::Transact { ledger, tx_id, request } if r.reason != Reason::IdConflict => {
            EventBody::TransactionFailed {
                ledger: ledger.clone(),
                tx_id: tx_id.clone(),
                request: request.clone(),
                reason: r.reason,
                detail: r.detail,
            }
        }
        _ => EventBody::CommandRejected {
            command: command.kind().to_owned(),
            reason: r.reason,
            detail: r.detail,
            conflicts_with: None,
        },
    }
}

// ---- assets and accounts -------------------------------------------------------------------

fn define_asset(l: &Ledger, ledger: &LedgerId, asset: &Asset) -> Verdict {
    match l.assets.get(asset.code()) {
        Some(known) if known != asset => {
            reject(Reason::AssetConflict, format!("{} is defined as {known}", asset.code()))
        }
        _ => Ok(EventBody::AssetDefined { ledger: ledger.clone(), asset: asset.clone() }),
    }
}

fn known_asset(l: &Ledger, asset: &Asset) -> Result<(), Rejection> {
    match l.assets.get(asset.code()) {
        Some(known) if known == asset => Ok(()),
        Some(known) => {
            Err(Rejection::new(Reason::UnknownAsset, format!("{asset} is not defined; {known} is")))
        }
        None => Err(Rejection::new(Reason::UnknownAsset, format!("{asset} is not defined in this ledger"))),
    }
}

fn check_metadata(m: &Metadata) -> Result<(), Rejection> {
    let too_large = m.len() > METADATA_ENTRIES_MAX
        || m.iter().any(|(k, v)| k.len() > METADATA_KEY_LEN_MAX || v.len() > METADATA_VALUE_LEN_MAX);
    if too_large {
        return Err(Rejection::new(
            Reason::MetadataTooLarge,
            format!(
                "at most {METADATA_ENTRIES_MAX} entries, keys up to {METADATA_KEY_LEN_MAX} bytes, values up to {METADATA_VALUE_LEN_MAX}"
            ),
        ));
    }
    Ok(())
}

fn check_limits(l: &Ledger, limits: &[AssetLimit]) -> Result<(), Rejection> {
    if limits.len() > ACCOUNT_LIMITS_MAX {
        return Err(Rejection::new(Reason::MetadataTooLarge, format!("at most {ACCOUNT_LIMITS_MAX} limits")));
    }
    limits.iter().try_for_each(|lim| known_asset(l, &lim.asset))
}

fn not_world(account: &AccountId) -> Result<(), Rejection> {
    if account.is_world() {
        return Err(Rejection::new(Reason::WorldAccount, "the world account is managed by the ledger"));
    }
    Ok(())
}

fn open_account(
    l: &Ledger,
    ledger: &LedgerId,
    account: &AccountId,
    limits: &[AssetLimit],
    metadata: &Metadata,
) -> Verdict {
    not_world(account)?;
    if l.accounts.contains_key(account) {
        return reject(Reason::AccountExists, format!("account {account} exists; update it instead"));
    }
    check_limits(l, limits)?;
    check_metadata(metadata)?;
    let opened = Account { limits: limit_map(limits), ..Account::auto_created() };
    check_within_limits(&opened, account)?;
    Ok(EventBody::AccountOpened {
        ledger: ledger.clone(),
        account: account.clone(),
        limits: limits.to_vec(),
        metadata: metadata.clone(),
    })
}

fn open_account_ref<'a>(l: &'a Ledger, account: &AccountId) -> Result<&'a Account, Rejection> {
    let a = l.accounts.get(account).ok_or_else(|| {
        Rejection::new(Reason::AccountNotFound, format!("account {account} does not exist"))
    })?;
    if a.status == AccountStatus::Closed {
        return Err(Rejection::new(Reason::AccountClosed, format!("account {account} is closed")));
    }
    Ok(a)
}

fn update_account(
    l: &Ledger,
    ledger: &LedgerId,
    account: &AccountId,
    limits: &[AssetLimit],
    metadata: &Metadata,
) -> Verdict {
    not_world(account)?;
    let current = open_account_ref(l, account)?;
    check_limits(l, limits)?;
    check_metadata(metadata)?;
    check_within_limits(&Account { limits: limit_map(limits), ..current.clone() }, account)?;
    Ok(EventBody::AccountUpdated {
        ledger: ledger.clone(),
        account: account.clone(),
        limits: limits.to_vec(),
        metadata: metadata.clone(),
    })
}

/// An account's limits must not put it below them: every asset it holds or has a limit in
/// (a positive minimum on an empty account is already broken).
fn check_within_limits(a: &Account, id: &AccountId) -> Result<(), Rejection> {
    for asset in a.balances.keys().chain(a.limits.keys()) {
        let (Some(min), Some(available)) = (a.min_balance(id, asset), a.balance(asset).available()) else {
            continue;
        };
        if available < min {
            return Err(Rejection::new(
                Reason::LimitBelowBalance,
                format!("{asset} available {available} is below the limit {min}"),
            ));
        }
    }
    Ok(())
}

fn close_account(l: &Ledger, ledger: &LedgerId, account: &AccountId) -> Verdict {
    not_world(account)?;
    if !open_account_ref(l, account)?.is_empty() {
        return reject(Reason::AccountNotEmpty, format!("account {account} has balances or holds"));
    }
    Ok(EventBody::AccountClosed { ledger: ledger.clone(), account: account.clone() })
}

fn limit_map(limits: &[AssetLimit]) -> BTreeMap<Asset, Option<Amount>> {
    limits.iter().map(|l| (l.asset.clone(), l.min_balance)).collect()
}

// ---- transactions --------------------------------------------------------------------------

fn transact(l: &Ledger, ledger: &LedgerId, tx_id: &TxId, request: &TxRequest, now_ms: i64) -> Verdict {
    if let Some(first) = l.transactions.get(tx_id) {
        // Only a reused id pays for a fingerprint here; `apply` records it for new ids.
        if first.fingerprint == fingerprint(request) {
            let first_rejection = match first.status {
                TxStatus::Failed(Failure::Rejected(reason)) => Some(reason),
                _ => None,
            };
            return Ok(EventBody::TransactionDeduplicated {
                ledger: ledger.clone(),
                tx_id: tx_id.clone(),
                first_rejection,
            });
        }
        return reject(Reason::IdConflict, format!("transaction {tx_id} exists with a different request"));
    }
    let (ledger, tx_id) = (ledger.clone(), tx_id.clone());
    match request {
        TxRequest::Transfer { postings, metadata, pending_timeout_ms: None } => {
            check_metadata(metadata)?;
            check_postings(l, postings)?;
            check_movement(l, postings, Movement::Post)?;
            Ok(EventBody::TransactionPosted {
                ledger,
                tx_id,
                postings: postings.clone(),
                metadata: metadata.clone(),
                reverses: None,
            })
        }
        TxRequest::Transfer { postings, metadata, pending_timeout_ms: Some(timeout_ms) } => {
            check_metadata(metadata)?;
            check_postings(l, postings)?;
            if *timeout_ms == 0 || *timeout_ms > PENDING_TIMEOUT_MS_MAX {
                return reject(
                    Reason::InvalidTimeout,
                    format!("pending timeout must be 1..={PENDING_TIMEOUT_MS_MAX} ms"),
                );
            }
            check_movement(l, postings, Movement::Hold)?;
            Ok(EventBody::TransactionPending {
                ledger,
                tx_id,
                postings: postings.clone(),
                metadata: metadata.clone(),
                timeout_ms: *timeout_ms,
                expires_at_ms: now_ms.saturating_add(*timeout_ms as i64),
            })
        }
        TxRequest::Reversal { original, metadata } => {
            check_metadata(metadata)?;
            let postings = reversal_postings(l, original)?;
            check_movement(l, &postings, Movement::Post)?;
            Ok(EventBody::TransactionPosted {
                ledger,
                tx_id,
                postings,
                metadata: metadata.clone(),
                reverses: Some(original.clone()),
            })
        }
    }
}

fn check_postings(l: &Ledger, postings: &[Posting]) -> Result<(), Rejection> {
    if postings.is_empty() {
        return Err(Rejection::new(Reason::NoPostings, "a transaction needs at least one posting"));
    }
    if postings.len() > POSTINGS_MAX {
        return Err(Rejection::new(Reason::TooManyPostings, format!("at most {POSTINGS_MAX} postings")));
    }
    for (i, p) in postings.iter().enumerate() {
        if p.amount <= 0 {
            return Err(Rejection::new(
                Reason::NonPositiveAmount,
                format!("posting {i}: amount must be positive"),
            ));
        }
        if p.source == p.destination {
            return Err(Rejection::new(
                Reason::SelfPosting,
                format!("posting {i}: source and destination are both {}", p.source),
            ));
        }
        known_asset(l, &p.asset)?;
    }
    Ok(())
}

fn reversal_postings(l: &Ledger, original: &TxId) -> Result<Vec<Posting>, Rejection> {
    let tx = l.transactions.get(original).ok_or_else(|| {
        Rejection::new(Reason::TransactionNotFound, format!("transaction {original} does not exist"))
    })?;
    if tx.status != TxStatus::Posted {
        return Err(Rejection::new(Reason::NotReversible, format!("transaction {original} is not posted")));
    }
    if let Some(by) = &tx.reversed_by {
        return Err(Rejection::new(
            Reason::AlreadyReversed,
            format!("transaction {original} was reversed by {by}"),
        ));
    }
    Ok(tx.postings.iter().map(inverse).collect())
}

fn inverse(p: &Posting) -> Posting {
    Posting { source: p.destination.clone(), destination: p.source.clone(), ..p.clone() }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Movement {
    /// Debits and credits change posted balances.
    Post,
    /// Debits are held (pending_out), credits promised (pending_in).
    Hold,
}

/// Checks that moving `postings` keeps every account open, within its limits and within i128.
/// The postings are replayed in the order `apply` moves them, with checked arithmetic, so no
/// intermediate balance can overflow there; limits apply to the final balances (a transaction
/// is atomic). Transactions are small (at most POSTINGS_MAX postings): a linear scan of the
/// touched balances beats hashing.
fn check_movement(l: &Ledger, postings: &[Posting], movement: Movement) -> Result<(), Rejection> {
    let overflow = || Rejection::new(Reason::Overflow, "amounts overflow");
    let default = Account::auto_created();
    // (account id, account, asset, balance after the postings so far, debited?)
    let mut touched: Vec<(&AccountId, &Account, &Asset, Balance, bool)> =
        Vec::with_capacity(postings.len() * 2);
    for p in postings {
        for (account_id, debit) in [(&p.source, true), (&p.destination, false)] {
            let i = match touched.iter().position(|t| t.0 == account_id && t.2 == &p.asset) {
                Some(i) => i,
                None => {
                    let account = l.accounts.get(account_id).unwrap_or(&default);
                    if account.status == AccountStatus::Closed {
                        return Err(Rejection::new(
                            Reason::AccountClosed,
                            format!("account {account_id} is closed"),
                        ));
                    }
                    touched.push((account_id, account, &p.asset, account.balance(&p.asset), false));
                    touched.len() - 1
                }
            };
            let b = &mut touched[i].3;
            let moved = match (movement, debit) {
                (Movement::Post, true) => b.posted.checked_sub(p.amount).map(|v| b.posted = v),
                (Movement::Post, false) => b.posted.checked_add(p.amount).map(|v| b.posted = v),
                (Movement::Hold, true) => b.pending_out.checked_add(p.amount).map(|v| b.pending_out = v),
                (Movement::Hold, false) => b.pending_in.checked_add(p.amount).map(|v| b.pending_in = v),
            };
            moved.ok_or_else(overflow)?;
            touched[i].4 |= debit;
        }
    }
    for (account_id, account, asset, after, debited) in touched {
        let available = after.available().ok_or_else(overflow)?;
        if debited && account.min_balance(account_id, asset).is_some_and(|min| available < min) {
            return Err(Rejection::new(
                Reason::InsufficientFunds,
                format!("account {account_id} would have {available} {asset} available, below its limit"),
            ));
        }
    }
    Ok(())
}

fn pending<'a>(l: &'a Ledger, tx_id: &TxId) -> Result<&'a TxRecord, Rejection> {
    let tx = l.transactions.get(tx_id).ok_or_else(|| {
        Rejection::new(Reason::TransactionNotFound, format!("transaction {tx_id} does not exist"))
    })?;
    if tx.status != TxStatus::Pending {
        return Err(Rejection::new(Reason::NotPending, format!("transaction {tx_id} is not pending")));
    }
    Ok(tx)
}

fn commit_pending(
    l: &Ledger,
    ledger: &LedgerId,
    tx_id: &TxId,
    amounts: Option<&[Amount]>,
    now_ms: i64,
) -> Verdict {
    let tx = pending(l, tx_id)?;
    if tx.expires_at_ms.is_some_and(|t| t <= now_ms) {
        return reject(Reason::PendingExpired, format!("transaction {tx_id} timed out; it can only expire"));
    }
    let amounts = match amounts {
        None => tx.postings.iter().map(|p| p.amount).collect(),
        Some(a) => {
            let fits = a.len() == tx.postings.len()
                && a.iter().zip(&tx.postings).all(|(c, p)| (0..=p.amount).contains(c))
                && a.iter().any(|c| *c > 0);
            if !fits {
                return reject(
                    Reason::InvalidCommitAmounts,
                    format!(
                        "give one amount per posting ({}), each 0..=held, not all zero",
                        tx.postings.len()
                    ),
                );
            }
            a.to_vec()
        }
    };
    // Committing moves held funds into posted balances; the source's available balance can only
    // grow (the unused rest is released), so only the credits can overflow.
    let committed: Vec<Posting> = committed_postings(&tx.postings, &amounts);
    let mut credit: HashMap<(&AccountId, &Asset), Amount> = HashMap::new();
    for p in &committed {
        let c = credit.entry((&p.destination, &p.asset)).or_default();
        *c = c.checked_add(p.amount).ok_or_else(|| Rejection::new(Reason::Overflow, "amounts overflow"))?;
    }
    for ((account, asset), amount) in credit {
        let posted = l.accounts.get(account).map_or(0, |a| a.balance(asset).posted);
        if posted.checked_add(amount).is_none() {
            return reject(Reason::Overflow, format!("account {account} would overflow"));
        }
    }
    Ok(EventBody::PendingCommitted { ledger: ledger.clone(), tx_id: tx_id.clone(), amounts })
}

fn committed_postings(postings: &[Posting], amounts: &[Amount]) -> Vec<Posting> {
    postings
        .iter()
        .zip(amounts)
        .filter(|(_, a)| **a > 0)
        .map(|(p, a)| Posting { amount: *a, ..p.clone() })
        .collect()
}

fn expire_pending(l: &Ledger, ledger: &LedgerId, tx_id: &TxId, now_ms: i64) -> Verdict {
    let tx = pending(l, tx_id)?;
    if tx.expires_at_ms.is_some_and(|t| t > now_ms) {
        return reject(Reason::NotYetExpired, format!("transaction {tx_id} has not timed out"));
    }
    Ok(EventBody::PendingExpired { ledger: ledger.clone(), tx_id: tx_id.clone() })
}

// ---- documents -----------------------------------------------------------------------------

fn check_expected(doc: Option<&Document>, expected: Option<u64>) -> Result<(), Rejection> {
    let current = doc.filter(|d| d.value.is_some()).map_or(0, |d| d.version);
    match expected {
        Some(e) if e != current => Err(Rejection::new(
            Reason::VersionMismatch,
            format!("expected version {e}, current is {current}"),
        )),
        _ => Ok(()),
    }
}

fn put_document(
    doc: Option<&Document>,
    doc_type: &DocType,
    key: &DocKey,
    value: &str,
    expected: Option<u64>,
) -> Verdict {
    if value.len() > DOCUMENT_LEN_MAX {
        return reject(Reason::DocumentTooLarge, format!("documents are at most {DOCUMENT_LEN_MAX} bytes"));
    }
    if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(value) {
        return reject(Reason::InvalidJson, format!("value is not JSON: {e}"));
    }
    check_expected(doc, expected)?;
    Ok(EventBody::DocumentPut {
        doc_type: doc_type.clone(),
        key: key.clone(),
        value: value.to_owned(),
        version: doc.map_or(0, |d| d.version) + 1,
    })
}

fn delete_document(
    doc: Option<&Document>,
    doc_type: &DocType,
    key: &DocKey,
    expected: Option<u64>,
) -> Verdict {
    let Some(current) = doc.filter(|d| d.value.is_some()) else {
        return reject(Reason::DocumentNotFound, format!("{doc_type}/{key} does not exist"));
    };
    check_expected(doc, expected)?;
    Ok(EventBody::DocumentDeleted {
        doc_type: doc_type.clone(),
        key: key.clone(),
        version: current.version + 1,
    })
}

// ---- apply ---------------------------------------------------------------------------------

/// Folds one event into the state. Events come from the log, where only `decide` puts them,
/// so they are valid by construction; what must hold is asserted in debug builds.
pub fn apply(state: &mut State, event: &Event) {
    let tenant = get_or_insert_default(&mut state.tenants, &event.tenant);
    // The first answer to a command id is the one remembered; repeats and conflicts find it
    // there. Events from before fingerprints (0) cannot be told apart, so they are not kept.
    if event.command_fingerprint != 0 && event.body.answers_first() {
        let key = (event.stream.clone(), event.command_id.clone());
        tenant.commands.entry(key).or_insert(CommandRecord {
            fingerprint: event.command_fingerprint,
            version: event.stream_version,
            offset: CommandRecord::UNPLACED,
        });
    }
    match &event.stream {
        crate::StreamId::Ledger(ledger_id) => {
            let ledger = get_or_insert_default(&mut tenant.ledgers, ledger_id);
            debug_assert_eq!(ledger.stream_version + 1, event.stream_version, "gap in {}", event.event_id());
            ledger.stream_version = event.stream_version;
            apply_ledger(ledger, &event.body, event.time_ms);
        }
        crate::StreamId::Document(doc_type, key) => {
            let doc = tenant.documents.entry((doc_type.clone(), key.clone())).or_default();
            debug_assert_eq!(doc.stream_version + 1, event.stream_version, "gap in {}", event.event_id());
            doc.stream_version = event.stream_version;
            apply_document(doc, &event.body);
        }
    }
}

/// `map.entry(key.clone()).or_default()` without cloning the key when it is already there
/// (the common case on the hot path).
fn get_or_insert_default<'m, K, V, S>(map: &'m mut HashMap<K, V, S>, key: &K) -> &'m mut V
where
    K: std::hash::Hash + Eq + Clone,
    V: Default,
    S: std::hash::BuildHasher,
{
    if !map.contains_key(key) {
        map.insert(key.clone(), V::default());
    }
    map.get_mut(key).expect("inserted above")
}

fn apply_document(doc: &mut Document, body: &EventBody) {
    match body {
        EventBody::DocumentPut { value, version, .. } => {
            doc.version = *version;
            doc.value = Some(value.clone());
        }
        EventBody::DocumentDeleted { version, .. } => {
            doc.version = *version;
            doc.value = None;
        }
        EventBody::CommandRejected { .. } | EventBody::CommandDeduplicated { .. } => {}
        other => debug_assert!(false, "{} on a document stream", other.kind()),
    }
}

fn apply_ledger(l: &mut Ledger, body: &EventBody, time_ms: i64) {
    use EventBody::*;
    match body {
        AssetDefined { asset, .. } => {
            l.assets.insert(asset.code().to_owned(), asset.clone());
        }
        AccountOpened { account, limits, metadata, .. } => {
            let a =
                Account { limits: limit_map(limits), metadata: metadata.clone(), ..Account::auto_created() };
            l.accounts.insert(account.clone(), a);
        }
        AccountUpdated { account, limits, metadata, .. } => {
            let a = l.accounts.get_mut(account).expect("updated account exists");
            a.limits = limit_map(limits);
            a.metadata = metadata.clone();
        }
        AccountClosed { account, .. } => {
            l.accounts.get_mut(account).expect("closed account exists").status = AccountStatus::Closed;
        }
        TransactionPosted { tx_id, postings, metadata, reverses, .. } => {
            for p in postings {
                move_posted(l, p, p.amount);
            }
            let fingerprint = match reverses {
                None => transfer_fingerprint(postings, metadata, None),
                Some(original) => {
                    let reversed = l.transactions.get_mut(original).expect("reversed transaction exists");
                    reversed.reversed_by = Some(tx_id.clone());
                    reversal_fingerprint(original, metadata)
                }
            };
            record(
                l,
                tx_id,
                TxRecord::new(fingerprint, TxStatus::Posted, postings.clone(), metadata.clone(), time_ms),
            );
        }
        TransactionPending { tx_id, postings, metadata, timeout_ms, expires_at_ms, .. } => {
            for p in postings {
                hold(l, p, p.amount);
            }
            let fingerprint = transfer_fingerprint(postings, metadata, Some(*timeout_ms));
            let tx =
                TxRecord::new(fingerprint, TxStatus::Pending, postings.clone(), metadata.clone(), time_ms);
            record(l, tx_id, TxRecord { expires_at_ms: Some(*expires_at_ms), ..tx });
        }
        TransactionFailed { tx_id, request, reason, .. } => {
            let status = TxStatus::Failed(Failure::Rejected(*reason));
            let metadata = match request {
                TxRequest::Transfer { metadata, .. } | TxRequest::Reversal { metadata, .. } => {
                    metadata.clone()
                }
            };
            record(l, tx_id, TxRecord::new(fingerprint(request), status, Vec::new(), metadata, time_ms));
        }
        PendingCommitted { tx_id, amounts, .. } => {
            let held = release(l, tx_id, TxStatus::Posted, time_ms);
            let committed = committed_postings(&held, amounts);
            for p in &committed {
                move_posted(l, p, p.amount);
            }
            l.transactions.get_mut(tx_id).expect("committed transaction exists").postings = committed;
        }
        PendingVoided { tx_id, .. } => {
            release(l, tx_id, TxStatus::Failed(Failure::Voided), time_ms);
        }
        PendingExpired { tx_id, .. } => {
            release(l, tx_id, TxStatus::Failed(Failure::Expired), time_ms);
        }
        TransactionDeduplicated { .. } | CommandDeduplicated { .. } | CommandRejected { .. } => {}
        DocumentPut { .. } | DocumentDeleted { .. } => {
            debug_assert!(false, "document event on a ledger stream")
        }
    }
}

fn record(l: &mut Ledger, tx_id: &TxId, tx: TxRecord) {
    let previous = l.transactions.insert(tx_id.clone(), tx);
    debug_assert!(previous.is_none(), "transaction id {tx_id} recorded twice");
}

/// The balance of `account` in `asset`, creating the account on first use; clones a key only
/// when it is new.
fn balance_mut<'a>(l: &'a mut Ledger, account: &AccountId, asset: &Asset) -> &'a mut Balance {
    if !l.accounts.contains_key(account) {
        l.accounts.insert(account.clone(), Account::auto_created());
    }
    let balances = &mut l.accounts.get_mut(account).expect("inserted above").balances;
    if !balances.contains_key(asset) {
        balances.insert(asset.clone(), Balance::default());
    }
    balances.get_mut(asset).expect("inserted above")
}

fn move_posted(l: &mut Ledger, p: &Posting, amount: Amount) {
    balance_mut(l, &p.source, &p.asset).posted -= amount;
    balance_mut(l, &p.destination, &p.asset).posted += amount;
}

fn hold(l: &mut Ledger, p: &Posting, amount: Amount) {
    balance_mut(l, &p.source, &p.asset).pending_out += amount;
    balance_mut(l, &p.destination, &p.asset).pending_in += amount;
}

/// Releases every hold of a pending transaction and sets its final status; returns what was held.
fn release(l: &mut Ledger, tx_id: &TxId, status: TxStatus, time_ms: i64) -> Vec<Posting> {
    let tx = l.transactions.get_mut(tx_id).expect("released transaction exists");
    debug_assert_eq!(tx.status, TxStatus::Pending, "{tx_id} released twice");
    tx.status = status;
    tx.updated_ms = time_ms;
    let held = tx.postings.clone();
    for p in &held {
        hold(l, p, -p.amount);
    }
    held
}

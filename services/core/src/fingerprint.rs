//! Stable 128-bit fingerprints of a transaction request and of a whole command: equal requests,
//! equal fingerprints, on every machine and version. Used to tell a retry (same id, same body)
//! from a conflict (same id, another body).
//! The byte layout is explicit (never `std::hash::Hash`, whose output may change between
//! Rust versions), because fingerprints are recomputed when state is rebuilt from the log.

use crate::{AssetLimit, CommandBody, Metadata, Posting, TxId, TxRequest};
use xxhash_rust::xxh3::Xxh3;

/// The 128-bit xxh3 fingerprint of a transaction request (postings, metadata, timeout; or the
/// reversed transaction and metadata), kept with a transaction id to tell a retry from a conflict.
pub fn fingerprint(request: &TxRequest) -> u128 {
    match request {
        TxRequest::Transfer { postings, metadata, pending_timeout_ms } => {
            transfer_fingerprint(postings, metadata, *pending_timeout_ms)
        }
        TxRequest::Reversal { original, metadata } => reversal_fingerprint(original, metadata),
    }
}

/// The fingerprint of a command's body: what it asks for, whoever asks (the actor is not part
/// of it). Never 0, which marks events written before commands had fingerprints.
pub fn command_fingerprint(body: &CommandBody) -> u128 {
    use CommandBody::*;
    let mut h = Xxh3::new();
    text(&mut h, body.kind());
    match body {
        DefineAsset { ledger, asset } => {
            text(&mut h, ledger.as_str());
            text(&mut h, asset.code());
            h.update(&[asset.scale()]);
        }
        OpenAccount { ledger, account, limits, metadata }
        | UpdateAccount { ledger, account, limits, metadata } => {
            text(&mut h, ledger.as_str());
            text(&mut h, account.as_str());
            h.update(&(limits.len() as u64).to_le_bytes());
            limits.iter().for_each(|l| limit(&mut h, l));
            metadata_bytes(&mut h, metadata);
        }
        CloseAccount { ledger, account } => {
            text(&mut h, ledger.as_str());
            text(&mut h, account.as_str());
        }
        Transact { ledger, tx_id, request } => {
            text(&mut h, ledger.as_str());
            text(&mut h, tx_id.as_str());
            h.update(&fingerprint(request).to_le_bytes());
        }
        CommitPending { ledger, tx_id, amounts } => {
            text(&mut h, ledger.as_str());
            text(&mut h, tx_id.as_str());
            match amounts {
                None => h.update(&[0]),
                Some(amounts) => {
                    h.update(&[1]);
                    h.update(&(amounts.len() as u64).to_le_bytes());
                    amounts.iter().for_each(|a| h.update(&a.to_le_bytes()));
                }
            }
        }
        VoidPending { ledger, tx_id } | ExpirePending { ledger, tx_id } => {
            text(&mut h, ledger.as_str());
            text(&mut h, tx_id.as_str());
        }
        PutDocument { doc_type, key, value, expected_version } => {
            text(&mut h, doc_type.as_str());
            text(&mut h, key.as_str());
            text(&mut h, value);
            optional_u64(&mut h, *expected_version);
        }
        DeleteDocument { doc_type, key, expected_version } => {
            text(&mut h, doc_type.as_str());
            text(&mut h, key.as_str());
            optional_u64(&mut h, *expected_version);
        }
    }
    h.digest128().max(1)
}

fn limit(h: &mut Xxh3, l: &AssetLimit) {
    text(h, l.asset.code());
    h.update(&[l.asset.scale()]);
    match l.min_balance {
        None => h.update(&[0]),
        Some(min) => {
            h.update(&[1]);
            h.update(&min.to_le_bytes());
        }
    }
}

fn optional_u64(h: &mut Xxh3, v: Option<u64>) {
    match v {
        None => h.update(&[0]),
        Some(v) => {
            h.update(&[1]);
            h.update(&v.to_le_bytes());
        }
    }
}

/// The fingerprint of `TxRequest::Transfer` from its parts (no request needs to be built).
pub fn transfer_fingerprint(
    postings: &[Posting],
    metadata: &Metadata,
    pending_timeout_ms: Option<u64>,
) -> u128 {
    let mut h = Xxh3::new();
    h.update(&[1]);
    h.update(&(postings.len() as u64).to_le_bytes());
    for p in postings {
        posting(&mut h, p);
    }
    metadata_bytes(&mut h, metadata);
    match pending_timeout_ms {
        None => h.update(&[0]),
        Some(t) => {
            h.update(&[1]);
            h.update(&t.to_le_bytes());
        }
    }
    h.digest128()
}

/// The fingerprint of `TxRequest::Reversal` from its parts.
pub fn reversal_fingerprint(original: &TxId, metadata: &Metadata) -> u128 {
    let mut h = Xxh3::new();
    h.update(&[2]);
    text(&mut h, original.as_str());
    metadata_bytes(&mut h, metadata);
    h.digest128()
}

fn posting(h: &mut Xxh3, p: &Posting) {
    text(h, p.source.as_str());
    text(h, p.destination.as_str());
    text(h, p.asset.code());
    h.update(&[p.asset.scale()]);
    h.update(&p.amount.to_le_bytes());
}

fn metadata_bytes(h: &mut Xxh3, m: &Metadata) {
    h.update(&(m.len() as u64).to_le_bytes());
    for (k, v) in m {
        text(h, k);
        text(h, v);
    }
}

/// Length-prefixed so that ("ab","c") and ("a","bc") differ.
fn text(h: &mut Xxh3, s: &str) {
    h.update(&(s.len() as u64).to_le_bytes());
    h.update(s.as_bytes());
}

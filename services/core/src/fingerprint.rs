//! A stable 128-bit fingerprint of a transaction request: equal requests, equal fingerprints,
//! on every machine and version. Used to tell a retry (same id, same body) from a conflict.
//! The byte layout is explicit (never `std::hash::Hash`, whose output may change between
//! Rust versions), because fingerprints are recomputed when state is rebuilt from the log.

use crate::{Metadata, Posting, TxId, TxRequest};
use xxhash_rust::xxh3::Xxh3;

pub fn fingerprint(request: &TxRequest) -> u128 {
    match request {
        TxRequest::Transfer { postings, metadata, pending_timeout_ms } => {
            transfer_fingerprint(postings, metadata, *pending_timeout_ms)
        }
        TxRequest::Reversal { original, metadata } => reversal_fingerprint(original, metadata),
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

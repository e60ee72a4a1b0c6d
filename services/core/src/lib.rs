//! # tally-core
//!
//! The ledger and state rules of Tally as plain functions over plain data: no I/O, no async,
//! no clocks (time comes in as an argument). The processor, the snapshotter and the projector's
//! fold all call these same functions.
//!
//! - [`validate`] decides what a [`Command`] does to a [`State`]: an [`EventBody`] or a [`Rejection`].
//! - [`decide`] wraps that into the one [`Event`] every command produces (rejections included).
//! - [`apply`] folds an event into the state; replaying the log rebuilds the state exactly.

mod asset;
mod command;
mod event;
mod fingerprint;
mod ids;
pub mod limits;
pub mod log;
pub mod memory;
pub mod projection;
mod reason;
mod rules;
mod state;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use asset::{ASSET_CODE_LEN_MAX, ASSET_SCALE_MAX, Amount, Asset, AssetError};
pub use command::{AssetLimit, Command, CommandBody, Metadata, Posting, TxRequest};
pub use event::{Answer, EVENT_KINDS, Event, EventBody, StreamId};
pub use fingerprint::{command_fingerprint, fingerprint, reversal_fingerprint, transfer_fingerprint};
pub use ids::{
    AccountId, Actor, COMMAND_ID_LEN_MAX, CommandId, DEFAULT_TX_COMMAND_PREFIX, DestinationId, DocKey,
    DocType, ID_LEN_MAX, IdError, LedgerId, STATE_STREAM_PREFIX, TenantId, TxId, WORLD,
};
pub use reason::{Reason, Rejection};
pub use rules::{apply, decide, validate};
pub use state::{
    Account, AccountStatus, Balance, CommandRecord, Document, Failure, Ledger, State, TxRecord, TxStatus,
};

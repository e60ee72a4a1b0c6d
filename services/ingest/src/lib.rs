//! # tally-ingest
//!
//! The ingest service: everything between a command and its event.
//! - [`processor`]: owns partitions of the `commands` topic through a consumer group, validates
//!   each command against the state restored from the `events` log, and appends exactly one
//!   answer per command record to the same partition number of `events`; command records it
//!   cannot process go to the dead-letter topic ([`processor::dead_letter`]).
//! - [`outcomes`]: follows the log and tells waiting callers how their command was answered.
//! - [`http`]: the HTTP front door (axum): one command per request, answered from the log.
//! - [`stages`]: where a command's time goes between them (a histogram per stage).

pub mod http;
pub mod outcomes;
pub mod processor;
pub mod stages;

//! # tally-ingest
//!
//! The ingest service: everything between a command and its event.
//! - [`processor`]: owns partitions of the `commands` topic through a consumer group, validates
//!   each command against the state restored from the `events` log, and appends exactly one
//!   answer per command record to the same partition number of `events`.

pub mod processor;

//! # tally-sink
//!
//! Sends the events that count to other systems (DESIGN.md section 3, outlets): each tenant
//! configures destinations through the admin API ([`api`]), and the sink runner ([`runner`])
//! delivers every event of the tenant that passes a destination's filter, at least once, in
//! order per stream, with the event id as the idempotency key.
//!
//! - [`destination`]: what a destination is, its filter and its secrets (pure);
//! - [`lane`]: one destination's position in one events partition, and the one rule of which
//!   log records go out (the projector's: [`tally_core::log::LogReader`]) (pure);
//! - [`signature`]: Standard Webhooks signatures (pure);
//! - [`outlet`]: one attempt at a webhook POST or a Kafka record;
//! - [`runner`]: the consumer group, the lanes, retries, parking;
//! - [`api`]: the routes under `/admin/destinations`.
//!
//! The consumers' view of all this is `docs/consumers.md`.

pub mod api;
pub mod destination;
pub mod lane;
mod metrics;
pub mod outlet;
pub mod runner;
pub mod signature;

pub use destination::{Destination, Filter, Start, Target};
pub use runner::{SinkConfig, SinkError, SinkRunner, SinkStatus};

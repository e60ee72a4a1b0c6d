//! The query API: reads the projections only (`tally_store::reads`), always the live version.
//!
//! - Accounts with balances, limits and metadata; a ledger's accounts by id prefix.
//! - Statements newest first with the balance after each line; the balance at a past instant.
//! - Transactions by id; command outcomes by command id.
//! - State documents by (type, key) with an ETag; a type's documents by key prefix, with
//!   equality filters on top-level fields.
//! - A stream's events by type and time range; the same as a live SSE stream that catches up
//!   and then follows, resumable with `Last-Event-ID`.
//! - Read-your-writes: any request may carry the `Tally-Position` a write returned
//!   ([`position`]).
//!
//! Lists are paged with opaque cursors ([`cursor`]); errors are problem details; the OpenAPI
//! document is generated from the code and served at `/openapi.json`.

#![allow(
    clippy::result_large_err,
    reason = "a Problem is the error of a request that is answered right away; its size costs nothing worth boxing"
)]

mod api;
pub mod cursor;
mod events;
mod filtered;
mod live;
mod live_limit;
mod params;
pub mod position;
pub mod views;

use axum::Router;
use std::sync::Arc;
use std::time::Duration;
use tally_http::Problem;
use tally_store::StoreError;
use tally_store::projections::{ProjectionStore, Version};

pub use api::ApiDoc;

/// Knobs of the query API.
#[derive(Debug, Clone)]
pub struct QueryConfig {
    /// Longest wait for the projection to reach a request's `Tally-Position`.
    pub position_wait: Duration,
    /// How often that wait looks at the projection's checkpoint.
    pub position_poll: Duration,
    /// How often a live event stream that has caught up looks for new events.
    pub follow_poll: Duration,
    /// Items in a page when the request gives no `limit`.
    pub page_default: usize,
    /// Most rows a filtered list (documents by field, events by type or time) reads for one
    /// page; when it runs out the page is short and its cursor goes on from there.
    pub scan_max: usize,
    /// Most live event streams open at once in all (beyond: 503).
    pub live_streams_max: usize,
    /// Most live event streams one tenant may have open at once (beyond: 429).
    pub live_streams_per_tenant_max: usize,
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            position_wait: Duration::from_secs(5),
            position_poll: Duration::from_millis(5),
            follow_poll: Duration::from_millis(100),
            page_default: 100,
            scan_max: 10_000,
            live_streams_max: 1_000,
            live_streams_per_tenant_max: 100,
        }
    }
}

/// What every handler shares.
#[derive(Clone)]
pub struct Query {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn ProjectionStore>,
    config: QueryConfig,
    live: Arc<live_limit::LiveStreams>,
}

impl Query {
    pub fn new(store: Arc<dyn ProjectionStore>, config: QueryConfig) -> Query {
        let live = live_limit::LiveStreams::new(config.live_streams_max, config.live_streams_per_tenant_max);
        Query { inner: Arc::new(Inner { store, config, live }) }
    }

    /// The query API's routes, answering errors as problem details.
    pub fn router(self) -> Router {
        api::routes()
            .route_layer(axum::middleware::from_fn(|request, next| {
                tally_http::metrics::observe("query", request, next)
            }))
            .with_state(self)
            .layer(axum::middleware::from_fn(tally_http::trace::traced))
            .layer(axum::middleware::map_response(tally_http::as_problem))
    }

    pub(crate) fn config(&self) -> &QueryConfig {
        &self.inner.config
    }

    pub(crate) fn live_streams(&self) -> &Arc<live_limit::LiveStreams> {
        &self.inner.live
    }

    /// Runs a store read through the store's bridge ([`tally_store::bridge::read`]). A store error is logged and answered with a
    /// generic 503: its text is about the server, not the request.
    pub(crate) fn read<T>(
        &self,
        read: impl FnOnce(&dyn ProjectionStore) -> Result<T, StoreError>,
    ) -> Result<T, Problem> {
        match tally_store::bridge::read(self.inner.store.as_ref(), read) {
            Ok(value) => Ok(value),
            Err(e) => {
                tracing::error!("reading the projections: {e}");
                Err(store_unavailable())
            }
        }
    }

    /// [`Query::read`] of the live version.
    pub(crate) fn read_live<T>(
        &self,
        read: impl FnOnce(&dyn ProjectionStore, Version) -> Result<T, StoreError>,
    ) -> Result<T, Problem> {
        self.read(|store| read(store, store.live_version()?))
    }
}

fn store_unavailable() -> Problem {
    Problem::new(
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        "temporarily unavailable",
        "the projections could not be read right now; retry",
    )
}

/// The OpenAPI document of the query API (OpenAPI 3.1, as JSON), with the server's checks
/// declared ([`tally_http::openapi`]).
pub fn openapi() -> serde_json::Value {
    let mut doc =
        serde_json::to_value(<ApiDoc as utoipa::OpenApi>::openapi()).expect("the document serialises");
    tally_http::openapi::declare_checks(&mut doc, tally_http::openapi::Configured::default());
    doc
}

//! Requests to the schema registry, by request and outcome.

use crate::RegistryError;
use prometheus::{IntCounterVec, register_int_counter_vec};
use std::sync::LazyLock;

static REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "tally_schema_registry_requests_total",
        "Requests to the schema registry, by request (schema_by_id, latest, compatibility, \
         register) and outcome (ok, not_found, refused, unavailable)",
        &["request", "outcome"]
    )
    .expect("registered once")
});

/// Counts one request's outcome.
pub(crate) fn count<T>(request: &str, result: &Result<T, RegistryError>) {
    let outcome = match result {
        Ok(_) => "ok",
        Err(RegistryError::NotFound { .. }) => "not_found",
        Err(RegistryError::Refused { .. }) => "refused",
        Err(RegistryError::Unavailable { .. }) => "unavailable",
    };
    REQUESTS.with_label_values(&[request, outcome]).inc();
}

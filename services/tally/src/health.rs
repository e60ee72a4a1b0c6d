//! Liveness, readiness and metrics, on every service's listener.
//!
//! - `GET /metrics`: every metric of the process, in Prometheus' text format.
//! - `GET /healthz`: the process answers (liveness; a restart is the cure when it does not).
//! - `GET /readyz`: 200 when every dependency of this service answers within its timeout, else
//!   503; the body lists each check and why it failed. Checks: the broker (a metadata request)
//!   for the services that use Kafka, the store (reading the live projection version) for those
//!   that read or write it.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use tally_kafka::BrokerCheck;
use tally_kafka::config::KafkaOptions;
use tally_store::projections::ProjectionStore;

/// How long one dependency may take to answer before it counts as unreachable.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// What a service depends on.
#[derive(Clone, Default)]
pub struct Health {
    /// A client kept for the metadata request (connections are reused between checks).
    broker: Option<Arc<BrokerCheck>>,
    store: Option<Arc<dyn ProjectionStore>>,
}

#[derive(Debug, Serialize)]
struct CheckResult {
    name: &'static str,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct Readiness {
    ready: bool,
    checks: Vec<CheckResult>,
}

impl Health {
    pub fn new() -> Health {
        Health::default()
    }

    /// Also checks that the broker answers.
    pub fn with_broker(mut self, kafka: &KafkaOptions) -> anyhow::Result<Health> {
        self.broker = Some(Arc::new(BrokerCheck::new(kafka)?));
        Ok(self)
    }

    /// Also checks that the store answers.
    pub fn with_store(mut self, store: Arc<dyn ProjectionStore>) -> Health {
        self.store = Some(store);
        self
    }

    pub fn router(self) -> Router {
        Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .with_state(self)
            .layer(axum::middleware::map_response(tally_http::as_problem))
    }
}

async fn readyz(State(health): State<Health>) -> (StatusCode, axum::Json<Readiness>) {
    let mut checks = Vec::new();
    if let Some(broker) = health.broker.clone() {
        let check = move || broker.check(CHECK_TIMEOUT);
        checks.push(run("broker", check).await);
    }
    if let Some(store) = health.store.clone() {
        checks.push(run("store", move || store.live_version().map(drop)).await);
    }
    let ready = checks.iter().all(|c| c.ok);
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, axum::Json(Readiness { ready, checks }))
}

/// Runs a blocking check off the async workers, bounded by [`CHECK_TIMEOUT`].
async fn run<E: std::fmt::Display + Send + 'static>(
    name: &'static str,
    check: impl FnOnce() -> Result<(), E> + Send + 'static,
) -> CheckResult {
    let outcome = tokio::time::timeout(CHECK_TIMEOUT, tokio::task::spawn_blocking(check)).await;
    let error = match outcome {
        Ok(Ok(Ok(()))) => None,
        Ok(Ok(Err(e))) => Some(e.to_string()),
        Ok(Err(e)) => Some(format!("the check failed: {e}")),
        Err(_) => Some(format!("no answer within {} s", CHECK_TIMEOUT.as_secs())),
    };
    CheckResult { name, ok: error.is_none(), error }
}

/// Every registered metric, in Prometheus' text format.
async fn metrics() -> axum::response::Response {
    use axum::response::IntoResponse;
    use prometheus::Encoder;
    let encoder = prometheus::TextEncoder::new();
    let mut body = String::new();
    match encoder.encode_utf8(&prometheus::gather(), &mut body) {
        Ok(()) => {
            ([(axum::http::header::CONTENT_TYPE, encoder.format_type().to_owned())], body).into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("encoding the metrics: {e}")).into_response(),
    }
}

//! HTTP metrics of every Tally service: requests by route and status, and their latency. The
//! route is the matched template (`/v1/ledgers/{ledger}/accounts/{account}`), so labels stay
//! few whatever the ids.

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use prometheus::{HistogramVec, IntCounterVec, register_histogram_vec, register_int_counter_vec};
use std::sync::LazyLock;

static REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "tally_http_requests_total",
        "HTTP requests answered, by service, route template, method and status",
        &["service", "route", "method", "status"]
    )
    .expect("registered once")
});

static DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "tally_http_request_duration_seconds",
        "Time to answer an HTTP request, by service, route template and method",
        &["service", "route", "method"],
        vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]
    )
    .expect("registered once")
});

/// Middleware that counts and times the requests of `service` (use with
/// `axum::middleware::from_fn`, as a route layer so the route is known).
pub async fn observe(service: &'static str, request: Request, next: Next) -> Response {
    // Both are cheap handles (a shared string, a known method), not copies of the text.
    let route = request.extensions().get::<MatchedPath>().cloned();
    let method = request.method().clone();
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    let labels = [service, route, method.as_str()];
    DURATION.with_label_values(&labels).observe(started.elapsed().as_secs_f64());
    REQUESTS.with_label_values(&[service, route, method.as_str(), response.status().as_str()]).inc();
    response
}

//! A tracing span per HTTP request, continuing the caller's trace when the request carries a
//! W3C `traceparent` header (otherwise it starts one). What the request does, including the
//! commands it produces, happens inside that span.

use axum::extract::Request;
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::global;
use opentelemetry::propagation::Extractor;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

struct Read<'a>(&'a HeaderMap);

impl Extractor for Read<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key)?.to_str().ok()
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Middleware (`axum::middleware::from_fn`): runs the request inside its span.
pub async fn traced(request: Request, next: Next) -> Response {
    let parent = global::get_text_map_propagator(|propagator| propagator.extract(&Read(request.headers())));
    let span = tracing::info_span!("http request", method = %request.method(), path = %request.uri().path());
    // Fails only when the span is not recorded (tracing off): then there is no trace to continue.
    let _ = span.set_parent(parent);
    next.run(request).instrument(span).await
}

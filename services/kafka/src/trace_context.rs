//! W3C trace context in Kafka record headers (`traceparent`, `tracestate`), so that one trace
//! follows a command from the HTTP request through the commands topic, the processor and the
//! events topic to the projector. The format is the propagator the binary installs (W3C).

use crate::record::Headers;
use opentelemetry::global;
use opentelemetry::propagation::{Extractor, Injector};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Record headers carrying the current tracing span's context (empty without a trace).
pub fn current_headers() -> Headers {
    headers_of(&tracing::Span::current().context())
}

/// Record headers carrying `context`.
pub fn headers_of(context: &opentelemetry::Context) -> Headers {
    let mut carrier = Carrier(Headers::new());
    global::get_text_map_propagator(|propagator| propagator.inject_context(context, &mut carrier));
    carrier.0
}

/// The trace context a record's headers carry (an empty context when they carry none).
pub fn context_of(headers: &Headers) -> opentelemetry::Context {
    global::get_text_map_propagator(|propagator| propagator.extract(&Read(headers)))
}

/// Whether a record's headers carry a trace context.
pub fn is_traced(headers: &Headers) -> bool {
    headers.get("traceparent").is_some()
}

struct Carrier(Headers);

impl Injector for Carrier {
    fn set(&mut self, key: &str, value: String) {
        self.0 = std::mem::take(&mut self.0).with(key, value);
    }
}

struct Read<'a>(&'a Headers);

impl Extractor for Read<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        let (_, value) = self.0.iter().find(|(name, _)| name.eq_ignore_ascii_case(key))?;
        std::str::from_utf8(value?).ok()
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| name).collect()
    }
}

//! W3C trace context in Kafka record headers (`traceparent`, `tracestate`), so that one trace
//! follows a command from the HTTP request through the commands topic, the processor and the
//! events topic to the projector. The format is the propagator the binary installs (W3C).

use opentelemetry::global;
use opentelemetry::propagation::{Extractor, Injector};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Record headers carrying the current tracing span's context (empty without a trace).
pub fn current_headers() -> OwnedHeaders {
    headers_of(&tracing::Span::current().context())
}

/// Record headers carrying `context`.
pub fn headers_of(context: &opentelemetry::Context) -> OwnedHeaders {
    let mut carrier = Carrier(Vec::new());
    global::get_text_map_propagator(|propagator| propagator.inject_context(context, &mut carrier));
    carrier.0.iter().fold(OwnedHeaders::new(), |headers, (key, value)| {
        headers.insert(Header { key: key.as_str(), value: Some(value.as_str()) })
    })
}

/// The trace context a record's headers carry (an empty context when they carry none).
pub fn context_of<H: Headers>(headers: Option<&H>) -> opentelemetry::Context {
    match headers {
        Some(headers) => global::get_text_map_propagator(|propagator| propagator.extract(&Read(headers))),
        None => opentelemetry::Context::new(),
    }
}

/// Whether a record's headers carry a trace context.
pub fn is_traced<H: Headers>(headers: Option<&H>) -> bool {
    headers.is_some_and(|headers| headers.iter().any(|h| h.key == "traceparent"))
}

struct Carrier(Vec<(String, String)>);

impl Injector for Carrier {
    fn set(&mut self, key: &str, value: String) {
        self.0.push((key.to_owned(), value));
    }
}

struct Read<'a, H>(&'a H);

impl<H: Headers> Extractor for Read<'_, H> {
    fn get(&self, key: &str) -> Option<&str> {
        let header = self.0.iter().find(|h| h.key.eq_ignore_ascii_case(key))?;
        std::str::from_utf8(header.value?).ok()
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|h| h.key).collect()
    }
}

//! Traces: `tracing` spans become OpenTelemetry spans (`tracing-opentelemetry`), exported over
//! OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (the exporter reads the standard
//! `OTEL_*` variables). Without it spans are still made, and their W3C context still travels
//! in HTTP and Kafka headers, so a trace started by a caller goes on through Tally; nothing is
//! exported.
//!
//! Spans: one per HTTP request, one per traced command answered by the processor, one per
//! projector batch (in the trace of its first traced event, linked to the others).

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Subscriber;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::registry::LookupSpan;

/// The tracer provider, kept to flush spans at exit.
pub struct Traces {
    provider: SdkTracerProvider,
}

impl Traces {
    /// Installs the W3C propagator and the provider (with the OTLP exporter when configured).
    pub fn start() -> Traces {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let mut provider = SdkTracerProvider::builder();
        if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_some() {
            match opentelemetry_otlp::SpanExporter::builder().with_http().build() {
                Ok(exporter) => provider = provider.with_batch_exporter(exporter),
                Err(e) => eprintln!("warning: traces will not be exported: {e}"),
            }
        }
        Traces { provider: provider.build() }
    }

    /// The layer that turns Tally's spans (info and above) into OpenTelemetry spans.
    pub fn layer<S: Subscriber + for<'a> LookupSpan<'a>>(&self) -> impl Layer<S> {
        let spans = Targets::new()
            .with_target("tally", LevelFilter::INFO)
            .with_target("tally_http", LevelFilter::INFO)
            .with_target("tally_ingest", LevelFilter::INFO)
            .with_target("tally_projector", LevelFilter::INFO)
            .with_target("tally_query", LevelFilter::INFO);
        tracing_opentelemetry::layer().with_tracer(self.provider.tracer("tally")).with_filter(spans)
    }

    /// Exports the spans still buffered.
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::debug!("stopping the tracer provider: {e}");
        }
    }
}

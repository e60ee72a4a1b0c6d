//! `--schema-registry-*`: the Confluent-compatible schema registry that producers of the
//! commands topic use (docs/schema-registry.md).

use anyhow::Context;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tally_codec::Codec;
use tally_ingest::processor::SchemaLookup;
use tally_kafka::topics::Topics;
use tally_registry::{RegistryConfig, SchemaRegistry, value_subject};

/// Where the schema registry is, if producers use one.
#[derive(clap::Args, Debug, Clone)]
pub struct RegistryOptions {
    /// Base URL of a Confluent-compatible schema registry API (Confluent, Apicurio at
    /// `/apis/ccompat/v7`, Redpanda, Karapace). With it, Tally registers its command and event
    /// schemas under `<topic>-value` at start (refusing to start on an incompatible subject) and
    /// reads commands in the Confluent framing (`00` + schema id) by fetching their writer
    /// schemas; Avro sink destinations get the event schema under `<their topic>-value` and the
    /// same framing. Without it, such commands are dead-lettered as UNKNOWN_SCHEMA.
    #[arg(long, env = "TALLY_SCHEMA_REGISTRY_URL")]
    pub schema_registry_url: Option<url::Url>,
    /// User name for HTTP basic authentication to the registry.
    #[arg(long, env = "TALLY_SCHEMA_REGISTRY_USERNAME", requires = "schema_registry_password")]
    pub schema_registry_username: Option<String>,
    /// Password for HTTP basic authentication to the registry.
    #[arg(
        long,
        env = "TALLY_SCHEMA_REGISTRY_PASSWORD",
        hide_env_values = true,
        requires = "schema_registry_username"
    )]
    pub schema_registry_password: Option<String>,
    /// PEM file of CA certificates trusted for an HTTPS registry, besides the system's roots.
    #[arg(long, env = "TALLY_SCHEMA_REGISTRY_CA_FILE")]
    pub schema_registry_ca_file: Option<PathBuf>,
    /// Longest wait (milliseconds) for one answer of the registry; a partition whose commands
    /// need a schema waits and asks again (backoff up to 10 s) while the registry is unavailable.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(100..=300_000), env = "TALLY_SCHEMA_REGISTRY_TIMEOUT_MS")]
    pub schema_registry_timeout_ms: u64,
    /// Writer schemas fetched from the registry kept in memory (the least used are fetched again).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1_000_000), env = "TALLY_SCHEMA_REGISTRY_SCHEMAS_KEPT")]
    pub schema_registry_schemas_kept: u64,
}

impl RegistryOptions {
    /// With a registry URL: registers Tally's schemas under the subjects of `topics` and returns
    /// the lookup the processor fetches writer schemas with. Fails when the registry cannot be
    /// reached or a subject holds a schema Tally's is incompatible with.
    pub async fn lookup(&self, topics: &Topics) -> anyhow::Result<Option<Arc<SchemaLookup>>> {
        let Some(registry) = self.client()? else { return Ok(None) };
        let url = registry.url().clone();
        registry
            .register_tally_schemas(
                &Codec::new(),
                &value_subject(&topics.commands),
                &value_subject(&topics.events),
            )
            .await
            .with_context(|| format!("registering Tally's schemas with the schema registry at {url}"))?;
        Ok(Some(Arc::new(SchemaLookup::new(registry, self.schema_registry_schemas_kept))))
    }

    /// A client of the configured registry (`None` without --schema-registry-url).
    pub fn client(&self) -> anyhow::Result<Option<SchemaRegistry>> {
        let Some(url) = &self.schema_registry_url else { return Ok(None) };
        let mut config = RegistryConfig::new(url.clone());
        config.timeout = Duration::from_millis(self.schema_registry_timeout_ms);
        if let (Some(user), Some(password)) = (&self.schema_registry_username, &self.schema_registry_password)
        {
            config.basic_auth = Some((user.clone(), password.clone()));
        }
        if let Some(path) = &self.schema_registry_ca_file {
            let pem = std::fs::read(path)
                .with_context(|| format!("--schema-registry-ca-file {}", path.display()))?;
            config.ca_pem = Some(pem);
        }
        Ok(Some(SchemaRegistry::new(config)?))
    }
}

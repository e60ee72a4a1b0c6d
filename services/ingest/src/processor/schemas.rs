//! Writer schemas of Confluent-framed command records (`00`, a 4-byte schema id, the datum),
//! fetched from the schema registry before a batch is decided, and kept (bounded).
//!
//! An id the registry does not have, or whose schema commands cannot be read with, is the
//! record's fault: its records are dead-lettered. A registry that cannot be reached is not: the
//! partition waits and asks again, with exponential backoff and jitter, and dead-letters nothing
//! for it (`tally_schema_registry_waits_total` counts the waits).

use super::dead_letter::{Reason, Unprocessable};
use futures::StreamExt;
use prometheus::{IntCounter, register_int_counter};
use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;
use tally_codec::{Codec, ConfluentWriter, ConfluentWriters, Kind};
use tally_kafka::Record;
use tally_registry::{RegistryError, SchemaRegistry};
use tokio_util::sync::CancellationToken;

/// First wait after the registry failed to answer; it doubles up to [`WAIT_MAX`].
const WAIT_FIRST: Duration = Duration::from_millis(100);
const WAIT_MAX: Duration = Duration::from_secs(10);
/// Schema ids a partition asks the registry for at the same time.
const LOOKUPS_AT_ONCE: usize = 8;

static WAITS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "tally_schema_registry_waits_total",
        "Times a partition waited for an unavailable schema registry before asking again"
    )
    .expect("registered once")
});

/// The registry and the writer schemas already fetched from it, shared by every partition of
/// a processor.
pub struct SchemaLookup {
    registry: SchemaRegistry,
    /// Usable writers by schema id (ids never change what they stand for); the least used go
    /// first past the capacity, and are fetched again when needed.
    kept: moka::sync::Cache<u32, ConfluentWriter>,
}

impl std::fmt::Debug for SchemaLookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SchemaLookup({}, {} kept)", self.registry.url(), self.kept.entry_count())
    }
}

/// The Confluent schema ids of one batch: the writers of those that can be read, and why the
/// others cannot.
#[derive(Debug, Default)]
pub(super) struct BatchSchemas {
    pub writers: ConfluentWriters,
    pub refused: HashMap<u32, Unprocessable>,
}

impl SchemaLookup {
    /// Lookups in `registry`, keeping at most `kept` schemas in memory.
    pub fn new(registry: SchemaRegistry, kept: u64) -> Self {
        SchemaLookup { registry, kept: moka::sync::Cache::new(kept) }
    }

    /// The writer of each Confluent schema id among `records`, or why it cannot be had; `None`
    /// when `cancel` fired while the registry was unavailable (nothing is decided then).
    pub(super) async fn batch<'r>(
        &self,
        codec: &Codec,
        records: impl Iterator<Item = &'r Record>,
        partition: i32,
        cancel: &CancellationToken,
    ) -> Option<BatchSchemas> {
        let mut batch = BatchSchemas::default();
        let mut missing = Vec::new();
        for record in records {
            let Some(schema_id) = tally_codec::confluent_schema_id(&record.payload) else { continue };
            if batch.writers.contains_key(&schema_id) || missing.contains(&schema_id) {
                continue;
            }
            match self.kept.get(&schema_id) {
                Some(writer) => drop(batch.writers.insert(schema_id, writer)),
                None => missing.push(schema_id),
            }
        }
        // A burst of records with many new ids (a hostile or broken producer) costs one request
        // per id: they go out several at a time, not one after another.
        let fetches =
            missing.into_iter().map(|id| async move { (id, self.fetch(codec, id, partition, cancel).await) });
        let fetched: Vec<_> =
            futures::stream::iter(fetches).buffer_unordered(LOOKUPS_AT_ONCE).collect().await;
        for (schema_id, result) in fetched {
            match result? {
                Ok(writer) => {
                    self.kept.insert(schema_id, writer.clone());
                    batch.writers.insert(schema_id, writer);
                }
                Err(why) => {
                    tracing::warn!(partition, schema_id, code = why.reason.code(), "{}", why.detail);
                    batch.refused.insert(schema_id, why);
                }
            }
        }
        Some(batch)
    }

    /// Asks the registry for `schema_id` until it answers (or `cancel` fires: `None`), and
    /// checks that commands can be read with the schema.
    async fn fetch(
        &self,
        codec: &Codec,
        schema_id: u32,
        partition: i32,
        cancel: &CancellationToken,
    ) -> Option<Result<ConfluentWriter, Unprocessable>> {
        let mut wait = WAIT_FIRST;
        loop {
            let unavailable = match self.registry.schema_by_id(schema_id).await {
                Ok(found) if found.schema_type != "AVRO" => {
                    let detail = format!("schema id {schema_id} is a {} schema, not Avro", found.schema_type);
                    return Some(Err(Unprocessable::new(Reason::SchemaUnreadable, detail)));
                }
                Ok(found) if found.references > 0 => {
                    let detail = format!(
                        "schema id {schema_id} refers to {} other schemas (schema references), which Tally \
                         does not resolve: register the whole schema",
                        found.references
                    );
                    return Some(Err(Unprocessable::new(Reason::SchemaUnreadable, detail)));
                }
                Ok(found) => {
                    let writer = codec.confluent_writer(schema_id, Kind::Command, &found.schema);
                    let unreadable = |e: tally_codec::CodecError| {
                        Unprocessable::new(Reason::SchemaUnreadable, e.to_string())
                    };
                    return Some(writer.map_err(unreadable));
                }
                Err(RegistryError::NotFound { message, .. }) => {
                    let url = self.registry.url();
                    let detail =
                        format!("the schema registry at {url} has no schema id {schema_id} ({message})");
                    return Some(Err(Unprocessable::new(Reason::UnknownSchema, detail)));
                }
                Err(e) => e,
            };
            WAITS.inc();
            tracing::warn!(partition, schema_id, wait_ms = wait.as_millis() as u64, "waiting: {unavailable}");
            tokio::select! {
                _ = cancel.cancelled() => return None,
                _ = tokio::time::sleep(tally_runtime::jittered(wait)) => {}
            }
            wait = (wait * 2).min(WAIT_MAX);
        }
    }
}

//! Topic administration: create what is missing, refuse what does not match.

use crate::KafkaError;
use crate::config::KafkaOptions;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use std::sync::Arc;
use std::time::Duration;

/// The names of Tally's topics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    /// Commands from HTTP and from other teams' producers.
    pub commands: String,
    /// The log: one event per command, in the command's partition number.
    pub events: String,
    /// Records on `commands` that could not be processed, with the reason in headers.
    pub dead_letter: String,
}

impl Topics {
    /// `<prefix>commands`, `<prefix>events` and `<prefix>dead-letter` (Tally's default prefix is
    /// `tally.`).
    pub fn with_prefix(prefix: &str) -> Self {
        Topics {
            commands: format!("{prefix}commands"),
            events: format!("{prefix}events"),
            dead_letter: format!("{prefix}dead-letter"),
        }
    }

    /// `commands` and `events` have the same partition count: an event goes to the partition
    /// number its command came from.
    pub fn specs(&self, partitions: i32, replication: i32) -> Vec<TopicSpec> {
        [&self.commands, &self.events, &self.dead_letter]
            .into_iter()
            .map(|name| TopicSpec { name: name.clone(), partitions, replication })
            .collect()
    }
}

/// A topic Tally needs, with the partition count it must have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    /// The topic's full name, prefix included.
    pub name: String,
    /// The partition count the topic must have; an existing topic with another count is an error.
    pub partitions: i32,
    /// The replication factor a missing topic is created with (not checked on existing topics).
    pub replication: i32,
}

const ADMIN_TIMEOUT: Duration = Duration::from_secs(15);

/// Creates every missing topic and checks that existing ones have the configured partition
/// count (a mismatch would send a stream's events to another partition than its commands).
pub async fn ensure_topics(kafka: &KafkaOptions, specs: &[TopicSpec]) -> Result<(), KafkaError> {
    let admin: Admin = Arc::new(kafka.admin().create()?);
    let mut missing = Vec::new();
    for spec in specs {
        if count_partitions(&admin, &spec.name).await?.is_none() {
            missing.push(spec);
        }
    }
    let opts =
        AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT)).request_timeout(Some(ADMIN_TIMEOUT));
    if !missing.is_empty() {
        let new: Vec<NewTopic> = missing
            .iter()
            .map(|s| NewTopic::new(&s.name, s.partitions, TopicReplication::Fixed(s.replication)))
            .collect();
        for result in admin.create_topics(&new, &opts).await? {
            match result {
                Ok(_) => {}
                // Another instance created it meanwhile: checked below like any existing topic.
                Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => {
                    return Err(KafkaError::Topic { topic, message: code.to_string() });
                }
            }
        }
    }
    for spec in specs {
        let actual = wait_for_partitions(&admin, &spec.name).await?;
        if actual != spec.partitions {
            return Err(KafkaError::PartitionMismatch {
                topic: spec.name.clone(),
                expected: spec.partitions,
                actual,
            });
        }
    }
    Ok(())
}

/// The partition count of a topic, or `None` if the broker does not know it.
pub async fn partition_count(kafka: &KafkaOptions, topic: &str) -> Result<Option<i32>, KafkaError> {
    count_partitions(&Arc::new(kafka.admin().create()?), topic).await
}

type Admin = Arc<AdminClient<DefaultClientContext>>;

/// librdkafka's metadata call blocks its thread; it runs on tokio's blocking pool so that it
/// cannot starve the runtime (which, in tests and `tally dev`, also runs the broker).
async fn count_partitions(admin: &Admin, topic: &str) -> Result<Option<i32>, KafkaError> {
    let (admin, name) = (admin.clone(), topic.to_owned());
    let metadata =
        tokio::task::spawn_blocking(move || admin.inner().fetch_metadata(Some(&name), ADMIN_TIMEOUT))
            .await
            .map_err(|e| KafkaError::Topic { topic: topic.into(), message: e.to_string() })??;
    Ok(metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
        .map(|t| t.partitions().len() as i32))
}

/// Metadata of a new topic can lag its creation by a moment.
async fn wait_for_partitions(admin: &Admin, topic: &str) -> Result<i32, KafkaError> {
    let deadline = tokio::time::Instant::now() + ADMIN_TIMEOUT;
    loop {
        if let Some(n) = count_partitions(admin, topic).await? {
            return Ok(n);
        }
        if tokio::time::Instant::now() > deadline {
            return Err(KafkaError::Topic {
                topic: topic.into(),
                message: "not visible after creation".into(),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

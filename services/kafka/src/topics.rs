//! Topic administration: create what is missing with the configuration Tally needs, refuse
//! what does not match (another partition count, or an `events` topic that would lose records).

use crate::KafkaError;
use crate::config::KafkaOptions;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use std::collections::BTreeMap;
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

    /// The three topics as `layout` lays them out. `commands` and `events` have the same
    /// partition count: an event goes to the partition number its command came from.
    pub fn specs(&self, layout: &TopicLayout) -> Vec<TopicSpec> {
        let spec = |name: &String, retention_ms: i64, keeps| TopicSpec {
            name: name.clone(),
            partitions: layout.partitions,
            replication: layout.replication,
            configs: layout.configs(retention_ms),
            keeps,
        };
        vec![
            spec(&self.commands, layout.commands_retention_ms, Keeps::Uncompacted),
            spec(&self.events, UNLIMITED, Keeps::Everything),
            spec(&self.dead_letter, layout.dead_letter_retention_ms, Keeps::Uncompacted),
        ]
    }
}

/// Kafka's value for "no limit" of `retention.ms` and `retention.bytes`.
pub const UNLIMITED: i64 = -1;

/// How Tally's topics are laid out and how long they keep records. `events` is the source of
/// truth and keeps every record forever; `commands` and the dead-letter topic are inputs and
/// evidence, kept for a configured time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicLayout {
    /// Partitions of every topic.
    pub partitions: i32,
    /// Replication factor of the topics Tally creates.
    pub replication: i32,
    /// `min.insync.replicas` of the topics Tally creates: how many replicas must have a record
    /// before an `acks=all` producer (every Tally producer) is told it is written.
    pub min_insync_replicas: i32,
    /// `retention.ms` of `commands`; -1 keeps them forever.
    pub commands_retention_ms: i64,
    /// `retention.ms` of the dead-letter topic; -1 keeps them forever.
    pub dead_letter_retention_ms: i64,
}

/// Seven days, Kafka's own default retention: room for a processor to be down over a long
/// weekend without losing commands it has not read.
pub const DEFAULT_COMMANDS_RETENTION_MS: i64 = 7 * 24 * 3600 * 1000;
/// Thirty days: time for the producing team to look at what was refused.
pub const DEFAULT_DEAD_LETTER_RETENTION_MS: i64 = 30 * 24 * 3600 * 1000;

impl TopicLayout {
    /// `partitions` and `replication` with the default retention, and `min.insync.replicas`
    /// one below the replication factor (2 of 3: a write survives the loss of one broker, and
    /// one broker can be down without stopping writes), at least 1.
    pub fn new(partitions: i32, replication: i32) -> TopicLayout {
        TopicLayout {
            partitions,
            replication,
            min_insync_replicas: default_min_insync_replicas(replication),
            commands_retention_ms: DEFAULT_COMMANDS_RETENTION_MS,
            dead_letter_retention_ms: DEFAULT_DEAD_LETTER_RETENTION_MS,
        }
    }

    /// The topic configuration of a topic that keeps records for `retention_ms`.
    fn configs(&self, retention_ms: i64) -> Vec<(String, String)> {
        let mut configs = vec![
            ("cleanup.policy", "delete".to_owned()),
            ("retention.ms", retention_ms.to_string()),
            ("min.insync.replicas", self.min_insync_replicas.to_string()),
            // A replica that missed writes must never become leader: it would drop them.
            ("unclean.leader.election.enable", "false".to_owned()),
        ];
        if retention_ms == UNLIMITED {
            configs.push(("retention.bytes", UNLIMITED.to_string()));
        }
        configs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
    }
}

/// One below `replication`, at least 1.
pub fn default_min_insync_replicas(replication: i32) -> i32 {
    (replication - 1).max(1)
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
    /// Topic configuration a missing topic is created with (`retention.ms`, ...).
    pub configs: Vec<(String, String)>,
    /// What the topic's configuration must keep; an existing topic that would lose more is
    /// refused ([`check_keeps`]).
    pub keeps: Keeps,
}

/// What an existing topic's configuration must keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keeps {
    /// Not checked (benchmarks, tests of other things).
    Anything,
    /// Every record until its retention runs out: no compaction, which would keep only the
    /// newest record per key, and every command or dead letter is a request of its own.
    Uncompacted,
    /// Every record forever: the source of truth.
    Everything,
}

impl TopicSpec {
    /// A topic with the broker's default configuration, checked for its partition count only
    /// (for benchmarks and tests of other things).
    pub fn plain(name: impl Into<String>, partitions: i32) -> TopicSpec {
        TopicSpec {
            name: name.into(),
            partitions,
            replication: 1,
            configs: Vec::new(),
            keeps: Keeps::Anything,
        }
    }

    /// This spec as the in-process broker needs it. nisshi (`embedded`) deletes the records of a
    /// topic whose `cleanup.policy` is `delete` once they are older than `retention.ms`, and
    /// reads Kafka's "unlimited" (-1) as "older than -1 ms", that is every record. Without a
    /// `cleanup.policy` it deletes nothing, so a topic meant to keep everything leaves it out
    /// there; [`check_keeps`] reads a missing policy as Kafka's default, `delete`,
    /// which the unlimited retention makes harmless.
    pub fn for_in_process_broker(mut self) -> TopicSpec {
        let unlimited = UNLIMITED.to_string();
        if self.configs.iter().any(|(k, v)| k == "retention.ms" && *v == unlimited) {
            self.configs.retain(|(k, _)| k != "cleanup.policy");
        }
        self
    }
}

/// Whether a topic with this (described) configuration keeps what `keeps` says; if not, the
/// error names the first setting that would lose records. A missing setting counts as Kafka's
/// default: `cleanup.policy` `delete`, `retention.ms` 7 days, `retention.bytes` -1.
pub fn check_keeps(topic: &str, keeps: Keeps, configs: &BTreeMap<String, String>) -> Result<(), KafkaError> {
    if keeps == Keeps::Anything {
        return Ok(());
    }
    let setting = |name: &str, default: &str| configs.get(name).map_or(default, String::as_str).to_owned();
    let refuse = |name: &str, value: String, why: &str| {
        Err(KafkaError::LosesRecords {
            topic: topic.to_owned(),
            setting: name.to_owned(),
            value,
            why: why.to_owned(),
        })
    };
    let policy = setting("cleanup.policy", "delete");
    if policy.split(',').any(|p| p.trim() == "compact") {
        return refuse("cleanup.policy", policy, "compaction keeps only the newest record of each key");
    }
    if keeps != Keeps::Everything {
        return Ok(());
    }
    // Kafka's defaults: seven days, no size limit.
    for (name, default) in [("retention.ms", "604800000"), ("retention.bytes", "-1")] {
        let value = setting(name, default);
        if value.trim() != UNLIMITED.to_string() {
            return refuse(name, value, "the broker deletes records past this limit");
        }
    }
    Ok(())
}

const ADMIN_TIMEOUT: Duration = Duration::from_secs(15);

/// Creates every missing topic and checks that existing ones have the configured partition
/// count (a mismatch would send a stream's events to another partition than its commands).
pub async fn ensure_topics(kafka: &KafkaOptions, specs: &[TopicSpec]) -> Result<(), KafkaError> {
    let admin: Admin = Arc::new(kafka.admin().create()?);
    // Existing topics first, so that a refusal leaves nothing created behind it.
    let mut missing = Vec::new();
    for spec in specs {
        match count_partitions(&admin, &spec.name).await? {
            Some(actual) => check_existing(&admin, spec, actual).await?,
            None => missing.push(spec),
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let opts =
        AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT)).request_timeout(Some(ADMIN_TIMEOUT));
    let new: Vec<NewTopic> = missing
        .iter()
        .map(|s| {
            let topic = NewTopic::new(&s.name, s.partitions, TopicReplication::Fixed(s.replication));
            s.configs.iter().fold(topic, |topic, (k, v)| topic.set(k, v))
        })
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
    for spec in missing {
        check_existing(&admin, spec, wait_for_partitions(&admin, &spec.name).await?).await?;
    }
    Ok(())
}

/// An existing topic with `actual` partitions against its spec: the partition count, then what
/// its configuration must keep.
async fn check_existing(admin: &Admin, spec: &TopicSpec, actual: i32) -> Result<(), KafkaError> {
    if actual != spec.partitions {
        return Err(KafkaError::PartitionMismatch {
            topic: spec.name.clone(),
            expected: spec.partitions,
            actual,
        });
    }
    if spec.keeps != Keeps::Anything {
        check_keeps(&spec.name, spec.keeps, &describe(admin, &spec.name).await?)?;
    }
    Ok(())
}

/// The configuration of a topic as the broker describes it (every setting, defaults included
/// on Kafka; only those set on the in-process broker).
async fn describe(admin: &Admin, topic: &str) -> Result<BTreeMap<String, String>, KafkaError> {
    let opts =
        AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT)).request_timeout(Some(ADMIN_TIMEOUT));
    let failed = |message: String| KafkaError::Topic { topic: topic.to_owned(), message };
    let results = admin.describe_configs(&[ResourceSpecifier::Topic(topic)], &opts).await?;
    let resource = results
        .into_iter()
        .next()
        .ok_or_else(|| failed("no configuration described".into()))?
        .map_err(|code| failed(format!("describing its configuration: {code}")))?;
    Ok(resource.entries.into_iter().filter_map(|e| Some((e.name, e.value?))).collect())
}

/// The configuration of a topic as the broker describes it (see [`describe`]).
pub async fn topic_configs(
    kafka: &KafkaOptions,
    topic: &str,
) -> Result<BTreeMap<String, String>, KafkaError> {
    describe(&Arc::new(kafka.admin().create()?), topic).await
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

#[cfg(test)]
mod tests {
    use super::*;

    fn configs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn refused_setting(pairs: &[(&str, &str)]) -> Option<String> {
        match check_keeps("events", Keeps::Everything, &configs(pairs)) {
            Ok(()) => None,
            Err(KafkaError::LosesRecords { setting, .. }) => Some(setting),
            Err(other) => panic!("{other}"),
        }
    }

    #[test]
    fn only_unlimited_time_and_size_without_compaction_keeps_every_record() {
        let keeps = [("cleanup.policy", "delete"), ("retention.ms", "-1"), ("retention.bytes", "-1")];
        assert_eq!(refused_setting(&keeps), None);
        // What the in-process broker describes: no policy (Kafka's default `delete` is harmless).
        assert_eq!(refused_setting(&[("retention.ms", "-1"), ("retention.bytes", "-1")]), None);
        assert_eq!(refused_setting(&[("retention.ms", "-1")]), None, "retention.bytes defaults to -1");
        // Kafka's defaults: seven days.
        assert_eq!(refused_setting(&[]).as_deref(), Some("retention.ms"));
        assert_eq!(
            refused_setting(&[("retention.ms", "604800000"), ("retention.bytes", "-1")]).as_deref(),
            Some("retention.ms")
        );
        assert_eq!(
            refused_setting(&[("retention.ms", "-1"), ("retention.bytes", "1000")]).as_deref(),
            Some("retention.bytes")
        );
        for policy in ["compact", "delete,compact", "compact, delete"] {
            let pairs = [("cleanup.policy", policy), ("retention.ms", "-1"), ("retention.bytes", "-1")];
            assert_eq!(refused_setting(&pairs).as_deref(), Some("cleanup.policy"), "{policy}");
        }
    }

    #[test]
    fn inputs_may_expire_but_never_be_compacted() {
        let check = |pairs: &[(&str, &str)]| check_keeps("commands", Keeps::Uncompacted, &configs(pairs));
        check(&[("cleanup.policy", "delete"), ("retention.ms", "604800000")]).unwrap();
        check(&[]).unwrap();
        assert!(matches!(
            check(&[("cleanup.policy", "compact")]),
            Err(KafkaError::LosesRecords { setting, .. }) if setting == "cleanup.policy"
        ));
        check_keeps("x", Keeps::Anything, &configs(&[("cleanup.policy", "compact")])).unwrap();
    }

    #[test]
    fn events_is_laid_out_to_keep_everything_and_the_inputs_for_their_retention() {
        let topics = Topics::with_prefix("tally.");
        let specs = topics.specs(&TopicLayout::new(4, 3));
        let get = |spec: &TopicSpec, name: &str| {
            spec.configs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        };
        let [commands, events, dead_letter] = &specs[..] else { panic!("three topics") };
        assert_eq!(
            [commands.keeps, events.keeps, dead_letter.keeps],
            [Keeps::Uncompacted, Keeps::Everything, Keeps::Uncompacted]
        );
        check_keeps(&events.name, events.keeps, &events.configs.iter().cloned().collect()).unwrap();
        assert_eq!(get(events, "min.insync.replicas").as_deref(), Some("2"), "2 of 3");
        assert_eq!(get(commands, "retention.ms"), Some(DEFAULT_COMMANDS_RETENTION_MS.to_string()));
        assert_eq!(get(dead_letter, "retention.ms"), Some(DEFAULT_DEAD_LETTER_RETENTION_MS.to_string()));
        // The in-process broker: no delete policy on events, the other two keep theirs.
        let events = events.clone().for_in_process_broker();
        assert_eq!(get(&events, "cleanup.policy"), None);
        check_keeps(&events.name, events.keeps, &events.configs.iter().cloned().collect()).unwrap();
        assert_eq!(
            get(&commands.clone().for_in_process_broker(), "cleanup.policy").as_deref(),
            Some("delete")
        );
        assert_eq!(default_min_insync_replicas(1), 1);
        assert_eq!(default_min_insync_replicas(5), 4);
    }
}

//! rdkafka client settings. Every option that affects delivery, ordering or latency is set
//! here explicitly rather than left to librdkafka's defaults, so that behaviour does not change
//! with the library version and a reader can see what we rely on.

use rdkafka::ClientConfig;

/// How often group consumers report librdkafka's statistics (consumer lag for the metrics).
pub const STATISTICS_INTERVAL_MS: u32 = 5000;

/// librdkafka's default is 500 ms; see [`KafkaOptions::fetch_wait_ms`].
pub const DEFAULT_FETCH_WAIT_MS: u32 = 50;

/// Settings shared by every client of one deployment.
#[derive(Debug, Clone)]
pub struct KafkaOptions {
    /// `host:port[,host:port...]`
    pub bootstrap_servers: String,
    /// Prefix of every client id (shows up in broker logs and metrics).
    pub client_id: String,
    /// Longest time (milliseconds) a consumer's fetch waits at the broker for new records.
    /// Kafka answers a waiting fetch as soon as records arrive, so this only bounds idle
    /// polling; the in-process broker instead re-checks at halving intervals, so there it adds
    /// up to about half this value to every hop (see BENCHMARKS.md).
    pub fetch_wait_ms: u32,
}

impl KafkaOptions {
    /// Options for the cluster at `bootstrap_servers`, with client id prefix `tally` and a fetch
    /// wait of [`DEFAULT_FETCH_WAIT_MS`].
    pub fn new(bootstrap_servers: impl Into<String>) -> Self {
        KafkaOptions {
            bootstrap_servers: bootstrap_servers.into(),
            client_id: "tally".into(),
            fetch_wait_ms: DEFAULT_FETCH_WAIT_MS,
        }
    }

    fn base(&self, role: &str) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_servers)
            .set("client.id", format!("{}-{role}", self.client_id))
            .set("socket.keepalive.enable", "true")
            .set("reconnect.backoff.ms", "50")
            .set("reconnect.backoff.max.ms", "2000")
            .set("topic.metadata.refresh.interval.ms", "10000")
            // Topics are created on purpose (with their partition counts), never as a side
            // effect: the embedded broker creates any unknown topic a metadata request names,
            // with 4 partitions, unless the request says otherwise.
            .set("allow.auto.create.topics", "false")
            // Statistics only where they feed a metric (group consumers, below).
            .set("statistics.interval.ms", "0");
        // librdkafka's own tracing (e.g. `cgrp,fetch`), for diagnosing group or fetch trouble.
        if let Ok(contexts) = std::env::var("TALLY_KAFKA_DEBUG") {
            c.set("debug", contexts);
        }
        c
    }

    /// An idempotent producer that waits for every in-sync replica: no duplicates from
    /// retries and no acknowledged write lost with a leader.
    pub fn producer(&self, role: &str) -> ClientConfig {
        let mut c = self.base(role);
        c.set("acks", "all")
            .set("enable.idempotence", "true")
            .set("max.in.flight.requests.per.connection", "5")
            .set("retries", "2147483647")
            .set("retry.backoff.ms", "50")
            .set("message.timeout.ms", "30000")
            .set("request.timeout.ms", "10000")
            .set("linger.ms", "2")
            .set("batch.num.messages", "10000")
            .set("queue.buffering.max.messages", "100000")
            .set("queue.buffering.max.kbytes", "65536")
            .set("compression.type", "none")
            .set("partitioner", "murmur2_random");
        c
    }

    /// The producer that appends to the events log. A log with a hole would lose a command:
    /// readers accept the answer after the hole and move past the command whose answer is
    /// missing. So any error that could leave a hole stops the producer (gapless guarantee), and
    /// records never expire in the queue: an owner waits for the broker rather than give up on a
    /// record in the middle of a batch.
    pub fn log_writer(&self, role: &str) -> ClientConfig {
        let mut c = self.producer(role);
        c.set("enable.gapless.guarantee", "true").set("message.timeout.ms", "0");
        c
    }

    /// A group consumer that never commits or stores offsets on its own: the application stores
    /// an offset only after the work it covers is durable. Reads committed data only. Session
    /// and poll timeouts are short so that groups form and fail over in seconds.
    pub fn consumer(&self, role: &str, group_id: &str) -> ClientConfig {
        let mut c = self.base(role);
        c.set("group.id", group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_committed")
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "1000")
            // librdkafka's default (300 s) makes the first join take ~23 s on the embedded
            // broker; 10 s brings it to ~3 s. Processing a batch must stay well under this.
            .set("max.poll.interval.ms", "10000")
            .set("partition.assignment.strategy", "range,roundrobin")
            .set("fetch.wait.max.ms", self.fetch_wait_ms.to_string())
            .set("fetch.min.bytes", "1")
            .set("queued.max.messages.kbytes", "65536")
            .set("enable.partition.eof", "false")
            .set("check.crcs", "true")
            .set("statistics.interval.ms", STATISTICS_INTERVAL_MS.to_string());
        c
    }

    /// A consumer outside any group (assign, not subscribe): for reading a partition end to end
    /// (state restore, outcome watching, tools). Same read guarantees as group consumers; the
    /// group id is required by librdkafka but never joined.
    pub fn reader(&self, role: &str) -> ClientConfig {
        self.consumer(role, &format!("{}-{role}-reader", self.client_id))
    }

    /// An admin client (topic creation and metadata), with the shared connection settings only.
    pub fn admin(&self) -> ClientConfig {
        self.base("admin")
    }
}

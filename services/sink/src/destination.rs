//! Destinations: where a tenant's events go, which of them, and how they are signed. Plain
//! data and pure rules; the admin API creates them ([`crate::api`]), the runner reads them.

use crate::signature;
use serde::{Deserialize, Serialize};
use tally_core::{DestinationId, EVENT_KINDS, Event, ID_LEN_MAX, LedgerId, StreamId, TenantId};

/// Most entries in each list of a filter.
pub const FILTER_ENTRIES_MAX: usize = 100;
/// Longest webhook URL, in bytes.
pub const URL_LEN_MAX: usize = 2048;
/// Longest Kafka topic name (Kafka's own limit).
pub const TOPIC_LEN_MAX: usize = 249;
/// Most delivery attempts of one event a destination may be configured with.
pub const ATTEMPTS_MAX: u32 = 100;
/// Delivery attempts of one event before its lane is parked, unless configured.
pub const ATTEMPTS_DEFAULT: u32 = 10;
/// Most destinations per tenant. Each costs a Kafka reader (and a thread) per events
/// partition in the sink that owns it, so the bound is kept low.
pub const PER_TENANT_MAX: usize = 20;
/// Most signing secrets a webhook holds at once (the current one and rotated ones still valid).
pub const SECRETS_MAX: usize = 5;

/// One destination of one tenant, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Destination {
    pub tenant: TenantId,
    pub id: DestinationId,
    /// This incarnation of `(tenant, id)`: delivery records are keyed by it, so a destination
    /// deleted and created again starts afresh.
    pub uid: String,
    pub target: Target,
    pub filter: Filter,
    pub start: Start,
    /// Where each events partition ended when the destination was created (`start: now`):
    /// its lanes deliver from these offsets on. Empty for `start: beginning`; a partition
    /// missing here (added later) starts at 0.
    #[serde(default)]
    pub start_offsets: std::collections::BTreeMap<i32, i64>,
    /// Attempts at one event before its lane is parked (1 to [`ATTEMPTS_MAX`]).
    pub max_attempts: u32,
    /// Paused by an operator: nothing is delivered until resumed (nothing is skipped either).
    pub paused: bool,
    /// How many times the destination was resumed: a lane parked under an earlier count
    /// delivers again, from the event it was parked on.
    pub replay: u64,
    /// Milliseconds since the Unix epoch.
    pub created_ms: i64,
    /// Signing secrets (webhooks), newest first.
    pub secrets: Vec<Secret>,
}

/// Where the events go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// An HTTP POST of each event as JSON, signed (Standard Webhooks).
    Webhook { url: String },
    /// A Kafka topic of the same cluster: each event keyed by its stream, as `format` says.
    Kafka {
        topic: String,
        #[serde(default)]
        format: KafkaFormat,
        /// For `avro` with a schema registry: the id the registry gave Tally's event schema
        /// under `<topic>-value`; records are then in the Confluent framing (`00` + this id).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        schema_id: Option<u32>,
    },
}

/// How a Kafka destination writes each event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KafkaFormat {
    /// The JSON document a webhook gets (`crate::outlet::Message`).
    #[default]
    Json,
    /// The events topic's own Avro event record (the schema `schemas/avro/event.avsc`): in
    /// single-object encoding, or in the Confluent framing when a schema registry is
    /// configured.
    Avro,
}

/// A webhook signing secret: `whsec_` + base64 of its key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secret {
    pub secret: String,
    /// When a rotated secret stops signing, in milliseconds since the Unix epoch (`None`: the
    /// current secret).
    pub expires_ms: Option<i64>,
}

/// Which events of the log a destination receives, besides the tenant's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Start {
    /// Events written to the log after the destination was created: from each partition's end
    /// as the broker reported it then (`start_offsets`).
    Now,
    /// Every event of the tenant in the log.
    Beginning,
}

/// Which of the tenant's events a destination receives: every list that is not empty must
/// match (an empty list matches everything).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// Event kinds (`TransactionPosted`, ...; [`EVENT_KINDS`]).
    #[serde(default)]
    pub event_types: Vec<String>,
    /// Ledgers; events of state documents never match a filter that names ledgers.
    #[serde(default)]
    pub ledgers: Vec<LedgerId>,
    /// Account id prefixes: the event names an account that starts with one of them
    /// ([`tally_core::EventBody::accounts`]); events that name no account never match.
    #[serde(default)]
    pub account_prefixes: Vec<String>,
}

impl Filter {
    /// Checks sizes and names; the message says what is wrong.
    pub fn check(&self) -> Result<(), String> {
        let lists = [self.event_types.len(), self.ledgers.len(), self.account_prefixes.len()];
        if lists.iter().any(|n| *n > FILTER_ENTRIES_MAX) {
            return Err(format!("a filter list holds at most {FILTER_ENTRIES_MAX} entries"));
        }
        if let Some(unknown) = self.event_types.iter().find(|t| !EVENT_KINDS.contains(&t.as_str())) {
            return Err(format!("unknown event type {unknown:?}; known are {}", EVENT_KINDS.join(", ")));
        }
        for prefix in &self.account_prefixes {
            // A prefix is an account id's start: the same characters, not empty.
            tally_core::AccountId::parse(prefix.as_str()).map_err(|e| format!("account prefix: {e}"))?;
        }
        Ok(())
    }

    /// Whether `event` passes every list of the filter.
    pub fn matches(&self, event: &Event) -> bool {
        let kind_ok = self.event_types.is_empty() || self.event_types.iter().any(|t| t == event.body.kind());
        let ledger_ok = self.ledgers.is_empty()
            || matches!(&event.stream, StreamId::Ledger(ledger) if self.ledgers.contains(ledger));
        let account_ok = self.account_prefixes.is_empty()
            || event
                .body
                .accounts()
                .iter()
                .any(|a| self.account_prefixes.iter().any(|p| a.as_str().starts_with(p)));
        kind_ok && ledger_ok && account_ok
    }
}

impl Target {
    /// Checks the URL or topic name; the message says what is wrong. Webhooks must use HTTPS,
    /// except to a loopback or private address when `private_allowed` (tests, a laptop).
    pub fn check(&self, private_allowed: bool) -> Result<(), String> {
        match self {
            Target::Webhook { url } => check_url(url, private_allowed),
            Target::Kafka { topic, .. } => check_topic(topic),
        }
    }

    /// `webhook` or `kafka`, for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Webhook { .. } => "webhook",
            Target::Kafka { .. } => "kafka",
        }
    }
}

fn check_url(text: &str, private_allowed: bool) -> Result<(), String> {
    if text.len() > URL_LEN_MAX {
        return Err(format!("the URL is longer than {URL_LEN_MAX} bytes"));
    }
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("the URL holds spaces or control characters".into());
    }
    let url = url::Url::parse(text).map_err(|e| format!("the URL does not parse: {e}"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err("the URL may not carry credentials".into());
    }
    let host = url.host().ok_or("the URL has no host")?;
    let private = is_private(&host);
    if private && !private_allowed {
        return Err(format!(
            "{host} is a loopback, private or link-local address; such webhooks are refused unless the sink runs with --sink-allow-private-webhooks"
        ));
    }
    match url.scheme() {
        "https" => Ok(()),
        "http" if private => Ok(()),
        scheme => Err(format!("the URL's scheme is {scheme}; webhooks are sent over https")),
    }
}

/// Whether a host names this machine or a private network (RFC 1918, RFC 4193, link-local,
/// loopback, `localhost`). Names are not resolved here: the runner checks addresses again when
/// it connects ([`crate::webhook`]).
pub fn is_private(host: &url::Host<&str>) -> bool {
    match host {
        url::Host::Domain(name) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            name == "localhost" || name.ends_with(".localhost")
        }
        url::Host::Ipv4(ip) => is_private_ip(std::net::IpAddr::V4(*ip)),
        url::Host::Ipv6(ip) => is_private_ip(std::net::IpAddr::V6(*ip)),
    }
}

/// [`is_private`] for an address: anything that is not a public unicast address. IPv6
/// addresses that carry an IPv4 one (mapped, compatible, NAT64, 6to4) are judged by it.
pub fn is_private_ip(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => is_private_v4(v4),
        std::net::IpAddr::V6(v6) => {
            if let Some(v4) = embedded_v4(v6) {
                return is_private_v4(v4);
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local, RFC 4193
                || (first & 0xffc0) == 0xfe80 // link-local
                || (first & 0xffc0) == 0xfec0 // site-local (deprecated, RFC 3879)
                || (first == 0x2001 && v6.segments()[1] == 0x0db8) // documentation, RFC 3849
                || (first == 0x2001 && v6.segments()[1] == 0) // Teredo, RFC 4380 (tunnels to any IPv4)
                || (first == 0x64 && v6.segments()[1] == 0xff9b && v6.segments()[2] == 1) // local NAT64, RFC 8215
        }
    }
}

fn is_private_v4(v4: std::net::Ipv4Addr) -> bool {
    let [a, b, c, _] = v4.octets();
    v4.is_loopback()
        || v4.is_private()
        || v4.is_link_local()
        || v4.is_unspecified()
        || v4.is_broadcast()
        || v4.is_multicast()
        || v4.is_documentation()
        || a == 0 // "this network", RFC 791
        || (a == 100 && (b & 0xc0) == 64) // carrier-grade NAT, RFC 6598
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments, RFC 6890
        || (a == 198 && (b & 0xfe) == 18) // benchmarking, RFC 2544
        || a >= 240 // reserved, RFC 1112
}

/// The IPv4 address an IPv6 one carries: mapped (`::ffff:a.b.c.d`), compatible (`::a.b.c.d`),
/// NAT64 (`64:ff9b::a.b.c.d`, RFC 6052) or 6to4 (`2002:AABB:CCDD::`, RFC 3056).
fn embedded_v4(v6: std::net::Ipv6Addr) -> Option<std::net::Ipv4Addr> {
    let s = v6.segments();
    let from = |hi: u16, lo: u16| Some(std::net::Ipv4Addr::from(((hi as u32) << 16) | lo as u32));
    match s {
        [0, 0, 0, 0, 0, 0xffff, hi, lo] | [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => from(hi, lo),
        [0, 0, 0, 0, 0, 0, hi, lo] if (hi, lo) != (0, 0) && (hi, lo) != (0, 1) => from(hi, lo),
        [0x2002, hi, lo, ..] => from(hi, lo),
        _ => None,
    }
}

/// Kafka's rule for topic names: 1 to 249 of letters, digits, `.`, `_` and `-`, not `.` or `..`.
fn check_topic(topic: &str) -> Result<(), String> {
    let valid_chars = topic.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if topic.is_empty() || topic.len() > TOPIC_LEN_MAX || !valid_chars || topic == "." || topic == ".." {
        return Err(format!(
            "{topic:?} is not a Kafka topic name (1 to {TOPIC_LEN_MAX} of letters, digits, '.', '_', '-')"
        ));
    }
    Ok(())
}

impl Destination {
    /// Whether `event`, which counts in the log, goes to this destination (its tenant's, and
    /// passing its filter; where the destination starts is [`Destination::starts_at`]).
    pub fn wants(&self, event: &Event) -> bool {
        event.tenant == self.tenant && self.filter.matches(event)
    }

    /// The first events offset of `partition` whose events this destination receives.
    pub fn starts_at(&self, partition: i32) -> i64 {
        match self.start {
            Start::Beginning => 0,
            Start::Now => self.start_offsets.get(&partition).copied().unwrap_or(0),
        }
    }

    /// The keys that sign a delivery at `now_ms`: the current secret and the rotated ones that
    /// have not expired, newest first.
    pub fn signing_keys(&self, now_ms: i64) -> Vec<Vec<u8>> {
        let valid = self.secrets.iter().filter(|s| s.expires_ms.is_none_or(|at| at > now_ms));
        valid.filter_map(|s| signature::secret_key(&s.secret).ok()).collect()
    }

    /// A new current secret; the previous ones keep signing until `now_ms + overlap_ms`
    /// (those that expire sooner keep their time). Returns the new secret. At most
    /// [`SECRETS_MAX`] are kept: the oldest go first.
    pub fn rotate_secret(&mut self, now_ms: i64, overlap_ms: i64) -> String {
        let until = now_ms.saturating_add(overlap_ms);
        self.secrets.retain(|s| s.expires_ms.is_none_or(|at| at > now_ms));
        for old in &mut self.secrets {
            old.expires_ms = Some(old.expires_ms.map_or(until, |at| at.min(until)));
        }
        let secret = signature::new_secret();
        self.secrets.insert(0, Secret { secret: secret.clone(), expires_ms: None });
        self.secrets.truncate(SECRETS_MAX);
        secret
    }

    /// The stored form (JSON: readable when an operator looks at the store).
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a destination serialises")
    }

    /// Reads [`Destination::encode`]'s bytes.
    pub fn decode(bytes: &[u8]) -> Result<Destination, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// A new incarnation id: tenant, id, creation time and 64 random bits.
pub fn new_uid(tenant: &TenantId, id: &DestinationId, now_ms: i64) -> String {
    let mut random = [0u8; 8];
    getrandom::fill(&mut random).expect("the operating system's random source");
    let uid = format!("{tenant}/{id}/{now_ms}-{:016x}", u64::from_le_bytes(random));
    debug_assert!(uid.len() <= 2 * ID_LEN_MAX + 64);
    uid
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tally_core::testkit;

    fn destination(filter: Filter, start: Start) -> Destination {
        Destination {
            tenant: TenantId::parse("acme").unwrap(),
            id: DestinationId::parse("hook").unwrap(),
            uid: "u".into(),
            target: Target::Webhook { url: "https://example.com/hook".into() },
            filter,
            start,
            start_offsets: [(0, 7)].into(),
            max_attempts: ATTEMPTS_DEFAULT,
            paused: false,
            replay: 0,
            created_ms: 1_000,
            secrets: vec![],
        }
    }

    fn events() -> impl Strategy<Value = Vec<Event>> {
        testkit::history().prop_map(|history| testkit::run(&history, |_, _| {}).1)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Each list of the filter is a conjunct: an event passes the whole filter exactly when
        /// it passes each list alone.
        #[test]
        fn a_filter_is_the_conjunction_of_its_lists(events in events(), pick in any::<prop::sample::Index>()) {
            prop_assume!(!events.is_empty());
            let first = &events[pick.index(events.len())];
            let ledgers: Vec<LedgerId> = match &first.stream { StreamId::Ledger(l) => vec![l.clone()], _ => vec![] };
            let prefixes: Vec<String> = first.body.accounts().iter().map(|a| a.as_str()[..1].to_owned()).collect();
            let parts = [
                Filter { event_types: vec![first.body.kind().into()], ..Filter::default() },
                Filter { ledgers: ledgers.clone(), ..Filter::default() },
                Filter { account_prefixes: prefixes.clone(), ..Filter::default() },
            ];
            let whole = Filter { event_types: vec![first.body.kind().into()], ledgers, account_prefixes: prefixes };
            prop_assert!(whole.check().is_ok());
            for event in &events {
                prop_assert_eq!(whole.matches(event), parts.iter().all(|p| p.matches(event)));
            }
            prop_assert!(whole.matches(first));
        }

        /// Another tenant's events never pass, whatever the filter.
        #[test]
        fn only_the_tenants_events_pass(events in events()) {
            let mut d = destination(Filter::default(), Start::Beginning);
            d.tenant = events.first().map_or(d.tenant, |e| e.tenant.clone());
            for event in &events {
                prop_assert_eq!(d.wants(event), event.tenant == d.tenant);
            }
        }
    }

    #[test]
    fn a_destination_starts_where_the_log_ended_at_its_creation_or_at_the_beginning() {
        let now = destination(Filter::default(), Start::Now);
        assert_eq!((now.starts_at(0), now.starts_at(1)), (7, 0), "a partition added later starts at 0");
        let beginning = destination(Filter::default(), Start::Beginning);
        assert_eq!(beginning.starts_at(0), 0);
    }

    #[test]
    fn filters_with_unknown_types_bad_prefixes_or_too_many_entries_are_refused() {
        let unknown = Filter { event_types: vec!["Posted".into()], ..Filter::default() };
        assert!(unknown.check().unwrap_err().contains("unknown event type"));
        let slash = Filter { account_prefixes: vec!["a/b".into()], ..Filter::default() };
        assert!(slash.check().is_err());
        let empty = Filter { account_prefixes: vec!["".into()], ..Filter::default() };
        assert!(empty.check().is_err());
        let many =
            Filter { event_types: vec!["DocumentPut".into(); FILTER_ENTRIES_MAX + 1], ..Filter::default() };
        assert!(many.check().is_err());
    }

    #[test]
    fn webhook_urls_are_https_to_public_hosts_unless_private_ones_are_allowed() {
        let check = |url: &str, private: bool| Target::Webhook { url: url.into() }.check(private);
        assert!(check("https://hooks.example.com/tally", false).is_ok());
        assert!(check("http://hooks.example.com/tally", false).unwrap_err().contains("https"));
        for private in [
            "http://127.0.0.1:9000/h",
            "http://localhost/h",
            "https://10.1.2.3/h",
            "https://169.254.169.254/latest",
            "https://[::1]/h",
            "https://[fd00::1]/h",
            "https://[::ffff:192.168.0.1]/h",
            "https://100.64.0.1/h",
            "https://[::127.0.0.1]/h",
            "https://[64:ff9b::7f00:1]/h",
            "https://[2002:7f00:1::]/h",
            "https://[fec0::1]/h",
            "https://0.1.2.3/h",
            "https://192.0.0.192/h",
            "https://198.18.0.1/h",
            "https://224.0.0.1/h",
            "https://240.0.0.1/h",
            "https://[64:ff9b:1::7f00:1]/h",
            "https://[2001:0:4136:e378:8000:63bf:80ff:fffe]/h",
        ] {
            assert!(check(private, false).is_err(), "{private}");
            assert!(check(private, true).is_ok(), "{private}");
        }
        assert!(check("https://[2606:4700::1111]/h", false).is_ok(), "a public IPv6 address");
        assert!(check("https://1.1.1.1/h", false).is_ok());
        assert!(check("https://user:pw@example.com/", true).is_err());
        assert!(check("https://example.com/a\r\nX-Injected: 1", true).is_err());
        assert!(check(" https://example.com/", true).is_err());
        assert!(check("ftp://example.com/", true).is_err());
        assert!(check("not a url", true).is_err());
        assert!(check(&format!("https://example.com/{}", "a".repeat(URL_LEN_MAX)), true).is_err());
    }

    #[test]
    fn topic_names_follow_kafka() {
        let check = |t: &str| {
            Target::Kafka { topic: t.into(), format: KafkaFormat::Json, schema_id: None }.check(false)
        };
        assert!(check("movements.acme-v1").is_ok());
        for bad in ["", ".", "..", "a b", "a/b", &"a".repeat(TOPIC_LEN_MAX + 1)] {
            assert!(check(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_rotation_keeps_the_old_secret_signing_until_the_overlap_ends() {
        let mut d = destination(Filter::default(), Start::Now);
        let first = d.rotate_secret(0, 0);
        assert_eq!(d.signing_keys(0).len(), 1);
        let second = d.rotate_secret(10_000, 5_000);
        assert_ne!(first, second);
        assert_eq!(d.signing_keys(14_999).len(), 2, "both sign during the overlap");
        assert_eq!(d.signing_keys(15_000), vec![signature::secret_key(&second).unwrap()]);
        for i in 0..10 {
            d.rotate_secret(20_000 + i, 1_000_000);
        }
        assert_eq!(d.secrets.len(), SECRETS_MAX, "the oldest go first");
    }

    #[test]
    fn a_destination_reads_back_as_stored() {
        let mut d = destination(
            Filter { ledgers: vec![LedgerId::parse("main").unwrap()], ..Filter::default() },
            Start::Beginning,
        );
        d.rotate_secret(0, 0);
        assert_eq!(Destination::decode(&d.encode()).unwrap(), d);
    }
}

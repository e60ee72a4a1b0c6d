//! Which tenants each producer of the `commands` topic may send commands for. Other teams
//! produce commands straight to Kafka; a record names its producer in the `tally-producer`
//! header, and when an allow-list is configured the processor dead-letters every command whose
//! producer is unnamed, unknown, or not allowed the command's tenant.
//!
//! The file (TOML):
//!
//! ```toml
//! [producers]
//! payments = ["acme", "globex"]   # exactly these tenants
//! onboarding = ["trial-*"]        # tenants starting with "trial-"
//! ops = ["*"]                     # any tenant
//! ```
//!
//! Tally's own front door names itself [`FRONT_DOOR`] and may send for any tenant: the tenant
//! of its commands comes from a verified credential.
//!
//! What this guards against: a team's misconfigured or buggy producer writing into tenants
//! that are not theirs. Kafka does not tie headers to the authenticated producer, so it is not
//! a defence against a producer that forges the header on purpose: who may write to the topic
//! at all is for Kafka's ACLs to decide.

use serde::Deserialize;
use std::collections::HashMap;
use tally_core::TenantId;

/// The record header that names a command's producer.
pub const PRODUCER_HEADER: &str = "tally-producer";
/// The producer name of Tally's HTTP front door.
pub const FRONT_DOOR: &str = "tally-front-door";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    producers: HashMap<String, Vec<String>>,
}

/// A tenant pattern: a name, a prefix ending in `*`, or `*`.
#[derive(Debug, Clone)]
enum Pattern {
    Exactly(String),
    Prefix(String),
}

impl Pattern {
    fn parse(text: &str) -> Result<Pattern, String> {
        match text.strip_suffix('*') {
            Some(prefix) if !prefix.contains('*') => Ok(Pattern::Prefix(prefix.to_owned())),
            None => TenantId::parse(text)
                .map(|t| Pattern::Exactly(t.as_str().to_owned()))
                .map_err(|e| e.to_string()),
            Some(_) => Err(format!("{text:?}: only one `*`, at the end")),
        }
    }

    fn matches(&self, tenant: &str) -> bool {
        match self {
            Pattern::Exactly(name) => name == tenant,
            Pattern::Prefix(prefix) => tenant.starts_with(prefix.as_str()),
        }
    }
}

/// Why a producer's command is refused (its record goes to the dead-letter topic).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No `tally-producer` header, or a producer not on the list.
    ProducerUnknown,
    /// The producer is on the list, but not for the command's tenant.
    TenantNotAllowed,
}

/// A refusal and what was wrong, for people (the `tally-dead-letter-detail` header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub refusal: Refusal,
    pub detail: String,
}

/// The producer allow-list: for each producer name, the tenant patterns it may send for.
#[derive(Debug, Clone, Default)]
pub struct ProducerTenants {
    allowed: HashMap<String, Vec<Pattern>>,
}

impl ProducerTenants {
    /// Reads an allow-list file (TOML, as in the module docs); fails with a message on bad TOML,
    /// a bad tenant pattern, or an entry for [`FRONT_DOOR`].
    pub fn parse(bytes: &[u8]) -> Result<ProducerTenants, String> {
        let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))?;
        let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut allowed = HashMap::with_capacity(file.producers.len());
        for (producer, patterns) in file.producers {
            if producer == FRONT_DOOR {
                return Err(format!("{FRONT_DOOR} is Tally's own front door; it needs no entry"));
            }
            let patterns: Result<Vec<Pattern>, String> = patterns.iter().map(|p| Pattern::parse(p)).collect();
            allowed.insert(producer.clone(), patterns.map_err(|e| format!("producer {producer:?}: {e}"))?);
        }
        Ok(ProducerTenants { allowed })
    }

    /// Whether `producer` (the header's value, if any) may send commands for `tenant`.
    pub fn check(&self, producer: Option<&str>, tenant: &TenantId) -> Result<(), Refused> {
        let refused = |refusal, detail| Err(Refused { refusal, detail });
        let Some(producer) = producer else {
            return refused(Refusal::ProducerUnknown, format!("the record has no {PRODUCER_HEADER} header"));
        };
        if producer == FRONT_DOOR {
            return Ok(());
        }
        let Some(patterns) = self.allowed.get(producer) else {
            return refused(
                Refusal::ProducerUnknown,
                format!("producer {producer:?} is not on the allow-list"),
            );
        };
        match patterns.iter().any(|p| p.matches(tenant.as_str())) {
            true => Ok(()),
            false => refused(
                Refusal::TenantNotAllowed,
                format!("producer {producer:?} may not send commands for tenant {:?}", tenant.as_str()),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str =
        "[producers]\npayments = [\"acme\", \"globex\"]\nonboarding = [\"trial-*\"]\nops = [\"*\"]\n";

    fn check(producer: Option<&str>, tenant: &str) -> Result<(), Refusal> {
        let list = ProducerTenants::parse(FILE.as_bytes()).unwrap();
        list.check(producer, &TenantId::parse(tenant).unwrap()).map_err(|r| r.refusal)
    }

    #[test]
    fn each_producer_sends_for_its_tenants_only() {
        assert_eq!(check(Some("payments"), "acme"), Ok(()));
        assert_eq!(check(Some("payments"), "acme2"), Err(Refusal::TenantNotAllowed));
        assert_eq!(check(Some("onboarding"), "trial-7"), Ok(()));
        assert_eq!(check(Some("onboarding"), "acme"), Err(Refusal::TenantNotAllowed));
        assert_eq!(check(Some("ops"), "anyone"), Ok(()));
        assert_eq!(check(Some(FRONT_DOOR), "anyone"), Ok(()));
        assert_eq!(check(Some("stranger"), "acme"), Err(Refusal::ProducerUnknown));
        assert_eq!(check(None, "acme"), Err(Refusal::ProducerUnknown));
    }

    #[test]
    fn bad_lists_are_refused() {
        for bad in [
            "[producers]\np = [\"a*b*\"]\n",
            "[producers]\np = [\"a b\"]\n",
            "[producers]\ntally-front-door = [\"*\"]\n",
            "[producers]\np = \"acme\"\n",
            "producers = 1\n",
            "[producers]\n[other]\n",
        ] {
            assert!(ProducerTenants::parse(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}

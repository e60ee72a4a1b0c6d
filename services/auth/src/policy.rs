//! An authorization policy in Rego (evaluated by `regorus`), asked once per request after the
//! role check. The policy's package is `tally`; a request is allowed only when `data.tally.allow`
//! is `true` for it. Anything else (false, undefined, an evaluation error) denies.
//!
//! The input document:
//!
//! ```json
//! {"subject": "key:ops-1", "tenant": "acme", "roles": ["read", "write"],
//!  "action": "write", "method": "POST", "path": "/v1/ledgers/main/transactions"}
//! ```

use crate::{Access, Action, Principal};
use regorus::{Engine, Value};

/// The query every request is answered by.
const RULE: &str = "data.tally.allow";

/// A compiled policy. Evaluation needs an engine of its own, so each request evaluates on a
/// clone of this one (the parsed modules are shared, not copied).
pub struct Policy {
    engine: Engine,
}

impl Policy {
    pub fn parse(bytes: &[u8]) -> Result<Policy, String> {
        let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))?;
        let mut engine = Engine::new();
        engine.add_policy("policy.rego".into(), text.into()).map_err(|e| e.to_string())?;
        let packages = engine.get_packages().map_err(|e| e.to_string())?;
        if !packages.iter().any(|p| p == "data.tally") {
            return Err(format!("the policy's package must be `tally` (found {packages:?})"));
        }
        Ok(Policy { engine })
    }

    pub fn allows(&self, who: &Principal, access: Access<'_>) -> bool {
        let input = serde_json::json!({
            "subject": who.subject.as_str(),
            "tenant": who.tenant.as_str(),
            "roles": who.roles.names().collect::<Vec<_>>(),
            "action": action_name(access.action),
            "method": access.method,
            "path": access.path,
        });
        let mut engine = self.engine.clone();
        let Ok(input) = Value::from_json_str(&input.to_string()) else { return false };
        engine.set_input(input);
        match engine.eval_rule(RULE.into()) {
            Ok(value) => value == Value::from(true),
            Err(e) => {
                tracing::warn!("the authorization policy failed, denying: {e}");
                false
            }
        }
    }
}

fn action_name(action: Action) -> &'static str {
    action.role().name()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Role, Roles};
    use tally_core::{Actor, TenantId};

    const POLICY: &str = r#"
package tally

default allow := false

# Readers everywhere; writers only to the main ledger; nobody but ops-1 administers.
allow if input.action == "read"
allow if {
    input.action == "write"
    startswith(input.path, "/v1/ledgers/main/")
}
allow if {
    input.action == "admin"
    input.subject == "key:ops-1"
}
"#;

    fn who(subject: &str) -> Principal {
        Principal {
            tenant: TenantId::parse("acme").unwrap(),
            subject: Actor::parse(subject).unwrap(),
            roles: Roles::of(&[Role::Read, Role::Write, Role::Admin]),
            limit_key: subject.into(),
        }
    }

    fn access(action: Action, path: &str) -> Access<'_> {
        Access { action, method: "POST", path }
    }

    #[test]
    fn the_policy_decides_per_request() {
        let policy = Policy::parse(POLICY.as_bytes()).unwrap();
        let alice = who("key:alice");
        assert!(policy.allows(&alice, access(Action::Read, "/v1/events")));
        assert!(policy.allows(&alice, access(Action::Write, "/v1/ledgers/main/transactions")));
        assert!(!policy.allows(&alice, access(Action::Write, "/v1/ledgers/other/transactions")));
        assert!(!policy.allows(&alice, access(Action::Admin, "/admin/projections/rebuild")));
        assert!(policy.allows(&who("key:ops-1"), access(Action::Admin, "/admin/projections/rebuild")));
    }

    #[test]
    fn a_policy_that_says_nothing_denies() {
        let silent = Policy::parse(b"package tally\n\nother := true\n").unwrap();
        assert!(!silent.allows(&who("key:alice"), access(Action::Read, "/v1/events")));
    }

    #[test]
    fn bad_policies_are_refused() {
        for bad in ["package other\nallow := true\n", "package tally\nallow if {", "\u{0}"] {
            assert!(Policy::parse(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}

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
use regorus::{CompiledPolicy, Engine, Value};

/// The rule every request is answered by.
const RULE: &str = "data.tally.allow";

/// A policy compiled for its one rule, evaluated per request without copying the engine.
pub struct Policy {
    compiled: CompiledPolicy,
}

impl Policy {
    /// Compiles a Rego module (UTF-8) for `data.tally.allow`; fails with a message when the text is
    /// not UTF-8, does not parse, its package is not `tally` or it does not define `allow`.
    pub fn parse(bytes: &[u8]) -> Result<Policy, String> {
        let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))?;
        let mut engine = Engine::new();
        engine.add_policy("policy.rego".into(), text.into()).map_err(|e| e.to_string())?;
        let packages = engine.get_packages().map_err(|e| e.to_string())?;
        if !packages.iter().any(|p| p == "data.tally") {
            return Err(format!("the policy's package must be `tally` (found {packages:?})"));
        }
        let compiled = engine
            .compile_with_entrypoint(&RULE.into())
            .map_err(|e| format!("the policy must define {RULE} ({e})"))?;
        Ok(Policy { compiled })
    }

    /// Whether `data.tally.allow` is `true` for the input document of `who` and `access`. Anything
    /// else, an evaluation error included (logged as a warning), is a denial.
    pub fn allows(&self, who: &Principal, access: Access<'_>) -> bool {
        match self.compiled.eval_with_input(input(who, access)) {
            Ok(value) => value == Value::from(true),
            Err(e) => {
                tracing::warn!("the authorization policy failed, denying: {e}");
                false
            }
        }
    }
}

/// The input document, built as a Rego value directly.
fn input(who: &Principal, access: Access<'_>) -> Value {
    let roles: Vec<Value> = who.roles.names().map(Value::from).collect();
    let fields = [
        ("subject", Value::from(who.subject.as_str())),
        ("tenant", Value::from(who.tenant.as_str())),
        ("roles", Value::from(roles)),
        ("action", Value::from(action_name(access.action))),
        ("method", Value::from(access.method)),
        ("path", Value::from(access.path)),
    ];
    let mut input = Value::new_object();
    if let Ok(object) = input.as_object_mut() {
        for (name, value) in fields {
            object.insert(Value::from(name), value);
        }
    }
    input
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
    fn what_the_policy_does_not_allow_is_denied() {
        let silent = Policy::parse(b"package tally\n\nallow if input.action == \"nothing\"\n").unwrap();
        assert!(!silent.allows(&who("key:alice"), access(Action::Read, "/v1/events")));
    }

    #[test]
    fn bad_policies_are_refused() {
        let no_allow = "package tally\n\nother := true\n";
        for bad in ["package other\nallow := true\n", "package tally\nallow if {", "\u{0}", no_allow] {
            assert!(Policy::parse(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}

//! An authorization policy in Rego (evaluated by `regorus`), asked once per request after the
//! role check. The policy's package is `tally`; a request is allowed only when `data.tally.allow`
//! is `true` for it. Anything else (false, undefined, an evaluation error) denies.
//!
//! The input document:
//!
//! ```json
//! {"subject": "key:ops-1", "tenant": "acme", "roles": ["read", "write"],
//!  "action": "write", "method": "POST", "path": "/v1/ledgers/main/transactions",
//!  "query": {"limit": ["10"]}}
//! ```
//!
//! `path` is percent-decoded (as the routes read it) and `query` holds the decoded parameters,
//! each name with its values in order.
//!
//! A policy may also judge what a read answers, with a rule `data.tally.response` asked once
//! per answer (each event of a live stream is an answer) with the same input plus `response`,
//! the answer's JSON. It is an object: `{"deny": true}` refuses the answer (403; a live stream
//! leaves the event out), `{"remove": [["metadata", "email"], ["items", "*", "metadata",
//! "email"]]}` removes those fields (a path names object members from the answer's root, and
//! `*` every member or element at its place). Undefined lets the answer through as it is;
//! anything else, an evaluation error included, refuses it.

use crate::{Access, Action, Principal};
use regorus::{CompiledPolicy, Engine, Value};

/// The rule every request is answered by.
const RULE: &str = "data.tally.allow";

/// The rule a read's answer is judged by, when the policy defines it.
const RESPONSE_RULE: &str = "data.tally.response";

/// A policy compiled for its rules, evaluated per request without copying the engine.
pub struct Policy {
    compiled: CompiledPolicy,
    /// `data.tally.response`, when the policy defines it.
    response: Option<CompiledPolicy>,
}

/// What the policy says of a read's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseVerdict {
    /// As it is.
    Pass,
    /// Refused.
    Deny,
    /// Without the fields at these paths (object member names from the root; `*`: every one).
    Remove(Vec<Vec<String>>),
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
        // A module that parsed compiles for any rule it defines: an error here means it has none.
        let response = engine.compile_with_entrypoint(&RESPONSE_RULE.into()).ok();
        if response.is_none() {
            tracing::info!("the policy defines no {RESPONSE_RULE}: answers to reads are not filtered");
        }
        Ok(Policy { compiled, response })
    }

    /// Whether the policy judges the answers to reads (defines `data.tally.response`).
    pub fn judges_responses(&self) -> bool {
        self.response.is_some()
    }

    /// What `data.tally.response` says of `answer` (JSON text) to `who`'s `access`; `Pass` when
    /// the policy does not define it. Anything but undefined or a well-formed verdict, an
    /// evaluation error included (logged as a warning), is `Deny`.
    pub fn judge_response(&self, who: &Principal, access: Access<'_>, answer: &str) -> ResponseVerdict {
        let Some(rule) = &self.response else { return ResponseVerdict::Pass };
        let judged = Value::from_json_str(answer).and_then(|response| {
            let mut input = input(who, access);
            input.as_object_mut()?.insert(Value::from("response"), response);
            rule.eval_with_input(input)
        });
        match judged.map(|verdict| response_verdict(&verdict)) {
            Ok(Some(verdict)) => verdict,
            Ok(None) => {
                tracing::warn!(
                    "{RESPONSE_RULE} is not {{deny: bool, remove: [[names]]}}: refusing the answer"
                );
                ResponseVerdict::Deny
            }
            Err(e) => {
                tracing::warn!("{RESPONSE_RULE} failed, refusing the answer: {e}");
                ResponseVerdict::Deny
            }
        }
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
        ("query", query(access.query)),
    ];
    let mut input = Value::new_object();
    if let Ok(object) = input.as_object_mut() {
        for (name, value) in fields {
            object.insert(Value::from(name), value);
        }
    }
    input
}

/// The decoded parameters of a query string: each name with its values in order.
fn query(raw: &str) -> Value {
    let mut parameters: std::collections::BTreeMap<String, Vec<Value>> = Default::default();
    for (name, value) in form_urlencoded::parse(raw.as_bytes()) {
        parameters.entry(name.into_owned()).or_default().push(Value::from(value.as_ref()));
    }
    let mut object = Value::new_object();
    if let Ok(fields) = object.as_object_mut() {
        for (name, values) in parameters {
            fields.insert(Value::from(name.as_str()), Value::from(values));
        }
    }
    object
}

fn action_name(action: Action) -> &'static str {
    action.role().name()
}

/// The verdict `data.tally.response` gave, if it is well formed.
fn response_verdict(verdict: &Value) -> Option<ResponseVerdict> {
    if *verdict == Value::Undefined {
        return Some(ResponseVerdict::Pass);
    }
    let object = verdict.as_object().ok()?;
    let known = ["deny", "remove"];
    if object.keys().any(|k| !known.iter().any(|name| *k == Value::from(*name))) {
        return None;
    }
    match object.get(&Value::from("deny")) {
        Some(Value::Bool(true)) => return Some(ResponseVerdict::Deny),
        Some(Value::Bool(false)) | None => {}
        Some(_) => return None,
    }
    let Some(remove) = object.get(&Value::from("remove")) else { return Some(ResponseVerdict::Pass) };
    let path = |path: &Value| -> Option<Vec<String>> {
        let names = path.as_array().ok()?;
        let names: Option<Vec<String>> =
            names.iter().map(|n| n.as_string().ok().map(|s| s.to_string())).collect();
        names.filter(|names| !names.is_empty())
    };
    let paths: Option<Vec<Vec<String>>> = match remove {
        Value::Array(paths) => paths.iter().map(path).collect(),
        Value::Set(paths) => paths.iter().map(path).collect(),
        _ => None,
    };
    paths.map(ResponseVerdict::Remove)
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
        Access { action, method: "POST", path, query: "" }
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
    fn the_response_rule_denies_removes_or_lets_through_and_refuses_what_it_cannot_read() {
        let read = |path| Access { action: Action::Read, method: "GET", path, query: "" };
        let answer = r#"{"metadata": {"email": "a@x", "note": "n"}}"#;
        let policy = Policy::parse(
            br#"package tally
allow := true
response := {"deny": true} if startswith(input.path, "/v1/state/payroll")
response := {"remove": [["metadata", "email"]]} if input.response.metadata.email
response := {"remove": "metadata"} if input.path == "/malformed"
response := {"other": 1} if input.path == "/unknown-member"
"#,
        )
        .unwrap();
        assert!(policy.judges_responses());
        let alice = who("key:alice");
        assert_eq!(policy.judge_response(&alice, read("/v1/state/payroll/p"), answer), ResponseVerdict::Deny);
        let remove = ResponseVerdict::Remove(vec![vec!["metadata".into(), "email".into()]]);
        assert_eq!(policy.judge_response(&alice, read("/v1/ledgers/main/accounts/a"), answer), remove);
        assert_eq!(
            policy.judge_response(&alice, read("/v1/x"), r#"{"metadata": {}}"#),
            ResponseVerdict::Pass
        );
        assert_eq!(policy.judge_response(&alice, read("/malformed"), "{}"), ResponseVerdict::Deny);
        assert_eq!(policy.judge_response(&alice, read("/unknown-member"), "{}"), ResponseVerdict::Deny);
        assert_eq!(policy.judge_response(&alice, read("/v1/x"), "not json"), ResponseVerdict::Deny);
        let without = Policy::parse(POLICY.as_bytes()).unwrap();
        assert!(!without.judges_responses());
        assert_eq!(without.judge_response(&alice, read("/v1/x"), answer), ResponseVerdict::Pass);
    }

    #[test]
    fn the_query_is_in_the_input_decoded() {
        let policy = Policy::parse(b"package tally\nallow if not input.query[\"field.email\"]\n").unwrap();
        let with = |query| Access { action: Action::Read, method: "GET", path: "/v1/state/docs", query };
        let alice = who("key:alice");
        assert!(policy.allows(&alice, with("limit=5")));
        assert!(!policy.allows(&alice, with("field.email=a%40x")));
        assert!(!policy.allows(&alice, with("limit=5&field.%65mail=a")));
    }

    #[test]
    fn bad_policies_are_refused() {
        let no_allow = "package tally\n\nother := true\n";
        for bad in ["package other\nallow := true\n", "package tally\nallow if {", "\u{0}", no_allow] {
            assert!(Policy::parse(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}

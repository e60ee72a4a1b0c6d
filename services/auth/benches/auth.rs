//! What authenticating and authorizing one request costs, per step. Prints figures; asserts
//! nothing.
//!
//! `cargo bench -p tally-auth --bench auth` (`TALLY_BENCH_ITERATIONS`, default 200,000)
//!
//! Baseline in the same run: the role check alone (what every request pays). Then an API key
//! (SHA-256 and a lookup among 10,000 keys); a JWT the first time (Ed25519 signature and
//! claims) and again (found among the tokens verified recently); and the role check followed by
//! a small Rego policy (what `--policy` adds to every request).

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use std::hint::black_box;
use std::time::Instant;
use tally_auth::jwt::{JwtConfig, JwtVerifier, Keys};
use tally_auth::keys::{KeyRing, ring_for};
use tally_auth::policy::Policy;
use tally_auth::reload::Reloading;
use tally_auth::{Access, Action, Authenticator, Role, Roles};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures");

const POLICY: &str = r#"
package tally

default allow := false

allow if input.action == "read"
allow if {
    input.action == "write"
    not startswith(input.path, "/v1/ledgers/locked/")
}
"#;

fn main() {
    let iterations: u32 =
        std::env::var("TALLY_BENCH_ITERATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000);
    let (ring, key) = ten_thousand_keys();
    let jwks = std::fs::read(format!("{FIXTURES}/jwks.json")).unwrap();
    let config = JwtConfig {
        issuer: "https://id.example".into(),
        audience: "tally".into(),
        leeway: std::time::Duration::from_secs(60),
        tenant_claim: "tenant".into(),
        roles_claim: "roles".into(),
    };
    let jwt = JwtVerifier::new(config, Reloading::fixed("JWKS", Keys::parse(&jwks).unwrap()));
    // Distinct tokens (by `jti`), so the first pass checks every signature; the second pass
    // finds them verified already. Fewer than the verifier keeps (10,000).
    let tokens: Vec<String> = (0..(iterations / 40).min(9_000)).map(signed_jwt).collect();
    let keys = Reloading::fixed("API keys", ring);
    let roles_only = Authenticator::new().with_keys(keys.clone());
    let policy = Reloading::fixed("policy", Policy::parse(POLICY.as_bytes()).unwrap());
    let with_policy = Authenticator::new().with_keys(keys).with_policy(policy);
    let who = roles_only.authenticate(Some(&key)).unwrap();
    let access =
        Access { action: Action::Write, method: "POST", path: "/v1/ledgers/main/transactions", query: "" };

    println!("auth benchmark: {iterations} iterations per step, one thread");
    let roles = time(iterations, || roles_only.authorize(&who, access).is_ok());
    let api_key = time(iterations, || roles_only.authenticate(Some(&key)).is_ok());
    let mut next = tokens.iter().cycle();
    let jwt_check = time(tokens.len() as u32, || jwt.verify(next.next().unwrap()).is_ok());
    let jwt_cached = time(iterations, || jwt.verify(next.next().unwrap()).is_ok());
    let rego = time(iterations / 10, || with_policy.authorize(&who, access).is_ok());
    println!("role check (baseline):       {roles:>10.0} ns");
    println!("API key (10,000 keys):       {api_key:>10.0} ns  ({:.0}x the role check)", api_key / roles);
    println!("JWT (Ed25519), first time:   {jwt_check:>10.0} ns  ({:.0}x)", jwt_check / roles);
    println!("JWT, the same token again:   {jwt_cached:>10.0} ns  ({:.0}x)", jwt_cached / roles);
    println!("role check + Rego policy:    {rego:>10.0} ns  ({:.0}x)", rego / roles);
}

/// A ring of 10,000 keys, and the secret of one of them.
fn ten_thousand_keys() -> (KeyRing, String) {
    let tenants: Vec<String> = (0..10_000).map(|i| format!("tenant{i}")).collect();
    let names: Vec<&str> = tenants.iter().map(String::as_str).collect();
    let (ring, bearers) = ring_for(&names, Roles::of(&[Role::Read, Role::Write]));
    (ring, bearers["tenant4242"].trim_start_matches("Bearer ").to_owned())
}

/// Mean nanoseconds per call of `step`, which must answer true.
fn time(iterations: u32, mut step: impl FnMut() -> bool) -> f64 {
    let started = Instant::now();
    for _ in 0..iterations {
        assert!(black_box(step()));
    }
    started.elapsed().as_nanos() as f64 / f64::from(iterations)
}

fn signed_jwt(jti: u32) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let claims = serde_json::json!({"sub": "alice", "iss": "https://id.example", "aud": "tally",
        "exp": now + 3600, "tenant": "acme", "roles": ["read", "write"], "jti": jti});
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some("test-1".into());
    let pem = std::fs::read(format!("{FIXTURES}/jwt-signing-key.pem")).unwrap();
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ed_pem(&pem).unwrap()).unwrap()
}

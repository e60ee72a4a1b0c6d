//! JWT bearer tokens, checked against the identity provider's public keys (a JWKS, from a file
//! or a URL, kept fresh by [`crate::reload`]).
//!
//! A token passes when its header names a key (`kid`) of the set, its signature verifies with
//! that key under an algorithm of the key's own family (so a token cannot pick HMAC against a
//! public key), it is inside its `exp`/`nbf` window give or take the configured clock skew, its
//! `iss` and `aud` are the configured ones, and it has a `sub` and a tenant claim. Roles come
//! from the roles claim (a list, or a space-separated string as in `scope`); names Tally does
//! not know are ignored, since identity providers put many roles in one token.

use crate::reload::Reloading;
use crate::{AuthError, Principal, Role, Roles};
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tally_core::{Actor, TenantId};

/// What a token must say, and where Tally reads the tenant and roles.
#[derive(Debug, Clone)]
pub struct JwtConfig {
    /// The `iss` every token must carry, exactly (RFC 7519 section 4.1.1).
    pub issuer: String,
    /// The `aud` every token must name (a string or one of a list; RFC 7519 section 4.1.3).
    pub audience: String,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway: Duration,
    /// The claim whose string value is the caller's tenant; a token without it is refused.
    pub tenant_claim: String,
    /// The claim holding the roles: a list of names or a space-separated string (as `scope`).
    pub roles_claim: String,
}

/// The public keys of a JWKS, each with the checks a token signed by it gets.
pub struct Keys {
    by_kid: HashMap<String, (DecodingKey, Vec<Algorithm>)>,
}

impl Keys {
    /// Parses a JWKS document. Keys without a `kid` and symmetric keys are refused: tokens
    /// must say which key signed them, and a shared secret has no place in a public set.
    pub fn parse(bytes: &[u8]) -> Result<Keys, String> {
        let set: JwkSet = serde_json::from_slice(bytes).map_err(|e| format!("not a JWKS: {e}"))?;
        let mut by_kid = HashMap::new();
        for jwk in &set.keys {
            let kid = jwk.common.key_id.clone().ok_or("a key has no \"kid\"")?;
            let family =
                family(&jwk.algorithm).ok_or_else(|| format!("key {kid:?}: symmetric keys are refused"))?;
            let algorithms = match jwk.common.key_algorithm {
                Some(alg) => {
                    let alg: Algorithm =
                        format!("{alg:?}").parse().map_err(|_| format!("key {kid:?}: alg {alg:?}"))?;
                    if !family.contains(&alg) {
                        return Err(format!("key {kid:?}: alg {alg:?} does not fit the key type"));
                    }
                    vec![alg]
                }
                None => family.to_vec(),
            };
            let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("key {kid:?}: {e}"))?;
            by_kid.insert(kid, (key, algorithms));
        }
        Ok(Keys { by_kid })
    }
}

fn family(parameters: &AlgorithmParameters) -> Option<&'static [Algorithm]> {
    use Algorithm::*;
    match parameters {
        AlgorithmParameters::RSA(_) => Some(&[RS256, RS384, RS512, PS256, PS384, PS512]),
        AlgorithmParameters::EllipticCurve(_) => Some(&[ES256, ES384]),
        AlgorithmParameters::OctetKeyPair(_) => Some(&[EdDSA]),
        AlgorithmParameters::OctetKey(_) => None,
    }
}

/// Checks JWTs (RFC 7519) against the current JWKS and [`JwtConfig`], remembering tokens that
/// passed until they expire or the key set changes.
pub struct JwtVerifier {
    config: JwtConfig,
    keys: Arc<Reloading<Keys>>,
    verified: Verified,
}

impl JwtVerifier {
    /// A verifier of tokens signed by a key of `keys` that meet `config`.
    pub fn new(config: JwtConfig, keys: Arc<Reloading<Keys>>) -> JwtVerifier {
        JwtVerifier { config, keys, verified: Verified::default() }
    }

    /// The caller a JWT (compact serialisation) names, or [`AuthError::Invalid`] with why it was
    /// refused. A token signed by a key not in the set also has the JWKS read again soon.
    pub fn verify(&self, token: &str) -> Result<Arc<Principal>, AuthError> {
        let keys = self.keys.current_arc();
        let now = jsonwebtoken::get_current_timestamp();
        if let Some(who) = self.verified.get(token, &keys, now) {
            return Ok(who);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::invalid("not a JWT"))?;
        let kid = header.kid.ok_or_else(|| AuthError::invalid("the JWT names no key (kid)"))?;
        let Some((key, algorithms)) = keys.by_kid.get(&kid) else {
            // Perhaps the provider rotated its keys: look again soon.
            self.keys.wake();
            return Err(AuthError::invalid("the JWT is signed by an unknown key"));
        };
        let claims = jsonwebtoken::decode::<serde_json::Value>(token, key, &self.validation(algorithms))
            .map_err(|e| AuthError::Invalid(why(e.kind())))?
            .claims;
        let who = Arc::new(self.principal(&claims)?);
        if let Some(exp) = claims.get("exp").and_then(serde_json::Value::as_u64) {
            let valid_until = exp.saturating_add(self.config.leeway.as_secs());
            self.verified.put(token, Cached { who: who.clone(), valid_until, keys });
        }
        Ok(who)
    }

    fn validation(&self, algorithms: &[Algorithm]) -> Validation {
        let mut validation = Validation::new(algorithms[0]);
        validation.algorithms = algorithms.to_vec();
        validation.leeway = self.config.leeway.as_secs();
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.audience]);
        validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        validation
    }

    fn principal(&self, claims: &serde_json::Value) -> Result<Principal, AuthError> {
        let text = |name: &str| claims.get(name).and_then(|v| v.as_str());
        let subject = text("sub").ok_or_else(|| AuthError::invalid("the JWT has no subject"))?;
        let subject = Actor::parse(subject).map_err(|e| AuthError::Invalid(format!("sub: {e}")))?;
        let tenant_claim = &self.config.tenant_claim;
        let tenant = text(tenant_claim)
            .ok_or_else(|| AuthError::Invalid(format!("the JWT has no {tenant_claim:?} claim")))?;
        let tenant =
            TenantId::parse(tenant).map_err(|e| AuthError::Invalid(format!("{tenant_claim}: {e}")))?;
        let roles = roles(claims.get(&self.config.roles_claim));
        let limit_key = format!("jwt:{}/{}", tenant.as_str(), subject.as_str());
        Ok(Principal { tenant, subject, roles, limit_key })
    }
}

/// Tokens verified recently, so that a client sending the same token again does not pay for
/// the signature check on every request (an Ed25519 check costs ~36 µs, `benches/auth.rs`).
/// An entry is used only while its token would still pass (`exp` plus the clock skew) and
/// while the key set it was checked against is still the current one: a JWKS change drops the
/// trust in every cached token.
#[derive(Default)]
struct Verified {
    by_token: Mutex<HashMap<String, Cached>>,
}

struct Cached {
    who: Arc<Principal>,
    /// Unix seconds after which the token no longer passes.
    valid_until: u64,
    keys: Arc<Keys>,
}

/// Cached tokens kept at most; when full the cache starts again empty (only tokens with a valid
/// signature get in, so filling it takes that many genuine tokens).
const VERIFIED_MAX: usize = 10_000;

impl Verified {
    fn get(&self, token: &str, keys: &Arc<Keys>, now: u64) -> Option<Arc<Principal>> {
        let cache = self.by_token.lock().expect("not poisoned");
        let cached = cache.get(token)?;
        (now <= cached.valid_until && Arc::ptr_eq(&cached.keys, keys)).then(|| cached.who.clone())
    }

    fn put(&self, token: &str, cached: Cached) {
        let mut cache = self.by_token.lock().expect("not poisoned");
        if cache.len() >= VERIFIED_MAX {
            cache.clear();
        }
        cache.insert(token.to_owned(), cached);
    }
}

fn roles(claim: Option<&serde_json::Value>) -> Roles {
    let names: Vec<&str> = match claim {
        Some(serde_json::Value::Array(items)) => items.iter().filter_map(|v| v.as_str()).collect(),
        Some(serde_json::Value::String(text)) => text.split_whitespace().collect(),
        _ => Vec::new(),
    };
    let known: Vec<Role> = names.into_iter().filter_map(|n| Role::parse(n).ok()).collect();
    Roles::of(&known)
}

/// What the caller is told about a refused token: enough to fix their side, nothing more.
fn why(kind: &jsonwebtoken::errors::ErrorKind) -> String {
    use jsonwebtoken::errors::ErrorKind::*;
    match kind {
        ExpiredSignature => "the JWT has expired",
        ImmatureSignature => "the JWT is not valid yet",
        InvalidAudience => "the JWT is for another audience",
        InvalidIssuer => "the JWT is from another issuer",
        InvalidSignature => "the JWT's signature does not verify",
        InvalidAlgorithm => "the JWT's algorithm does not fit its key",
        MissingRequiredClaim(_) => "the JWT lacks a required claim (exp, sub, iss, aud)",
        _ => "the JWT could not be read",
    }
    .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reload::Source;
    use jsonwebtoken::{EncodingKey, Header};

    const JWKS: &str = include_str!("../../../tests/fixtures/jwks.json");
    const SIGNING_KEY: &str = include_str!("../../../tests/fixtures/jwt-signing-key.pem");

    fn verifier() -> JwtVerifier {
        let config = JwtConfig {
            issuer: "https://id.example".into(),
            audience: "tally".into(),
            leeway: Duration::from_secs(30),
            tenant_claim: "tenant".into(),
            roles_claim: "roles".into(),
        };
        let keys = Reloading::fixed("JWKS", Keys::parse(JWKS.as_bytes()).unwrap());
        JwtVerifier::new(config, keys)
    }

    fn now() -> i64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
    }

    fn claims() -> serde_json::Value {
        serde_json::json!({"sub": "alice", "iss": "https://id.example", "aud": "tally",
            "exp": now() + 300, "tenant": "acme", "roles": ["read", "unknown-role"]})
    }

    fn sign(claims: &serde_json::Value, kid: &str) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid.into());
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_ed_pem(SIGNING_KEY.as_bytes()).unwrap())
            .unwrap()
    }

    fn with(change: impl FnOnce(&mut serde_json::Value)) -> String {
        let mut claims = claims();
        change(&mut claims);
        sign(&claims, "test-1")
    }

    #[test]
    fn a_good_token_names_its_tenant_subject_and_known_roles() {
        let who = verifier().verify(&sign(&claims(), "test-1")).unwrap();
        assert_eq!((who.tenant.as_str(), who.subject.as_str()), ("acme", "alice"));
        assert_eq!(who.roles, Roles::of(&[Role::Read]));
        let scoped = with(|c| c["roles"] = "write read".into());
        assert_eq!(verifier().verify(&scoped).unwrap().roles, Roles::of(&[Role::Read, Role::Write]));
    }

    #[test]
    fn each_bad_token_is_refused_with_its_reason() {
        let good = sign(&claims(), "test-1");
        let (head, rest) = good.split_once('.').unwrap();
        let (payload, signature) = rest.split_once('.').unwrap();
        let other_payload = with(|c| c["tenant"] = "globex".into());
        let forged = format!("{head}.{}.{signature}", other_payload.split('.').nth(1).unwrap());
        let mut flipped = signature.as_bytes().to_vec();
        flipped[3] = if flipped[3] == b'A' { b'B' } else { b'A' };
        let tampered = format!("{head}.{payload}.{}", String::from_utf8(flipped).unwrap());
        let hmac = {
            let mut header = Header::new(Algorithm::HS256);
            header.kid = Some("test-1".into());
            jsonwebtoken::encode(&header, &claims(), &EncodingKey::from_secret(b"kxSDHfaddTFe")).unwrap()
        };
        let cases = [
            (with(|c| c["exp"] = (now() - 120).into()), "expired"),
            (with(|c| c["exp"] = (now() - 10).into()), "ACCEPTED"), // inside the 30 s skew
            (with(|c| c["nbf"] = (now() + 120).into()), "not valid yet"),
            (with(|c| c["aud"] = "other".into()), "another audience"),
            (with(|c| c["iss"] = "https://evil.example".into()), "another issuer"),
            (with(|c| c.as_object_mut().unwrap().remove("tenant").map(drop).unwrap()), "no \"tenant\""),
            (with(|c| c.as_object_mut().unwrap().remove("exp").map(drop).unwrap()), "required claim"),
            (with(|c| c["tenant"] = "a/b".into()), "tenant"),
            (forged, "does not verify"),
            (tampered, "does not verify"),
            (hmac, "algorithm"),
            (sign(&claims(), "test-2"), "unknown key"),
            ("a.b.c".to_owned(), "not a JWT"),
        ];
        for (token, expected) in cases {
            match verifier().verify(&token) {
                Ok(_) => assert_eq!(expected, "ACCEPTED"),
                Err(AuthError::Invalid(why)) => {
                    assert!(why.contains(expected), "{why:?}, expected {expected:?}")
                }
                Err(e) => panic!("{e:?}"),
            }
        }
    }

    #[test]
    fn a_cached_token_passes_only_while_it_would_and_only_under_the_same_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        std::fs::write(&path, JWKS).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let keys =
            runtime.block_on(Reloading::open("JWKS", Source::File(path.clone()), Keys::parse)).unwrap();
        let mut config = verifier().config;
        config.leeway = Duration::ZERO;
        let verifier = JwtVerifier::new(config, keys.clone());
        let token = sign(&claims(), "test-1");
        assert!(verifier.verify(&token).is_ok());
        assert!(verifier.verify(&token).is_ok(), "again, from the cache");
        // The provider drops the key: the cached token is checked again, and refused.
        std::fs::write(&path, r#"{"keys": []}"#).unwrap();
        assert!(runtime.block_on(keys.refresh()).unwrap());
        assert!(verifier.verify(&token).is_err());
        // A token cached a second before it expires is refused once it has.
        std::fs::write(&path, JWKS).unwrap();
        assert!(runtime.block_on(keys.refresh()).unwrap());
        let short = with(|c| c["exp"] = (now() + 1).into());
        assert!(verifier.verify(&short).is_ok());
        std::thread::sleep(Duration::from_millis(2100));
        assert!(verifier.verify(&short).is_err(), "expired while cached");
    }

    #[test]
    fn symmetric_or_unnamed_keys_are_refused_in_a_jwks() {
        let oct = r#"{"keys":[{"kty":"oct","kid":"s","k":"c2VjcmV0"}]}"#;
        let unnamed = JWKS.replace(r#""kid": "test-1", "#, "");
        for bad in [oct, unnamed.as_str(), "{}", "[]"] {
            assert!(Keys::parse(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}

//! API keys. The configuration holds, per key, its tenant, id, roles and the SHA-256 digest of
//! its secret, never the secret. A secret reads `tly_<id>_<random>`: the id finds the entry in
//! one lookup, then the digests are compared in constant time, so a caller learns nothing from
//! how long a wrong secret took to refuse.

use crate::{AuthError, Principal, Roles};
use base64::Engine as _;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use subtle::ConstantTimeEq;
use tally_core::{Actor, TenantId};

/// The start of every API key secret (and how a bearer token is told from a JWT).
pub const SECRET_PREFIX: &str = "tly_";
/// Most keys one file may hold: a file far larger is a mistake, not a configuration.
const KEYS_MAX: usize = 100_000;

/// One configured key, as written in the keys file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    id: String,
    tenant: String,
    /// Lowercase hex SHA-256 of the whole secret.
    sha256: String,
    roles: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    #[serde(default)]
    key: Vec<KeyEntry>,
}

/// A checked key: its digest, and who it makes the caller (built once, shared by every
/// request that presents the key).
#[derive(Debug, Clone)]
struct Key {
    digest: [u8; 32],
    who: Arc<Principal>,
}

/// Every configured key, by id.
#[derive(Debug, Clone, Default)]
pub struct KeyRing {
    keys: HashMap<String, Key>,
}

impl KeyRing {
    /// Parses a keys file (TOML, `[[key]]` tables); any bad entry refuses the whole file, so a
    /// typo never silently drops a key.
    pub fn parse(bytes: &[u8]) -> Result<KeyRing, String> {
        let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))?;
        let file: KeysFile = toml::from_str(text).map_err(|e| e.to_string())?;
        if file.key.len() > KEYS_MAX {
            return Err(format!("{} keys; at most {KEYS_MAX}", file.key.len()));
        }
        let mut keys = HashMap::with_capacity(file.key.len());
        for entry in file.key {
            let id = entry.id.clone();
            let key = Key::check(entry).map_err(|e| format!("key {id:?}: {e}"))?;
            if keys.insert(id.clone(), key).is_some() {
                return Err(format!("key {id:?} is configured twice"));
            }
        }
        Ok(KeyRing { keys })
    }

    /// The caller a secret names, or why not.
    pub fn verify(&self, secret: &str) -> Result<Arc<Principal>, AuthError> {
        let id = key_id(secret).ok_or(AuthError::invalid("not an API key"))?;
        let key = self.keys.get(id).ok_or(AuthError::invalid("unknown or revoked API key"))?;
        let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        if !bool::from(digest.ct_eq(&key.digest)) {
            return Err(AuthError::invalid("unknown or revoked API key"));
        }
        Ok(key.who.clone())
    }
}

impl Key {
    fn check(entry: KeyEntry) -> Result<Key, String> {
        valid_key_id(&entry.id)?;
        let tenant = TenantId::parse(entry.tenant).map_err(|e| e.to_string())?;
        let digest = hex_digest(&entry.sha256)?;
        let roles = Roles::parse(&entry.roles)?;
        let subject = format!("key:{}", entry.id);
        let who = Principal {
            tenant,
            subject: Actor::parse(subject.clone()).map_err(|e| e.to_string())?,
            roles,
            limit_key: subject,
        };
        Ok(Key { digest, who: Arc::new(who) })
    }
}

/// Key ids are short and plain, because they sit inside the secret and in every event's actor.
fn valid_key_id(id: &str) -> Result<(), String> {
    let plain = |c: char| c.is_ascii_alphanumeric() || c == '-';
    match !id.is_empty() && id.len() <= 64 && id.chars().all(plain) {
        true => Ok(()),
        false => Err(format!("id {id:?}: use 1 to 64 letters, digits or '-'")),
    }
}

fn hex_digest(text: &str) -> Result<[u8; 32], String> {
    let bad = || format!("sha256 {text:?} is not 64 lowercase hex digits");
    if text.len() != 64 {
        return Err(bad());
    }
    let mut digest = [0u8; 32];
    for (i, byte) in digest.iter_mut().enumerate() {
        let pair = &text[2 * i..2 * i + 2];
        if pair.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(bad());
        }
        *byte = u8::from_str_radix(pair, 16).map_err(|_| bad())?;
    }
    Ok(digest)
}

/// The id inside a secret `tly_<id>_<random>` (ids have no `_`; the random part may).
fn key_id(secret: &str) -> Option<&str> {
    let rest = secret.strip_prefix(SECRET_PREFIX)?;
    let (id, random) = rest.split_once('_')?;
    (!id.is_empty() && !random.is_empty()).then_some(id)
}

/// A new key: the secret to hand to the client (shown once), and the entry to paste into the
/// keys file.
pub struct NewKey {
    /// The bearer token itself, `tly_<id>_<random>` (43 base64url characters of randomness).
    pub secret: String,
    /// A `[[key]]` TOML table with the id, tenant, SHA-256 of the secret and roles.
    pub entry: String,
}

/// Generates a key with 256 random bits for `tenant` with `roles`.
pub fn generate(id: &str, tenant: &TenantId, roles: &Roles) -> Result<NewKey, String> {
    valid_key_id(id)?;
    let random: [u8; 32] = rand::random();
    let secret =
        format!("{SECRET_PREFIX}{id}_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random));
    let digest: String = Sha256::digest(secret.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    let roles: Vec<String> = roles.names().map(|r| format!("{r:?}")).collect();
    let entry = format!(
        "[[key]]\nid = {id:?}\ntenant = {:?}\nsha256 = \"{digest}\"\nroles = [{}]\n",
        tenant.as_str(),
        roles.join(", ")
    );
    Ok(NewKey { secret, entry })
}

/// A key ring with one fresh key per tenant (id = tenant), and each key's `Authorization`
/// header value, for tests and benchmarks.
pub fn ring_for(tenants: &[&str], roles: Roles) -> (KeyRing, HashMap<String, String>) {
    let (mut entries, mut bearers) = (String::new(), HashMap::new());
    for tenant in tenants {
        let key =
            generate(tenant, &TenantId::parse(*tenant).expect("a valid tenant"), &roles).expect("a valid id");
        entries.push_str(&key.entry);
        bearers.insert((*tenant).to_owned(), format!("Bearer {}", key.secret));
    }
    (KeyRing::parse(entries.as_bytes()).expect("generated entries parse"), bearers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Role;

    fn ring_with(tenant: &str, roles: &[Role]) -> (KeyRing, String) {
        let roles = Roles::of(roles);
        let key = generate("k1", &TenantId::parse(tenant).unwrap(), &roles).unwrap();
        (KeyRing::parse(key.entry.as_bytes()).unwrap(), key.secret)
    }

    #[test]
    fn a_generated_key_verifies_as_its_tenant_and_roles() {
        let (ring, secret) = ring_with("acme", &[Role::Read]);
        let who = ring.verify(&secret).unwrap();
        assert_eq!(who.tenant.as_str(), "acme");
        assert_eq!(who.subject.as_str(), "key:k1");
        assert!(who.roles.has(Role::Read) && !who.roles.has(Role::Write));
    }

    #[test]
    fn a_changed_secret_or_id_is_refused() {
        let (ring, secret) = ring_with("acme", &[Role::Write]);
        let mut tampered = secret.clone().into_bytes();
        let last = tampered.len() - 1;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        for bad in [tampered.as_str(), "tly_k2_abc", "tly_k1_", "k1", "", "tly__x"] {
            assert!(ring.verify(bad).is_err(), "{bad}");
        }
        let other_id = secret.replacen("tly_k1_", "tly_k2_", 1);
        assert!(ring.verify(&other_id).is_err());
    }

    #[test]
    fn bad_files_are_refused_whole() {
        let good = "[[key]]\nid = \"a\"\ntenant = \"t\"\nsha256 = \"".to_owned() + &"0".repeat(64) + "\"\n";
        assert!(KeyRing::parse((good.clone() + "roles = [\"read\"]\n").as_bytes()).is_ok());
        for bad in [
            good.clone() + "roles = [\"root\"]\n",
            good.clone() + "roles = [\"read\"]\nextra = 1\n",
            good.replace(&"0".repeat(64), &"0".repeat(63)) + "roles = []\n",
            good.replace(&"0".repeat(64), &"A".repeat(64)) + "roles = []\n",
            good.replace("id = \"a\"", "id = \"a_b\"") + "roles = []\n",
            good.replace("tenant = \"t\"", "tenant = \"\"") + "roles = []\n",
            format!("{good}roles = []\n{good}roles = []\n"),
            "key = 3".into(),
        ] {
            assert!(KeyRing::parse(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}

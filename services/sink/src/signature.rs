//! Webhook signatures as the Standard Webhooks specification says
//! (<https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md>):
//!
//! - headers `webhook-id` (the message id, the same on every attempt: here the event id),
//!   `webhook-timestamp` (seconds since the Unix epoch, of the attempt) and `webhook-signature`;
//! - the signature is `v1,` + base64 of HMAC-SHA256 over `{id}.{timestamp}.{body}`, keyed with
//!   the secret's bytes: a secret is written `whsec_` + base64 of 32 random bytes;
//! - while a rotated secret overlaps the new one, the header carries one signature per secret,
//!   separated by spaces, and a receiver accepts the message if any one verifies.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The prefix of a written secret.
pub const SECRET_PREFIX: &str = "whsec_";
/// Random bytes in a new secret (the specification asks for 24 to 64).
pub const SECRET_BYTES: usize = 32;

/// Why a text is not a signing secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("a signing secret starts with {SECRET_PREFIX}")]
    Prefix,
    #[error("a signing secret is {SECRET_PREFIX} and base64 of 24 to 64 bytes")]
    Key,
}

/// A new random secret, written `whsec_<base64>`.
pub fn new_secret() -> String {
    let mut key = [0u8; SECRET_BYTES];
    getrandom::fill(&mut key).expect("the operating system's random source");
    format!("{SECRET_PREFIX}{}", STANDARD.encode(key))
}

/// The key bytes of a written secret.
pub fn secret_key(secret: &str) -> Result<Vec<u8>, SecretError> {
    let encoded = secret.strip_prefix(SECRET_PREFIX).ok_or(SecretError::Prefix)?;
    let key = STANDARD.decode(encoded).map_err(|_| SecretError::Key)?;
    if (24..=64).contains(&key.len()) { Ok(key) } else { Err(SecretError::Key) }
}

/// `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`.
pub fn sign(key: &[u8], id: &str, timestamp_s: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp_s.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// The `webhook-signature` header: one signature per key, space-separated.
pub fn signature_header<'k>(
    keys: impl IntoIterator<Item = &'k [u8]>,
    id: &str,
    timestamp_s: i64,
    body: &[u8],
) -> String {
    keys.into_iter().map(|key| sign(key, id, timestamp_s, body)).collect::<Vec<_>>().join(" ")
}

/// Whether any `v1` signature of `header` is the one `key` gives (in constant time per
/// signature). What a receiver does; here for the tests and for `tally` tools.
pub fn verifies(key: &[u8], id: &str, timestamp_s: i64, body: &[u8], header: &str) -> bool {
    let expected = sign(key, id, timestamp_s, body);
    header.split(' ').any(|candidate| {
        candidate.len() == expected.len()
            && candidate.bytes().zip(expected.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks reference libraries' tests.
    #[test]
    fn signs_as_the_reference_example() {
        let key = secret_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        let signature = sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn secrets_are_random_and_read_back() {
        let (a, b) = (new_secret(), new_secret());
        assert_ne!(a, b);
        assert_eq!(secret_key(&a).unwrap().len(), SECRET_BYTES);
        assert_eq!(secret_key("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), Err(SecretError::Prefix));
        assert_eq!(secret_key("whsec_!!"), Err(SecretError::Key));
        assert_eq!(secret_key("whsec_AAAA"), Err(SecretError::Key), "3 bytes is too short");
    }

    #[test]
    fn every_key_of_a_rotation_verifies_and_nothing_else_does() {
        let (old, new) = (secret_key(&new_secret()).unwrap(), secret_key(&new_secret()).unwrap());
        let header = signature_header([new.as_slice(), old.as_slice()], "acme/main@1", 7, b"{}");
        assert!(verifies(&old, "acme/main@1", 7, b"{}", &header));
        assert!(verifies(&new, "acme/main@1", 7, b"{}", &header));
        let other = secret_key(&new_secret()).unwrap();
        assert!(!verifies(&other, "acme/main@1", 7, b"{}", &header));
        assert!(!verifies(&new, "acme/main@1", 8, b"{}", &header), "another timestamp");
        assert!(!verifies(&new, "acme/main@2", 7, b"{}", &header), "another id");
        assert!(!verifies(&new, "acme/main@1", 7, b"{ }", &header), "another body");
    }
}

//! Standard Webhooks signatures: the endpoint's secret (`whsec_` + base64 of
//! random bytes; the HMAC key is the decoded bytes) and
//! `webhook-signature: v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`,
//! one entry per valid secret, separated by spaces.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

/// What every secret starts with.
pub const SECRET_PREFIX: &str = "whsec_";
/// Random bytes in a new secret (the specification asks for 24 to 64).
pub const SECRET_BYTES: usize = 32;

/// An endpoint's signing secret. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningSecret {
    /// `whsec_…`, as shown once to the operator and stored.
    text: String,
    /// The HMAC key: the base64-decoded part after the prefix.
    key: Vec<u8>,
}

/// A stored secret that is not `whsec_` + base64 (edited by hand).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a signing secret is `whsec_` followed by base64 of 24 to 64 bytes")]
pub struct BadSecret;

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret(REDACTED)")
    }
}

impl SigningSecret {
    /// A fresh secret of [`SECRET_BYTES`] random bytes from the thread's
    /// cryptographically secure generator.
    pub fn generate() -> Self {
        let mut key = vec![0u8; SECRET_BYTES];
        rand::rng().fill_bytes(&mut key);
        let text = format!("{SECRET_PREFIX}{}", STANDARD.encode(&key));
        Self { text, key }
    }

    /// A secret as stored or given (`whsec_` + base64 of 24 to 64 bytes).
    pub fn parse(text: &str) -> Result<Self, BadSecret> {
        let b64 = text.strip_prefix(SECRET_PREFIX).ok_or(BadSecret)?;
        let key = STANDARD.decode(b64).map_err(|_| BadSecret)?;
        if !(24..=64).contains(&key.len()) {
            return Err(BadSecret);
        }
        Ok(Self {
            text: text.to_owned(),
            key,
        })
    }

    /// The secret's text, to store or to show once.
    pub fn expose(&self) -> &str {
        &self.text
    }

    /// `v1,<base64 signature>` of one message.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        // `new_from_slice` accepts any key length for HMAC; the error arm
        // cannot happen, and an empty signature would only fail verification.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.key) else {
            return String::from("v1,");
        };
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

/// The `webhook-signature` value: one signature per secret, newest first,
/// separated by spaces (receivers accept a message if any one verifies).
pub fn signature_header(
    secrets: &[SigningSecret],
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    secrets
        .iter()
        .map(|s| s.sign(id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification (and of the
    /// reference libraries' tests).
    #[test]
    fn the_specifications_example_signs_as_published() -> Result<(), BadSecret> {
        let secret = SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?;
        assert_eq!(
            secret.sign(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        Ok(())
    }

    #[test]
    fn generated_secrets_parse_back_and_two_secrets_sign_twice() -> Result<(), BadSecret> {
        let a = SigningSecret::generate();
        let b = SigningSecret::generate();
        assert!(a.expose().starts_with(SECRET_PREFIX));
        assert_ne!(a, b);
        assert_eq!(SigningSecret::parse(a.expose())?, a);
        assert_eq!(format!("{a:?}"), "SigningSecret(REDACTED)");
        let header = signature_header(&[a.clone(), b.clone()], "id", 1, b"{}");
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts, vec![a.sign("id", 1, b"{}"), b.sign("id", 1, b"{}")]);
        for bad in [
            "",
            "whsec_",
            "whsec_!!!",
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "whsec_AAAA",
        ] {
            assert_eq!(SigningSecret::parse(bad), Err(BadSecret), "{bad}");
        }
        Ok(())
    }
}

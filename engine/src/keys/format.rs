//! The key format: minting, the offline well-formedness check (prefix,
//! length, alphabet, checksum) and the stored hash.

use rand::distr::Alphanumeric;
use rand::Rng;
use sha2::{Digest, Sha256};

/// Prefix of every key.
pub const KEY_PREFIX: &str = "lstr_";
/// Characters after the prefix.
pub const KEY_BODY_LEN: usize = 44;
/// Random characters at the start of the body.
const RANDOM_LEN: usize = 38;
/// Checksum characters at the end of the body.
const CHECKSUM_LEN: usize = KEY_BODY_LEN - RANDOM_LEN;
/// Base62 digits, in value order.
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Why a presented string is not a well-formed key (decided without a lookup).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// It does not start with `lstr_`.
    #[error("an API key starts with `lstr_`")]
    Prefix,
    /// Wrong number of characters after the prefix.
    #[error("an API key is `lstr_` followed by 44 characters")]
    Length,
    /// A character outside `[0-9A-Za-z]` after the prefix.
    #[error("an API key has only letters and digits after `lstr_`")]
    Alphabet,
    /// The checksum tail does not match: most likely a typo.
    #[error("the key's checksum does not match (is it mistyped or truncated?)")]
    Checksum,
}

/// Mints a fresh random key (plaintext).
pub fn generate() -> String {
    let random: String = rand::rng()
        .sample_iter(&Alphanumeric)
        .take(RANDOM_LEN)
        .map(char::from)
        .collect();
    let mut key = String::with_capacity(KEY_PREFIX.len() + KEY_BODY_LEN);
    key.push_str(KEY_PREFIX);
    key.push_str(&random);
    key.push_str(&checksum(&random));
    key
}

/// Checks prefix, length, alphabet and checksum of a presented key.
pub fn check_format(presented: &str) -> Result<(), FormatError> {
    let body = presented
        .strip_prefix(KEY_PREFIX)
        .ok_or(FormatError::Prefix)?;
    if !body.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(FormatError::Alphabet);
    }
    if body.len() != KEY_BODY_LEN {
        return Err(FormatError::Length);
    }
    let (random, tail) = body.split_at(RANDOM_LEN);
    // Not secret: the checksum is derived from the visible part of the key.
    if checksum(random) != tail {
        return Err(FormatError::Checksum);
    }
    Ok(())
}

/// The stored form of a key: sha256 of the whole string.
pub fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Base62 CRC32 of `random`, fixed width (62^6 > 2^32).
fn checksum(random: &str) -> String {
    let mut n = crc32fast::hash(random.as_bytes());
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    out.iter().map(|&b| char::from(b)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_have_the_documented_shape_and_pass_the_checksum() {
        for _ in 0..200 {
            let k = generate();
            assert_eq!(k.len(), KEY_PREFIX.len() + KEY_BODY_LEN, "{k}");
            assert!(k.starts_with("lstr_"));
            assert!(k[5..].bytes().all(|b| b.is_ascii_alphanumeric()));
            assert_eq!(check_format(&k), Ok(()));
        }
        assert_ne!(generate(), generate());
    }

    #[test]
    fn every_single_character_typo_is_caught_by_the_checksum() {
        let k = generate();
        let bytes = k.as_bytes();
        for i in KEY_PREFIX.len()..k.len() {
            for &c in BASE62.iter().filter(|&&c| c != bytes[i]) {
                let mut typo = bytes.to_vec();
                typo[i] = c;
                let typo = String::from_utf8(typo).expect("ascii");
                assert_eq!(
                    check_format(&typo),
                    Err(FormatError::Checksum),
                    "typo at {i} accepted: {typo}"
                );
            }
        }
        // Two adjacent characters swapped.
        let mut swapped = bytes.to_vec();
        let i = (KEY_PREFIX.len()..k.len() - 1)
            .find(|&i| bytes[i] != bytes[i + 1])
            .expect("distinct neighbours");
        swapped.swap(i, i + 1);
        let swapped = String::from_utf8(swapped).expect("ascii");
        assert_eq!(check_format(&swapped), Err(FormatError::Checksum));
    }

    #[test]
    fn malformed_keys_are_named_precisely() {
        let k = generate();
        assert_eq!(check_format(""), Err(FormatError::Prefix));
        assert_eq!(check_format(&k[1..]), Err(FormatError::Prefix));
        assert_eq!(
            check_format(&k.replace("lstr_", "LSTR_")),
            Err(FormatError::Prefix)
        );
        assert_eq!(check_format(&k[..k.len() - 1]), Err(FormatError::Length));
        assert_eq!(check_format(&format!("{k}0")), Err(FormatError::Length));
        assert_eq!(
            check_format(&format!("{} ", &k[..k.len() - 1])),
            Err(FormatError::Alphabet)
        );
        assert_eq!(
            check_format(&format!("{}é", &k[..k.len() - 2])),
            Err(FormatError::Alphabet)
        );
        assert_eq!(check_format("lstr_"), Err(FormatError::Length));
    }

    #[test]
    fn checksum_is_fixed_width_base62() {
        assert_eq!(checksum(""), "000000"); // crc32("") == 0
        for s in ["a", "hello", "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz"] {
            let c = checksum(s);
            assert_eq!(c.len(), CHECKSUM_LEN);
            let value = c.bytes().fold(0u64, |acc, b| {
                acc * 62 + BASE62.iter().position(|&d| d == b).expect("base62 digit") as u64
            });
            assert_eq!(value, u64::from(crc32fast::hash(s.as_bytes())));
        }
    }
}

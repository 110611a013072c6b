//! Secrets in the configuration: bytes written as base64, never printed back in full.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The shortest secret accepted: 256 bits.
pub const MIN_SECRET_BYTES: usize = 32;

/// A secret value. `Debug` and `Display` show only its length and a short fingerprint, so a
/// secret cannot leak into logs or error messages by accident; [`Secret::expose`] is the one
/// way to the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Wraps bytes; shorter than [`MIN_SECRET_BYTES`] is an error.
    pub fn new(bytes: Vec<u8>) -> Result<Secret, String> {
        if bytes.len() < MIN_SECRET_BYTES {
            return Err(format!(
                "a secret needs at least {MIN_SECRET_BYTES} bytes, this one has {}",
                bytes.len()
            ));
        }
        Ok(Secret(bytes))
    }

    /// Fresh random bytes from the kernel (getrandom, waiting for the CRNG if needed: a secret
    /// must not be guessable).
    pub fn generate() -> std::io::Result<Secret> {
        let mut bytes = vec![0u8; MIN_SECRET_BYTES];
        let mut filled = 0;
        while filled < bytes.len() {
            // SAFETY: the pointer and length describe the unfilled tail of `bytes`, which we own.
            let n = unsafe {
                libc::getrandom(bytes[filled..].as_mut_ptr().cast(), bytes.len() - filled, 0)
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            filled += n as usize;
        }
        Ok(Secret(bytes))
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The base64 text, for writing a configuration file.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(&self.0)
    }

    /// A short, non-reversible tag that tells two secrets apart in messages.
    fn fingerprint(&self) -> String {
        // FNV-1a: not a cryptographic hash, and only 16 bits of it are shown.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in &self.0 {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        format!("{:04x}", hash >> 48)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({self})")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "<redacted, {} bytes, #{}>",
            self.0.len(),
            self.fingerprint()
        )
    }
}

impl std::str::FromStr for Secret {
    type Err = String;

    fn from_str(text: &str) -> Result<Secret, String> {
        // The text itself is never echoed: it is (or is close to) the secret.
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|_| "the secret is not valid base64".to_string())?;
        Secret::new(bytes)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_base64())
    }
}

/// A base64 string of at least [`MIN_SECRET_BYTES`] bytes.
impl schemars::JsonSchema for Secret {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Secret".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A secret, base64 (standard alphabet, padded): at least 32 bytes, so \
                            44 characters or more. `shoalctl gen config` makes one.",
            "contentEncoding": "base64",
            "minLength": MIN_SECRET_BYTES.div_ceil(3) * 4,
            "pattern": "^[A-Za-z0-9+/]+={0,2}$",
            "writeOnly": true,
        })
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_print_redacted_and_round_trip_through_base64() {
        let secret = Secret::generate().unwrap();
        assert_eq!(secret.expose().len(), 32);
        let text = secret.to_base64();
        let shown = format!("{secret} {secret:?}");
        assert!(!shown.contains(&text), "{shown}");
        assert!(shown.starts_with("<redacted, 32 bytes, #"), "{shown}");
        assert_eq!(text.parse::<Secret>().unwrap(), secret);
        assert_ne!(
            Secret::generate().unwrap(),
            secret,
            "fresh bytes every time"
        );
    }

    #[test]
    fn short_or_malformed_secrets_are_rejected_without_echoing_them() {
        let short = STANDARD.encode([7u8; 16]);
        let e = short.parse::<Secret>().unwrap_err();
        assert_eq!(e, "a secret needs at least 32 bytes, this one has 16");
        let e = "hunter2!".parse::<Secret>().unwrap_err();
        assert_eq!(e, "the secret is not valid base64");
        assert!(!e.contains("hunter2"));
    }
}

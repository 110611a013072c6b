//! Keys derived from the cluster secret for the API.
//!
//! Every node serves the API with the same Ed25519 key, derived from the secret, so a client
//! pins one public key for the whole cluster (`server_key` in shoalctl.toml) and needs no CA.
//! Whoever holds the secret can also derive the admin credential, which every node accepts
//! as a token.

use hkdf::Hkdf;
use ring::signature::{Ed25519KeyPair, KeyPair};
use sha2::{Digest, Sha256};
use shoal_config::secret::Secret;

fn derive(secret: &Secret, label: &[u8]) -> [u8; 32] {
    let hk = Hkdf::<Sha256>::new(Some(b"shoal api"), secret.expose());
    let mut out = [0u8; 32];
    hk.expand(label, &mut out)
        .expect("32 bytes is a valid HKDF-SHA256 length");
    out
}

/// The API's TLS identity.
#[derive(Clone)]
pub struct Identity {
    /// The private key, PKCS#8 v1 DER.
    pub pkcs8: Vec<u8>,
    /// The raw Ed25519 public key.
    pub public_key: [u8; 32],
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("server_key", &self.server_key())
            .finish_non_exhaustive()
    }
}

/// PKCS#8 v1 for an Ed25519 seed (RFC 8410): the fixed header, then the 32 bytes.
const PKCS8_ED25519_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

impl Identity {
    /// The identity of the cluster with this secret.
    pub fn derive(secret: &Secret) -> Identity {
        Identity::from_seed(derive(secret, b"tls server key v1"))
    }

    /// The identity of a node in maintenance (no configuration yet, so no cluster secret):
    /// derived from the one-time token it shows on its console, so a client holding the token
    /// knows the key to pin and nobody else can stand in for the node.
    pub fn for_maintenance(token: &MaintenanceToken) -> Identity {
        let hk = Hkdf::<Sha256>::new(Some(b"shoal maintenance"), &token.0);
        let mut seed = [0u8; 32];
        hk.expand(b"tls server key v1", &mut seed)
            .expect("32 bytes is a valid HKDF-SHA256 length");
        Identity::from_seed(seed)
    }

    fn from_seed(seed: [u8; 32]) -> Identity {
        let mut pkcs8 = PKCS8_ED25519_PREFIX.to_vec();
        pkcs8.extend_from_slice(&seed);
        let pair =
            Ed25519KeyPair::from_seed_unchecked(&seed).expect("any 32 bytes make an Ed25519 seed");
        let mut public_key = [0u8; 32];
        public_key.copy_from_slice(pair.public_key().as_ref());
        Identity { pkcs8, public_key }
    }

    /// How clients name the key they pin: `ed25519:` and the public key in hex.
    pub fn server_key(&self) -> String {
        format!("ed25519:{}", hex(&self.public_key))
    }
}

/// The one-time token of a node in maintenance: 128 random bits, shown as eight groups of four
/// hex digits (`3f9a-0c1d-...`) so it can be read off a console and typed.
#[derive(Clone, PartialEq, Eq)]
pub struct MaintenanceToken([u8; 16]);

impl std::fmt::Debug for MaintenanceToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MaintenanceToken(..)")
    }
}

impl MaintenanceToken {
    pub fn from_bytes(bytes: [u8; 16]) -> MaintenanceToken {
        MaintenanceToken(bytes)
    }

    /// Reads a token as shown or typed: dashes and spaces are ignored, case too.
    pub fn parse(text: &str) -> Result<MaintenanceToken, String> {
        let digits: String = text
            .chars()
            .filter(|c| !matches!(c, '-' | ' '))
            .map(|c| c.to_ascii_lowercase())
            .collect();
        let bytes = unhex(&digits)
            .filter(|b| b.len() == 16)
            .ok_or("a maintenance token is 32 hex digits (as the node's console shows it)")?;
        let mut token = [0u8; 16];
        token.copy_from_slice(&bytes);
        Ok(MaintenanceToken(token))
    }

    /// The form the console shows and a client sends.
    pub fn display(&self) -> String {
        self.0.chunks(2).map(hex).collect::<Vec<_>>().join("-")
    }

    /// Compares in constant time (the check must not say how close a guess was).
    pub fn matches(&self, other: &MaintenanceToken) -> bool {
        self.0
            .iter()
            .zip(&other.0)
            .fold(0u8, |d, (a, b)| d | (a ^ b))
            == 0
    }
}

/// Parses a `server_key` (`ed25519:<64 hex digits>`).
pub fn parse_server_key(text: &str) -> Result<[u8; 32], String> {
    let hex_text = text
        .strip_prefix("ed25519:")
        .ok_or_else(|| format!("server key {text:?} does not start with ed25519:"))?;
    let bytes = unhex(hex_text).ok_or_else(|| format!("server key {text:?} is not hex"))?;
    bytes
        .try_into()
        .map_err(|_| format!("server key {text:?} is not 32 bytes"))
}

/// The admin credential whoever holds the secret can derive (a token every node accepts).
pub fn admin_credential(secret: &Secret) -> String {
    hex(&derive(secret, b"admin credential v1"))
}

/// The SHA-256 of a token, as the server compares it.
pub fn token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maintenance_tokens_read_back_and_pin_their_own_key() {
        let token = MaintenanceToken::from_bytes(*b"0123456789abcdef");
        let shown = token.display();
        assert_eq!(shown, "3031-3233-3435-3637-3839-6162-6364-6566");
        let typed = MaintenanceToken::parse(&shown.to_uppercase().replace('-', " ")).unwrap();
        assert!(typed.matches(&token));
        assert!(!MaintenanceToken::from_bytes([0; 16]).matches(&token));
        assert!(MaintenanceToken::parse("3031-3233").is_err());
        assert!(MaintenanceToken::parse(&format!("{shown}zz")).is_err());
        assert!(format!("{token:?}").contains(".."), "never printed");
        // The key is the token's, and differs from a cluster's or another token's.
        let key = Identity::for_maintenance(&token).public_key;
        assert_eq!(key, Identity::for_maintenance(&typed).public_key);
        assert_ne!(
            key,
            Identity::for_maintenance(&MaintenanceToken::from_bytes([0; 16])).public_key
        );
    }

    fn secret(byte: u8) -> Secret {
        Secret::new(vec![byte; 32]).unwrap()
    }

    #[test]
    fn the_identity_follows_the_secret() {
        let a = Identity::derive(&secret(1));
        assert_eq!(a.public_key, Identity::derive(&secret(1)).public_key);
        assert_ne!(a.public_key, Identity::derive(&secret(2)).public_key);
        assert_eq!(parse_server_key(&a.server_key()), Ok(a.public_key));
        assert!(format!("{a:?}").contains("ed25519:"));
        assert!(!format!("{a:?}").contains(&hex(&a.pkcs8)));
    }

    #[test]
    fn bad_server_keys_are_refused_with_the_reason() {
        assert!(parse_server_key("rsa:00").unwrap_err().contains("ed25519:"));
        assert!(
            parse_server_key("ed25519:zz")
                .unwrap_err()
                .contains("not hex")
        );
        assert!(
            parse_server_key("ed25519:00ff")
                .unwrap_err()
                .contains("32 bytes")
        );
    }

    #[test]
    fn the_admin_credential_differs_from_the_key() {
        let s = secret(3);
        assert_ne!(admin_credential(&s), hex(&Identity::derive(&s).public_key));
        assert_eq!(admin_credential(&s).len(), 64);
    }
}

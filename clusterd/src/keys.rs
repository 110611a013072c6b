//! Keys derived from the cluster secret, and the sealing of announcements with them.
//!
//! Every key is HKDF-SHA256 of the secret with its own label, so a key for one use never
//! serves another. Announcements are sealed with ChaCha20-Poly1305 under a random nonce: a node
//! without the secret can neither read the cluster's member list nor forge an announcement.

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hkdf::Hkdf;
use sha2::Sha256;

/// The first bytes of every announcement datagram (and version of its format).
pub const ANNOUNCE_MAGIC: &[u8; 4] = b"SHA1";
/// The largest announcement we send or accept.
pub const MAX_ANNOUNCEMENT: usize = 1400;

/// Why a datagram or frame was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("not a Shoal announcement")]
    NotAnnouncement,
    #[error("{0} bytes is too large")]
    TooLarge(usize),
    #[error("authentication failed (another cluster's secret, or tampered)")]
    Authentication,
}

/// The keys one cluster secret gives.
#[derive(Clone)]
pub struct ClusterKeys {
    announce: ChaCha20Poly1305,
    peer: [u8; 32],
}

impl std::fmt::Debug for ClusterKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKeys(..)")
    }
}

fn derive(secret: &[u8], label: &[u8], salt: &[u8]) -> [u8; 32] {
    let hk = Hkdf::<Sha256>::new(Some(salt), secret);
    let mut out = [0u8; 32];
    // 32 bytes is far below HKDF-SHA256's limit of 8160.
    hk.expand(label, &mut out)
        .expect("32 bytes is a valid HKDF-SHA256 length");
    out
}

impl ClusterKeys {
    pub fn new(secret: &[u8]) -> ClusterKeys {
        let announce = derive(secret, b"shoal announce v1", b"shoal cluster");
        ClusterKeys {
            announce: ChaCha20Poly1305::new(Key::from_slice(&announce)),
            peer: derive(secret, b"shoal peer v1", b"shoal cluster"),
        }
    }

    /// Seals an announcement: magic, 12-byte nonce, ciphertext and tag.
    pub fn seal_announcement(&self, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let len = ANNOUNCE_MAGIC.len() + 12 + plaintext.len() + 16;
        if len > MAX_ANNOUNCEMENT {
            return Err(SealError::TooLarge(len));
        }
        let mut nonce = [0u8; 12];
        crate::random::fill(&mut nonce);
        let sealed = self
            .announce
            .encrypt(Nonce::from_slice(&nonce), plaintext)
            .map_err(|_| SealError::Authentication)?;
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(ANNOUNCE_MAGIC);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Opens a sealed announcement.
    pub fn open_announcement(&self, packet: &[u8]) -> Result<Vec<u8>, SealError> {
        if packet.len() > MAX_ANNOUNCEMENT {
            return Err(SealError::TooLarge(packet.len()));
        }
        let body = packet
            .strip_prefix(ANNOUNCE_MAGIC.as_slice())
            .filter(|b| b.len() >= 12 + 16)
            .ok_or(SealError::NotAnnouncement)?;
        let (nonce, sealed) = body.split_at(12);
        self.announce
            .decrypt(Nonce::from_slice(nonce), sealed)
            .map_err(|_| SealError::Authentication)
    }

    /// The two directional keys of one peer connection, from both sides' nonces: the first
    /// seals what the connecting side sends, the second what the accepting side sends.
    pub fn session(&self, client_nonce: &[u8; 32], server_nonce: &[u8; 32]) -> (Key, Key) {
        let mut salt = [0u8; 64];
        salt[..32].copy_from_slice(client_nonce);
        salt[32..].copy_from_slice(server_nonce);
        let to_server = derive(&self.peer, b"shoal peer to server", &salt);
        let to_client = derive(&self.peer, b"shoal peer to client", &salt);
        (*Key::from_slice(&to_server), *Key::from_slice(&to_client))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_open_only_with_the_same_secret() {
        let keys = ClusterKeys::new(b"0123456789abcdef0123456789abcdef");
        let sealed = keys.seal_announcement(b"hello").unwrap();
        assert_eq!(keys.open_announcement(&sealed).unwrap(), b"hello");
        let other = ClusterKeys::new(b"another secret of at least 32 bytes");
        assert_eq!(
            other.open_announcement(&sealed),
            Err(SealError::Authentication)
        );
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert_eq!(
            keys.open_announcement(&tampered),
            Err(SealError::Authentication)
        );
        assert_eq!(
            keys.open_announcement(b"SHA1short"),
            Err(SealError::NotAnnouncement)
        );
        assert_eq!(
            keys.open_announcement(b"HTTP/1.1 200 OK and more bytes than a nonce"),
            Err(SealError::NotAnnouncement)
        );
        assert!(matches!(
            keys.seal_announcement(&[0u8; MAX_ANNOUNCEMENT]),
            Err(SealError::TooLarge(_))
        ));
    }

    #[test]
    fn two_seals_of_the_same_text_differ() {
        let keys = ClusterKeys::new(b"0123456789abcdef0123456789abcdef");
        assert_ne!(
            keys.seal_announcement(b"x").unwrap(),
            keys.seal_announcement(b"x").unwrap()
        );
    }

    #[test]
    fn session_keys_depend_on_both_nonces_and_the_direction() {
        let keys = ClusterKeys::new(b"0123456789abcdef0123456789abcdef");
        let (a, b) = keys.session(&[1; 32], &[2; 32]);
        assert_ne!(a, b);
        let (c, _) = keys.session(&[1; 32], &[3; 32]);
        assert_ne!(a, c);
        assert_eq!(keys.session(&[1; 32], &[2; 32]), (a, b));
    }
}

//! A node's identity in the cluster: a random id and an Ed25519 key pair, created on first
//! start and kept next to the consensus log, so that they live and die with it. A node whose
//! log is gone (wiped, or never written) gets a new id: an old id never comes back with an
//! empty log, which consensus would take for a fresh voter.

use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use ring::signature::{Ed25519KeyPair, KeyPair};

use crate::formation::NodeId;
use crate::journal::{write_atomic, write_atomic_mode};

/// The files in a data directory.
pub const ID_FILE: &str = "node-id";
pub const KEY_FILE: &str = "node.key";
pub const LOG_FILE: &str = "raft.journal";
pub const SNAPSHOT_FILE: &str = "snapshot.json";
pub const CLUSTER_FILE: &str = "cluster-id";

/// Who this node is.
#[derive(Debug, Clone)]
pub struct Identity {
    pub id: NodeId,
    /// The Ed25519 public key, hex.
    pub public_key: String,
    /// Whether the id was there before (the log too).
    pub restored: bool,
    /// The cluster this node was last a member of, if known.
    pub cluster_id: Option<u64>,
}

fn new_id() -> NodeId {
    // Ids are printed as 16 hex digits and must fit JSON numbers exactly in most tools.
    (crate::random::u64() >> 11).max(1)
}

fn key_pair() -> io::Result<Vec<u8>> {
    let rng = ring::rand::SystemRandom::new();
    Ed25519KeyPair::generate_pkcs8(&rng)
        .map(|d| d.as_ref().to_vec())
        .map_err(|_| io::Error::other("cannot generate a key pair"))
}

fn public_key(pkcs8: &[u8]) -> io::Result<String> {
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("node key: {e}")))?;
    Ok(pair
        .public_key()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// A diskless node's identity: new on every start.
pub fn ephemeral() -> io::Result<Identity> {
    Ok(Identity {
        id: new_id(),
        public_key: public_key(&key_pair()?)?,
        restored: false,
        cluster_id: None,
    })
}

/// The identity kept in `dir` (created 0700 if missing), or a new one written there.
pub fn load_or_create(dir: &Path) -> io::Result<Identity> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let file = |name: &str| -> PathBuf { dir.join(name) };
    let log_exists = file(LOG_FILE).metadata().is_ok_and(|m| m.len() > 0);
    let saved_id = std::fs::read_to_string(file(ID_FILE))
        .ok()
        .and_then(|t| u64::from_str_radix(t.trim(), 16).ok());
    let key = match std::fs::read(file(KEY_FILE)) {
        Ok(k) => k,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let k = key_pair()?;
            write_atomic_mode(&file(KEY_FILE), &k, 0o600)?;
            k
        }
        Err(e) => return Err(e),
    };
    let (id, restored) = match saved_id {
        Some(id) if log_exists => (id, true),
        _ => {
            // No log to go with an id: a new member. The stale log and snapshot go too.
            for stale in [LOG_FILE, SNAPSHOT_FILE, CLUSTER_FILE] {
                match std::fs::remove_file(file(stale)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
            let id = new_id();
            write_atomic(&file(ID_FILE), format!("{id:016x}\n").as_bytes())?;
            (id, false)
        }
    };
    let cluster_id = restored
        .then(|| std::fs::read_to_string(file(CLUSTER_FILE)).ok())
        .flatten()
        .and_then(|t| u64::from_str_radix(t.trim(), 16).ok());
    Ok(Identity {
        id,
        public_key: public_key(&key)?,
        restored,
        cluster_id,
    })
}

/// Records the cluster this node belongs to.
pub fn save_cluster(dir: &Path, cluster_id: u64) -> io::Result<()> {
    write_atomic(
        &dir.join(CLUSTER_FILE),
        format!("{cluster_id:016x}\n").as_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identity_is_kept_only_together_with_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create(dir.path()).unwrap();
        assert!(!first.restored);
        // No log written yet: a restart is still a new member.
        let second = load_or_create(dir.path()).unwrap();
        assert_ne!(first.id, second.id);
        assert_eq!(first.public_key, second.public_key, "the key pair stays");
        // With a log, the id comes back, and the cluster with it.
        std::fs::write(dir.path().join(LOG_FILE), b"records").unwrap();
        save_cluster(dir.path(), 0xabc).unwrap();
        let third = load_or_create(dir.path()).unwrap();
        assert_eq!(
            (third.id, third.restored, third.cluster_id),
            (second.id, true, Some(0xabc))
        );
        // The log wiped: never the old id again, and the stale cluster record goes.
        std::fs::remove_file(dir.path().join(LOG_FILE)).unwrap();
        let fourth = load_or_create(dir.path()).unwrap();
        assert_ne!(fourth.id, third.id);
        assert_eq!(fourth.cluster_id, None);
        assert!(!dir.path().join(CLUSTER_FILE).exists());
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
    }
}

//! dm-verity hash trees, written the way `veritysetup format --hash-offset` writes them (format
//! 1, SHA-256, 4 KiB blocks, a superblock in the first hash block), so the kernel's `verity`
//! target checks every block of a root slot against one root hash.
//!
//! Done here rather than with `veritysetup` so the salt and UUID come from the image's inputs
//! (reproducible builds) and the build needs no cryptsetup; the test compares with
//! `veritysetup` where it is installed.
//!
//! Layout after the data (which is padded to a whole block): the superblock block, then the tree
//! from the level nearest the root down to the level that hashes the data blocks. Each hash is
//! `sha256(salt || block)`; a hash block holds 128 of them, zero padded; the root hash is the
//! hash of the single top block.

use sha2::{Digest, Sha256};

/// Data and hash block size.
pub const BLOCK: u64 = 4096;
const DIGEST: usize = 32;
const PER_BLOCK: usize = BLOCK as usize / DIGEST;

/// What a formatted slot needs on its kernel command line and in the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verity {
    /// Hex SHA-256 root hash.
    pub root_hash: String,
    /// Where the hash area (superblock first) starts: the data size rounded up to a block.
    pub hash_offset: u64,
    /// Size of the superblock block and the tree together.
    pub hash_size: u64,
    pub salt: [u8; 32],
}

fn hash(salt: &[u8], block: &[u8]) -> [u8; DIGEST] {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(block);
    h.finalize().into()
}

/// The superblock (`struct verity_sb`), padded to one block.
fn superblock(uuid: [u8; 16], salt: &[u8], data_blocks: u64) -> Vec<u8> {
    let mut b = vec![0u8; BLOCK as usize];
    b[0..8].copy_from_slice(b"verity\0\0");
    b[8..12].copy_from_slice(&1u32.to_le_bytes()); // version
    b[12..16].copy_from_slice(&1u32.to_le_bytes()); // hash type: normal
    b[16..32].copy_from_slice(&uuid);
    b[32..38].copy_from_slice(b"sha256");
    b[64..68].copy_from_slice(&(BLOCK as u32).to_le_bytes());
    b[68..72].copy_from_slice(&(BLOCK as u32).to_le_bytes());
    b[72..80].copy_from_slice(&data_blocks.to_le_bytes());
    b[80..82].copy_from_slice(&(salt.len() as u16).to_le_bytes());
    b[88..88 + salt.len()].copy_from_slice(salt);
    b
}

/// Pads `data` to whole blocks and appends the superblock and hash tree. `uuid` and `salt`
/// should be derived from the image's inputs so the same inputs give the same bytes.
pub fn format(data: &mut Vec<u8>, uuid: [u8; 16], salt: [u8; 32]) -> Verity {
    let padded = (data.len() as u64).div_ceil(BLOCK) * BLOCK;
    data.resize(padded as usize, 0);
    let data_blocks = padded / BLOCK;
    // Levels from the data upwards, each a run of hash blocks.
    let mut levels: Vec<Vec<u8>> = Vec::new();
    let mut below: &[u8] = data;
    loop {
        let digests: Vec<[u8; DIGEST]> = below
            .chunks(BLOCK as usize)
            .map(|block| hash(&salt, block))
            .collect();
        let blocks = digests.len().div_ceil(PER_BLOCK);
        let mut level = vec![0u8; blocks * BLOCK as usize];
        for (i, d) in digests.iter().enumerate() {
            level[i * DIGEST..(i + 1) * DIGEST].copy_from_slice(d);
        }
        levels.push(level);
        if blocks == 1 {
            break;
        }
        below = levels.last().expect("just pushed");
    }
    let root = hash(&salt, levels.last().expect("at least one level"));
    let start = data.len();
    data.extend(superblock(uuid, &salt, data_blocks));
    for level in levels.iter().rev() {
        data.extend_from_slice(level);
    }
    Verity {
        root_hash: root.iter().map(|b| format!("{b:02x}")).collect(),
        hash_offset: padded,
        hash_size: (data.len() - start) as u64,
        salt,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn sample(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn one_block_of_data_has_a_one_level_tree() {
        let mut data = vec![0xaa; 100];
        let v = format(&mut data, [1; 16], [2; 32]);
        assert_eq!(v.hash_offset, 4096);
        assert_eq!(v.hash_size, 2 * 4096);
        assert_eq!(data.len(), 3 * 4096);
        let mut block = vec![0xaa; 100];
        block.resize(4096, 0);
        let leaf = hash(&[2; 32], &block);
        assert_eq!(&data[8192..8192 + 32], &leaf);
        let mut top = vec![0u8; 4096];
        top[..32].copy_from_slice(&leaf);
        let root: String = hash(&[2; 32], &top)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(v.root_hash, root);
        assert_eq!(&data[4096..4104], b"verity\0\0");
    }

    #[test]
    fn a_changed_byte_changes_the_root_hash() {
        let mut a = sample(600 * 1024);
        let mut b = a.clone();
        b[300_000] ^= 1;
        let va = format(&mut a, [0; 16], [9; 32]);
        let vb = format(&mut b, [0; 16], [9; 32]);
        assert_ne!(va.root_hash, vb.root_hash);
        // 150 data blocks: two leaf hash blocks under one top block.
        assert_eq!(va.hash_size, (1 + 1 + 2) * 4096);
    }

    /// `veritysetup verify` of data and hash tree in one file.
    fn verify(file: &std::path::Path, v: &Verity) -> std::process::Output {
        Command::new("veritysetup")
            .arg("verify")
            .arg(file)
            .arg(file)
            .arg(&v.root_hash)
            .arg(format!("--hash-offset={}", v.hash_offset))
            .output()
            .expect("veritysetup runs")
    }

    /// The kernel-facing format, checked by cryptsetup's own verifier.
    #[test]
    fn veritysetup_verifies_what_we_write() {
        if Command::new("veritysetup")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("veritysetup not installed (cryptsetup-bin): cross-check skipped");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        // 130 blocks plus a partial one: three levels' worth of padding rules.
        for len in [4096 * 130 + 5, 4096 * 128 * 130] {
            let mut data = sample(len);
            let v = format(&mut data, [3; 16], [4; 32]);
            let file = dir.path().join("slot");
            std::fs::write(&file, &data).unwrap();
            let out = verify(&file, &v);
            assert!(
                out.status.success(),
                "veritysetup verify of {len} bytes: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            // And a tampered data block fails.
            data[4096 * 7] ^= 0x40;
            std::fs::write(&file, &data).unwrap();
            assert!(
                !verify(&file, &v).status.success(),
                "tampered data verified"
            );
        }
    }
}

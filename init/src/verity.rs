//! dm-verity for a root slot: the on-disk superblock, the device-mapper table, and the
//! `DM_*` ioctl buffers, all pure so they are tested on byte buffers. The ioctls themselves are
//! in `sys::dm_verity`.
//!
//! A slot partition holds the erofs image, padded to 4 KiB, followed by the hash area written by
//! `veritysetup format --hash-offset`: a 512-byte superblock in the first hash block, then the
//! hash tree. The kernel command line carries the root hash (`shoal.roothash=`) and where the
//! hash area starts (`shoal.hashoffset=`); everything else comes from the superblock. Only the
//! root hash is trusted: a superblock that lies about the salt, the block sizes or the number of
//! data blocks gives a tree whose root does not match, and the device refuses every read.

use std::fmt::Write as _;

/// The superblock's size on disk.
pub const SUPERBLOCK_SIZE: usize = 512;
const SIGNATURE: &[u8; 8] = b"verity\0\0";

/// What `veritysetup format` recorded about the hash tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    pub hash_type: u32,
    pub algorithm: String,
    pub data_block_size: u32,
    pub hash_block_size: u32,
    pub data_blocks: u64,
    pub salt: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("no dm-verity superblock at the hash offset (signature {0:02x?})")]
    Signature([u8; 8]),
    #[error("dm-verity superblock: {0}")]
    Field(String),
    #[error("root hash: {0}")]
    RootHash(String),
    #[error("device-mapper answered a malformed buffer: {0}")]
    Answer(String),
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl Superblock {
    /// Parses the superblock (`struct verity_sb` of cryptsetup: signature, version 1, hash type,
    /// UUID, algorithm, block sizes, data blocks, salt).
    pub fn parse(b: &[u8]) -> Result<Superblock, Error> {
        if b.len() < SUPERBLOCK_SIZE {
            return Err(Error::Field(format!(
                "{} bytes, a superblock has {SUPERBLOCK_SIZE}",
                b.len()
            )));
        }
        if &b[0..8] != SIGNATURE {
            return Err(Error::Signature(b[0..8].try_into().expect("8 bytes")));
        }
        let bad = |what: String| Err(Error::Field(what));
        let version = le32(b, 8);
        if version != 1 {
            return bad(format!("version {version}, only 1 is known"));
        }
        let hash_type = le32(b, 12);
        if hash_type > 1 {
            return bad(format!("hash type {hash_type}, only 0 and 1 are known"));
        }
        let algorithm = &b[32..64];
        let end = algorithm.iter().position(|&c| c == 0).unwrap_or(32);
        let algorithm = std::str::from_utf8(&algorithm[..end])
            .ok()
            .filter(|a| !a.is_empty() && a.bytes().all(|c| c.is_ascii_alphanumeric()))
            .ok_or_else(|| Error::Field("the hash algorithm is not a name".into()))?
            .to_string();
        let data_block_size = le32(b, 64);
        let hash_block_size = le32(b, 68);
        for (what, size) in [("data", data_block_size), ("hash", hash_block_size)] {
            if !(512..=65536).contains(&size) || !size.is_power_of_two() {
                return bad(format!("{what} block size {size}"));
            }
        }
        let data_blocks = le64(b, 72);
        if data_blocks == 0 {
            return bad("no data blocks".into());
        }
        let salt_size = u16::from_le_bytes([b[80], b[81]]) as usize;
        if salt_size > 256 {
            return bad(format!("salt of {salt_size} bytes, at most 256"));
        }
        Ok(Superblock {
            hash_type,
            algorithm,
            data_block_size,
            hash_block_size,
            data_blocks,
            salt: b[88..88 + salt_size].to_vec(),
        })
    }

    /// The size of the protected data in 512-byte sectors (the target's length).
    pub fn data_sectors(&self) -> u64 {
        self.data_blocks * u64::from(self.data_block_size) / 512
    }

    /// The device-mapper `verity` target parameters for data and hashes on one `device`, the
    /// hash area (superblock first) starting at byte `hash_offset`.
    pub fn table_params(&self, device: &str, hash_offset: u64, root_hash: &str) -> String {
        let hash_start = hash_offset / u64::from(self.hash_block_size) + 1;
        let salt = if self.salt.is_empty() {
            "-".to_string()
        } else {
            hex(&self.salt)
        };
        format!(
            "{} {device} {device} {} {} {} {hash_start} {} {root_hash} {salt}",
            self.hash_type,
            self.data_block_size,
            self.hash_block_size,
            self.data_blocks,
            self.algorithm,
        )
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Checks a root hash from the command line: hex, of a digest's length (SHA-256 and longer).
pub fn check_root_hash(text: &str) -> Result<(), Error> {
    if !text.len().is_multiple_of(2) || !(64..=128).contains(&text.len()) {
        return Err(Error::RootHash(format!(
            "{} hex digits, a digest has 64 (SHA-256) to 128",
            text.len()
        )));
    }
    if !text.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Err(Error::RootHash("not hexadecimal".into()));
    }
    Ok(())
}

// ---- device-mapper ioctl buffers (include/uapi/linux/dm-ioctl.h) ----

/// `sizeof(struct dm_ioctl)`.
pub const DM_IOCTL_SIZE: usize = 312;
/// `sizeof(struct dm_target_spec)`.
const DM_TARGET_SPEC_SIZE: usize = 40;
/// The interface version this code speaks (4.0.0 or any later 4.x).
const DM_VERSION: [u32; 3] = [4, 0, 0];
pub const DM_READONLY_FLAG: u32 = 1 << 0;

const fn dm_iowr(nr: u64) -> u64 {
    (3 << 30) | ((DM_IOCTL_SIZE as u64) << 16) | (0xfd << 8) | nr
}
pub const DM_DEV_CREATE: u64 = dm_iowr(3);
pub const DM_DEV_REMOVE: u64 = dm_iowr(4);
pub const DM_DEV_SUSPEND: u64 = dm_iowr(6);
pub const DM_TABLE_LOAD: u64 = dm_iowr(9);

/// A `struct dm_ioctl` naming device `name`, followed by `data` (`data_size` covers both).
fn dm_header(name: &str, flags: u32, target_count: u32, total: usize) -> Vec<u8> {
    let mut b = vec![0u8; total];
    for (i, v) in DM_VERSION.iter().enumerate() {
        b[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes());
    }
    b[12..16].copy_from_slice(&(total as u32).to_le_bytes()); // data_size
    b[16..20].copy_from_slice(&(DM_IOCTL_SIZE as u32).to_le_bytes()); // data_start
    b[20..24].copy_from_slice(&target_count.to_le_bytes());
    b[28..32].copy_from_slice(&flags.to_le_bytes());
    let name = name.as_bytes();
    let n = name.len().min(127);
    b[48..48 + n].copy_from_slice(&name[..n]);
    b
}

/// The buffer for `DM_DEV_CREATE` or `DM_DEV_SUSPEND` (flags 0: resume): a header alone, with
/// room for the kernel's answer.
pub fn dm_simple(name: &str, flags: u32) -> Vec<u8> {
    dm_header(name, flags, 0, DM_IOCTL_SIZE + 1024)
}

/// The buffer for `DM_TABLE_LOAD` of one target of `sectors` starting at sector 0.
pub fn dm_table_load(name: &str, target: &str, sectors: u64, params: &str, flags: u32) -> Vec<u8> {
    // The parameters are NUL-terminated and the next spec would start 8-byte aligned.
    let params_len = (params.len() + 1).next_multiple_of(8);
    let total = DM_IOCTL_SIZE + DM_TARGET_SPEC_SIZE + params_len;
    let mut b = dm_header(name, flags, 1, total);
    let spec = DM_IOCTL_SIZE;
    b[spec..spec + 8].copy_from_slice(&0u64.to_le_bytes()); // sector_start
    b[spec + 8..spec + 16].copy_from_slice(&sectors.to_le_bytes()); // length
    // status (i32) stays 0; next (u32) is 0 for the last spec.
    let t = target.as_bytes();
    b[spec + 24..spec + 24 + t.len().min(15)].copy_from_slice(&t[..t.len().min(15)]);
    let p = spec + DM_TARGET_SPEC_SIZE;
    b[p..p + params.len()].copy_from_slice(params.as_bytes());
    b
}

/// The device number the kernel put in an answer (`dev`, huge-encoded), as (major, minor).
pub fn dm_answer_dev(b: &[u8]) -> Result<(u32, u32), Error> {
    if b.len() < DM_IOCTL_SIZE {
        return Err(Error::Answer(format!("{} bytes", b.len())));
    }
    let dev = le64(b, 40);
    let major = ((dev >> 8) & 0xfff) as u32;
    let minor = ((dev & 0xff) | ((dev >> 12) & 0xfff00)) as u32;
    Ok((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A superblock as `veritysetup format` writes it.
    pub(crate) fn superblock(salt: &[u8], data_blocks: u64) -> Vec<u8> {
        let mut b = vec![0u8; 512];
        b[0..8].copy_from_slice(SIGNATURE);
        b[8..12].copy_from_slice(&1u32.to_le_bytes());
        b[12..16].copy_from_slice(&1u32.to_le_bytes());
        b[16..32].copy_from_slice(&[0xab; 16]);
        b[32..38].copy_from_slice(b"sha256");
        b[64..68].copy_from_slice(&4096u32.to_le_bytes());
        b[68..72].copy_from_slice(&4096u32.to_le_bytes());
        b[72..80].copy_from_slice(&data_blocks.to_le_bytes());
        b[80..82].copy_from_slice(&(salt.len() as u16).to_le_bytes());
        b[88..88 + salt.len()].copy_from_slice(salt);
        b
    }

    #[test]
    fn parses_a_superblock_and_builds_the_table() {
        let sb = Superblock::parse(&superblock(&[1, 2, 0xfe], 5632)).unwrap();
        assert_eq!(sb.algorithm, "sha256");
        assert_eq!(sb.data_sectors(), 5632 * 8);
        let root = "ab".repeat(32);
        assert_eq!(
            sb.table_params("/dev/vda2", 5632 * 4096, &root),
            format!("1 /dev/vda2 /dev/vda2 4096 4096 5632 5633 sha256 {root} 0102fe")
        );
        let unsalted = Superblock::parse(&superblock(&[], 1)).unwrap();
        assert!(unsalted.table_params("/dev/x", 4096, &root).ends_with(" -"));
    }

    #[test]
    fn refuses_what_is_not_a_superblock() {
        assert!(matches!(
            Superblock::parse(&[0u8; 512]),
            Err(Error::Signature(_))
        ));
        assert!(Superblock::parse(&superblock(&[], 1)[..100]).is_err());
        let mut b = superblock(&[], 1);
        b[8] = 2;
        assert!(
            Superblock::parse(&b)
                .unwrap_err()
                .to_string()
                .contains("version 2")
        );
        let mut b = superblock(&[], 1);
        b[64..68].copy_from_slice(&3000u32.to_le_bytes());
        assert!(
            Superblock::parse(&b)
                .unwrap_err()
                .to_string()
                .contains("data block size 3000")
        );
        let mut b = superblock(&[], 1);
        b[80..82].copy_from_slice(&300u16.to_le_bytes());
        assert!(
            Superblock::parse(&b)
                .unwrap_err()
                .to_string()
                .contains("salt")
        );
        let mut b = superblock(&[], 1);
        b[72..80].copy_from_slice(&0u64.to_le_bytes());
        assert!(Superblock::parse(&b).is_err());
        let mut b = superblock(&[], 1);
        b[32..38].copy_from_slice(b"sh a/6");
        assert!(Superblock::parse(&b).is_err());
    }

    #[test]
    fn checks_root_hashes() {
        assert!(check_root_hash(&"0f".repeat(32)).is_ok());
        assert!(check_root_hash(&"0f".repeat(64)).is_ok());
        assert!(check_root_hash("abc").is_err());
        assert!(check_root_hash(&"zz".repeat(32)).is_err());
        assert!(check_root_hash(&"0f".repeat(16)).is_err());
    }

    #[test]
    fn device_mapper_buffers_follow_the_uapi_layout() {
        // _IOWR(0xfd, 9, struct dm_ioctl) as the kernel headers define it.
        assert_eq!(DM_TABLE_LOAD, 0xc138_fd09);
        assert_eq!(DM_DEV_CREATE, 0xc138_fd03);
        assert_eq!(DM_DEV_SUSPEND, 0xc138_fd06);
        let b = dm_table_load("root", "verity", 80, "1 a b", DM_READONLY_FLAG);
        assert_eq!(b.len(), 312 + 40 + 8);
        assert_eq!(le32(&b, 0), 4);
        assert_eq!(le32(&b, 12) as usize, b.len());
        assert_eq!(le32(&b, 16), 312);
        assert_eq!(le32(&b, 20), 1);
        assert_eq!(le32(&b, 28), DM_READONLY_FLAG);
        assert_eq!(&b[48..53], b"root\0");
        assert_eq!(le64(&b, 312 + 8), 80);
        assert_eq!(&b[312 + 24..312 + 31], b"verity\0");
        assert_eq!(&b[352..358], b"1 a b\0");
        // Minor 300 on major 253, encoded the kernel's way.
        let mut answer = dm_simple("root", 0);
        let dev: u64 = (300 & 0xff) | (253 << 8) | ((300 & !0xff) << 12);
        answer[40..48].copy_from_slice(&dev.to_le_bytes());
        assert_eq!(dm_answer_dev(&answer).unwrap(), (253, 300));
    }
}

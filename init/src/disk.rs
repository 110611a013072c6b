//! The STATE partition's filesystem: its size from the ext4 superblock, and how far to grow it.
//! Finding partitions by GPT name is `shoal_gpt::sysfs`.

/// Where an ext4 superblock starts on its device, and how much of it [`ext4_size`] reads.
pub const EXT4_SUPERBLOCK_OFFSET: u64 = 1024;
pub const EXT4_SUPERBLOCK_LEN: usize = 1024;

/// An ext4 filesystem's size from its superblock: (blocks, block size in bytes).
pub fn ext4_size(sb: &[u8]) -> Option<(u64, u64)> {
    if sb.len() < EXT4_SUPERBLOCK_LEN || sb[0x38..0x3a] != [0x53, 0xef] {
        return None;
    }
    let le32 = |at: usize| u32::from_le_bytes(sb[at..at + 4].try_into().expect("4 bytes"));
    let log = le32(0x18);
    if log > 6 {
        return None;
    }
    let incompat_64bit = le32(0x60) & 0x80 != 0;
    let hi = if incompat_64bit { le32(0x150) } else { 0 };
    Some(((u64::from(hi) << 32) | u64::from(le32(0x4)), 1024 << log))
}

/// The block count to grow an ext4 filesystem of `blocks` x `block_size` to, so that it fills
/// a partition of `partition_bytes`; `None` when less than one block would be gained.
pub fn ext4_grow_target(blocks: u64, block_size: u64, partition_bytes: u64) -> Option<u64> {
    let fits = partition_bytes / block_size;
    (fits > blocks).then_some(fits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_size_of_an_ext4_filesystem() {
        let mut sb = vec![0u8; EXT4_SUPERBLOCK_LEN];
        sb[0x38..0x3a].copy_from_slice(&[0x53, 0xef]);
        sb[0x4..0x8].copy_from_slice(&8192u32.to_le_bytes());
        sb[0x18..0x1c].copy_from_slice(&2u32.to_le_bytes());
        assert_eq!(ext4_size(&sb), Some((8192, 4096)));
        // The high half counts only with the 64bit feature.
        sb[0x150..0x154].copy_from_slice(&1u32.to_le_bytes());
        assert_eq!(ext4_size(&sb), Some((8192, 4096)));
        sb[0x60] = 0x80;
        assert_eq!(ext4_size(&sb), Some(((1 << 32) + 8192, 4096)));
        sb[0x38] = 0;
        assert_eq!(ext4_size(&sb), None);
        assert_eq!(ext4_size(&sb[..100]), None);
        // 32 MiB in a 1 GiB partition grows to 1 GiB; a full one does not.
        assert_eq!(ext4_grow_target(8192, 4096, 1 << 30), Some(262_144));
        assert_eq!(ext4_grow_target(262_144, 4096, (1 << 30) + 4095), None);
    }
}

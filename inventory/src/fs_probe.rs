//! What is on a block device, from its first bytes: the partition table (GPT or DOS) and the
//! filesystem or volume signature (ext2/3/4, XFS, btrfs, vfat, erofs, squashfs, swap, ISO 9660,
//! LUKS, LVM, Linux RAID) with its label and UUID. Pure: the caller reads [`PROBE_BYTES`].

use serde::{Deserialize, Serialize};

/// How much of a device the probe looks at (btrfs keeps its superblock at 64 KiB).
pub const PROBE_BYTES: usize = 65536 + 4096;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Filesystem {
    /// As blkid names it: `ext4`, `xfs`, `btrfs`, `vfat`, `erofs`, `squashfs`, `swap`,
    /// `iso9660`, `crypto_LUKS`, `LVM2_member`, `linux_raid_member`.
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
}

/// `gpt` or `dos`, when the device starts with a partition table.
pub fn partition_table(head: &[u8]) -> Option<&'static str> {
    if at(head, 512, b"EFI PART") || at(head, 4096, b"EFI PART") {
        return Some("gpt");
    }
    if at(head, 510, &[0x55, 0xAA]) && filesystem(head).is_none() {
        // Four 16-byte entries at 446: a boot indicator of 0 or 0x80, and at least one type.
        let entries = head.get(446..510)?;
        let sane = entries.chunks(16).all(|e| e[0] == 0 || e[0] == 0x80);
        let used = entries.chunks(16).any(|e| e[4] != 0);
        return (sane && used).then_some("dos");
    }
    None
}

/// The filesystem or volume signature at the start of a device, if any.
pub fn filesystem(head: &[u8]) -> Option<Filesystem> {
    let fs = |kind: &str, label: Option<String>, uuid: Option<String>| {
        Some(Filesystem {
            kind: kind.to_string(),
            label,
            uuid,
        })
    };
    if at(head, 0, b"LUKS\xba\xbe") {
        return fs("crypto_LUKS", text(head, 24, 48), text(head, 168, 40));
    }
    if at(head, 0, b"XFSB") {
        return fs("xfs", text(head, 108, 12), uuid(head, 32));
    }
    if at(head, 0, b"hsqs") {
        return fs("squashfs", None, None);
    }
    if at(head, 1024, &0xE0F5_E1E2u32.to_le_bytes()) {
        return fs("erofs", text(head, 1024 + 64, 16), uuid(head, 1024 + 48));
    }
    if at(head, 1024 + 56, &[0x53, 0xEF]) {
        let compat = le32(head, 1024 + 92)?;
        let incompat = le32(head, 1024 + 96)?;
        // extents, 64bit, flex_bg: ext4; a journal: ext3; neither: ext2.
        let kind = if incompat & (0x40 | 0x80 | 0x200) != 0 {
            "ext4"
        } else if compat & 0x4 != 0 {
            "ext3"
        } else {
            "ext2"
        };
        return fs(kind, text(head, 1024 + 120, 16), uuid(head, 1024 + 104));
    }
    if at(head, 65536 + 64, b"_BHRfS_M") {
        return fs(
            "btrfs",
            text(head, 65536 + 299, 256),
            uuid(head, 65536 + 32),
        );
    }
    if at(head, 4096 - 10, b"SWAPSPACE2") || at(head, 4096 - 10, b"SWAP-SPACE") {
        return fs("swap", text(head, 1024 + 28, 16), uuid(head, 1024 + 12));
    }
    if at(head, 32769, b"CD001") {
        return fs("iso9660", text(head, 32768 + 40, 32), None);
    }
    if at(head, 512, b"LABELONE") && at(head, 512 + 24, b"LVM2 001") {
        return fs("LVM2_member", None, None);
    }
    if at(head, 4096, &0xA92B_4EFCu32.to_le_bytes()) {
        return fs("linux_raid_member", None, uuid(head, 4096 + 16));
    }
    if at(head, 510, &[0x55, 0xAA]) {
        // FAT32 keeps its type string, serial and label further in than FAT12/16.
        let (label_at, serial_at) = if at(head, 82, b"FAT32") {
            (71, 67)
        } else if at(head, 54, b"FAT1") || at(head, 54, b"FAT  ") {
            (43, 39)
        } else {
            return None;
        };
        let label = text(head, label_at, 11).filter(|l| l != "NO NAME");
        let serial = le32(head, serial_at).map(|s| format!("{:04X}-{:04X}", s >> 16, s & 0xFFFF));
        return fs("vfat", label, serial);
    }
    None
}

fn at(head: &[u8], offset: usize, magic: &[u8]) -> bool {
    head.get(offset..offset + magic.len()) == Some(magic)
}

fn le32(head: &[u8], offset: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        head.get(offset..offset + 4)?.try_into().ok()?,
    ))
}

/// A NUL- or space-padded string field; `None` when empty.
fn text(head: &[u8], offset: usize, len: usize) -> Option<String> {
    let bytes = head.get(offset..offset + len)?;
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(len);
    let s = String::from_utf8_lossy(&bytes[..end]).trim().to_string();
    (!s.is_empty()).then_some(s)
}

/// 16 bytes as a UUID in byte order; `None` when all zero.
fn uuid(head: &[u8], offset: usize) -> Option<String> {
    let b = head.get(offset..offset + 16)?;
    if b.iter().all(|&x| x == 0) {
        return None;
    }
    let hex: Vec<String> = b.iter().map(|x| format!("{x:02x}")).collect();
    Some(format!(
        "{}-{}-{}-{}-{}",
        hex[0..4].concat(),
        hex[4..6].concat(),
        hex[6..8].concat(),
        hex[8..10].concat(),
        hex[10..16].concat()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> Vec<u8> {
        vec![0u8; PROBE_BYTES]
    }

    fn put(img: &mut [u8], offset: usize, bytes: &[u8]) {
        img[offset..offset + bytes.len()].copy_from_slice(bytes);
    }

    const UUID: [u8; 16] = [
        0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd,
        0xef,
    ];
    const UUID_TEXT: &str = "12345678-9abc-def0-0123-456789abcdef";

    #[test]
    fn ext_family() {
        let mut img = image();
        put(&mut img, 1024 + 56, &[0x53, 0xEF]);
        put(&mut img, 1024 + 104, &UUID);
        put(&mut img, 1024 + 120, b"STATE\0\0\0");
        assert_eq!(filesystem(&img).unwrap().kind, "ext2");
        put(&mut img, 1024 + 92, &4u32.to_le_bytes());
        assert_eq!(filesystem(&img).unwrap().kind, "ext3");
        put(&mut img, 1024 + 96, &0x2C2u32.to_le_bytes());
        assert_eq!(
            filesystem(&img),
            Some(Filesystem {
                kind: "ext4".into(),
                label: Some("STATE".into()),
                uuid: Some(UUID_TEXT.into())
            })
        );
        assert_eq!(partition_table(&img), None);
    }

    #[test]
    fn other_filesystems() {
        // (bytes written at offsets, the kind found, its label)
        type Case<'a> = (Vec<(usize, &'a [u8])>, &'a str, Option<&'a str>);
        let cases: Vec<Case> = vec![
            (vec![(0, b"XFSB"), (108, b"data")], "xfs", Some("data")),
            (vec![(0, b"hsqs")], "squashfs", None),
            (
                vec![(1024, &[0xE2, 0xE1, 0xF5, 0xE0]), (1024 + 64, b"root")],
                "erofs",
                Some("root"),
            ),
            (
                vec![(65536 + 64, b"_BHRfS_M"), (65536 + 299, b"pool")],
                "btrfs",
                Some("pool"),
            ),
            (
                vec![(4086, b"SWAPSPACE2"), (1024 + 28, b"swap0")],
                "swap",
                Some("swap0"),
            ),
            (
                vec![
                    (32769, b"CD001"),
                    (32768 + 40, b"cidata                          "),
                ],
                "iso9660",
                Some("cidata"),
            ),
            (vec![(0, b"LUKS\xba\xbe")], "crypto_LUKS", None),
            (
                vec![(512, b"LABELONE"), (536, b"LVM2 001")],
                "LVM2_member",
                None,
            ),
            (
                vec![(4096, &[0xFC, 0x4E, 0x2B, 0xA9])],
                "linux_raid_member",
                None,
            ),
        ];
        for (fields, kind, label) in cases {
            let mut img = image();
            for (offset, bytes) in fields {
                put(&mut img, offset, bytes);
            }
            let fs = filesystem(&img).unwrap_or_else(|| panic!("{kind} not found"));
            assert_eq!(fs.kind, kind);
            assert_eq!(fs.label.as_deref(), label, "{kind}");
        }
    }

    #[test]
    fn fat_and_partition_tables() {
        let mut fat32 = image();
        put(&mut fat32, 510, &[0x55, 0xAA]);
        put(&mut fat32, 82, b"FAT32   ");
        put(&mut fat32, 67, &0x1234_ABCDu32.to_le_bytes());
        put(&mut fat32, 71, b"CIDATA     ");
        let fs = filesystem(&fat32).unwrap();
        assert_eq!(
            (fs.kind.as_str(), fs.label.as_deref()),
            ("vfat", Some("CIDATA"))
        );
        assert_eq!(fs.uuid.as_deref(), Some("1234-ABCD"));
        assert_eq!(
            partition_table(&fat32),
            None,
            "a FAT boot sector is not an MBR"
        );

        let mut fat16 = image();
        put(&mut fat16, 510, &[0x55, 0xAA]);
        put(&mut fat16, 54, b"FAT16   ");
        put(&mut fat16, 43, b"NO NAME    ");
        assert_eq!(filesystem(&fat16).unwrap().label, None);

        let mut mbr = image();
        put(&mut mbr, 510, &[0x55, 0xAA]);
        put(&mut mbr, 446, &[0x80, 0, 0, 0, 0x83]);
        assert_eq!(filesystem(&mbr), None);
        assert_eq!(partition_table(&mbr), Some("dos"));
        put(&mut mbr, 462, &[0x17]); // a bogus boot indicator
        assert_eq!(partition_table(&mbr), None);

        let mut gpt = image();
        put(&mut gpt, 510, &[0x55, 0xAA]);
        put(&mut gpt, 446 + 4, &[0xEE]);
        put(&mut gpt, 512, b"EFI PART");
        assert_eq!(partition_table(&gpt), Some("gpt"));
    }

    #[test]
    fn short_or_empty_input() {
        assert_eq!(filesystem(&[]), None);
        assert_eq!(partition_table(&[]), None);
        assert_eq!(filesystem(&[0u8; 600]), None);
        let mut short = vec![0u8; 1100];
        short[1024 + 56..1024 + 58].copy_from_slice(&[0x53, 0xEF]);
        // The feature words are cut off: no guess.
        assert_eq!(filesystem(&short), None);
    }
}

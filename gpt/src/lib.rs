//! A GUID Partition Table reader and writer with no I/O: bytes in, a [`Table`] out; a [`Table`]
//! in, `(offset, bytes)` writes out. The layout follows the UEFI Specification 2.10, section 5
//! ("GUID Partition Table (GPT) Disk Layout").
//!
//! Two users:
//! - image-build lays the disk image out ([`Table::layout`]) and writes [`Table::to_writes`]
//!   into the image file; with seeded GUIDs ([`Guid::from_seed`]) the result is reproducible.
//! - PID 1, on first boot, finds the image written to a larger disk: it reads the first
//!   [`HEAD_BYTES`] of the disk, [`Table::parse`]s them with the device's real size, and when
//!   [`Table::can_grow_last`] or not [`Table::backup_at_end`], writes
//!   [`Table::grow_last`]`(size).to_writes()`: the last partition then reaches the last usable
//!   LBA and the backup table sits at the end of the disk.
//!
//! Only 512-byte logical sectors ([`SECTOR`]) are supported, and only the standard form of the
//! table, the one every common tool writes: the entry array at LBA 2, 128 entries of 128 bytes,
//! header revision 1.0, header size 92. [`Table::parse`] rejects anything else with an
//! [`Error`] that says what it found.
//!
//! Partition numbers: [`Table::partitions`] holds the used entries in entry order, and a table
//! with an unused entry before a used one is rejected ([`Error::EntryGap`]), so index `i` of
//! `partitions` is always entry `i`, the kernel's partition number `i + 1`. Rewriting a parsed
//! table therefore never renumbers partitions.

mod guid;
pub mod sysfs;
mod table;

pub use guid::Guid;
pub use table::{Partition, PartitionSpec, Table};

/// The logical sector size, in bytes: the only one supported (4Kn disks are not).
pub const SECTOR: u64 = 512;

/// Number of entries in the partition entry array.
pub const ENTRY_COUNT: usize = 128;

/// Size of one partition entry, in bytes.
pub const ENTRY_SIZE: usize = 128;

/// Sectors taken by the partition entry array (128 entries of 128 bytes).
pub const ENTRIES_SECTORS: u64 = (ENTRY_COUNT * ENTRY_SIZE) as u64 / SECTOR;

/// Sectors at the start of the disk that hold the protective MBR, the primary header and the
/// primary entry array; also the first usable LBA.
pub const HEAD_SECTORS: u64 = 2 + ENTRIES_SECTORS;

/// How many bytes from the start of the disk [`Table::parse`] needs.
pub const HEAD_BYTES: usize = (HEAD_SECTORS * SECTOR) as usize;

/// Sectors at the end of the disk that hold the backup entry array and backup header.
pub const TAIL_SECTORS: u64 = ENTRIES_SECTORS + 1;

/// Partition starts laid out by [`Table::layout`] are multiples of this many sectors (1 MiB).
pub const ALIGNMENT_SECTORS: u64 = 2048;

/// The most UTF-16 code units a partition name can have.
pub const NAME_UNITS: usize = 36;

/// The smallest disk that can hold a table: head, one usable sector, tail.
pub const MIN_DISK_SECTORS: u64 = HEAD_SECTORS + 1 + TAIL_SECTORS;

/// Well-known partition type GUIDs, from the UAPI Group's Discoverable Partitions Specification
/// (<https://uapi-group.org/specifications/specs/discoverable_partitions_specification/>) and,
/// for the ESP, the UEFI Specification.
pub mod types {
    use crate::Guid;

    /// EFI System Partition.
    pub const ESP: Guid = Guid::from_u128(0xc12a7328_f81f_11d2_ba4b_00a0c93ec93b);
    /// Root partition for x86-64 (`SD_GPT_ROOT_X86_64`).
    pub const ROOT_X86_64: Guid = Guid::from_u128(0x4f68bce3_e8cd_4db1_96e7_fbcaf984b709);
    /// dm-verity hash data of the x86-64 root partition (`SD_GPT_ROOT_X86_64_VERITY`).
    pub const ROOT_VERITY_X86_64: Guid = Guid::from_u128(0x2c7357ed_ebd2_46d9_aec1_23d437ec2bf5);
    /// Variable data, mounted on `/var` (`SD_GPT_VAR`).
    pub const VAR: Guid = Guid::from_u128(0x4d21b016_b534_45c2_a9fb_5c16e091fd2d);
    /// Generic Linux data (`SD_GPT_LINUX_GENERIC`).
    pub const LINUX_DATA: Guid = Guid::from_u128(0x0fc63daf_8483_4772_8e79_3d69d8477de4);
}

/// Why a table could not be parsed, laid out or grown. Partition indexes are 0-based entry
/// indexes (the kernel's partition number minus one).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid GUID {text:?}: expected xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx in hex")]
    InvalidGuid { text: String },

    #[error("need the first {need} bytes of the disk to read its GPT, got {len}")]
    HeadTooShort { len: usize, need: usize },

    #[error("no GPT header at LBA 1: signature is {found:02x?}, not \"EFI PART\"")]
    BadSignature { found: [u8; 8] },

    #[error("GPT header revision {revision:#010x} is not supported (only 1.0, 0x00010000)")]
    UnsupportedRevision { revision: u32 },

    #[error("GPT header size {size} is not supported (only 92)")]
    UnsupportedHeaderSize { size: u32 },

    #[error("GPT header CRC32 mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    HeaderCrc { stored: u32, computed: u32 },

    #[error("primary GPT header claims to be at LBA {my_lba}, not LBA 1")]
    HeaderNotAtLba1 { my_lba: u64 },

    #[error(
        "partition entry array at LBA {lba} with {count} entries of {size} bytes is not \
         supported (only LBA 2, 128 entries of 128 bytes)"
    )]
    UnsupportedEntryArray { lba: u64, count: u32, size: u32 },

    #[error(
        "GPT partition entries CRC32 mismatch: stored {stored:#010x}, computed {computed:#010x}"
    )]
    EntriesCrc { stored: u32, computed: u32 },

    #[error(
        "GPT header's usable range {first_usable}..={last_usable} is invalid with the backup \
         header at LBA {alternate_lba}"
    )]
    BadUsableRange {
        first_usable: u64,
        last_usable: u64,
        alternate_lba: u64,
    },

    #[error(
        "the disk has {disk_sectors} sectors, the partition table needs at least {needed_sectors}"
    )]
    DiskSmallerThanTable {
        disk_sectors: u64,
        needed_sectors: u64,
    },

    #[error("disk size {bytes} bytes is not a whole number of {sector}-byte sectors", sector = SECTOR)]
    DiskNotWholeSectors { bytes: u64 },

    #[error(
        "partition entry {empty} is unused but entry {used} after it is used; only contiguous entries are supported"
    )]
    EntryGap { empty: usize, used: usize },

    #[error("partition entry {index}: name is not valid UTF-16")]
    NameNotUtf16 { index: usize },

    #[error("partition name {name:?} is {units} UTF-16 code units long, at most 36 fit")]
    NameTooLong { name: String, units: usize },

    #[error("partition name {name:?} contains a NUL character")]
    NameContainsNul { name: String },

    #[error("{count} partitions, at most 128 fit")]
    TooManyPartitions { count: usize },

    #[error("partition {index} has the all-zero type GUID, which marks an unused entry")]
    ZeroTypeGuid { index: usize },

    #[error("partition {index} ends (LBA {last_lba}) before it starts (LBA {first_lba})")]
    EndsBeforeStart {
        index: usize,
        first_lba: u64,
        last_lba: u64,
    },

    #[error(
        "partition {index} (LBA {first_lba}..={last_lba}) lies outside the usable range \
         {first_usable}..={last_usable}"
    )]
    OutsideUsable {
        index: usize,
        first_lba: u64,
        last_lba: u64,
        first_usable: u64,
        last_usable: u64,
    },

    #[error("partitions {first} and {second} overlap")]
    Overlap { first: usize, second: usize },

    #[error("partition {name:?} has size 0")]
    ZeroSize { name: String },

    #[error("partition {name:?} takes the rest of the disk but is not the last one")]
    RestNotLast { name: String },

    #[error(
        "partition {name:?} does not fit: it would end at LBA {last_lba}, past the last usable \
         LBA {last_usable}"
    )]
    DoesNotFit {
        name: String,
        last_lba: u64,
        last_usable: u64,
    },

    #[error("the table has no partitions")]
    NoPartitions,
}

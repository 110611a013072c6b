//! The partition table: laying it out, encoding it, parsing it, growing it.

use crate::{
    ALIGNMENT_SECTORS, ENTRY_COUNT, ENTRY_SIZE, Error, Guid, HEAD_BYTES, HEAD_SECTORS,
    MIN_DISK_SECTORS, NAME_UNITS, SECTOR, TAIL_SECTORS,
};

const SIGNATURE: [u8; 8] = *b"EFI PART";
const REVISION: u32 = 0x0001_0000;
const HEADER_SIZE: u32 = 92;
const ENTRIES_LBA: u64 = 2;
const ENTRIES_BYTES: usize = ENTRY_COUNT * ENTRY_SIZE;
const SECTOR_BYTES: usize = SECTOR as usize;

/// One used partition entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    pub type_guid: Guid,
    pub unique_guid: Guid,
    pub first_lba: u64,
    /// Inclusive.
    pub last_lba: u64,
    /// The attribute bits (bit 0: required, bit 2: legacy BIOS bootable, 48..=63: type-specific,
    /// e.g. the Discoverable Partitions Specification's read-only bit 60).
    pub attributes: u64,
    /// UTF-16LE on disk, at most [`NAME_UNITS`] (36) code units, no NUL.
    pub name: String,
}

impl Partition {
    /// Number of sectors.
    pub fn sectors(&self) -> u64 {
        self.last_lba
            .saturating_sub(self.first_lba)
            .saturating_add(1)
    }

    /// Size in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.sectors().saturating_mul(SECTOR)
    }

    /// Offset of the first byte from the start of the disk.
    pub fn offset_bytes(&self) -> u64 {
        self.first_lba.saturating_mul(SECTOR)
    }
}

/// A partition for [`Table::layout`] to place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionSpec {
    pub name: String,
    pub type_guid: Guid,
    pub unique_guid: Guid,
    /// Rounded up to whole sectors; `None`: the rest of the disk (only for the last spec).
    pub size_bytes: Option<u64>,
    pub attributes: u64,
}

/// A GUID partition table for a disk of `disk_sectors` sectors of [`SECTOR`] bytes.
///
/// A table from [`Table::layout`], [`Table::parse`] or [`Table::grow_last`] is valid (see
/// [`Table::validate`]); one built or changed by hand should be validated before
/// [`Table::to_writes`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    pub disk_guid: Guid,
    /// The size of the disk the table describes (for a parsed table: the size passed to
    /// [`Table::parse`], the device's current size).
    pub disk_sectors: u64,
    /// Where the primary header says the backup header is. `disk_sectors - 1` unless the table
    /// was parsed from a disk larger than the one it was written for; [`Table::to_writes`]
    /// always puts the backup at the end of the disk.
    pub alternate_lba: u64,
    /// The used entries, in entry order: index `i` is entry `i`, partition number `i + 1`.
    pub partitions: Vec<Partition>,
}

impl Table {
    /// Lays partitions out in order from LBA 2048 (1 MiB), each start aligned to 1 MiB
    /// ([`ALIGNMENT_SECTORS`]), sizes in bytes rounded up to whole sectors; a size of `None`
    /// means "the rest of the disk", up to the last usable LBA (only allowed for the last spec).
    /// Errors if `disk_bytes` is not whole sectors or the partitions do not fit.
    pub fn layout(
        disk_guid: Guid,
        disk_bytes: u64,
        specs: &[PartitionSpec],
    ) -> Result<Table, Error> {
        if !disk_bytes.is_multiple_of(SECTOR) {
            return Err(Error::DiskNotWholeSectors { bytes: disk_bytes });
        }
        let disk_sectors = disk_bytes / SECTOR;
        if disk_sectors < MIN_DISK_SECTORS {
            return Err(Error::DiskSmallerThanTable {
                disk_sectors,
                needed_sectors: MIN_DISK_SECTORS,
            });
        }
        if specs.len() > ENTRY_COUNT {
            return Err(Error::TooManyPartitions { count: specs.len() });
        }
        let last_usable = disk_sectors - TAIL_SECTORS - 1;
        let mut partitions = Vec::with_capacity(specs.len());
        let mut first_lba = ALIGNMENT_SECTORS;
        for (index, spec) in specs.iter().enumerate() {
            let does_not_fit = |last_lba| Error::DoesNotFit {
                name: spec.name.clone(),
                last_lba,
                last_usable,
            };
            let last_lba = match spec.size_bytes {
                Some(0) => {
                    return Err(Error::ZeroSize {
                        name: spec.name.clone(),
                    });
                }
                Some(bytes) => (first_lba - 1).saturating_add(bytes.div_ceil(SECTOR)),
                None if index + 1 != specs.len() => {
                    return Err(Error::RestNotLast {
                        name: spec.name.clone(),
                    });
                }
                None if first_lba > last_usable => return Err(does_not_fit(first_lba)),
                None => last_usable,
            };
            if last_lba > last_usable {
                return Err(does_not_fit(last_lba));
            }
            partitions.push(Partition {
                type_guid: spec.type_guid,
                unique_guid: spec.unique_guid,
                first_lba,
                last_lba,
                attributes: spec.attributes,
                name: spec.name.clone(),
            });
            // Cannot overflow: last_lba <= last_usable < u64::MAX / SECTOR.
            first_lba = (last_lba + 1).next_multiple_of(ALIGNMENT_SECTORS);
        }
        let table = Table {
            disk_guid,
            disk_sectors,
            alternate_lba: disk_sectors - 1,
            partitions,
        };
        table.validate()?;
        Ok(table)
    }

    /// The first LBA a partition may use: 34, after the protective MBR, the primary header and
    /// the entry array.
    pub fn first_usable(&self) -> u64 {
        HEAD_SECTORS
    }

    /// The last LBA a partition may use: `disk_sectors - 34`, before the backup entry array and
    /// header.
    pub fn last_usable(&self) -> u64 {
        self.disk_sectors.saturating_sub(TAIL_SECTORS + 1)
    }

    /// Checks what [`Table::to_writes`] relies on: the disk holds at least
    /// [`MIN_DISK_SECTORS`]; at most 128 partitions; each with a non-zero type GUID, a name of at
    /// most 36 UTF-16 units without NUL, `first_lba <= last_lba`, inside the usable range; no two
    /// overlapping.
    pub fn validate(&self) -> Result<(), Error> {
        if self.disk_sectors < MIN_DISK_SECTORS {
            return Err(Error::DiskSmallerThanTable {
                disk_sectors: self.disk_sectors,
                needed_sectors: MIN_DISK_SECTORS,
            });
        }
        check_partitions(&self.partitions, self.first_usable(), self.last_usable())
    }

    /// The bytes to write, as `(byte offset, bytes)` pairs, to be applied in order:
    /// 1. at `(disk_sectors - 33) * 512`: the backup entry array and, in the disk's last sector,
    ///    the backup header (my LBA `disk_sectors - 1`, alternate LBA 1, entries at
    ///    `disk_sectors - 33`);
    /// 2. at 0: the protective MBR (LBA 0), the primary header (LBA 1, alternate LBA
    ///    `disk_sectors - 1`) and the entry array (LBA 2..=33).
    ///
    /// The backup comes first so that an interrupted write leaves the old primary table intact.
    /// Both copies describe the same partitions; the table's `alternate_lba` is not used.
    pub fn to_writes(&self) -> Vec<(u64, Vec<u8>)> {
        let entries = self.encode_entries();
        let entries_crc = crc32fast::hash(&entries);
        let last_lba = self.disk_sectors.saturating_sub(1);
        let backup_entries_lba = self.disk_sectors.saturating_sub(TAIL_SECTORS);

        let mut tail = entries.clone();
        tail.extend_from_slice(&self.encode_header(last_lba, 1, backup_entries_lba, entries_crc));

        let mut head = Vec::with_capacity(HEAD_BYTES);
        head.extend_from_slice(&protective_mbr(self.disk_sectors));
        head.extend_from_slice(&self.encode_header(1, last_lba, ENTRIES_LBA, entries_crc));
        head.extend_from_slice(&entries);

        vec![(backup_entries_lba * SECTOR, tail), (0, head)]
    }

    /// Parses the primary header at LBA 1 and its entries. `head` holds at least the first
    /// [`HEAD_BYTES`] (34 sectors) of the disk; `disk_sectors` is the current size of the device,
    /// which may be larger than when the table was written (then `alternate_lba` is not
    /// `disk_sectors - 1`).
    ///
    /// Verifies the signature, revision (1.0), header size (92), header CRC32, that the header
    /// is at LBA 1, the entry array's form (LBA 2, 128 x 128 bytes), the entries' CRC32, the
    /// usable range against the backup header's position and the disk's size, and that the
    /// partitions lie within the header's usable range, do not overlap, have valid names and
    /// leave no unused entry before a used one. The backup table and the protective MBR are not
    /// read.
    pub fn parse(head: &[u8], disk_sectors: u64) -> Result<Table, Error> {
        if head.len() < HEAD_BYTES {
            return Err(Error::HeadTooShort {
                len: head.len(),
                need: HEAD_BYTES,
            });
        }
        let header = &head[SECTOR_BYTES..2 * SECTOR_BYTES];
        let found: [u8; 8] = bytes_at(header, 0);
        if found != SIGNATURE {
            return Err(Error::BadSignature { found });
        }
        let revision = u32_at(header, 8);
        if revision != REVISION {
            return Err(Error::UnsupportedRevision { revision });
        }
        let size = u32_at(header, 12);
        if size != HEADER_SIZE {
            return Err(Error::UnsupportedHeaderSize { size });
        }
        let stored = u32_at(header, 16);
        let computed = header_crc(&header[..HEADER_SIZE as usize]);
        if stored != computed {
            return Err(Error::HeaderCrc { stored, computed });
        }
        let my_lba = u64_at(header, 24);
        if my_lba != 1 {
            return Err(Error::HeaderNotAtLba1 { my_lba });
        }
        let alternate_lba = u64_at(header, 32);
        let first_usable = u64_at(header, 40);
        let last_usable = u64_at(header, 48);
        let disk_guid = Guid::from_disk_bytes(bytes_at(header, 56));
        let (lba, count, entry_size) = (u64_at(header, 72), u32_at(header, 80), u32_at(header, 84));
        if lba != ENTRIES_LBA || count as usize != ENTRY_COUNT || entry_size as usize != ENTRY_SIZE
        {
            return Err(Error::UnsupportedEntryArray {
                lba,
                count,
                size: entry_size,
            });
        }
        let entries = &head[2 * SECTOR_BYTES..2 * SECTOR_BYTES + ENTRIES_BYTES];
        let stored = u32_at(header, 88);
        let computed = crc32fast::hash(entries);
        if stored != computed {
            return Err(Error::EntriesCrc { stored, computed });
        }

        if alternate_lba >= disk_sectors {
            return Err(Error::DiskSmallerThanTable {
                disk_sectors,
                needed_sectors: alternate_lba.saturating_add(1),
            });
        }
        let usable_ok = first_usable >= HEAD_SECTORS
            && first_usable <= last_usable
            && alternate_lba
                .checked_sub(TAIL_SECTORS)
                .is_some_and(|limit| last_usable <= limit);
        if !usable_ok {
            return Err(Error::BadUsableRange {
                first_usable,
                last_usable,
                alternate_lba,
            });
        }

        let mut partitions = Vec::new();
        let mut first_unused = None;
        for (index, entry) in entries.chunks_exact(ENTRY_SIZE).enumerate() {
            let type_guid = Guid::from_disk_bytes(bytes_at(entry, 0));
            if type_guid.is_zero() {
                first_unused.get_or_insert(index);
                continue;
            }
            if let Some(empty) = first_unused {
                return Err(Error::EntryGap { empty, used: index });
            }
            partitions.push(Partition {
                type_guid,
                unique_guid: Guid::from_disk_bytes(bytes_at(entry, 16)),
                first_lba: u64_at(entry, 32),
                last_lba: u64_at(entry, 40),
                attributes: u64_at(entry, 48),
                name: decode_name(&entry[56..ENTRY_SIZE]).ok_or(Error::NameNotUtf16 { index })?,
            });
        }
        check_partitions(&partitions, first_usable, last_usable)?;
        // The header's usable range lies within this disk's (checked above), so the table is
        // valid for `disk_sectors` too.
        Ok(Table {
            disk_guid,
            disk_sectors,
            alternate_lba,
            partitions,
        })
    }

    /// Whether the last partition (the one with the highest `first_lba`) ends before the last
    /// usable LBA of the disk, i.e. whether [`Table::grow_last`] would change its size.
    pub fn can_grow_last(&self) -> bool {
        self.last_partition()
            .is_some_and(|(_, partition)| partition.last_lba < self.last_usable())
    }

    /// Whether the backup header is where it belongs, in the disk's last sector. False for an
    /// image written to a larger disk: writing [`Table::to_writes`] (grown or not) fixes it.
    pub fn backup_at_end(&self) -> bool {
        self.alternate_lba == self.disk_sectors.saturating_sub(1)
    }

    /// The table for a disk of `disk_sectors`, with the last partition (the one with the highest
    /// `first_lba`) ending at the disk's last usable LBA and the backup at the disk's end. Errors
    /// if the table has no partitions or the disk is too small to hold them with the backup
    /// table (which includes a disk on which the last partition would shrink).
    pub fn grow_last(&self, disk_sectors: u64) -> Result<Table, Error> {
        let (index, last) = self.last_partition().ok_or(Error::NoPartitions)?;
        let needed_sectors = last
            .last_lba
            .saturating_add(TAIL_SECTORS + 1)
            .max(MIN_DISK_SECTORS);
        if disk_sectors < needed_sectors {
            return Err(Error::DiskSmallerThanTable {
                disk_sectors,
                needed_sectors,
            });
        }
        let mut grown = self.clone();
        grown.disk_sectors = disk_sectors;
        grown.alternate_lba = disk_sectors - 1;
        grown.partitions[index].last_lba = grown.last_usable();
        grown.validate()?;
        Ok(grown)
    }

    /// The first partition named `name`, with its entry index (the kernel's partition number
    /// is the index + 1).
    pub fn find_by_name(&self, name: &str) -> Option<(usize, &Partition)> {
        self.partitions
            .iter()
            .enumerate()
            .find(|(_, partition)| partition.name == name)
    }

    fn last_partition(&self) -> Option<(usize, &Partition)> {
        self.partitions
            .iter()
            .enumerate()
            .max_by_key(|(_, partition)| partition.first_lba)
    }

    fn encode_entries(&self) -> Vec<u8> {
        let mut entries = vec![0u8; ENTRIES_BYTES];
        for (partition, entry) in self
            .partitions
            .iter()
            .zip(entries.chunks_exact_mut(ENTRY_SIZE))
        {
            entry[0..16].copy_from_slice(&partition.type_guid.to_disk_bytes());
            entry[16..32].copy_from_slice(&partition.unique_guid.to_disk_bytes());
            entry[32..40].copy_from_slice(&partition.first_lba.to_le_bytes());
            entry[40..48].copy_from_slice(&partition.last_lba.to_le_bytes());
            entry[48..56].copy_from_slice(&partition.attributes.to_le_bytes());
            // A name that is too long was refused by validate(); never write past the entry.
            for (unit, slot) in partition
                .name
                .encode_utf16()
                .zip(entry[56..].chunks_exact_mut(2))
            {
                slot.copy_from_slice(&unit.to_le_bytes());
            }
        }
        entries
    }

    fn encode_header(
        &self,
        my_lba: u64,
        alternate_lba: u64,
        entries_lba: u64,
        entries_crc: u32,
    ) -> [u8; SECTOR_BYTES] {
        let mut header = [0u8; SECTOR_BYTES];
        header[0..8].copy_from_slice(&SIGNATURE);
        header[8..12].copy_from_slice(&REVISION.to_le_bytes());
        header[12..16].copy_from_slice(&HEADER_SIZE.to_le_bytes());
        // 16..20: CRC32, filled in last; 20..24: reserved.
        header[24..32].copy_from_slice(&my_lba.to_le_bytes());
        header[32..40].copy_from_slice(&alternate_lba.to_le_bytes());
        header[40..48].copy_from_slice(&self.first_usable().to_le_bytes());
        header[48..56].copy_from_slice(&self.last_usable().to_le_bytes());
        header[56..72].copy_from_slice(&self.disk_guid.to_disk_bytes());
        header[72..80].copy_from_slice(&entries_lba.to_le_bytes());
        header[80..84].copy_from_slice(&(ENTRY_COUNT as u32).to_le_bytes());
        header[84..88].copy_from_slice(&(ENTRY_SIZE as u32).to_le_bytes());
        header[88..92].copy_from_slice(&entries_crc.to_le_bytes());
        let crc = header_crc(&header[..HEADER_SIZE as usize]);
        header[16..20].copy_from_slice(&crc.to_le_bytes());
        header
    }
}

#[cfg(test)]
mod tests;

/// The protective MBR: one partition of type 0xEE from LBA 1 over the rest of the disk (capped
/// at what 32 bits can say), so MBR-only tools see the disk as in use.
fn protective_mbr(disk_sectors: u64) -> [u8; SECTOR_BYTES] {
    let mut mbr = [0u8; SECTOR_BYTES];
    let sectors = u32::try_from(disk_sectors.saturating_sub(1)).unwrap_or(u32::MAX);
    let entry = &mut mbr[446..462];
    entry[0] = 0x00; // not bootable
    entry[1..4].copy_from_slice(&[0x00, 0x02, 0x00]); // CHS of LBA 1
    entry[4] = 0xee;
    entry[5..8].copy_from_slice(&[0xff, 0xff, 0xff]); // CHS: beyond what CHS can say
    entry[8..12].copy_from_slice(&1u32.to_le_bytes());
    entry[12..16].copy_from_slice(&sectors.to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xaa;
    mbr
}

/// CRC32 of the header with its CRC field taken as zero.
fn header_crc(header: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&header[..16]);
    hasher.update(&[0; 4]);
    hasher.update(&header[20..]);
    hasher.finalize()
}

/// The name from its 72 on-disk bytes: UTF-16LE up to the first NUL. `None` if not valid UTF-16.
fn decode_name(bytes: &[u8]) -> Option<String> {
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|pair| u16::from_le_bytes([pair[0], pair[1]]))
        .take_while(|&unit| unit != 0)
        .collect();
    String::from_utf16(&units).ok()
}

fn check_name(name: &str) -> Result<(), Error> {
    let units = name.encode_utf16().count();
    if units > NAME_UNITS {
        return Err(Error::NameTooLong {
            name: name.to_owned(),
            units,
        });
    }
    if name.contains('\0') {
        return Err(Error::NameContainsNul {
            name: name.to_owned(),
        });
    }
    Ok(())
}

fn check_partitions(
    partitions: &[Partition],
    first_usable: u64,
    last_usable: u64,
) -> Result<(), Error> {
    if partitions.len() > ENTRY_COUNT {
        return Err(Error::TooManyPartitions {
            count: partitions.len(),
        });
    }
    for (index, partition) in partitions.iter().enumerate() {
        if partition.type_guid.is_zero() {
            return Err(Error::ZeroTypeGuid { index });
        }
        check_name(&partition.name)?;
        let Partition {
            first_lba,
            last_lba,
            ..
        } = *partition;
        if first_lba > last_lba {
            return Err(Error::EndsBeforeStart {
                index,
                first_lba,
                last_lba,
            });
        }
        if first_lba < first_usable || last_lba > last_usable {
            return Err(Error::OutsideUsable {
                index,
                first_lba,
                last_lba,
                first_usable,
                last_usable,
            });
        }
    }
    // Sorted by start, the ranges are disjoint iff each ends before the next one starts.
    let mut order: Vec<usize> = (0..partitions.len()).collect();
    order.sort_by_key(|&index| partitions[index].first_lba);
    for pair in order.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if partitions[b].first_lba <= partitions[a].last_lba {
            return Err(Error::Overlap {
                first: a.min(b),
                second: a.max(b),
            });
        }
    }
    Ok(())
}

fn bytes_at<const N: usize>(bytes: &[u8], offset: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[offset..offset + N]);
    out
}

fn u32_at(bytes: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes(bytes_at(bytes, offset))
}

fn u64_at(bytes: &[u8], offset: usize) -> u64 {
    u64::from_le_bytes(bytes_at(bytes, offset))
}

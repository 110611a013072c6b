use super::*;
use crate::types;

const MIB: u64 = 1024 * 1024;

fn spec(name: &str, type_guid: Guid, seed: u8, size_bytes: Option<u64>) -> PartitionSpec {
    PartitionSpec {
        name: name.to_owned(),
        type_guid,
        unique_guid: Guid::from_seed([seed; 16]),
        size_bytes,
        attributes: 0,
    }
}

/// ESP, ROOT-A, ROOT-B, STATE (the rest), as image-build lays them out, on a small disk.
fn shoal_specs() -> Vec<PartitionSpec> {
    let mut root_b = spec("ROOT-B", types::ROOT_X86_64, 3, Some(16 * MIB));
    root_b.attributes = 1 << 60;
    vec![
        spec("ESP", types::ESP, 1, Some(8 * MIB)),
        spec("ROOT-A", types::ROOT_X86_64, 2, Some(16 * MIB)),
        root_b,
        spec("STATE", types::VAR, 4, None),
    ]
}

fn shoal_table(disk_bytes: u64) -> Table {
    Table::layout(Guid::from_seed([0xd1; 16]), disk_bytes, &shoal_specs()).unwrap()
}

/// A zeroed disk of `disk_sectors` with the table's writes applied.
fn disk_with(table: &Table) -> Vec<u8> {
    let mut disk = vec![0u8; (table.disk_sectors * SECTOR) as usize];
    apply(&mut disk, table);
    disk
}

fn apply(disk: &mut [u8], table: &Table) {
    for (offset, bytes) in table.to_writes() {
        let offset = offset as usize;
        disk[offset..offset + bytes.len()].copy_from_slice(&bytes);
    }
}

fn sectors(disk: &[u8]) -> u64 {
    disk.len() as u64 / SECTOR
}

const HEADER: usize = SECTOR_BYTES;
const ENTRIES: usize = 2 * SECTOR_BYTES;

/// Changes the primary header, then fixes its CRC so that only the change is wrong.
fn edit_header(disk: &mut [u8], edit: impl FnOnce(&mut [u8])) {
    let header = &mut disk[HEADER..HEADER + SECTOR_BYTES];
    edit(header);
    let crc = header_crc(&header[..HEADER_SIZE as usize]);
    header[16..20].copy_from_slice(&crc.to_le_bytes());
}

/// Changes the primary entry array, then fixes both CRCs.
fn edit_entries(disk: &mut [u8], edit: impl FnOnce(&mut [u8])) {
    edit(&mut disk[ENTRIES..ENTRIES + ENTRIES_BYTES]);
    let crc = crc32fast::hash(&disk[ENTRIES..ENTRIES + ENTRIES_BYTES]);
    edit_header(disk, |header| {
        header[88..92].copy_from_slice(&crc.to_le_bytes())
    });
}

fn entry(index: usize) -> std::ops::Range<usize> {
    index * ENTRY_SIZE..(index + 1) * ENTRY_SIZE
}

/// The first 34 sectors of a disk of 64 MiB.
fn head_of(table: &Table) -> Vec<u8> {
    assert_eq!(table.disk_sectors, 64 * MIB / SECTOR);
    table.to_writes().swap_remove(1).1
}

/// Parses a whole disk, or the head of a disk of 64 MiB.
fn parse(disk: &[u8]) -> Result<Table, Error> {
    let disk_sectors = if disk.len() == HEAD_BYTES {
        64 * MIB / SECTOR
    } else {
        sectors(disk)
    };
    Table::parse(&disk[..HEAD_BYTES], disk_sectors)
}

#[test]
fn layout_places_partitions_aligned_in_order() {
    let table = shoal_table(64 * MIB);
    let n = 64 * MIB / SECTOR;
    assert_eq!(table.disk_sectors, n);
    assert_eq!(table.alternate_lba, n - 1);
    assert_eq!((table.first_usable(), table.last_usable()), (34, n - 34));
    let spans: Vec<(u64, u64)> = table
        .partitions
        .iter()
        .map(|p| (p.first_lba, p.last_lba))
        .collect();
    assert_eq!(
        spans,
        [
            (2048, 2048 + 16384 - 1),
            (18432, 18432 + 32768 - 1),
            (51200, 51200 + 32768 - 1),
            (83968, n - 34)
        ]
    );
    assert_eq!(table.partitions[0].size_bytes(), 8 * MIB);
    assert_eq!(table.partitions[1].offset_bytes(), 9 * MIB);
    assert_eq!(table.partitions[2].attributes, 1 << 60);
    assert_eq!(table.partitions[3].name, "STATE");
    assert!(!table.can_grow_last());
    assert!(table.backup_at_end());
}

#[test]
fn layout_rounds_sizes_up_to_sectors_and_starts_up_to_mib() {
    let specs = [
        spec("one byte", types::LINUX_DATA, 1, Some(1)),
        spec("513 bytes", types::LINUX_DATA, 2, Some(513)),
        spec("1 MiB", types::LINUX_DATA, 3, Some(MIB)),
        spec("1 MiB + 1", types::LINUX_DATA, 4, Some(MIB + 1)),
        spec("last", types::LINUX_DATA, 5, Some(SECTOR)),
    ];
    let table = Table::layout(Guid::zero(), 16 * MIB, &specs).unwrap();
    let spans: Vec<(u64, u64)> = table
        .partitions
        .iter()
        .map(|p| (p.first_lba, p.sectors()))
        .collect();
    assert_eq!(
        spans,
        [(2048, 1), (4096, 2), (6144, 2048), (8192, 2049), (12288, 1)]
    );
}

#[test]
fn round_trip_through_bytes() {
    let table = shoal_table(64 * MIB);
    let disk = disk_with(&table);
    assert_eq!(parse(&disk).unwrap(), table);
    // Parsing only needs the head.
    assert_eq!(
        Table::parse(&disk[..HEAD_BYTES], sectors(&disk)).unwrap(),
        table
    );
}

#[test]
fn round_trip_keeps_names_attributes_and_guids() {
    let mut specs = shoal_specs();
    specs[0].name = "𝄞".repeat(18); // 36 UTF-16 units: 18 surrogate pairs
    specs[1].name = "Données système".to_owned();
    specs[1].attributes = u64::MAX;
    specs[2].name = String::new();
    let table = Table::layout(types::LINUX_DATA, 64 * MIB, &specs).unwrap();
    let parsed = parse(&disk_with(&table)).unwrap();
    assert_eq!(parsed, table);
    assert_eq!(parsed.partitions[0].name.encode_utf16().count(), 36);
    assert_eq!(parsed.disk_guid, types::LINUX_DATA);
}

#[test]
fn writes_are_backup_first_then_head() {
    let table = shoal_table(64 * MIB);
    let n = table.disk_sectors;
    let writes = table.to_writes();
    let layout: Vec<(u64, usize)> = writes.iter().map(|(o, b)| (*o, b.len())).collect();
    assert_eq!(
        layout,
        [((n - 33) * SECTOR, 33 * SECTOR_BYTES), (0, HEAD_BYTES)]
    );
}

#[test]
fn headers_and_entries_are_laid_out_as_the_spec_says() {
    let table = shoal_table(64 * MIB);
    let n = table.disk_sectors;
    let disk = disk_with(&table);
    let primary = &disk[HEADER..HEADER + SECTOR_BYTES];
    let backup_at = ((n - 1) * SECTOR) as usize;
    let backup = &disk[backup_at..backup_at + SECTOR_BYTES];
    for (header, my_lba, alternate_lba, entries_lba) in
        [(primary, 1, n - 1, 2), (backup, n - 1, 1, n - 33)]
    {
        assert_eq!(&header[0..8], b"EFI PART");
        assert_eq!(u32_at(header, 8), 0x0001_0000);
        assert_eq!(u32_at(header, 12), 92);
        assert_eq!(u32_at(header, 16), header_crc(&header[..92]));
        assert_eq!(u32_at(header, 20), 0);
        assert_eq!(u64_at(header, 24), my_lba);
        assert_eq!(u64_at(header, 32), alternate_lba);
        assert_eq!(u64_at(header, 40), 34);
        assert_eq!(u64_at(header, 48), n - 34);
        assert_eq!(&header[56..72], &table.disk_guid.to_disk_bytes());
        assert_eq!(u64_at(header, 72), entries_lba);
        assert_eq!(u32_at(header, 80), 128);
        assert_eq!(u32_at(header, 84), 128);
        assert!(header[92..].iter().all(|&b| b == 0));
        let entries_at = (entries_lba * SECTOR) as usize;
        let entries = &disk[entries_at..entries_at + ENTRIES_BYTES];
        assert_eq!(u32_at(header, 88), crc32fast::hash(entries));
        // The ESP's type GUID, mixed-endian, then its name in UTF-16LE.
        assert_eq!(&entries[0..4], &[0x28, 0x73, 0x2a, 0xc1]);
        assert_eq!(&entries[56..62], &[b'E', 0, b'S', 0, b'P', 0]);
        assert!(entries[entry(4).start..].iter().all(|&b| b == 0));
    }
    assert_eq!(
        &disk[ENTRIES..ENTRIES + ENTRIES_BYTES],
        &disk[((n - 33) * SECTOR) as usize..backup_at]
    );
    // Nothing written between the primary and backup tables.
    assert!(
        disk[HEAD_BYTES..((n - 33) * SECTOR) as usize]
            .iter()
            .all(|&b| b == 0)
    );
}

#[test]
fn protective_mbr_covers_the_disk() {
    let table = shoal_table(64 * MIB);
    let disk = disk_with(&table);
    assert!(disk[..446].iter().all(|&b| b == 0));
    assert_eq!(
        &disk[446..462],
        &[
            0x00, 0x00, 0x02, 0x00, 0xee, 0xff, 0xff, 0xff, 1, 0, 0, 0, 0xff, 0xff, 0x01, 0x00
        ]
    );
    assert!(disk[462..510].iter().all(|&b| b == 0));
    assert_eq!(&disk[510..512], &[0x55, 0xaa]);

    // Past 2 TiB the size is capped at 0xFFFFFFFF; only the head is needed to check.
    let mut huge = table.clone();
    huge.disk_sectors = 1 << 40;
    let writes = huge.to_writes();
    let (offset, head) = &writes[1];
    assert_eq!(*offset, 0);
    assert_eq!(&head[458..462], &[0xff; 4]);
}

#[test]
fn every_header_byte_is_checked() {
    let disk = head_of(&shoal_table(64 * MIB));
    for offset in 0..HEADER_SIZE as usize {
        let mut bad = disk.clone();
        bad[HEADER + offset] ^= 0x01;
        let err = parse(&bad).unwrap_err();
        let expected = match offset {
            0..8 => matches!(err, Error::BadSignature { .. }),
            8..12 => matches!(err, Error::UnsupportedRevision { .. }),
            12..16 => matches!(err, Error::UnsupportedHeaderSize { .. }),
            _ => matches!(err, Error::HeaderCrc { .. }),
        };
        assert!(expected, "flipped header byte {offset}: {err}");
    }
}

#[test]
fn flipped_header_byte_is_a_header_crc_error() {
    let mut disk = disk_with(&shoal_table(64 * MIB));
    disk[HEADER + 60] ^= 0x80; // in the disk GUID
    let err = parse(&disk).unwrap_err();
    assert!(matches!(err, Error::HeaderCrc { .. }), "{err}");
    assert!(err.to_string().contains("header CRC32 mismatch"), "{err}");
}

#[test]
fn flipped_entry_byte_is_an_entries_crc_error() {
    let disk = head_of(&shoal_table(64 * MIB));
    // In used entries, in unused ones, at the array's first and last byte.
    for offset in [0, 40, 60, 5 * ENTRY_SIZE + 3, ENTRIES_BYTES - 1] {
        let mut bad = disk.clone();
        bad[ENTRIES + offset] ^= 0x04;
        let err = parse(&bad).unwrap_err();
        assert!(matches!(err, Error::EntriesCrc { .. }), "{offset}: {err}");
    }
}

#[test]
fn bad_signature() {
    let mut disk = disk_with(&shoal_table(64 * MIB));
    disk[HEADER..HEADER + 8].copy_from_slice(b"EFI PARK");
    let err = parse(&disk).unwrap_err();
    assert!(matches!(err, Error::BadSignature { found } if &found == b"EFI PARK"));
    // A blank disk.
    let blank = vec![0u8; HEAD_BYTES];
    let err = Table::parse(&blank, 1 << 20).unwrap_err();
    assert!(matches!(err, Error::BadSignature { .. }), "{err}");
}

#[test]
fn unsupported_header_forms() {
    let disk = head_of(&shoal_table(64 * MIB));
    let cases: [(usize, &[u8]); 7] = [
        (8, &0x0001_0001u32.to_le_bytes()),
        (12, &93u32.to_le_bytes()),
        (24, &2u64.to_le_bytes()),
        (72, &3u64.to_le_bytes()),
        (80, &64u32.to_le_bytes()),
        (84, &256u32.to_le_bytes()),
        (40, &33u64.to_le_bytes()),
    ];
    for (offset, value) in cases {
        let mut bad = disk.clone();
        edit_header(&mut bad, |h| {
            h[offset..offset + value.len()].copy_from_slice(value)
        });
        let err = parse(&bad).unwrap_err();
        let expected = match offset {
            8 => matches!(
                err,
                Error::UnsupportedRevision {
                    revision: 0x0001_0001
                }
            ),
            12 => matches!(err, Error::UnsupportedHeaderSize { size: 93 }),
            24 => matches!(err, Error::HeaderNotAtLba1 { my_lba: 2 }),
            72 => matches!(err, Error::UnsupportedEntryArray { lba: 3, .. }),
            80 => matches!(err, Error::UnsupportedEntryArray { count: 64, .. }),
            84 => matches!(err, Error::UnsupportedEntryArray { size: 256, .. }),
            _ => matches!(
                err,
                Error::BadUsableRange {
                    first_usable: 33,
                    ..
                }
            ),
        };
        assert!(expected, "header offset {offset}: {err}");
    }
}

#[test]
fn usable_range_must_leave_room_for_the_backup() {
    let disk = disk_with(&shoal_table(64 * MIB));
    let n = sectors(&disk);
    let mut bad = disk.clone();
    edit_header(&mut bad, |h| {
        h[48..56].copy_from_slice(&(n - 33).to_le_bytes())
    });
    let err = parse(&bad).unwrap_err();
    assert!(matches!(err, Error::BadUsableRange { .. }), "{err}");

    let mut bad = disk.clone();
    edit_header(&mut bad, |h| {
        h[40..48].copy_from_slice(&(n - 33).to_le_bytes())
    });
    let err = parse(&bad).unwrap_err();
    assert!(matches!(err, Error::BadUsableRange { .. }), "{err}");
}

#[test]
fn disk_smaller_than_the_table() {
    let disk = disk_with(&shoal_table(64 * MIB));
    let n = sectors(&disk);
    let err = Table::parse(&disk[..HEAD_BYTES], n - 1).unwrap_err();
    assert!(
        matches!(err, Error::DiskSmallerThanTable { disk_sectors, needed_sectors }
            if disk_sectors == n - 1 && needed_sectors == n),
        "{err}"
    );
}

#[test]
fn head_too_short() {
    let disk = disk_with(&shoal_table(64 * MIB));
    let err = Table::parse(&disk[..HEAD_BYTES - 1], sectors(&disk)).unwrap_err();
    assert!(matches!(err, Error::HeadTooShort { len, need: HEAD_BYTES } if len == HEAD_BYTES - 1));
}

#[test]
fn overlapping_partitions() {
    let mut disk = disk_with(&shoal_table(64 * MIB));
    // ROOT-B (entry 2) starts inside ROOT-A (entry 1).
    edit_entries(&mut disk, |e| {
        e[entry(2)][32..40].copy_from_slice(&20000u64.to_le_bytes())
    });
    let err = parse(&disk).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Overlap {
                first: 1,
                second: 2
            }
        ),
        "{err}"
    );

    // Touching ranges are not enough: the same last LBA as the next one's first.
    let mut disk = disk_with(&shoal_table(64 * MIB));
    edit_entries(&mut disk, |e| {
        e[entry(0)][40..48].copy_from_slice(&18432u64.to_le_bytes())
    });
    let err = parse(&disk).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Overlap {
                first: 0,
                second: 1
            }
        ),
        "{err}"
    );

    // Entry order does not matter: the last entry starts inside the first.
    let mut disk = disk_with(&shoal_table(64 * MIB));
    edit_entries(&mut disk, |e| {
        e[entry(3)][32..40].copy_from_slice(&2048u64.to_le_bytes())
    });
    let err = parse(&disk).unwrap_err();
    assert!(matches!(err, Error::Overlap { .. }), "{err}");
}

#[test]
fn partition_outside_usable_range() {
    let disk = disk_with(&shoal_table(64 * MIB));
    let n = sectors(&disk);
    for (index, field, value) in [(3, 40, n - 33), (0, 32, 33), (3, 40, u64::MAX)] {
        let mut bad = disk.clone();
        edit_entries(&mut bad, |e| {
            e[entry(index)][field..field + 8].copy_from_slice(&value.to_le_bytes())
        });
        let err = parse(&bad).unwrap_err();
        assert!(
            matches!(err, Error::OutsideUsable { index: i, .. } if i == index),
            "{err}"
        );
    }
}

#[test]
fn partition_ending_before_it_starts() {
    let mut disk = disk_with(&shoal_table(64 * MIB));
    edit_entries(&mut disk, |e| {
        e[entry(1)][40..48].copy_from_slice(&18000u64.to_le_bytes())
    });
    let err = parse(&disk).unwrap_err();
    assert!(
        matches!(
            err,
            Error::EndsBeforeStart {
                index: 1,
                first_lba: 18432,
                last_lba: 18000
            }
        ),
        "{err}"
    );
}

#[test]
fn unused_entry_before_a_used_one() {
    let mut disk = disk_with(&shoal_table(64 * MIB));
    edit_entries(&mut disk, |e| e[entry(1)].fill(0));
    let err = parse(&disk).unwrap_err();
    assert!(
        matches!(err, Error::EntryGap { empty: 1, used: 2 }),
        "{err}"
    );
}

#[test]
fn name_not_utf16() {
    let mut disk = disk_with(&shoal_table(64 * MIB));
    // A lone high surrogate.
    edit_entries(&mut disk, |e| {
        e[entry(2)][56..58].copy_from_slice(&0xd800u16.to_le_bytes())
    });
    let err = parse(&disk).unwrap_err();
    assert!(matches!(err, Error::NameNotUtf16 { index: 2 }), "{err}");
}

#[test]
fn name_fills_all_36_units_without_nul() {
    let mut disk = disk_with(&shoal_table(64 * MIB));
    edit_entries(&mut disk, |e| {
        for slot in e[entry(0)][56..].chunks_exact_mut(2) {
            slot.copy_from_slice(&u16::from(b'x').to_le_bytes());
        }
    });
    assert_eq!(parse(&disk).unwrap().partitions[0].name, "x".repeat(36));
}

#[test]
fn name_longer_than_36_units() {
    let mut specs = shoal_specs();
    specs[1].name = "x".repeat(37);
    let err = Table::layout(Guid::zero(), 64 * MIB, &specs).unwrap_err();
    assert!(matches!(err, Error::NameTooLong { units: 37, .. }), "{err}");

    // Counted in UTF-16 units, not chars or bytes: 19 surrogate pairs are 38 units.
    specs[1].name = "𝄞".repeat(19);
    let err = Table::layout(Guid::zero(), 64 * MIB, &specs).unwrap_err();
    assert!(matches!(err, Error::NameTooLong { units: 38, .. }), "{err}");

    specs[1].name = "a\0b".to_owned();
    let err = Table::layout(Guid::zero(), 64 * MIB, &specs).unwrap_err();
    assert!(matches!(err, Error::NameContainsNul { .. }), "{err}");
}

#[test]
fn layout_that_does_not_fit() {
    let disk_bytes = 64 * MIB;
    let last_usable = disk_bytes / SECTOR - 34;
    let mut specs = shoal_specs();
    specs[3].size_bytes = Some(64 * MIB);
    let err = Table::layout(Guid::zero(), disk_bytes, &specs).unwrap_err();
    assert!(
        matches!(&err, Error::DoesNotFit { name, last_usable: l, .. } if name == "STATE" && *l == last_usable),
        "{err}"
    );

    // Exactly to the last usable LBA fits; one sector more does not.
    let first = 83968;
    specs[3].size_bytes = Some((last_usable - first + 1) * SECTOR);
    let table = Table::layout(Guid::zero(), disk_bytes, &specs).unwrap();
    assert_eq!(table.partitions[3].last_lba, last_usable);
    specs[3].size_bytes = Some((last_usable - first + 2) * SECTOR);
    let err = Table::layout(Guid::zero(), disk_bytes, &specs).unwrap_err();
    assert!(matches!(err, Error::DoesNotFit { .. }), "{err}");

    // No room left for "the rest".
    let specs = [
        spec(
            "big",
            types::LINUX_DATA,
            1,
            Some(last_usable * SECTOR - MIB),
        ),
        spec("rest", types::LINUX_DATA, 2, None),
    ];
    let err = Table::layout(Guid::zero(), disk_bytes, &specs).unwrap_err();
    assert!(
        matches!(&err, Error::DoesNotFit { name, .. } if name == "rest"),
        "{err}"
    );

    // A size near u64::MAX does not overflow.
    let specs = [spec("huge", types::LINUX_DATA, 1, Some(u64::MAX))];
    let err = Table::layout(Guid::zero(), disk_bytes, &specs).unwrap_err();
    assert!(matches!(err, Error::DoesNotFit { .. }), "{err}");

    // A disk that cannot hold even the table.
    let err = Table::layout(Guid::zero(), 10 * SECTOR, &[]).unwrap_err();
    assert!(matches!(err, Error::DiskSmallerThanTable { .. }), "{err}");
}

#[test]
fn layout_rejects_bad_specs() {
    let mut specs = shoal_specs();
    specs[1].size_bytes = None;
    let err = Table::layout(Guid::zero(), 64 * MIB, &specs).unwrap_err();
    assert!(
        matches!(&err, Error::RestNotLast { name } if name == "ROOT-A"),
        "{err}"
    );

    let mut specs = shoal_specs();
    specs[2].size_bytes = Some(0);
    let err = Table::layout(Guid::zero(), 64 * MIB, &specs).unwrap_err();
    assert!(
        matches!(&err, Error::ZeroSize { name } if name == "ROOT-B"),
        "{err}"
    );

    let mut specs = shoal_specs();
    specs[0].type_guid = Guid::zero();
    let err = Table::layout(Guid::zero(), 64 * MIB, &specs).unwrap_err();
    assert!(matches!(err, Error::ZeroTypeGuid { index: 0 }), "{err}");

    let err = Table::layout(Guid::zero(), 64 * MIB + 1, &shoal_specs()).unwrap_err();
    assert!(matches!(err, Error::DiskNotWholeSectors { .. }), "{err}");

    let many: Vec<PartitionSpec> = (0..129)
        .map(|i| spec(&format!("p{i}"), types::LINUX_DATA, i as u8, Some(SECTOR)))
        .collect();
    let err = Table::layout(Guid::zero(), 1024 * MIB, &many).unwrap_err();
    assert!(
        matches!(err, Error::TooManyPartitions { count: 129 }),
        "{err}"
    );
    let table = Table::layout(Guid::zero(), 1024 * MIB, &many[..128]).unwrap();
    assert_eq!(parse(&disk_with(&table)).unwrap(), table);
}

#[test]
fn grow_an_image_written_to_a_larger_disk() {
    let image = shoal_table(64 * MIB);
    let old_n = image.disk_sectors;
    let mut disk = disk_with(&image);
    disk.resize((200 * MIB) as usize, 0);
    let new_n = sectors(&disk);

    let found = parse(&disk).unwrap();
    assert_eq!(found.disk_sectors, new_n);
    assert_eq!(found.alternate_lba, old_n - 1);
    assert!(!found.backup_at_end());
    assert!(found.can_grow_last());
    assert_eq!(found.partitions, image.partitions);

    let grown = found.grow_last(new_n).unwrap();
    assert_eq!(grown.disk_sectors, new_n);
    assert_eq!(grown.alternate_lba, new_n - 1);
    assert_eq!(grown.partitions[3].last_lba, new_n - 34);
    assert_eq!(grown.partitions[..3], image.partitions[..3]);
    assert!(!grown.can_grow_last());

    apply(&mut disk, &grown);
    let reparsed = parse(&disk).unwrap();
    assert_eq!(reparsed, grown);
    assert!(reparsed.backup_at_end());
    assert!(!reparsed.can_grow_last());
    // Growing again changes nothing.
    assert_eq!(reparsed.grow_last(new_n).unwrap(), reparsed);
}

#[test]
fn grow_the_partition_with_the_highest_start_not_the_last_entry() {
    let mut table = shoal_table(64 * MIB);
    table.partitions.swap(0, 3);
    let grown = table.grow_last(128 * MIB / SECTOR).unwrap();
    assert_eq!(grown.partitions[0].name, "STATE");
    assert_eq!(grown.partitions[0].last_lba, 128 * MIB / SECTOR - 34);
    assert_eq!(grown.partitions[1..], table.partitions[1..]);
}

#[test]
fn grow_to_a_smaller_disk() {
    let table = shoal_table(64 * MIB);
    let n = table.disk_sectors;
    let err = table.grow_last(n - 1).unwrap_err();
    assert!(
        matches!(err, Error::DiskSmallerThanTable { disk_sectors, needed_sectors }
            if disk_sectors == n - 1 && needed_sectors == n),
        "{err}"
    );
    let err = table.grow_last(0).unwrap_err();
    assert!(matches!(err, Error::DiskSmallerThanTable { .. }), "{err}");
    // The same size is fine and changes nothing.
    assert_eq!(table.grow_last(n).unwrap(), table);
}

#[test]
fn grow_without_partitions() {
    let table = Table::layout(Guid::zero(), 64 * MIB, &[]).unwrap();
    assert!(!table.can_grow_last());
    let err = table.grow_last(128 * MIB / SECTOR).unwrap_err();
    assert!(matches!(err, Error::NoPartitions), "{err}");
}

#[test]
fn find_by_name() {
    let table = shoal_table(64 * MIB);
    let (index, partition) = table.find_by_name("ROOT-B").unwrap();
    assert_eq!(index, 2);
    assert_eq!(partition.unique_guid, Guid::from_seed([3; 16]));
    assert!(table.find_by_name("root-b").is_none());
    assert!(table.find_by_name("").is_none());
}

#[test]
fn validate_catches_hand_made_tables() {
    let mut table = shoal_table(64 * MIB);
    table.validate().unwrap();
    table.partitions[3].last_lba = table.disk_sectors - 33;
    let err = table.validate().unwrap_err();
    assert!(
        matches!(err, Error::OutsideUsable { index: 3, .. }),
        "{err}"
    );
    table.disk_sectors = MIN_DISK_SECTORS - 1;
    let err = table.validate().unwrap_err();
    assert!(matches!(err, Error::DiskSmallerThanTable { .. }), "{err}");
}

/// A small deterministic generator, so a failing case can be replayed.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Random edits with correct CRCs: parse never panics, and whatever it accepts is valid and
/// writes back to the same table.
#[test]
fn parse_accepts_only_valid_tables() {
    let table = shoal_table(64 * MIB);
    let n = table.disk_sectors;
    let head = disk_with(&table)[..HEAD_BYTES].to_vec();
    let mut rng = XorShift(0x5eed_1234_abcd_ef01);
    let mut accepted = 0;
    for case in 0..5000 {
        let mut bad = head.clone();
        for _ in 0..=rng.next() % 3 {
            let value = rng.next() as u8;
            if rng.next().is_multiple_of(2) {
                let offset = 24 + (rng.next() % (92 - 24)) as usize;
                edit_header(&mut bad, |h| h[offset] = value);
            } else {
                // Mostly the used entries, where edits matter.
                let offset = (rng.next() % (5 * ENTRY_SIZE as u64)) as usize;
                edit_entries(&mut bad, |e| e[offset] = value);
            }
        }
        let size = if rng.next().is_multiple_of(4) {
            n / 2
        } else {
            n
        };
        if let Ok(table) = Table::parse(&bad, size) {
            accepted += 1;
            table
                .validate()
                .unwrap_or_else(|e| panic!("case {case}: {e}"));
            let writes = table.to_writes();
            let again = Table::parse(&writes[1].1, table.disk_sectors).unwrap();
            assert_eq!(again.partitions, table.partitions, "case {case}");
            assert!(again.backup_at_end(), "case {case}");
        }
    }
    // Some edits are harmless (names, GUIDs, attributes): the check above did run.
    assert!(accepted > 100, "{accepted}");
}

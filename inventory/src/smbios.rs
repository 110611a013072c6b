//! SMBIOS (DMTF DSP0134), parsed from the raw table the kernel exposes in
//! `/sys/firmware/dmi/tables/`: the entry point (`smbios_entry_point`) for the version, and the
//! structure table (`DMI`). `/sys/class/dmi/id` has only a dozen system fields and nothing about
//! DIMMs or processors, hence the raw table.
//!
//! Parsing is pure and bounds-checked everywhere: a truncated or lying table yields the
//! structures that were whole and an error saying where it stopped, never a panic.
//!
//! No crate was taken for this: the maintained ones decode every structure type of every
//! revision, and we need seven types' worth of fields in a binary PID 1 starts at boot.

use serde::{Deserialize, Serialize};

/// The SMBIOS version from the entry point (`_SM_` 2.x or `_SM3_` 3.x).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    pub major: u8,
    pub minor: u8,
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("the entry point is neither `_SM_` nor `_SM3_` ({0} bytes)")]
    EntryPoint(usize),
    #[error("structure at offset {offset} is cut off: {reason}")]
    Truncated { offset: usize, reason: &'static str },
}

/// Reads the version out of an entry point.
pub fn parse_entry_point(bytes: &[u8]) -> Result<Version, Error> {
    if bytes.len() >= 0x18 && bytes.starts_with(b"_SM3_") {
        return Ok(Version {
            major: bytes[0x07],
            minor: bytes[0x08],
        });
    }
    if bytes.len() >= 0x1F && bytes.starts_with(b"_SM_") {
        return Ok(Version {
            major: bytes[0x06],
            minor: bytes[0x07],
        });
    }
    Err(Error::EntryPoint(bytes.len()))
}

/// One structure: its header, formatted area (header included, as offsets in the
/// specification count from the structure's start) and strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Structure {
    pub kind: u8,
    pub handle: u16,
    formatted: Vec<u8>,
    strings: Vec<String>,
}

impl Structure {
    /// The byte at `offset`, if the structure is long enough to have it (older revisions are
    /// shorter; a field they lack is `None`, not zero).
    pub fn byte(&self, offset: usize) -> Option<u8> {
        self.formatted.get(offset).copied()
    }

    pub fn word(&self, offset: usize) -> Option<u16> {
        let b = self.formatted.get(offset..offset + 2)?;
        Some(u16::from_le_bytes([b[0], b[1]]))
    }

    pub fn dword(&self, offset: usize) -> Option<u32> {
        let b = self.formatted.get(offset..offset + 4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn qword(&self, offset: usize) -> Option<u64> {
        let b = self.formatted.get(offset..offset + 8)?;
        Some(u64::from_le_bytes(b.try_into().ok()?))
    }

    pub fn bytes(&self, offset: usize, len: usize) -> Option<&[u8]> {
        self.formatted.get(offset..offset + len)
    }

    /// The string the byte at `offset` refers to (1-based; 0 means none). Placeholders that
    /// firmware writes instead of leaving a field empty count as none.
    pub fn string(&self, offset: usize) -> Option<String> {
        let index = self.byte(offset)? as usize;
        let s = self.strings.get(index.checked_sub(1)?)?.trim();
        (!is_placeholder(s)).then(|| s.to_string())
    }
}

/// Text firmware writes into fields it has no value for.
pub fn is_placeholder(s: &str) -> bool {
    const PLACEHOLDERS: [&str; 10] = [
        "",
        "Not Specified",
        "Not Provided",
        "Not Available",
        "To be filled by O.E.M.",
        "To Be Filled By O.E.M.",
        "Default string",
        "System Serial Number",
        "None",
        "N/A",
    ];
    PLACEHOLDERS.iter().any(|p| s.eq_ignore_ascii_case(p))
}

/// Splits the structure table. Stops at the end-of-table structure (type 127) or the end of the
/// bytes; returns what was whole, and an error when the table was cut inside a structure.
pub fn parse_table(table: &[u8]) -> (Vec<Structure>, Option<Error>) {
    let mut out = Vec::new();
    let mut offset = 0;
    while offset + 4 <= table.len() {
        let kind = table[offset];
        let length = table[offset + 1] as usize;
        let handle = u16::from_le_bytes([table[offset + 2], table[offset + 3]]);
        if length < 4 {
            return (
                out,
                Some(Error::Truncated {
                    offset,
                    reason: "length below the 4-byte header",
                }),
            );
        }
        let Some(formatted) = table.get(offset..offset + length) else {
            return (
                out,
                Some(Error::Truncated {
                    offset,
                    reason: "formatted area runs past the table",
                }),
            );
        };
        // The string set ends with two NULs (also when there are no strings).
        let rest = &table[offset + length..];
        let Some(end) = rest.windows(2).position(|w| w == [0, 0]) else {
            return (
                out,
                Some(Error::Truncated {
                    offset,
                    reason: "string set has no terminator",
                }),
            );
        };
        let strings = rest[..end]
            .split(|&b| b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect();
        out.push(Structure {
            kind,
            handle,
            formatted: formatted.to_vec(),
            strings,
        });
        offset += length + end + 2;
        if kind == 127 {
            return (out, None);
        }
    }
    let error = (offset < table.len()).then_some(Error::Truncated {
        offset,
        reason: "header runs past the table",
    });
    (out, error)
}

/// Type 0: BIOS / UEFI firmware.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Bios {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
    /// `major.minor` system BIOS release (SMBIOS 2.4+).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    /// The firmware says it supports UEFI (characteristics extension byte 2, bit 3).
    pub uefi: bool,
}

/// Type 1: the system.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SystemIdentity {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sku: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
}

/// Type 2: the baseboard.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Board {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub asset_tag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
}

/// Type 3: the chassis.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Chassis {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    /// The chassis type in words (`Rack Mount Chassis`, `Other`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub asset_tag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sku: Option<String>,
}

/// Type 4: one processor socket.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Processor {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_mhz: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_mhz: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cores: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threads: Option<u32>,
    pub populated: bool,
}

/// Type 17: one memory device (a DIMM slot).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Dimm {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slot: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bank: Option<String>,
    /// `None` for an empty slot or an unknown size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speed_mts: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub configured_speed_mts: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manufacturer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub part_number: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub asset_tag: Option<String>,
}

/// Everything Shoal reads out of the table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Smbios {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<Version>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bios: Option<Bios>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<SystemIdentity>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub board: Option<Board>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chassis: Option<Chassis>,
    pub processors: Vec<Processor>,
    /// Installed DIMMs; empty slots are left out.
    pub dimms: Vec<Dimm>,
    /// Empty DIMM slots.
    pub empty_slots: u32,
}

/// Decodes the structures Shoal uses. `version` decides the UUID's byte order.
pub fn decode(version: Option<Version>, structures: &[Structure]) -> Smbios {
    let mut out = Smbios {
        version,
        ..Smbios::default()
    };
    for s in structures {
        match s.kind {
            0 if out.bios.is_none() => out.bios = Some(bios(s)),
            1 if out.system.is_none() => out.system = Some(system(s, version)),
            2 if out.board.is_none() => out.board = Some(board(s)),
            3 if out.chassis.is_none() => out.chassis = Some(chassis(s)),
            4 => out.processors.push(processor(s)),
            17 => match dimm(s) {
                Some(d) => out.dimms.push(d),
                None => out.empty_slots += 1,
            },
            _ => {}
        }
    }
    out
}

fn bios(s: &Structure) -> Bios {
    let release = match (s.byte(0x14), s.byte(0x15)) {
        (Some(major), Some(minor)) if major != 0xFF => Some(format!("{major}.{minor}")),
        _ => None,
    };
    Bios {
        vendor: s.string(0x04),
        version: s.string(0x05),
        date: s.string(0x08),
        release,
        uefi: s.byte(0x13).is_some_and(|b| b & 0x08 != 0),
    }
}

fn system(s: &Structure, version: Option<Version>) -> SystemIdentity {
    SystemIdentity {
        vendor: s.string(0x04),
        product: s.string(0x05),
        version: s.string(0x06),
        serial: s.string(0x07),
        uuid: s.bytes(0x08, 16).and_then(|b| uuid(b, version)),
        sku: s.string(0x19),
        family: s.string(0x1A),
    }
}

/// Formats the system UUID. Since SMBIOS 2.6 the first three fields are little-endian (what
/// the kernel's `product_uuid` shows too); all-zero and all-one UUIDs mean "not set".
pub fn uuid(b: &[u8], version: Option<Version>) -> Option<String> {
    let b: [u8; 16] = b.try_into().ok()?;
    if b.iter().all(|&x| x == 0) || b.iter().all(|&x| x == 0xFF) {
        return None;
    }
    let little = version.is_none_or(|v| (v.major, v.minor) >= (2, 6));
    let order: [usize; 16] = if little {
        [3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15]
    } else {
        std::array::from_fn(|i| i)
    };
    let mut out = String::with_capacity(36);
    for (i, &idx) in order.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        out.push_str(&format!("{:02x}", b[idx]));
    }
    Some(out)
}

fn board(s: &Structure) -> Board {
    Board {
        vendor: s.string(0x04),
        product: s.string(0x05),
        version: s.string(0x06),
        serial: s.string(0x07),
        asset_tag: s.string(0x08),
        location: s.string(0x0A),
    }
}

fn chassis(s: &Structure) -> Chassis {
    // The SKU follows the variable-length contained-elements list.
    let sku = match (s.byte(0x13), s.byte(0x14)) {
        (Some(n), Some(m)) => s.string(0x15 + n as usize * m as usize),
        _ => None,
    };
    Chassis {
        vendor: s.string(0x04),
        kind: s.byte(0x05).map(|t| chassis_type(t & 0x7F).to_string()),
        version: s.string(0x06),
        serial: s.string(0x07),
        asset_tag: s.string(0x08),
        sku,
    }
}

fn chassis_type(t: u8) -> &'static str {
    const NAMES: [&str; 36] = [
        "Other",
        "Unknown",
        "Desktop",
        "Low Profile Desktop",
        "Pizza Box",
        "Mini Tower",
        "Tower",
        "Portable",
        "Laptop",
        "Notebook",
        "Hand Held",
        "Docking Station",
        "All in One",
        "Sub Notebook",
        "Space-saving",
        "Lunch Box",
        "Main Server Chassis",
        "Expansion Chassis",
        "SubChassis",
        "Bus Expansion Chassis",
        "Peripheral Chassis",
        "RAID Chassis",
        "Rack Mount Chassis",
        "Sealed-case PC",
        "Multi-system Chassis",
        "Compact PCI",
        "Advanced TCA",
        "Blade",
        "Blade Enclosure",
        "Tablet",
        "Convertible",
        "Detachable",
        "IoT Gateway",
        "Embedded PC",
        "Mini PC",
        "Stick PC",
    ];
    (t as usize)
        .checked_sub(1)
        .and_then(|i| NAMES.get(i))
        .copied()
        .unwrap_or("Unknown")
}

fn processor(s: &Structure) -> Processor {
    let mhz = |o| s.word(o).filter(|&v| v != 0 && v != 0xFFFF).map(u32::from);
    // 0xFF in the byte field means "see the 16-bit field" (SMBIOS 3.0+).
    let count = |byte_at, word_at| match s.byte(byte_at) {
        Some(0xFF) => s.word(word_at).map(u32::from),
        Some(0) | None => None,
        Some(n) => Some(u32::from(n)),
    };
    Processor {
        socket: s.string(0x04),
        vendor: s.string(0x07),
        version: s.string(0x10),
        max_mhz: mhz(0x14),
        current_mhz: mhz(0x16),
        cores: count(0x23, 0x2A),
        threads: count(0x25, 0x2E),
        populated: s.byte(0x18).is_some_and(|b| b & 0x40 != 0),
    }
}

fn dimm(s: &Structure) -> Option<Dimm> {
    let size_bytes = match s.word(0x0C)? {
        0 => return None,
        0xFFFF => None,
        // Extended size, in MiB, in the following double word.
        0x7FFF => s.dword(0x1C).map(|mb| u64::from(mb & 0x7FFF_FFFF) << 20),
        // Bit 15 set: KiB units; clear: MiB.
        v if v & 0x8000 != 0 => Some(u64::from(v & 0x7FFF) << 10),
        v => Some(u64::from(v) << 20),
    };
    let speed = |word_at, dword_at| match s.word(word_at) {
        Some(0) | None => None,
        Some(0xFFFF) => s.dword(dword_at).filter(|&v| v != 0),
        Some(v) => Some(u32::from(v)),
    };
    Some(Dimm {
        slot: s.string(0x10),
        bank: s.string(0x11),
        size_bytes,
        kind: s.byte(0x12).and_then(memory_type).map(str::to_string),
        speed_mts: speed(0x15, 0x54),
        configured_speed_mts: speed(0x20, 0x58),
        manufacturer: s.string(0x17),
        serial: s.string(0x18),
        asset_tag: s.string(0x19),
        part_number: s.string(0x1A),
    })
}

fn memory_type(t: u8) -> Option<&'static str> {
    Some(match t {
        0x01 => "Other",
        0x03 => "DRAM",
        0x04 => "EDRAM",
        0x05 => "VRAM",
        0x06 => "SRAM",
        0x07 => "RAM",
        0x08 => "ROM",
        0x09 => "Flash",
        0x0A => "EEPROM",
        0x0B => "FEPROM",
        0x0C => "EPROM",
        0x0D => "CDRAM",
        0x0E => "3DRAM",
        0x0F => "SDRAM",
        0x10 => "SGRAM",
        0x11 => "RDRAM",
        0x12 => "DDR",
        0x13 => "DDR2",
        0x14 => "DDR2 FB-DIMM",
        0x18 => "DDR3",
        0x19 => "FBD2",
        0x1A => "DDR4",
        0x1B => "LPDDR",
        0x1C => "LPDDR2",
        0x1D => "LPDDR3",
        0x1E => "LPDDR4",
        0x1F => "Logical non-volatile device",
        0x20 => "HBM",
        0x21 => "HBM2",
        0x22 => "DDR5",
        0x23 => "LPDDR5",
        0x24 => "HBM3",
        _ => return None,
    })
}

/// Builds structures for tests (here and in other modules' fixture tests).
#[cfg(test)]
pub(crate) mod build {
    /// One structure: type, formatted bytes after the 4-byte header, strings.
    pub fn structure(kind: u8, handle: u16, body: &[u8], strings: &[&str]) -> Vec<u8> {
        let mut out = vec![kind, (body.len() + 4) as u8];
        out.extend(handle.to_le_bytes());
        out.extend(body);
        for s in strings {
            out.extend(s.as_bytes());
            out.push(0);
        }
        if strings.is_empty() {
            out.push(0);
        }
        out.push(0);
        out
    }

    pub fn end() -> Vec<u8> {
        structure(127, 0xFEFF, &[], &[])
    }

    pub fn entry_point_3(major: u8, minor: u8) -> Vec<u8> {
        let mut ep = b"_SM3_".to_vec();
        ep.extend([0, 0x18, major, minor, 0, 1, 0]);
        ep.resize(0x18, 0);
        ep
    }
}

#[cfg(test)]
mod tests {
    use super::build::*;
    use super::*;

    fn body(len: usize, fields: &[(usize, &[u8])]) -> Vec<u8> {
        // Offsets in the specification count from the structure's start: subtract the header.
        let mut b = vec![0u8; len - 4];
        for (offset, bytes) in fields {
            b[offset - 4..offset - 4 + bytes.len()].copy_from_slice(bytes);
        }
        b
    }

    #[test]
    fn reads_both_entry_points() {
        assert_eq!(
            parse_entry_point(&entry_point_3(3, 5)),
            Ok(Version { major: 3, minor: 5 })
        );
        let mut ep2 = b"_SM_".to_vec();
        ep2.extend([0, 0x1F, 2, 8]);
        ep2.resize(0x1F, 0);
        assert_eq!(parse_entry_point(&ep2), Ok(Version { major: 2, minor: 8 }));
        assert_eq!(parse_entry_point(b"_SM3_"), Err(Error::EntryPoint(5)));
        assert_eq!(parse_entry_point(b""), Err(Error::EntryPoint(0)));
    }

    #[test]
    fn decodes_system_board_chassis_bios() {
        let mut table = Vec::new();
        let mut t0 = body(0x18, &[(0x04, &[1]), (0x05, &[2]), (0x08, &[3])]);
        t0[0x13 - 4] = 0x08; // UEFI supported
        t0[0x14 - 4] = 1;
        t0[0x15 - 4] = 16;
        table.extend(structure(0, 0, &t0, &["ShoalBIOS", "1.2.3", "11/22/2026"]));
        let uuid = [
            0x33, 0x22, 0x11, 0x00, 0x55, 0x44, 0x77, 0x66, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
            0xee, 0xff,
        ];
        let t1 = body(
            0x1B,
            &[
                (0x04, &[1]),
                (0x05, &[2]),
                (0x06, &[0]),
                (0x07, &[3]),
                (0x08, &uuid),
                (0x19, &[4]),
                (0x1A, &[5]),
            ],
        );
        table.extend(structure(
            1,
            1,
            &t1,
            &[
                "Acme",
                "Rackmaster",
                "SN-1",
                "SKU-9",
                "To be filled by O.E.M.",
            ],
        ));
        let t2 = body(
            0x0F,
            &[(0x04, &[1]), (0x05, &[2]), (0x07, &[3]), (0x0A, &[4])],
        );
        table.extend(structure(2, 2, &t2, &["Acme", "Board-X", "BSN", "slot 1"]));
        // Chassis with two contained elements of 3 bytes each, SKU after them.
        let mut t3 = body(0x15 + 6 + 1, &[(0x04, &[1]), (0x05, &[0x17]), (0x07, &[2])]);
        t3[0x13 - 4] = 2;
        t3[0x14 - 4] = 3;
        t3[0x15 + 6 - 4] = 3;
        table.extend(structure(3, 3, &t3, &["Acme", "CSN", "CSKU"]));
        table.extend(end());
        let (structures, err) = parse_table(&table);
        assert_eq!(err, None);
        let s = decode(Some(Version { major: 3, minor: 0 }), &structures);
        assert_eq!(
            s.bios,
            Some(Bios {
                vendor: Some("ShoalBIOS".into()),
                version: Some("1.2.3".into()),
                date: Some("11/22/2026".into()),
                release: Some("1.16".into()),
                uefi: true,
            })
        );
        let system = s.system.unwrap();
        assert_eq!(system.vendor.as_deref(), Some("Acme"));
        assert_eq!(system.version, None);
        assert_eq!(
            system.uuid.as_deref(),
            Some("00112233-4455-6677-8899-aabbccddeeff")
        );
        assert_eq!(system.sku.as_deref(), Some("SKU-9"));
        assert_eq!(system.family, None, "placeholder");
        assert_eq!(s.board.unwrap().location.as_deref(), Some("slot 1"));
        let chassis = s.chassis.unwrap();
        assert_eq!(chassis.kind.as_deref(), Some("Rack Mount Chassis"));
        assert_eq!(chassis.serial.as_deref(), Some("CSN"));
        assert_eq!(chassis.sku.as_deref(), Some("CSKU"));
    }

    #[test]
    fn uuid_byte_order_follows_the_version() {
        let b: Vec<u8> = (0..16).collect();
        assert_eq!(
            uuid(&b, Some(Version { major: 2, minor: 5 })).unwrap(),
            "00010203-0405-0607-0809-0a0b0c0d0e0f"
        );
        assert_eq!(
            uuid(&b, Some(Version { major: 2, minor: 6 })).unwrap(),
            "03020100-0504-0706-0809-0a0b0c0d0e0f"
        );
        assert_eq!(uuid(&[0; 16], None), None);
        assert_eq!(uuid(&[0xFF; 16], None), None);
        assert_eq!(uuid(&[1; 15], None), None);
    }

    #[test]
    fn decodes_dimms_and_sizes() {
        let dimm = |size: u16, ext: u32, speed: u16| {
            let mut b = body(0x28, &[(0x10, &[1]), (0x11, &[2]), (0x12, &[0x1A])]);
            b[0x0C - 4..0x0E - 4].copy_from_slice(&size.to_le_bytes());
            b[0x1C - 4..0x20 - 4].copy_from_slice(&ext.to_le_bytes());
            b[0x15 - 4..0x17 - 4].copy_from_slice(&speed.to_le_bytes());
            b[0x17 - 4] = 3;
            b[0x18 - 4] = 4;
            b[0x1A - 4] = 5;
            structure(
                17,
                0x1100,
                &b,
                &["DIMM 0", "BANK 0", "Hynix", "S123", "HMA82"],
            )
        };
        let mut table = dimm(16384, 0, 3200);
        table.extend(dimm(0x7FFF, 65536, 0xFFFF)); // extended size; extended speed absent
        table.extend(dimm(0x8000 | 512, 0, 0)); // 512 KiB
        table.extend(dimm(0, 0, 0)); // empty slot
        table.extend(end());
        let (structures, err) = parse_table(&table);
        assert_eq!(err, None);
        let s = decode(None, &structures);
        assert_eq!(s.empty_slots, 1);
        let sizes: Vec<_> = s.dimms.iter().map(|d| d.size_bytes).collect();
        assert_eq!(sizes, [Some(16 << 30), Some(64 << 30), Some(512 << 10)]);
        let d = &s.dimms[0];
        assert_eq!(d.slot.as_deref(), Some("DIMM 0"));
        assert_eq!(d.bank.as_deref(), Some("BANK 0"));
        assert_eq!(d.kind.as_deref(), Some("DDR4"));
        assert_eq!(d.speed_mts, Some(3200));
        assert_eq!(d.manufacturer.as_deref(), Some("Hynix"));
        assert_eq!(d.serial.as_deref(), Some("S123"));
        assert_eq!(d.part_number.as_deref(), Some("HMA82"));
        assert_eq!(s.dimms[1].speed_mts, None, "0xFFFF with no extended speed");
    }

    #[test]
    fn decodes_processors_with_wide_counts() {
        let mut b = body(0x30, &[(0x04, &[1]), (0x07, &[2]), (0x10, &[3])]);
        b[0x14 - 4..0x16 - 4].copy_from_slice(&3900u16.to_le_bytes());
        b[0x16 - 4..0x18 - 4].copy_from_slice(&2100u16.to_le_bytes());
        b[0x18 - 4] = 0x41;
        b[0x23 - 4] = 0xFF;
        b[0x2A - 4..0x2C - 4].copy_from_slice(&288u16.to_le_bytes());
        b[0x25 - 4] = 8;
        let mut table = structure(4, 0x400, &b, &["CPU 0", "GenuineIntel", "Xeon"]);
        table.extend(end());
        let s = decode(None, &parse_table(&table).0);
        assert_eq!(
            s.processors,
            [Processor {
                socket: Some("CPU 0".into()),
                vendor: Some("GenuineIntel".into()),
                version: Some("Xeon".into()),
                max_mhz: Some(3900),
                current_mhz: Some(2100),
                cores: Some(288),
                threads: Some(8),
                populated: true,
            }]
        );
    }

    #[test]
    fn survives_broken_tables() {
        let good = structure(2, 2, &[1, 0, 0, 0, 0], &["Acme"]);
        // Cut inside the second structure's strings, its formatted area, and its header.
        let second = structure(1, 1, &[1, 2, 3, 4], &["Vendor", "Product"]);
        for cut in 1..second.len() {
            let mut table = good.clone();
            table.extend(&second[..cut]);
            let (structures, err) = parse_table(&table);
            assert_eq!(structures.len(), 1, "cut at {cut}");
            assert!(err.is_some(), "cut at {cut}");
        }
        // A length below the header.
        let (s, err) = parse_table(&[1, 2, 0, 0, 0, 0]);
        assert!(s.is_empty());
        assert!(err.unwrap().to_string().contains("below the 4-byte header"));
        // A string index past the string set, and string 0.
        let s = &parse_table(&structure(1, 1, &[9, 0], &["x"])).0[0];
        assert_eq!(s.string(4), None);
        assert_eq!(s.string(5), None);
        assert_eq!(s.string(40), None);
        // Garbage never panics.
        for seed in 0..2000u32 {
            let bytes: Vec<u8> = (0..64)
                .map(|i| (seed.wrapping_mul(2654435761).wrapping_add(i * 40503) >> 11) as u8)
                .collect();
            let (structures, _) = parse_table(&bytes);
            let _ = decode(None, &structures);
        }
    }
}

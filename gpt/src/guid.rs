//! GUIDs in their text form and their mixed-endian on-disk form.

use std::fmt;
use std::str::FromStr;

use crate::Error;

/// A GUID, stored in text order: the bytes as they read left to right in
/// `c12a7328-f81f-11d2-ba4b-00a0c93ec93b` (`c1 2a 73 28 f8 1f ...`).
///
/// On disk (GPT headers and entries) the first three fields are little-endian and the last two
/// are not, so the same GUID is written `28 73 2a c1 1f f8 d2 11 ba 4b 00 a0 c9 3e c9 3b`;
/// [`Guid::to_disk_bytes`] and [`Guid::from_disk_bytes`] convert.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Guid([u8; 16]);

impl Guid {
    /// The all-zero GUID. As a partition type it marks an unused entry.
    pub const fn zero() -> Guid {
        Guid([0; 16])
    }

    /// The GUID whose text form is the 32 hex digits of `value`, e.g.
    /// `Guid::from_u128(0xc12a7328_f81f_11d2_ba4b_00a0c93ec93b)`: how the constants are written.
    pub const fn from_u128(value: u128) -> Guid {
        Guid(value.to_be_bytes())
    }

    /// The GUID whose text form reads `bytes` left to right.
    pub const fn from_text_bytes(bytes: [u8; 16]) -> Guid {
        Guid(bytes)
    }

    /// The bytes in text order (see the type's documentation).
    pub const fn text_bytes(&self) -> [u8; 16] {
        self.0
    }

    /// Whether this is the all-zero GUID.
    pub const fn is_zero(&self) -> bool {
        u128::from_be_bytes(self.0) == 0
    }

    /// Parses the text form `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (hex digits in either case, no
    /// braces).
    pub fn parse(text: &str) -> Result<Guid, Error> {
        let invalid = || Error::InvalidGuid {
            text: text.to_owned(),
        };
        let bytes = text.as_bytes();
        if bytes.len() != 36 {
            return Err(invalid());
        }
        let mut out = [0u8; 16];
        let mut digits = 0usize;
        for (i, &c) in bytes.iter().enumerate() {
            if matches!(i, 8 | 13 | 18 | 23) {
                if c != b'-' {
                    return Err(invalid());
                }
                continue;
            }
            let nibble = match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                b'A'..=b'F' => c - b'A' + 10,
                _ => return Err(invalid()),
            };
            out[digits / 2] |= if digits.is_multiple_of(2) {
                nibble << 4
            } else {
                nibble
            };
            digits += 1;
        }
        Ok(Guid(out))
    }

    /// The 16 bytes as GPT stores them: the first three fields little-endian.
    pub const fn to_disk_bytes(&self) -> [u8; 16] {
        swap_first_three_fields(self.0)
    }

    /// The GUID from its 16 on-disk bytes (the inverse of [`Guid::to_disk_bytes`]).
    pub const fn from_disk_bytes(bytes: [u8; 16]) -> Guid {
        Guid(swap_first_three_fields(bytes))
    }

    /// A version-4-shaped GUID from 16 bytes of seed (the version nibble set to 4, the variant
    /// bits to `10`), for reproducible images: the same seed always gives the same GUID. The
    /// seed is read in text order, so bytes other than the version and variant bits show up
    /// unchanged in the text form.
    pub const fn from_seed(seed: [u8; 16]) -> Guid {
        let mut bytes = seed;
        bytes[6] = (bytes[6] & 0x0f) | 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        Guid(bytes)
    }
}

/// Reverses the byte order of the 4-, 2- and 2-byte fields; the same operation in both
/// directions.
const fn swap_first_three_fields(b: [u8; 16]) -> [u8; 16] {
    [
        b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13],
        b[14], b[15],
    ]
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, byte) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Guid({self})")
    }
}

impl FromStr for Guid {
    type Err = Error;

    fn from_str(text: &str) -> Result<Guid, Error> {
        Guid::parse(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types;

    #[test]
    fn text_round_trip() {
        let text = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";
        let guid = Guid::parse(text).unwrap();
        assert_eq!(guid, types::ESP);
        assert_eq!(guid.to_string(), text);
        assert_eq!(
            "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
                .parse::<Guid>()
                .unwrap(),
            guid
        );
        assert_eq!(format!("{guid:?}"), format!("Guid({text})"));
    }

    #[test]
    fn disk_form_is_mixed_endian() {
        let disk = types::ESP.to_disk_bytes();
        assert_eq!(
            disk,
            [
                0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e,
                0xc9, 0x3b
            ]
        );
        assert_eq!(Guid::from_disk_bytes(disk), types::ESP);
        assert_ne!(disk, types::ESP.text_bytes());
    }

    #[test]
    fn constants_match_their_text() {
        for (guid, text) in [
            (types::ESP, "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"),
            (types::ROOT_X86_64, "4f68bce3-e8cd-4db1-96e7-fbcaf984b709"),
            (
                types::ROOT_VERITY_X86_64,
                "2c7357ed-ebd2-46d9-aec1-23d437ec2bf5",
            ),
            (types::VAR, "4d21b016-b534-45c2-a9fb-5c16e091fd2d"),
            (types::LINUX_DATA, "0fc63daf-8483-4772-8e79-3d69d8477de4"),
        ] {
            assert_eq!(guid.to_string(), text);
            assert_eq!(Guid::parse(text).unwrap(), guid);
        }
    }

    #[test]
    fn rejects_malformed_text() {
        for text in [
            "",
            "c12a7328-f81f-11d2-ba4b-00a0c93ec93",
            "c12a7328-f81f-11d2-ba4b-00a0c93ec93bb",
            "c12a7328f81f-11d2-ba4b-00a0c93ec93b0",
            "c12a7328-f81f-11d2-ba4b-00a0c93ec93g",
            "{2a7328-f81f-11d2-ba4b-00a0c93ec93b}",
            "c12a7328-f81f-11d2-ba4b+00a0c93ec93b",
            "c12a7328-f81f-11d2-ba4b-00a0c93ec9é",
        ] {
            let err = Guid::parse(text).unwrap_err();
            assert!(matches!(err, Error::InvalidGuid { .. }), "{text}: {err}");
        }
    }

    #[test]
    fn seed_gives_version_4_variant_1() {
        let guid = Guid::from_seed([0xff; 16]);
        assert_eq!(guid.to_string(), "ffffffff-ffff-4fff-bfff-ffffffffffff");
        let guid = Guid::from_seed([0; 16]);
        assert_eq!(guid.to_string(), "00000000-0000-4000-8000-000000000000");
        assert_eq!(Guid::from_seed([7; 16]), Guid::from_seed([7; 16]));
        assert_ne!(Guid::from_seed([7; 16]), Guid::from_seed([8; 16]));
    }

    #[test]
    fn zero() {
        assert!(Guid::zero().is_zero());
        assert!(!types::ESP.is_zero());
        assert_eq!(
            Guid::zero().to_string(),
            "00000000-0000-0000-0000-000000000000"
        );
    }
}

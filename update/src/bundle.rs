//! Update bundles: one file holding a slot's kernel, initramfs and root image (with its
//! dm-verity tree), described by a manifest signed with Ed25519.
//!
//! ```text
//! 0      16 bytes  magic "SHOAL-BUNDLE" 0 0 0 FORMAT
//! 16     u32 LE    manifest length N (at most 64 KiB)
//! 20     64 bytes  Ed25519 signature over bytes 0..20 and the manifest
//! 84     N bytes   manifest (JSON, below)
//! ...    zeros to the next 4 KiB
//!        parts, each at the offset the manifest gives, 4 KiB aligned, in manifest order
//! ```
//!
//! The manifest names the version, architecture, kernel command line, the root image's verity
//! root hash and hash offset, the signing key, and each part's offset, size and SHA-256. A
//! reader checks the signature against its trusted keys before it reads a single part, and each
//! part's hash as it streams by ([`Reader`]), so nothing unverified ever becomes bootable.

use std::io::{Read, Write};

use base64::Engine as _;
use ring::signature::{self, Ed25519KeyPair, KeyPair};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The format this code writes and reads.
pub const FORMAT: u8 = 1;
const MAGIC: &[u8; 15] = b"SHOAL-BUNDLE\0\0\0";
const FIXED: usize = 84;
const MAX_MANIFEST: usize = 64 * 1024;
/// Parts start on this boundary.
pub const ALIGN: u64 = 4096;
/// The parts every bundle has, in this order.
pub const PARTS: [&str; 3] = ["vmlinuz", "initramfs", "root"];

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("not a Shoal update bundle (bad magic)")]
    Magic,
    #[error("bundle format {0}, this node reads format {FORMAT}")]
    Format(u8),
    #[error("the bundle ends after {0} bytes, inside its header")]
    ShortHeader(u64),
    #[error("manifest of {0} bytes (at most {MAX_MANIFEST})")]
    ManifestSize(usize),
    #[error("manifest: {0}")]
    Manifest(String),
    #[error("signed by {0}, which this node does not trust")]
    Untrusted(String),
    #[error("bad signature: the bundle was altered or not signed by {0}")]
    Signature(String),
    #[error("bundle for {bundle}, this node is {node}")]
    Architecture { bundle: String, node: String },
    #[error("part {part}: the bundle ends {missing} bytes short (truncated download?)")]
    Truncated { part: String, missing: u64 },
    #[error("part {part}: sha256 {actual}, the manifest says {expected}")]
    Hash {
        part: String,
        actual: String,
        expected: String,
    },
    #[error("key: {0}")]
    Key(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// One part of the payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Part {
    pub name: String,
    pub offset: u64,
    pub size: u64,
    pub sha256: String,
}

/// What a bundle holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u8,
    /// The Shoal version of the image.
    pub version: String,
    /// `x86_64`.
    pub arch: String,
    pub profile: String,
    pub kernel_release: String,
    /// The profile's kernel command line (the slot keys are added when the entry is written).
    pub cmdline: String,
    /// The root image's dm-verity root hash and the offset of its hash area.
    pub root_hash: String,
    pub hash_offset: u64,
    /// The signing key, `ed25519:<base64>`.
    pub key: String,
    pub parts: Vec<Part>,
}

impl Manifest {
    pub fn part(&self, name: &str) -> Option<&Part> {
        self.parts.iter().find(|p| p.name == name)
    }

    /// Checks what a signature cannot: the parts are the expected ones, in order, aligned,
    /// not overlapping, and the fields are sane.
    fn check(&self) -> Result<(), Error> {
        let bad = |m: String| Err(Error::Manifest(m));
        let names: Vec<&str> = self.parts.iter().map(|p| p.name.as_str()).collect();
        if names != PARTS {
            return bad(format!("parts {names:?}, expected {PARTS:?}"));
        }
        let mut end = 0;
        for p in &self.parts {
            if !p.offset.is_multiple_of(ALIGN) || p.offset < end {
                return bad(format!(
                    "part {} at {} (overlapping or unaligned)",
                    p.name, p.offset
                ));
            }
            if p.sha256.len() != 64 || !p.sha256.bytes().all(|c| c.is_ascii_hexdigit()) {
                return bad(format!("part {}: sha256 {:?}", p.name, p.sha256));
            }
            end = p.offset + p.size;
        }
        if self.root_hash.len() != 64 || !self.root_hash.bytes().all(|c| c.is_ascii_hexdigit()) {
            return bad(format!("root hash {:?}", self.root_hash));
        }
        let root = self.part("root").expect("checked above");
        if self.hash_offset == 0
            || !self.hash_offset.is_multiple_of(ALIGN)
            || self.hash_offset >= root.size
        {
            return bad(format!(
                "hash offset {} outside the root part ({} bytes)",
                self.hash_offset, root.size
            ));
        }
        if self.cmdline.contains("shoal.slot=") || self.cmdline.contains('\n') {
            return bad("the command line must not choose a slot".into());
        }
        Ok(())
    }
}

/// An Ed25519 public key as configurations write it: `ed25519:<base64 of 32 bytes>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    pub fn parse(text: &str) -> Result<PublicKey, Error> {
        let b64 = text
            .trim()
            .strip_prefix("ed25519:")
            .ok_or_else(|| Error::Key(format!("{text:?} must start with ed25519:")))?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| Error::Key(format!("{text:?}: {e}")))?;
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| Error::Key(format!("{text:?} is not 32 bytes")))?;
        Ok(PublicKey(bytes))
    }
}

impl std::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ed25519:{}",
            base64::engine::general_purpose::STANDARD.encode(self.0)
        )
    }
}

/// A signing key: its 32-byte seed, stored as one line of base64.
pub struct SigningKey(Ed25519KeyPair);

impl std::fmt::Debug for SigningKey {
    /// Only the public half: a secret never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.public())
    }
}

impl SigningKey {
    /// A key from a key file's text.
    pub fn parse(text: &str) -> Result<SigningKey, Error> {
        let seed = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|e| Error::Key(format!("signing key: {e}")))?;
        Ed25519KeyPair::from_seed_unchecked(&seed)
            .map(SigningKey)
            .map_err(|_| Error::Key("signing key: not a 32-byte Ed25519 seed".into()))
    }

    /// A new key and the text of its key file.
    pub fn generate() -> Result<(SigningKey, String), Error> {
        let mut seed = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed)
            .map_err(|_| Error::Key("no randomness from the kernel".into()))?;
        let text = base64::engine::general_purpose::STANDARD.encode(seed);
        Ok((SigningKey::parse(&text)?, format!("{text}\n")))
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(
            self.0
                .public_key()
                .as_ref()
                .try_into()
                .expect("Ed25519 public keys are 32 bytes"),
        )
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn signed_bytes(prefix: &[u8], manifest: &[u8]) -> Vec<u8> {
    let mut m = prefix[..20].to_vec();
    m.extend_from_slice(manifest);
    m
}

/// Writes a bundle of `parts` (name and content reader with its size, in [`PARTS`] order),
/// filling in the manifest's key, offsets, sizes and hashes. `manifest.parts` is ignored.
pub fn write(
    out: &mut impl Write,
    mut manifest: Manifest,
    parts: Vec<(&str, u64, Box<dyn Read + '_>)>,
    key: &SigningKey,
) -> Result<Manifest, Error> {
    // Hashes first (the manifest precedes the parts), so every part is read twice: the caller
    // passes readers that can be, such as files; here they are buffered once.
    let mut contents = Vec::new();
    for (name, size, mut reader) in parts {
        let mut bytes = Vec::with_capacity(size as usize);
        reader.read_to_end(&mut bytes)?;
        if bytes.len() as u64 != size {
            return Err(Error::Manifest(format!(
                "part {name}: {} bytes read, {size} announced",
                bytes.len()
            )));
        }
        contents.push((name.to_string(), bytes));
    }
    manifest.format = FORMAT;
    manifest.key = key.public().to_string();
    manifest.parts.clear();
    // The header's size depends on the offsets written into it: settle them in two passes.
    let mut header_guess = ALIGN;
    loop {
        manifest.parts.clear();
        let mut offset = header_guess;
        for (name, bytes) in &contents {
            manifest.parts.push(Part {
                name: name.clone(),
                offset,
                size: bytes.len() as u64,
                sha256: hex(&Sha256::digest(bytes)),
            });
            offset = (offset + bytes.len() as u64).div_ceil(ALIGN) * ALIGN;
        }
        let json = serde_json::to_vec(&manifest).expect("a manifest serialises");
        let needed = ((FIXED + json.len()) as u64).div_ceil(ALIGN) * ALIGN;
        if needed == header_guess {
            break;
        }
        header_guess = needed;
    }
    manifest.check()?;
    let json = serde_json::to_vec(&manifest).expect("a manifest serialises");
    if json.len() > MAX_MANIFEST {
        return Err(Error::ManifestSize(json.len()));
    }
    let mut head = Vec::with_capacity(header_guess as usize);
    head.extend_from_slice(MAGIC);
    head.push(FORMAT);
    head.extend_from_slice(&(json.len() as u32).to_le_bytes());
    let signature = key.0.sign(&signed_bytes(&head, &json));
    head.extend_from_slice(signature.as_ref());
    head.extend_from_slice(&json);
    head.resize(header_guess as usize, 0);
    out.write_all(&head)?;
    let mut position = header_guess;
    for ((_, bytes), part) in contents.iter().zip(&manifest.parts) {
        out.write_all(&vec![0u8; (part.offset - position) as usize])?;
        out.write_all(bytes)?;
        position = part.offset + part.size;
    }
    Ok(manifest)
}

/// Reads a bundle from a stream: the header first, checked against the trusted keys and this
/// node, then each part, hashed as it passes.
#[derive(Debug)]
pub struct Reader<R> {
    inner: R,
    position: u64,
    pub manifest: Manifest,
    /// The key that signed it.
    pub signer: PublicKey,
}

fn read_full(r: &mut impl Read, buf: &mut [u8], at: u64) -> Result<(), Error> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => return Err(Error::ShortHeader(at + got as u64)),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

impl<R: Read> Reader<R> {
    /// Reads and checks the header: magic, format, manifest, signature by one of `trusted`,
    /// and the architecture `arch`. Nothing of the payload has been read when this returns.
    pub fn open(mut inner: R, trusted: &[PublicKey], arch: &str) -> Result<Reader<R>, Error> {
        let mut fixed = [0u8; FIXED];
        read_full(&mut inner, &mut fixed, 0)?;
        if &fixed[..15] != MAGIC {
            return Err(Error::Magic);
        }
        if fixed[15] != FORMAT {
            return Err(Error::Format(fixed[15]));
        }
        let len = u32::from_le_bytes(fixed[16..20].try_into().expect("4 bytes")) as usize;
        if len > MAX_MANIFEST {
            return Err(Error::ManifestSize(len));
        }
        let mut json = vec![0u8; len];
        read_full(&mut inner, &mut json, FIXED as u64)?;
        // The key named inside is only a hint: the signature must verify with a trusted key.
        let named: Option<String> = serde_json::from_slice::<serde_json::Value>(&json)
            .ok()
            .and_then(|v| v.get("key")?.as_str().map(str::to_string));
        let message = signed_bytes(&fixed, &json);
        let signer = trusted
            .iter()
            .find(|k| {
                signature::UnparsedPublicKey::new(&signature::ED25519, k.0)
                    .verify(&message, &fixed[20..84])
                    .is_ok()
            })
            .cloned();
        let Some(signer) = signer else {
            let named = named.unwrap_or_else(|| "an unnamed key".into());
            return Err(if trusted.iter().any(|k| k.to_string() == named) {
                Error::Signature(named)
            } else {
                Error::Untrusted(named)
            });
        };
        let manifest: Manifest =
            serde_json::from_slice(&json).map_err(|e| Error::Manifest(e.to_string()))?;
        manifest.check()?;
        if manifest.arch != arch {
            return Err(Error::Architecture {
                bundle: manifest.arch,
                node: arch.into(),
            });
        }
        Ok(Reader {
            inner,
            position: (FIXED + len) as u64,
            manifest,
            signer,
        })
    }

    /// Streams part `name` (the next one in order) into `sink`, checking its size and hash;
    /// `progress` hears the bytes copied so far. The part must not be used unless this returns
    /// `Ok`.
    pub fn copy_part(
        &mut self,
        name: &str,
        sink: &mut impl Write,
        mut progress: impl FnMut(u64),
    ) -> Result<(), Error> {
        let part = self
            .manifest
            .part(name)
            .cloned()
            .ok_or_else(|| Error::Manifest(format!("no part {name}")))?;
        if part.offset < self.position {
            return Err(Error::Manifest(format!("part {name} was already passed")));
        }
        let mut skip = part.offset - self.position;
        let mut buf = vec![0u8; 1 << 20];
        while skip > 0 {
            let n = self.read_some(&mut buf[..skip.min(1 << 20) as usize], &part, 0)?;
            skip -= n as u64;
        }
        let mut hasher = Sha256::new();
        let mut copied = 0u64;
        while copied < part.size {
            let want = (part.size - copied).min(buf.len() as u64) as usize;
            let n = self.read_some(&mut buf[..want], &part, part.size - copied)?;
            hasher.update(&buf[..n]);
            sink.write_all(&buf[..n])?;
            copied += n as u64;
            progress(copied);
        }
        let actual = hex(&hasher.finalize());
        if actual != part.sha256 {
            return Err(Error::Hash {
                part: part.name,
                actual,
                expected: part.sha256,
            });
        }
        Ok(())
    }

    fn read_some(&mut self, buf: &mut [u8], part: &Part, missing: u64) -> Result<usize, Error> {
        loop {
            match self.inner.read(buf) {
                Ok(0) => {
                    return Err(Error::Truncated {
                        part: part.name.clone(),
                        missing: missing.max(1),
                    });
                }
                Ok(n) => {
                    self.position += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::parse(&base64::engine::general_purpose::STANDARD.encode([seed; 32])).unwrap()
    }

    fn manifest() -> Manifest {
        Manifest {
            format: 0,
            version: "0.2.0".into(),
            arch: "x86_64".into(),
            profile: "test".into(),
            kernel_release: "6.1.0-56-amd64".into(),
            cmdline: "console=ttyS0 quiet".into(),
            root_hash: "ab".repeat(32),
            hash_offset: 8192,
            key: String::new(),
            parts: Vec::new(),
        }
    }

    fn bundle(signer: &SigningKey) -> (Vec<u8>, [Vec<u8>; 3]) {
        let contents = [vec![1u8; 5000], vec![2u8; 300], vec![3u8; 3 * 4096]];
        let parts: Vec<(&str, u64, Box<dyn Read>)> = PARTS
            .iter()
            .zip(&contents)
            .map(|(n, c)| (*n, c.len() as u64, Box::new(&c[..]) as Box<dyn Read>))
            .collect();
        let mut out = Vec::new();
        write(&mut out, manifest(), parts, signer).unwrap();
        (out, contents)
    }

    fn read_all(bytes: &[u8], trusted: &[PublicKey]) -> Result<Vec<Vec<u8>>, Error> {
        let mut r = Reader::open(bytes, trusted, "x86_64")?;
        let mut got = Vec::new();
        for name in PARTS {
            let mut sink = Vec::new();
            r.copy_part(name, &mut sink, |_| {})?;
            got.push(sink);
        }
        Ok(got)
    }

    #[test]
    fn a_bundle_round_trips_with_a_trusted_key() {
        let k = key(7);
        let (bytes, contents) = bundle(&k);
        let got = read_all(&bytes, &[key(1).public(), k.public()]).unwrap();
        assert_eq!(got, contents);
        let r = Reader::open(&bytes[..], &[k.public()], "x86_64").unwrap();
        assert_eq!(r.signer, k.public());
        assert_eq!(r.manifest.version, "0.2.0");
        assert!(r.manifest.parts.iter().all(|p| p.offset % ALIGN == 0));
        // The public key's text form round-trips.
        assert_eq!(
            PublicKey::parse(&k.public().to_string()).unwrap(),
            k.public()
        );
    }

    #[test]
    fn an_untrusted_or_forged_signature_is_refused_before_any_part() {
        let (bytes, _) = bundle(&key(7));
        let err = read_all(&bytes, &[key(1).public()]).unwrap_err();
        assert!(matches!(err, Error::Untrusted(_)), "{err}");
        // A changed manifest byte (the version) breaks the signature of a trusted key.
        let mut forged = bytes.clone();
        let at = forged.windows(5).position(|w| w == b"0.2.0").unwrap();
        forged[at] = b'9';
        let err = read_all(&forged, &[key(7).public()]).unwrap_err();
        assert!(matches!(err, Error::Signature(_)), "{err}");
        assert!(err.to_string().contains("bad signature"), "{err}");
    }

    #[test]
    fn a_changed_or_missing_part_is_caught() {
        let (bytes, _) = bundle(&key(7));
        let trusted = [key(7).public()];
        let r = Reader::open(&bytes[..], &trusted, "x86_64").unwrap();
        let root = r.manifest.part("root").unwrap().clone();
        let mut changed = bytes.clone();
        changed[root.offset as usize + 100] ^= 1;
        let err = read_all(&changed, &trusted).unwrap_err();
        assert!(
            matches!(&err, Error::Hash { part, .. } if part == "root"),
            "{err}"
        );
        let cut = &bytes[..bytes.len() - 10];
        let err = read_all(cut, &trusted).unwrap_err();
        assert!(
            matches!(&err, Error::Truncated { part, .. } if part == "root"),
            "{err}"
        );
        let err = read_all(&bytes[..50], &trusted).unwrap_err();
        assert!(matches!(err, Error::ShortHeader(50)), "{err}");
    }

    #[test]
    fn the_wrong_architecture_format_or_file_is_refused() {
        let k = key(7);
        let (bytes, _) = bundle(&k);
        let err = Reader::open(&bytes[..], &[k.public()], "aarch64")
            .err()
            .unwrap();
        assert!(
            err.to_string()
                .contains("bundle for x86_64, this node is aarch64"),
            "{err}"
        );
        let mut other = bytes.clone();
        other[15] = 9;
        assert!(matches!(
            Reader::open(&other[..], &[k.public()], "x86_64")
                .err()
                .unwrap(),
            Error::Format(9)
        ));
        assert!(matches!(
            Reader::open(&b"#!/bin/sh\nexit 0\n................................................................................."[..], &[k.public()], "x86_64").err().unwrap(),
            Error::Magic
        ));
    }

    #[test]
    fn keys_parse_strictly() {
        assert!(PublicKey::parse("rsa:AAAA").is_err());
        assert!(PublicKey::parse("ed25519:AAAA").is_err());
        assert!(SigningKey::parse("not base64!").is_err());
        assert!(SigningKey::parse("AAAA").is_err());
        let (k, text) = SigningKey::generate().unwrap();
        assert_eq!(SigningKey::parse(&text).unwrap().public(), k.public());
    }
}

//! Just enough ELF64 to read a kernel module's `.modinfo` section and to tell a static binary
//! from a dynamically linked one.
//!
//! Everything here reads through [`ReadAt`], so the same code runs on a file (reading only the
//! headers and the one section it needs, not the whole module) and on bytes built in a test.
//! Only 64-bit little-endian files are accepted: that is every x86_64 binary and module.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const EHDR_SIZE: usize = 64;
const PHDR_SIZE: usize = 56;
const SHDR_SIZE: usize = 64;
const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;
const DT_STRTAB: u64 = 5;
/// Refuse header tables larger than this: a corrupt count must not make us allocate gigabytes.
const MAX_TABLE_BYTES: u64 = 16 << 20;

/// Why bytes are not a usable ELF64 file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ElfError(String);

/// Positioned reads, from a file or from memory.
pub trait ReadAt {
    /// Reads exactly `len` bytes at `offset`; fails with `UnexpectedEof` past the end.
    fn read_at_exact(&self, offset: u64, len: usize) -> io::Result<Vec<u8>>;
}

impl ReadAt for File {
    fn read_at_exact(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0; len];
        self.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }
}

impl ReadAt for [u8] {
    fn read_at_exact(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        usize::try_from(offset)
            .ok()
            .and_then(|start| Some(start..start.checked_add(len)?))
            .and_then(|range| self.get(range))
            .map(<[u8]>::to_vec)
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end"))
    }
}

/// A read failure or a malformed file.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The underlying read failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The bytes are not a well-formed ELF64 little-endian file.
    #[error(transparent)]
    Malformed(#[from] ElfError),
}

fn malformed(msg: impl Into<String>) -> ReadError {
    ReadError::Malformed(ElfError(msg.into()))
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    let mut a = [0; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut a = [0; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

/// The fields of the ELF header this crate uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// `e_machine` (62 is x86_64).
    pub machine: u16,
    phoff: u64,
    phnum: u16,
    shoff: u64,
    shnum: u16,
    shstrndx: u16,
}

/// Reads and checks the ELF header.
pub fn read_header(r: &(impl ReadAt + ?Sized)) -> Result<Header, ReadError> {
    let b = match r.read_at_exact(0, EHDR_SIZE) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            let magic = r.read_at_exact(0, 4).ok();
            return Err(malformed(match magic {
                Some(m) if m != ELF_MAGIC => "no ELF magic",
                _ => "shorter than an ELF header",
            }));
        }
        Err(e) => return Err(e.into()),
    };
    if &b[..4] != ELF_MAGIC {
        return Err(malformed("no ELF magic"));
    }
    if b[4] != ELFCLASS64 || b[5] != ELFDATA2LSB {
        return Err(malformed("not a 64-bit little-endian ELF file"));
    }
    let phentsize = u16_at(&b, 54);
    let shentsize = u16_at(&b, 58);
    let header = Header {
        machine: u16_at(&b, 18),
        phoff: u64_at(&b, 32),
        phnum: u16_at(&b, 56),
        shoff: u64_at(&b, 40),
        shnum: u16_at(&b, 60),
        shstrndx: u16_at(&b, 62),
    };
    if header.phnum > 0 && usize::from(phentsize) != PHDR_SIZE {
        return Err(malformed(format!(
            "program header size {phentsize}, expected {PHDR_SIZE}"
        )));
    }
    if header.shnum > 0 && usize::from(shentsize) != SHDR_SIZE {
        return Err(malformed(format!(
            "section header size {shentsize}, expected {SHDR_SIZE}"
        )));
    }
    Ok(header)
}

fn read_table(
    r: &(impl ReadAt + ?Sized),
    offset: u64,
    count: u16,
    entry: usize,
) -> Result<Vec<u8>, ReadError> {
    let len = usize::from(count) * entry;
    if len as u64 > MAX_TABLE_BYTES {
        return Err(malformed("header table too large"));
    }
    r.read_at_exact(offset, len).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => malformed("header table past the end of the file"),
        _ => e.into(),
    })
}

fn read_range(r: &(impl ReadAt + ?Sized), offset: u64, size: u64) -> Result<Vec<u8>, ReadError> {
    if size > 1 << 30 {
        return Err(malformed("section or segment larger than 1 GiB"));
    }
    r.read_at_exact(offset, size as usize)
        .map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => {
                malformed("section or segment past the end of the file")
            }
            _ => e.into(),
        })
}

/// Returns the contents of the first section called `name`, or `None` if there is none.
pub fn section_by_name(
    r: &(impl ReadAt + ?Sized),
    header: &Header,
    name: &str,
) -> Result<Option<Vec<u8>>, ReadError> {
    if header.shnum == 0 {
        return Ok(None);
    }
    let table = read_table(r, header.shoff, header.shnum, SHDR_SIZE)?;
    let shdr = |i: usize| &table[i * SHDR_SIZE..(i + 1) * SHDR_SIZE];
    if header.shstrndx >= header.shnum {
        return Err(malformed("section name table index out of range"));
    }
    let strtab_hdr = shdr(usize::from(header.shstrndx));
    let names = read_range(r, u64_at(strtab_hdr, 24), u64_at(strtab_hdr, 32))?;
    for i in 0..usize::from(header.shnum) {
        let sh = shdr(i);
        let name_off = u32_at(sh, 0) as usize;
        let Some(rest) = names.get(name_off..) else {
            return Err(malformed("section name offset out of range"));
        };
        let end = rest.iter().position(|&c| c == 0).unwrap_or(rest.len());
        if &rest[..end] == name.as_bytes() {
            const SHT_NOBITS: u32 = 8;
            if u32_at(sh, 4) == SHT_NOBITS {
                return Ok(Some(Vec::new()));
            }
            return read_range(r, u64_at(sh, 24), u64_at(sh, 32)).map(Some);
        }
    }
    Ok(None)
}

/// How a binary is linked, from its program headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Linkage {
    /// No program interpreter and no shared library dependencies (static or static-pie).
    Static,
    /// Needs the dynamic loader: names the interpreter and the `DT_NEEDED` libraries.
    Dynamic {
        /// `PT_INTERP`, if present.
        interpreter: Option<String>,
        /// `DT_NEEDED` entries (library names where they could be resolved).
        needed: Vec<String>,
    },
}

struct Segment {
    kind: u32,
    offset: u64,
    vaddr: u64,
    filesz: u64,
}

/// Classifies an executable: static means no `PT_INTERP` and no `DT_NEEDED` entry.
pub fn linkage(r: &(impl ReadAt + ?Sized)) -> Result<Linkage, ReadError> {
    let header = read_header(r)?;
    if header.phnum == 0 {
        return Err(malformed("no program headers (not an executable)"));
    }
    let table = read_table(r, header.phoff, header.phnum, PHDR_SIZE)?;
    let segments: Vec<Segment> = table
        .chunks_exact(PHDR_SIZE)
        .map(|ph| Segment {
            kind: u32_at(ph, 0),
            offset: u64_at(ph, 8),
            vaddr: u64_at(ph, 16),
            filesz: u64_at(ph, 32),
        })
        .collect();

    let mut interpreter = None;
    for seg in segments.iter().filter(|s| s.kind == PT_INTERP) {
        let bytes = read_range(r, seg.offset, seg.filesz)?;
        let end = bytes.iter().position(|&c| c == 0).unwrap_or(bytes.len());
        interpreter = Some(String::from_utf8_lossy(&bytes[..end]).into_owned());
    }

    let mut needed_offsets = Vec::new();
    let mut strtab_vaddr = None;
    for seg in segments.iter().filter(|s| s.kind == PT_DYNAMIC) {
        let dynamic = read_range(r, seg.offset, seg.filesz)?;
        for entry in dynamic.chunks_exact(16) {
            match u64_at(entry, 0) {
                DT_NULL => break,
                DT_NEEDED => needed_offsets.push(u64_at(entry, 8)),
                DT_STRTAB => strtab_vaddr = Some(u64_at(entry, 8)),
                _ => {}
            }
        }
    }

    if interpreter.is_none() && needed_offsets.is_empty() {
        return Ok(Linkage::Static);
    }
    // Resolve library names through the string table's load segment; fall back to offsets.
    let strtab_offset = strtab_vaddr.and_then(|vaddr| {
        segments
            .iter()
            .filter(|s| s.kind == PT_LOAD)
            .find(|s| vaddr >= s.vaddr && vaddr < s.vaddr + s.filesz)
            .map(|s| s.offset + (vaddr - s.vaddr))
    });
    let needed = needed_offsets
        .iter()
        .map(|&off| {
            strtab_offset
                .and_then(|base| read_cstr(r, base + off))
                .unwrap_or_else(|| format!("<string at offset {off}>"))
        })
        .collect();
    Ok(Linkage::Dynamic {
        interpreter,
        needed,
    })
}

/// Reads a NUL-terminated string of at most 255 bytes.
fn read_cstr(r: &(impl ReadAt + ?Sized), offset: u64) -> Option<String> {
    const MAX: usize = 256;
    // One read in the common case; byte by byte only when the string ends near the file's end.
    let bytes = match r.read_at_exact(offset, MAX) {
        Ok(bytes) => bytes,
        Err(_) => (0..MAX as u64)
            .map_while(|i| r.read_at_exact(offset + i, 1).ok().map(|b| b[0]))
            .collect(),
    };
    let end = bytes.iter().position(|&c| c == 0)?;
    Some(String::from_utf8_lossy(&bytes[..end]).into_owned())
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! Builds minimal ELF64 files in memory.

    /// A relocatable file (like a `.ko`) with the given sections (name, contents).
    pub fn relocatable(sections: &[(&str, &[u8])]) -> Vec<u8> {
        let mut shstrtab = vec![0u8];
        let mut name_offsets = Vec::new();
        for (name, _) in sections {
            name_offsets.push(shstrtab.len() as u32);
            shstrtab.extend_from_slice(name.as_bytes());
            shstrtab.push(0);
        }
        let shstrtab_name = shstrtab.len() as u32;
        shstrtab.extend_from_slice(b".shstrtab\0");

        let mut file = vec![0u8; 64];
        let mut data_offsets = Vec::new();
        for (_, data) in sections {
            data_offsets.push(file.len() as u64);
            file.extend_from_slice(data);
        }
        let shstrtab_off = file.len() as u64;
        file.extend_from_slice(&shstrtab);
        while !file.len().is_multiple_of(8) {
            file.push(0);
        }
        let shoff = file.len() as u64;
        // Null section, the given sections, then .shstrtab.
        file.extend_from_slice(&[0u8; 64]);
        for (i, (_, data)) in sections.iter().enumerate() {
            file.extend_from_slice(&shdr(
                name_offsets[i],
                1,
                data_offsets[i],
                data.len() as u64,
            ));
        }
        file.extend_from_slice(&shdr(shstrtab_name, 3, shstrtab_off, shstrtab.len() as u64));
        let shnum = sections.len() as u16 + 2;
        write_ehdr(&mut file, 1, 0, 0, shoff, shnum, shnum - 1);
        file
    }

    fn shdr(name: u32, kind: u32, offset: u64, size: u64) -> Vec<u8> {
        let mut s = vec![0u8; 64];
        s[0..4].copy_from_slice(&name.to_le_bytes());
        s[4..8].copy_from_slice(&kind.to_le_bytes());
        s[24..32].copy_from_slice(&offset.to_le_bytes());
        s[32..40].copy_from_slice(&size.to_le_bytes());
        s
    }

    fn write_ehdr(
        file: &mut [u8],
        kind: u16,
        phoff: u64,
        phnum: u16,
        shoff: u64,
        shnum: u16,
        shstrndx: u16,
    ) {
        file[0..4].copy_from_slice(b"\x7fELF");
        file[4] = 2;
        file[5] = 1;
        file[6] = 1;
        file[16..18].copy_from_slice(&kind.to_le_bytes());
        file[18..20].copy_from_slice(&62u16.to_le_bytes());
        file[32..40].copy_from_slice(&phoff.to_le_bytes());
        file[40..48].copy_from_slice(&shoff.to_le_bytes());
        file[52..54].copy_from_slice(&64u16.to_le_bytes());
        file[54..56].copy_from_slice(&56u16.to_le_bytes());
        file[56..58].copy_from_slice(&phnum.to_le_bytes());
        file[58..60].copy_from_slice(&64u16.to_le_bytes());
        file[60..62].copy_from_slice(&shnum.to_le_bytes());
        file[62..64].copy_from_slice(&shstrndx.to_le_bytes());
    }

    /// An executable with an optional interpreter and the given `DT_NEEDED` library names.
    /// `dynamic` adds a `PT_DYNAMIC` segment even without libraries (as static-pie has).
    pub fn executable(interp: Option<&str>, needed: &[&str], dynamic: bool) -> Vec<u8> {
        let mut phdrs: Vec<(u32, u64, u64, u64)> = Vec::new(); // kind, offset, vaddr, filesz
        let phnum = 1 + usize::from(interp.is_some()) + usize::from(dynamic || !needed.is_empty());
        let mut file = vec![0u8; 64 + phnum * 56];
        let base_vaddr = 0x400000u64;
        if let Some(interp) = interp {
            let off = file.len() as u64;
            file.extend_from_slice(interp.as_bytes());
            file.push(0);
            phdrs.push((3, off, base_vaddr + off, interp.len() as u64 + 1));
        }
        let mut strtab = vec![0u8];
        let mut name_offs = Vec::new();
        for n in needed {
            name_offs.push(strtab.len() as u64);
            strtab.extend_from_slice(n.as_bytes());
            strtab.push(0);
        }
        let strtab_off = file.len() as u64;
        file.extend_from_slice(&strtab);
        while !file.len().is_multiple_of(8) {
            file.push(0);
        }
        if dynamic || !needed.is_empty() {
            let dyn_off = file.len() as u64;
            let mut entries: Vec<(u64, u64)> = name_offs.iter().map(|&o| (1, o)).collect();
            entries.push((5, base_vaddr + strtab_off));
            entries.push((0, 0));
            for (tag, val) in &entries {
                file.extend_from_slice(&tag.to_le_bytes());
                file.extend_from_slice(&val.to_le_bytes());
            }
            phdrs.push((2, dyn_off, base_vaddr + dyn_off, entries.len() as u64 * 16));
        }
        let total = file.len() as u64;
        phdrs.push((1, 0, base_vaddr, total));
        for (i, (kind, off, vaddr, size)) in phdrs.iter().enumerate() {
            let p = 64 + i * 56;
            file[p..p + 4].copy_from_slice(&kind.to_le_bytes());
            file[p + 8..p + 16].copy_from_slice(&off.to_le_bytes());
            file[p + 16..p + 24].copy_from_slice(&vaddr.to_le_bytes());
            file[p + 32..p + 40].copy_from_slice(&size.to_le_bytes());
            file[p + 40..p + 48].copy_from_slice(&size.to_le_bytes());
        }
        write_ehdr(&mut file, 3, 64, phnum as u16, 0, 0, 0);
        file
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_section_by_name() {
        let file = fixtures::relocatable(&[(".text", b"\x90\x90"), (".modinfo", b"name=x\0")]);
        let header = read_header(file.as_slice()).unwrap();
        assert_eq!(header.machine, 62);
        let modinfo = section_by_name(file.as_slice(), &header, ".modinfo").unwrap();
        assert_eq!(modinfo.as_deref(), Some(&b"name=x\0"[..]));
        assert_eq!(
            section_by_name(file.as_slice(), &header, ".nope").unwrap(),
            None
        );
    }

    #[test]
    fn rejects_non_elf_and_truncated_files() {
        assert!(matches!(
            read_header(&b"#!/bin/sh\n"[..]),
            Err(ReadError::Malformed(_))
        ));
        let mut elf32 = fixtures::relocatable(&[]);
        elf32[4] = 1;
        assert!(matches!(
            read_header(elf32.as_slice()),
            Err(ReadError::Malformed(_))
        ));
        let file = fixtures::relocatable(&[(".modinfo", b"a=b\0")]);
        let truncated = &file[..file.len() - 10];
        let header = read_header(truncated).unwrap();
        assert!(matches!(
            section_by_name(truncated, &header, ".modinfo"),
            Err(ReadError::Malformed(_))
        ));
    }

    #[test]
    fn static_pie_without_needed_is_static() {
        let exe = fixtures::executable(None, &[], true);
        assert_eq!(linkage(exe.as_slice()).unwrap(), Linkage::Static);
        let exe = fixtures::executable(None, &[], false);
        assert_eq!(linkage(exe.as_slice()).unwrap(), Linkage::Static);
    }

    #[test]
    fn interpreter_or_needed_libraries_make_it_dynamic() {
        let exe = fixtures::executable(Some("/lib64/ld-linux-x86-64.so.2"), &["libc.so.6"], true);
        assert_eq!(
            linkage(exe.as_slice()).unwrap(),
            Linkage::Dynamic {
                interpreter: Some("/lib64/ld-linux-x86-64.so.2".into()),
                needed: vec!["libc.so.6".into()],
            }
        );
        let exe = fixtures::executable(None, &["libm.so.6", "libc.so.6"], true);
        assert_eq!(
            linkage(exe.as_slice()).unwrap(),
            Linkage::Dynamic {
                interpreter: None,
                needed: vec!["libm.so.6".into(), "libc.so.6".into()]
            }
        );
    }

    #[test]
    fn host_true_is_dynamic() {
        // Debian's coreutils are dynamically linked against glibc.
        let file = File::open("/bin/true").expect("/bin/true exists on the build host");
        match linkage(&file).unwrap() {
            Linkage::Dynamic {
                interpreter,
                needed,
            } => {
                assert!(interpreter.is_some_and(|i| i.contains("ld-linux")));
                assert!(
                    needed.iter().any(|n| n.starts_with("libc.so")),
                    "{needed:?}"
                );
            }
            Linkage::Static => panic!("/bin/true reported static"),
        }
    }
}

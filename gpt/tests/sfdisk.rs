//! Checks against a real tool: util-linux's `sfdisk` reads what we write, and we read what it
//! writes. Skipped (with a message) when `sfdisk` is not on PATH.

#![allow(clippy::unwrap_used)]

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;
use shoal_gpt::{Guid, HEAD_BYTES, PartitionSpec, SECTOR, Table, types};

const MIB: u64 = 1024 * 1024;

fn sfdisk() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    let found = std::env::split_paths(&path)
        .map(|dir| dir.join("sfdisk"))
        .find(|candidate| candidate.is_file());
    if found.is_none() {
        // Straight to stderr: the test harness captures eprintln!, so a skip would go unseen.
        let _ = writeln!(
            std::io::stderr(),
            "sfdisk is not on PATH: skipped (install util-linux's fdisk package)"
        );
    }
    found
}

/// Runs sfdisk, asserts it succeeded, returns (stdout, stderr).
fn run(sfdisk: &Path, args: &[&str], file: &Path, stdin: &str) -> (String, String) {
    let mut child = Command::new(sfdisk)
        .args(args)
        .arg(file)
        .env("LC_ALL", "C")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        output.status.success(),
        "sfdisk {args:?}: {}\n{stdout}\n{stderr}",
        output.status
    );
    (stdout, stderr)
}

/// `sfdisk --verify` exits 0 even when it finds errors: read what it says.
fn assert_verifies(sfdisk: &Path, file: &Path) {
    let (stdout, stderr) = run(sfdisk, &["--verify"], file, "");
    assert!(
        stdout.contains("No errors detected") && stderr.trim().is_empty(),
        "sfdisk --verify:\n{stdout}\n{stderr}"
    );
}

fn json(sfdisk: &Path, file: &Path) -> Value {
    let (stdout, _) = run(sfdisk, &["--json"], file, "");
    let value: Value = serde_json::from_str(&stdout).unwrap();
    value["partitiontable"].clone()
}

fn write_table(file: &File, table: &Table) {
    for (offset, bytes) in table.to_writes() {
        file.write_all_at(&bytes, offset).unwrap();
    }
}

fn image(disk_bytes: u64) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    file.as_file().set_len(disk_bytes).unwrap();
    file
}

fn read_table(path: &Path) -> Table {
    let mut file = File::open(path).unwrap();
    let mut head = vec![0u8; HEAD_BYTES];
    file.read_exact(&mut head).unwrap();
    let disk_sectors = file.metadata().unwrap().len() / SECTOR;
    Table::parse(&head, disk_sectors).unwrap()
}

fn shoal_specs() -> Vec<PartitionSpec> {
    let spec = |name: &str, type_guid, seed, size_bytes, attributes| PartitionSpec {
        name: String::from(name),
        type_guid,
        unique_guid: Guid::from_seed([seed; 16]),
        size_bytes,
        attributes,
    };
    vec![
        spec("ESP", types::ESP, 0x11, Some(8 * MIB), 1),
        spec("ROOT-A", types::ROOT_X86_64, 0x22, Some(12 * MIB + 1), 0),
        spec(
            "ROOT-B",
            types::ROOT_X86_64,
            0x33,
            Some(12 * MIB),
            (1 << 2) | (1 << 48) | (1 << 60),
        ),
        spec("shoal state", types::VAR, 0x44, None, 0),
    ]
}

/// What sfdisk shows as `attrs` for the attribute bits the specs use.
fn sfdisk_attrs(attributes: u64) -> Option<&'static str> {
    match attributes {
        0 => None,
        1 => Some("RequiredPartition"),
        x if x == (1 << 2) | (1 << 48) | (1 << 60) => Some("LegacyBIOSBootable GUID:48,60"),
        other => panic!("no expectation for attributes {other:#x}"),
    }
}

/// Compares sfdisk's view of a disk with a table.
fn assert_same(seen: &Value, table: &Table) {
    assert_eq!(seen["label"], "gpt");
    assert_eq!(seen["id"], table.disk_guid.to_string().to_uppercase());
    assert_eq!(seen["sectorsize"], SECTOR);
    assert_eq!(seen["firstlba"], table.first_usable());
    assert_eq!(seen["lastlba"], table.last_usable());
    let partitions = seen["partitions"].as_array().unwrap();
    assert_eq!(partitions.len(), table.partitions.len());
    for (seen, ours) in partitions.iter().zip(&table.partitions) {
        assert_eq!(seen["start"], ours.first_lba, "{ours:?}");
        assert_eq!(seen["size"], ours.last_lba - ours.first_lba + 1, "{ours:?}");
        assert_eq!(seen["type"], ours.type_guid.to_string().to_uppercase());
        assert_eq!(seen["uuid"], ours.unique_guid.to_string().to_uppercase());
        assert_eq!(seen["name"], ours.name.as_str());
        assert_eq!(seen["attrs"].as_str(), sfdisk_attrs(ours.attributes));
    }
}

#[test]
fn sfdisk_reads_our_layout() {
    let Some(sfdisk) = sfdisk() else { return };
    let disk_bytes = 64 * MIB;
    let table = Table::layout(Guid::from_seed([0xab; 16]), disk_bytes, &shoal_specs()).unwrap();
    let file = image(disk_bytes);
    write_table(file.as_file(), &table);

    assert_verifies(&sfdisk, file.path());
    assert_same(&json(&sfdisk, file.path()), &table);
    assert_eq!(read_table(file.path()), table);
}

#[test]
fn we_read_sfdisk_tables() {
    let Some(sfdisk) = sfdisk() else { return };
    let disk_bytes = 48 * MIB;
    let file = image(disk_bytes);
    // first-lba 34: sfdisk's default is 2048, which we would write back as 34.
    let script = "\
label: gpt
label-id: 0123ABCD-4567-489A-8BCD-EF0123456789
first-lba: 34
start=2048, size=16384, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=11111111-2222-4333-8444-555555555555, name=\"ESP\", attrs=\"RequiredPartition\"
start=18432, size=4097, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, uuid=AAAAAAAA-BBBB-4CCC-8DDD-EEEEEEEEEEEE, name=\"ROOT-A\"
start=24576, size=8192, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, uuid=FFFFFFFF-0000-4111-9222-333333333333, name=\"ROOT-B\", attrs=\"LegacyBIOSBootable GUID:48,60\"
start=40960, size=55296, type=4D21B016-B534-45C2-A9FB-5C16E091FD2D, uuid=01020304-0506-4708-890A-0B0C0D0E0F10, name=\"shoal state\"
";
    run(&sfdisk, &["--quiet", "--no-reread"], file.path(), script);

    let table = read_table(file.path());
    let n = disk_bytes / SECTOR;
    assert_eq!(
        table.disk_guid,
        Guid::parse("0123abcd-4567-489a-8bcd-ef0123456789").unwrap()
    );
    assert_eq!(table.disk_sectors, n);
    assert_eq!(table.alternate_lba, n - 1);
    assert!(table.backup_at_end());
    // The last partition ends at 47 MiB, before the last usable LBA.
    assert!(table.can_grow_last());
    let summary: Vec<(&str, Guid, String, u64, u64, u64)> = table
        .partitions
        .iter()
        .map(|p| {
            let unique = p.unique_guid.to_string();
            (
                p.name.as_str(),
                p.type_guid,
                unique,
                p.first_lba,
                p.last_lba,
                p.attributes,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                "ESP",
                types::ESP,
                "11111111-2222-4333-8444-555555555555".into(),
                2048,
                18431,
                1
            ),
            (
                "ROOT-A",
                types::ROOT_X86_64,
                "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee".into(),
                18432,
                22528,
                0
            ),
            (
                "ROOT-B",
                types::ROOT_X86_64,
                "ffffffff-0000-4111-9222-333333333333".into(),
                24576,
                32767,
                (1 << 2) | (1 << 48) | (1 << 60)
            ),
            (
                "shoal state",
                types::VAR,
                "01020304-0506-4708-890a-0b0c0d0e0f10".into(),
                40960,
                96255,
                0
            ),
        ]
    );
    // And sfdisk's own view agrees with ours.
    assert_same(&json(&sfdisk, file.path()), &table);

    // Writing back what we parsed gives a table sfdisk still accepts, unchanged.
    write_table(file.as_file(), &table);
    assert_verifies(&sfdisk, file.path());
    assert_same(&json(&sfdisk, file.path()), &table);

    // Growing in place (same disk size) takes the last partition to the last usable LBA.
    let grown = table.grow_last(n).unwrap();
    assert_eq!(grown.partitions[3].last_lba, n - 34);
    write_table(file.as_file(), &grown);
    assert_verifies(&sfdisk, file.path());
    assert_same(&json(&sfdisk, file.path()), &grown);
}

#[test]
fn grow_an_image_on_a_larger_disk_as_sfdisk_sees_it() {
    let Some(sfdisk) = sfdisk() else { return };
    let image_bytes = 64 * MIB;
    let table = Table::layout(Guid::from_seed([0xcd; 16]), image_bytes, &shoal_specs()).unwrap();
    let file = image(image_bytes);
    write_table(file.as_file(), &table);
    assert_verifies(&sfdisk, file.path());

    // The image lands on a larger disk.
    let disk_bytes = 200 * MIB;
    file.as_file().set_len(disk_bytes).unwrap();
    let n = disk_bytes / SECTOR;
    let (stdout, stderr) = run(&sfdisk, &["--verify"], file.path(), "");
    assert!(
        !stdout.contains("No errors detected"),
        "sfdisk should notice the misplaced backup:\n{stdout}\n{stderr}"
    );

    let found = read_table(file.path());
    assert_eq!(found.alternate_lba, image_bytes / SECTOR - 1);
    assert!(!found.backup_at_end());
    assert!(found.can_grow_last());

    let grown = found.grow_last(n).unwrap();
    write_table(file.as_file(), &grown);
    assert_verifies(&sfdisk, file.path());
    let seen = json(&sfdisk, file.path());
    assert_same(&seen, &grown);
    let last = &seen["partitions"][3];
    assert_eq!(
        last["start"].as_u64().unwrap() + last["size"].as_u64().unwrap() - 1,
        n - 34
    );
    assert_eq!(seen["lastlba"], n - 34);

    let reread = read_table(file.path());
    assert_eq!(reread, grown);
    assert!(reread.backup_at_end() && !reread.can_grow_last());
}

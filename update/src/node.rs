//! The updater on a node booted from a slot: what its slots hold, applying a bundle to the
//! other slot, blessing the booted one, rolling back.
//!
//! Every root is a parameter ([`Roots`]): the sysfs tree, the device directory, the mounted ESP
//! and the state directory, so the whole flow runs on fixture trees with plain files standing
//! in for partitions.
//!
//! Applying never touches the booted slot, and makes the other slot bootable only at the very
//! end: its old entry goes first (synced), then the kernel, initramfs and root image are written
//! and synced while each part's hash is checked, and only then does the new entry, with a trial
//! counter, take its place in one rename. A failure or a power cut at any point before that
//! leaves the booted slot as the default, and nothing half-written can be booted.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use shoal_gpt::sysfs;

use crate::bundle::{self, PublicKey, Reader};
use crate::entries::{self, Slot, TRIES};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "this node did not boot from a disk slot (no shoal.slot= on its command line): PXE and initramfs boots are updated by their boot server"
    )]
    NotSlotted,
    #[error("{0}")]
    Partition(String),
    #[error("the root image needs {needed} bytes, slot {slot} has {size}")]
    TooBig { slot: Slot, needed: u64, size: u64 },
    #[error(transparent)]
    Bundle(#[from] bundle::Error),
    #[error(transparent)]
    Entries(#[from] entries::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where the updater finds things.
#[derive(Debug, Clone)]
pub struct Roots {
    pub sys: PathBuf,
    pub dev: PathBuf,
    /// The mounted ESP (`/run/shoal/boot`).
    pub esp: PathBuf,
    /// Persistent state (`/var/lib/shoal`), for the last result.
    pub state: PathBuf,
}

/// One slot as `shoalctl update status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SlotStatus {
    pub slot: Slot,
    pub booted: bool,
    pub default: bool,
    /// The version its entry boots, if it has one.
    pub version: Option<String>,
    /// `good`, `trial` (tries left), `failed` (no tries left) or `empty`.
    pub state: String,
    pub tries_left: Option<u32>,
}

/// The node's slots and the last update's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    pub booted: Slot,
    pub slots: Vec<SlotStatus>,
    /// What happened to the last update, when it did not end with its slot blessed.
    pub last_result: Option<String>,
}

/// What [`Node::apply`] installed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Applied {
    pub slot: Slot,
    pub version: String,
    pub signer: String,
    pub bytes: u64,
}

/// The slot named by `shoal.slot=` on a kernel command line.
pub fn booted_slot(cmdline: &str) -> Option<Slot> {
    cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("shoal.slot="))
        .and_then(Slot::parse)
}

/// Streams the kernel and initramfs into their staging files (`staged`: temporary path, final
/// path) and the root image onto the slot `device`, each synced, each part's hash checked.
fn write_parts<R: Read>(
    reader: &mut Reader<R>,
    staged: &[(PathBuf, PathBuf)],
    device: &Path,
    progress: &mut impl FnMut(&str, u64),
) -> Result<(), Error> {
    for ((tmp, _), name) in staged.iter().zip(["vmlinuz", "initramfs"]) {
        let mut file = fs::File::create(tmp).map_err(io(tmp))?;
        reader.copy_part(name, &mut file, |n| progress(name, n))?;
        file.sync_all().map_err(io(tmp))?;
    }
    let mut slot = fs::OpenOptions::new()
        .write(true)
        .open(device)
        .map_err(io(device))?;
    let result = reader.copy_part("root", &mut slot, |n| progress("root", n));
    slot.flush().map_err(io(device))?;
    slot.sync_all().map_err(io(device))?;
    Ok(result?)
}

/// A node booted from slot `booted` of disk `disk`.
#[derive(Debug, Clone)]
pub struct Node {
    roots: Roots,
    pub booted: Slot,
    pub disk: String,
}

const RESULT_FILE: &str = "update-result";
/// What PID 1 of a slot on trial recorded (`init/src/trial.rs` writes it): `key=value` lines
/// `slot`, `entry`, `outcome` (`started` or `unhealthy`) and `timeout_s`.
const TRIAL_FILE: &str = "update-trial";

/// How many boots and how long each a new slot gets to become healthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrialPolicy {
    pub tries: u32,
    pub timeout: std::time::Duration,
}

impl Default for TrialPolicy {
    fn default() -> Self {
        TrialPolicy {
            tries: TRIES,
            timeout: std::time::Duration::from_secs(300),
        }
    }
}

/// Why the slot of `failed` (out of tries) never became good, from PID 1's trial record.
pub fn why_trial_failed(record: &str, failed: &entries::Entry) -> String {
    let field = |key: &str| {
        record
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .unwrap_or_default()
    };
    let boots = match failed.counter {
        Some(c) => c.done,
        None => 0,
    };
    let boots = if boots == 1 {
        "its only boot".to_string()
    } else {
        format!("{boots} boots")
    };
    if field("slot") != failed.slot.to_string() {
        // Its PID 1 never mounted STATE: the kernel, the initramfs or early PID 1 failed.
        return format!(
            "in {boots} it never got as far as mounting STATE (the kernel or early boot failed, \
             or PID 1 panicked)"
        );
    }
    match field("outcome") {
        "unhealthy" => format!(
            "in {boots} it booted but was not healthy (back in its cluster) within {} s",
            field("timeout_s")
        ),
        _ => format!(
            "in {boots} it started but stopped before it was healthy (it hung and the watchdog \
             reset it, or it crashed)"
        ),
    }
}

impl Node {
    /// The node as its command line and sysfs show it.
    pub fn detect(roots: Roots, cmdline: &str) -> Result<Node, Error> {
        let booted = booted_slot(cmdline).ok_or(Error::NotSlotted)?;
        let part =
            sysfs::find_one(&roots.sys, &booted.partition(), None).map_err(Error::Partition)?;
        Ok(Node {
            roots,
            booted,
            disk: part.disk,
        })
    }

    fn slot_partition(&self, slot: Slot) -> Result<sysfs::PartitionDev, Error> {
        sysfs::find_one(&self.roots.sys, &slot.partition(), Some(&self.disk))
            .map_err(Error::Partition)
    }

    /// The slots, their entries and the last result.
    pub fn status(&self) -> Result<Status, Error> {
        let all = entries::read(&self.roots.esp)?;
        let default = entries::default_entry(&all).map(|e| e.slot);
        let slots = [Slot::A, Slot::B]
            .into_iter()
            .map(|slot| {
                let entry = all.iter().find(|e| e.slot == slot);
                let (state, tries_left) = match entry {
                    None => ("empty".to_string(), None),
                    Some(e) => match e.counter {
                        None => ("good".to_string(), None),
                        Some(c) if c.left > 0 => ("trial".to_string(), Some(c.left)),
                        Some(_) => ("failed".to_string(), Some(0)),
                    },
                };
                SlotStatus {
                    slot,
                    booted: slot == self.booted,
                    default: default == Some(slot),
                    version: entry.map(|e| e.version.clone()),
                    state,
                    tries_left,
                }
            })
            .collect();
        Ok(Status {
            booted: self.booted,
            slots,
            last_result: fs::read_to_string(self.roots.state.join(RESULT_FILE))
                .ok()
                .map(|s| s.trim().to_string()),
        })
    }

    fn record(&self, result: &str) {
        let path = self.roots.state.join(RESULT_FILE);
        if let Err(e) = fs::write(&path, format!("{result}\n")) {
            tracing::warn!("{}: {e}", path.display());
        }
    }

    /// Verifies `bundle` against `trusted` and installs it into the other slot, which becomes
    /// the default on trial (`policy`'s tries, each with its time to become healthy).
    /// `progress` hears the bytes of each part copied so far.
    pub fn apply(
        &self,
        bundle: impl Read,
        trusted: &[PublicKey],
        policy: TrialPolicy,
        mut progress: impl FnMut(&str, u64),
    ) -> Result<Applied, Error> {
        let mut reader = Reader::open(bundle, trusted, std::env::consts::ARCH)?;
        let manifest = reader.manifest.clone();
        let target = self.booted.other();
        let partition = self.slot_partition(target)?;
        let root = manifest.part("root").expect("checked by the reader");
        let size = partition.sectors * 512;
        if root.size > size {
            return Err(Error::TooBig {
                slot: target,
                needed: root.size,
                size,
            });
        }
        // A trial record from an earlier update must not explain this one's outcome.
        let _ = fs::remove_file(self.roots.state.join(TRIAL_FILE));
        // The target slot stops being bootable before any of it changes.
        let entries_dir = self.roots.esp.join("loader/entries");
        for old in entries::read(&self.roots.esp)?
            .into_iter()
            .filter(|e| e.slot == target)
        {
            let path = entries_dir.join(&old.file);
            fs::remove_file(&path).map_err(io(&path))?;
        }
        fs::File::open(&entries_dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&entries_dir))?;

        let slot_dir = self
            .roots
            .esp
            .join("shoal")
            .join(target.letter().to_string());
        fs::create_dir_all(&slot_dir).map_err(io(&slot_dir))?;
        let staged: Vec<(PathBuf, PathBuf)> = ["vmlinuz", "initramfs"]
            .iter()
            .map(|name| (slot_dir.join(format!("{name}.new")), slot_dir.join(name)))
            .collect();
        let device = self.roots.dev.join(&partition.name);
        if let Err(e) = write_parts(&mut reader, &staged, &device, &mut progress) {
            // A refused bundle leaves no half-written files on the ESP.
            for (tmp, _) in &staged {
                let _ = fs::remove_file(tmp);
            }
            return Err(e);
        }
        for (tmp, path) in &staged {
            entries::rename_durably(tmp, path)?;
        }
        let options = format!(
            "{} shoal.trial_timeout={}",
            entries::slot_options(
                &manifest.cmdline,
                target,
                &manifest.root_hash,
                manifest.hash_offset,
            ),
            policy.timeout.as_secs()
        );
        entries::install(
            &self.roots.esp,
            target,
            &manifest.version,
            &options,
            Some(policy.tries),
        )?;
        self.record(&format!(
            "{} installed in slot {target}, on trial until it proves healthy",
            manifest.version
        ));
        Ok(Applied {
            slot: target,
            version: manifest.version,
            signer: reader.signer.to_string(),
            bytes: manifest.parts.iter().map(|p| p.size).sum(),
        })
    }

    /// Marks the booted slot good when it is on trial (the node is healthy). Returns whether it
    /// was on trial.
    pub fn bless_booted(&self) -> Result<bool, Error> {
        let blessed = entries::bless(&self.roots.esp, self.booted)?;
        if blessed {
            let version = entries::read(&self.roots.esp)?
                .into_iter()
                .find(|e| e.slot == self.booted)
                .map(|e| e.version)
                .unwrap_or_default();
            self.record(&format!(
                "{version} in slot {} booted, rejoined and healthy: blessed",
                self.booted
            ));
        }
        Ok(blessed)
    }

    /// After booting, records an update that did not take: the newest entry is the other
    /// slot's, with no tries left. Returns the message when there was one.
    pub fn notice_failed_update(&self) -> Result<Option<String>, Error> {
        let all = entries::read(&self.roots.esp)?;
        let Some(newest) = all.first() else {
            return Ok(None);
        };
        if newest.slot == self.booted || newest.bootable() {
            return Ok(None);
        }
        let trial = fs::read_to_string(self.roots.state.join(TRIAL_FILE)).unwrap_or_default();
        let message = format!(
            "update to {} in slot {} failed: {}; back on slot {}",
            newest.version,
            newest.slot,
            why_trial_failed(&trial, newest),
            self.booted
        );
        let already = fs::read_to_string(self.roots.state.join(RESULT_FILE)).unwrap_or_default();
        if already.trim() != message {
            self.record(&message);
        }
        Ok(Some(message))
    }

    /// Makes the other slot the default again (an operator's rollback); it must hold a
    /// complete image (an entry that is not failed).
    pub fn rollback(&self) -> Result<entries::Entry, Error> {
        let other = self.booted.other();
        let entry = entries::read(&self.roots.esp)?
            .into_iter()
            .find(|e| e.slot == other)
            .ok_or(entries::Error::NoEntry(other))?;
        let installed = entries::make_default(&self.roots.esp, other)?;
        self.record(&format!(
            "rolled back to {} in slot {other} on request",
            entry.version
        ));
        Ok(installed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use std::os::unix::fs::symlink;

    struct Fixture {
        _dir: tempfile::TempDir,
        roots: Roots,
    }

    /// A disk `vda` with slots a (vda2) and b (vda3) of `slot_bytes`, their device files, and an
    /// ESP holding slot A's entry.
    fn fixture(slot_bytes: u64) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let roots = Roots {
            sys: root.join("sys"),
            dev: root.join("dev"),
            esp: root.join("esp"),
            state: root.join("state"),
        };
        let class = roots.sys.join("class/block");
        fs::create_dir_all(&class).unwrap();
        fs::create_dir_all(&roots.dev).unwrap();
        fs::create_dir_all(&roots.state).unwrap();
        for (i, name) in ["shoal-root-a", "shoal-root-b"].iter().enumerate() {
            let part = format!("vda{}", i + 2);
            let d = roots.sys.join("devices/virtio/block/vda").join(&part);
            fs::create_dir_all(&d).unwrap();
            fs::write(
                d.join("uevent"),
                format!("DEVTYPE=partition\nPARTNAME={name}\n"),
            )
            .unwrap();
            fs::write(d.join("dev"), format!("253:{}\n", i + 2)).unwrap();
            fs::write(d.join("partition"), format!("{}\n", i + 2)).unwrap();
            fs::write(d.join("start"), "2048\n").unwrap();
            fs::write(d.join("size"), format!("{}\n", slot_bytes / 512)).unwrap();
            symlink(
                format!("../../devices/virtio/block/vda/{part}"),
                class.join(&part),
            )
            .unwrap();
            fs::write(roots.dev.join(&part), vec![0xee; slot_bytes as usize]).unwrap();
        }
        fs::create_dir_all(roots.esp.join("loader/entries")).unwrap();
        entries::install(&roots.esp, Slot::A, "0.1.0", "quiet shoal.slot=a", None).unwrap();
        Fixture { _dir: dir, roots }
    }

    fn key() -> bundle::SigningKey {
        bundle::SigningKey::parse(&base64::engine::general_purpose::STANDARD.encode([5u8; 32]))
            .unwrap()
    }

    fn bundle_bytes(root: &[u8]) -> Vec<u8> {
        let manifest = bundle::Manifest {
            format: 0,
            version: "0.2.0".into(),
            arch: std::env::consts::ARCH.into(),
            profile: "test".into(),
            kernel_release: "6.1".into(),
            cmdline: "console=ttyS0 quiet".into(),
            root_hash: "cd".repeat(32),
            hash_offset: 4096,
            key: String::new(),
            parts: Vec::new(),
        };
        let parts: Vec<(&str, u64, Box<dyn Read>)> = vec![
            ("vmlinuz", 3, Box::new(&b"KKK"[..])),
            ("initramfs", 2, Box::new(&b"II"[..])),
            ("root", root.len() as u64, Box::new(root)),
        ];
        let mut out = Vec::new();
        bundle::write(&mut out, manifest, parts, &key()).unwrap();
        out
    }

    fn node(f: &Fixture) -> Node {
        Node::detect(
            f.roots.clone(),
            "console=ttyS0 shoal.slot=a shoal.roothash=x",
        )
        .unwrap()
    }

    #[test]
    fn a_bundle_goes_to_the_other_slot_which_becomes_the_default_on_trial() {
        let f = fixture(64 * 1024);
        let n = node(&f);
        assert_eq!((n.booted, n.disk.as_str()), (Slot::A, "vda"));
        let root = vec![0x42u8; 8192];
        let applied = n
            .apply(
                &bundle_bytes(&root)[..],
                &[key().public()],
                TrialPolicy::default(),
                |_, _| {},
            )
            .unwrap();
        assert_eq!((applied.slot, applied.version.as_str()), (Slot::B, "0.2.0"));
        let slot_b = fs::read(f.roots.dev.join("vda3")).unwrap();
        assert_eq!(&slot_b[..8192], &root[..]);
        assert_eq!(
            fs::read(f.roots.dev.join("vda2")).unwrap()[0],
            0xee,
            "slot A untouched"
        );
        assert_eq!(
            fs::read(f.roots.esp.join("shoal/b/vmlinuz")).unwrap(),
            b"KKK"
        );
        let all = entries::read(&f.roots.esp).unwrap();
        let default = entries::default_entry(&all).unwrap();
        assert_eq!(default.file, "shoal-b+3-0.conf");
        assert_eq!(
            default.options,
            format!(
                "console=ttyS0 quiet shoal.slot=b shoal.roothash={} shoal.hashoffset=4096 \
                 shoal.trial_timeout=300",
                "cd".repeat(32)
            )
        );
        let status = n.status().unwrap();
        assert_eq!(status.slots[1].state, "trial");
        assert!(status.slots[1].default && status.slots[0].booted);
        assert!(status.last_result.unwrap().contains("on trial"));
    }

    #[test]
    fn a_bad_bundle_changes_nothing() {
        let f = fixture(64 * 1024);
        let n = node(&f);
        let good = bundle_bytes(&vec![0x42u8; 8192]);
        // Untrusted key, truncated body, flipped root byte.
        let other =
            bundle::SigningKey::parse(&base64::engine::general_purpose::STANDARD.encode([9u8; 32]))
                .unwrap();
        assert!(
            n.apply(
                &good[..],
                &[other.public()],
                TrialPolicy::default(),
                |_, _| {}
            )
            .is_err()
        );
        assert!(
            n.apply(
                &good[..good.len() - 100],
                &[key().public()],
                TrialPolicy::default(),
                |_, _| {}
            )
            .is_err()
        );
        let mut flipped = good.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        let err = n
            .apply(
                &flipped[..],
                &[key().public()],
                TrialPolicy::default(),
                |_, _| {},
            )
            .unwrap_err();
        assert!(err.to_string().contains("sha256"), "{err}");
        // Slot A stays the only entry and the default; slot B's entry was never written.
        let all = entries::read(&f.roots.esp).unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(entries::default_entry(&all).unwrap().slot, Slot::A);
        assert!(!f.roots.esp.join("shoal/b/vmlinuz").exists());
        assert!(!f.roots.esp.join("shoal/b/vmlinuz.new").exists());
        assert!(!f.roots.esp.join("shoal/b/initramfs.new").exists());
    }

    #[test]
    fn a_root_image_larger_than_the_slot_is_refused() {
        let f = fixture(8192);
        let err = node(&f)
            .apply(
                &bundle_bytes(&vec![1u8; 16384])[..],
                &[key().public()],
                TrialPolicy::default(),
                |_, _| {},
            )
            .unwrap_err();
        assert!(matches!(err, Error::TooBig { slot: Slot::B, .. }), "{err}");
    }

    #[test]
    fn blessing_failed_updates_and_rollback() {
        let f = fixture(64 * 1024);
        let a = node(&f);
        a.apply(
            &bundle_bytes(&vec![7u8; 4096 * 2])[..],
            &[key().public()],
            TrialPolicy::default(),
            |_, _| {},
        )
        .unwrap();
        // Booted into b: blessing drops its counter.
        let b = Node::detect(f.roots.clone(), "shoal.slot=b").unwrap();
        assert!(b.bless_booted().unwrap());
        assert!(!b.bless_booted().unwrap());
        assert_eq!(b.status().unwrap().slots[1].state, "good");
        assert!(b.status().unwrap().last_result.unwrap().contains("blessed"));
        // Rolling back makes a the default again.
        b.rollback().unwrap();
        let all = entries::read(&f.roots.esp).unwrap();
        assert_eq!(entries::default_entry(&all).unwrap().slot, Slot::A);
        // An update that ran out of tries is noticed from the old slot.
        a.apply(
            &bundle_bytes(&vec![8u8; 4096 * 2])[..],
            &[key().public()],
            TrialPolicy::default(),
            |_, _| {},
        )
        .unwrap();
        let entries_dir = f.roots.esp.join("loader/entries");
        fs::rename(
            entries_dir.join("shoal-b+3-0.conf"),
            entries_dir.join("shoal-b+0-3.conf"),
        )
        .unwrap();
        // Its PID 1 recorded that it was not healthy in time.
        fs::write(
            f.roots.state.join(TRIAL_FILE),
            "slot=b\nentry=shoal-b+1-2.conf\noutcome=unhealthy\ntimeout_s=300\n",
        )
        .unwrap();
        let message = a.notice_failed_update().unwrap().unwrap();
        assert_eq!(
            message,
            "update to 0.2.0 in slot b failed: in 3 boots it booted but was not healthy (back in \
             its cluster) within 300 s; back on slot a"
        );
        assert_eq!(
            a.status().unwrap().last_result.as_deref(),
            Some(message.as_str())
        );
        assert_eq!(a.status().unwrap().slots[1].state, "failed");
    }

    #[test]
    fn the_trial_record_says_why_an_update_failed() {
        let failed = |done| entries::Entry {
            file: format!("shoal-b+0-{done}.conf"),
            slot: Slot::B,
            counter: Some(entries::Counter { left: 0, done }),
            version: "0.2.0".into(),
            generation: 1,
            options: String::new(),
        };
        // No record from slot b (an older one from slot a): it never mounted STATE.
        let never = why_trial_failed("slot=a\noutcome=started\n", &failed(1));
        assert_eq!(
            never,
            "in its only boot it never got as far as mounting STATE (the kernel or early boot \
             failed, or PID 1 panicked)"
        );
        assert_eq!(
            why_trial_failed("", &failed(3)),
            never.replace("its only boot", "3 boots")
        );
        assert_eq!(
            why_trial_failed(
                "slot=b\nentry=shoal-b+0-1.conf\noutcome=started\ntimeout_s=20\n",
                &failed(1)
            ),
            "in its only boot it started but stopped before it was healthy (it hung and the \
             watchdog reset it, or it crashed)"
        );
        assert_eq!(
            why_trial_failed("slot=b\noutcome=unhealthy\ntimeout_s=20\n", &failed(2)),
            "in 2 boots it booted but was not healthy (back in its cluster) within 20 s"
        );
    }

    #[test]
    fn a_node_without_a_slot_has_nothing_to_update() {
        let f = fixture(8192);
        assert!(matches!(
            Node::detect(f.roots.clone(), "console=ttyS0"),
            Err(Error::NotSlotted)
        ));
    }
}

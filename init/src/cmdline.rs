//! The kernel command line: the `shoal.` keys PID 1 understands, strictly.
//!
//! Unknown `shoal.` keys and malformed values are collected, not ignored, so a typo such as
//! `shoal.hostnme=` shows up in the boot's `cmdline` event instead of silently doing nothing.
//! Keys of the form `module.param=value` are kept for drivers PID 1 loads itself (the kernel only
//! applies them to built-in drivers).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Where the root image lives when `shoal.root=` is not given: inside the initramfs.
pub const DEFAULT_ROOT: &str = "/shoal/rootfs.erofs";

/// The log levels `shoal.log=` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "error" => Self::Error,
            "warn" => Self::Warn,
            "info" => Self::Info,
            "debug" => Self::Debug,
            "trace" => Self::Trace,
            _ => return None,
        })
    }
}

/// The root filesystem types PID 1 can mount as root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootFsType {
    Erofs,
    Squashfs,
    Ext4,
}

impl RootFsType {
    fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "erofs" => Self::Erofs,
            "squashfs" => Self::Squashfs,
            "ext4" => Self::Ext4,
            _ => return None,
        })
    }

    /// The name `mount(2)` and the kernel module both use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Erofs => "erofs",
            Self::Squashfs => "squashfs",
            Self::Ext4 => "ext4",
        }
    }
}

/// A root slot of an A/B disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub fn as_str(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }

    /// The GPT partition name of the slot's root.
    pub fn partition_name(self) -> String {
        format!("shoal-root-{}", self.as_str())
    }
}

/// Everything PID 1 takes from the kernel command line.
#[derive(Debug, Clone, PartialEq)]
pub struct Cmdline {
    pub root: PathBuf,
    pub root_fstype: RootFsType,
    pub root_wait: Duration,
    /// `shoal.slot=a|b`: boot the root slot of that name from disk (partition `shoal-root-a`
    /// or `shoal-root-b`) through dm-verity; `shoal.root=` is then not used.
    pub slot: Option<Slot>,
    /// `shoal.roothash=`: the slot's dm-verity root hash (hex).
    pub root_hash: Option<String>,
    /// `shoal.hashoffset=`: where the slot's hash area starts, in bytes.
    pub hash_offset: Option<u64>,
    /// `shoal.watchdog=SECONDS`: the watchdog's timeout; 0 leaves it off.
    pub watchdog: Duration,
    /// `shoal.trial_timeout=SECONDS`: how long a slot on trial may take to be blessed (the
    /// updater writes it into the entry; see `trial`).
    pub trial_timeout: Duration,
    /// `shoaltest.panic` (test images only): PID 1 panics as it starts, as a broken image
    /// would; the kernel's `panic=` reboots.
    pub test_panic: bool,
    /// `shoaltest.hang` (test images only): PID 1 hangs in the root stage once the watchdog is
    /// armed, before it starts anything.
    pub test_hang: bool,
    /// `shoaltest.watchdog_stall=SECONDS` (test images only): stop feeding the watchdog that
    /// long after boot, as a hung PID 1 would.
    pub test_watchdog_stall: Option<Duration>,
    pub hostname: Option<String>,
    pub reboot_delay: Duration,
    pub log_level: LogLevel,
    /// `module.param=value` settings, per module (names normalised to underscores).
    pub module_params: BTreeMap<String, Vec<String>>,
    /// `shoal.` keys this PID 1 does not know.
    pub unknown_keys: Vec<String>,
    /// Known keys with values that could not be used, with the reason; defaults apply to them.
    pub errors: Vec<String>,
}

impl Default for Cmdline {
    fn default() -> Self {
        Self {
            root: PathBuf::from(DEFAULT_ROOT),
            root_fstype: RootFsType::Erofs,
            root_wait: Duration::from_secs(10),
            slot: None,
            root_hash: None,
            hash_offset: None,
            watchdog: Duration::from_secs(60),
            trial_timeout: Duration::from_secs(300),
            test_panic: false,
            test_hang: false,
            test_watchdog_stall: None,
            hostname: None,
            reboot_delay: Duration::from_secs(10),
            log_level: LogLevel::Info,
            module_params: BTreeMap::new(),
            unknown_keys: Vec::new(),
            errors: Vec::new(),
        }
    }
}

/// Splits a command line into words the way the kernel does: spaces separate words, double
/// quotes group spaces into a word and are removed.
pub fn split_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_quotes = false;
    let mut has_word = false;
    for c in line.chars() {
        match c {
            '"' => {
                in_quotes = !in_quotes;
                has_word = true;
            }
            c if c.is_whitespace() && !in_quotes => {
                if has_word {
                    words.push(std::mem::take(&mut word));
                    has_word = false;
                }
            }
            c => {
                word.push(c);
                has_word = true;
            }
        }
    }
    if has_word {
        words.push(word);
    }
    words
}

/// Parses the whole command line. Never fails: problems are recorded in `unknown_keys` and
/// `errors`, and the defaults stay in force for the affected settings.
pub fn parse(line: &str) -> Cmdline {
    let mut cmdline = Cmdline::default();
    for word in split_words(line) {
        let (key, value) = match word.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (word.as_str(), None),
        };
        if let Some(shoal_key) = key.strip_prefix("shoal.") {
            apply_shoal_key(&mut cmdline, shoal_key, value);
        } else if key == "shoaltest.panic" {
            cmdline.test_panic = true;
        } else if key == "shoaltest.hang" {
            cmdline.test_hang = true;
        } else if key == "shoaltest.watchdog_stall" {
            cmdline.test_watchdog_stall = value.and_then(parse_seconds);
        } else if let Some((module, _param)) = key.split_once('.') {
            // Kernel parameters with a dot are module parameters (`virtio_net.napi_tx=1`).
            // The part before the dot never contains '/' or '=' for a real module.
            if !module.is_empty() && !module.contains('/') {
                let module = module.replace('-', "_");
                let param = word[module.len() + 1..].to_string();
                cmdline.module_params.entry(module).or_default().push(param);
            }
        }
    }
    cmdline
}

/// Keys other services read and check themselves (shoal-configd): PID 1 only knows they are
/// not typos.
fn read_elsewhere(key: &str) -> bool {
    matches!(key, "config" | "config.pin" | "imds")
        || key.starts_with("cluster.")
        || key.starts_with("node.")
}

fn apply_shoal_key(cmdline: &mut Cmdline, key: &str, value: Option<&str>) {
    let full = format!("shoal.{key}");
    if read_elsewhere(key) {
        return;
    }
    let Some(value) = value else {
        if known_key(key) {
            cmdline
                .errors
                .push(format!("{full}: needs a value ({full}=...)"));
        } else {
            cmdline.unknown_keys.push(full);
        }
        return;
    };
    let mut bad = |reason: String| cmdline.errors.push(format!("{full}={value}: {reason}"));
    match key {
        "root" => {
            if value.starts_with('/') {
                cmdline.root = PathBuf::from(value);
            } else {
                bad("must be an absolute path to an image file or block device".into());
            }
        }
        "rootfstype" => match RootFsType::parse(value) {
            Some(t) => cmdline.root_fstype = t,
            None => bad("must be one of erofs, squashfs, ext4".into()),
        },
        "rootwait" => match parse_seconds(value) {
            Some(d) => cmdline.root_wait = d,
            None => bad("must be a number of seconds".into()),
        },
        "reboot_delay" => match parse_seconds(value) {
            Some(d) => cmdline.reboot_delay = d,
            None => bad("must be a number of seconds".into()),
        },
        "slot" => match value {
            "a" => cmdline.slot = Some(Slot::A),
            "b" => cmdline.slot = Some(Slot::B),
            _ => bad("must be a or b".into()),
        },
        "roothash" => match crate::verity::check_root_hash(value) {
            Ok(()) => cmdline.root_hash = Some(value.to_ascii_lowercase()),
            Err(e) => bad(e.to_string()),
        },
        "hashoffset" => match value.parse::<u64>() {
            Ok(n) if n > 0 && n.is_multiple_of(4096) => cmdline.hash_offset = Some(n),
            _ => bad("must be a positive number of bytes, a multiple of 4096".into()),
        },
        "watchdog" => match value.parse::<u32>() {
            Ok(0) => cmdline.watchdog = Duration::ZERO,
            Ok(n @ 5..=3600) => cmdline.watchdog = Duration::from_secs(n.into()),
            _ => bad("must be 0 (off) or a whole number of seconds from 5 to 3600".into()),
        },
        "trial_timeout" => match value.parse::<u32>() {
            Ok(n @ 10..=86_400) => cmdline.trial_timeout = Duration::from_secs(n.into()),
            _ => bad("must be a whole number of seconds from 10 to 86400".into()),
        },
        "hostname" => match validate_hostname(value) {
            Ok(()) => cmdline.hostname = Some(value.to_string()),
            Err(reason) => bad(reason),
        },
        "log" => match LogLevel::parse(value) {
            Some(level) => cmdline.log_level = level,
            None => bad("must be one of error, warn, info, debug, trace".into()),
        },
        _ => cmdline.unknown_keys.push(full),
    }
}

fn known_key(key: &str) -> bool {
    matches!(
        key,
        "root"
            | "rootfstype"
            | "rootwait"
            | "slot"
            | "roothash"
            | "hashoffset"
            | "watchdog"
            | "trial_timeout"
            | "reboot_delay"
            | "hostname"
            | "log"
    )
}

fn parse_seconds(value: &str) -> Option<Duration> {
    let secs: f64 = value.parse().ok()?;
    (secs.is_finite() && (0.0..=86_400.0).contains(&secs)).then(|| Duration::from_secs_f64(secs))
}

/// Checks a hostname the way RFC 1123 and the kernel (64 bytes at most) allow it.
pub fn validate_hostname(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err("a hostname has 1 to 64 characters".into());
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("each dot-separated label has 1 to 63 characters".into());
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a label cannot start or end with '-'".into());
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err("only letters, digits, '-' and '.' are allowed".into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_when_nothing_is_given() {
        let c = parse("BOOT_IMAGE=/vmlinuz console=ttyS0 quiet");
        assert_eq!(c, Cmdline::default());
    }

    #[test]
    fn reads_every_known_key() {
        let c = parse(
            "shoal.root=/dev/vda shoal.rootfstype=squashfs shoal.rootwait=2.5 \
             shoal.hostname=node-1 shoal.reboot_delay=1 shoal.log=debug shoal.trial_timeout=20",
        );
        assert_eq!(c.root, PathBuf::from("/dev/vda"));
        assert_eq!(c.root_fstype, RootFsType::Squashfs);
        assert_eq!(c.root_wait, Duration::from_millis(2500));
        assert_eq!(c.hostname.as_deref(), Some("node-1"));
        assert_eq!(c.reboot_delay, Duration::from_secs(1));
        assert_eq!(c.log_level, LogLevel::Debug);
        assert_eq!(c.trial_timeout, Duration::from_secs(20));
        assert!(c.unknown_keys.is_empty() && c.errors.is_empty(), "{c:?}");
        let bad = parse("shoal.trial_timeout=5");
        assert_eq!(bad.trial_timeout, Duration::from_secs(300));
        assert_eq!(
            bad.errors,
            ["shoal.trial_timeout=5: must be a whole number of seconds from 10 to 86400"]
        );
    }

    #[test]
    fn keys_configd_reads_are_not_typos_and_typos_still_are() {
        let c = parse(
            "shoal.config=http://10.0.0.1/${mac} shoal.config.pin=sha256:00 shoal.imds=on \
             shoal.cluster.name=lab shoal.node.labels=rack=r1 shoal.clustr.name=x",
        );
        assert_eq!(c.unknown_keys, ["shoal.clustr.name"]);
        assert!(c.errors.is_empty(), "{c:?}");
    }

    #[test]
    fn reads_a_root_slot_with_its_verity_settings() {
        let hash = "AB".repeat(32);
        let c = parse(&format!(
            "shoal.slot=b shoal.roothash={hash} shoal.hashoffset=23068672"
        ));
        assert_eq!(c.slot, Some(Slot::B));
        assert_eq!(c.slot.unwrap().partition_name(), "shoal-root-b");
        assert_eq!(c.root_hash, Some("ab".repeat(32)));
        assert_eq!(c.hash_offset, Some(23_068_672));
        assert!(c.errors.is_empty(), "{c:?}");
        let bad = parse("shoal.slot=c shoal.roothash=xyz shoal.hashoffset=1000");
        assert_eq!(
            (bad.slot, &bad.root_hash, bad.hash_offset),
            (None, &None, None)
        );
        assert_eq!(bad.errors.len(), 3, "{:?}", bad.errors);
        assert!(bad.errors[0].contains("must be a or b"), "{:?}", bad.errors);
        assert!(bad.errors[1].contains("hex digits"), "{:?}", bad.errors);
        assert!(
            bad.errors[2].contains("multiple of 4096"),
            "{:?}",
            bad.errors
        );
    }

    #[test]
    fn reads_the_watchdog_timeout() {
        assert_eq!(parse("").watchdog, Duration::from_secs(60));
        assert_eq!(parse("shoal.watchdog=0").watchdog, Duration::ZERO);
        assert_eq!(parse("shoal.watchdog=20").watchdog, Duration::from_secs(20));
        let bad = parse("shoal.watchdog=2");
        assert_eq!(bad.watchdog, Duration::from_secs(60));
        assert!(bad.errors[0].contains("5 to 3600"), "{:?}", bad.errors);
        assert_eq!(
            parse("shoaltest.watchdog_stall=3").test_watchdog_stall,
            Some(Duration::from_secs(3))
        );
        let broken = parse("shoaltest.panic shoaltest.hang");
        assert!(broken.test_panic && broken.test_hang, "{broken:?}");
        assert!(!parse("").test_panic && !parse("").test_hang);
    }

    #[test]
    fn reports_unknown_shoal_keys() {
        let c = parse("shoal.hostnme=x shoal.bogus shoal.root=/r.img");
        assert_eq!(c.unknown_keys, vec!["shoal.hostnme", "shoal.bogus"]);
        assert_eq!(c.root, PathBuf::from("/r.img"));
    }

    #[test]
    fn bad_values_are_errors_and_keep_defaults() {
        let c = parse(
            "shoal.root=vda shoal.rootfstype=btrfs shoal.rootwait=soon shoal.hostname=-bad- \
             shoal.log=loud shoal.reboot_delay=-1 shoal.hostname",
        );
        assert_eq!(c.root, PathBuf::from(DEFAULT_ROOT));
        assert_eq!(c.root_fstype, RootFsType::Erofs);
        assert_eq!(c.hostname, None);
        assert_eq!(c.errors.len(), 7, "{:?}", c.errors);
        assert!(c.errors[0].starts_with("shoal.root=vda: must be an absolute path"));
        assert!(c.errors[6].contains("needs a value"));
        assert!(c.unknown_keys.is_empty());
    }

    #[test]
    fn quotes_group_words() {
        assert_eq!(
            split_words(r#"a "b c"  d="e f" "" g"#),
            vec!["a", "b c", "d=e f", "", "g"]
        );
    }

    #[test]
    fn collects_module_parameters() {
        let c = parse("virtio-net.napi_tx=1 e1000e.InterruptThrottleRate=3000 virtio_net.x=y");
        assert_eq!(c.module_params["virtio_net"], vec!["napi_tx=1", "x=y"]);
        assert_eq!(
            c.module_params["e1000e"],
            vec!["InterruptThrottleRate=3000"]
        );
    }

    #[test]
    fn hostname_rules() {
        assert!(validate_hostname("shoal-1a2b3c4d").is_ok());
        assert!(validate_hostname("a.b.c").is_ok());
        assert!(validate_hostname("").is_err());
        assert!(validate_hostname("a..b").is_err());
        assert!(validate_hostname("under_score").is_err());
        assert!(validate_hostname(&"x".repeat(65)).is_err());
    }
}

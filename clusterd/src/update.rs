//! A/B updates on this node, through the cluster API: clusterd holds the updater
//! (`shoal_update::node`) because it is what knows when the node is healthy again. It blesses a
//! slot on trial once the node is back in its cluster (or, with no cluster, once it runs with
//! the network online) and records an update that ran out of tries. PID 1 reboots a trial boot
//! that is not blessed in time (`update.trial_timeout`, written into the new slot's entry), so
//! a new image whose clusterd crashes or hangs fails its trial too.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use shoal_boot_events::{Event, Record};
use shoal_update::bundle::PublicKey;
use shoal_update::node::{self, Node, Roots};

/// Where the image lists the update keys it trusts.
pub const IMAGE_KEYS: &str = "/etc/shoal/update-keys";

fn emit(event: Event) {
    println!("{}", Record::now(event).to_line());
}

/// Where the updater looks; the defaults are the running node's.
#[derive(Debug, Clone)]
pub struct UpdateOptions {
    pub roots: Roots,
    pub cmdline: PathBuf,
    pub image_keys: PathBuf,
}

impl Default for UpdateOptions {
    fn default() -> Self {
        UpdateOptions {
            roots: Roots {
                sys: "/sys".into(),
                dev: "/dev".into(),
                esp: "/run/shoal/boot".into(),
                state: "/var/lib/shoal".into(),
            },
            cmdline: "/proc/cmdline".into(),
            image_keys: IMAGE_KEYS.into(),
        }
    }
}

/// The keys a bundle may be signed with: the image's, then the configuration's.
pub fn trusted_keys(image_keys: &Path, configured: &[String]) -> Vec<PublicKey> {
    let image = std::fs::read_to_string(image_keys).unwrap_or_default();
    image
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .chain(configured.iter().map(String::as_str))
        .filter_map(|k| match PublicKey::parse(k) {
            Ok(k) => Some(k),
            Err(e) => {
                tracing::warn!("update key ignored: {e}");
                None
            }
        })
        .collect()
}

/// The updater of a node booted from a disk slot.
#[derive(Debug)]
pub struct Updater {
    node: Option<Node>,
    trusted: Vec<PublicKey>,
    /// Tries and trial time for the slots it installs (`[update]` in the configuration).
    policy: node::TrialPolicy,
    /// One apply, rollback or blessing at a time.
    busy: Mutex<()>,
}

/// The slot a node booted from, as its node record carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootedSlot {
    /// `a` or `b`.
    pub slot: String,
    /// `None` when its boot entry cannot be read (or is gone).
    pub state: Option<SlotState>,
}

/// The update state of the slot a node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotState {
    /// Booted from a new slot that has not proved itself yet: blessed once the node is back in
    /// its cluster, else the boot loader falls back when its tries run out.
    Trial,
    Good,
}

impl SlotState {
    /// From a slot's state in [`node::Status`]: the booted slot on its last try has no tries
    /// left (`failed`) but is still on trial while it runs.
    fn of(status_state: &str) -> Option<SlotState> {
        match status_state {
            "good" => Some(SlotState::Good),
            "trial" | "failed" => Some(SlotState::Trial),
            _ => None,
        }
    }

    /// Its name in node records and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            SlotState::Trial => "trial",
            SlotState::Good => "good",
        }
    }
}

/// Why an update call failed, for the API: the caller's fault or the node's.
#[derive(Debug)]
pub enum UpdateError {
    Refused(String),
    Failed(String),
}

impl Updater {
    pub fn new(
        options: &UpdateOptions,
        configured_keys: &[String],
        policy: node::TrialPolicy,
    ) -> Updater {
        let cmdline = std::fs::read_to_string(&options.cmdline).unwrap_or_default();
        let node = match Node::detect(options.roots.clone(), &cmdline) {
            Ok(node) => Some(node),
            Err(node::Error::NotSlotted) => None,
            Err(e) => {
                tracing::warn!("updates unavailable: {e}");
                None
            }
        };
        Updater {
            node,
            trusted: trusted_keys(&options.image_keys, configured_keys),
            policy,
            busy: Mutex::new(()),
        }
    }

    fn node(&self) -> Result<&Node, UpdateError> {
        self.node
            .as_ref()
            .ok_or_else(|| UpdateError::Refused(node::Error::NotSlotted.to_string()))
    }

    /// At start: an update that ran out of tries is recorded and reported.
    pub fn notice_failed_update(&self) {
        if let Some(node) = &self.node {
            match node.notice_failed_update() {
                Ok(Some(message)) => emit(Event::UpdateFailed { message }),
                Ok(None) => {}
                Err(e) => tracing::warn!("reading the boot entries: {e}"),
            }
        }
    }

    /// The node is healthy: a slot on trial becomes good. Returns whether it was on trial (the
    /// node's record then changes).
    pub fn bless(&self) -> bool {
        let Some(node) = &self.node else { return false };
        let _busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        match node.bless_booted() {
            Ok(true) => {
                emit(Event::UpdateBlessed {
                    slot: node.booted.to_string(),
                });
                true
            }
            Ok(false) => false,
            Err(e) => {
                tracing::error!("blessing slot {}: {e}", node.booted);
                false
            }
        }
    }

    /// The slot this node booted from and its update state, for its node record; `None` for a
    /// node booted over the network.
    pub fn booted(&self) -> Option<BootedSlot> {
        let node = self.node.as_ref()?;
        let state = match node.status() {
            Ok(status) => status
                .slots
                .iter()
                .find(|s| s.booted)
                .and_then(|s| SlotState::of(&s.state)),
            Err(e) => {
                tracing::warn!("reading the boot entries: {e}");
                None
            }
        };
        Some(BootedSlot {
            slot: node.booted.to_string(),
            state,
        })
    }

    pub fn status(&self) -> Result<node::Status, UpdateError> {
        self.node()?
            .status()
            .map_err(|e| UpdateError::Failed(e.to_string()))
    }

    /// Applies a bundle read from `bundle`.
    pub fn apply(&self, bundle: impl Read) -> Result<node::Applied, UpdateError> {
        let node = self.node()?;
        let _busy = self
            .busy
            .try_lock()
            .map_err(|_| UpdateError::Refused("another update operation is running".into()))?;
        let mut last_percent = 0;
        let started = std::time::Instant::now();
        let result = node.apply(bundle, &self.trusted, self.policy, |part, bytes| {
            // A line in the log every 256 MiB is plenty.
            let step = bytes >> 28;
            if part == "root" && step != last_percent {
                last_percent = step;
                tracing::info!("update: {bytes} bytes of the root image written");
            }
        });
        match result {
            Ok(applied) => {
                emit(Event::UpdateApplied {
                    slot: applied.slot.to_string(),
                    version: applied.version.clone(),
                    bytes: applied.bytes,
                    ms: started.elapsed().as_secs_f64() * 1000.0,
                });
                Ok(applied)
            }
            Err(e @ (node::Error::Bundle(_) | node::Error::TooBig { .. })) => {
                Err(UpdateError::Refused(e.to_string()))
            }
            Err(e) => Err(UpdateError::Failed(e.to_string())),
        }
    }

    pub fn rollback(&self) -> Result<node::Status, UpdateError> {
        let node = self.node()?;
        let _busy = self
            .busy
            .try_lock()
            .map_err(|_| UpdateError::Refused("another update operation is running".into()))?;
        node.rollback()
            .map_err(|e| UpdateError::Refused(e.to_string()))?;
        node.status()
            .map_err(|e| UpdateError::Failed(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_update::entries::{self, Slot};

    /// A disk `vda` whose slot a (`vda2`) the node booted from, and an ESP with slot a's entry
    /// (`tries`: on trial with that many left).
    fn slotted_node(tries: Option<u32>) -> (tempfile::TempDir, UpdateOptions) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let options = UpdateOptions {
            roots: Roots {
                sys: root.join("sys"),
                dev: root.join("dev"),
                esp: root.join("esp"),
                state: root.join("state"),
            },
            cmdline: root.join("cmdline"),
            image_keys: root.join("update-keys"),
        };
        let part = options.roots.sys.join("devices/virtio/block/vda/vda2");
        std::fs::create_dir_all(&part).unwrap();
        std::fs::write(
            part.join("uevent"),
            "DEVTYPE=partition\nPARTNAME=shoal-root-a\n",
        )
        .unwrap();
        std::fs::write(part.join("dev"), "253:2\n").unwrap();
        std::fs::write(part.join("partition"), "2\n").unwrap();
        std::fs::write(part.join("start"), "2048\n").unwrap();
        std::fs::write(part.join("size"), "128\n").unwrap();
        let class = options.roots.sys.join("class/block");
        std::fs::create_dir_all(&class).unwrap();
        std::os::unix::fs::symlink("../../devices/virtio/block/vda/vda2", class.join("vda2"))
            .unwrap();
        for d in [&options.roots.dev, &options.roots.state] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::create_dir_all(options.roots.esp.join("loader/entries")).unwrap();
        entries::install(
            &options.roots.esp,
            Slot::A,
            "0.2.0",
            "quiet shoal.slot=a",
            tries,
        )
        .unwrap();
        std::fs::write(&options.cmdline, "console=ttyS0 shoal.slot=a quiet\n").unwrap();
        (dir, options)
    }

    #[test]
    fn a_slot_on_trial_reads_good_once_blessed() {
        let (_dir, options) = slotted_node(Some(3));
        let updater = Updater::new(&options, &[], node::TrialPolicy::default());
        let trial = BootedSlot {
            slot: "a".into(),
            state: Some(SlotState::Trial),
        };
        assert_eq!(updater.booted(), Some(trial.clone()));
        assert!(updater.bless(), "it was on trial");
        assert_eq!(
            updater.booted(),
            Some(BootedSlot {
                state: Some(SlotState::Good),
                ..trial
            })
        );
        assert!(!updater.bless(), "good already: nothing changes");

        // On its last try the counter says no tries left, yet the slot runs: still on trial.
        let (_dir, options) = slotted_node(Some(0));
        let updater = Updater::new(&options, &[], node::TrialPolicy::default());
        assert_eq!(updater.booted().unwrap().state, Some(SlotState::Trial));
    }

    #[test]
    fn a_node_booted_over_the_network_has_no_slot() {
        let (dir, mut options) = slotted_node(None);
        std::fs::write(
            dir.path().join("pxe-cmdline"),
            "console=ttyS0 shoal.config=x\n",
        )
        .unwrap();
        options.cmdline = dir.path().join("pxe-cmdline");
        let updater = Updater::new(&options, &[], node::TrialPolicy::default());
        assert_eq!(updater.booted(), None);
        assert!(!updater.bless());
    }

    #[test]
    fn trusted_keys_come_from_the_image_then_the_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("update-keys");
        std::fs::write(
            &file,
            "# the image's keys\ned25519:TrPurddRvGWDXsRRBNa5ULTarVbMSA5W8LwwDrjFxL0=\nnot-a-key\n",
        )
        .unwrap();
        let keys = trusted_keys(
            &file,
            &["ed25519:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into()],
        );
        assert_eq!(keys.len(), 2);
        assert_eq!(
            keys[0].to_string(),
            "ed25519:TrPurddRvGWDXsRRBNa5ULTarVbMSA5W8LwwDrjFxL0="
        );
        assert!(trusted_keys(&dir.path().join("none"), &[]).is_empty());
    }
}

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

    /// The node is healthy: a slot on trial becomes good.
    pub fn bless(&self) {
        let Some(node) = &self.node else { return };
        let _busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        match node.bless_booted() {
            Ok(true) => emit(Event::UpdateBlessed {
                slot: node.booted.to_string(),
            }),
            Ok(false) => {}
            Err(e) => tracing::error!("blessing slot {}: {e}", node.booted),
        }
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

//! When PID 1 runs `shoal-inventory`: once at boot, and again after a disk or NIC comes, goes
//! or is renamed. The boot run waits [`BOOT_DELAY`]: the services' start-up (network,
//! configuration, cluster formation) is the boot's critical path, and the collector would take
//! CPU from it (under emulation, 0.4 s per node; from the other VMs too, since they share the
//! host's cores). Uevents come in bursts (a disk and its partitions, a NIC and its queues), so
//! a change waits a short quiet period; one run at a time, and a change during a run makes
//! another run after it. A change before the boot run is due is left to the boot run. The
//! collection itself runs in a child: a parser bug there cannot take PID 1 down, and its
//! memory is gone when it exits. Pure: the caller spawns and reaps.

use std::time::{Duration, Instant};

use crate::uevent::Uevent;

/// Where the image has the collector.
pub const COLLECTOR: &str = "/usr/lib/shoal/shoal-inventory";
/// Quiet period after the last relevant uevent.
pub const SETTLE: Duration = Duration::from_millis(300);
/// From the supervisor's start to the boot's collection.
pub const BOOT_DELAY: Duration = Duration::from_secs(5);
/// The reason of the boot's collection.
pub const BOOT: &str = "boot";

/// Whether a uevent changes what the inventory lists.
pub fn relevant(event: &Uevent) -> bool {
    match event.get("SUBSYSTEM") {
        Some("block") => matches!(event.action.as_str(), "add" | "remove" | "change"),
        Some("net") => matches!(event.action.as_str(), "add" | "remove" | "move"),
        _ => false,
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Refresh {
    running: Option<i32>,
    due: Option<Instant>,
    /// Why the next run happens (`boot`, `hotplug`).
    reason: Option<&'static str>,
}

impl Refresh {
    /// Asks for a run `delay` from `now` (a later request moves a pending one back: bursts
    /// settle first). The pending boot run takes in any request before it, and is never
    /// brought forward.
    pub fn request(&mut self, now: Instant, delay: Duration, reason: &'static str) {
        let at = now + delay;
        if let (Some(BOOT), Some(due)) = (self.reason, self.due) {
            self.due = Some(due.max(at));
            return;
        }
        self.due = Some(at);
        self.reason = Some(reason);
    }

    /// The run to start now, if one is due and none is running: its reason.
    pub fn take_due(&mut self, now: Instant) -> Option<&'static str> {
        if self.running.is_some() || self.due.is_none_or(|due| due > now) {
            return None;
        }
        self.due = None;
        self.reason.take()
    }

    pub fn started(&mut self, pid: i32) {
        self.running = Some(pid);
    }

    /// A child exited; true if it was the collector.
    pub fn exited(&mut self, pid: i32) -> bool {
        if self.running == Some(pid) {
            self.running = None;
            true
        } else {
            false
        }
    }

    /// When the main loop must wake up for a pending run (none while one runs: its exit wakes
    /// the loop).
    pub fn deadline(&self) -> Option<Instant> {
        if self.running.is_some() {
            None
        } else {
            self.due
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uevent(action: &str, subsystem: &str) -> Uevent {
        Uevent {
            action: action.into(),
            devpath: "/devices/x".into(),
            vars: [("SUBSYSTEM".to_string(), subsystem.to_string())].into(),
        }
    }

    #[test]
    fn disks_and_nics_matter() {
        assert!(relevant(&uevent("add", "block")));
        assert!(relevant(&uevent("remove", "block")));
        assert!(relevant(&uevent("move", "net")));
        assert!(!relevant(&uevent("bind", "pci")));
        assert!(!relevant(&uevent("add", "input")));
        assert!(!relevant(&uevent("change", "net")));
    }

    #[test]
    fn changes_before_the_boot_run_wait_for_it() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut r = Refresh::default();
        r.request(t0, BOOT_DELAY, BOOT);
        assert_eq!(r.deadline(), Some(t0 + BOOT_DELAY));
        // A NIC renamed soon after boot: the boot run, when due, sees it.
        r.request(t0 + ms(500), SETTLE, "hotplug");
        assert_eq!(r.take_due(t0 + ms(800)), None);
        assert_eq!(r.deadline(), Some(t0 + BOOT_DELAY));
        // A burst just before: the boot run waits for it to settle, and keeps its reason.
        r.request(t0 + BOOT_DELAY - ms(100), SETTLE, "hotplug");
        assert_eq!(r.take_due(t0 + BOOT_DELAY), None);
        assert_eq!(r.take_due(t0 + BOOT_DELAY + ms(200)), Some(BOOT));
        r.started(7);
        assert!(r.exited(7));
        // Afterwards, changes are hotplug runs again.
        r.request(t0 + ms(6000), SETTLE, "hotplug");
        assert_eq!(r.take_due(t0 + ms(6300)), Some("hotplug"));
    }

    #[test]
    fn bursts_settle_and_runs_do_not_overlap() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut r = Refresh::default();
        assert_eq!(r.take_due(t0), None);
        r.request(t0, Duration::ZERO, "boot");
        assert_eq!(r.take_due(t0), Some("boot"));
        r.started(10);
        // A burst while the boot run is going: nothing starts until it exits.
        r.request(t0 + ms(10), SETTLE, "hotplug");
        r.request(t0 + ms(50), SETTLE, "hotplug");
        assert_eq!(r.deadline(), None);
        assert_eq!(r.take_due(t0 + ms(1000)), None);
        assert!(!r.exited(11));
        assert!(r.exited(10));
        assert_eq!(r.deadline(), Some(t0 + ms(350)));
        assert_eq!(r.take_due(t0 + ms(349)), None);
        assert_eq!(r.take_due(t0 + ms(350)), Some("hotplug"));
        assert_eq!(r.take_due(t0 + ms(2000)), None, "one run per request");
        assert_eq!(r.deadline(), None);
    }
}

//! When PID 1 feeds the watchdog. A machine whose PID 1 hangs (or a kernel that stops
//! scheduling it) is reset by the watchdog device; with A/B boot counting, a new image that
//! hangs that way ends up back on the old slot by itself.
//!
//! The device is a hardware timer when the machine has one with a driver (`i6300esb` in QEMU,
//! `iTCO_wdt` on Intel chipsets, loaded by coldplug), else the kernel's `softdog`, which catches
//! a hung PID 1 but not a hung kernel. The ioctls are in `sys::Watchdog`.

use std::time::{Duration, Instant};

/// Feeds at a quarter of the timeout: three missed rounds still leave time.
#[derive(Debug, Clone)]
pub struct Feeder {
    interval: Duration,
    next: Instant,
    /// Test images only: stop feeding at this instant.
    stall_at: Option<Instant>,
}

impl Feeder {
    pub fn new(timeout: Duration, now: Instant, stall_after: Option<Duration>) -> Feeder {
        Feeder {
            interval: timeout / 4,
            next: now,
            stall_at: stall_after.map(|d| now + d),
        }
    }

    /// When the main loop must wake up next for the watchdog, if at all.
    pub fn deadline(&self) -> Option<Instant> {
        match self.stall_at {
            Some(stall) if stall <= self.next => None,
            _ => Some(self.next),
        }
    }

    /// Whether to feed now; if so, the next time is planned.
    pub fn due(&mut self, now: Instant) -> bool {
        if self.stall_at.is_some_and(|s| now >= s) || now < self.next {
            return false;
        }
        self.next = now + self.interval;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feeds_every_quarter_of_the_timeout() {
        let t0 = Instant::now();
        let mut f = Feeder::new(Duration::from_secs(60), t0, None);
        assert!(f.due(t0));
        assert!(!f.due(t0 + Duration::from_secs(5)));
        assert_eq!(f.deadline(), Some(t0 + Duration::from_secs(15)));
        assert!(f.due(t0 + Duration::from_secs(15)));
        assert_eq!(f.deadline(), Some(t0 + Duration::from_secs(30)));
    }

    #[test]
    fn a_stall_stops_feeding_for_good() {
        let t0 = Instant::now();
        let mut f = Feeder::new(Duration::from_secs(8), t0, Some(Duration::from_secs(3)));
        assert!(f.due(t0));
        assert!(f.due(t0 + Duration::from_secs(2)));
        assert_eq!(f.deadline(), None);
        assert!(!f.due(t0 + Duration::from_secs(4)));
        assert!(!f.due(t0 + Duration::from_secs(100)));
    }
}

//! Keeping the supervisor alive: PID 1 starts `shoal-supervisor` once the node is set up and
//! starts it again whenever it dies, after a delay that doubles from 1 s to 30 s and falls back
//! to 1 s once a run lasted a minute. Pure: the caller spawns and reaps.

use std::time::{Duration, Instant};

const FIRST_DELAY: Duration = Duration::from_secs(1);
const MAX_DELAY: Duration = Duration::from_secs(30);
/// A run this long proves the supervisor healthy again: the next crash restarts it quickly.
const STABLE_RUN: Duration = Duration::from_secs(60);

/// The supervisor's life as PID 1 sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keeper {
    pid: Option<i32>,
    started_at: Option<Instant>,
    next_start: Option<Instant>,
    delay: Duration,
    pub restarts: u32,
}

impl Default for Keeper {
    fn default() -> Self {
        Self {
            pid: None,
            started_at: None,
            next_start: None,
            delay: FIRST_DELAY,
            restarts: 0,
        }
    }
}

impl Keeper {
    pub fn pid(&self) -> Option<i32> {
        self.pid
    }

    pub fn started(&mut self, pid: i32, now: Instant) {
        self.pid = Some(pid);
        self.started_at = Some(now);
        self.next_start = None;
    }

    /// The spawn itself failed: try again later, like a crash.
    pub fn spawn_failed(&mut self, now: Instant) -> Duration {
        self.schedule(now)
    }

    /// A child exited: if it was the supervisor, schedule its restart and return the delay.
    pub fn exited(&mut self, pid: i32, now: Instant) -> Option<Duration> {
        if self.pid != Some(pid) {
            return None;
        }
        self.pid = None;
        if self
            .started_at
            .is_some_and(|t| now.duration_since(t) >= STABLE_RUN)
        {
            self.delay = FIRST_DELAY;
        }
        Some(self.schedule(now))
    }

    fn schedule(&mut self, now: Instant) -> Duration {
        let delay = self.delay;
        self.next_start = Some(now + delay);
        self.delay = (delay * 2).min(MAX_DELAY);
        self.restarts += 1;
        delay
    }

    /// When the supervisor should be started again, if it is down.
    pub fn next_start(&self) -> Option<Instant> {
        self.next_start
    }

    /// Whether it is time to start it again.
    pub fn due(&self, now: Instant) -> bool {
        self.next_start.is_some_and(|t| now >= t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_with_doubling_delays_capped_and_reset_after_a_stable_run() {
        let mut k = Keeper::default();
        let mut now = Instant::now();
        k.started(10, now);
        assert_eq!(
            k.exited(99, now),
            None,
            "other children are not the supervisor"
        );
        let mut delays = vec![];
        for pid in 11..19 {
            let d = k.exited(pid - 1, now).unwrap();
            assert!(!k.due(now) && k.next_start() == Some(now + d));
            now += d;
            assert!(k.due(now));
            delays.push(d.as_secs());
            k.started(pid, now);
        }
        assert_eq!(delays, vec![1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(k.restarts, 8);
        now += STABLE_RUN;
        assert_eq!(k.exited(18, now), Some(FIRST_DELAY));
    }

    #[test]
    fn a_failed_spawn_is_retried_later() {
        let mut k = Keeper::default();
        let now = Instant::now();
        assert_eq!(k.spawn_failed(now), FIRST_DELAY);
        assert_eq!(k.pid(), None);
        assert!(k.due(now + FIRST_DELAY));
    }
}

//! Random bytes that never block at boot.
//!
//! The kernel's CRNG may not be seeded for seconds after boot under emulation, and a blocking
//! `getrandom` would stall formation. `GRND_INSECURE` returns at once; a counter and the
//! monotonic clock are mixed in so that two calls never return the same bytes even before the
//! pool has any entropy. Nonces need uniqueness, which this gives; long-term keys are not made
//! here.

use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Fills `out` with bytes that are unique per call (and random once the CRNG is seeded).
pub fn fill(out: &mut [u8]) {
    let mut pool = [0u8; 32];
    // SAFETY: the pointer and length describe `pool`, which lives across the call; with
    // GRND_INSECURE the call never blocks.
    let n = unsafe { libc::getrandom(pool.as_mut_ptr().cast(), pool.len(), libc::GRND_INSECURE) };
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the kernel to write.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let mut offset = 0;
    let mut block = 0u64;
    while offset < out.len() {
        let digest = Sha256::new()
            .chain_update(pool)
            .chain_update(n.to_le_bytes())
            .chain_update(count.to_le_bytes())
            .chain_update(ts.tv_sec.to_le_bytes())
            .chain_update(ts.tv_nsec.to_le_bytes())
            .chain_update(std::process::id().to_le_bytes())
            .chain_update(block.to_le_bytes())
            .finalize();
        let take = (out.len() - offset).min(digest.len());
        out[offset..offset + take].copy_from_slice(&digest[..take]);
        offset += take;
        block += 1;
    }
}

/// A random `u64` (node ids, incarnations).
pub fn u64() -> u64 {
    let mut b = [0u8; 8];
    fill(&mut b);
    u64::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    #[test]
    fn calls_differ() {
        let (mut a, mut b) = ([0u8; 40], [0u8; 40]);
        super::fill(&mut a);
        super::fill(&mut b);
        assert_ne!(a, b);
        assert_ne!(a[..32], a[8..40], "blocks differ");
    }
}

//! Any UTF-8 to the kernel command line's `ip=` parser: it must not panic.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = shoal_netd::cmdline::parse(s);
    }
});

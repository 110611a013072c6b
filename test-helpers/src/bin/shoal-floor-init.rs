//! The floor for boot-time benchmarks: a trivial `/init` that only says it was reached and
//! powers the machine off. Nothing Shoal's own init does can be faster than this.

use std::io::Write;

fn main() {
    // The kernel opened /dev/console as our stdout.
    let mut out = std::io::stdout();
    let _ = writeln!(out, "SHOAL-FLOOR reached /init");
    let _ = out.flush();
    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
    // Exiting as PID 1 would panic the kernel; if power-off failed, just wait to be killed.
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

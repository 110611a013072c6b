//! `shoal-init`: `/init` in the initramfs and `/sbin/init` on the root filesystem.

fn main() {
    if std::process::id() != 1 {
        eprintln!("shoal-init must run as PID 1 (it is the system's init); refusing to start");
        std::process::exit(2);
    }
    shoal_init::boot::run()
}

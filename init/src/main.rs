//! `shoal-init`: `/init` in the initramfs and `/sbin/init` on the root filesystem; called as
//! `modprobe` (through `/sbin/modprobe`), it loads a module the kernel asks for.

fn main() {
    // Coldplug's threads allocate little: one heap for all of PID 1's threads, not an arena
    // each that stays resident for the life of the machine.
    // SAFETY: mallopt(3) only sets an allocator parameter; no other thread exists yet.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
    // The image links /sbin/modprobe here: the kernel runs it to load modules on demand.
    let mut args = std::env::args();
    let argv0 = args.next().unwrap_or_default();
    if std::path::Path::new(&argv0)
        .file_name()
        .is_some_and(|n| n == "modprobe")
    {
        let rest: Vec<String> = args.collect();
        std::process::exit(shoal_init::modprobe::main(&rest));
    }
    if std::process::id() != 1 {
        eprintln!("shoal-init must run as PID 1 (it is the system's init); refusing to start");
        std::process::exit(2);
    }
    shoal_init::boot::run()
}

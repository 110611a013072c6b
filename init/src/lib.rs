//! Shoal's PID 1.
//!
//! The pure parts (command line, module resolution, mount planning, identity, uevent and input
//! parsing) are modules of their own and tested on fixtures; `sys` is the thin layer that
//! touches the kernel; `boot` strings the phases together; `power` ends every path in a clean
//! reboot or power-off.

pub mod boot;
pub mod cmdline;
pub mod coldplug;
pub mod console;
pub mod disk;
pub mod identity;
pub mod input;
pub mod inventory;
pub mod keeper;
pub mod kmod;
pub mod modprobe;
pub mod mounts;
pub mod power;
pub mod sys;
pub mod trial;
pub mod uevent;
pub mod verity;
pub mod watchdog;

//! `shoal-inventory`: see [`shoal_inventory::cli`].

fn main() -> std::process::ExitCode {
    shoal_inventory::cli::main(std::env::args_os().skip(1))
}

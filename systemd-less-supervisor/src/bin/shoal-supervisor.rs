//! `shoal-supervisor`: see [`shoal_supervisor::cli`].

fn main() -> std::process::ExitCode {
    shoal_supervisor::cli::main(std::env::args_os().skip(1))
}

//! `shoal-configd`: see [`shoal_configd::cli`].

fn main() -> std::process::ExitCode {
    shoal_configd::cli::main(std::env::args_os().skip(1))
}

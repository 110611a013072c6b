//! `shoal-clusterd`: see [`shoal_clusterd::cli`].

fn main() -> std::process::ExitCode {
    shoal_clusterd::cli::main(std::env::args_os().skip(1))
}

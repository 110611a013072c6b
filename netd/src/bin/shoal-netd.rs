//! `shoal-netd`: see [`shoal_netd::cli`].

fn main() -> std::process::ExitCode {
    shoal_netd::cli::main(std::env::args_os().skip(1))
}

//! `shoal-supervisor`: runs the node's services. PID 1 starts it (stdout and stderr on the
//! console), restarts it if it dies, and sends SIGTERM at shutdown.
//!
//! Exit codes: 0 after an ordered shutdown, 1 when it cannot run at all, 2 for a bad command
//! line.
//!
//! The `shoal-supervisor` binary and the node's multi-call binary (`shoal-node`) both run [`main`]
//! with the arguments after the program name.

use std::process::ExitCode;

use crate::daemon::{self, Command, Server};

pub fn main(args: impl IntoIterator<Item = std::ffi::OsString>) -> ExitCode {
    let options = match daemon::parse_args(args, std::env::var("SHOAL_LOG").ok()) {
        Ok(Command::Run(options)) => *options,
        Ok(Command::Help) => {
            print!("{}", daemon::USAGE);
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("shoal-supervisor {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            eprintln!("shoal-supervisor: {error}");
            return ExitCode::from(2);
        }
    };
    shoal_api::init_logging(&options.log_level);
    match run(options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::from(1)
        }
    }
}

fn run(options: daemon::Options) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| anyhow::anyhow!("starting the async runtime: {e}"))?;
    runtime.block_on(async {
        let server = Server::start(options)?;
        server.run().await
    })?;
    Ok(())
}

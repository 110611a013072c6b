//! `shoal-node`: the node's daemons in one executable; see [`shoal_node`].

use std::process::ExitCode;

fn main() -> ExitCode {
    shoal_node::one_malloc_arena();
    match shoal_node::select(std::env::args_os().collect()) {
        Ok((_, main, args)) => main(args),
        Err(message) => {
            eprintln!("{message}");
            ExitCode::from(2)
        }
    }
}

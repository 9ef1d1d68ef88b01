//! The `arbiter` command. Thin: parse arguments, dispatch to a subcommand, map its result to
//! an exit code (0 allow/ok, 1 error, 2 deny, 3 verification failure).

use std::process::ExitCode;

use clap::Parser;

mod cli;
mod cmd;
mod out;

// The decision path allocates many small, short-lived objects on several threads; mimalloc
// handles that pattern markedly better than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cmd::run(args) {
        Ok(code) => code,
        Err(e) => {
            if out::is_broken_pipe(&e) {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {e:#}");
            ExitCode::from(out::EXIT_ERROR)
        }
    }
}

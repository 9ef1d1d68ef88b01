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
    let args = match cli::Cli::try_parse() {
        Ok(args) => args,
        Err(e) => {
            // `arbiter exec` stands in for another program: its own usage errors must not
            // look like that program's exit code 2, so they exit 125 like its other failures.
            let is_exec = std::env::args_os().nth(1).is_some_and(|a| a == "exec");
            let is_usage = !matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            );
            if is_exec && is_usage {
                let _ = e.print();
                return ExitCode::from(125);
            }
            e.exit();
        }
    };
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

//! `arbiter exec`: the command guard.

use std::process::ExitCode;

use clap::Args;

/// Arguments of `arbiter exec`.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// The program and its arguments.
    #[arg(
        trailing_var_arg = true,
        required = true,
        value_name = "PROGRAM [ARGS]..."
    )]
    pub command: Vec<std::ffi::OsString>,
}

pub fn run(_args: ExecArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`arbiter exec` is not available in this build")
}

//! One module per subcommand.

use std::process::ExitCode;

use crate::cli::{Cli, Command};

pub mod a2a;
pub mod a2a_card;
pub mod agent;
pub mod approval;
mod check;
pub mod compliance;
pub mod evidence;
pub mod exec;
pub mod gap;
pub mod governance;
pub mod log;
pub mod mcp;
mod policy;
mod serve;
pub mod sql;
pub mod store;
pub mod witness;

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    store::configure(cli.store.as_deref(), &cli.store_grace)?;
    match cli.command {
        Command::Serve(args) => serve::run(args, cli.log_format, &cli.log_level),
        Command::Check(args) => check::run(&args),
        Command::Policy(cmd) => policy::run(cmd),
        Command::Log(cmd) => log::run(cmd),
        Command::Agent(args) => agent::run_agent(args),
        Command::Approval(args) => approval::run(args),
        Command::Admin(args) => agent::run_admin(args),
        Command::Discover(args) => agent::run_discover(args),
        Command::Exec(args) => exec::run(args),
        Command::Gap(args) => gap::run(args),
        Command::Mcp(cmd) => mcp::run(cmd, cli.log_format, &cli.log_level),
        Command::A2a(cmd) => a2a::run(cmd, cli.log_format, &cli.log_level),
        Command::Sql(cmd) => sql::run(cmd, cli.log_format, &cli.log_level),
        Command::Evidence(args) => evidence::run(args),
        Command::Compliance(cmd) => compliance::run(cmd),
        Command::Witness(cmd) => witness::run(cmd, cli.log_format, &cli.log_level),
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut command, "arbiter", &mut out);
            crate::out::print(String::from_utf8_lossy(&out).trim_end())?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

//! `arbiter witness …`: run a witness that cosigns decision-log checkpoints.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use arbiter_log::witness::{WITNESS_KEY_FILE, WITNESS_PUB_FILE, Witness};
use arbiter_log::{KeyPair, PublicKey};
use clap::{Args, Subcommand};

use crate::cli::LogFormat;
use crate::out::print;

#[derive(Debug, Subcommand)]
pub enum WitnessCommand {
    /// Run a witness: it keeps the latest checkpoint it saw from each log it follows and
    /// cosigns a new one only when a consistency proof shows the log grew from that one, so a
    /// log rewritten, truncated or rolled back after it was witnessed can never be cosigned
    /// again. Run it where the operators of the logs cannot change its data directory.
    Serve(WitnessServeArgs),
    /// Print the witness's public key (created on first use): give it to auditors, who check
    /// cosignatures with `arbiter log verify --witness-key` and `arbiter evidence verify`.
    Pubkey {
        /// The witness's data directory.
        #[arg(
            long,
            env = "ARBITER_WITNESS_DATA",
            value_name = "DIR",
            default_value = "arbiter-witness"
        )]
        data: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct WitnessServeArgs {
    /// The witness's data directory: its signing key and the checkpoint it holds for each log.
    #[arg(
        long,
        env = "ARBITER_WITNESS_DATA",
        value_name = "DIR",
        default_value = "arbiter-witness"
    )]
    pub data: PathBuf,
    /// Address to listen on.
    #[arg(
        long,
        env = "ARBITER_WITNESS_LISTEN",
        value_name = "ADDR",
        default_value = "127.0.0.1:8190"
    )]
    pub listen: String,
    /// Public key of a log to follow (repeatable): a file (`log-signing.pub`, or the JSON of
    /// `GET /v1/log/pubkey`) or 64 hex characters. Checkpoints of any other log are refused.
    #[arg(long = "log-key", value_name = "FILE|HEX", required = true)]
    pub log_keys: Vec<String>,
    /// The witness's name, written into its cosignatures.
    #[arg(long, value_name = "NAME", default_value = "arbiter-witness")]
    pub name: String,
}

pub fn run(
    cmd: WitnessCommand,
    log_format: LogFormat,
    log_level: &str,
) -> anyhow::Result<ExitCode> {
    match cmd {
        WitnessCommand::Pubkey { data } => {
            let key = KeyPair::load_or_create_named(&data, WITNESS_KEY_FILE, WITNESS_PUB_FILE)
                .with_context(|| format!("cannot open the witness key in `{}`", data.display()))?;
            print(&key.public_key_hex())?;
            Ok(ExitCode::SUCCESS)
        }
        WitnessCommand::Serve(args) => {
            crate::cmd::serve::init_logging(log_format, log_level)?;
            let logs = args
                .log_keys
                .iter()
                .map(|k| crate::cmd::log::load_key(k))
                .collect::<anyhow::Result<Vec<PublicKey>>>()?;
            let witness = open(&args.data, &args.name, &logs)?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind(&args.listen)
                    .await
                    .with_context(|| format!("cannot listen on `{}`", args.listen))?;
                let local = listener
                    .local_addr()
                    .context("cannot read the listen address")?;
                tracing::info!(
                    listen = %local,
                    name = %args.name,
                    public_key = %witness.public_key().to_hex(),
                    logs = ?logs.iter().map(PublicKey::key_id).collect::<Vec<_>>(),
                    "witness serving at http://{local}/add-checkpoint"
                );
                let router = arbiter_server::witness::router(witness);
                arbiter_server::serve(listener, router, crate::cmd::serve::shutdown_signal())
                    .await
                    .context("the witness stopped with an error")
            })?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn open(dir: &Path, name: &str, logs: &[PublicKey]) -> anyhow::Result<Arc<Witness>> {
    Witness::open(dir, name, logs)
        .map(Arc::new)
        .map_err(|e| anyhow::anyhow!("cannot start the witness in `{}`: {e}", dir.display()))
}

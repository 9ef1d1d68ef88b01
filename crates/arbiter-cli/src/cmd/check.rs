//! `arbiter check`: decide one request locally, exactly as the server would.

use std::io::Read;
use std::process::ExitCode;

use anyhow::Context;
use arbiter_pdp::Pdp;
use arbiter_types::json::parse_bounded;
use arbiter_types::{EvaluationRequest, JsonLimits};

use crate::cli::CheckArgs;
use crate::out::{EXIT_DENY, EXIT_OK, print};

pub fn run(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let pdp = Pdp::load(&args.policies).map_err(|e| anyhow::anyhow!("{e}"))?;
    let bytes = if args.request == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("cannot read the request from standard input")?;
        buf
    } else {
        std::fs::read(&args.request).with_context(|| format!("cannot read `{}`", args.request))?
    };
    let map = parse_bounded(&bytes, JsonLimits::default())
        .with_context(|| format!("`{}` is not a valid request", args.request))?;
    let req = EvaluationRequest::from_json(map)
        .with_context(|| format!("`{}` is not a valid request", args.request))?;
    let decision = pdp.decide(&req);
    print(&serde_json::to_string_pretty(&decision.to_authzen())?)?;
    Ok(ExitCode::from(if decision.outcome.is_allow() {
        EXIT_OK
    } else {
        EXIT_DENY
    }))
}

//! `arbiter serve`: the decision point over HTTP, with hot reload and graceful shutdown.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arbiter_pdp::{Identity, IdentitySettings, LogMode, Pdp, Recorder, RecorderSettings};
use arbiter_policy::Policies;
use arbiter_server::{AppState, ServerConfig, app};
use arbiter_store::{Actor, CredentialFilter, CredentialKind};
use arbiter_types::JsonLimits;

use crate::cli::{DecisionLogMode, LogFormat, ServeArgs};

pub fn run(args: ServeArgs, log_format: LogFormat, log_level: &str) -> anyhow::Result<ExitCode> {
    init_logging(log_format, log_level)?;
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(n) = args.workers {
        runtime.worker_threads(n.max(1));
    }
    let runtime = runtime.build().context("cannot start the async runtime")?;
    runtime.block_on(serve(args))?;
    Ok(ExitCode::SUCCESS)
}

/// Secure by default: without `--require-auth`, `serve` listens only on loopback unless
/// `--insecure-allow-unauthenticated` says the operator gives authentication up. An address
/// that resolves to anything but loopback (`0.0.0.0`, `::`, a LAN address, a host name of
/// one) counts as the network.
fn refuse_unauthenticated_network(args: &ServeArgs) -> anyhow::Result<()> {
    if args.require_auth || args.insecure_allow_unauthenticated {
        return Ok(());
    }
    let addresses: Vec<std::net::SocketAddr> =
        std::net::ToSocketAddrs::to_socket_addrs(args.listen.as_str())
            .with_context(|| format!("`--listen {}` is not an address to listen on", args.listen))?
            .collect();
    if !addresses.is_empty() && addresses.iter().all(|a| a.ip().is_loopback()) {
        return Ok(());
    }
    anyhow::bail!(
        "refusing to serve on `{}` without authentication: it is not a loopback address, so \
         anyone who can reach it could ask for decisions as any subject they name. Start with \
         `--require-auth` (callers present an agent's key or token, or a PEP token), or, to \
         knowingly serve unauthenticated callers, with `--insecure-allow-unauthenticated`",
        args.listen
    )
}

pub(crate) fn init_logging(format: LogFormat, level: &str) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .with_context(|| format!("`--log-level {level}` is not a valid filter"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    }
    .map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    if args.max_depth == 0 || args.max_body_bytes == 0 {
        anyhow::bail!("`--max-depth` and `--max-body-bytes` must be at least 1");
    }
    refuse_unauthenticated_network(&args)?;
    create_data_dir(&args.data)?;
    let pdp = match &args.policies {
        Some(dir) => Pdp::load(dir)
            .map_err(|e| anyhow::anyhow!("{e}\ncannot load policies from `{}`", dir.display()))?,
        // Governed: the active version is installed from the registry below, before serving.
        None if args.governed => Pdp::new(Policies::empty(), None),
        None => {
            tracing::warn!(
                "no --policies given: serving an empty policy set, so every request is denied"
            );
            Pdp::new(Policies::empty(), None)
        }
    };
    let pdp = match args.decision_log {
        DecisionLogMode::Off => {
            tracing::warn!(
                "--decision-log off: decisions are NOT recorded; use this for development only"
            );
            pdp
        }
        mode @ (DecisionLogMode::Sync | DecisionLogMode::Async) => {
            let settings = RecorderSettings {
                mode: if mode == DecisionLogMode::Sync {
                    LogMode::Sync
                } else {
                    LogMode::Async
                },
                checkpoint_every_records: args.checkpoint_every_records.max(1),
                checkpoint_every: Duration::from_millis(args.checkpoint_interval_ms.max(10)),
                redact: args.redact.clone(),
                node_id: args.node_id.clone(),
                fault: None,
                accept_log_damage: args.accept_log_damage.clone(),
            };
            let (recorder, report) = Recorder::open(&args.data, settings).with_context(|| {
                format!("cannot open the decision log in `{}`", args.data.display())
            })?;
            if report.truncated_tail_bytes > 0 || report.truncated_checkpoint_bytes > 0 {
                tracing::warn!(
                    truncated_record_bytes = report.truncated_tail_bytes,
                    truncated_checkpoint_bytes = report.truncated_checkpoint_bytes,
                    "decision log recovered: an unacknowledged torn tail was cut off"
                );
            }
            if let Some(problem) = &report.accepted_damage {
                tracing::warn!(
                    problem = %problem,
                    reason = args.accept_log_damage.as_deref().unwrap_or_default(),
                    set_aside = ?report.set_aside,
                    "decision log damage ACCEPTED by --accept-log-damage: the override is recorded \
                     in the log and reported by `arbiter log verify`; remove the flag once the log \
                     is open"
                );
            } else if report.created_state {
                tracing::warn!(
                    "decision log had no `checkpoints.state` (written by an older Arbiter, or \
                     deleted): created from its checkpoints, which all verified"
                );
            }
            if report.accepted_damage.is_none() && args.accept_log_damage.is_some() {
                tracing::warn!(
                    "--accept-log-damage given, but the decision log verified: nothing was \
                     overridden; remove the flag"
                );
            }
            tracing::info!(
                records = report.records,
                node = recorder.node_id(),
                durability = ?mode,
                public_key = %recorder.log().public_key().to_hex(),
                "decision log open"
            );
            pdp.with_recorder(recorder)
        }
    };
    let identity = open_identity(&args)?;
    let registry = Arc::clone(identity.store());
    if args.governed {
        let active = arbiter_pdp::governed::active(registry.as_ref())
            .context("cannot start in governed mode")?;
        arbiter_pdp::governed::enforce(&pdp, active)
            .await
            .map_err(|e| anyhow::anyhow!("cannot start in governed mode: {e}"))?;
    }
    let _flusher =
        arbiter_pdp::identity::spawn_flusher(identity.clone(), arbiter_pdp::identity::FLUSH_EVERY);
    let pdp = Arc::new(pdp.with_identity(identity));
    let _watch = if args.reload_interval_ms > 0 {
        pdp.watch(Duration::from_millis(args.reload_interval_ms))
    } else {
        None
    };
    // The registry's active version (governed mode) and shadow version, followed.
    let _follow = tokio::spawn(arbiter_pdp::governed::follow(
        pdp.clone(),
        registry,
        Duration::from_secs(1),
        args.governed,
    ));
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on `{}`", args.listen))?;
    let local = listener
        .local_addr()
        .context("cannot read the listen address")?;
    let _publisher = join_fleet(&args, &pdp, local).await?;
    let access_log = match &args.access_log {
        Some(destination) => {
            let target = arbiter_server::access_log::Target::parse(destination);
            let opened = arbiter_server::access_log::AccessLog::open(target)
                .context("cannot start the access log (`--access-log`)")?;
            tracing::info!(destination = %destination, "access log on");
            Some(opened)
        }
        None => None,
    };
    let witnessing = start_witnessing(&args, &pdp)?;
    let config = ServerConfig {
        limits: JsonLimits {
            max_bytes: args.max_body_bytes,
            max_depth: args.max_depth,
        },
        public_url: args.public_url.clone(),
        listen: local.to_string(),
        require_authentication: args.require_auth,
        admin_reasons_for_all_callers: args.admin_reasons_for_all_callers,
        routes: Arc::new(load_routes(&args)?),
        access_log: access_log.as_ref().map(|(log, _)| log.clone()),
        witnessing: witnessing.clone(),
        gap: Arc::new(crate::cmd::gap::sources(
            &args.gap_mcp_configs,
            &args.gap_postgres,
            &args.gap_access_logs,
            None,
            Some(
                args.public_url
                    .clone()
                    .unwrap_or_else(|| format!("http://{local}")),
            ),
        )?),
    };
    let status = pdp.status();
    tracing::info!(
        listen = %local,
        policies = %match (&args.policies, args.governed) {
            (Some(p), _) => p.display().to_string(),
            (None, true) => "governed (the version active in the registry)".to_owned(),
            (None, false) => "none (every request is denied)".to_owned(),
        },
        version = %status.active_version,
        data = %args.data.display(),
        "arbiter serving the AuthZEN API at http://{local}/access/v1/evaluation"
    );
    spawn_sighup_reload(pdp.clone(), access_log.as_ref().map(|(log, _)| log.clone()));
    spawn_approval_steps(pdp.clone());
    let console_base = args
        .public_url
        .clone()
        .map(|u| u.trim_end_matches('/').to_owned())
        .unwrap_or_else(|| {
            // Listening on every address: name the one this machine's browser can open.
            let mut shown = local;
            if shown.ip().is_unspecified() {
                shown.set_ip(if shown.is_ipv4() {
                    std::net::Ipv4Addr::LOCALHOST.into()
                } else {
                    std::net::Ipv6Addr::LOCALHOST.into()
                });
            }
            format!("http://{shown}")
        });
    let state = AppState::new(pdp.clone(), config);
    let state = if args.no_console {
        tracing::info!("web console off (--no-console)");
        state.without_console()
    } else {
        eprintln!(
            "console: {console_base}/console/ — sign in with an admin token (arbiter admin token \
             create --name you)"
        );
        state
    };
    let router = app(state);
    let served = arbiter_server::serve(listener, router, shutdown_signal()).await;
    if let Some((_, writer)) = access_log {
        writer.finish(Duration::from_secs(5));
    }
    served.context("the server stopped with an error")?;
    if pdp.recorder().is_some() {
        pdp.close_recorder().map_err(anyhow::Error::msg)?;
        // The final checkpoint goes to the witnesses before the process ends.
        if let Some(w) = &witnessing {
            let w = w.clone();
            let pdp = pdp.clone();
            tokio::task::spawn_blocking(move || {
                if let Some(r) = pdp.recorder() {
                    w.finish(r.log());
                }
            })
            .await
            .context("the witness senders failed")?;
        }
    }
    tracing::info!("shut down cleanly");
    Ok(())
}

/// With a shared store (`--store`): registers this node (its log's key and URL) and publishes
/// its checkpoints; see `docs/fleet.md`.
async fn join_fleet(
    args: &ServeArgs,
    pdp: &Arc<Pdp>,
    local: std::net::SocketAddr,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    let shared = pdp.identity().is_some_and(|i| i.store().shared());
    if !shared {
        return Ok(None);
    }
    if pdp.recorder().is_none() {
        tracing::warn!("this node keeps no decision log: it is not registered in the fleet");
        return Ok(None);
    }
    let url = args
        .advertise_url
        .clone()
        .or_else(|| (!local.ip().is_unspecified()).then(|| format!("http://{local}")));
    if url.is_none() {
        tracing::warn!(
            "listening on every address without `--advertise-url`: the other nodes cannot ask \
             this one for its decisions"
        );
    }
    let joining = pdp.clone();
    let node = tokio::task::spawn_blocking(move || arbiter_server::fleet::join(&joining, url))
        .await
        .context("registering this node panicked")?
        .map_err(|e| anyhow::anyhow!("cannot register this node in the fleet: {e}"))?;
    tracing::info!(node = %node.id, url = ?node.url, "registered in the fleet");
    Ok(Some(arbiter_server::fleet::spawn_publisher(pdp.clone())))
}

/// Starts sending checkpoints to the `--witness` URLs, if any.
fn start_witnessing(
    args: &ServeArgs,
    pdp: &Arc<Pdp>,
) -> anyhow::Result<Option<Arc<arbiter_server::witness::Witnessing>>> {
    if args.witnesses.is_empty() {
        return Ok(None);
    }
    if pdp.recorder().is_none() {
        anyhow::bail!("`--witness` needs the decision log: it witnesses the log's checkpoints");
    }
    let witnessing =
        arbiter_server::witness::Witnessing::new(arbiter_server::witness::WitnessSettings {
            urls: args.witnesses.clone(),
            quorum: args.witness_quorum,
            timeout: Duration::from_millis(args.witness_timeout_ms.max(1)),
        })
        .map_err(|e| anyhow::anyhow!("`--witness`: {e}"))?;
    let witnessing = Arc::new(witnessing);
    witnessing.spawn(pdp.clone());
    tracing::info!(witnesses = ?args.witnesses, quorum = args.witness_quorum, "checkpoints are sent to witnesses");
    Ok(Some(witnessing))
}

/// Loads the forward-auth route table.
fn load_routes(args: &ServeArgs) -> anyhow::Result<arbiter_server::routes::RouteTable> {
    let mut table = arbiter_server::routes::RouteTable::default();
    for path in &args.routes {
        table.load_list(path)?;
    }
    for spec in &args.openapi {
        let (service, file) = spec.split_once('=').ok_or_else(|| {
            anyhow::anyhow!(
                "`--openapi {spec}`: expected SERVICE=FILE, e.g. `tickets=openapi.json`"
            )
        })?;
        table.load_openapi(service, std::path::Path::new(file))?;
    }
    for words in &args.forward_auth {
        let (service, settings) = arbiter_server::routes::ServiceSettings::parse(words)
            .map_err(|m| anyhow::anyhow!("`--forward-auth {words}`: {m}"))?;
        table
            .configure(&service, settings)
            .map_err(|m| anyhow::anyhow!("`--forward-auth {words}`: {m}"))?;
    }
    table.check()?;
    if !table.is_empty() {
        tracing::info!(services = ?table.services(), "forward-auth routes loaded");
    }
    Ok(table)
}

/// Opens the identity store and, on first start, creates the first admin token.
fn open_identity(args: &ServeArgs) -> anyhow::Result<Arc<Identity>> {
    let jwt = match &args.jwt_issuers {
        Some(path) => {
            let issuers = arbiter_jwt::load_issuers(path)
                .with_context(|| format!("cannot load token issuers from `{}`", path.display()))?;
            let verifier = arbiter_jwt::Verifier::new(issuers)
                .with_context(|| format!("cannot load token issuers from `{}`", path.display()))?;
            tracing::info!(issuers = ?verifier.issuers().collect::<Vec<_>>(), "accepting agent tokens");
            Some(Arc::new(verifier))
        }
        None => None,
    };
    let location = crate::cmd::store::location(&args.data);
    let identity = Identity::open(
        &args.data,
        IdentitySettings {
            jwt,
            store: crate::cmd::store::shared(),
        },
    )
    .with_context(|| format!("cannot open the identity store at {}", location.describe()))?;
    tracing::info!(store = %location.describe(), "identity store open");
    let store = identity.store();
    let admins = store.list_credentials(&CredentialFilter {
        kind: Some(CredentialKind::AdminToken),
        agent_id: None,
        include_revoked: true,
    })?;
    if admins.is_empty() {
        if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            let issued = arbiter_pdp::admin::create_token(
                store.as_ref(),
                &arbiter_pdp::admin::TokenSpec::Admin {
                    role: "administrator".to_owned(),
                },
                "first administrator",
                None,
                &Actor::system("serve"),
                arbiter_pdp::identity::now_us(),
            )?;
            // Straight to the operator's terminal, never through the log.
            eprintln!(
                "\nFirst start: created admin token {} (role administrator).\n\
                 Store it now; Arbiter keeps only its hash and cannot show it again:\n\n  {}\n",
                issued.credential.id,
                issued.secret.expose()
            );
        } else {
            let place = match crate::cmd::store::shared() {
                // The URL may hold a password: name the flag, not its value.
                Some(_) => "--store URL".to_owned(),
                None => format!("--data {}", args.data.display()),
            };
            tracing::warn!(
                data = %args.data.display(),
                "no admin token exists; create one with `arbiter admin token create {place} --name NAME`"
            );
        }
    }
    Ok(Arc::new(identity))
}

fn create_data_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the data directory `{}`", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot restrict permissions of `{}`", dir.display()))?;
    }
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown requested; draining in-flight requests");
}

/// Every second, approvals decided since (with the CLI or the admin API) are recorded in the
/// decision log (see `Pdp::record_approval_steps`).
fn spawn_approval_steps(pdp: Arc<Pdp>) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            if let Err(e) = pdp.record_approval_steps().await {
                tracing::warn!(error = %e, "approval steps could not be recorded yet");
            }
        }
    });
}

/// SIGHUP reloads the policy directory at once and reopens the access log file.
fn spawn_sighup_reload(pdp: Arc<Pdp>, access_log: Option<arbiter_server::access_log::AccessLog>) {
    #[cfg(unix)]
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        while hup.recv().await.is_some() {
            if let Some(log) = &access_log {
                log.reopen();
            }
            let pdp = pdp.clone();
            let _ = tokio::task::spawn_blocking(move || pdp.reload()).await;
        }
    });
}

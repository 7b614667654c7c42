//! `capms-manager`: see `capms-manager --help`. The work is in the library; this file only
//! dispatches the command line.

use capms_operator::cli::{Cli, Command, RunArgs};
use capms_operator::manager::{self, Settings};
use capms_operator::metrics::Metrics;
use capms_operator::{manifests, telemetry};
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

fn main() -> ExitCode {
    let cli = Cli::parse_from_env_args(std::env::args_os());
    let result = match cli.command {
        Command::Crds => print_crds(),
        Command::Manifests { out, version } => print_or_write_manifests(out.as_deref(), &version),
        Command::Run(args) => run(*args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("capms-manager: {message}");
            ExitCode::FAILURE
        }
    }
}

fn write_stdout(text: &str) -> Result<(), String> {
    std::io::stdout().write_all(text.as_bytes()).map_err(|error| format!("cannot write: {error}"))
}

fn print_crds() -> Result<(), String> {
    write_stdout(&manifests::crds_yaml().map_err(|error| error.to_string())?)
}

fn print_or_write_manifests(out: Option<&std::path::Path>, version: &str) -> Result<(), String> {
    if let Some(dir) = out {
        let written = manifests::write_repository(dir, version).map_err(|error| error.to_string())?;
        eprintln!("wrote a clusterctl repository to {}", written.display());
        return Ok(());
    }
    let artifacts = manifests::artifacts(version).map_err(|error| error.to_string())?;
    for artifact in artifacts {
        write_stdout(&format!("# {}\n{}", artifact.file_name, artifact.contents))?;
    }
    Ok(())
}

fn run(args: RunArgs) -> Result<(), String> {
    telemetry::init(args.log_format, &args.log_level)?;
    // Configuration errors come before any connection attempt: a start without metal-api
    // configuration fails in milliseconds with one line.
    let settings = Settings::from_args(&args)?;
    let default = manager::default_backend(&args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| format!("cannot start the runtime: {error}"))?;
    runtime.block_on(async move {
        let client = kube::Client::try_default().await.map_err(|error| {
            format!("cannot reach the management cluster (kubeconfig or in-cluster): {error}")
        })?;
        if let Some(sim) = default.sim {
            // `--backend sim`: the in-process datacenter's clock follows the manager's.
            capms_operator::clock::drive_sim(sim, settings.clock.clone());
        }
        manager::run(client, Some(default.backend), settings, Arc::new(Metrics::new()), shutdown_signal())
            .await
    })
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing reconciles in flight");
}

//! `capms-realcluster up`: a real management cluster on this machine, to use with kubectl and
//! clusterctl (docs/real-cluster.md walks through it).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use std::collections::BTreeMap;

use capms_realcluster::Harness;
use capms_realcluster::metal::{EDIT_KEY, IMAGE, PROJECT};
use capms_realcluster::parts::Part;
use capms_realcluster::workload;
use clap::{Parser, Subcommand};

/// How often `up` checks that every process still runs.
const WATCH: Duration = Duration::from_secs(1);

/// A real management cluster: etcd, kube-apiserver, kube-controller-manager, Cluster API's
/// managers and capms-manager as processes, and capms-sim serve as metal-api.
#[derive(Parser, Debug)]
#[command(name = "capms-realcluster", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start the management cluster and print how to use it; stops everything on Ctrl-C.
    Up {
        /// Keep its files (kubeconfigs, logs, etcd) in DIR instead of a temporary folder that is
        /// removed at the end.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Measure capms-manager as its own process: one cluster (default flavor: a firewall, one
    /// control-plane machine) with WORKERS workers generated
    /// with clusterctl and applied, until every Machine runs; prints a Markdown table (peak
    /// memory, reconciles, metal-api calls, apiserver requests).
    Bench {
        /// Worker machines of the cluster (plus one control-plane machine).
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=20_000))]
        workers: u32,
        /// Keep the files (logs, audit log) in DIR.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let command = Cli::parse().command;
    let work = async {
        match command {
            Command::Up { dir } => up(dir).await,
            Command::Bench { workers, dir } => bench(workers, dir).await,
        }
    };
    // On SIGTERM or SIGINT the command's future is dropped, and with it every process it
    // started (they are killed on drop): a stopped harness leaves nothing running.
    let result = tokio::select! {
        result = work => result,
        signal = stopped() => {
            eprintln!("capms-realcluster: {signal}: stopping everything");
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("capms-realcluster: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGTERM or SIGINT, naming it.
async fn stopped() -> &'static str {
    let Ok(mut terminate) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return "SIGINT";
    };
    tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = tokio::signal::ctrl_c() => "SIGINT",
    }
}

async fn bench(workers: u32, dir: Option<PathBuf>) -> capms_realcluster::Result<()> {
    eprintln!("bench: {workers} workers and one control-plane machine on a real management cluster ...");
    let report = capms_realcluster::bench::run(dir.as_deref(), workers as usize).await?;
    #[allow(clippy::print_stdout, reason = "the report is the command's output")]
    {
        print!("{report}");
    }
    Ok(())
}

async fn up(dir: Option<PathBuf>) -> capms_realcluster::Result<()> {
    eprintln!(
        "capms-realcluster: starting capms-sim serve, etcd, kube-apiserver, Cluster API and capms-manager ..."
    );
    let mut harness = Harness::start(dir.as_deref()).await?;
    let mut cluster = harness.management_cluster("management").await?;
    let kubeconfig = cluster.plane().admin_kubeconfig().display().to_string();
    let repository = cluster.repository().join("clusterctl.yaml").display().to_string();
    let clusterctl = harness.binaries().path(Part::Clusterctl).display().to_string();
    eprintln!("capms-realcluster: ready. In another shell:");
    eprintln!();
    eprintln!("  export KUBECONFIG={kubeconfig}");
    eprintln!("  export CLUSTERCTL_DISABLE_VERSIONCHECK=true");
    eprintln!(
        "  export METAL_PROJECT_ID={PROJECT} CONTROL_PLANE_MACHINE_IMAGE={IMAGE} WORKER_MACHINE_IMAGE={IMAGE}"
    );
    eprintln!("  {clusterctl} generate cluster demo --config {repository} \\");
    eprintln!("      --infrastructure metalstack --kubernetes-version v1.33.0 \\");
    eprintln!("      --control-plane-machine-count 1 --worker-machine-count 1 | kubectl apply -f -");
    eprintln!();
    eprintln!(
        "  metal-api: {} (HMAC Metal-Edit key {EDIT_KEY}); files and logs in {}",
        harness.metal().url(),
        harness.dir().display()
    );
    eprintln!("  This process plays every cluster's workload side (its kubeconfig, kubeadm-config, Nodes).");
    eprintln!("capms-realcluster: Ctrl-C stops everything.");
    #[allow(clippy::print_stdout, reason = "the kubeconfig path is the command's output, for scripts")]
    {
        println!("{kubeconfig}");
    }
    let mut shown: BTreeMap<String, String> = BTreeMap::new();
    loop {
        tokio::time::sleep(WATCH).await;
        harness.alive()?;
        cluster.alive()?;
        for (name, state) in workload::act_all(cluster.plane()).await? {
            if shown.get(&name) != Some(&state) {
                eprintln!("capms-realcluster: {name}: {state}");
                shown.insert(name, state);
            }
        }
    }
}

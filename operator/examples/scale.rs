//! The manager at scale: one cluster with N MetalStackMachines (default 1,000) against the fake
//! apiserver and the simulated datacenter, until every machine is provisioned.
//!
//! ```text
//! cargo run --release -p capms-operator --example scale -- [MACHINES]
//! ```
//!
//! Prints reconciles per second (wall clock; virtual time is paused tokio time, so provisioning
//! waits cost nothing), metal-api calls, and the process's resident memory (VmRSS now and the
//! peak VmHWM from /proc/self/status). The fake apiserver and the datacenter run in the same
//! process, so memory is an upper bound for the manager alone.

#[path = "../tests/support/mod.rs"]
mod support;

use capms_core::api::MetalStackMachine;
use std::time::Instant;
use support::{Capi, Env, is_provisioned, management_cluster, objects};

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0)
}

fn counter_sum(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|line| line.starts_with(name))
        .filter_map(|line| line.rsplit(' ').next())
        .filter_map(|value| value.parse::<f64>().ok())
        .sum()
}

#[allow(clippy::print_stdout, reason = "a benchmark report")]
fn main() -> Result<(), String> {
    let machines: usize = std::env::args()
        .nth(1)
        .map(|arg| arg.parse().map_err(|_| format!("{arg:?} is not a count")))
        .transpose()?
        .unwrap_or(1000);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .map_err(|error| error.to_string())?;
    runtime.block_on(async move {
        let baseline_kib = status_kib("VmRSS:");
        let env = Env::start_sized(management_cluster(), machines + 8).await;
        let capi = Capi { env: &env };
        let cluster = capi.create_cluster("scale", false, false).await;
        let started = Instant::now();
        for index in 0..machines {
            capi.create_machine(&cluster, &format!("scale-md-{index}"), index == 0).await;
        }
        capi.wait_and_sync_cluster("scale").await;
        env.wait("every machine provisioned", |api| {
            let all = objects::<MetalStackMachine>(api);
            all.len() == machines && all.iter().all(is_provisioned)
        })
        .await;
        let wall = started.elapsed().as_secs_f64();
        let metrics = env.metrics.encode().unwrap_or_default();
        let reconciles = counter_sum(&metrics, "capms_reconciles_total");
        let calls = counter_sum(&metrics, "capms_metal_api_calls_total");
        println!("{machines} MetalStackMachines provisioned in {wall:.1}s wall");
        println!("  reconciles:        {reconciles:.0} ({:.0} per second)", reconciles / wall.max(1e-9));
        println!("  metal-api calls:   {calls:.0} ({:.1} per machine)", calls / machines as f64);
        println!("  resident memory:   {} MiB now, {} MiB peak (process: manager + fake apiserver + datacenter; {} MiB before start)",
            status_kib("VmRSS:") / 1024, status_kib("VmHWM:") / 1024, baseline_kib / 1024);
        env.stop().await
    })
}

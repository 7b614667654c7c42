//! Compares capms's refresh policy with the Go provider's (a GET per machine every 30 s):
//! metal-api read calls while a 3+3 cluster provisions, calls per machine over a whole
//! create → ready → delete lifecycle, and how long after `Phoned Home` each machine is Ready.
//!
//! ```text
//! cargo run --release -p capms-sim-scenarios --example refresh -- [SEEDS]
//! ```

#![allow(clippy::print_stdout, reason = "a benchmark reports its figures on stdout")]

use capms_core::api::conditions::get_condition;
use capms_core::metal::ProvisioningEventKind;
use capms_core::reconcile::RefreshPolicy;
use capms_core::{Operation, ProviderId};
use capms_sim_scenarios::demo;
use capms_sim_scenarios::operator::OperatorConfig;
use capms_sim_scenarios::world::{Until, World};
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Default, Clone, Copy)]
struct Figures {
    reads_until_ready: u64,
    calls_lifecycle: u64,
    machines: u64,
    ready_delay_total: Duration,
    ready_delay_max: Duration,
    time_to_ready: Duration,
}

fn reads(calls: &BTreeMap<Operation, u64>) -> u64 {
    calls.iter().filter(|(op, _)| op.is_read()).map(|(_, n)| n).sum()
}

/// Per machine: Ready's transition time minus the time of its `Phoned Home` event.
fn ready_delays(world: &World) -> Vec<Duration> {
    let machines = world.sim.machines();
    let store = &world.managements[0].store;
    store
        .metal_machines
        .values()
        .filter_map(|mm| {
            let id = ProviderId::parse(mm.spec.provider_id.as_deref()?).ok()?;
            let machine = machines.iter().find(|m| m.id == id.machine_id())?;
            let phoned = machine.events.iter().find(|e| e.event == ProvisioningEventKind::PhonedHome)?.time;
            let ready = get_condition(&mm.status.as_ref()?.conditions, "Ready")?.last_transition_time.0;
            Some(ready.duration_since(phoned).unsigned_abs())
        })
        .collect()
}

fn run(seed: u64, refresh: RefreshPolicy) -> Result<Figures, String> {
    let config = OperatorConfig { refresh, ..OperatorConfig::default() };
    let mut world = World::new(seed, demo::datacenter(seed), config);
    world.create_cluster(demo::plan("bench", 3, 3, false))?;
    let time_to_ready = world.run_until("bench", Until::Ready, Duration::from_secs(7200))?;
    let delays = ready_delays(&world);
    let reads_until_ready = reads(&world.sim.calls());
    if std::env::var_os("REFRESH_BREAKDOWN").is_some() {
        println!("{:?}", world.sim.calls());
    }
    world.delete_cluster("bench")?;
    world.run_until("bench", Until::Gone, Duration::from_secs(3600))?;
    let calls_lifecycle = world.sim.calls().values().sum();
    Ok(Figures {
        reads_until_ready,
        calls_lifecycle,
        machines: 6,
        ready_delay_total: delays.iter().sum(),
        ready_delay_max: delays.iter().max().copied().unwrap_or_default(),
        time_to_ready,
    })
}

fn main() -> Result<(), String> {
    let seeds: u64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(20);
    let policies = [
        ("capms (one find per cluster, near/far polling)", RefreshPolicy::default()),
        (
            "baseline (GET per machine every 30 s)",
            RefreshPolicy::PerMachine { interval: Duration::from_secs(30) },
        ),
    ];
    let mut results = Vec::new();
    for (name, policy) in policies {
        let mut total = Figures::default();
        for seed in 0..seeds {
            let figures = run(seed, policy)?;
            total.reads_until_ready += figures.reads_until_ready;
            total.calls_lifecycle += figures.calls_lifecycle;
            total.machines += figures.machines;
            total.ready_delay_total += figures.ready_delay_total;
            total.ready_delay_max = total.ready_delay_max.max(figures.ready_delay_max);
            total.time_to_ready += figures.time_to_ready;
        }
        let machines = total.machines.max(1);
        println!("{name}, {seeds} seeds, 3+3 cluster, provisioning 5 min:");
        println!(
            "  metal-api read calls until ready: {:.1} per cluster",
            total.reads_until_ready as f64 / seeds as f64
        );
        println!(
            "  metal-api calls per machine, create→ready→delete: {:.1}",
            total.calls_lifecycle as f64 / machines as f64
        );
        println!(
            "  Phoned Home → Ready: mean {:.1} s, max {:.1} s",
            total.ready_delay_total.as_secs_f64() / machines as f64,
            total.ready_delay_max.as_secs_f64()
        );
        println!(
            "  create → all ready: mean {:.0} s of virtual time",
            total.time_to_ready.as_secs_f64() / seeds as f64
        );
        results.push(total);
    }
    if let [ours, baseline] = results.as_slice() {
        let ratio = ours.reads_until_ready as f64 / baseline.reads_until_ready.max(1) as f64;
        println!("read calls until ready, capms / baseline: {ratio:.2}");
    }
    Ok(())
}

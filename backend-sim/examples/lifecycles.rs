//! How many machine lifecycles (allocate → Phoned Home → free → Waiting) per second the
//! simulated datacenter sustains.
//!
//! ```text
//! cargo run --release -p capms-backend-sim --example lifecycles -- [MACHINES] [ROUNDS]
//! ```
//!
//! Each round allocates every machine of the partition, advances virtual time until all have
//! phoned home, frees them all and advances until all wait again. Invariant checks are off
//! (as in release builds); the event log keeps only its hash.

#![allow(clippy::print_stdout, reason = "a benchmark reports its figures on stdout")]

use capms_backend_sim::{MINI_LAB_PROJECT, PartitionSpec, Phase, Sim, SimBuilder};
use capms_core::MetalBackend;
use capms_core::metal::{MachineAllocateRequest, NetworkAllocateRequest, NetworkRequest};
use futures::executor::block_on;
use std::time::Duration;

fn argument(index: usize, default: usize) -> usize {
    std::env::args().nth(index).and_then(|value| value.parse().ok()).unwrap_or(default)
}

fn advance_until(sim: &Sim, machine_ids: &[String], phase: Phase) {
    while !machine_ids.iter().all(|id| sim.machine_phase(id) == Some(phase)) {
        match sim.next_event_at() {
            Some(at) => sim.advance_to(at),
            None => break,
        }
    }
}

async fn round(sim: &Sim, network_id: &str, machines: usize) -> Result<(), capms_core::BackendError> {
    let backend = sim.backend();
    let mut allocated = Vec::with_capacity(machines);
    for index in 0..machines {
        let request = MachineAllocateRequest {
            project_id: MINI_LAB_PROJECT.into(),
            partition_id: "bench".into(),
            size_id: "v1-small-x86".into(),
            image_id: "debian-13.0".into(),
            name: format!("bench-{index}"),
            networks: vec![NetworkRequest::auto(network_id)],
            tags: vec![format!("bench/machine={index}")],
            ..Default::default()
        };
        allocated.push(backend.allocate_machine(&request).await?.id);
    }
    advance_until(sim, &allocated, Phase::Running);
    for id in &allocated {
        backend.free_machine(id).await?;
    }
    advance_until(sim, &allocated, Phase::Waiting);
    Ok(())
}

fn main() -> Result<(), capms_core::BackendError> {
    let machines = argument(1, 200);
    let rounds = argument(2, 50);
    let sim = SimBuilder::new()
        .partition(PartitionSpec::mini_lab("bench", machines))
        .check_invariants(false)
        .keep_log(false)
        .build();
    let network = block_on(sim.backend().allocate_network(&NetworkAllocateRequest {
        project_id: MINI_LAB_PROJECT.into(),
        partition_id: "bench".into(),
        ..Default::default()
    }))?;
    // A benchmark measures wall time by definition; the simulation itself never reads it.
    #[allow(clippy::disallowed_methods)]
    let started = std::time::Instant::now();
    for _ in 0..rounds {
        block_on(round(&sim, &network.id, machines))?;
    }
    let elapsed = started.elapsed();
    let lifecycles = machines * rounds;
    let per_second = lifecycles as f64 / elapsed.as_secs_f64().max(f64::EPSILON);
    let virtual_time = Duration::from_secs(sim.now().as_second().unsigned_abs());
    println!("machines per round: {machines}, rounds: {rounds}, lifecycles: {lifecycles}");
    println!("wall time: {:.3} s, lifecycles per second: {per_second:.0}", elapsed.as_secs_f64());
    println!(
        "metal-api calls: {}, event log lines: {}",
        sim.calls().values().sum::<u64>(),
        sim.event_count()
    );
    println!("virtual clock at end: {} ({} s since epoch)", sim.now(), virtual_time.as_secs());
    Ok(())
}

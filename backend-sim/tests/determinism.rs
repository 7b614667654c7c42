//! The same seed and the same calls give a byte-identical event log; another seed gives
//! another one. The workload is 1,500 random operations with every kind of fault switched on.

use capms_backend_sim::{
    ErrorRates, FaultPlan, LatencyRange, MINI_LAB_PROJECT, PartitionSpec, Sim, SimBuilder,
};
use capms_core::MetalBackend;
use capms_core::metal::{
    IpAllocateRequest, MachineAllocateRequest, MachineQuery, NetworkAllocateRequest, NetworkRequest,
};
use futures::executor::block_on;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::Duration;

const OPERATIONS: usize = 1_500;

fn faults() -> FaultPlan {
    FaultPlan {
        error_rates: ErrorRates { transient: 0.05, conflict: 0.02, auth: 0.01 },
        lost_response_rate: 0.05,
        latency: Some(LatencyRange { min: Duration::ZERO, max: Duration::from_secs(2) }),
        parallel_allocation_rate: 0.05,
        provisioning_failure_rate: 0.1,
        death_rate: 0.1,
        external_free_rate: 0.05,
        stuck_provisioning_rate: 0.05,
        stale_read_lag: Duration::from_secs(20),
        late_write_rate: 0.05,
        stolen_machine_rate: 0.3,
        ..FaultPlan::none()
    }
}

/// Drives a datacenter with random operations drawn from its own seeded RNG.
struct Workload {
    rng: ChaCha8Rng,
    sim: Sim,
    networks: Vec<String>,
    machines: Vec<String>,
    ips: Vec<String>,
}

impl Workload {
    fn new(seed: u64) -> Self {
        let sim = SimBuilder::new()
            .seed(seed)
            .partition(PartitionSpec::mini_lab("mini-lab", 24))
            .fault_plan(faults())
            .build();
        Workload {
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0x5eed),
            sim,
            networks: vec![],
            machines: vec![],
            ips: vec![],
        }
    }

    fn pick(&mut self, items: &[String]) -> Option<String> {
        (!items.is_empty()).then(|| items[self.rng.random_range(0..items.len())].clone())
    }

    async fn step(&mut self, index: usize) {
        let backend = self.sim.backend();
        match self.rng.random_range(0..100) {
            0..8 => {
                let request = NetworkAllocateRequest {
                    project_id: MINI_LAB_PROJECT.into(),
                    partition_id: "mini-lab".into(),
                    name: format!("net-{index}"),
                    ..Default::default()
                };
                if let Ok(network) = backend.allocate_network(&request).await {
                    self.networks.push(network.id);
                }
            }
            8..35 => {
                let Some(network_id) = self.pick(&self.networks.clone()) else { return };
                let pinned = index
                    .is_multiple_of(5)
                    .then(|| format!("00000000-0000-0000-0000-{:012x}", self.rng.random_range(1..=24)));
                let request = MachineAllocateRequest {
                    machine_id: pinned,
                    project_id: MINI_LAB_PROJECT.into(),
                    partition_id: "mini-lab".into(),
                    size_id: "v1-small-x86".into(),
                    image_id: "ubuntu-26".into(),
                    name: format!("machine-{index}"),
                    networks: vec![NetworkRequest::auto(network_id)],
                    tags: vec![format!("workload/index={index}"), "workload=yes".into()],
                    ..Default::default()
                };
                if let Ok(machine) = backend.allocate_machine(&request).await {
                    self.machines.push(machine.id);
                }
            }
            35..50 => {
                let Some(machine_id) = self.pick(&self.machines.clone()) else { return };
                if backend.free_machine(&machine_id).await.is_ok() {
                    self.machines.retain(|id| id != &machine_id);
                }
            }
            50..58 => {
                let request = IpAllocateRequest {
                    network_id: "internet-mini-lab".into(),
                    project_id: MINI_LAB_PROJECT.into(),
                    name: format!("ip-{index}"),
                    ..Default::default()
                };
                if let Ok(ip) = backend.allocate_ip(&request).await {
                    self.ips.push(ip.address);
                }
            }
            58..64 => {
                let Some(address) = self.pick(&self.ips.clone()) else { return };
                if backend.free_ip(&address).await.is_ok() {
                    self.ips.retain(|ip| ip != &address);
                }
            }
            64..68 => {
                let Some(network_id) = self.pick(&self.networks.clone()) else { return };
                if backend.free_network(&network_id).await.is_ok() {
                    self.networks.retain(|id| id != &network_id);
                }
            }
            68..84 => {
                let query = MachineQuery { tags: vec!["workload=yes".into()], ..Default::default() };
                let _ = backend.find_machines(&query).await;
            }
            _ => {
                let seconds = self.rng.random_range(1..180);
                self.sim.advance(Duration::from_secs(seconds));
            }
        }
    }

    fn run(mut self) -> Sim {
        block_on(async {
            for index in 0..OPERATIONS {
                self.step(index).await;
            }
        });
        self.sim
    }
}

#[test]
fn same_seed_gives_the_same_event_log() {
    let first = Workload::new(7).run();
    let second = Workload::new(7).run();
    assert_eq!(first.event_log_hash(), second.event_log_hash(), "seed 7 diverged: rerun with this test");
    assert_eq!(first.event_log(), second.event_log());
    let calls: u64 = first.calls().values().sum();
    assert!(calls >= 1_000, "the workload made only {calls} metal-api calls");
    let log = first.event_log().join("\n");
    let faults = [
        "injected",
        "answer lost",
        "Crashed",
        "goes silent",
        "liveliness Unknown",
        "external free",
        "too many parallel",
        "takes effect late",
        "stale read",
        "allocated by someone else first",
    ];
    for fault in faults {
        assert!(log.contains(fault), "the workload never saw a fault of kind {fault:?}");
    }
    first.check_invariants().expect("datacenter invariants hold after the workload");
}

#[test]
fn another_seed_gives_another_event_log() {
    let seven = Workload::new(7).run();
    let eight = Workload::new(8).run();
    assert_ne!(seven.event_log_hash(), eight.event_log_hash());
}

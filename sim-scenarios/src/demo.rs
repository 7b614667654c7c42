//! `capms-sim demo`: a cluster's whole life against a simulated datacenter, with progress.
//!
//! A cluster with a firewall, 3 control-plane and 3 worker machines is created, scaled to 5
//! workers, loses a machine (a MachineHealthCheck replaces it), and is deleted. At the end
//! nothing of it may be left in the datacenter and no safety check may have failed.

use crate::capi::ClusterPlan;
use crate::checks::STALE_READY_GRACE;
use crate::operator::OperatorConfig;
use crate::world::{Until, World};
use capms_backend_sim::{
    MACHINE_DEAD_AFTER, MINI_LAB_FIREWALL_IMAGE, MINI_LAB_PARTITION, MINI_LAB_PROJECT, MINI_LAB_SIZE,
    PartitionSpec, ProvisioningTimes, SimBuilder,
};
use capms_core::Operation;
use capms_core::api::{FirewallEgressRule, FirewallProtocol, MetalStackFirewallTemplateSpec};
use std::collections::BTreeMap;
use std::time::Duration;

/// The demo cluster's name.
pub const CLUSTER: &str = "demo";

/// What the demo reports at the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub seed: u64,
    pub virtual_time: Duration,
    pub calls: BTreeMap<Operation, u64>,
    pub reconciles: u64,
    pub checks: u64,
    pub leaks: Vec<String>,
    pub violations: Vec<String>,
    pub trace_hash: String,
    /// Virtual time from create to all machines ready.
    pub time_to_ready: Duration,
}

impl Report {
    /// The demo succeeded: nothing leaked and no check failed.
    pub fn passed(&self) -> bool {
        self.leaks.is_empty() && self.violations.is_empty()
    }
}

/// A plan for a cluster in mini-lab's partition, project, size and images.
pub fn plan(name: &str, control_plane: usize, workers: usize, firewall: bool) -> ClusterPlan {
    ClusterPlan {
        namespace: "default".to_string(),
        name: name.to_string(),
        project: MINI_LAB_PROJECT.to_string(),
        partition: MINI_LAB_PARTITION.to_string(),
        size: MINI_LAB_SIZE.to_string(),
        control_plane,
        control_plane_image: "ubuntu-26.4".to_string(),
        workers,
        worker_image: "ubuntu-26.4".to_string(),
        firewall: firewall.then(firewall_spec),
        node_network_id: None,
        control_plane_ip: None,
        externally_managed: false,
        bootstrap_value: true,
        pinned_machines: Vec::new(),
    }
}

/// A firewall in mini-lab's internet network allowing web and DNS egress.
pub fn firewall_spec() -> MetalStackFirewallTemplateSpec {
    MetalStackFirewallTemplateSpec {
        size: MINI_LAB_SIZE.to_string(),
        image: MINI_LAB_FIREWALL_IMAGE.to_string(),
        networks: vec![format!("internet-{MINI_LAB_PARTITION}")],
        egress_rules: vec![FirewallEgressRule {
            protocol: FirewallProtocol::Tcp,
            ports: vec![53, 80, 443],
            to: vec!["0.0.0.0/0".to_string()],
            comment: Some("allow web and dns".to_string()),
        }],
        ingress_rules: Vec::new(),
        ssh_keys: Vec::new(),
    }
}

/// The demo's datacenter: mini-lab with 12 machines, 5 minutes from allocate to Phoned Home.
pub fn datacenter(seed: u64) -> SimBuilder {
    SimBuilder::new()
        .seed(seed)
        .partition(PartitionSpec::mini_lab(MINI_LAB_PARTITION, 12))
        .provisioning(ProvisioningTimes {
            provisioning: Duration::from_secs(300),
            ..ProvisioningTimes::default()
        })
        .keep_log(true)
}

/// Runs the demo; `progress` receives one line per step of the story and per change of the
/// machines' phases.
pub fn run(seed: u64, progress: &mut dyn FnMut(&str)) -> Result<Report, String> {
    let mut world = World::new(seed, datacenter(seed), OperatorConfig::default());
    run_in(&mut world, seed, progress)
}

/// [`run`], recorded for the HTML report ([`crate::report`]); the record covers a failed
/// demo too.
pub fn run_recorded(
    seed: u64,
    progress: &mut dyn FnMut(&str),
) -> (Result<Report, String>, crate::report::RunRecord) {
    let mut world = World::new(seed, datacenter(seed), OperatorConfig::default());
    world.start_recording();
    let result = run_in(&mut world, seed, progress);
    let record = crate::report::describe_demo(&mut world, seed, &result);
    (result, record)
}

fn run_in(world: &mut World, seed: u64, progress: &mut dyn FnMut(&str)) -> Result<Report, String> {
    let start = world.now();
    let mut say = |world: &World, line: &str| {
        let elapsed = world.now().duration_since(start).unsigned_abs().as_secs();
        progress(&format!("[{:02}:{:02}:{:02}] {line}", elapsed / 3600, elapsed / 60 % 60, elapsed % 60));
    };
    say(world, "creating cluster demo: firewall, 3 control-plane and 3 worker machines");
    world.mark("create cluster demo (firewall, 3 control-plane, 3 workers)");
    world.create_cluster(plan(CLUSTER, 3, 3, true))?;
    let time_to_ready = run_watching(world, Until::Ready, Duration::from_secs(3600), &mut say)?;
    say(world, &format!("cluster ready after {}s of virtual time", time_to_ready.as_secs()));
    say(world, "scaling workers to 5");
    world.mark("scale workers to 5");
    world.scale_workers(CLUSTER, 5)?;
    run_watching(world, Until::Ready, Duration::from_secs(1800), &mut say)?;
    say(world, "a machine dies: it goes silent, and metal-api reports it Unknown 5 minutes later");
    world.mark("a machine dies");
    world.kill_machines(CLUSTER, 1)?;
    // Until metal-api turns it Unknown and capms has looked again, the cluster still looks Ready.
    world.run_for(MACHINE_DEAD_AFTER + STALE_READY_GRACE)?;
    run_watching(world, Until::Ready, Duration::from_secs(3600), &mut say)?;
    say(world, "the dead machine was replaced; deleting the cluster");
    world.mark("delete cluster demo");
    let leaks_before_delete = world.leaks(CLUSTER).len();
    world.delete_cluster(CLUSTER)?;
    run_watching(world, Until::Gone, Duration::from_secs(3600), &mut say)?;
    world.run_for(Duration::from_secs(60))?;
    say(world, &format!("cluster gone ({leaks_before_delete} resources were allocated before the delete)"));
    Ok(Report {
        seed,
        virtual_time: world.now().duration_since(start).unsigned_abs(),
        calls: world.sim.calls(),
        reconciles: world.operator_stats().reconciles,
        checks: world.checker.checks,
        leaks: world.leaks(CLUSTER),
        violations: world.checker.violations.clone(),
        trace_hash: world.trace_hash(),
        time_to_ready,
    })
}

/// Runs until `what` holds, reporting machine phase changes on the way.
fn run_watching(
    world: &mut World,
    what: Until,
    within: Duration,
    say: &mut dyn FnMut(&World, &str),
) -> Result<Duration, String> {
    let start = world.now();
    let mut last = String::new();
    loop {
        let phases = world.machine_phases(CLUSTER);
        let line =
            phases.iter().map(|(name, phase)| format!("{name} {phase}")).collect::<Vec<_>>().join(", ");
        if line != last && !line.is_empty() {
            say(world, &format!("machines: {line}"));
            last = line;
        }
        let elapsed = world.now().duration_since(start).unsigned_abs();
        if world.holds(CLUSTER, what) {
            return Ok(elapsed);
        }
        if elapsed >= within {
            return Err(format!(
                "{CLUSTER} not {what:?} within {within:?}: {}",
                world.pending(CLUSTER, what).join("; ")
            ));
        }
        world.run_for(Duration::from_secs(5))?;
    }
}

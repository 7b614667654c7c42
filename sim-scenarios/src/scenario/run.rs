//! Plays a [`Scenario`] in a [`World`]: one step after another, the safety checks after every
//! step, the expectations at the end, and a report that names the failed step, the seed and
//! the command that reproduces the run.

use super::{Action, Assertion, ClusterSpec, DEFAULT_SEED, Fault, Scenario, Step, format_duration};
use crate::capi::ClusterPlan;
use crate::checks::Unpreventable;
use crate::demo::firewall_spec;
use crate::operator::OperatorConfig;
use crate::store::Store;
use crate::world::World;
use capms_backend_sim::{ErrorRates, FaultPlan, LatencyRange};
use capms_core::api::capi::{self, Cluster};
use capms_core::api::conditions::{ConditionType, get_condition};
use capms_core::api::{MetalStackCluster, MetalStackFirewall, MetalStackFirewallTemplateSpec};
use capms_core::metal::{IpAllocateRequest, IpType, Liveliness, MachineRole, NetworkAllocateRequest};
use capms_core::{MetalBackend, Operation, ProviderId, tags};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

/// Where and why a scenario failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// 1-based index of the failed step; `None` when the steps passed and an expectation at the
    /// end did not hold.
    pub step: Option<usize>,
    /// The line of the step (or of the file's start for expectations).
    pub line: u64,
    /// The step as written (or `expect`).
    pub text: String,
    pub reason: String,
}

/// The outcome of one run of a scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioReport {
    pub name: String,
    pub file: String,
    pub seed: u64,
    /// Steps that passed.
    pub steps_passed: usize,
    pub steps: usize,
    pub failure: Option<Failure>,
    /// Virtual time the run took.
    pub virtual_time: Duration,
    pub trace_hash: String,
    pub violations: Vec<String>,
    /// What is left in the datacenter of clusters the scenario deleted.
    pub leaks: Vec<String>,
    /// Objects that had two machines allocated at the same moment, which capms could have
    /// prevented (what `duplicate_allocations` bounds).
    pub duplicate_allocations: Vec<String>,
    /// Objects that had two machines allocated at the same moment that no provider could have
    /// prevented, with why (they still had to be freed within the duplicate grace).
    pub unpreventable_duplicates: Vec<(String, Unpreventable)>,
    pub metal_api_calls: u64,
    pub reconciles: u64,
    /// The datacenter's event log when the run failed (empty otherwise).
    pub event_log: Vec<String>,
}

impl ScenarioReport {
    /// Every step and every expectation held.
    pub fn passed(&self) -> bool {
        self.failure.is_none()
    }

    /// The one-line command that runs this scenario again with the same seed.
    pub fn reproduce_command(&self) -> String {
        reproduce_command(&self.file, self.seed)
    }

    /// The report, followed by the datacenter's whole event log if `log` (`--log`).
    pub fn with_event_log(&self, log: bool) -> String {
        let mut text = self.to_string();
        if log {
            text.push_str("\ndatacenter event log:");
            for line in &self.event_log {
                text.push_str("\n    ");
                text.push_str(line);
            }
        }
        text
    }
}

/// `cargo run -p capms-sim-scenarios --bin capms-sim -- run <file> --seed <n>`.
pub fn reproduce_command(file: &str, seed: u64) -> String {
    let file = if file.contains(char::is_whitespace) { format!("'{file}'") } else { file.to_string() };
    format!("cargo run -p capms-sim-scenarios --bin capms-sim -- run {file} --seed {seed}")
}

impl fmt::Display for ScenarioReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let virtual_time = format_duration(Duration::from_secs(self.virtual_time.as_secs()));
        let Some(failure) = &self.failure else {
            return write!(
                f,
                "PASS {} ({}): {} steps, {virtual_time} of virtual time, {} metal-api calls, seed {}, trace {}",
                self.name,
                self.file,
                self.steps,
                self.metal_api_calls,
                self.seed,
                &self.trace_hash[..self.trace_hash.len().min(16)]
            );
        };
        writeln!(f, "FAIL {} ({})", self.name, self.file)?;
        match failure.step {
            Some(step) => writeln!(
                f,
                "  failed step {step} of {} ({}:{}): {}",
                self.steps, self.file, failure.line, failure.text
            )?,
            None => writeln!(
                f,
                "  all {} steps passed, but the expectation failed: {}",
                self.steps, failure.text
            )?,
        }
        writeln!(f, "  reason: {}", failure.reason)?;
        writeln!(f, "  virtual time: {virtual_time}")?;
        writeln!(f, "  seed: {}", self.seed)?;
        write!(f, "  reproduce: {}", self.reproduce_command())
    }
}

/// What the steps remember: clusters deleted, resources the user provided.
#[derive(Debug, Default)]
struct RunState {
    deleted: BTreeSet<String>,
    networks: BTreeMap<String, String>,
    ips: BTreeMap<String, String>,
}

/// A scenario being played, step by step: for tools that want to look at the [`World`]
/// between steps. [`run_scenario`] plays all steps and reports.
#[derive(Debug)]
pub struct ScenarioRun {
    pub world: World,
    pub seed: u64,
    start: capms_core::Timestamp,
    state: RunState,
}

impl ScenarioRun {
    /// A fresh world for `scenario`, seeded with `seed_override`, else the scenario's `seed`,
    /// else [`DEFAULT_SEED`].
    pub fn new(scenario: &Scenario, seed_override: Option<u64>) -> Self {
        ScenarioRun::with_config(scenario, seed_override, OperatorConfig::default())
    }

    /// [`ScenarioRun::new`] with a given operator model (the explorer's canary uses it).
    pub fn with_config(scenario: &Scenario, seed_override: Option<u64>, config: OperatorConfig) -> Self {
        let seed = seed_override.or(scenario.seed).unwrap_or(DEFAULT_SEED);
        let world = World::new(seed, scenario.datacenter.builder(seed), config);
        let start = world.now();
        ScenarioRun { world, seed, start, state: RunState::default() }
    }

    /// Plays one step (`index` is 0-based), then checks that there are no more safety
    /// violations than `allowed_violations`.
    pub fn step(&mut self, index: usize, step: &Step, allowed_violations: u64) -> Result<(), String> {
        self.world.note(&format!("step {}: {}", index + 1, step.text));
        self.world.mark(&step.text); // report hook: a step marker when recording
        execute(&mut self.world, &mut self.state, step)?;
        check_violations(&self.world, allowed_violations)
    }

    /// What is left in the datacenter of the clusters the steps deleted.
    pub fn leaks(&self) -> Vec<String> {
        self.state
            .deleted
            .iter()
            .flat_map(|cluster| {
                self.world.leaks(cluster).into_iter().map(move |leak| format!("{leak} of {cluster}"))
            })
            .collect()
    }
}

/// Plays `scenario` with `seed_override`, else its `seed`, else [`DEFAULT_SEED`]. The same
/// scenario and seed give the same trace hash.
pub fn run_scenario(scenario: &Scenario, seed_override: Option<u64>) -> ScenarioReport {
    run_scenario_with(scenario, seed_override, OperatorConfig::default())
}

/// [`run_scenario`] with a given operator model.
pub fn run_scenario_with(
    scenario: &Scenario,
    seed_override: Option<u64>,
    config: OperatorConfig,
) -> ScenarioReport {
    ScenarioRun::with_config(scenario, seed_override, config).play(scenario).0
}

impl ScenarioRun {
    /// Plays every step of `scenario` and reports; hands the run back for tools that look at
    /// its world afterwards (the HTML report, `report.rs`).
    pub fn play(self, scenario: &Scenario) -> (ScenarioReport, ScenarioRun) {
        play(scenario, self)
    }
}

fn play(scenario: &Scenario, mut run: ScenarioRun) -> (ScenarioReport, ScenarioRun) {
    let mut failure = None;
    let mut steps_passed = 0;
    for (index, step) in scenario.steps.iter().enumerate() {
        if let Err(reason) = run.step(index, step, scenario.expect.violations) {
            failure =
                Some(Failure { step: Some(index + 1), line: step.line, text: step.text.clone(), reason });
            break;
        }
        steps_passed += 1;
    }
    let leaks = run.leaks();
    let world = &run.world;
    let duplicates = world.checker.preventable_duplicates();
    if failure.is_none() {
        failure = check_expectations(scenario, &leaks, &duplicates);
    }
    let event_log = if failure.is_some() { world.sim.event_log() } else { Vec::new() };
    let report = ScenarioReport {
        name: scenario.name.clone(),
        file: scenario.file.clone(),
        seed: run.seed,
        steps_passed,
        steps: scenario.steps.len(),
        failure,
        virtual_time: world.now().duration_since(run.start).unsigned_abs(),
        trace_hash: world.trace_hash(),
        violations: world.checker.violations.clone(),
        leaks,
        duplicate_allocations: duplicates,
        unpreventable_duplicates: world.checker.unpreventable_duplicates(),
        metal_api_calls: world.sim.calls().values().sum(),
        reconciles: world.operator_stats().reconciles,
        event_log,
    };
    (report, run)
}

fn check_violations(world: &World, allowed: u64) -> Result<(), String> {
    let violations = &world.checker.violations;
    if violations.len() as u64 > allowed {
        return Err(format!("safety violation: {}", violations.join("; ")));
    }
    Ok(())
}

fn check_expectations(scenario: &Scenario, leaks: &[String], duplicates: &[String]) -> Option<Failure> {
    let mut reasons = Vec::new();
    if scenario.expect.no_leaks && !leaks.is_empty() {
        reasons.push(format!("leaked: none, but the datacenter still holds {}", leaks.join(", ")));
    }
    if duplicates.len() as u64 > scenario.expect.duplicate_allocations {
        reasons.push(format!(
            "duplicate_allocations: {}, but {} objects had two machines allocated at once: {}",
            scenario.expect.duplicate_allocations,
            duplicates.len(),
            duplicates.join(", ")
        ));
    }
    if reasons.is_empty() {
        return None;
    }
    let expect = &scenario.expect;
    Some(Failure {
        step: None,
        line: 0,
        text: format!(
            "expect: {{ leaked: {}, duplicate_allocations: {}, violations: {} }}",
            if expect.no_leaks { "none" } else { "ignored" },
            expect.duplicate_allocations,
            expect.violations
        ),
        reason: reasons.join("; "),
    })
}

fn execute(world: &mut World, state: &mut RunState, step: &Step) -> Result<(), String> {
    match &step.action {
        Action::CreateCluster(spec) => world.create_cluster(cluster_plan(spec, state)?),
        Action::DeleteCluster { name } => {
            state.deleted.insert(name.clone());
            world.delete_cluster(name)
        }
        Action::ScaleWorkers { cluster, to } => world.scale_workers(cluster, *to),
        Action::ScaleControlPlane { cluster, to } => world.scale_control_plane(cluster, *to),
        Action::RollWorkers { cluster, image } => world.roll_workers(cluster, image),
        Action::PauseCluster { cluster } => world.set_paused(cluster, true),
        Action::UnpauseCluster { cluster } => world.set_paused(cluster, false),
        Action::MoveCluster { cluster } => world.move_cluster(cluster),
        Action::RunFor(duration) => world.run_for(*duration),
        Action::RunUntil { cluster, until, within } => world.run_until(cluster, *until, *within).map(|_| ()),
        Action::Heal => {
            world.heal();
            Ok(())
        }
        Action::Fault(fault) => inject(world, fault),
        Action::AllocateNetwork { name, partition } => {
            let request = NetworkAllocateRequest {
                project_id: capms_backend_sim::MINI_LAB_PROJECT.to_string(),
                partition_id: partition.clone(),
                name: name.clone(),
                description: format!("network {name} provided by the user"),
                ..NetworkAllocateRequest::default()
            };
            let backend = world.sim.backend();
            let network = futures::executor::block_on(backend.allocate_network(&request))
                .map_err(|e| format!("allocating network {name} outside capms failed: {e}"))?;
            world.note(&format!("user network {name} = {}", network.id));
            state.networks.insert(name.clone(), network.id);
            Ok(())
        }
        Action::AllocateIp { name, partition } => {
            let request = IpAllocateRequest {
                network_id: format!("internet-{partition}"),
                project_id: capms_backend_sim::MINI_LAB_PROJECT.to_string(),
                ip_type: IpType::Static,
                name: name.clone(),
                description: format!("IP {name} provided by the user"),
                ..IpAllocateRequest::default()
            };
            let backend = world.sim.backend();
            let ip = futures::executor::block_on(backend.allocate_ip(&request))
                .map_err(|e| format!("allocating IP {name} outside capms failed: {e}"))?;
            world.note(&format!("user IP {name} = {}", ip.address));
            state.ips.insert(name.clone(), ip.address);
            Ok(())
        }
        Action::Assert(assertion) => check_assertion(world, state, assertion),
    }
}

fn cluster_plan(spec: &ClusterSpec, state: &RunState) -> Result<ClusterPlan, String> {
    let firewall = spec.firewall.as_ref().map(|image| MetalStackFirewallTemplateSpec {
        size: spec.size.clone(),
        image: image.clone(),
        networks: vec![format!("internet-{}", spec.partition)],
        ..firewall_spec()
    });
    let lookup = |names: &BTreeMap<String, String>, name: &Option<String>, kind: &str| {
        name.as_ref()
            .map(|n| names.get(n).cloned().ok_or_else(|| format!("no {kind} {n:?} was allocated")))
            .transpose()
    };
    Ok(ClusterPlan {
        namespace: spec.namespace.clone(),
        name: spec.name.clone(),
        project: spec.project.clone(),
        partition: spec.partition.clone(),
        size: spec.size.clone(),
        control_plane: spec.control_plane,
        control_plane_image: spec.image.clone(),
        workers: spec.workers,
        worker_image: spec.image.clone(),
        firewall,
        node_network_id: lookup(&state.networks, &spec.node_network, "network")?,
        control_plane_ip: lookup(&state.ips, &spec.control_plane_ip, "IP")?,
        externally_managed: spec.externally_managed,
        bootstrap_value: spec.bootstrap_value,
        pinned_machines: spec.pinned_machines.clone(),
    })
}

fn error_layer(class: fn(f64) -> ErrorRates, rate: f64, operations: &[Operation]) -> FaultPlan {
    let mut plan = FaultPlan::none();
    if operations.is_empty() {
        plan.error_rates = class(rate);
    } else {
        plan.error_rates_by_operation = operations.iter().map(|op| (*op, class(rate))).collect();
    }
    plan
}

fn inject(world: &mut World, fault: &Fault) -> Result<(), String> {
    let now = world.now();
    let until = |duration: &Duration| now.checked_add(*duration).unwrap_or(now);
    let transient = |rate| ErrorRates { transient: rate, ..ErrorRates::default() };
    let auth = |rate| ErrorRates { auth: rate, ..ErrorRates::default() };
    let conflict = |rate| ErrorRates { conflict: rate, ..ErrorRates::default() };
    match fault {
        Fault::ApiOutage { duration } => {
            world.add_timed_fault_plan(error_layer(transient, 1.0, &[]), *duration)
        }
        Fault::ErrorRate { rate, duration, operations } => {
            world.add_timed_fault_plan(error_layer(transient, *rate, operations), *duration)
        }
        Fault::AuthErrors { rate, duration, operations } => {
            world.add_timed_fault_plan(error_layer(auth, *rate, operations), *duration)
        }
        Fault::Conflicts { rate, duration, operations } => {
            world.add_timed_fault_plan(error_layer(conflict, *rate, operations), *duration)
        }
        Fault::LostResponses { rate, duration } => world
            .add_timed_fault_plan(FaultPlan { lost_response_rate: *rate, ..FaultPlan::none() }, *duration),
        Fault::Latency { max, duration } => world.add_timed_fault_plan(
            FaultPlan { latency: Some(LatencyRange { min: Duration::ZERO, max: *max }), ..FaultPlan::none() },
            *duration,
        ),
        Fault::ParallelAllocations { rate, duration } => world.add_timed_fault_plan(
            FaultPlan { parallel_allocation_rate: *rate, ..FaultPlan::none() },
            *duration,
        ),
        Fault::ProvisioningFailures { rate, duration } => world.add_timed_fault_plan(
            FaultPlan { provisioning_failure_rate: *rate, ..FaultPlan::none() },
            *duration,
        ),
        Fault::StuckProvisioning { rate, duration } => world.add_timed_fault_plan(
            FaultPlan { stuck_provisioning_rate: *rate, ..FaultPlan::none() },
            *duration,
        ),
        Fault::StaleMetalReads { lag, duration } => {
            world.add_timed_fault_plan(FaultPlan { stale_read_lag: *lag, ..FaultPlan::none() }, *duration)
        }
        Fault::LateWrites { rate, duration } => {
            world.add_timed_fault_plan(FaultPlan { late_write_rate: *rate, ..FaultPlan::none() }, *duration)
        }
        Fault::StolenMachines { rate, duration } => world
            .add_timed_fault_plan(FaultPlan { stolen_machine_rate: *rate, ..FaultPlan::none() }, *duration),
        Fault::FirewallSilent { cluster } => silence_firewall(world, cluster)?,
        Fault::MachineDeath { cluster, count } => {
            let killed = world.kill_machines(cluster, *count)?;
            if killed < *count {
                return Err(format!(
                    "only {killed} of {count} machines of {cluster} could be killed (not enough machines with a providerID)"
                ));
            }
        }
        Fault::ExternalFree { cluster, count } => {
            let freed = world.free_machines_externally(cluster, *count)?;
            if freed < *count {
                return Err(format!(
                    "only {freed} of {count} machines of {cluster} could be freed (not enough machines with a providerID)"
                ));
            }
        }
        Fault::OperatorCrash { count, within } => world.schedule_operator_crashes(*count, *within),
        Fault::StaleReads { duration } => {
            let end = until(duration);
            world.faults.stale_reads_until = Some(world.faults.stale_reads_until.map_or(end, |t| t.max(end)));
        }
        Fault::SecondReplica { duration } => {
            let end = until(duration);
            world.faults.second_replica_until =
                Some(world.faults.second_replica_until.map_or(end, |t| t.max(end)));
        }
        Fault::LostStatusWrites { rate, duration } => {
            world.faults.lost_status_writes = Some((*rate, until(duration)));
        }
        Fault::Capacity { partition, size, available, duration } => {
            world.add_timed_capacity(partition, size, *available, *duration)
        }
    }
    Ok(())
}

/// `firewall_silent`: the machine behind the cluster's MetalStackFirewall goes silent for
/// ever, as `machine_death` does to a machine.
fn silence_firewall(world: &mut World, cluster: &str) -> Result<(), String> {
    let (namespace, store) =
        world.store_of(cluster).ok_or_else(|| format!("there is no cluster {cluster:?}"))?;
    let name = store
        .get::<MetalStackCluster>(&namespace, cluster)
        .and_then(|mc| mc.status.as_ref())
        .and_then(|status| status.firewall_name.clone())
        .ok_or_else(|| format!("cluster {cluster} has no MetalStackFirewall yet"))?;
    let machine_id = store
        .get::<MetalStackFirewall>(&namespace, &name)
        .and_then(|firewall| firewall.spec.provider_id.as_deref())
        .and_then(|provider_id| ProviderId::parse(provider_id).ok())
        .map(|provider_id| provider_id.machine_id().to_string())
        .ok_or_else(|| format!("MetalStackFirewall {name} of {cluster} has no providerID yet"))?;
    world.sim.kill_machine(&machine_id);
    world.note(&format!("firewall {machine_id} of {cluster} goes silent"));
    Ok(())
}

fn check_assertion(world: &World, state: &RunState, assertion: &Assertion) -> Result<(), String> {
    let cluster = assertion.cluster.as_str();
    let (namespace, store) =
        world.store_of(cluster).ok_or_else(|| format!("there is no cluster {cluster:?}"))?;
    let key = format!("{namespace}.{cluster}");
    let tag = tags::tag(tags::CLUSTER_ID, &key);
    let allocated: Vec<_> = world
        .sim
        .machines()
        .into_iter()
        .filter(|m| m.allocation.is_some() && m.tags.contains(&tag))
        .collect();
    let role = |m: &capms_core::metal::Machine| m.allocation.as_ref().map(|a| a.role);
    let mut wrong = Vec::new();
    let mut count = |what: &str, expected: Option<usize>, actual: usize| {
        if let Some(expected) = expected.filter(|e| *e != actual) {
            wrong.push(format!("{what}: expected {expected}, found {actual}"));
        }
    };
    count(
        "machines",
        assertion.machines,
        allocated.iter().filter(|m| role(m) == Some(MachineRole::Machine)).count(),
    );
    count(
        "firewalls",
        assertion.firewalls,
        allocated.iter().filter(|m| role(m) == Some(MachineRole::Firewall)).count(),
    );
    count("ips", assertion.ips, world.sim.ips().iter().filter(|ip| ip.tags.contains(&tag)).count());
    count(
        "networks",
        assertion.networks,
        world.sim.networks().iter().filter(|n| n.labels.get(tags::CLUSTER_ID) == Some(&key)).count(),
    );
    if let Some(expected) = assertion.provisioned {
        let provisioned = store
            .get::<MetalStackCluster>(&namespace, cluster)
            .and_then(|mc| mc.status.as_ref())
            .and_then(|s| s.initialization.as_ref())
            .and_then(|i| i.provisioned)
            .unwrap_or(false);
        if provisioned != expected {
            wrong.push(format!("provisioned: expected {expected}, found {provisioned}"));
        }
    }
    if let Some(expected) = assertion.firewall_ready {
        wrong.extend(firewall_ready(world, store, &namespace, cluster, expected));
    }
    if let Some(expected) = assertion.paused {
        wrong.extend(paused(store, &namespace, cluster, expected));
    }
    if assertion.owner_chain == Some(true) {
        wrong.extend(owner_chain(store, &namespace, cluster));
    }
    if let Some(expected) = assertion.user_resources_kept {
        let networks: BTreeSet<String> = world.sim.networks().into_iter().map(|n| n.id).collect();
        let ips: BTreeSet<String> = world.sim.ips().into_iter().map(|ip| ip.address).collect();
        let gone: Vec<String> = state
            .networks
            .iter()
            .filter(|(_, id)| !networks.contains(*id))
            .map(|(name, id)| format!("network {name} ({id})"))
            .chain(
                state
                    .ips
                    .iter()
                    .filter(|(_, a)| !ips.contains(*a))
                    .map(|(name, a)| format!("IP {name} ({a})")),
            )
            .collect();
        if gone.is_empty() != expected {
            wrong.push(format!(
                "user_resources_kept: expected {expected}, but {}",
                if gone.is_empty() { "all exist".to_string() } else { format!("gone: {}", gone.join(", ")) }
            ));
        }
    }
    if wrong.is_empty() { Ok(()) } else { Err(format!("assertion failed: {}", wrong.join("; "))) }
}

fn firewall_ready(
    world: &World,
    store: &Store,
    namespace: &str,
    cluster: &str,
    expected: bool,
) -> Vec<String> {
    let name = format!("{cluster}-firewall");
    let Some(firewall) = store.get::<MetalStackFirewall>(namespace, &name) else {
        return vec![format!(
            "firewall_ready: expected {expected}, but MetalStackFirewall {name} does not exist"
        )];
    };
    let ready = firewall
        .status
        .as_ref()
        .is_some_and(|s| capms_core::api::conditions::is_true(&s.conditions, ConditionType::Ready.as_str()));
    if ready != expected {
        let reason = firewall
            .status
            .as_ref()
            .and_then(|s| get_condition(&s.conditions, ConditionType::Ready.as_str()))
            .map(|c| format!(" ({}: {})", c.reason, c.message))
            .unwrap_or_default();
        return vec![format!("firewall_ready: expected {expected}, found {ready}{reason}")];
    }
    if !ready {
        return Vec::new();
    }
    let machine_id = firewall.spec.provider_id.as_deref().and_then(|p| ProviderId::parse(p).ok());
    let Some(machine_id) = machine_id else {
        return vec![format!("MetalStackFirewall {name} is Ready without a providerID")];
    };
    let machine = world.sim.machines().into_iter().find(|m| m.id == machine_id.machine_id());
    match machine {
        Some(m) if m.allocation.is_some() && m.is_phoned_home() && m.liveliness == Liveliness::Alive => {
            Vec::new()
        }
        Some(m) => vec![format!(
            "MetalStackFirewall {name} is Ready but firewall {} is not an allocated, phoned-home, living machine",
            m.id
        )],
        None => vec![format!("MetalStackFirewall {name} is Ready but its machine does not exist")],
    }
}

fn cluster_objects<'a>(
    store: &'a Store,
    namespace: &str,
    cluster: &str,
) -> Vec<(String, &'a ObjectMeta, Vec<Condition>)> {
    let of_cluster = |meta: &ObjectMeta| {
        meta.namespace.as_deref() == Some(namespace)
            && (capi::label(meta, capi::CLUSTER_NAME_LABEL) == Some(cluster)
                || meta.name.as_deref() == Some(cluster))
    };
    let conditions = |c: Option<&Vec<Condition>>| c.cloned().unwrap_or_default();
    let mut objects = Vec::new();
    for mc in store.metal_clusters.values().filter(|o| of_cluster(&o.metadata)) {
        objects.push((
            "MetalStackCluster".to_string(),
            &mc.metadata,
            conditions(mc.status.as_ref().map(|s| &s.conditions)),
        ));
    }
    for mm in store.metal_machines.values().filter(|o| of_cluster(&o.metadata)) {
        objects.push((
            "MetalStackMachine".to_string(),
            &mm.metadata,
            conditions(mm.status.as_ref().map(|s| &s.conditions)),
        ));
    }
    for fw in store.firewalls.values().filter(|o| of_cluster(&o.metadata)) {
        objects.push((
            "MetalStackFirewall".to_string(),
            &fw.metadata,
            conditions(fw.status.as_ref().map(|s| &s.conditions)),
        ));
    }
    objects
}

fn paused(store: &Store, namespace: &str, cluster: &str, expected: bool) -> Vec<String> {
    let want = if expected { "True" } else { "False" };
    cluster_objects(store, namespace, cluster)
        .into_iter()
        .filter_map(|(kind, meta, conditions)| {
            let found = get_condition(&conditions, ConditionType::Paused.as_str()).map(|c| c.status.clone());
            (found.as_deref() != Some(want)).then(|| {
                format!(
                    "paused: expected Paused={want} on {kind} {}, found {}",
                    meta.name.clone().unwrap_or_default(),
                    found.unwrap_or_else(|| "no Paused condition".to_string())
                )
            })
        })
        .collect()
}

/// Every MetalStack object of the cluster reaches the Cluster through owner references.
fn owner_chain(store: &Store, namespace: &str, cluster: &str) -> Vec<String> {
    let metas: Vec<(&str, &ObjectMeta)> = store
        .clusters
        .values()
        .map(|o| ("Cluster", &o.metadata))
        .chain(store.machines.values().map(|o| ("Machine", &o.metadata)))
        .chain(store.metal_clusters.values().map(|o| ("MetalStackCluster", &o.metadata)))
        .chain(store.metal_machines.values().map(|o| ("MetalStackMachine", &o.metadata)))
        .chain(store.firewalls.values().map(|o| ("MetalStackFirewall", &o.metadata)))
        .collect();
    let by_uid: BTreeMap<String, (String, &ObjectMeta)> = metas
        .into_iter()
        .filter_map(|(kind, meta)| meta.uid.clone().map(|uid| (uid, (kind.to_string(), meta))))
        .collect();
    let root = store.get::<Cluster>(namespace, cluster).and_then(|c| c.metadata.uid.clone());
    let Some(root) = root else { return vec![format!("owner_chain: there is no Cluster {cluster}")] };
    let objects = cluster_objects(store, namespace, cluster);
    if objects.is_empty() {
        return vec![format!("owner_chain: cluster {cluster} has no MetalStack objects")];
    }
    let mut broken = Vec::new();
    for (kind, meta, _) in objects {
        let mut path = vec![format!("{kind} {}", meta.name.clone().unwrap_or_default())];
        let mut current = meta;
        let reached = loop {
            let Some(owner) = current.owner_references.as_ref().and_then(|refs| refs.first()) else {
                break false;
            };
            if owner.uid == root {
                break true;
            }
            let Some((owner_kind, owner_meta)) = by_uid.get(&owner.uid) else {
                path.push(format!("{} {} (missing)", owner.kind, owner.name));
                break false;
            };
            path.push(format!("{owner_kind} {}", owner_meta.name.clone().unwrap_or_default()));
            if path.len() > 8 {
                break false;
            }
            current = owner_meta;
        };
        if !reached {
            broken.push(format!("owner_chain: {} does not lead to Cluster {cluster}", path.join(" -> ")));
        }
    }
    broken
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reproduce_command_is_one_line() {
        assert_eq!(
            reproduce_command("sim-scenarios/scenarios/x.yaml", 7),
            "cargo run -p capms-sim-scenarios --bin capms-sim -- run sim-scenarios/scenarios/x.yaml --seed 7"
        );
    }

    #[test]
    fn timed_faults_end_by_themselves_and_heal_ends_everything() {
        let text = "name: faults end
steps:
  - fault: { api_outage: 5m }
  - fault: { latency: { max: 2s, for: 10m } }
  - fault: { capacity: { available: 1, for: 3m } }
  - fault: { stale_reads: { for: 1h } }
  - run_for: 6m
  - run_for: 5m
  - fault: { error_rate: { rate: 0.5, for: 1h, operations: [allocateMachine] } }
  - heal: {}
";
        let scenario = Scenario::parse("faults.yaml", text).unwrap_or_else(|e| panic!("{e}"));
        let mut run = ScenarioRun::new(&scenario, None);
        let step = |run: &mut ScenarioRun, index: usize| {
            run.step(index, &scenario.steps[index], 0).unwrap_or_else(|e| panic!("step {index}: {e}"))
        };
        for index in 0..4 {
            step(&mut run, index);
        }
        let plan = run.world.sim.fault_plan();
        assert_eq!(plan.error_rates.transient, 1.0);
        assert_eq!(plan.latency.map(|l| l.max), Some(Duration::from_secs(2)));
        step(&mut run, 4);
        let plan = run.world.sim.fault_plan();
        assert_eq!(plan.error_rates.transient, 0.0, "the outage ended after 5m");
        assert!(plan.latency.is_some(), "the latency lasts 10m");
        step(&mut run, 5);
        assert_eq!(run.world.sim.fault_plan(), FaultPlan::none(), "every timed fault ended");
        assert!(run.world.faults.stale_reads_until.is_some());
        step(&mut run, 6);
        let plan = run.world.sim.fault_plan();
        assert_eq!(plan.rates_for(Operation::AllocateMachine).transient, 0.5);
        assert_eq!(plan.rates_for(Operation::FindMachines).transient, 0.0);
        step(&mut run, 7);
        assert_eq!(run.world.sim.fault_plan(), FaultPlan::none());
        assert!(run.world.faults.stale_reads_until.is_none());
    }

    #[test]
    fn run_until_reports_the_step_and_what_is_pending() {
        let text = "name: too little time\nsteps:\n  - create_cluster: { name: slow, workers: 1 }\n  - run_until: { ready: slow, within: 1m }\n";
        let scenario = Scenario::parse("slow.yaml", text).unwrap_or_else(|e| panic!("{e}"));
        let report = run_scenario(&scenario, Some(3));
        let failure = report.failure.clone().unwrap_or_else(|| panic!("passed: {report}"));
        assert_eq!(failure.step, Some(2));
        assert_eq!(failure.line, 4);
        assert!(
            failure.reason.contains("not ready") || failure.reason.contains("not provisioned"),
            "{report}"
        );
        let text = report.to_string();
        assert!(text.contains("seed: 3"), "{text}");
        assert!(text.contains("-- run slow.yaml --seed 3"), "{text}");
    }
}

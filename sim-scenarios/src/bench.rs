//! `capms-sim bench`: capms's refresh policy against the Go provider's, measured in one run.
//!
//! Each run is a world (datacenter, management cluster, CAPI, capms-manager) in which
//! `clusters` clusters of 3 control-plane and 3 worker machines are created together, run until
//! every machine is Ready, deleted and run until gone. Every run is played twice from the same
//! seed: once with capms's [`RefreshPolicy`] (one find per cluster shared by its machines,
//! polling often only near `Phoned Home`) and once with the baseline that GETs each machine
//! every 30 s, as the Go provider does. The report puts the two side by side:
//!
//! - cluster and machine lifecycles per second of the world simulation (wall time; the only
//!   figure that is not a function of the seed),
//! - metal-api calls per machine over create → ready → delete, and by operation,
//! - metal-api read calls until every machine is ready,
//! - time from a machine's `Phoned Home` to its Ready condition (mean, max),
//! - virtual time from create to all ready,
//! - machines ready, leaks and safety violations (which must be all, none and none).
//!
//! The simulation never reads the wall clock: [`run`] takes a clock as a function, and only
//! [`cli`], the command-line report, passes it the real one.

use crate::capi::ClusterPlan;
use crate::demo;
use crate::operator::OperatorConfig;
use crate::world::{Until, World};
use capms_backend_sim::{MINI_LAB_PARTITION, PartitionSpec, ProvisioningTimes, SimBuilder};
use capms_core::api::conditions::{get_condition, is_true};
use capms_core::metal::ProvisioningEventKind;
use capms_core::reconcile::RefreshPolicy;
use capms_core::{Operation, ProviderId};
use std::collections::BTreeMap;
use std::fmt;
use std::process::ExitCode;
use std::time::Duration;

/// Control-plane machines per cluster.
pub const CONTROL_PLANE: usize = 3;
/// Worker machines per cluster.
pub const WORKERS: usize = 3;
/// From allocation to `Phoned Home` (the datacenter jitters it per machine).
pub const PROVISIONING: Duration = Duration::from_secs(300);
/// The most clusters one world holds: mini-lab's tenant super network (a /16 carved into
/// /22s) has room for 64 node networks.
pub const CLUSTERS_MAX: usize = 60;
/// The Go provider's polling interval: the baseline GETs each machine this often.
pub const BASELINE_INTERVAL: Duration = Duration::from_secs(30);

/// What to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BenchOptions {
    /// Clusters created together in each world.
    pub clusters: usize,
    /// Worlds per policy; run `i` uses seed `seed + i`.
    pub runs: u64,
    /// The first seed.
    pub seed: u64,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions { clusters: 4, runs: 10, seed: 0 }
    }
}

impl BenchOptions {
    /// The command line that reproduces these options.
    pub fn command(&self) -> String {
        format!(
            "cargo run --release -p capms-sim-scenarios --bin capms-sim -- bench --clusters {} --runs {} --seed {}",
            self.clusters, self.runs, self.seed
        )
    }

    fn machines_per_world(&self) -> usize {
        self.clusters * (CONTROL_PLANE + WORKERS)
    }
}

/// A refresh policy under test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    pub name: &'static str,
    pub description: &'static str,
    pub refresh: RefreshPolicy,
}

/// capms's policy and the baseline, in the report's column order.
pub fn policies() -> [Policy; 2] {
    [
        Policy {
            name: "capms",
            description: "one find per cluster shared by its machines, polls often only near Phoned Home",
            refresh: RefreshPolicy::default(),
        },
        Policy {
            name: "baseline",
            description: "GET per machine every 30 s until ready (the Go provider)",
            refresh: RefreshPolicy::PerMachine { interval: BASELINE_INTERVAL },
        },
    ]
}

/// The figures of one world: `clusters` clusters created, ready and deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorldFigures {
    pub clusters: u64,
    /// Machines planned (control plane and workers of every cluster).
    pub machines: u64,
    /// Machines that had phoned home and were Ready when the last cluster became ready.
    pub ready_machines: u64,
    /// metal-api read calls from create until every cluster was ready.
    pub reads_until_ready: u64,
    /// metal-api calls from create until every cluster was gone, by operation.
    pub calls: BTreeMap<Operation, u64>,
    /// Per ready machine: its Ready condition's transition time minus its `Phoned Home` time.
    pub ready_delays: Vec<Duration>,
    /// Virtual time from create until every cluster was ready.
    pub time_to_ready: Duration,
    /// Resources of the clusters left in the datacenter after they were gone.
    pub leaks: Vec<String>,
    /// Safety checks that failed.
    pub violations: Vec<String>,
}

/// A world for `options.clusters` clusters: mini-lab's partition with a machine per planned
/// machine, 5 minutes from allocation to `Phoned Home`, no event log (a benchmark reads none).
pub fn datacenter(seed: u64, options: &BenchOptions) -> SimBuilder {
    SimBuilder::new()
        .seed(seed)
        .partition(PartitionSpec::mini_lab(MINI_LAB_PARTITION, options.machines_per_world()))
        .provisioning(ProvisioningTimes { provisioning: PROVISIONING, ..ProvisioningTimes::default() })
        .keep_log(false)
}

fn cluster_name(index: usize) -> String {
    format!("bench-{index}")
}

fn plan(index: usize) -> ClusterPlan {
    demo::plan(&cluster_name(index), CONTROL_PLANE, WORKERS, false)
}

fn reads(calls: &BTreeMap<Operation, u64>) -> u64 {
    calls.iter().filter(|(op, _)| op.is_read()).map(|(_, n)| n).sum()
}

/// Per ready machine: Ready's transition time minus the time of its `Phoned Home` event.
fn ready_delays(world: &World) -> Vec<Duration> {
    let machines = world.sim.machines();
    world
        .managements
        .iter()
        .flat_map(|management| management.store.metal_machines.values())
        .filter_map(|mm| {
            let id = ProviderId::parse(mm.spec.provider_id.as_deref()?).ok()?;
            let machine = machines.iter().find(|m| m.id == id.machine_id())?;
            let phoned = machine.events.iter().find(|e| e.event == ProvisioningEventKind::PhonedHome)?.time;
            let conditions = &mm.status.as_ref()?.conditions;
            if !is_true(conditions, "Ready") {
                return None;
            }
            let ready = get_condition(conditions, "Ready")?.last_transition_time.0;
            Some(ready.duration_since(phoned).unsigned_abs())
        })
        .collect()
}

/// Plays one world with `refresh`: creates the clusters, runs until all are ready, deletes
/// them and runs until all are gone. A cluster that does not get ready within two hours of
/// virtual time, or gone within one, is an error.
pub fn run_world(seed: u64, refresh: RefreshPolicy, options: &BenchOptions) -> Result<WorldFigures, String> {
    let config = OperatorConfig { refresh, ..OperatorConfig::default() };
    let mut world = World::new(seed, datacenter(seed, options), config);
    let start = world.now();
    for index in 0..options.clusters {
        world.create_cluster(plan(index))?;
    }
    for index in 0..options.clusters {
        world.run_until(&cluster_name(index), Until::Ready, Duration::from_secs(7200))?;
    }
    let time_to_ready = world.now().duration_since(start).unsigned_abs();
    let ready_delays = ready_delays(&world);
    let reads_until_ready = reads(&world.sim.calls());
    for index in 0..options.clusters {
        world.delete_cluster(&cluster_name(index))?;
    }
    for index in 0..options.clusters {
        world.run_until(&cluster_name(index), Until::Gone, Duration::from_secs(3600))?;
    }
    let calls = world.sim.calls();
    // Let the datacenter finish what it does on its own after a free (IP release, reclaim).
    world.run_for(Duration::from_secs(60))?;
    let leaks = (0..options.clusters).flat_map(|index| world.leaks(&cluster_name(index))).collect();
    Ok(WorldFigures {
        clusters: options.clusters as u64,
        machines: options.machines_per_world() as u64,
        ready_machines: ready_delays.len() as u64,
        reads_until_ready,
        calls,
        ready_delays,
        time_to_ready,
        leaks,
        violations: world.checker.violations.clone(),
    })
}

/// The figures of one policy over every run.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyFigures {
    pub policy: Policy,
    pub runs: u64,
    pub clusters: u64,
    pub machines: u64,
    pub ready_machines: u64,
    pub reads_until_ready: u64,
    pub calls: BTreeMap<Operation, u64>,
    pub ready_delay_total: Duration,
    pub ready_delay_max: Duration,
    pub time_to_ready_total: Duration,
    pub time_to_ready_max: Duration,
    /// Wall time spent in the worlds of this policy.
    pub wall: Duration,
    pub leaks: Vec<String>,
    pub violations: Vec<String>,
}

impl PolicyFigures {
    fn new(policy: Policy) -> Self {
        PolicyFigures {
            policy,
            runs: 0,
            clusters: 0,
            machines: 0,
            ready_machines: 0,
            reads_until_ready: 0,
            calls: BTreeMap::new(),
            ready_delay_total: Duration::ZERO,
            ready_delay_max: Duration::ZERO,
            time_to_ready_total: Duration::ZERO,
            time_to_ready_max: Duration::ZERO,
            wall: Duration::ZERO,
            leaks: Vec::new(),
            violations: Vec::new(),
        }
    }

    fn add(&mut self, world: WorldFigures, wall: Duration) {
        self.runs += 1;
        self.clusters += world.clusters;
        self.machines += world.machines;
        self.ready_machines += world.ready_machines;
        self.reads_until_ready += world.reads_until_ready;
        for (operation, count) in world.calls {
            *self.calls.entry(operation).or_default() += count;
        }
        self.ready_delay_total += world.ready_delays.iter().sum::<Duration>();
        self.ready_delay_max =
            self.ready_delay_max.max(world.ready_delays.iter().max().copied().unwrap_or_default());
        self.time_to_ready_total += world.time_to_ready;
        self.time_to_ready_max = self.time_to_ready_max.max(world.time_to_ready);
        self.wall += wall;
        self.leaks.extend(world.leaks);
        self.violations.extend(world.violations);
    }

    /// Cluster lifecycles (create → ready → delete) per second of wall time.
    pub fn cluster_lifecycles_per_second(&self) -> f64 {
        self.clusters as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    /// Machine lifecycles (create → ready → delete) per second of wall time.
    pub fn machine_lifecycles_per_second(&self) -> f64 {
        self.machines as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    /// metal-api calls (reads and writes) per machine over create → ready → delete.
    pub fn calls_per_machine(&self) -> f64 {
        self.calls.values().sum::<u64>() as f64 / self.machines.max(1) as f64
    }

    /// metal-api calls of one operation per machine over create → ready → delete.
    pub fn operation_per_machine(&self, operation: Operation) -> f64 {
        self.calls.get(&operation).copied().unwrap_or_default() as f64 / self.machines.max(1) as f64
    }

    /// metal-api read calls from create until every machine was ready, per cluster.
    pub fn reads_until_ready_per_cluster(&self) -> f64 {
        self.reads_until_ready as f64 / self.clusters.max(1) as f64
    }

    /// Mean time from `Phoned Home` to Ready over the ready machines.
    pub fn ready_delay_mean(&self) -> Duration {
        self.ready_delay_total.div_f64(self.ready_machines.max(1) as f64)
    }

    /// Mean virtual time from create until every cluster of a world was ready.
    pub fn time_to_ready_mean(&self) -> Duration {
        self.time_to_ready_total.div_f64(self.runs.max(1) as f64)
    }

    /// Every planned machine became ready, nothing leaked, no safety check failed.
    pub fn passed(&self) -> bool {
        self.runs > 0
            && self.ready_machines == self.machines
            && self.leaks.is_empty()
            && self.violations.is_empty()
    }
}

/// The whole benchmark: capms and the baseline over the same seeds.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub options: BenchOptions,
    pub capms: PolicyFigures,
    pub baseline: PolicyFigures,
}

impl Report {
    /// Both policies passed (see [`PolicyFigures::passed`]).
    pub fn passed(&self) -> bool {
        self.capms.passed() && self.baseline.passed()
    }
}

/// Runs the benchmark. `clock` returns the wall time elapsed since any fixed moment (only
/// differences are used); `progress` receives a line per world.
pub fn run(
    options: &BenchOptions,
    clock: &mut dyn FnMut() -> Duration,
    progress: &mut dyn FnMut(&str),
) -> Result<Report, String> {
    if options.clusters == 0 || options.clusters > CLUSTERS_MAX {
        return Err(format!("--clusters must be 1 to {CLUSTERS_MAX}, not {}", options.clusters));
    }
    if options.runs == 0 {
        return Err("--runs must be at least 1".to_string());
    }
    let [ours, theirs] = policies();
    let mut capms = PolicyFigures::new(ours);
    let mut baseline = PolicyFigures::new(theirs);
    for run in 0..options.runs {
        let seed = options.seed.wrapping_add(run);
        // The policies take turns, so that a slower stretch of the machine hits both alike.
        for figures in [&mut capms, &mut baseline] {
            let name = figures.policy.name;
            let started = clock();
            let world = run_world(seed, figures.policy.refresh, options)
                .map_err(|error| format!("{name}, seed {seed}: {error}"))?;
            let wall = clock().saturating_sub(started);
            progress(&format!(
                "run {}/{} seed {seed} {name:<8}: {} clusters ready after {} s of virtual time, \
                 {} metal-api calls, gone; {:.2} s wall",
                run + 1,
                options.runs,
                world.clusters,
                world.time_to_ready.as_secs(),
                world.calls.values().sum::<u64>(),
                wall.as_secs_f64()
            ));
            figures.add(world, wall);
        }
    }
    Ok(Report { options: *options, capms, baseline })
}

fn ratio(ours: f64, theirs: f64) -> String {
    if theirs == 0.0 { "-".to_string() } else { format!("{:.2}", ours / theirs) }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let options = &self.options;
        let (ours, theirs) = (&self.capms, &self.baseline);
        writeln!(
            f,
            "capms-sim bench: {} runs (seeds {}..={}) x {} clusters of {}+{} machines, provisioning {} s, no firewall",
            options.runs,
            options.seed,
            options.seed.wrapping_add(options.runs.saturating_sub(1)),
            options.clusters,
            CONTROL_PLANE,
            WORKERS,
            PROVISIONING.as_secs()
        )?;
        for figures in [ours, theirs] {
            writeln!(f, "  {:<9} {}", figures.policy.name, figures.policy.description)?;
        }
        writeln!(f)?;
        let row = |f: &mut fmt::Formatter<'_>, what: &str, a: String, b: String, r: String| {
            writeln!(f, "{}", format!("{what:<52} {a:>10} {b:>10} {r:>15}").trim_end())
        };
        row(f, "", "capms".into(), "baseline".into(), "capms/baseline".into())?;
        let number = |f: &mut fmt::Formatter<'_>, what: &str, a: f64, b: f64, digits: usize| {
            row(f, what, format!("{a:.digits$}"), format!("{b:.digits$}"), ratio(a, b))
        };
        number(
            f,
            "cluster lifecycles per second (wall)",
            ours.cluster_lifecycles_per_second(),
            theirs.cluster_lifecycles_per_second(),
            1,
        )?;
        number(
            f,
            "machine lifecycles per second (wall)",
            ours.machine_lifecycles_per_second(),
            theirs.machine_lifecycles_per_second(),
            0,
        )?;
        number(f, "wall time, s", ours.wall.as_secs_f64(), theirs.wall.as_secs_f64(), 2)?;
        number(
            f,
            "metal-api calls per machine, create→ready→delete",
            ours.calls_per_machine(),
            theirs.calls_per_machine(),
            1,
        )?;
        number(
            f,
            "metal-api read calls until ready, per cluster",
            ours.reads_until_ready_per_cluster(),
            theirs.reads_until_ready_per_cluster(),
            1,
        )?;
        number(
            f,
            "Phoned Home → Ready, mean, s",
            ours.ready_delay_mean().as_secs_f64(),
            theirs.ready_delay_mean().as_secs_f64(),
            1,
        )?;
        number(
            f,
            "Phoned Home → Ready, max, s",
            ours.ready_delay_max.as_secs_f64(),
            theirs.ready_delay_max.as_secs_f64(),
            1,
        )?;
        number(
            f,
            "create → all ready, mean virtual time, s",
            ours.time_to_ready_mean().as_secs_f64(),
            theirs.time_to_ready_mean().as_secs_f64(),
            0,
        )?;
        let ready = |p: &PolicyFigures| format!("{}/{}", p.ready_machines, p.machines);
        row(f, "machines ready", ready(ours), ready(theirs), String::new())?;
        row(f, "leaks", ours.leaks.len().to_string(), theirs.leaks.len().to_string(), String::new())?;
        row(
            f,
            "safety violations",
            ours.violations.len().to_string(),
            theirs.violations.len().to_string(),
            String::new(),
        )?;
        writeln!(f)?;
        writeln!(f, "metal-api calls per machine by operation, create→ready→delete:")?;
        let operations: Vec<Operation> = ours.calls.keys().chain(theirs.calls.keys()).copied().collect();
        let mut seen = Vec::new();
        for operation in operations {
            if seen.contains(&operation) {
                continue;
            }
            seen.push(operation);
            number(
                f,
                &format!("  {}", operation.operation_id()),
                ours.operation_per_machine(operation),
                theirs.operation_per_machine(operation),
                2,
            )?;
        }
        Ok(())
    }
}

/// `capms-sim bench`: runs the benchmark with progress on stderr and prints the report on
/// stdout. Exits non-zero when a world failed, a machine did not become ready, something
/// leaked or a safety check failed.
// A benchmark measures wall time by definition; the simulation itself never reads it.
#[allow(clippy::disallowed_methods, clippy::print_stdout, reason = "a command-line report of finished runs")]
pub fn cli(options: BenchOptions) -> ExitCode {
    let started = std::time::Instant::now();
    let mut clock = || started.elapsed();
    let mut progress = |line: &str| eprintln!("{line}");
    let report = match run(&options, &mut clock, &mut progress) {
        Ok(report) => report,
        Err(error) => {
            eprintln!("bench failed: {error}");
            eprintln!("reproduce with: {}", options.command());
            return ExitCode::FAILURE;
        }
    };
    println!("{report}");
    if report.passed() {
        ExitCode::SUCCESS
    } else {
        for figures in [&report.capms, &report.baseline] {
            for leak in &figures.leaks {
                eprintln!("{} leaked: {leak}", figures.policy.name);
            }
            for violation in &figures.violations {
                eprintln!("{} violated: {violation}", figures.policy.name);
            }
        }
        eprintln!("reproduce with: {}", options.command());
        ExitCode::FAILURE
    }
}

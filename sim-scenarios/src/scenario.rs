//! Scenario files: the YAML format users write bug reports in, and the runner that plays them
//! in a [`World`](crate::World).
//!
//! A scenario names a datacenter (every default mirrors mini-lab), a list of steps (create,
//! scale, roll, pause, move and delete clusters; run for a while or until something holds;
//! inject and heal faults; assert what the datacenter holds) and what must hold at the end.
//! `scenarios/README.md` documents every key and verb; [`Scenario::parse`] rejects anything
//! else with the file, line, column and a suggestion, and [`run_scenario`] plays a scenario
//! deterministically (same file and seed, same trace) and says which step failed and why.
//!
//! ```
//! use capms_sim_scenarios::scenario::{Scenario, run_scenario};
//! let text = "
//! name: a small cluster comes up and goes away
//! datacenter: { provisioning: 2m }
//! steps:
//!   - create_cluster: { name: tiny, control_plane: 1, workers: 1 }
//!   - run_until: { ready: tiny, within: 30m }
//!   - delete_cluster: { name: tiny }
//!   - run_until: { gone: tiny, within: 30m }
//! ";
//! let scenario = Scenario::parse("tiny.yaml", text).unwrap();
//! let report = run_scenario(&scenario, None);
//! assert!(report.passed(), "{report}");
//! ```

mod run;
mod yaml;

pub use run::{Failure, ScenarioReport, ScenarioRun, reproduce_command, run_scenario, run_scenario_with};
pub use yaml::{format_duration, parse_duration};

use crate::world::Until;
use capms_backend_sim::{
    MINI_LAB_FIREWALL_IMAGE, MINI_LAB_IMAGES, MINI_LAB_PARTITION, MINI_LAB_PROJECT, MINI_LAB_SIZE,
    PartitionSpec, ProvisioningTimes, SimBuilder,
};
use capms_core::Operation;
use capms_core::metal::ImageFeature;
use std::fmt;
use std::path::Path;
use std::time::Duration;
use yaml::{Node, Parsed, Problem, Value, did_you_mean, unknown};

/// The seed of a scenario without `seed:` and without `--seed`.
pub const DEFAULT_SEED: u64 = 1;
/// mini-lab's machine count in its one partition (the default datacenter).
pub const MINI_LAB_MACHINES: usize = 8;

/// The verbs a step may use.
pub const VERBS: [&str; 15] = [
    "create_cluster",
    "delete_cluster",
    "scale_workers",
    "scale_control_plane",
    "roll_workers",
    "pause_cluster",
    "unpause_cluster",
    "move_cluster",
    "run_for",
    "run_until",
    "heal",
    "fault",
    "allocate_network",
    "allocate_ip",
    "assert",
];

/// The faults a `fault:` step may inject.
pub const FAULTS: [&str; 20] = [
    "api_outage",
    "error_rate",
    "lost_responses",
    "latency",
    "machine_death",
    "external_free",
    "operator_crash",
    "stale_reads",
    "capacity",
    "lost_status_writes",
    "second_replica",
    "parallel_allocations",
    "provisioning_failures",
    "auth_errors",
    "conflicts",
    "firewall_silent",
    "stuck_provisioning",
    "stale_metal_reads",
    "late_writes",
    "stolen_machines",
];

const TOP_LEVEL: [&str; 6] = ["name", "description", "seed", "datacenter", "steps", "expect"];

/// A parsed scenario file.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// The file as the user named it (used in messages and the reproduce command).
    pub file: String,
    pub name: String,
    pub description: Option<String>,
    pub seed: Option<u64>,
    pub datacenter: DatacenterSpec,
    pub steps: Vec<Step>,
    pub expect: Expect,
}

/// The simulated datacenter, defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatacenterSpec {
    pub partitions: Vec<PartitionPlan>,
    /// Image ids; an id containing `firewall` is a firewall image, the others machine images.
    pub images: Vec<String>,
    pub times: ProvisioningTimes,
}

/// One partition: its id and machines per size, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionPlan {
    pub id: String,
    pub sizes: Vec<(String, usize)>,
    pub racks: usize,
}

impl DatacenterSpec {
    /// mini-lab: partition `mini-lab` with 8 machines of `v1-small-x86`, its images, and 5
    /// minutes from allocate to Phoned Home.
    pub fn mini_lab() -> Self {
        let mut images: Vec<String> = MINI_LAB_IMAGES.iter().map(|i| i.to_string()).collect();
        images.push(MINI_LAB_FIREWALL_IMAGE.to_string());
        DatacenterSpec {
            partitions: vec![PartitionPlan {
                id: MINI_LAB_PARTITION.to_string(),
                sizes: vec![(MINI_LAB_SIZE.to_string(), MINI_LAB_MACHINES)],
                racks: 2,
            }],
            images,
            times: ProvisioningTimes::default(),
        }
    }

    /// The datacenter's builder, seeded.
    pub fn builder(&self, seed: u64) -> SimBuilder {
        let mut builder = SimBuilder::new().seed(seed).keep_log(true).provisioning(self.times);
        for partition in &self.partitions {
            let sizes: Vec<(&str, usize)> = partition.sizes.iter().map(|(s, n)| (s.as_str(), *n)).collect();
            let mut spec = PartitionSpec::mini_lab(&partition.id, 0).with_machines(&sizes);
            spec.racks = partition.racks;
            builder = builder.partition(spec);
        }
        let images: Vec<(&str, &[ImageFeature])> =
            self.images.iter().map(|id| (id.as_str(), image_features(id))).collect();
        builder.images(&images)
    }

    fn partition(&self, id: &str) -> Option<&PartitionPlan> {
        self.partitions.iter().find(|p| p.id == id)
    }

    /// Partition and size of machine `number` (from 1), numbered as the datacenter seeds
    /// them: partitions in file order, sizes in alphabetical order within a partition.
    fn machine(&self, number: usize) -> Option<(&str, &str)> {
        let mut seeded = self.partitions.iter().flat_map(|partition| {
            let mut sizes: Vec<&(String, usize)> = partition.sizes.iter().collect();
            sizes.sort();
            sizes.into_iter().flat_map(move |(size, count)| {
                std::iter::repeat_n((partition.id.as_str(), size.as_str()), *count)
            })
        });
        seeded.nth(number.checked_sub(1)?)
    }

    fn machine_count(&self) -> usize {
        self.partitions.iter().flat_map(|p| p.sizes.iter()).map(|(_, count)| count).sum()
    }

    fn machine_images(&self) -> Vec<&str> {
        self.images.iter().map(String::as_str).filter(|i| !is_firewall_image(i)).collect()
    }

    fn firewall_images(&self) -> Vec<&str> {
        self.images.iter().map(String::as_str).filter(|i| is_firewall_image(i)).collect()
    }
}

fn is_firewall_image(id: &str) -> bool {
    id.contains("firewall")
}

fn image_features(id: &str) -> &'static [ImageFeature] {
    if is_firewall_image(id) { &[ImageFeature::Firewall] } else { &[ImageFeature::Machine] }
}

/// One step of a scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub line: u64,
    pub column: u64,
    /// The step as written, in YAML flow style.
    pub text: String,
    pub action: Action,
}

/// What a step does.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    CreateCluster(ClusterSpec),
    DeleteCluster {
        name: String,
    },
    ScaleWorkers {
        cluster: String,
        to: usize,
    },
    ScaleControlPlane {
        cluster: String,
        to: usize,
    },
    RollWorkers {
        cluster: String,
        image: String,
    },
    PauseCluster {
        cluster: String,
    },
    UnpauseCluster {
        cluster: String,
    },
    MoveCluster {
        cluster: String,
    },
    RunFor(Duration),
    RunUntil {
        cluster: String,
        until: Until,
        within: Duration,
    },
    Heal,
    Fault(Fault),
    /// A node network created outside capms (the user's), remembered under `name`.
    AllocateNetwork {
        name: String,
        partition: String,
    },
    /// A static IP created outside capms (the user's) in the partition's internet network.
    AllocateIp {
        name: String,
        partition: String,
    },
    Assert(Assertion),
}

/// `create_cluster`, defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSpec {
    pub name: String,
    pub namespace: String,
    pub project: String,
    pub partition: String,
    pub size: String,
    pub control_plane: usize,
    pub workers: usize,
    pub image: String,
    /// The firewall image, when the cluster has a firewall.
    pub firewall: Option<String>,
    /// The name of an `allocate_network` step whose network the cluster uses.
    pub node_network: Option<String>,
    /// The name of an `allocate_ip` step whose IP the cluster uses.
    pub control_plane_ip: Option<String>,
    /// The MetalStackCluster carries `cluster.x-k8s.io/managed-by` (another system owns it).
    pub externally_managed: bool,
    /// Whether bootstrap Secrets carry the `value` key (false models a broken bootstrap
    /// provider, defect D14).
    pub bootstrap_value: bool,
    /// Datacenter machine ids the cluster's MetalStackMachines pin (`spec.machineID`), in
    /// the order new machines take them.
    pub pinned_machines: Vec<String>,
}

/// A fault to inject.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Every metal-api call fails with a transient error.
    ApiOutage {
        duration: Duration,
    },
    /// Calls fail with a transient error (500/503) with probability `rate`; only `operations`
    /// if any are named.
    ErrorRate {
        rate: f64,
        duration: Duration,
        operations: Vec<Operation>,
    },
    /// Calls fail with 403 (credentials rejected).
    AuthErrors {
        rate: f64,
        duration: Duration,
        operations: Vec<Operation>,
    },
    /// Calls fail with 409 (optimistic lock).
    Conflicts {
        rate: f64,
        duration: Duration,
        operations: Vec<Operation>,
    },
    /// Writes take effect but their answers are lost.
    LostResponses {
        rate: f64,
        duration: Duration,
    },
    Latency {
        max: Duration,
        duration: Duration,
    },
    MachineDeath {
        cluster: String,
        count: usize,
    },
    ExternalFree {
        cluster: String,
        count: usize,
    },
    OperatorCrash {
        count: usize,
        within: Duration,
    },
    StaleReads {
        duration: Duration,
    },
    Capacity {
        partition: String,
        size: String,
        available: usize,
        duration: Duration,
    },
    LostStatusWrites {
        rate: f64,
        duration: Duration,
    },
    SecondReplica {
        duration: Duration,
    },
    /// metal-api's "too many parallel machine allocations".
    ParallelAllocations {
        rate: f64,
        duration: Duration,
    },
    /// Allocated machines never phone home.
    ProvisioningFailures {
        rate: f64,
        duration: Duration,
    },
    /// The cluster's firewall machine goes silent for ever (the `machine_death` of it).
    FirewallSilent {
        cluster: String,
    },
    /// Allocated machines hang in PXE boot or installation, silently (no failure event).
    StuckProvisioning {
        rate: f64,
        duration: Duration,
    },
    /// metal-api's finds do not see writes younger than `lag`.
    StaleMetalReads {
        lag: Duration,
        duration: Duration,
    },
    /// Writes whose answers are lost take effect only after the client's timeout.
    LateWrites {
        rate: f64,
        duration: Duration,
    },
    /// Pinned machines (allocated by id) are allocated by someone else first.
    StolenMachines {
        rate: f64,
        duration: Duration,
    },
}

/// `assert`: what must hold right now.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Assertion {
    pub cluster: String,
    /// Allocated machines (not firewalls) in the datacenter tagged for the cluster.
    pub machines: Option<usize>,
    /// Allocated firewalls in the datacenter tagged for the cluster.
    pub firewalls: Option<usize>,
    /// Networks labelled for the cluster (capms-allocated node networks).
    pub networks: Option<usize>,
    /// IPs tagged for the cluster (capms-allocated control-plane IPs).
    pub ips: Option<usize>,
    /// Whether the MetalStackCluster is provisioned.
    pub provisioned: Option<bool>,
    /// Whether the MetalStackFirewall is Ready (and, if so, that its machine phoned home and
    /// is alive).
    pub firewall_ready: Option<bool>,
    /// Whether every MetalStack object of the cluster reports `Paused`.
    pub paused: Option<bool>,
    /// Every MetalStack object of the cluster reaches the Cluster through owner references.
    pub owner_chain: Option<bool>,
    /// Whether every user-provided resource named in the scenario still exists.
    pub user_resources_kept: Option<bool>,
}

/// What must hold at the end of the scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expect {
    /// `leaked: none`: nothing tagged for a deleted cluster is left in the datacenter.
    pub no_leaks: bool,
    /// At most this many objects ever had two machines allocated at the same moment.
    pub duplicate_allocations: u64,
    /// At most this many safety violations (checked after every step too).
    pub violations: u64,
}

impl Default for Expect {
    fn default() -> Self {
        Expect { no_leaks: true, duplicate_allocations: 0, violations: 0 }
    }
}

/// A scenario file that could not be read or is not a valid scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioError {
    pub file: String,
    /// 1-based; 0 when the problem has no place in the file (it could not be read).
    pub line: u64,
    pub column: u64,
    pub message: String,
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (0, _) => write!(f, "{}: {}", self.file, self.message),
            (line, 0) => write!(f, "{}:{line}: {}", self.file, self.message),
            (line, column) => write!(f, "{}:{line}:{column}: {}", self.file, self.message),
        }
    }
}

impl std::error::Error for ScenarioError {}

impl Scenario {
    /// Reads and parses a scenario file; messages name the path as given.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|error| ScenarioError {
            file: file.clone(),
            line: 0,
            column: 0,
            message: format!("cannot read the file: {error}"),
        })?;
        Scenario::parse(&file, &text)
    }

    /// Parses a scenario; `file` names it in messages and in the reproduce command.
    pub fn parse(file: &str, text: &str) -> Result<Scenario, ScenarioError> {
        parse_scenario(file, text).map_err(|problem| ScenarioError {
            file: file.to_string(),
            line: problem.line,
            column: problem.column,
            message: problem.message,
        })
    }
}

fn parse_scenario(file: &str, text: &str) -> Parsed<Scenario> {
    let root = yaml::parse(text)?;
    if root.value == Value::Null {
        return Err(Problem::at(
            &root,
            "the file is empty: a scenario needs at least \"name\" and \"steps\"",
        ));
    }
    let top = root.fields("the scenario", &TOP_LEVEL)?;
    let name = top.required("name")?.string("\"name\"")?;
    let description = top.get("description").map(|d| d.string("\"description\"")).transpose()?;
    let seed = top.get("seed").map(|s| s.count("\"seed\"")).transpose()?;
    let datacenter = match top.get("datacenter") {
        Some(node) => parse_datacenter(node)?,
        None => DatacenterSpec::mini_lab(),
    };
    let steps_node = top.required("steps")?;
    let items = steps_node.items("\"steps\"")?;
    if items.is_empty() {
        return Err(Problem::at(steps_node, "\"steps\" is empty: a scenario needs at least one step"));
    }
    let mut names = Names::default();
    let steps = items
        .iter()
        .enumerate()
        .map(|(index, item)| parse_step(index + 1, item, &datacenter, &mut names))
        .collect::<Parsed<Vec<Step>>>()?;
    let expect = top.get("expect").map(parse_expect).transpose()?.unwrap_or_default();
    Ok(Scenario { file: file.to_string(), name, description, seed, datacenter, steps, expect })
}

fn parse_datacenter(node: &Node) -> Parsed<DatacenterSpec> {
    const KEYS: [&str; 6] =
        ["partitions", "images", "provisioning", "reclaim", "ip_release", "jitter_percent"];
    let fields = node.fields("\"datacenter\"", &KEYS)?;
    let mut spec = DatacenterSpec::mini_lab();
    if let Some(partitions) = fields.get("partitions") {
        let items = partitions.items("\"partitions\"")?;
        if items.is_empty() {
            return Err(Problem::at(partitions, "\"partitions\" is empty: the datacenter needs a partition"));
        }
        spec.partitions = items.iter().map(parse_partition).collect::<Parsed<_>>()?;
        for (index, partition) in spec.partitions.iter().enumerate() {
            if spec.partitions[..index].iter().any(|p| p.id == partition.id) {
                return Err(Problem::at(
                    &items[index],
                    format!("partition {:?} is listed twice", partition.id),
                ));
            }
        }
    }
    if let Some(images) = fields.get("images") {
        let items = images.items("\"images\"")?;
        spec.images = items.iter().map(|i| i.string("an image id")).collect::<Parsed<_>>()?;
        if spec.machine_images().is_empty() {
            return Err(Problem::at(
                images,
                "\"images\" needs at least one machine image (an id without \"firewall\")",
            ));
        }
    }
    for (key, slot) in [
        ("provisioning", &mut spec.times.provisioning),
        ("reclaim", &mut spec.times.reclaim),
        ("ip_release", &mut spec.times.ip_release),
    ] {
        if let Some(value) = fields.get(key) {
            *slot = value.duration(&fields.name(key))?;
        }
    }
    if let Some(jitter) = fields.get("jitter_percent") {
        let percent = jitter.count(&fields.name("jitter_percent"))?;
        spec.times.jitter_percent = u8::try_from(percent)
            .ok()
            .filter(|p| *p <= 100)
            .ok_or_else(|| Problem::at(jitter, "\"jitter_percent\" must be from 0 to 100"))?;
    }
    Ok(spec)
}

fn parse_partition(node: &Node) -> Parsed<PartitionPlan> {
    let fields = node.fields("a partition", &["id", "sizes", "racks"])?;
    let id = fields.required("id")?.string("the partition's \"id\"")?;
    let sizes_node = fields.required("sizes")?;
    let sizes_fields = match &sizes_node.value {
        Value::Map(entries) => entries,
        _ => {
            return Err(Problem::at(
                sizes_node,
                format!(
                    "\"sizes\" must map size ids to machine counts, like {{ {MINI_LAB_SIZE}: 8 }}, found {}",
                    sizes_node.kind()
                ),
            ));
        }
    };
    if sizes_fields.is_empty() {
        return Err(Problem::at(sizes_node, "\"sizes\" is empty: a partition needs machines"));
    }
    let sizes = sizes_fields
        .iter()
        .map(|(key, count)| {
            Ok((key.name.clone(), count.usize(&format!("the machine count of size {:?}", key.name))?))
        })
        .collect::<Parsed<Vec<_>>>()?;
    let racks = fields.get("racks").map(|r| r.usize("\"racks\"")).transpose()?.unwrap_or(2);
    if racks == 0 {
        return Err(Problem::at(fields.required("racks")?, "\"racks\" must be at least 1"));
    }
    Ok(PartitionPlan { id, sizes, racks })
}

fn parse_expect(node: &Node) -> Parsed<Expect> {
    let fields = node.fields("\"expect\"", &["leaked", "duplicate_allocations", "violations"])?;
    let mut expect = Expect::default();
    if let Some(leaked) = fields.get("leaked") {
        expect.no_leaks = match &leaked.value {
            Value::Str(s) if s == "none" => true,
            Value::Str(s) if s == "ignored" => false,
            _ => {
                return Err(Problem::at(
                    leaked,
                    format!("\"leaked\" must be none (or ignored), found {}", leaked.kind()),
                ));
            }
        };
    }
    if let Some(count) = fields.get("duplicate_allocations") {
        expect.duplicate_allocations = count.count(&fields.name("duplicate_allocations"))?;
    }
    if let Some(count) = fields.get("violations") {
        expect.violations = count.count(&fields.name("violations"))?;
    }
    Ok(expect)
}

/// Names the steps define, in order, to check later steps' references.
#[derive(Debug, Default)]
struct Names {
    clusters: Vec<String>,
    /// Clusters created with a firewall.
    firewalls: Vec<String>,
    networks: Vec<String>,
    ips: Vec<String>,
}

impl Names {
    fn check(known: &[String], kind: &str, node: &Node, name: &str, defined_by: &str) -> Parsed<()> {
        if known.iter().any(|k| k == name) {
            return Ok(());
        }
        let known: Vec<&str> = known.iter().map(String::as_str).collect();
        let hint = match did_you_mean(name, &known) {
            Some(best) => format!(" (did you mean {best:?}?)"),
            None if known.is_empty() => format!("; no earlier step {defined_by}"),
            None => format!("; known so far: {}", known.join(", ")),
        };
        Err(Problem::at(node, format!("unknown {kind} {name:?}{hint}")))
    }

    fn cluster(&self, fields: &yaml::Fields<'_>, key: &str) -> Parsed<String> {
        let node = fields.required(key)?;
        let name = node.string(&fields.name(key))?;
        Names::check(&self.clusters, "cluster", node, &name, "creates one with create_cluster")?;
        Ok(name)
    }

    /// A cluster that was created with a firewall.
    fn cluster_with_firewall(&self, fields: &yaml::Fields<'_>, key: &str) -> Parsed<String> {
        let name = self.cluster(fields, key)?;
        if !self.firewalls.contains(&name) {
            let message = format!("cluster {name:?} has no firewall (create it with \"firewall: true\")");
            return Err(Problem::at(fields.required(key)?, message));
        }
        Ok(name)
    }
}

fn parse_step(index: usize, node: &Node, datacenter: &DatacenterSpec, names: &mut Names) -> Parsed<Step> {
    let Value::Map(entries) = &node.value else {
        let hint = match &node.value {
            Value::Str(verb) if VERBS.contains(&verb.as_str()) => format!(" (write \"{verb}: {{...}}\")"),
            _ => String::new(),
        };
        return Err(Problem::at(
            node,
            format!(
                "step {index} must be a mapping with one verb, like \"run_for: 5m\", found {}{hint}",
                node.kind()
            ),
        ));
    };
    let (verb, args) = match entries.as_slice() {
        [] => {
            return Err(Problem::at(
                node,
                format!("step {index} is empty: it needs a verb like \"run_for: 5m\""),
            ));
        }
        [(verb, args)] => (verb, args),
        [(first, _), (second, _), ..] => {
            let hint = if VERBS.contains(&second.name.as_str()) {
                format!("; put {:?} in a step of its own (a new \"- \" line)", second.name)
            } else {
                format!(
                    "; if {:?} is an argument of {:?}, indent it under {:?}",
                    second.name, first.name, first.name
                )
            };
            return Err(Problem::at_key(
                second,
                format!("step {index} has more than one verb ({:?} and {:?}){hint}", first.name, second.name),
            ));
        }
    };
    if !VERBS.contains(&verb.name.as_str()) {
        return Err(Problem::at_key(verb, unknown("verb", &verb.name, &format!("step {index}"), &VERBS)));
    }
    let what = format!("{:?}", verb.name);
    let action = match verb.name.as_str() {
        "create_cluster" => Action::CreateCluster(parse_create(args, datacenter, names)?),
        "delete_cluster" => {
            let fields = args.fields(&what, &["name"])?;
            Action::DeleteCluster { name: names.cluster(&fields, "name")? }
        }
        "scale_workers" | "scale_control_plane" => {
            let fields = args.fields(&what, &["cluster", "to"])?;
            let cluster = names.cluster(&fields, "cluster")?;
            let to_node = fields.required("to")?;
            let to = to_node.usize(&fields.name("to"))?;
            if verb.name == "scale_workers" {
                Action::ScaleWorkers { cluster, to }
            } else if to == 0 {
                return Err(Problem::at(to_node, "a control plane needs at least one machine"));
            } else {
                Action::ScaleControlPlane { cluster, to }
            }
        }
        "roll_workers" => {
            let fields = args.fields(&what, &["cluster", "image"])?;
            let cluster = names.cluster(&fields, "cluster")?;
            let image = machine_image(&fields, datacenter)?
                .ok_or_else(|| Problem::at(args, "\"roll_workers\" needs \"image\""))?;
            Action::RollWorkers { cluster, image }
        }
        "pause_cluster" | "unpause_cluster" | "move_cluster" => {
            let fields = args.fields(&what, &["cluster"])?;
            let cluster = names.cluster(&fields, "cluster")?;
            match verb.name.as_str() {
                "pause_cluster" => Action::PauseCluster { cluster },
                "unpause_cluster" => Action::UnpauseCluster { cluster },
                _ => Action::MoveCluster { cluster },
            }
        }
        "run_for" => Action::RunFor(args.duration("\"run_for\"")?),
        "run_until" => parse_run_until(args, names)?,
        "heal" => match &args.value {
            Value::Null => Action::Heal,
            Value::Map(entries) if entries.is_empty() => Action::Heal,
            _ => {
                return Err(Problem::at(
                    args,
                    format!("\"heal\" takes no arguments: write \"heal: {{}}\", found {}", args.kind()),
                ));
            }
        },
        "fault" => Action::Fault(parse_fault(args, datacenter, names)?),
        "allocate_network" | "allocate_ip" => {
            let fields = args.fields(&what, &["name", "partition"])?;
            let name_node = fields.required("name")?;
            let name = name_node.string(&fields.name("name"))?;
            let partition = partition(&fields, datacenter)?;
            let known = if verb.name == "allocate_network" { &mut names.networks } else { &mut names.ips };
            if known.contains(&name) {
                return Err(Problem::at(
                    name_node,
                    format!("{name:?} is allocated by an earlier step already"),
                ));
            }
            known.push(name.clone());
            if verb.name == "allocate_network" {
                Action::AllocateNetwork { name, partition }
            } else {
                Action::AllocateIp { name, partition }
            }
        }
        "assert" => Action::Assert(parse_assert(args, names)?),
        other => return Err(Problem::at_key(verb, format!("verb {other:?} is not implemented"))),
    };
    Ok(Step { line: node.line, column: node.column, text: format!("{}: {}", verb.name, args.flow()), action })
}

fn partition(fields: &yaml::Fields<'_>, datacenter: &DatacenterSpec) -> Parsed<String> {
    let Some(node) = fields.get("partition") else {
        return Ok(datacenter.partitions[0].id.clone());
    };
    let id = node.string(&fields.name("partition"))?;
    if datacenter.partition(&id).is_none() {
        let known: Vec<&str> = datacenter.partitions.iter().map(|p| p.id.as_str()).collect();
        return Err(Problem::at(node, unknown("partition", &id, "the datacenter", &known)));
    }
    Ok(id)
}

fn machine_image(fields: &yaml::Fields<'_>, datacenter: &DatacenterSpec) -> Parsed<Option<String>> {
    let Some(node) = fields.get("image") else { return Ok(None) };
    let image = node.string(&fields.name("image"))?;
    let machine_images = datacenter.machine_images();
    if !machine_images.contains(&image.as_str()) {
        if is_firewall_image(&image) {
            return Err(Problem::at(
                node,
                format!("{image:?} is a firewall image; machines need one of: {}", machine_images.join(", ")),
            ));
        }
        return Err(Problem::at(node, unknown("image", &image, "the datacenter", &machine_images)));
    }
    Ok(Some(image))
}

fn parse_create(args: &Node, datacenter: &DatacenterSpec, names: &mut Names) -> Parsed<ClusterSpec> {
    const KEYS: [&str; 15] = [
        "externally_managed",
        "pinned_machines",
        "bootstrap_value",
        "name",
        "namespace",
        "project",
        "partition",
        "control_plane",
        "workers",
        "size",
        "image",
        "firewall",
        "node_network",
        "control_plane_ip",
        "firewall_image",
    ];
    let fields = args.fields("\"create_cluster\"", &KEYS)?;
    let name_node = fields.required("name")?;
    let name = name_node.string(&fields.name("name"))?;
    if names.clusters.contains(&name) {
        return Err(Problem::at(
            name_node,
            format!("cluster {name:?} is created by an earlier step already"),
        ));
    }
    if !is_dns_label(&name) {
        return Err(Problem::at(
            name_node,
            format!("cluster name {name:?} must be lower-case letters, digits and '-'"),
        ));
    }
    let namespace = fields.get("namespace").map(|n| n.string(&fields.name("namespace"))).transpose()?;
    let project = fields.get("project").map(|n| n.string(&fields.name("project"))).transpose()?;
    let partition_id = partition(&fields, datacenter)?;
    let plan = datacenter.partition(&partition_id).ok_or_else(|| Problem::at(args, "no partition"))?;
    let size = match fields.get("size") {
        None => plan.sizes[0].0.clone(),
        Some(node) => {
            let size = node.string(&fields.name("size"))?;
            if !plan.sizes.iter().any(|(s, _)| *s == size) {
                let known: Vec<&str> = plan.sizes.iter().map(|(s, _)| s.as_str()).collect();
                return Err(Problem::at(
                    node,
                    unknown("size", &size, &format!("partition {partition_id:?}"), &known),
                ));
            }
            size
        }
    };
    let control_plane_node = fields.get("control_plane");
    let control_plane =
        control_plane_node.map(|n| n.usize(&fields.name("control_plane"))).transpose()?.unwrap_or(1);
    if control_plane == 0 {
        return Err(Problem::at(
            control_plane_node.unwrap_or(args),
            "a control plane needs at least one machine",
        ));
    }
    let workers = fields.get("workers").map(|n| n.usize(&fields.name("workers"))).transpose()?.unwrap_or(0);
    let image = match machine_image(&fields, datacenter)? {
        Some(image) => image,
        None => datacenter.machine_images()[0].to_string(),
    };
    let with_firewall =
        fields.get("firewall").map(|n| n.boolean(&fields.name("firewall"))).transpose()?.unwrap_or(false);
    let firewall = match (with_firewall, fields.get("firewall_image")) {
        (false, Some(node)) => {
            return Err(Problem::at(node, "\"firewall_image\" needs \"firewall: true\""));
        }
        (false, None) => None,
        (true, Some(node)) => {
            let image = node.string(&fields.name("firewall_image"))?;
            let known = datacenter.firewall_images();
            if !known.contains(&image.as_str()) {
                return Err(Problem::at(node, unknown("firewall image", &image, "the datacenter", &known)));
            }
            Some(image)
        }
        (true, None) => match datacenter.firewall_images().first() {
            Some(image) => Some(image.to_string()),
            None => {
                return Err(Problem::at(
                    fields.required("firewall")?,
                    "the datacenter has no firewall image (an image id containing \"firewall\")",
                ));
            }
        },
    };
    let node_network = match fields.get("node_network") {
        Some(node) => {
            let network = node.string(&fields.name("node_network"))?;
            Names::check(&names.networks, "network", node, &network, "allocates one with allocate_network")?;
            Some(network)
        }
        None => None,
    };
    let control_plane_ip = match fields.get("control_plane_ip") {
        Some(node) => {
            let ip = node.string(&fields.name("control_plane_ip"))?;
            Names::check(&names.ips, "IP", node, &ip, "allocates one with allocate_ip")?;
            Some(ip)
        }
        None => None,
    };
    let pinned_machines = pinned_machines(&fields, datacenter, &partition_id, &size)?;
    names.clusters.push(name.clone());
    if firewall.is_some() {
        names.firewalls.push(name.clone());
    }
    Ok(ClusterSpec {
        name,
        namespace: namespace.unwrap_or_else(|| "default".to_string()),
        project: project.unwrap_or_else(|| MINI_LAB_PROJECT.to_string()),
        partition: partition_id,
        size,
        control_plane,
        workers,
        image,
        firewall,
        node_network,
        control_plane_ip,
        externally_managed: flag(&fields, "externally_managed", false)?,
        bootstrap_value: flag(&fields, "bootstrap_value", true)?,
        pinned_machines,
    })
}

/// `pinned_machines`: datacenter machine numbers, each a machine of the cluster's partition
/// and size; answered as machine ids.
fn pinned_machines(
    fields: &yaml::Fields<'_>,
    datacenter: &DatacenterSpec,
    partition: &str,
    size: &str,
) -> Parsed<Vec<String>> {
    let Some(node) = fields.get("pinned_machines") else { return Ok(Vec::new()) };
    let mut ids = Vec::new();
    for item in node.items(&fields.name("pinned_machines"))? {
        let number = item.usize("a machine number")?;
        match datacenter.machine(number) {
            Some((p, s)) if p == partition && s == size => {}
            Some((p, s)) => {
                let message = format!(
                    "machine {number} is a {s} in partition {p}, not a {size} in partition {partition}"
                );
                return Err(Problem::at(item, message));
            }
            None => {
                let message = format!(
                    "there is no machine {number}: the datacenter has machines 1 to {}",
                    datacenter.machine_count()
                );
                return Err(Problem::at(item, message));
            }
        }
        let id = capms_backend_sim::machine_id(number);
        if ids.contains(&id) {
            return Err(Problem::at(item, format!("machine {number} is pinned twice")));
        }
        ids.push(id);
    }
    Ok(ids)
}

/// An optional boolean key of a step.
fn flag(fields: &yaml::Fields<'_>, key: &str, default: bool) -> Parsed<bool> {
    Ok(fields.get(key).map(|n| n.boolean(&fields.name(key))).transpose()?.unwrap_or(default))
}

fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

fn parse_run_until(args: &Node, names: &Names) -> Parsed<Action> {
    let fields = args.fields("\"run_until\"", &["ready", "provisioned", "gone", "within"])?;
    let conditions: Vec<(&str, Until)> =
        [("ready", Until::Ready), ("provisioned", Until::Provisioned), ("gone", Until::Gone)]
            .into_iter()
            .filter(|(key, _)| fields.get(key).is_some())
            .collect();
    let (key, until) = match conditions.as_slice() {
        [one] => *one,
        [] => {
            return Err(Problem::at(
                args,
                "\"run_until\" needs one of \"ready\", \"provisioned\" or \"gone\" with a cluster name",
            ));
        }
        _ => {
            return Err(Problem::at(
                args,
                "\"run_until\" takes only one of \"ready\", \"provisioned\" and \"gone\"",
            ));
        }
    };
    let cluster = names.cluster(&fields, key)?;
    let within = fields.required("within")?.duration(&fields.name("within"))?;
    Ok(Action::RunUntil { cluster, until, within })
}

fn operations(fields: &yaml::Fields<'_>) -> Parsed<Vec<Operation>> {
    let Some(node) = fields.get("operations") else { return Ok(Vec::new()) };
    let known: Vec<&str> = Operation::ALL.iter().map(|o| o.operation_id()).collect();
    node.items(&fields.name("operations"))?
        .iter()
        .map(|item| {
            let id = item.string("an operation")?;
            Operation::ALL
                .iter()
                .copied()
                .find(|o| o.operation_id() == id)
                .ok_or_else(|| Problem::at(item, unknown("operation", &id, "\"operations\"", &known)))
        })
        .collect()
}

fn parse_fault(args: &Node, datacenter: &DatacenterSpec, names: &Names) -> Parsed<Fault> {
    let Value::Map(entries) = &args.value else {
        return Err(Problem::at(
            args,
            format!(
                "\"fault\" must be a mapping with one fault, like {{ api_outage: 5m }}, found {}",
                args.kind()
            ),
        ));
    };
    let (kind, node) = match entries.as_slice() {
        [one] => (&one.0, &one.1),
        [] => {
            return Err(Problem::at(args, format!("\"fault\" is empty; name one of: {}", FAULTS.join(", "))));
        }
        [_, (second, _), ..] => {
            return Err(Problem::at_key(
                second,
                "a \"fault\" step injects one fault; put this one in a step of its own",
            ));
        }
    };
    if !FAULTS.contains(&kind.name.as_str()) {
        return Err(Problem::at_key(kind, unknown("fault", &kind.name, "\"fault\"", &FAULTS)));
    }
    let what = format!("fault {:?}", kind.name);
    let rate_for = |allowed: &[&str]| -> Parsed<(f64, Duration, yaml::Fields<'_>)> {
        let fields = node.fields(&what, allowed)?;
        let rate = fields.required("rate")?.rate(&fields.name("rate"))?;
        let duration = fields.required("for")?.duration(&fields.name("for"))?;
        Ok((rate, duration, fields))
    };
    let only_for = || -> Parsed<Duration> {
        let fields = node.fields(&what, &["for"])?;
        fields.required("for")?.duration(&fields.name("for"))
    };
    let cluster_count = || -> Parsed<(String, usize)> {
        let fields = node.fields(&what, &["cluster", "count"])?;
        let cluster = names.cluster(&fields, "cluster")?;
        let count = fields.get("count").map(|c| c.usize(&fields.name("count"))).transpose()?.unwrap_or(1);
        Ok((cluster, count))
    };
    Ok(match kind.name.as_str() {
        "api_outage" => Fault::ApiOutage { duration: node.duration(&what)? },
        "error_rate" | "auth_errors" | "conflicts" => {
            let (rate, duration, fields) = rate_for(&["rate", "for", "operations"])?;
            let operations = operations(&fields)?;
            match kind.name.as_str() {
                "error_rate" => Fault::ErrorRate { rate, duration, operations },
                "auth_errors" => Fault::AuthErrors { rate, duration, operations },
                _ => Fault::Conflicts { rate, duration, operations },
            }
        }
        "lost_responses" => {
            let (rate, duration, _) = rate_for(&["rate", "for"])?;
            Fault::LostResponses { rate, duration }
        }
        "lost_status_writes" => {
            let (rate, duration, _) = rate_for(&["rate", "for"])?;
            Fault::LostStatusWrites { rate, duration }
        }
        "parallel_allocations" => {
            let (rate, duration, _) = rate_for(&["rate", "for"])?;
            Fault::ParallelAllocations { rate, duration }
        }
        "provisioning_failures" => {
            let (rate, duration, _) = rate_for(&["rate", "for"])?;
            Fault::ProvisioningFailures { rate, duration }
        }
        "stuck_provisioning" => {
            let (rate, duration, _) = rate_for(&["rate", "for"])?;
            Fault::StuckProvisioning { rate, duration }
        }
        "late_writes" => {
            let (rate, duration, _) = rate_for(&["rate", "for"])?;
            Fault::LateWrites { rate, duration }
        }
        "stolen_machines" => {
            let (rate, duration, _) = rate_for(&["rate", "for"])?;
            Fault::StolenMachines { rate, duration }
        }
        "stale_metal_reads" => {
            let fields = node.fields(&what, &["lag", "for"])?;
            let lag = fields.required("lag")?.duration(&fields.name("lag"))?;
            let duration = fields.required("for")?.duration(&fields.name("for"))?;
            Fault::StaleMetalReads { lag, duration }
        }
        "firewall_silent" => {
            let fields = node.fields(&what, &["cluster"])?;
            Fault::FirewallSilent { cluster: names.cluster_with_firewall(&fields, "cluster")? }
        }
        "latency" => {
            let fields = node.fields(&what, &["max", "for"])?;
            let max = fields.required("max")?.duration(&fields.name("max"))?;
            let duration = fields.required("for")?.duration(&fields.name("for"))?;
            Fault::Latency { max, duration }
        }
        "machine_death" => {
            let (cluster, count) = cluster_count()?;
            Fault::MachineDeath { cluster, count }
        }
        "external_free" => {
            let (cluster, count) = cluster_count()?;
            Fault::ExternalFree { cluster, count }
        }
        "operator_crash" => {
            let fields = node.fields(&what, &["count", "within"])?;
            let count = fields.get("count").map(|c| c.usize(&fields.name("count"))).transpose()?.unwrap_or(1);
            let within = fields.required("within")?.duration(&fields.name("within"))?;
            Fault::OperatorCrash { count, within }
        }
        "stale_reads" => Fault::StaleReads { duration: only_for()? },
        "second_replica" => Fault::SecondReplica { duration: only_for()? },
        "capacity" => {
            let fields = node.fields(&what, &["partition", "size", "available", "for"])?;
            let partition_id = partition(&fields, datacenter)?;
            let plan =
                datacenter.partition(&partition_id).ok_or_else(|| Problem::at(node, "no partition"))?;
            let size = match fields.get("size") {
                None => plan.sizes[0].0.clone(),
                Some(size_node) => {
                    let size = size_node.string(&fields.name("size"))?;
                    if !plan.sizes.iter().any(|(s, _)| *s == size) {
                        let known: Vec<&str> = plan.sizes.iter().map(|(s, _)| s.as_str()).collect();
                        return Err(Problem::at(
                            size_node,
                            unknown("size", &size, &format!("partition {partition_id:?}"), &known),
                        ));
                    }
                    size
                }
            };
            let available = fields.required("available")?.usize(&fields.name("available"))?;
            let duration = fields.required("for")?.duration(&fields.name("for"))?;
            Fault::Capacity { partition: partition_id, size, available, duration }
        }
        other => return Err(Problem::at_key(kind, format!("fault {other:?} is not implemented"))),
    })
}

fn parse_assert(args: &Node, names: &Names) -> Parsed<Assertion> {
    const KEYS: [&str; 10] = [
        "cluster",
        "machines",
        "firewalls",
        "networks",
        "ips",
        "provisioned",
        "firewall_ready",
        "paused",
        "owner_chain",
        "user_resources_kept",
    ];
    let fields = args.fields("\"assert\"", &KEYS)?;
    let cluster = names.cluster(&fields, "cluster")?;
    let count = |key: &str| fields.get(key).map(|n| n.usize(&fields.name(key))).transpose();
    let flag = |key: &str| fields.get(key).map(|n| n.boolean(&fields.name(key))).transpose();
    let assertion = Assertion {
        cluster,
        machines: count("machines")?,
        firewalls: count("firewalls")?,
        networks: count("networks")?,
        ips: count("ips")?,
        provisioned: flag("provisioned")?,
        firewall_ready: flag("firewall_ready")?,
        paused: flag("paused")?,
        owner_chain: flag("owner_chain")?,
        user_resources_kept: flag("user_resources_kept")?,
    };
    if fields.entries().len() < 2 {
        return Err(Problem::at(
            args,
            format!("\"assert\" needs something to check besides \"cluster\": {}", KEYS[1..].join(", ")),
        ));
    }
    Ok(assertion)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(text: &str) -> ScenarioError {
        match Scenario::parse("x.yaml", text) {
            Ok(_) => panic!("parsed: {text}"),
            Err(error) => error,
        }
    }

    #[test]
    fn the_issue_example_parses() {
        let text = "name: workers survive a metal-api outage while scaling
seed: 7
datacenter:
  partitions: [{ id: fra-1, sizes: { c1-large-x86: 12 } }]
  images: [ubuntu-24.04, firewall-ubuntu-3.0]
  provisioning: 5m
steps:
  - create_cluster: { name: prod, namespace: default, partition: fra-1, control_plane: 3,
                      workers: 2, size: c1-large-x86, image: ubuntu-24.04, firewall: true }
  - run_until: { ready: prod, within: 30m }
  - fault: { api_outage: 5m }
  - scale_workers: { cluster: prod, to: 5 }
  - run_until: { ready: prod, within: 45m }
  - delete_cluster: { name: prod }
  - run_until: { gone: prod, within: 30m }
expect: { leaked: none, duplicate_allocations: 0 }
";
        let scenario = Scenario::parse("x.yaml", text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(scenario.seed, Some(7));
        assert_eq!(scenario.steps.len(), 7);
        assert_eq!(scenario.steps[0].line, 8);
        let Action::CreateCluster(spec) = &scenario.steps[0].action else { panic!("not a create") };
        assert_eq!(spec.firewall.as_deref(), Some("firewall-ubuntu-3.0"));
        assert_eq!(spec.partition, "fra-1");
        assert_eq!(scenario.steps[2].text, "fault: { api_outage: 5m }");
        assert_eq!(
            scenario.steps[2].action,
            Action::Fault(Fault::ApiOutage { duration: Duration::from_secs(300) })
        );
    }

    #[test]
    fn unknown_verb_names_line_column_and_suggestion() {
        let e = error(
            "name: x\nsteps:\n  - create_cluster: { name: a }\n  - scale_worker: { cluster: a, to: 2 }\n",
        );
        assert_eq!((e.line, e.column), (4, 5), "{e}");
        assert!(e.to_string().starts_with("x.yaml:4:5: unknown verb \"scale_worker\""), "{e}");
        assert!(e.message.contains("did you mean \"scale_workers\"?"), "{e}");
    }

    #[test]
    fn a_cluster_must_be_created_before_it_is_used() {
        let e = error(
            "name: x\nsteps:\n  - create_cluster: { name: prod }\n  - run_until: { ready: prdo, within: 5m }\n",
        );
        assert_eq!(e.line, 4);
        assert!(e.message.contains("unknown cluster \"prdo\" (did you mean \"prod\"?)"), "{e}");
    }

    #[test]
    fn the_new_metal_api_faults_parse() {
        let text = "name: x
steps:
  - create_cluster: { name: a, firewall: true, pinned_machines: [2, 3] }
  - fault: { firewall_silent: { cluster: a } }
  - fault: { stuck_provisioning: { rate: 0.5, for: 10m } }
  - fault: { stale_metal_reads: { lag: 30s, for: 1h } }
  - fault: { late_writes: { rate: 20%, for: 5m } }
  - fault: { stolen_machines: { rate: 1, for: 5m } }
";
        let scenario = Scenario::parse("x.yaml", text).unwrap_or_else(|e| panic!("{e}"));
        let Action::CreateCluster(spec) = &scenario.steps[0].action else { panic!("not a create") };
        let ids = vec!["00000000-0000-0000-0000-000000000002", "00000000-0000-0000-0000-000000000003"];
        assert_eq!(spec.pinned_machines, ids);
        let faults: Vec<&Action> = scenario.steps[1..].iter().map(|step| &step.action).collect();
        let minutes = |m: u64| Duration::from_secs(60 * m);
        assert_eq!(
            faults,
            vec![
                &Action::Fault(Fault::FirewallSilent { cluster: "a".to_string() }),
                &Action::Fault(Fault::StuckProvisioning { rate: 0.5, duration: minutes(10) }),
                &Action::Fault(Fault::StaleMetalReads {
                    lag: Duration::from_secs(30),
                    duration: minutes(60)
                }),
                &Action::Fault(Fault::LateWrites { rate: 0.2, duration: minutes(5) }),
                &Action::Fault(Fault::StolenMachines { rate: 1.0, duration: minutes(5) }),
            ]
        );
    }

    #[test]
    fn a_silent_firewall_needs_a_cluster_with_a_firewall() {
        let e = error(
            "name: x\nsteps:\n  - create_cluster: { name: a }\n  - fault: { firewall_silent: { cluster: a } }\n",
        );
        assert_eq!((e.line, e.column), (4, 42), "{e}");
        assert!(e.message.contains("cluster \"a\" has no firewall"), "{e}");
    }

    #[test]
    fn stale_metal_reads_need_a_lag_with_a_unit() {
        let e = error("name: x\nsteps:\n  - fault: { stale_metal_reads: { for: 5m } }\n");
        assert_eq!(e.line, 3, "{e}");
        assert!(e.message.contains("lag"), "{e}");
        let e = error("name: x\nsteps:\n  - fault: { stale_metal_reads: { lag: 30, for: 5m } }\n");
        assert_eq!(e.line, 3, "{e}");
    }

    #[test]
    fn pinned_machines_must_exist_in_the_cluster_partition_and_size() {
        let e = error("name: x\nsteps:\n  - create_cluster: { name: a, pinned_machines: [9] }\n");
        assert_eq!((e.line, e.column), (3, 50), "{e}");
        assert!(e.message.contains("there is no machine 9: the datacenter has machines 1 to 8"), "{e}");
        let text = "name: x
datacenter: { partitions: [{ id: p, sizes: { b-size: 1, a-size: 2 } }] }
steps:
  - create_cluster: { name: a, size: b-size, pinned_machines: [1] }
";
        let e = error(text);
        assert!(e.message.contains("machine 1 is a a-size in partition p"), "{e}");
        let e = error("name: x\nsteps:\n  - create_cluster: { name: a, pinned_machines: [2, 2] }\n");
        assert!(e.message.contains("machine 2 is pinned twice"), "{e}");
    }

    #[test]
    fn indentation_mistakes_get_a_hint() {
        let e = error("name: x\nsteps:\n  - create_cluster:\n    name: prod\n");
        assert_eq!(e.line, 4);
        assert!(e.message.contains("indent it under \"create_cluster\""), "{e}");
    }
}

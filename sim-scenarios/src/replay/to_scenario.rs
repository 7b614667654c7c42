//! A scenario file from a trace: the datacenter and the clusters as the reconciles saw them,
//! the steps at the moments they showed, the faults as the answers showed them. The result is
//! plain scenario YAML (one step per line, so that [`crate::explore::shrink`] can shrink it).
//!
//! What a trace shows, and so what the scenario can hold, is limited (docs/traces.md,
//! "From a trace to a scenario"): per cluster its partition, the size and image of its first
//! machine, how many control-plane and worker objects it had before the first one was deleted,
//! whether it had a firewall and when it was deleted; per metal-api operation the share of
//! transient, conflict and auth failures and of lost answers, and refused parallel
//! allocations, each over the window in which they were seen; a lagging informer; the shortest
//! provisioning time. Other operator faults (crashes, lost status writes, a second replica),
//! machine deaths, rolls and scaling do not show in a trace and take the scenario defaults.
//!
//! The world's random choices are not in a trace, so a failure the trace shows (two machines
//! for one object, [`failure_seen`]) is brought back by a bounded seed search
//! ([`derive_reproducing`], at most [`SEED_SEARCH_MAX`] runs).

use crate::explore;
use crate::operator::OperatorConfig;
use crate::scenario::{Scenario, format_duration, run_scenario_with};
use capms_core::api::capi;
use capms_core::reconcile::machine::Variant;
use capms_core::trace::{Answer, Call, Input, Record, Trace};
use capms_core::{ErrorKind, Operation, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::Duration;

/// One cluster as the trace shows it.
#[derive(Debug, Default)]
struct ClusterSeen {
    namespace: String,
    partition: Option<String>,
    size: Option<String>,
    image: Option<String>,
    firewall_image: Option<String>,
    first: Option<Timestamp>,
    /// Machine objects by role (control plane?), with the time each was first seen.
    machines: BTreeMap<String, (bool, Timestamp)>,
    /// The first moment a machine object was seen deleting.
    first_machine_deletion: Option<Timestamp>,
    /// The last moment a machine object was seen alive, and the first deletion after it.
    last_alive: Option<Timestamp>,
    deleted_after_alive: Option<Timestamp>,
    metal_cluster_deleting: Option<Timestamp>,
}

/// Failures of one class and operation: when, and out of how many calls.
#[derive(Debug, Default)]
struct FaultSeen {
    first: Option<Timestamp>,
    last: Option<Timestamp>,
    failures: usize,
}

/// The fault verbs a failure maps to, with the operation when the verb takes one.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum FaultClass {
    ErrorRate(Operation),
    Conflicts(Operation),
    AuthErrors(Operation),
    LostResponses,
    ParallelAllocations,
    /// A reconcile read an object without the providerID an earlier reconcile wrote: the
    /// informer lagged (or the write was lost, or the operator crashed before it).
    StaleReads,
}

fn cluster_of<'a>(
    facts: Option<&'a capms_core::reconcile::ClusterFacts>,
    meta: &'a ObjectMeta,
) -> Option<&'a str> {
    facts
        .map(|c| c.name.as_str())
        .filter(|name| !name.is_empty())
        .or_else(|| capi::label(meta, capi::CLUSTER_NAME_LABEL))
}

fn deleting(meta: &ObjectMeta) -> bool {
    meta.deletion_timestamp.is_some()
}

fn earliest(at: &mut Option<Timestamp>, now: Timestamp) {
    if at.is_none_or(|known| now < known) {
        *at = Some(now);
    }
}

fn latest(at: &mut Option<Timestamp>, now: Timestamp) {
    if at.is_none_or(|known| now > known) {
        *at = Some(now);
    }
}

/// What the trace shows: clusters by name, faults by class, calls by operation.
#[derive(Debug, Default)]
struct Seen {
    clusters: BTreeMap<String, ClusterSeen>,
    faults: BTreeMap<FaultClass, FaultSeen>,
    calls: BTreeMap<Operation, Vec<Timestamp>>,
    writes: Vec<Timestamp>,
    allocations: Vec<Timestamp>,
    /// The shortest time from allocation to `Phoned Home` seen in any answer.
    provisioning: Option<Duration>,
    /// Objects (by UID) whose providerID an outcome wrote, and when.
    provider_ids: BTreeMap<String, Timestamp>,
    start: Option<Timestamp>,
    end: Option<Timestamp>,
}

impl Seen {
    fn record(&mut self, record: &Record) {
        let now = record.input.now();
        earliest(&mut self.start, now);
        latest(&mut self.end, now);
        match &record.input {
            Input::Machine(input) => self.machine(input, now),
            Input::Cluster(input) => {
                let meta = &input.metal_cluster.metadata;
                let name =
                    cluster_of(input.cluster.as_ref(), meta).or(meta.name.as_deref()).unwrap_or_default();
                let seen = self.cluster(name, meta, now);
                seen.partition.get_or_insert_with(|| input.metal_cluster.spec.partition.clone());
                if let Some(firewall) = &input.metal_cluster.spec.firewall {
                    seen.firewall_image.get_or_insert_with(|| firewall.image.clone());
                }
                if deleting(meta) {
                    earliest(&mut seen.metal_cluster_deleting, now);
                }
            }
            Input::Firewall(input) => {
                let meta = &input.firewall.metadata;
                if let Some(name) = cluster_of(input.cluster.as_ref(), meta) {
                    let image = input.firewall.spec.image.clone();
                    self.cluster(name, meta, now).firewall_image.get_or_insert(image);
                }
            }
        }
        for call in &record.calls {
            self.call(call, now);
        }
        self.outcome(record);
    }

    fn cluster(&mut self, name: &str, meta: &ObjectMeta, now: Timestamp) -> &mut ClusterSeen {
        let seen = self.clusters.entry(name.to_string()).or_default();
        if seen.namespace.is_empty() {
            seen.namespace = meta.namespace.clone().unwrap_or_else(|| "default".to_string());
        }
        earliest(&mut seen.first, now);
        seen
    }

    fn machine(&mut self, input: &capms_core::trace::MachineRecord, now: Timestamp) {
        self.stale_read(input, now);
        let meta = &input.metal_machine.metadata;
        let Some(name) = cluster_of(input.cluster.as_ref(), meta) else { return };
        let control_plane = input.capi_machine.as_ref().is_some_and(|m| m.control_plane);
        let partition = input.metal_cluster.as_ref().map(|c| c.partition_id.clone());
        let spec = &input.metal_machine.spec;
        let seen = self.cluster(name, meta, now);
        if let Some(partition) = partition {
            seen.partition.get_or_insert(partition);
        }
        seen.size.get_or_insert_with(|| spec.size.clone());
        seen.image.get_or_insert_with(|| spec.image.clone());
        let object = meta.name.clone().unwrap_or_default();
        seen.machines.entry(object).or_insert((control_plane, now));
        if deleting(meta) {
            earliest(&mut seen.first_machine_deletion, now);
            if seen.deleted_after_alive.is_none() {
                seen.deleted_after_alive = Some(now);
            }
        } else {
            latest(&mut seen.last_alive, now);
            seen.deleted_after_alive = None;
        }
    }

    /// Learns the provisioning time from machines (one or a list) that phoned home.
    fn provisioned(&mut self, answer: &serde_json::Value) {
        let machines = answer.as_array().map_or_else(|| vec![answer], |list| list.iter().collect());
        for machine in machines {
            let Ok(machine) = serde_json::from_value::<capms_core::metal::Machine>(machine.clone()) else {
                continue;
            };
            let phoned = machine
                .events
                .iter()
                .find(|e| e.event == capms_core::metal::ProvisioningEventKind::PhonedHome);
            let (Some(allocation), Some(phoned)) = (&machine.allocation, phoned) else { continue };
            let took: Duration =
                phoned.time.duration_since(allocation.created).try_into().unwrap_or(Duration::ZERO);
            if !took.is_zero() && self.provisioning.is_none_or(|known| took < known) {
                self.provisioning = Some(took);
            }
        }
    }

    /// Notes a read that missed a providerID written before (see [`FaultClass::StaleReads`]).
    fn stale_read(&mut self, input: &capms_core::trace::MachineRecord, now: Timestamp) {
        let uid = input.metal_machine.metadata.uid.clone().unwrap_or_default();
        let Some(written) = self.provider_ids.get(&uid).copied().filter(|at| *at < now) else { return };
        if input.metal_machine.spec.provider_id.is_none() {
            // When the informer began to lag does not show: assume from the start.
            let since = self.start.unwrap_or(written);
            let fault = self.faults.entry(FaultClass::StaleReads).or_default();
            earliest(&mut fault.first, since);
            latest(&mut fault.last, now);
            fault.failures += 1;
        }
    }

    fn outcome(&mut self, record: &Record) {
        let Input::Machine(input) = &record.input else { return };
        if record.outcome.json().get("provider_id").is_some_and(|id| id.is_string()) {
            let uid = input.metal_machine.metadata.uid.clone().unwrap_or_default();
            self.provider_ids.entry(uid).or_insert(input.now);
        }
    }

    fn call(&mut self, call: &Call, now: Timestamp) {
        let Call::Backend { operation, answer, .. } = call else { return };
        self.calls.entry(*operation).or_default().push(now);
        if let Answer::Ok(value) = answer {
            self.provisioned(value.json());
        }
        if !operation.is_read() {
            self.writes.push(now);
        }
        if matches!(operation, Operation::AllocateMachine | Operation::AllocateFirewall) {
            self.allocations.push(now);
        }
        let Answer::Error(error) = answer else { return };
        let class = match error.kind() {
            _ if error.outcome_unknown() => FaultClass::LostResponses,
            // A transient answer with a 4xx status is the datacenter's state speaking (a network
            // that still has IPs), which the scenario's world gives again by itself; only
            // answers without a status or with a server error are injected-like faults.
            ErrorKind::Transient if error.status().is_some_and(|status| status < 500 && status != 429) => {
                return;
            }
            ErrorKind::Transient => FaultClass::ErrorRate(*operation),
            ErrorKind::Conflict => FaultClass::Conflicts(*operation),
            ErrorKind::Auth => FaultClass::AuthErrors(*operation),
            ErrorKind::Capacity if error.message().contains("parallel") => FaultClass::ParallelAllocations,
            _ => return,
        };
        let fault = self.faults.entry(class).or_default();
        earliest(&mut fault.first, now);
        latest(&mut fault.last, now);
        fault.failures += 1;
    }
}

/// A step and when it happens.
type Timed = (Timestamp, u8, String);

/// A scenario file text derived from `trace`; `source` names the trace in the description.
pub fn derive(trace: &Trace, source: &str) -> Result<String, String> {
    let mut seen = Seen::default();
    for record in &trace.records {
        seen.record(record);
    }
    let (Some(start), Some(end)) = (seen.start, seen.end) else {
        return Err("the trace has no reconciles".to_string());
    };
    let clusters: Vec<(&String, &ClusterSeen)> =
        seen.clusters.iter().filter(|(_, c)| !c.machines.is_empty() || c.partition.is_some()).collect();
    if clusters.is_empty() {
        return Err("the trace shows no cluster".to_string());
    }
    let mut steps: Vec<Timed> = Vec::new();
    for (name, cluster) in &clusters {
        steps.extend(cluster_steps(name, cluster));
    }
    steps.extend(fault_steps(&seen));
    steps.sort();
    let mut text = String::new();
    let _ = writeln!(text, "# Derived by capms-sim replay --to-scenario from {source}.");
    let _ = writeln!(text, "name: replayed trace {}", sanitize(source));
    let _ = writeln!(text, "description: {}", sanitize(&trace.header.source));
    if let Some(seed) = seed_of(&trace.header.source) {
        let _ = writeln!(text, "seed: {seed}");
    }
    let _ = writeln!(text, "datacenter:");
    let _ = writeln!(text, "  partitions: [{}]", partitions(&clusters).join(", "));
    let _ = writeln!(text, "  images: [{}]", images(&clusters).join(", "));
    if let Some(provisioning) = seen.provisioning {
        let _ = writeln!(
            text,
            "  provisioning: {}",
            format_duration(Duration::from_secs(provisioning.as_secs().max(1)))
        );
    }
    let _ = writeln!(text, "steps:");
    let mut at = start;
    for (time, _, step) in &steps {
        wait(&mut text, &mut at, *time);
        let _ = writeln!(text, "  - {step}");
    }
    wait(&mut text, &mut at, end.checked_add(Duration::from_secs(60)).unwrap_or(end));
    for (name, cluster) in &clusters {
        if deletion(cluster).is_some() {
            let _ = writeln!(text, "  - run_until: {{ gone: {name}, within: 2h }}");
        }
    }
    let _ = writeln!(text, "expect: {{ leaked: none, duplicate_allocations: 0 }}");
    Ok(text)
}

/// The seed of a trace written by `capms-sim run ... --seed N` (the same world seed draws the
/// same operator choices).
fn seed_of(source: &str) -> Option<u64> {
    let (_, after) = source.split_once("--seed ")?;
    after.split_whitespace().next()?.parse().ok()
}

/// Scenario text is YAML: keep free text to characters that need no quoting.
fn sanitize(text: &str) -> String {
    text.chars().map(|c| if c.is_alphanumeric() || "-_./ ".contains(c) { c } else { '_' }).collect()
}

fn wait(text: &mut String, at: &mut Timestamp, until: Timestamp) {
    let gap: Duration = until.duration_since(*at).try_into().unwrap_or(Duration::ZERO);
    let gap = Duration::from_secs(gap.as_secs());
    if !gap.is_zero() {
        let _ = writeln!(text, "  - run_for: {}", format_duration(gap));
        *at = until;
    }
}

/// When the cluster's deletion began: the first machine deletion after which every machine
/// was deleting, else the MetalStackCluster's own deletion.
fn deletion(cluster: &ClusterSeen) -> Option<Timestamp> {
    cluster.deleted_after_alive.or(cluster.metal_cluster_deleting)
}

fn cluster_steps(name: &str, cluster: &ClusterSeen) -> Vec<Timed> {
    let before = cluster.first_machine_deletion;
    let counted =
        cluster.machines.values().filter(|(_, first)| before.is_none_or(|deleted| *first < deleted));
    let (control_plane, workers): (Vec<&(bool, Timestamp)>, Vec<_>) =
        counted.partition(|(control_plane, _)| *control_plane);
    let mut create = format!(
        "create_cluster: {{ name: {name}, namespace: {}, control_plane: {}, workers: {}",
        cluster.namespace,
        control_plane.len().max(1),
        workers.len()
    );
    if let Some(partition) = &cluster.partition {
        let _ = write!(create, ", partition: {partition}");
    }
    if let Some(size) = &cluster.size {
        let _ = write!(create, ", size: {size}");
    }
    if let Some(image) = &cluster.image {
        let _ = write!(create, ", image: {image}");
    }
    if let Some(image) = cluster.firewall_image.as_ref().filter(|image| image.contains("firewall")) {
        let _ = write!(create, ", firewall: true, firewall_image: {image}");
    }
    create.push_str(" }");
    let first = cluster.first.unwrap_or_default();
    let mut steps = vec![(first, 1, create)];
    if let Some(at) = deletion(cluster) {
        steps.push((at, 2, format!("delete_cluster: {{ name: {name} }}")));
    }
    steps
}

fn fault_steps(seen: &Seen) -> Vec<Timed> {
    seen.faults.iter().filter_map(|(class, fault)| fault_step(seen, class, fault)).collect()
}

/// The fault step for one class: the share of failed calls in the window they were seen in.
fn fault_step(seen: &Seen, class: &FaultClass, fault: &FaultSeen) -> Option<Timed> {
    let (first, last) = (fault.first?, fault.last?);
    let within = |times: &[Timestamp]| times.iter().filter(|t| **t >= first && **t <= last).count();
    let calls = match class {
        FaultClass::ErrorRate(op) | FaultClass::Conflicts(op) | FaultClass::AuthErrors(op) => {
            seen.calls.get(op).map_or(0, |times| within(times))
        }
        FaultClass::LostResponses => within(&seen.writes),
        FaultClass::ParallelAllocations => within(&seen.allocations),
        FaultClass::StaleReads => fault.failures,
    };
    let rate = (fault.failures as f64 / calls.max(1) as f64 * 100.0).ceil().clamp(1.0, 100.0) / 100.0;
    let span: Duration = last.duration_since(first).try_into().unwrap_or(Duration::ZERO);
    // A lagging informer shows only when a reconcile happened to read an old object: keep
    // it lagging for a while around what was seen.
    let least = if *class == FaultClass::StaleReads { 600 } else { 60 };
    let span = format_duration(Duration::from_secs(span.as_secs().max(least)));
    let step = match class {
        FaultClass::ErrorRate(op) => {
            format!("error_rate: {{ rate: {rate}, for: {span}, operations: [{}] }}", op.operation_id())
        }
        FaultClass::Conflicts(op) => {
            format!("conflicts: {{ rate: {rate}, for: {span}, operations: [{}] }}", op.operation_id())
        }
        FaultClass::AuthErrors(op) => {
            format!("auth_errors: {{ rate: {rate}, for: {span}, operations: [{}] }}", op.operation_id())
        }
        FaultClass::LostResponses => format!("lost_responses: {{ rate: {rate}, for: {span} }}"),
        FaultClass::ParallelAllocations => format!("parallel_allocations: {{ rate: {rate}, for: {span} }}"),
        FaultClass::StaleReads => format!("stale_reads: {{ for: {span} }}"),
    };
    Some((first, 0, format!("fault: {{ {step} }}")))
}

/// Every partition with every size seen, with room for twice the machines seen plus spares.
fn partitions(clusters: &[(&String, &ClusterSeen)]) -> Vec<String> {
    let mut sizes: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for (_, cluster) in clusters {
        let (Some(partition), Some(size)) = (&cluster.partition, &cluster.size) else { continue };
        let firewall = usize::from(cluster.firewall_image.is_some());
        *sizes.entry(partition.clone()).or_default().entry(size.clone()).or_default() +=
            cluster.machines.len() + firewall;
    }
    if sizes.is_empty() {
        return vec!["{ id: mini-lab, sizes: { v1-small-x86: 8 } }".to_string()];
    }
    sizes
        .iter()
        .map(|(partition, sizes)| {
            let sizes: Vec<String> = sizes
                .iter()
                .map(|(size, machines)| format!("{size}: {}", (2 * machines + 2).max(4)))
                .collect();
            format!("{{ id: {partition}, sizes: {{ {} }} }}", sizes.join(", "))
        })
        .collect()
}

/// The machine and firewall images seen; scenario files need at least one machine image.
fn images(clusters: &[(&String, &ClusterSeen)]) -> Vec<String> {
    let mut images: BTreeSet<String> = BTreeSet::new();
    for (_, cluster) in clusters {
        images.extend(cluster.image.iter().cloned());
        images.extend(cluster.firewall_image.iter().filter(|image| image.contains("firewall")).cloned());
    }
    if images.iter().all(|image| image.contains("firewall")) {
        images.insert("debian-13.0".to_string());
    }
    images.into_iter().collect()
}

/// How many runs `--to-scenario` may spend looking for a seed that reproduces the recorded
/// failure (the recorded seed first, then 0, 1, 2, ...): put a limit on everything.
pub const SEED_SEARCH_MAX: u64 = 64;

/// A failure that a trace shows by itself, and its kind as [`explore::kind`] names the
/// scenario runner's report of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureSeen {
    pub kind: String,
    pub description: String,
}

/// Machines allocated for one object (by UID) and not known to be released.
#[derive(Debug, Default)]
struct Held {
    object: String,
    machines: BTreeSet<String>,
    /// An allocation whose answer was lost, and no search for the object's machines since.
    lost: bool,
}

/// The failure the trace shows: an object that was allocated a second machine while the trace
/// never showed its first one released (by a `freeMachine`, an answer without allocation or a
/// not-found), or right after an allocation whose answer was lost without a search in between.
/// That is what the world's duplicate check catches (`duplicate_allocations`); other failures
/// (leaks, clusters that never get ready) do not show unambiguously in a trace.
pub fn failure_seen(trace: &Trace) -> Option<FailureSeen> {
    let mut held: BTreeMap<String, Held> = BTreeMap::new();
    for record in &trace.records {
        let object = match &record.input {
            Input::Machine(input) => {
                let meta = &input.metal_machine.metadata;
                let uid = meta.uid.clone().unwrap_or_default();
                let name = format!(
                    "{}/{}",
                    meta.namespace.as_deref().unwrap_or("default"),
                    meta.name.as_deref().unwrap_or_default()
                );
                held.entry(uid.clone()).or_default().object = name;
                Some(uid)
            }
            _ => None,
        };
        for call in &record.calls {
            if let Some(seen) = allocation_call(&mut held, object.as_deref(), call, record.input.now()) {
                return Some(seen);
            }
        }
    }
    None
}

fn allocation_call(
    held: &mut BTreeMap<String, Held>,
    object: Option<&str>,
    call: &Call,
    now: Timestamp,
) -> Option<FailureSeen> {
    let (operation, request, answer) = match call {
        Call::Backend { operation, request, answer } => (*operation, request.json(), answer),
        Call::CacheTagged { .. } => {
            // The reconcile looked for the object's machines.
            if let Some(entry) = object.and_then(|uid| held.get_mut(uid)) {
                entry.lost = false;
            }
            return None;
        }
        _ => return None,
    };
    let requested = request.get("id").and_then(|id| id.as_str());
    match (operation, answer) {
        (Operation::FindMachines, _) => {
            if let Some(entry) = object.and_then(|uid| held.get_mut(uid)) {
                entry.lost = false;
            }
        }
        (Operation::AllocateMachine, Answer::Error(error)) if error.outcome_unknown() => {
            if let Some(entry) = object.and_then(|uid| held.get_mut(uid)) {
                entry.lost = true;
            }
        }
        (Operation::FreeMachine, Answer::Ok(_)) => release(held, requested?),
        (_, Answer::Error(error)) if error.status() == Some(404) => release(held, requested?),
        _ => {}
    }
    let Answer::Ok(value) = answer else { return None };
    let value = value.json();
    for machine in value.as_array().map_or_else(|| vec![value], |list| list.iter().collect()) {
        if machine.get("allocation").is_some_and(serde_json::Value::is_null)
            && let Some(id) = machine.get("id").and_then(|id| id.as_str())
        {
            release(held, id);
        }
    }
    if operation != Operation::AllocateMachine {
        return None;
    }
    let machine = value.get("id").and_then(|id| id.as_str())?;
    let entry = held.get_mut(object?)?;
    let earlier: Vec<&String> = entry.machines.iter().filter(|id| *id != machine).collect();
    let seen = if let Some(first) = earlier.first() {
        Some(format!(
            "{} was allocated machine {machine} at {now} while its machine {first} was still allocated",
            entry.object
        ))
    } else if entry.lost {
        Some(format!(
            "{} was allocated machine {machine} at {now} after an allocation whose answer was lost, without looking for it",
            entry.object
        ))
    } else {
        None
    };
    entry.machines.insert(machine.to_string());
    entry.lost = false;
    seen.map(|description| FailureSeen { kind: "two machines".to_string(), description })
}

fn release(held: &mut BTreeMap<String, Held>, machine: &str) {
    for entry in held.values_mut() {
        entry.machines.remove(machine);
    }
}

/// A seed with which the derived scenario fails like the trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reproduction {
    pub seed: u64,
    /// The scenario runner's reason.
    pub reason: String,
}

/// A scenario derived from a trace, with the seed search's result.
#[derive(Debug, Clone)]
pub struct Derived {
    /// The scenario text: with the reproducing seed when one was found, else as derived.
    pub text: String,
    /// The failure looked for (the caller's, else the one the trace shows).
    pub failure: Option<FailureSeen>,
    /// The seed that reproduces it, if any of the seeds tried did.
    pub reproduction: Option<Reproduction>,
    /// Runs spent searching.
    pub runs: u64,
}

impl Derived {
    /// The trace shows a failure (or the caller named one) and no seed reproduced it.
    pub fn unreproduced(&self) -> bool {
        self.failure.is_some() && self.reproduction.is_none()
    }
}

/// [`derive`], then, when the trace shows a failure (or `wanted` names a kind, as
/// [`explore::kind`] does), the seed search: the recorded seed first, then 0, 1, 2, ... up to
/// [`SEED_SEARCH_MAX`] runs in all, each through the runner of `capms-sim run` with the
/// operator model `config` (the reconciler that was recorded). The first seed whose run fails
/// with the same kind of failure is written into the scenario. Deterministic: the same trace
/// and config give the same text.
pub fn derive_reproducing(
    trace: &Trace,
    source: &str,
    config: OperatorConfig,
    wanted: Option<&str>,
) -> Result<Derived, String> {
    let text = derive(trace, source)?;
    let failure = match wanted {
        Some(kind) => {
            Some(FailureSeen { kind: kind.to_string(), description: format!("a failure of kind {kind:?}") })
        }
        None => failure_seen(trace),
    };
    let Some(failure) = failure else {
        return Ok(Derived { text, failure: None, reproduction: None, runs: 0 });
    };
    let scenario = Scenario::parse("derived.yaml", &text)
        .map_err(|error| format!("the derived scenario does not parse: {error}"))?;
    let recorded = scenario.seed;
    let candidates = recorded.into_iter().chain((0..).filter(|seed| Some(*seed) != recorded));
    let mut runs = 0;
    for seed in candidates.take(SEED_SEARCH_MAX as usize) {
        runs += 1;
        let report = run_scenario_with(&scenario, Some(seed), config);
        let Some(reason) = failure_reason(&report) else { continue };
        if explore::kind(&reason) == failure.kind {
            let text = with_seed(&text, seed, &failure, recorded, config);
            let reproduction = Some(Reproduction { seed, reason });
            return Ok(Derived { text, failure: Some(failure), reproduction, runs });
        }
    }
    Ok(Derived { text, failure: Some(failure), reproduction: None, runs })
}

/// The runner's failure: the step (or `expect`) and why, which [`explore::kind`] reads.
fn failure_reason(report: &crate::scenario::ScenarioReport) -> Option<String> {
    let failure = report.failure.as_ref()?;
    Some(format!("{}: {}", failure.text, failure.reason))
}

/// `text` with `seed:` set to `seed` and a comment saying why.
fn with_seed(
    text: &str,
    seed: u64,
    failure: &FailureSeen,
    recorded: Option<u64>,
    config: OperatorConfig,
) -> String {
    let recorded =
        recorded.map_or_else(|| "the trace names no seed".to_string(), |r| format!("recorded seed {r}"));
    let reconciler = match config.variant {
        Variant::Correct => String::new(),
        Variant::CanaryWithoutAdoption | Variant::CanaryGlueLosesStatus | Variant::CanaryUngated => {
            " with the test-only canary machine reconciler (OperatorConfig.variant; the correct one passes)"
                .to_string()
        }
    };
    let mut out = String::new();
    for line in text.lines() {
        if line.starts_with("seed: ") {
            continue;
        }
        if line.starts_with("datacenter:") {
            let _ = writeln!(
                out,
                "# seed {seed}: the first seed ({recorded}, then 0, 1, ...) that fails like the trace{reconciler}:"
            );
            let description: String =
                failure.description.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
            let _ = writeln!(out, "# {description}");
            let _ = writeln!(out, "seed: {seed}");
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Removes steps of a derived scenario that are not needed to reproduce its failure (with the
/// operator model `config`, and the scenario's own seed). A scenario that does not fail is an
/// error: nothing to keep.
pub fn shrink(name: &str, text: &str, config: OperatorConfig) -> Result<String, String> {
    let scenario = Scenario::parse(name, text)
        .map_err(|error| format!("the derived scenario does not parse: {error}"))?;
    let report = run_scenario_with(&scenario, None, config);
    let Some(reason) = failure_reason(&report) else {
        return Err("the derived scenario passes: there is no failure to shrink to".to_string());
    };
    explore::shrink(name, text, explore::kind(&reason), config)
}

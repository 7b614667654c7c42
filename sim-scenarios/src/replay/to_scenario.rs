//! A scenario file from a trace: the datacenter and the clusters as the reconciles saw them,
//! the steps at the moments they showed, the faults as the answers showed them. The result is
//! plain scenario YAML (one step per line, so that [`crate::explore::shrink`] can shrink it).
//!
//! What a trace shows, and so what the scenario can hold, is limited (docs/traces.md,
//! "From a trace to a scenario"): per cluster its partition, the size and image of its first
//! machine, how many control-plane and worker objects it had before the first one was deleted,
//! whether it had a firewall and when it was deleted; per metal-api operation the share of
//! transient, conflict and auth failures and of lost answers, and refused parallel
//! allocations, each over the window in which they were seen. Operator faults (crashes, stale
//! reads, lost status writes, a second replica), machine deaths, rolls, scaling and
//! provisioning times do not show in a trace and take the scenario defaults.

use crate::explore;
use crate::operator::OperatorConfig;
use crate::scenario::{Scenario, format_duration, run_scenario_with};
use capms_core::api::capi;
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

/// Removes steps of a derived scenario that are not needed to reproduce its failure (with the
/// operator model `config`). A scenario that does not fail is an error: nothing to keep.
pub fn shrink(name: &str, text: &str, config: OperatorConfig) -> Result<String, String> {
    let scenario = Scenario::parse(name, text)
        .map_err(|error| format!("the derived scenario does not parse: {error}"))?;
    let report = run_scenario_with(&scenario, None, config);
    let Some(failure) = &report.failure else {
        return Err("the derived scenario passes: there is no failure to shrink to".to_string());
    };
    let reason = format!("step {:?} ({}): {}", failure.step, failure.text, failure.reason);
    explore::shrink(name, text, explore::kind(&reason), config)
}

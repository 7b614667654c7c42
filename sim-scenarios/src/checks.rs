//! Safety checkers that run outside the system under test, after every step of the world.
//!
//! They look only at the simulated datacenter and the object stores, never at the operator's
//! memory. Conditions that a correct provider can violate for a moment (a machine that is no
//! longer `Alive` is still Ready until the next refresh; two replicas race an allocation before
//! one of them frees the duplicate) are violations only when they last longer than a stated
//! grace.
//!
//! Some duplicate allocations no provider can prevent, only find and free: while metal-api's
//! finds lag behind its writes, or its writes land after their client gave up, an adoption find
//! cannot see the first allocation. The checker says which duplicates were [`Unpreventable`]
//! and why; they must still be freed within [`DUPLICATE_GRACE`].

use crate::store::Store;
use capms_backend_sim::{CLIENT_TIMEOUT, FaultPlan, LATE_WRITE_SPREAD, Sim};
use capms_core::api::capi;
use capms_core::api::conditions::{ConditionType, is_true};
use capms_core::metal::{Liveliness, Machine};
use capms_core::{ProviderId, Timestamp, tags};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// How long a machine may still be reported Ready after it died or was freed: two refresh
/// intervals of a ready machine plus a reconcile.
pub const STALE_READY_GRACE: Duration = Duration::from_secs(150);
/// How long a duplicate allocation for one object may exist before one is freed.
pub const DUPLICATE_GRACE: Duration = Duration::from_secs(600);
/// How long after a lagging metal-api's last effect an allocation may still be caused by it:
/// a reconcile that read stale finds completes its allocation within this.
pub const UNPREVENTABLE_SLACK: Duration = Duration::from_secs(60);

/// Why a duplicate allocation could not have been prevented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Unpreventable {
    /// The younger machine was allocated while metal-api's finds lagged behind its writes
    /// (`stale_metal_reads`): the adoption find could not see the older allocation.
    StaleMetalReads,
    /// The younger machine was allocated while writes took effect after their clients gave up
    /// (`late_writes`): an allocation reported lost landed after capms had allocated again.
    LateWrites,
}

impl Unpreventable {
    fn describe(self) -> &'static str {
        match self {
            Unpreventable::StaleMetalReads => "metal-api's finds lagged behind its writes",
            Unpreventable::LateWrites => "a write landed after its client gave up",
        }
    }

    /// The causes in force under `plan`, each with how long after it its effects may last.
    fn in_force(plan: &FaultPlan) -> Vec<(Unpreventable, Duration)> {
        let mut causes = Vec::new();
        if !plan.stale_read_lag.is_zero() {
            causes.push((Unpreventable::StaleMetalReads, plan.stale_read_lag));
        }
        if plan.late_write_rate > 0.0 {
            causes.push((Unpreventable::LateWrites, CLIENT_TIMEOUT + LATE_WRITE_SPREAD));
        }
        causes
    }
}

/// Periods in which a cause of unpreventable duplicates was in force, as checks saw them.
#[derive(Debug, Clone, Default)]
struct Windows {
    /// Cause, first check that saw it, end of its effects (last check plus its lag and slack).
    spans: Vec<(Unpreventable, Timestamp, Timestamp)>,
    /// Causes in force at the previous check → their span.
    open: BTreeMap<Unpreventable, usize>,
}

impl Windows {
    fn observe(&mut self, plan: &FaultPlan, now: Timestamp) {
        let causes = Unpreventable::in_force(plan);
        self.open.retain(|cause, _| causes.iter().any(|(c, _)| c == cause));
        for (cause, lasts) in causes {
            let end = now.checked_add(lasts + UNPREVENTABLE_SLACK).unwrap_or(now);
            match self.open.get(&cause) {
                Some(&index) => self.spans[index].2 = end,
                None => {
                    self.open.insert(cause, self.spans.len());
                    self.spans.push((cause, now, end));
                }
            }
        }
    }

    /// The cause in force when an allocation was made at `allocated`, if any.
    fn explain(&self, allocated: Timestamp) -> Option<Unpreventable> {
        self.spans
            .iter()
            .find(|(_, start, end)| *start <= allocated && allocated <= *end)
            .map(|(cause, _, _)| *cause)
    }
}

/// What the checkers found and remember between steps.
#[derive(Debug, Clone, Default)]
pub struct Checker {
    first_seen: BTreeMap<String, Timestamp>,
    provider_ids: BTreeMap<String, String>,
    /// Machines allocated per paused cluster at the previous check.
    paused_allocations: BTreeMap<String, BTreeSet<String>>,
    /// When the checks last ran.
    last_check: Option<Timestamp>,
    /// Since when each paused cluster has been checked (no object holding block-move).
    paused_since: BTreeMap<String, Timestamp>,
    /// Machines of paused clusters freed by a write that capms sent before the pause and
    /// metal-api applied after its client gave up (`late_writes`): no client can call those
    /// back, so they are reported, not violations.
    pub late_frees_while_paused: BTreeSet<String>,
    log_position: usize,
    /// Networks and IPs the user provided: never to be freed.
    pub user_networks: BTreeSet<String>,
    pub user_ips: BTreeSet<String>,
    pub violations: Vec<String>,
    pub checks: u64,
    /// Every object (`<resource>/<uid>`) that had two machines allocated at the same moment,
    /// however briefly.
    pub duplicates_seen: BTreeSet<String>,
    /// Those of them no provider could have prevented, with why: every time they were seen,
    /// their youngest machine had been allocated while a cause was in force (scenario files
    /// bound the others with `duplicate_allocations`).
    pub unpreventable: BTreeMap<String, Unpreventable>,
    /// Duplicates seen at least once without such a cause.
    preventable: BTreeSet<String>,
    /// When causes of unpreventable duplicates were in force.
    windows: Windows,
}

/// One management cluster as the checkers see it.
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    pub store: &'a Store,
}

impl Checker {
    /// Runs every safety check.
    pub fn check(&mut self, sim: &Sim, stores: &[View<'_>], now: Timestamp) {
        self.checks += 1;
        self.windows.observe(&sim.fault_plan(), now);
        let machines = sim.machines();
        let external = self.external_frees(sim);
        let paused = paused_clusters(stores);
        self.no_duplicate_allocations(&machines, &paused, now);
        self.last_check = Some(now);
        self.no_machine_shared(stores, now);
        self.provider_ids_stable(stores);
        self.no_stale_ready(&machines, stores, now);
        self.nothing_freed_while_paused(&machines, stores, &external, now);
        self.user_resources_kept(sim);
    }

    fn violation(&mut self, message: String) {
        if !self.violations.contains(&message) {
            self.violations.push(message);
        }
    }

    /// A condition that must not last: a violation once it has been seen for `grace`.
    fn lasting(&mut self, key: String, now: Timestamp, grace: Duration, message: impl FnOnce() -> String) {
        let since = *self.first_seen.entry(key).or_insert(now);
        if now.duration_since(since).unsigned_abs() > grace {
            self.violation(message());
        }
    }

    fn forget_except(&mut self, prefix: &str, keep: &BTreeSet<String>) {
        self.first_seen.retain(|key, _| !key.starts_with(prefix) || keep.contains(key));
    }

    /// Machines freed by someone else since the last check (from the datacenter's log).
    fn external_frees(&mut self, sim: &Sim) -> BTreeSet<String> {
        let lines = sim.event_log_since(self.log_position);
        self.log_position += lines.len();
        lines
            .iter()
            .filter_map(|line| {
                line.split_once("external free of machine ").map(|(_, id)| id.trim().to_string())
            })
            .collect()
    }

    /// No object has two machines allocated for it (beyond the race grace), and each
    /// duplicate is remembered with why it could not have been prevented, if it could not.
    /// The duplicate grace runs only while the object's cluster is unpaused (capms may free
    /// nothing while it is paused): checks of a paused cluster move the start of the grace
    /// forward by the time since the previous check.
    fn no_duplicate_allocations(&mut self, machines: &[Machine], paused: &BTreeSet<String>, now: Timestamp) {
        let since_last =
            self.last_check.map(|last| now.duration_since(last).unsigned_abs()).unwrap_or_default();
        let mut by_object: BTreeMap<String, Vec<&Machine>> = BTreeMap::new();
        for machine in machines.iter().filter(|m| m.allocation.is_some()) {
            let resource = tags::value(&machine.tags, tags::MACHINE_RESOURCE)
                .or(tags::value(&machine.tags, tags::FIREWALL_RESOURCE));
            if let (Some(resource), Some(uid)) = (resource, tags::value(&machine.tags, tags::OBJECT_UID)) {
                by_object.entry(format!("duplicate:{resource}/{uid}")).or_default().push(machine);
            }
        }
        let mut current = BTreeSet::new();
        for (key, found) in by_object.into_iter().filter(|(_, found)| found.len() > 1) {
            current.insert(key.clone());
            let cluster_paused = found.iter().any(|m| m.tags.iter().any(|tag| paused.contains(tag)));
            if cluster_paused && let Some(since) = self.first_seen.get_mut(&key) {
                *since = since.checked_add(since_last).unwrap_or(*since);
            }
            let cause = self.duplicate_seen(&key[10..], &found);
            let ids: Vec<&str> = found.iter().map(|m| m.id.as_str()).collect();
            let why = cause.map(|c| format!(" (unpreventable: {})", c.describe())).unwrap_or_default();
            let message = format!(
                "object {} has {} machines allocated: {}{why}",
                &key[10..],
                ids.len(),
                ids.join(", ")
            );
            self.lasting(key, now, DUPLICATE_GRACE, || message);
        }
        self.forget_except("duplicate:", &current);
    }

    /// Remembers a duplicate of `object` and says why it could not have been prevented: the
    /// cause in force when its youngest machine was allocated. Once seen preventable, it stays
    /// so.
    fn duplicate_seen(&mut self, object: &str, found: &[&Machine]) -> Option<Unpreventable> {
        self.duplicates_seen.insert(object.to_string());
        let youngest = found.iter().filter_map(|m| m.allocation.as_ref().map(|a| a.created)).max();
        match youngest.and_then(|allocated| self.windows.explain(allocated)) {
            Some(cause) if !self.preventable.contains(object) => {
                Some(*self.unpreventable.entry(object.to_string()).or_insert(cause))
            }
            _ => {
                self.unpreventable.remove(object);
                self.preventable.insert(object.to_string());
                None
            }
        }
    }

    /// Duplicates a provider could have prevented.
    pub fn preventable_duplicates(&self) -> Vec<String> {
        self.duplicates_seen.iter().filter(|o| !self.unpreventable.contains_key(*o)).cloned().collect()
    }

    /// Duplicates no provider could have prevented, with why.
    pub fn unpreventable_duplicates(&self) -> Vec<(String, Unpreventable)> {
        self.unpreventable.iter().map(|(o, cause)| (o.clone(), *cause)).collect()
    }

    /// No two objects point at one machine.
    /// No two objects are Ready on one machine (beyond the refresh grace: an object whose
    /// machine was freed and re-allocated to another object may still look Ready until its
    /// next refresh). A stale providerID of a failed object is no claim.
    fn no_machine_shared(&mut self, stores: &[View<'_>], now: Timestamp) {
        let mut owners: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for view in stores {
            for mm in view.store.metal_machines.values() {
                let ready =
                    mm.status.as_ref().is_some_and(|s| is_true(&s.conditions, ConditionType::Ready.as_str()));
                if capi::has_annotation(&mm.metadata, capi::DELETE_FOR_MOVE_ANNOTATION) || !ready {
                    continue;
                }
                if let Some(id) = mm.spec.provider_id.as_deref().and_then(|p| ProviderId::parse(p).ok()) {
                    owners.entry(id.machine_id().to_string()).or_default().push(name(&mm.metadata));
                }
            }
        }
        let mut current = BTreeSet::new();
        for (machine, objects) in owners.into_iter().filter(|(_, o)| o.len() > 1) {
            let key = format!("shared:{machine}");
            current.insert(key.clone());
            let message = format!("machine {machine} is claimed by {}", objects.join(" and "));
            self.lasting(key, now, STALE_READY_GRACE, || message);
        }
        self.forget_except("shared:", &current);
    }

    fn provider_ids_stable(&mut self, stores: &[View<'_>]) {
        for view in stores {
            for mm in view.store.metal_machines.values() {
                let (Some(uid), Some(provider_id)) = (mm.metadata.uid.clone(), mm.spec.provider_id.clone())
                else {
                    continue;
                };
                let first = self.provider_ids.entry(uid).or_insert_with(|| provider_id.clone()).clone();
                if first != provider_id {
                    self.violation(format!(
                        "providerID of {} changed from {first} to {provider_id}",
                        name(&mm.metadata)
                    ));
                }
            }
        }
    }

    /// Nothing is Ready whose machine is gone, not ours, not `Alive` (metal-api's `Unknown`
    /// included) or not provisioned (beyond the refresh grace).
    fn no_stale_ready(&mut self, machines: &[Machine], stores: &[View<'_>], now: Timestamp) {
        let by_id: BTreeMap<&str, &Machine> = machines.iter().map(|m| (m.id.as_str(), m)).collect();
        let mut current = BTreeSet::new();
        for view in stores {
            for mm in view.store.metal_machines.values() {
                let ready =
                    mm.status.as_ref().is_some_and(|s| is_true(&s.conditions, ConditionType::Ready.as_str()));
                let Some(id) = mm.spec.provider_id.as_deref().and_then(|p| ProviderId::parse(p).ok()) else {
                    continue;
                };
                // While paused capms must not touch an object, status included (CAPI's
                // contract); the grace starts when the pause ends.
                if !ready || mm.metadata.deletion_timestamp.is_some() || paused(view.store, mm) {
                    continue;
                }
                let problem =
                    by_id.get(id.machine_id()).map_or(Some(Problem::Missing), |m| Problem::of(m, mm));
                if let Some(problem) = problem {
                    let key =
                        format!("stale:{}:{}", mm.metadata.uid.clone().unwrap_or_default(), id.machine_id());
                    current.insert(key.clone());
                    let message =
                        format!("{} is Ready but machine {} {problem}", name(&mm.metadata), id.machine_id());
                    self.lasting(key, now, STALE_READY_GRACE, || message);
                }
            }
        }
        self.forget_except("stale:", &current);
    }

    /// While a cluster is paused, none of its machines is freed by capms — from the first check
    /// that sees the pause with no object of the cluster holding block-move: until then, passes
    /// that opened their gate before the pause may still finish their writes (the block-move
    /// handshake, `capms_core::glue::gate`; clusterctl waits for exactly that).
    fn nothing_freed_while_paused(
        &mut self,
        machines: &[Machine],
        stores: &[View<'_>],
        external: &BTreeSet<String>,
        now: Timestamp,
    ) {
        let mut paused_now = BTreeMap::new();
        let mut since_now = BTreeMap::new();
        for view in stores {
            for cluster in view.store.clusters.values().filter(|c| c.spec_paused()) {
                let namespace = cluster.metadata.namespace.clone().unwrap_or_default();
                let name = cluster.metadata.name.clone().unwrap_or_default();
                let tag = tags::tag(tags::CLUSTER_ID, &format!("{namespace}.{name}"));
                let settled = self.paused_allocations.contains_key(&tag)
                    || !holds_block_move(view.store, &namespace, &name);
                if !settled {
                    continue;
                }
                let allocated: BTreeSet<String> = machines
                    .iter()
                    .filter(|m| m.allocation.is_some() && m.tags.contains(&tag))
                    .map(|m| m.id.clone())
                    .collect();
                since_now.insert(tag.clone(), self.paused_since.get(&tag).copied().unwrap_or(now));
                paused_now.insert(tag, allocated);
            }
        }
        for (tag, before) in &self.paused_allocations {
            let Some(after) = paused_now.get(tag) else { continue };
            let late = self.sent_before_the_pause(since_now.get(tag).copied().unwrap_or(now), now);
            for freed in before.difference(after).filter(|id| !external.contains(*id)) {
                if late {
                    self.late_frees_while_paused.insert(freed.clone());
                } else {
                    self.violations.push(format!("machine {freed} of paused cluster {tag} was freed"));
                }
            }
        }
        self.paused_allocations = paused_now;
        self.paused_since = since_now;
    }

    /// Whether a free seen at `now` may be a write sent before the pause (checked since
    /// `since`) that metal-api applied late: late writes are in force, and it lands within the
    /// client's timeout and the late spread after the pause.
    fn sent_before_the_pause(&self, since: Timestamp, now: Timestamp) -> bool {
        let window = CLIENT_TIMEOUT + LATE_WRITE_SPREAD;
        self.windows.explain(now) == Some(Unpreventable::LateWrites)
            && now.duration_since(since).unsigned_abs() <= window
    }

    fn user_resources_kept(&mut self, sim: &Sim) {
        let networks: BTreeSet<String> = sim.networks().into_iter().map(|n| n.id).collect();
        let ips: BTreeSet<String> = sim.ips().into_iter().map(|ip| ip.address).collect();
        for network in self.user_networks.difference(&networks).cloned().collect::<Vec<_>>() {
            self.violation(format!("user-provided network {network} was freed"));
        }
        for ip in self.user_ips.difference(&ips).cloned().collect::<Vec<_>>() {
            self.violation(format!("user-provided IP {ip} was freed"));
        }
    }
}

/// What is left in the datacenter tagged for a cluster: machines, IPs and networks.
pub fn leaks(sim: &Sim, namespace: &str, cluster: &str) -> Vec<String> {
    let key = format!("{namespace}.{cluster}");
    let tag = tags::tag(tags::CLUSTER_ID, &key);
    let mut leaks: Vec<String> = sim
        .machines()
        .into_iter()
        .filter(|m| m.allocation.is_some() && m.tags.contains(&tag))
        .map(|m| format!("machine {}", m.id))
        .collect();
    leaks.extend(
        sim.ips().into_iter().filter(|ip| ip.tags.contains(&tag)).map(|ip| format!("ip {}", ip.address)),
    );
    leaks.extend(
        sim.networks()
            .into_iter()
            .filter(|n| n.labels.get(tags::CLUSTER_ID) == Some(&key))
            .map(|n| format!("network {}", n.id)),
    );
    leaks
}

/// Why a Ready object's machine does not back it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Problem {
    Missing,
    NotAllocated,
    AllocatedToAnother,
    NotAlive(Liveliness),
    NotPhonedHome,
}

impl Problem {
    fn of(machine: &Machine, metal_machine: &capms_core::api::MetalStackMachine) -> Option<Problem> {
        if machine.allocation.is_none() {
            Some(Problem::NotAllocated)
        } else if tags::value(&machine.tags, tags::MACHINE_RESOURCE) != Some(key_of(metal_machine).as_str()) {
            Some(Problem::AllocatedToAnother)
        } else if machine.liveliness != Liveliness::Alive {
            Some(Problem::NotAlive(machine.liveliness))
        } else if !machine.is_phoned_home() {
            Some(Problem::NotPhonedHome)
        } else {
            None
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Missing => f.write_str("does not exist"),
            Problem::NotAllocated => f.write_str("is not allocated"),
            Problem::AllocatedToAnother => f.write_str("is allocated to another object"),
            Problem::NotAlive(liveliness) => write!(f, "is not alive (liveliness {})", liveliness.as_str()),
            Problem::NotPhonedHome => f.write_str("has not phoned home"),
        }
    }
}

/// `<namespace>.<name>`, the object's key in tags.
fn key_of(metal_machine: &capms_core::api::MetalStackMachine) -> String {
    let meta = &metal_machine.metadata;
    format!("{}.{}", meta.namespace.clone().unwrap_or_default(), meta.name.clone().unwrap_or_default())
}

/// The `cluster.metal-stack.io/id` tags of the clusters paused in any management cluster.
fn paused_clusters(stores: &[View<'_>]) -> BTreeSet<String> {
    stores
        .iter()
        .flat_map(|view| view.store.clusters.values())
        .filter(|cluster| cluster.spec_paused())
        .map(|cluster| {
            let namespace = cluster.metadata.namespace.clone().unwrap_or_default();
            let name = cluster.metadata.name.clone().unwrap_or_default();
            tags::tag(tags::CLUSTER_ID, &format!("{namespace}.{name}"))
        })
        .collect()
}

/// Whether an object of the cluster `namespace/name` holds block-move.
pub(crate) fn holds_block_move(store: &Store, namespace: &str, name: &str) -> bool {
    let of_cluster = |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        meta.namespace.as_deref() == Some(namespace)
            && capi::label(meta, capi::CLUSTER_NAME_LABEL) == Some(name)
            && capi::has_annotation(meta, capi::BLOCK_MOVE_ANNOTATION)
    };
    store.metal_machines.values().any(|o| of_cluster(&o.metadata))
        || store.metal_clusters.values().any(|o| of_cluster(&o.metadata))
        || store.firewalls.values().any(|o| of_cluster(&o.metadata))
}

/// Whether the cluster of a MetalStackMachine is paused, or the object itself.
fn paused(store: &Store, metal_machine: &capms_core::api::MetalStackMachine) -> bool {
    let namespace = metal_machine.metadata.namespace.clone().unwrap_or_default();
    let cluster = capi::label(&metal_machine.metadata, capi::CLUSTER_NAME_LABEL)
        .and_then(|name| store.get::<capms_core::api::capi::Cluster>(&namespace, name));
    capi::has_annotation(&metal_machine.metadata, capi::PAUSED_ANNOTATION)
        || cluster.is_some_and(|c| c.spec_paused())
}

fn name(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    format!("{}/{}", meta.namespace.clone().unwrap_or_default(), meta.name.clone().unwrap_or_default())
}

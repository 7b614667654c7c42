//! A model of capms-manager: a work queue with requeues, reconciles that run concurrently and
//! interleave at every metal-api call in an order the world's RNG picks, an informer cache
//! that can lag behind the store, status writes that can get lost, and crashes at any await
//! point (in-flight reconciles are dropped, the queue and caches are lost, everything is
//! listed again).

use crate::capi::machines_of;
use crate::store::{Key, Store, StoreError, key_of, owner_reference, set_finalizer};
use async_trait::async_trait;
use capms_core::api::capi::{self, Cluster, Machine};
use capms_core::api::{
    CLUSTER_FINALIZER, FIREWALL_FINALIZER, MACHINE_FINALIZER, MetalStackCluster, MetalStackFirewall,
    MetalStackMachine,
};
use capms_core::backend::BackendResult;
use capms_core::metal::{
    FirewallAllocateRequest, Image, Ip, IpAllocateRequest, IpQuery, Machine as MetalMachine,
    MachineAllocateRequest, MachineQuery, Network, NetworkAllocateRequest, NetworkQuery, Partition, Project,
    Size,
};
use capms_core::reconcile::machine::{Variant, reconcile_machine_variant};
use capms_core::reconcile::{
    BootstrapData, CapiMachineFacts, ClusterFacts, ClusterInput, ClusterOutcome, FinalizerAction,
    FirewallChild, FirewallInput, FirewallOutcome, MachineCache, MachineInput, MachineOutcome,
    MetalClusterFacts, RefreshPolicy, reconcile_cluster, reconcile_firewall,
};
use capms_core::trace::{TraceSink, record_cluster, record_firewall, record_machine};
use capms_core::{MetalBackend, Timestamp, UserData};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// What a reconcile works on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    Cluster(Key),
    Machine(Key),
    Firewall(Key),
}

impl Target {
    /// The object's namespace and name.
    pub fn key(&self) -> &Key {
        match self {
            Target::Cluster(key) | Target::Machine(key) | Target::Firewall(key) => key,
        }
    }
}

/// The outcome of one finished reconcile.
#[derive(Debug)]
pub enum Outcome {
    Cluster(Box<ClusterOutcome>),
    Machine(Box<MachineOutcome>),
    Firewall(Box<FirewallOutcome>),
}

type Reconcile = Pin<Box<dyn Future<Output = Outcome> + Send>>;

struct InFlight {
    target: Target,
    /// The resourceVersion the reconcile read: metadata and spec writes are conditional on it.
    read_version: Option<String>,
    future: Reconcile,
}

/// How long a watch event takes from a write to the informer.
pub const WATCH_LATENCY: std::time::Duration = std::time::Duration::from_millis(100);

/// How soon a reconcile whose write a validation rule refused is retried.
pub const INVALID_RETRY: std::time::Duration = std::time::Duration::from_secs(30);

/// How soon a reconcile whose status write failed is retried.
pub const STATUS_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

/// Knobs of the operator model.
#[derive(Debug, Clone, Copy)]
pub struct OperatorConfig {
    /// Reconciles in flight at once.
    pub concurrency: usize,
    pub refresh: RefreshPolicy,
    /// The machine reconciler to run; only the canary test picks a broken one.
    pub variant: Variant,
}

impl Default for OperatorConfig {
    fn default() -> Self {
        OperatorConfig { concurrency: 4, refresh: RefreshPolicy::default(), variant: Variant::Correct }
    }
}

/// Counters the world reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OperatorStats {
    pub reconciles: u64,
    pub conflicts: u64,
    pub lost_status_writes: u64,
    pub crashes: u64,
    pub events: u64,
}

/// One capms-manager replica.
pub struct Operator {
    config: OperatorConfig,
    backend: Arc<dyn MetalBackend>,
    cache: Arc<MachineCache>,
    queue: BTreeMap<(Timestamp, u64), Target>,
    due: BTreeMap<Target, Timestamp>,
    sequence: u64,
    in_flight: Vec<InFlight>,
    /// The informer cache: what this replica believes the store holds.
    pub view: Store,
    seen: BTreeMap<Target, Option<String>>,
    pub stats: OperatorStats,
    /// Where reconciles are recorded (`capms-sim run --record`); `None`: not recorded.
    trace: Option<Arc<dyn TraceSink>>,
}

impl std::fmt::Debug for Operator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let in_flight: Vec<&Target> = self.in_flight.iter().map(|f| &f.target).collect();
        let next: Vec<&Target> = self.queue.values().take(3).collect();
        f.debug_struct("Operator")
            .field("queued", &self.queue.len())
            .field("next", &next)
            .field("in_flight", &in_flight)
            .finish()
    }
}

impl Operator {
    pub fn new(config: OperatorConfig, backend: Arc<dyn MetalBackend>) -> Self {
        Operator {
            config,
            backend: Arc::new(Yielding { inner: backend }),
            cache: Arc::new(MachineCache::new(config.refresh)),
            queue: BTreeMap::new(),
            due: BTreeMap::new(),
            sequence: 0,
            in_flight: Vec::new(),
            view: Store::default(),
            seen: BTreeMap::new(),
            stats: OperatorStats::default(),
            trace: None,
        }
    }

    /// Records every reconcile from now on into `sink` (`None` stops recording).
    pub fn set_trace(&mut self, sink: Option<Arc<dyn TraceSink>>) {
        self.trace = sink;
    }

    /// [`Operator::set_trace`] for a replica being built.
    pub fn recording(mut self, sink: Option<Arc<dyn TraceSink>>) -> Self {
        self.trace = sink;
        self
    }

    /// Loses everything in memory: in-flight reconciles (their metal-api calls so far stay
    /// done), the queue, the caches. The next sync lists everything again.
    pub fn crash(&mut self) {
        self.in_flight.clear();
        self.queue.clear();
        self.due.clear();
        self.seen.clear();
        self.view = Store::default();
        self.cache = Arc::new(MachineCache::new(self.config.refresh));
        self.stats.crashes += 1;
    }

    /// Refreshes the informer cache from the store and enqueues what changed (the watches).
    pub fn sync(&mut self, store: &Store, now: Timestamp) {
        self.view = store.clone();
        let current = versions(store);
        let changed: Vec<Target> = current
            .iter()
            .filter(|(target, version)| self.seen.get(*target) != Some(version))
            .map(|(t, _)| t.clone())
            .collect();
        // Watch events arrive a little later than the write that caused them, so that two
        // writers that keep undoing each other (two replicas) make virtual time pass.
        let at = now.checked_add(WATCH_LATENCY).unwrap_or(now);
        for target in changed {
            for related in related_targets(store, &target) {
                self.enqueue(related, at);
            }
            self.enqueue(target, at);
        }
        self.seen = current;
    }

    fn enqueue(&mut self, target: Target, at: Timestamp) {
        if let Some(existing) = self.due.get(&target) {
            if *existing <= at {
                return;
            }
            self.queue.retain(|_, queued| queued != &target);
        }
        self.sequence += 1;
        self.queue.insert((at, self.sequence), target.clone());
        self.due.insert(target, at);
    }

    /// When the next queued reconcile is due.
    pub fn next_due(&self) -> Option<Timestamp> {
        self.queue.keys().next().map(|(at, _)| *at)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Starts due reconciles up to the concurrency limit. A target already in flight waits.
    pub fn start_due(&mut self, now: Timestamp, jitter: &mut impl FnMut() -> u64) {
        while self.in_flight.len() < self.config.concurrency.max(1) {
            let Some(((at, seq), target)) = self.queue.first_key_value().map(|(k, t)| (*k, t.clone())) else {
                break;
            };
            if at > now {
                break;
            }
            if self.in_flight.iter().any(|f| f.target == target) {
                break;
            }
            self.queue.remove(&(at, seq));
            self.due.remove(&target);
            if let Some(in_flight) = self.start(&target, now, jitter()) {
                self.in_flight.push(in_flight);
            }
        }
    }

    fn start(&mut self, target: &Target, now: Timestamp, jitter: u64) -> Option<InFlight> {
        self.stats.reconciles += 1;
        let backend = self.backend.clone();
        let trace = self.trace.clone();
        match target {
            Target::Machine(key) => {
                let metal_machine = self.view.get::<MetalStackMachine>(&key.0, &key.1)?.clone();
                let facts = machine_facts(&self.view, &metal_machine);
                let cache = self.cache.clone();
                let variant = self.config.variant;
                let read_version = metal_machine.metadata.resource_version.clone();
                let future = Box::pin(async move {
                    let input = MachineInput {
                        metal_machine: &metal_machine,
                        capi_machine: facts.capi_machine.as_ref(),
                        cluster: facts.cluster.as_ref(),
                        metal_cluster: facts.metal_cluster.as_ref(),
                        bootstrap: &facts.bootstrap,
                        now,
                        jitter,
                    };
                    Outcome::Machine(Box::new(match &trace {
                        Some(sink) => {
                            record_machine(&input, backend.as_ref(), &cache, variant, sink.as_ref()).await
                        }
                        None => {
                            reconcile_machine_variant(&input, backend.as_ref(), cache.as_ref(), variant).await
                        }
                    }))
                });
                Some(InFlight { target: target.clone(), read_version, future })
            }
            Target::Cluster(key) => {
                let metal_cluster = self.view.get::<MetalStackCluster>(&key.0, &key.1)?.clone();
                let cluster =
                    owner_cluster(&self.view, &metal_cluster.metadata).map(|c| ClusterFacts::of(&c));
                let machines_remaining = metal_machines_of_cluster(&self.view, &metal_cluster).len();
                let firewall_name = capms_core::reconcile::cluster::firewall_name(&metal_cluster);
                let firewall = self.view.get::<MetalStackFirewall>(&key.0, &firewall_name).cloned();
                let read_version = metal_cluster.metadata.resource_version.clone();
                let future = Box::pin(async move {
                    let input = ClusterInput {
                        metal_cluster: &metal_cluster,
                        cluster: cluster.as_ref(),
                        machines_remaining,
                        firewall: firewall.as_ref(),
                        now,
                        jitter,
                    };
                    Outcome::Cluster(Box::new(match &trace {
                        Some(sink) => record_cluster(&input, backend.as_ref(), sink.as_ref()).await,
                        None => reconcile_cluster(&input, backend.as_ref()).await,
                    }))
                });
                Some(InFlight { target: target.clone(), read_version, future })
            }
            Target::Firewall(key) => {
                let firewall = self.view.get::<MetalStackFirewall>(&key.0, &key.1)?.clone();
                let metal_cluster = owner_metal_cluster(&self.view, &firewall.metadata);
                let cluster = metal_cluster
                    .as_ref()
                    .and_then(|mc| owner_cluster(&self.view, &mc.metadata))
                    .map(|c| ClusterFacts::of(&c));
                let metal_facts = metal_cluster.as_ref().map(MetalClusterFacts::of);
                let read_version = firewall.metadata.resource_version.clone();
                let future = Box::pin(async move {
                    let input = FirewallInput {
                        firewall: &firewall,
                        cluster: cluster.as_ref(),
                        metal_cluster: metal_facts.as_ref(),
                        now,
                        jitter,
                    };
                    Outcome::Firewall(Box::new(match &trace {
                        Some(sink) => record_firewall(&input, backend.as_ref(), sink.as_ref()).await,
                        None => reconcile_firewall(&input, backend.as_ref()).await,
                    }))
                });
                Some(InFlight { target: target.clone(), read_version, future })
            }
        }
    }

    /// Advances one in-flight reconcile (the one at `index`, modulo the count) to its next
    /// metal-api call or to its end. Returns the finished reconcile's outcome.
    pub fn poll(&mut self, index: usize) -> Option<(Target, Option<String>, Outcome)> {
        if self.in_flight.is_empty() {
            return None;
        }
        let index = index % self.in_flight.len();
        let mut context = Context::from_waker(futures::task::noop_waker_ref());
        match self.in_flight[index].future.as_mut().poll(&mut context) {
            Poll::Pending => None,
            Poll::Ready(outcome) => {
                let finished = self.in_flight.swap_remove(index);
                Some((finished.target, finished.read_version, outcome))
            }
        }
    }

    /// Applies a finished reconcile to the store as capms-manager would, and requeues.
    pub fn apply(
        &mut self,
        store: &mut Store,
        finished: (Target, Option<String>, Outcome),
        now: Timestamp,
        lose_status: bool,
    ) -> Vec<String> {
        let (target, read_version, outcome) = finished;
        let mut notes = Vec::new();
        let requeue = match (&target, outcome) {
            (Target::Machine(key), Outcome::Machine(outcome)) => {
                self.apply_machine(store, key, read_version, &outcome, lose_status, now, &mut notes);
                outcome.requeue
            }
            (Target::Cluster(key), Outcome::Cluster(outcome)) => {
                self.apply_cluster(store, key, read_version, &outcome, lose_status, now, &mut notes);
                outcome.requeue
            }
            (Target::Firewall(key), Outcome::Firewall(outcome)) => {
                self.apply_firewall(store, key, read_version, &outcome, lose_status, now, &mut notes);
                outcome.requeue
            }
            _ => None,
        };
        if let Some(after) = requeue {
            let at = now.checked_add(after).unwrap_or(now);
            self.enqueue(target, at);
        }
        notes
    }

    #[allow(clippy::too_many_arguments)]
    fn apply_machine(
        &mut self,
        store: &mut Store,
        key: &Key,
        read_version: Option<String>,
        outcome: &MachineOutcome,
        lose_status: bool,
        now: Timestamp,
        notes: &mut Vec<String>,
    ) {
        self.record_events(key, &outcome.events, notes);
        let Some(mut object) = store.get::<MetalStackMachine>(&key.0, &key.1).cloned() else { return };
        let spec_changed = outcome.provider_id.is_some() && object.spec.provider_id.is_none();
        let metadata_changed =
            apply_metadata(&mut object.metadata, MACHINE_FINALIZER, outcome.finalizer, &outcome.labels);
        if spec_changed {
            object.spec.provider_id = outcome.provider_id.clone();
        }
        let mut version = read_version.clone();
        if spec_changed || metadata_changed {
            let target = Target::Machine(key.clone());
            match self.write_object(store, object, read_version, spec_changed, target, now, notes) {
                Some(written) => version = written,
                None => return,
            }
        }
        if outcome.finalizer == FinalizerAction::Remove {
            return;
        }
        self.write_status(Target::Machine(key.clone()), now, lose_status, notes, || {
            store.write_status::<MetalStackMachine>(&key.0, &key.1, version.as_deref(), |m| {
                m.status = Some(outcome.status.clone())
            })
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn apply_cluster(
        &mut self,
        store: &mut Store,
        key: &Key,
        read_version: Option<String>,
        outcome: &ClusterOutcome,
        lose_status: bool,
        now: Timestamp,
        notes: &mut Vec<String>,
    ) {
        self.record_events(key, &outcome.events, notes);
        let Some(mut object) = store.get::<MetalStackCluster>(&key.0, &key.1).cloned() else { return };
        let mut spec_changed = false;
        if let Some(id) = &outcome.node_network_id {
            spec_changed |= object.spec.node_network_id.replace(id.clone()).as_ref() != Some(id);
        }
        if let Some(ip) = &outcome.control_plane_ip {
            spec_changed |= object.spec.control_plane_ip.replace(ip.clone()).as_ref() != Some(ip);
        }
        if let Some(endpoint) = &outcome.control_plane_endpoint {
            spec_changed |=
                object.spec.control_plane_endpoint.replace(endpoint.clone()).as_ref() != Some(endpoint);
        }
        let metadata_changed =
            apply_metadata(&mut object.metadata, CLUSTER_FINALIZER, outcome.finalizer, &BTreeMap::new());
        let owner = object.clone();
        let mut version = read_version.clone();
        if spec_changed || metadata_changed {
            let target = Target::Cluster(key.clone());
            match self.write_object(store, object, read_version, spec_changed, target, now, notes) {
                Some(written) => version = written,
                None => return,
            }
        }
        apply_firewall_child(store, &owner, &outcome.firewall, now);
        if outcome.finalizer == FinalizerAction::Remove || !outcome.write_status {
            return;
        }
        self.write_status(Target::Cluster(key.clone()), now, lose_status, notes, || {
            store.write_status::<MetalStackCluster>(&key.0, &key.1, version.as_deref(), |c| {
                c.status = Some(outcome.status.clone())
            })
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn apply_firewall(
        &mut self,
        store: &mut Store,
        key: &Key,
        read_version: Option<String>,
        outcome: &FirewallOutcome,
        lose_status: bool,
        now: Timestamp,
        notes: &mut Vec<String>,
    ) {
        self.record_events(key, &outcome.events, notes);
        let Some(mut object) = store.get::<MetalStackFirewall>(&key.0, &key.1).cloned() else { return };
        let spec_changed = outcome.provider_id.is_some() && object.spec.provider_id.is_none();
        if spec_changed {
            object.spec.provider_id = outcome.provider_id.clone();
        }
        let metadata_changed =
            apply_metadata(&mut object.metadata, FIREWALL_FINALIZER, outcome.finalizer, &BTreeMap::new());
        let mut version = read_version.clone();
        if spec_changed || metadata_changed {
            let target = Target::Firewall(key.clone());
            match self.write_object(store, object, read_version, spec_changed, target, now, notes) {
                Some(written) => version = written,
                None => return,
            }
        }
        if outcome.finalizer == FinalizerAction::Remove {
            return;
        }
        self.write_status(Target::Firewall(key.clone()), now, lose_status, notes, || {
            store.write_status::<MetalStackFirewall>(&key.0, &key.1, version.as_deref(), |f| {
                f.status = Some(outcome.status.clone())
            })
        });
    }

    fn record_events(&mut self, key: &Key, events: &[capms_core::reconcile::Event], notes: &mut Vec<String>) {
        self.stats.events += events.len() as u64;
        for event in events {
            notes.push(format!("event {}/{} {}: {}", key.0, key.1, event.reason, event.message));
        }
    }

    /// Writes metadata and spec changes, conditional on the resourceVersion the reconcile
    /// read. Returns the object's new resourceVersion, or `None` if the write was refused (a
    /// refused write requeues).
    #[allow(clippy::too_many_arguments)]
    fn write_object<T: crate::store::Stored>(
        &mut self,
        store: &mut Store,
        mut object: T,
        read_version: Option<String>,
        spec_changed: bool,
        target: Target,
        now: Timestamp,
        notes: &mut Vec<String>,
    ) -> Option<Option<String>> {
        let key = key_of(object.meta());
        object.meta_mut().resource_version = read_version;
        match store.update(object, spec_changed) {
            Ok(written) => Some(written.meta().resource_version.clone()),
            Err(error) => {
                self.conflict(&key, target, &error, now, notes);
                None
            }
        }
    }

    fn conflict(
        &mut self,
        key: &Key,
        target: Target,
        error: &StoreError,
        now: Timestamp,
        notes: &mut Vec<String>,
    ) {
        // A conflict is retried at once with a fresh read (what a controller does on 409);
        // anything else (422 from a validation rule) backs off.
        self.stats.conflicts += 1;
        notes.push(format!("write of {}/{} refused: {error}", key.0, key.1));
        let retry = if *error == StoreError::Conflict { std::time::Duration::ZERO } else { INVALID_RETRY };
        self.enqueue(target, now.checked_add(retry).unwrap_or(now));
    }

    /// Writes a status. A lost write is a failed request to capms-manager (an apiserver
    /// timeout): the reconcile is retried after [`STATUS_RETRY`]. A write refused because the
    /// object changed since the reconcile read it is a conflict, retried at once.
    fn write_status(
        &mut self,
        target: Target,
        now: Timestamp,
        lose: bool,
        notes: &mut Vec<String>,
        write: impl FnOnce() -> Result<(), StoreError>,
    ) {
        if lose {
            self.stats.lost_status_writes += 1;
            notes.push("status write lost".to_string());
            self.enqueue(target, now.checked_add(STATUS_RETRY).unwrap_or(now));
            return;
        }
        if let Err(StoreError::Conflict) = write() {
            let key = target.key().clone();
            self.conflict(&key, target, &StoreError::Conflict, now, notes);
        }
    }
}

/// Applies the finalizer decision and labels; returns whether anything changed.
fn apply_metadata(
    meta: &mut ObjectMeta,
    finalizer: &str,
    action: FinalizerAction,
    labels: &BTreeMap<String, String>,
) -> bool {
    let mut changed = false;
    match action {
        FinalizerAction::Add if !crate::store::has_finalizer(meta, finalizer) => {
            set_finalizer(meta, finalizer, true);
            changed = true;
        }
        FinalizerAction::Remove if crate::store::has_finalizer(meta, finalizer) => {
            set_finalizer(meta, finalizer, false);
            changed = true;
        }
        _ => {}
    }
    let current = meta.labels.get_or_insert_with(BTreeMap::new);
    for (key, value) in labels {
        if current.get(key) != Some(value) {
            current.insert(key.clone(), value.clone());
            changed = true;
        }
    }
    changed
}

fn apply_firewall_child(store: &mut Store, owner: &MetalStackCluster, child: &FirewallChild, now: Timestamp) {
    let namespace = owner.metadata.namespace.clone().unwrap_or_default();
    match child {
        FirewallChild::Keep => {}
        FirewallChild::Ensure { name, spec } => {
            if store.get::<MetalStackFirewall>(&namespace, name).is_some() {
                return;
            }
            let labels = owner.metadata.labels.clone();
            let firewall = MetalStackFirewall {
                metadata: ObjectMeta {
                    namespace: Some(namespace),
                    name: Some(name.clone()),
                    labels,
                    owner_references: Some(vec![owner_reference(owner, true)]),
                    ..ObjectMeta::default()
                },
                spec: spec.clone(),
                status: None,
            };
            let _ = store.create(firewall, now);
        }
        FirewallChild::Delete { name } => {
            let _ = store.delete::<MetalStackFirewall>(&namespace, name, now);
        }
    }
}

/// The resourceVersion of every object the operator reconciles, plus the objects whose
/// changes it watches (Clusters, Machines, Secrets map onto their cluster's targets).
fn versions(store: &Store) -> BTreeMap<Target, Option<String>> {
    let mut versions = BTreeMap::new();
    for mm in store.metal_machines.values() {
        versions.insert(Target::Machine(key_of(&mm.metadata)), mm.metadata.resource_version.clone());
    }
    for mc in store.metal_clusters.values() {
        versions.insert(Target::Cluster(key_of(&mc.metadata)), mc.metadata.resource_version.clone());
    }
    for fw in store.firewalls.values() {
        versions.insert(Target::Firewall(key_of(&fw.metadata)), fw.metadata.resource_version.clone());
    }
    // Clusters, Machines and Secrets are folded into the cluster's version: any change to
    // them re-triggers the cluster's objects, as the watches on them do.
    for cluster in store.clusters.values() {
        let key = key_of(&cluster.metadata);
        let mut combined = cluster.metadata.resource_version.clone().unwrap_or_default();
        for machine in machines_of(store, &key.0, &key.1) {
            combined.push('/');
            combined.push_str(machine.metadata.resource_version.as_deref().unwrap_or_default());
        }
        let Some(mc) = cluster
            .spec
            .infrastructure_ref
            .as_ref()
            .and_then(|r| store.get::<MetalStackCluster>(&key.0, &r.name))
        else {
            continue;
        };
        let target = Target::Cluster(key_of(&mc.metadata));
        let own = versions.get(&target).cloned().flatten().unwrap_or_default();
        versions.insert(target, Some(format!("{own}|{combined}")));
    }
    versions
}

/// Objects a change to `target` concerns (the mappings of capms-manager's watches).
fn related_targets(store: &Store, target: &Target) -> Vec<Target> {
    match target {
        Target::Cluster(key) => {
            let Some(mc) = store.get::<MetalStackCluster>(&key.0, &key.1) else { return Vec::new() };
            let mut related: Vec<Target> = metal_machines_of_cluster(store, mc)
                .iter()
                .map(|m| Target::Machine(key_of(&m.metadata)))
                .collect();
            let firewall = capms_core::reconcile::cluster::firewall_name(mc);
            if store.get::<MetalStackFirewall>(&key.0, &firewall).is_some() {
                related.push(Target::Firewall((key.0.clone(), firewall)));
            }
            related
        }
        Target::Machine(key) => {
            let mm = store.get::<MetalStackMachine>(&key.0, &key.1);
            let cluster =
                mm.and_then(|mm| capi::label(&mm.metadata, capi::CLUSTER_NAME_LABEL).map(str::to_string));
            cluster_metal_cluster(store, &key.0, cluster.as_deref())
                .map(Target::Cluster)
                .into_iter()
                .collect()
        }
        Target::Firewall(key) => store
            .get::<MetalStackFirewall>(&key.0, &key.1)
            .and_then(|fw| owner_metal_cluster(store, &fw.metadata))
            .map(|mc| Target::Cluster(key_of(&mc.metadata)))
            .into_iter()
            .collect(),
    }
}

fn cluster_metal_cluster(store: &Store, namespace: &str, cluster: Option<&str>) -> Option<Key> {
    let cluster = store.get::<Cluster>(namespace, cluster?)?;
    let name = cluster.spec.infrastructure_ref.as_ref()?.name.clone();
    Some((namespace.to_string(), name))
}

/// MetalStackMachines labelled with the MetalStackCluster's cluster.
pub fn metal_machines_of_cluster<'a>(
    store: &'a Store,
    metal_cluster: &MetalStackCluster,
) -> Vec<&'a MetalStackMachine> {
    let namespace = metal_cluster.metadata.namespace.clone().unwrap_or_default();
    let cluster = capi::label(&metal_cluster.metadata, capi::CLUSTER_NAME_LABEL).map(str::to_string);
    store
        .metal_machines
        .values()
        .filter(|mm| mm.metadata.namespace.as_deref() == Some(namespace.as_str()))
        .filter(|mm| capi::label(&mm.metadata, capi::CLUSTER_NAME_LABEL).map(str::to_string) == cluster)
        .collect()
}

fn owner_named<'a, T: crate::store::Stored>(
    store: &'a Store,
    meta: &ObjectMeta,
    kind: &str,
) -> Option<&'a T> {
    let owner = meta.owner_references.as_ref()?.iter().find(|r| r.kind == kind)?;
    let object = store.get::<T>(meta.namespace.as_deref().unwrap_or_default(), &owner.name)?;
    (object.meta().uid.as_deref() == Some(owner.uid.as_str())).then_some(object)
}

fn owner_cluster(store: &Store, meta: &ObjectMeta) -> Option<Cluster> {
    owner_named::<Cluster>(store, meta, "Cluster").cloned()
}

fn owner_metal_cluster(store: &Store, meta: &ObjectMeta) -> Option<MetalStackCluster> {
    owner_named::<MetalStackCluster>(store, meta, "MetalStackCluster").cloned()
}

struct MachineFacts {
    capi_machine: Option<CapiMachineFacts>,
    cluster: Option<ClusterFacts>,
    metal_cluster: Option<MetalClusterFacts>,
    bootstrap: BootstrapData,
}

fn machine_facts(store: &Store, metal_machine: &MetalStackMachine) -> MachineFacts {
    let machine: Option<Machine> = owner_named::<Machine>(store, &metal_machine.metadata, "Machine").cloned();
    let namespace = metal_machine.metadata.namespace.clone().unwrap_or_default();
    let cluster =
        machine.as_ref().and_then(|m| store.get::<Cluster>(&namespace, &m.spec.cluster_name)).cloned();
    let metal_cluster = cluster
        .as_ref()
        .and_then(|c| c.spec.infrastructure_ref.as_ref())
        .and_then(|r| store.get::<MetalStackCluster>(&namespace, &r.name));
    MachineFacts {
        capi_machine: machine.as_ref().map(|m| CapiMachineFacts {
            name: m.metadata.name.clone().unwrap_or_default(),
            control_plane: m.is_control_plane(),
        }),
        cluster: cluster.as_ref().map(ClusterFacts::of),
        metal_cluster: metal_cluster.map(MetalClusterFacts::of),
        bootstrap: bootstrap_data(store, &namespace, machine.as_ref()),
    }
}

fn bootstrap_data(store: &Store, namespace: &str, machine: Option<&Machine>) -> BootstrapData {
    let Some(secret_name) = machine.and_then(|m| m.data_secret_name()) else {
        return BootstrapData::NotReady;
    };
    let Some(secret) = store.get::<k8s_openapi::api::core::v1::Secret>(namespace, secret_name) else {
        return BootstrapData::SecretMissing { secret: secret_name.to_string() };
    };
    match secret.data.as_ref().and_then(|data| data.get("value")) {
        Some(value) => BootstrapData::Present(UserData::new(String::from_utf8_lossy(&value.0).into_owned())),
        None => BootstrapData::ValueMissing { secret: secret_name.to_string() },
    }
}

/// A future that is pending exactly once: the point where the world may switch to another
/// reconcile.
struct YieldNow(bool);

impl Future for YieldNow {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            Poll::Pending
        }
    }
}

/// Makes every metal-api call an await point at which the world interleaves reconciles.
struct Yielding {
    inner: Arc<dyn MetalBackend>,
}

macro_rules! yielding {
    ($( fn $name:ident(&self $(, $arg:ident: $type:ty)*) -> $out:ty; )*) => {
        #[async_trait]
        impl MetalBackend for Yielding {
            $(
                async fn $name(&self $(, $arg: $type)*) -> BackendResult<$out> {
                    YieldNow(false).await;
                    self.inner.$name($($arg),*).await
                }
            )*
        }
    };
}

yielding! {
    fn allocate_machine(&self, request: &MachineAllocateRequest) -> MetalMachine;
    fn get_machine(&self, machine_id: &str) -> MetalMachine;
    fn find_machines(&self, query: &MachineQuery) -> Vec<MetalMachine>;
    fn free_machine(&self, machine_id: &str) -> MetalMachine;
    fn allocate_firewall(&self, request: &FirewallAllocateRequest) -> MetalMachine;
    fn get_firewall(&self, machine_id: &str) -> MetalMachine;
    fn find_firewalls(&self, query: &MachineQuery) -> Vec<MetalMachine>;
    fn allocate_network(&self, request: &NetworkAllocateRequest) -> Network;
    fn get_network(&self, network_id: &str) -> Network;
    fn find_networks(&self, query: &NetworkQuery) -> Vec<Network>;
    fn free_network(&self, network_id: &str) -> Network;
    fn allocate_ip(&self, request: &IpAllocateRequest) -> Ip;
    fn allocate_specific_ip(&self, address: &str, request: &IpAllocateRequest) -> Ip;
    fn get_ip(&self, address: &str) -> Ip;
    fn find_ips(&self, query: &IpQuery) -> Vec<Ip>;
    fn free_ip(&self, address: &str) -> Ip;
    fn get_partition(&self, partition_id: &str) -> Partition;
    fn list_partitions(&self) -> Vec<Partition>;
    fn get_size(&self, size_id: &str) -> Size;
    fn list_sizes(&self) -> Vec<Size>;
    fn get_image(&self, image_id: &str) -> Image;
    fn list_images(&self) -> Vec<Image>;
    fn get_project(&self, project_id: &str) -> Project;
}

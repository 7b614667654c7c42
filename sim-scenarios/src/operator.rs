//! A model of what Kubernetes and kube-runtime do around capms-manager's glue: a work queue
//! with requeues, watch events that reach an informer view late (or, under stale reads, not
//! yet), reconciles that run concurrently and interleave at every metal-api call in an order the
//! world's RNG picks, status writes that can get lost, and crashes at any await point
//! (in-flight reconciles are dropped, the queue and caches are lost, everything is listed
//! again).
//!
//! What capms-manager itself does around a reconcile — gathering inputs, the block-move
//! handshake, planning and executing writes, mapping watch events to reconciles, backing off
//! failures — is not modelled here: it is core's glue ([`capms_core::glue`]), the code
//! capms-manager runs. This module only gives it a store to read ([`Store`] implements
//! [`glue::Objects`]), to write ([`StoreWriter`]) and to reach live in the middle of a pass
//! ([`LiveStore`], the gate's apiserver: its requests are served between two slices of the
//! pass, so that other writers interleave with the handshake).

use crate::store::{Key, Store, StoreError, Stored, key_of};
use async_trait::async_trait;
use capms_core::api::{MetalStackCluster, MetalStackFirewall, MetalStackMachine};
use capms_core::backend::BackendResult;
use capms_core::glue::{self, Changed, Gate, Kind, ObjectKey, Reconciled, Settled, Target, WriteError};
use capms_core::reconcile::machine::Variant;
use capms_core::reconcile::{
    ClusterFacts, ClusterInput, ClusterOutcome, Event, FirewallInput, FirewallOutcome, MachineCache,
    MachineInput, MachineOutcome, MetalClusterFacts, RefreshPolicy,
};
use capms_core::trace::TraceSink;
use capms_core::{MetalBackend, Timestamp};
use futures::FutureExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

/// The outcome of one finished reconcile, with the object as the reconcile read it (its writes
/// are conditional on that version, or the one its gate wrote) and, for a cluster, its firewall
/// child as it saw it.
#[derive(Debug)]
pub enum Outcome {
    Cluster(Arc<MetalStackCluster>, Option<Arc<MetalStackFirewall>>, Box<ClusterOutcome>, Settled),
    Machine(Arc<MetalStackMachine>, Box<MachineOutcome>, Settled),
    Firewall(Arc<MetalStackFirewall>, Box<FirewallOutcome>, Settled),
}

type Reconcile = Pin<Box<dyn Future<Output = Outcome> + Send>>;

struct InFlight {
    target: Target,
    future: Reconcile,
    /// The pass's live requests to the store (its gate's).
    live: Arc<LiveStore>,
}

/// A live request of a pass's gate to the store.
#[derive(Debug)]
#[allow(clippy::large_enum_variant, reason = "a mailbox holds at most one request: size is irrelevant")]
enum Request {
    Patch { target: Target, read: ObjectMeta, patch: glue::ObjectPatch },
    ClusterPaused(ObjectKey),
}

#[derive(Debug)]
#[allow(clippy::large_enum_variant, reason = "a mailbox holds at most one answer: size is irrelevant")]
enum Answer {
    Patch(Result<ObjectMeta, WriteError>),
    ClusterPaused(Result<bool, WriteError>),
}

#[derive(Debug, Default)]
struct Mailbox {
    request: Option<Request>,
    answer: Option<Answer>,
}

/// The gate's [`glue::Apiserver`] in the simulator: a request waits in the mailbox until the
/// world serves it against the store ([`Operator::poll`]), between two slices of the pass.
#[derive(Debug, Default)]
pub struct LiveStore {
    mailbox: Mutex<Mailbox>,
}

impl LiveStore {
    fn mailbox(&self) -> std::sync::MutexGuard<'_, Mailbox> {
        self.mailbox.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn ask(&self, request: Request) -> Answer {
        self.mailbox().request = Some(request);
        std::future::poll_fn(|_| match self.mailbox().answer.take() {
            Some(answer) => Poll::Ready(answer),
            None => Poll::Pending,
        })
        .await
    }

    /// Serves the waiting request, if any.
    fn serve(&self, store: &mut Store) {
        let Some(request) = self.mailbox().request.take() else { return };
        let answer = match request {
            Request::Patch { target, read, patch } => {
                let key = &target.key;
                let version = read.resource_version.as_deref();
                Answer::Patch(match target.kind {
                    Kind::Machine => patch_stored::<MetalStackMachine>(store, key, version, &patch),
                    Kind::Cluster => patch_stored::<MetalStackCluster>(store, key, version, &patch),
                    Kind::Firewall => patch_stored::<MetalStackFirewall>(store, key, version, &patch),
                })
            }
            Request::ClusterPaused(key) => {
                let cluster = store.clusters.get(&key.namespace, &key.name);
                Answer::ClusterPaused(Ok(cluster.is_some_and(|cluster| cluster.spec_paused())))
            }
        };
        self.mailbox().answer = Some(answer);
    }
}

/// A mismatched answer: the mailbox holds one request at a time, so it never happens.
fn mismatched<T>() -> Result<T, WriteError> {
    Err(WriteError::Unavailable("the simulated apiserver answered another request".to_string()))
}

#[async_trait]
impl glue::Apiserver for LiveStore {
    async fn patch(
        &self,
        target: &Target,
        read: &ObjectMeta,
        patch: &glue::ObjectPatch,
    ) -> Result<ObjectMeta, WriteError> {
        let request = Request::Patch { target: target.clone(), read: read.clone(), patch: patch.clone() };
        match self.ask(request).await {
            Answer::Patch(result) => result,
            Answer::ClusterPaused(_) => mismatched(),
        }
    }

    async fn cluster_paused(&self, cluster: &ObjectKey) -> Result<bool, WriteError> {
        match self.ask(Request::ClusterPaused(cluster.clone())).await {
            Answer::ClusterPaused(result) => result,
            Answer::Patch(_) => mismatched(),
        }
    }
}

/// Writes `patch` to the stored `K` at `key` if it is still at `version`; answers its
/// metadata as written.
fn patch_stored<K: Reconciled + Stored>(
    store: &mut Store,
    key: &ObjectKey,
    version: Option<&str>,
    patch: &glue::ObjectPatch,
) -> Result<ObjectMeta, WriteError> {
    let current = store.get::<K>(&key.namespace, &key.name).ok_or(WriteError::Gone)?;
    if current.meta().resource_version.as_deref() != version {
        return Err(WriteError::Conflict);
    }
    let mut updated = current.clone();
    patch.apply_to(&mut updated).map_err(|error| WriteError::Invalid(error.to_string()))?;
    let written = store.update(updated, patch.changes_spec()).map_err(write_error)?;
    Ok(written.meta().clone())
}

/// What a pass starts from: its time, its jitter, its live line to the store.
struct Pass {
    now: Timestamp,
    jitter: u64,
    live: Arc<LiveStore>,
}

/// A reconcile that finished its metal-api calls.
#[derive(Debug)]
pub struct Finished {
    target: Target,
    outcome: Outcome,
}

/// How long a watch event takes from a write to the informer.
pub const WATCH_LATENCY: std::time::Duration = std::time::Duration::from_millis(100);

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
    /// The replica's name in block-move holds.
    replica: String,
    backend: Arc<dyn MetalBackend>,
    cache: Arc<MachineCache>,
    queue: BTreeMap<(Timestamp, u64), Target>,
    due: BTreeMap<Target, Timestamp>,
    sequence: u64,
    in_flight: Vec<InFlight>,
    /// The informer cache: what this replica believes the store holds.
    pub view: Store,
    /// The store revision the view was taken at (`None`: never synced).
    synced: Option<u64>,
    /// The resourceVersion and [`glue::triggers::fingerprint`] of every object the watches
    /// have delivered.
    seen: BTreeMap<(crate::store::Kind, Key), (Option<String>, u64)>,
    /// Failures in a row per object (the glue's retry policy).
    backoff: glue::Backoff<Target>,
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
    /// Replica `replica` (its name in block-move holds).
    pub fn new(config: OperatorConfig, backend: Arc<dyn MetalBackend>, replica: &str) -> Self {
        Operator {
            config,
            replica: replica.to_string(),
            backend: Arc::new(Yielding { inner: backend }),
            cache: Arc::new(MachineCache::new(config.refresh)),
            queue: BTreeMap::new(),
            due: BTreeMap::new(),
            sequence: 0,
            in_flight: Vec::new(),
            view: Store::default(),
            synced: None,
            seen: BTreeMap::new(),
            backoff: glue::Backoff::default(),
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
        self.synced = None;
        self.view = Store::default();
        self.backoff.clear();
        self.cache = Arc::new(MachineCache::new(self.config.refresh));
        self.stats.crashes += 1;
    }

    /// Whether the informer has listed since the operator (re)started: a restart's first list
    /// is fresh, only the watch that follows it can lag.
    pub fn listed(&self) -> bool {
        self.synced.is_some()
    }

    /// Refreshes the informer view from the store and enqueues what the watches of changed
    /// objects trigger (core's [`glue::triggers`]; a new version whose fingerprint is the old
    /// one's triggers nothing). Nothing to do if the store did not change.
    pub fn sync(&mut self, store: &Store, now: Timestamp) {
        if self.synced == Some(store.revision) {
            return;
        }
        self.synced = Some(store.revision);
        self.view = store.clone();
        // Watch events arrive a little later than the write that caused them, so that two
        // writers that keep undoing each other (two replicas) make virtual time pass.
        let at = now.checked_add(WATCH_LATENCY).unwrap_or(now);
        let mut seen = BTreeMap::new();
        let mut triggered = Vec::new();
        let mut watch = |kind: crate::store::Kind,
                         meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
                         changed: Changed<'_>| {
            let key = (kind, key_of(meta));
            let version = meta.resource_version.clone();
            let fingerprint = match self.seen.get(&key) {
                Some((seen_version, fingerprint)) if *seen_version == version => *fingerprint,
                before => {
                    let fingerprint = changed.fingerprint();
                    if before.is_none_or(|(_, seen)| *seen != fingerprint) {
                        triggered.extend(glue::triggered_all(store, changed));
                    }
                    fingerprint
                }
            };
            seen.insert(key, (version, fingerprint));
        };
        use crate::store::Kind as StoredKind;
        for cluster in store.clusters.values() {
            watch(StoredKind::Cluster, &cluster.metadata, Changed::Cluster(cluster));
        }
        for machine in store.machines.values() {
            watch(StoredKind::Machine, &machine.metadata, Changed::Machine(machine));
        }
        for metal_cluster in store.metal_clusters.values() {
            watch(
                StoredKind::MetalStackCluster,
                &metal_cluster.metadata,
                Changed::MetalCluster(metal_cluster),
            );
        }
        for metal_machine in store.metal_machines.values() {
            watch(
                StoredKind::MetalStackMachine,
                &metal_machine.metadata,
                Changed::MetalMachine(metal_machine),
            );
        }
        for firewall in store.firewalls.values() {
            watch(StoredKind::MetalStackFirewall, &firewall.metadata, Changed::Firewall(firewall));
        }
        self.seen = seen;
        for target in triggered {
            self.enqueue(target, at);
        }
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
        let key = &target.key;
        let live = Arc::new(LiveStore::default());
        let pass = Pass { now, jitter, live: live.clone() };
        let future = match target.kind {
            Kind::Machine => {
                let object = self.view.metal_machines.shared(&key.namespace, &key.name)?.clone();
                self.machine_pass(object, pass)
            }
            Kind::Cluster => {
                let object = self.view.metal_clusters.shared(&key.namespace, &key.name)?.clone();
                self.cluster_pass(object, pass)
            }
            Kind::Firewall => {
                let object = self.view.firewalls.shared(&key.namespace, &key.name)?.clone();
                self.firewall_pass(object, pass)
            }
        };
        self.stats.reconciles += 1;
        Some(InFlight { target: target.clone(), future, live })
    }

    /// The block-move gate of `pass` over `meta` in `cluster`.
    fn gate(&self, pass: &Pass, kind: Kind, meta: &ObjectMeta, cluster: Option<&ClusterFacts>) -> Gate {
        Gate::new(pass.live.clone(), kind, meta, cluster, &self.replica, pass.now)
    }

    /// Gathers a machine's inputs through the glue and starts its reconcile.
    fn machine_pass(&self, object: Arc<MetalStackMachine>, pass: Pass) -> Reconcile {
        let facts = glue::gather::machine(&self.view, &object);
        let namespace = object.metadata.namespace.clone().unwrap_or_default();
        let secret =
            facts.bootstrap_secret.as_deref().and_then(|name| self.view.get::<Secret>(&namespace, name));
        let bootstrap = glue::gather::bootstrap(facts.bootstrap_secret.as_deref(), secret);
        let metal_cluster = facts.metal_cluster.as_deref().map(MetalClusterFacts::of);
        let gate = self.gate(&pass, Kind::Machine, &object.metadata, facts.cluster.as_ref());
        let (backend, cache, trace, variant) =
            (self.backend.clone(), self.cache.clone(), self.trace.clone(), self.config.variant);
        Box::pin(async move {
            let input = MachineInput {
                metal_machine: &object,
                capi_machine: facts.capi_machine.as_ref(),
                cluster: facts.cluster.as_ref(),
                metal_cluster: metal_cluster.as_ref(),
                bootstrap: &bootstrap,
                now: pass.now,
                jitter: pass.jitter,
            };
            let trace = trace.as_deref();
            let outcome =
                glue::reconcile::machine(&input, backend.as_ref(), &gate, &cache, variant, trace).await;
            Outcome::Machine(object.clone(), Box::new(outcome), gate.settle())
        })
    }

    /// Gathers a cluster's inputs through the glue and starts its reconcile.
    fn cluster_pass(&self, object: Arc<MetalStackCluster>, pass: Pass) -> Reconcile {
        let inputs = glue::gather::cluster(&self.view, &object);
        let gate = self.gate(&pass, Kind::Cluster, &object.metadata, inputs.cluster.as_ref());
        let (backend, trace) = (self.backend.clone(), self.trace.clone());
        Box::pin(async move {
            let input = ClusterInput {
                metal_cluster: &object,
                cluster: inputs.cluster.as_ref(),
                machines_remaining: inputs.machines_remaining,
                firewall: inputs.firewall.as_deref(),
                now: pass.now,
                jitter: pass.jitter,
            };
            let outcome = glue::reconcile::cluster(&input, backend.as_ref(), &gate, trace.as_deref()).await;
            Outcome::Cluster(object.clone(), inputs.firewall.clone(), Box::new(outcome), gate.settle())
        })
    }

    /// Gathers a firewall's inputs through the glue and starts its reconcile.
    fn firewall_pass(&self, object: Arc<MetalStackFirewall>, pass: Pass) -> Reconcile {
        let facts = glue::gather::firewall(&self.view, &object);
        let metal_cluster = facts.metal_cluster.as_deref().map(MetalClusterFacts::of);
        let gate = self.gate(&pass, Kind::Firewall, &object.metadata, facts.cluster.as_ref());
        let (backend, trace) = (self.backend.clone(), self.trace.clone());
        Box::pin(async move {
            let input = FirewallInput {
                firewall: &object,
                cluster: facts.cluster.as_ref(),
                metal_cluster: metal_cluster.as_ref(),
                now: pass.now,
                jitter: pass.jitter,
            };
            let outcome = glue::reconcile::firewall(&input, backend.as_ref(), &gate, trace.as_deref()).await;
            Outcome::Firewall(object.clone(), Box::new(outcome), gate.settle())
        })
    }

    /// Advances one in-flight reconcile (the one at `index`, modulo the count) to its next
    /// metal-api call, live request to `store` (served at once) or to its end. Returns the
    /// finished reconcile.
    pub fn poll(&mut self, index: usize, store: &mut Store) -> Option<Finished> {
        if self.in_flight.is_empty() {
            return None;
        }
        let index = index % self.in_flight.len();
        let mut context = Context::from_waker(futures::task::noop_waker_ref());
        match self.in_flight[index].future.as_mut().poll(&mut context) {
            Poll::Pending => {
                self.in_flight[index].live.serve(store);
                None
            }
            Poll::Ready(outcome) => {
                let finished = self.in_flight.swap_remove(index);
                Some(Finished { target: finished.target, outcome })
            }
        }
    }

    /// Applies a finished reconcile to the store through the glue, as capms-manager does, and
    /// requeues: as the reconciler asked (else at the resync) after a success, with the glue's
    /// per-object backoff after a failed write. `lose_status`: the status write is lost (an
    /// apiserver timeout).
    pub fn apply(
        &mut self,
        store: &mut Store,
        finished: Finished,
        now: Timestamp,
        lose_status: bool,
    ) -> Vec<String> {
        let Finished { target, outcome } = finished;
        let mut writer = StoreWriter { store, now, lose_status, notes: Vec::new(), lost: false, events: 0 };
        let result = match outcome {
            Outcome::Machine(object, outcome, settled) => {
                let plan = glue::plan::machine_variant(&object, &outcome, self.config.variant);
                run_now(glue::execute(&mut writer, object.as_ref(), &plan, None, &settled))
                    .map(|()| plan.requeue)
            }
            Outcome::Cluster(object, firewall, outcome, settled) => {
                let plan = glue::plan::cluster(&object, &outcome);
                run_now(glue::execute(&mut writer, object.as_ref(), &plan, firewall.as_deref(), &settled))
                    .map(|()| plan.requeue)
            }
            Outcome::Firewall(object, outcome, settled) => {
                let plan = glue::plan::firewall(&object, &outcome);
                run_now(glue::execute(&mut writer, object.as_ref(), &plan, None, &settled))
                    .map(|()| plan.requeue)
            }
        };
        self.stats.events += writer.events;
        self.stats.lost_status_writes += u64::from(writer.lost);
        let mut notes = writer.notes;
        let after = match result {
            Ok(requeue) => {
                self.backoff.succeeded(&target);
                glue::retry::next(requeue)
            }
            Err(error) => {
                if error == WriteError::Conflict {
                    self.stats.conflicts += 1;
                }
                notes.push(format!("write of {target} refused: {error}"));
                self.backoff.failed(&target, error.retry_after())
            }
        };
        self.enqueue(target, now.checked_add(after).unwrap_or(now));
        notes
    }
}

/// Runs a future of the glue over [`StoreWriter`] to its end. The writer never waits, so the
/// future is ready at its first poll.
fn run_now<T>(future: impl Future<Output = T>) -> T {
    future.now_or_never().expect("the simulated store answers every write at once")
}

/// The glue's [`glue::Writer`] over the simulated store.
struct StoreWriter<'a> {
    store: &'a mut Store,
    now: Timestamp,
    lose_status: bool,
    notes: Vec<String>,
    lost: bool,
    events: u64,
}

fn write_error(error: StoreError) -> WriteError {
    match error {
        StoreError::Conflict => WriteError::Conflict,
        StoreError::NotFound => WriteError::Gone,
        StoreError::AlreadyExists => WriteError::AlreadyExists,
        StoreError::Invalid(message) => WriteError::Invalid(message),
    }
}

#[async_trait]
impl<K: Reconciled + Stored + PartialEq> glue::Writer<K> for StoreWriter<'_> {
    async fn publish(&mut self, object: &K, event: &Event) {
        self.events += 1;
        let key = ObjectKey::of(object.meta());
        self.notes.push(format!("event {key} {}: {}", event.reason, event.message));
    }

    async fn patch(&mut self, object: &K, patch: &glue::ObjectPatch) -> Result<String, WriteError> {
        let meta = object.meta();
        let version = meta.resource_version.as_deref();
        let written = patch_stored::<K>(self.store, &ObjectKey::of(meta), version, patch)?;
        Ok(written.resource_version.unwrap_or_default())
    }

    async fn write_status(
        &mut self,
        object: &K,
        version: &str,
        status: &K::Status,
    ) -> Result<(), WriteError> {
        if self.lose_status {
            self.lost = true;
            return Err(WriteError::Unavailable("status write lost".to_string()));
        }
        let key = key_of(object.meta());
        self.store
            .write_status::<K>(&key.0, &key.1, Some(version), |o| o.set_status(status.clone()))
            .map_err(write_error)
    }

    async fn create_firewall(&mut self, firewall: &MetalStackFirewall) -> Result<(), WriteError> {
        self.store.create(firewall.clone(), self.now).map(|_| ()).map_err(write_error)
    }

    async fn read_firewall(
        &mut self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<MetalStackFirewall>, WriteError> {
        Ok(self.store.get::<MetalStackFirewall>(namespace, name).cloned())
    }

    async fn delete_firewall(
        &mut self,
        namespace: &str,
        name: &str,
        uid: Option<&str>,
    ) -> Result<(), WriteError> {
        let current = self.store.get::<MetalStackFirewall>(namespace, name).ok_or(WriteError::Gone)?;
        if uid.is_some() && current.metadata.uid.as_deref() != uid {
            return Err(WriteError::Conflict);
        }
        self.store.delete::<MetalStackFirewall>(namespace, name, self.now).map_err(write_error)
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
    ($( fn $name:ident($($arg:ident: $type:ty),*) -> $out:ty, $operation:ident, |$describe:ident| $request:expr; )*) => {
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

capms_core::with_backend_methods!(yielding);

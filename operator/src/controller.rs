//! The controllers of capms's three kinds and their shared reflector stores. Each reconcile runs
//! core's glue ([`capms_core::glue`]): it gathers inputs from the stores, calls the core
//! reconciler, plans the writes and executes them through [`KubeWriter`], and requeues as the
//! glue says. What stays here is I/O: the watches, the stores, the kube client, the choice of
//! metal-api credentials.
//!
//! One watch per kind (Cluster, Machine, MetalStackCluster, MetalStackMachine,
//! MetalStackFirewall) feeds a shared reflector store; each store applies an event before its
//! subscribers see it, so a reconcile triggered by a change reads at least that change. Which
//! reconciles a change triggers is the glue's mapping ([`glue::triggers`]).
//!
//! A fourth controller keeps credentials Secrets while clusters use them
//! ([`crate::credentials`]): it watches Secrets with its label, and MetalStackClusters being
//! deleted.
//!
//! A credentials Secret that is missing or unusable fails the pass of every object that needs
//! it; the failure is reported on that object first (core's [`glue::credentials`]: Ready
//! False, reason `CredentialsInvalid`, a Warning event). The cluster controller also watches
//! the labelled Secrets (metadata only), so that a fixed Secret reconciles the clusters that
//! name it at once ([`glue::triggers::clusters_naming_secret`]).
//!
//! All watches are limited to `--namespace` if given, and all but the Secrets' to
//! `--watch-filter` if given.

use crate::apply::{KubeWriter, LiveApiserver, publish_event};
use crate::backend::Backends;
use crate::clock::Clock;
use crate::credentials::{self, SecretMeta};
use crate::error::OperatorError;
use crate::metrics::Metrics;
use capms_core::api::capi::{self, Cluster, Machine};
use capms_core::api::{MetalStackCluster, MetalStackFirewall, MetalStackMachine};
use capms_core::glue::{self, Changed, Gate, Kind, Objects, Reconciled, Settled, Target, WriteError};
use capms_core::reconcile::machine::Variant;
use capms_core::reconcile::{
    ClusterFacts, ClusterInput, Event, EventReason, FirewallInput, MachineCache, MachineInput,
    MetalClusterFacts, RefreshPolicy, Requeue,
};
use futures::StreamExt;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, ReflectHandle, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use std::fmt::Debug;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// How many watch events a shared store buffers for a subscriber that is behind.
const SUBSCRIBER_BUFFER: usize = 1024;

/// The informer caches the glue reads: one shared reflector store per watched kind.
#[derive(Clone)]
#[allow(missing_debug_implementations, reason = "stores of whole objects: too large to print")]
pub struct Caches {
    clusters: Store<Cluster>,
    machines: Store<Machine>,
    metal_clusters: Store<MetalStackCluster>,
    metal_machines: Store<MetalStackMachine>,
    firewalls: Store<MetalStackFirewall>,
}

/// The writing halves of [`Caches`], taken by [`run`] to feed them.
struct Writers {
    clusters: reflector::store::Writer<Cluster>,
    machines: reflector::store::Writer<Machine>,
    metal_clusters: reflector::store::Writer<MetalStackCluster>,
    metal_machines: reflector::store::Writer<MetalStackMachine>,
    firewalls: reflector::store::Writer<MetalStackFirewall>,
}

impl Caches {
    fn new() -> (Caches, Writers) {
        let (clusters, clusters_writer) = reflector::store_shared(SUBSCRIBER_BUFFER);
        let (machines, machines_writer) = reflector::store_shared(SUBSCRIBER_BUFFER);
        let (metal_clusters, metal_clusters_writer) = reflector::store_shared(SUBSCRIBER_BUFFER);
        let (metal_machines, metal_machines_writer) = reflector::store_shared(SUBSCRIBER_BUFFER);
        let (firewalls, firewalls_writer) = reflector::store_shared(SUBSCRIBER_BUFFER);
        let caches = Caches { clusters, machines, metal_clusters, metal_machines, firewalls };
        let writers = Writers {
            clusters: clusters_writer,
            machines: machines_writer,
            metal_clusters: metal_clusters_writer,
            metal_machines: metal_machines_writer,
            firewalls: firewalls_writer,
        };
        (caches, writers)
    }
}

fn cached<K>(store: &Store<K>, namespace: &str, name: &str) -> Option<Arc<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    store.get(&ObjectRef::new(name).within(namespace))
}

/// The objects of `namespace` labelled with the cluster name `cluster`, by name.
fn labelled<K>(store: &Store<K>, namespace: &str, cluster: &str) -> Vec<Arc<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    let mut found: Vec<Arc<K>> = store
        .state()
        .into_iter()
        .filter(|object| object.meta().namespace.as_deref() == Some(namespace))
        .filter(|object| capi::label(object.meta(), capi::CLUSTER_NAME_LABEL) == Some(cluster))
        .collect();
    found.sort_by(|a, b| a.meta().name.cmp(&b.meta().name));
    found
}

impl Objects for Caches {
    fn cluster(&self, namespace: &str, name: &str) -> Option<Arc<Cluster>> {
        cached(&self.clusters, namespace, name)
    }
    fn machine(&self, namespace: &str, name: &str) -> Option<Arc<Machine>> {
        cached(&self.machines, namespace, name)
    }
    fn metal_cluster(&self, namespace: &str, name: &str) -> Option<Arc<MetalStackCluster>> {
        cached(&self.metal_clusters, namespace, name)
    }
    fn firewall(&self, namespace: &str, name: &str) -> Option<Arc<MetalStackFirewall>> {
        cached(&self.firewalls, namespace, name)
    }
    fn metal_clusters_of(&self, namespace: &str, cluster: &str) -> Vec<Arc<MetalStackCluster>> {
        labelled(&self.metal_clusters, namespace, cluster)
    }
    fn metal_machines_of(&self, namespace: &str, cluster: &str) -> Vec<Arc<MetalStackMachine>> {
        labelled(&self.metal_machines, namespace, cluster)
    }
}

/// What the controllers share.
pub struct Context {
    pub client: Client,
    pub backends: Backends,
    pub metrics: Arc<Metrics>,
    pub cache: MachineCache,
    /// What the glue reads.
    pub caches: Caches,
    writers: Mutex<Option<Writers>>,
    /// Failures in a row per object, for the retry delay of `error_policy`.
    pub backoff: glue::Backoff<String>,
    pub recorder: Recorder,
    pub clock: Clock,
    /// `--record-trace`: where reconciles are recorded (docs/traces.md).
    pub trace: Option<Arc<dyn capms_core::trace::TraceSink>>,
    /// The block-move handshake's live access to the apiserver.
    apiserver: Arc<dyn glue::Apiserver>,
    /// This replica's name in block-move holds: the pod name (`POD_NAME`), else the host name.
    replica: String,
}

impl Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").field("backends", &self.backends).finish_non_exhaustive()
    }
}

impl Context {
    pub fn new(client: Client, backends: Backends, metrics: Arc<Metrics>, clock: Clock) -> Self {
        let replica = std::env::var("POD_NAME")
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_else(|_| "capms-manager".to_string());
        let reporter =
            Reporter { controller: "capms-manager".to_string(), instance: std::env::var("POD_NAME").ok() };
        let (caches, writers) = Caches::new();
        let client_for_gate = client.clone();
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            backends,
            metrics,
            cache: MachineCache::new(RefreshPolicy::default()),
            caches,
            writers: Mutex::new(Some(writers)),
            backoff: glue::Backoff::default(),
            clock,
            trace: None,
            apiserver: Arc::new(LiveApiserver { client: client_for_gate }),
            replica,
        }
    }

    /// The block-move gate of a pass at `now` over `meta` (of kind `kind`) in `cluster`.
    fn gate(
        &self,
        kind: Kind,
        meta: &ObjectMeta,
        cluster: Option<&ClusterFacts>,
        now: capms_core::Timestamp,
    ) -> Gate {
        Gate::new(self.apiserver.clone(), kind, meta, cluster, &self.replica, now)
    }

    /// The glue's writer for objects of kind `K` in the namespace of `meta`.
    fn writer<K>(&self, meta: &ObjectMeta) -> KubeWriter<'_, K>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>,
    {
        let namespace = meta.namespace.clone().unwrap_or_default();
        KubeWriter {
            api: Api::namespaced(self.client.clone(), &namespace),
            firewalls: Api::namespaced(self.client.clone(), &namespace),
            recorder: &self.recorder,
        }
    }
}

/// Where the controllers look.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// `--namespace`: one namespace, or all.
    pub namespace: Option<String>,
    /// `--watch-filter`: only objects with this `cluster.x-k8s.io/watch-filter` value.
    pub watch_filter: Option<String>,
    /// `--concurrency`: reconciles at once, per kind.
    pub concurrency: u16,
}

impl Scope {
    fn api<K>(&self, client: &Client) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
    {
        match &self.namespace {
            Some(namespace) => Api::namespaced(client.clone(), namespace),
            None => Api::all(client.clone()),
        }
    }

    fn watcher_config(&self) -> watcher::Config {
        let config = watcher::Config::default();
        match &self.watch_filter {
            Some(value) => config.labels(&format!("{}={value}", capi::WATCH_FILTER_LABEL)),
            None => config,
        }
    }

    fn controller_config(&self) -> ControllerConfig {
        ControllerConfig::default().concurrency(self.concurrency)
    }
}

fn jitter() -> u64 {
    rand::random()
}

fn action(requeue: Requeue) -> Action {
    Action::requeue(glue::retry::next(requeue))
}

fn namespaced_ref<K: Resource<DynamicType = ()>>(name: &str, namespace: Option<&str>) -> ObjectRef<K> {
    let reference = ObjectRef::new(name);
    match namespace {
        Some(namespace) => reference.within(namespace),
        None => reference,
    }
}

/// The reconcile requests of kind `K` that a change triggers (the glue's mapping).
fn requests<K: Resource<DynamicType = ()>>(
    caches: &Caches,
    changed: Changed<'_>,
    kind: Kind,
) -> Vec<ObjectRef<K>> {
    glue::triggered(caches, changed, kind)
        .into_iter()
        .map(|Target { key, .. }| ObjectRef::new(&key.name).within(&key.namespace))
        .collect()
}

/// The key of an object in [`Context::backoff`].
fn backoff_key<K: Resource<DynamicType = ()>>(object: &K) -> String {
    format!("{}/{}/{}", K::kind(&()), object.namespace().unwrap_or_default(), object.name_any())
}

/// Times a reconcile of `object` and counts its failure class; a success ends the object's
/// backoff.
async fn measured<K, F>(context: &Context, object: &K, reconcile: F) -> Result<Action, OperatorError>
where
    K: Resource<DynamicType = ()>,
    F: Future<Output = Result<Action, OperatorError>>,
{
    let kind = K::kind(&());
    let started = Instant::now();
    let result = reconcile.await;
    context.metrics.reconciled(&kind, started.elapsed());
    match &result {
        Ok(_) => context.backoff.succeeded(&backoff_key(object)),
        Err(error) => context.metrics.reconcile_failed(&kind, error.class().as_str()),
    }
    result
}

/// Retries a failed reconcile after its error class's delay, doubled for every failure of the
/// object in a row (the glue's [`glue::retry`]).
fn error_policy<K: Resource<DynamicType = ()>>(
    object: Arc<K>,
    error: &OperatorError,
    context: Arc<Context>,
) -> Action {
    let retry = context.backoff.failed(&backoff_key(object.as_ref()), error.retry_after());
    tracing::warn!(kind = %K::kind(&()), name = %object.name_any(), namespace = ?object.namespace(), %error, retry_seconds = retry.as_secs_f64(), "reconcile failed");
    Action::requeue(retry)
}

/// Reports a cluster's unusable credentials on `object` (core's
/// [`glue::credentials::report`]: Ready False, a Warning event when that is new) and fails the
/// pass with them; any other result passes through.
async fn reported<K, T>(
    context: &Context,
    object: &K,
    result: Result<T, OperatorError>,
) -> Result<T, OperatorError>
where
    K: Reconciled + Resource<Scope = NamespaceResourceScope> + Debug,
{
    let Err(OperatorError::Credentials(error)) = result else { return result };
    let plan = glue::credentials::report(object, &error, context.clock.now());
    let mut writer = context.writer::<K>(object.meta());
    glue::execute(&mut writer, object, &plan, None, &Settled::default()).await?;
    Err(error.into())
}

/// Runs the glue's plan for `object` through the kube writer.
async fn execute<K>(
    context: &Context,
    object: &K,
    plan: &glue::Plan<K>,
    firewall_seen: Option<&MetalStackFirewall>,
    settled: &Settled,
) -> Result<Action, OperatorError>
where
    K: Reconciled + Resource<Scope = NamespaceResourceScope> + Debug,
{
    let mut writer = context.writer::<K>(object.meta());
    glue::execute(&mut writer, object, plan, firewall_seen, settled).await?;
    Ok(action(plan.requeue))
}

// ----------------------------------------------------------------------------------------------
// MetalStackMachine
// ----------------------------------------------------------------------------------------------

async fn reconcile_metal_machine(
    object: Arc<MetalStackMachine>,
    context: Arc<Context>,
) -> Result<Action, OperatorError> {
    measured(&context, object.as_ref(), machine_pass(&object, &context)).await
}

async fn machine_pass(object: &MetalStackMachine, context: &Context) -> Result<Action, OperatorError> {
    let facts = glue::gather::machine(&context.caches, object);
    // The bootstrap Secret is read live, by name: Secrets are not cached.
    let secret = match facts.bootstrap_secret.as_deref() {
        Some(name) => {
            let namespace = object.namespace().unwrap_or_default();
            Api::<Secret>::namespaced(context.client.clone(), &namespace).get_opt(name).await?
        }
        None => None,
    };
    let bootstrap = glue::gather::bootstrap(facts.bootstrap_secret.as_deref(), secret.as_ref());
    let backend = context.backends.for_cluster(facts.metal_cluster.as_deref()).await;
    let backend = reported(context, object, backend).await?;
    let metal_cluster = facts.metal_cluster.as_deref().map(MetalClusterFacts::of);
    let now = context.clock.now();
    let input = MachineInput {
        metal_machine: object,
        capi_machine: facts.capi_machine.as_ref(),
        cluster: facts.cluster.as_ref(),
        metal_cluster: metal_cluster.as_ref(),
        bootstrap: &bootstrap,
        now,
        jitter: jitter(),
    };
    let gate = context.gate(Kind::Machine, object.meta(), facts.cluster.as_ref(), now);
    let (cache, trace) = (&context.cache, context.trace.as_deref());
    let outcome =
        glue::reconcile::machine(&input, backend.as_ref(), &gate, cache, Variant::Correct, trace).await;
    execute(context, object, &glue::plan::machine(object, &outcome), None, &gate.settle()).await
}

fn machine_controller(
    context: &Context,
    streams: &mut Subscriptions,
    scope: &Scope,
) -> Controller<MetalStackMachine> {
    let caches = context.caches.clone();
    let (by_machine, by_metal_cluster, by_cluster) = (caches.clone(), caches.clone(), caches.clone());
    Controller::for_shared_stream(streams.metal_machines.take(), caches.metal_machines.clone())
        .with_config(scope.controller_config())
        .watches_shared_stream(streams.machines.take(), move |machine| {
            requests(&by_machine, Changed::Machine(&machine), Kind::Machine)
        })
        .watches_shared_stream(streams.metal_clusters.take(), move |metal_cluster| {
            requests(&by_metal_cluster, Changed::MetalCluster(&metal_cluster), Kind::Machine)
        })
        .watches_shared_stream(streams.clusters.take(), move |cluster| {
            requests(&by_cluster, Changed::Cluster(&cluster), Kind::Machine)
        })
}

// ----------------------------------------------------------------------------------------------
// MetalStackCluster
// ----------------------------------------------------------------------------------------------

async fn reconcile_metal_cluster(
    object: Arc<MetalStackCluster>,
    context: Arc<Context>,
) -> Result<Action, OperatorError> {
    measured(&context, object.as_ref(), cluster_pass(&object, &context)).await
}

async fn cluster_pass(object: &MetalStackCluster, context: &Context) -> Result<Action, OperatorError> {
    let inputs = glue::gather::cluster(&context.caches, object);
    // A Secret that exists is protected even if unusable: its label makes its fix trigger us.
    let secret = reported(context, object, context.backends.credentials_secret(object).await).await?;
    if let Some(secret) = &secret {
        protect_credentials(context, object, secret).await;
    }
    let backend = reported(context, object, context.backends.backend(Some(object), secret.as_ref())).await?;
    let now = context.clock.now();
    let input = ClusterInput {
        metal_cluster: object,
        cluster: inputs.cluster.as_ref(),
        machines_remaining: inputs.machines_remaining,
        firewall: inputs.firewall.as_deref(),
        now,
        jitter: jitter(),
    };
    let gate = context.gate(Kind::Cluster, object.meta(), inputs.cluster.as_ref(), now);
    let outcome = glue::reconcile::cluster(&input, backend.as_ref(), &gate, context.trace.as_deref()).await;
    let plan = glue::plan::cluster(object, &outcome);
    execute(context, object, &plan, inputs.firewall.as_deref(), &gate.settle()).await
}

/// Protects the cluster's credentials Secret ([`credentials::protect`]). Best effort: the
/// protection is a safeguard for a later deletion, and a refused patch (RBAC without `patch`
/// on Secrets, an admission policy) must not stop the cluster's own work, its deletion
/// included. A refusal is logged and reported as a Warning event; a conflict is retried at the
/// cluster's next reconcile (at the latest after the 10-minute resync).
async fn protect_credentials(context: &Context, object: &MetalStackCluster, secret: &Secret) {
    match credentials::protect(&context.client, &secret.metadata).await {
        Ok(()) => {}
        Err(OperatorError::Write(WriteError::Conflict)) => {
            tracing::debug!(secret = %secret.name_any(), "credentials Secret changed meanwhile")
        }
        Err(error) => {
            let note = format!("cannot mark credentials Secret {} as in use: {error}", secret.name_any());
            tracing::warn!(cluster = %object.name_any(), "{note}");
            let event = Event::warning(EventReason::CredentialsNotProtected, note);
            publish_event(&context.recorder, object, &event).await;
        }
    }
}

fn cluster_controller(
    context: &Context,
    streams: &mut Subscriptions,
    scope: &Scope,
) -> Controller<MetalStackCluster> {
    let caches = context.caches.clone();
    let (by_firewall, by_cluster) = (caches.clone(), caches.clone());
    let metal_clusters = caches.metal_clusters.clone();
    let protected = watcher::Config::default().labels(credentials::CREDENTIALS_LABEL);
    Controller::for_shared_stream(streams.metal_clusters.take(), caches.metal_clusters.clone())
        .with_config(scope.controller_config())
        .watches_shared_stream(streams.firewalls.take(), move |firewall| {
            requests(&by_firewall, Changed::Firewall(&firewall), Kind::Cluster)
        })
        .watches_shared_stream(streams.clusters.take(), move |cluster| {
            requests(&by_cluster, Changed::Cluster(&cluster), Kind::Cluster)
        })
        // Every change of a protected credentials Secret (metadata only; a change of its data
        // changes its resourceVersion), so that a fixed Secret is used at once.
        .watches(scope.api::<SecretMeta>(&context.client), protected, move |secret| {
            let clusters = metal_clusters.state();
            glue::triggers::clusters_naming_secret(&secret.metadata, clusters.iter().map(AsRef::as_ref))
                .into_iter()
                .map(|Target { key, .. }| ObjectRef::new(&key.name).within(&key.namespace))
        })
}

// ----------------------------------------------------------------------------------------------
// MetalStackFirewall
// ----------------------------------------------------------------------------------------------

async fn reconcile_metal_firewall(
    object: Arc<MetalStackFirewall>,
    context: Arc<Context>,
) -> Result<Action, OperatorError> {
    measured(&context, object.as_ref(), firewall_pass(&object, &context)).await
}

async fn firewall_pass(object: &MetalStackFirewall, context: &Context) -> Result<Action, OperatorError> {
    let facts = glue::gather::firewall(&context.caches, object);
    let backend = context.backends.for_cluster(facts.metal_cluster.as_deref()).await;
    let backend = reported(context, object, backend).await?;
    let metal_cluster = facts.metal_cluster.as_deref().map(MetalClusterFacts::of);
    let now = context.clock.now();
    let input = FirewallInput {
        firewall: object,
        cluster: facts.cluster.as_ref(),
        metal_cluster: metal_cluster.as_ref(),
        now,
        jitter: jitter(),
    };
    let gate = context.gate(Kind::Firewall, object.meta(), facts.cluster.as_ref(), now);
    let outcome = glue::reconcile::firewall(&input, backend.as_ref(), &gate, context.trace.as_deref()).await;
    execute(context, object, &glue::plan::firewall(object, &outcome), None, &gate.settle()).await
}

fn firewall_controller(
    context: &Context,
    streams: &mut Subscriptions,
    scope: &Scope,
) -> Controller<MetalStackFirewall> {
    let caches = context.caches.clone();
    let (by_metal_cluster, by_cluster) = (caches.clone(), caches.clone());
    Controller::for_shared_stream(streams.firewalls.take(), caches.firewalls.clone())
        .with_config(scope.controller_config())
        .watches_shared_stream(streams.metal_clusters.take(), move |metal_cluster| {
            requests(&by_metal_cluster, Changed::MetalCluster(&metal_cluster), Kind::Firewall)
        })
        .watches_shared_stream(streams.clusters.take(), move |cluster| {
            requests(&by_cluster, Changed::Cluster(&cluster), Kind::Firewall)
        })
}

// ----------------------------------------------------------------------------------------------
// Credentials Secrets
// ----------------------------------------------------------------------------------------------

async fn reconcile_credentials(
    object: Arc<SecretMeta>,
    context: Arc<Context>,
) -> Result<Action, OperatorError> {
    measured(&context, object.as_ref(), credentials_pass(&object.metadata, &context)).await
}

/// Releases the Secret if no cluster names it any more, and forgets the client built from it.
async fn credentials_pass(secret: &ObjectMeta, context: &Context) -> Result<Action, OperatorError> {
    if !credentials::release(&context.client, secret).await? {
        return Ok(Action::requeue(credentials::RESYNC));
    }
    let namespace = secret.namespace.clone().unwrap_or_default();
    context.backends.forget(&namespace, secret.name.as_deref().unwrap_or_default());
    Ok(Action::await_change())
}

/// Watches the metadata of only the Secrets the cluster controller protected (by their
/// label), and the MetalStackClusters being deleted, mapped to the Secret they name: when the
/// last one is gone, its Secret is released at once. This controller watches MetalStackClusters
/// itself rather than through the shared store: shared streams carry no deletions, and the
/// disappearance of the last cluster is the event that matters here.
fn credentials_controller(client: &Client, scope: &Scope) -> Controller<SecretMeta> {
    let protected = watcher::Config::default().labels(credentials::CREDENTIALS_LABEL);
    // An Api of PartialObjectMeta makes metadata-only requests.
    Controller::new(scope.api::<SecretMeta>(client), protected)
        .with_config(scope.controller_config())
        .watches(scope.api::<MetalStackCluster>(client), scope.watcher_config(), |metal_cluster| {
            metal_cluster.metadata.deletion_timestamp.as_ref()?;
            let name = credentials::credentials_name(&metal_cluster)?;
            Some(namespaced_ref::<SecretMeta>(name, metal_cluster.metadata.namespace.as_deref()))
        })
}

// ----------------------------------------------------------------------------------------------
// Running them
// ----------------------------------------------------------------------------------------------

/// Drains a controller's result stream, logging what it did.
async fn drain<K, S, E1, E2>(kind: &'static str, stream: S)
where
    K: Resource + Debug,
    S: futures::Stream<Item = Result<(ObjectRef<K>, Action), kube::runtime::controller::Error<E1, E2>>>,
    E1: std::error::Error + 'static,
    E2: std::error::Error + 'static,
{
    stream
        .for_each(|result| async move {
            use kube::runtime::controller::Error;
            match result {
                Ok((object, _)) => tracing::debug!(kind, object = %object, "reconciled"),
                // A failing watch (RBAC, a CRD version the apiserver does not serve) means
                // nothing is reconciled: say so loudly. Reconciler errors are logged by
                // `error_policy`; a vanished object is routine.
                Err(error @ (Error::QueueError(_) | Error::RunnerError(_))) => {
                    tracing::warn!(kind, %error, "watching failed")
                }
                Err(error) => tracing::debug!(kind, %error, "reconcile did not finish"),
            }
        })
        .await;
}

/// The subscriptions to one shared store: each controller that watches the kind takes one.
struct Feed<K: Resource<DynamicType = ()> + Clone + 'static> {
    writer: reflector::store::Writer<K>,
}

impl<K> Feed<K>
where
    K: Resource<DynamicType = ()> + Clone + serde::Serialize + Send + Sync + 'static,
{
    /// A new subscription that passes on only changes (the glue's [`glue::triggers::fingerprint`]):
    /// the block-move handshake's own writes and relists of unchanged objects trigger nothing.
    fn take(&mut self) -> impl futures::Stream<Item = Arc<K>> + Send + 'static {
        // Shared stores (`store_shared`) always take subscribers.
        let handle: ReflectHandle<K> = self.writer.subscribe().expect("a shared reflector store");
        let mut seen: std::collections::HashMap<ObjectRef<K>, u64> = std::collections::HashMap::new();
        handle.filter(move |object| {
            if seen.len() >= glue::retry::OBJECTS_MAX {
                // Deleted objects are never removed (shared streams carry no deletions): forget
                // everything; each object then triggers once more.
                seen.clear();
            }
            let fingerprint = glue::triggers::fingerprint(object.as_ref());
            let changed = seen.insert(ObjectRef::from_obj(object.as_ref()), fingerprint) != Some(fingerprint);
            futures::future::ready(changed)
        })
    }
}

/// The feeds of every shared store.
struct Subscriptions {
    clusters: Feed<Cluster>,
    machines: Feed<Machine>,
    metal_clusters: Feed<MetalStackCluster>,
    metal_machines: Feed<MetalStackMachine>,
    firewalls: Feed<MetalStackFirewall>,
}

/// Watches `api` into the shared store behind `feed` until `shutdown`; watch failures are logged
/// loudly (nothing is reconciled while a watch fails: RBAC, a CRD version not served).
async fn feed<K, F>(kind: &'static str, api: Api<K>, config: watcher::Config, feed: Feed<K>, shutdown: F)
where
    K: Resource<DynamicType = ()> + Clone + Debug + Send + Sync + serde::de::DeserializeOwned + 'static,
    F: Future<Output = ()> + Send,
{
    watcher(api, config)
        .default_backoff()
        .reflect_shared(feed.writer)
        .take_until(shutdown)
        .for_each(|event| async move {
            if let Err(error) = event {
                tracing::warn!(kind, %error, "watching failed");
            }
        })
        .await;
}

/// Runs the controllers until `shutdown` completes; reconciles in flight finish first.
pub async fn run<F>(context: Arc<Context>, scope: Scope, shutdown: F)
where
    F: Future<Output = ()> + Send + Sync + 'static,
{
    let client = context.client.clone();
    let shutdown = futures::FutureExt::shared(Box::pin(shutdown));
    let Some(writers) = context.writers.lock().ok().and_then(|mut writers| writers.take()) else {
        tracing::error!("the controllers of this context run already");
        return;
    };
    let mut streams = Subscriptions {
        clusters: Feed { writer: writers.clusters },
        machines: Feed { writer: writers.machines },
        metal_clusters: Feed { writer: writers.metal_clusters },
        metal_machines: Feed { writer: writers.metal_machines },
        firewalls: Feed { writer: writers.firewalls },
    };
    let machines = machine_controller(&context, &mut streams, &scope)
        .graceful_shutdown_on(shutdown.clone())
        .run(reconcile_metal_machine, error_policy, context.clone());
    let clusters = cluster_controller(&context, &mut streams, &scope)
        .graceful_shutdown_on(shutdown.clone())
        .run(reconcile_metal_cluster, error_policy, context.clone());
    let firewalls = firewall_controller(&context, &mut streams, &scope)
        .graceful_shutdown_on(shutdown.clone())
        .run(reconcile_metal_firewall, error_policy, context.clone());
    let secrets = credentials_controller(&client, &scope).graceful_shutdown_on(shutdown.clone()).run(
        reconcile_credentials,
        error_policy,
        context.clone(),
    );
    let config = scope.watcher_config();
    let Subscriptions { clusters: c, machines: m, metal_clusters: mc, metal_machines: mm, firewalls: fw } =
        streams;
    futures::join!(
        feed("Cluster", scope.api(&client), config.clone(), c, shutdown.clone()),
        feed("Machine", scope.api(&client), config.clone(), m, shutdown.clone()),
        feed("MetalStackCluster", scope.api(&client), config.clone(), mc, shutdown.clone()),
        feed("MetalStackMachine", scope.api(&client), config.clone(), mm, shutdown.clone()),
        feed("MetalStackFirewall", scope.api(&client), config, fw, shutdown),
        drain("MetalStackMachine", machines),
        drain("MetalStackCluster", clusters),
        drain("MetalStackFirewall", firewalls),
        drain("Secret", secrets),
    );
}

/// Checks that the CRDs the controllers watch are installed and serve the versions capms
/// reads; says how to install them if not.
pub async fn check_crds(client: &Client) -> Result<(), String> {
    let ours = [MetalStackCluster::crd_name(), MetalStackMachine::crd_name(), MetalStackFirewall::crd_name()];
    let capi = [Cluster::crd_name(), Machine::crd_name()];
    let missing_ours = missing_crds(client, &ours, capms_core::api::VERSION).await?;
    let missing_capi = missing_crds(client, &capi, capi::VERSION).await?;
    let mut problems = Vec::new();
    if !missing_capi.is_empty() {
        problems.push(format!(
            "Cluster API's CRDs serving {} are not installed ({}): install Cluster API v1.11 or newer with `clusterctl init`",
            capi::VERSION,
            missing_capi.join(", ")
        ));
    }
    if !missing_ours.is_empty() {
        problems.push(format!(
            "capms's CRDs are not installed ({}): `clusterctl init --infrastructure metalstack`, or `capms-manager crds | kubectl apply -f -`",
            missing_ours.join(", ")
        ));
    }
    if problems.is_empty() { Ok(()) } else { Err(problems.join("; ")) }
}

/// The CRDs among `names` that are absent or do not serve `version`.
async fn missing_crds(client: &Client, names: &[String], version: &str) -> Result<Vec<String>, String> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut missing = Vec::new();
    for name in names {
        let crd = api
            .get_opt(name)
            .await
            .map_err(|error| format!("cannot read CustomResourceDefinitions: {error}"))?;
        let serves = crd.is_some_and(|crd| crd.spec.versions.iter().any(|v| v.name == version && v.served));
        if !serves {
            missing.push(format!("{name} {version}"));
        }
    }
    Ok(missing)
}

/// The CRD name of a kind (`<plural>.<group>`).
trait CrdName {
    fn crd_name() -> String;
}

impl<K: Resource<DynamicType = ()>> CrdName for K {
    fn crd_name() -> String {
        format!("{}.{}", K::plural(&()), K::group(&()))
    }
}

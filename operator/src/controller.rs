//! The controllers of capms's three kinds: each reconcile gathers inputs ([`crate::gather`]), calls the core
//! reconciler, applies the outcome ([`crate::apply`]) and requeues as core says.
//!
//! Watches (so that changes are seen promptly, not at the next requeue):
//! - MetalStackCluster: itself; its MetalStackFirewall (owned); the Cluster whose
//!   `infrastructureRef` names it.
//! - MetalStackMachine: itself; the Machine whose `infrastructureRef` names it; the
//!   MetalStackCluster and the Cluster of its cluster (by the `cluster.x-k8s.io/cluster-name`
//!   label, from the controller's own cache).
//! - MetalStackFirewall: itself; the MetalStackCluster that owns it; that cluster's Cluster.
//!
//! A fourth controller keeps credentials Secrets while clusters use them
//! ([`crate::credentials`]): it watches Secrets with its label, and MetalStackClusters being
//! deleted.
//!
//! All watches are limited to `--namespace` if given, and all but the Secrets' to
//! `--watch-filter` if given.

use crate::apply::{MetadataPatch, apply_status, publish_event, publish_events};
use crate::backend::Backends;
use crate::backoff::Backoff;
use crate::clock::Clock;
use crate::credentials::{self, SecretMeta};
use crate::error::OperatorError;
use crate::gather::{self, Namespace};
use crate::metrics::Metrics;
use capms_core::api::capi::{self, Cluster, Machine};
use capms_core::api::{
    CLUSTER_FINALIZER, FIREWALL_FINALIZER, MACHINE_FINALIZER, MetalStackCluster, MetalStackFirewall,
    MetalStackMachine,
};
use capms_core::reconcile::machine::Variant;
use capms_core::reconcile::{
    ClusterInput, ClusterOutcome, FinalizerAction, FirewallChild, FirewallInput, MachineCache, MachineInput,
    MetalClusterFacts, RefreshPolicy, Requeue, reconcile_cluster, reconcile_firewall, reconcile_machine,
};
use capms_core::trace;
use futures::StreamExt;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{DeleteParams, PostParams, Preconditions};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::{EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// When nothing else happens, look again after this long (drift from outside: a machine freed
/// in metal-api without a Kubernetes event).
const RESYNC: Duration = Duration::from_secs(10 * 60);

/// What the controllers share.
pub struct Context {
    pub client: Client,
    pub backends: Backends,
    pub metrics: Arc<Metrics>,
    pub cache: MachineCache,
    /// Failures in a row per object, for the retry delay of `error_policy`.
    pub backoff: Backoff,
    pub recorder: Recorder,
    pub clock: Clock,
    /// `--record-trace`: where reconciles are recorded (docs/traces.md).
    pub trace: Option<Arc<dyn capms_core::trace::TraceSink>>,
}

impl Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").field("backends", &self.backends).finish_non_exhaustive()
    }
}

impl Context {
    pub fn new(client: Client, backends: Backends, metrics: Arc<Metrics>, clock: Clock) -> Self {
        let reporter =
            Reporter { controller: "capms-manager".to_string(), instance: std::env::var("POD_NAME").ok() };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            backends,
            metrics,
            cache: MachineCache::new(RefreshPolicy::default()),
            backoff: Backoff::default(),
            clock,
            trace: None,
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
    Action::requeue(requeue.unwrap_or(RESYNC))
}

fn namespaced_ref<K: Resource<DynamicType = ()>>(name: &str, namespace: Option<&str>) -> ObjectRef<K> {
    let reference = ObjectRef::new(name);
    match namespace {
        Some(namespace) => reference.within(namespace),
        None => reference,
    }
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
        Err(error) => context.metrics.reconcile_failed(&kind, error.class()),
    }
    result
}

/// Retries a failed reconcile after its error class's delay, doubled for every failure of the
/// object in a row ([`crate::backoff`]).
fn error_policy<K: Resource<DynamicType = ()>>(
    object: Arc<K>,
    error: &OperatorError,
    context: Arc<Context>,
) -> Action {
    let retry = context.backoff.failed(&backoff_key(object.as_ref()), error.retry_after());
    tracing::warn!(kind = %K::kind(&()), name = %object.name_any(), namespace = ?object.namespace(), %error, retry_seconds = retry.as_secs_f64(), "reconcile failed");
    Action::requeue(retry)
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
    let namespace = Namespace::of(&context.client, &object.metadata);
    let facts = gather::machine_facts(&namespace, object).await?;
    let backend = context.backends.for_cluster(facts.metal_cluster.as_ref()).await?;
    let metal_cluster = facts.metal_cluster.as_ref().map(MetalClusterFacts::of);
    let input = MachineInput {
        metal_machine: object,
        capi_machine: facts.capi_machine.as_ref(),
        cluster: facts.cluster.as_ref(),
        metal_cluster: metal_cluster.as_ref(),
        bootstrap: &facts.bootstrap,
        now: context.clock.now(),
        jitter: jitter(),
    };
    let outcome = match &context.trace {
        Some(sink) => {
            trace::record_machine(&input, backend.as_ref(), &context.cache, Variant::Correct, sink.as_ref())
                .await
        }
        None => reconcile_machine(&input, backend.as_ref(), &context.cache).await,
    };
    publish_events(&context.recorder, object, &outcome.events).await;
    let api = namespace.api::<MetalStackMachine>();
    let mut patch = MetadataPatch::default();
    patch.finalizer(&object.metadata, MACHINE_FINALIZER, outcome.finalizer);
    patch.labels(&object.metadata, &outcome.labels);
    patch.spec_field("providerID", object.spec.provider_id.as_ref(), outcome.provider_id.as_ref());
    let version = patch.apply(&api, &object.metadata).await?;
    if outcome.finalizer != FinalizerAction::Remove {
        apply_status(&api, object, &version, object.status.as_ref(), &outcome.status).await?;
    }
    Ok(action(outcome.requeue))
}

/// The MetalStackMachines of the cluster `cluster_name` in `namespace`, from the controller's cache.
fn machines_of_cluster(
    store: &Store<MetalStackMachine>,
    namespace: Option<&str>,
    cluster_name: Option<&str>,
) -> Vec<ObjectRef<MetalStackMachine>> {
    let Some(cluster_name) = cluster_name else { return Vec::new() };
    store
        .state()
        .iter()
        .filter(|machine| machine.namespace().as_deref() == namespace)
        .filter(|machine| capi::label(&machine.metadata, capi::CLUSTER_NAME_LABEL) == Some(cluster_name))
        .map(|machine| ObjectRef::from_obj(machine.as_ref()))
        .collect()
}

fn machine_controller(client: &Client, scope: &Scope) -> Controller<MetalStackMachine> {
    let config = scope.watcher_config();
    let controller = Controller::new(scope.api::<MetalStackMachine>(client), config.clone())
        .with_config(scope.controller_config());
    let by_metal_cluster = controller.store();
    let by_cluster = controller.store();
    controller
        .watches(scope.api::<Machine>(client), config.clone(), |machine| {
            let reference =
                machine.spec.infrastructure_ref.as_ref().filter(|r| r.kind == "MetalStackMachine");
            reference
                .map(|r| namespaced_ref::<MetalStackMachine>(&r.name, machine.metadata.namespace.as_deref()))
        })
        .watches(scope.api::<MetalStackCluster>(client), config.clone(), move |metal_cluster| {
            let cluster_name = capi::label(&metal_cluster.metadata, capi::CLUSTER_NAME_LABEL);
            machines_of_cluster(&by_metal_cluster, metal_cluster.metadata.namespace.as_deref(), cluster_name)
        })
        .watches(scope.api::<Cluster>(client), config, move |cluster| {
            machines_of_cluster(
                &by_cluster,
                cluster.metadata.namespace.as_deref(),
                cluster.metadata.name.as_deref(),
            )
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
    let namespace = Namespace::of(&context.client, &object.metadata);
    let inputs = gather::cluster_inputs(&namespace, object).await?;
    let (backend, credentials) = context.backends.resolve(Some(object)).await?;
    if let Some(secret) = &credentials {
        protect_credentials(context, object, secret).await;
    }
    let input = ClusterInput {
        metal_cluster: object,
        cluster: inputs.cluster.as_ref(),
        machines_remaining: inputs.machines_remaining,
        firewall: inputs.firewall.as_ref(),
        now: context.clock.now(),
        jitter: jitter(),
    };
    let outcome = match &context.trace {
        Some(sink) => trace::record_cluster(&input, backend.as_ref(), sink.as_ref()).await,
        None => reconcile_cluster(&input, backend.as_ref()).await,
    };
    publish_events(&context.recorder, object, &outcome.events).await;
    let api = namespace.api::<MetalStackCluster>();
    let version = cluster_write_back(&api, object, &outcome).await?;
    let child = apply_firewall_child(&namespace, object, inputs.firewall.as_ref(), &outcome.firewall).await;
    if let Err(error @ OperatorError::FirewallNameTaken { .. }) = &child {
        let reason = "FirewallNameTaken";
        publish_event(&context.recorder, object, EventType::Warning, reason, &error.to_string()).await;
    }
    child?;
    if outcome.finalizer != FinalizerAction::Remove && outcome.write_status {
        apply_status(&api, object, &version, object.status.as_ref(), &outcome.status).await?;
    }
    Ok(action(outcome.requeue))
}

/// Protects the cluster's credentials Secret ([`credentials::protect`]). Best effort: the
/// protection is a safeguard for a later deletion, and a refused patch (RBAC without `patch`
/// on Secrets, an admission policy) must not stop the cluster's own work, its deletion
/// included. A refusal is logged and reported as a Warning event; a conflict is retried at the
/// cluster's next reconcile (at the latest after the 10-minute resync).
async fn protect_credentials(context: &Context, object: &MetalStackCluster, secret: &Secret) {
    match credentials::protect(&context.client, &secret.metadata).await {
        Ok(()) => {}
        Err(OperatorError::Conflict) => {
            tracing::debug!(secret = %secret.name_any(), "credentials Secret changed meanwhile")
        }
        Err(error) => {
            let note = format!("cannot mark credentials Secret {} as in use: {error}", secret.name_any());
            tracing::warn!(cluster = %object.name_any(), "{note}");
            publish_event(&context.recorder, object, EventType::Warning, "CredentialsNotProtected", &note)
                .await;
        }
    }
}

async fn cluster_write_back(
    api: &Api<MetalStackCluster>,
    object: &MetalStackCluster,
    outcome: &ClusterOutcome,
) -> Result<String, OperatorError> {
    let spec = &object.spec;
    let mut patch = MetadataPatch::default();
    patch.finalizer(&object.metadata, CLUSTER_FINALIZER, outcome.finalizer);
    patch.spec_field("nodeNetworkID", spec.node_network_id.as_ref(), outcome.node_network_id.as_ref());
    patch.spec_field("controlPlaneIP", spec.control_plane_ip.as_ref(), outcome.control_plane_ip.as_ref());
    patch.spec_field(
        "controlPlaneEndpoint",
        spec.control_plane_endpoint.as_ref(),
        outcome.control_plane_endpoint.as_ref(),
    );
    patch.apply(api, &object.metadata).await
}

fn owner_reference(owner: &MetalStackCluster) -> OwnerReference {
    OwnerReference {
        api_version: MetalStackCluster::api_version(&()).to_string(),
        kind: MetalStackCluster::kind(&()).to_string(),
        name: owner.name_any(),
        uid: owner.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Creates or deletes the cluster's MetalStackFirewall as core decided. `existing` is the child
/// the reconcile saw (owned by `owner`): a delete is conditional on its UID, so that an object
/// that replaced it meanwhile is left alone; a create that finds the name taken by an object
/// `owner` does not own fails with [`OperatorError::FirewallNameTaken`].
async fn apply_firewall_child(
    namespace: &Namespace,
    owner: &MetalStackCluster,
    existing: Option<&MetalStackFirewall>,
    child: &FirewallChild,
) -> Result<(), OperatorError> {
    let api = namespace.api::<MetalStackFirewall>();
    match child {
        FirewallChild::Keep => Ok(()),
        FirewallChild::Ensure { name, spec } => {
            let firewall = MetalStackFirewall {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: owner.metadata.namespace.clone(),
                    labels: owner.metadata.labels.clone(),
                    owner_references: Some(vec![owner_reference(owner)]),
                    ..ObjectMeta::default()
                },
                spec: spec.clone(),
                status: None,
            };
            match api.create(&PostParams::default(), &firewall).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    let taken = api.get_opt(name).await?;
                    match taken {
                        Some(other) if !gather::owned_by(&other.metadata, owner) => {
                            Err(OperatorError::FirewallNameTaken { name: name.clone() })
                        }
                        _ => Ok(()),
                    }
                }
                Err(error) => Err(error.into()),
            }
        }
        FirewallChild::Delete { name } => {
            let preconditions = existing
                .and_then(|firewall| firewall.metadata.uid.clone())
                .map(|uid| Preconditions { uid: Some(uid), resource_version: None });
            let params = DeleteParams { preconditions, ..DeleteParams::default() };
            match api.delete(name, &params).await {
                Ok(_) => Ok(()),
                // Gone, or replaced by another object (the UID precondition failed).
                Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(()),
                Err(error) => Err(error.into()),
            }
        }
    }
}

fn cluster_controller(client: &Client, scope: &Scope) -> Controller<MetalStackCluster> {
    let config = scope.watcher_config();
    Controller::new(scope.api::<MetalStackCluster>(client), config.clone())
        .with_config(scope.controller_config())
        .owns(scope.api::<MetalStackFirewall>(client), config.clone())
        .watches(scope.api::<Cluster>(client), config, |cluster| {
            let reference =
                cluster.spec.infrastructure_ref.as_ref().filter(|r| r.kind == "MetalStackCluster");
            reference
                .map(|r| namespaced_ref::<MetalStackCluster>(&r.name, cluster.metadata.namespace.as_deref()))
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
    let namespace = Namespace::of(&context.client, &object.metadata);
    let facts = gather::firewall_facts(&namespace, object).await?;
    let backend = context.backends.for_cluster(facts.metal_cluster.as_ref()).await?;
    let metal_cluster = facts.metal_cluster.as_ref().map(MetalClusterFacts::of);
    let input = FirewallInput {
        firewall: object,
        cluster: facts.cluster.as_ref(),
        metal_cluster: metal_cluster.as_ref(),
        now: context.clock.now(),
        jitter: jitter(),
    };
    let outcome = match &context.trace {
        Some(sink) => trace::record_firewall(&input, backend.as_ref(), sink.as_ref()).await,
        None => reconcile_firewall(&input, backend.as_ref()).await,
    };
    publish_events(&context.recorder, object, &outcome.events).await;
    let api = namespace.api::<MetalStackFirewall>();
    let mut patch = MetadataPatch::default();
    patch.finalizer(&object.metadata, FIREWALL_FINALIZER, outcome.finalizer);
    patch.spec_field("providerID", object.spec.provider_id.as_ref(), outcome.provider_id.as_ref());
    let version = patch.apply(&api, &object.metadata).await?;
    if outcome.finalizer != FinalizerAction::Remove {
        apply_status(&api, object, &version, object.status.as_ref(), &outcome.status).await?;
    }
    Ok(action(outcome.requeue))
}

fn firewall_controller(client: &Client, scope: &Scope) -> Controller<MetalStackFirewall> {
    let config = scope.watcher_config();
    Controller::new(scope.api::<MetalStackFirewall>(client), config.clone())
        .with_config(scope.controller_config())
        .watches(scope.api::<MetalStackCluster>(client), config.clone(), |metal_cluster| {
            let name = capms_core::reconcile::cluster::firewall_name(&metal_cluster);
            Some(namespaced_ref::<MetalStackFirewall>(&name, metal_cluster.metadata.namespace.as_deref()))
        })
        .watches(scope.api::<Cluster>(client), config, |cluster| {
            let reference =
                cluster.spec.infrastructure_ref.as_ref().filter(|r| r.kind == "MetalStackCluster");
            reference.map(|r| {
                namespaced_ref::<MetalStackFirewall>(
                    &format!("{}-firewall", r.name),
                    cluster.metadata.namespace.as_deref(),
                )
            })
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
/// last one is gone, its Secret is released at once.
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

/// Runs the controllers until `shutdown` completes; reconciles in flight finish first.
pub async fn run<F>(context: Arc<Context>, scope: Scope, shutdown: F)
where
    F: Future<Output = ()> + Send + Sync + 'static,
{
    let client = context.client.clone();
    let shutdown = futures::FutureExt::shared(Box::pin(shutdown));
    let machines = machine_controller(&client, &scope).graceful_shutdown_on(shutdown.clone()).run(
        reconcile_metal_machine,
        error_policy,
        context.clone(),
    );
    let clusters = cluster_controller(&client, &scope).graceful_shutdown_on(shutdown.clone()).run(
        reconcile_metal_cluster,
        error_policy,
        context.clone(),
    );
    let firewalls = firewall_controller(&client, &scope).graceful_shutdown_on(shutdown.clone()).run(
        reconcile_metal_firewall,
        error_policy,
        context.clone(),
    );
    let secrets = credentials_controller(&client, &scope).graceful_shutdown_on(shutdown).run(
        reconcile_credentials,
        error_policy,
        context,
    );
    futures::join!(
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

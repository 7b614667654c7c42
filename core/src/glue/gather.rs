//! Gathering a reconcile's inputs: the facts about an object's owners that the reconcilers take
//! ([`crate::reconcile::facts`]), read through [`Objects`].
//!
//! Owners are found the way Cluster API links them: a MetalStackMachine's owner reference names
//! its Machine, the Machine's `spec.clusterName` its Cluster, the Cluster's `infrastructureRef`
//! the MetalStackCluster; a MetalStackCluster and a MetalStackFirewall name their owners in
//! owner references. An owner whose UID differs from the reference (deleted and re-created) is
//! no owner. Everything is read in the object's namespace.
//!
//! The bootstrap data Secret is the one input not read through [`Objects`]: capms-manager reads
//! it live by name (Secrets are not cached: no list of every Secret, no bootstrap data kept in
//! memory), the simulator from its store; [`bootstrap`] turns what was read into facts.

use super::objects::Objects;
use crate::UserData;
use crate::api::capi::{self, Cluster, Machine};
use crate::api::{MetalStackCluster, MetalStackFirewall, MetalStackMachine};
use crate::reconcile::cluster::firewall_name;
use crate::reconcile::{BootstrapData, CapiMachineFacts, ClusterFacts};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::sync::Arc;

/// What a machine reconcile reads besides the MetalStackMachine (and the bootstrap data).
#[derive(Debug, Default)]
pub struct MachineFacts {
    pub capi_machine: Option<CapiMachineFacts>,
    pub cluster: Option<ClusterFacts>,
    pub metal_cluster: Option<Arc<MetalStackCluster>>,
    /// The Secret named by the Machine's `spec.bootstrap.dataSecretName`, once set.
    pub bootstrap_secret: Option<String>,
}

/// The owner of `meta` of kind `kind`, if it exists with the referenced UID.
fn owner<T: kube_core::Resource>(
    meta: &ObjectMeta,
    kind: &str,
    read: impl FnOnce(&str, &str) -> Option<Arc<T>>,
) -> Option<Arc<T>> {
    let reference = meta.owner_references.iter().flatten().find(|reference| reference.kind == kind)?;
    let owner = read(meta.namespace.as_deref().unwrap_or_default(), &reference.name)?;
    (owner.meta().uid.as_deref() == Some(reference.uid.as_str())).then_some(owner)
}

/// The inputs of a MetalStackMachine's reconcile.
pub fn machine(objects: &impl Objects, metal_machine: &MetalStackMachine) -> MachineFacts {
    let meta = &metal_machine.metadata;
    let namespace = meta.namespace.as_deref().unwrap_or_default();
    let machine: Option<Arc<Machine>> = owner(meta, "Machine", |ns, name| objects.machine(ns, name));
    // The cluster name comes from the Machine, or from the label CAPI puts on every
    // infrastructure machine: a MetalStackMachine whose Machine is already gone (a forced
    // delete) must still find its MetalStackCluster to free what it owns.
    let cluster_name = match &machine {
        Some(machine) => Some(machine.spec.cluster_name.clone()),
        None => capi::label(meta, capi::CLUSTER_NAME_LABEL).map(str::to_string),
    };
    let cluster = cluster_name.as_deref().and_then(|name| objects.cluster(namespace, name));
    let metal_cluster = match (&cluster, &cluster_name) {
        (Some(cluster), _) => cluster
            .spec
            .infrastructure_ref
            .as_ref()
            .and_then(|reference| objects.metal_cluster(namespace, &reference.name)),
        (None, Some(name)) => only(objects.metal_clusters_of(namespace, name)),
        (None, None) => None,
    };
    MachineFacts {
        capi_machine: machine.as_ref().map(|machine| CapiMachineFacts {
            name: machine.metadata.name.clone().unwrap_or_default(),
            control_plane: machine.is_control_plane(),
        }),
        cluster: cluster.as_deref().map(ClusterFacts::of),
        metal_cluster,
        bootstrap_secret: machine.as_ref().and_then(|m| m.data_secret_name()).map(str::to_string),
    }
}

/// The one element of `found`, none if there are several.
fn only<T>(mut found: Vec<T>) -> Option<T> {
    if found.len() == 1 { found.pop() } else { None }
}

/// The bootstrap data of a machine: `secret_name` is [`MachineFacts::bootstrap_secret`],
/// `secret` what reading it found. The value is read into a redacting [`UserData`] at once.
pub fn bootstrap(secret_name: Option<&str>, secret: Option<&Secret>) -> BootstrapData {
    let Some(secret_name) = secret_name else { return BootstrapData::NotReady };
    let Some(secret) = secret else {
        return BootstrapData::SecretMissing { secret: secret_name.to_string() };
    };
    match secret.data.as_ref().and_then(|data| data.get("value")) {
        Some(value) => BootstrapData::Present(UserData::new(String::from_utf8_lossy(&value.0).into_owned())),
        None => BootstrapData::ValueMissing { secret: secret_name.to_string() },
    }
}

/// What a cluster reconcile reads besides the MetalStackCluster.
#[derive(Debug, Default)]
pub struct ClusterInputs {
    pub cluster: Option<ClusterFacts>,
    pub machines_remaining: usize,
    /// The cluster's own MetalStackFirewall (owned by it).
    pub firewall: Option<Arc<MetalStackFirewall>>,
}

/// The inputs of a MetalStackCluster's reconcile.
pub fn cluster(objects: &impl Objects, metal_cluster: &MetalStackCluster) -> ClusterInputs {
    let meta = &metal_cluster.metadata;
    let namespace = meta.namespace.as_deref().unwrap_or_default();
    let cluster: Option<Arc<Cluster>> = owner(meta, "Cluster", |ns, name| objects.cluster(ns, name));
    // The cluster-name label CAPI sets, or the owning Cluster's name: without either, no
    // machine can be counted, and a teardown must not then free the network under them.
    let cluster_name = capi::label(meta, capi::CLUSTER_NAME_LABEL)
        .map(str::to_string)
        .or_else(|| cluster.as_ref().and_then(|cluster| cluster.metadata.name.clone()));
    let machines_remaining = cluster_name.map_or(0, |name| objects.metal_machines_of(namespace, &name).len());
    // Only the cluster's own child counts: a same-named object of someone else is neither
    // waited for nor deleted (creating the child then fails with a clear error).
    let firewall = objects
        .firewall(namespace, &firewall_name(metal_cluster))
        .filter(|firewall| owned_by(&firewall.metadata, metal_cluster));
    ClusterInputs { cluster: cluster.as_deref().map(ClusterFacts::of), machines_remaining, firewall }
}

/// True if `meta` names `owner` (by UID) among its owners.
pub fn owned_by(meta: &ObjectMeta, owner: &MetalStackCluster) -> bool {
    let uid = owner.metadata.uid.as_deref();
    meta.owner_references
        .iter()
        .flatten()
        .any(|reference| reference.kind == "MetalStackCluster" && Some(reference.uid.as_str()) == uid)
}

/// What a firewall reconcile reads besides the MetalStackFirewall.
#[derive(Debug, Default)]
pub struct FirewallFacts {
    pub cluster: Option<ClusterFacts>,
    pub metal_cluster: Option<Arc<MetalStackCluster>>,
}

/// The inputs of a MetalStackFirewall's reconcile.
pub fn firewall(objects: &impl Objects, firewall: &MetalStackFirewall) -> FirewallFacts {
    let metal_cluster: Option<Arc<MetalStackCluster>> =
        owner(&firewall.metadata, "MetalStackCluster", |ns, name| objects.metal_cluster(ns, name));
    let Some(metal_cluster) = metal_cluster else { return FirewallFacts::default() };
    let cluster: Option<Arc<Cluster>> =
        owner(&metal_cluster.metadata, "Cluster", |ns, name| objects.cluster(ns, name));
    FirewallFacts { cluster: cluster.as_deref().map(ClusterFacts::of), metal_cluster: Some(metal_cluster) }
}

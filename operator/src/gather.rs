//! Gathering a reconcile's inputs from the management cluster: the facts about an object's
//! owners that the core reconcilers take (`capms_core::reconcile::facts`).
//!
//! Owners are found the way CAPI links them: a MetalStackMachine's owner reference names its
//! Machine, the Machine's `spec.clusterName` its Cluster, the Cluster's `infrastructureRef` the
//! MetalStackCluster; a MetalStackCluster and a MetalStackFirewall name their owners in owner
//! references. An owner whose UID differs from the reference (deleted and re-created) is no
//! owner. Everything is read in the object's namespace.

use capms_core::UserData;
use capms_core::api::capi::{self, Cluster, Machine};
use capms_core::api::{MetalStackCluster, MetalStackFirewall, MetalStackMachine};
use capms_core::reconcile::{BootstrapData, CapiMachineFacts, ClusterFacts};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::ListParams;
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use std::fmt::Debug;

/// Reads of one namespace.
#[derive(Clone)]
pub struct Namespace {
    client: Client,
    name: String,
}

impl std::fmt::Debug for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Namespace").field("name", &self.name).finish_non_exhaustive()
    }
}

impl Namespace {
    pub fn of(client: &Client, meta: &ObjectMeta) -> Self {
        Namespace { client: client.clone(), name: meta.namespace.clone().unwrap_or_default() }
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    async fn get<K>(&self, name: &str) -> Result<Option<K>, kube::Error>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + Debug,
    {
        self.api::<K>().get_opt(name).await
    }

    /// The owner of `meta` of kind `K`, if it exists with the referenced UID.
    async fn owner<K>(&self, meta: &ObjectMeta) -> Result<Option<K>, kube::Error>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + Debug,
    {
        let kind = K::kind(&());
        let reference = meta.owner_references.iter().flatten().find(|reference| reference.kind == kind);
        let Some(reference) = reference else { return Ok(None) };
        let owner = self.get::<K>(&reference.name).await?;
        Ok(owner.filter(|owner| owner.meta().uid.as_deref() == Some(reference.uid.as_str())))
    }
}

/// What a machine reconcile reads besides the MetalStackMachine.
#[derive(Debug, Default)]
pub struct MachineFacts {
    pub capi_machine: Option<CapiMachineFacts>,
    pub cluster: Option<ClusterFacts>,
    pub metal_cluster: Option<MetalStackCluster>,
    pub bootstrap: BootstrapData,
}

pub async fn machine_facts(
    namespace: &Namespace,
    metal_machine: &MetalStackMachine,
) -> Result<MachineFacts, kube::Error> {
    let machine = namespace.owner::<Machine>(&metal_machine.metadata).await?;
    // The cluster name comes from the Machine, or from the label CAPI puts on every
    // infrastructure machine: a MetalStackMachine whose Machine is already gone (a forced
    // delete) must still find its MetalStackCluster to free what it owns.
    let cluster_name = match &machine {
        Some(machine) => Some(machine.spec.cluster_name.clone()),
        None => capi::label(&metal_machine.metadata, capi::CLUSTER_NAME_LABEL).map(str::to_string),
    };
    let cluster = match &cluster_name {
        Some(name) => namespace.get::<Cluster>(name).await?,
        None => None,
    };
    let metal_cluster = match (&cluster, &cluster_name) {
        (Some(cluster), _) => match cluster.spec.infrastructure_ref.as_ref() {
            Some(reference) => namespace.get::<MetalStackCluster>(&reference.name).await?,
            None => None,
        },
        (None, Some(name)) => metal_cluster_by_label(namespace, name).await?,
        (None, None) => None,
    };
    let bootstrap = match &machine {
        Some(machine) => bootstrap_data(namespace, machine).await?,
        None => BootstrapData::NotReady,
    };
    Ok(MachineFacts {
        capi_machine: machine.as_ref().map(|machine| CapiMachineFacts {
            name: machine.metadata.name.clone().unwrap_or_default(),
            control_plane: machine.is_control_plane(),
        }),
        cluster: cluster.as_ref().map(ClusterFacts::of),
        metal_cluster,
        bootstrap,
    })
}

/// The one MetalStackCluster labelled with `cluster_name` (none if there are several).
async fn metal_cluster_by_label(
    namespace: &Namespace,
    cluster_name: &str,
) -> Result<Option<MetalStackCluster>, kube::Error> {
    let selector = format!("{}={cluster_name}", capi::CLUSTER_NAME_LABEL);
    let mut found =
        namespace.api::<MetalStackCluster>().list(&ListParams::default().labels(&selector)).await?.items;
    Ok(if found.len() == 1 { found.pop() } else { None })
}

/// The bootstrap data of `machine`; its value is read into a redacting [`UserData`] at once.
async fn bootstrap_data(namespace: &Namespace, machine: &Machine) -> Result<BootstrapData, kube::Error> {
    let Some(secret_name) = machine.data_secret_name() else { return Ok(BootstrapData::NotReady) };
    let Some(secret) = namespace.get::<Secret>(secret_name).await? else {
        return Ok(BootstrapData::SecretMissing { secret: secret_name.to_string() });
    };
    Ok(match secret.data.as_ref().and_then(|data| data.get("value")) {
        Some(value) => BootstrapData::Present(UserData::new(String::from_utf8_lossy(&value.0).into_owned())),
        None => BootstrapData::ValueMissing { secret: secret_name.to_string() },
    })
}

/// What a cluster reconcile reads besides the MetalStackCluster.
#[derive(Debug, Default)]
pub struct ClusterInputs {
    pub cluster: Option<ClusterFacts>,
    pub machines_remaining: usize,
    pub firewall: Option<MetalStackFirewall>,
}

pub async fn cluster_inputs(
    namespace: &Namespace,
    metal_cluster: &MetalStackCluster,
) -> Result<ClusterInputs, kube::Error> {
    let cluster = namespace.owner::<Cluster>(&metal_cluster.metadata).await?;
    // The cluster-name label CAPI sets, or the owning Cluster's name: without either, no
    // machine can be counted, and a teardown must not then free the network under them.
    let cluster_name = capi::label(&metal_cluster.metadata, capi::CLUSTER_NAME_LABEL)
        .map(str::to_string)
        .or_else(|| cluster.as_ref().and_then(|cluster| cluster.metadata.name.clone()));
    let machines_remaining = match cluster_name {
        Some(cluster_name) => {
            let selector = format!("{}={cluster_name}", capi::CLUSTER_NAME_LABEL);
            let params = ListParams::default().labels(&selector);
            namespace.api::<MetalStackMachine>().list(&params).await?.items.len()
        }
        None => 0,
    };
    let firewall_name = capms_core::reconcile::cluster::firewall_name(metal_cluster);
    // Only the cluster's own child counts: a same-named object of someone else is neither
    // waited for nor deleted (creating the child then fails with a clear error).
    let firewall = namespace
        .get::<MetalStackFirewall>(&firewall_name)
        .await?
        .filter(|firewall| owned_by(&firewall.metadata, metal_cluster));
    Ok(ClusterInputs { cluster: cluster.as_ref().map(ClusterFacts::of), machines_remaining, firewall })
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
    pub metal_cluster: Option<MetalStackCluster>,
}

pub async fn firewall_facts(
    namespace: &Namespace,
    firewall: &MetalStackFirewall,
) -> Result<FirewallFacts, kube::Error> {
    let Some(metal_cluster) = namespace.owner::<MetalStackCluster>(&firewall.metadata).await? else {
        return Ok(FirewallFacts::default());
    };
    let cluster = namespace.owner::<Cluster>(&metal_cluster.metadata).await?;
    Ok(FirewallFacts { cluster: cluster.as_ref().map(ClusterFacts::of), metal_cluster: Some(metal_cluster) })
}

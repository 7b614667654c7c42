//! The workload cluster's side, played by the harness: the machines capms allocates in the
//! simulated datacenter boot nothing, so the harness does what kubeadm and metal-ccm would do
//! there. The workload cluster is the management cluster's own apiserver (reachable, unlike the
//! control-plane IP in the datacenter):
//!
//! - `<cluster>-kubeconfig`, which the kubeadm control plane writes for the control-plane IP, is
//!   rewritten to point at the management apiserver (as admin);
//! - `kube-system/kubeadm-config` is created, which is how the kubeadm control plane learns
//!   that `kubeadm init` ran;
//! - a Node with the Machine's `spec.providerID` is created for every Machine that has one,
//!   Ready, as metal-ccm and the kubelet would make it.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::api::core::v1::{ConfigMap, Node, NodeCondition, NodeSpec, NodeStatus, Secret};
use kube::api::{
    ApiResource, DynamicObject, GroupVersionKind, ListParams, ObjectMeta, Patch, PatchParams, PostParams,
};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

use crate::control_plane::ControlPlane;
use crate::error::{KubeContext, Result};
use crate::kubeconfig::{self, Credentials};

/// The label Cluster API puts on a cluster's objects.
pub const CLUSTER_NAME_LABEL: &str = "cluster.x-k8s.io/cluster-name";

/// A Cluster API kind of group `cluster.x-k8s.io`, version v1beta2.
pub fn capi(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("cluster.x-k8s.io", "v1beta2", kind), plural)
}

/// A capms kind (group `infrastructure.cluster.x-k8s.io`).
pub fn capms(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("infrastructure.cluster.x-k8s.io", "v1alpha1", kind),
        plural,
    )
}

/// A cluster's objects of one kind.
pub async fn list(
    plane: &ControlPlane,
    resource: &ApiResource,
    namespace: &str,
    cluster: &str,
) -> Result<Vec<DynamicObject>> {
    let api: Api<DynamicObject> = Api::namespaced_with(plane.client(), namespace, resource);
    let selector = ListParams::default().labels(&format!("{CLUSTER_NAME_LABEL}={cluster}"));
    Ok(api.list(&selector).await.kube(|| format!("list {} of {namespace}/{cluster}", resource.plural))?.items)
}

/// Does one round of what the workload cluster would do (see the module docs). Returns a line
/// saying what it did, for progress.
pub async fn act(plane: &ControlPlane, namespace: &str, cluster: &str) -> Result<String> {
    let kubeconfig = rewrite_kubeconfig(plane, namespace, cluster).await?;
    if kubeconfig {
        ensure_kubeadm_config(plane).await?;
    }
    let (with_nodes, machines) = ensure_nodes(plane, namespace, cluster).await?;
    let kubeconfig = if kubeconfig { "points here" } else { "not yet written" };
    Ok(format!("kubeconfig {kubeconfig}, {with_nodes} of {machines} Machines have a Node"))
}

/// [`act`] for every Cluster of the management cluster; returns `namespace/name` and what was
/// done, per cluster.
pub async fn act_all(plane: &ControlPlane) -> Result<Vec<(String, String)>> {
    let clusters: Api<DynamicObject> = Api::all_with(plane.client(), &capi("Cluster", "clusters"));
    let list = clusters.list(&ListParams::default()).await.kube(|| "list Clusters".to_string())?;
    let mut lines = Vec::new();
    for cluster in list.items {
        let (Some(namespace), Some(name)) =
            (cluster.metadata.namespace.clone(), cluster.metadata.name.clone())
        else {
            continue;
        };
        lines.push((format!("{namespace}/{name}"), act(plane, &namespace, &name).await?));
    }
    Ok(lines)
}

/// Points `<cluster>-kubeconfig` at the management apiserver. Returns whether the Secret
/// exists (and now points there).
async fn rewrite_kubeconfig(plane: &ControlPlane, namespace: &str, cluster: &str) -> Result<bool> {
    let secrets: Api<Secret> = Api::namespaced(plane.client(), namespace);
    let name = format!("{cluster}-kubeconfig");
    let Some(secret) = secrets.get_opt(&name).await.kube(|| format!("read Secret {name}"))? else {
        return Ok(false);
    };
    let current = secret
        .data
        .as_ref()
        .and_then(|data| data.get("value"))
        .map(|value| String::from_utf8_lossy(&value.0).into_owned());
    if current.is_some_and(|text| text.contains(plane.server())) {
        return Ok(true);
    }
    let admin =
        plane.pki().client(&format!("{cluster}-workload-admin"), "kubernetes-admin", "system:masters")?;
    let config = kubeconfig::kubeconfig(
        cluster,
        plane.server(),
        &plane.pki().ca_pem(),
        "admin",
        &Credentials::Certificate(admin),
    )?;
    let patch = json!({ "data": { "value": STANDARD.encode(config.to_string()) } });
    secrets
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .kube(|| format!("rewrite Secret {name}"))?;
    Ok(true)
}

/// `kube-system/kubeadm-config`, as `kubeadm init` leaves it.
async fn ensure_kubeadm_config(plane: &ControlPlane) -> Result<()> {
    let maps: Api<ConfigMap> = Api::namespaced(plane.client(), "kube-system");
    if maps.get_opt("kubeadm-config").await.kube(|| "read kubeadm-config".to_string())?.is_some() {
        return Ok(());
    }
    let configuration =
        "apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\nkubernetesVersion: v1.33.0\n";
    let map = ConfigMap {
        metadata: ObjectMeta { name: Some("kubeadm-config".to_string()), ..ObjectMeta::default() },
        data: Some(BTreeMap::from([("ClusterConfiguration".to_string(), configuration.to_string())])),
        ..ConfigMap::default()
    };
    maps.create(&PostParams::default(), &map).await.kube(|| "create kubeadm-config".to_string())?;
    Ok(())
}

/// Creates a Ready Node for every Machine of the cluster with a providerID and no Node yet.
/// Returns how many Machines have a Node, and how many there are.
async fn ensure_nodes(plane: &ControlPlane, namespace: &str, cluster: &str) -> Result<(usize, usize)> {
    let nodes: Api<Node> = Api::all(plane.client());
    let known: Vec<String> = nodes
        .list(&ListParams::default())
        .await
        .kube(|| "list Nodes".to_string())?
        .items
        .into_iter()
        .filter_map(|node| node.spec.and_then(|spec| spec.provider_id))
        .collect();
    let machines = list(plane, &capi("Machine", "machines"), namespace, cluster).await?;
    let mut with_nodes = 0;
    for machine in &machines {
        let Some(provider_id) = machine.data.pointer("/spec/providerID").and_then(Value::as_str) else {
            continue;
        };
        with_nodes += 1;
        if known.iter().any(|known| known == provider_id) || machine.metadata.deletion_timestamp.is_some() {
            continue;
        }
        create_node(&nodes, &machine.name_any(), provider_id).await?;
    }
    Ok((with_nodes, machines.len()))
}

async fn create_node(nodes: &Api<Node>, name: &str, provider_id: &str) -> Result<()> {
    let node = Node {
        metadata: ObjectMeta { name: Some(name.to_string()), ..ObjectMeta::default() },
        spec: Some(NodeSpec { provider_id: Some(provider_id.to_string()), ..NodeSpec::default() }),
        ..Node::default()
    };
    nodes.create(&PostParams::default(), &node).await.kube(|| format!("create Node {name}"))?;
    set_node_ready(nodes, name, true).await
}

/// Sets the Node's conditions as its kubelet would: Ready (or not), and no memory, disk or PID
/// pressure (Cluster API reads all four for a Machine's NodeHealthy).
pub async fn set_node_ready(nodes: &Api<Node>, name: &str, ready: bool) -> Result<()> {
    let condition = |type_: &str, status: bool, reason: &str| NodeCondition {
        type_: type_.to_string(),
        status: if status { "True" } else { "False" }.to_string(),
        reason: Some(reason.to_string()),
        message: Some("set by capms-realcluster".to_string()),
        last_heartbeat_time: Some(now()),
        last_transition_time: Some(now()),
    };
    let conditions = vec![
        condition("Ready", ready, if ready { "KubeletReady" } else { "KubeletNotReady" }),
        condition("MemoryPressure", false, "KubeletHasSufficientMemory"),
        condition("DiskPressure", false, "KubeletHasNoDiskPressure"),
        condition("PIDPressure", false, "KubeletHasSufficientPID"),
    ];
    let status = json!({ "status": NodeStatus { conditions: Some(conditions), ..NodeStatus::default() } });
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .kube(|| format!("set Node {name} Ready={ready}"))?;
    Ok(())
}

fn now() -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now())
}

//! What the flows share: a harness per flow that keeps its folder when the flow fails, and the
//! checks and steps the flows are made of.

pub mod cel;

use std::time::Duration;

use capms_realcluster::components::{clusterctl, kubectl};
use capms_realcluster::metal::EDIT_KEY;
use capms_realcluster::process::output;
use capms_realcluster::wait::{Progress, until};
use capms_realcluster::workload::{self, capi, capms};
use capms_realcluster::{Error, Harness, ManagementCluster, Result};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::{Api, ResourceExt};
use serde_json::Value;

/// The namespace the flows create clusters in.
pub const NAMESPACE: &str = "default";
/// How long a generated cluster may take until every Machine runs (the datacenter provisions
/// a machine in 3 s; the rest is Cluster API's and capms's requeues).
const CLUSTER_UP: Duration = Duration::from_secs(300);
/// How long a Machine's InfrastructureReady may be False before the infrastructure health
/// check remediates it (longer than provisioning).
const INFRASTRUCTURE_TIMEOUT: u32 = 30;
/// How long a cluster's deletion may take until the Cluster object is gone.
const CLUSTER_GONE: Duration = Duration::from_secs(300);

/// One flow: a harness with its own metal-api and folder.
pub struct Flow {
    harness: Harness,
}

impl Flow {
    /// Runs `body` with a fresh harness. A failure panics with the error and the path of the
    /// kept folder (logs of every process, kubeconfigs); `CAPMS_REALCLUSTER_KEEP=1` keeps it on
    /// success too.
    pub async fn run(name: &str, body: impl AsyncFnOnce(&mut Flow) -> Result<()>) {
        let harness = match Harness::start(None).await {
            Ok(harness) => harness,
            Err(error) => panic!("flow {name}: the harness did not start: {error}"),
        };
        let mut flow = Flow { harness };
        if let Err(error) = body(&mut flow).await {
            let kept = flow.harness.keep();
            panic!("flow {name} failed: {error}\n(files and logs kept in {})", kept.display());
        }
        if std::env::var_os("CAPMS_REALCLUSTER_KEEP").is_some() {
            eprintln!("flow {name}: files and logs kept in {}", flow.harness.keep().display());
        }
    }

    /// The simulated metal-api.
    pub fn metal(&self) -> &capms_realcluster::MetalApi {
        self.harness.metal()
    }

    /// Starts a management cluster named `name`.
    pub async fn management_cluster(&self, name: &str) -> Result<ManagementCluster> {
        self.harness.management_cluster(name).await
    }
}

/// The provider inventory lists the four providers, as `clusterctl init` would leave it.
pub async fn inventory_has_every_provider(cluster: &ManagementCluster) -> Result<()> {
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("clusterctl.cluster.x-k8s.io", "v1alpha3", "Provider"),
        "providers",
    );
    let api: Api<DynamicObject> = Api::all_with(cluster.plane().client(), &resource);
    let mut names: Vec<String> = api
        .list(&ListParams::default())
        .await
        .map_err(|source| capms_realcluster::Error::Kube { context: "list providers".to_string(), source })?
        .items
        .into_iter()
        .filter_map(|provider| provider.metadata.name)
        .collect();
    names.sort();
    let expected = ["bootstrap-kubeadm", "cluster-api", "control-plane-kubeadm", "infrastructure-metalstack"];
    if names != expected {
        return Err(capms_realcluster::Error::Invalid(format!(
            "the provider inventory is {names:?}, not {expected:?}"
        )));
    }
    Ok(())
}

/// `clusterctl generate cluster NAME` (see [`ManagementCluster::generate_cluster`]) in the
/// flows' namespace.
pub async fn generate_cluster(
    flow: &Flow,
    cluster: &ManagementCluster,
    name: &str,
    flavor: Option<&str>,
    workers: usize,
) -> Result<String> {
    cluster.generate_cluster(flow.harness.binaries(), NAMESPACE, name, flavor, workers).await
}

/// Plays the workload cluster (see `workload.rs`) until the cluster's infrastructure is
/// provisioned and `machines` Machines run with a nodeRef.
pub async fn until_running(
    flow: &mut Flow,
    cluster: &mut ManagementCluster,
    name: &str,
    machines: usize,
) -> Result<()> {
    until_running_with(flow, cluster, name, machines, Workload::Played).await
}

/// Who plays the workload cluster while a flow waits for Machines to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// The harness, on this management cluster's apiserver (see `workload.rs`).
    Played,
    /// Nobody: it is complete already (after a move it stays on the source's apiserver, which
    /// the moved `<cluster>-kubeconfig` points at).
    AsIs,
}

/// [`until_running`], with the workload cluster played or left as it is.
pub async fn until_running_with(
    flow: &mut Flow,
    cluster: &mut ManagementCluster,
    name: &str,
    machines: usize,
    workload: Workload,
) -> Result<()> {
    until(&format!("cluster {name} to run {machines} machines"), CLUSTER_UP, async || {
        flow.harness.alive()?;
        cluster.alive()?;
        let acted = match workload {
            Workload::Played => workload::act(cluster.plane(), NAMESPACE, name).await?,
            Workload::AsIs => "workload cluster as it is".to_string(),
        };
        let found = workload::list(cluster.plane(), &capi("Machine", "machines"), NAMESPACE, name).await?;
        let running = found.iter().filter(|machine| runs(machine)).count();
        let infrastructure = cluster_field(cluster, name, "/status/initialization/infrastructureProvisioned")
            .await?
            == Value::Bool(true);
        let state =
            format!("infrastructure provisioned {infrastructure}; {acted}; machines: {}", describe(&found));
        Ok(if infrastructure && running == machines && found.len() == machines {
            Progress::Done(())
        } else {
            Progress::Waiting(state)
        })
    })
    .await
}

/// Deletes the Cluster as a user would, waits until it is gone, then checks that nothing is
/// left: no capms object in the namespace and nothing allocated in the datacenter.
pub async fn delete_and_check_nothing_left(
    flow: &mut Flow,
    cluster: &mut ManagementCluster,
    name: &str,
) -> Result<()> {
    delete_cluster(flow, cluster, name).await?;
    check_nothing_left(flow, cluster).await
}

/// Deletes the Cluster as a user would (`kubectl delete cluster`) and waits until it is gone.
pub async fn delete_cluster(flow: &mut Flow, cluster: &mut ManagementCluster, name: &str) -> Result<()> {
    let mut command = kubectl(cluster.plane());
    command.args(["delete", "cluster", name, "--namespace", NAMESPACE, "--wait=false"]);
    output(command).await?;
    until(&format!("cluster {name} to be deleted"), CLUSTER_GONE, async || {
        flow.harness.alive()?;
        cluster.alive()?;
        let left = cluster_field(cluster, name, "/metadata/finalizers").await?;
        let machines = workload::list(cluster.plane(), &capi("Machine", "machines"), NAMESPACE, name).await?;
        Ok(match cluster_object(cluster, name).await? {
            None => Progress::Done(()),
            Some(_) => {
                Progress::Waiting(format!("Cluster finalizers {left}; machines: {}", describe(&machines)))
            }
        })
    })
    .await
}

/// No capms object is left in the namespace and nothing is allocated in the datacenter.
pub async fn check_nothing_left(flow: &Flow, cluster: &ManagementCluster) -> Result<()> {
    for (kind, plural) in [
        ("MetalStackCluster", "metalstackclusters"),
        ("MetalStackMachine", "metalstackmachines"),
        ("MetalStackFirewall", "metalstackfirewalls"),
    ] {
        let api: Api<DynamicObject> =
            Api::namespaced_with(cluster.plane().client(), NAMESPACE, &capms(kind, plural));
        let names: Vec<String> = api
            .list(&ListParams::default())
            .await
            .map_err(|source| Error::Kube { context: format!("list {plural}"), source })?
            .items
            .into_iter()
            .filter_map(|object| object.metadata.name)
            .collect();
        if !names.is_empty() {
            return Err(Error::Invalid(format!("{kind}s left after the Cluster was deleted: {names:?}")));
        }
    }
    let allocated = flow.harness.metal().allocated().await?;
    if !allocated.is_empty() {
        return Err(Error::Invalid(format!("left allocated in the datacenter: {allocated}")));
    }
    Ok(())
}

fn runs(machine: &DynamicObject) -> bool {
    machine.data.pointer("/status/phase").and_then(Value::as_str) == Some("Running")
        && machine.data.pointer("/status/nodeRef").is_some()
}

/// One line per Machine: name, phase, providerID, nodeRef.
pub fn describe(machines: &[DynamicObject]) -> String {
    let lines: Vec<String> = machines
        .iter()
        .map(|machine| {
            let field = |pointer: &str| {
                machine.data.pointer(pointer).map_or("-".to_string(), |value| value.to_string())
            };
            format!(
                "{} phase {} providerID {} nodeRef {} bootstrap {}",
                machine.metadata.name.as_deref().unwrap_or("?"),
                field("/status/phase"),
                field("/spec/providerID"),
                field("/status/nodeRef/name"),
                field("/spec/bootstrap/dataSecretName"),
            )
        })
        .collect();
    if lines.is_empty() { "none".to_string() } else { lines.join("; ") }
}

async fn cluster_object(cluster: &ManagementCluster, name: &str) -> Result<Option<DynamicObject>> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(cluster.plane().client(), NAMESPACE, &capi("Cluster", "clusters"));
    api.get_opt(name).await.map_err(|source| Error::Kube { context: format!("read Cluster {name}"), source })
}

async fn cluster_field(cluster: &ManagementCluster, name: &str, pointer: &str) -> Result<Value> {
    Ok(cluster_object(cluster, name)
        .await?
        .and_then(|object| object.data.pointer(pointer).cloned())
        .unwrap_or(Value::Null))
}

/// The manifest as a JSON `List`, with the MetalStackCluster's `spec.credentialsRef` naming
/// `secret`.
pub fn with_credentials(manifest: &str, secret: &str) -> Result<String> {
    let mut documents: Vec<Value> = serde_saphyr::from_multiple(manifest)
        .map_err(|error| Error::Invalid(format!("manifest: {error}")))?;
    documents.retain(|document| !document.is_null());
    let mut named = 0;
    for document in documents.iter_mut().filter(|document| document["kind"] == "MetalStackCluster") {
        document["spec"]["credentialsRef"] = serde_json::json!({ "name": secret });
        named += 1;
    }
    if named != 1 {
        return Err(Error::Invalid(format!("the manifest has {named} MetalStackClusters, not one")));
    }
    Ok(serde_json::json!({ "apiVersion": "v1", "kind": "List", "items": documents }).to_string())
}

/// A Secret of metal-api credentials for `credentialsRef`, in the flows' namespace.
pub async fn create_credentials(flow: &Flow, cluster: &ManagementCluster, name: &str) -> Result<()> {
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(serde_json::json!({
        "metadata": { "name": name, "namespace": NAMESPACE },
        "stringData": { "METAL_API_URL": flow.harness.metal().url(), "METAL_API_HMAC": EDIT_KEY },
    }))
    .map_err(|error| Error::Invalid(error.to_string()))?;
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(cluster.plane().client(), NAMESPACE);
    secrets
        .create(&kube::api::PostParams::default(), &secret)
        .await
        .map_err(|source| Error::Kube { context: format!("create Secret {name}"), source })?;
    Ok(())
}

/// The Secret's data, or `None` if it does not exist.
pub async fn secret_data(
    cluster: &ManagementCluster,
    name: &str,
) -> Result<Option<std::collections::BTreeMap<String, k8s_openapi::ByteString>>> {
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(cluster.plane().client(), NAMESPACE);
    let secret = secrets
        .get_opt(name)
        .await
        .map_err(|source| Error::Kube { context: format!("read Secret {name}"), source })?;
    Ok(secret.map(|secret| secret.data.unwrap_or_default()))
}

/// What the datacenter holds for the project: machines with their allocation, networks, IPs.
pub async fn datacenter(flow: &Flow) -> Result<Vec<String>> {
    let allocated = flow.harness.metal().allocated().await?;
    let mut lines: Vec<String> = allocated
        .machines
        .iter()
        .map(|machine| {
            format!(
                "machine {} allocation {:?}",
                machine.id,
                machine.allocation.as_ref().map(|a| &a.allocation_uuid)
            )
        })
        .chain(allocated.networks.iter().map(|network| format!("network {}", network.id)))
        .chain(allocated.ips.iter().map(|ip| format!("ip {}", ip.address)))
        .collect();
    lines.sort();
    Ok(lines)
}

/// `clusterctl move` (the real binary, with its preflight checks) of the flows' namespace from
/// `source` to `target`.
pub async fn clusterctl_move(
    flow: &Flow,
    source: &ManagementCluster,
    target: &ManagementCluster,
) -> Result<String> {
    let home = source.plane().dir().join("clusterctl-home");
    std::fs::create_dir_all(&home)
        .map_err(|source| Error::Io { context: format!("create {}", home.display()), source })?;
    let mut command = clusterctl(flow.harness.binaries(), &home);
    command.args(["move", "--namespace", NAMESPACE, "-v", "3"]);
    command.arg("--kubeconfig").arg(source.plane().admin_kubeconfig());
    command.arg("--to-kubeconfig").arg(target.plane().admin_kubeconfig());
    output(command).await
}

/// Names of a kind's objects in the flows' namespace.
pub async fn names(cluster: &ManagementCluster, resource: &ApiResource) -> Result<Vec<String>> {
    let api: Api<DynamicObject> = Api::namespaced_with(cluster.plane().client(), NAMESPACE, resource);
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(|source| Error::Kube { context: format!("list {}", resource.plural), source })?;
    Ok(list.items.into_iter().filter_map(|object| object.metadata.name).collect())
}

/// A MachineHealthCheck on the MachineDeployment `<cluster>-md-0` that remediates a Machine
/// whose Node has been NotReady for a second.
pub async fn create_node_health_check(cluster: &ManagementCluster, name: &str) -> Result<()> {
    let checks = serde_json::json!({ "unhealthyNodeConditions": [{ "type": "Ready", "status": "False", "timeoutSeconds": 1 }] });
    create_health_check(cluster, name, "nodes", checks).await
}

/// A MachineHealthCheck `<cluster>-md-0-<suffix>` with `checks` on the MachineDeployment
/// `<cluster>-md-0`.
async fn create_health_check(
    cluster: &ManagementCluster,
    name: &str,
    suffix: &str,
    checks: Value,
) -> Result<()> {
    let check = serde_json::json!({
        "apiVersion": "cluster.x-k8s.io/v1beta2",
        "kind": "MachineHealthCheck",
        "metadata": { "name": format!("{name}-md-0-{suffix}"), "namespace": NAMESPACE },
        "spec": {
            "clusterName": name,
            "selector": { "matchLabels": { "cluster.x-k8s.io/deployment-name": format!("{name}-md-0") } },
            "checks": checks,
        },
    });
    cluster.apply_manifest(&format!("{name}-{suffix}-health-check"), &check.to_string()).await
}

/// The cluster's worker Machines (of its MachineDeployment): name and providerID.
pub async fn workers(cluster: &ManagementCluster, name: &str) -> Result<Vec<(String, String)>> {
    let machines = workload::list(cluster.plane(), &capi("Machine", "machines"), NAMESPACE, name).await?;
    Ok(machines
        .into_iter()
        .filter(|machine| machine.labels().contains_key("cluster.x-k8s.io/deployment-name"))
        .filter_map(|machine| {
            let provider_id = machine.data.pointer("/spec/providerID").and_then(Value::as_str)?.to_string();
            Some((machine.metadata.name?, provider_id))
        })
        .collect())
}

/// Turns the Node of `machine` NotReady, as a kubelet that stopped would leave it.
pub async fn node_not_ready(cluster: &ManagementCluster, machine: &str) -> Result<()> {
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(cluster.plane().client());
    workload::set_node_ready(&nodes, machine, false).await
}

/// Waits until the Machine `machine` is gone and the metal machine of `provider_id` is no
/// longer allocated.
pub async fn until_replaced(
    flow: &mut Flow,
    cluster: &mut ManagementCluster,
    name: &str,
    machine: &str,
    provider_id: &str,
) -> Result<()> {
    let metal_id = provider_id.rsplit('/').next().unwrap_or(provider_id).to_string();
    until(&format!("Machine {machine} to be deleted and {metal_id} freed"), CLUSTER_UP, async || {
        flow.harness.alive()?;
        cluster.alive()?;
        workload::act(cluster.plane(), NAMESPACE, name).await?;
        let machines = workload::list(cluster.plane(), &capi("Machine", "machines"), NAMESPACE, name).await?;
        let present = machines.iter().any(|found| found.metadata.name.as_deref() == Some(machine));
        let allocated = flow.harness.metal().machines().await?.iter().any(|found| found.id == metal_id);
        Ok(if !present && !allocated {
            Progress::Done(())
        } else {
            Progress::Waiting(format!(
                "Machine present {present}, metal machine allocated {allocated}; machines: {}",
                describe(&machines)
            ))
        })
    })
    .await
}

/// A MachineHealthCheck on the MachineDeployment `<cluster>-md-0` that remediates a Machine
/// whose InfrastructureReady condition has been False for 30 s: what capms reports for a
/// machine metal-api says is `Unknown` (reason `MachineLivelinessUnknown`). The timeout must
/// outlast provisioning, when InfrastructureReady is False too: with 1 s, the check remediated
/// every replacement while it provisioned.
pub async fn create_infrastructure_health_check(cluster: &ManagementCluster, name: &str) -> Result<()> {
    let checks = serde_json::json!({
        "unhealthyMachineConditions": [{ "type": "InfrastructureReady", "status": "False", "timeoutSeconds": INFRASTRUCTURE_TIMEOUT }],
    });
    create_health_check(cluster, name, "infrastructure", checks).await
}

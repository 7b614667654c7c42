//! What the flows share: a harness per flow that keeps its folder when the flow fails, and the
//! checks and steps the flows are made of.

pub mod cel;

use std::time::Duration;

use capms_realcluster::components::{clusterctl, kubectl};
use capms_realcluster::control_plane::path;
use capms_realcluster::metal::{IMAGE, PROJECT};
use capms_realcluster::process::output;
use capms_realcluster::wait::{Progress, until};
use capms_realcluster::workload::{self, capi, capms};
use capms_realcluster::{Error, Harness, ManagementCluster, Result};
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams};
use serde_json::Value;

/// The namespace the flows create clusters in.
pub const NAMESPACE: &str = "default";
/// How long a generated cluster may take until every Machine runs (the datacenter provisions
/// a machine in 3 s; the rest is Cluster API's and capms's requeues).
const CLUSTER_UP: Duration = Duration::from_secs(300);
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

/// `clusterctl generate cluster NAME` with the real binary, from the local repository that
/// `capms-manager manifests --out` wrote, with one control-plane machine and `workers` workers;
/// `flavor` `None` is the default template. Returns the manifest.
pub async fn generate_cluster(
    flow: &Flow,
    cluster: &ManagementCluster,
    name: &str,
    flavor: Option<&str>,
    workers: usize,
) -> Result<String> {
    let home = cluster.plane().dir().join("clusterctl-home");
    std::fs::create_dir_all(&home)
        .map_err(|source| Error::Io { context: format!("create {}", home.display()), source })?;
    let mut command = clusterctl(flow.harness.binaries(), &home);
    command.env("KUBECONFIG", cluster.plane().admin_kubeconfig());
    command.args([
        "generate",
        "cluster",
        name,
        "--config",
        &path(&cluster.repository().join("clusterctl.yaml")),
    ]);
    command.args([
        "--infrastructure",
        "metalstack",
        "--kubernetes-version",
        "v1.33.0",
        "--target-namespace",
        NAMESPACE,
    ]);
    command.args(["--control-plane-machine-count", "1", "--worker-machine-count", &workers.to_string()]);
    command.args(flavor.map(|flavor| ["--flavor", flavor]).into_iter().flatten());
    command
        .env("METAL_PROJECT_ID", PROJECT)
        .env("CONTROL_PLANE_MACHINE_IMAGE", IMAGE)
        .env("WORKER_MACHINE_IMAGE", IMAGE);
    output(command).await
}

/// `kubectl apply -f` of a manifest, as a user applies what clusterctl generated.
pub async fn apply_manifest(cluster: &ManagementCluster, name: &str, manifest: &str) -> Result<()> {
    let file = cluster.plane().dir().join(format!("{name}.yaml"));
    std::fs::write(&file, manifest)
        .map_err(|source| Error::Io { context: format!("write {}", file.display()), source })?;
    let mut command = kubectl(cluster.plane());
    command.arg("apply").arg("-f").arg(&file);
    output(command).await.map(|_| ())
}

/// Plays the workload cluster (see `workload.rs`) until the cluster's infrastructure is
/// provisioned and `machines` Machines run with a nodeRef.
pub async fn until_running(
    flow: &mut Flow,
    cluster: &mut ManagementCluster,
    name: &str,
    machines: usize,
) -> Result<()> {
    until(&format!("cluster {name} to run {machines} machines"), CLUSTER_UP, async || {
        flow.harness.alive()?;
        cluster.alive()?;
        let acted = workload::act(cluster.plane(), NAMESPACE, name).await?;
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

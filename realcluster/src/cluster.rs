//! A management cluster: a control plane with Cluster API (core, kubeadm bootstrap, kubeadm
//! control plane) and capms installed as `clusterctl init` would install them, and their
//! managers running as processes (see `components.rs` for how and why).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;
use tokio::process::Command;

use crate::components::{
    Components, Flag, Provider, ProviderType, Ready, apply, clusterctl, kubectl, kustomize, wait_established,
};
use crate::control_plane::{ControlPlane, path};
use crate::error::{Error, IoContext, Result};
use crate::metal::{EDIT_KEY, IMAGE, MetalApi, PROJECT};
use crate::parts::{Binaries, Part, cluster_api_module};
use crate::process::{Process, free_ports, output};

/// The Cluster API release `realcluster/go/cluster-api` pins.
pub const CLUSTER_API_VERSION: &str = "v1.14.2";
/// The version `capms-manager manifests` writes into the local repository.
pub const CAPMS_VERSION: &str = concat!("v", env!("CARGO_PKG_VERSION"));
/// The Kubernetes version of generated clusters.
pub const KUBERNETES_VERSION: &str = "v1.33.0";
/// Cluster API's feature gates the flows need, as clusterctl variables.
const CAPI_VARIABLES: [(&str, &str); 1] = [("CLUSTER_TOPOLOGY", "true")];

/// How a management cluster is set up beyond the defaults.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// kube-apiserver writes an audit log (`<dir>/audit.log`, JSON lines, one per completed
    /// request) of every service account's requests: what each manager asks of the apiserver.
    pub audit: bool,
}

/// A running management cluster.
#[derive(Debug)]
pub struct ManagementCluster {
    plane: ControlPlane,
    managers: Vec<Process>,
    repository: PathBuf,
    capms: Components,
    metrics: BTreeMap<String, String>,
}

impl ManagementCluster {
    /// Starts a control plane in `dir`, installs Cluster API and capms (capms talking to
    /// `metal`), and starts their managers. Returns once every manager is ready.
    pub async fn start(
        binaries: &Binaries,
        dir: &Path,
        name: &str,
        metal: &MetalApi,
        options: Options,
    ) -> Result<ManagementCluster> {
        std::fs::create_dir_all(dir).io(|| format!("create {}", dir.display()))?;
        let plane = ControlPlane::start(binaries, dir, name, options.audit).await?;
        let module = cluster_api_module().await?;
        install_inventory_crd(&plane, &module).await?;
        let repository = dir.join("repository");
        let config = write_repository(binaries, &repository).await?;
        let mut providers = Vec::new();
        for (provider, folder) in cluster_api_providers() {
            let yaml = kustomize(&plane, &module.join(folder).join("config/default")).await?;
            let file = dir.join(format!("{}-components.yaml", provider.manifest_label()));
            std::fs::write(&file, yaml).io(|| format!("write {}", file.display()))?;
            providers.push(load(binaries, &plane, provider, &file, &config, &CAPI_VARIABLES).await?);
        }
        let capms = load_capms(binaries, &plane, &repository, &config, metal).await?;
        for components in providers.iter().chain([&capms]) {
            components.install(&plane).await?;
        }
        let mut cluster = ManagementCluster {
            plane,
            managers: Vec::new(),
            repository,
            capms: capms.clone(),
            metrics: BTreeMap::new(),
        };
        for components in providers.iter().chain([&capms]) {
            let (manager, metrics) = cluster.run(binaries, components).await?;
            cluster.metrics.insert(manager.name().to_string(), metrics);
            cluster.managers.push(manager);
        }
        Ok(cluster)
    }

    /// The control plane.
    pub fn plane(&self) -> &ControlPlane {
        &self.plane
    }

    /// The local clusterctl repository `capms-manager manifests --out` wrote (with its
    /// `clusterctl.yaml`).
    pub fn repository(&self) -> &Path {
        &self.repository
    }

    /// capms's components as installed.
    pub fn capms(&self) -> &Components {
        &self.capms
    }

    /// Fails if any process of this cluster has exited.
    pub fn alive(&mut self) -> Result<()> {
        self.plane.alive()?;
        self.managers.iter_mut().try_for_each(Process::alive)
    }

    /// The metrics URL of the manager with manifest label `label` (capms's: Prometheus text at
    /// `/metrics`).
    pub fn metrics_url(&self, label: &str) -> Option<&str> {
        self.metrics.get(label).map(String::as_str)
    }

    /// The process of the manager with manifest label `label` (e.g. `infrastructure-metalstack`).
    pub fn manager(&self, label: &str) -> Option<&Process> {
        self.managers.iter().find(|manager| manager.name() == label)
    }

    /// `clusterctl generate cluster NAME` with the real binary, from the local repository that
    /// `capms-manager manifests --out` wrote, in `namespace`, with one control-plane machine and
    /// `workers` workers of mini-lab's project and image; `flavor` `None` is the default
    /// template. Returns the manifest.
    pub async fn generate_cluster(
        &self,
        binaries: &Binaries,
        namespace: &str,
        name: &str,
        flavor: Option<&str>,
        workers: usize,
    ) -> Result<String> {
        let home = self.plane.dir().join("clusterctl-home");
        std::fs::create_dir_all(&home).io(|| format!("create {}", home.display()))?;
        let mut command = clusterctl(binaries, &home);
        command.env("KUBECONFIG", self.plane.admin_kubeconfig());
        command.args([
            "generate",
            "cluster",
            name,
            "--config",
            &path(&self.repository.join("clusterctl.yaml")),
        ]);
        command.args(["--infrastructure", "metalstack", "--kubernetes-version", KUBERNETES_VERSION]);
        command.args(["--target-namespace", namespace, "--control-plane-machine-count", "1"]);
        command.args(["--worker-machine-count", &workers.to_string()]);
        command.args(flavor.map(|flavor| ["--flavor", flavor]).into_iter().flatten());
        command
            .env("METAL_PROJECT_ID", PROJECT)
            .env("CONTROL_PLANE_MACHINE_IMAGE", IMAGE)
            .env("WORKER_MACHINE_IMAGE", IMAGE);
        output(command).await
    }

    /// `kubectl apply -f` of a manifest (written to `<dir>/<name>.yaml`), as a user applies what
    /// clusterctl generated.
    pub async fn apply_manifest(&self, name: &str, manifest: &str) -> Result<()> {
        let file = self.plane.dir().join(format!("{name}.yaml"));
        std::fs::write(&file, manifest).io(|| format!("write {}", file.display()))?;
        let mut command = kubectl(&self.plane);
        command.arg("apply").arg("-f").arg(&file);
        output(command).await.map(|_| ())
    }

    /// Stops every manager, then the control plane.
    pub async fn stop(mut self) {
        while let Some(manager) = self.managers.pop() {
            manager.stop().await;
        }
        self.plane.stop().await;
    }

    /// Starts a provider's manager; returns it and its metrics URL.
    async fn run(&self, binaries: &Binaries, components: &Components) -> Result<(Process, String)> {
        let [health, metrics] = free_ports(2)?[..] else {
            return Err(Error::Invalid("free_ports returned the wrong count".to_string()));
        };
        let flags = if components.provider.binary == Part::CapmsManager {
            vec![
                Flag { name: "--metrics-bind-address", value: format!("127.0.0.1:{metrics}") },
                Flag { name: "--health-probe-bind-address", value: format!("127.0.0.1:{health}") },
            ]
        } else {
            vec![
                Flag { name: "--diagnostics-address", value: format!("127.0.0.1:{metrics}") },
                Flag { name: "--insecure-diagnostics", value: "true".to_string() },
                Flag { name: "--health-addr", value: format!("127.0.0.1:{health}") },
                // Outside a pod controller-runtime cannot find the Lease's namespace; there is
                // one process per manager.
                Flag { name: "--leader-elect", value: "false".to_string() },
            ]
        };
        let ready = Ready { url: format!("http://127.0.0.1:{health}/readyz") };
        let process = components.run(binaries, &self.plane, &flags, ready).await?;
        Ok((process, format!("http://127.0.0.1:{metrics}/metrics")))
    }
}

/// Cluster API's three providers and the folder of each in its module.
fn cluster_api_providers() -> [(Provider, &'static str); 3] {
    let provider = |provider_type, name, binary| Provider {
        provider_type,
        name,
        version: CLUSTER_API_VERSION.to_string(),
        binary,
    };
    [
        (provider(ProviderType::Core, "cluster-api", Part::CapiManager), "core"),
        (provider(ProviderType::Bootstrap, "kubeadm", Part::KubeadmBootstrapManager), "bootstrap/kubeadm"),
        (
            provider(ProviderType::ControlPlane, "kubeadm", Part::KubeadmControlPlaneManager),
            "controlplane/kubeadm",
        ),
    ]
}

async fn load(
    binaries: &Binaries,
    plane: &ControlPlane,
    provider: Provider,
    file: &Path,
    config: &Path,
    variables: &[(&str, &str)],
) -> Result<Components> {
    let webhook = free_ports(1)?[0];
    Components::load(binaries, provider, file, config, variables, webhook, &plane.pki().ca_pem()).await
}

/// Writes capms's local clusterctl repository with the real `capms-manager manifests --out`;
/// returns its `clusterctl.yaml`, which every provider is installed with (it switches on the
/// kubeadm bootstrap provider's Ignition format, as the README's `clusterctl init` does).
async fn write_repository(binaries: &Binaries, repository: &Path) -> Result<PathBuf> {
    let mut manifests = Command::new(binaries.path(Part::CapmsManager));
    manifests.args(["manifests", "--out", &path(repository)]);
    output(manifests).await?;
    Ok(repository.join("clusterctl.yaml"))
}

/// Loads capms's components from the repository with the credentials of `metal`.
async fn load_capms(
    binaries: &Binaries,
    plane: &ControlPlane,
    repository: &Path,
    config: &Path,
    metal: &MetalApi,
) -> Result<Components> {
    let file = repository
        .join("infrastructure-metalstack")
        .join(CAPMS_VERSION)
        .join("infrastructure-components.yaml");
    let provider = Provider {
        provider_type: ProviderType::Infrastructure,
        name: "metalstack",
        version: CAPMS_VERSION.to_string(),
        binary: Part::CapmsManager,
    };
    let variables =
        [("METAL_API_URL", metal.url()), ("METAL_API_HMAC", EDIT_KEY), ("CAPMS_LOG_FORMAT", "text")];
    load(binaries, plane, provider, &file, config, &variables).await
}

/// clusterctl's inventory CRD (`providers.clusterctl.cluster.x-k8s.io`), labelled as
/// `clusterctl init` labels it.
async fn install_inventory_crd(plane: &ControlPlane, module: &Path) -> Result<()> {
    let yaml = kustomize(plane, &module.join("cmd/clusterctl/config/crd")).await?;
    let mut crds: Vec<Value> = serde_saphyr::from_multiple(&yaml)
        .map_err(|error| Error::Invalid(format!("clusterctl CRDs: {error}")))?;
    crds.retain(|crd| !crd.is_null());
    let mut names = Vec::new();
    for crd in &mut crds {
        if let Some(labels) = crd.pointer_mut("/metadata").and_then(Value::as_object_mut) {
            let labels = labels.entry("labels").or_insert_with(|| serde_json::json!({}));
            labels["clusterctl.cluster.x-k8s.io"] = "".into();
            labels["clusterctl.cluster.x-k8s.io/core"] = "inventory".into();
        }
        names.extend(crd.pointer("/metadata/name").and_then(Value::as_str).map(String::from));
    }
    apply(plane, "clusterctl-crds", &crds).await?;
    wait_established(plane, &names).await
}

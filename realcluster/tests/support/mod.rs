//! What the flows share: a harness per flow that keeps its folder when the flow fails, and the
//! checks and steps the flows are made of.

use capms_realcluster::{Harness, ManagementCluster, Result};
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams};

/// One flow: a harness with its own metal-api and folder.
pub struct Flow {
    harness: Harness,
}

impl Flow {
    /// Runs `body` with a fresh harness. A failure panics with the error and the path of the
    /// kept folder (logs of every process, kubeconfigs).
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
    }

    /// Starts a management cluster named `name`.
    pub async fn management_cluster(&self, name: &str) -> Result<ManagementCluster> {
        self.harness.management_cluster(name).await
    }

    /// The harness.
    pub fn harness(&mut self) -> &mut Harness {
        &mut self.harness
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

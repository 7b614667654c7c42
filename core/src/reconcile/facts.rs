//! What the caller tells a reconciler about an object's owners. The operator reads these from
//! the management cluster; the world simulator from its object store model.

use crate::api::capi::Cluster;
use crate::api::{ApiEndpoint, MetalStackCluster};
use crate::secret::UserData;
use crate::tags::ObjectRef;
use serde::{Deserialize, Serialize};

/// The CAPI Cluster that owns the infrastructure.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ClusterFacts {
    /// The Cluster's name.
    pub name: String,
    /// `Cluster.spec.paused`.
    pub paused: bool,
    /// `Cluster.status.initialization.infrastructureProvisioned`.
    pub infrastructure_provisioned: bool,
    /// `Cluster.spec.controlPlaneEndpoint`, if set (by the user or a control-plane provider).
    pub control_plane_endpoint: Option<ApiEndpoint>,
}

/// The MetalStackCluster a machine or firewall belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetalClusterFacts {
    /// Namespace, name and UID of the MetalStackCluster: the cluster identity in tags.
    pub identity: ObjectRef,
    pub project_id: String,
    pub partition_id: String,
    /// The node network, once the cluster has one.
    pub node_network_id: Option<String>,
}

/// The CAPI Machine that owns a MetalStackMachine.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CapiMachineFacts {
    pub name: String,
    /// The Machine carries `cluster.x-k8s.io/control-plane`.
    pub control_plane: bool,
}

/// The bootstrap data of a machine, as far as the caller could read it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum BootstrapData {
    /// `Machine.spec.bootstrap.dataSecretName` is not set yet.
    #[default]
    NotReady,
    /// The Secret it names does not exist.
    SecretMissing { secret: String },
    /// The Secret exists but has no `value` key (never installed without bootstrap data).
    ValueMissing { secret: String },
    /// The data.
    Present(UserData),
}

impl ClusterFacts {
    /// The facts of a CAPI Cluster, as both the operator and the world simulator read them.
    pub fn of(cluster: &Cluster) -> Self {
        ClusterFacts {
            name: cluster.metadata.name.clone().unwrap_or_default(),
            paused: cluster.spec_paused(),
            infrastructure_provisioned: cluster.infrastructure_provisioned(),
            control_plane_endpoint: cluster.spec.control_plane_endpoint.clone(),
        }
    }
}

impl MetalClusterFacts {
    /// The facts of a MetalStackCluster: its identity (namespace, name, UID) and placement.
    pub fn of(metal_cluster: &MetalStackCluster) -> Self {
        let meta = &metal_cluster.metadata;
        MetalClusterFacts {
            identity: ObjectRef::new(
                meta.namespace.clone().unwrap_or_default(),
                meta.name.clone().unwrap_or_default(),
                meta.uid.clone().unwrap_or_default(),
            ),
            project_id: metal_cluster.spec.project_id.clone(),
            partition_id: metal_cluster.spec.partition.clone(),
            node_network_id: metal_cluster.spec.node_network_id.clone(),
        }
    }
}

//! The Cluster API core objects capms reads (`cluster.x-k8s.io/v1beta2`), and CAPI's
//! well-known labels and annotations.
//!
//! Hand-written minimal subsets instead of `CustomResource` derives: capms never installs
//! these CRDs, so it needs no schema, and a subset must stay lenient (every field defaults,
//! unknown fields are ignored) so that a newer CAPI never breaks deserialization. They
//! implement `kube_core::Resource`, which is all a kube `Api` or watcher needs. Field names
//! are checked against CAPI's v1beta2 CRDs (`vendor/capi-crds/` at the repository root).

use std::borrow::Cow;

use kube_core::{NamespaceResourceScope, ObjectMeta, Resource};
use serde::{Deserialize, Serialize};

use super::common::ApiEndpoint;

/// CAPI core's API group.
pub const GROUP: &str = "cluster.x-k8s.io";
/// The CAPI core version capms reads.
pub const VERSION: &str = "v1beta2";
/// `apiVersion` of CAPI core objects.
pub const API_VERSION: &str = "cluster.x-k8s.io/v1beta2";

/// Label on Machines and infrastructure objects naming their Cluster.
pub const CLUSTER_NAME_LABEL: &str = "cluster.x-k8s.io/cluster-name";
/// Label on control-plane Machines.
pub const CONTROL_PLANE_LABEL: &str = "cluster.x-k8s.io/control-plane";
/// Label selecting which manager instance reconciles an object (`--watch-filter`).
pub const WATCH_FILTER_LABEL: &str = "cluster.x-k8s.io/watch-filter";
/// Annotation pausing reconciliation of one object.
pub const PAUSED_ANNOTATION: &str = "cluster.x-k8s.io/paused";
/// Annotation marking an InfraCluster as managed by another system: do not touch it.
pub const MANAGED_BY_ANNOTATION: &str = "cluster.x-k8s.io/managed-by";
/// Annotation clusterctl sets on source objects it deletes during `clusterctl move`:
/// the object goes away, its infrastructure must not.
pub const DELETE_FOR_MOVE_ANNOTATION: &str = "clusterctl.cluster.x-k8s.io/delete-for-move";
/// Label that makes `clusterctl move` take an object outside every Cluster's owner chain along
/// (a cluster's `credentialsRef` Secret).
pub const MOVE_LABEL: &str = "clusterctl.cluster.x-k8s.io/move";
/// Annotation a provider sets while it cannot pause yet; blocks `clusterctl move`.
pub const BLOCK_MOVE_ANNOTATION: &str = "clusterctl.cluster.x-k8s.io/block-move";
/// Annotation of topology server-side-apply dry-runs on templates.
pub const TOPOLOGY_DRY_RUN_ANNOTATION: &str = "topology.cluster.x-k8s.io/dry-run";

/// Whether `meta` carries `key` as an annotation (any value, like CAPI's helpers).
pub fn has_annotation(meta: &ObjectMeta, key: &str) -> bool {
    meta.annotations.as_ref().is_some_and(|annotations| annotations.contains_key(key))
}

/// The value of label `key` on `meta`.
pub fn label<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.labels.as_ref()?.get(key).map(String::as_str)
}

/// A reference whose version CAPI looks up from the referenced CRD's contract label
/// (v1beta2 has no `apiVersion` here).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ContractVersionedObjectReference {
    pub api_group: String,
    pub kind: String,
    pub name: String,
}

/// A CAPI `Cluster` (the subset capms reads).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Cluster {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: ClusterSpec,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<ClusterStatus>,
}

/// `Cluster.spec` (subset).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ClusterSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control_plane_endpoint: Option<ApiEndpoint>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub infrastructure_ref: Option<ContractVersionedObjectReference>,
}

/// `Cluster.status` (subset).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ClusterStatus {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initialization: Option<ClusterInitialization>,
}

/// `Cluster.status.initialization`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ClusterInitialization {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub infrastructure_provisioned: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control_plane_initialized: Option<bool>,
}

impl Default for Cluster {
    fn default() -> Self {
        Cluster {
            api_version: API_VERSION.to_string(),
            kind: "Cluster".to_string(),
            metadata: ObjectMeta::default(),
            spec: ClusterSpec::default(),
            status: None,
        }
    }
}

impl Cluster {
    /// Whether `spec.paused` is true. Whether an infrastructure object is paused also
    /// depends on its own annotation: see [`is_paused`].
    pub fn spec_paused(&self) -> bool {
        self.spec.paused == Some(true)
    }

    /// `status.initialization.infrastructureProvisioned`.
    pub fn infrastructure_provisioned(&self) -> bool {
        self.initialization().and_then(|i| i.infrastructure_provisioned) == Some(true)
    }

    /// `status.initialization.controlPlaneInitialized`.
    pub fn control_plane_initialized(&self) -> bool {
        self.initialization().and_then(|i| i.control_plane_initialized) == Some(true)
    }

    fn initialization(&self) -> Option<&ClusterInitialization> {
        self.status.as_ref()?.initialization.as_ref()
    }
}

/// The contract's pause rule: an infrastructure object is paused when its Cluster has
/// `spec.paused` or the object itself carries the `cluster.x-k8s.io/paused` annotation.
pub fn is_paused(cluster: &Cluster, object: &ObjectMeta) -> bool {
    cluster.spec_paused() || has_annotation(object, PAUSED_ANNOTATION)
}

/// A CAPI `Machine` (the subset capms reads).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Machine {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: MachineSpec,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<MachineStatus>,
}

/// `Machine.spec` (subset).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MachineSpec {
    pub cluster_name: String,
    pub bootstrap: Bootstrap,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub infrastructure_ref: Option<ContractVersionedObjectReference>,
    #[serde(rename = "providerID", skip_serializing_if = "Option::is_none")]
    pub provider_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_domain: Option<String>,
}

/// `Machine.spec.bootstrap`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Bootstrap {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_ref: Option<ContractVersionedObjectReference>,
    /// The Secret with the bootstrap data; "if nil, the Machine should remain Pending".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_secret_name: Option<String>,
}

/// `Machine.status` (subset).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MachineStatus {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
}

impl Default for Machine {
    fn default() -> Self {
        Machine {
            api_version: API_VERSION.to_string(),
            kind: "Machine".to_string(),
            metadata: ObjectMeta::default(),
            spec: MachineSpec::default(),
            status: None,
        }
    }
}

impl Machine {
    /// Whether the Machine is part of the control plane (the label's presence counts).
    pub fn is_control_plane(&self) -> bool {
        self.metadata.labels.as_ref().is_some_and(|labels| labels.contains_key(CONTROL_PLANE_LABEL))
    }

    /// `spec.bootstrap.dataSecretName`, if set and not empty.
    pub fn data_secret_name(&self) -> Option<&str> {
        self.spec.bootstrap.data_secret_name.as_deref().filter(|name| !name.is_empty())
    }
}

/// Implements `kube_core::Resource` for a namespaced CAPI core kind.
macro_rules! capi_resource {
    ($type:ty, $kind:literal, $plural:literal) => {
        impl Resource for $type {
            type DynamicType = ();
            type Scope = NamespaceResourceScope;

            fn kind(_: &()) -> Cow<'_, str> {
                Cow::Borrowed($kind)
            }
            fn group(_: &()) -> Cow<'_, str> {
                Cow::Borrowed(GROUP)
            }
            fn version(_: &()) -> Cow<'_, str> {
                Cow::Borrowed(VERSION)
            }
            fn api_version(_: &()) -> Cow<'_, str> {
                Cow::Borrowed(API_VERSION)
            }
            fn plural(_: &()) -> Cow<'_, str> {
                Cow::Borrowed($plural)
            }
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

capi_resource!(Cluster, "Cluster", "clusters");
capi_resource!(Machine, "Machine", "machines");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_reads_v1beta2_fields_and_ignores_the_rest() {
        let json = serde_json::json!({
            "apiVersion": "cluster.x-k8s.io/v1beta2",
            "kind": "Cluster",
            "metadata": {"name": "prod", "namespace": "default"},
            "spec": {
                "paused": true,
                "clusterNetwork": {"pods": {"cidrBlocks": ["10.0.0.0/16"]}},
                "controlPlaneEndpoint": {"host": "203.0.113.10", "port": 443},
                "infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "MetalStackCluster", "name": "prod"}
            },
            "status": {"initialization": {"infrastructureProvisioned": true}, "phase": "Provisioned"}
        });
        let cluster: Cluster = serde_json::from_value(json).expect("deserializes");
        assert!(cluster.spec_paused());
        assert!(cluster.infrastructure_provisioned());
        assert!(!cluster.control_plane_initialized());
        let reference = cluster.spec.infrastructure_ref.expect("infrastructureRef");
        assert_eq!(reference.kind, "MetalStackCluster");
        assert_eq!(cluster.spec.control_plane_endpoint.and_then(|e| e.port), Some(443));
    }

    #[test]
    fn machine_reads_bootstrap_and_provider_id() {
        let json = serde_json::json!({
            "metadata": {"name": "m", "labels": {"cluster.x-k8s.io/control-plane": ""}},
            "spec": {
                "clusterName": "prod",
                "bootstrap": {"dataSecretName": "m-bootstrap"},
                "providerID": "metal://p/abc",
                "failureDomain": "p",
                "version": "v1.33.0"
            }
        });
        let machine: Machine = serde_json::from_value(json).expect("deserializes");
        assert!(machine.is_control_plane());
        assert_eq!(machine.data_secret_name(), Some("m-bootstrap"));
        assert_eq!(machine.spec.provider_id.as_deref(), Some("metal://p/abc"));
        assert_eq!(machine.spec.cluster_name, "prod");
        assert_eq!(machine.api_version, API_VERSION);
    }

    #[test]
    fn empty_objects_deserialize() {
        let machine: Machine = serde_json::from_value(serde_json::json!({})).expect("deserializes");
        assert_eq!(machine.data_secret_name(), None);
        let cluster: Cluster =
            serde_json::from_value(serde_json::json!({"metadata": {}})).expect("deserializes");
        assert!(!cluster.spec_paused());
        assert_eq!(cluster.kind, "Cluster");
    }

    #[test]
    fn pause_follows_cluster_or_annotation() {
        let mut cluster = Cluster::default();
        let mut meta = ObjectMeta::default();
        assert!(!is_paused(&cluster, &meta));
        meta.annotations = Some([(PAUSED_ANNOTATION.to_string(), String::new())].into());
        assert!(is_paused(&cluster, &meta));
        cluster.spec.paused = Some(true);
        assert!(is_paused(&cluster, &ObjectMeta::default()));
    }

    #[test]
    fn resource_identity() {
        assert_eq!(Cluster::api_version(&()), "cluster.x-k8s.io/v1beta2");
        assert_eq!(Machine::plural(&()), "machines");
        assert_eq!(
            Machine::url_path(&(), Some("ns")),
            "/apis/cluster.x-k8s.io/v1beta2/namespaces/ns/machines"
        );
    }
}

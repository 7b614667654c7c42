//! `MetalStackCluster` (the CAPI InfraCluster) and `MetalStackClusterTemplate` (for
//! ClusterClass).
//!
//! A MetalStackCluster owns the cluster-wide metal-stack resources: the node network
//! (allocated unless `nodeNetworkID` is given), the control-plane IP (allocated unless
//! `controlPlaneIP` or `controlPlaneEndpoint.host` is given) and, if `firewall` is set, a
//! MetalStackFirewall. What capms allocated is recorded in the status and freed on delete;
//! what the user provided is never freed.

use kube_derive::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use super::common::{ApiEndpoint, Initialization, LocalSecretReference, TemplateObjectMeta};
use super::firewall::MetalStackFirewallTemplateSpec;

/// Desired state of a MetalStackCluster.
///
/// `projectID` and `partition` are immutable; `nodeNetworkID` and `controlPlaneIP` are
/// immutable once set (moving a running cluster to another network or endpoint breaks it).
#[derive(CustomResource, KubeSchema, Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[kube(
    group = "infrastructure.cluster.x-k8s.io",
    version = "v1alpha1",
    kind = "MetalStackCluster",
    namespaced,
    status = "MetalStackClusterStatus",
    derive = "PartialEq",
    shortname = "msc",
    category = "cluster-api",
    doc = "The metal-stack infrastructure of a Cluster API cluster: project, partition, node network, control-plane IP and firewall.",
    crates(kube_core = "::kube_core", kube = "::kube_derive"),
    attr = "x_kube(crates(kube_core = \"::kube_core\"))",
    validation = Rule::new("self.spec.projectID == oldSelf.spec.projectID").message("projectID is immutable").field_path(".spec.projectID"),
    validation = Rule::new("self.spec.partition == oldSelf.spec.partition").message("partition is immutable").field_path(".spec.partition"),
    validation = Rule::new("!has(oldSelf.spec.nodeNetworkID) || (has(self.spec.nodeNetworkID) && self.spec.nodeNetworkID == oldSelf.spec.nodeNetworkID)").message("nodeNetworkID is immutable once set").field_path(".spec.nodeNetworkID"),
    validation = Rule::new("!has(oldSelf.spec.controlPlaneIP) || (has(self.spec.controlPlaneIP) && self.spec.controlPlaneIP == oldSelf.spec.controlPlaneIP)").message("controlPlaneIP is immutable once set").field_path(".spec.controlPlaneIP"),
    printcolumn(name = "Cluster", type_ = "string", json_path = ".metadata.labels['cluster\\.x-k8s\\.io/cluster-name']", description = "Cluster this MetalStackCluster belongs to"),
    printcolumn(name = "Endpoint", type_ = "string", json_path = ".spec.controlPlaneEndpoint.host", description = "Control-plane endpoint host"),
    printcolumn(name = "Partition", type_ = "string", json_path = ".spec.partition", description = "metal-stack partition"),
    printcolumn(name = "Project", type_ = "string", json_path = ".spec.projectID", description = "metal-stack project", priority = 1),
    printcolumn(name = "Network", type_ = "string", json_path = ".status.nodeNetworkID", description = "Node network in use", priority = 1),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status", description = "Ready condition"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct MetalStackClusterSpec {
    /// metal-stack project all resources are allocated in.
    #[serde(rename = "projectID")]
    #[schemars(length(min = 1, max = 256))]
    pub project_id: String,
    /// metal-stack partition all machines and networks are in.
    #[schemars(length(min = 1, max = 256))]
    pub partition: String,
    /// An existing node network to use (never freed by capms); allocated if absent.
    #[serde(rename = "nodeNetworkID", default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub node_network_id: Option<String>,
    /// An existing IP for the API server (never freed by capms); allocated if this and
    /// `controlPlaneEndpoint.host` are absent.
    #[serde(rename = "controlPlaneIP", default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(validation = Rule::new("isIP(self)").message("controlPlaneIP must be an IP address"))]
    pub control_plane_ip: Option<String>,
    /// The API server endpoint; filled by the controller from the control-plane IP unless
    /// set (by the user or a control-plane provider).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane_endpoint: Option<ApiEndpoint>,
    /// A firewall in front of the node network, created as a MetalStackFirewall.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firewall: Option<MetalStackFirewallTemplateSpec>,
    /// A Secret in this namespace with this cluster's metal-api credentials; the manager's
    /// own credentials are used if absent. While a cluster names it, the Secret carries a
    /// finalizer, so that deleting the namespace still frees the cluster's machines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_ref: Option<LocalSecretReference>,
}

/// Observed state of a MetalStackCluster. Everything here can be rebuilt from metal-api
/// (after `clusterctl move` the status is empty).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetalStackClusterStatus {
    /// CAPI v1beta2 readiness; `provisioned` turns true once network, IP and firewall are ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initialization: Option<Initialization>,
    /// `Ready`, `Paused`, `NodeNetworkReady`, `ControlPlaneIPReady`, `FirewallReady`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The node network in use (given or allocated).
    #[serde(rename = "nodeNetworkID", default, skip_serializing_if = "Option::is_none")]
    pub node_network_id: Option<String>,
    /// The control-plane IP in use (given or allocated).
    #[serde(rename = "controlPlaneIP", default, skip_serializing_if = "Option::is_none")]
    pub control_plane_ip: Option<String>,
    /// Name of the MetalStackFirewall created from `spec.firewall`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firewall_name: Option<String>,
}

/// The template a ClusterClass stamps MetalStackClusters from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetalStackClusterTemplateResource {
    /// Labels and annotations for the created MetalStackCluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<TemplateObjectMeta>,
    /// Spec of the created MetalStackCluster.
    pub spec: MetalStackClusterSpec,
}

/// Desired state of a MetalStackClusterTemplate.
#[derive(
    CustomResource, Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[kube(
    group = "infrastructure.cluster.x-k8s.io",
    version = "v1alpha1",
    kind = "MetalStackClusterTemplate",
    namespaced,
    derive = "PartialEq",
    shortname = "msct",
    category = "cluster-api",
    doc = "A template for MetalStackClusters, referenced by ClusterClasses.",
    crates(kube_core = "::kube_core", kube = "::kube_derive"),
    printcolumn(
        name = "Partition",
        type_ = "string",
        json_path = ".spec.template.spec.partition",
        description = "metal-stack partition"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct MetalStackClusterTemplateSpec {
    /// The MetalStackCluster to create.
    pub template: MetalStackClusterTemplateResource,
}

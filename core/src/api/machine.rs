//! `MetalStackMachine` (the CAPI InfraMachine) and `MetalStackMachineTemplate`.
//!
//! A MetalStackMachine is one metal-stack machine allocated in its cluster's project,
//! partition and node network. Its `providerID` (`metal://<partition>/<machine-id>`) is the
//! string metal-ccm sets on the Node, which is how CAPI matches Machines to Nodes.

use kube_derive::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use super::common::{
    Initialization, MACHINE_ID_PATTERN, MachineAddress, PROVIDER_ID_PATTERN, TemplateObjectMeta,
};

/// Desired state of a MetalStackMachine. `size`, `image` and `machineID` are immutable;
/// `providerID` is written once by the controller and then immutable.
//
// Tags may not use the keys capms itself puts on allocations: a user tag imitating another
// object's identity tags could make capms adopt, and later free, a machine that is not
// this object's.
#[derive(CustomResource, KubeSchema, Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[kube(
    group = "infrastructure.cluster.x-k8s.io",
    version = "v1alpha1",
    kind = "MetalStackMachine",
    namespaced,
    status = "MetalStackMachineStatus",
    derive = "PartialEq",
    shortname = "msm",
    category = "cluster-api",
    doc = "A metal-stack machine that backs a Cluster API Machine.",
    crates(kube_core = "::kube_core", kube = "::kube_derive"),
    attr = "x_kube(crates(kube_core = \"::kube_core\"))",
    validation = Rule::new("self.spec.size == oldSelf.spec.size").message("size is immutable").field_path(".spec.size"),
    validation = Rule::new("self.spec.image == oldSelf.spec.image").message("image is immutable").field_path(".spec.image"),
    validation = Rule::new("!has(oldSelf.spec.providerID) || (has(self.spec.providerID) && self.spec.providerID == oldSelf.spec.providerID)").message("providerID is immutable once set").field_path(".spec.providerID"),
    validation = Rule::new("has(self.spec.machineID) == has(oldSelf.spec.machineID) && (!has(self.spec.machineID) || self.spec.machineID == oldSelf.spec.machineID)").message("machineID is immutable").field_path(".spec.machineID"),
    printcolumn(name = "Cluster", type_ = "string", json_path = ".metadata.labels['cluster\\.x-k8s\\.io/cluster-name']", description = "Cluster this machine belongs to"),
    printcolumn(name = "ProviderID", type_ = "string", json_path = ".spec.providerID", description = "metal://<partition>/<machine-id>"),
    printcolumn(name = "Size", type_ = "string", json_path = ".spec.size", description = "metal-stack size", priority = 1),
    printcolumn(name = "Image", type_ = "string", json_path = ".spec.image", description = "metal-stack image"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase", description = "Lifecycle phase"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status", description = "Ready condition"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct MetalStackMachineSpec {
    /// `metal://<partition>/<machine-id>`, written by the controller after allocation.
    #[serde(rename = "providerID", default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512), pattern(PROVIDER_ID_PATTERN))]
    pub provider_id: Option<String>,
    /// metal-stack size (machine type).
    #[schemars(length(min = 1, max = 256))]
    pub size: String,
    /// metal-stack image (operating system).
    #[schemars(length(min = 1, max = 256))]
    pub image: String,
    /// SSH public keys for the machine.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 8192)))]
    pub ssh_keys: Vec<String>,
    /// Extra metal-api tags: `key=value` or a plain word.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 256), pattern(r"^[^=\s][^\s]*$")))]
    #[x_kube(validation = Rule::new("self.all(t, !t.startsWith('metal-stack.infrastructure.cluster.x-k8s.io/') && !t.startsWith('cluster.metal-stack.io/') && !t.startsWith('machine.metal-stack.io/'))").message("tags may not use keys reserved for capms and metal-stack"))]
    pub tags: Vec<String>,
    /// External networks (ids) to attach besides the cluster's node network.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(min = 1, max = 256)))]
    pub additional_networks: Vec<String>,
    /// Allocate exactly this machine (its metal-stack id) instead of any of the size.
    #[serde(rename = "machineID", default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256), pattern(MACHINE_ID_PATTERN))]
    pub machine_id: Option<String>,
}

/// Observed state of a MetalStackMachine. Everything here can be rebuilt from metal-api.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetalStackMachineStatus {
    /// CAPI v1beta2 readiness; `provisioned` turns true once the machine phoned home.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initialization: Option<Initialization>,
    /// Addresses of the machine, copied by CAPI to the Machine.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub addresses: Vec<MachineAddress>,
    /// `Ready`, `Paused`, `MachineAllocated`, `MachineProvisioned`, `MachineHealthy`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Rack the machine is in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rack: Option<String>,
    /// Partition of the machine (the Kubernetes zone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// BGP ASN of the machine's primary network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asn: Option<i64>,
    /// Chassis the machine is in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chassis: Option<String>,
    /// One word summarizing the lifecycle: Pending, Allocating, Provisioning, Running,
    /// Unhealthy, Deleting or Failed (see `Phase`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub phase: Option<String>,
}

/// What a MetalStackMachineTemplate stamps out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetalStackMachineTemplateResource {
    /// Labels and annotations for the created MetalStackMachines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<TemplateObjectMeta>,
    /// Spec of the created MetalStackMachines.
    pub spec: MetalStackMachineSpec,
}

/// Desired state of a MetalStackMachineTemplate.
// clippy reads the repeated `type_ = "string"` of the printcolumns as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(
    CustomResource, Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[kube(
    group = "infrastructure.cluster.x-k8s.io",
    version = "v1alpha1",
    kind = "MetalStackMachineTemplate",
    namespaced,
    derive = "PartialEq",
    shortname = "msmt",
    category = "cluster-api",
    doc = "A template for MetalStackMachines, used by MachineDeployments and control-plane providers.",
    crates(kube_core = "::kube_core", kube = "::kube_derive"),
    printcolumn(
        name = "Size",
        type_ = "string",
        json_path = ".spec.template.spec.size",
        description = "metal-stack size"
    ),
    printcolumn(
        name = "Image",
        type_ = "string",
        json_path = ".spec.template.spec.image",
        description = "metal-stack image"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct MetalStackMachineTemplateSpec {
    /// The MetalStackMachines to create.
    pub template: MetalStackMachineTemplateResource,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::common::{MachineAddressType, Phase};
    use serde_json::json;

    fn sample() -> serde_json::Value {
        json!({
            "apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1",
            "kind": "MetalStackMachine",
            "metadata": {"name": "prod-cp-0", "namespace": "default",
                         "labels": {"cluster.x-k8s.io/cluster-name": "prod"}},
            "spec": {
                "providerID": "metal://mini-lab/00000000-0000-0000-0000-000000000001",
                "size": "c1-xlarge-x86",
                "image": "ubuntu-24.04",
                "sshKeys": ["ssh-ed25519 AAAA user"],
                "tags": ["team=platform"],
                "additionalNetworks": ["internet"],
                "machineID": "00000000-0000-0000-0000-000000000001"
            },
            "status": {
                "initialization": {"provisioned": true},
                "addresses": [{"type": "InternalIP", "address": "10.0.0.5"}, {"type": "Hostname", "address": "prod-cp-0"}],
                "conditions": [{"type": "Ready", "status": "True", "reason": "Ready", "message": "",
                                "lastTransitionTime": "2026-01-02T03:04:05Z", "observedGeneration": 2}],
                "observedGeneration": 2,
                "rack": "rack-1",
                "zone": "mini-lab",
                "asn": 4200000001_i64,
                "chassis": "chassis-1",
                "phase": "Running"
            }
        })
    }

    #[test]
    fn sample_machine_round_trips() {
        let machine: MetalStackMachine = serde_json::from_value(sample()).expect("deserializes");
        assert_eq!(
            machine.spec.provider_id.as_deref(),
            Some("metal://mini-lab/00000000-0000-0000-0000-000000000001")
        );
        assert_eq!(machine.spec.machine_id.as_deref(), Some("00000000-0000-0000-0000-000000000001"));
        assert_eq!(machine.spec.additional_networks, vec!["internet".to_string()]);
        let status = machine.status.clone().expect("status");
        assert_eq!(status.initialization.and_then(|i| i.provisioned), Some(true));
        assert_eq!(status.addresses[0].type_, MachineAddressType::InternalIp);
        assert_eq!(status.phase.as_deref().and_then(Phase::parse), Some(Phase::Running));
        assert_eq!(status.asn, Some(4_200_000_001));
        assert_eq!(serde_json::to_value(&machine).expect("serializes"), sample());
    }

    #[test]
    fn minimal_machine_serializes_without_empty_fields() {
        let spec = MetalStackMachineSpec { size: "s".into(), image: "i".into(), ..Default::default() };
        let machine = MetalStackMachine::new("m", spec);
        let json = serde_json::to_value(&machine).expect("serializes");
        assert_eq!(json["spec"], json!({"size": "s", "image": "i"}));
        assert!(json.get("status").is_none());
        let back: MetalStackMachine = serde_json::from_value(json).expect("deserializes");
        assert_eq!(back, machine);
    }

    #[test]
    fn template_carries_metadata_and_spec() {
        let json = json!({
            "apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1",
            "kind": "MetalStackMachineTemplate",
            "metadata": {"name": "workers"},
            "spec": {"template": {"metadata": {"labels": {"pool": "a"}}, "spec": {"size": "s", "image": "i"}}}
        });
        let template: MetalStackMachineTemplate = serde_json::from_value(json.clone()).expect("deserializes");
        let labels = template.spec.template.metadata.as_ref().map(|m| m.labels.clone()).unwrap_or_default();
        assert_eq!(labels.get("pool").map(String::as_str), Some("a"));
        assert_eq!(serde_json::to_value(&template).expect("serializes"), json);
    }
}

//! `MetalStackFirewall`: the metal-stack firewall in front of a cluster's node network.
//!
//! The MetalStackCluster controller creates one from `spec.firewall` (a
//! [`MetalStackFirewallTemplateSpec`]) and owns it; the firewall controller allocates it with
//! the node network plus `spec.networks` and the initial rule set, which metal-api installs.

use kube_derive::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use super::common::{Initialization, MachineAddress, PROVIDER_ID_PATTERN};
use crate::metal;

/// Schema pattern of a rule comment: metal-api allows letters, spaces, '_' and '-'.
pub const RULE_COMMENT_PATTERN: &str = r"^[A-Za-z _-]*$";

/// Transport protocol of a firewall rule.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
pub enum FirewallProtocol {
    #[default]
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
}

impl FirewallProtocol {
    fn to_metal(self) -> metal::Protocol {
        match self {
            FirewallProtocol::Tcp => metal::Protocol::Tcp,
            FirewallProtocol::Udp => metal::Protocol::Udp,
        }
    }
}

/// Allow traffic from the networks behind the firewall to `to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[serde(rename_all = "camelCase")]
pub struct FirewallEgressRule {
    /// TCP or UDP.
    #[serde(default)]
    pub protocol: FirewallProtocol,
    /// Destination ports.
    #[schemars(length(min = 1, max = 64), inner(range(min = 0, max = 65535)))]
    pub ports: Vec<i32>,
    /// Destination CIDRs.
    #[schemars(length(min = 1, max = 32), inner(length(min = 1, max = 64)))]
    #[x_kube(validation = Rule::new("self.all(c, isCIDR(c))").message("every entry must be a CIDR"))]
    pub to: Vec<String>,
    /// Shown by metal-api and on the firewall.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 100), pattern(RULE_COMMENT_PATTERN))]
    pub comment: Option<String>,
}

/// Allow traffic from `from` to `to` (or to every network behind the firewall if empty).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[x_kube(crates(kube_core = "::kube_core"))]
#[serde(rename_all = "camelCase")]
pub struct FirewallIngressRule {
    /// TCP or UDP.
    #[serde(default)]
    pub protocol: FirewallProtocol,
    /// Destination ports.
    #[schemars(length(min = 1, max = 64), inner(range(min = 0, max = 65535)))]
    pub ports: Vec<i32>,
    /// Source CIDRs.
    #[schemars(length(min = 1, max = 32), inner(length(min = 1, max = 64)))]
    #[x_kube(validation = Rule::new("self.all(c, isCIDR(c))").message("every entry must be a CIDR"))]
    pub from: Vec<String>,
    /// Destination CIDRs behind the firewall; empty means all of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 64)))]
    #[x_kube(validation = Rule::new("self.all(c, isCIDR(c))").message("every entry must be a CIDR"))]
    pub to: Vec<String>,
    /// Shown by metal-api and on the firewall.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 100), pattern(RULE_COMMENT_PATTERN))]
    pub comment: Option<String>,
}

impl FirewallEgressRule {
    /// The rule as metal-api takes it.
    pub fn to_metal(&self) -> metal::EgressRule {
        metal::EgressRule {
            protocol: self.protocol.to_metal(),
            ports: self.ports.iter().map(|&port| i64::from(port)).collect(),
            to: self.to.clone(),
            comment: self.comment.clone().unwrap_or_default(),
        }
    }
}

impl FirewallIngressRule {
    /// The rule as metal-api takes it.
    pub fn to_metal(&self) -> metal::IngressRule {
        metal::IngressRule {
            protocol: self.protocol.to_metal(),
            ports: self.ports.iter().map(|&port| i64::from(port)).collect(),
            from: self.from.clone(),
            to: self.to.clone(),
            comment: self.comment.clone().unwrap_or_default(),
        }
    }
}

/// What a MetalStackCluster's `spec.firewall` asks for: a [`MetalStackFirewallSpec`] without
/// the providerID, which only the firewall controller writes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetalStackFirewallTemplateSpec {
    /// metal-stack size of the firewall machine.
    #[schemars(length(min = 1, max = 256))]
    pub size: String,
    /// metal-stack firewall image.
    #[schemars(length(min = 1, max = 256))]
    pub image: String,
    /// External networks to attach (ids); the cluster's node network is always added.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(min = 1, max = 256)))]
    pub networks: Vec<String>,
    /// Initial egress rules, installed by metal-api at allocation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128))]
    pub egress_rules: Vec<FirewallEgressRule>,
    /// Initial ingress rules, installed by metal-api at allocation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128))]
    pub ingress_rules: Vec<FirewallIngressRule>,
    /// SSH public keys for the firewall.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 8192)))]
    pub ssh_keys: Vec<String>,
}

impl MetalStackFirewallTemplateSpec {
    /// The spec of a new MetalStackFirewall created from this template.
    pub fn to_firewall_spec(&self) -> MetalStackFirewallSpec {
        MetalStackFirewallSpec {
            size: self.size.clone(),
            image: self.image.clone(),
            networks: self.networks.clone(),
            egress_rules: self.egress_rules.clone(),
            ingress_rules: self.ingress_rules.clone(),
            ssh_keys: self.ssh_keys.clone(),
            provider_id: None,
        }
    }
}

/// Desired state of a MetalStackFirewall.
///
/// `size` and `image` are immutable (a firewall is never re-provisioned in place);
/// `providerID` is written once by the controller and then immutable.
#[derive(
    CustomResource, Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[kube(
    group = "infrastructure.cluster.x-k8s.io",
    version = "v1alpha1",
    kind = "MetalStackFirewall",
    namespaced,
    status = "MetalStackFirewallStatus",
    derive = "PartialEq",
    shortname = "msfw",
    category = "cluster-api",
    doc = "A metal-stack firewall in front of a cluster's node network, owned by its MetalStackCluster.",
    crates(kube_core = "::kube_core", kube = "::kube_derive"),
    attr = "x_kube(crates(kube_core = \"::kube_core\"))",
    validation = Rule::new("self.spec.size == oldSelf.spec.size").message("size is immutable").field_path(".spec.size"),
    validation = Rule::new("self.spec.image == oldSelf.spec.image").message("image is immutable").field_path(".spec.image"),
    validation = Rule::new("!has(oldSelf.spec.providerID) || (has(self.spec.providerID) && self.spec.providerID == oldSelf.spec.providerID)").message("providerID is immutable once set").field_path(".spec.providerID"),
    printcolumn(name = "Cluster", type_ = "string", json_path = ".metadata.labels['cluster\\.x-k8s\\.io/cluster-name']", description = "Cluster this firewall belongs to"),
    printcolumn(name = "ProviderID", type_ = "string", json_path = ".spec.providerID", description = "metal://<partition>/<firewall-id>"),
    printcolumn(name = "Size", type_ = "string", json_path = ".spec.size", description = "metal-stack size"),
    printcolumn(name = "Image", type_ = "string", json_path = ".spec.image", description = "metal-stack image"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase", description = "Lifecycle phase"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status", description = "Ready condition"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct MetalStackFirewallSpec {
    /// metal-stack size of the firewall machine.
    #[schemars(length(min = 1, max = 256))]
    pub size: String,
    /// metal-stack firewall image.
    #[schemars(length(min = 1, max = 256))]
    pub image: String,
    /// External networks to attach (ids); the cluster's node network is always added.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(min = 1, max = 256)))]
    pub networks: Vec<String>,
    /// Initial egress rules, installed by metal-api at allocation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128))]
    pub egress_rules: Vec<FirewallEgressRule>,
    /// Initial ingress rules, installed by metal-api at allocation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128))]
    pub ingress_rules: Vec<FirewallIngressRule>,
    /// SSH public keys for the firewall.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 8192)))]
    pub ssh_keys: Vec<String>,
    /// `metal://<partition>/<firewall-id>`, written by the controller after allocation.
    #[serde(rename = "providerID", default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512), pattern(PROVIDER_ID_PATTERN))]
    pub provider_id: Option<String>,
}

impl MetalStackFirewallSpec {
    /// The initial rule set as metal-api takes it.
    pub fn metal_rules(&self) -> metal::FirewallRules {
        metal::FirewallRules {
            egress: self.egress_rules.iter().map(FirewallEgressRule::to_metal).collect(),
            ingress: self.ingress_rules.iter().map(FirewallIngressRule::to_metal).collect(),
        }
    }
}

/// Observed state of a MetalStackFirewall.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetalStackFirewallStatus {
    /// CAPI-style readiness; `provisioned` turns true once the firewall phoned home.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initialization: Option<Initialization>,
    /// `Ready`, `Paused`, `FirewallAllocated`, `FirewallProvisioned`, `FirewallHealthy`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Addresses of the firewall.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub addresses: Vec<MachineAddress>,
    /// One word summarizing the lifecycle: Pending, Allocating, Provisioning, Running,
    /// Unhealthy, Deleting or Failed (see `Phase`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub phase: Option<String>,
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rules_default_to_tcp_and_convert_to_metal() {
        let template: MetalStackFirewallTemplateSpec = serde_json::from_value(json!({
            "size": "fw-size",
            "image": "firewall-ubuntu-3.0",
            "networks": ["internet"],
            "egressRules": [{"ports": [443, 53], "to": ["0.0.0.0/0"], "comment": "allow out"}],
            "ingressRules": [{"protocol": "UDP", "ports": [51820], "from": ["192.0.2.0/24"]}]
        }))
        .expect("deserializes");
        let spec = template.to_firewall_spec();
        assert_eq!(spec.provider_id, None);
        let rules = spec.metal_rules();
        assert_eq!(rules.egress[0].protocol, metal::Protocol::Tcp);
        assert_eq!(rules.egress[0].ports, vec![443, 53]);
        assert_eq!(rules.ingress[0].protocol, metal::Protocol::Udp);
        assert_eq!(rules.ingress[0].comment, "");
        assert_eq!(rules.validate(), Ok(()));
    }

    #[test]
    fn protocol_uses_upper_case() {
        let rule = FirewallIngressRule {
            protocol: FirewallProtocol::Udp,
            ports: vec![1],
            from: vec!["10.0.0.0/8".into()],
            to: Vec::new(),
            comment: None,
        };
        assert_eq!(
            serde_json::to_value(&rule).expect("serializes"),
            json!({"protocol": "UDP", "ports": [1], "from": ["10.0.0.0/8"]})
        );
    }
}

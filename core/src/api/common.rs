//! Types shared by several kinds: the CAPI v1beta2 building blocks (endpoint, addresses,
//! initialization, template metadata) and the lifecycle phase.

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Schema pattern of `spec.providerID`: the shape [`crate::ProviderId::parse`] accepts.
pub const PROVIDER_ID_PATTERN: &str = r"^metal://[A-Za-z0-9._-]+/[A-Za-z0-9._-]+$";
/// Schema pattern of a metal-stack machine id (the second part of a providerID).
pub const MACHINE_ID_PATTERN: &str = r"^[A-Za-z0-9._-]+$";

/// CAPI v1beta2 readiness: `provisioned` goes true once the infrastructure is ready and is
/// never reset (core copies it to `infrastructureProvisioned` on the Cluster or Machine).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Initialization {
    /// Whether the infrastructure is fully provisioned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioned: Option<bool>,
}

impl Initialization {
    /// `{provisioned: true}`.
    pub fn provisioned() -> Self {
        Initialization { provisioned: Some(true) }
    }
}

/// Where the workload cluster's API server is reached (CAPI v1beta2 `APIEndpoint`: both
/// fields optional, so an external writer such as a control-plane provider can fill them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("minProperties" = 1))]
pub struct ApiEndpoint {
    /// DNS name or IP address of the API server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub host: Option<String>,
    /// TCP port of the API server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
}

impl ApiEndpoint {
    /// The host, if set and not empty.
    pub fn host(&self) -> Option<&str> {
        self.host.as_deref().filter(|host| !host.is_empty())
    }
}

/// The kind of a [`MachineAddress`] (CAPI's closed set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
pub enum MachineAddressType {
    Hostname,
    #[serde(rename = "ExternalIP")]
    ExternalIp,
    #[serde(rename = "InternalIP")]
    InternalIp,
    #[serde(rename = "ExternalDNS")]
    ExternalDns,
    #[serde(rename = "InternalDNS")]
    InternalDns,
}

/// One address of a machine, copied by CAPI core to `Machine.status.addresses`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MachineAddress {
    /// The kind of address.
    #[serde(rename = "type")]
    pub type_: MachineAddressType,
    /// The address itself.
    #[schemars(length(min = 1, max = 256))]
    pub address: String,
}

/// Labels and annotations a template puts on the objects created from it (CAPI's
/// `ObjectMeta`, not Kubernetes' full one).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateObjectMeta {
    /// Labels to set on created objects.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations to set on created objects.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// A Secret in the namespace of the referring object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalSecretReference {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// The short lifecycle word a controller writes to `status.phase` of machines and
/// firewalls, for `kubectl get`. Conditions carry the details; the phase only summarizes.
///
/// `status.phase` is a plain string in the API so that an older reader never fails on a
/// phase a newer controller writes; this enum is the set capms writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    /// Accepted, waiting for preconditions (cluster infrastructure, bootstrap data).
    Pending,
    /// An allocation was requested from metal-api or is being looked up.
    Allocating,
    /// Allocated; the machine installs its image and has not phoned home yet.
    Provisioning,
    /// Phoned home and alive.
    Running,
    /// Was running, but metal-api reports it dead or unknown.
    Unhealthy,
    /// Being freed.
    Deleting,
    /// Cannot make progress without a human (bad configuration, crash loop, freed externally).
    Failed,
}

impl Phase {
    /// Every phase, in lifecycle order.
    pub const ALL: [Phase; 7] = [
        Phase::Pending,
        Phase::Allocating,
        Phase::Provisioning,
        Phase::Running,
        Phase::Unhealthy,
        Phase::Deleting,
        Phase::Failed,
    ];

    /// The word written to `status.phase`.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Allocating => "Allocating",
            Phase::Provisioning => "Provisioning",
            Phase::Running => "Running",
            Phase::Unhealthy => "Unhealthy",
            Phase::Deleting => "Deleting",
            Phase::Failed => "Failed",
        }
    }

    /// The phase a `status.phase` string names, if capms knows it.
    pub fn parse(value: &str) -> Option<Phase> {
        Phase::ALL.into_iter().find(|phase| phase.as_str() == value)
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_round_trips_through_its_string() {
        for phase in Phase::ALL {
            assert_eq!(Phase::parse(phase.as_str()), Some(phase));
        }
        assert_eq!(Phase::parse("running"), None);
    }

    #[test]
    fn machine_address_uses_capi_spelling() {
        let address = MachineAddress { type_: MachineAddressType::InternalIp, address: "10.0.0.1".into() };
        let json = serde_json::to_value(&address).expect("serializes");
        assert_eq!(json, serde_json::json!({"type": "InternalIP", "address": "10.0.0.1"}));
    }
}

use crate::metal::AddressFamily;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A metal-stack network: a partition's super network, a project's child network, an external
/// (internet) network, or the underlay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    pub id: String,
    pub name: String,
    pub description: String,
    pub partition_id: Option<String>,
    pub project_id: Option<String>,
    pub parent_network_id: Option<String>,
    pub prefixes: Vec<String>,
    pub destination_prefixes: Vec<String>,
    /// Prefix length of child networks carved from this (super) network, per family.
    pub default_child_prefix_length: BTreeMap<AddressFamily, u8>,
    pub vrf: Option<u64>,
    pub shared: bool,
    pub nat: bool,
    pub private_super: bool,
    pub underlay: bool,
    pub labels: BTreeMap<String, String>,
}

impl Network {
    /// A project's private network, carved from a super network.
    pub fn is_private(&self) -> bool {
        self.parent_network_id.is_some() && !self.underlay
    }

    /// Neither private, nor super, nor underlay: an external network like `internet`.
    pub fn is_external(&self) -> bool {
        !self.is_private() && !self.private_super && !self.underlay
    }
}

/// `POST /v1/network/allocate`: a child network of the partition's private super network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct NetworkAllocateRequest {
    pub project_id: String,
    pub partition_id: String,
    pub name: String,
    pub description: String,
    pub labels: BTreeMap<String, String>,
    pub destination_prefixes: Vec<String>,
    pub shared: bool,
    pub nat: bool,
    /// Child prefix length per family; absent = the super network's default.
    pub length: BTreeMap<AddressFamily, u8>,
    /// Only this family; absent = every family of the super network.
    pub address_family: Option<AddressFamily>,
}

/// `POST /v1/network/find`. Every `None` is no filter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct NetworkQuery {
    pub id: Option<String>,
    pub name: Option<String>,
    pub partition_id: Option<String>,
    pub project_id: Option<String>,
    pub parent_network_id: Option<String>,
    /// Networks that have all these prefixes.
    pub prefixes: Vec<String>,
    pub nat: Option<bool>,
    pub private_super: Option<bool>,
    pub underlay: Option<bool>,
    pub vrf: Option<u64>,
    /// AND of exact `labels[key] == value`; empty = no filter.
    pub labels: BTreeMap<String, String>,
    pub address_family: Option<AddressFamily>,
}

impl NetworkQuery {
    /// Whether a network passes every filter of this query.
    pub fn matches(&self, network: &Network) -> bool {
        use crate::metal::filter_matches;
        let opt = |value: &Option<String>| value.clone().unwrap_or_default();
        filter_matches(&self.id, &network.id)
            && filter_matches(&self.name, &network.name)
            && filter_matches(&self.partition_id, &opt(&network.partition_id))
            && filter_matches(&self.project_id, &opt(&network.project_id))
            && filter_matches(&self.parent_network_id, &opt(&network.parent_network_id))
            && self.prefixes.iter().all(|prefix| network.prefixes.contains(prefix))
            && self.nat.is_none_or(|nat| nat == network.nat)
            && self.private_super.is_none_or(|value| value == network.private_super)
            && self.underlay.is_none_or(|value| value == network.underlay)
            && self.vrf.is_none_or(|vrf| Some(vrf) == network.vrf)
            && self.labels.iter().all(|(key, value)| network.labels.get(key) == Some(value))
            && self
                .address_family
                .is_none_or(|family| network.prefixes.iter().any(|p| AddressFamily::of(p) == family))
    }
}

//! Networks: `v1.NetworkAllocateRequest`, `v1.NetworkFindRequest`, `v1.NetworkResponse`.

use super::machine::nat_type_v2;
use super::{
    WireError, non_empty, non_empty_list, nullable, parse_address_family, parse_optional_address_family,
};
use crate::metal::{self, AddressFamily};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `v1.NetworkAllocateRequest` (`POST /v1/network/allocate`): a child of the partition's
/// private super network.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NetworkAllocateRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projectid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitionid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destinationprefixes: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nat: Option<bool>,
    /// Child prefix length per address family (`IPv4`/`IPv6` → bits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<BTreeMap<String, u64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addressfamily: Option<String>,
}

/// `v1.NetworkFindRequest` (`POST /v1/network/find`). Absent = no filter; `""` is a filter.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NetworkFindRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitionid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projectid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parentnetworkid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefixes: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nat: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privatesuper: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub underlay: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vrf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addressfamily: Option<String>,
}

/// `v1.NetworkUsage`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NetworkUsage {
    #[serde(default, deserialize_with = "nullable")]
    pub available_ips: u64,
    #[serde(default, deserialize_with = "nullable")]
    pub used_ips: u64,
    #[serde(default, deserialize_with = "nullable")]
    pub available_prefixes: u64,
    #[serde(default, deserialize_with = "nullable")]
    pub used_prefixes: u64,
}

/// `v1.NetworkConsumption`: usage per address family.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NetworkConsumption {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<NetworkUsage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<NetworkUsage>,
}

/// `v1.NetworkResponse`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NetworkResponse {
    #[serde(default, deserialize_with = "nullable")]
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitionid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projectid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parentnetworkid: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub prefixes: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub destinationprefixes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defaultchildprefixlength: Option<BTreeMap<String, u64>>,
    #[serde(default, rename = "additionalAnnouncableCIDRs", skip_serializing_if = "Option::is_none")]
    pub additional_announcable_cidrs: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vrf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared: Option<bool>,
    #[serde(default, deserialize_with = "nullable")]
    pub nat: bool,
    #[serde(default, deserialize_with = "nullable")]
    pub privatesuper: bool,
    #[serde(default, deserialize_with = "nullable")]
    pub underlay: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// `child`, `child-shared`, `external`, `underlay`, `super`, `super-namespaced`.
    #[serde(default, deserialize_with = "nullable")]
    pub networktype: String,
    /// `none` or `ipv4-masq`.
    #[serde(default, deserialize_with = "nullable")]
    pub nattype: String,
    #[serde(default, deserialize_with = "nullable")]
    pub usage: NetworkUsage,
    #[serde(default, deserialize_with = "nullable")]
    pub consumption: NetworkConsumption,
}

/// The widest prefix length of any address family.
const PREFIX_LENGTH_MAX: u64 = 128;

fn lengths_to_wire(lengths: &BTreeMap<AddressFamily, u8>) -> BTreeMap<String, u64> {
    lengths.iter().map(|(family, bits)| (family.as_str().to_string(), u64::from(*bits))).collect()
}

fn lengths_from_wire(
    entity: &'static str,
    lengths: BTreeMap<String, u64>,
) -> Result<BTreeMap<AddressFamily, u8>, WireError> {
    let mut result = BTreeMap::new();
    for (family, bits) in lengths {
        let family = parse_address_family(entity, &family)?;
        let bits = u8::try_from(bits)
            .ok()
            .filter(|bits| u64::from(*bits) <= PREFIX_LENGTH_MAX)
            .ok_or_else(|| WireError::Invalid { entity, field: "prefix length", value: bits.to_string() })?;
        result.insert(family, bits);
    }
    Ok(result)
}

impl From<&metal::NetworkAllocateRequest> for NetworkAllocateRequest {
    fn from(request: &metal::NetworkAllocateRequest) -> Self {
        NetworkAllocateRequest {
            projectid: non_empty(&request.project_id),
            partitionid: non_empty(&request.partition_id),
            name: non_empty(&request.name),
            description: non_empty(&request.description),
            labels: (!request.labels.is_empty()).then(|| request.labels.clone()),
            destinationprefixes: non_empty_list(&request.destination_prefixes),
            shared: Some(request.shared),
            nat: Some(request.nat),
            length: (!request.length.is_empty()).then(|| lengths_to_wire(&request.length)),
            addressfamily: request.address_family.map(|family| family.as_str().to_string()),
        }
    }
}

impl TryFrom<NetworkAllocateRequest> for metal::NetworkAllocateRequest {
    type Error = WireError;

    fn try_from(request: NetworkAllocateRequest) -> Result<Self, WireError> {
        let entity = "network allocate";
        Ok(metal::NetworkAllocateRequest {
            project_id: request.projectid.unwrap_or_default(),
            partition_id: request.partitionid.unwrap_or_default(),
            name: request.name.unwrap_or_default(),
            description: request.description.unwrap_or_default(),
            labels: request.labels.unwrap_or_default(),
            destination_prefixes: request.destinationprefixes.unwrap_or_default(),
            shared: request.shared.unwrap_or_default(),
            nat: request.nat.unwrap_or_default(),
            length: lengths_from_wire(entity, request.length.unwrap_or_default())?,
            address_family: parse_optional_address_family(entity, request.addressfamily.as_deref())?,
        })
    }
}

impl From<&metal::NetworkQuery> for NetworkFindRequest {
    fn from(query: &metal::NetworkQuery) -> Self {
        NetworkFindRequest {
            id: query.id.clone(),
            name: query.name.clone(),
            partitionid: query.partition_id.clone(),
            projectid: query.project_id.clone(),
            parentnetworkid: query.parent_network_id.clone(),
            prefixes: non_empty_list(&query.prefixes),
            nat: query.nat,
            privatesuper: query.private_super,
            underlay: query.underlay,
            vrf: query.vrf,
            labels: (!query.labels.is_empty()).then(|| query.labels.clone()),
            addressfamily: query.address_family.map(|family| family.as_str().to_string()),
        }
    }
}

impl TryFrom<NetworkFindRequest> for metal::NetworkQuery {
    type Error = WireError;

    fn try_from(request: NetworkFindRequest) -> Result<Self, WireError> {
        Ok(metal::NetworkQuery {
            id: request.id,
            name: request.name,
            partition_id: request.partitionid,
            project_id: request.projectid,
            parent_network_id: request.parentnetworkid,
            prefixes: request.prefixes.unwrap_or_default(),
            nat: request.nat,
            private_super: request.privatesuper,
            underlay: request.underlay,
            vrf: request.vrf,
            labels: request.labels.unwrap_or_default(),
            address_family: parse_optional_address_family("network find", request.addressfamily.as_deref())?,
        })
    }
}

/// metal-api sends "" for "no partition/project/parent" on some networks: both mean none.
fn present(value: Option<String>) -> Option<String> {
    value.filter(|value| !value.is_empty())
}

impl TryFrom<NetworkResponse> for metal::Network {
    type Error = WireError;

    fn try_from(response: NetworkResponse) -> Result<Self, WireError> {
        if response.id.is_empty() {
            return Err(WireError::Missing { entity: "network", field: "id" });
        }
        let lengths = response.defaultchildprefixlength.unwrap_or_default();
        Ok(metal::Network {
            default_child_prefix_length: lengths_from_wire("network", lengths)?,
            id: response.id,
            name: response.name.unwrap_or_default(),
            description: response.description.unwrap_or_default(),
            partition_id: present(response.partitionid),
            project_id: present(response.projectid),
            parent_network_id: present(response.parentnetworkid),
            prefixes: response.prefixes,
            destination_prefixes: response.destinationprefixes,
            vrf: response.vrf,
            shared: response.shared.unwrap_or_default(),
            nat: response.nat,
            private_super: response.privatesuper,
            underlay: response.underlay,
            labels: response.labels.unwrap_or_default(),
        })
    }
}

/// The apiv2 network type metal-api derives from the v1 flags.
fn network_type(network: &metal::Network) -> &'static str {
    if network.underlay {
        "underlay"
    } else if network.private_super {
        "super"
    } else if network.parent_network_id.is_some() {
        if network.shared { "child-shared" } else { "child" }
    } else {
        "external"
    }
}

impl From<&metal::Network> for NetworkResponse {
    fn from(network: &metal::Network) -> Self {
        let lengths = &network.default_child_prefix_length;
        NetworkResponse {
            id: network.id.clone(),
            name: Some(network.name.clone()),
            description: Some(network.description.clone()),
            partitionid: network.partition_id.clone(),
            projectid: network.project_id.clone(),
            parentnetworkid: network.parent_network_id.clone(),
            prefixes: network.prefixes.clone(),
            destinationprefixes: network.destination_prefixes.clone(),
            defaultchildprefixlength: (!lengths.is_empty()).then(|| lengths_to_wire(lengths)),
            additional_announcable_cidrs: None,
            vrf: network.vrf,
            shared: Some(network.shared),
            nat: network.nat,
            privatesuper: network.private_super,
            underlay: network.underlay,
            labels: Some(network.labels.clone()),
            networktype: network_type(network).to_string(),
            nattype: nat_type_v2(network.nat).to_string(),
            usage: NetworkUsage::default(),
            consumption: NetworkConsumption::default(),
        }
    }
}

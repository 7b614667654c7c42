//! IPs: `v1.IPAllocateRequest`, `v1.IPFindRequest`, `v1.IPResponse`. An IP's id is its address.

use super::{WireError, non_empty, non_empty_list, nullable, parse_optional_address_family};
use crate::metal;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// `v1.IPAllocateRequest` (`POST /v1/ip/allocate` and `POST /v1/ip/allocate/{ip}`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct IpAllocateRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networkid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projectid: Option<String>,
    /// `ephemeral` or `static`; the server treats anything else as ephemeral.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub ip_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    /// Adds the machine tag (machine scope).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machineid: Option<String>,
    /// `IPv4` or `IPv6`; random allocation only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addressfamily: Option<String>,
}

/// `v1.IPFindRequest` (`POST /v1/ip/find`). Absent = no filter; `""` is a filter.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct IpFindRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipaddress: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocationuuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networkprefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networkid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projectid: Option<String>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub ip_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machineid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addressfamily: Option<String>,
}

/// `v1.IPResponse`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct IpResponse {
    #[serde(default, deserialize_with = "nullable")]
    pub ipaddress: String,
    #[serde(default, deserialize_with = "nullable")]
    pub allocationuuid: String,
    #[serde(default, deserialize_with = "nullable")]
    pub networkid: String,
    #[serde(default, deserialize_with = "nullable")]
    pub projectid: String,
    #[serde(default, rename = "type", deserialize_with = "nullable")]
    pub ip_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed: Option<Timestamp>,
}

fn parse_ip_type(entity: &'static str, value: &str) -> Result<metal::IpType, WireError> {
    match value {
        "ephemeral" => Ok(metal::IpType::Ephemeral),
        "static" => Ok(metal::IpType::Static),
        _ => Err(WireError::Invalid { entity, field: "type", value: value.to_string() }),
    }
}

impl From<&metal::IpAllocateRequest> for IpAllocateRequest {
    fn from(request: &metal::IpAllocateRequest) -> Self {
        // Required by the spec: always sent, even empty (metal-api then answers 400 itself).
        IpAllocateRequest {
            networkid: Some(request.network_id.clone()),
            projectid: Some(request.project_id.clone()),
            ip_type: Some(request.ip_type.as_str().to_string()),
            name: non_empty(&request.name),
            description: non_empty(&request.description),
            tags: non_empty_list(&request.tags),
            machineid: request.machine_id.as_deref().and_then(non_empty),
            addressfamily: request.address_family.map(|family| family.as_str().to_string()),
        }
    }
}

impl TryFrom<IpAllocateRequest> for metal::IpAllocateRequest {
    type Error = WireError;

    /// Fails only on an unknown address family (the server answers 400 to that). An unknown
    /// type becomes ephemeral, as on the server.
    fn try_from(request: IpAllocateRequest) -> Result<Self, WireError> {
        let address_family = parse_optional_address_family("ip allocate", request.addressfamily.as_deref())?;
        let ip_type = match request.ip_type.as_deref() {
            Some("static") => metal::IpType::Static,
            _ => metal::IpType::Ephemeral,
        };
        Ok(metal::IpAllocateRequest {
            network_id: request.networkid.unwrap_or_default(),
            project_id: request.projectid.unwrap_or_default(),
            ip_type,
            name: request.name.unwrap_or_default(),
            description: request.description.unwrap_or_default(),
            tags: request.tags.unwrap_or_default(),
            machine_id: request.machineid.filter(|id| !id.is_empty()),
            address_family,
        })
    }
}

impl From<&metal::IpQuery> for IpFindRequest {
    fn from(query: &metal::IpQuery) -> Self {
        IpFindRequest {
            ipaddress: query.address.clone(),
            allocationuuid: query.allocation_uuid.clone(),
            name: query.name.clone(),
            networkprefix: query.network_prefix.clone(),
            networkid: query.network_id.clone(),
            projectid: query.project_id.clone(),
            ip_type: query.ip_type.map(|ip_type| ip_type.as_str().to_string()),
            tags: non_empty_list(&query.tags),
            machineid: query.machine_id.clone(),
            addressfamily: query.address_family.map(|family| family.as_str().to_string()),
        }
    }
}

impl TryFrom<IpFindRequest> for metal::IpQuery {
    type Error = WireError;

    fn try_from(request: IpFindRequest) -> Result<Self, WireError> {
        let ip_type = request.ip_type.as_deref().map(|value| parse_ip_type("ip find", value)).transpose()?;
        Ok(metal::IpQuery {
            address: request.ipaddress,
            allocation_uuid: request.allocationuuid,
            name: request.name,
            network_prefix: request.networkprefix,
            network_id: request.networkid,
            project_id: request.projectid,
            ip_type,
            tags: request.tags.unwrap_or_default(),
            machine_id: request.machineid,
            address_family: parse_optional_address_family("ip find", request.addressfamily.as_deref())?,
        })
    }
}

impl TryFrom<IpResponse> for metal::Ip {
    type Error = WireError;

    fn try_from(response: IpResponse) -> Result<Self, WireError> {
        if response.ipaddress.is_empty() {
            return Err(WireError::Missing { entity: "ip", field: "ipaddress" });
        }
        Ok(metal::Ip {
            ip_type: parse_ip_type("ip", &response.ip_type)?,
            address: response.ipaddress,
            allocation_uuid: response.allocationuuid,
            network_id: response.networkid,
            project_id: response.projectid,
            name: response.name.unwrap_or_default(),
            description: response.description.unwrap_or_default(),
            tags: response.tags.unwrap_or_default(),
            // Absent on no server we know of; not worth failing the read over.
            created: response.created.unwrap_or(Timestamp::UNIX_EPOCH),
            changed: response.changed.unwrap_or(Timestamp::UNIX_EPOCH),
        })
    }
}

impl From<&metal::Ip> for IpResponse {
    fn from(ip: &metal::Ip) -> Self {
        IpResponse {
            ipaddress: ip.address.clone(),
            allocationuuid: ip.allocation_uuid.clone(),
            networkid: ip.network_id.clone(),
            projectid: ip.project_id.clone(),
            ip_type: ip.ip_type.as_str().to_string(),
            name: Some(ip.name.clone()),
            description: Some(ip.description.clone()),
            tags: Some(ip.tags.clone()),
            created: Some(ip.created),
            changed: Some(ip.changed),
        }
    }
}

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// Whether an IP survives the machine it is attached to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum IpType {
    /// Released when the machine it is attached to is freed.
    #[default]
    Ephemeral,
    /// Survives machine frees; only untagged.
    Static,
}

impl IpType {
    pub fn as_str(self) -> &'static str {
        match self {
            IpType::Ephemeral => "ephemeral",
            IpType::Static => "static",
        }
    }
}

/// IPv4 or IPv6, as metal-api spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum AddressFamily {
    IPv4,
    IPv6,
}

impl AddressFamily {
    pub fn as_str(self) -> &'static str {
        match self {
            AddressFamily::IPv4 => "IPv4",
            AddressFamily::IPv6 => "IPv6",
        }
    }

    /// The family of an address or prefix in text form (anything with a ':' is IPv6).
    pub fn of(address: &str) -> AddressFamily {
        if address.contains(':') { AddressFamily::IPv6 } else { AddressFamily::IPv4 }
    }
}

/// An allocated IP address. Its id is the address itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ip {
    pub address: String,
    /// New for every allocation of the same address.
    pub allocation_uuid: String,
    pub network_id: String,
    pub project_id: String,
    pub ip_type: IpType,
    pub name: String,
    pub description: String,
    /// Sorted and de-duplicated by metal-api. A machine-scoped IP carries
    /// `machine.metal-stack.io/id=<machine>`.
    pub tags: Vec<String>,
    pub created: Timestamp,
    pub changed: Timestamp,
}

/// `POST /v1/ip/allocate` and `POST /v1/ip/allocate/{ip}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct IpAllocateRequest {
    pub network_id: String,
    pub project_id: String,
    pub ip_type: IpType,
    pub name: String,
    pub description: String,
    pub tags: Vec<String>,
    /// Attaches the IP to a machine (adds the machine tag).
    pub machine_id: Option<String>,
    /// Only for random allocation; metal-api rejects it with a specific address.
    pub address_family: Option<AddressFamily>,
}

/// `POST /v1/ip/find`. Every `None` is no filter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct IpQuery {
    pub address: Option<String>,
    pub allocation_uuid: Option<String>,
    pub name: Option<String>,
    pub network_prefix: Option<String>,
    pub network_id: Option<String>,
    pub project_id: Option<String>,
    pub ip_type: Option<IpType>,
    /// AND of exact tag strings; empty = no filter.
    pub tags: Vec<String>,
    pub machine_id: Option<String>,
    pub address_family: Option<AddressFamily>,
}

impl IpQuery {
    /// Whether an IP passes every filter of this query.
    pub fn matches(&self, ip: &Ip) -> bool {
        use crate::metal::{filter_matches, tags_match};
        let machine_tag = self.machine_id.as_ref().map(|id| crate::tags::machine_id_tag(id));
        filter_matches(&self.address, &ip.address)
            && filter_matches(&self.allocation_uuid, &ip.allocation_uuid)
            && filter_matches(&self.name, &ip.name)
            && filter_matches(&self.network_id, &ip.network_id)
            && filter_matches(&self.project_id, &ip.project_id)
            && self.ip_type.is_none_or(|ip_type| ip_type == ip.ip_type)
            && tags_match(&ip.tags, &self.tags)
            && machine_tag.is_none_or(|tag| ip.tags.contains(&tag))
            && self.address_family.is_none_or(|family| AddressFamily::of(&ip.address) == family)
            && self.network_prefix.as_deref().is_none_or(|prefix| address_in_prefix(&ip.address, prefix))
    }
}

fn address_in_prefix(address: &str, prefix: &str) -> bool {
    match (address.parse::<std::net::IpAddr>(), prefix.parse::<ipnet::IpNet>()) {
        (Ok(address), Ok(prefix)) => prefix.contains(&address),
        _ => false,
    }
}

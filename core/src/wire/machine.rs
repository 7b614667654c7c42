//! Machines and firewalls: `v1.MachineAllocateRequest`, `v1.FirewallCreateRequest`,
//! `v1.MachineFindRequest`, `v1.MachineResponse` and their parts.

use super::catalog::{ImageResponse, PartitionResponse, SizeResponse};
use super::{WireError, expose_user_data, non_empty, non_empty_list, nullable};
use crate::metal;
use crate::secret::UserData;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// `v1.MachineAllocationNetwork`: a network to allocate the machine into.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MachineAllocationNetwork {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networkid: Option<String>,
    /// `null` means true on the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoacquire: Option<bool>,
}

/// `v1.MachineAllocateRequest` (`POST /v1/machine/allocate`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MachineAllocateRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projectid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitionid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sizeid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imageid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Required by the spec; sent even when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_pub_keys: Option<Vec<String>>,
    /// Must be non-empty for the server; sent even when empty so it says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networks: Option<Vec<MachineAllocationNetwork>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ips: Option<Vec<String>>,
    /// Plain string, passed through as the bootstrap provider wrote it.
    #[serde(default, skip_serializing_if = "Option::is_none", serialize_with = "expose_user_data")]
    pub user_data: Option<UserData>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement_tags: Option<Vec<String>>,
    /// Allocate exactly this machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
}

/// `v1.FirewallCreateRequest` (`POST /v1/firewall/allocate`): the machine fields plus rules.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FirewallCreateRequest {
    #[serde(flatten)]
    pub machine: MachineAllocateRequest,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firewall_rules: Option<FirewallRules>,
}

/// `v1.FirewallRules`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FirewallRules {
    #[serde(default, deserialize_with = "nullable")]
    pub egress: Vec<FirewallEgressRule>,
    #[serde(default, deserialize_with = "nullable")]
    pub ingress: Vec<FirewallIngressRule>,
}

/// `v1.FirewallEgressRule`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FirewallEgressRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// `int32` in the spec; wider here so the domain's values convert without loss.
    #[serde(default, deserialize_with = "nullable")]
    pub ports: Vec<i64>,
    /// `tcp` or `udp`; absent means tcp.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub to: Vec<String>,
}

/// `v1.FirewallIngressRule`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FirewallIngressRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub from: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub ports: Vec<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Vec<String>>,
}

/// `v1.MachineFindRequest` (`POST /v1/machine/find`). Absent = no filter; `""` is a filter.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MachineFindRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sizeid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rackid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocation_project: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocation_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocation_hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocation_image_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocation_role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_ids: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_ips: Option<Vec<String>>,
}

/// `v1.FirewallFindRequest` has exactly the fields of the machine find (the server forces
/// `allocation_role = firewall`).
pub type FirewallFindRequest = MachineFindRequest;

/// `v1.FirewallResponse` has exactly the fields of the machine response.
pub type FirewallResponse = MachineResponse;

/// `v1.MachineResponse`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MachineResponse {
    #[serde(default, deserialize_with = "nullable")]
    pub id: String,
    /// `null` on a free machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocation: Option<MachineAllocation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<PartitionResponse>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<SizeResponse>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rackid: Option<String>,
    /// `Alive`, `Dead`, `Unknown` or "".
    #[serde(default, deserialize_with = "nullable")]
    pub liveliness: String,
    #[serde(default, deserialize_with = "nullable")]
    pub state: MachineState,
    #[serde(default, deserialize_with = "nullable")]
    pub events: MachineRecentProvisioningEvents,
    #[serde(default, deserialize_with = "nullable")]
    pub tags: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub bios: MachineBios,
    #[serde(default, deserialize_with = "nullable")]
    pub hardware: MachineHardware,
    #[serde(default, deserialize_with = "nullable")]
    pub ledstate: ChassisIdentifyLedState,
}

/// `v1.MachineAllocation`. `succeeded` exists but metal-api never sets it (metal-api#209).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MachineAllocation {
    /// New for every allocation of the same machine.
    #[serde(default, deserialize_with = "nullable")]
    pub allocationuuid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<Timestamp>,
    #[serde(default, deserialize_with = "nullable")]
    pub creator: String,
    #[serde(default, deserialize_with = "nullable")]
    pub project: String,
    #[serde(default, deserialize_with = "nullable")]
    pub name: String,
    #[serde(default, deserialize_with = "nullable")]
    pub hostname: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `machine` or `firewall`.
    #[serde(default, deserialize_with = "nullable")]
    pub role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageResponse>,
    #[serde(default, deserialize_with = "nullable")]
    pub reinstall: bool,
    #[serde(default, deserialize_with = "nullable")]
    pub succeeded: bool,
    #[serde(default, deserialize_with = "nullable")]
    pub ssh_pub_keys: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", serialize_with = "expose_user_data")]
    pub user_data: Option<UserData>,
    #[serde(default, deserialize_with = "nullable")]
    pub networks: Vec<MachineNetwork>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firewall_rules: Option<FirewallRules>,
}

/// `v1.MachineNetwork`: a network as attached to an allocated machine.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MachineNetwork {
    #[serde(default, deserialize_with = "nullable")]
    pub networkid: String,
    #[serde(default, deserialize_with = "nullable")]
    pub networktype: String,
    /// `child`, `child-shared`, `external`, `underlay`, `super`, `super-namespaced`.
    #[serde(default, deserialize_with = "nullable")]
    pub networktypev2: String,
    /// `none` or `ipv4-masq`.
    #[serde(default, deserialize_with = "nullable")]
    pub nattypev2: String,
    #[serde(default, deserialize_with = "nullable")]
    pub ips: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub prefixes: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub destinationprefixes: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub vrf: u64,
    #[serde(default, deserialize_with = "nullable")]
    pub asn: i64,
    #[serde(default, deserialize_with = "nullable")]
    pub nat: bool,
    #[serde(default, deserialize_with = "nullable")]
    pub private: bool,
    #[serde(default, deserialize_with = "nullable")]
    pub underlay: bool,
    #[serde(default, deserialize_with = "nullable")]
    pub projectid: String,
}

/// `v1.MachineState`: `value` is "", `RESERVED` or `LOCKED`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MachineState {
    #[serde(default, deserialize_with = "nullable")]
    pub value: String,
    #[serde(default, deserialize_with = "nullable")]
    pub description: String,
    #[serde(default, deserialize_with = "nullable")]
    pub metal_hammer_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
}

/// `v1.MachineRecentProvisioningEvents`. `log` is newest first.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MachineRecentProvisioningEvents {
    #[serde(default, deserialize_with = "nullable")]
    pub log: Vec<MachineProvisioningEvent>,
    #[serde(default, deserialize_with = "nullable")]
    pub crash_loop: bool,
    #[serde(default, deserialize_with = "nullable")]
    pub failed_machine_reclaim: bool,
}

/// `v1.MachineProvisioningEvent`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MachineProvisioningEvent {
    #[serde(default, deserialize_with = "nullable")]
    pub event: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Timestamp>,
}

/// `v1.MachineBIOS` (required in responses; capms does not use it).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MachineBios {
    #[serde(default, deserialize_with = "nullable")]
    pub vendor: String,
    #[serde(default, deserialize_with = "nullable")]
    pub version: String,
    #[serde(default, deserialize_with = "nullable")]
    pub date: String,
}

/// `v1.MachineHardware` (required in responses; capms does not use it).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MachineHardware {
    #[serde(default, deserialize_with = "nullable")]
    pub cpu_cores: i64,
    #[serde(default, deserialize_with = "nullable")]
    pub memory: u64,
    #[serde(default, deserialize_with = "nullable")]
    pub disks: Vec<MachineBlockDevice>,
    #[serde(default, deserialize_with = "nullable")]
    pub nics: Vec<MachineNic>,
}

/// `v1.MachineBlockDevice`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MachineBlockDevice {
    #[serde(default, deserialize_with = "nullable")]
    pub name: String,
    #[serde(default, deserialize_with = "nullable")]
    pub size: u64,
}

/// `v1.MachineNic`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MachineNic {
    #[serde(default, deserialize_with = "nullable")]
    pub identifier: String,
    #[serde(default, deserialize_with = "nullable")]
    pub mac: String,
    #[serde(default, deserialize_with = "nullable")]
    pub name: String,
    #[serde(default, deserialize_with = "nullable")]
    pub neighbors: Vec<MachineNic>,
}

/// `v1.ChassisIdentifyLEDState` (required in responses; capms does not use it).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ChassisIdentifyLedState {
    #[serde(default, deserialize_with = "nullable")]
    pub value: String,
    #[serde(default, deserialize_with = "nullable")]
    pub description: String,
}

// ---------------------------------------------------------------------------------------------
// Requests: domain -> wire (client) and wire -> domain (simulated server).

impl From<&metal::NetworkRequest> for MachineAllocationNetwork {
    fn from(network: &metal::NetworkRequest) -> Self {
        MachineAllocationNetwork {
            networkid: Some(network.network_id.clone()),
            autoacquire: Some(network.auto_acquire),
        }
    }
}

impl From<&metal::MachineAllocateRequest> for MachineAllocateRequest {
    fn from(request: &metal::MachineAllocateRequest) -> Self {
        MachineAllocateRequest {
            projectid: non_empty(&request.project_id),
            partitionid: non_empty(&request.partition_id),
            sizeid: non_empty(&request.size_id),
            imageid: non_empty(&request.image_id),
            name: non_empty(&request.name),
            hostname: non_empty(&request.hostname),
            description: non_empty(&request.description),
            ssh_pub_keys: Some(request.ssh_pub_keys.clone()),
            networks: Some(request.networks.iter().map(MachineAllocationNetwork::from).collect()),
            ips: non_empty_list(&request.ips),
            user_data: request.user_data.clone(),
            tags: non_empty_list(&request.tags),
            placement_tags: non_empty_list(&request.placement_tags),
            uuid: request.machine_id.as_deref().and_then(non_empty),
        }
    }
}

impl From<MachineAllocateRequest> for metal::MachineAllocateRequest {
    fn from(request: MachineAllocateRequest) -> Self {
        let networks =
            request.networks.unwrap_or_default().into_iter().map(|network| metal::NetworkRequest {
                network_id: network.networkid.unwrap_or_default(),
                auto_acquire: network.autoacquire.unwrap_or(true),
            });
        metal::MachineAllocateRequest {
            project_id: request.projectid.unwrap_or_default(),
            partition_id: request.partitionid.unwrap_or_default(),
            size_id: request.sizeid.unwrap_or_default(),
            image_id: request.imageid.unwrap_or_default(),
            name: request.name.unwrap_or_default(),
            hostname: request.hostname.unwrap_or_default(),
            description: request.description.unwrap_or_default(),
            ssh_pub_keys: request.ssh_pub_keys.unwrap_or_default(),
            networks: networks.collect(),
            ips: request.ips.unwrap_or_default(),
            user_data: request.user_data.filter(|data| !data.is_empty()),
            tags: request.tags.unwrap_or_default(),
            placement_tags: request.placement_tags.unwrap_or_default(),
            machine_id: request.uuid.filter(|uuid| !uuid.is_empty()),
        }
    }
}

impl From<&metal::FirewallAllocateRequest> for FirewallCreateRequest {
    fn from(request: &metal::FirewallAllocateRequest) -> Self {
        FirewallCreateRequest {
            machine: MachineAllocateRequest::from(&request.machine),
            firewall_rules: Some(FirewallRules::from(&request.rules)),
        }
    }
}

impl TryFrom<FirewallCreateRequest> for metal::FirewallAllocateRequest {
    type Error = WireError;

    fn try_from(request: FirewallCreateRequest) -> Result<Self, WireError> {
        let rules = request.firewall_rules.map(metal::FirewallRules::try_from).transpose()?;
        Ok(metal::FirewallAllocateRequest {
            machine: metal::MachineAllocateRequest::from(request.machine),
            rules: rules.unwrap_or_default(),
        })
    }
}

impl From<&metal::FirewallRules> for FirewallRules {
    fn from(rules: &metal::FirewallRules) -> Self {
        FirewallRules {
            egress: rules.egress.iter().map(FirewallEgressRule::from).collect(),
            ingress: rules.ingress.iter().map(FirewallIngressRule::from).collect(),
        }
    }
}

/// The spec's protocol enum is lowercase (the server parses it case-insensitively).
fn protocol_to_wire(protocol: metal::Protocol) -> Option<String> {
    Some(protocol.as_str().to_ascii_lowercase())
}

fn protocol_from_wire(entity: &'static str, protocol: Option<&str>) -> Result<metal::Protocol, WireError> {
    let value = protocol.unwrap_or_default();
    metal::Protocol::parse(value).ok_or_else(|| WireError::Invalid {
        entity,
        field: "protocol",
        value: value.to_string(),
    })
}

impl From<&metal::EgressRule> for FirewallEgressRule {
    fn from(rule: &metal::EgressRule) -> Self {
        FirewallEgressRule {
            comment: non_empty(&rule.comment),
            ports: rule.ports.clone(),
            protocol: protocol_to_wire(rule.protocol),
            to: rule.to.clone(),
        }
    }
}

impl From<&metal::IngressRule> for FirewallIngressRule {
    fn from(rule: &metal::IngressRule) -> Self {
        FirewallIngressRule {
            comment: non_empty(&rule.comment),
            from: rule.from.clone(),
            ports: rule.ports.clone(),
            protocol: protocol_to_wire(rule.protocol),
            to: non_empty_list(&rule.to),
        }
    }
}

impl TryFrom<FirewallRules> for metal::FirewallRules {
    type Error = WireError;

    fn try_from(rules: FirewallRules) -> Result<Self, WireError> {
        let egress = rules.egress.into_iter().map(metal::EgressRule::try_from);
        let ingress = rules.ingress.into_iter().map(metal::IngressRule::try_from);
        Ok(metal::FirewallRules {
            egress: egress.collect::<Result<_, _>>()?,
            ingress: ingress.collect::<Result<_, _>>()?,
        })
    }
}

impl TryFrom<FirewallEgressRule> for metal::EgressRule {
    type Error = WireError;

    fn try_from(rule: FirewallEgressRule) -> Result<Self, WireError> {
        Ok(metal::EgressRule {
            protocol: protocol_from_wire("egress rule", rule.protocol.as_deref())?,
            ports: rule.ports,
            to: rule.to,
            comment: rule.comment.unwrap_or_default(),
        })
    }
}

impl TryFrom<FirewallIngressRule> for metal::IngressRule {
    type Error = WireError;

    fn try_from(rule: FirewallIngressRule) -> Result<Self, WireError> {
        Ok(metal::IngressRule {
            protocol: protocol_from_wire("ingress rule", rule.protocol.as_deref())?,
            ports: rule.ports,
            from: rule.from,
            to: rule.to.unwrap_or_default(),
            comment: rule.comment.unwrap_or_default(),
        })
    }
}

impl From<&metal::MachineQuery> for MachineFindRequest {
    fn from(query: &metal::MachineQuery) -> Self {
        MachineFindRequest {
            id: query.id.clone(),
            partition_id: query.partition_id.clone(),
            sizeid: query.size_id.clone(),
            rackid: query.rack_id.clone(),
            tags: non_empty_list(&query.tags),
            allocation_project: query.allocation_project.clone(),
            allocation_name: query.allocation_name.clone(),
            allocation_hostname: query.allocation_hostname.clone(),
            allocation_image_id: query.allocation_image_id.clone(),
            allocation_role: query.allocation_role.map(|role| role.as_str().to_string()),
            network_ids: non_empty_list(&query.network_ids),
            network_ips: non_empty_list(&query.network_ips),
        }
    }
}

impl TryFrom<MachineFindRequest> for metal::MachineQuery {
    type Error = WireError;

    fn try_from(request: MachineFindRequest) -> Result<Self, WireError> {
        let role =
            request.allocation_role.as_deref().map(|role| parse_role("machine find", role)).transpose()?;
        Ok(metal::MachineQuery {
            id: request.id,
            partition_id: request.partition_id,
            size_id: request.sizeid,
            rack_id: request.rackid,
            tags: request.tags.unwrap_or_default(),
            allocation_project: request.allocation_project,
            allocation_name: request.allocation_name,
            allocation_hostname: request.allocation_hostname,
            allocation_image_id: request.allocation_image_id,
            allocation_role: role,
            network_ids: request.network_ids.unwrap_or_default(),
            network_ips: request.network_ips.unwrap_or_default(),
        })
    }
}

fn parse_role(entity: &'static str, value: &str) -> Result<metal::MachineRole, WireError> {
    match value {
        "machine" => Ok(metal::MachineRole::Machine),
        "firewall" => Ok(metal::MachineRole::Firewall),
        _ => Err(WireError::Invalid { entity, field: "role", value: value.to_string() }),
    }
}

// ---------------------------------------------------------------------------------------------
// Responses: wire -> domain (client) and domain -> wire (simulated server).

/// Timestamps the domain requires but a server may omit map to the Unix epoch: an absent
/// creation time is not worth failing a whole machine read over.
fn time_or_epoch(time: Option<Timestamp>) -> Timestamp {
    time.unwrap_or(Timestamp::UNIX_EPOCH)
}

fn state_from_wire(value: &str) -> metal::MachineState {
    match value {
        "" => metal::MachineState::Available,
        "LOCKED" => metal::MachineState::Locked,
        // RESERVED, and anything newer (TAINTED is sent as RESERVED today): an operator hold
        // of some kind, so never treat the machine as freely available.
        _ => metal::MachineState::Reserved,
    }
}

fn state_to_wire(state: metal::MachineState) -> &'static str {
    match state {
        metal::MachineState::Available => "",
        metal::MachineState::Reserved => "RESERVED",
        metal::MachineState::Locked => "LOCKED",
    }
}

impl TryFrom<MachineResponse> for metal::Machine {
    type Error = WireError;

    fn try_from(response: MachineResponse) -> Result<Self, WireError> {
        if response.id.is_empty() {
            return Err(WireError::Missing { entity: "machine", field: "id" });
        }
        let allocation = response.allocation.map(metal::MachineAllocation::try_from).transpose()?;
        Ok(metal::Machine {
            id: response.id,
            partition_id: response.partition.map(|partition| partition.id).unwrap_or_default(),
            size_id: response.size.map(|size| size.id).unwrap_or_default(),
            rack_id: response.rackid.unwrap_or_default(),
            liveliness: metal::Liveliness::parse(&response.liveliness),
            state: state_from_wire(&response.state.value),
            events: response.events.log.into_iter().map(metal::ProvisioningEvent::from).collect(),
            crash_loop: response.events.crash_loop,
            failed_machine_reclaim: response.events.failed_machine_reclaim,
            allocation,
            tags: response.tags,
        })
    }
}

impl From<MachineProvisioningEvent> for metal::ProvisioningEvent {
    fn from(event: MachineProvisioningEvent) -> Self {
        metal::ProvisioningEvent {
            event: metal::ProvisioningEventKind::from(event.event),
            message: event.message.unwrap_or_default(),
            time: time_or_epoch(event.time),
        }
    }
}

impl TryFrom<MachineAllocation> for metal::MachineAllocation {
    type Error = WireError;

    fn try_from(allocation: MachineAllocation) -> Result<Self, WireError> {
        let role = parse_role("machine allocation", &allocation.role)?;
        let firewall_rules = allocation.firewall_rules.map(metal::FirewallRules::try_from).transpose()?;
        Ok(metal::MachineAllocation {
            allocation_uuid: allocation.allocationuuid,
            project_id: allocation.project,
            name: allocation.name,
            hostname: allocation.hostname,
            description: allocation.description.unwrap_or_default(),
            role,
            image_id: allocation.image.map(|image| image.id).unwrap_or_default(),
            ssh_pub_keys: allocation.ssh_pub_keys,
            user_data: allocation.user_data.filter(|data| !data.is_empty()),
            networks: allocation.networks.into_iter().map(metal::MachineNetwork::from).collect(),
            firewall_rules,
            created: time_or_epoch(allocation.created),
        })
    }
}

impl From<MachineNetwork> for metal::MachineNetwork {
    fn from(network: MachineNetwork) -> Self {
        metal::MachineNetwork {
            network_id: network.networkid,
            network_type: metal::NetworkType::from(network.networktype),
            ips: network.ips,
            prefixes: network.prefixes,
            destination_prefixes: network.destinationprefixes,
            vrf: network.vrf,
            asn: network.asn,
            nat: network.nat,
            private: network.private,
            underlay: network.underlay,
            project_id: (!network.projectid.is_empty()).then_some(network.projectid),
        }
    }
}

impl From<&metal::Machine> for MachineResponse {
    fn from(machine: &metal::Machine) -> Self {
        MachineResponse {
            id: machine.id.clone(),
            allocation: machine.allocation.as_ref().map(MachineAllocation::from),
            partition: non_empty(&machine.partition_id).map(PartitionResponse::with_id),
            size: non_empty(&machine.size_id).map(SizeResponse::with_id),
            rackid: non_empty(&machine.rack_id),
            liveliness: machine.liveliness.as_str().to_string(),
            state: MachineState {
                value: state_to_wire(machine.state).to_string(),
                ..MachineState::default()
            },
            events: MachineRecentProvisioningEvents {
                log: machine.events.iter().map(MachineProvisioningEvent::from).collect(),
                crash_loop: machine.crash_loop,
                failed_machine_reclaim: machine.failed_machine_reclaim,
            },
            tags: machine.tags.clone(),
            ..MachineResponse::default()
        }
    }
}

impl From<&metal::ProvisioningEvent> for MachineProvisioningEvent {
    fn from(event: &metal::ProvisioningEvent) -> Self {
        MachineProvisioningEvent {
            event: event.event.as_str().to_string(),
            message: Some(event.message.clone()),
            time: Some(event.time),
        }
    }
}

impl From<&metal::MachineAllocation> for MachineAllocation {
    fn from(allocation: &metal::MachineAllocation) -> Self {
        MachineAllocation {
            allocationuuid: allocation.allocation_uuid.clone(),
            created: Some(allocation.created),
            creator: String::new(),
            project: allocation.project_id.clone(),
            name: allocation.name.clone(),
            hostname: allocation.hostname.clone(),
            description: Some(allocation.description.clone()),
            role: allocation.role.as_str().to_string(),
            image: non_empty(&allocation.image_id).map(ImageResponse::with_id),
            reinstall: false,
            succeeded: false,
            ssh_pub_keys: allocation.ssh_pub_keys.clone(),
            user_data: allocation.user_data.clone(),
            networks: allocation.networks.iter().map(MachineNetwork::from).collect(),
            firewall_rules: allocation.firewall_rules.as_ref().map(FirewallRules::from),
        }
    }
}

/// The apiv2 names metal-api sends next to `networktype` and `nat`.
fn network_type_v2(network_type: &metal::NetworkType) -> &'static str {
    match network_type {
        metal::NetworkType::PrivatePrimaryUnshared => "child",
        metal::NetworkType::PrivatePrimaryShared | metal::NetworkType::PrivateSecondaryShared => {
            "child-shared"
        }
        metal::NetworkType::External => "external",
        metal::NetworkType::Underlay => "underlay",
        metal::NetworkType::Other(_) => "",
    }
}

pub(super) fn nat_type_v2(nat: bool) -> &'static str {
    if nat { "ipv4-masq" } else { "none" }
}

impl From<&metal::MachineNetwork> for MachineNetwork {
    fn from(network: &metal::MachineNetwork) -> Self {
        MachineNetwork {
            networkid: network.network_id.clone(),
            networktype: network.network_type.as_str().to_string(),
            networktypev2: network_type_v2(&network.network_type).to_string(),
            nattypev2: nat_type_v2(network.nat).to_string(),
            ips: network.ips.clone(),
            prefixes: network.prefixes.clone(),
            destinationprefixes: network.destination_prefixes.clone(),
            vrf: network.vrf,
            asn: network.asn,
            nat: network.nat,
            private: network.private,
            underlay: network.underlay,
            projectid: network.project_id.clone().unwrap_or_default(),
        }
    }
}

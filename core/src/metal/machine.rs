use crate::metal::{FirewallRules, filter_matches, tags_match};
use crate::secret::UserData;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Whether an allocation is a worker/control-plane machine or a firewall.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MachineRole {
    Machine,
    Firewall,
}

impl MachineRole {
    pub fn as_str(self) -> &'static str {
        match self {
            MachineRole::Machine => "machine",
            MachineRole::Firewall => "firewall",
        }
    }
}

/// What metal-api knows about whether a machine is running. An allocated machine that stays
/// silent for five minutes becomes `Unknown`, not `Dead`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub enum Liveliness {
    Alive,
    Dead,
    #[default]
    Unknown,
}

impl Liveliness {
    pub fn as_str(self) -> &'static str {
        match self {
            Liveliness::Alive => "Alive",
            Liveliness::Dead => "Dead",
            Liveliness::Unknown => "Unknown",
        }
    }

    /// Lenient parsing: anything unexpected (including "") is `Unknown`.
    pub fn parse(value: &str) -> Liveliness {
        match value {
            "Alive" => Liveliness::Alive,
            "Dead" => Liveliness::Dead,
            _ => Liveliness::Unknown,
        }
    }
}

/// An operator-set machine state. `TAINTED` is reported as `RESERVED` by metal-api.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub enum MachineState {
    #[default]
    Available,
    Reserved,
    Locked,
}

/// A provisioning event as metal-api reports it in `events.log`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum ProvisioningEventKind {
    PxeBooting,
    Preparing,
    Registering,
    Waiting,
    Installing,
    BootingNewKernel,
    PhonedHome,
    PlannedReboot,
    Crashed,
    MachineReclaim,
    /// An event this version of capms does not know; kept verbatim.
    Other(String),
}

impl ProvisioningEventKind {
    pub fn as_str(&self) -> &str {
        match self {
            ProvisioningEventKind::PxeBooting => "PXE Booting",
            ProvisioningEventKind::Preparing => "Preparing",
            ProvisioningEventKind::Registering => "Registering",
            ProvisioningEventKind::Waiting => "Waiting",
            ProvisioningEventKind::Installing => "Installing",
            ProvisioningEventKind::BootingNewKernel => "Booting New Kernel",
            ProvisioningEventKind::PhonedHome => "Phoned Home",
            ProvisioningEventKind::PlannedReboot => "Planned Reboot",
            ProvisioningEventKind::Crashed => "Crashed",
            ProvisioningEventKind::MachineReclaim => "Machine Reclaim",
            ProvisioningEventKind::Other(value) => value,
        }
    }
}

impl From<String> for ProvisioningEventKind {
    fn from(value: String) -> Self {
        match value.as_str() {
            "PXE Booting" => ProvisioningEventKind::PxeBooting,
            "Preparing" => ProvisioningEventKind::Preparing,
            "Registering" => ProvisioningEventKind::Registering,
            "Waiting" => ProvisioningEventKind::Waiting,
            "Installing" => ProvisioningEventKind::Installing,
            "Booting New Kernel" => ProvisioningEventKind::BootingNewKernel,
            "Phoned Home" => ProvisioningEventKind::PhonedHome,
            "Planned Reboot" => ProvisioningEventKind::PlannedReboot,
            "Crashed" => ProvisioningEventKind::Crashed,
            "Machine Reclaim" => ProvisioningEventKind::MachineReclaim,
            _ => ProvisioningEventKind::Other(value),
        }
    }
}

impl From<ProvisioningEventKind> for String {
    fn from(value: ProvisioningEventKind) -> Self {
        value.as_str().to_string()
    }
}

impl fmt::Display for ProvisioningEventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entry of a machine's provisioning event log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvisioningEvent {
    pub event: ProvisioningEventKind,
    pub message: String,
    pub time: Timestamp,
}

/// The role a network plays for an allocated machine (metal-api `networktype`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum NetworkType {
    PrivatePrimaryUnshared,
    PrivatePrimaryShared,
    PrivateSecondaryShared,
    External,
    Underlay,
    Other(String),
}

impl NetworkType {
    pub fn as_str(&self) -> &str {
        match self {
            NetworkType::PrivatePrimaryUnshared => "privateprimaryunshared",
            NetworkType::PrivatePrimaryShared => "privateprimaryshared",
            NetworkType::PrivateSecondaryShared => "privatesecondaryshared",
            NetworkType::External => "external",
            NetworkType::Underlay => "underlay",
            NetworkType::Other(value) => value,
        }
    }

    /// The machine's own private network (its addresses are InternalIPs).
    pub fn is_private_primary(&self) -> bool {
        matches!(self, NetworkType::PrivatePrimaryUnshared | NetworkType::PrivatePrimaryShared)
    }
}

impl From<String> for NetworkType {
    fn from(value: String) -> Self {
        match value.as_str() {
            "privateprimaryunshared" => NetworkType::PrivatePrimaryUnshared,
            "privateprimaryshared" => NetworkType::PrivatePrimaryShared,
            "privatesecondaryshared" => NetworkType::PrivateSecondaryShared,
            "external" => NetworkType::External,
            "underlay" => NetworkType::Underlay,
            _ => NetworkType::Other(value),
        }
    }
}

impl From<NetworkType> for String {
    fn from(value: NetworkType) -> Self {
        value.as_str().to_string()
    }
}

/// A network as attached to an allocated machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineNetwork {
    pub network_id: String,
    pub network_type: NetworkType,
    pub ips: Vec<String>,
    pub prefixes: Vec<String>,
    pub destination_prefixes: Vec<String>,
    pub vrf: u64,
    pub asn: i64,
    pub nat: bool,
    pub private: bool,
    pub underlay: bool,
    pub project_id: Option<String>,
}

/// The allocation of a machine to a project. `None` on a free machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineAllocation {
    /// New for every allocation, so a re-allocation of the same machine is detectable.
    pub allocation_uuid: String,
    pub project_id: String,
    pub name: String,
    pub hostname: String,
    pub description: String,
    pub role: MachineRole,
    pub image_id: String,
    pub ssh_pub_keys: Vec<String>,
    pub user_data: Option<UserData>,
    pub networks: Vec<MachineNetwork>,
    pub firewall_rules: Option<FirewallRules>,
    pub created: Timestamp,
}

/// A bare-metal machine (or firewall, which is a machine with role firewall).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    pub id: String,
    pub partition_id: String,
    pub size_id: String,
    pub rack_id: String,
    pub liveliness: Liveliness,
    pub state: MachineState,
    /// Newest first, as metal-api sends them.
    pub events: Vec<ProvisioningEvent>,
    pub crash_loop: bool,
    pub failed_machine_reclaim: bool,
    pub allocation: Option<MachineAllocation>,
    /// Machine tags; metal-api adds system labels (rack, chassis, ASN) and does not keep order.
    pub tags: Vec<String>,
}

impl Machine {
    /// The newest provisioning event, if any.
    pub fn last_event(&self) -> Option<&ProvisioningEvent> {
        self.events.first()
    }

    /// metal-api never sets `allocation.succeeded`; a machine is provisioned when its newest
    /// event is `Phoned Home`.
    pub fn is_phoned_home(&self) -> bool {
        self.last_event().is_some_and(|event| event.event == ProvisioningEventKind::PhonedHome)
    }

    /// Alive, not crash-looping, and its last reclaim did not fail.
    pub fn is_healthy(&self) -> bool {
        self.liveliness == Liveliness::Alive && !self.crash_loop && !self.failed_machine_reclaim
    }

    /// Ready to serve as a node: provisioned and healthy.
    pub fn is_ready(&self) -> bool {
        self.allocation.is_some() && self.is_phoned_home() && self.is_healthy()
    }

    /// The project the machine is allocated to.
    pub fn project_id(&self) -> Option<&str> {
        self.allocation.as_ref().map(|allocation| allocation.project_id.as_str())
    }

    pub fn role(&self) -> Option<MachineRole> {
        self.allocation.as_ref().map(|allocation| allocation.role)
    }
}

/// One network a machine or firewall is allocated into.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRequest {
    pub network_id: String,
    /// Acquire an IP in this network automatically (metal-api's default).
    pub auto_acquire: bool,
}

impl NetworkRequest {
    pub fn auto(network_id: impl Into<String>) -> Self {
        NetworkRequest { network_id: network_id.into(), auto_acquire: true }
    }
}

/// `POST /v1/machine/allocate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct MachineAllocateRequest {
    pub project_id: String,
    pub partition_id: String,
    pub size_id: String,
    pub image_id: String,
    pub name: String,
    pub hostname: String,
    pub description: String,
    pub ssh_pub_keys: Vec<String>,
    /// Must not be empty (metal-api answers 400).
    pub networks: Vec<NetworkRequest>,
    /// Existing IPs of the project to attach.
    pub ips: Vec<String>,
    pub user_data: Option<UserData>,
    pub tags: Vec<String>,
    /// Rack anti-affinity among machines of the same project and role carrying these tags.
    pub placement_tags: Vec<String>,
    /// Allocate exactly this machine.
    pub machine_id: Option<String>,
}

/// `POST /v1/firewall/allocate`: a machine allocation plus the initial rule set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct FirewallAllocateRequest {
    pub machine: MachineAllocateRequest,
    pub rules: FirewallRules,
}

/// `POST /v1/machine/find` and `POST /v1/firewall/find`. Every `None` is no filter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct MachineQuery {
    pub id: Option<String>,
    pub partition_id: Option<String>,
    pub size_id: Option<String>,
    pub rack_id: Option<String>,
    /// AND of exact tag strings; empty = no filter.
    pub tags: Vec<String>,
    pub allocation_project: Option<String>,
    pub allocation_name: Option<String>,
    pub allocation_hostname: Option<String>,
    pub allocation_image_id: Option<String>,
    pub allocation_role: Option<MachineRole>,
    /// Machines attached to all these networks.
    pub network_ids: Vec<String>,
    /// Machines holding all these IPs.
    pub network_ips: Vec<String>,
}

impl MachineQuery {
    /// Whether a machine passes every filter of this query. Allocation filters never match a
    /// free machine (metal-api compares with the empty allocation).
    pub fn matches(&self, machine: &Machine) -> bool {
        let allocation = machine.allocation.as_ref();
        let field = |get: fn(&MachineAllocation) -> &str| allocation.map(get).unwrap_or_default();
        let networks: Vec<&MachineNetwork> =
            allocation.map(|a| a.networks.iter().collect()).unwrap_or_default();
        filter_matches(&self.id, &machine.id)
            && filter_matches(&self.partition_id, &machine.partition_id)
            && filter_matches(&self.size_id, &machine.size_id)
            && filter_matches(&self.rack_id, &machine.rack_id)
            && tags_match(&machine.tags, &self.tags)
            && filter_matches(&self.allocation_project, field(|a| &a.project_id))
            && filter_matches(&self.allocation_name, field(|a| &a.name))
            && filter_matches(&self.allocation_hostname, field(|a| &a.hostname))
            && filter_matches(&self.allocation_image_id, field(|a| &a.image_id))
            && self.allocation_role.is_none_or(|role| machine.role() == Some(role))
            && self.network_ids.iter().all(|id| networks.iter().any(|n| &n.network_id == id))
            && self.network_ips.iter().all(|ip| networks.iter().any(|n| n.ips.contains(ip)))
    }
}

//! Kubernetes Events a reconcile asks the caller to record. Reasons are a closed set, so
//! users can filter on them and dashboards can count them.

use std::fmt;

/// `Normal` or `Warning`, as Kubernetes Events know them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// Why an event was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum EventReason {
    /// A machine, firewall, network or IP was allocated.
    Allocated,
    /// An earlier allocation of this object was found by its tags and adopted.
    Adopted,
    /// An allocation failed.
    AllocationFailed,
    /// A second allocation for the same object was found and freed.
    DuplicateFreed,
    /// A resource was freed.
    Freed,
    /// A free failed; it is retried.
    FreeFailed,
    /// A resource was left alone because it is not ours (another project or other tags).
    NotOurs,
    /// The machine phoned home and is ready.
    Provisioned,
    /// The machine died.
    MachineDead,
    /// The machine behind providerID was freed or re-allocated by someone else.
    MachineFreedExternally,
    /// The machine keeps crashing while provisioning.
    ProvisioningFailed,
    /// The configuration cannot work (unknown size, image, network, invalid rules).
    InvalidConfiguration,
    /// Deletion left metal-stack resources in place because of `clusterctl move`.
    DeletedForMove,
    /// A broken firewall was deleted so that a new one replaces it.
    FirewallReplaced,
    /// The cluster's firewall name is taken by a MetalStackFirewall the cluster does not own.
    FirewallNameTaken,
    /// The cluster's credentials Secret could not be marked as in use (best effort).
    CredentialsNotProtected,
    /// The cluster's credentials Secret is missing or unusable: what to fix.
    CredentialsInvalid,
}

impl EventReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EventReason::Allocated => "Allocated",
            EventReason::Adopted => "Adopted",
            EventReason::AllocationFailed => "AllocationFailed",
            EventReason::DuplicateFreed => "DuplicateFreed",
            EventReason::Freed => "Freed",
            EventReason::FreeFailed => "FreeFailed",
            EventReason::NotOurs => "NotOurs",
            EventReason::Provisioned => "Provisioned",
            EventReason::MachineDead => "MachineDead",
            EventReason::MachineFreedExternally => "MachineFreedExternally",
            EventReason::ProvisioningFailed => "ProvisioningFailed",
            EventReason::InvalidConfiguration => "InvalidConfiguration",
            EventReason::DeletedForMove => "DeletedForMove",
            EventReason::FirewallReplaced => "FirewallReplaced",
            EventReason::FirewallNameTaken => "FirewallNameTaken",
            EventReason::CredentialsNotProtected => "CredentialsNotProtected",
            EventReason::CredentialsInvalid => "CredentialsInvalid",
        }
    }
}

impl fmt::Display for EventReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One Kubernetes Event. Messages name resources by id and never contain secrets.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Event {
    pub type_: EventType,
    pub reason: EventReason,
    pub message: String,
}

impl Event {
    pub fn normal(reason: EventReason, message: impl Into<String>) -> Self {
        Event { type_: EventType::Normal, reason, message: message.into() }
    }

    pub fn warning(reason: EventReason, message: impl Into<String>) -> Self {
        Event { type_: EventType::Warning, reason, message: message.into() }
    }
}

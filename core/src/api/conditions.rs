//! Condition types and reasons capms writes, and pure helpers to maintain a condition list.
//!
//! Conditions are `metav1.Condition`s (CAPI v1beta2). Every kind has a `Ready` condition that
//! covers the whole lifecycle, deletion included (CAPI mirrors it into the owner's
//! `InfrastructureReady`), and a `Paused` condition with CAPI's reasons. Types and reasons
//! are closed sets so that a reader can switch on them; each documents when it is set.

use std::fmt;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// The status of a condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

impl ConditionStatus {
    /// `True`, `False` or `Unknown`, as written to `status`.
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionStatus::True => "True",
            ConditionStatus::False => "False",
            ConditionStatus::Unknown => "Unknown",
        }
    }

    /// `True` for `true`, `False` for `false`.
    pub fn from_bool(value: bool) -> Self {
        if value { ConditionStatus::True } else { ConditionStatus::False }
    }
}

/// The condition types capms writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConditionType {
    /// All kinds: the object is fully provisioned and healthy; False while provisioning,
    /// unhealthy or deleting, with the reason of the blocking sub-condition.
    Ready,
    /// All kinds: True while the Cluster or the object is paused (CAPI's `Paused`).
    Paused,
    /// All kinds: True once deletion started, with the step it waits for.
    Deleting,
    /// Cluster: the node network exists (allocated or user-provided).
    NodeNetworkReady,
    /// Cluster: the control-plane IP exists and the endpoint is set.
    ControlPlaneIpReady,
    /// Cluster: the MetalStackFirewall is Ready; absent when `spec.firewall` is not set.
    FirewallReady,
    /// Machine: a metal-stack machine is allocated to this object (found by tags or allocated).
    MachineAllocated,
    /// Machine: the machine installed its image and phoned home.
    MachineProvisioned,
    /// Machine: metal-api reports the machine alive (status `Unknown` while metal-api reports
    /// its liveliness unknown).
    MachineHealthy,
    /// Firewall: a metal-stack firewall is allocated to this object.
    FirewallAllocated,
    /// Firewall: the firewall installed its image and phoned home.
    FirewallProvisioned,
    /// Firewall: metal-api reports the firewall alive (status `Unknown` while metal-api
    /// reports its liveliness unknown; its transition time is when capms first saw that).
    FirewallHealthy,
}

impl ConditionType {
    /// Every type, in a fixed order.
    pub const ALL: [ConditionType; 12] = [
        ConditionType::Ready,
        ConditionType::Paused,
        ConditionType::Deleting,
        ConditionType::NodeNetworkReady,
        ConditionType::ControlPlaneIpReady,
        ConditionType::FirewallReady,
        ConditionType::MachineAllocated,
        ConditionType::MachineProvisioned,
        ConditionType::MachineHealthy,
        ConditionType::FirewallAllocated,
        ConditionType::FirewallProvisioned,
        ConditionType::FirewallHealthy,
    ];

    /// The string written to `type`.
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionType::Ready => "Ready",
            ConditionType::Paused => "Paused",
            ConditionType::Deleting => "Deleting",
            ConditionType::NodeNetworkReady => "NodeNetworkReady",
            ConditionType::ControlPlaneIpReady => "ControlPlaneIPReady",
            ConditionType::FirewallReady => "FirewallReady",
            ConditionType::MachineAllocated => "MachineAllocated",
            ConditionType::MachineProvisioned => "MachineProvisioned",
            ConditionType::MachineHealthy => "MachineHealthy",
            ConditionType::FirewallAllocated => "FirewallAllocated",
            ConditionType::FirewallProvisioned => "FirewallProvisioned",
            ConditionType::FirewallHealthy => "FirewallHealthy",
        }
    }

    /// The type a `type` string names, if capms writes it.
    pub fn parse(value: &str) -> Option<Self> {
        ConditionType::ALL.into_iter().find(|t| t.as_str() == value)
    }
}

/// The reasons capms writes. Names follow CAPI's v1beta2 reasons where one exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// The condition holds (`Ready=True`, a `*Ready` sub-condition True).
    Ready,
    /// Aggregate: some sub-condition is not True; the message names it.
    NotReady,
    /// `Paused=True`: `Cluster.spec.paused` or the `cluster.x-k8s.io/paused` annotation.
    Paused,
    /// `Paused=False`.
    NotPaused,
    /// `Deleting=True` / `Ready=False`: resources are being freed.
    Deleting,
    /// `Deleting=False`: the object is not being deleted.
    NotDeleting,
    /// Deletion finished; the finalizer is about to be removed.
    DeletionCompleted,
    /// Waiting for `Cluster.status.initialization.infrastructureProvisioned` (CAPI's reason).
    WaitingForClusterInfrastructureReady,
    /// Waiting for `Machine.spec.bootstrap.dataSecretName` (CAPI's reason).
    WaitingForBootstrapData,
    /// Waiting for the cluster's node network (firewall) or other cluster resources.
    WaitingForNodeNetwork,
    /// Cluster deletion waits for its MetalStackMachines to be gone.
    WaitingForMachines,
    /// Cluster deletion or readiness waits for its MetalStackFirewall.
    WaitingForFirewall,
    /// Network free waits while metal-api releases the network's IPs asynchronously.
    WaitingForIpRelease,
    /// An allocation request is in flight or about to be sent.
    Allocating,
    /// An allocation of this object was found by its tags and adopted.
    Adopted,
    /// capms allocated the resource (and will free it on delete).
    Allocated,
    /// The user provided the resource (node network, control-plane IP); it is never freed.
    UserProvided,
    /// Capacity: no free machine of the size in the partition, or too many parallel
    /// allocations; retried with a long backoff.
    NoMachineAvailable,
    /// Transient: metal-api is unreachable or answered with a server error; retried soon.
    BackendUnavailable,
    /// metal-api rejected the credentials or a permission is missing; retried slowly.
    AuthFailed,
    /// Permanent: the spec cannot work as it is (unknown size, image, network, bad rules).
    InvalidConfiguration,
    /// The cluster's `spec.credentialsRef` Secret is missing or unusable (no `url`, neither
    /// `hmac` nor `token`, an invalid `hmacAuthType`); the message names the Secret and the key
    /// to fix, never a value. Retried slowly, and at once when the Secret changes.
    CredentialsInvalid,
    /// Allocated; the machine installs its image.
    Provisioning,
    /// The machine's latest provisioning event is `Phoned Home`.
    PhonedHome,
    /// metal-api reports the machine alive.
    Alive,
    /// metal-api reports the machine's liveliness as dead; on a firewall's Ready also: its
    /// liveliness has been unknown for `FIREWALL_REPLACE_AFTER`, and capms gave it up.
    MachineDead,
    /// metal-api reports the machine's liveliness as unknown.
    MachineLivelinessUnknown,
    /// The machine behind `providerID` is no longer allocated to this object.
    MachineFreedExternally,
    /// The machine is in a provisioning crash loop or reported a failed installation.
    ProvisioningFailed,
}

impl Reason {
    /// Every reason, in a fixed order.
    pub const ALL: [Reason; 29] = [
        Reason::Ready,
        Reason::NotReady,
        Reason::Paused,
        Reason::NotPaused,
        Reason::Deleting,
        Reason::NotDeleting,
        Reason::DeletionCompleted,
        Reason::WaitingForClusterInfrastructureReady,
        Reason::WaitingForBootstrapData,
        Reason::WaitingForNodeNetwork,
        Reason::WaitingForMachines,
        Reason::WaitingForFirewall,
        Reason::WaitingForIpRelease,
        Reason::Allocating,
        Reason::Adopted,
        Reason::Allocated,
        Reason::UserProvided,
        Reason::NoMachineAvailable,
        Reason::BackendUnavailable,
        Reason::AuthFailed,
        Reason::InvalidConfiguration,
        Reason::CredentialsInvalid,
        Reason::Provisioning,
        Reason::PhonedHome,
        Reason::Alive,
        Reason::MachineDead,
        Reason::MachineLivelinessUnknown,
        Reason::MachineFreedExternally,
        Reason::ProvisioningFailed,
    ];

    /// The string written to `reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Ready => "Ready",
            Reason::NotReady => "NotReady",
            Reason::Paused => "Paused",
            Reason::NotPaused => "NotPaused",
            Reason::Deleting => "Deleting",
            Reason::NotDeleting => "NotDeleting",
            Reason::DeletionCompleted => "DeletionCompleted",
            Reason::WaitingForClusterInfrastructureReady => "WaitingForClusterInfrastructureReady",
            Reason::WaitingForBootstrapData => "WaitingForBootstrapData",
            Reason::WaitingForNodeNetwork => "WaitingForNodeNetwork",
            Reason::WaitingForMachines => "WaitingForMachines",
            Reason::WaitingForFirewall => "WaitingForFirewall",
            Reason::WaitingForIpRelease => "WaitingForIPRelease",
            Reason::Allocating => "Allocating",
            Reason::Adopted => "Adopted",
            Reason::Allocated => "Allocated",
            Reason::UserProvided => "UserProvided",
            Reason::NoMachineAvailable => "NoMachineAvailable",
            Reason::BackendUnavailable => "BackendUnavailable",
            Reason::AuthFailed => "AuthFailed",
            Reason::InvalidConfiguration => "InvalidConfiguration",
            Reason::CredentialsInvalid => "CredentialsInvalid",
            Reason::Provisioning => "Provisioning",
            Reason::PhonedHome => "PhonedHome",
            Reason::Alive => "Alive",
            Reason::MachineDead => "MachineDead",
            Reason::MachineLivelinessUnknown => "MachineLivelinessUnknown",
            Reason::MachineFreedExternally => "MachineFreedExternally",
            Reason::ProvisioningFailed => "ProvisioningFailed",
        }
    }

    /// The reason a `reason` string names, if capms writes it.
    pub fn parse(value: &str) -> Option<Self> {
        Reason::ALL.into_iter().find(|r| r.as_str() == value)
    }
}

impl fmt::Display for ConditionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for ConditionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Sets the condition `type_` in `conditions`, appending it if absent.
///
/// `lastTransitionTime` changes only when the status changes, so that it tells since when
/// the condition holds, not when a controller last looked. Returns whether anything changed
/// (callers skip the status patch otherwise).
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: ConditionType,
    status: ConditionStatus,
    reason: Reason,
    message: &str,
    observed_generation: Option<i64>,
    now: Timestamp,
) -> bool {
    let existing = conditions.iter_mut().find(|c| c.type_ == type_.as_str());
    let Some(condition) = existing else {
        conditions.push(Condition {
            type_: type_.as_str().to_string(),
            status: status.as_str().to_string(),
            reason: reason.as_str().to_string(),
            message: message.to_string(),
            observed_generation,
            last_transition_time: wire_time(now),
        });
        return true;
    };
    let before = condition.clone();
    if condition.status != status.as_str() {
        condition.status = status.as_str().to_string();
        condition.last_transition_time = wire_time(now);
    }
    condition.reason = reason.as_str().to_string();
    condition.message = message.to_string();
    condition.observed_generation = observed_generation;
    *condition != before
}

/// `now` at the precision of `metav1.Time` on the wire (whole seconds). The apiserver keeps
/// no more, so a condition time written with fractions would come back truncated: truncating
/// here makes the simulator's store behave like the apiserver, and keeps a reconcile's inputs
/// exactly representable in a trace (a backoff computed from a condition's age is the same in
/// the recorded run and in its replay).
pub fn wire_time(now: Timestamp) -> Time {
    Time(Timestamp::from_second(now.as_second()).unwrap_or(now))
}

/// The condition of type `type_` (any string, so CAPI's conditions can be read too).
pub fn get_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the condition `type_` is present with status `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    get_condition(conditions, type_).is_some_and(|c| c.status == ConditionStatus::True.as_str())
}

/// Removes the condition `type_`; returns whether it was present.
pub fn remove_condition(conditions: &mut Vec<Condition>, type_: &str) -> bool {
    let before = conditions.len();
    conditions.retain(|c| c.type_ != type_);
    conditions.len() != before
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).expect("in range")
    }

    fn ready(conditions: &[Condition]) -> &Condition {
        get_condition(conditions, "Ready").expect("Ready is set")
    }

    #[test]
    fn set_condition_appends_a_new_condition() {
        let mut conditions = Vec::new();
        let changed = set_condition(
            &mut conditions,
            ConditionType::Ready,
            ConditionStatus::False,
            Reason::Allocating,
            "",
            Some(1),
            at(10),
        );
        assert!(changed);
        assert_eq!(ready(&conditions).last_transition_time, Time(at(10)));
        assert_eq!(ready(&conditions).reason, "Allocating");
        assert_eq!(ready(&conditions).observed_generation, Some(1));
    }

    #[test]
    fn set_condition_keeps_transition_time_when_status_is_unchanged() {
        let mut conditions = Vec::new();
        set_condition(
            &mut conditions,
            ConditionType::Ready,
            ConditionStatus::False,
            Reason::Allocating,
            "a",
            Some(1),
            at(10),
        );
        let changed = set_condition(
            &mut conditions,
            ConditionType::Ready,
            ConditionStatus::False,
            Reason::Provisioning,
            "b",
            Some(2),
            at(20),
        );
        assert!(changed);
        assert_eq!(ready(&conditions).last_transition_time, Time(at(10)));
        assert_eq!(ready(&conditions).reason, "Provisioning");
        assert_eq!(ready(&conditions).message, "b");
        assert_eq!(conditions.len(), 1);
    }

    #[test]
    fn set_condition_updates_transition_time_when_status_flips() {
        let mut conditions = Vec::new();
        set_condition(
            &mut conditions,
            ConditionType::Ready,
            ConditionStatus::False,
            Reason::Provisioning,
            "",
            None,
            at(10),
        );
        set_condition(
            &mut conditions,
            ConditionType::Ready,
            ConditionStatus::True,
            Reason::Ready,
            "",
            None,
            at(30),
        );
        assert_eq!(ready(&conditions).last_transition_time, Time(at(30)));
        assert!(is_true(&conditions, "Ready"));
    }

    #[test]
    fn set_condition_reports_no_change_for_identical_input() {
        let mut conditions = Vec::new();
        set_condition(
            &mut conditions,
            ConditionType::Paused,
            ConditionStatus::False,
            Reason::NotPaused,
            "",
            Some(3),
            at(10),
        );
        let changed = set_condition(
            &mut conditions,
            ConditionType::Paused,
            ConditionStatus::False,
            Reason::NotPaused,
            "",
            Some(3),
            at(50),
        );
        assert!(!changed);
        assert_eq!(
            get_condition(&conditions, "Paused").map(|c| &c.last_transition_time),
            Some(&Time(at(10)))
        );
    }

    #[test]
    fn is_true_is_false_for_absent_or_other_status() {
        let mut conditions = Vec::new();
        assert!(!is_true(&conditions, "Ready"));
        set_condition(
            &mut conditions,
            ConditionType::Ready,
            ConditionStatus::Unknown,
            Reason::NotReady,
            "",
            None,
            at(1),
        );
        assert!(!is_true(&conditions, "Ready"));
        assert!(remove_condition(&mut conditions, "Ready"));
        assert!(!remove_condition(&mut conditions, "Ready"));
    }

    #[test]
    fn names_are_unique_and_parse_back() {
        for type_ in ConditionType::ALL {
            assert_eq!(ConditionType::parse(type_.as_str()), Some(type_));
        }
        for reason in Reason::ALL {
            assert_eq!(Reason::parse(reason.as_str()), Some(reason));
        }
        assert_eq!(ConditionType::ControlPlaneIpReady.as_str(), "ControlPlaneIPReady");
        assert_eq!(Reason::WaitingForIpRelease.as_str(), "WaitingForIPRelease");
    }
}

//! Reporting a metal-stack machine's life in conditions and events. Shared by the machine and
//! the firewall reconciler, which differ only in their condition types.
//!
//! Health follows metal-api's liveliness: `Alive` (healthy unless crash-looping or failing
//! its reclaim), `Dead`, or `Unknown`, which metal-api reports for an allocated machine that
//! sent no event for 5 minutes (a dead machine stays `Unknown` while it is allocated). The
//! health condition's status is `Unknown` while the liveliness is, so its
//! `lastTransitionTime` says since when capms has seen the machine silent: status alone
//! carries it, and a lost status restarts the count instead of inventing one.

use crate::api::conditions::{ConditionStatus, ConditionType, Reason, get_condition};
use crate::metal::{Liveliness, Machine};
use crate::reconcile::events::{Event, EventReason};
use crate::reconcile::status::Conditions;

/// The condition types one kind uses for allocation, provisioning and health.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lifecycle {
    pub(crate) allocated: ConditionType,
    pub(crate) provisioned: ConditionType,
    pub(crate) healthy: ConditionType,
}

pub(crate) const MACHINE: Lifecycle = Lifecycle {
    allocated: ConditionType::MachineAllocated,
    provisioned: ConditionType::MachineProvisioned,
    healthy: ConditionType::MachineHealthy,
};

pub(crate) const FIREWALL: Lifecycle = Lifecycle {
    allocated: ConditionType::FirewallAllocated,
    provisioned: ConditionType::FirewallProvisioned,
    healthy: ConditionType::FirewallHealthy,
};

/// Whether a condition already carries this reason (so an event is recorded only once).
pub(crate) fn already(conditions: &Conditions<'_>, type_: ConditionType, reason: Reason) -> bool {
    get_condition(conditions.list, type_.as_str()).is_some_and(|c| c.reason == reason.as_str())
}

impl Lifecycle {
    /// Reports health, provisioning and Ready for an allocated machine of ours. Returns
    /// whether it is ready: newest event `Phoned Home` and liveliness `Alive`.
    pub(crate) fn report(
        &self,
        conditions: &mut Conditions<'_>,
        events: &mut Vec<Event>,
        machine: &Machine,
    ) -> bool {
        conditions.set(self.allocated, true, Reason::Allocated, &format!("machine {}", machine.id));
        let healthy = self.report_health(conditions, events, machine);
        let provisioned = self.report_provisioning(conditions, events, machine);
        if healthy && provisioned {
            conditions.set(ConditionType::Ready, true, Reason::Ready, "");
        }
        healthy && provisioned
    }

    fn report_health(
        &self,
        conditions: &mut Conditions<'_>,
        events: &mut Vec<Event>,
        machine: &Machine,
    ) -> bool {
        let (status, reason) = match machine.liveliness {
            Liveliness::Alive if !machine.crash_loop && !machine.failed_machine_reclaim => {
                (ConditionStatus::True, Reason::Alive)
            }
            Liveliness::Alive => (ConditionStatus::False, Reason::ProvisioningFailed),
            Liveliness::Dead => (ConditionStatus::False, Reason::MachineDead),
            Liveliness::Unknown => (ConditionStatus::Unknown, Reason::MachineLivelinessUnknown),
        };
        let healthy = status == ConditionStatus::True;
        let message = format!("liveliness {}", machine.liveliness.as_str());
        if reason == Reason::MachineDead && !already(conditions, self.healthy, reason) {
            events.push(Event::warning(EventReason::MachineDead, format!("machine {} died", machine.id)));
        }
        conditions.set_status(self.healthy, status, reason, &message);
        if !healthy {
            conditions.set(
                ConditionType::Ready,
                false,
                reason,
                &format!("machine {} is not healthy: {message}", machine.id),
            );
        }
        healthy
    }

    fn report_provisioning(
        &self,
        conditions: &mut Conditions<'_>,
        events: &mut Vec<Event>,
        machine: &Machine,
    ) -> bool {
        let latest =
            machine.last_event().map(|e| e.event.to_string()).unwrap_or_else(|| "no event".to_string());
        let message = format!("latest event: {latest}");
        let (provisioned, reason) = if machine.crash_loop {
            (false, Reason::ProvisioningFailed)
        } else if machine.is_phoned_home() {
            (true, Reason::PhonedHome)
        } else {
            (false, Reason::Provisioning)
        };
        if reason == Reason::ProvisioningFailed && !already(conditions, self.provisioned, reason) {
            let text = format!("machine {} is in a provisioning crash loop", machine.id);
            events.push(Event::warning(EventReason::ProvisioningFailed, text));
        }
        conditions.set(self.provisioned, provisioned, reason, &message);
        let healthy = machine.liveliness == Liveliness::Alive && !machine.failed_machine_reclaim;
        if !provisioned && healthy {
            conditions.set(ConditionType::Ready, false, reason, &message);
        }
        provisioned
    }

    /// How long capms has seen the machine's liveliness `Unknown` (the health condition's
    /// time in status `Unknown`), if it is now.
    pub(crate) fn unknown_for(&self, conditions: &Conditions<'_>) -> Option<std::time::Duration> {
        conditions.held_for(self.healthy, ConditionStatus::Unknown)
    }

    /// Reports that the machine behind the providerID is gone, freed or re-allocated. It is
    /// never re-allocated behind CAPI's back: a MachineHealthCheck replaces the Machine.
    pub(crate) fn freed_externally(
        &self,
        conditions: &mut Conditions<'_>,
        events: &mut Vec<Event>,
        machine_id: &str,
        exists: bool,
    ) {
        let message = if exists {
            format!("machine {machine_id} is no longer allocated to this object")
        } else {
            format!("machine {machine_id} no longer exists in metal-api")
        };
        if !already(conditions, self.allocated, Reason::MachineFreedExternally) {
            events.push(Event::warning(EventReason::MachineFreedExternally, message.clone()));
        }
        for type_ in [self.allocated, self.healthy, ConditionType::Ready] {
            conditions.set(type_, false, Reason::MachineFreedExternally, &message);
        }
    }
}

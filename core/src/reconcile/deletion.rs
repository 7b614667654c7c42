//! The parts of deletion the three reconcilers share.

use crate::ProviderId;
use crate::api::conditions::{ConditionType, Reason};
use crate::backend::MetalBackend;
use crate::reconcile::allocation::Owner;
use crate::reconcile::events::{Event, EventReason};
use crate::reconcile::status::Conditions;
use crate::reconcile::{Control, FinalizerAction, Requeue};
use std::time::Duration;

/// What deletion decides before it may free anything: `Some` when nothing is freed now.
///
/// Without our finalizer there is nothing to do; deleted for `clusterctl move`, the finalizer
/// goes and the metal-stack resources (`what`) stay; while paused, nothing happens until the
/// pause ends.
pub(crate) fn gate(
    control: &Control,
    conditions: &mut Conditions<'_>,
    events: &mut Vec<Event>,
    what: &str,
) -> Option<FinalizerAction> {
    conditions.set(ConditionType::Ready, false, Reason::Deleting, "the object is being deleted");
    if !control.has_finalizer {
        conditions.set(ConditionType::Deleting, true, Reason::DeletionCompleted, "");
        return Some(FinalizerAction::Keep);
    }
    if control.delete_for_move {
        conditions.set(
            ConditionType::Deleting,
            true,
            Reason::DeletionCompleted,
            "deleted for clusterctl move",
        );
        let message = format!("deleted for clusterctl move; {what} stay allocated");
        events.push(Event::normal(EventReason::DeletedForMove, message));
        return Some(FinalizerAction::Remove);
    }
    if control.paused {
        let message = "paused: nothing is freed until the pause ends";
        conditions.set(ConditionType::Deleting, true, Reason::Paused, message);
        return Some(FinalizerAction::Keep);
    }
    None
}

/// How long deletion waits for the MetalStackCluster, without which ownership cannot be
/// checked (CAPI deletes it only after every machine, so this is short in practice).
pub(crate) const OWNER_WAIT: Duration = Duration::from_secs(60);

/// Frees the machine or firewall behind `provider_id` and any other of the object's, each only
/// if it is still ours. Returns the finalizer decision and when to retry.
pub(crate) async fn free(
    owner: &Owner,
    backend: &dyn MetalBackend,
    provider_id: Option<&str>,
    conditions: &mut Conditions<'_>,
    events: &mut Vec<Event>,
    jitter: u64,
) -> (FinalizerAction, Requeue) {
    let provider = provider_id.and_then(|id| ProviderId::parse(id).ok());
    match owner.free_all(backend, provider.as_ref().map(|p| p.machine_id()), events).await {
        Ok(_) => {
            conditions.set(ConditionType::Deleting, true, Reason::DeletionCompleted, "");
            (FinalizerAction::Remove, None)
        }
        Err(error) => {
            let message = format!("freeing the {} failed: {error}", owner.role.as_str());
            events.push(Event::warning(EventReason::FreeFailed, message));
            (FinalizerAction::Keep, Some(conditions.deletion_failed(&error, jitter)))
        }
    }
}

/// Deletion has to wait for the MetalStackCluster.
pub(crate) fn wait_for_owner(conditions: &mut Conditions<'_>) -> Requeue {
    let message = "waiting for the MetalStackCluster to check ownership before freeing";
    conditions.set(ConditionType::Deleting, true, Reason::Deleting, message);
    Some(OWNER_WAIT)
}

//! Small helpers shared by the reconcilers for conditions and failures.

use crate::Timestamp;
use crate::api::conditions::{ConditionStatus, ConditionType, Reason, get_condition, set_condition};
use crate::error::{BackendError, ErrorKind};
use crate::reconcile::backoff::requeue_after;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use std::time::Duration;

/// The condition reason that reports an error of this class.
pub(crate) fn reason_for(kind: ErrorKind) -> Reason {
    match kind {
        ErrorKind::Capacity => Reason::NoMachineAvailable,
        ErrorKind::Auth => Reason::AuthFailed,
        ErrorKind::Permanent | ErrorKind::NotFound => Reason::InvalidConfiguration,
        ErrorKind::Transient | ErrorKind::Conflict => Reason::BackendUnavailable,
        ErrorKind::Paused => Reason::Paused,
    }
}

/// A condition list being rebuilt during one reconcile.
pub(crate) struct Conditions<'a> {
    pub(crate) list: &'a mut Vec<Condition>,
    pub(crate) generation: Option<i64>,
    pub(crate) now: Timestamp,
}

impl Conditions<'_> {
    pub(crate) fn set(&mut self, type_: ConditionType, status: bool, reason: Reason, message: &str) {
        self.set_status(type_, ConditionStatus::from_bool(status), reason, message);
    }

    /// [`Conditions::set`] with any status, `Unknown` included.
    pub(crate) fn set_status(
        &mut self,
        type_: ConditionType,
        status: ConditionStatus,
        reason: Reason,
        message: &str,
    ) {
        set_condition(self.list, type_, status, reason, message, self.generation, self.now);
    }

    /// How long the condition has had `status` (its last transition), if it has it now.
    pub(crate) fn held_for(&self, type_: ConditionType, status: ConditionStatus) -> Option<Duration> {
        let condition = get_condition(self.list, type_.as_str())?;
        if condition.status != status.as_str() {
            return None;
        }
        let age = self.now.duration_since(condition.last_transition_time.0);
        Some(age.try_into().unwrap_or(Duration::ZERO))
    }

    /// How long the condition has had its current status and reason (zero if it just changed
    /// or is absent): the age of a failure, for backoff.
    pub(crate) fn failing_for(&self, type_: ConditionType, status: bool, reason: Reason) -> Duration {
        let Some(condition) = get_condition(self.list, type_.as_str()) else {
            return Duration::ZERO;
        };
        let status = ConditionStatus::from_bool(status);
        if condition.status != status.as_str() || condition.reason != reason.as_str() {
            return Duration::ZERO;
        }
        let age = self.now.duration_since(condition.last_transition_time.0);
        age.try_into().unwrap_or(Duration::ZERO)
    }

    /// Records a failed metal-stack call on `type_` and on Ready, and says when to retry.
    pub(crate) fn failed(&mut self, type_: ConditionType, error: &BackendError, jitter: u64) -> Duration {
        let reason = reason_for(error.kind());
        let failing_for = self.failing_for(type_, false, reason);
        let message = error.to_string();
        self.set(type_, false, reason, &message);
        self.set(ConditionType::Ready, false, reason, &message);
        requeue_after(error.kind(), failing_for, jitter)
    }

    /// Records a failed free during deletion (`Deleting` stays True, with the error's class as
    /// reason) and says when to retry.
    pub(crate) fn deletion_failed(&mut self, error: &BackendError, jitter: u64) -> Duration {
        let reason = reason_for(error.kind());
        let failing_for = self.failing_for(ConditionType::Deleting, true, reason);
        let message = error.to_string();
        self.set(ConditionType::Deleting, true, reason, &message);
        self.set(ConditionType::Ready, false, Reason::Deleting, &message);
        requeue_after(error.kind(), failing_for, jitter)
    }

    /// Sets `Paused` from the pause flag.
    pub(crate) fn paused(&mut self, paused: bool) {
        let (reason, message) = if paused {
            (Reason::Paused, "Cluster spec.paused or the cluster.x-k8s.io/paused annotation is set")
        } else {
            (Reason::NotPaused, "")
        };
        self.set(ConditionType::Paused, paused, reason, message);
    }
}

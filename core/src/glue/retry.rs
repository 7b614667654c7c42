//! When a reconcile runs again: the requeue the reconciler asked for, the periodic resync, and
//! the retry of a failed pass with per-object exponential backoff.
//!
//! A pass that fails (the apiserver refuses a write, a credentials Secret is missing) is
//! retried after the delay of its [`FailureClass`]; each further failure of the same object in
//! a row doubles that delay, up to [`DELAY_MAX`], so that one broken object does not hammer the
//! apiserver while the others work. The first success resets it. Failures of metal-api calls
//! do not come here: the reconcilers turn them into conditions and their own requeues.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

/// When nothing else happens, look again after this long (drift from outside: a machine freed
/// in metal-api without a Kubernetes event).
pub const RESYNC: Duration = Duration::from_secs(10 * 60);

/// The first retry after a conflict or a vanished object: re-read soon.
pub const CONFLICT_RETRY: Duration = Duration::from_millis(200);

/// The first retry after the apiserver failed or throttled without saying for how long.
pub const UNAVAILABLE_RETRY: Duration = Duration::from_secs(5);

/// The first retry of what someone has to fix (validation, RBAC, configuration).
pub const CONFIGURATION_RETRY: Duration = Duration::from_secs(60);

/// The longest delay between two attempts at a failing object: also the longest a fix that
/// sends no watch event (a credentials Secret created late) waits to be noticed.
pub const DELAY_MAX: Duration = Duration::from_secs(5 * 60);

/// How many objects' failure counts are remembered. Deleted objects are never reconciled
/// again, so their counts would stay forever: past this many, the first by key is forgotten.
pub const OBJECTS_MAX: usize = 10_000;

/// The class of a failed pass: decides the retry delay and the metrics label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FailureClass {
    /// The object changed since it was read (409, or a failed resourceVersion test).
    Conflict,
    /// The object or one it needs is gone.
    NotFound,
    /// A validation rule or admission refused the write (422, or a name taken).
    Invalid,
    /// Credentials or permissions are missing.
    Auth,
    /// The apiserver failed, timed out or throttled.
    Unavailable,
    /// A bug: something could not be encoded.
    Permanent,
}

impl FailureClass {
    /// The metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::Conflict => "conflict",
            FailureClass::NotFound => "not_found",
            FailureClass::Invalid => "invalid",
            FailureClass::Auth => "auth",
            FailureClass::Unavailable => "kubernetes",
            FailureClass::Permanent => "permanent",
        }
    }

    /// The first retry delay of the class.
    pub fn retry_after(self) -> Duration {
        match self {
            FailureClass::Conflict | FailureClass::NotFound => CONFLICT_RETRY,
            FailureClass::Unavailable => UNAVAILABLE_RETRY,
            FailureClass::Invalid | FailureClass::Auth | FailureClass::Permanent => CONFIGURATION_RETRY,
        }
    }
}

/// Why a write of the glue failed, as an apiserver answers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// 409, or our failed test of `/metadata/resourceVersion`: the object changed.
    #[error("the object changed while it was reconciled")]
    Conflict,
    /// 404.
    #[error("the object is gone")]
    Gone,
    /// 409 on create.
    #[error("the object already exists")]
    AlreadyExists,
    /// 422 or an admission refusal.
    #[error("the write was refused: {0}")]
    Invalid(String),
    /// 401 or 403.
    #[error("the write is not allowed: {0}")]
    Forbidden(String),
    /// 5xx, a timeout or a broken connection.
    #[error("the apiserver is unavailable: {0}")]
    Unavailable(String),
    /// 429, with the delay the apiserver asked for, if any.
    #[error("the apiserver throttled the write")]
    Throttled { retry_after: Option<Duration> },
    /// The name of a cluster's firewall is taken by a MetalStackFirewall it does not own.
    #[error(
        "MetalStackFirewall {name} exists but is not owned by this MetalStackCluster: capms creates the cluster's firewall under this name; delete or rename the other object"
    )]
    FirewallNameTaken { name: String },
}

impl WriteError {
    pub fn class(&self) -> FailureClass {
        match self {
            WriteError::Conflict | WriteError::AlreadyExists => FailureClass::Conflict,
            WriteError::Gone => FailureClass::NotFound,
            WriteError::Invalid(_) | WriteError::FirewallNameTaken { .. } => FailureClass::Invalid,
            WriteError::Forbidden(_) => FailureClass::Auth,
            WriteError::Unavailable(_) | WriteError::Throttled { .. } => FailureClass::Unavailable,
        }
    }

    /// The first retry delay: the class's, or what a 429 asked for if longer.
    pub fn retry_after(&self) -> Duration {
        let class = self.class().retry_after();
        match self {
            WriteError::Throttled { retry_after: Some(asked) } => class.max(*asked),
            _ => class,
        }
    }
}

/// The failures in a row of each failing object.
#[derive(Debug)]
pub struct Backoff<Key: Ord> {
    failures: Mutex<BTreeMap<Key, u32>>,
}

impl<Key: Ord> Default for Backoff<Key> {
    fn default() -> Self {
        Backoff { failures: Mutex::new(BTreeMap::new()) }
    }
}

impl<Key: Ord + Clone> Backoff<Key> {
    /// Counts a failure of `key` and returns when to try again: `base` doubled for every
    /// earlier failure in a row, at most [`DELAY_MAX`] (and never below `base`).
    pub fn failed(&self, key: &Key, base: Duration) -> Duration {
        let Ok(mut failures) = self.failures.lock() else { return DELAY_MAX };
        let count = failures.get(key).copied().unwrap_or(0).saturating_add(1);
        if !failures.contains_key(key) && failures.len() >= OBJECTS_MAX {
            failures.pop_first();
        }
        failures.insert(key.clone(), count);
        delay(base, count)
    }

    /// Forgets the failures of `key` after a successful pass.
    pub fn succeeded(&self, key: &Key) {
        if let Ok(mut failures) = self.failures.lock() {
            failures.remove(key);
        }
    }

    /// How many objects are failing now.
    pub fn failing(&self) -> usize {
        self.failures.lock().map(|failures| failures.len()).unwrap_or(0)
    }

    /// Forgets everything (a crash).
    pub fn clear(&self) {
        if let Ok(mut failures) = self.failures.lock() {
            failures.clear();
        }
    }
}

/// `base` · 2^(failures − 1), capped at [`DELAY_MAX`] (or at `base` if that is larger).
pub fn delay(base: Duration, failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(31);
    let delay = base.saturating_mul(1_u32 << doublings);
    delay.min(DELAY_MAX.max(base))
}

/// When to run a pass again after it succeeded: when the reconciler asked, else at the resync.
pub fn next(requeue: crate::reconcile::Requeue) -> Duration {
    requeue.unwrap_or(RESYNC)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: Duration = Duration::from_secs(5);

    #[test]
    fn each_failure_in_a_row_doubles_the_delay_up_to_the_maximum() {
        let backoff = Backoff::default();
        let delays: Vec<Duration> = (0..10).map(|_| backoff.failed(&"a", BASE)).collect();
        let seconds: Vec<u64> = delays.iter().map(Duration::as_secs).collect();
        assert_eq!(seconds, [5, 10, 20, 40, 80, 160, 300, 300, 300, 300]);
    }

    #[test]
    fn a_success_resets_only_its_own_object() {
        let backoff = Backoff::default();
        backoff.failed(&"a", BASE);
        backoff.failed(&"a", BASE);
        backoff.failed(&"b", BASE);
        backoff.succeeded(&"a");
        assert_eq!(backoff.failed(&"a", BASE), BASE);
        assert_eq!(backoff.failed(&"b", BASE), BASE * 2);
    }

    #[test]
    fn a_base_above_the_maximum_is_kept_and_counts_never_overflow() {
        assert_eq!(delay(Duration::from_secs(3600), 5), Duration::from_secs(3600));
        assert_eq!(delay(BASE, u32::MAX), DELAY_MAX);
        assert_eq!(delay(BASE, 0), BASE);
    }

    #[test]
    fn the_remembered_objects_are_bounded() {
        let backoff = Backoff::default();
        for index in 0..OBJECTS_MAX + 5 {
            backoff.failed(&format!("object-{index:05}"), BASE);
        }
        assert_eq!(backoff.failing(), OBJECTS_MAX);
    }

    #[test]
    fn a_throttled_write_waits_as_long_as_the_apiserver_asked() {
        let asked = Duration::from_secs(30);
        assert_eq!(WriteError::Throttled { retry_after: Some(asked) }.retry_after(), asked);
        assert_eq!(WriteError::Throttled { retry_after: None }.retry_after(), UNAVAILABLE_RETRY);
        assert_eq!(WriteError::Conflict.retry_after(), CONFLICT_RETRY);
    }
}

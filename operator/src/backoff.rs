//! Per-object exponential backoff for reconciles that fail.
//!
//! A reconcile that fails (the apiserver refuses a write, a credentials Secret is missing) is
//! retried after the delay its error class asks for ([`OperatorError::retry_after`]); each
//! further failure of the same object in a row doubles that delay, up to [`DELAY_MAX`], so that
//! one broken object does not hammer the apiserver while the others work. The first success
//! resets it. Failures of metal-api calls do not come here: core turns them into conditions
//! and its own requeues.
//!
//! [`OperatorError::retry_after`]: crate::error::OperatorError::retry_after

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

/// The longest delay between two attempts at a failing object: also the longest a fix that
/// sends no watch event (a credentials Secret created late) waits to be noticed.
pub const DELAY_MAX: Duration = Duration::from_secs(5 * 60);

/// How many objects' failure counts are remembered. Deleted objects are never reconciled
/// again, so their counts would stay forever: past this many, the first by key is forgotten
/// (its next failure starts again from the base delay; with 10,000 objects failing at once,
/// that is the least of the problems).
pub const OBJECTS_MAX: usize = 10_000;

/// The failures in a row of each failing object, by a key such as `kind/namespace/name`.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: Mutex<BTreeMap<String, u32>>,
}

impl Backoff {
    /// Counts a failure of `key` and returns when to try again: `base` doubled for every
    /// earlier failure in a row, at most [`DELAY_MAX`] (and never below `base`).
    pub fn failed(&self, key: &str, base: Duration) -> Duration {
        let Ok(mut failures) = self.failures.lock() else { return DELAY_MAX };
        let count = failures.get(key).copied().unwrap_or(0).saturating_add(1);
        if !failures.contains_key(key) && failures.len() >= OBJECTS_MAX {
            failures.pop_first();
        }
        failures.insert(key.to_string(), count);
        delay(base, count)
    }

    /// Forgets the failures of `key` after a successful reconcile.
    pub fn succeeded(&self, key: &str) {
        if let Ok(mut failures) = self.failures.lock() {
            failures.remove(key);
        }
    }

    /// How many objects are failing now.
    pub fn failing(&self) -> usize {
        self.failures.lock().map(|failures| failures.len()).unwrap_or(0)
    }
}

/// `base` · 2^(failures − 1), capped at [`DELAY_MAX`] (or at `base` if that is larger).
pub fn delay(base: Duration, failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(31);
    let delay = base.saturating_mul(1_u32 << doublings);
    delay.min(DELAY_MAX.max(base))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: Duration = Duration::from_secs(5);

    #[test]
    fn each_failure_in_a_row_doubles_the_delay_up_to_the_maximum() {
        let backoff = Backoff::default();
        let delays: Vec<Duration> = (0..10).map(|_| backoff.failed("a", BASE)).collect();
        let seconds: Vec<u64> = delays.iter().map(Duration::as_secs).collect();
        assert_eq!(seconds, [5, 10, 20, 40, 80, 160, 300, 300, 300, 300]);
    }

    #[test]
    fn a_success_resets_only_its_own_object() {
        let backoff = Backoff::default();
        backoff.failed("a", BASE);
        backoff.failed("a", BASE);
        backoff.failed("b", BASE);
        backoff.succeeded("a");
        assert_eq!(backoff.failed("a", BASE), BASE);
        assert_eq!(backoff.failed("b", BASE), BASE * 2);
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
}

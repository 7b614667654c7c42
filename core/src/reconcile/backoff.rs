//! How long to wait after a failure, by error class.
//!
//! Stateless and rebuildable: the delay grows with how long the failure has lasted (the age of
//! the failing condition), clamped between a base and a cap per class, and is spread by a
//! jitter value the caller supplies (the operator draws it from the OS, the simulator from its
//! seed). Capacity and auth failures start slow and stay slow: never a hot loop.

use crate::error::ErrorKind;
use std::time::Duration;

/// Base and cap of the delay for one error class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The backoff of an error class.
    pub fn for_kind(kind: ErrorKind) -> Backoff {
        let (base, max) = match kind {
            ErrorKind::Transient => (5, 300),
            ErrorKind::Conflict => (1, 30),
            ErrorKind::NotFound => (30, 600),
            ErrorKind::Capacity => (60, 900),
            ErrorKind::Permanent => (300, 1800),
            ErrorKind::Auth => (120, 1800),
            // The next pass sees the pause in the informer (or that it ended).
            ErrorKind::Paused => (5, 60),
        };
        Backoff { base: Duration::from_secs(base), max: Duration::from_secs(max) }
    }
}

/// The spread of every delay, in percent either way.
pub const JITTER_PERCENT: u64 = 20;

/// The delay before retrying after an error of `kind` that has lasted `failing_for`.
pub fn requeue_after(kind: ErrorKind, failing_for: Duration, jitter: u64) -> Duration {
    let backoff = Backoff::for_kind(kind);
    jittered(failing_for.clamp(backoff.base, backoff.max), jitter)
}

/// `delay` spread by ±[`JITTER_PERCENT`] according to `jitter`.
pub fn jittered(delay: Duration, jitter: u64) -> Duration {
    let percent = 100 - JITTER_PERCENT + jitter % (2 * JITTER_PERCENT + 1);
    delay.mul_f64(percent as f64 / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_and_auth_never_retry_fast() {
        for jitter in 0..100 {
            assert!(requeue_after(ErrorKind::Capacity, Duration::ZERO, jitter) >= Duration::from_secs(48));
            assert!(requeue_after(ErrorKind::Auth, Duration::ZERO, jitter) >= Duration::from_secs(96));
        }
    }

    #[test]
    fn delay_grows_with_the_age_of_the_failure_and_is_bounded() {
        let young = requeue_after(ErrorKind::Transient, Duration::from_secs(1), 20);
        let older = requeue_after(ErrorKind::Transient, Duration::from_secs(60), 20);
        let ancient = requeue_after(ErrorKind::Transient, Duration::from_secs(86_400), 20);
        assert_eq!(young, Duration::from_secs(5));
        assert_eq!(older, Duration::from_secs(60));
        assert_eq!(ancient, Duration::from_secs(300));
    }

    #[test]
    fn jitter_spreads_within_bounds() {
        let delays: Vec<Duration> = (0..41).map(|j| jittered(Duration::from_secs(100), j)).collect();
        assert_eq!(delays.iter().min(), Some(&Duration::from_secs(80)));
        assert_eq!(delays.iter().max(), Some(&Duration::from_secs(120)));
    }
}

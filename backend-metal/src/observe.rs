//! The per-call metrics hook (the operator exports it to Prometheus).

use capms_core::Operation;
use std::fmt;
use std::time::Duration;

/// How one HTTP exchange with metal-api ended, by status class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CallOutcome {
    /// Any 2xx (even if the body then failed to decode).
    Success,
    /// 4xx.
    ClientError,
    /// 5xx.
    ServerError,
    /// 1xx or 3xx: metal-api sends neither, a misconfigured proxy might.
    OtherStatus,
    /// No answer: connection refused or reset, timeout, TLS failure.
    Transport,
}

impl CallOutcome {
    /// Every outcome, in a fixed order (for pre-registering metric labels).
    pub const ALL: [CallOutcome; 5] = [
        CallOutcome::Success,
        CallOutcome::ClientError,
        CallOutcome::ServerError,
        CallOutcome::OtherStatus,
        CallOutcome::Transport,
    ];

    /// The class of an HTTP status.
    pub fn of_status(status: u16) -> CallOutcome {
        match status {
            200..=299 => CallOutcome::Success,
            400..=499 => CallOutcome::ClientError,
            500..=599 => CallOutcome::ServerError,
            _ => CallOutcome::OtherStatus,
        }
    }

    /// A short label value: `2xx`, `4xx`, `5xx`, `other`, `transport`.
    pub fn as_str(self) -> &'static str {
        match self {
            CallOutcome::Success => "2xx",
            CallOutcome::ClientError => "4xx",
            CallOutcome::ServerError => "5xx",
            CallOutcome::OtherStatus => "other",
            CallOutcome::Transport => "transport",
        }
    }
}

impl fmt::Display for CallOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Receives one observation per HTTP attempt: a read retried twice reports three times, so
/// error rates and latencies describe what metal-api saw. Called on the request's task: keep
/// it cheap and non-blocking (increment a counter, record a histogram sample).
pub trait CallObserver: Send + Sync {
    fn observe(&self, operation: Operation, outcome: CallOutcome, latency: Duration);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_have_classes() {
        assert_eq!(CallOutcome::of_status(200), CallOutcome::Success);
        assert_eq!(CallOutcome::of_status(201), CallOutcome::Success);
        assert_eq!(CallOutcome::of_status(404), CallOutcome::ClientError);
        assert_eq!(CallOutcome::of_status(503), CallOutcome::ServerError);
        assert_eq!(CallOutcome::of_status(302), CallOutcome::OtherStatus);
        assert_eq!(CallOutcome::Transport.to_string(), "transport");
    }
}

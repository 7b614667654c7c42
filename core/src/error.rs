//! Errors of metal-stack operations as values with a class.
//!
//! Every backend reports failures as a [`BackendError`] whose [`ErrorKind`] decides what a
//! reconciler does next: retry soon, back off for minutes, give up until a human acts. The
//! classification of metal-api answers lives here, in one place, so that the HTTP backend and
//! the simulated datacenter cannot disagree about what an answer means.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The class of a failure. The class, not the message, drives backoff and conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Worth retrying soon: transport failures, proxies, internal errors on reads, races that
    /// resolve by themselves (IPs still being released, a parallel allocation took a machine).
    Transient,
    /// An optimistic-lock conflict or a duplicate: re-read, then retry.
    Conflict,
    /// The entity does not exist (any more).
    NotFound,
    /// The partition has no machine for us right now, or too many allocations run in parallel.
    /// Retry with a long backoff and tell the user.
    Capacity,
    /// The request can never succeed as it is: bad configuration, invalid input, quota.
    Permanent,
    /// The credentials are wrong, lack a permission, or the clock is skewed.
    Auth,
    /// Not sent: the Cluster or the object is paused, as the apiserver said right before the
    /// write (the block-move handshake, [`crate::glue::gate`]). Never an answer of metal-api.
    Paused,
}

impl ErrorKind {
    /// Every kind, in a fixed order (for metrics and tests).
    pub const ALL: [ErrorKind; 7] = [
        ErrorKind::Transient,
        ErrorKind::Conflict,
        ErrorKind::NotFound,
        ErrorKind::Capacity,
        ErrorKind::Permanent,
        ErrorKind::Auth,
        ErrorKind::Paused,
    ];

    /// The kind as a short lowercase word, for metrics labels and condition reasons.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Transient => "transient",
            ErrorKind::Conflict => "conflict",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Capacity => "capacity",
            ErrorKind::Permanent => "permanent",
            ErrorKind::Auth => "auth",
            ErrorKind::Paused => "paused",
        }
    }

    /// Whether repeating the same request later may succeed without anyone changing anything.
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorKind::Transient | ErrorKind::Conflict | ErrorKind::Capacity | ErrorKind::Paused)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The metal-api operations capms uses, named by their operation ids in the Swagger spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Operation {
    AllocateMachine,
    FindMachine,
    FindMachines,
    FreeMachine,
    AllocateFirewall,
    FindFirewall,
    FindFirewalls,
    AllocateNetwork,
    FindNetwork,
    FindNetworks,
    FreeNetwork,
    AllocateIp,
    AllocateSpecificIp,
    FindIp,
    FindIps,
    FreeIp,
    FindPartition,
    ListPartitions,
    FindSize,
    ListSizes,
    FindImage,
    ListImages,
    FindProject,
}

impl Operation {
    /// Every operation, in a fixed order.
    pub const ALL: [Operation; 23] = [
        Operation::AllocateMachine,
        Operation::FindMachine,
        Operation::FindMachines,
        Operation::FreeMachine,
        Operation::AllocateFirewall,
        Operation::FindFirewall,
        Operation::FindFirewalls,
        Operation::AllocateNetwork,
        Operation::FindNetwork,
        Operation::FindNetworks,
        Operation::FreeNetwork,
        Operation::AllocateIp,
        Operation::AllocateSpecificIp,
        Operation::FindIp,
        Operation::FindIps,
        Operation::FreeIp,
        Operation::FindPartition,
        Operation::ListPartitions,
        Operation::FindSize,
        Operation::ListSizes,
        Operation::FindImage,
        Operation::ListImages,
        Operation::FindProject,
    ];

    /// The operation id of the Swagger spec (`allocateMachine`, `findIPs`, ...).
    pub fn operation_id(self) -> &'static str {
        match self {
            Operation::AllocateMachine => "allocateMachine",
            Operation::FindMachine => "findMachine",
            Operation::FindMachines => "findMachines",
            Operation::FreeMachine => "freeMachine",
            Operation::AllocateFirewall => "allocateFirewall",
            Operation::FindFirewall => "findFirewall",
            Operation::FindFirewalls => "findFirewalls",
            Operation::AllocateNetwork => "allocateNetwork",
            Operation::FindNetwork => "findNetwork",
            Operation::FindNetworks => "findNetworks",
            Operation::FreeNetwork => "freeNetwork",
            Operation::AllocateIp => "allocateIP",
            Operation::AllocateSpecificIp => "allocateSpecificIP",
            Operation::FindIp => "findIP",
            Operation::FindIps => "findIPs",
            Operation::FreeIp => "freeIP",
            Operation::FindPartition => "findPartition",
            Operation::ListPartitions => "listPartitions",
            Operation::FindSize => "findSize",
            Operation::ListSizes => "listSizes",
            Operation::FindImage => "findImage",
            Operation::ListImages => "listImages",
            Operation::FindProject => "findProject",
        }
    }

    /// Whether the operation only reads. Reads may be retried blindly; writes never are,
    /// because metal-api has no idempotency key (a retried allocate allocates twice).
    pub fn is_read(self) -> bool {
        !matches!(
            self,
            Operation::AllocateMachine
                | Operation::FreeMachine
                | Operation::AllocateFirewall
                | Operation::AllocateNetwork
                | Operation::FreeNetwork
                | Operation::AllocateIp
                | Operation::AllocateSpecificIp
                | Operation::FreeIp
        )
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.operation_id())
    }
}

/// A failed metal-stack operation.
///
/// Keeps the raw HTTP status and message (as metal-api sent them) next to the class, so that
/// conditions and logs can show exactly what the server said. Messages never contain secrets:
/// backends build them from server answers and request ids only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub struct BackendError {
    kind: ErrorKind,
    operation: Operation,
    status: Option<u16>,
    message: String,
    outcome_unknown: bool,
}

impl BackendError {
    /// An error answer of metal-api, classified by status and message.
    pub fn from_response(operation: Operation, status: u16, message: impl Into<String>) -> Self {
        let message = message.into();
        BackendError {
            kind: classify(status, &message),
            operation,
            status: Some(status),
            message,
            outcome_unknown: false,
        }
    }

    /// No answer arrived: connection refused, reset, timed out. `outcome_unknown` says whether
    /// the request may have reached the server and taken effect (a write that timed out after
    /// it was sent). Such failures are always transient.
    pub fn transport(operation: Operation, message: impl Into<String>, outcome_unknown: bool) -> Self {
        BackendError {
            kind: ErrorKind::Transient,
            operation,
            status: None,
            message: message.into(),
            outcome_unknown,
        }
    }

    /// An error of a given kind without an HTTP status (for example an undecodable answer).
    pub fn new(kind: ErrorKind, operation: Operation, message: impl Into<String>) -> Self {
        BackendError { kind, operation, status: None, message: message.into(), outcome_unknown: false }
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn operation(&self) -> Operation {
        self.operation
    }

    /// The HTTP status metal-api answered with, if there was an answer.
    pub fn status(&self) -> Option<u16> {
        self.status
    }

    /// The message as the server sent it (or the transport failure).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// True when a write may have taken effect although the caller saw an error. The caller
    /// must look for the result (by tags) before trying again.
    pub fn outcome_unknown(&self) -> bool {
        self.outcome_unknown
    }

    /// True for the 403 metal-api sends when the signed `X-Date` is older than the HMAC
    /// lifetime: the fix is the clock, not the key.
    pub fn is_clock_skew(&self) -> bool {
        self.kind == ErrorKind::Auth && self.message.contains("timestamp in your header is too old")
    }

    /// True for metal-api's refusal to free a network whose prefixes still hold IPs (422, the
    /// message is the only signal): the IPs of freed machines are released asynchronously, so
    /// the free succeeds later. Recognised here, where answers are classified, so that callers
    /// ask a question instead of reading the message.
    pub fn network_has_ips(&self) -> bool {
        self.operation == Operation::FreeNetwork
            && self.status == Some(422)
            && self.message.contains(NETWORK_HAS_IPS)
    }
}

/// What metal-api says when a network to be freed still holds IPs.
const NETWORK_HAS_IPS: &str = "has ips, deletion not possible";

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.status {
            Some(status) => {
                write!(f, "{} failed with {}: {} ({})", self.operation, status, self.message, self.kind)
            }
            None => write!(f, "{} failed: {} ({})", self.operation, self.message, self.kind),
        }
    }
}

/// Classifies a metal-api error answer.
///
/// Follows the error table of `reference/metal-api.md` §5: metal-api maps every untyped error
/// to 422, so for 422 (and for 500) the message decides. Statuses metal-api never sends
/// (401, 429, 503) can still come from a proxy in front of it.
pub fn classify(status: u16, message: &str) -> ErrorKind {
    match status {
        400 => ErrorKind::Permanent,
        401 | 403 => ErrorKind::Auth,
        404 => ErrorKind::NotFound,
        409 => ErrorKind::Conflict,
        422 => classify_unprocessable(message),
        429 => ErrorKind::Transient,
        500 => classify_internal(message),
        501..=599 => ErrorKind::Transient,
        _ => ErrorKind::Permanent,
    }
}

fn classify_unprocessable(message: &str) -> ErrorKind {
    if message.contains("no machine available") || message.contains("too many parallel machine allocations") {
        ErrorKind::Capacity
    } else if message.contains(NETWORK_HAS_IPS) {
        // IPs of a freed machine are released asynchronously; the free succeeds later.
        ErrorKind::Transient
    } else if message.contains("machine is already allocated") {
        // A pinned machine (uuid given) belongs to someone else: waiting will not help.
        ErrorKind::Permanent
    } else if message.contains("already allocated") {
        // A parallel allocation picked the same machine.
        ErrorKind::Transient
    } else {
        ErrorKind::Permanent
    }
}

fn classify_internal(message: &str) -> ErrorKind {
    let configuration = message.contains("no ips left")
        || message.contains("defaultchildprefixlength")
        || message.contains("supernetwork");
    if configuration {
        ErrorKind::Permanent
    } else {
        // On reads an internal error is a hiccup. On writes it may or may not have taken
        // effect; adoption by tags makes the retry safe, so it is transient too.
        ErrorKind::Transient
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(status: u16, message: &str) -> ErrorKind {
        classify(status, message)
    }

    #[test]
    fn capacity_messages_are_capacity() {
        assert_eq!(kind(422, "no machine available"), ErrorKind::Capacity);
        assert_eq!(
            kind(422, "too many parallel machine allocations taking place, try again later"),
            ErrorKind::Capacity
        );
    }

    #[test]
    fn unprocessable_is_overloaded_and_classified_by_message() {
        assert_eq!(kind(422, "prefix 10.0.0.0/22 has ips, deletion not possible"), ErrorKind::Transient);
        assert_eq!(kind(422, "machine \"abc\" already allocated"), ErrorKind::Transient);
        assert_eq!(kind(422, "machine is already allocated"), ErrorKind::Permanent);
        assert_eq!(kind(422, "project quota for machines reached max:3"), ErrorKind::Permanent);
        assert_eq!(kind(422, "machine is locked"), ErrorKind::Permanent);
        assert_eq!(kind(422, "invalid public SSH key: ssh-rsa"), ErrorKind::Permanent);
    }

    #[test]
    fn statuses_map_to_kinds() {
        assert_eq!(kind(400, "network ids cannot be nil/empty"), ErrorKind::Permanent);
        assert_eq!(kind(403, "Wrong HMAC found"), ErrorKind::Auth);
        assert_eq!(kind(401, "unauthorized"), ErrorKind::Auth);
        assert_eq!(kind(404, "NotFound machine with id x not found"), ErrorKind::NotFound);
        assert_eq!(kind(409, "Conflict the entity was changed"), ErrorKind::Conflict);
        assert_eq!(kind(429, "slow down"), ErrorKind::Transient);
        assert_eq!(kind(502, "<html>bad gateway</html>"), ErrorKind::Transient);
        assert_eq!(kind(503, ""), ErrorKind::Transient);
        assert_eq!(kind(504, ""), ErrorKind::Transient);
        assert_eq!(kind(418, "teapot"), ErrorKind::Permanent);
    }

    #[test]
    fn internal_errors_are_transient_unless_configuration() {
        assert_eq!(kind(500, "Internal database unavailable"), ErrorKind::Transient);
        assert_eq!(classify(500, "Internal something"), ErrorKind::Transient);
        assert_eq!(kind(500, "cannot allocate free ip in ipam, no ips left"), ErrorKind::Permanent);
    }

    #[test]
    fn a_network_that_still_holds_ips_is_recognised_only_on_its_free() {
        let message = "prefix 10.0.0.0/22 has ips, deletion not possible";
        let refused = BackendError::from_response(Operation::FreeNetwork, 422, message);
        assert!(refused.network_has_ips());
        assert_eq!(refused.kind(), ErrorKind::Transient);
        assert!(!BackendError::from_response(Operation::FreeIp, 422, message).network_has_ips());
        let other = BackendError::from_response(Operation::FreeNetwork, 422, "network is in use");
        assert!(!other.network_has_ips());
    }

    #[test]
    fn clock_skew_is_recognised() {
        let error = BackendError::from_response(
            Operation::FindMachine,
            403,
            "the timestamp in your header is too old",
        );
        assert!(error.is_clock_skew());
        assert_eq!(error.kind(), ErrorKind::Auth);
    }

    #[test]
    fn display_names_operation_status_and_kind() {
        let error = BackendError::from_response(Operation::AllocateMachine, 422, "no machine available");
        assert_eq!(error.to_string(), "allocateMachine failed with 422: no machine available (capacity)");
        let lost = BackendError::transport(Operation::FreeMachine, "timed out", true);
        assert_eq!(lost.to_string(), "freeMachine failed: timed out (transient)");
        assert!(lost.outcome_unknown());
    }

    #[test]
    fn writes_are_not_reads() {
        assert!(!Operation::AllocateMachine.is_read());
        assert!(!Operation::FreeNetwork.is_read());
        assert!(Operation::FindMachines.is_read());
        assert!(Operation::ListImages.is_read());
    }
}

//! Turning metal-api answers into values or [`BackendError`]s.
//!
//! Undecodable answers are errors, never panics:
//! - an error status keeps the status and the server's message: the `message` of an
//!   `{"statuscode","message"}` object, the text of a bare JSON string (the tenant check's
//!   `"tenant  not allowed"`), or a bounded excerpt of anything else (a proxy's HTML page);
//! - a 2xx body that is not the expected JSON (truncated, or an intermediary's page) is
//!   [`ErrorKind::Transient`]: reads retry it within the policy. After a write it is reported
//!   like a lost answer (`outcome_unknown`), because the write did take effect;
//! - valid JSON that the domain cannot represent (an unknown role) is
//!   [`ErrorKind::Permanent`] for reads: asking again gives the same answer, capms needs an
//!   update. After a write it too is `outcome_unknown`.

use capms_core::wire::{HttpErrorResponse, WireError};
use capms_core::{BackendError, ErrorKind, Operation};
use serde::de::DeserializeOwned;

/// Longest message kept from an error body, in characters.
pub const MESSAGE_LENGTH_MAX: usize = 512;

/// Cuts a message to [`MESSAGE_LENGTH_MAX`] characters (plus an ellipsis when cut).
pub fn bounded(text: &str) -> String {
    let mut chars = text.chars();
    let mut result: String = chars.by_ref().take(MESSAGE_LENGTH_MAX).collect();
    if chars.next().is_some() {
        result.push('…');
    }
    result
}

/// A bounded excerpt of a raw body with whitespace collapsed (HTML pages are mostly
/// indentation).
pub fn excerpt(text: &str) -> String {
    bounded(&text.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// The message of an error answer, whatever shape its body has.
pub fn error_message(status: u16, body: &[u8]) -> String {
    // Messages from metal-api are kept as sent (bounded): classification matches on them.
    if let Ok(error) = serde_json::from_slice::<HttpErrorResponse>(body) {
        return bounded(&error.message);
    }
    if let Ok(text) = serde_json::from_slice::<String>(body) {
        return bounded(&text);
    }
    let text = excerpt(&String::from_utf8_lossy(body));
    if text.is_empty() { format!("HTTP {status} with an empty body") } else { text }
}

/// A non-2xx answer as a classified error.
pub fn error_from_answer(operation: Operation, status: u16, body: &[u8]) -> BackendError {
    BackendError::from_response(operation, status, error_message(status, body))
}

/// A 2xx answer whose body is unusable. See the module docs for the kinds.
pub fn unusable_answer(operation: Operation, kind: ErrorKind, detail: &str) -> BackendError {
    let message = format!("metal-api answered 2xx with an unusable body: {}", excerpt(detail));
    if operation.is_read() {
        BackendError::new(kind, operation, message)
    } else {
        BackendError::transport(operation, message, true)
    }
}

/// Decodes a 2xx body into a wire type.
pub fn decode_body<W: DeserializeOwned>(operation: Operation, body: &[u8]) -> Result<W, BackendError> {
    // serde_json's messages name the field and position; they quote a value only when its
    // type is wrong, and no secret field is typed so that a wrong type would hold a secret.
    serde_json::from_slice(body)
        .map_err(|error| unusable_answer(operation, ErrorKind::Transient, &error.to_string()))
}

/// Maps a decoded wire value to the domain.
pub fn to_domain<W, D>(operation: Operation, wire: W) -> Result<D, BackendError>
where
    D: TryFrom<W, Error = WireError>,
{
    D::try_from(wire).map_err(|error| unusable_answer(operation, ErrorKind::Permanent, &error.to_string()))
}

/// Maps a list of wire values to the domain; one unmappable entry fails the list, because a
/// find that silently drops entries could make a reconciler allocate a duplicate.
pub fn all_to_domain<W, D>(operation: Operation, wires: Vec<W>) -> Result<Vec<D>, BackendError>
where
    D: TryFrom<W, Error = WireError>,
{
    wires.into_iter().map(|wire| to_domain(operation, wire)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use capms_core::metal::Machine;
    use capms_core::wire::MachineResponse;

    #[test]
    fn json_error_objects_keep_their_message() {
        let error = error_from_answer(
            Operation::AllocateMachine,
            422,
            br#"{"statuscode":422,"message":"no machine available"}"#,
        );
        assert_eq!(error.status(), Some(422));
        assert_eq!(error.message(), "no machine available");
        assert_eq!(error.kind(), ErrorKind::Capacity);
    }

    #[test]
    fn bare_json_strings_are_messages() {
        let error = error_from_answer(Operation::FindMachine, 403, br#""tenant  not allowed""#);
        assert_eq!(error.message(), "tenant  not allowed", "kept as sent");
        assert_eq!(error.kind(), ErrorKind::Auth);
    }

    #[test]
    fn html_bodies_are_bounded_excerpts() {
        let page = format!(
            "<html>\n  <head><title>502 Bad Gateway</title></head>\n  <body>{}</body>\n</html>",
            "x ".repeat(2000)
        );
        let error = error_from_answer(Operation::FindMachines, 502, page.as_bytes());
        assert_eq!(error.status(), Some(502));
        assert_eq!(error.kind(), ErrorKind::Transient);
        assert!(error.message().starts_with("<html> <head><title>502 Bad Gateway</title></head>"));
        assert!(error.message().chars().count() <= MESSAGE_LENGTH_MAX + 1, "{}", error.message().len());
        let empty = error_from_answer(Operation::FindMachines, 504, b"");
        assert_eq!(empty.message(), "HTTP 504 with an empty body");
        let binary = error_from_answer(Operation::FindMachines, 500, &[0xff, 0xfe, b'x']);
        assert_eq!(binary.kind(), ErrorKind::Transient);
    }

    #[test]
    fn long_messages_are_cut() {
        let text = "y".repeat(10_000);
        assert_eq!(excerpt(&text).chars().count(), MESSAGE_LENGTH_MAX + 1);
        assert!(excerpt(&text).ends_with('…'));
        assert_eq!(bounded("short"), "short");
    }

    #[test]
    fn undecodable_success_bodies_are_errors() {
        let read =
            decode_body::<MachineResponse>(Operation::FindMachine, b"<html>hi</html>").expect_err("fails");
        assert_eq!(read.kind(), ErrorKind::Transient);
        assert!(!read.outcome_unknown());
        let write =
            decode_body::<MachineResponse>(Operation::AllocateMachine, br#"{"id": 5}"#).expect_err("fails");
        assert_eq!(write.kind(), ErrorKind::Transient);
        assert!(write.outcome_unknown(), "the allocation happened; adopt it by tags");
    }

    #[test]
    fn unmappable_reads_are_permanent() {
        let wire: MachineResponse =
            decode_body(Operation::FindMachine, br#"{"id":"m","allocation":{"role":"switch"}}"#)
                .expect("valid JSON");
        let error = to_domain::<_, Machine>(Operation::FindMachine, wire).expect_err("unknown role");
        assert_eq!(error.kind(), ErrorKind::Permanent);
        assert!(error.message().contains("switch"), "{}", error.message());
    }
}

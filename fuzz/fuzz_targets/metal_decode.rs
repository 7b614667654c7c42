//! metal-api answers as `capms-backend-metal` decodes them, on arbitrary bytes: every response
//! type of the client (one value and a list), then the mapping to the domain, and the same
//! bytes as an error body. Nothing may panic, and the documented error contract holds:
//!
//! - an undecodable 2xx body is `Transient` for reads and `outcome_unknown` for writes;
//! - valid JSON the domain cannot map is `Permanent` for reads and `outcome_unknown` for writes;
//! - an error answer keeps its status, and its message is bounded (`MESSAGE_LENGTH_MAX`
//!   characters plus an ellipsis);
//! - whatever the client maps to the domain, the simulated server's domain → wire mapping
//!   sends back as an answer that the client maps to the same value (one schema, both ways).

#![no_main]

use capms_backend_metal::MESSAGE_LENGTH_MAX;
use capms_backend_metal::fuzzing::{all_to_domain, decode_body, error_from_answer, error_message, to_domain};
use capms_core::{BackendError, ErrorKind, Operation, metal, wire};
use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;

/// Statuses whose classification differs (and one metal-api never sends).
const ERROR_STATUSES: [u16; 10] = [400, 401, 403, 404, 409, 418, 422, 429, 500, 504];

fuzz_target!(|body: &[u8]| {
    // (a read, a write or another read) per response type, as the client uses them.
    // `FirewallResponse` is `MachineResponse`: the machine checks cover the firewall routes.
    check::<wire::MachineResponse, metal::Machine>(body, Operation::FindMachine, Operation::AllocateMachine);
    check::<wire::NetworkResponse, metal::Network>(body, Operation::FindNetwork, Operation::AllocateNetwork);
    check::<wire::IpResponse, metal::Ip>(body, Operation::FindIp, Operation::AllocateIp);
    check::<wire::PartitionResponse, metal::Partition>(
        body,
        Operation::FindPartition,
        Operation::ListPartitions,
    );
    check::<wire::SizeResponse, metal::Size>(body, Operation::FindSize, Operation::ListSizes);
    check::<wire::ImageResponse, metal::Image>(body, Operation::FindImage, Operation::ListImages);
    check::<wire::ProjectResponse, metal::Project>(body, Operation::FindProject, Operation::FindProject);
    check_list::<wire::MachineResponse, metal::Machine>(body, Operation::FindMachines);
    check_list::<wire::NetworkResponse, metal::Network>(body, Operation::FindNetworks);
    check_list::<wire::IpResponse, metal::Ip>(body, Operation::FindIps);
    check_list::<wire::PartitionResponse, metal::Partition>(body, Operation::ListPartitions);
    check_list::<wire::SizeResponse, metal::Size>(body, Operation::ListSizes);
    check_list::<wire::ImageResponse, metal::Image>(body, Operation::ListImages);
    for status in ERROR_STATUSES {
        check_error(body, status);
    }
});

/// Decodes `body` as a `W` for a read and for a write, and maps what decodes to the domain.
fn check<W, D>(body: &[u8], read: Operation, write: Operation)
where
    W: DeserializeOwned,
    D: TryFrom<W, Error = wire::WireError> + Debug + PartialEq,
    for<'a> &'a D: Into<W>,
    W: Serialize,
{
    for operation in [read, write] {
        match decode_body::<W>(operation, body) {
            Ok(wire) => match to_domain::<W, D>(operation, wire) {
                Ok(domain) => round_trip::<W, D>(operation, &domain),
                Err(error) => unusable(&error, operation, ErrorKind::Permanent),
            },
            Err(error) => unusable(&error, operation, ErrorKind::Transient),
        }
    }
}

fn check_list<W, D>(body: &[u8], operation: Operation)
where
    W: DeserializeOwned,
    D: TryFrom<W, Error = wire::WireError> + Debug + PartialEq,
    for<'a> &'a D: Into<W>,
    W: Serialize,
{
    match decode_body::<Vec<W>>(operation, body) {
        Ok(wires) => match all_to_domain::<W, D>(operation, wires) {
            Ok(values) => values.iter().for_each(|domain| round_trip::<W, D>(operation, domain)),
            Err(error) => unusable(&error, operation, ErrorKind::Permanent),
        },
        Err(error) => unusable(&error, operation, ErrorKind::Transient),
    }
}

/// The simulated server answers a domain value as `W::from(&value)`: the client must map that
/// answer back to the same value.
fn round_trip<W, D>(operation: Operation, domain: &D)
where
    W: DeserializeOwned + Serialize,
    D: TryFrom<W, Error = wire::WireError> + Debug + PartialEq,
    for<'a> &'a D: Into<W>,
{
    let answer = serde_json::to_vec(&domain.into()).expect("a wire value serializes");
    let wire = decode_body::<W>(operation, &answer).expect("the server's answer decodes");
    let again = to_domain::<W, D>(operation, wire).expect("the server's answer maps to the domain");
    assert_eq!(&again, domain, "domain → wire → domain changed the value");
}

/// The error of an unusable 2xx body: reads get `kind`, writes are `outcome_unknown`.
fn unusable(error: &BackendError, operation: Operation, kind: ErrorKind) {
    assert_eq!(error.status(), None);
    if operation.is_read() {
        assert_eq!(error.kind(), kind, "{error}");
        assert!(!error.outcome_unknown(), "{error}");
    } else {
        assert!(error.outcome_unknown(), "{error}");
    }
}

fn check_error(body: &[u8], status: u16) {
    let message = error_message(status, body);
    assert!(message.chars().count() <= MESSAGE_LENGTH_MAX + 1, "unbounded message: {} chars", message.len());
    for operation in [Operation::FindMachine, Operation::AllocateMachine] {
        let error = error_from_answer(operation, status, body);
        assert_eq!(error.status(), Some(status));
        assert_eq!(error.message(), message);
        assert!(!error.outcome_unknown(), "an answer is a known outcome");
    }
}

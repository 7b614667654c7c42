//! The metal-api v1 JSON model: what goes over the wire, shared by the HTTP client
//! (`capms-backend-metal`) and the simulated metal-api server, so both speak one schema.
//!
//! Types are named after the definitions of metal-api's Swagger spec without the `v1.` prefix
//! (`v1.MachineAllocateRequest` is [`MachineAllocateRequest`]); fields carry exactly the
//! spec's JSON names. Only the fields capms needs are modelled, plus every field the spec marks
//! required in a response. The rules, all from `reference/metal-api.md`:
//!
//! - **Requests** are Go pointer-field structs on the server: every field is an `Option` and
//!   unset fields are omitted. `""` is a real filter value for metal-api, so it is never sent
//!   to mean "unset": conversions from the domain turn empty optional strings into `None`,
//!   while a find filter of `Some("")` stays `""`.
//! - **Responses** are decoded leniently: unknown fields are ignored, optional fields are
//!   `Option`, and fields the spec marks required default when absent or `null` (Go sends
//!   `null` for nil slices, and older servers omit nested fields the spec calls required).
//!   Timestamps are `Option` everywhere because there is no sensible default for them.
//! - **Numbers** of the non-standard `"format":"integer"` map to `u64` (counters, VRFs,
//!   lengths) or `i64` (ASNs, ports).
//! - **Conversions** go both ways: domain requests to wire requests (client) and back
//!   (simulated server), wire responses to domain values (client) and back (simulated server).
//!   A response that cannot be mapped (an unknown role, an out-of-range prefix length) is a
//!   [`WireError`], never a panic.
//! - **Secrets**: `user_data` is a [`UserData`](crate::UserData) on the wire types too, so their
//!   `Debug` stays redacted; only serialization exposes it, passed through as is.

mod catalog;
mod error;
mod ip;
mod machine;
mod network;

pub use catalog::{
    ImageResponse, Meta, PartitionBootConfiguration, PartitionResponse, ProjectResponse, SizeConstraint,
    SizeResponse,
};
pub use error::HttpErrorResponse;
pub use ip::{IpAllocateRequest, IpFindRequest, IpResponse};
pub use machine::{
    ChassisIdentifyLedState, FirewallCreateRequest, FirewallEgressRule, FirewallFindRequest,
    FirewallIngressRule, FirewallResponse, FirewallRules, MachineAllocateRequest, MachineAllocation,
    MachineAllocationNetwork, MachineBios, MachineBlockDevice, MachineFindRequest, MachineHardware,
    MachineNetwork, MachineNic, MachineProvisioningEvent, MachineRecentProvisioningEvents, MachineResponse,
    MachineState,
};
pub use network::{
    NetworkAllocateRequest, NetworkConsumption, NetworkFindRequest, NetworkResponse, NetworkUsage,
};

use crate::metal::AddressFamily;
use crate::secret::UserData;
use serde::{Deserialize, Deserializer, Serializer};

/// A wire value that has no domain equivalent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// A field the domain needs is absent or empty.
    #[error("{entity} without {field}")]
    Missing { entity: &'static str, field: &'static str },
    /// A field holds a value the domain has no name for. Never used for secret fields.
    #[error("{entity}: unexpected {field} {value:?}")]
    Invalid { entity: &'static str, field: &'static str, value: String },
}

/// Decodes a field that the spec marks required but servers may omit or send as `null`
/// (Go's nil slices): both become the type's default. Use with `#[serde(default)]`.
fn nullable<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Option::<T>::deserialize(deserializer).map(Option::unwrap_or_default)
}

/// Serializes user data as the plain string metal-api expects. [`UserData`]'s own `Serialize`
/// redacts (for traces); this is the one place that exposes it, for the request body.
fn expose_user_data<S: Serializer>(value: &Option<UserData>, serializer: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(data) => serializer.serialize_some(data.expose()),
        None => serializer.serialize_none(),
    }
}

/// `None` for "", so that an unset domain string is omitted rather than sent as a filter.
fn non_empty(value: &str) -> Option<String> {
    (!value.is_empty()).then(|| value.to_string())
}

/// `None` for an empty list: an absent list and `[]` mean the same to metal-api.
fn non_empty_list<T: Clone>(values: &[T]) -> Option<Vec<T>> {
    (!values.is_empty()).then(|| values.to_vec())
}

fn parse_address_family(entity: &'static str, value: &str) -> Result<AddressFamily, WireError> {
    match value {
        "IPv4" => Ok(AddressFamily::IPv4),
        "IPv6" => Ok(AddressFamily::IPv6),
        _ => Err(WireError::Invalid { entity, field: "addressfamily", value: value.to_string() }),
    }
}

fn parse_optional_address_family(
    entity: &'static str,
    value: Option<&str>,
) -> Result<Option<AddressFamily>, WireError> {
    value.map(|value| parse_address_family(entity, value)).transpose()
}

#[cfg(test)]
mod tests;

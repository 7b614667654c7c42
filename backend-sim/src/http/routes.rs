//! Routing, decoding and answering: one handler for every request.

use super::State;
use super::auth::{Authenticated, Role, authenticate};
use crate::backend::SimBackend;
use axum::body::Bytes;
use axum::extract::Request;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use capms_core::backend::BackendResult;
use capms_core::wire::{self, HttpErrorResponse, WireError};
use capms_core::{MetalBackend, Operation, metal};
use jiff::Timestamp;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;

/// Request bodies larger than this are refused (metal-api's are a few KiB; user data included).
const BODY_LIMIT: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb {
    Get,
    Post,
    Delete,
}

impl Verb {
    fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "GET",
            Verb::Post => "POST",
            Verb::Delete => "DELETE",
        }
    }

    fn of(method: &Method) -> Option<Verb> {
        match *method {
            Method::GET => Some(Verb::Get),
            Method::POST => Some(Verb::Post),
            Method::DELETE => Some(Verb::Delete),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Health,
    Version,
    Op(Operation),
}

/// A path segment that is a parameter.
const PARAM: &str = "{}";

/// metal-api's routes below `/v1/`, as far as the simulated server serves them.
const ROUTES: &[(Verb, &[&str], Endpoint)] = &[
    (Verb::Get, &["health"], Endpoint::Health),
    (Verb::Get, &["version"], Endpoint::Version),
    (Verb::Post, &["machine", "allocate"], Endpoint::Op(Operation::AllocateMachine)),
    (Verb::Get, &["machine", PARAM], Endpoint::Op(Operation::FindMachine)),
    (Verb::Post, &["machine", "find"], Endpoint::Op(Operation::FindMachines)),
    (Verb::Delete, &["machine", PARAM, "free"], Endpoint::Op(Operation::FreeMachine)),
    (Verb::Post, &["firewall", "allocate"], Endpoint::Op(Operation::AllocateFirewall)),
    (Verb::Get, &["firewall", PARAM], Endpoint::Op(Operation::FindFirewall)),
    (Verb::Post, &["firewall", "find"], Endpoint::Op(Operation::FindFirewalls)),
    (Verb::Post, &["network", "allocate"], Endpoint::Op(Operation::AllocateNetwork)),
    (Verb::Get, &["network", PARAM], Endpoint::Op(Operation::FindNetwork)),
    (Verb::Post, &["network", "find"], Endpoint::Op(Operation::FindNetworks)),
    (Verb::Delete, &["network", "free", PARAM], Endpoint::Op(Operation::FreeNetwork)),
    (Verb::Post, &["ip", "allocate"], Endpoint::Op(Operation::AllocateIp)),
    (Verb::Post, &["ip", "allocate", PARAM], Endpoint::Op(Operation::AllocateSpecificIp)),
    (Verb::Get, &["ip", PARAM], Endpoint::Op(Operation::FindIp)),
    (Verb::Post, &["ip", "find"], Endpoint::Op(Operation::FindIps)),
    (Verb::Delete, &["ip", "free", PARAM], Endpoint::Op(Operation::FreeIp)),
    (Verb::Get, &["partition"], Endpoint::Op(Operation::ListPartitions)),
    (Verb::Get, &["partition", PARAM], Endpoint::Op(Operation::FindPartition)),
    (Verb::Get, &["size"], Endpoint::Op(Operation::ListSizes)),
    (Verb::Get, &["size", PARAM], Endpoint::Op(Operation::FindSize)),
    (Verb::Get, &["image"], Endpoint::Op(Operation::ListImages)),
    (Verb::Get, &["image", PARAM], Endpoint::Op(Operation::FindImage)),
    (Verb::Get, &["project", PARAM], Endpoint::Op(Operation::FindProject)),
];

/// The least role a route needs (metal-api's `viewer`/`editor` wrappers; the catalog routes
/// only need an authenticated provider user, which every HMAC user and the token are).
fn required_role(operation: Operation) -> Role {
    if operation.is_read() { Role::View } else { Role::Edit }
}

/// Why a path did not resolve to a route.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Unrouted {
    NotFound,
    /// The path exists with these methods (go-restful answers them in `Allow`).
    MethodNotAllowed(Vec<&'static str>),
}

/// Finds the route for `segments` (the path below `/v1/`, percent-decoded). Literal segments
/// win over parameters (`POST /v1/ip/allocate` is not `allocate/{ip}`; `GET /v1/machine/find`
/// is a machine with id "find").
fn resolve(method: &Method, segments: &[String]) -> Result<(Endpoint, Vec<String>), Unrouted> {
    let mut allowed: Vec<&'static str> = Vec::new();
    let mut best: Option<(usize, Endpoint, Vec<String>)> = None;
    for (verb, pattern, endpoint) in ROUTES {
        if pattern.len() != segments.len() {
            continue;
        }
        let mut params = Vec::new();
        let mut literals = 0;
        let matched = pattern.iter().zip(segments).all(|(part, segment)| {
            if *part == PARAM {
                params.push(segment.clone());
                !segment.is_empty()
            } else {
                literals += 1;
                *part == segment
            }
        });
        if !matched {
            continue;
        }
        if !allowed.contains(&verb.as_str()) {
            allowed.push(verb.as_str());
        }
        if Verb::of(method) != Some(*verb) {
            continue;
        }
        if best.as_ref().is_none_or(|(score, _, _)| literals > *score) {
            best = Some((literals, *endpoint, params));
        }
    }
    match best {
        Some((_, endpoint, params)) => Ok((endpoint, params)),
        None if !allowed.is_empty() => Err(Unrouted::MethodNotAllowed(allowed)),
        None => Err(Unrouted::NotFound),
    }
}

/// Decodes `%XX` escapes of a path segment; an invalid escape or non-UTF-8 result stays as is.
fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let escaped = (bytes[index] == b'%')
            .then(|| bytes.get(index + 1..index + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                index += 3;
            }
            None => {
                out.push(bytes[index]);
                index += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| segment.to_string())
}

/// The wall clock, for HMAC dates only: metal-api compares `X-Date` with real time.
#[allow(
    clippy::disallowed_methods,
    reason = "HMAC dates are checked against the real clock, as metal-api does; the datacenter keeps its virtual clock"
)]
fn wall_clock() -> Timestamp {
    Timestamp::now()
}

fn json<T: Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => {
            (status, [(CONTENT_TYPE, HeaderValue::from_static("application/json"))], bytes).into_response()
        }
        Err(error) => {
            error_response(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot encode answer: {error}"))
        }
    }
}

/// metal-lib's `httperrors.HTTPErrorResponse`.
fn error_response(status: StatusCode, message: impl Into<String>) -> Response {
    let body = HttpErrorResponse::new(status.as_u16(), message);
    match serde_json::to_vec(&body) {
        Ok(bytes) => {
            (status, [(CONTENT_TYPE, HeaderValue::from_static("application/json"))], bytes).into_response()
        }
        Err(_) => status.into_response(),
    }
}

fn not_found(path: &str) -> Response {
    error_response(StatusCode::NOT_FOUND, format!("NotFound no route for {path}"))
}

/// `capms-sim serve --control`: faults played against a served datacenter by a test harness
/// (the real-cluster flows), beside metal-api's API and unauthenticated, so only on request.
/// `POST /capms-sim/v1/machine/{id}/kill?silent-for=SECONDS` kills a machine as if it had gone
/// silent SECONDS ago (at least `MACHINE_DEAD_AFTER` makes metal-api report it `Unknown` at once).
fn control(state: &State, method: &Method, rest: &str, query: Option<&str>) -> Response {
    let Some(machine_id) = rest.strip_prefix("machine/").and_then(|rest| rest.strip_suffix("/kill")) else {
        return not_found(&format!("{CONTROL_PREFIX}{rest}"));
    };
    if method != Method::POST {
        return error_response(StatusCode::METHOD_NOT_ALLOWED, "only POST kills a machine".to_string());
    }
    let silent_for = query
        .into_iter()
        .flat_map(|query| query.split('&'))
        .find_map(|pair| pair.strip_prefix("silent-for="))
        .map_or(Ok(0), str::parse::<u32>);
    let Ok(silent_for) = silent_for else {
        return error_response(StatusCode::BAD_REQUEST, "silent-for must be whole seconds".to_string());
    };
    let sim = state.backend.sim();
    if let Some(anchor) = &state.anchor {
        anchor.catch_up(sim);
    }
    let since = sim.now() - jiff::SignedDuration::from_secs(i64::from(silent_for));
    if !sim.kill_machine_since(&percent_decode(machine_id), since) {
        return error_response(StatusCode::NOT_FOUND, format!("no machine {machine_id}"));
    }
    json(StatusCode::OK, &serde_json::json!({ "machine": machine_id, "silentSince": since.to_string() }))
}

/// Whether the request declares a JSON body (`application/json`, parameters allowed).
fn is_json(request: &Request) -> bool {
    request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|media_type| media_type.trim().eq_ignore_ascii_case("application/json"))
}

/// Where `capms-sim serve --control` answers its test-only requests.
pub(super) const CONTROL_PREFIX: &str = "/capms-sim/v1/";

/// The one handler: see the module documentation for the order of checks.
pub(super) async fn handle(
    axum::extract::State(state): axum::extract::State<Arc<State>>,
    request: Request,
) -> Response {
    let path = request.uri().path().to_string();
    if state.config.control
        && let Some(rest) = path.strip_prefix(CONTROL_PREFIX)
    {
        return control(&state, request.method(), rest, request.uri().query());
    }
    let Some(rest) = path.strip_prefix(&state.base_path).and_then(|rest| rest.strip_prefix("/v1/")) else {
        return not_found(&path);
    };
    let segments: Vec<String> = rest.split('/').map(percent_decode).collect();
    let method = request.method().clone();
    let routed = resolve(&method, &segments);

    match routed {
        Ok((Endpoint::Health, _)) => return health(),
        Ok((Endpoint::Version, _)) => return version(),
        _ => {}
    }

    let role = match authenticate(&state.config, method.as_str(), request.headers(), wall_clock()) {
        Authenticated::User(role) => role,
        Authenticated::Guest => return json(StatusCode::FORBIDDEN, &"tenant  not allowed"),
        Authenticated::Rejected(message) => return error_response(StatusCode::FORBIDDEN, message),
    };

    let (operation, params) = match routed {
        Ok((Endpoint::Op(operation), params)) => (operation, params),
        Ok((Endpoint::Health | Endpoint::Version, _)) | Err(Unrouted::NotFound) => return not_found(&path),
        Err(Unrouted::MethodNotAllowed(allowed)) => {
            let mut response = error_response(StatusCode::METHOD_NOT_ALLOWED, "405: Method Not Allowed");
            if let Ok(value) = HeaderValue::from_str(&allowed.join(", ")) {
                response.headers_mut().insert(axum::http::header::ALLOW, value);
            }
            return response;
        }
    };
    if method == Method::POST && !is_json(&request) {
        return error_response(StatusCode::UNSUPPORTED_MEDIA_TYPE, "415: Unsupported Media Type");
    }
    let required = required_role(operation);
    if role < required {
        return error_response(
            StatusCode::FORBIDDEN,
            format!("you are not member in one of {}", required.groups()),
        );
    }
    let body = match axum::body::to_bytes(request.into_body(), BODY_LIMIT).await {
        Ok(body) => body,
        Err(error) => return error_response(StatusCode::BAD_REQUEST, format!("cannot read body: {error}")),
    };
    if let Some(anchor) = &state.anchor {
        anchor.catch_up(state.backend.sim());
    }
    match call(&state.backend, operation, &params, &body).await {
        Ok(response) => response,
        Err(BadRequest(message)) => error_response(StatusCode::BAD_REQUEST, message),
    }
}

fn health() -> Response {
    json(
        StatusCode::OK,
        &serde_json::json!({"status": "healthy", "message": "simulated metal-api", "services": {}}),
    )
}

fn version() -> Response {
    json(
        StatusCode::OK,
        &serde_json::json!({
            "name": "metal-api",
            "version": "v0.45.0",
            "revision": "capms-backend-sim",
            "gitsha1": "",
            "builddate": "",
            "min_client_version": "v0.0.0",
        }),
    )
}

/// A request body that cannot be decoded or mapped to the domain: 400 with this message.
#[derive(Debug)]
struct BadRequest(String);

/// Decodes a JSON body as Go's `encoding/json` would (unknown fields ignored).
/// A `null` body leaves Go's request struct at its zero value, so it decodes as `{}`.
fn decode<T: DeserializeOwned>(body: &Bytes) -> Result<T, BadRequest> {
    let body: &[u8] = if body.trim_ascii() == b"null" { b"{}" } else { body };
    serde_json::from_slice(body).map_err(|error| BadRequest(error.to_string()))
}

/// Decodes a JSON body and maps it to the domain.
fn decode_into<W: DeserializeOwned, D: TryFrom<W, Error = WireError>>(body: &Bytes) -> Result<D, BadRequest> {
    let wire: W = decode(body)?;
    D::try_from(wire).map_err(|error| BadRequest(error.to_string()))
}

/// The answer to a backend result: the wire value with `status`, or metal-api's error object.
fn answer<D, W: Serialize>(
    status: StatusCode,
    result: BackendResult<D>,
    to_wire: impl FnOnce(&D) -> W,
) -> Response {
    match result {
        Ok(value) => json(status, &to_wire(&value)),
        Err(error) => {
            // No status: the fault plan lost the answer. A proxy would time out.
            let status = error
                .status()
                .and_then(|status| StatusCode::from_u16(status).ok())
                .unwrap_or(StatusCode::GATEWAY_TIMEOUT);
            error_response(status, error.message())
        }
    }
}

fn list<D, W>(to_wire: impl Fn(&D) -> W) -> impl FnOnce(&Vec<D>) -> Vec<W> {
    move |values| values.iter().map(&to_wire).collect()
}

fn param(params: &[String]) -> &str {
    params.first().map(String::as_str).unwrap_or_default()
}

// Named mappings: `From<&'a T>` paths are not general over the lifetime, these are.
fn machine(value: &metal::Machine) -> wire::MachineResponse {
    value.into()
}

fn network(value: &metal::Network) -> wire::NetworkResponse {
    value.into()
}

fn ip(value: &metal::Ip) -> wire::IpResponse {
    value.into()
}

fn partition(value: &metal::Partition) -> wire::PartitionResponse {
    value.into()
}

fn size(value: &metal::Size) -> wire::SizeResponse {
    value.into()
}

fn image(value: &metal::Image) -> wire::ImageResponse {
    value.into()
}

fn project(value: &metal::Project) -> wire::ProjectResponse {
    value.into()
}

async fn call(
    backend: &SimBackend,
    operation: Operation,
    params: &[String],
    body: &Bytes,
) -> Result<Response, BadRequest> {
    use Operation as Op;
    let ok = StatusCode::OK;
    let created = StatusCode::CREATED;
    let id = param(params);
    let response = match operation {
        Op::AllocateMachine => {
            let wire: wire::MachineAllocateRequest = decode(body)?;
            let request = metal::MachineAllocateRequest::from(wire);
            answer(ok, backend.allocate_machine(&request).await, machine)
        }
        Op::FindMachine => answer(ok, backend.get_machine(id).await, machine),
        Op::FindMachines => {
            let query: metal::MachineQuery = decode_into::<wire::MachineFindRequest, _>(body)?;
            answer(ok, backend.find_machines(&query).await, list(machine))
        }
        Op::FreeMachine => answer(ok, backend.free_machine(id).await, machine),
        Op::AllocateFirewall => {
            let request: metal::FirewallAllocateRequest =
                decode_into::<wire::FirewallCreateRequest, _>(body)?;
            answer(ok, backend.allocate_firewall(&request).await, machine)
        }
        Op::FindFirewall => answer(ok, backend.get_firewall(id).await, machine),
        Op::FindFirewalls => {
            let query: metal::MachineQuery = decode_into::<wire::FirewallFindRequest, _>(body)?;
            answer(ok, backend.find_firewalls(&query).await, list(machine))
        }
        Op::AllocateNetwork => {
            let request: metal::NetworkAllocateRequest =
                decode_into::<wire::NetworkAllocateRequest, _>(body)?;
            answer(created, backend.allocate_network(&request).await, network)
        }
        Op::FindNetwork => answer(ok, backend.get_network(id).await, network),
        Op::FindNetworks => {
            let query: metal::NetworkQuery = decode_into::<wire::NetworkFindRequest, _>(body)?;
            answer(ok, backend.find_networks(&query).await, list(network))
        }
        Op::FreeNetwork => answer(ok, backend.free_network(id).await, network),
        Op::AllocateIp => {
            let request: metal::IpAllocateRequest = decode_into::<wire::IpAllocateRequest, _>(body)?;
            answer(created, backend.allocate_ip(&request).await, ip)
        }
        Op::AllocateSpecificIp => {
            let request: metal::IpAllocateRequest = decode_into::<wire::IpAllocateRequest, _>(body)?;
            answer(created, backend.allocate_specific_ip(id, &request).await, ip)
        }
        Op::FindIp => answer(ok, backend.get_ip(id).await, ip),
        Op::FindIps => {
            let query: metal::IpQuery = decode_into::<wire::IpFindRequest, _>(body)?;
            answer(ok, backend.find_ips(&query).await, list(ip))
        }
        Op::FreeIp => answer(ok, backend.free_ip(id).await, ip),
        Op::FindPartition => answer(ok, backend.get_partition(id).await, partition),
        Op::ListPartitions => answer(ok, backend.list_partitions().await, list(partition)),
        Op::FindSize => answer(ok, backend.get_size(id).await, size),
        Op::ListSizes => answer(ok, backend.list_sizes().await, list(size)),
        Op::FindImage => answer(ok, backend.get_image(id).await, image),
        Op::ListImages => answer(ok, backend.list_images().await, list(image)),
        Op::FindProject => answer(ok, backend.get_project(id).await, project),
    };
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segments(path: &str) -> Vec<String> {
        path.split('/').map(percent_decode).collect()
    }

    #[test]
    fn literals_win_over_parameters() {
        assert_eq!(
            resolve(&Method::POST, &segments("ip/allocate")),
            Ok((Endpoint::Op(Operation::AllocateIp), vec![]))
        );
        assert_eq!(
            resolve(&Method::POST, &segments("ip/allocate/10.0.0.5")),
            Ok((Endpoint::Op(Operation::AllocateSpecificIp), vec!["10.0.0.5".to_string()]))
        );
        assert_eq!(
            resolve(&Method::GET, &segments("ip/2001:db8::1")),
            Ok((Endpoint::Op(Operation::FindIp), vec!["2001:db8::1".to_string()]))
        );
        assert_eq!(
            resolve(&Method::GET, &segments("ip/2001%3Adb8%3A%3A1")),
            Ok((Endpoint::Op(Operation::FindIp), vec!["2001:db8::1".to_string()]))
        );
        assert_eq!(
            resolve(&Method::PUT, &segments("machine/allocate")),
            Err(Unrouted::MethodNotAllowed(vec!["POST", "GET"]))
        );
        assert_eq!(resolve(&Method::GET, &segments("machine/x/y")), Err(Unrouted::NotFound));
        assert_eq!(resolve(&Method::GET, &segments("machine/")), Err(Unrouted::NotFound));
    }

    #[test]
    fn every_operation_has_a_route() {
        for operation in Operation::ALL {
            assert!(
                ROUTES.iter().any(|(_, _, endpoint)| *endpoint == Endpoint::Op(operation)),
                "{operation}"
            );
        }
    }
}

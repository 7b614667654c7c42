//! The simulated metal-api: a [`Sim`] served over HTTP at metal-api v1's paths.
//!
//! Every [`MetalBackend`](capms_core::MetalBackend) operation is served at metal-api's path and
//! method with its success status (201 for `POST /v1/ip/allocate[/{ip}]` and
//! `POST /v1/network/allocate`, 200 for everything else), bodies of the shared wire model
//! ([`capms_core::wire`]) and error bodies `{"statuscode": N, "message": "..."}` carrying the
//! status of the [`BackendError`](capms_core::BackendError). `GET /v1/health` and
//! `GET /v1/version` need no credentials. All paths live under a configurable base path
//! (`/metal` → `/metal/v1/machine/allocate`).
//!
//! What a request goes through, in metal-api's filter order:
//! 1. paths outside `<base>/v1/` → 404; health and version answer at once;
//! 2. authentication ([`ServerConfig`]): HMAC as metal-stack/security verifies it (types
//!    `Metal-View`, `Metal-Edit`, `Metal-Admin`; `X-Date` older than 30 s, 90 s for admin, →
//!    403 "the timestamp in your header is too old"; a wrong MAC → 403 "Wrong HMAC found") or
//!    `Bearer <token>` with the configured token (admin). No or unknown credentials → 403 with
//!    the bare JSON string `"tenant  not allowed"`, as the `TenantEnsurer` answers;
//! 3. routing: an unknown path → 404, a known path with another method → 405, a POST without
//!    `Content-Type: application/json` → 415 (go-restful matches no route for it);
//! 4. the route's role: View may GET and find, Edit also allocate and free → otherwise 403
//!    "you are not member in one of [...]";
//! 5. the body: undecodable JSON or a value the domain cannot hold → 400;
//! 6. the [`SimBackend`] call. An error without a status (a lost answer injected by the
//!    fault plan) is answered 504, as a proxy in front of metal-api would.
//!
//! Time: HMAC dates are always checked against the wall clock. The datacenter's clock is chosen
//! by [`ServerConfig::clock`]: virtual (moves only with the calls, for tests) or following the
//! wall clock, optionally faster ([`ServerClock`]), so that a real operator can use it.

mod auth;
mod clock;
mod routes;

pub use clock::ServerClock;

use crate::backend::{Immediate, SimBackend};
use crate::sim::Sim;
use axum::Router;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

/// Keys, token and base path of the simulated metal-api. Defaults are mini-lab's: base path
/// `/metal`, HMAC keys `metal-view`, `metal-edit`, `metal-admin`, no bearer token.
#[derive(Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Path prefix in front of `/v1/...`: `/metal` for mini-lab, `""` for none.
    pub base_path: String,
    /// `--hmac-view-key`.
    pub view_key: String,
    /// `--hmac-edit-key`.
    pub edit_key: String,
    /// `--hmac-admin-key`.
    pub admin_key: String,
    /// A bearer token accepted as a provider-tenant admin. `None`: bearer tokens are rejected.
    pub token: Option<String>,
    /// Which clock drives the datacenter while it is served.
    pub clock: ServerClock,
    /// Also answer the test-only control requests (`--control`, see `routes::control`).
    pub control: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            base_path: "/metal".to_string(),
            view_key: "metal-view".to_string(),
            edit_key: "metal-edit".to_string(),
            admin_key: "metal-admin".to_string(),
            token: None,
            clock: ServerClock::Virtual,
            control: false,
        }
    }
}

impl ServerConfig {
    /// The base path as `""` or `/segment[/segment...]`, without a trailing slash.
    fn normalized_base_path(&self) -> String {
        let trimmed = self.base_path.trim_matches('/');
        if trimmed.is_empty() { String::new() } else { format!("/{trimmed}") }
    }
}

/// Keys and token stay out of `Debug`.
impl fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConfig")
            .field("base_path", &self.base_path)
            .field("view_key", &"<redacted>")
            .field("edit_key", &"<redacted>")
            .field("admin_key", &"<redacted>")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("clock", &self.clock)
            .field("control", &self.control)
            .finish()
    }
}

/// What every request handler shares.
#[derive(Debug)]
struct State {
    backend: SimBackend,
    config: ServerConfig,
    base_path: String,
    /// Set when the datacenter follows the wall clock.
    anchor: Option<clock::WallAnchor>,
}

/// The simulated metal-api as an axum [`Router`] (one fallback handler that routes itself, so
/// that every answer, including 404, 405 and 415, is metal-api's).
pub fn router(sim: Sim, config: ServerConfig) -> Router {
    let base_path = config.normalized_base_path();
    let anchor = clock::WallAnchor::new(config.clock, &sim);
    // A wall-clock datacenter must not also move its clock by each call's latency: under load
    // that would run it ahead of the wall.
    let backend = match anchor {
        Some(_) => sim.backend().with_latency_model(Arc::new(Immediate)),
        None => sim.backend(),
    };
    let state = Arc::new(State { backend, config, base_path, anchor });
    Router::new().fallback(routes::handle).with_state(state)
}

/// The server's authentication of one request at wall-clock time `now`, for the fuzz targets in
/// `fuzz/` (`sim_auth`): `User(View|Edit|Admin)`, `Guest` or `Rejected("<message>")`.
/// Not a stable API.
#[doc(hidden)]
pub fn authenticate_for_fuzzing(
    config: &ServerConfig,
    method: &str,
    headers: &axum::http::HeaderMap,
    now: jiff::Timestamp,
) -> String {
    format!("{:?}", auth::authenticate(config, method, headers, now))
}

/// Serves the simulated metal-api on `listener` until the process ends or an I/O error.
pub async fn serve(listener: tokio::net::TcpListener, sim: Sim, config: ServerConfig) -> std::io::Result<()> {
    axum::serve(listener, router(sim, config)).await
}

/// Serves the simulated metal-api on `listener` until `shutdown` completes, then finishes the
/// requests in flight.
pub async fn serve_with_shutdown(
    listener: tokio::net::TcpListener,
    sim: Sim,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(sim, config)).with_graceful_shutdown(shutdown).await
}

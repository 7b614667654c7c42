//! The contract suite over the wire: `backend-metal`'s `MetalClient` → HTTP on loopback → the
//! simulated metal-api server (`capms_backend_sim::http`), every exchange recorded and checked
//! against metal-api's spec ([`crate::spec`]).

use crate::contract::{Harness, datacenter};
use crate::spec::{Exchange, Spec, SpecRecorder};
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::Response;
use capms_backend_metal::{HmacAuthType, MetalClient, MetalConfig};
use capms_backend_sim::http::{ServerConfig, router};
use capms_core::secret::SecretString;
use std::sync::Arc;

/// Bodies larger than this fail the story (no answer of the suite comes close).
const RECORDED_BODY_MAX: usize = 16 * 1024 * 1024;

/// The base path the server is mounted at, as in mini-lab.
pub const BASE_PATH: &str = "/metal";

/// A [`Harness`] whose backend is a `MetalClient` speaking HTTP to a simulated metal-api on
/// an ephemeral loopback port, authenticated as mini-lab's `Metal-Edit` user. The server runs
/// on the calling test's runtime and stops with it.
pub async fn over_http() -> Harness {
    let sim = datacenter().build();
    let recorder = Arc::new(SpecRecorder::default());
    let app =
        router(sim.clone(), ServerConfig::default()).layer(from_fn_with_state(recorder.clone(), record));
    let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
        Ok(listener) => listener,
        Err(error) => panic!("cannot listen on loopback: {error}"),
    };
    let address = match listener.local_addr() {
        Ok(address) => address,
        Err(error) => panic!("no local address: {error}"),
    };
    tokio::spawn(async move { axum::serve(listener, app).await });
    let config = MetalConfig::new(format!("http://{address}{BASE_PATH}"))
        .with_hmac(SecretString::new("metal-edit"), HmacAuthType::Edit);
    let client = match MetalClient::new(config) {
        Ok(client) => client,
        Err(error) => panic!("the client configures: {error}"),
    };
    let verify_recorder = recorder.clone();
    Harness::new(sim, Arc::new(client)).with_verify(Arc::new(move || verify(&verify_recorder)))
}

/// Panics with every spec violation the recorded exchanges show.
fn verify(recorder: &SpecRecorder) {
    let violations = recorder.violations(Spec::shared());
    assert!(
        violations.is_empty(),
        "{} of the exchanges violate metal-api's spec:\n{}",
        violations.len(),
        violations.join("\n")
    );
    assert!(!recorder.is_empty(), "the story made no request at all");
}

/// Middleware: records the request and the answer, byte for byte.
async fn record(State(recorder): State<Arc<SpecRecorder>>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let request_body = match to_bytes(body, RECORDED_BODY_MAX).await {
        Ok(bytes) => bytes,
        Err(error) => {
            recorder.problem(format!(
                "{} {}: request body unreadable: {error}",
                parts.method,
                parts.uri.path()
            ));
            Default::default()
        }
    };
    let method = parts.method.to_string();
    let path = parts.uri.path().strip_prefix(BASE_PATH).unwrap_or(parts.uri.path()).to_string();
    let response = next.run(Request::from_parts(parts, Body::from(request_body.clone()))).await;
    let (parts, body) = response.into_parts();
    let response_body = match to_bytes(body, RECORDED_BODY_MAX).await {
        Ok(bytes) => bytes,
        Err(error) => {
            recorder.problem(format!("{method} {path}: response body unreadable: {error}"));
            Default::default()
        }
    };
    recorder.record(Exchange {
        method,
        path,
        request_body: request_body.to_vec(),
        status: parts.status.as_u16(),
        response_body: response_body.to_vec(),
    });
    Response::from_parts(parts, Body::from(response_body))
}

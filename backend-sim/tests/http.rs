//! The simulated metal-api over HTTP: auth, routing, status codes and bodies, driven through
//! the axum Router with tower's `oneshot` (no socket) and once over real loopback TCP.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use capms_backend_sim::http::{ServerConfig, router, serve_with_shutdown};
use capms_backend_sim::{FaultPlan, MINI_LAB_PROJECT, SimBuilder};
use capms_core::wire::{HttpErrorResponse, IpResponse, MachineResponse, NetworkResponse, PartitionResponse};
use hmac::{Hmac, Mac};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;

const SALT: &str = "QwErTyUiOpAsDfGhJkLzXcVb";

#[allow(clippy::disallowed_methods, reason = "the server checks X-Date against the wall clock")]
fn wall_clock() -> Timestamp {
    Timestamp::now()
}

fn app() -> Router {
    router(SimBuilder::new().seed(7).build(), ServerConfig::default())
}

/// How a test request authenticates.
#[derive(Clone, Copy)]
enum Auth<'a> {
    None,
    /// (auth type, key, X-Date).
    Hmac(&'a str, &'a str, Timestamp),
    Raw(&'a str),
}

fn edit() -> Auth<'static> {
    Auth::Hmac("Metal-Edit", "metal-edit", wall_clock())
}

fn view() -> Auth<'static> {
    Auth::Hmac("Metal-View", "metal-view", wall_clock())
}

fn sign(key: &str, date: &str, method: &str, salt: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("any key length");
    mac.update(date.as_bytes());
    mac.update(method.as_bytes());
    mac.update(salt.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

fn request(
    method: &str,
    path: &str,
    auth: Auth<'_>,
    body: Option<&str>,
    content_type: bool,
) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(path);
    match auth {
        Auth::None => {}
        Auth::Raw(value) => builder = builder.header("Authorization", value),
        Auth::Hmac(auth_type, key, at) => {
            let date = at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
            let mac = sign(key, &date, method, SALT);
            builder = builder
                .header("Authorization", format!("{auth_type} {mac}"))
                .header("X-Date", date)
                .header("X-Data-Salt", SALT);
        }
    }
    if content_type {
        builder = builder.header("Content-Type", "application/json");
    }
    builder.body(body.map_or_else(Body::empty, |body| Body::from(body.to_string()))).expect("valid request")
}

async fn send(app: &Router, request: Request<Body>) -> (StatusCode, Value) {
    let response = app.clone().oneshot(request).await.expect("the router is infallible");
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("body");
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|error| panic!("{status}: body is not JSON ({error}): {bytes:?}"));
    (status, value)
}

async fn call(
    app: &Router,
    method: &str,
    path: &str,
    auth: Auth<'_>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let body = body.map(|body| body.to_string());
    send(app, request(method, path, auth, body.as_deref(), body.is_some())).await
}

fn error(value: Value) -> HttpErrorResponse {
    serde_json::from_value(value.clone()).unwrap_or_else(|_| panic!("not an error object: {value}"))
}

#[tokio::test]
async fn health_and_version_need_no_auth() {
    let app = app();
    let (status, body) = call(&app, "GET", "/metal/v1/health", Auth::None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "healthy");
    let (status, body) = call(&app, "GET", "/metal/v1/version", Auth::None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["name"], "metal-api");
}

#[tokio::test]
async fn allocate_get_free_round_trip_with_edit_hmac() {
    let app = app();
    let (status, body) = call(
        &app,
        "POST",
        "/metal/v1/network/allocate",
        edit(),
        Some(json!({"projectid": MINI_LAB_PROJECT, "partitionid": "mini-lab", "name": "cluster"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let network: NetworkResponse = serde_json::from_value(body).expect("a network");

    let (status, body) = call(
        &app,
        "POST",
        "/metal/v1/machine/allocate",
        edit(),
        Some(json!({
            "projectid": MINI_LAB_PROJECT,
            "partitionid": "mini-lab",
            "sizeid": "v1-small-x86",
            "imageid": "ubuntu-26",
            "name": "worker-0",
            "networks": [{"networkid": network.id}],
            "tags": ["cluster=one"],
            "unknown-field": "ignored",
        })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let machine: MachineResponse = serde_json::from_value(body).expect("a machine");
    assert!(machine.allocation.is_some());

    let path = format!("/metal/v1/machine/{}", machine.id);
    let (status, body) = call(&app, "GET", &path, view(), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let fetched: MachineResponse = serde_json::from_value(body).expect("a machine");
    assert_eq!(fetched.id, machine.id);

    let (status, body) =
        call(&app, "POST", "/metal/v1/machine/find", view(), Some(json!({"tags": ["cluster=one"]}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let found: Vec<MachineResponse> = serde_json::from_value(body).expect("machines");
    assert_eq!(found.len(), 1);

    let (status, body) = call(&app, "DELETE", &format!("{path}/free"), edit(), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let (status, body) = call(
        &app,
        "POST",
        "/metal/v1/ip/allocate",
        edit(),
        Some(json!({"networkid": "internet-mini-lab", "projectid": MINI_LAB_PROJECT, "name": "vip"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let ip: IpResponse = serde_json::from_value(body).expect("an ip");
    let (status, body) = call(&app, "GET", &format!("/metal/v1/ip/{}", ip.ipaddress), view(), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) =
        call(&app, "DELETE", &format!("/metal/v1/ip/free/{}", ip.ipaddress), edit(), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let (status, body) = call(&app, "GET", "/metal/v1/partition", view(), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let partitions: Vec<PartitionResponse> = serde_json::from_value(body).expect("partitions");
    assert_eq!(partitions[0].id, "mini-lab");
    for path in ["/metal/v1/size/v1-small-x86", "/metal/v1/image/debian-13.0"] {
        let (status, body) = call(&app, "GET", path, view(), None).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
    }
    let (status, body) =
        call(&app, "GET", &format!("/metal/v1/project/{MINI_LAB_PROJECT}"), view(), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn firewall_and_network_lifecycle() {
    let app = app();
    let (status, body) = call(
        &app,
        "POST",
        "/metal/v1/network/allocate",
        edit(),
        Some(json!({"projectid": MINI_LAB_PROJECT, "partitionid": "mini-lab", "labels": {"cluster": "fw"}})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let network: NetworkResponse = serde_json::from_value(body).expect("a network");
    let (status, body) =
        call(&app, "POST", "/metal/v1/network/find", view(), Some(json!({"labels": {"cluster": "fw"}})))
            .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body.as_array().map(Vec::len), Some(1), "{body}");
    let (status, body) = call(&app, "GET", &format!("/metal/v1/network/{}", network.id), view(), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let (status, body) = call(
        &app,
        "POST",
        "/metal/v1/firewall/allocate",
        edit(),
        Some(json!({
            "projectid": MINI_LAB_PROJECT,
            "partitionid": "mini-lab",
            "sizeid": "v1-small-x86",
            "imageid": "firewall-ubuntu-3.0",
            "name": "fw-0",
            "networks": [{"networkid": network.id}, {"networkid": "internet-mini-lab"}],
            "tags": ["role=fw"],
        })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let firewall: MachineResponse = serde_json::from_value(body).expect("a firewall");
    let (status, body) =
        call(&app, "GET", &format!("/metal/v1/firewall/{}", firewall.id), view(), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) =
        call(&app, "POST", "/metal/v1/firewall/find", view(), Some(json!({"tags": ["role=fw"]}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body.as_array().map(Vec::len), Some(1), "{body}");
    let (status, body) =
        call(&app, "DELETE", &format!("/metal/v1/machine/{}/free", firewall.id), edit(), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Not a firewall (any more): 404.
    let (status, _) = call(&app, "GET", &format!("/metal/v1/firewall/{}", firewall.id), view(), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn view_may_read_but_not_allocate() {
    let app = app();
    let (status, _) = call(&app, "GET", "/metal/v1/partition/mini-lab", view(), None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = call(&app, "POST", "/metal/v1/ip/find", view(), Some(json!({}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = call(
        &app,
        "POST",
        "/metal/v1/network/allocate",
        view(),
        Some(json!({"projectid": MINI_LAB_PROJECT, "partitionid": "mini-lab"})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let error = error(body);
    assert_eq!(error.statuscode, 403);
    assert!(error.message.contains("you are not member in one of"), "{}", error.message);
}

#[tokio::test]
async fn stale_dates_are_rejected_and_admin_lives_longer() {
    let app = app();
    let stale = wall_clock() - SignedDuration::from_secs(45);
    let (status, body) =
        call(&app, "GET", "/metal/v1/partition", Auth::Hmac("Metal-Edit", "metal-edit", stale), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(error(body).message.contains("timestamp in your header is too old"));
    let (status, body) =
        call(&app, "GET", "/metal/v1/partition", Auth::Hmac("Metal-Admin", "metal-admin", stale), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn wrong_key_is_rejected() {
    let app = app();
    let auth = Auth::Hmac("Metal-Edit", "not-the-key", wall_clock());
    let (status, body) = call(&app, "GET", "/metal/v1/partition", auth, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(error(body), HttpErrorResponse::new(403, "Wrong HMAC found"));
    // The edit key under the view type is a wrong MAC too.
    let auth = Auth::Hmac("Metal-View", "metal-edit", wall_clock());
    let (status, _) = call(&app, "GET", "/metal/v1/partition", auth, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn missing_or_unknown_auth_gets_the_bare_tenant_string() {
    let app = app();
    for auth in [Auth::None, Auth::Raw("Metal-Root abc"), Auth::Raw("garbage")] {
        let (status, body) = call(&app, "GET", "/metal/v1/partition", auth, None).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(body, json!("tenant  not allowed"));
    }
}

#[tokio::test]
async fn bearer_token_when_configured() {
    let config =
        ServerConfig { token: Some("s3cret".into()), base_path: String::new(), ..ServerConfig::default() };
    let app = router(SimBuilder::new().build(), config);
    let (status, _) = call(&app, "GET", "/v1/partition", Auth::Raw("Bearer s3cret"), None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(&app, "GET", "/v1/partition", Auth::Raw("Bearer other"), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn unknown_paths_are_metal_api_404s() {
    let app = app();
    for path in ["/metal/v1/nothing", "/metal/v1/machine/a/b/c", "/v1/partition", "/", "/metal/v2/partition"]
    {
        let (status, body) = call(&app, "GET", path, edit(), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(error(body).statuscode, 404);
    }
    let (status, body) = call(&app, "PUT", "/metal/v1/machine/allocate", edit(), Some(json!({}))).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(error(body).statuscode, 405);
}

#[tokio::test]
async fn post_without_json_content_type_is_415() {
    let app = app();
    let body = json!({"projectid": MINI_LAB_PROJECT}).to_string();
    let (status, body) =
        send(&app, request("POST", "/metal/v1/ip/allocate", edit(), Some(&body), false)).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(error(body).statuscode, 415);
}

#[tokio::test]
async fn undecodable_bodies_are_400() {
    let app = app();
    for body in ["{not json", "", "[1,2]", r#"{"networks": "x"}"#] {
        let (status, answer) =
            send(&app, request("POST", "/metal/v1/machine/allocate", edit(), Some(body), true)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body:?}: {answer}");
        assert_eq!(error(answer).statuscode, 400);
    }
    // A value the domain cannot hold is a 400 too.
    let (status, _) =
        call(&app, "POST", "/metal/v1/ip/find", view(), Some(json!({"addressfamily": "IPv5"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn backend_errors_keep_metal_api_statuses() {
    let app = app();
    let (status, body) =
        call(&app, "DELETE", "/metal/v1/machine/00000000-0000-0000-0000-00000000dead/free", edit(), None)
            .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(error(body).statuscode, 404);

    let (status, body) = call(
        &app,
        "POST",
        "/metal/v1/machine/allocate",
        edit(),
        Some(json!({
            "projectid": MINI_LAB_PROJECT,
            "partitionid": "mini-lab",
            "sizeid": "v1-small-x86",
            "imageid": "ubuntu-26",
            "networks": [],
        })),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(error(body).statuscode, 400);

    let (status, body) = call(&app, "GET", "/metal/v1/ip/10.255.255.254", view(), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}

#[tokio::test]
async fn lost_answers_are_gateway_timeouts_and_null_bodies_are_empty_requests() {
    let faults = FaultPlan { lost_response_rate: 1.0, ..FaultPlan::none() };
    let lossy = router(SimBuilder::new().fault_plan(faults).build(), ServerConfig::default());
    let (status, body) = call(&lossy, "POST", "/metal/v1/machine/find", view(), Some(Value::Null)).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert_eq!(error(body).statuscode, 504);

    let (status, body) = call(&app(), "POST", "/metal/v1/machine/find", view(), Some(Value::Null)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn serves_over_loopback_tcp() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let address = listener.local_addr().expect("bound address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_with_shutdown(
        listener,
        SimBuilder::new().build(),
        ServerConfig::default(),
        async move {
            let _ = stopped.await;
        },
    ));
    let mut stream = tokio::net::TcpStream::connect(address).await.expect("connect");
    stream
        .write_all(b"GET /metal/v1/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("read");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"healthy\""), "{answer}");
    let _ = stop.send(());
    server.await.expect("server task").expect("server ends cleanly");
}

/// `capms-sim serve --control`: a machine killed as if silent for `MACHINE_DEAD_AFTER` is
/// reported Dead (unallocated) at once; without `--control` the path is metal-api's 404.
#[tokio::test]
async fn control_kills_a_machine_only_when_switched_on() {
    let (status, _) = call(&app(), "POST", "/capms-sim/v1/machine/any/kill", Auth::None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let config = ServerConfig { control: true, ..ServerConfig::default() };
    let app = router(SimBuilder::new().seed(7).build(), config);
    let (status, body) = call(&app, "POST", "/metal/v1/machine/find", view(), Some(json!({}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let machines: Vec<MachineResponse> = serde_json::from_value(body).expect("machines");
    let id = &machines.first().expect("a machine").id;
    let seconds = capms_backend_sim::MACHINE_DEAD_AFTER.as_secs();
    let kill = format!("/capms-sim/v1/machine/{id}/kill?silent-for={seconds}");
    let (status, body) = call(&app, "POST", &kill, Auth::None, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = call(&app, "GET", &format!("/metal/v1/machine/{id}"), view(), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["liveliness"], json!("Dead"), "{body}");

    let (status, _) = call(&app, "POST", "/capms-sim/v1/machine/nope/kill", Auth::None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = call(&app, "GET", &kill, Auth::None, None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}

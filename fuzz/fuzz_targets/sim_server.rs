//! The simulated metal-api's request handling (`capms_backend_sim::http::router`: routing,
//! authentication, content type, roles, body decoding, the backend call) on arbitrary
//! requests, driven with `tower::ServiceExt::oneshot` on a current-thread runtime against a
//! fresh mini-lab datacenter per input. It never panics, every answer has a status metal-api
//! (or a proxy in front of it) answers, and every body is metal-api's JSON: a wire value for
//! 2xx, `{"statuscode": <the status>, "message": ...}` or the tenant check's bare string for
//! errors.
//!
//! Input: up to 8 requests separated by a line `###`, each written like HTTP/1.1:
//!
//! ```text
//! POST /metal/v1/ip/allocate
//! sign: edit
//! content-type: application/json
//!
//! {"networkid": "internet-mini-lab", "projectid": "00000000-0000-0000-0000-000000000001"}
//! ```
//!
//! Headers are sent as written, except two that the target interprets: `sign: view|edit|admin`
//! adds `Authorization`, `X-Date` (now) and `X-Data-Salt` as `capms-backend-metal` computes
//! them, and `age: <seconds>` dates that signature back (a negative age dates it ahead).

#![no_main]

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Method, Request, StatusCode};
use capms_backend_sim::SimBuilder;
use capms_backend_sim::http::{ServerConfig, router};
use capms_core::wire::HttpErrorResponse;
use jiff::{SignedDuration, Timestamp};
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;
use tower::ServiceExt;

const REQUESTS_MAX: usize = 8;
const SALT: &str = "QwErTyUiOpAsDfGhJkLzXcVb";

/// What metal-api answers (200, 201, 400, 403, 404, 405, 409, 415, 422, 500) and what a proxy
/// in front of it may add (429, 502, 503, 504).
const STATUSES: [u16; 14] = [200, 201, 400, 403, 404, 405, 409, 415, 422, 429, 500, 502, 503, 504];

/// `CAPMS_FUZZ_VERBOSE=1` prints every request's answer (to see what a crash input does).
static VERBOSE: LazyLock<bool> = LazyLock::new(|| std::env::var_os("CAPMS_FUZZ_VERBOSE").is_some());

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a current-thread runtime")
});

fuzz_target!(|data: &[u8]| {
    let config = ServerConfig::default();
    let app = router(SimBuilder::new().seed(7).build(), config.clone());
    for text in split_requests(data).take(REQUESTS_MAX) {
        let Some(request) = build_request(text, &config) else {
            continue;
        };
        let response = RUNTIME.block_on(app.clone().oneshot(request)).expect("the router is infallible");
        let status = response.status();
        assert!(STATUSES.contains(&status.as_u16()), "unexpected status {status}");
        let body = RUNTIME
            .block_on(axum::body::to_bytes(response.into_body(), usize::MAX))
            .expect("a buffered body");
        if *VERBOSE {
            eprintln!("{status} {}", String::from_utf8_lossy(&body));
        }
        check_body(status, &body);
    }
});

fn check_body(status: StatusCode, body: &[u8]) {
    if status.is_success() {
        serde_json::from_slice::<serde_json::Value>(body).expect("a 2xx body is JSON");
        return;
    }
    if let Ok(error) = serde_json::from_slice::<HttpErrorResponse>(body) {
        assert_eq!(error.statuscode, i32::from(status.as_u16()), "the error body's status");
        return;
    }
    let text: String = serde_json::from_slice(body).expect("an error body is metal-api's JSON");
    assert_eq!((status, text.as_str()), (StatusCode::FORBIDDEN, "tenant  not allowed"));
}

/// The requests of one input: the bytes between lines `###`.
fn split_requests(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(data);
    std::iter::from_fn(move || {
        let text = rest?;
        match find(text, b"\n###\n") {
            Some(at) => {
                rest = Some(&text[at + 5..]);
                Some(&text[..at])
            }
            None => {
                rest = None;
                Some(text)
            }
        }
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

/// One request from its text; `None` when the request line is not a method and a URI.
fn build_request(text: &[u8], config: &ServerConfig) -> Option<Request<Body>> {
    let (head, body) = match find(text, b"\n\n") {
        Some(at) => (&text[..at], &text[at + 2..]),
        None => (text, &b""[..]),
    };
    let mut lines = head.split(|byte| *byte == b'\n');
    let request_line = lines.next()?;
    let (method, target) = match request_line.iter().position(|byte| *byte == b' ') {
        Some(at) => (&request_line[..at], &request_line[at + 1..]),
        None => (request_line, &b"/"[..]),
    };
    let method = Method::from_bytes(method).ok()?;
    let mut builder = Request::builder().method(method.clone()).uri(target);
    let mut sign = None;
    let mut age = 0_i64;
    for line in lines {
        let Some(colon) = line.iter().position(|byte| *byte == b':') else {
            continue;
        };
        let name = &line[..colon];
        let value = line[colon + 1..].trim_ascii();
        match name {
            b"sign" => sign = Some(value.to_vec()),
            b"age" => age = std::str::from_utf8(value).ok().and_then(|age| age.parse().ok()).unwrap_or(0),
            _ => {
                if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
                {
                    builder = builder.header(name, value);
                }
            }
        }
    }
    if let Some(role) = sign {
        let (auth_type, key) = match role.as_slice() {
            b"view" => ("Metal-View", &config.view_key),
            b"admin" => ("Metal-Admin", &config.admin_key),
            _ => ("Metal-Edit", &config.edit_key),
        };
        let at = wall_clock().checked_sub(SignedDuration::from_secs(age)).unwrap_or_else(|_| wall_clock());
        let date = capms_backend_metal::x_date(at);
        let authorization = capms_backend_metal::hmac_authorization(
            key.as_bytes(),
            auth_type,
            method.as_str(),
            &date,
            SALT.as_bytes(),
        )
        .expect("any key");
        builder =
            builder.header("authorization", authorization).header("x-date", date).header("x-data-salt", SALT);
    }
    builder.body(Body::from(body.to_vec())).ok()
}

fn wall_clock() -> Timestamp {
    // The server checks X-Date against the wall clock.
    Timestamp::now()
}

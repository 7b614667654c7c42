//! Error answers of every shape, through the real HTTP stack.

use super::server::{Reply, TestServer};
use super::*;
use capms_core::metal::MachineAllocateRequest;
use capms_core::{ErrorKind, MetalBackend};

async fn one_read_error(reply: Reply) -> capms_core::BackendError {
    let server = TestServer::start("", vec![reply]).await;
    let config = config(&server.base_url).with_retry(RetryPolicy::none());
    MetalClient::new(config).expect("client").get_machine("m1").await.expect_err("an error")
}

#[tokio::test]
async fn json_error_objects_are_classified() {
    let error =
        one_read_error(Reply::error(409, "Conflict the entity was changed from another, please retry")).await;
    assert_eq!((error.status(), error.kind()), (Some(409), ErrorKind::Conflict));
    assert_eq!(error.message(), "Conflict the entity was changed from another, please retry");
    let clock = one_read_error(Reply::error(403, "the timestamp in your header is too old")).await;
    assert!(clock.is_clock_skew());
}

#[tokio::test]
async fn the_tenant_check_bare_string_is_an_auth_error() {
    let error = one_read_error(Reply::json(403, json!("tenant  not allowed"))).await;
    assert_eq!((error.status(), error.kind()), (Some(403), ErrorKind::Auth));
    assert_eq!(error.message(), "tenant  not allowed");
}

#[tokio::test]
async fn proxy_html_pages_keep_status_and_excerpt() {
    let page =
        "<html>\r\n<head><title>504 Gateway Time-out</title></head>\r\n<body>nginx</body>\r\n</html>\r\n";
    let error = one_read_error(Reply::raw(504, "text/html", page)).await;
    assert_eq!((error.status(), error.kind()), (Some(504), ErrorKind::Transient));
    assert_eq!(
        error.message(),
        "<html> <head><title>504 Gateway Time-out</title></head> <body>nginx</body> </html>"
    );
    let huge = one_read_error(Reply::raw(502, "text/plain", &"z".repeat(200_000))).await;
    assert_eq!(huge.message().chars().count(), crate::MESSAGE_LENGTH_MAX + 1);
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let error = one_read_error(Reply::raw(302, "text/plain", "")).await;
    assert_eq!((error.status(), error.kind()), (Some(302), ErrorKind::Permanent));
}

#[tokio::test]
async fn undecodable_success_bodies_are_errors_not_panics() {
    let read = one_read_error(Reply::raw(200, "text/html", "<html>captive portal</html>")).await;
    assert_eq!(read.kind(), ErrorKind::Transient);
    assert!(!read.outcome_unknown());
    let wrong_shape = one_read_error(Reply::json(200, json!([1, 2, 3]))).await;
    assert_eq!(wrong_shape.kind(), ErrorKind::Transient);
    let unmappable = one_read_error(Reply::json(200, machine_json("m1", "switch"))).await;
    assert_eq!(unmappable.kind(), ErrorKind::Permanent);

    let server = TestServer::start("", vec![Reply::raw(200, "application/json", "{\"id\": ")]).await;
    let write = client(&server.base_url).allocate_machine(&MachineAllocateRequest::default()).await;
    let write = write.expect_err("truncated body");
    assert!(write.outcome_unknown(), "the allocation happened: adopt it by tags");
    assert_eq!(server.requests().len(), 1);
}

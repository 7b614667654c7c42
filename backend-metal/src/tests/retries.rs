//! Reads retry transient failures a bounded number of times with fresh headers; writes never.

use super::server::{Reply, TestServer};
use super::*;
use crate::{CallObserver, CallOutcome};
use capms_core::metal::{IpAllocateRequest, MachineAllocateRequest};
use capms_core::{ErrorKind, MetalBackend, Operation};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Recorder(Mutex<Vec<(Operation, CallOutcome)>>);

impl CallObserver for Recorder {
    fn observe(&self, operation: Operation, outcome: CallOutcome, _latency: Duration) {
        self.0.lock().expect("not poisoned").push((operation, outcome));
    }
}

impl Recorder {
    fn seen(&self) -> Vec<(Operation, CallOutcome)> {
        self.0.lock().expect("not poisoned").clone()
    }
}

#[tokio::test]
async fn reads_retry_transient_failures_with_fresh_headers() {
    let replies = vec![
        Reply::raw(503, "text/html", "<html><body>503 Service Unavailable</body></html>"),
        Reply::Drop,
        Reply::json(200, machine_json("m1", "machine")),
    ];
    let server = TestServer::start("/metal", replies).await;
    let recorder = Arc::new(Recorder::default());
    let client = client(&server.base_url).with_observer(recorder.clone());
    let machine = client.get_machine("m1").await.expect("third attempt succeeds");
    assert_eq!(machine.id, "m1");
    let requests = server.requests();
    assert_eq!(requests.len(), 3);
    let salts: BTreeSet<String> = requests.iter().map(verify_hmac).collect();
    assert_eq!(salts.len(), 3, "every attempt has its own salt");
    let authorizations: BTreeSet<&str> = requests.iter().filter_map(|r| r.header("authorization")).collect();
    assert_eq!(authorizations.len(), 3, "and its own signature");
    let op = Operation::FindMachine;
    assert_eq!(
        recorder.seen(),
        [(op, CallOutcome::ServerError), (op, CallOutcome::Transport), (op, CallOutcome::Success)]
    );
}

#[tokio::test]
async fn read_retries_are_bounded() {
    let replies = (0..5).map(|_| Reply::error(502, "bad gateway")).collect();
    let server = TestServer::start("", replies).await;
    let error = client(&server.base_url).list_images().await.expect_err("gives up");
    assert_eq!(error.status(), Some(502));
    assert_eq!(error.kind(), ErrorKind::Transient);
    assert_eq!(server.requests().len(), 3, "attempts_max = 3");
}

#[tokio::test]
async fn reads_do_not_retry_answers_that_will_not_change() {
    let server = TestServer::start("", vec![Reply::error(404, "NotFound machine m1 not found")]).await;
    let error = client(&server.base_url).get_machine("m1").await.expect_err("not found");
    assert_eq!(error.kind(), ErrorKind::NotFound);
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn retry_policy_none_sends_once() {
    let server = TestServer::start("", vec![Reply::error(503, "x"), Reply::json(200, image_json())]).await;
    let config = config(&server.base_url).with_retry(RetryPolicy::none());
    let error = MetalClient::new(config).expect("client").get_image("debian-13.0").await.expect_err("503");
    assert_eq!(error.status(), Some(503));
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn writes_are_never_retried() {
    let machine = machine_json("m1", "machine");
    let server =
        TestServer::start("", vec![Reply::error(503, "unavailable"), Reply::json(200, machine)]).await;
    let client = client(&server.base_url);
    let error = client.allocate_machine(&MachineAllocateRequest::default()).await.expect_err("503");
    assert_eq!(error.status(), Some(503));
    assert!(!error.outcome_unknown(), "the server answered");
    assert_eq!(server.requests().len(), 1, "no second allocation");
}

#[tokio::test]
async fn a_lost_answer_to_a_write_is_outcome_unknown() {
    let server = TestServer::start("", vec![Reply::Drop, Reply::json(200, ip_json("10.0.0.1"))]).await;
    let recorder = Arc::new(Recorder::default());
    let client = client(&server.base_url).with_observer(recorder.clone());
    let error = client.allocate_ip(&IpAllocateRequest::default()).await.expect_err("connection dropped");
    assert_eq!(error.kind(), ErrorKind::Transient);
    assert_eq!(error.status(), None);
    assert!(error.outcome_unknown(), "{error}");
    assert_eq!(server.requests().len(), 1);
    assert_eq!(recorder.seen(), [(Operation::AllocateIp, CallOutcome::Transport)]);
}

#[tokio::test]
async fn a_timed_out_write_is_outcome_unknown() {
    let server = TestServer::start("", vec![Reply::Stall(Duration::from_secs(2))]).await;
    let config = config(&server.base_url).with_timeouts(Duration::from_secs(1), Duration::from_millis(200));
    let client = MetalClient::new(config).expect("client");
    let error = client.free_machine("m1").await.expect_err("times out");
    assert!(error.outcome_unknown());
    assert!(error.message().contains("timed out"), "{error}");
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn a_refused_connection_is_not_outcome_unknown() {
    // Bind and release a port so that nothing listens on it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let address = listener.local_addr().expect("address");
    drop(listener);
    let client = client(&format!("http://{address}"));
    let error = client.free_machine("m1").await.expect_err("refused");
    assert_eq!(error.kind(), ErrorKind::Transient);
    assert!(!error.outcome_unknown(), "the request never left: {error}");
    assert!(!error.message().contains("http://"), "no URL in the message: {error}");
    assert!(error.message().contains("Connection refused"), "{error}");
}

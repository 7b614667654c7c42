//! The requests whose shape matters, seen on the wire with tower-test's mock service: a
//! finalizer/spec write is one JSON patch conditional on the resourceVersion that was read,
//! and the status is written by server-side apply to the status subresource under the one
//! field manager, forced, conditional on the version it was computed from (that one against
//! the fake apiserver, which checks it).

mod support;

use capms_core::api::{MACHINE_FINALIZER, MetalStackMachine, MetalStackMachineStatus};
use capms_core::glue::{ObjectPatch, WriteError};
use capms_core::reconcile::FinalizerAction;
use capms_operator::apply::{self, FIELD_MANAGER, apply_status};
use http::{Method, Request, Response};
use kube::api::PostParams;
use kube::client::Body;
use kube::{Api, Client};
use serde_json::{Value, json};
use tower_test::mock;

const PATH: &str = "/apis/infrastructure.cluster.x-k8s.io/v1alpha1/namespaces/default/metalstackmachines/m-0";

fn metal_machine() -> MetalStackMachine {
    serde_json::from_value(json!({
        "apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1",
        "kind": "MetalStackMachine",
        "metadata": {"name": "m-0", "namespace": "default", "resourceVersion": "42", "finalizers": ["other.io/keep"]},
        "spec": {"size": "v1-small-x86", "image": "debian-13.0"},
    }))
    .expect("a MetalStackMachine")
}

/// One request, answered with `answer`; returns the request's parts and its body as JSON.
async fn exchange(
    handle: &mut mock::Handle<Request<Body>, Response<Body>>,
    answer: &MetalStackMachine,
) -> (http::request::Parts, Value) {
    let (request, send) = handle.next_request().await.expect("the client sends a request");
    let (parts, body) = request.into_parts();
    let bytes = body.collect_bytes().await.expect("a body");
    let body: Value = serde_json::from_slice(&bytes).expect("a JSON body");
    let answer = serde_json::to_vec(answer).expect("an answer");
    send.send_response(Response::builder().status(200).body(Body::from(answer)).expect("a response"));
    (parts, body)
}

fn content_type(parts: &http::request::Parts) -> &str {
    parts.headers.get(http::header::CONTENT_TYPE).and_then(|value| value.to_str().ok()).unwrap_or_default()
}

#[tokio::test]
async fn a_finalizer_and_provider_id_write_is_one_json_patch_tested_against_the_read_version() {
    let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let api: Api<MetalStackMachine> = Api::namespaced(Client::new(service, "default"), "default");
    let object = metal_machine();
    let server = tokio::spawn(async move {
        let answer = metal_machine();
        exchange(&mut handle, &answer).await
    });
    let mut patch = ObjectPatch::default();
    patch.finalizer(&object.metadata, MACHINE_FINALIZER, FinalizerAction::Add);
    patch.spec_field("providerID", None, Some(&"metal://mini-lab/m".to_string()));
    apply::patch(&api, &object.metadata, &patch).await.expect("the patch applies");

    let (parts, body) = server.await.expect("the mock server runs");
    assert_eq!(parts.method, Method::PATCH);
    assert_eq!(parts.uri.path(), PATH);
    assert_eq!(content_type(&parts), "application/json-patch+json");
    assert_eq!(
        body,
        json!([
            {"op": "test", "path": "/metadata/resourceVersion", "value": "42"},
            {"op": "add", "path": "/metadata/finalizers", "value": ["other.io/keep", MACHINE_FINALIZER]},
            {"op": "add", "path": "/spec/providerID", "value": "metal://mini-lab/m"},
        ])
    );
}

#[tokio::test]
async fn status_is_a_forced_server_side_apply_of_the_status_subresource_by_one_field_manager() {
    let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let api: Api<MetalStackMachine> = Api::namespaced(Client::new(service, "default"), "default");
    let object = metal_machine();
    let server = tokio::spawn(async move {
        let answer = metal_machine();
        exchange(&mut handle, &answer).await
    });
    let status =
        MetalStackMachineStatus { rack: Some("rack-1".to_string()), ..MetalStackMachineStatus::default() };
    apply_status(&api, &object, "43", &status).await.expect("the status applies");

    let (parts, body) = server.await.expect("the mock server runs");
    assert_eq!(parts.method, Method::PATCH);
    assert_eq!(parts.uri.path(), format!("{PATH}/status"));
    let query = parts.uri.query().unwrap_or_default();
    assert!(query.contains(&format!("fieldManager={FIELD_MANAGER}")), "{query}");
    assert!(query.contains("force=true"), "{query}");
    assert_eq!(content_type(&parts), "application/apply-patch+yaml");
    assert_eq!(body["apiVersion"], "infrastructure.cluster.x-k8s.io/v1alpha1");
    assert_eq!(body["kind"], "MetalStackMachine");
    assert_eq!(body["metadata"]["name"], "m-0");
    assert_eq!(body["metadata"]["resourceVersion"], "43", "the version the status was computed from");
    assert_eq!(body["status"]["rack"], "rack-1");
    assert!(body.get("spec").is_none(), "a status apply carries no spec: {body}");
}

#[tokio::test]
async fn an_empty_patch_sends_nothing() {
    // Nobody answers on the mock: a request would leave the call waiting forever, so the call
    // returning is the proof that nothing was sent. (An unchanged status is never planned:
    // core's glue tests that.)
    let (service, _handle) = mock::pair::<Request<Body>, Response<Body>>();
    let api: Api<MetalStackMachine> = Api::namespaced(Client::new(service, "default"), "default");
    let object = metal_machine();
    let mut patch = ObjectPatch::default();
    patch.finalizer(&object.metadata, "other.io/keep", FinalizerAction::Add);
    let version = apply::patch(&api, &object.metadata, &patch).await.expect("nothing to write");
    assert_eq!(version, "42", "the version read");
}

/// kube-runtime reconciles the copy in its cache, which may lag behind the reconcile's own last
/// write. A status computed from such a copy is refused by the apiserver (the apply carries
/// the version it was computed from), not written over the newer one.
#[tokio::test]
async fn a_status_computed_from_a_stale_copy_is_refused_and_the_newer_status_stays() {
    let server = support::management_cluster();
    let api: Api<MetalStackMachine> = Api::namespaced(server.client(), "default");
    let mut fresh = metal_machine();
    fresh.metadata.resource_version = None;
    let stale = api.create(&PostParams::default(), &fresh).await.expect("created");
    let newer = MetalStackMachineStatus { rack: Some("rack-new".to_string()), ..Default::default() };
    let version = stale.metadata.resource_version.clone().expect("a version");
    apply_status(&api, &stale, &version, &newer).await.expect("the status of the version read applies");

    let older = MetalStackMachineStatus { rack: Some("rack-old".to_string()), ..Default::default() };
    let refused = apply_status(&api, &stale, &version, &older).await;
    assert_eq!(refused, Err(WriteError::Conflict));
    let stored = api.get("m-0").await.expect("the machine");
    assert_eq!(stored.status.and_then(|status| status.rack).as_deref(), Some("rack-new"));
}

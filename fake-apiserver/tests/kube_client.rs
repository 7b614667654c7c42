//! The fake driven through real kube 5 clients: typed `Api<K>`, kube-runtime's watcher,
//! Recorder and Controller. One test binary, so that kube is linked once.

#![allow(clippy::unwrap_used, reason = "tests fail loudly; expect() is used where the why matters")]

use std::sync::Arc;
use std::time::Duration;

use capms_fake_apiserver::{FakeApiServer, FaultTarget, WaitBound, WaitError};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, PropagationPolicy, WatchEvent, WatchParams,
};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::{Controller, watcher};
use kube::{Client, CustomResource, CustomResourceExt, Resource, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// A namespaced test CRD with the status subresource.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(group = "example.capms.dev", version = "v1", kind = "Widget", namespaced, status = "WidgetStatus")]
pub struct WidgetSpec {
    pub size: u32,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct WidgetStatus {
    pub observed: Option<u32>,
}

/// A CRD that is never registered unless a test creates it.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(group = "example.capms.dev", version = "v1", kind = "Gadget", namespaced)]
pub struct GadgetSpec {
    pub color: String,
}

/// Generous: only a hang hits it; tests never assert timings.
const PATIENCE: Duration = Duration::from_secs(30);

fn setup() -> (FakeApiServer, Client) {
    let server = FakeApiServer::new();
    server.register_crd(&Widget::crd()).expect("the Widget CRD is valid");
    let client = server.client();
    (server, client)
}

fn configmap(name: &str, labels: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()),
            ..ObjectMeta::default()
        },
        data: Some([("key".to_owned(), "value".to_owned())].into()),
        ..ConfigMap::default()
    }
}

fn widget(name: &str, size: u32) -> Widget {
    let mut widget = Widget::new(name, WidgetSpec { size });
    widget.metadata.namespace = Some("default".to_owned());
    widget
}

fn api_error(error: kube::Error) -> (u16, String) {
    match error {
        kube::Error::Api(status) => (status.code, status.reason),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn create_get_list_and_already_exists() {
    let (_server, client) = setup();
    let configmaps: Api<ConfigMap> = Api::namespaced(client, "default");
    let created = configmaps.create(&PostParams::default(), &configmap("one", &[])).await.unwrap();
    assert!(created.metadata.uid.is_some());
    assert!(created.metadata.creation_timestamp.is_some());
    assert_eq!(created.metadata.generation, Some(1));
    assert_eq!(created.metadata.namespace.as_deref(), Some("default"));

    let mut generated = configmap("", &[]);
    generated.metadata.name = None;
    generated.metadata.generate_name = Some("gen-".to_owned());
    let generated = configmaps.create(&PostParams::default(), &generated).await.unwrap();
    assert!(generated.name_any().starts_with("gen-") && generated.name_any().len() == 9);

    let fetched = configmaps.get("one").await.unwrap();
    assert_eq!(fetched.data, created.data);
    let list = configmaps.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 2);
    assert!(list.metadata.resource_version.is_some());

    let again = configmaps.create(&PostParams::default(), &configmap("one", &[])).await.unwrap_err();
    assert_eq!(api_error(again), (409, "AlreadyExists".to_owned()));
    let missing = configmaps.get("missing").await.unwrap_err();
    assert_eq!(api_error(missing), (404, "NotFound".to_owned()));
}

#[tokio::test]
async fn replace_with_a_stale_resource_version_conflicts() {
    let (_server, client) = setup();
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let original = configmaps.create(&PostParams::default(), &configmap("cm", &[])).await.unwrap();
    let mut first = original.clone();
    first.data = Some([("key".to_owned(), "first".to_owned())].into());
    configmaps.replace("cm", &PostParams::default(), &first).await.unwrap();
    let mut second = original;
    second.data = Some([("key".to_owned(), "second".to_owned())].into());
    let stale = configmaps.replace("cm", &PostParams::default(), &second).await.unwrap_err();
    assert_eq!(api_error(stale), (409, "Conflict".to_owned()));

    // Custom resources refuse updates without a resourceVersion.
    let widgets: Api<Widget> = Api::namespaced(client, "default");
    widgets.create(&PostParams::default(), &widget("w", 1)).await.unwrap();
    let unconditional = widgets.replace("w", &PostParams::default(), &widget("w", 2)).await.unwrap_err();
    assert_eq!(api_error(unconditional).0, 422);
}

#[tokio::test]
async fn merge_patch_and_json_patch_with_a_failing_test() {
    let (server, client) = setup();
    let configmaps: Api<ConfigMap> = Api::namespaced(client, "default");
    configmaps.create(&PostParams::default(), &configmap("cm", &[])).await.unwrap();
    let merged = configmaps
        .patch("cm", &PatchParams::default(), &Patch::Merge(json!({ "data": { "other": "x" } })))
        .await
        .unwrap();
    assert_eq!(merged.data.as_ref().unwrap().len(), 2);

    let ops: json_patch::Patch = serde_json::from_value(json!([
        { "op": "test", "path": "/data/other", "value": "x" },
        { "op": "replace", "path": "/data/other", "value": "y" },
    ]))
    .unwrap();
    let patched = configmaps.patch("cm", &PatchParams::default(), &Patch::Json::<()>(ops)).await.unwrap();
    assert_eq!(patched.data.as_ref().unwrap()["other"], "y");

    let version = server.resource_version();
    let failing: json_patch::Patch = serde_json::from_value(json!([
        { "op": "test", "path": "/data/other", "value": "not-y" },
        { "op": "remove", "path": "/data/other" },
    ]))
    .unwrap();
    let error =
        configmaps.patch("cm", &PatchParams::default(), &Patch::Json::<()>(failing)).await.unwrap_err();
    assert_eq!(api_error(error), (422, "Invalid".to_owned()));
    assert_eq!(server.resource_version(), version, "a failed patch commits nothing");

    // Strategic merge patch is served (as a merge patch).
    let strategic = configmaps
        .patch("cm", &PatchParams::default(), &Patch::Strategic(json!({ "data": { "third": "z" } })))
        .await
        .unwrap();
    assert_eq!(strategic.data.unwrap().len(), 3);
}

#[tokio::test]
async fn server_side_apply_creates_merges_conflicts_and_forces() {
    let (server, client) = setup();
    let configmaps: Api<ConfigMap> = Api::namespaced(client, "default");
    let applied = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": { "name": "cm", "labels": { "a": "1" } },
        "data": { "x": "1", "y": "1" },
    });
    let created =
        configmaps.patch("cm", &PatchParams::apply("alice"), &Patch::Apply(&applied)).await.unwrap();
    let managers = created.metadata.managed_fields.unwrap();
    assert_eq!(managers[0].manager.as_deref(), Some("alice"));
    assert_eq!(managers[0].operation.as_deref(), Some("Apply"));

    // Applying the same again changes nothing, not even the resourceVersion.
    let version = server.resource_version();
    configmaps.patch("cm", &PatchParams::apply("alice"), &Patch::Apply(&applied)).await.unwrap();
    assert_eq!(server.resource_version(), version);

    let bob = json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "cm" }, "data": { "x": "2" } });
    let conflict = configmaps.patch("cm", &PatchParams::apply("bob"), &Patch::Apply(&bob)).await.unwrap_err();
    assert_eq!(api_error(conflict), (409, "Conflict".to_owned()));
    let forced =
        configmaps.patch("cm", &PatchParams::apply("bob").force(), &Patch::Apply(&bob)).await.unwrap();
    assert_eq!(forced.data.as_ref().unwrap()["x"], "2");

    // Alice stops applying `y`: it goes, since nobody else owns it; `x` is Bob's now and stays.
    let alice = json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "cm" }, "data": {} });
    let pruned = configmaps.patch("cm", &PatchParams::apply("alice"), &Patch::Apply(&alice)).await.unwrap();
    let data = pruned.data.unwrap();
    assert_eq!(data.get("x").map(String::as_str), Some("2"));
    assert!(!data.contains_key("y"));
    assert!(pruned.metadata.labels.unwrap_or_default().is_empty());
}

#[tokio::test]
async fn status_subresource_is_isolated() {
    let (_server, client) = setup();
    let widgets: Api<Widget> = Api::namespaced(client, "default");
    let mut with_status = widget("w", 1);
    with_status.status = Some(WidgetStatus { observed: Some(9) });
    let created = widgets.create(&PostParams::default(), &with_status).await.unwrap();
    assert_eq!(created.status, None, "create drops status");

    let status_patch = json!({ "spec": { "size": 100 }, "status": { "observed": 1 } });
    let patched =
        widgets.patch_status("w", &PatchParams::default(), &Patch::Merge(&status_patch)).await.unwrap();
    assert_eq!(patched.spec.size, 1, "a /status write ignores spec");
    assert_eq!(patched.status.as_ref().unwrap().observed, Some(1));
    assert_eq!(patched.metadata.generation, Some(1), "status writes do not bump generation");

    let mut replaced = patched.clone();
    replaced.spec.size = 2;
    replaced.status = Some(WidgetStatus { observed: Some(42) });
    let replaced = widgets.replace("w", &PostParams::default(), &replaced).await.unwrap();
    assert_eq!(replaced.spec.size, 2);
    assert_eq!(replaced.status.unwrap().observed, Some(1), "main-resource writes keep status");
    assert_eq!(replaced.metadata.generation, Some(2));

    let applied = json!({
        "apiVersion": "example.capms.dev/v1", "kind": "Widget",
        "metadata": { "name": "w" }, "status": { "observed": 2 },
    });
    let status_applied = widgets
        .patch_status("w", &PatchParams::apply("ctrl").force(), &Patch::Apply(&applied))
        .await
        .unwrap();
    assert_eq!(status_applied.status.unwrap().observed, Some(2));
}

#[tokio::test]
async fn delete_waits_for_finalizers() {
    let (server, client) = setup();
    let secrets: Api<Secret> = Api::namespaced(client, "default");
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("s".to_owned()),
            finalizers: Some(vec!["example.capms.dev/keep".to_owned()]),
            ..ObjectMeta::default()
        },
        ..Secret::default()
    };
    secrets.create(&PostParams::default(), &secret).await.unwrap();
    let deleting = secrets.delete("s", &DeleteParams::default()).await.unwrap().left().expect("the object");
    assert!(deleting.metadata.deletion_timestamp.is_some());
    assert!(secrets.get("s").await.is_ok(), "kept while a finalizer remains");
    secrets.delete("s", &DeleteParams::default()).await.expect("deleting again is fine");

    let added = json!({ "metadata": { "finalizers": ["example.capms.dev/keep", "another"] } });
    let refused = secrets.patch("s", &PatchParams::default(), &Patch::Merge(&added)).await.unwrap_err();
    assert_eq!(api_error(refused).0, 422);

    let removed = json!({ "metadata": { "finalizers": null } });
    secrets.patch("s", &PatchParams::default(), &Patch::Merge(&removed)).await.unwrap();
    assert_eq!(api_error(secrets.get("s").await.unwrap_err()).0, 404);
    assert!(server.get::<Secret>(Some("default"), "s").is_none());

    // Without finalizers the object goes at once.
    secrets
        .create(
            &PostParams::default(),
            &Secret {
                metadata: ObjectMeta { name: Some("t".to_owned()), ..ObjectMeta::default() },
                ..Secret::default()
            },
        )
        .await
        .unwrap();
    secrets.delete("t", &DeleteParams::default()).await.unwrap();
    assert!(secrets.get_opt("t").await.unwrap().is_none());
}

#[tokio::test]
async fn label_and_field_selectors_of_each_form() {
    let (_server, client) = setup();
    let configmaps: Api<ConfigMap> = Api::namespaced(client, "default");
    for (name, labels) in [
        ("a", vec![("tier", "web"), ("env", "prod")]),
        ("b", vec![("tier", "db"), ("env", "prod")]),
        ("c", vec![("tier", "web")]),
    ] {
        configmaps.create(&PostParams::default(), &configmap(name, &labels)).await.unwrap();
    }
    let cases = [
        ("tier=web", "a,c"),
        ("tier==web", "a,c"),
        ("tier!=web", "b"),
        ("env in (prod,staging)", "a,b"),
        ("env notin (prod)", "c"),
        ("env", "a,b"),
        ("!env", "c"),
        ("tier=web,env", "a"),
    ];
    for (selector, expected) in cases {
        let list = configmaps.list(&ListParams::default().labels(selector)).await.unwrap();
        let names: Vec<String> = list.items.iter().map(ResourceExt::name_any).collect();
        assert_eq!(names.join(","), expected, "{selector}");
    }
    let by_name = configmaps.list(&ListParams::default().fields("metadata.name=b")).await.unwrap();
    assert_eq!(by_name.items.len(), 1);
    let not_in_other =
        configmaps.list(&ListParams::default().fields("metadata.namespace!=default")).await.unwrap();
    assert!(not_in_other.items.is_empty());
}

#[tokio::test]
async fn lists_paginate() {
    let (server, client) = setup();
    for index in 0..7 {
        server.insert(&configmap(&format!("cm-{index}"), &[])).unwrap();
    }
    let configmaps: Api<ConfigMap> = Api::namespaced(client, "default");
    let first = configmaps.list(&ListParams::default().limit(3)).await.unwrap();
    assert_eq!(first.items.len(), 3);
    let token = first.metadata.continue_.clone().expect("more pages");
    let second = configmaps.list(&ListParams::default().limit(3).continue_token(&token)).await.unwrap();
    let third = configmaps
        .list(&ListParams::default().limit(3).continue_token(second.metadata.continue_.as_deref().unwrap()))
        .await
        .unwrap();
    assert_eq!(third.items.len(), 1);
    assert!(third.metadata.continue_.is_none());
    assert_eq!(third.metadata.resource_version, first.metadata.resource_version);
}

#[tokio::test]
async fn deleting_an_owner_collects_its_dependents() {
    let (server, client) = setup();
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let owner = configmaps.create(&PostParams::default(), &configmap("owner", &[])).await.unwrap();
    let reference = OwnerReference {
        api_version: "v1".to_owned(),
        kind: "ConfigMap".to_owned(),
        name: "owner".to_owned(),
        uid: owner.uid().unwrap(),
        ..OwnerReference::default()
    };
    for name in ["dependent", "orphan-to-be"] {
        let mut dependent = configmap(name, &[]);
        dependent.metadata.owner_references = Some(vec![reference.clone()]);
        configmaps.create(&PostParams::default(), &dependent).await.unwrap();
    }
    configmaps.delete("owner", &DeleteParams::default()).await.unwrap();
    assert!(configmaps.get_opt("dependent").await.unwrap().is_none());
    assert!(configmaps.get_opt("orphan-to-be").await.unwrap().is_none());

    // Orphan keeps dependents and strips the reference.
    let owner = configmaps.create(&PostParams::default(), &configmap("owner", &[])).await.unwrap();
    let mut dependent = configmap("kept", &[]);
    dependent.metadata.owner_references =
        Some(vec![OwnerReference { uid: owner.uid().unwrap(), ..reference }]);
    configmaps.create(&PostParams::default(), &dependent).await.unwrap();
    let orphan =
        DeleteParams { propagation_policy: Some(PropagationPolicy::Orphan), ..DeleteParams::default() };
    configmaps.delete("owner", &orphan).await.unwrap();
    let kept = configmaps.get("kept").await.unwrap();
    assert!(kept.metadata.owner_references.is_none());
    assert_eq!(server.collect_garbage(), 0);
}

#[tokio::test]
async fn watch_from_a_resource_version_with_bookmarks_and_timeout() {
    let (_server, client) = setup();
    let configmaps: Api<ConfigMap> = Api::namespaced(client, "default");
    configmaps.create(&PostParams::default(), &configmap("before", &[])).await.unwrap();
    let version = configmaps.list(&ListParams::default()).await.unwrap().metadata.resource_version.unwrap();
    configmaps.create(&PostParams::default(), &configmap("after", &[])).await.unwrap();
    configmaps
        .patch("after", &PatchParams::default(), &Patch::Merge(json!({ "data": { "k": "v" } })))
        .await
        .unwrap();
    configmaps.delete("after", &DeleteParams::default()).await.unwrap();

    let params = WatchParams::default().timeout(1);
    let events: Vec<WatchEvent<ConfigMap>> =
        tokio::time::timeout(PATIENCE, configmaps.watch(&params, &version).await.unwrap().try_collect())
            .await
            .expect("the stream ends at timeoutSeconds")
            .unwrap();
    let kinds: Vec<String> = events
        .iter()
        .map(|event| match event {
            WatchEvent::Added(object) => format!("ADDED {}", object.name_any()),
            WatchEvent::Modified(object) => format!("MODIFIED {}", object.name_any()),
            WatchEvent::Deleted(object) => format!("DELETED {}", object.name_any()),
            WatchEvent::Bookmark(_) => "BOOKMARK".to_owned(),
            WatchEvent::Error(status) => format!("ERROR {}", status.code),
        })
        .collect();
    assert_eq!(kinds, ["ADDED after", "MODIFIED after", "DELETED after", "BOOKMARK"]);
}

#[tokio::test]
async fn expired_history_answers_410_and_the_watcher_relists() {
    let (server, client) = setup();
    let configmaps: Api<ConfigMap> = Api::namespaced(client, "default");
    configmaps.create(&PostParams::default(), &configmap("first", &[])).await.unwrap();
    let old = server.resource_version().to_string();
    configmaps.create(&PostParams::default(), &configmap("second", &[])).await.unwrap();
    server.expire_history();
    let mut stream = configmaps.watch(&WatchParams::default(), &old).await.unwrap().boxed();
    match stream.next().await {
        Some(Ok(WatchEvent::Error(status))) => {
            assert_eq!((status.code, status.reason.as_str()), (410, "Expired"))
        }
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }

    let mut events = watcher(configmaps.clone(), watcher::Config::default()).boxed();
    wait_for_name(&mut events, "second").await;
    // The watch resumes from a version the server forgot: 410, re-list, and later objects show.
    configmaps.create(&PostParams::default(), &configmap("third", &[])).await.unwrap();
    server.drop_watches();
    configmaps.create(&PostParams::default(), &configmap("fourth", &[])).await.unwrap();
    server.expire_history();
    wait_for_name(&mut events, "fourth").await;
    assert_eq!(lists(&server), 2, "the 410 made the watcher list again");
}

/// How many list requests (GETs of a collection that are not watches) the server saw.
fn lists(server: &FakeApiServer) -> usize {
    server
        .request_log()
        .iter()
        .filter(|request| request.method == "GET" && !request.query.contains("watch=true"))
        .filter(|request| request.path.ends_with("configmaps"))
        .count()
}

#[tokio::test]
async fn the_watcher_recovers_from_dropped_watches() {
    let (server, client) = setup();
    let configmaps: Api<ConfigMap> = Api::namespaced(client, "default");
    let mut events = watcher(configmaps.clone(), watcher::Config::default()).boxed();
    configmaps.create(&PostParams::default(), &configmap("first", &[])).await.unwrap();
    wait_for_name(&mut events, "first").await;
    for round in 0..3 {
        server.drop_watches();
        let name = format!("after-drop-{round}");
        configmaps.create(&PostParams::default(), &configmap(&name, &[])).await.unwrap();
        wait_for_name(&mut events, &name).await;
    }
    assert_eq!(lists(&server), 1, "dropped watches resume without listing again");
}

/// Drains watcher events (errors included: the watcher retries) until `name` is applied.
async fn wait_for_name(
    events: &mut (impl futures::Stream<Item = Result<watcher::Event<ConfigMap>, watcher::Error>> + Unpin),
    name: &str,
) {
    let seen = async {
        while let Some(event) = events.next().await {
            if let Ok(watcher::Event::Apply(object) | watcher::Event::InitApply(object)) = event
                && object.name_any() == name
            {
                return;
            }
        }
        panic!("the watcher stream ended before {name} appeared");
    };
    tokio::time::timeout(PATIENCE, seen).await.unwrap_or_else(|_| panic!("{name} never appeared"));
}

#[tokio::test]
async fn a_thousand_objects_through_the_watcher_pages() {
    let (server, client) = setup();
    for index in 0..1000 {
        server.insert(&configmap(&format!("cm-{index:04}"), &[])).unwrap();
    }
    let configmaps: Api<ConfigMap> = Api::all(client);
    let mut events = watcher(configmaps, watcher::Config::default()).boxed();
    let mut applied = 0;
    let done = async {
        while let Some(event) = events.next().await {
            match event.unwrap() {
                watcher::Event::InitApply(_) => applied += 1,
                watcher::Event::InitDone => return,
                _ => {}
            }
        }
    };
    tokio::time::timeout(PATIENCE, done).await.expect("the initial list completes");
    assert_eq!(applied, 1000);
    assert_eq!(lists(&server), 2, "pages of 500");
}

#[tokio::test]
async fn injected_faults_surface_as_api_errors() {
    let (server, client) = setup();
    let configmaps: Api<ConfigMap> = Api::namespaced(client, "default");
    configmaps.create(&PostParams::default(), &configmap("cm", &[])).await.unwrap();
    server.fail_next(1, 503);
    assert_eq!(api_error(configmaps.get("cm").await.unwrap_err()), (503, "ServiceUnavailable".to_owned()));
    configmaps.get("cm").await.expect("one fault only");

    server.fail_randomly(FaultTarget::Writes, 1.0, 500, 7);
    let refused = configmaps.create(&PostParams::default(), &configmap("other", &[])).await.unwrap_err();
    assert_eq!(api_error(refused).0, 500);
    configmaps.list(&ListParams::default()).await.expect("reads are not targeted");
    server.stop_failing();
    configmaps.create(&PostParams::default(), &configmap("other", &[])).await.unwrap();
}

#[tokio::test]
async fn unknown_resources_are_not_found_until_their_crd_is_created() {
    let (_server, client) = setup();
    let gadgets: Api<Gadget> = Api::namespaced(client.clone(), "default");
    let gadget = Gadget::new("g", GadgetSpec { color: "red".to_owned() });
    assert_eq!(
        api_error(gadgets.list(&ListParams::default()).await.unwrap_err()),
        (404, "NotFound".to_owned())
    );
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    crds.create(&PostParams::default(), &Gadget::crd()).await.unwrap();
    crds.get(&Gadget::crd().name_any()).await.expect("the CRD object is stored");
    gadgets.create(&PostParams::default(), &gadget).await.expect("served once the CRD exists");
}

#[tokio::test]
async fn events_published_by_the_recorder_are_recorded() {
    let (server, client) = setup();
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let object = configmaps.create(&PostParams::default(), &configmap("cm", &[])).await.unwrap();
    let recorder =
        Recorder::new(client.clone(), Reporter { controller: "capms-test".to_owned(), instance: None });
    let event = Event {
        type_: EventType::Normal,
        reason: "Reconciled".to_owned(),
        note: Some("all good".to_owned()),
        action: "Reconcile".to_owned(),
        secondary: None,
    };
    let reference = object.object_ref(&());
    recorder.publish(&event, &reference).await.unwrap();
    recorder.publish(&event, &reference).await.expect("the repeat is a merge patch of the series");
    let core: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(configmaps.into_client(), "default");
    let legacy = k8s_openapi::api::core::v1::Event {
        metadata: ObjectMeta { name: Some("legacy".to_owned()), ..ObjectMeta::default() },
        involved_object: reference.clone(),
        reason: Some("Legacy".to_owned()),
        message: Some("core/v1".to_owned()),
        ..Default::default()
    };
    core.create(&PostParams::default(), &legacy).await.unwrap();
    let events = server.events();
    assert_eq!(events.len(), 2);
    assert_eq!((events[0].api_version.as_str(), events[0].note.as_str()), ("v1", "core/v1"));
    let events = &events[1..];
    assert_eq!(events[0].api_version, "events.k8s.io/v1");
    assert_eq!((events[0].reason.as_str(), events[0].note.as_str()), ("Reconciled", "all good"));
    assert_eq!((events[0].regarding_kind.as_str(), events[0].regarding_name.as_str()), ("ConfigMap", "cm"));
}

#[tokio::test]
async fn request_shapes_are_logged() {
    let (server, client) = setup();
    let widgets: Api<Widget> = Api::namespaced(client, "default");
    widgets.create(&PostParams::default(), &widget("w", 1)).await.unwrap();
    server.clear_request_log();
    let status = json!({ "status": { "observed": 1 } });
    widgets.patch_status("w", &PatchParams::apply("capms").force(), &Patch::Apply(&status)).await.unwrap();
    let log = server.request_log();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].method, "PATCH");
    assert_eq!(log[0].path, "/apis/example.capms.dev/v1/namespaces/default/widgets/w/status");
    assert!(log[0].query.contains("fieldManager=capms") && log[0].query.contains("force=true"));
    assert_eq!(log[0].content_type.as_deref(), Some("application/apply-patch+yaml"));
}

#[tokio::test]
async fn wait_until_is_bounded() {
    let (server, _client) = setup();
    let never = server.wait_until(WaitBound::Timeout(Duration::from_millis(10)), |_| false).await;
    assert_eq!(never, Err(WaitError::TimedOut(Duration::from_millis(10))));
    let writer = server.clone();
    let background = tokio::spawn(async move {
        for index in 0..3 {
            writer.insert(&configmap(&format!("cm-{index}"), &[])).unwrap();
            tokio::task::yield_now().await;
        }
    });
    let counted = server.wait_until(WaitBound::Changes(2), |_| false).await;
    assert_eq!(counted, Err(WaitError::TooManyChanges(2)));
    background.await.unwrap();
    server
        .wait_until(WaitBound::Changes(0), |server| server.list::<ConfigMap>().len() == 3)
        .await
        .expect("already true");
}

#[derive(Debug, thiserror::Error)]
#[error(transparent)]
struct ReconcileError(#[from] kube::Error);

async fn reconcile(widget: Arc<Widget>, client: Arc<Client>) -> Result<Action, ReconcileError> {
    let widgets: Api<Widget> = Api::namespaced((*client).clone(), &widget.namespace().unwrap_or_default());
    let status = json!({ "status": { "observed": widget.spec.size } });
    widgets.patch_status(&widget.name_any(), &PatchParams::default(), &Patch::Merge(&status)).await?;
    Ok(Action::await_change())
}

#[tokio::test]
async fn a_controller_reconciles_through_the_fake() {
    run_controller_scenario().await;
}

/// Paused tokio time jumps timers (watch timeouts, backoffs) whenever the runtime is idle:
/// the controller must still converge, not spin or hang.
#[tokio::test(start_paused = true)]
async fn a_controller_reconciles_under_paused_time() {
    run_controller_scenario().await;
}

async fn run_controller_scenario() {
    let (server, client) = setup();
    let widgets: Api<Widget> = Api::all(client.clone());
    let controller = Controller::new(widgets, watcher::Config::default())
        .run(reconcile, |_, _, _| Action::requeue(Duration::from_secs(1)), Arc::new(client.clone()))
        .for_each(|_| async {});
    let running = tokio::spawn(controller);

    let namespaced: Api<Widget> = Api::namespaced(client, "default");
    namespaced.create(&PostParams::default(), &widget("w", 3)).await.unwrap();
    let observed = |size| {
        move |server: &FakeApiServer| {
            server.get::<Widget>(Some("default"), "w").and_then(|w| w.status).and_then(|s| s.observed)
                == Some(size)
        }
    };
    server
        .wait_until(WaitBound::Timeout(PATIENCE), observed(3))
        .await
        .expect("the controller set the status");

    namespaced
        .patch("w", &PatchParams::default(), &Patch::Merge(json!({ "spec": { "size": 5 } })))
        .await
        .unwrap();
    server
        .wait_until(WaitBound::Timeout(PATIENCE), observed(5))
        .await
        .expect("the controller saw the change");

    // Faults and dropped watches do not stop it either.
    server.fail_next(2, 500);
    server.drop_watches();
    namespaced
        .patch("w", &PatchParams::default(), &Patch::Merge(json!({ "spec": { "size": 8 } })))
        .await
        .ok();
    server.stop_failing();
    namespaced
        .patch("w", &PatchParams::default(), &Patch::Merge(json!({ "spec": { "size": 9 } })))
        .await
        .unwrap();
    server.wait_until(WaitBound::Timeout(PATIENCE), observed(9)).await.expect("the controller recovered");
    running.abort();
}

#[tokio::test]
async fn streaming_lists_and_metadata_watchers_work() {
    let (server, client) = setup();
    server.insert(&configmap("seeded", &[])).unwrap();
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let mut streaming = watcher(configmaps.clone(), watcher::Config::default().streaming_lists()).boxed();
    wait_for_name(&mut streaming, "seeded").await;
    configmaps.create(&PostParams::default(), &configmap("later", &[])).await.unwrap();
    wait_for_name(&mut streaming, "later").await;
    assert_eq!(lists(&server), 0, "a streaming list never lists");

    let metadata_api: Api<PartialObjectMeta<ConfigMap>> = Api::namespaced(client, "default");
    let mut metadata = watcher(metadata_api, watcher::Config::default()).boxed();
    let seen = async {
        while let Some(event) = metadata.next().await {
            if let Ok(watcher::Event::InitApply(object)) = event
                && object.name_any() == "later"
            {
                return object;
            }
        }
        panic!("the metadata watcher ended");
    };
    let object = tokio::time::timeout(PATIENCE, seen).await.expect("metadata arrives");
    assert_eq!(object.types.map(|types| types.kind).as_deref(), Some("PartialObjectMetadata"));
}

#[tokio::test]
async fn selector_watches_see_objects_enter_and_leave() {
    let (_server, client) = setup();
    let configmaps: Api<ConfigMap> = Api::namespaced(client, "default");
    configmaps.create(&PostParams::default(), &configmap("cm", &[("tier", "db")])).await.unwrap();
    let version = configmaps.list(&ListParams::default()).await.unwrap().metadata.resource_version.unwrap();
    let relabel = |tier: &str| Patch::Merge(json!({ "metadata": { "labels": { "tier": tier } } }));
    configmaps.patch("cm", &PatchParams::default(), &relabel("web")).await.unwrap();
    configmaps.patch("cm", &PatchParams::default(), &relabel("web-2")).await.unwrap();
    let params = WatchParams::default().labels("tier in (web)").timeout(1).disable_bookmarks();
    let events: Vec<WatchEvent<ConfigMap>> =
        tokio::time::timeout(PATIENCE, configmaps.watch(&params, &version).await.unwrap().try_collect())
            .await
            .expect("the stream ends at timeoutSeconds")
            .unwrap();
    assert!(matches!(events.as_slice(), [WatchEvent::Added(_), WatchEvent::Deleted(_)]), "{events:?}");
}

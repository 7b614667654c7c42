//! What tests do to the fake directly: register kinds, seed and read objects, inject faults,
//! inspect requests and events, wait for a condition.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::ApiError;
use crate::faults::FaultTarget;
use crate::object::{ObjectKey, meta_str, present};
use crate::registry::ResourceType;
use crate::server::FakeApiServer;
use crate::state::RequestRecord;
use crate::verbs::Target;

/// An Event (core/v1 or events.k8s.io/v1) flattened for assertions; absent fields are `""`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    /// `v1` or `events.k8s.io/v1`.
    pub api_version: String,
    pub namespace: String,
    pub name: String,
    /// `Normal` or `Warning`.
    pub event_type: String,
    pub reason: String,
    /// `note` (events.k8s.io) or `message` (core).
    pub note: String,
    /// `action` (events.k8s.io only).
    pub action: String,
    /// `regarding` (events.k8s.io) or `involvedObject` (core): kind and name.
    pub regarding_kind: String,
    pub regarding_name: String,
}

/// How long [`FakeApiServer::wait_until`] waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitBound {
    /// At most this many committed changes (resourceVersions) after the first check. Waits
    /// forever if nothing changes: pair it with a timeout when that can happen.
    Changes(u64),
    /// At most this long, measured by tokio's clock (so paused test time works).
    Timeout(Duration),
}

/// The condition of [`FakeApiServer::wait_until`] did not hold in time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WaitError {
    #[error("the condition did not hold after {0} changes")]
    TooManyChanges(u64),
    #[error("the condition did not hold within {0:?}")]
    TimedOut(Duration),
}

impl FakeApiServer {
    /// Serves one more resource (or more versions of a known one).
    pub fn register(&self, resource: ResourceType) {
        self.lock().registry.register(resource);
    }

    /// Serves every served version of a CRD (plural, scope, status subresource), without
    /// storing the CRD object itself.
    pub fn register_crd(&self, crd: &CustomResourceDefinition) -> Result<(), ApiError> {
        let crd = serde_json::to_value(crd).map_err(|error| ApiError::bad_request(error.to_string()))?;
        self.register(ResourceType::from_crd(&crd)?);
        Ok(())
    }

    /// Stores the CRD object as `kubectl apply` would, which also serves its versions.
    pub fn install_crd(&self, crd: &CustomResourceDefinition) -> Result<CustomResourceDefinition, ApiError> {
        self.insert(crd)
    }

    /// The last committed resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.lock().resource_version
    }

    /// Creates an object as a POST would (generateName, uid, ... ), without faults or logging.
    /// The namespace of a namespaced object defaults to `default`.
    pub fn insert_json(&self, object: Value) -> Result<Value, ApiError> {
        let mut state = self.lock();
        let api_version = object["apiVersion"].as_str().unwrap_or_default();
        let kind = object["kind"].as_str().unwrap_or_default();
        let resource = state.registry.find_kind(api_version, kind).cloned().ok_or_else(|| {
            ApiError::new(404, "NotFound", format!("no resource serves {api_version} {kind}"))
        })?;
        let namespace =
            resource.namespaced.then(|| meta_str(&object, "namespace").unwrap_or("default").to_owned());
        let version = api_version.rsplit('/').next().unwrap_or(api_version).to_owned();
        let target = Target { resource, version, namespace, name: None, status: false, metadata_only: false };
        state.create(&target, object, false, None)
    }

    /// Typed [`FakeApiServer::insert_json`].
    pub fn insert<K>(&self, object: &K) -> Result<K, ApiError>
    where
        K: kube::Resource<DynamicType = ()> + Serialize + DeserializeOwned,
    {
        let mut value =
            serde_json::to_value(object).map_err(|error| ApiError::bad_request(error.to_string()))?;
        if let Some(map) = value.as_object_mut() {
            map.insert("apiVersion".to_owned(), Value::String(K::api_version(&()).into_owned()));
            map.insert("kind".to_owned(), Value::String(K::kind(&()).into_owned()));
        }
        let stored = self.insert_json(value)?;
        serde_json::from_value(stored).map_err(|error| ApiError::new(500, "InternalError", error.to_string()))
    }

    /// One stored object as JSON, shown at `api_version`; `namespace` is `None` for cluster-scoped.
    pub fn get_json(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let state = self.lock();
        let resource = state.registry.find_kind(api_version, kind)?;
        let key = ObjectKey {
            group: resource.group.clone(),
            plural: resource.plural.clone(),
            namespace: namespace.unwrap_or_default().to_owned(),
            name: name.to_owned(),
        };
        state.objects.get(&key).map(|object| present(object, api_version, false))
    }

    /// Every stored object of a kind, all namespaces, in (namespace, name) order.
    pub fn list_json(&self, api_version: &str, kind: &str) -> Vec<Value> {
        let state = self.lock();
        let Some(resource) = state.registry.find_kind(api_version, kind) else { return Vec::new() };
        state
            .objects
            .iter()
            .filter(|(key, _)| key.group == resource.group && key.plural == resource.plural)
            .map(|(_, object)| present(object, api_version, false))
            .collect()
    }

    /// Typed [`FakeApiServer::get_json`]; an object that does not decode as `K` reads as `None`
    /// (and is logged).
    pub fn get<K>(&self, namespace: Option<&str>, name: &str) -> Option<K>
    where
        K: kube::Resource<DynamicType = ()> + DeserializeOwned,
    {
        let value = self.get_json(&K::api_version(&()), &K::kind(&()), namespace, name)?;
        decode(value)
    }

    /// Typed [`FakeApiServer::list_json`].
    pub fn list<K>(&self) -> Vec<K>
    where
        K: kube::Resource<DynamicType = ()> + DeserializeOwned,
    {
        self.list_json(&K::api_version(&()), &K::kind(&())).into_iter().filter_map(decode).collect()
    }

    /// A snapshot of every stored object, in (group, plural, namespace, name) order.
    pub fn objects(&self) -> Vec<Value> {
        self.lock().objects.values().cloned().collect()
    }

    /// Every core/v1 and events.k8s.io/v1 Event, flattened.
    pub fn events(&self) -> Vec<RecordedEvent> {
        let mut events = self.list_json("v1", "Event");
        events.extend(self.list_json("events.k8s.io/v1", "Event"));
        events.iter().map(flatten_event).collect()
    }

    /// The requests received so far (at most `limits.max_request_log`, oldest dropped).
    pub fn request_log(&self) -> Vec<RequestRecord> {
        self.lock().request_log.iter().cloned().collect()
    }

    pub fn clear_request_log(&self) {
        self.lock().request_log.clear();
    }

    /// The next `count` resource requests answer `code` (a Status with the matching reason).
    pub fn fail_next(&self, count: usize, code: u16) {
        self.fail_next_for(FaultTarget::All, count, code);
    }

    /// The next `count` resource requests of `target` answer `code`.
    pub fn fail_next_for(&self, target: FaultTarget, count: usize, code: u16) {
        self.lock().faults.queue(target, count, code);
    }

    /// Each request of `target` answers `code` with `probability`, drawn from a ChaCha RNG
    /// seeded with `seed` (after any queued faults).
    pub fn fail_randomly(&self, target: FaultTarget, probability: f64, code: u16, seed: u64) {
        self.lock().faults.randomly(target, probability, code, seed);
    }

    /// Removes every queued and random fault.
    pub fn stop_failing(&self) {
        self.lock().faults.clear();
    }

    /// Ends every open watch stream (after the events already queued); watchers must re-watch.
    pub fn drop_watches(&self) {
        self.lock().drop_watches();
    }

    /// Forgets the change history: a watch from any earlier resourceVersion gets 410 Expired.
    pub fn expire_history(&self) {
        self.lock().expire_history();
    }

    /// Sends a BOOKMARK with the current resourceVersion to watches that allow bookmarks.
    pub fn send_bookmarks(&self) {
        self.lock().send_bookmarks();
    }

    /// How many watch streams are open.
    pub fn open_watches(&self) -> usize {
        self.lock().open_watches()
    }

    /// Turns automatic garbage collection (on by default) on or off.
    pub fn set_garbage_collection(&self, enabled: bool) {
        self.lock().garbage_collection = enabled;
    }

    /// Deletes every object all of whose owners are gone; returns how many deletions began.
    pub fn collect_garbage(&self) -> usize {
        self.lock().collect_garbage()
    }

    /// Waits until `predicate` holds, checking now and after every committed change.
    pub async fn wait_until(
        &self,
        bound: WaitBound,
        mut predicate: impl FnMut(&FakeApiServer) -> bool,
    ) -> Result<(), WaitError> {
        let mut changes = self.lock().changes.subscribe();
        let mut waiting = async || {
            let start = *changes.borrow_and_update();
            loop {
                if predicate(self) {
                    return Ok(());
                }
                let seen = changes.borrow().saturating_sub(start);
                if let WaitBound::Changes(limit) = bound
                    && seen >= limit
                {
                    return Err(WaitError::TooManyChanges(limit));
                }
                // The sender lives as long as the state, which `self` keeps alive.
                if changes.changed().await.is_err() {
                    return Err(WaitError::TooManyChanges(seen));
                }
            }
        };
        match bound {
            WaitBound::Timeout(limit) => {
                tokio::time::timeout(limit, waiting()).await.unwrap_or(Err(WaitError::TimedOut(limit)))
            }
            WaitBound::Changes(_) => waiting().await,
        }
    }
}

fn decode<K: DeserializeOwned>(value: Value) -> Option<K> {
    serde_json::from_value(value)
        .inspect_err(|error| tracing::warn!(%error, "fake apiserver: stored object does not decode"))
        .ok()
}

fn flatten_event(event: &Value) -> RecordedEvent {
    let text = |value: &Value| value.as_str().unwrap_or_default().to_owned();
    let core = event["apiVersion"] == "v1";
    let (note, regarding) = if core {
        (&event["message"], &event["involvedObject"])
    } else {
        (&event["note"], &event["regarding"])
    };
    RecordedEvent {
        api_version: text(&event["apiVersion"]),
        namespace: text(&event["metadata"]["namespace"]),
        name: text(&event["metadata"]["name"]),
        event_type: text(&event["type"]),
        reason: text(&event["reason"]),
        note: text(note),
        action: text(&event["action"]),
        regarding_kind: text(&regarding["kind"]),
        regarding_name: text(&regarding["name"]),
    }
}

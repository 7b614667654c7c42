//! Applying a reconcile's outcome to the management cluster.
//!
//! Expected flow, per outcome:
//! 1. Events are published (reasons from core's closed `EventReason` enum).
//! 2. Metadata and spec changes (finalizer, labels, providerID and other write-backs) go in one
//!    JSON patch that starts with `test /metadata/resourceVersion`: it applies only to the
//!    version the reconcile read, so a reconcile on stale inputs never writes (409/422 →
//!    [`OperatorError::Conflict`], retried after 200 ms, doubling per conflict in a row, or at
//!    the watch event of the newer version, whichever comes first).
//! 3. The status goes to the status subresource by server-side apply under one field manager
//!    (`capms-manager`), and only when it differs from what is stored; the apply carries the
//!    resourceVersion after step 2, so it too applies only to the version the reconcile read.
//!
//! Guarantees: no write when nothing changed (a reconcile of a settled object is read-only);
//! a removed finalizer is the last write on an object (nothing is written to an object that
//! may be gone).

use crate::error::{OperatorError, is_conflict};
use capms_core::reconcile::{Event, EventType, FinalizerAction};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event as KubeEvent, EventType as KubeEventType, Recorder};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fmt::Debug;

/// The field manager of every server-side apply of the manager.
pub const FIELD_MANAGER: &str = "capms-manager";

/// Publishes `events` about `object`. A failed event is logged, never fails the reconcile.
pub async fn publish_events<K: Resource<DynamicType = ()>>(
    recorder: &Recorder,
    object: &K,
    events: &[Event],
) {
    for event in events {
        let type_ = match event.type_ {
            EventType::Normal => KubeEventType::Normal,
            EventType::Warning => KubeEventType::Warning,
        };
        publish_event(recorder, object, type_, event.reason.as_str(), &event.message).await;
    }
}

/// Publishes one event about `object`; a failure is logged, never fails the reconcile.
pub async fn publish_event<K: Resource<DynamicType = ()>>(
    recorder: &Recorder,
    object: &K,
    type_: KubeEventType,
    reason: &str,
    note: &str,
) {
    let event = KubeEvent {
        type_,
        reason: reason.to_string(),
        note: Some(note.to_string()),
        action: "Reconcile".to_string(),
        secondary: None,
    };
    if let Err(error) = recorder.publish(&event, &object.object_ref(&())).await {
        tracing::warn!(reason, %error, "cannot publish event");
    }
}

/// The JSON-patch operations that change an object's metadata and spec.
#[derive(Debug, Default)]
pub struct MetadataPatch {
    operations: Vec<Value>,
}

/// Escapes a key for a JSON pointer (RFC 6901).
fn pointer_segment(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

impl MetadataPatch {
    /// Adds or removes `finalizer` as `action` says, if that changes anything.
    pub fn finalizer(&mut self, meta: &ObjectMeta, finalizer: &str, action: FinalizerAction) {
        let current: Vec<String> = meta.finalizers.clone().unwrap_or_default();
        let present = current.iter().any(|existing| existing == finalizer);
        let wanted: Vec<String> = match action {
            FinalizerAction::Add if !present => {
                current.iter().cloned().chain([finalizer.to_string()]).collect()
            }
            FinalizerAction::Remove if present => {
                current.iter().filter(|f| *f != finalizer).cloned().collect()
            }
            _ => return,
        };
        self.operations.push(json!({"op": "add", "path": "/metadata/finalizers", "value": wanted}));
    }

    /// Sets `labels` that differ.
    pub fn labels(&mut self, meta: &ObjectMeta, labels: &BTreeMap<String, String>) {
        let current = meta.labels.clone().unwrap_or_default();
        let changed: Vec<(&String, &String)> =
            labels.iter().filter(|(key, value)| current.get(*key) != Some(*value)).collect();
        if changed.is_empty() {
            return;
        }
        if meta.labels.is_none() {
            self.operations.push(json!({"op": "add", "path": "/metadata/labels", "value": {}}));
        }
        for (key, value) in changed {
            let path = format!("/metadata/labels/{}", pointer_segment(key));
            self.operations.push(json!({"op": "add", "path": path, "value": value}));
        }
    }

    /// Removes the label `key` if present.
    pub fn remove_label(&mut self, meta: &ObjectMeta, key: &str) {
        let present = meta.labels.as_ref().is_some_and(|labels| labels.contains_key(key));
        if present {
            let path = format!("/metadata/labels/{}", pointer_segment(key));
            self.operations.push(json!({"op": "remove", "path": path}));
        }
    }

    /// Sets `spec.<field>` (a JSON name) to `value` when it differs from `current`.
    pub fn spec_field<T: Serialize + PartialEq>(
        &mut self,
        field: &str,
        current: Option<&T>,
        value: Option<&T>,
    ) {
        let Some(value) = value else { return };
        if current == Some(value) {
            return;
        }
        let path = format!("/spec/{}", pointer_segment(field));
        self.operations.push(json!({"op": "add", "path": path, "value": value}));
    }

    pub fn is_empty(&self) -> bool {
        self.operations.is_empty()
    }

    /// Writes the patch, conditional on the resourceVersion `meta` was read at, and returns
    /// the object's resourceVersion after it (the one read if nothing was written).
    pub async fn apply<K>(self, api: &Api<K>, meta: &ObjectMeta) -> Result<String, OperatorError>
    where
        K: Resource<Scope = NamespaceResourceScope> + Clone + DeserializeOwned + Debug,
    {
        let read = meta.resource_version.clone().unwrap_or_default();
        if self.is_empty() {
            return Ok(read);
        }
        let mut operations = vec![json!({"op": "test", "path": "/metadata/resourceVersion", "value": read})];
        operations.extend(self.operations);
        let patch: json_patch::Patch = serde_json::from_value(Value::Array(operations))?;
        let name = meta.name.clone().unwrap_or_default();
        match api.patch(&name, &PatchParams::default(), &Patch::<()>::Json(patch)).await {
            Ok(written) => Ok(written.meta().resource_version.clone().unwrap_or_default()),
            Err(error) if is_conflict(&error) => Err(OperatorError::Conflict),
            Err(error) => Err(error.into()),
        }
    }
}

/// Writes `status` by server-side apply unless it equals the stored one. The apply carries
/// `version`, the resourceVersion the status was computed from (after the reconcile's own
/// metadata patch): if the object changed since, the apiserver answers 409 and nothing is
/// written, so a reconcile on a stale copy never overwrites a newer status.
pub async fn apply_status<K, S>(
    api: &Api<K>,
    object: &K,
    version: &str,
    stored: Option<&S>,
    status: &S,
) -> Result<(), OperatorError>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope> + Clone + DeserializeOwned + Debug,
    S: Serialize + PartialEq,
{
    if stored == Some(status) {
        return Ok(());
    }
    let body = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "metadata": {"name": object.name_any(), "resourceVersion": version},
        "status": status,
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    match api.patch_status(&object.name_any(), &params, &Patch::Apply(&body)).await {
        Ok(_) => Ok(()),
        // Gone meanwhile (the finalizer was removed by another replica): nothing to report.
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) if is_conflict(&error) => Err(OperatorError::Conflict),
        Err(error) => Err(error.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(finalizers: &[&str], labels: Option<&[(&str, &str)]>) -> ObjectMeta {
        ObjectMeta {
            finalizers: Some(finalizers.iter().map(|f| f.to_string()).collect()),
            labels: labels.map(|pairs| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn adding_a_present_finalizer_or_removing_an_absent_one_writes_nothing() {
        let mut patch = MetadataPatch::default();
        patch.finalizer(&meta(&["a"], None), "a", FinalizerAction::Add);
        patch.finalizer(&meta(&["a"], None), "b", FinalizerAction::Remove);
        patch.finalizer(&meta(&["a"], None), "a", FinalizerAction::Keep);
        assert!(patch.is_empty());
    }

    #[test]
    fn finalizers_of_others_are_kept() {
        let mut patch = MetadataPatch::default();
        patch.finalizer(&meta(&["other", "ours"], None), "ours", FinalizerAction::Remove);
        assert_eq!(
            patch.operations,
            vec![json!({"op": "add", "path": "/metadata/finalizers", "value": ["other"]})]
        );
    }

    #[test]
    fn label_keys_are_escaped_and_a_missing_map_is_created_first() {
        let mut patch = MetadataPatch::default();
        let labels = BTreeMap::from([("topology.kubernetes.io/zone".to_string(), "rack-1".to_string())]);
        patch.labels(&meta(&[], None), &labels);
        assert_eq!(
            patch.operations,
            vec![
                json!({"op": "add", "path": "/metadata/labels", "value": {}}),
                json!({"op": "add", "path": "/metadata/labels/topology.kubernetes.io~1zone", "value": "rack-1"}),
            ]
        );
    }

    #[test]
    fn only_a_present_label_is_removed() {
        let mut patch = MetadataPatch::default();
        patch.remove_label(&meta(&[], None), "a/b");
        patch.remove_label(&meta(&[], Some(&[("c", "d")])), "a/b");
        assert!(patch.is_empty());
        patch.remove_label(&meta(&[], Some(&[("a/b", "true")])), "a/b");
        assert_eq!(patch.operations, vec![json!({"op": "remove", "path": "/metadata/labels/a~1b"})]);
    }

    #[test]
    fn an_unchanged_spec_field_writes_nothing() {
        let mut patch = MetadataPatch::default();
        let id = "metal://mini-lab/abc".to_string();
        patch.spec_field("providerID", Some(&id), Some(&id));
        patch.spec_field::<String>("providerID", Some(&id), None);
        assert!(patch.is_empty());
    }
}

//! Small accessors on objects kept as JSON.

use serde_json::{Map, Value, json};

use crate::error::ApiError;

/// Where an object lives: ordered so that one resource's objects are contiguous.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct ObjectKey {
    pub group: String,
    pub plural: String,
    /// `""` for cluster-scoped objects.
    pub namespace: String,
    pub name: String,
}

/// `metadata.<field>` as a string.
pub(crate) fn meta_str<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    object["metadata"][field].as_str()
}

/// The object as a JSON map, or 400 for a body that is not an object.
pub(crate) fn as_map(object: &mut Value) -> Result<&mut Map<String, Value>, ApiError> {
    object.as_object_mut().ok_or_else(|| ApiError::bad_request("the body must be a JSON object"))
}

/// `metadata` as a map, created when absent.
pub(crate) fn metadata_mut(object: &mut Value) -> Result<&mut Map<String, Value>, ApiError> {
    as_map(object)?
        .entry("metadata")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .ok_or_else(|| ApiError::bad_request("metadata must be a JSON object"))
}

/// `metadata.finalizers`.
pub(crate) fn finalizers(object: &Value) -> Vec<String> {
    strings(&object["metadata"]["finalizers"])
}

/// The uids named in `metadata.ownerReferences`.
pub(crate) fn owner_uids(object: &Value) -> Vec<String> {
    object["metadata"]["ownerReferences"]
        .as_array()
        .map(|owners| owners.iter().filter_map(|owner| owner["uid"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

pub(crate) fn is_deleting(object: &Value) -> bool {
    !object["metadata"]["deletionTimestamp"].is_null()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| items.iter().filter_map(|item| item.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// Sets or, for `None`, removes a top-level or `metadata` field.
pub(crate) fn set_field(map: &mut Map<String, Value>, field: &str, value: Option<Value>) {
    match value {
        Some(value) if !value.is_null() => {
            map.insert(field.to_owned(), value);
        }
        _ => {
            map.remove(field);
        }
    }
}

/// Now, in the apiserver's `metav1.Time` format (RFC 3339, whole seconds, UTC).
pub(crate) fn now() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The object as served at `api_version`; metadata-only requests get `PartialObjectMetadata`.
pub(crate) fn present(object: &Value, api_version: &str, metadata_only: bool) -> Value {
    if metadata_only {
        return json!({
            "apiVersion": "meta.k8s.io/v1",
            "kind": "PartialObjectMetadata",
            "metadata": object["metadata"],
        });
    }
    let mut shown = object.clone();
    if let Some(map) = shown.as_object_mut() {
        map.insert("apiVersion".to_owned(), Value::String(api_version.to_owned()));
    }
    shown
}

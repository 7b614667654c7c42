//! PATCH: JSON merge patch, JSON patch, strategic merge patch (as merge patch) and an
//! approximation of server-side apply.
//!
//! Server-side apply, approximated: the applied object (JSON only, no YAML) is merged into the
//! existing one (objects merge key by key, lists and scalars are replaced whole: every list is
//! atomic, there are no list-map keys); an absent object is created. Each apply manager's fields
//! are recorded in `metadata.managedFields` (`operation: Apply`, `fieldsV1` with `f:` keys only).
//! A field another apply manager owns with a different value is a 409 conflict unless
//! `force=true`, which takes the field over. Fields a manager applied before and no longer
//! applies are removed unless another manager owns them. Non-apply writes record no managers
//! and never conflict. Only `labels`, `annotations`, `finalizers` and `ownerReferences` of
//! `metadata` are applied.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::object::{meta_str, metadata_mut, now};
use crate::route::Query;
use crate::state::State;
use crate::verbs::{Target, merge_write};

type Path = Vec<String>;

const APPLIED_METADATA: [&str; 4] = ["labels", "annotations", "finalizers", "ownerReferences"];

impl State {
    /// PATCH by content type; returns the HTTP code (201 when apply created the object).
    pub(crate) fn patch(
        &mut self,
        target: &Target,
        content_type: &str,
        body: &[u8],
        query: &Query,
    ) -> Result<(u16, Value), ApiError> {
        let media = content_type.split(';').next().unwrap_or_default().trim();
        if media == "application/apply-patch+yaml" {
            return self.apply(target, body, query);
        }
        let name = target.name()?.to_owned();
        let key = target.key(&name);
        let existing = self.objects.get(&key).cloned().ok_or_else(|| target.not_found(&name))?;
        let mut patched = existing.clone();
        match media {
            // Strategic merge patch is treated as a JSON merge patch: no patch strategies or
            // merge keys, so lists are replaced whole.
            "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
                json_patch::merge(&mut patched, &parse_json(body)?);
            }
            "application/json-patch+json" => self.json_patch(&mut patched, body)?,
            other => {
                return Err(ApiError::new(
                    415,
                    "UnsupportedMediaType",
                    format!("unsupported patch type {other:?}"),
                ));
            }
        }
        // A resourceVersion in the patch is a precondition, as in the apiserver.
        if let Some(version) = meta_str(&patched, "resourceVersion")
            && Some(version) != meta_str(&existing, "resourceVersion")
        {
            let resource = &target.resource;
            return Err(ApiError::conflict(&resource.resource_name(), &name));
        }
        let updated = merge_write(target, &existing, patched)?;
        Ok((200, self.finish_update(target, key, existing, updated, query.dry_run())?))
    }

    /// RFC 6902. A failed operation (a failing `test` included) answers 422 Invalid, as the
    /// apiserver does (it wraps the patch library's error into an Unprocessable Entity answer).
    fn json_patch(&self, object: &mut Value, body: &[u8]) -> Result<(), ApiError> {
        let patch: json_patch::Patch =
            serde_json::from_slice(body).map_err(|error| ApiError::bad_request(error.to_string()))?;
        if patch.0.len() > self.limits.max_json_patch_operations {
            return Err(ApiError::new(413, "RequestEntityTooLarge", "too many JSON patch operations"));
        }
        json_patch::patch(object, &patch.0).map_err(|error| ApiError::invalid(error.to_string()))
    }

    fn apply(&mut self, target: &Target, body: &[u8], query: &Query) -> Result<(u16, Value), ApiError> {
        let manager = query
            .get("fieldManager")
            .ok_or_else(|| ApiError::bad_request("PATCH of type apply requires fieldManager"))?
            .to_owned();
        let applied = parse_json(body)?;
        let name = target.name()?.to_owned();
        if let Some(sent) = meta_str(&applied, "name").filter(|sent| *sent != name) {
            return Err(ApiError::bad_request(format!("the name {sent:?} does not match the URL ({name})")));
        }
        let applied_part = applied_part(target, &applied);
        let fields = leaf_paths(&applied_part);
        let key = target.key(&name);
        let Some(existing) = self.objects.get(&key).cloned() else {
            return self.apply_create(target, applied, &manager, &fields, query);
        };
        if let Some(version) = meta_str(&applied, "resourceVersion")
            && Some(version) != meta_str(&existing, "resourceVersion")
        {
            return Err(ApiError::conflict(&target.resource.resource_name(), &name));
        }
        let mut managers = read_managers(&existing);
        let conflicts = conflicts(&managers, &manager, &fields, &existing, &applied_part, target.status);
        if !conflicts.is_empty() && !query.flag("force") {
            return Err(conflict_error(&conflicts));
        }
        take_over(&mut managers, &conflicts);
        let mut merged = existing.clone();
        let others: BTreeSet<Path> =
            managers.iter().filter(|entry| entry.manager != manager).flat_map(|e| e.fields.clone()).collect();
        let previous =
            managers.iter().find(|entry| entry.manager == manager && entry.status == target.status);
        for stale in previous.map(|entry| &entry.fields).into_iter().flatten() {
            if !fields.contains(stale) && !others.contains(stale) {
                remove_path(&mut merged, stale);
            }
        }
        overlay(&mut merged, &applied_part);
        record_manager(&mut managers, &manager, fields, target);
        let mut updated = merge_write(target, &existing, merged)?;
        metadata_mut(&mut updated)?.insert("managedFields".to_owned(), write_managers(&managers));
        Ok((200, self.finish_update(target, key, existing, updated, query.dry_run())?))
    }

    fn apply_create(
        &mut self,
        target: &Target,
        mut applied: Value,
        manager: &str,
        fields: &BTreeSet<Path>,
        query: &Query,
    ) -> Result<(u16, Value), ApiError> {
        let name = target.name()?.to_owned();
        if target.status {
            return Err(target.not_found(&name));
        }
        metadata_mut(&mut applied)?.insert("name".to_owned(), json!(name));
        let mut managers = Vec::new();
        record_manager(&mut managers, manager, fields.clone(), target);
        let collection = Target { name: None, ..target.clone() };
        let created = self.create(&collection, applied, query.dry_run(), Some(write_managers(&managers)))?;
        Ok((201, created))
    }
}

fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|error| {
        ApiError::bad_request(format!("the body must be JSON (the fake does not read YAML): {error}"))
    })
}

/// The part of an applied object that is applied: `.status` alone through `/status`; otherwise
/// everything but type, server metadata and (when a subresource) status.
fn applied_part(target: &Target, applied: &Value) -> Value {
    if target.status {
        return applied.get("status").map_or_else(|| json!({}), |status| json!({ "status": status }));
    }
    let mut part = applied.as_object().cloned().unwrap_or_default();
    part.remove("apiVersion");
    part.remove("kind");
    if target.resource.status_subresource {
        part.remove("status");
    }
    if let Some(Value::Object(metadata)) = part.get_mut("metadata") {
        metadata.retain(|field, _| APPLIED_METADATA.contains(&field.as_str()));
        if metadata.is_empty() {
            part.remove("metadata");
        }
    }
    Value::Object(part)
}

/// Every leaf: a scalar, a list (atomic) or an empty object.
fn leaf_paths(value: &Value) -> BTreeSet<Path> {
    let mut paths = BTreeSet::new();
    collect_leaves(value, &mut Vec::new(), &mut paths);
    paths
}

fn collect_leaves(value: &Value, prefix: &mut Path, paths: &mut BTreeSet<Path>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, child) in map {
                prefix.push(key.clone());
                collect_leaves(child, prefix, paths);
                prefix.pop();
            }
        }
        _ if !prefix.is_empty() => {
            paths.insert(prefix.clone());
        }
        _ => {}
    }
}

fn lookup<'a>(value: &'a Value, path: &Path) -> &'a Value {
    path.iter().fold(value, |value, key| &value[key.as_str()])
}

fn remove_path(object: &mut Value, path: &Path) {
    let Some((last, parents)) = path.split_last() else { return };
    let parent = parents.iter().try_fold(object, |value, key| value.get_mut(key.as_str()));
    if let Some(Value::Object(map)) = parent {
        map.remove(last);
    }
}

/// Objects merge key by key; anything else replaces.
fn overlay(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                overlay(target.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
        (target, patch) => *target = patch.clone(),
    }
}

/// One `managedFields` entry as the fake understands it; the raw entry is kept for output.
#[derive(Debug, Clone)]
struct Manager {
    manager: String,
    status: bool,
    fields: BTreeSet<Path>,
    raw: Value,
}

fn read_managers(object: &Value) -> Vec<Manager> {
    let entries = object["metadata"]["managedFields"].as_array().cloned().unwrap_or_default();
    entries
        .into_iter()
        .map(|raw| Manager {
            manager: raw["manager"].as_str().unwrap_or_default().to_owned(),
            status: raw["subresource"].as_str() == Some("status"),
            fields: decode_fields(&raw["fieldsV1"]),
            raw,
        })
        .collect()
}

fn write_managers(managers: &[Manager]) -> Value {
    Value::Array(managers.iter().map(|entry| entry.raw.clone()).collect())
}

/// Fields of other apply managers (same subresource) that the new apply sets to another value.
fn conflicts(
    managers: &[Manager],
    manager: &str,
    fields: &BTreeSet<Path>,
    existing: &Value,
    applied: &Value,
    status: bool,
) -> Vec<(String, Path)> {
    let mut found = Vec::new();
    for other in managers.iter().filter(|other| other.manager != manager && other.status == status) {
        if other.raw["operation"].as_str() != Some("Apply") {
            continue;
        }
        for path in other.fields.intersection(fields) {
            if lookup(existing, path) != lookup(applied, path) {
                found.push((other.manager.clone(), path.clone()));
            }
        }
    }
    found
}

fn conflict_error(conflicts: &[(String, Path)]) -> ApiError {
    let described: Vec<String> = conflicts
        .iter()
        .map(|(manager, path)| format!("conflict with {manager:?}: .{}", path.join(".")))
        .collect();
    ApiError::new(
        409,
        "Conflict",
        format!("Apply failed with {} conflict(s): {}", conflicts.len(), described.join(", ")),
    )
}

/// `force=true`: the conflicting fields leave their previous owners.
fn take_over(managers: &mut Vec<Manager>, conflicts: &[(String, Path)]) {
    for (owner, path) in conflicts {
        for entry in managers.iter_mut().filter(|entry| entry.manager == *owner) {
            entry.fields.remove(path);
            entry.raw["fieldsV1"] = encode_fields(&entry.fields);
        }
    }
    managers.retain(|entry| !entry.fields.is_empty());
}

/// Sets this manager's entry; an unchanged field set keeps the old entry (and its time), so
/// that an apply that changes nothing stays a no-op.
fn record_manager(managers: &mut Vec<Manager>, manager: &str, fields: BTreeSet<Path>, target: &Target) {
    let position =
        managers.iter().position(|entry| entry.manager == manager && entry.status == target.status);
    if let Some(index) = position
        && managers[index].fields == fields
    {
        return;
    }
    let mut raw = json!({
        "manager": manager,
        "operation": "Apply",
        "apiVersion": target.api_version(),
        "time": now(),
        "fieldsType": "FieldsV1",
        "fieldsV1": encode_fields(&fields),
    });
    if target.status {
        raw["subresource"] = json!("status");
    }
    let entry = Manager { manager: manager.to_owned(), status: target.status, fields, raw };
    match position {
        Some(index) => managers[index] = entry,
        None => managers.push(entry),
    }
}

fn encode_fields(fields: &BTreeSet<Path>) -> Value {
    let mut tree = Map::new();
    for path in fields {
        let mut node = &mut tree;
        for key in path {
            let child = node.entry(format!("f:{key}")).or_insert_with(|| json!({}));
            let Value::Object(child) = child else { break };
            node = child;
        }
    }
    Value::Object(tree)
}

/// Reads `f:` keys; a node without `f:` children is a leaf (list items are not tracked).
fn decode_fields(tree: &Value) -> BTreeSet<Path> {
    let mut fields = BTreeSet::new();
    decode_node(tree, &mut Vec::new(), &mut fields);
    fields
}

fn decode_node(node: &Value, prefix: &mut Path, fields: &mut BTreeSet<Path>) {
    let children: Vec<(&str, &Value)> = node
        .as_object()
        .map(|map| {
            map.iter().filter_map(|(key, child)| key.strip_prefix("f:").map(|key| (key, child))).collect()
        })
        .unwrap_or_default();
    if children.is_empty() {
        if !prefix.is_empty() {
            fields.insert(prefix.clone());
        }
        return;
    }
    for (key, child) in children {
        prefix.push(key.to_owned());
        decode_node(child, prefix, fields);
        prefix.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip_through_fields_v1() {
        let object = json!({ "spec": { "a": 1, "b": { "c": [1, 2] }, "d": {} }, "status": { "e": "x" } });
        let fields = leaf_paths(&object);
        assert_eq!(fields.len(), 4);
        assert_eq!(decode_fields(&encode_fields(&fields)), fields);
    }

    #[test]
    fn overlay_merges_objects_and_replaces_lists() {
        let mut target = json!({ "a": { "b": 1, "c": [1] } });
        overlay(&mut target, &json!({ "a": { "c": [2], "d": 3 } }));
        assert_eq!(target, json!({ "a": { "b": 1, "c": [2], "d": 3 } }));
    }
}

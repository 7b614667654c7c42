//! The verbs on one resource: get, list, create, replace, patch, delete.

use serde_json::{Value, json};

use crate::error::ApiError;
use crate::object::{
    ObjectKey, as_map, finalizers, is_deleting, meta_str, metadata_mut, now, present, set_field,
};
use crate::registry::ResourceType;
use crate::route::Query;
use crate::state::{Selection, State};

/// The resource and object a request addresses.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub resource: ResourceType,
    pub version: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
    /// Addressed through the `/status` subresource.
    pub status: bool,
    /// `Accept` asked for `PartialObjectMetadata`.
    pub metadata_only: bool,
}

/// Metadata fields only the server sets: a client's values are replaced by the stored ones.
const SERVER_FIELDS: [&str; 7] = [
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
    "resourceVersion",
    "managedFields",
];

impl Target {
    pub(crate) fn api_version(&self) -> String {
        self.resource.api_version(&self.version)
    }

    pub(crate) fn key(&self, name: &str) -> ObjectKey {
        ObjectKey {
            group: self.resource.group.clone(),
            plural: self.resource.plural.clone(),
            namespace: self.namespace.clone().unwrap_or_default(),
            name: name.to_owned(),
        }
    }

    pub(crate) fn name(&self) -> Result<&str, ApiError> {
        self.name.as_deref().ok_or_else(|| ApiError::new(405, "MethodNotAllowed", "a name is required"))
    }

    pub(crate) fn show(&self, object: &Value) -> Value {
        present(object, &self.api_version(), self.metadata_only)
    }

    pub(crate) fn not_found(&self, name: &str) -> ApiError {
        let resource = &self.resource;
        ApiError::not_found(&resource.resource_name(), name).about(&resource.group, &resource.plural, name)
    }

    fn conflict(&self, name: &str) -> ApiError {
        let resource = &self.resource;
        ApiError::conflict(&resource.resource_name(), name).about(&resource.group, &resource.plural, name)
    }

    pub(crate) fn selection(&self, query: &Query) -> Result<Selection, ApiError> {
        Ok(Selection {
            group: self.resource.group.clone(),
            plural: self.resource.plural.clone(),
            namespace: self.namespace.clone(),
            labels: crate::selector::LabelSelector::parse(query.get("labelSelector").unwrap_or_default())?,
            fields: crate::selector::FieldSelector::parse(query.get("fieldSelector").unwrap_or_default())?,
        })
    }
}

impl State {
    pub(crate) fn get(&self, target: &Target) -> Result<Value, ApiError> {
        let name = target.name()?;
        let object = self.objects.get(&target.key(name)).ok_or_else(|| target.not_found(name))?;
        Ok(target.show(object))
    }

    /// A list, paginated with `limit`/`continue`. Every page reports the version of the first
    /// page (the token carries it), so a watch from the last page's version replays whatever
    /// changed meanwhile; a token older than the history answers 410 Expired like the apiserver.
    pub(crate) fn list(&self, target: &Target, query: &Query) -> Result<Value, ApiError> {
        let selection = target.selection(query)?;
        let (version, after) = match query.get("continue") {
            Some(token) => self.parse_continue(token, &selection)?,
            None => (self.resource_version, None),
        };
        let limit =
            query.get("limit").and_then(|limit| limit.parse::<usize>().ok()).filter(|limit| *limit > 0);
        let mut items =
            self.select(&selection).filter(|(key, _)| after.as_ref().is_none_or(|after| *key > after));
        let page: Vec<(&ObjectKey, &Value)> = items.by_ref().take(limit.unwrap_or(usize::MAX)).collect();
        let remaining = items.count();
        let mut metadata = json!({ "resourceVersion": version.to_string() });
        if let (Some((last, _)), true) = (page.last(), remaining > 0) {
            metadata["continue"] = json!(format!("{version}:{}/{}", last.namespace, last.name));
            metadata["remainingItemCount"] = json!(remaining);
        }
        let (api_version, kind) = if target.metadata_only {
            ("meta.k8s.io/v1".to_owned(), "PartialObjectMetadataList".to_owned())
        } else {
            (target.api_version(), format!("{}List", target.resource.kind))
        };
        let items: Vec<Value> = page.into_iter().map(|(_, object)| target.show(object)).collect();
        Ok(json!({ "apiVersion": api_version, "kind": kind, "metadata": metadata, "items": items }))
    }

    /// Reads a continue token `version:namespace/name` (the last key of the previous page).
    fn parse_continue(
        &self,
        token: &str,
        selection: &Selection,
    ) -> Result<(u64, Option<ObjectKey>), ApiError> {
        let invalid = || ApiError::bad_request(format!("invalid continue token {token:?}"));
        let (version, position) = token.split_once(':').ok_or_else(invalid)?;
        let (namespace, name) = position.split_once('/').ok_or_else(invalid)?;
        let version: u64 = version.parse().map_err(|_| invalid())?;
        if version < self.compacted() {
            return Err(ApiError::expired(version, self.compacted()));
        }
        let after = ObjectKey {
            group: selection.group.clone(),
            plural: selection.plural.clone(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        };
        Ok((version, Some(after)))
    }

    /// POST. `managed_fields` is set by server-side apply when it creates the object.
    pub(crate) fn create(
        &mut self,
        target: &Target,
        body: Value,
        dry_run: bool,
        managed_fields: Option<Value>,
    ) -> Result<Value, ApiError> {
        if target.name.is_some() || target.status {
            return Err(ApiError::new(405, "MethodNotAllowed", "create is only allowed on a collection"));
        }
        let mut object = self.prepare_create(target, body)?;
        let name = meta_str(&object, "name").unwrap_or_default().to_owned();
        let key = target.key(&name);
        if self.objects.contains_key(&key) {
            let resource = &target.resource;
            return Err(ApiError::already_exists(&resource.resource_name(), &name).about(
                &resource.group,
                &resource.plural,
                &name,
            ));
        }
        if self.objects.len() >= self.limits.max_objects {
            return Err(ApiError::new(403, "Forbidden", "object limit reached (limits.max_objects)"));
        }
        let metadata = metadata_mut(&mut object)?;
        for field in SERVER_FIELDS {
            metadata.remove(field);
        }
        metadata.insert("creationTimestamp".to_owned(), json!(now()));
        metadata.insert("generation".to_owned(), json!(1));
        set_field(metadata, "managedFields", managed_fields);
        let uid = self.next_uid();
        metadata_mut(&mut object)?.insert("uid".to_owned(), json!(uid));
        if target.resource.status_subresource {
            as_map(&mut object)?.remove("status");
        }
        if dry_run {
            return Ok(target.show(&object));
        }
        let stored = self.put(key, object, None);
        self.register_if_crd(&target.resource, &stored)?;
        Ok(target.show(&stored))
    }

    /// Checks kind, namespace and name, and fills in apiVersion, kind, namespace and a generated name.
    fn prepare_create(&mut self, target: &Target, mut object: Value) -> Result<Value, ApiError> {
        let resource = &target.resource;
        check_kind(&object, &resource.kind)?;
        let map = as_map(&mut object)?;
        map.insert("apiVersion".to_owned(), json!(target.api_version()));
        map.insert("kind".to_owned(), json!(resource.kind));
        let metadata = metadata_mut(&mut object)?;
        match (&target.namespace, metadata.get("namespace").and_then(Value::as_str)) {
            (Some(path), Some(body)) if path != body => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            (Some(path), _) => {
                metadata.insert("namespace".to_owned(), json!(path));
            }
            (None, _) => {
                metadata.remove("namespace");
            }
        }
        let name = metadata.get("name").and_then(Value::as_str).filter(|name| !name.is_empty());
        let prefix = metadata.get("generateName").and_then(Value::as_str).filter(|prefix| !prefix.is_empty());
        match (name, prefix) {
            (Some(_), _) => {}
            (None, Some(prefix)) => {
                let prefix = prefix.to_owned();
                let generated = self.generate_name(&prefix);
                metadata_mut(&mut object)?.insert("name".to_owned(), json!(generated));
            }
            (None, None) => {
                return Err(ApiError::invalid(
                    "metadata.name: Required value: name or generateName is required",
                ));
            }
        }
        Ok(object)
    }

    /// PUT: optimistic concurrency on `metadata.resourceVersion` (required for custom
    /// resources, optional for built-ins, as the apiserver's unconditional-update rules say).
    pub(crate) fn replace(&mut self, target: &Target, body: Value, dry_run: bool) -> Result<Value, ApiError> {
        let name = target.name()?.to_owned();
        check_kind(&body, &target.resource.kind)?;
        if let Some(body_name) = meta_str(&body, "name").filter(|body_name| *body_name != name) {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let key = target.key(&name);
        let existing = self.objects.get(&key).cloned().ok_or_else(|| target.not_found(&name))?;
        match meta_str(&body, "resourceVersion") {
            Some(version) if Some(version) != meta_str(&existing, "resourceVersion") => {
                return Err(target.conflict(&name));
            }
            None if target.resource.custom => {
                return Err(ApiError::invalid(
                    "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update",
                ));
            }
            _ => {}
        }
        let updated = merge_write(target, &existing, body)?;
        self.finish_update(target, key, existing, updated, dry_run)
    }

    /// The end of every update: finalizer rule, generation, no-op detection, commit, and the
    /// removal of an object whose deletion was waiting for its last finalizer.
    pub(crate) fn finish_update(
        &mut self,
        target: &Target,
        key: ObjectKey,
        existing: Value,
        mut updated: Value,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        if is_deleting(&existing) {
            let known = finalizers(&existing);
            let added: Vec<String> =
                finalizers(&updated).into_iter().filter(|f| !known.contains(f)).collect();
            if !added.is_empty() {
                return Err(ApiError::invalid(format!(
                    "metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers {added:?}"
                )));
            }
        }
        if spec_part(&target.resource, &existing) != spec_part(&target.resource, &updated) {
            let generation = existing["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
            metadata_mut(&mut updated)?.insert("generation".to_owned(), json!(generation));
        }
        // A write that changes nothing keeps the version and sends no event, so a controller
        // that writes the status it read does not wake itself up forever.
        if updated == existing || dry_run {
            return Ok(target.show(&updated));
        }
        let stored = if is_deleting(&updated) && finalizers(&updated).is_empty() {
            self.remove(&key, updated)
        } else {
            self.put(key, updated, Some(existing))
        };
        self.register_if_crd(&target.resource, &stored)?;
        Ok(target.show(&stored))
    }

    /// DELETE with `DeleteOptions` preconditions and `propagationPolicy` (body or query).
    pub(crate) fn delete(
        &mut self,
        target: &Target,
        options: &Value,
        query: &Query,
    ) -> Result<Value, ApiError> {
        let name = target.name()?.to_owned();
        if target.status {
            return Err(ApiError::new(405, "MethodNotAllowed", "delete is not allowed on /status"));
        }
        let key = target.key(&name);
        let existing = self.objects.get(&key).cloned().ok_or_else(|| target.not_found(&name))?;
        let preconditions = &options["preconditions"];
        let stale = |field: &str| {
            preconditions[field].as_str().is_some_and(|expected| Some(expected) != meta_str(&existing, field))
        };
        if stale("uid") || stale("resourceVersion") {
            return Err(target.conflict(&name));
        }
        if query.dry_run() || options["dryRun"].as_array().is_some_and(|modes| !modes.is_empty()) {
            return Ok(target.show(&existing));
        }
        let policy = options["propagationPolicy"].as_str().or_else(|| query.get("propagationPolicy"));
        if policy == Some("Orphan")
            && let Some(uid) = meta_str(&existing, "uid")
        {
            let uid = uid.to_owned();
            self.orphan_dependents(&uid);
        }
        let result = self.delete_object(&key, existing);
        Ok(target.show(&result))
    }

    /// DELETE on a collection: deletes every selected object, answers the list of them.
    pub(crate) fn delete_collection(&mut self, target: &Target, query: &Query) -> Result<Value, ApiError> {
        let selection = target.selection(query)?;
        let keys: Vec<ObjectKey> = self.select(&selection).map(|(key, _)| key.clone()).collect();
        let mut items = Vec::new();
        for key in keys {
            if let Some(existing) = self.objects.get(&key).cloned() {
                items.push(target.show(&self.delete_object(&key, existing)));
            }
        }
        let kind = format!("{}List", target.resource.kind);
        let metadata = json!({ "resourceVersion": self.resource_version.to_string() });
        Ok(json!({ "apiVersion": target.api_version(), "kind": kind, "metadata": metadata, "items": items }))
    }

    fn register_if_crd(&mut self, resource: &ResourceType, stored: &Value) -> Result<(), ApiError> {
        if resource.is_crd_kind() && !is_deleting(stored) {
            self.registry.register(ResourceType::from_crd(stored)?);
        }
        Ok(())
    }
}

fn check_kind(object: &Value, kind: &str) -> Result<(), ApiError> {
    match object["kind"].as_str() {
        Some(sent) if !sent.is_empty() && sent != kind => {
            Err(ApiError::bad_request(format!("the kind {sent:?} does not match the resource kind {kind:?}")))
        }
        _ => Ok(()),
    }
}

/// What a write may change. Through `/status`: only `.status`. Through the main resource:
/// everything but the server's metadata fields, and `.status` is kept when it is a subresource.
pub(crate) fn merge_write(target: &Target, existing: &Value, mut body: Value) -> Result<Value, ApiError> {
    if target.status {
        let mut updated = existing.clone();
        let status = body.get("status").cloned();
        set_field(as_map(&mut updated)?, "status", status);
        return Ok(updated);
    }
    let map = as_map(&mut body)?;
    map.insert("apiVersion".to_owned(), existing["apiVersion"].clone());
    map.insert("kind".to_owned(), existing["kind"].clone());
    if target.resource.status_subresource {
        set_field(map, "status", existing.get("status").cloned());
    }
    let metadata = metadata_mut(&mut body)?;
    for field in SERVER_FIELDS.iter().chain(&["name", "namespace"]) {
        set_field(metadata, field, existing["metadata"].get(*field).cloned());
    }
    Ok(body)
}

/// The part whose change bumps `metadata.generation`: everything but metadata (and status when
/// it is a subresource), as for custom resources.
fn spec_part(resource: &ResourceType, object: &Value) -> Value {
    let mut part = object.clone();
    if let Some(map) = part.as_object_mut() {
        map.remove("metadata");
        if resource.status_subresource {
            map.remove("status");
        }
    }
    part
}

//! The resource registry: which group/version/plural the fake serves, with scope and subresources.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::error::ApiError;

/// One served resource (all its versions share one storage: versions are not converted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceType {
    /// API group, `""` for the core group.
    pub group: String,
    /// Served versions.
    pub versions: BTreeSet<String>,
    /// Kind, e.g. `ConfigMap`.
    pub kind: String,
    /// Plural resource name used in paths, e.g. `configmaps`.
    pub plural: String,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// Whether `/status` is a subresource (then writes to the main resource keep `.status`).
    pub status_subresource: bool,
    /// Registered from a CustomResourceDefinition: updates must carry `metadata.resourceVersion`.
    pub custom: bool,
}

impl ResourceType {
    /// A built-in style resource without status subresource.
    pub fn new(group: &str, version: &str, kind: &str, plural: &str, namespaced: bool) -> Self {
        Self {
            group: group.to_owned(),
            versions: BTreeSet::from([version.to_owned()]),
            kind: kind.to_owned(),
            plural: plural.to_owned(),
            namespaced,
            status_subresource: false,
            custom: false,
        }
    }

    /// The same resource with the `/status` subresource.
    pub fn with_status_subresource(mut self) -> Self {
        self.status_subresource = true;
        self
    }

    /// `plural` or `plural.group`, as the apiserver names resources in messages.
    pub fn resource_name(&self) -> String {
        if self.group.is_empty() { self.plural.clone() } else { format!("{}.{}", self.plural, self.group) }
    }

    /// `version` or `group/version`.
    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() { version.to_owned() } else { format!("{}/{version}", self.group) }
    }

    pub(crate) fn is_crd_kind(&self) -> bool {
        self.group == "apiextensions.k8s.io" && self.plural == "customresourcedefinitions"
    }

    /// Reads a CustomResourceDefinition (as JSON): every served version, its scope, and whether
    /// any served version has the status subresource (per-version differences are not kept).
    pub fn from_crd(crd: &Value) -> Result<Self, ApiError> {
        let spec = &crd["spec"];
        let text = |value: &Value, what: &str| {
            value.as_str().map(str::to_owned).ok_or_else(|| ApiError::invalid(format!("{what} is required")))
        };
        let group = text(&spec["group"], "spec.group")?;
        let kind = text(&spec["names"]["kind"], "spec.names.kind")?;
        let plural = text(&spec["names"]["plural"], "spec.names.plural")?;
        let served: Vec<&Value> = spec["versions"]
            .as_array()
            .map(|versions| versions.iter().filter(|v| v["served"].as_bool().unwrap_or(true)).collect())
            .unwrap_or_default();
        let versions: BTreeSet<String> =
            served.iter().filter_map(|v| v["name"].as_str().map(str::to_owned)).collect();
        if versions.is_empty() {
            return Err(ApiError::invalid("spec.versions: at least one served version is required"));
        }
        Ok(Self {
            group,
            versions,
            kind,
            plural,
            namespaced: spec["scope"].as_str() != Some("Cluster"),
            status_subresource: served.iter().any(|v| v["subresources"]["status"].is_object()),
            custom: true,
        })
    }
}

/// The registry, keyed by (group, plural) for deterministic order.
#[derive(Debug, Clone, Default)]
pub(crate) struct Registry {
    types: BTreeMap<(String, String), ResourceType>,
}

impl Registry {
    /// The kinds the operator needs, registered in every new fake.
    pub(crate) fn with_builtins() -> Self {
        let mut registry = Self::default();
        for resource in [
            ResourceType::new("", "v1", "Namespace", "namespaces", false).with_status_subresource(),
            ResourceType::new("", "v1", "Secret", "secrets", true),
            ResourceType::new("", "v1", "ConfigMap", "configmaps", true),
            ResourceType::new("", "v1", "Event", "events", true),
            ResourceType::new("events.k8s.io", "v1", "Event", "events", true),
            ResourceType::new("coordination.k8s.io", "v1", "Lease", "leases", true),
            ResourceType::new(
                "apiextensions.k8s.io",
                "v1",
                "CustomResourceDefinition",
                "customresourcedefinitions",
                false,
            )
            .with_status_subresource(),
        ] {
            registry.register(resource);
        }
        registry
    }

    /// Adds a resource; a known (group, plural) gains the new versions and takes the new shape.
    pub(crate) fn register(&mut self, mut resource: ResourceType) {
        let key = (resource.group.clone(), resource.plural.clone());
        if let Some(known) = self.types.get(&key) {
            resource.versions.extend(known.versions.iter().cloned());
        }
        self.types.insert(key, resource);
    }

    /// The resource served at `group/version/plural`.
    pub(crate) fn find(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceType> {
        self.types
            .get(&(group.to_owned(), plural.to_owned()))
            .filter(|resource| resource.versions.contains(version))
    }

    /// The resource of an object's `apiVersion` and `kind`.
    pub(crate) fn find_kind(&self, api_version: &str, kind: &str) -> Option<&ResourceType> {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        self.types.values().find(|resource| {
            resource.group == group && resource.kind == kind && resource.versions.contains(version)
        })
    }

    pub(crate) fn all(&self) -> impl Iterator<Item = &ResourceType> {
        self.types.values()
    }
}

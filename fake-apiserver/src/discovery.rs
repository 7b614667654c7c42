//! Legacy (non-aggregated) discovery: `/version`, `/api`, `/apis`, `/api/v1`, `/apis/{g}/{v}`.
//! Typed `Api<K>` never asks; `kube::Discovery::run` and `apiserver_version` do.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::error::ApiError;
use crate::registry::{Registry, ResourceType};
use crate::route::Route;

pub(crate) fn answer(registry: &Registry, route: &Route) -> Result<Value, ApiError> {
    match route {
        Route::Version => Ok(version()),
        Route::CoreVersions => Ok(json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [],
        })),
        Route::Groups => Ok(groups(registry)),
        Route::Resources { group, version } => resources(registry, group, version),
        Route::Resource(_) | Route::Unknown => {
            Err(ApiError::new(404, "NotFound", "the server could not find the requested resource"))
        }
    }
}

fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": "v1.33.0-capms-fake",
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "",
        "compiler": "",
        "platform": "linux/amd64",
    })
}

fn groups(registry: &Registry) -> Value {
    let mut versions: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for resource in registry.all().filter(|resource| !resource.group.is_empty()) {
        let known = versions.entry(&resource.group).or_default();
        known.extend(resource.versions.iter().map(String::as_str));
        known.sort_unstable();
        known.dedup();
    }
    let groups: Vec<Value> = versions
        .into_iter()
        .map(|(group, versions)| {
            let listed: Vec<Value> = versions
                .iter()
                .map(|version| json!({ "groupVersion": format!("{group}/{version}"), "version": version }))
                .collect();
            let preferred = listed.first().cloned().unwrap_or(Value::Null);
            json!({ "name": group, "versions": listed, "preferredVersion": preferred })
        })
        .collect();
    json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": groups })
}

fn resources(registry: &Registry, group: &str, version: &str) -> Result<Value, ApiError> {
    let served: Vec<&ResourceType> = registry
        .all()
        .filter(|resource| resource.group == group && resource.versions.contains(version))
        .collect();
    if served.is_empty() {
        return Err(ApiError::new(404, "NotFound", "the server could not find the requested resource"));
    }
    let mut listed = Vec::new();
    for resource in served {
        let verbs = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];
        listed.push(json!({
            "name": resource.plural,
            "singularName": resource.kind.to_lowercase(),
            "namespaced": resource.namespaced,
            "kind": resource.kind,
            "verbs": verbs,
        }));
        if resource.status_subresource {
            listed.push(json!({
                "name": format!("{}/status", resource.plural),
                "singularName": "",
                "namespaced": resource.namespaced,
                "kind": resource.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
    }
    let group_version = if group.is_empty() { version.to_owned() } else { format!("{group}/{version}") };
    Ok(
        json!({ "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": listed }),
    )
}

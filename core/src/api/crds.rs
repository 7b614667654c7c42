//! The CustomResourceDefinitions of every kind capms serves, ready to install.
//!
//! The derived `Kind::crd()` lacks the CAPI contract label, which CAPI core needs to find
//! the version of the API that implements the contract, and the provider label; both are
//! added here. Serialization (YAML for release manifests, JSON for the apiserver) is the
//! operator's job: core stays free of a YAML crate.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube_core::CustomResourceExt;

use super::{
    CONTRACT_LABEL, CONTRACT_LABEL_VALUE, MetalStackCluster, MetalStackClusterTemplate, MetalStackFirewall,
    MetalStackMachine, MetalStackMachineTemplate, PROVIDER_LABEL, PROVIDER_LABEL_VALUE,
};

/// The five CRDs, each labelled with the contract and the provider.
pub fn all() -> Vec<CustomResourceDefinition> {
    [
        MetalStackCluster::crd(),
        MetalStackClusterTemplate::crd(),
        MetalStackMachine::crd(),
        MetalStackMachineTemplate::crd(),
        MetalStackFirewall::crd(),
    ]
    .into_iter()
    .map(with_labels)
    .collect()
}

fn with_labels(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
    let labels = crd.metadata.labels.get_or_insert_with(Default::default);
    labels.insert(CONTRACT_LABEL.to_string(), CONTRACT_LABEL_VALUE.to_string());
    labels.insert(PROVIDER_LABEL.to_string(), PROVIDER_LABEL_VALUE.to_string());
    crd
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::capi::CLUSTER_NAME_LABEL;
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinitionVersion;
    use kube_cel::{Validator, compile_schema};
    use serde_json::{Value, json};

    fn crd(kind: &str) -> CustomResourceDefinition {
        all().into_iter().find(|crd| crd.spec.names.kind == kind).expect("CRD of kind")
    }

    fn version(crd: &CustomResourceDefinition) -> &CustomResourceDefinitionVersion {
        assert_eq!(crd.spec.versions.len(), 1, "{}", crd.spec.names.kind);
        &crd.spec.versions[0]
    }

    fn schema(crd: &CustomResourceDefinition) -> Value {
        let schema = version(crd).schema.as_ref().and_then(|s| s.open_api_v3_schema.as_ref());
        serde_json::to_value(schema.expect("openAPIV3Schema")).expect("serializes")
    }

    const KINDS: [(&str, &str, bool); 5] = [
        ("MetalStackCluster", "msc", true),
        ("MetalStackClusterTemplate", "msct", false),
        ("MetalStackMachine", "msm", true),
        ("MetalStackMachineTemplate", "msmt", false),
        ("MetalStackFirewall", "msfw", true),
    ];

    #[test]
    fn every_crd_has_contract_and_provider_labels() {
        assert_eq!(all().len(), KINDS.len());
        for crd in all() {
            let labels = crd.metadata.labels.clone().unwrap_or_default();
            assert_eq!(labels.get("cluster.x-k8s.io/v1beta2").map(String::as_str), Some("v1alpha1"));
            assert_eq!(
                labels.get("cluster.x-k8s.io/provider").map(String::as_str),
                Some("infrastructure-metalstack")
            );
        }
    }

    #[test]
    fn names_scope_category_and_short_names() {
        for (kind, short, _) in KINDS {
            let crd = crd(kind);
            let plural = format!("{}s", kind.to_lowercase());
            assert_eq!(
                crd.metadata.name.as_deref(),
                Some(format!("{plural}.infrastructure.cluster.x-k8s.io").as_str())
            );
            assert_eq!(crd.spec.group, "infrastructure.cluster.x-k8s.io");
            assert_eq!(crd.spec.scope, "Namespaced");
            assert_eq!(crd.spec.names.categories, Some(vec!["cluster-api".to_string()]));
            assert_eq!(crd.spec.names.short_names, Some(vec![short.to_string()]));
            let version = version(&crd);
            assert_eq!((version.name.as_str(), version.served, version.storage), ("v1alpha1", true, true));
        }
    }

    #[test]
    fn status_subresource_exactly_on_non_templates() {
        for (kind, _, has_status) in KINDS {
            let crd = crd(kind);
            let status = version(&crd).subresources.as_ref().and_then(|s| s.status.as_ref());
            assert_eq!(status.is_some(), has_status, "{kind}");
            assert_eq!(has_property(&schema(&crd), "status"), has_status, "{kind}");
        }
    }

    fn has_property(schema: &Value, name: &str) -> bool {
        schema.get("properties").and_then(|p| p.get(name)).is_some()
    }

    /// Follows a printer column's JSONPath through the schema. Filters (`[?(@.f==..)]`) step
    /// into array items and must name an item property; positional indexes are refused.
    fn resolves(schema: &Value, path: &str) -> bool {
        let mut node = schema;
        let mut rest = path;
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix('.') {
                let end = after.find(['.', '[']).unwrap_or(after.len());
                let Some(next) = node.get("properties").and_then(|p| p.get(&after[..end])) else {
                    return false;
                };
                node = next;
                rest = &after[end..];
            } else if let Some(after) = rest.strip_prefix("[?(@.") {
                let Some(end) = after.find(")]") else { return false };
                let field = after[..end].split("==").next().unwrap_or_default();
                let Some(items) = node.get("items") else { return false };
                if !has_property(items, field) {
                    return false;
                }
                node = items;
                rest = &after[end + 2..];
            } else {
                return false;
            }
        }
        true
    }

    fn resolves_metadata(path: &str) -> bool {
        let cluster_label = format!(".metadata.labels['{}']", CLUSTER_NAME_LABEL.replace('.', "\\."));
        path == cluster_label || path == ".metadata.creationTimestamp"
    }

    #[test]
    fn printer_columns_point_at_existing_fields() {
        for crd in all() {
            let schema = schema(&crd);
            let columns = version(&crd).additional_printer_columns.clone().unwrap_or_default();
            assert!(columns.iter().any(|c| c.name == "Age" && c.type_ == "date"), "{}", crd.spec.names.kind);
            for column in columns {
                let path = column.json_path.as_str();
                let ok = if path.starts_with(".metadata.") {
                    resolves_metadata(path)
                } else {
                    resolves(&schema, path)
                };
                assert!(ok, "{}: column {} has dangling path {path}", crd.spec.names.kind, column.name);
            }
        }
    }

    #[test]
    fn json_path_walker_rejects_wrong_paths() {
        let schema = schema(&crd("MetalStackMachine"));
        assert!(resolves(&schema, ".status.conditions[?(@.type==\"Ready\")].status"));
        assert!(!resolves(&schema, ".status.conditions[1].status"), "positional index (D18)");
        assert!(!resolves(&schema, ".status.instanceState"), "D23");
        assert!(!resolves(&schema, ".status.conditions[?(@.kind==\"Ready\")].status"));
        assert!(!resolves_metadata(".metadata.labels['cluster.x-k8s.io/cluster-name']"));
    }

    #[test]
    fn ready_columns_select_the_condition_by_type() {
        for crd in all() {
            for column in version(&crd).additional_printer_columns.clone().unwrap_or_default() {
                if column.name == "Ready" {
                    assert_eq!(column.json_path, ".status.conditions[?(@.type==\"Ready\")].status");
                }
            }
        }
    }

    /// Every schema node has a type (a structural schema) unless it is an int-or-string.
    fn assert_structural(node: &Value, at: &str) {
        let typed = node.get("type").is_some() || node.get("x-kubernetes-int-or-string").is_some();
        assert!(typed, "untyped schema node at {at}");
        for key in ["anyOf", "oneOf", "allOf", "$ref", "definitions"] {
            assert!(node.get(key).is_none(), "{key} at {at}");
        }
        for (name, child) in node.get("properties").and_then(Value::as_object).into_iter().flatten() {
            assert_structural(child, &format!("{at}.{name}"));
        }
        for key in ["items", "additionalProperties"] {
            if let Some(child) = node.get(key).filter(|c| c.is_object()) {
                assert_structural(child, &format!("{at}[{key}]"));
            }
        }
    }

    #[test]
    fn schemas_are_structural() {
        for crd in all() {
            assert_structural(&schema(&crd), &crd.spec.names.kind);
        }
    }

    /// Every `(rule, node)` pair of the schema, depth first.
    fn rules(node: &Value, found: &mut Vec<(String, Value)>) {
        let validations = node.get("x-kubernetes-validations").and_then(Value::as_array);
        for rule in validations.into_iter().flatten() {
            found.push((rule["rule"].as_str().unwrap_or_default().to_string(), node.clone()));
        }
        for child in node.get("properties").and_then(Value::as_object).into_iter().flat_map(|p| p.values()) {
            rules(child, found);
        }
        for child in node.get("items").into_iter() {
            rules(child, found);
        }
    }

    #[test]
    fn cel_rules_compile_and_are_bounded() {
        for crd in all() {
            let root = schema(&crd);
            let mut found = Vec::new();
            rules(&root, &mut found);
            for (rule, node) in found {
                let compiled = compile_schema(&node);
                assert!(!compiled.has_errors(), "{rule}: {:?}", compiled.compilation_errors());
                assert_bounded(&rule, &node, &root);
            }
        }
    }

    /// The apiserver rejects a CRD whose rules' estimated cost is too high, and unbounded
    /// strings and lists make that estimate huge: every value a rule reads needs a bound.
    fn assert_bounded(rule: &str, node: &Value, root: &Value) {
        match node["type"].as_str() {
            Some("string") => assert!(node.get("maxLength").is_some(), "{rule}: no maxLength"),
            Some("array") => {
                assert!(node.get("maxItems").is_some(), "{rule}: no maxItems");
                assert!(node["items"].get("maxLength").is_some(), "{rule}: items without maxLength");
            }
            _ => {
                let spec = &root["properties"]["spec"]["properties"];
                for field in rule
                    .split("self.spec.")
                    .skip(1)
                    .map(|rest| rest.split(|c: char| !c.is_alphanumeric()).next())
                {
                    let field = field.unwrap_or_default();
                    assert!(spec[field].get("maxLength").is_some(), "{rule}: spec.{field} without maxLength");
                }
            }
        }
    }

    #[test]
    fn immutable_fields_have_transition_rules_on_the_root() {
        let expect = [
            ("MetalStackCluster", &["projectID", "partition", "nodeNetworkID", "controlPlaneIP"][..]),
            ("MetalStackMachine", &["size", "image", "providerID", "machineID"][..]),
            ("MetalStackFirewall", &["size", "image", "providerID"][..]),
        ];
        for (kind, fields) in expect {
            let root = schema(&crd(kind));
            let rules: Vec<&str> = root["x-kubernetes-validations"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r["rule"].as_str())
                .collect();
            for field in fields {
                let wanted = format!("oldSelf.spec.{field}");
                assert!(rules.iter().any(|rule| rule.contains(&wanted)), "{kind}: no rule for {field}");
            }
        }
    }

    #[test]
    fn templates_carry_no_transition_rules() {
        for kind in ["MetalStackClusterTemplate", "MetalStackMachineTemplate"] {
            let mut found = Vec::new();
            rules(&schema(&crd(kind)), &mut found);
            assert!(found.iter().all(|(rule, _)| !rule.contains("oldSelf")), "{kind}: {found:?}");
            assert!(!found.is_empty(), "{kind}: format rules of the embedded spec are kept");
        }
    }

    fn validate(kind: &str, object: &Value, old: Option<&Value>) -> Result<(), String> {
        Validator::new().validate(&schema(&crd(kind)), object, old).map_err(|errors| format!("{errors:?}"))
    }

    fn machine(spec: Value) -> Value {
        json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1", "kind": "MetalStackMachine",
               "metadata": {"name": "m", "namespace": "default"}, "spec": spec})
    }

    #[test]
    fn machine_provider_id_may_be_set_once_but_never_changed_or_removed() {
        let unset = machine(json!({"size": "c1", "image": "ubuntu"}));
        let set = machine(json!({"size": "c1", "image": "ubuntu", "providerID": "metal://p/a"}));
        let changed = machine(json!({"size": "c1", "image": "ubuntu", "providerID": "metal://p/b"}));
        assert_eq!(validate("MetalStackMachine", &set, Some(&unset)), Ok(()));
        assert_eq!(validate("MetalStackMachine", &set, Some(&set)), Ok(()));
        assert!(validate("MetalStackMachine", &changed, Some(&set)).is_err());
        assert!(validate("MetalStackMachine", &unset, Some(&set)).is_err());
    }

    #[test]
    fn machine_size_image_and_pinned_id_are_immutable() {
        let old = machine(json!({"size": "c1", "image": "ubuntu"}));
        let resized = machine(json!({"size": "c2", "image": "ubuntu"}));
        let pinned_later = machine(json!({"size": "c1", "image": "ubuntu", "machineID": "abc"}));
        assert!(validate("MetalStackMachine", &resized, Some(&old)).is_err());
        assert!(validate("MetalStackMachine", &pinned_later, Some(&old)).is_err());
        assert_eq!(validate("MetalStackMachine", &pinned_later, None), Ok(()));
    }

    #[test]
    fn machine_tags_may_not_use_reserved_keys() {
        let ok = machine(json!({"size": "c1", "image": "u", "tags": ["team=a", "plain"]}));
        let forged = machine(
            json!({"size": "c1", "image": "u", "tags": [format!("{}=default.x", crate::tags::CLUSTER_ID)]}),
        );
        let ours =
            machine(json!({"size": "c1", "image": "u", "tags": [format!("{}=1", crate::tags::OBJECT_UID)]}));
        assert_eq!(validate("MetalStackMachine", &ok, None), Ok(()));
        assert!(validate("MetalStackMachine", &forged, None).is_err());
        assert!(validate("MetalStackMachine", &ours, None).is_err());
    }

    fn cluster(spec: Value) -> Value {
        json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1", "kind": "MetalStackCluster",
               "metadata": {"name": "c", "namespace": "default"}, "spec": spec})
    }

    #[test]
    fn cluster_rules() {
        let base = cluster(json!({"projectID": "p", "partition": "a"}));
        let with_net = cluster(json!({"projectID": "p", "partition": "a", "nodeNetworkID": "n1"}));
        let other_net = cluster(json!({"projectID": "p", "partition": "a", "nodeNetworkID": "n2"}));
        let moved = cluster(json!({"projectID": "p", "partition": "b"}));
        assert_eq!(validate("MetalStackCluster", &with_net, Some(&base)), Ok(()));
        assert!(validate("MetalStackCluster", &other_net, Some(&with_net)).is_err());
        assert!(validate("MetalStackCluster", &base, Some(&with_net)).is_err());
        assert!(validate("MetalStackCluster", &moved, Some(&base)).is_err());
        for (ip, valid) in
            [("203.0.113.7", true), ("2001:db8::1", true), ("not-an-ip", false), ("10.0.0.0/8", false)]
        {
            let object = cluster(json!({"projectID": "p", "partition": "a", "controlPlaneIP": ip}));
            assert_eq!(validate("MetalStackCluster", &object, None).is_ok(), valid, "{ip}");
        }
    }

    #[test]
    fn firewall_rule_cidrs_are_checked() {
        let firewall = |to: &str| {
            json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1", "kind": "MetalStackFirewall",
                   "metadata": {"name": "f"},
                   "spec": {"size": "s", "image": "fw", "egressRules": [{"ports": [443], "to": [to]}]}})
        };
        assert_eq!(validate("MetalStackFirewall", &firewall("0.0.0.0/0"), None), Ok(()));
        assert!(validate("MetalStackFirewall", &firewall("everywhere"), None).is_err());
    }

    #[test]
    fn machine_template_spec_may_change() {
        let template = |size: &str| {
            json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1", "kind": "MetalStackMachineTemplate",
                   "metadata": {"name": "t"}, "spec": {"template": {"spec": {"size": size, "image": "u"}}}})
        };
        assert_eq!(validate("MetalStackMachineTemplate", &template("c2"), Some(&template("c1"))), Ok(()));
    }

    #[test]
    fn id_fields_keep_their_upper_case_spelling() {
        let expect = [
            ("MetalStackCluster", &["projectID", "nodeNetworkID", "controlPlaneIP"][..]),
            ("MetalStackMachine", &["providerID", "machineID"][..]),
            ("MetalStackFirewall", &["providerID"][..]),
        ];
        for (kind, fields) in expect {
            let spec = &schema(&crd(kind))["properties"]["spec"];
            for field in fields {
                assert!(has_property(spec, field), "{kind}: spec.{field}");
            }
        }
        let status = &schema(&crd("MetalStackCluster"))["properties"]["status"];
        assert!(has_property(status, "nodeNetworkID") && has_property(status, "controlPlaneIP"));
    }

    /// The schema pattern of `providerID` accepts exactly what `ProviderId::parse` accepts
    /// (evaluated with CEL's RE2 `matches`, the engine the apiserver's patterns also use).
    #[test]
    fn provider_id_pattern_agrees_with_the_parser() {
        let rule = format!("self.matches('{}')", crate::api::common::PROVIDER_ID_PATTERN);
        let schema =
            json!({"type": "string", "maxLength": 512, "x-kubernetes-validations": [{"rule": rule}]});
        let samples = [
            "metal://mini-lab/00000000-0000-0000-0000-000000000001",
            "metal://p/a.b_c-d",
            "metal://p/",
            "metal:///m",
            "metal://p/m/x",
            "metalstack://m",
            "metal://p/m ",
            "metal://pä/m",
            "",
        ];
        for sample in samples {
            let accepted = Validator::new().validate(&schema, &json!(sample), None).is_ok();
            assert_eq!(accepted, crate::ProviderId::parse(sample).is_ok(), "{sample:?}");
        }
    }
}

//! Every CEL rule of capms's CRDs, as the real kube-apiserver compiles and runs it: one case per
//! rule that the rule exists to reject, and a check that no rule is without a case.

use capms_realcluster::workload::capms;
use capms_realcluster::{Error, ManagementCluster, Result};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

/// One rule's case: `spec` is refused on create with `message`; with `update`, `spec` is
/// created and the merge patch `update` (of the spec) is refused.
pub struct Case {
    pub kind: &'static str,
    /// Where the rule sits in the schema: `spec.firewall.egressRules.[].to`, or `` for rules on
    /// the object's root.
    pub path: &'static str,
    pub message: &'static str,
    pub spec: Value,
    pub update: Option<Value>,
}

const MACHINE: [&str; 2] = ["v1-small-x86", "ubuntu-26.4"];

fn machine(extra: Value) -> Value {
    merge(json!({ "size": MACHINE[0], "image": MACHINE[1] }), extra)
}

fn cluster(extra: Value) -> Value {
    merge(json!({ "projectID": "00000000-0000-0000-0000-000000000001", "partition": "mini-lab" }), extra)
}

fn firewall(extra: Value) -> Value {
    merge(json!({ "size": MACHINE[0], "image": "firewall-ubuntu-3.0" }), extra)
}

fn template(spec: Value) -> Value {
    json!({ "template": { "spec": spec } })
}

fn merge(mut base: Value, extra: Value) -> Value {
    if let (Some(base), Value::Object(extra)) = (base.as_object_mut(), extra) {
        base.extend(extra);
    }
    base
}

/// Every rule's case.
pub fn cases() -> Vec<Case> {
    let cidr = "every entry must be a CIDR";
    let egress = |to: &str| json!({ "egressRules": [{ "protocol": "TCP", "ports": [443], "to": [to] }] });
    let ingress_from =
        json!({ "ingressRules": [{ "protocol": "TCP", "ports": [443], "from": ["anywhere"] }] });
    let ingress_to = json!({ "ingressRules": [{ "protocol": "TCP", "ports": [443], "from": ["0.0.0.0/0"], "to": ["here"] }] });
    let reserved = "tags may not use keys reserved for capms and metal-stack";
    let forged = json!({ "tags": ["cluster.metal-stack.io/id=default.prod"] });
    let case = |kind, path, message, spec, update| Case { kind, path, message, spec, update };
    vec![
        case(
            "MetalStackCluster",
            "",
            "projectID is immutable",
            cluster(json!({})),
            Some(json!({ "projectID": "other" })),
        ),
        case(
            "MetalStackCluster",
            "",
            "partition is immutable",
            cluster(json!({})),
            Some(json!({ "partition": "other" })),
        ),
        case(
            "MetalStackCluster",
            "",
            "nodeNetworkID is immutable once set",
            cluster(json!({ "nodeNetworkID": "n1" })),
            Some(json!({ "nodeNetworkID": "n2" })),
        ),
        case(
            "MetalStackCluster",
            "",
            "controlPlaneIP is immutable once set",
            cluster(json!({ "controlPlaneIP": "203.0.113.7" })),
            Some(json!({ "controlPlaneIP": "203.0.113.8" })),
        ),
        case(
            "MetalStackCluster",
            "spec.controlPlaneIP",
            "controlPlaneIP must be an IP address",
            cluster(json!({ "controlPlaneIP": "not-an-ip" })),
            None,
        ),
        case(
            "MetalStackCluster",
            "spec.firewall.egressRules.[].to",
            cidr,
            cluster(json!({ "firewall": firewall(egress("everywhere")) })),
            None,
        ),
        case(
            "MetalStackCluster",
            "spec.firewall.ingressRules.[].from",
            cidr,
            cluster(json!({ "firewall": firewall(ingress_from.clone()) })),
            None,
        ),
        case(
            "MetalStackCluster",
            "spec.firewall.ingressRules.[].to",
            cidr,
            cluster(json!({ "firewall": firewall(ingress_to.clone()) })),
            None,
        ),
        case(
            "MetalStackClusterTemplate",
            "spec.template.spec.controlPlaneIP",
            "controlPlaneIP must be an IP address",
            template(cluster(json!({ "controlPlaneIP": "10.0.0.0/8" }))),
            None,
        ),
        case(
            "MetalStackClusterTemplate",
            "spec.template.spec.firewall.egressRules.[].to",
            cidr,
            template(cluster(json!({ "firewall": firewall(egress("everywhere")) }))),
            None,
        ),
        case(
            "MetalStackClusterTemplate",
            "spec.template.spec.firewall.ingressRules.[].from",
            cidr,
            template(cluster(json!({ "firewall": firewall(ingress_from.clone()) }))),
            None,
        ),
        case(
            "MetalStackClusterTemplate",
            "spec.template.spec.firewall.ingressRules.[].to",
            cidr,
            template(cluster(json!({ "firewall": firewall(ingress_to.clone()) }))),
            None,
        ),
        case(
            "MetalStackFirewall",
            "",
            "size is immutable",
            firewall(json!({})),
            Some(json!({ "size": "c2-large-x86" })),
        ),
        case(
            "MetalStackFirewall",
            "",
            "image is immutable",
            firewall(json!({})),
            Some(json!({ "image": "firewall-ubuntu-4.0" })),
        ),
        case(
            "MetalStackFirewall",
            "",
            "providerID is immutable once set",
            firewall(json!({ "providerID": "metal://mini-lab/a" })),
            Some(json!({ "providerID": "metal://mini-lab/b" })),
        ),
        case("MetalStackFirewall", "spec.egressRules.[].to", cidr, firewall(egress("everywhere")), None),
        case("MetalStackFirewall", "spec.ingressRules.[].from", cidr, firewall(ingress_from), None),
        case("MetalStackFirewall", "spec.ingressRules.[].to", cidr, firewall(ingress_to), None),
        case(
            "MetalStackMachine",
            "",
            "size is immutable",
            machine(json!({})),
            Some(json!({ "size": "c2-large-x86" })),
        ),
        case(
            "MetalStackMachine",
            "",
            "image is immutable",
            machine(json!({})),
            Some(json!({ "image": "debian-13.0" })),
        ),
        case(
            "MetalStackMachine",
            "",
            "providerID is immutable once set",
            machine(json!({ "providerID": "metal://mini-lab/a" })),
            Some(json!({ "providerID": "metal://mini-lab/b" })),
        ),
        case(
            "MetalStackMachine",
            "",
            "machineID is immutable",
            machine(json!({})),
            Some(json!({ "machineID": "pinned-later" })),
        ),
        case("MetalStackMachine", "spec.tags", reserved, machine(forged.clone()), None),
        case(
            "MetalStackMachineTemplate",
            "spec.template.spec.tags",
            reserved,
            template(machine(forged)),
            None,
        ),
    ]
}

/// `(kind, path, message)` of every CEL rule of capms's CRDs as the apiserver serves them.
pub async fn installed_rules(cluster: &ManagementCluster) -> Result<Vec<(String, String, String)>> {
    let crds: Api<CustomResourceDefinition> = Api::all(cluster.plane().client());
    let list = crds
        .list(&ListParams::default())
        .await
        .map_err(|source| Error::Kube { context: "list CRDs".to_string(), source })?;
    let mut found = Vec::new();
    for crd in list.items.into_iter().filter(|crd| crd.spec.group == "infrastructure.cluster.x-k8s.io") {
        for version in &crd.spec.versions {
            let schema = version.schema.as_ref().and_then(|schema| schema.open_api_v3_schema.as_ref());
            let schema = serde_json::to_value(schema).map_err(|error| Error::Invalid(error.to_string()))?;
            walk(&crd.spec.names.kind, &schema, "", &mut found);
        }
    }
    found.sort();
    Ok(found)
}

fn walk(kind: &str, schema: &Value, path: &str, found: &mut Vec<(String, String, String)>) {
    for rule in schema.get("x-kubernetes-validations").and_then(Value::as_array).into_iter().flatten() {
        let message = rule.get("message").and_then(Value::as_str).unwrap_or_default();
        found.push((kind.to_string(), path.to_string(), message.to_string()));
    }
    let join = |name: &str| if path.is_empty() { name.to_string() } else { format!("{path}.{name}") };
    for (name, property) in schema.get("properties").and_then(Value::as_object).into_iter().flatten() {
        walk(kind, property, &join(name), found);
    }
    if let Some(items) = schema.get("items") {
        walk(kind, items, &join("[]"), found);
    }
}

/// Runs one case against the apiserver: the create (or the update) must be refused with the
/// rule's message. Cleans up what it created.
pub async fn check(cluster: &ManagementCluster, index: usize, case: &Case) -> Result<()> {
    let plural = format!("{}s", case.kind.to_lowercase());
    let api: Api<DynamicObject> =
        Api::namespaced_with(cluster.plane().client(), "default", &capms(case.kind, &plural));
    let name = format!("cel-{index}");
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1",
        "kind": case.kind,
        "metadata": { "name": name },
        "spec": case.spec,
    }))
    .map_err(|error| Error::Invalid(error.to_string()))?;
    let created = api.create(&PostParams::default(), &object).await;
    let refusal = match (&case.update, created) {
        (None, Ok(_)) => None,
        (None, Err(error)) => Some(error),
        (Some(_), Err(error)) => {
            return Err(Error::Invalid(format!(
                "{} {name}: the valid object was refused: {error}",
                case.kind
            )));
        }
        (Some(update), Ok(_)) => {
            let patch = json!({ "spec": update });
            let answer = api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await;
            api.delete(&name, &DeleteParams::default())
                .await
                .map_err(|source| Error::Kube { context: format!("delete {name}"), source })?;
            answer.err()
        }
    };
    match refusal {
        Some(kube::Error::Api(status)) if status.code == 422 && status.message.contains(case.message) => {
            Ok(())
        }
        Some(other) => Err(Error::Invalid(format!(
            "{} ({}): refused, but not by the rule {:?}: {other}",
            case.kind, case.path, case.message
        ))),
        None => {
            let _ = api.delete(&name, &DeleteParams::default()).await;
            Err(Error::Invalid(format!(
                "{} ({}): accepted, but the rule {:?} exists to refuse it",
                case.kind, case.path, case.message
            )))
        }
    }
}

//! The ClusterClass `metalstack` (`clusterclass-metalstack.yaml`) and the flavor that uses it
//! (`cluster-template-topology.yaml`).
//!
//! clusterctl's rules for ClusterClass files: no namespaces and no variables in them (the
//! class is installed into the cluster's namespace), names prefixed with the class name (two
//! classes must share nothing). Everything a cluster chooses comes in as a ClusterClass
//! variable and is written into the templates by patches; the templates carry placeholders
//! that the patches always replace.

use capms_core::api::{
    API_VERSION, MetalStackClusterSpec, MetalStackClusterTemplate, MetalStackClusterTemplateResource,
    MetalStackClusterTemplateSpec, MetalStackMachineSpec, MetalStackMachineTemplate,
    MetalStackMachineTemplateResource, MetalStackMachineTemplateSpec,
};
use serde_json::{Value, json};

use super::{ManifestError, templates, yaml};

/// The class name; clusterctl finds the file `clusterclass-<name>.yaml` by it.
pub(crate) const NAME: &str = "metalstack";
/// The file clusterctl looks for.
pub(crate) const FILE_NAME: &str = "clusterclass-metalstack.yaml";
/// The one worker class.
const WORKER_CLASS: &str = "default-worker";
/// Placeholder of patched fields (the schemas need a non-empty value).
const PATCHED: &str = "set-by-clusterclass-patch";

/// Every document of `clusterclass-metalstack.yaml`.
pub(crate) fn all() -> Result<Vec<Value>, ManifestError> {
    Ok(vec![
        cluster_class(),
        yaml::document(&cluster_template())?,
        control_plane_template()?,
        yaml::document(&machine_template("metalstack-control-plane"))?,
        worker_bootstrap_template(),
        yaml::document(&machine_template("metalstack-worker"))?,
    ])
}

fn reference(api_version: &str, kind: &str, name: &str) -> Value {
    json!({"apiVersion": api_version, "kind": kind, "name": name})
}

fn template_ref(api_version: &str, kind: &str, name: &str) -> Value {
    json!({"templateRef": reference(api_version, kind, name)})
}

fn cluster_class() -> Value {
    json!({
        "apiVersion": "cluster.x-k8s.io/v1beta2",
        "kind": "ClusterClass",
        "metadata": {"name": NAME},
        "spec": {
            "infrastructure": template_ref(API_VERSION, "MetalStackClusterTemplate", "metalstack-cluster"),
            "controlPlane": {
                "templateRef": reference(
                    "controlplane.cluster.x-k8s.io/v1beta2", "KubeadmControlPlaneTemplate", "metalstack-control-plane",
                ),
                "machineInfrastructure":
                    template_ref(API_VERSION, "MetalStackMachineTemplate", "metalstack-control-plane"),
            },
            "workers": {"machineDeployments": [{
                "class": WORKER_CLASS,
                "bootstrap":
                    template_ref("bootstrap.cluster.x-k8s.io/v1beta2", "KubeadmConfigTemplate", "metalstack-worker"),
                "infrastructure": template_ref(API_VERSION, "MetalStackMachineTemplate", "metalstack-worker"),
            }]},
            "variables": variables(),
            "patches": patches(),
        },
    })
}

/// `(name, default)`; a variable without default is required.
const VARIABLES: [(&str, Option<&str>); 9] = [
    ("projectID", None),
    ("partition", Some("mini-lab")),
    ("externalNetworkID", Some("internet-mini-lab")),
    ("firewallMachineSize", Some("v1-small-x86")),
    ("firewallMachineImage", Some("firewall-ubuntu-3.0")),
    ("controlPlaneMachineSize", Some("v1-small-x86")),
    ("controlPlaneMachineImage", None),
    ("workerMachineSize", Some("v1-small-x86")),
    ("workerMachineImage", None),
];

fn variables() -> Vec<Value> {
    VARIABLES
        .into_iter()
        .map(|(name, default)| {
            let mut schema = json!({"type": "string", "minLength": 1});
            if let Some(default) = default {
                schema["default"] = json!(default);
            }
            json!({"name": name, "required": default.is_none(), "schema": {"openAPIV3Schema": schema}})
        })
        .collect()
}

/// Where a patched value comes from.
#[derive(Debug, Clone, Copy)]
enum Source {
    /// A variable's value.
    Variable(&'static str),
    /// A Go template over the variables, rendered as YAML. Cluster API refuses array indexes in
    /// `replace` paths (`elements in arrays can not be accessed in a replace operation`, found
    /// by the real-cluster flows), so a list is replaced whole from a template.
    Template(&'static str),
}

fn replace(path: &str, source: Source) -> Value {
    let value_from = match source {
        Source::Variable(variable) => json!({"variable": variable}),
        Source::Template(template) => json!({"template": template}),
    };
    json!({"op": "replace", "path": path, "valueFrom": value_from})
}

fn patch(name: &str, kind: &str, resources: Value, replacements: &[(&str, Source)]) -> Value {
    let json_patches: Vec<Value> = replacements.iter().map(|(path, source)| replace(path, *source)).collect();
    json!({
        "name": name,
        "definitions": [{
            "selector": {"apiVersion": API_VERSION, "kind": kind, "matchResources": resources},
            "jsonPatches": json_patches,
        }],
    })
}

fn patches() -> Vec<Value> {
    vec![
        patch(
            "metal-stack-cluster",
            "MetalStackClusterTemplate",
            json!({"infrastructureCluster": true}),
            &[
                ("/spec/template/spec/projectID", Source::Variable("projectID")),
                ("/spec/template/spec/partition", Source::Variable("partition")),
                ("/spec/template/spec/firewall/size", Source::Variable("firewallMachineSize")),
                ("/spec/template/spec/firewall/image", Source::Variable("firewallMachineImage")),
                (
                    "/spec/template/spec/firewall/networks",
                    Source::Template("- {{ .externalNetworkID | quote }}"),
                ),
            ],
        ),
        patch(
            "control-plane-machines",
            "MetalStackMachineTemplate",
            json!({"controlPlane": true}),
            &[
                ("/spec/template/spec/size", Source::Variable("controlPlaneMachineSize")),
                ("/spec/template/spec/image", Source::Variable("controlPlaneMachineImage")),
            ],
        ),
        patch(
            "worker-machines",
            "MetalStackMachineTemplate",
            json!({"machineDeploymentClass": {"names": [WORKER_CLASS]}}),
            &[
                ("/spec/template/spec/size", Source::Variable("workerMachineSize")),
                ("/spec/template/spec/image", Source::Variable("workerMachineImage")),
            ],
        ),
    ]
}

fn cluster_template() -> MetalStackClusterTemplate {
    let mut firewall = templates::firewall();
    firewall.size = PATCHED.to_string();
    firewall.image = PATCHED.to_string();
    firewall.networks = vec![PATCHED.to_string()];
    let spec = MetalStackClusterSpec {
        project_id: PATCHED.to_string(),
        partition: PATCHED.to_string(),
        firewall: Some(firewall),
        ..Default::default()
    };
    let resource = MetalStackClusterTemplateResource { metadata: None, spec };
    MetalStackClusterTemplate::new("metalstack-cluster", MetalStackClusterTemplateSpec { template: resource })
}

fn machine_template(name: &str) -> MetalStackMachineTemplate {
    let spec =
        MetalStackMachineSpec { size: PATCHED.to_string(), image: PATCHED.to_string(), ..Default::default() };
    let resource = MetalStackMachineTemplateResource { metadata: None, spec };
    MetalStackMachineTemplate::new(name, MetalStackMachineTemplateSpec { template: resource })
}

fn control_plane_template() -> Result<Value, ManifestError> {
    Ok(json!({
        "apiVersion": "controlplane.cluster.x-k8s.io/v1beta2",
        "kind": "KubeadmControlPlaneTemplate",
        "metadata": {"name": "metalstack-control-plane"},
        "spec": {"template": {"spec": {"kubeadmConfigSpec": templates::control_plane_config()?}}},
    }))
}

fn worker_bootstrap_template() -> Value {
    json!({
        "apiVersion": "bootstrap.cluster.x-k8s.io/v1beta2",
        "kind": "KubeadmConfigTemplate",
        "metadata": {"name": "metalstack-worker"},
        "spec": {"template": {"spec": templates::worker_config()}},
    })
}

/// `cluster-template-topology.yaml`: a Cluster of class `metalstack`, its choices passed as
/// ClusterClass variables from the same clusterctl variables the other flavors use.
pub(crate) fn topology_flavor() -> Vec<Value> {
    let values = [
        ("projectID", "${METAL_PROJECT_ID}"),
        ("partition", "${METAL_PARTITION:=mini-lab}"),
        ("externalNetworkID", "${METAL_EXTERNAL_NETWORK_ID:=internet-mini-lab}"),
        ("firewallMachineSize", "${FIREWALL_MACHINE_SIZE:=v1-small-x86}"),
        ("firewallMachineImage", "${FIREWALL_MACHINE_IMAGE:=firewall-ubuntu-3.0}"),
        ("controlPlaneMachineSize", "${CONTROL_PLANE_MACHINE_SIZE:=v1-small-x86}"),
        ("controlPlaneMachineImage", "${CONTROL_PLANE_MACHINE_IMAGE}"),
        ("workerMachineSize", "${WORKER_MACHINE_SIZE:=v1-small-x86}"),
        ("workerMachineImage", "${WORKER_MACHINE_IMAGE}"),
    ];
    let variables: Vec<Value> =
        values.iter().map(|(name, value)| json!({"name": name, "value": value})).collect();
    vec![json!({
        "apiVersion": "cluster.x-k8s.io/v1beta2",
        "kind": "Cluster",
        "metadata": {"name": "${CLUSTER_NAME}", "namespace": "${NAMESPACE}"},
        "spec": {
            "clusterNetwork": templates::cluster_network(),
            "topology": {
                "classRef": {"name": NAME},
                "version": "${KUBERNETES_VERSION}",
                "controlPlane": {"replicas": "${CONTROL_PLANE_MACHINE_COUNT}"},
                "workers": {"machineDeployments": [
                    {"class": WORKER_CLASS, "name": "md-0", "replicas": "${WORKER_MACHINE_COUNT}"},
                ]},
                "variables": variables,
            },
        },
    })]
}

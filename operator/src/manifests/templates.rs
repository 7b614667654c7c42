//! The cluster templates `clusterctl generate cluster --infrastructure metalstack` renders.
//!
//! - `cluster-template.yaml` (default): a node network and a control-plane IP allocated by
//!   capms, a firewall in front of the node network, kubeadm control plane and workers.
//! - `cluster-template-no-firewall.yaml`: no firewall; every machine is attached to the
//!   external network as well, so nodes reach the internet without one.
//!
//! The control-plane endpoint is an IP of the external network that capms allocates (or
//! `CONTROL_PLANE_IP`); kube-vip announces it over BGP to the machine's own FRR, as the Go
//! provider does. The bootstrap format is Ignition, which metal-stack images run (clusterctl
//! must install the kubeadm bootstrap provider with `EXP_KUBEADM_BOOTSTRAP_FORMAT_IGNITION=true`).
//! CNI and metal-ccm (which sets the Nodes' providerIDs) are the user's to install.

use capms_core::api::{
    FirewallEgressRule, FirewallIngressRule, FirewallProtocol, MetalStackCluster, MetalStackClusterSpec,
    MetalStackFirewallTemplateSpec, MetalStackMachineSpec, MetalStackMachineTemplate,
    MetalStackMachineTemplateResource, MetalStackMachineTemplateSpec,
};
use serde_json::{Value, json};

use super::{ManifestError, yaml};

/// kube-vip's release (the one the Go provider ships).
const KUBE_VIP_IMAGE: &str = "ghcr.io/kube-vip/kube-vip:v0.8.10";
/// The kube-vip static pod, filled in on the machine by [`KUBE_VIP_PREPARE`].
const KUBE_VIP_MANIFEST: &str = "/etc/kubernetes/manifests/kube-vip.yaml";
const KUBE_VIP_PREPARE_PATH: &str = "/etc/capms/kube-vip-prepare.sh";

/// Fills the kube-vip manifest's placeholders on the machine. The endpoint is only known once
/// capms allocated it, so it is read from the kubeadm configuration CABPK wrote; the ASN and
/// router id are the machine's own, from the FRR configuration of metal-stack images. No
/// `${` may appear here: clusterctl would take it for a variable.
const KUBE_VIP_PREPARE: &str = r#"#!/bin/sh
# Fills in the kube-vip static pod (written by capms's cluster template).
set -eu
manifest=/etc/kubernetes/manifests/kube-vip.yaml
config=/run/kubeadm/kubeadm-join-config.yaml
kubeconfig=/etc/kubernetes/admin.conf
if [ -f /run/kubeadm/kubeadm.yaml ]; then
  # First control-plane node: admin.conf has no rights before kubeadm init finishes (Kubernetes >= 1.29).
  config=/run/kubeadm/kubeadm.yaml
  kubeconfig=/etc/kubernetes/super-admin.conf
fi
address=$(sed -n 's/^ *\(controlPlaneEndpoint\|apiServerEndpoint\): *"\{0,1\}\([^:"]*\).*/\2/p' "$config" | head -n 1)
asn=$(sed -n 's/^ *router bgp \([0-9]*\).*/\1/p' /etc/frr/frr.conf | head -n 1)
router_id=$(sed -n 's/^ *bgp router-id \([0-9.]*\).*/\1/p' /etc/frr/frr.conf | head -n 1)
sed -i -e "s|KUBE_VIP_ADDRESS|$address|" -e "s|KUBE_VIP_ASN|$asn|g" -e "s|KUBE_VIP_ROUTER_ID|$router_id|" \
  -e "s|KUBE_VIP_KUBECONFIG|$kubeconfig|" "$manifest"
"#;

/// After `kubeadm init` the first node switches kube-vip back to the ordinary admin.conf.
const KUBE_VIP_RESTORE: &str = "sed -i 's|/etc/kubernetes/super-admin.conf|/etc/kubernetes/admin.conf|' /etc/kubernetes/manifests/kube-vip.yaml";

/// `cluster-template.yaml`.
pub(crate) fn default_flavor() -> Result<Vec<Value>, ManifestError> {
    let cluster = metal_stack_cluster(Some(firewall()));
    flavor(cluster, Vec::new())
}

/// `cluster-template-no-firewall.yaml`.
pub(crate) fn no_firewall_flavor() -> Result<Vec<Value>, ManifestError> {
    let cluster = metal_stack_cluster(None);
    flavor(cluster, vec![EXTERNAL_NETWORK.to_string()])
}

/// The external network of the firewall (default flavor) or of every machine (no-firewall).
const EXTERNAL_NETWORK: &str = "${METAL_EXTERNAL_NETWORK_ID:=internet-mini-lab}";

fn flavor(infrastructure: MetalStackCluster, networks: Vec<String>) -> Result<Vec<Value>, ManifestError> {
    let control_plane_machines = machine_template(
        "${CLUSTER_NAME}-control-plane",
        "${CONTROL_PLANE_MACHINE_SIZE:=v1-small-x86}",
        "${CONTROL_PLANE_MACHINE_IMAGE}",
        networks.clone(),
    );
    let worker_machines = machine_template(
        "${CLUSTER_NAME}-md-0",
        "${WORKER_MACHINE_SIZE:=v1-small-x86}",
        "${WORKER_MACHINE_IMAGE}",
        networks,
    );
    Ok(vec![
        cluster(),
        yaml::document(&infrastructure)?,
        control_plane()?,
        yaml::document(&control_plane_machines)?,
        machine_deployment(),
        yaml::document(&worker_machines)?,
        worker_bootstrap(),
    ])
}

fn metadata(name: &str) -> Value {
    json!({"name": name, "namespace": "${NAMESPACE}"})
}

fn cluster() -> Value {
    json!({
        "apiVersion": "cluster.x-k8s.io/v1beta2",
        "kind": "Cluster",
        "metadata": metadata("${CLUSTER_NAME}"),
        "spec": {
            "clusterNetwork": cluster_network(),
            "controlPlaneRef": {
                "apiGroup": "controlplane.cluster.x-k8s.io",
                "kind": "KubeadmControlPlane",
                "name": "${CLUSTER_NAME}-control-plane",
            },
            "infrastructureRef": {
                "apiGroup": capms_core::api::GROUP,
                "kind": "MetalStackCluster",
                "name": "${CLUSTER_NAME}",
            },
        },
    })
}

/// The pod CIDR default is mini-lab's announcable pod network (10.240.0.0/12).
pub(crate) fn cluster_network() -> Value {
    json!({
        "pods": {"cidrBlocks": ["${POD_CIDR:=10.240.0.0/12}"]},
        "services": {"cidrBlocks": ["${SERVICE_CIDR:=10.96.0.0/12}"]},
    })
}

/// `nodeNetworkID` and `controlPlaneIP` default to YAML `null` (the apiserver drops nulls of
/// optional fields), which lets capms allocate both; set them to use existing ones.
fn metal_stack_cluster(firewall: Option<MetalStackFirewallTemplateSpec>) -> MetalStackCluster {
    let spec = MetalStackClusterSpec {
        project_id: "${METAL_PROJECT_ID}".to_string(),
        partition: "${METAL_PARTITION:=mini-lab}".to_string(),
        node_network_id: Some("${METAL_NODE_NETWORK_ID:=null}".to_string()),
        control_plane_ip: Some("${CONTROL_PLANE_IP:=null}".to_string()),
        firewall,
        ..Default::default()
    };
    let mut cluster = MetalStackCluster::new("${CLUSTER_NAME}", spec);
    cluster.metadata.namespace = Some("${NAMESPACE}".to_string());
    cluster
}

/// The firewall: out to the web, DNS, NTP and API servers; in to the API server endpoint.
pub(crate) fn firewall() -> MetalStackFirewallTemplateSpec {
    MetalStackFirewallTemplateSpec {
        size: "${FIREWALL_MACHINE_SIZE:=v1-small-x86}".to_string(),
        image: "${FIREWALL_MACHINE_IMAGE:=firewall-ubuntu-3.0}".to_string(),
        networks: vec![EXTERNAL_NETWORK.to_string()],
        egress_rules: vec![
            egress(FirewallProtocol::Tcp, &[80, 443], "web"),
            egress(FirewallProtocol::Tcp, &[53], "dns tcp"),
            egress(FirewallProtocol::Udp, &[53], "dns udp"),
            egress(FirewallProtocol::Udp, &[123], "ntp"),
            egress(FirewallProtocol::Tcp, &[6443], "kube-apiserver"),
        ],
        ingress_rules: vec![FirewallIngressRule {
            protocol: FirewallProtocol::Tcp,
            ports: vec![6443],
            from: vec!["0.0.0.0/0".to_string()],
            to: Vec::new(),
            comment: Some("kube-apiserver".to_string()),
        }],
        ssh_keys: Vec::new(),
    }
}

fn egress(protocol: FirewallProtocol, ports: &[i32], comment: &str) -> FirewallEgressRule {
    FirewallEgressRule {
        protocol,
        ports: ports.to_vec(),
        to: vec!["0.0.0.0/0".to_string()],
        comment: Some(comment.to_string()),
    }
}

fn machine_template(name: &str, size: &str, image: &str, networks: Vec<String>) -> MetalStackMachineTemplate {
    let spec = MetalStackMachineSpec {
        size: size.to_string(),
        image: image.to_string(),
        additional_networks: networks,
        ..Default::default()
    };
    let resource = MetalStackMachineTemplateResource { metadata: None, spec };
    let mut template =
        MetalStackMachineTemplate::new(name, MetalStackMachineTemplateSpec { template: resource });
    template.metadata.namespace = Some("${NAMESPACE}".to_string());
    template
}

fn control_plane() -> Result<Value, ManifestError> {
    Ok(json!({
        "apiVersion": "controlplane.cluster.x-k8s.io/v1beta2",
        "kind": "KubeadmControlPlane",
        "metadata": metadata("${CLUSTER_NAME}-control-plane"),
        "spec": {
            "replicas": "${CONTROL_PLANE_MACHINE_COUNT}",
            "version": "${KUBERNETES_VERSION}",
            "machineTemplate": {"spec": {
                "infrastructureRef": {
                    "apiGroup": capms_core::api::GROUP,
                    "kind": "MetalStackMachineTemplate",
                    "name": "${CLUSTER_NAME}-control-plane",
                },
                "deletion": {"nodeDrainTimeoutSeconds": 600},
            }},
            "kubeadmConfigSpec": control_plane_config()?,
        },
    }))
}

/// kubelet flags of every node: metal-ccm initializes the Nodes (and sets their providerID).
fn node_registration() -> Value {
    json!({"kubeletExtraArgs": [{"name": "cloud-provider", "value": "external"}]})
}

/// The kubeadm configuration of control-plane machines (also used by the ClusterClass).
pub(crate) fn control_plane_config() -> Result<Value, ManifestError> {
    Ok(json!({
        "format": "ignition",
        "initConfiguration": {"nodeRegistration": node_registration()},
        "joinConfiguration": {"nodeRegistration": node_registration()},
        "files": [
            {"path": KUBE_VIP_PREPARE_PATH, "owner": "root:root", "permissions": "0755", "content": KUBE_VIP_PREPARE},
            {"path": KUBE_VIP_MANIFEST, "owner": "root:root", "permissions": "0644", "content": kube_vip_pod()?},
        ],
        "preKubeadmCommands": [format!("sh {KUBE_VIP_PREPARE_PATH}")],
        "postKubeadmCommands": [KUBE_VIP_RESTORE],
    }))
}

/// The kubeadm configuration of worker machines (also used by the ClusterClass).
pub(crate) fn worker_config() -> Value {
    json!({"format": "ignition", "joinConfiguration": {"nodeRegistration": node_registration()}})
}

/// kube-vip as a static pod announcing the endpoint over BGP on `lo` (metal-stack machines
/// route their addresses from `lo` through FRR). Placeholders are filled on the machine.
fn kube_vip_pod() -> Result<String, ManifestError> {
    let env: Vec<Value> = [
        ("address", "KUBE_VIP_ADDRESS"),
        ("port", "6443"),
        ("vip_interface", "lo"),
        ("vip_cidr", "32"),
        ("cp_enable", "true"),
        ("cp_namespace", "kube-system"),
        ("svc_enable", "false"),
        ("bgp_enable", "true"),
        ("bgp_routerid", "KUBE_VIP_ROUTER_ID"),
        ("bgp_as", "KUBE_VIP_ASN"),
        ("bgp_peers", "127.0.0.1:KUBE_VIP_ASN::false"),
    ]
    .iter()
    .map(|(name, value)| json!({"name": name, "value": value}))
    .collect();
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "kube-vip", "namespace": "kube-system"},
        "spec": {
            "hostNetwork": true,
            "hostAliases": [{"ip": "127.0.0.1", "hostnames": ["kubernetes"]}],
            "containers": [{
                "name": "kube-vip",
                "image": KUBE_VIP_IMAGE,
                "args": ["manager"],
                "env": env,
                "securityContext": {"capabilities": {"add": ["NET_ADMIN", "NET_RAW"]}},
                "volumeMounts": [{"name": "kubeconfig", "mountPath": "/etc/kubernetes/admin.conf"}],
            }],
            "volumes": [{"name": "kubeconfig", "hostPath": {"path": "KUBE_VIP_KUBECONFIG"}}],
        },
    });
    yaml::to_text(&pod)
}

fn machine_deployment() -> Value {
    json!({
        "apiVersion": "cluster.x-k8s.io/v1beta2",
        "kind": "MachineDeployment",
        "metadata": metadata("${CLUSTER_NAME}-md-0"),
        "spec": {
            "clusterName": "${CLUSTER_NAME}",
            "replicas": "${WORKER_MACHINE_COUNT}",
            "selector": {"matchLabels": {}},
            "template": {"spec": {
                "clusterName": "${CLUSTER_NAME}",
                "version": "${KUBERNETES_VERSION}",
                "bootstrap": {"configRef": {
                    "apiGroup": "bootstrap.cluster.x-k8s.io",
                    "kind": "KubeadmConfigTemplate",
                    "name": "${CLUSTER_NAME}-md-0",
                }},
                "infrastructureRef": {
                    "apiGroup": capms_core::api::GROUP,
                    "kind": "MetalStackMachineTemplate",
                    "name": "${CLUSTER_NAME}-md-0",
                },
                "deletion": {"nodeDrainTimeoutSeconds": 120},
            }},
        },
    })
}

fn worker_bootstrap() -> Value {
    json!({
        "apiVersion": "bootstrap.cluster.x-k8s.io/v1beta2",
        "kind": "KubeadmConfigTemplate",
        "metadata": metadata("${CLUSTER_NAME}-md-0"),
        "spec": {"template": {"spec": worker_config()}},
    })
}

//! `infrastructure-components.yaml`: what `clusterctl init --infrastructure metalstack`
//! applies to the management cluster.
//!
//! One Namespace (clusterctl aborts on more than one), the CRDs, the metal-api credentials
//! Secret, a ServiceAccount with least-privilege RBAC, the ClusterRole aggregated into CAPI's
//! manager, the metrics Service and the `capms-controller-manager` Deployment. Every object
//! carries the provider label, which clusterctl uses to find, upgrade and delete the provider.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction, Namespace,
    ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements,
    SeccompProfile, Secret, SecretKeySelector, SecurityContext, Service, ServiceAccount, ServicePort,
    ServiceSpec, Toleration,
};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use super::{IMAGE_REPOSITORY, ManifestError, NAMESPACE, PROVIDER_LABEL, yaml::document};
use capms_core::api::{GROUP, PROVIDER_LABEL as PROVIDER_LABEL_KEY};

/// Name of the Deployment (and prefix of every other object).
pub(crate) const DEPLOYMENT: &str = "capms-controller-manager";
/// The Secret holding the manager's metal-api credentials, filled from clusterctl variables.
pub(crate) const CREDENTIALS_SECRET: &str = "capms-metal-api-credentials";
/// The ServiceAccount the manager runs as.
const SERVICE_ACCOUNT: &str = "capms-manager";
/// Port of `/metrics` (Prometheus text format).
const METRICS_PORT: i32 = 8080;
/// Port of `/healthz` and `/readyz`.
const HEALTH_PORT: i32 = 8081;
/// The default of an optional variable: one space. clusterctl treats a variable whose default
/// is empty (`${NAME:=}`) as required and refuses to install without it (`value for variables
/// [...] is not set`, clusterctl v1.14.2; the real-cluster flows install with only
/// `METAL_API_URL` and `METAL_API_HMAC` set), so optional variables default to a blank, which
/// YAML trims from arguments and the manager treats as unset.
pub(crate) const BLANK: &str = " ";
/// The non-root user of the distroless image (`nonroot`).
const NONROOT: i64 = 65532;
/// The kinds capms serves, as RBAC resource names.
const RESOURCES: [&str; 5] = [
    "metalstackclusters",
    "metalstackclustertemplates",
    "metalstackmachines",
    "metalstackmachinetemplates",
    "metalstackfirewalls",
];

/// Every document of `infrastructure-components.yaml`, namespace first (so `kubectl apply`
/// of the file works too), then CRDs, then the rest.
pub(crate) fn all(version: &str) -> Result<Vec<Value>, ManifestError> {
    let mut documents = vec![document(&namespace())?];
    for crd in capms_core::api::crds::all() {
        documents.push(document(&crd)?);
    }
    documents.extend([
        document(&credentials())?,
        document(&service_account())?,
        document(&manager_role())?,
        document(&manager_binding())?,
        document(&leader_election_role())?,
        document(&leader_election_binding())?,
        document(&aggregated_role())?,
        document(&metrics_service())?,
        document(&deployment(version))?,
    ]);
    Ok(documents)
}

fn labels(extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([(PROVIDER_LABEL_KEY.to_string(), PROVIDER_LABEL.to_string())]);
    labels.extend(extra.iter().map(|(key, value)| (key.to_string(), value.to_string())));
    labels
}

fn meta(name: &str, namespaced: bool) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: namespaced.then(|| NAMESPACE.to_string()),
        labels: Some(labels(&[])),
        ..Default::default()
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|item| item.to_string()).collect()
}

fn rule(group: &str, resources: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(strings(&[group])),
        resources: Some(strings(resources)),
        verbs: strings(verbs),
        ..Default::default()
    }
}

fn namespace() -> Namespace {
    let mut metadata = meta(NAMESPACE, false);
    // The manager runs under the restricted Pod Security Standard; enforce it.
    metadata.labels = Some(labels(&[("pod-security.kubernetes.io/enforce", "restricted")]));
    Namespace { metadata, ..Default::default() }
}

/// Credentials as clear text (`stringData`): clusterctl substitutes variables into text, and
/// base64 would need the user to encode them first. HMAC and token are alternatives, so both
/// default to blank ([`BLANK`]); the manager refuses to start without one of them.
fn credentials() -> Secret {
    let data = [
        ("METAL_API_URL", "${METAL_API_URL}".to_string()),
        ("METAL_API_HMAC", format!("${{METAL_API_HMAC:={BLANK}}}")),
        ("METAL_API_HMAC_AUTH_TYPE", "${METAL_API_HMAC_AUTH_TYPE:=Metal-Edit}".to_string()),
        ("METAL_API_TOKEN", format!("${{METAL_API_TOKEN:={BLANK}}}")),
    ];
    Secret {
        metadata: meta(CREDENTIALS_SECRET, true),
        type_: Some("Opaque".to_string()),
        string_data: Some(data.iter().map(|(key, value)| (key.to_string(), value.to_string())).collect()),
        ..Default::default()
    }
}

fn service_account() -> ServiceAccount {
    ServiceAccount { metadata: meta(SERVICE_ACCOUNT, true), ..Default::default() }
}

/// What the reconcilers touch, and nothing more: capms's own kinds (it creates and deletes
/// only firewalls; CAPI core creates machines), read-only CAPI Clusters and Machines,
/// Secrets (bootstrap data, per-cluster credentials, which it marks while they are in use),
/// Events, and the CRDs it checks at start.
fn manager_role() -> ClusterRole {
    const READ: [&str; 3] = ["get", "list", "watch"];
    const WRITE: [&str; 5] = ["get", "list", "watch", "update", "patch"];
    const OWN: [&str; 7] = ["get", "list", "watch", "create", "update", "patch", "delete"];
    let rules = vec![
        rule(GROUP, &["metalstackclusters", "metalstackmachines"], &WRITE),
        rule(GROUP, &["metalstackfirewalls"], &OWN),
        rule(
            GROUP,
            &["metalstackclusters/status", "metalstackmachines/status", "metalstackfirewalls/status"],
            &["get", "update", "patch"],
        ),
        // Owner references with blockOwnerDeletion need update on the owner's finalizers
        // (OwnerReferencesPermissionEnforcement).
        rule(
            GROUP,
            &[
                "metalstackclusters/finalizers",
                "metalstackmachines/finalizers",
                "metalstackfirewalls/finalizers",
            ],
            &["update"],
        ),
        rule("cluster.x-k8s.io", &["clusters", "machines"], &READ),
        // Patch: the finalizer and label that keep a cluster's credentials Secret (credentials.rs).
        rule("", &["secrets"], &["get", "list", "watch", "patch"]),
        rule("", &["events"], &["create", "patch"]),
        rule("events.k8s.io", &["events"], &["create", "patch"]),
        rule("apiextensions.k8s.io", &["customresourcedefinitions"], &["get", "list"]),
    ];
    ClusterRole { metadata: meta("capms-manager-role", false), rules: Some(rules), ..Default::default() }
}

fn subject() -> Subject {
    Subject {
        kind: "ServiceAccount".to_string(),
        name: SERVICE_ACCOUNT.to_string(),
        namespace: Some(NAMESPACE.to_string()),
        ..Default::default()
    }
}

fn role_ref(kind: &str, name: &str) -> RoleRef {
    RoleRef {
        api_group: "rbac.authorization.k8s.io".to_string(),
        kind: kind.to_string(),
        name: name.to_string(),
    }
}

fn manager_binding() -> ClusterRoleBinding {
    ClusterRoleBinding {
        metadata: meta("capms-manager-rolebinding", false),
        role_ref: role_ref("ClusterRole", "capms-manager-role"),
        subjects: Some(vec![subject()]),
    }
}

/// Leases only in the manager's own namespace: leader election needs no cluster-wide write.
fn leader_election_role() -> Role {
    let verbs = ["get", "list", "watch", "create", "update", "patch", "delete"];
    Role {
        metadata: meta("capms-leader-election-role", true),
        rules: Some(vec![rule("coordination.k8s.io", &["leases"], &verbs)]),
    }
}

fn leader_election_binding() -> RoleBinding {
    RoleBinding {
        metadata: meta("capms-leader-election-rolebinding", true),
        role_ref: role_ref("Role", "capms-leader-election-role"),
        subjects: Some(vec![subject()]),
    }
}

/// CAPI's manager creates MetalStackMachines from templates, sets owner references and
/// deletes them; this role is aggregated into its ClusterRole by the label.
fn aggregated_role() -> ClusterRole {
    let verbs = ["get", "list", "watch", "create", "update", "patch", "delete"];
    let mut metadata = meta("capms-aggregated-manager-role", false);
    metadata.labels = Some(labels(&[("cluster.x-k8s.io/aggregate-to-manager", "true")]));
    ClusterRole { metadata, rules: Some(vec![rule(GROUP, &RESOURCES, &verbs)]), ..Default::default() }
}

fn selector_labels() -> BTreeMap<String, String> {
    labels(&[("app.kubernetes.io/name", "capms-manager")])
}

fn metrics_service() -> Service {
    Service {
        metadata: meta("capms-controller-manager-metrics", true),
        spec: Some(ServiceSpec {
            selector: Some(selector_labels()),
            ports: Some(vec![ServicePort {
                name: Some("metrics".to_string()),
                port: METRICS_PORT,
                target_port: Some(IntOrString::String("metrics".to_string())),
                protocol: Some("TCP".to_string()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn deployment(version: &str) -> Deployment {
    let mut metadata = meta(DEPLOYMENT, true);
    metadata.labels = Some(selector_labels());
    let pod = PodSpec {
        service_account_name: Some(SERVICE_ACCOUNT.to_string()),
        termination_grace_period_seconds: Some(10),
        security_context: Some(pod_security()),
        containers: vec![manager(version)],
        // Management clusters are often a single control-plane node.
        tolerations: Some(vec![Toleration {
            key: Some("node-role.kubernetes.io/control-plane".to_string()),
            effect: Some("NoSchedule".to_string()),
            ..Default::default()
        }]),
        ..Default::default()
    };
    Deployment {
        metadata,
        spec: Some(DeploymentSpec {
            replicas: Some(1),
            selector: LabelSelector { match_labels: Some(selector_labels()), ..Default::default() },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(selector_labels()), ..Default::default() }),
                spec: Some(pod),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn pod_security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(NONROOT),
        run_as_group: Some(NONROOT),
        seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".to_string(), ..Default::default() }),
        ..Default::default()
    }
}

fn container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities { drop: Some(strings(&["ALL"])), ..Default::default() }),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        run_as_user: Some(NONROOT),
        ..Default::default()
    }
}

/// The container clusterctl's contract names `manager`. A blank `--namespace` watches every
/// namespace, a blank `--watch-filter` reconciles every object.
fn manager(version: &str) -> Container {
    let args = [
        "run".to_string(),
        "--leader-elect".to_string(),
        "--metrics-bind-address=:8080".to_string(),
        "--health-probe-bind-address=:8081".to_string(),
        format!("--namespace=${{CAPMS_WATCH_NAMESPACE:={BLANK}}}"),
        format!("--watch-filter=${{CAPMS_WATCH_FILTER:={BLANK}}}"),
        "--concurrency=${CAPMS_CONCURRENCY:=10}".to_string(),
        "--log-format=${CAPMS_LOG_FORMAT:=json}".to_string(),
    ];
    Container {
        name: "manager".to_string(),
        image: Some(format!("${{CAPMS_IMAGE:={IMAGE_REPOSITORY}:{version}}}")),
        image_pull_policy: Some("IfNotPresent".to_string()),
        args: Some(args.to_vec()),
        env: Some(environment()),
        ports: Some(vec![port("metrics", METRICS_PORT), port("healthz", HEALTH_PORT)]),
        liveness_probe: Some(probe("/healthz", 15, 20)),
        readiness_probe: Some(probe("/readyz", 5, 10)),
        resources: Some(resources()),
        security_context: Some(container_security()),
        ..Default::default()
    }
}

fn port(name: &str, number: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_string()),
        container_port: number,
        protocol: Some("TCP".to_string()),
        ..Default::default()
    }
}

fn probe(path: &str, initial_delay: i32, period: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::String("healthz".to_string()),
            ..Default::default()
        }),
        initial_delay_seconds: Some(initial_delay),
        period_seconds: Some(period),
        ..Default::default()
    }
}

fn resources() -> ResourceRequirements {
    let quantities =
        |cpu: &str, memory: &str| BTreeMap::from([cpu_memory("cpu", cpu), cpu_memory("memory", memory)]);
    ResourceRequirements {
        requests: Some(quantities("10m", "64Mi")),
        limits: Some(quantities("500m", "256Mi")),
        ..Default::default()
    }
}

fn cpu_memory(name: &str, amount: &str) -> (String, Quantity) {
    (name.to_string(), Quantity(amount.to_string()))
}

/// The credentials from the Secret (only the URL is required; empty values count as unset),
/// and the pod's own namespace and name for the leader-election lease.
fn environment() -> Vec<EnvVar> {
    let mut env = vec![
        secret_env("METAL_API_URL", false),
        secret_env("METAL_API_HMAC", true),
        secret_env("METAL_API_HMAC_AUTH_TYPE", true),
        secret_env("METAL_API_TOKEN", true),
    ];
    env.push(field_env("POD_NAMESPACE", "metadata.namespace"));
    env.push(field_env("POD_NAME", "metadata.name"));
    env
}

fn secret_env(key: &str, optional: bool) -> EnvVar {
    let selector = SecretKeySelector {
        name: CREDENTIALS_SECRET.to_string(),
        key: key.to_string(),
        optional: optional.then_some(true),
    };
    EnvVar {
        name: key.to_string(),
        value_from: Some(EnvVarSource { secret_key_ref: Some(selector), ..Default::default() }),
        ..Default::default()
    }
}

fn field_env(name: &str, path: &str) -> EnvVar {
    let field = ObjectFieldSelector { field_path: path.to_string(), ..Default::default() };
    EnvVar {
        name: name.to_string(),
        value_from: Some(EnvVarSource { field_ref: Some(field), ..Default::default() }),
        ..Default::default()
    }
}

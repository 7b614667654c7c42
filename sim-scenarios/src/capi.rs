//! A model of Cluster API core as far as an infrastructure provider sees it: the Cluster, a
//! control plane with N replicas (one machine at a time, rolling replacement), a
//! MachineDeployment (scale, roll with max surge 1), bootstrap Secrets that appear once the
//! infrastructure is provisioned, a MachineHealthCheck that replaces Machines whose
//! infrastructure stays unhealthy, CAPI's deletion order, and pause.

use crate::store::{Store, has_finalizer, owner_reference, set_finalizer};
use capms_core::Timestamp;
use capms_core::api::capi::{
    self, Bootstrap, Cluster, ClusterInitialization, ClusterSpec, ClusterStatus,
    ContractVersionedObjectReference, Machine, MachineSpec,
};
use capms_core::api::conditions::{ConditionType, get_condition};
use capms_core::api::{
    ApiEndpoint, MetalStackCluster, MetalStackClusterSpec, MetalStackFirewallTemplateSpec, MetalStackMachine,
    MetalStackMachineSpec,
};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube_core::Resource;
use std::collections::BTreeMap;
use std::time::Duration;

/// CAPI's finalizer on Machines and Clusters.
pub const MACHINE_FINALIZER: &str = "machine.cluster.x-k8s.io";
pub const CLUSTER_FINALIZER: &str = "cluster.cluster.x-k8s.io";

/// How long a MachineHealthCheck waits before it replaces a Machine whose infrastructure is
/// unhealthy.
pub const UNHEALTHY_TIMEOUT: Duration = Duration::from_secs(300);

/// Ready reasons of a MetalStackMachine that a MachineHealthCheck treats as unhealthy.
const UNHEALTHY_REASONS: [&str; 4] =
    ["MachineDead", "MachineFreedExternally", "ProvisioningFailed", "MachineLivelinessUnknown"];

/// What the user asked for one workload cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterPlan {
    pub namespace: String,
    pub name: String,
    pub project: String,
    pub partition: String,
    pub size: String,
    pub control_plane: usize,
    pub control_plane_image: String,
    pub workers: usize,
    pub worker_image: String,
    /// A firewall spec for the MetalStackCluster.
    pub firewall: Option<MetalStackFirewallTemplateSpec>,
    /// A node network the user provides (never freed by capms).
    pub node_network_id: Option<String>,
    /// A control-plane IP the user provides (never freed by capms).
    pub control_plane_ip: Option<String>,
    /// The MetalStackCluster is annotated `cluster.x-k8s.io/managed-by`.
    pub externally_managed: bool,
    /// Bootstrap Secrets carry `value` (false: a broken bootstrap provider).
    pub bootstrap_value: bool,
    /// Datacenter machines the user pins (`MetalStackMachine.spec.machineID`): each new
    /// MetalStackMachine takes the first one no other MetalStackMachine of the cluster pins;
    /// once all are taken, new ones are not pinned.
    pub pinned_machines: Vec<String>,
}

/// CAPI core's controllers for the clusters of one management cluster.
#[derive(Debug, Clone, Default)]
pub struct CapiModel {
    pub plans: BTreeMap<(String, String), ClusterPlan>,
    /// Machines created so far per cluster (names are `<cluster>-cp-<n>` / `<cluster>-md-<n>`).
    created: BTreeMap<(String, String), usize>,
}

impl CapiModel {
    /// Creates the Cluster and MetalStackCluster of a plan.
    pub fn create_cluster(
        &mut self,
        store: &mut Store,
        plan: ClusterPlan,
        now: Timestamp,
    ) -> Result<(), String> {
        let meta = |name: &str| ObjectMeta {
            namespace: Some(plan.namespace.clone()),
            name: Some(name.to_string()),
            ..ObjectMeta::default()
        };
        let mut cluster_meta = meta(&plan.name);
        set_finalizer(&mut cluster_meta, CLUSTER_FINALIZER, true);
        let cluster = Cluster {
            metadata: cluster_meta,
            spec: ClusterSpec {
                paused: Some(false),
                control_plane_endpoint: None,
                infrastructure_ref: Some(ContractVersionedObjectReference {
                    api_group: capms_core::api::GROUP.to_string(),
                    kind: "MetalStackCluster".to_string(),
                    name: plan.name.clone(),
                }),
            },
            ..Cluster::default()
        };
        let cluster =
            store.create(cluster, now).map_err(|e| format!("creating Cluster {}: {e}", plan.name))?;
        let mut metal_meta = meta(&plan.name);
        metal_meta.owner_references = Some(vec![owner_reference(&cluster, true)]);
        metal_meta.labels = Some(BTreeMap::from([(capi::CLUSTER_NAME_LABEL.to_string(), plan.name.clone())]));
        if plan.externally_managed {
            metal_meta.annotations = Some(BTreeMap::from([(
                capi::MANAGED_BY_ANNOTATION.to_string(),
                "external-system".to_string(),
            )]));
        }
        let metal_cluster = MetalStackCluster {
            metadata: metal_meta,
            spec: MetalStackClusterSpec {
                project_id: plan.project.clone(),
                partition: plan.partition.clone(),
                node_network_id: plan.node_network_id.clone(),
                control_plane_ip: plan.control_plane_ip.clone(),
                control_plane_endpoint: None,
                firewall: plan.firewall.clone(),
                credentials_ref: None,
            },
            status: None,
        };
        store
            .create(metal_cluster, now)
            .map_err(|e| format!("creating MetalStackCluster {}: {e}", plan.name))?;
        self.plans.insert((plan.namespace.clone(), plan.name.clone()), plan);
        Ok(())
    }

    /// One pass of every CAPI controller over every cluster.
    pub fn reconcile(&mut self, store: &mut Store, now: Timestamp) {
        let keys: Vec<(String, String)> = self.plans.keys().cloned().collect();
        for key in keys {
            let Some(cluster) = store.get::<Cluster>(&key.0, &key.1).cloned() else {
                self.plans.remove(&key);
                continue;
            };
            if cluster.spec_paused() {
                continue;
            }
            if cluster.metadata.deletion_timestamp.is_some() {
                self.delete_cluster(store, &cluster, now);
                continue;
            }
            self.update_cluster_status(store, &cluster);
            self.control_plane(store, &key, now);
            self.machine_deployment(store, &key, now);
            self.bootstrap(store, &key, now);
            health_check(store, &key, now);
            finish_machine_deletions(store, &key, now);
        }
    }

    fn update_cluster_status(&self, store: &mut Store, cluster: &Cluster) {
        let (namespace, name) =
            (namespace_of(&cluster.metadata), cluster.metadata.name.clone().unwrap_or_default());
        let metal_cluster = store.get::<MetalStackCluster>(&namespace, &name).cloned();
        let provisioned = metal_cluster
            .as_ref()
            .and_then(|mc| mc.status.as_ref())
            .and_then(|s| s.initialization.as_ref())
            .and_then(|i| i.provisioned)
            .unwrap_or(false);
        let initialized = cluster.control_plane_initialized()
            || machines_of(store, &namespace, &name)
                .iter()
                .any(|m| m.is_control_plane() && infrastructure_ready(store, m));
        let endpoint = metal_cluster.and_then(|mc| mc.spec.control_plane_endpoint).filter(|_| provisioned);
        let unchanged = cluster.infrastructure_provisioned() == provisioned
            && cluster.control_plane_initialized() == initialized
            && (endpoint.is_none() || cluster.spec.control_plane_endpoint == endpoint);
        if unchanged {
            return;
        }
        let mut updated = cluster.clone();
        updated.status = Some(ClusterStatus {
            initialization: Some(ClusterInitialization {
                infrastructure_provisioned: Some(provisioned),
                control_plane_initialized: Some(initialized),
            }),
        });
        if endpoint.is_some() {
            updated.spec.control_plane_endpoint = endpoint;
        }
        let _ = store.update(updated, false);
    }

    fn next_name(&mut self, key: &(String, String), role: &str) -> String {
        let counter = self.created.entry(key.clone()).or_insert(0);
        *counter += 1;
        format!("{}-{role}-{counter}", key.1)
    }

    /// KubeadmControlPlane: one machine at a time; replaces outdated machines by surging one.
    fn control_plane(&mut self, store: &mut Store, key: &(String, String), now: Timestamp) {
        let Some(plan) = self.plans.get(key).cloned() else { return };
        let machines: Vec<Machine> = machines_of(store, &key.0, &key.1)
            .into_iter()
            .filter(|m| m.is_control_plane() && !deleting(m))
            .collect();
        let all_ready = machines.iter().all(|m| infrastructure_ready(store, m));
        let outdated: Vec<&Machine> = machines
            .iter()
            .filter(|m| image_of(store, m) != Some(plan.control_plane_image.clone()))
            .collect();
        if !all_ready {
            return;
        }
        if machines.len() < plan.control_plane
            || (!outdated.is_empty() && machines.len() == plan.control_plane)
        {
            let name = self.next_name(key, "cp");
            create_machine(store, &plan, &name, true, &plan.control_plane_image, now);
        } else if machines.len() > plan.control_plane {
            let victim = outdated.first().copied().or(machines.first());
            if let Some(victim) = victim {
                delete_machine(store, victim, now);
            }
        }
    }

    /// MachineDeployment: creates missing workers at once; rolls with max surge 1 and max
    /// unavailable 0.
    fn machine_deployment(&mut self, store: &mut Store, key: &(String, String), now: Timestamp) {
        let Some(plan) = self.plans.get(key).cloned() else { return };
        let workers: Vec<Machine> = machines_of(store, &key.0, &key.1)
            .into_iter()
            .filter(|m| !m.is_control_plane() && !deleting(m))
            .collect();
        let (current, outdated): (Vec<&Machine>, Vec<&Machine>) =
            workers.iter().partition(|m| image_of(store, m) == Some(plan.worker_image.clone()));
        let wanted = plan.workers;
        if let Some(oldest) = outdated.first() {
            if workers.len() <= wanted {
                let name = self.next_name(key, "md");
                create_machine(store, &plan, &name, false, &plan.worker_image, now);
            } else if current.iter().all(|m| infrastructure_ready(store, m)) {
                delete_machine(store, oldest, now);
            }
            return;
        }
        if let Some(extra) = current.first().filter(|_| current.len() > wanted) {
            delete_machine(store, extra, now);
            return;
        }
        for _ in current.len()..wanted {
            let name = self.next_name(key, "md");
            create_machine(store, &plan, &name, false, &plan.worker_image, now);
        }
    }

    /// The bootstrap provider: a Secret per Machine once the cluster infrastructure is
    /// provisioned (workers and further control-plane machines also wait for the control plane
    /// to be initialized).
    fn bootstrap(&self, store: &mut Store, key: &(String, String), now: Timestamp) {
        let Some(cluster) = store.get::<Cluster>(&key.0, &key.1).cloned() else { return };
        if !cluster.infrastructure_provisioned() {
            return;
        }
        let initialized = cluster.control_plane_initialized();
        let waiting: Vec<Machine> = machines_of(store, &key.0, &key.1)
            .into_iter()
            .filter(|m| m.data_secret_name().is_none() && !deleting(m))
            .collect();
        let first_control_plane = waiting
            .iter()
            .filter(|m| m.is_control_plane())
            .min_by_key(|m| m.metadata.creation_timestamp.clone().map(|t| t.0));
        let first = first_control_plane.and_then(|m| m.metadata.name.clone());
        for machine in &waiting {
            let is_first = !initialized && machine.metadata.name == first;
            if initialized || is_first {
                give_bootstrap_data(
                    store,
                    machine,
                    self.plans.get(key).is_none_or(|p| p.bootstrap_value),
                    now,
                );
            }
        }
    }

    /// Deletion order: workers, then the control plane, then the MetalStackCluster, then the
    /// Cluster.
    fn delete_cluster(&mut self, store: &mut Store, cluster: &Cluster, now: Timestamp) {
        let namespace = namespace_of(&cluster.metadata);
        let name = cluster.metadata.name.clone().unwrap_or_default();
        let machines = machines_of(store, &namespace, &name);
        let workers: Vec<&Machine> = machines.iter().filter(|m| !m.is_control_plane()).collect();
        let victims: Vec<&Machine> = if workers.is_empty() { machines.iter().collect() } else { workers };
        for machine in &victims {
            delete_machine(store, machine, now);
        }
        finish_machine_deletions(store, &(namespace.clone(), name.clone()), now);
        if !machines.is_empty() {
            return;
        }
        if store.get::<MetalStackCluster>(&namespace, &name).is_some() {
            let _ = store.delete::<MetalStackCluster>(&namespace, &name, now);
            return;
        }
        if let Some(mut updated) = store.get::<Cluster>(&namespace, &name).cloned() {
            set_finalizer(&mut updated.metadata, CLUSTER_FINALIZER, false);
            let _ = store.update(updated, false);
        }
    }
}

fn namespace_of(meta: &ObjectMeta) -> String {
    meta.namespace.clone().unwrap_or_default()
}

fn deleting(machine: &Machine) -> bool {
    machine.metadata.deletion_timestamp.is_some()
}

/// The Machines of a cluster, in creation order.
pub fn machines_of(store: &Store, namespace: &str, cluster: &str) -> Vec<Machine> {
    let mut machines: Vec<Machine> = store
        .machines
        .values()
        .filter(|m| namespace_of(&m.metadata) == namespace && m.spec.cluster_name == cluster)
        .cloned()
        .collect();
    machines.sort_by_key(|m| (m.metadata.creation_timestamp.clone().map(|t| t.0), m.metadata.name.clone()));
    machines
}

/// The MetalStackMachine of a Machine.
pub fn metal_machine_of<'a>(store: &'a Store, machine: &Machine) -> Option<&'a MetalStackMachine> {
    let name = machine.spec.infrastructure_ref.as_ref()?.name.clone();
    store.get::<MetalStackMachine>(&namespace_of(&machine.metadata), &name)
}

fn image_of(store: &Store, machine: &Machine) -> Option<String> {
    metal_machine_of(store, machine).map(|mm| mm.spec.image.clone())
}

/// Whether a Machine's infrastructure is provisioned and Ready.
pub fn infrastructure_ready(store: &Store, machine: &Machine) -> bool {
    metal_machine_of(store, machine).is_some_and(|mm| {
        let status = mm.status.as_ref();
        let provisioned =
            status.and_then(|s| s.initialization.as_ref()).and_then(|i| i.provisioned).unwrap_or(false);
        let ready = status.is_some_and(|s| {
            capms_core::api::conditions::is_true(&s.conditions, ConditionType::Ready.as_str())
        });
        provisioned && ready
    })
}

fn create_machine(
    store: &mut Store,
    plan: &ClusterPlan,
    name: &str,
    control_plane: bool,
    image: &str,
    now: Timestamp,
) {
    let Some(cluster) = store.get::<Cluster>(&plan.namespace, &plan.name).cloned() else { return };
    let mut labels = BTreeMap::from([(capi::CLUSTER_NAME_LABEL.to_string(), plan.name.clone())]);
    if control_plane {
        labels.insert(capi::CONTROL_PLANE_LABEL.to_string(), String::new());
    }
    let mut meta = ObjectMeta {
        namespace: Some(plan.namespace.clone()),
        name: Some(name.to_string()),
        labels: Some(labels.clone()),
        owner_references: Some(vec![owner_reference(&cluster, false)]),
        ..ObjectMeta::default()
    };
    set_finalizer(&mut meta, MACHINE_FINALIZER, true);
    let machine = Machine {
        metadata: meta,
        spec: MachineSpec {
            cluster_name: plan.name.clone(),
            bootstrap: Bootstrap::default(),
            infrastructure_ref: Some(ContractVersionedObjectReference {
                api_group: capms_core::api::GROUP.to_string(),
                kind: "MetalStackMachine".to_string(),
                name: name.to_string(),
            }),
            provider_id: None,
            failure_domain: None,
        },
        ..Machine::default()
    };
    let Ok(machine) = store.create(machine, now) else { return };
    labels.remove(capi::CONTROL_PLANE_LABEL);
    let metal_machine = MetalStackMachine {
        metadata: ObjectMeta {
            namespace: Some(plan.namespace.clone()),
            name: Some(name.to_string()),
            labels: Some(labels),
            owner_references: Some(vec![owner_reference(&machine, true)]),
            ..ObjectMeta::default()
        },
        spec: MetalStackMachineSpec {
            size: plan.size.clone(),
            image: image.to_string(),
            machine_id: free_pin(store, plan),
            ..MetalStackMachineSpec::default()
        },
        status: None,
    };
    let _ = store.create(metal_machine, now);
}

/// The first pinned machine that no MetalStackMachine of the cluster pins yet.
fn free_pin(store: &Store, plan: &ClusterPlan) -> Option<String> {
    let taken: Vec<&str> = store
        .metal_machines
        .values()
        .filter(|mm| mm.metadata.namespace.as_deref() == Some(plan.namespace.as_str()))
        .filter(|mm| capi::label(&mm.metadata, capi::CLUSTER_NAME_LABEL) == Some(plan.name.as_str()))
        .filter_map(|mm| mm.spec.machine_id.as_deref())
        .collect();
    plan.pinned_machines.iter().find(|id| !taken.contains(&id.as_str())).cloned()
}

fn give_bootstrap_data(store: &mut Store, machine: &Machine, with_value: bool, now: Timestamp) {
    let name = format!("{}-bootstrap", machine.metadata.name.clone().unwrap_or_default());
    let secret = Secret {
        metadata: ObjectMeta {
            namespace: machine.metadata.namespace.clone(),
            name: Some(name.clone()),
            owner_references: Some(vec![owner_reference(machine, true)]),
            ..ObjectMeta::default()
        },
        data: Some(bootstrap_keys(&name, with_value)),
        type_: Some("cluster.x-k8s.io/secret".to_string()),
        ..Secret::default()
    };
    if store.create(secret, now).is_err() {
        return;
    }
    let mut updated = machine.clone();
    updated.spec.bootstrap.data_secret_name = Some(name);
    let _ = store.update(updated, true);
}

/// The keys of a bootstrap Secret as CABPK writes them (`value` and `format`); without
/// `value` when a broken bootstrap provider is modelled.
fn bootstrap_keys(name: &str, with_value: bool) -> BTreeMap<String, ByteString> {
    let mut data = BTreeMap::from([("format".to_string(), ByteString(b"cloud-config".to_vec()))]);
    if with_value {
        let value = format!("#cloud-config\n# join token for {name}: SECRET-TOKEN\n");
        data.insert("value".to_string(), ByteString(value.into_bytes()));
    }
    data
}

/// MachineHealthCheck: deletes Machines whose infrastructure has been unhealthy for longer
/// than [`UNHEALTHY_TIMEOUT`]; the control plane or MachineDeployment replaces them.
fn health_check(store: &mut Store, key: &(String, String), now: Timestamp) {
    for machine in machines_of(store, &key.0, &key.1).iter().filter(|m| !deleting(m)) {
        let Some(metal_machine) = metal_machine_of(store, machine) else { continue };
        let Some(status) = &metal_machine.status else { continue };
        let Some(ready) = get_condition(&status.conditions, ConditionType::Ready.as_str()) else { continue };
        let unhealthy = ready.status == "False" && UNHEALTHY_REASONS.contains(&ready.reason.as_str());
        let since = now.duration_since(ready.last_transition_time.0);
        if unhealthy && since.unsigned_abs() >= UNHEALTHY_TIMEOUT {
            delete_machine(store, machine, now);
        }
    }
}

fn delete_machine(store: &mut Store, machine: &Machine, now: Timestamp) {
    let namespace = namespace_of(&machine.metadata);
    let _ = store.delete::<Machine>(&namespace, machine.metadata.name.as_deref().unwrap_or_default(), now);
}

/// The Machine controller's deletion: delete the infrastructure, wait until it is gone, then
/// drop the Machine's finalizer.
fn finish_machine_deletions(store: &mut Store, key: &(String, String), now: Timestamp) {
    for machine in machines_of(store, &key.0, &key.1).iter().filter(|m| deleting(m)) {
        let namespace = namespace_of(&machine.metadata);
        if let Some(metal_machine) = metal_machine_of(store, machine) {
            let name = metal_machine.metadata.name.clone().unwrap_or_default();
            if metal_machine.metadata.deletion_timestamp.is_none() {
                let _ = store.delete::<MetalStackMachine>(&namespace, &name, now);
            }
            continue;
        }
        if has_finalizer(&machine.metadata, MACHINE_FINALIZER) {
            let mut updated = machine.clone();
            set_finalizer(&mut updated.metadata, MACHINE_FINALIZER, false);
            let _ = store.update(updated, false);
        }
    }
}

/// The endpoint the workload cluster's API server is reached at, once known.
pub fn endpoint_of(store: &Store, namespace: &str, name: &str) -> Option<ApiEndpoint> {
    store.get::<Cluster>(namespace, name)?.spec.control_plane_endpoint.clone()
}

impl CapiModel {
    /// Changes a plan (scale, roll) of an existing cluster.
    pub fn plan_mut(&mut self, namespace: &str, name: &str) -> Option<&mut ClusterPlan> {
        self.plans.get_mut(&(namespace.to_string(), name.to_string()))
    }

    /// Deletes a cluster (CAPI takes it apart in order).
    pub fn delete_cluster_object(
        store: &mut Store,
        namespace: &str,
        name: &str,
        now: Timestamp,
    ) -> Result<(), String> {
        store.delete::<Cluster>(namespace, name, now).map_err(|e| format!("deleting Cluster {name}: {e}"))
    }

    /// Sets `Cluster.spec.paused`.
    pub fn set_paused(store: &mut Store, namespace: &str, name: &str, paused: bool) -> Result<(), String> {
        let mut cluster =
            store.get::<Cluster>(namespace, name).cloned().ok_or_else(|| format!("no Cluster {name}"))?;
        cluster.spec.paused = Some(paused);
        store.update(cluster, true).map(|_| ()).map_err(|e| format!("pausing Cluster {name}: {e}"))
    }
}

/// The Resource trait's name helper for messages.
pub fn name_of<T: Resource>(object: &T) -> String {
    object.meta().name.clone().unwrap_or_default()
}

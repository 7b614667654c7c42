//! The MetalStackCluster reconciler.
//!
//! # Expected flow
//! 1. Externally managed (`cluster.x-k8s.io/managed-by`): nothing at all, status included.
//! 2. Paused: only `Paused` is reported.
//! 3. Without an owner Cluster: wait. Then the finalizer is added before anything else.
//! 4. Node network: the user's `nodeNetworkID` is used as is (and never freed); otherwise a
//!    network labelled with the cluster's identity is adopted or one is allocated, and its id
//!    written back.
//! 5. Control-plane endpoint: a host set by the user or a control-plane provider is used as
//!    is; `controlPlaneIP` is used as is; otherwise an ephemeral IP tagged with the cluster's
//!    identity is adopted or allocated in the partition's default external network and
//!    written back (so it is freed on delete, unlike the Go provider's, defect D4).
//! 6. Firewall: with `spec.firewall`, a MetalStackFirewall `<name>-firewall` is ensured; the
//!    cluster is provisioned only once it is Ready (defect D29).
//!
//! # Deletion
//! Expected flow, in this order, each step waiting for the previous one:
//! 1. every MetalStackMachine of the cluster is gone (CAPI deletes them first);
//! 2. the MetalStackFirewall is deleted and gone (its own finalizer frees the firewall);
//! 3. machines and firewalls still carrying the cluster's and an object's tags are freed: their
//!    objects are gone, so they are left over (an allocation that landed after its client gave
//!    up, for an object deleted since);
//! 4. control-plane IPs carrying the cluster's ownership tags are freed;
//! 5. node networks carrying the cluster's ownership labels are freed, retried while
//!    metal-api still releases the IPs of freed machines;
//! 6. the finalizer is removed.
//!
//! Guarantees: a user-provided network or IP carries none of capms's tags and is never freed;
//! nothing is freed while paused; deletion for `clusterctl move` removes the finalizer and
//! frees nothing; a resource already gone counts as freed.
//!
//! Assumptions: CAPI deletes the InfraCluster after all InfraMachines (contract C14); the
//! caller reports `machines_remaining` and the firewall object truthfully from its cache.

use crate::Timestamp;
use crate::api::conditions::{ConditionType, Reason};
use crate::api::{
    ApiEndpoint, CLUSTER_FINALIZER, Initialization, MetalStackCluster, MetalStackClusterStatus,
    MetalStackFirewall, MetalStackFirewallSpec, capi,
};
use crate::backend::MetalBackend;
use crate::error::{BackendError, ErrorKind};
use crate::metal::{
    IpAllocateRequest, IpQuery, IpType, Machine, MachineQuery, NetworkAllocateRequest, NetworkQuery,
};
use crate::reconcile::deletion;
use crate::reconcile::events::{Event, EventReason};
use crate::reconcile::facts::ClusterFacts;
use crate::reconcile::status::Conditions;
use crate::reconcile::{Control, FinalizerAction, Requeue};
use crate::tags::{self, ObjectRef, Purpose};
use std::collections::BTreeMap;
use std::time::Duration;

/// Whether capms allocated `machine` for a MetalStackMachine or MetalStackFirewall.
fn allocated_for_an_object(machine: &Machine) -> bool {
    [tags::MACHINE_RESOURCE, tags::FIREWALL_RESOURCE]
        .iter()
        .any(|key| tags::value(&machine.tags, key).is_some())
}

/// How long a firewall may be dead, crash-looping or freed by someone else before the cluster
/// replaces it.
pub const FIREWALL_REPLACE_AFTER: Duration = Duration::from_secs(600);

/// The API server port written into an endpoint capms allocated (kubeadm's default).
pub const API_SERVER_PORT: i32 = 6443;

/// Everything the cluster reconciler reads.
#[derive(Debug, Clone, Copy)]
pub struct ClusterInput<'a> {
    pub metal_cluster: &'a MetalStackCluster,
    pub cluster: Option<&'a ClusterFacts>,
    /// MetalStackMachines of this cluster that still exist.
    pub machines_remaining: usize,
    /// The MetalStackFirewall this cluster owns, if it exists.
    pub firewall: Option<&'a MetalStackFirewall>,
    pub now: Timestamp,
    pub jitter: u64,
}

/// What to do with the cluster's MetalStackFirewall.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FirewallChild {
    #[default]
    Keep,
    /// Create it (owned by the MetalStackCluster) if it does not exist.
    Ensure { name: String, spec: MetalStackFirewallSpec },
    /// Delete it.
    Delete { name: String },
}

/// What the caller applies after a cluster reconcile.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize)]
pub struct ClusterOutcome {
    /// False for externally managed clusters: the caller writes nothing.
    pub write_status: bool,
    pub status: MetalStackClusterStatus,
    /// `spec.nodeNetworkID` to write back.
    pub node_network_id: Option<String>,
    /// `spec.controlPlaneIP` to write back.
    pub control_plane_ip: Option<String>,
    /// `spec.controlPlaneEndpoint` to write back.
    pub control_plane_endpoint: Option<ApiEndpoint>,
    pub firewall: FirewallChild,
    pub finalizer: FinalizerAction,
    pub events: Vec<Event>,
    pub requeue: Requeue,
}

/// The name of the MetalStackFirewall a cluster owns.
pub fn firewall_name(metal_cluster: &MetalStackCluster) -> String {
    firewall_name_of(metal_cluster.metadata.name.as_deref().unwrap_or_default())
}

/// The name of the MetalStackFirewall of the MetalStackCluster named `metal_cluster_name`.
pub fn firewall_name_of(metal_cluster_name: &str) -> String {
    format!("{metal_cluster_name}-firewall")
}

/// Reconciles one MetalStackCluster. Never panics.
pub async fn reconcile_cluster(input: &ClusterInput<'_>, backend: &dyn MetalBackend) -> ClusterOutcome {
    let meta = &input.metal_cluster.metadata;
    if capi::has_annotation(meta, capi::MANAGED_BY_ANNOTATION) {
        return ClusterOutcome {
            status: input.metal_cluster.status.clone().unwrap_or_default(),
            ..Default::default()
        };
    }
    let mut status = input.metal_cluster.status.clone().unwrap_or_default();
    let conditions = Conditions { list: &mut status.conditions, generation: meta.generation, now: input.now };
    let control = control(input);
    let mut run = Run {
        input,
        control,
        conditions,
        outcome: ClusterOutcome { write_status: true, ..Default::default() },
    };
    run.conditions.paused(control.paused);
    if control.deleting {
        run.delete(backend).await;
    } else if !control.paused {
        run.reconcile(backend).await;
    }
    let mut outcome = run.outcome;
    let computed = std::mem::take(&mut outcome.status);
    status.initialization = computed.initialization.or(status.initialization);
    status.node_network_id = computed.node_network_id.or(status.node_network_id);
    status.control_plane_ip = computed.control_plane_ip.or(status.control_plane_ip);
    status.firewall_name = computed.firewall_name.or(status.firewall_name);
    status.observed_generation = meta.generation;
    outcome.status = status;
    outcome
}

fn control(input: &ClusterInput<'_>) -> Control {
    let meta = &input.metal_cluster.metadata;
    Control {
        paused: input.cluster.is_some_and(|c| c.paused)
            || capi::has_annotation(meta, capi::PAUSED_ANNOTATION),
        delete_for_move: capi::has_annotation(meta, capi::DELETE_FOR_MOVE_ANNOTATION),
        deleting: meta.deletion_timestamp.is_some(),
        has_finalizer: meta.finalizers.as_ref().is_some_and(|f| f.iter().any(|f| f == CLUSTER_FINALIZER)),
    }
}

struct Run<'a, 'c> {
    input: &'a ClusterInput<'a>,
    control: Control,
    conditions: Conditions<'c>,
    outcome: ClusterOutcome,
}

/// A step that is not done yet: why, and when to look again.
struct Pending {
    reason: Reason,
    message: String,
    requeue: Requeue,
}

impl Run<'_, '_> {
    fn identity(&self) -> ObjectRef {
        let meta = &self.input.metal_cluster.metadata;
        ObjectRef::new(
            meta.namespace.clone().unwrap_or_default(),
            meta.name.clone().unwrap_or_default(),
            meta.uid.clone().unwrap_or_default(),
        )
    }

    fn spec(&self) -> &crate::api::MetalStackClusterSpec {
        &self.input.metal_cluster.spec
    }

    /// Records a failed call on a step's condition; returns the pending step.
    fn failed(&mut self, type_: ConditionType, error: &BackendError) -> Pending {
        let retry = self.conditions.failed(type_, error, self.input.jitter);
        let retry = if error.outcome_unknown() { Duration::from_secs(2) } else { retry };
        Pending {
            reason: crate::reconcile::status::reason_for(error.kind()),
            message: error.to_string(),
            requeue: Some(retry),
        }
    }

    async fn reconcile(&mut self, backend: &dyn MetalBackend) {
        if self.input.cluster.is_none() {
            let message = "waiting for the owner Cluster";
            self.conditions.set(ConditionType::Ready, false, Reason::NotReady, message);
            return;
        }
        if !self.control.has_finalizer {
            self.outcome.finalizer = FinalizerAction::Add;
            self.outcome.requeue = Some(Duration::ZERO);
            return;
        }
        let result = self.provision(backend).await;
        match result {
            Ok(()) => {
                self.conditions.set(ConditionType::Ready, true, Reason::Ready, "");
                self.outcome.status.initialization = Some(Initialization::provisioned());
            }
            Err(pending) => {
                self.conditions.set(ConditionType::Ready, false, pending.reason, &pending.message);
                self.outcome.requeue = pending.requeue;
            }
        }
    }

    async fn provision(&mut self, backend: &dyn MetalBackend) -> Result<(), Pending> {
        let network_id = self.node_network(backend).await?;
        self.outcome.status.node_network_id = Some(network_id);
        self.control_plane_endpoint(backend).await?;
        let conditions =
            self.input.metal_cluster.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
        if !crate::api::conditions::is_true(conditions, ConditionType::Ready.as_str()) {
            // Before the cluster first reports Ready, whatever a racing replica allocated for it
            // a second time goes (once per readiness transition, so it costs little). Only what
            // the spec already names is kept: spec ids are immutable once set, so every replica
            // agrees on them, while an id adopted in this very pass may lose the race.
            if let Some(network_id) = self.spec().node_network_id.clone() {
                self.free_duplicate_networks(backend, &network_id).await?;
            }
            if let Some(ip) = self.spec().control_plane_ip.clone() {
                self.free_duplicate_ips(backend, &ip).await?;
            }
        }
        self.firewall()
    }

    async fn node_network(&mut self, backend: &dyn MetalBackend) -> Result<String, Pending> {
        let type_ = ConditionType::NodeNetworkReady;
        if let Some(id) = self.spec().node_network_id.clone() {
            let status = self.input.metal_cluster.status.as_ref();
            let verified = status.is_some_and(|s| s.node_network_id.as_deref() == Some(id.as_str()))
                && crate::api::conditions::is_true(self.conditions.list, type_.as_str());
            if verified {
                return Ok(id);
            }
            let network = backend.get_network(&id).await.map_err(|error| self.failed(type_, &error))?;
            let ours = tags::network_ownership_labels(&self.identity())
                .iter()
                .all(|(k, v)| network.labels.get(k) == Some(v));
            let reason = if ours { Reason::Allocated } else { Reason::UserProvided };
            self.conditions.set(type_, true, reason, &format!("network {id}"));
            return Ok(id);
        }
        let identity = self.identity();
        let query = NetworkQuery {
            project_id: Some(self.spec().project_id.clone()),
            partition_id: Some(self.spec().partition.clone()),
            labels: tags::network_labels(&identity),
            ..NetworkQuery::default()
        };
        let found = backend.find_networks(&query).await.map_err(|error| self.failed(type_, &error))?;
        if let Some(network) = found.into_iter().min_by(|a, b| a.id.cmp(&b.id)) {
            self.adopted_network(&network.id, EventReason::Adopted);
            return Ok(network.id);
        }
        let request = NetworkAllocateRequest {
            project_id: self.spec().project_id.clone(),
            partition_id: self.spec().partition.clone(),
            name: identity.name.clone(),
            description: format!("node network of cluster {identity}"),
            labels: tags::network_labels(&identity),
            ..NetworkAllocateRequest::default()
        };
        let network = backend.allocate_network(&request).await.map_err(|error| self.failed(type_, &error))?;
        self.adopted_network(&network.id, EventReason::Allocated);
        Ok(network.id)
    }

    /// Frees node networks allocated for this cluster besides `keep`: a second replica racing
    /// the first allocation (its write-back lost the conflict) leaves one. Runs whenever the
    /// network in the spec is verified, which a lost race always causes (the loser's status
    /// names its own network).
    async fn free_duplicate_networks(
        &mut self,
        backend: &dyn MetalBackend,
        keep: &str,
    ) -> Result<(), Pending> {
        let type_ = ConditionType::NodeNetworkReady;
        let query = NetworkQuery {
            project_id: Some(self.spec().project_id.clone()),
            labels: tags::network_labels(&self.identity()),
            ..NetworkQuery::default()
        };
        let found = backend.find_networks(&query).await.map_err(|error| self.failed(type_, &error))?;
        for network in found.into_iter().filter(|network| network.id != keep) {
            match backend.free_network(&network.id).await {
                Ok(_) => {
                    let message = format!("freed duplicate node network {}", network.id);
                    self.outcome.events.push(Event::warning(EventReason::DuplicateFreed, message));
                }
                Err(error) if error.kind() == ErrorKind::NotFound => {}
                Err(error) => return Err(self.failed(type_, &error)),
            }
        }
        Ok(())
    }

    fn adopted_network(&mut self, network_id: &str, reason: EventReason) {
        let message = format!("node network {network_id}");
        self.outcome.events.push(Event::normal(reason, message.clone()));
        let condition_reason =
            if reason == EventReason::Adopted { Reason::Adopted } else { Reason::Allocated };
        self.conditions.set(ConditionType::NodeNetworkReady, true, condition_reason, &message);
        self.outcome.node_network_id = Some(network_id.to_string());
    }

    async fn control_plane_endpoint(&mut self, backend: &dyn MetalBackend) -> Result<(), Pending> {
        let type_ = ConditionType::ControlPlaneIpReady;
        let spec_host =
            self.spec().control_plane_endpoint.as_ref().and_then(|e| e.host()).map(str::to_string);
        if let Some(ip) = self.spec().control_plane_ip.clone() {
            if spec_host.is_none() {
                self.set_endpoint(&ip);
            }
            self.outcome.status.control_plane_ip = Some(ip.clone());
            return self.verify_control_plane_ip(backend, &ip).await;
        }
        let cluster_host = self
            .input
            .cluster
            .and_then(|c| c.control_plane_endpoint.as_ref())
            .and_then(|e| e.host())
            .map(str::to_string);
        if let Some(host) = spec_host.or(cluster_host) {
            self.conditions.set(
                type_,
                true,
                Reason::UserProvided,
                &format!("endpoint {host} set outside capms"),
            );
            return Ok(());
        }
        let ip = self.control_plane_ip(backend).await?;
        self.outcome.control_plane_ip = Some(ip.clone());
        self.outcome.status.control_plane_ip = Some(ip.clone());
        self.set_endpoint(&ip);
        Ok(())
    }

    /// Reports whether `spec.controlPlaneIP` is capms's (tagged for this cluster, freed on
    /// delete) or the user's (never freed). Looked up once; the status remembers it.
    async fn verify_control_plane_ip(&mut self, backend: &dyn MetalBackend, ip: &str) -> Result<(), Pending> {
        let type_ = ConditionType::ControlPlaneIpReady;
        let status = self.input.metal_cluster.status.as_ref();
        let verified = status.is_some_and(|s| s.control_plane_ip.as_deref() == Some(ip))
            && crate::api::conditions::is_true(self.conditions.list, type_.as_str());
        if verified {
            return Ok(());
        }
        let ownership = tags::cluster_ip_ownership_tags(&self.identity(), Purpose::ControlPlaneIp);
        let reason = match backend.get_ip(ip).await {
            Ok(found) if crate::metal::tags_match(&found.tags, &ownership) => Reason::Allocated,
            Ok(_) => Reason::UserProvided,
            Err(error) if error.kind() == ErrorKind::NotFound => Reason::UserProvided,
            Err(error) => return Err(self.failed(type_, &error)),
        };
        self.conditions.set(type_, true, reason, &format!("control-plane IP {ip}"));
        Ok(())
    }

    /// Frees control-plane IPs allocated for this cluster besides `keep` (see
    /// [`Run::free_duplicate_networks`]).
    async fn free_duplicate_ips(&mut self, backend: &dyn MetalBackend, keep: &str) -> Result<(), Pending> {
        let type_ = ConditionType::ControlPlaneIpReady;
        let tags = tags::cluster_ip_tags(&self.identity(), Purpose::ControlPlaneIp);
        let query = IpQuery { project_id: Some(self.spec().project_id.clone()), tags, ..IpQuery::default() };
        let found = backend.find_ips(&query).await.map_err(|error| self.failed(type_, &error))?;
        for ip in found.into_iter().filter(|ip| ip.address != keep) {
            match backend.free_ip(&ip.address).await {
                Ok(_) => {
                    let message = format!("freed duplicate control-plane IP {}", ip.address);
                    self.outcome.events.push(Event::warning(EventReason::DuplicateFreed, message));
                }
                Err(error) if error.kind() == ErrorKind::NotFound => {}
                Err(error) => return Err(self.failed(type_, &error)),
            }
        }
        Ok(())
    }

    fn set_endpoint(&mut self, host: &str) {
        self.outcome.control_plane_endpoint =
            Some(ApiEndpoint { host: Some(host.to_string()), port: Some(API_SERVER_PORT) });
    }

    /// Adopts the control-plane IP allocated for this cluster, or allocates one.
    async fn control_plane_ip(&mut self, backend: &dyn MetalBackend) -> Result<String, Pending> {
        let type_ = ConditionType::ControlPlaneIpReady;
        let identity = self.identity();
        let ip_tags = tags::cluster_ip_tags(&identity, Purpose::ControlPlaneIp);
        let query = IpQuery {
            project_id: Some(self.spec().project_id.clone()),
            tags: ip_tags.clone(),
            ..IpQuery::default()
        };
        let found = backend.find_ips(&query).await.map_err(|error| self.failed(type_, &error))?;
        if let Some(ip) = found.into_iter().min_by(|a, b| a.address.cmp(&b.address)) {
            self.conditions.set(type_, true, Reason::Adopted, &format!("control-plane IP {}", ip.address));
            self.outcome
                .events
                .push(Event::normal(EventReason::Adopted, format!("control-plane IP {}", ip.address)));
            return Ok(ip.address);
        }
        let network_id = self.default_external_network(backend).await?;
        let request = IpAllocateRequest {
            network_id,
            project_id: self.spec().project_id.clone(),
            ip_type: IpType::Ephemeral,
            name: format!("{}-control-plane", identity.name),
            description: format!("control-plane IP of cluster {identity}"),
            tags: ip_tags,
            ..IpAllocateRequest::default()
        };
        let ip = backend.allocate_ip(&request).await.map_err(|error| self.failed(type_, &error))?;
        self.conditions.set(type_, true, Reason::Allocated, &format!("control-plane IP {}", ip.address));
        self.outcome
            .events
            .push(Event::normal(EventReason::Allocated, format!("control-plane IP {}", ip.address)));
        Ok(ip.address)
    }

    /// The one network labelled as the default external network (in the cluster's partition,
    /// or without a partition).
    async fn default_external_network(&mut self, backend: &dyn MetalBackend) -> Result<String, Pending> {
        let type_ = ConditionType::ControlPlaneIpReady;
        let query = NetworkQuery {
            labels: BTreeMap::from([(tags::DEFAULT_EXTERNAL_NETWORK.to_string(), String::new())]),
            ..NetworkQuery::default()
        };
        let networks = backend.find_networks(&query).await.map_err(|error| self.failed(type_, &error))?;
        let partition = self.spec().partition.clone();
        let candidates: Vec<_> = networks
            .into_iter()
            .filter(|n| n.partition_id.as_deref().is_none_or(|p| p.is_empty() || p == partition))
            .collect();
        match candidates.as_slice() {
            [network] => Ok(network.id.clone()),
            _ => {
                let message = format!(
                    "expected exactly one network labelled {} for partition {partition}, found {}",
                    tags::DEFAULT_EXTERNAL_NETWORK,
                    candidates.len()
                );
                self.conditions.set(type_, false, Reason::InvalidConfiguration, &message);
                Err(Pending {
                    reason: Reason::InvalidConfiguration,
                    message,
                    requeue: Some(Duration::from_secs(300)),
                })
            }
        }
    }

    /// Ensures the MetalStackFirewall and waits for it to be Ready.
    fn firewall(&mut self) -> Result<(), Pending> {
        let type_ = ConditionType::FirewallReady;
        let name = firewall_name(self.input.metal_cluster);
        let Some(template) = self.spec().firewall.clone() else {
            crate::api::conditions::remove_condition(self.conditions.list, type_.as_str());
            if self.input.firewall.is_some() {
                self.outcome.firewall = FirewallChild::Delete { name };
            }
            return Ok(());
        };
        self.outcome.status.firewall_name = Some(name.clone());
        let Some(firewall) = self.input.firewall else {
            self.outcome.firewall =
                FirewallChild::Ensure { name: name.clone(), spec: template.to_firewall_spec() };
            let message = format!("creating MetalStackFirewall {name}");
            self.conditions.set(type_, false, Reason::WaitingForFirewall, &message);
            return Err(Pending {
                reason: Reason::WaitingForFirewall,
                message,
                requeue: Some(Duration::from_secs(30)),
            });
        };
        let conditions = firewall.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
        if let Some(reason) = self.firewall_broken(conditions) {
            // Nothing else replaces a firewall (it is no CAPI Machine, so no health check
            // covers it): a broken one is deleted, which frees it, and a new one is created.
            let message = format!("MetalStackFirewall {name} is broken ({reason}); replacing it");
            self.outcome.events.push(Event::warning(EventReason::FirewallReplaced, message.clone()));
            self.outcome.firewall = FirewallChild::Delete { name };
            self.conditions.set(type_, false, Reason::WaitingForFirewall, &message);
            return Err(Pending {
                reason: Reason::WaitingForFirewall,
                message,
                requeue: Some(Duration::from_secs(30)),
            });
        }
        if crate::api::conditions::is_true(conditions, ConditionType::Ready.as_str()) {
            self.conditions.set(type_, true, Reason::Ready, &format!("MetalStackFirewall {name}"));
            return Ok(());
        }
        let detail = crate::api::conditions::get_condition(conditions, ConditionType::Ready.as_str())
            .map(|c| format!("{}: {}", c.reason, c.message))
            .unwrap_or_else(|| "not reconciled yet".to_string());
        let message = format!("MetalStackFirewall {name} is not ready ({detail})");
        self.conditions.set(type_, false, Reason::WaitingForFirewall, &message);
        Err(Pending { reason: Reason::WaitingForFirewall, message, requeue: Some(Duration::from_secs(30)) })
    }

    /// The reason a firewall is broken beyond waiting: its Ready has been False for
    /// [`FIREWALL_REPLACE_AFTER`] because it died, crash-loops or was freed by someone else.
    fn firewall_broken(
        &self,
        conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    ) -> Option<String> {
        let ready = crate::api::conditions::get_condition(conditions, ConditionType::Ready.as_str())?;
        let broken = [Reason::ProvisioningFailed, Reason::MachineDead, Reason::MachineFreedExternally]
            .iter()
            .any(|reason| ready.reason == reason.as_str());
        let since = self.input.now.duration_since(ready.last_transition_time.0).unsigned_abs();
        (ready.status == "False" && broken && since >= FIREWALL_REPLACE_AFTER).then(|| ready.reason.clone())
    }

    async fn delete(&mut self, backend: &dyn MetalBackend) {
        let what = "network, IP and firewall";
        if let Some(finalizer) =
            deletion::gate(&self.control, &mut self.conditions, &mut self.outcome.events, what)
        {
            self.outcome.finalizer = finalizer;
            return;
        }
        match self.teardown(backend).await {
            Ok(()) => {
                self.conditions.set(ConditionType::Deleting, true, Reason::DeletionCompleted, "");
                self.outcome.finalizer = FinalizerAction::Remove;
            }
            Err(pending) => {
                self.conditions.set(ConditionType::Deleting, true, pending.reason, &pending.message);
                self.outcome.requeue = pending.requeue;
            }
        }
    }

    async fn teardown(&mut self, backend: &dyn MetalBackend) -> Result<(), Pending> {
        if self.input.machines_remaining > 0 {
            let message =
                format!("waiting for {} MetalStackMachines to be deleted", self.input.machines_remaining);
            return Err(Pending {
                reason: Reason::WaitingForMachines,
                message,
                requeue: Some(Duration::from_secs(10)),
            });
        }
        if let Some(firewall) = self.input.firewall {
            let name = firewall.metadata.name.clone().unwrap_or_default();
            self.outcome.firewall = FirewallChild::Delete { name: name.clone() };
            let message = format!("waiting for MetalStackFirewall {name} to be deleted");
            return Err(Pending {
                reason: Reason::WaitingForFirewall,
                message,
                requeue: Some(Duration::from_secs(5)),
            });
        }
        self.free_orphaned_machines(backend).await?;
        self.free_control_plane_ips(backend).await?;
        self.free_node_networks(backend).await
    }

    /// Frees capms's machines and firewalls of this cluster that outlived their objects (a
    /// write that landed after its client gave up, for an object deleted since). By now every
    /// MetalStackMachine and the MetalStackFirewall are gone, so whatever still carries the
    /// cluster's and an object's tags is an orphan, and its IPs would hold the node network.
    async fn free_orphaned_machines(&mut self, backend: &dyn MetalBackend) -> Result<(), Pending> {
        let cluster = self.identity();
        let query = MachineQuery {
            tags: vec![tags::cluster_id_tag(&cluster), tags::tag(tags::CLUSTER_RESOURCE, &cluster.key())],
            allocation_project: Some(self.spec().project_id.clone()),
            ..MachineQuery::default()
        };
        let found = backend.find_machines(&query).await.map_err(|error| self.deletion_failed(&error))?;
        for machine in found.iter().filter(|machine| allocated_for_an_object(machine)) {
            match backend.free_machine(&machine.id).await {
                Ok(_) => {
                    let message = format!("freed machine {}, left over from a deleted object", machine.id);
                    self.outcome.events.push(Event::normal(EventReason::Freed, message));
                }
                Err(error) if error.kind() == ErrorKind::NotFound => {}
                Err(error) => return Err(self.deletion_failed(&error)),
            }
        }
        Ok(())
    }

    fn deletion_failed(&mut self, error: &BackendError) -> Pending {
        let requeue = self.conditions.deletion_failed(error, self.input.jitter);
        self.outcome.events.push(Event::warning(EventReason::FreeFailed, error.to_string()));
        Pending {
            reason: crate::reconcile::status::reason_for(error.kind()),
            message: error.to_string(),
            requeue: Some(requeue),
        }
    }

    async fn free_control_plane_ips(&mut self, backend: &dyn MetalBackend) -> Result<(), Pending> {
        let project_id = self.spec().project_id.clone();
        let tags = tags::cluster_ip_ownership_tags(&self.identity(), Purpose::ControlPlaneIp);
        let query = IpQuery { project_id: Some(project_id), tags, ..IpQuery::default() };
        let ips = backend.find_ips(&query).await.map_err(|error| self.deletion_failed(&error))?;
        for ip in ips {
            match backend.free_ip(&ip.address).await {
                Ok(_) => self.outcome.events.push(Event::normal(
                    EventReason::Freed,
                    format!("freed control-plane IP {}", ip.address),
                )),
                Err(error) if error.kind() == ErrorKind::NotFound => {}
                Err(error) => return Err(self.deletion_failed(&error)),
            }
        }
        Ok(())
    }

    async fn free_node_networks(&mut self, backend: &dyn MetalBackend) -> Result<(), Pending> {
        let query = NetworkQuery {
            project_id: Some(self.spec().project_id.clone()),
            labels: tags::network_ownership_labels(&self.identity()),
            ..NetworkQuery::default()
        };
        let networks = backend.find_networks(&query).await.map_err(|error| self.deletion_failed(&error))?;
        for network in networks {
            match backend.free_network(&network.id).await {
                Ok(_) => self
                    .outcome
                    .events
                    .push(Event::normal(EventReason::Freed, format!("freed node network {}", network.id))),
                Err(error) if error.kind() == ErrorKind::NotFound => {}
                Err(error) if error.network_has_ips() => {
                    let message =
                        format!("waiting for metal-api to release the IPs of node network {}", network.id);
                    return Err(Pending {
                        reason: Reason::WaitingForIpRelease,
                        message,
                        requeue: Some(Duration::from_secs(5)),
                    });
                }
                Err(error) => return Err(self.deletion_failed(&error)),
            }
        }
        Ok(())
    }
}

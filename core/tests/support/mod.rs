//! Shared helpers for the reconciler tests: a simulated datacenter set up like mini-lab, object
//! builders for the CRDs and the facts a caller hands a reconciler, "apply" helpers that do what
//! the operator does with an outcome, and a recording backend that logs every metal-api call
//! (and can fail or lose the answer of one).
//!
//! Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use capms_backend_sim::{
    MINI_LAB_FIREWALL_IMAGE, MINI_LAB_PARTITION, MINI_LAB_PROJECT, MINI_LAB_SIZE, PartitionSpec,
    ProvisioningTimes, Sim, SimBackend, SimBuilder,
};
use capms_core::api::conditions::{ConditionType, Reason, get_condition};
use capms_core::api::{
    CLUSTER_FINALIZER, FIREWALL_FINALIZER, FirewallEgressRule, FirewallProtocol, MACHINE_FINALIZER,
    MetalStackCluster, MetalStackClusterSpec, MetalStackFirewall, MetalStackFirewallSpec,
    MetalStackFirewallTemplateSpec, MetalStackMachine, MetalStackMachineSpec,
};
use capms_core::metal::{
    FirewallAllocateRequest, Image, Ip, IpAllocateRequest, IpQuery, IpType, Machine, MachineAllocateRequest,
    MachineQuery, MachineRole, Network, NetworkAllocateRequest, NetworkQuery, NetworkRequest, Partition,
    Project, Size,
};
use capms_core::reconcile::{
    BootstrapData, CapiMachineFacts, ClusterFacts, ClusterOutcome, Event, EventReason, FinalizerAction,
    FirewallOutcome, MachineOutcome, MetalClusterFacts,
};
use capms_core::tags::{self, ObjectRef, Purpose};
use capms_core::{BackendError, MetalBackend, Operation, Timestamp, UserData};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube_core::ObjectMeta;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

pub use futures::executor::block_on;

pub const NAMESPACE: &str = "default";
pub const CLUSTER_NAME: &str = "prod";
pub const CLUSTER_UID: &str = "uid-msc-prod";
pub const PARTITION: &str = MINI_LAB_PARTITION;
pub const PROJECT: &str = MINI_LAB_PROJECT;
pub const SIZE: &str = MINI_LAB_SIZE;
pub const IMAGE: &str = "debian-13.0";
pub const EXTERNAL_NETWORK: &str = "internet-mini-lab";
/// A second project in the same datacenter: somebody else's machines live there.
pub const OTHER_PROJECT: &str = "00000000-0000-0000-0000-0000000000ff";
pub const BOOTSTRAP: &str = "#cloud-config\nruncmd: [kubeadm join --token secret]\n";

/// Provisioning without jitter: `Phoned Home` exactly 300 s after allocation, IPs of a freed
/// machine released exactly 5 s after the free.
pub fn exact_times() -> ProvisioningTimes {
    ProvisioningTimes {
        provisioning: Duration::from_secs(300),
        reclaim: Duration::from_secs(120),
        ip_release: Duration::from_secs(5),
        jitter_percent: 0,
    }
}

/// mini-lab with 6 machines, exact times and a second project.
pub fn sim() -> Sim {
    SimBuilder::new()
        .seed(7)
        .partition(PartitionSpec::mini_lab(PARTITION, 6))
        .project(OTHER_PROJECT, "other-tenant")
        .provisioning(exact_times())
        .build()
}

/// The identity of the test cluster's MetalStackCluster (`default/prod`).
pub fn cluster_identity() -> ObjectRef {
    ObjectRef::new(NAMESPACE, CLUSTER_NAME, CLUSTER_UID)
}

/// A datacenter with the cluster's node network already allocated (as the cluster reconciler
/// would), and a recording backend on it.
#[derive(Debug)]
pub struct World {
    pub sim: Sim,
    pub backend: Recording,
    pub node_network: String,
}

impl World {
    pub fn new() -> Self {
        World::with_sim(sim())
    }

    pub fn with_sim(sim: Sim) -> Self {
        let request = NetworkAllocateRequest {
            project_id: PROJECT.into(),
            partition_id: PARTITION.into(),
            name: CLUSTER_NAME.into(),
            labels: tags::network_labels(&cluster_identity()),
            ..Default::default()
        };
        let node_network = block_on(sim.backend().allocate_network(&request)).expect("node network").id;
        World { backend: Recording::new(sim.backend()), sim, node_network }
    }

    pub fn metal_cluster(&self) -> MetalClusterFacts {
        MetalClusterFacts {
            identity: cluster_identity(),
            project_id: PROJECT.into(),
            partition_id: PARTITION.into(),
            node_network_id: Some(self.node_network.clone()),
        }
    }

    pub fn now(&self) -> Timestamp {
        self.sim.now()
    }

    /// The machine as the datacenter holds it now.
    pub fn machine(&self, machine_id: &str) -> Machine {
        self.sim.machines().into_iter().find(|m| m.id == machine_id).expect("machine exists in the sim")
    }

    /// Allocated machines (role machine or firewall) carrying all `wanted` tags.
    pub fn allocated_with(&self, wanted: &[String]) -> Vec<Machine> {
        self.sim
            .machines()
            .into_iter()
            .filter(|m| m.allocation.is_some() && wanted.iter().all(|tag| m.tags.contains(tag)))
            .collect()
    }

    /// Allocates a machine by hand, bypassing the reconciler and the recording.
    pub fn allocate_by_hand(&self, request: &MachineAllocateRequest) -> Machine {
        block_on(self.sim.backend().allocate_machine(request)).expect("hand allocation succeeds")
    }

    /// A network of the other project, for machines that are not ours.
    pub fn other_project_network(&self) -> String {
        let request = NetworkAllocateRequest {
            project_id: OTHER_PROJECT.into(),
            partition_id: PARTITION.into(),
            name: "theirs".into(),
            ..Default::default()
        };
        block_on(self.sim.backend().allocate_network(&request)).expect("other network").id
    }

    /// A machine allocated to the other project.
    pub fn their_machine(&self) -> Machine {
        let network = self.other_project_network();
        let request = MachineAllocateRequest {
            project_id: OTHER_PROJECT.into(),
            partition_id: PARTITION.into(),
            size_id: SIZE.into(),
            image_id: IMAGE.into(),
            name: "theirs".into(),
            hostname: "theirs".into(),
            networks: vec![NetworkRequest::auto(network)],
            // Even the same object tags do not make it ours: the project decides.
            tags: tags::allocation_tags(
                &cluster_identity(),
                &ObjectRef::new(NAMESPACE, "worker-0", "uid-worker-0"),
                tags::MACHINE_RESOURCE,
                Purpose::Worker,
            ),
            ..Default::default()
        };
        self.allocate_by_hand(&request)
    }

    /// The request the machine reconciler would send for `object`, allocated by hand: an
    /// allocation whose answer never reached the operator.
    pub fn request_for(&self, object: &ObjectRef) -> MachineAllocateRequest {
        MachineAllocateRequest {
            project_id: PROJECT.into(),
            partition_id: PARTITION.into(),
            size_id: SIZE.into(),
            image_id: IMAGE.into(),
            name: object.name.clone(),
            hostname: object.name.clone(),
            networks: vec![NetworkRequest::auto(&self.node_network)],
            user_data: Some(UserData::new(BOOTSTRAP)),
            tags: tags::allocation_tags(&cluster_identity(), object, tags::MACHINE_RESOURCE, Purpose::Worker),
            placement_tags: tags::placement_tags(&cluster_identity()),
            ..Default::default()
        }
    }
}

impl Default for World {
    fn default() -> Self {
        World::new()
    }
}

// ----- object builders -----

fn meta(name: &str, uid: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(NAMESPACE.into()),
        uid: Some(uid.into()),
        generation: Some(1),
        ..Default::default()
    }
}

/// Builder-style edits shared by every kind.
pub trait ObjectExt {
    fn meta_mut(&mut self) -> &mut ObjectMeta;
    fn meta(&self) -> &ObjectMeta;

    fn with_finalizer(mut self, finalizer: &str) -> Self
    where
        Self: Sized,
    {
        self.meta_mut().finalizers.get_or_insert_with(Vec::new).push(finalizer.into());
        self
    }

    fn annotated(mut self, key: &str) -> Self
    where
        Self: Sized,
    {
        self.meta_mut().annotations.get_or_insert_with(BTreeMap::new).insert(key.into(), String::new());
        self
    }

    fn deleting(mut self, at: Timestamp) -> Self
    where
        Self: Sized,
    {
        self.meta_mut().deletion_timestamp = Some(Time(at));
        self
    }

    fn has_finalizer(&self, finalizer: &str) -> bool {
        self.meta().finalizers.as_ref().is_some_and(|f| f.iter().any(|f| f == finalizer))
    }

    fn object_ref(&self) -> ObjectRef {
        let meta = self.meta();
        ObjectRef::new(
            meta.namespace.clone().unwrap_or_default(),
            meta.name.clone().unwrap_or_default(),
            meta.uid.clone().unwrap_or_default(),
        )
    }
}

impl ObjectExt for MetalStackMachine {
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
}

impl ObjectExt for MetalStackCluster {
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
}

impl ObjectExt for MetalStackFirewall {
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
}

/// A MetalStackMachine `default/<name>` without finalizer, providerID or status.
pub fn metal_machine(name: &str, uid: &str) -> MetalStackMachine {
    let spec = MetalStackMachineSpec { size: SIZE.into(), image: IMAGE.into(), ..Default::default() };
    let mut machine = MetalStackMachine::new(name, spec);
    machine.metadata = meta(name, uid);
    machine
}

/// The same, with capms's finalizer (past the first pass).
pub fn our_machine(name: &str, uid: &str) -> MetalStackMachine {
    metal_machine(name, uid).with_finalizer(MACHINE_FINALIZER)
}

pub fn with_provider_id(mut machine: MetalStackMachine, provider_id: &str) -> MetalStackMachine {
    machine.spec.provider_id = Some(provider_id.into());
    machine
}

pub fn capi_machine(name: &str) -> CapiMachineFacts {
    CapiMachineFacts { name: name.into(), control_plane: false }
}

/// The owner Cluster: not paused, infrastructure provisioned.
pub fn cluster_facts() -> ClusterFacts {
    ClusterFacts {
        name: CLUSTER_NAME.into(),
        paused: false,
        infrastructure_provisioned: true,
        control_plane_endpoint: None,
    }
}

pub fn bootstrap() -> BootstrapData {
    BootstrapData::Present(UserData::new(BOOTSTRAP))
}

/// A MetalStackCluster `default/prod` in mini-lab, without finalizer or status.
pub fn metal_cluster() -> MetalStackCluster {
    let spec = MetalStackClusterSpec {
        project_id: PROJECT.into(),
        partition: PARTITION.into(),
        ..Default::default()
    };
    let mut cluster = MetalStackCluster::new(CLUSTER_NAME, spec);
    cluster.metadata = meta(CLUSTER_NAME, CLUSTER_UID);
    cluster
}

pub fn our_cluster() -> MetalStackCluster {
    metal_cluster().with_finalizer(CLUSTER_FINALIZER)
}

/// A firewall template: mini-lab's firewall image, the internet, one egress rule.
pub fn firewall_template() -> MetalStackFirewallTemplateSpec {
    MetalStackFirewallTemplateSpec {
        size: SIZE.into(),
        image: MINI_LAB_FIREWALL_IMAGE.into(),
        networks: vec![EXTERNAL_NETWORK.into()],
        egress_rules: vec![FirewallEgressRule {
            protocol: FirewallProtocol::Tcp,
            ports: vec![443, 53],
            to: vec!["0.0.0.0/0".into()],
            comment: Some("allow out".into()),
        }],
        ..Default::default()
    }
}

/// A MetalStackFirewall `default/prod-firewall` created from [`firewall_template`].
pub fn metal_firewall(uid: &str) -> MetalStackFirewall {
    let name = format!("{CLUSTER_NAME}-firewall");
    let spec: MetalStackFirewallSpec = firewall_template().to_firewall_spec();
    let mut firewall = MetalStackFirewall::new(&name, spec);
    firewall.metadata = meta(&name, uid);
    firewall
}

pub fn our_firewall(uid: &str) -> MetalStackFirewall {
    metal_firewall(uid).with_finalizer(FIREWALL_FINALIZER)
}

// ----- applying outcomes, as the operator does -----

fn apply_finalizer(meta: &mut ObjectMeta, finalizer: &str, action: FinalizerAction) {
    let finalizers = meta.finalizers.get_or_insert_with(Vec::new);
    match action {
        FinalizerAction::Keep => {}
        FinalizerAction::Add => {
            if !finalizers.iter().any(|f| f == finalizer) {
                finalizers.push(finalizer.into());
            }
        }
        FinalizerAction::Remove => finalizers.retain(|f| f != finalizer),
    }
}

/// Writes status, providerID (only if unset), labels and the finalizer decision.
pub fn apply_machine(machine: &mut MetalStackMachine, outcome: &MachineOutcome) {
    machine.status = Some(outcome.status.clone());
    if machine.spec.provider_id.is_none() {
        machine.spec.provider_id.clone_from(&outcome.provider_id);
    }
    if !outcome.labels.is_empty() {
        let labels = machine.metadata.labels.get_or_insert_with(BTreeMap::new);
        labels.extend(outcome.labels.clone());
    }
    apply_finalizer(&mut machine.metadata, MACHINE_FINALIZER, outcome.finalizer);
}

/// Writes status, spec write-backs and the finalizer decision (unless externally managed).
pub fn apply_cluster(cluster: &mut MetalStackCluster, outcome: &ClusterOutcome) {
    if !outcome.write_status {
        return;
    }
    cluster.status = Some(outcome.status.clone());
    if let Some(id) = &outcome.node_network_id {
        cluster.spec.node_network_id = Some(id.clone());
    }
    if let Some(ip) = &outcome.control_plane_ip {
        cluster.spec.control_plane_ip = Some(ip.clone());
    }
    if let Some(endpoint) = &outcome.control_plane_endpoint {
        cluster.spec.control_plane_endpoint = Some(endpoint.clone());
    }
    apply_finalizer(&mut cluster.metadata, CLUSTER_FINALIZER, outcome.finalizer);
}

pub fn apply_firewall(firewall: &mut MetalStackFirewall, outcome: &FirewallOutcome) {
    firewall.status = Some(outcome.status.clone());
    if firewall.spec.provider_id.is_none() {
        firewall.spec.provider_id.clone_from(&outcome.provider_id);
    }
    apply_finalizer(&mut firewall.metadata, FIREWALL_FINALIZER, outcome.finalizer);
}

// ----- conditions and events -----

/// The condition of `type_`; panics with the whole list if it is absent.
pub fn condition(conditions: &[Condition], type_: ConditionType) -> &Condition {
    get_condition(conditions, type_.as_str())
        .unwrap_or_else(|| panic!("no {type_} condition in {conditions:#?}"))
}

/// Asserts a condition's status and reason.
#[track_caller]
pub fn assert_condition(conditions: &[Condition], type_: ConditionType, status: bool, reason: Reason) {
    let found = condition(conditions, type_);
    let expected = if status { "True" } else { "False" };
    assert_eq!(
        (found.status.as_str(), found.reason.as_str()),
        (expected, reason.as_str()),
        "{type_} condition: {found:#?}"
    );
}

/// Asserts a condition's status `Unknown` and its reason.
pub fn assert_condition_unknown(conditions: &[Condition], type_: ConditionType, reason: Reason) {
    let found = condition(conditions, type_);
    assert_eq!(
        (found.status.as_str(), found.reason.as_str()),
        ("Unknown", reason.as_str()),
        "{type_} condition: {found:#?}"
    );
}

pub fn has_event(events: &[Event], reason: EventReason) -> bool {
    events.iter().any(|event| event.reason == reason)
}

pub fn ready_is_true(conditions: &[Condition]) -> bool {
    capms_core::api::conditions::is_true(conditions, ConditionType::Ready.as_str())
}

// ----- the recording backend -----

/// A [`MetalBackend`] in front of a [`SimBackend`] that logs the operation of every call, keeps
/// the allocation requests, and on request fails the next call of an operation with an error
/// (before it takes effect) or loses its answer (after it took effect).
#[derive(Debug)]
pub struct Recording {
    inner: SimBackend,
    state: Mutex<RecordingState>,
}

#[derive(Debug, Default)]
struct RecordingState {
    calls: Vec<Operation>,
    fail_next: BTreeMap<Operation, BackendError>,
    fail_next_call: Option<BackendError>,
    lose_next: BTreeSet<Operation>,
    machine_requests: Vec<MachineAllocateRequest>,
    firewall_requests: Vec<FirewallAllocateRequest>,
}

impl Recording {
    pub fn new(inner: SimBackend) -> Self {
        Recording { inner, state: Mutex::new(RecordingState::default()) }
    }

    fn state(&self) -> MutexGuard<'_, RecordingState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Every operation called so far, in order.
    pub fn calls(&self) -> Vec<Operation> {
        self.state().calls.clone()
    }

    pub fn called(&self, operation: Operation) -> bool {
        self.state().calls.contains(&operation)
    }

    pub fn count(&self, operation: Operation) -> usize {
        self.state().calls.iter().filter(|&&op| op == operation).count()
    }

    /// Forgets the calls recorded so far.
    pub fn clear(&self) {
        self.state().calls.clear();
    }

    pub fn machine_requests(&self) -> Vec<MachineAllocateRequest> {
        self.state().machine_requests.clone()
    }

    pub fn firewall_requests(&self) -> Vec<FirewallAllocateRequest> {
        self.state().firewall_requests.clone()
    }

    /// The next call of `operation` fails with `error` and has no effect.
    pub fn fail_next(&self, operation: Operation, error: BackendError) {
        self.state().fail_next.insert(operation, error);
    }

    /// The next call, whatever it is, fails with `error` and has no effect.
    pub fn fail_next_call(&self, error: BackendError) {
        self.state().fail_next_call = Some(error);
    }

    /// The next successful call of `operation` takes effect, but the caller sees a timeout
    /// (a transient error with `outcome_unknown` for writes).
    pub fn lose_next(&self, operation: Operation) {
        self.state().lose_next.insert(operation);
    }

    /// Ends every pending injected failure.
    pub fn heal(&self) {
        let mut state = self.state();
        state.fail_next.clear();
        state.fail_next_call = None;
        state.lose_next.clear();
    }

    async fn around<T, F>(&self, operation: Operation, call: F) -> Result<T, BackendError>
    where
        F: Future<Output = Result<T, BackendError>> + Send,
    {
        let injected = {
            let mut state = self.state();
            state.calls.push(operation);
            state.fail_next_call.take().or_else(|| state.fail_next.remove(&operation))
        };
        if let Some(error) = injected {
            return Err(error);
        }
        let result = call.await;
        let lose = result.is_ok() && self.state().lose_next.remove(&operation);
        if lose {
            let message = "timed out waiting for the answer (lost by the test)";
            return Err(BackendError::transport(operation, message, !operation.is_read()));
        }
        result
    }
}

/// A 500 that metal-api answers when its datastore is slow: transient, nothing happened.
pub fn transient(operation: Operation) -> BackendError {
    BackendError::from_response(operation, 500, "Internal the datastore did not answer in time")
}

/// The 403 metal-api answers for a wrong HMAC.
pub fn forbidden(operation: Operation) -> BackendError {
    BackendError::from_response(operation, 403, "Wrong HMAC found")
}

#[async_trait::async_trait]
impl MetalBackend for Recording {
    async fn allocate_machine(&self, request: &MachineAllocateRequest) -> Result<Machine, BackendError> {
        self.state().machine_requests.push(request.clone());
        self.around(Operation::AllocateMachine, self.inner.allocate_machine(request)).await
    }
    async fn get_machine(&self, machine_id: &str) -> Result<Machine, BackendError> {
        self.around(Operation::FindMachine, self.inner.get_machine(machine_id)).await
    }
    async fn find_machines(&self, query: &MachineQuery) -> Result<Vec<Machine>, BackendError> {
        self.around(Operation::FindMachines, self.inner.find_machines(query)).await
    }
    async fn free_machine(&self, machine_id: &str) -> Result<Machine, BackendError> {
        self.around(Operation::FreeMachine, self.inner.free_machine(machine_id)).await
    }
    async fn allocate_firewall(&self, request: &FirewallAllocateRequest) -> Result<Machine, BackendError> {
        self.state().firewall_requests.push(request.clone());
        self.around(Operation::AllocateFirewall, self.inner.allocate_firewall(request)).await
    }
    async fn get_firewall(&self, machine_id: &str) -> Result<Machine, BackendError> {
        self.around(Operation::FindFirewall, self.inner.get_firewall(machine_id)).await
    }
    async fn find_firewalls(&self, query: &MachineQuery) -> Result<Vec<Machine>, BackendError> {
        self.around(Operation::FindFirewalls, self.inner.find_firewalls(query)).await
    }
    async fn allocate_network(&self, request: &NetworkAllocateRequest) -> Result<Network, BackendError> {
        self.around(Operation::AllocateNetwork, self.inner.allocate_network(request)).await
    }
    async fn get_network(&self, network_id: &str) -> Result<Network, BackendError> {
        self.around(Operation::FindNetwork, self.inner.get_network(network_id)).await
    }
    async fn find_networks(&self, query: &NetworkQuery) -> Result<Vec<Network>, BackendError> {
        self.around(Operation::FindNetworks, self.inner.find_networks(query)).await
    }
    async fn free_network(&self, network_id: &str) -> Result<Network, BackendError> {
        self.around(Operation::FreeNetwork, self.inner.free_network(network_id)).await
    }
    async fn allocate_ip(&self, request: &IpAllocateRequest) -> Result<Ip, BackendError> {
        self.around(Operation::AllocateIp, self.inner.allocate_ip(request)).await
    }
    async fn allocate_specific_ip(
        &self,
        address: &str,
        request: &IpAllocateRequest,
    ) -> Result<Ip, BackendError> {
        self.around(Operation::AllocateSpecificIp, self.inner.allocate_specific_ip(address, request)).await
    }
    async fn get_ip(&self, address: &str) -> Result<Ip, BackendError> {
        self.around(Operation::FindIp, self.inner.get_ip(address)).await
    }
    async fn find_ips(&self, query: &IpQuery) -> Result<Vec<Ip>, BackendError> {
        self.around(Operation::FindIps, self.inner.find_ips(query)).await
    }
    async fn free_ip(&self, address: &str) -> Result<Ip, BackendError> {
        self.around(Operation::FreeIp, self.inner.free_ip(address)).await
    }
    async fn get_partition(&self, partition_id: &str) -> Result<Partition, BackendError> {
        self.around(Operation::FindPartition, self.inner.get_partition(partition_id)).await
    }
    async fn list_partitions(&self) -> Result<Vec<Partition>, BackendError> {
        self.around(Operation::ListPartitions, self.inner.list_partitions()).await
    }
    async fn get_size(&self, size_id: &str) -> Result<Size, BackendError> {
        self.around(Operation::FindSize, self.inner.get_size(size_id)).await
    }
    async fn list_sizes(&self) -> Result<Vec<Size>, BackendError> {
        self.around(Operation::ListSizes, self.inner.list_sizes()).await
    }
    async fn get_image(&self, image_id: &str) -> Result<Image, BackendError> {
        self.around(Operation::FindImage, self.inner.get_image(image_id)).await
    }
    async fn list_images(&self) -> Result<Vec<Image>, BackendError> {
        self.around(Operation::ListImages, self.inner.list_images()).await
    }
    async fn get_project(&self, project_id: &str) -> Result<Project, BackendError> {
        self.around(Operation::FindProject, self.inner.get_project(project_id)).await
    }
}

/// An IP in the internet network allocated by hand (the user's static control-plane IP).
pub fn users_static_ip(sim: &Sim) -> Ip {
    let request = IpAllocateRequest {
        network_id: EXTERNAL_NETWORK.into(),
        project_id: PROJECT.into(),
        ip_type: IpType::Static,
        name: "users-vip".into(),
        ..Default::default()
    };
    block_on(sim.backend().allocate_ip(&request)).expect("static IP allocates")
}

/// Allocated firewalls carrying all `wanted` tags.
pub fn firewalls_with(sim: &Sim, wanted: &[String]) -> Vec<Machine> {
    sim.machines()
        .into_iter()
        .filter(|m| m.role() == Some(MachineRole::Firewall) && wanted.iter().all(|tag| m.tags.contains(tag)))
        .collect()
}

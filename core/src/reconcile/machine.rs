//! The MetalStackMachine reconciler.
//!
//! # Expected flow
//! 1. Paused (Cluster `spec.paused` or the object's annotation): only `Paused` is reported.
//! 2. Without an owner Machine, its Cluster and MetalStackCluster: wait.
//! 3. The finalizer is added before anything is allocated (one pass of its own).
//! 4. Wait for the cluster infrastructure (`infrastructureProvisioned`), the node network and
//!    the bootstrap data (`value` of the Secret; a Secret without it is an error, never an
//!    install without bootstrap data).
//! 5. With a providerID: look the machine up (through the per-cluster cache). A machine that
//!    is gone, freed or allocated to someone else is reported `MachineFreedExternally`; it is
//!    never replaced behind CAPI's back and never reported Ready.
//! 6. Without one: adopt an allocation carrying this object's identity tags (freeing extra
//!    ones), else allocate; write the providerID back.
//! 7. Ready = newest event `Phoned Home` and liveliness `Alive`; addresses and location labels
//!    follow the machine.
//!
//! # Deletion
//! Frees the machine behind the providerID and anything else with the object's ownership tags,
//! each only if it is still allocated to the cluster's project with our tags, then removes the
//! finalizer. Deleted for `clusterctl move`: the finalizer goes and nothing is freed. Paused:
//! nothing happens until the pause ends.

use crate::api::conditions::{ConditionType, Reason};
use crate::api::{
    Initialization, MachineAddress, MachineAddressType, MetalStackMachine, MetalStackMachineStatus,
};
use crate::api::{MACHINE_FINALIZER, capi};
use crate::backend::MetalBackend;
use crate::error::BackendError;
use crate::metal::{Liveliness, Machine, MachineAllocateRequest, MachineRole, NetworkRequest, NetworkType};
use crate::reconcile::allocation::Owner;
use crate::reconcile::cache::CacheAccess;
use crate::reconcile::deletion;
use crate::reconcile::events::{Event, EventReason};
use crate::reconcile::facts::{BootstrapData, CapiMachineFacts, ClusterFacts, MetalClusterFacts};
use crate::reconcile::lifecycle::MACHINE;
use crate::reconcile::status::Conditions;
use crate::reconcile::{Control, FinalizerAction, Requeue};
use crate::secret::UserData;
use crate::tags::{self, ObjectRef, Purpose};
use crate::{ProviderId, Timestamp};
use std::collections::BTreeMap;
use std::time::Duration;

/// Everything the machine reconciler reads.
#[derive(Debug, Clone, Copy)]
pub struct MachineInput<'a> {
    pub metal_machine: &'a MetalStackMachine,
    pub capi_machine: Option<&'a CapiMachineFacts>,
    pub cluster: Option<&'a ClusterFacts>,
    pub metal_cluster: Option<&'a MetalClusterFacts>,
    pub bootstrap: &'a BootstrapData,
    pub now: Timestamp,
    /// Spreads retry delays; the caller draws it (the simulator from its seed).
    pub jitter: u64,
}

/// What the caller applies after a machine reconcile.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize)]
pub struct MachineOutcome {
    /// The complete new status.
    pub status: MetalStackMachineStatus,
    /// `spec.providerID` to write (only when it was not set).
    pub provider_id: Option<String>,
    /// Labels to set on the object (location of the machine).
    pub labels: BTreeMap<String, String>,
    pub finalizer: FinalizerAction,
    pub events: Vec<Event>,
    pub requeue: Requeue,
}

/// Phases shown in `status.phase`.
pub mod phase {
    pub const PENDING: &str = "Pending";
    pub const ALLOCATING: &str = "Allocating";
    pub const PROVISIONING: &str = "Provisioning";
    pub const RUNNING: &str = "Running";
    pub const UNHEALTHY: &str = "Unhealthy";
    pub const FAILED: &str = "Failed";
    pub const DELETING: &str = "Deleting";
}

/// Retry soon after an answer that may or may not have taken effect: the next pass adopts
/// what was allocated.
const OUTCOME_UNKNOWN_RETRY: Duration = Duration::from_secs(2);

/// Which machine reconciler runs: the correct one, or a deliberately broken one that the
/// world simulator's explorer must catch (the canary). Only tests select a canary.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Variant {
    #[default]
    Correct,
    /// Allocates without looking for an earlier allocation of the object first (defect D1).
    CanaryWithoutAdoption,
    /// The correct reconciler, but the glue's plan never writes the status (so a provisioned
    /// machine is never reported): the canary of the shared operator glue.
    CanaryGlueLosesStatus,
    /// The correct reconciler, but its metal-api writes skip the block-move handshake
    /// ([`crate::glue::gate`]): frees and allocations after a pause.
    CanaryUngated,
}

/// Reconciles one MetalStackMachine. Never panics; every failure ends up in the outcome.
pub async fn reconcile_machine(
    input: &MachineInput<'_>,
    backend: &dyn MetalBackend,
    cache: &dyn CacheAccess,
) -> MachineOutcome {
    reconcile_machine_variant(input, backend, cache, Variant::Correct).await
}

/// [`reconcile_machine`], or a canary variant of it (for the explorer's canary test).
#[doc(hidden)]
pub async fn reconcile_machine_variant(
    input: &MachineInput<'_>,
    backend: &dyn MetalBackend,
    cache: &dyn CacheAccess,
    variant: Variant,
) -> MachineOutcome {
    let mut status = input.metal_machine.status.clone().unwrap_or_default();
    let mut conditions = Conditions {
        list: &mut status.conditions,
        generation: input.metal_machine.metadata.generation,
        now: input.now,
    };
    let control = control(input);
    conditions.paused(control.paused);
    let mut run = Run {
        input,
        control,
        conditions,
        outcome: MachineOutcome::default(),
        phase: phase::PENDING,
        variant,
    };
    if control.deleting {
        run.delete(backend, cache).await;
    } else if !control.paused {
        run.reconcile(backend, cache).await;
    }
    let phase = if control.paused { status_phase(&run) } else { run.phase.to_string() };
    let mut outcome = run.outcome;
    status.phase = Some(phase);
    status.observed_generation = input.metal_machine.metadata.generation;
    merge_status(&mut status, outcome.status);
    outcome.status = status;
    outcome
}

/// While paused the phase stays what it was.
fn status_phase(run: &Run<'_, '_>) -> String {
    run.input
        .metal_machine
        .status
        .as_ref()
        .and_then(|status| status.phase.clone())
        .unwrap_or_else(|| phase::PENDING.to_string())
}

/// Copies what the run computed (addresses, location, initialization) into the status whose
/// conditions the run maintained.
fn merge_status(status: &mut MetalStackMachineStatus, computed: MetalStackMachineStatus) {
    if computed.initialization.is_some() {
        status.initialization = computed.initialization;
    }
    if !computed.addresses.is_empty() {
        status.addresses = computed.addresses;
    }
    status.rack = computed.rack.or(status.rack.take());
    status.zone = computed.zone.or(status.zone.take());
    status.asn = computed.asn.or(status.asn.take());
    status.chassis = computed.chassis.or(status.chassis.take());
}

fn control(input: &MachineInput<'_>) -> Control {
    let meta = &input.metal_machine.metadata;
    Control {
        paused: input.cluster.is_some_and(|c| c.paused)
            || capi::has_annotation(meta, capi::PAUSED_ANNOTATION),
        delete_for_move: capi::has_annotation(meta, capi::DELETE_FOR_MOVE_ANNOTATION),
        deleting: meta.deletion_timestamp.is_some(),
        has_finalizer: meta.finalizers.as_ref().is_some_and(|f| f.iter().any(|f| f == MACHINE_FINALIZER)),
    }
}

fn object_ref(metal_machine: &MetalStackMachine) -> ObjectRef {
    let meta = &metal_machine.metadata;
    ObjectRef::new(
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
        meta.uid.clone().unwrap_or_default(),
    )
}

struct Run<'a, 'c> {
    input: &'a MachineInput<'a>,
    control: Control,
    conditions: Conditions<'c>,
    outcome: MachineOutcome,
    phase: &'static str,
    variant: Variant,
}

impl Run<'_, '_> {
    fn owner(&self, metal_cluster: &MetalClusterFacts) -> Owner {
        Owner {
            cluster: metal_cluster.identity.clone(),
            object: object_ref(self.input.metal_machine),
            resource_key: tags::MACHINE_RESOURCE,
            project_id: metal_cluster.project_id.clone(),
            role: MachineRole::Machine,
        }
    }

    /// Reports a precondition that is not met yet.
    fn wait(&mut self, reason: Reason, message: &str, requeue: Requeue) {
        self.conditions.set(ConditionType::MachineAllocated, false, reason, message);
        self.conditions.set(ConditionType::Ready, false, reason, message);
        self.outcome.requeue = requeue;
    }

    fn failed(&mut self, type_: ConditionType, error: &BackendError) {
        let retry = if error.outcome_unknown() {
            OUTCOME_UNKNOWN_RETRY
        } else {
            self.conditions.failed(type_, error, self.input.jitter)
        };
        if error.outcome_unknown() {
            let message = error.to_string();
            self.conditions.set(type_, false, Reason::BackendUnavailable, &message);
            self.conditions.set(ConditionType::Ready, false, Reason::BackendUnavailable, &message);
        }
        self.outcome.requeue = Some(retry);
    }

    async fn reconcile(&mut self, backend: &dyn MetalBackend, cache: &dyn CacheAccess) {
        let input = self.input;
        let (Some(_), Some(cluster), Some(metal_cluster)) =
            (input.capi_machine, input.cluster, input.metal_cluster)
        else {
            self.wait(
                Reason::NotReady,
                "waiting for the owner Machine, its Cluster and MetalStackCluster",
                None,
            );
            return;
        };
        if !self.control.has_finalizer {
            self.outcome.finalizer = FinalizerAction::Add;
            self.outcome.requeue = Some(Duration::ZERO);
            return;
        }
        if !cluster.infrastructure_provisioned {
            let message = "waiting for the cluster infrastructure to be provisioned";
            self.wait(Reason::WaitingForClusterInfrastructureReady, message, None);
            return;
        }
        let Some(node_network_id) = metal_cluster.node_network_id.clone() else {
            self.wait(Reason::WaitingForNodeNetwork, "waiting for the cluster's node network", None);
            return;
        };
        let owner = self.owner(metal_cluster);
        let machine = match &input.metal_machine.spec.provider_id {
            Some(provider_id) => self.lookup(backend, cache, &owner, provider_id).await,
            None => self.acquire(backend, cache, &owner, &node_network_id).await,
        };
        if let Some(machine) = machine {
            self.evaluate(&machine, cache);
        }
    }

    /// The machine behind the providerID, if it is still ours.
    async fn lookup(
        &mut self,
        backend: &dyn MetalBackend,
        cache: &dyn CacheAccess,
        owner: &Owner,
        provider_id: &str,
    ) -> Option<Machine> {
        let parsed = match ProviderId::parse(provider_id) {
            Ok(parsed) => parsed,
            Err(error) => {
                self.wait(Reason::InvalidConfiguration, &error.to_string(), None);
                self.phase = phase::FAILED;
                return None;
            }
        };
        let found = cache
            .machine(backend, &owner.cluster, &owner.project_id, parsed.machine_id(), self.input.now)
            .await;
        match found {
            Err(error) => {
                self.failed(ConditionType::MachineProvisioned, &error);
                self.phase = phase::PROVISIONING;
                None
            }
            Ok(Some(machine)) if owner.owns(&machine) => {
                let identity = tags::identity_tags(&owner.object, owner.resource_key);
                let cached = cache.tagged(&owner.cluster, &identity);
                match owner
                    .free_cached_duplicates(backend, &machine.id, cached, &mut self.outcome.events)
                    .await
                {
                    Ok(true) => cache.invalidate(&owner.cluster),
                    Ok(false) => {}
                    Err(error) => {
                        self.failed(ConditionType::MachineAllocated, &error);
                        return None;
                    }
                }
                Some(machine)
            }
            Ok(gone) => {
                self.freed_externally(parsed.machine_id(), gone.is_some());
                None
            }
        }
    }

    fn freed_externally(&mut self, machine_id: &str, exists: bool) {
        MACHINE.freed_externally(&mut self.conditions, &mut self.outcome.events, machine_id, exists);
        self.phase = phase::FAILED;
    }

    /// Adopts an allocation made for this object, or allocates one.
    async fn acquire(
        &mut self,
        backend: &dyn MetalBackend,
        cache: &dyn CacheAccess,
        owner: &Owner,
        node_network_id: &str,
    ) -> Option<Machine> {
        self.phase = phase::ALLOCATING;
        let found = match self.variant {
            Variant::Correct | Variant::CanaryGlueLosesStatus | Variant::CanaryUngated => {
                owner.find_identity(backend).await
            }
            Variant::CanaryWithoutAdoption => Ok(Vec::new()),
        };
        let found = match found {
            Ok(found) => found,
            Err(error) => {
                self.failed(ConditionType::MachineAllocated, &error);
                return None;
            }
        };
        if let Some(kept) = found.first() {
            if let Err(error) =
                owner.free_duplicates(backend, &kept.id, &found, &mut self.outcome.events).await
            {
                self.failed(ConditionType::MachineAllocated, &error);
                return None;
            }
            self.outcome
                .events
                .push(Event::normal(EventReason::Adopted, format!("adopted machine {}", kept.id)));
            self.allocated(kept, Reason::Adopted);
            return Some(kept.clone());
        }
        let user_data = match self.input.bootstrap {
            BootstrapData::Present(data) => data.clone(),
            other => {
                self.bootstrap_missing(other);
                return None;
            }
        };
        let request = self.request(owner, node_network_id, user_data);
        match backend.allocate_machine(&request).await {
            Ok(machine) => {
                cache.invalidate(&owner.cluster);
                let message = format!("allocated machine {} in {}", machine.id, machine.partition_id);
                self.outcome.events.push(Event::normal(EventReason::Allocated, message));
                self.allocated(&machine, Reason::Allocated);
                Some(machine)
            }
            Err(error) => {
                let message = format!("allocating a machine failed: {error}");
                self.outcome.events.push(Event::warning(EventReason::AllocationFailed, message));
                self.failed(ConditionType::MachineAllocated, &error);
                None
            }
        }
    }

    fn bootstrap_missing(&mut self, bootstrap: &BootstrapData) {
        let (message, requeue) = match bootstrap {
            BootstrapData::SecretMissing { secret } => {
                (format!("bootstrap data Secret {secret} does not exist"), Some(Duration::from_secs(30)))
            }
            BootstrapData::ValueMissing { secret } => (
                format!("bootstrap data Secret {secret} has no key \"value\""),
                Some(Duration::from_secs(60)),
            ),
            _ => ("waiting for the bootstrap data".to_string(), None),
        };
        self.wait(Reason::WaitingForBootstrapData, &message, requeue);
        self.phase = phase::PENDING;
    }

    fn allocated(&mut self, machine: &Machine, reason: Reason) {
        let message = format!("machine {}", machine.id);
        self.conditions.set(ConditionType::MachineAllocated, true, reason, &message);
        match ProviderId::new(&machine.partition_id, &machine.id) {
            Ok(provider_id) => self.outcome.provider_id = Some(provider_id.to_string()),
            Err(error) => self.wait(Reason::InvalidConfiguration, &error.to_string(), None),
        }
    }

    fn request(&self, owner: &Owner, node_network_id: &str, user_data: UserData) -> MachineAllocateRequest {
        let input = self.input;
        let spec = &input.metal_machine.spec;
        let object = &owner.object;
        let control_plane = input.capi_machine.is_some_and(|m| m.control_plane);
        let purpose = if control_plane { Purpose::ControlPlane } else { Purpose::Worker };
        let partition_id = input.metal_cluster.map(|c| c.partition_id.clone()).unwrap_or_default();
        let mut machine_tags = tags::allocation_tags(&owner.cluster, object, tags::MACHINE_RESOURCE, purpose);
        machine_tags.push(tags::tag(tags::ZONE, &partition_id));
        machine_tags.push(tags::tag(tags::HOSTNAME, &object.name));
        machine_tags.extend(spec.tags.iter().cloned());
        let mut networks = vec![NetworkRequest::auto(node_network_id)];
        networks.extend(spec.additional_networks.iter().map(NetworkRequest::auto));
        MachineAllocateRequest {
            project_id: owner.project_id.clone(),
            partition_id,
            size_id: spec.size.clone(),
            image_id: spec.image.clone(),
            name: object.name.clone(),
            hostname: object.name.clone(),
            description: format!("{object} for cluster {}", owner.cluster),
            ssh_pub_keys: spec.ssh_keys.clone(),
            networks,
            ips: Vec::new(),
            user_data: Some(user_data),
            tags: machine_tags,
            placement_tags: tags::placement_tags(&owner.cluster),
            machine_id: spec.machine_id.clone(),
        }
    }

    /// Reports an allocated machine of ours: health, provisioning, addresses, location.
    fn evaluate(&mut self, machine: &Machine, cache: &dyn CacheAccess) {
        let ready = MACHINE.report(&mut self.conditions, &mut self.outcome.events, machine);
        if ready {
            self.outcome.status.initialization = Some(Initialization::provisioned());
            let status = self.input.metal_machine.status.as_ref();
            let was_running = status.is_some_and(|s| s.phase.as_deref() == Some(phase::RUNNING));
            if !was_running {
                let message = format!("machine {} phoned home", machine.id);
                self.outcome.events.push(Event::normal(EventReason::Provisioned, message));
            }
        }
        self.phase = lifecycle_phase(machine, ready);
        self.report_location(machine);
        self.outcome.requeue = Some(cache.next_look(machine, self.input.now));
    }

    fn report_location(&mut self, machine: &Machine) {
        let status = &mut self.outcome.status;
        status.addresses = addresses(machine);
        status.rack = Some(machine.rack_id.clone()).filter(|rack| !rack.is_empty());
        status.zone = Some(machine.partition_id.clone());
        status.asn = tags::value(&machine.tags, tags::MACHINE_ASN).and_then(|asn| asn.parse().ok());
        status.chassis = tags::value(&machine.tags, tags::MACHINE_CHASSIS).map(str::to_string);
        let labels = &mut self.outcome.labels;
        labels.insert(tags::ZONE.to_string(), machine.partition_id.clone());
        if let Some(rack) = &status.rack {
            labels.insert(tags::MACHINE_RACK.to_string(), rack.clone());
        }
        if let Some(asn) = status.asn {
            labels.insert(tags::MACHINE_ASN.to_string(), asn.to_string());
        }
        if let Some(chassis) = &status.chassis {
            labels.insert(tags::MACHINE_CHASSIS.to_string(), chassis.clone());
        }
    }

    async fn delete(&mut self, backend: &dyn MetalBackend, cache: &dyn CacheAccess) {
        self.phase = phase::DELETING;
        let events = &mut self.outcome.events;
        if let Some(finalizer) =
            deletion::gate(&self.control, &mut self.conditions, events, "the metal-stack machine")
        {
            self.outcome.finalizer = finalizer;
            return;
        }
        let Some(metal_cluster) = self.input.metal_cluster else {
            self.outcome.requeue = deletion::wait_for_owner(&mut self.conditions);
            return;
        };
        let owner = self.owner(metal_cluster);
        let provider_id = self.input.metal_machine.spec.provider_id.as_deref();
        let (finalizer, requeue) = deletion::free(
            &owner,
            backend,
            provider_id,
            &mut self.conditions,
            &mut self.outcome.events,
            self.input.jitter,
        )
        .await;
        cache.invalidate(&owner.cluster);
        self.outcome.finalizer = finalizer;
        self.outcome.requeue = requeue;
    }
}

/// The phase of an allocated machine.
pub(crate) fn lifecycle_phase(machine: &Machine, ready: bool) -> &'static str {
    if machine.crash_loop {
        phase::FAILED
    } else if ready {
        phase::RUNNING
    } else if machine.liveliness != Liveliness::Alive {
        phase::UNHEALTHY
    } else {
        phase::PROVISIONING
    }
}

/// Hostname, InternalIPs (the machine's own private network) and ExternalIPs.
pub(crate) fn addresses(machine: &Machine) -> Vec<MachineAddress> {
    let Some(allocation) = &machine.allocation else {
        return Vec::new();
    };
    let mut addresses =
        vec![MachineAddress { type_: MachineAddressType::Hostname, address: allocation.hostname.clone() }];
    for network in &allocation.networks {
        let type_ = match network.network_type {
            ref t if t.is_private_primary() => MachineAddressType::InternalIp,
            NetworkType::External => MachineAddressType::ExternalIp,
            _ => continue,
        };
        addresses.extend(network.ips.iter().map(|ip| MachineAddress { type_, address: ip.clone() }));
    }
    addresses
}

//! The MetalStackFirewall reconciler.
//!
//! A MetalStackFirewall is created and owned by its MetalStackCluster. It allocates one
//! metal-stack firewall in the cluster's project and partition, attached to the spec's external
//! networks and the cluster's node network (metal-api adds the underlay), with the spec's
//! initial rule set.
//!
//! # Expected flow
//! Same as the machine reconciler without bootstrap data: pause, owners, finalizer first, node
//! network, then look up by providerID or adopt by identity tags or allocate. Ready = newest
//! event `Phoned Home` and liveliness `Alive` (never `allocation.succeeded`, which metal-api
//! does not set).
//!
//! # Silent firewalls
//! metal-api never reports an allocated machine `Dead`: one that sent no event for 5 minutes
//! (powered off, hung, cut off) is `Unknown` for as long as it is allocated. A firewall is no
//! CAPI Machine, so no MachineHealthCheck covers it; the MetalStackCluster replaces a broken
//! one by deleting it ([`FIREWALL_REPLACE_AFTER`] after its Ready turned False because it is
//! dead, crash-loops or was freed by someone else). Expected flow for a silent firewall:
//! 1. liveliness `Unknown`: `FirewallHealthy` becomes status `Unknown`
//!    (`MachineLivelinessUnknown`), Ready False with the same reason; the reconcile comes back
//!    by the time the firewall would be given up;
//! 2. still `Unknown` [`FIREWALL_REPLACE_AFTER`] after `FirewallHealthy` became `Unknown`: the
//!    firewall is given up as dead, Ready False/`MachineDead` with a Warning event, and the
//!    MetalStackCluster deletes it (freeing it) and creates a new one, as for any dead
//!    firewall;
//! 3. a firewall that speaks again before that (`Alive`) is kept.
//!
//! Guarantees: the time a firewall has been silent is measured from when capms first saw it
//! `Unknown`, kept in `FirewallHealthy`'s `lastTransitionTime` (conditions keep their
//! transition time while their status stays), so it survives restarts without any memory
//! beyond the status; `FirewallHealthy` keeps reporting the truth (`Unknown`), only Ready says
//! that capms gave the firewall up.
//!
//! Assumptions: status is rebuildable: if it is lost, the firewall is counted silent from the
//! next reconcile that sees it `Unknown`, which delays its replacement and never hastens it.
//! metal-api's liveliness has no timestamp, so the count starts up to one refresh after
//! metal-api's `Unknown` did (itself 5 minutes after the last event). Replacing frees the old
//! firewall first (the cluster's egress has a gap until the new one phoned home).
//!
//! # Deletion
//! Frees the firewall behind the providerID and any other carrying the object's ownership
//! tags, each only if it is still ours; then removes the finalizer. Nothing is freed while
//! paused or when deleted for `clusterctl move`.

use crate::api::conditions::{ConditionType, Reason};
use crate::api::{FIREWALL_FINALIZER, Initialization, MetalStackFirewall, MetalStackFirewallStatus, capi};
use crate::backend::MetalBackend;
use crate::error::{BackendError, ErrorKind};
use crate::metal::{FirewallAllocateRequest, Machine, MachineAllocateRequest, MachineRole, NetworkRequest};
use crate::reconcile::allocation::Owner;
use crate::reconcile::cache::RefreshPolicy;
use crate::reconcile::cluster::FIREWALL_REPLACE_AFTER;
use crate::reconcile::deletion;
use crate::reconcile::events::{Event, EventReason};
use crate::reconcile::facts::{ClusterFacts, MetalClusterFacts};
use crate::reconcile::lifecycle::{FIREWALL, already};
use crate::reconcile::machine::{addresses, lifecycle_phase, phase};
use crate::reconcile::status::Conditions;
use crate::reconcile::{Control, FinalizerAction, Requeue};
use crate::tags::{self, ObjectRef, Purpose};
use crate::{ProviderId, Timestamp};
use std::time::Duration;

/// Everything the firewall reconciler reads.
#[derive(Debug, Clone, Copy)]
pub struct FirewallInput<'a> {
    pub firewall: &'a MetalStackFirewall,
    pub cluster: Option<&'a ClusterFacts>,
    pub metal_cluster: Option<&'a MetalClusterFacts>,
    pub now: Timestamp,
    pub jitter: u64,
}

/// What the caller applies after a firewall reconcile.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize)]
pub struct FirewallOutcome {
    pub status: MetalStackFirewallStatus,
    /// `spec.providerID` to write (only when it was not set).
    pub provider_id: Option<String>,
    pub finalizer: FinalizerAction,
    pub events: Vec<Event>,
    pub requeue: Requeue,
}

/// Reconciles one MetalStackFirewall. Never panics.
pub async fn reconcile_firewall(input: &FirewallInput<'_>, backend: &dyn MetalBackend) -> FirewallOutcome {
    let mut status = input.firewall.status.clone().unwrap_or_default();
    let previous_phase = status.phase.clone();
    let conditions = Conditions {
        list: &mut status.conditions,
        generation: input.firewall.metadata.generation,
        now: input.now,
    };
    let control = control(input);
    let mut run =
        Run { input, control, conditions, outcome: FirewallOutcome::default(), phase: phase::PENDING };
    run.conditions.paused(control.paused);
    if control.deleting {
        run.delete(backend).await;
    } else if !control.paused {
        run.reconcile(backend).await;
    }
    let phase = if control.paused {
        previous_phase.unwrap_or_else(|| phase::PENDING.to_string())
    } else {
        run.phase.to_string()
    };
    let mut outcome = run.outcome;
    if outcome.status.initialization.is_some() {
        status.initialization = outcome.status.initialization.take();
    }
    if !outcome.status.addresses.is_empty() {
        status.addresses = std::mem::take(&mut outcome.status.addresses);
    }
    status.phase = Some(phase);
    status.observed_generation = input.firewall.metadata.generation;
    outcome.status = status;
    outcome
}

fn control(input: &FirewallInput<'_>) -> Control {
    let meta = &input.firewall.metadata;
    Control {
        paused: input.cluster.is_some_and(|c| c.paused)
            || capi::has_annotation(meta, capi::PAUSED_ANNOTATION),
        delete_for_move: capi::has_annotation(meta, capi::DELETE_FOR_MOVE_ANNOTATION),
        deleting: meta.deletion_timestamp.is_some(),
        has_finalizer: meta.finalizers.as_ref().is_some_and(|f| f.iter().any(|f| f == FIREWALL_FINALIZER)),
    }
}

struct Run<'a, 'c> {
    input: &'a FirewallInput<'a>,
    control: Control,
    conditions: Conditions<'c>,
    outcome: FirewallOutcome,
    phase: &'static str,
}

impl Run<'_, '_> {
    fn owner(&self, metal_cluster: &MetalClusterFacts) -> Owner {
        let meta = &self.input.firewall.metadata;
        Owner {
            cluster: metal_cluster.identity.clone(),
            object: ObjectRef::new(
                meta.namespace.clone().unwrap_or_default(),
                meta.name.clone().unwrap_or_default(),
                meta.uid.clone().unwrap_or_default(),
            ),
            resource_key: tags::FIREWALL_RESOURCE,
            project_id: metal_cluster.project_id.clone(),
            role: MachineRole::Firewall,
        }
    }

    fn wait(&mut self, reason: Reason, message: &str, requeue: Requeue) {
        self.conditions.set(ConditionType::FirewallAllocated, false, reason, message);
        self.conditions.set(ConditionType::Ready, false, reason, message);
        self.outcome.requeue = requeue;
    }

    fn failed(&mut self, type_: ConditionType, error: &BackendError) {
        let retry = self.conditions.failed(type_, error, self.input.jitter);
        self.outcome.requeue = Some(if error.outcome_unknown() { Duration::from_secs(2) } else { retry });
    }

    async fn reconcile(&mut self, backend: &dyn MetalBackend) {
        let Some(metal_cluster) = self.input.metal_cluster else {
            self.wait(Reason::NotReady, "waiting for the owning MetalStackCluster", None);
            return;
        };
        if !self.control.has_finalizer {
            self.outcome.finalizer = FinalizerAction::Add;
            self.outcome.requeue = Some(Duration::ZERO);
            return;
        }
        let Some(node_network_id) = metal_cluster.node_network_id.clone() else {
            self.wait(Reason::WaitingForNodeNetwork, "waiting for the cluster's node network", None);
            return;
        };
        if let Err(rule_error) = self.input.firewall.spec.metal_rules().validate() {
            let message = rule_error.to_string();
            if !already(&self.conditions, ConditionType::FirewallAllocated, Reason::InvalidConfiguration) {
                self.outcome.events.push(Event::warning(EventReason::InvalidConfiguration, message.clone()));
            }
            self.wait(Reason::InvalidConfiguration, &message, None);
            self.phase = phase::FAILED;
            return;
        }
        let owner = self.owner(metal_cluster);
        let firewall = match &self.input.firewall.spec.provider_id {
            Some(provider_id) => self.lookup(backend, &owner, provider_id).await,
            None => self.acquire(backend, &owner, metal_cluster, &node_network_id).await,
        };
        if let Some(firewall) = firewall {
            self.evaluate(&firewall);
        }
    }

    async fn lookup(
        &mut self,
        backend: &dyn MetalBackend,
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
        // One find by identity tags serves both: the firewall behind the providerID, and any
        // duplicate a racing replica allocated (freed here).
        match owner.find_identity(backend).await {
            Ok(found) => {
                if let Some(firewall) = found.iter().find(|m| m.id == parsed.machine_id()).cloned() {
                    let events = &mut self.outcome.events;
                    return match owner.free_duplicates(backend, &firewall.id, &found, events).await {
                        Ok(()) => Some(firewall),
                        Err(error) => {
                            self.failed(ConditionType::FirewallAllocated, &error);
                            None
                        }
                    };
                }
            }
            Err(error) => {
                self.failed(ConditionType::FirewallProvisioned, &error);
                self.phase = phase::PROVISIONING;
                return None;
            }
        }
        match backend.get_firewall(parsed.machine_id()).await {
            Ok(firewall) if owner.owns(&firewall) => Some(firewall),
            Ok(_) => {
                FIREWALL.freed_externally(
                    &mut self.conditions,
                    &mut self.outcome.events,
                    parsed.machine_id(),
                    true,
                );
                self.phase = phase::FAILED;
                None
            }
            Err(error) if error.kind() == ErrorKind::NotFound => {
                FIREWALL.freed_externally(
                    &mut self.conditions,
                    &mut self.outcome.events,
                    parsed.machine_id(),
                    false,
                );
                self.phase = phase::FAILED;
                None
            }
            Err(error) => {
                self.failed(ConditionType::FirewallProvisioned, &error);
                self.phase = phase::PROVISIONING;
                None
            }
        }
    }

    async fn acquire(
        &mut self,
        backend: &dyn MetalBackend,
        owner: &Owner,
        metal_cluster: &MetalClusterFacts,
        node_network_id: &str,
    ) -> Option<Machine> {
        self.phase = phase::ALLOCATING;
        let found = match owner.find_identity(backend).await {
            Ok(found) => found,
            Err(error) => {
                self.failed(ConditionType::FirewallAllocated, &error);
                return None;
            }
        };
        if let Some(kept) = found.first() {
            if let Err(error) =
                owner.free_duplicates(backend, &kept.id, &found, &mut self.outcome.events).await
            {
                self.failed(ConditionType::FirewallAllocated, &error);
                return None;
            }
            self.outcome
                .events
                .push(Event::normal(EventReason::Adopted, format!("adopted firewall {}", kept.id)));
            self.allocated(kept, Reason::Adopted);
            return Some(kept.clone());
        }
        let request = self.request(owner, metal_cluster, node_network_id);
        match backend.allocate_firewall(&request).await {
            Ok(firewall) => {
                self.outcome.events.push(Event::normal(
                    EventReason::Allocated,
                    format!("allocated firewall {}", firewall.id),
                ));
                self.allocated(&firewall, Reason::Allocated);
                Some(firewall)
            }
            Err(error) => {
                let message = format!("allocating the firewall failed: {error}");
                self.outcome.events.push(Event::warning(EventReason::AllocationFailed, message));
                self.failed(ConditionType::FirewallAllocated, &error);
                None
            }
        }
    }

    fn allocated(&mut self, firewall: &Machine, reason: Reason) {
        self.conditions.set(
            ConditionType::FirewallAllocated,
            true,
            reason,
            &format!("firewall {}", firewall.id),
        );
        match ProviderId::new(&firewall.partition_id, &firewall.id) {
            Ok(provider_id) => self.outcome.provider_id = Some(provider_id.to_string()),
            Err(error) => self.wait(Reason::InvalidConfiguration, &error.to_string(), None),
        }
    }

    fn request(
        &self,
        owner: &Owner,
        metal_cluster: &MetalClusterFacts,
        node_network_id: &str,
    ) -> FirewallAllocateRequest {
        let spec = &self.input.firewall.spec;
        let object = &owner.object;
        let mut networks: Vec<NetworkRequest> = spec.networks.iter().map(NetworkRequest::auto).collect();
        networks.push(NetworkRequest::auto(node_network_id));
        let mut firewall_tags =
            tags::allocation_tags(&owner.cluster, object, tags::FIREWALL_RESOURCE, Purpose::Firewall);
        firewall_tags.push(tags::tag("firewall.metal-stack.io/managed-by", "capms"));
        FirewallAllocateRequest {
            machine: MachineAllocateRequest {
                project_id: owner.project_id.clone(),
                partition_id: metal_cluster.partition_id.clone(),
                size_id: spec.size.clone(),
                image_id: spec.image.clone(),
                name: object.name.clone(),
                hostname: object.name.clone(),
                description: format!("firewall {object} of cluster {}", owner.cluster),
                ssh_pub_keys: spec.ssh_keys.clone(),
                networks,
                tags: firewall_tags,
                ..MachineAllocateRequest::default()
            },
            rules: spec.metal_rules(),
        }
    }

    fn evaluate(&mut self, firewall: &Machine) {
        let given_up = already(&self.conditions, ConditionType::Ready, Reason::MachineDead);
        let ready = FIREWALL.report(&mut self.conditions, &mut self.outcome.events, firewall);
        if ready {
            self.outcome.status.initialization = Some(Initialization::provisioned());
        }
        self.outcome.status.addresses = addresses(firewall);
        self.phase = lifecycle_phase(firewall, ready);
        self.outcome.requeue = Some(RefreshPolicy::default().next_look(firewall));
        self.give_up_if_silent(firewall, given_up);
    }

    /// A firewall `Unknown` for [`FIREWALL_REPLACE_AFTER`] is given up as dead (Ready
    /// False/`MachineDead`, with an event unless it was `given_up` before), which the
    /// MetalStackCluster replaces; until then the reconcile comes back when that time is up
    /// (see "Silent firewalls").
    fn give_up_if_silent(&mut self, firewall: &Machine, given_up: bool) {
        let Some(unknown_for) = FIREWALL.unknown_for(&self.conditions) else {
            return;
        };
        if let Some(left) = FIREWALL_REPLACE_AFTER.checked_sub(unknown_for).filter(|left| !left.is_zero()) {
            self.outcome.requeue = Some(self.outcome.requeue.map_or(left, |requeue| requeue.min(left)));
            return;
        }
        let message = format!(
            "firewall {} has been silent (liveliness Unknown) for {}s, at least {}s: given up as dead",
            firewall.id,
            unknown_for.as_secs(),
            FIREWALL_REPLACE_AFTER.as_secs()
        );
        if !given_up {
            self.outcome.events.push(Event::warning(EventReason::MachineDead, message.clone()));
        }
        self.conditions.set(ConditionType::Ready, false, Reason::MachineDead, &message);
    }

    async fn delete(&mut self, backend: &dyn MetalBackend) {
        self.phase = phase::DELETING;
        let events = &mut self.outcome.events;
        if let Some(finalizer) =
            deletion::gate(&self.control, &mut self.conditions, events, "the metal-stack firewall")
        {
            self.outcome.finalizer = finalizer;
            return;
        }
        let Some(metal_cluster) = self.input.metal_cluster else {
            self.outcome.requeue = deletion::wait_for_owner(&mut self.conditions);
            return;
        };
        let owner = self.owner(metal_cluster);
        let provider_id = self.input.firewall.spec.provider_id.as_deref();
        let (finalizer, requeue) = deletion::free(
            &owner,
            backend,
            provider_id,
            &mut self.conditions,
            &mut self.outcome.events,
            self.input.jitter,
        )
        .await;
        self.outcome.finalizer = finalizer;
        self.outcome.requeue = requeue;
    }
}

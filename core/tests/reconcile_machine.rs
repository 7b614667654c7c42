//! The MetalStackMachine reconciler, branch by branch, against the simulated datacenter.
//!
//! Every test drives `reconcile_machine` directly (no world simulator): it builds the object and
//! the facts, runs one or more passes, applies the outcome the way the operator would and looks
//! at the outcome, the calls the reconciler made and the datacenter.

mod support;

use capms_backend_sim::{ErrorRates, FaultPlan, MACHINE_DEAD_AFTER};
use capms_core::api::conditions::{ConditionType, Reason};
use capms_core::api::{MACHINE_FINALIZER, MachineAddressType, MetalStackMachine, capi};
use capms_core::metal::{Liveliness, MachineRole};
use capms_core::reconcile::{
    BootstrapData, CapiMachineFacts, ClusterFacts, EventReason, FinalizerAction, MachineCache, MachineInput,
    MachineOutcome, MetalClusterFacts, reconcile_machine,
};
use capms_core::tags::{self, ObjectRef};
use capms_core::{Operation, UserData};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use std::time::Duration;
use support::*;

/// One MetalStackMachine and everything its reconcile reads.
struct Fixture {
    world: World,
    cache: MachineCache,
    object: MetalStackMachine,
    capi_machine: Option<CapiMachineFacts>,
    cluster: Option<ClusterFacts>,
    metal_cluster: Option<MetalClusterFacts>,
    bootstrap: BootstrapData,
    jitter: u64,
}

impl Fixture {
    /// `default/worker-0` with the finalizer, in a healthy cluster.
    fn new() -> Self {
        Fixture::with_world(World::new())
    }

    fn with_world(world: World) -> Self {
        let metal_cluster = Some(world.metal_cluster());
        Fixture {
            world,
            cache: MachineCache::default(),
            object: our_machine("worker-0", "uid-worker-0"),
            capi_machine: Some(capi_machine("worker-0")),
            cluster: Some(cluster_facts()),
            metal_cluster,
            bootstrap: bootstrap(),
            jitter: 20,
        }
    }

    fn reconcile(&self) -> MachineOutcome {
        let input = MachineInput {
            metal_machine: &self.object,
            capi_machine: self.capi_machine.as_ref(),
            cluster: self.cluster.as_ref(),
            metal_cluster: self.metal_cluster.as_ref(),
            bootstrap: &self.bootstrap,
            now: self.world.now(),
            jitter: self.jitter,
        };
        block_on(reconcile_machine(&input, &self.world.backend, &self.cache))
    }

    /// One reconcile whose outcome is applied.
    fn pass(&mut self) -> MachineOutcome {
        let outcome = self.reconcile();
        apply_machine(&mut self.object, &outcome);
        outcome
    }

    /// Reconciles until the object has a providerID; returns the machine id.
    fn allocate(&mut self) -> String {
        for _ in 0..3 {
            self.pass();
            if let Some(id) = self.machine_id() {
                return id;
            }
        }
        panic!("no providerID after three passes: {:#?}", self.object.status);
    }

    /// The machine id behind the providerID.
    fn machine_id(&self) -> Option<String> {
        let provider_id = self.object.spec.provider_id.as_deref()?;
        Some(provider_id.rsplit('/').next().expect("providerID has a machine id").to_string())
    }

    fn conditions(&self) -> &[Condition] {
        self.object.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default()
    }

    fn phase(&self) -> Option<&str> {
        self.object.status.as_ref().and_then(|s| s.phase.as_deref())
    }

    fn identity_tags(&self) -> Vec<String> {
        tags::identity_tags(&self.object.object_ref(), tags::MACHINE_RESOURCE)
    }

    fn delete(&mut self) {
        let now = self.world.now();
        self.object = self.object.clone().deleting(now);
    }

    /// Advances virtual time past the per-cluster read cache, so the next pass sees the
    /// datacenter as it is now.
    /// Waits until no cached answer about a ready machine is still good (the default
    /// policy's `steady`, 60 s).
    fn wait_past_cache(&self) {
        self.world.sim.advance(Duration::from_secs(61));
    }
}

// ----- pause, owners, finalizer, preconditions -----

#[test]
fn paused_cluster_makes_no_metal_api_call_and_frees_nothing() {
    let mut fixture = Fixture::new();
    let machine_id = fixture.allocate();
    let phase_before = fixture.phase().map(str::to_string);
    fixture.world.backend.clear();
    fixture.cluster = Some(ClusterFacts { paused: true, ..cluster_facts() });
    fixture.wait_past_cache();

    let outcome = fixture.pass();

    assert_eq!(fixture.world.backend.calls(), vec![], "no metal-api call while paused");
    assert_condition(&outcome.status.conditions, ConditionType::Paused, true, Reason::Paused);
    assert_eq!(outcome.finalizer, FinalizerAction::Keep);
    assert_eq!(outcome.provider_id, None);
    assert_eq!(fixture.phase().map(str::to_string), phase_before, "the phase stays what it was");
    assert!(fixture.world.machine(&machine_id).allocation.is_some(), "nothing is freed");
}

#[test]
fn paused_annotation_on_the_object_pauses_it_too() {
    let mut fixture = Fixture::new();
    fixture.object = fixture.object.clone().annotated(capi::PAUSED_ANNOTATION);

    let outcome = fixture.pass();

    assert_eq!(fixture.world.backend.calls(), vec![]);
    assert_condition(&outcome.status.conditions, ConditionType::Paused, true, Reason::Paused);
    assert!(fixture.object.spec.provider_id.is_none(), "nothing allocated while paused");
}

#[test]
fn unpaused_objects_report_paused_false() {
    let mut fixture = Fixture::new();
    let outcome = fixture.pass();
    assert_condition(&outcome.status.conditions, ConditionType::Paused, false, Reason::NotPaused);
}

#[test]
fn without_an_owner_machine_it_waits_and_calls_nothing() {
    let mut fixture = Fixture::new();
    fixture.capi_machine = None;

    let outcome = fixture.pass();

    assert_eq!(fixture.world.backend.calls(), vec![]);
    assert_condition(&outcome.status.conditions, ConditionType::Ready, false, Reason::NotReady);
    assert_eq!(outcome.finalizer, FinalizerAction::Keep);
    assert_eq!(outcome.provider_id, None);
}

#[test]
fn without_the_metal_stack_cluster_it_waits_and_calls_nothing() {
    let mut fixture = Fixture::new();
    fixture.metal_cluster = None;

    let outcome = fixture.pass();

    assert_eq!(fixture.world.backend.calls(), vec![]);
    assert_condition(&outcome.status.conditions, ConditionType::Ready, false, Reason::NotReady);
}

#[test]
fn finalizer_is_added_in_a_pass_of_its_own_before_any_allocation() {
    let mut fixture = Fixture::new();
    fixture.object = metal_machine("worker-0", "uid-worker-0");

    let first = fixture.pass();

    assert_eq!(first.finalizer, FinalizerAction::Add);
    assert_eq!(first.requeue, Some(Duration::ZERO), "the next pass follows at once");
    assert_eq!(fixture.world.backend.calls(), vec![], "nothing is allocated before the finalizer");
    assert!(fixture.world.allocated_with(&fixture.identity_tags()).is_empty());

    assert!(fixture.object.has_finalizer(MACHINE_FINALIZER));
    let second = fixture.pass();
    assert!(second.provider_id.is_some(), "the pass after the finalizer allocates");
}

#[test]
fn waits_for_the_cluster_infrastructure_to_be_provisioned() {
    let mut fixture = Fixture::new();
    fixture.cluster = Some(ClusterFacts { infrastructure_provisioned: false, ..cluster_facts() });

    let outcome = fixture.pass();

    assert_eq!(fixture.world.backend.calls(), vec![]);
    let conditions = &outcome.status.conditions;
    assert_condition(conditions, ConditionType::Ready, false, Reason::WaitingForClusterInfrastructureReady);
    assert_condition(
        conditions,
        ConditionType::MachineAllocated,
        false,
        Reason::WaitingForClusterInfrastructureReady,
    );
}

#[test]
fn waits_for_the_node_network() {
    let mut fixture = Fixture::new();
    fixture.metal_cluster =
        Some(MetalClusterFacts { node_network_id: None, ..fixture.world.metal_cluster() });

    let outcome = fixture.pass();

    assert_eq!(fixture.world.backend.calls(), vec![]);
    assert_condition(&outcome.status.conditions, ConditionType::Ready, false, Reason::WaitingForNodeNetwork);
}

#[test]
fn waits_for_the_bootstrap_data_secret_name() {
    let mut fixture = Fixture::new();
    fixture.bootstrap = BootstrapData::NotReady;

    let outcome = fixture.pass();

    assert!(!fixture.world.backend.called(Operation::AllocateMachine));
    let conditions = &outcome.status.conditions;
    assert_condition(conditions, ConditionType::MachineAllocated, false, Reason::WaitingForBootstrapData);
    assert_condition(conditions, ConditionType::Ready, false, Reason::WaitingForBootstrapData);
    assert_eq!(fixture.phase(), Some("Pending"));
}

#[test]
fn missing_bootstrap_secret_never_allocates_and_says_which_secret() {
    let mut fixture = Fixture::new();
    fixture.bootstrap = BootstrapData::SecretMissing { secret: "worker-0-bootstrap".into() };

    for _ in 0..3 {
        let outcome = fixture.pass();
        assert!(outcome.requeue.is_some(), "a missing Secret is looked at again");
    }

    assert!(!fixture.world.backend.called(Operation::AllocateMachine));
    assert!(fixture.world.allocated_with(&fixture.identity_tags()).is_empty());
    let allocated = condition(fixture.conditions(), ConditionType::MachineAllocated);
    assert_eq!(allocated.reason, Reason::WaitingForBootstrapData.as_str());
    assert!(allocated.message.contains("worker-0-bootstrap"), "{allocated:?}");
}

#[test]
fn bootstrap_secret_without_value_key_never_allocates() {
    let mut fixture = Fixture::new();
    fixture.bootstrap = BootstrapData::ValueMissing { secret: "worker-0-bootstrap".into() };

    for _ in 0..3 {
        fixture.pass();
    }

    assert!(!fixture.world.backend.called(Operation::AllocateMachine), "never installed without bootstrap");
    let ready = condition(fixture.conditions(), ConditionType::Ready);
    assert_eq!(ready.reason, Reason::WaitingForBootstrapData.as_str());
    assert!(ready.message.contains("\"value\""), "the message names the missing key: {ready:?}");
}

// ----- allocation -----

#[test]
fn allocation_carries_identity_cluster_and_placement_tags_and_the_user_data() {
    let mut fixture = Fixture::new();
    let machine_id = fixture.allocate();

    let requests = fixture.world.backend.machine_requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    for expected in [
        "cluster.metal-stack.io/id=default.prod",
        "metal-stack.infrastructure.cluster.x-k8s.io/machine-resource=default.worker-0",
        "metal-stack.infrastructure.cluster.x-k8s.io/uid=uid-worker-0",
        "metal-stack.infrastructure.cluster.x-k8s.io/cluster-resource=default.prod",
        "metal-stack.infrastructure.cluster.x-k8s.io/purpose=worker",
    ] {
        assert!(request.tags.contains(&expected.to_string()), "{expected} missing in {:?}", request.tags);
    }
    assert_eq!(request.placement_tags, vec!["cluster.metal-stack.io/id=default.prod".to_string()]);
    assert_eq!(request.user_data, Some(UserData::new(BOOTSTRAP)));
    assert_eq!(request.project_id, PROJECT);
    assert_eq!(request.partition_id, PARTITION);
    assert_eq!(request.size_id, SIZE);
    assert_eq!(request.image_id, IMAGE);
    assert_eq!(request.networks[0].network_id, fixture.world.node_network);

    let machine = fixture.world.machine(&machine_id);
    let allocation = machine.allocation.as_ref().expect("allocated");
    assert_eq!(allocation.user_data, Some(UserData::new(BOOTSTRAP)), "user data passed through");
    assert_eq!(allocation.project_id, PROJECT);
    assert_eq!(allocation.role, MachineRole::Machine);
    for tag in fixture.identity_tags() {
        assert!(machine.tags.contains(&tag), "{tag} missing on the machine");
    }
}

#[test]
fn control_plane_machines_are_tagged_with_their_purpose() {
    let mut fixture = Fixture::new();
    fixture.capi_machine = Some(CapiMachineFacts { name: "worker-0".into(), control_plane: true });
    fixture.allocate();

    let request = &fixture.world.backend.machine_requests()[0];
    let purpose = "metal-stack.infrastructure.cluster.x-k8s.io/purpose=control-plane".to_string();
    assert!(request.tags.contains(&purpose), "{:?}", request.tags);
}

#[test]
fn provider_id_is_written_back_in_the_metal_ccm_format() {
    let mut fixture = Fixture::new();
    let outcome = fixture.pass();

    let machine = &fixture.world.allocated_with(&fixture.identity_tags())[0];
    assert_eq!(outcome.provider_id, Some(format!("metal://mini-lab/{}", machine.id)));
    assert!(has_event(&outcome.events, EventReason::Allocated));
    assert_condition(&outcome.status.conditions, ConditionType::MachineAllocated, true, Reason::Allocated);
}

#[test]
fn provider_id_is_written_only_once() {
    let mut fixture = Fixture::new();
    fixture.allocate();
    for _ in 0..3 {
        fixture.world.sim.advance(Duration::from_secs(60));
        let outcome = fixture.pass();
        assert_eq!(outcome.provider_id, None, "an existing providerID is never rewritten");
    }
}

// ----- adoption and duplicates -----

#[test]
fn lost_allocation_answer_is_adopted_on_the_next_pass() {
    let mut fixture = Fixture::new();
    fixture.world.backend.lose_next(Operation::AllocateMachine);

    let lost = fixture.pass();
    assert_eq!(lost.provider_id, None, "the answer never arrived");
    assert_eq!(fixture.world.allocated_with(&fixture.identity_tags()).len(), 1, "but the machine exists");

    let next = fixture.pass();

    let machines = fixture.world.allocated_with(&fixture.identity_tags());
    assert_eq!(machines.len(), 1, "adopted, not allocated a second time");
    assert_eq!(fixture.world.backend.count(Operation::AllocateMachine), 1);
    assert_eq!(next.provider_id, Some(format!("metal://mini-lab/{}", machines[0].id)));
    assert!(has_event(&next.events, EventReason::Adopted));
}

#[test]
fn allocation_made_with_our_identity_tags_is_adopted() {
    let mut fixture = Fixture::new();
    let earlier = fixture.world.allocate_by_hand(&fixture.world.request_for(&fixture.object.object_ref()));

    let outcome = fixture.pass();

    assert!(!fixture.world.backend.called(Operation::AllocateMachine));
    assert_eq!(outcome.provider_id, Some(format!("metal://mini-lab/{}", earlier.id)));
    assert!(has_event(&outcome.events, EventReason::Adopted));
}

#[test]
fn duplicate_allocations_are_reduced_to_one() {
    let mut fixture = Fixture::new();
    let request = fixture.world.request_for(&fixture.object.object_ref());
    let a = fixture.world.allocate_by_hand(&request);
    let b = fixture.world.allocate_by_hand(&request);
    let keep = a.id.clone().min(b.id.clone());
    let extra = a.id.max(b.id);

    let outcome = fixture.pass();

    assert_eq!(outcome.provider_id, Some(format!("metal://mini-lab/{keep}")));
    assert!(has_event(&outcome.events, EventReason::DuplicateFreed));
    assert!(fixture.world.machine(&extra).allocation.is_none(), "the duplicate is freed");
    assert!(fixture.world.machine(&keep).allocation.is_some(), "the kept one stays");
    assert!(!fixture.world.backend.called(Operation::AllocateMachine));
}

#[test]
fn recreated_object_with_a_new_uid_does_not_adopt_its_predecessors_machine() {
    let mut fixture = Fixture::new();
    let old_id = fixture.allocate();

    // Same namespace and name, new UID, no providerID: a new object.
    fixture.object = our_machine("worker-0", "uid-worker-0-second");
    let outcome = fixture.pass();

    assert!(!has_event(&outcome.events, EventReason::Adopted));
    assert_eq!(fixture.world.backend.count(Operation::AllocateMachine), 2, "a fresh allocation");
    let new_id = fixture.machine_id().expect("allocated");
    assert_ne!(new_id, old_id);
    assert!(fixture.world.machine(&old_id).allocation.is_some(), "the old machine is not touched");
}

// ----- readiness and health -----

#[test]
fn ready_only_once_the_newest_event_is_phoned_home_and_the_machine_is_alive() {
    let mut fixture = Fixture::new();
    let allocated_at = fixture.world.now();
    let machine_id = fixture.allocate();
    let mut requeue = fixture.reconcile().requeue.expect("a provisioning machine is looked at again");
    let mut became_ready = None;

    for _ in 0..40 {
        fixture.world.sim.advance(requeue);
        let outcome = fixture.pass();
        let machine = fixture.world.machine(&machine_id);
        let expected = machine.is_phoned_home() && machine.liveliness == Liveliness::Alive;
        assert_eq!(ready_is_true(&outcome.status.conditions), expected, "Ready follows the machine");
        if expected {
            became_ready = Some((fixture.world.now(), outcome));
            break;
        }
        assert_eq!(outcome.status.initialization, None, "not provisioned before Phoned Home");
        requeue = outcome.requeue.expect("looked at again");
        assert!(requeue <= Duration::from_secs(30), "a provisioning machine is polled at most every 30 s");
    }

    let (at, outcome) = became_ready.expect("the machine phones home within 40 passes");
    let waited = at.duration_since(allocated_at).unsigned_abs();
    assert!(waited >= Duration::from_secs(300), "not before Phoned Home ({waited:?})");
    assert!(waited <= Duration::from_secs(300 + 30), "seen soon after Phoned Home ({waited:?})");
    assert_eq!(outcome.status.initialization.and_then(|i| i.provisioned), Some(true));
    assert!(has_event(&outcome.events, EventReason::Provisioned));
    assert_eq!(fixture.phase(), Some("Running"));
    assert_condition(fixture.conditions(), ConditionType::MachineProvisioned, true, Reason::PhonedHome);
    assert_condition(fixture.conditions(), ConditionType::MachineHealthy, true, Reason::Alive);
}

#[test]
fn silent_machine_reports_liveliness_unknown_never_a_stale_ready() {
    let mut fixture = Fixture::new();
    let machine_id = fixture.allocate();
    fixture.world.sim.advance(Duration::from_secs(300));
    fixture.pass();
    assert!(ready_is_true(fixture.conditions()));

    // A dead machine goes silent; metal-api reports it Unknown, never Dead, while allocated.
    assert!(fixture.world.sim.kill_machine(&machine_id));
    fixture.world.sim.advance(MACHINE_DEAD_AFTER);
    fixture.wait_past_cache();
    let outcome = fixture.pass();

    let conditions = &outcome.status.conditions;
    assert_condition(conditions, ConditionType::Ready, false, Reason::MachineLivelinessUnknown);
    assert_condition_unknown(conditions, ConditionType::MachineHealthy, Reason::MachineLivelinessUnknown);
    assert_eq!(fixture.phase(), Some("Unhealthy"));

    fixture.wait_past_cache();
    let again = fixture.pass();
    assert!(!ready_is_true(&again.status.conditions));
}

#[test]
fn externally_freed_machine_is_reported_and_never_replaced() {
    let mut fixture = Fixture::new();
    let machine_id = fixture.allocate();
    fixture.world.sim.advance(Duration::from_secs(300));
    fixture.pass();
    let provider_id = fixture.object.spec.provider_id.clone();

    assert!(fixture.world.sim.free_machine_externally(&machine_id));
    fixture.wait_past_cache();
    fixture.world.backend.clear();
    let outcome = fixture.pass();

    let conditions = &outcome.status.conditions;
    assert_condition(conditions, ConditionType::Ready, false, Reason::MachineFreedExternally);
    assert_condition(conditions, ConditionType::MachineAllocated, false, Reason::MachineFreedExternally);
    assert!(has_event(&outcome.events, EventReason::MachineFreedExternally));
    assert_eq!(fixture.phase(), Some("Failed"));
    assert_eq!(outcome.provider_id, None);
    assert_eq!(fixture.object.spec.provider_id, provider_id);

    for _ in 0..3 {
        fixture.world.sim.advance(Duration::from_secs(60));
        let outcome = fixture.pass();
        assert!(!ready_is_true(&outcome.status.conditions));
        assert!(!has_event(&outcome.events, EventReason::MachineFreedExternally), "reported once");
    }
    assert!(!fixture.world.backend.called(Operation::AllocateMachine), "never replaced behind CAPI's back");
    assert!(!fixture.world.backend.called(Operation::FreeMachine));
}

#[test]
fn machine_reallocated_to_someone_else_is_reported_as_freed_externally() {
    let mut fixture = Fixture::new();
    let theirs = fixture.world.their_machine();
    fixture.object = with_provider_id(fixture.object.clone(), &format!("metal://mini-lab/{}", theirs.id));

    let outcome = fixture.pass();

    assert_condition(&outcome.status.conditions, ConditionType::Ready, false, Reason::MachineFreedExternally);
    assert!(!fixture.world.backend.called(Operation::FreeMachine));
    assert!(!fixture.world.backend.called(Operation::AllocateMachine));
}

#[test]
fn crash_loop_reports_provisioning_failed() {
    let sim = sim();
    sim.set_fault_plan(FaultPlan { provisioning_failure_rate: 1.0, ..FaultPlan::none() });
    let mut fixture = Fixture::with_world(World::with_sim(sim));
    fixture.allocate();
    fixture.world.sim.advance(Duration::from_secs(300));

    let outcome = fixture.pass();

    let conditions = &outcome.status.conditions;
    assert_condition(conditions, ConditionType::Ready, false, Reason::ProvisioningFailed);
    assert_condition(conditions, ConditionType::MachineProvisioned, false, Reason::ProvisioningFailed);
    assert!(has_event(&outcome.events, EventReason::ProvisioningFailed));
    assert_eq!(fixture.phase(), Some("Failed"));
    assert_eq!(outcome.status.initialization, None);
}

// ----- errors and backoff -----

#[test]
fn capacity_errors_back_off_for_at_least_a_minute() {
    let mut fixture = Fixture::new();
    fixture.world.sim.set_capacity(PARTITION, SIZE, Some(0));

    for jitter in 0..41 {
        fixture.jitter = jitter;
        let outcome = fixture.reconcile();
        let requeue = outcome.requeue.expect("retried");
        assert!(requeue >= Duration::from_secs(48), "jitter {jitter}: {requeue:?} is a hot loop");
    }
    let outcome = fixture.pass();
    assert_condition(&outcome.status.conditions, ConditionType::Ready, false, Reason::NoMachineAvailable);
    assert_condition(
        &outcome.status.conditions,
        ConditionType::MachineAllocated,
        false,
        Reason::NoMachineAvailable,
    );
    assert!(has_event(&outcome.events, EventReason::AllocationFailed));
    assert_eq!(outcome.provider_id, None);
}

#[test]
fn capacity_backoff_grows_while_the_shortage_lasts() {
    let mut fixture = Fixture::new();
    fixture.world.sim.set_capacity(PARTITION, SIZE, Some(0));
    fixture.pass();

    fixture.world.sim.advance(Duration::from_secs(600));
    let outcome = fixture.pass();

    let requeue = outcome.requeue.expect("retried");
    assert!(requeue >= Duration::from_secs(480), "ten minutes of shortage: {requeue:?}");
    assert!(requeue <= Duration::from_secs(900 * 6 / 5), "bounded: {requeue:?}");

    fixture.world.sim.set_capacity(PARTITION, SIZE, None);
    let recovered = fixture.pass();
    assert!(recovered.provider_id.is_some(), "allocates once capacity is back");
}

#[test]
fn auth_errors_report_auth_failed_and_back_off_for_minutes() {
    let sim = sim();
    let world = World::with_sim(sim);
    let auth = ErrorRates { auth: 1.0, ..ErrorRates::default() };
    world.sim.set_fault_plan(FaultPlan {
        error_rates_by_operation: [(Operation::FindMachines, auth)].into(),
        ..FaultPlan::none()
    });
    let mut fixture = Fixture::with_world(world);

    for jitter in [0, 20, 40] {
        fixture.jitter = jitter;
        let outcome = fixture.reconcile();
        assert!(outcome.requeue.expect("retried") >= Duration::from_secs(96), "{:?}", outcome.requeue);
    }
    let outcome = fixture.pass();
    assert_condition(&outcome.status.conditions, ConditionType::Ready, false, Reason::AuthFailed);
    assert!(!fixture.world.backend.called(Operation::AllocateMachine));
}

#[test]
fn auth_error_on_allocate_reports_auth_failed() {
    let mut fixture = Fixture::new();
    fixture.world.backend.fail_next(Operation::AllocateMachine, forbidden(Operation::AllocateMachine));

    let outcome = fixture.pass();

    assert_condition(&outcome.status.conditions, ConditionType::MachineAllocated, false, Reason::AuthFailed);
    assert!(outcome.requeue.expect("retried") >= Duration::from_secs(96));
    assert!(fixture.world.allocated_with(&fixture.identity_tags()).is_empty());
}

#[test]
fn lost_answers_are_retried_within_seconds() {
    let mut fixture = Fixture::new();
    fixture.world.backend.lose_next(Operation::AllocateMachine);

    let outcome = fixture.pass();

    let requeue = outcome.requeue.expect("retried");
    assert!(requeue <= Duration::from_secs(5), "the next pass adopts soon: {requeue:?}");
    assert_condition(
        &outcome.status.conditions,
        ConditionType::MachineAllocated,
        false,
        Reason::BackendUnavailable,
    );
}

#[test]
fn lost_allocation_answer_sets_ready_false() {
    let mut fixture = Fixture::new();
    fixture.world.backend.lose_next(Operation::AllocateMachine);

    let outcome = fixture.pass();

    assert_condition(&outcome.status.conditions, ConditionType::Ready, false, Reason::BackendUnavailable);
}

#[test]
fn transient_errors_retry_soon_and_allocate_nothing() {
    let mut fixture = Fixture::new();
    fixture.world.backend.fail_next(Operation::FindMachines, transient(Operation::FindMachines));

    let outcome = fixture.pass();

    assert_condition(&outcome.status.conditions, ConditionType::Ready, false, Reason::BackendUnavailable);
    let requeue = outcome.requeue.expect("retried");
    assert!(requeue <= Duration::from_secs(6), "{requeue:?}");
    assert!(!fixture.world.backend.called(Operation::AllocateMachine), "never allocates without looking");

    let next = fixture.pass();
    assert!(next.provider_id.is_some());
}

// ----- addresses and location -----

#[test]
fn addresses_and_location_follow_the_machine() {
    let mut fixture = Fixture::new();
    let machine_id = fixture.allocate();
    let machine = fixture.world.machine(&machine_id);
    let node_network = fixture
        .world
        .sim
        .networks()
        .into_iter()
        .find(|n| n.id == fixture.world.node_network)
        .expect("node network exists");
    let in_node_network = |address: &str| {
        let address: std::net::IpAddr = address.parse().expect("an IP address");
        node_network.prefixes.iter().any(|p| p.parse::<ipnet::IpNet>().expect("prefix").contains(&address))
    };

    let status = fixture.object.status.clone().expect("status");
    let hostnames: Vec<_> =
        status.addresses.iter().filter(|a| a.type_ == MachineAddressType::Hostname).collect();
    assert_eq!(hostnames.len(), 1);
    assert_eq!(hostnames[0].address, "worker-0");
    let internal: Vec<_> =
        status.addresses.iter().filter(|a| a.type_ == MachineAddressType::InternalIp).collect();
    assert!(!internal.is_empty(), "{:?}", status.addresses);
    assert!(internal.iter().all(|a| in_node_network(&a.address)), "{internal:?} not in {node_network:?}");

    let asn = tags::value(&machine.tags, tags::MACHINE_ASN).expect("metal-api sets the ASN");
    let chassis = tags::value(&machine.tags, tags::MACHINE_CHASSIS).expect("metal-api sets the chassis");
    assert_eq!(status.rack.as_deref(), Some(machine.rack_id.as_str()));
    assert_eq!(status.zone.as_deref(), Some(PARTITION));
    assert_eq!(status.asn.map(|asn| asn.to_string()).as_deref(), Some(asn));
    assert_eq!(status.chassis.as_deref(), Some(chassis));

    let labels = fixture.object.metadata.labels.clone().expect("location labels");
    assert_eq!(labels.get("topology.kubernetes.io/zone").map(String::as_str), Some(PARTITION));
    assert_eq!(labels.get("machine.metal-stack.io/rack"), Some(&machine.rack_id));
    assert_eq!(labels.get("machine.metal-stack.io/network.primary.asn").map(String::as_str), Some(asn));
    assert_eq!(labels.get("machine.metal-stack.io/chassis").map(String::as_str), Some(chassis));
}

#[test]
fn status_is_rebuilt_from_metal_api_after_a_move() {
    let mut fixture = Fixture::new();
    fixture.allocate();
    fixture.world.sim.advance(Duration::from_secs(300));
    fixture.pass();
    let before = fixture.object.status.clone().expect("status");

    // clusterctl move: spec (with providerID) is copied, status is not; the UID is new.
    let moved = with_provider_id(
        our_machine("worker-0", "uid-worker-0-moved"),
        fixture.object.spec.provider_id.as_deref().expect("providerID"),
    );
    fixture.object = moved;
    fixture.cache = MachineCache::default();
    fixture.wait_past_cache();
    let outcome = fixture.pass();

    assert!(ready_is_true(&outcome.status.conditions));
    assert_eq!(outcome.status.initialization, before.initialization);
    assert_eq!(outcome.status.addresses, before.addresses);
    assert_eq!((outcome.status.rack, outcome.status.asn), (before.rack, before.asn));
    assert!(!fixture.world.backend.called(Operation::FreeMachine));
    assert_eq!(fixture.world.backend.count(Operation::AllocateMachine), 1);
}

// ----- deletion -----

#[test]
fn deletion_frees_the_machine_then_removes_the_finalizer() {
    let mut fixture = Fixture::new();
    let machine_id = fixture.allocate();
    fixture.delete();

    let outcome = fixture.pass();

    assert_eq!(outcome.finalizer, FinalizerAction::Remove);
    assert!(fixture.world.machine(&machine_id).allocation.is_none(), "freed");
    assert!(has_event(&outcome.events, EventReason::Freed));
    assert_condition(&outcome.status.conditions, ConditionType::Ready, false, Reason::Deleting);
    assert_condition(&outcome.status.conditions, ConditionType::Deleting, true, Reason::DeletionCompleted);
    let calls = fixture.world.backend.calls();
    let free = calls.iter().position(|&op| op == Operation::FreeMachine).expect("freed");
    assert!(!calls[free..].contains(&Operation::AllocateMachine));
}

#[test]
fn deletion_frees_an_allocation_whose_answer_was_lost() {
    let mut fixture = Fixture::new();
    fixture.world.backend.lose_next(Operation::AllocateMachine);
    fixture.pass();
    assert!(fixture.object.spec.provider_id.is_none());
    fixture.delete();

    let outcome = fixture.pass();

    assert_eq!(outcome.finalizer, FinalizerAction::Remove);
    assert!(fixture.world.allocated_with(&fixture.identity_tags()).is_empty(), "nothing leaks");
}

#[test]
fn failed_free_keeps_the_finalizer_and_retries() {
    let mut fixture = Fixture::new();
    let machine_id = fixture.allocate();
    fixture.delete();
    fixture.world.backend.fail_next(Operation::FreeMachine, transient(Operation::FreeMachine));

    let failed = fixture.pass();
    assert_eq!(failed.finalizer, FinalizerAction::Keep);
    assert!(failed.requeue.is_some());
    assert!(has_event(&failed.events, EventReason::FreeFailed));
    assert!(fixture.world.machine(&machine_id).allocation.is_some());

    let retried = fixture.pass();
    assert_eq!(retried.finalizer, FinalizerAction::Remove);
    assert!(fixture.world.machine(&machine_id).allocation.is_none());
}

#[test]
fn deletion_completes_when_the_machine_was_freed_externally() {
    let mut fixture = Fixture::new();
    let machine_id = fixture.allocate();
    fixture.world.sim.free_machine_externally(&machine_id);
    fixture.world.backend.clear();
    fixture.delete();

    let outcome = fixture.pass();

    assert_eq!(outcome.finalizer, FinalizerAction::Remove);
    assert!(!fixture.world.backend.called(Operation::FreeMachine));
}

#[test]
fn deletion_completes_when_the_provider_id_is_unparsable() {
    let mut fixture = Fixture::new();
    fixture.object = with_provider_id(fixture.object.clone(), "aws:///eu-central-1a/i-0123");
    fixture.delete();

    let outcome = fixture.pass();

    assert_eq!(outcome.finalizer, FinalizerAction::Remove, "defect D20: never stuck on a bad providerID");
    assert!(!fixture.world.backend.called(Operation::FreeMachine));
}

#[test]
fn deletion_completes_when_the_provider_id_names_an_unknown_machine() {
    let mut fixture = Fixture::new();
    fixture.object = with_provider_id(fixture.object.clone(), "metal://mini-lab/does-not-exist");
    fixture.delete();

    let outcome = fixture.pass();

    assert_eq!(outcome.finalizer, FinalizerAction::Remove);
}

#[test]
fn deletion_completes_when_nothing_was_ever_allocated() {
    let mut fixture = Fixture::new();
    fixture.delete();

    let outcome = fixture.pass();

    assert_eq!(outcome.finalizer, FinalizerAction::Remove);
    assert!(!fixture.world.backend.called(Operation::FreeMachine));
    assert!(!fixture.world.backend.called(Operation::AllocateMachine));
}

#[test]
fn deletion_never_frees_a_machine_of_another_project() {
    let mut fixture = Fixture::new();
    let theirs = fixture.world.their_machine();
    fixture.object = with_provider_id(fixture.object.clone(), &format!("metal://mini-lab/{}", theirs.id));
    fixture.delete();

    let outcome = fixture.pass();

    assert!(!fixture.world.backend.called(Operation::FreeMachine));
    let machine = fixture.world.machine(&theirs.id);
    assert_eq!(machine.project_id(), Some(OTHER_PROJECT), "still allocated to its owner");
    assert!(has_event(&outcome.events, EventReason::NotOurs));
    assert_eq!(outcome.finalizer, FinalizerAction::Remove, "our machine is gone");
}

#[test]
fn deletion_never_frees_a_machine_without_our_tags() {
    let mut fixture = Fixture::new();
    let other = ObjectRef::new(NAMESPACE, "worker-1", "uid-worker-1");
    let neighbour = fixture.world.allocate_by_hand(&fixture.world.request_for(&other));
    fixture.object = with_provider_id(fixture.object.clone(), &format!("metal://mini-lab/{}", neighbour.id));
    fixture.delete();

    let outcome = fixture.pass();

    assert!(!fixture.world.backend.called(Operation::FreeMachine));
    assert!(fixture.world.machine(&neighbour.id).allocation.is_some());
    assert!(has_event(&outcome.events, EventReason::NotOurs));
}

#[test]
fn deletion_while_paused_frees_nothing_and_keeps_the_finalizer() {
    let mut fixture = Fixture::new();
    let machine_id = fixture.allocate();
    fixture.world.backend.clear();
    fixture.cluster = Some(ClusterFacts { paused: true, ..cluster_facts() });
    fixture.delete();

    let outcome = fixture.pass();

    assert_eq!(fixture.world.backend.calls(), vec![]);
    assert_eq!(outcome.finalizer, FinalizerAction::Keep);
    assert_condition(&outcome.status.conditions, ConditionType::Deleting, true, Reason::Paused);
    assert!(fixture.world.machine(&machine_id).allocation.is_some());

    fixture.cluster = Some(cluster_facts());
    let unpaused = fixture.pass();
    assert_eq!(unpaused.finalizer, FinalizerAction::Remove, "deletion goes on once the pause ends");
    assert!(fixture.world.machine(&machine_id).allocation.is_none());
}

#[test]
fn deletion_for_move_removes_the_finalizer_and_frees_nothing() {
    let mut fixture = Fixture::new();
    let machine_id = fixture.allocate();
    fixture.world.backend.clear();
    fixture.cluster = Some(ClusterFacts { paused: true, ..cluster_facts() });
    fixture.object = fixture.object.clone().annotated(capi::DELETE_FOR_MOVE_ANNOTATION);
    fixture.delete();

    let outcome = fixture.pass();

    assert_eq!(outcome.finalizer, FinalizerAction::Remove);
    assert_eq!(fixture.world.backend.calls(), vec![]);
    assert!(fixture.world.machine(&machine_id).allocation.is_some(), "the machine stays for the target");
    assert!(has_event(&outcome.events, EventReason::DeletedForMove));
}

#[test]
fn deletion_without_the_metal_stack_cluster_waits_instead_of_freeing_blindly() {
    let mut fixture = Fixture::new();
    let machine_id = fixture.allocate();
    fixture.metal_cluster = None;
    fixture.delete();

    let outcome = fixture.pass();

    assert_eq!(outcome.finalizer, FinalizerAction::Keep);
    assert!(outcome.requeue.is_some());
    assert!(fixture.world.machine(&machine_id).allocation.is_some());
}

#[test]
fn deletion_without_the_finalizer_does_nothing() {
    let mut fixture = Fixture::new();
    fixture.object = metal_machine("worker-0", "uid-worker-0");
    fixture.delete();

    let outcome = fixture.pass();

    assert_eq!(outcome.finalizer, FinalizerAction::Keep);
    assert_eq!(fixture.world.backend.calls(), vec![]);
}

// ----- the per-cluster read cache -----

#[test]
fn the_cache_forgets_clusters_not_read_for_an_hour() {
    let world = World::new();
    let cache = MachineCache::default();
    let deleted = ObjectRef::new(NAMESPACE, "deleted", "uid-deleted");
    let live = ObjectRef::new(NAMESPACE, CLUSTER_NAME, CLUSTER_UID);
    let read = |cluster: &ObjectRef| {
        block_on(cache.fetch(&world.backend, cluster, PROJECT, "no-such-machine", world.now()))
            .expect("a find and a get");
    };
    read(&deleted);
    world.sim.advance(Duration::from_secs(30 * 60));
    read(&live);
    assert_eq!(cache.clusters_cached(), 2, "after half an hour both are kept");
    world.sim.advance(Duration::from_secs(31 * 60));
    read(&live);
    assert_eq!(cache.clusters_cached(), 1, "the cluster not read for an hour is forgotten");
}

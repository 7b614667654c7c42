//! The MetalStackFirewall reconciler, branch by branch, against the simulated datacenter.

mod support;

use capms_backend_sim::{MACHINE_DEAD_AFTER, MINI_LAB_FIREWALL_IMAGE};
use capms_core::api::conditions::{ConditionType, Reason};
use capms_core::api::{
    FIREWALL_FINALIZER, FirewallEgressRule, FirewallProtocol, MachineAddressType, MetalStackFirewall, capi,
};
use capms_core::metal::{FirewallAllocateRequest, MachineAllocateRequest, MachineRole, NetworkRequest};
use capms_core::reconcile::cluster::FIREWALL_REPLACE_AFTER;
use capms_core::reconcile::{
    ClusterFacts, EventReason, FinalizerAction, FirewallInput, FirewallOutcome, MetalClusterFacts,
    reconcile_firewall,
};
use capms_core::tags::{self, Purpose};
use capms_core::{MetalBackend, Operation};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use std::time::Duration;
use support::*;

struct Fixture {
    world: World,
    object: MetalStackFirewall,
    cluster: Option<ClusterFacts>,
    metal_cluster: Option<MetalClusterFacts>,
}

impl Fixture {
    /// `default/prod-firewall` with the finalizer, in a cluster with a node network.
    fn new() -> Self {
        let world = World::new();
        Fixture {
            metal_cluster: Some(world.metal_cluster()),
            world,
            object: our_firewall("uid-fw"),
            cluster: Some(cluster_facts()),
        }
    }

    fn reconcile(&self) -> FirewallOutcome {
        let input = FirewallInput {
            firewall: &self.object,
            cluster: self.cluster.as_ref(),
            metal_cluster: self.metal_cluster.as_ref(),
            now: self.world.now(),
            jitter: 20,
        };
        block_on(reconcile_firewall(&input, &self.world.backend))
    }

    fn pass(&mut self) -> FirewallOutcome {
        let outcome = self.reconcile();
        apply_firewall(&mut self.object, &outcome);
        outcome
    }

    fn allocate(&mut self) -> String {
        self.pass();
        self.firewall_id().expect("allocated in one pass")
    }

    fn firewall_id(&self) -> Option<String> {
        let provider_id = self.object.spec.provider_id.as_deref()?;
        provider_id.rsplit('/').next().map(str::to_string)
    }

    fn conditions(&self) -> &[Condition] {
        self.object.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default()
    }

    fn identity_tags(&self) -> Vec<String> {
        tags::identity_tags(&self.object.object_ref(), tags::FIREWALL_RESOURCE)
    }

    fn delete(&mut self) {
        let now = self.world.now();
        self.object = self.object.clone().deleting(now);
    }
}

/// A firewall allocated to the other project.
fn their_firewall(world: &World) -> String {
    let network = world.other_project_network();
    let request = FirewallAllocateRequest {
        machine: MachineAllocateRequest {
            project_id: OTHER_PROJECT.into(),
            partition_id: PARTITION.into(),
            size_id: SIZE.into(),
            image_id: MINI_LAB_FIREWALL_IMAGE.into(),
            name: "theirs".into(),
            networks: vec![NetworkRequest::auto(network), NetworkRequest::auto(EXTERNAL_NETWORK)],
            tags: tags::allocation_tags(
                &cluster_identity(),
                &ObjectExt::object_ref(&metal_firewall("uid-fw")),
                tags::FIREWALL_RESOURCE,
                Purpose::Firewall,
            ),
            ..Default::default()
        },
        rules: Default::default(),
    };
    block_on(world.sim.backend().allocate_firewall(&request)).expect("their firewall allocates").id
}

// ----- pause, owners, finalizer, preconditions -----

#[test]
fn paused_firewall_makes_no_call() {
    let mut fixture = Fixture::new();
    fixture.cluster = Some(ClusterFacts { paused: true, ..cluster_facts() });

    let outcome = fixture.pass();

    assert_eq!(fixture.world.backend.calls(), vec![]);
    assert_condition(&outcome.status.conditions, ConditionType::Paused, true, Reason::Paused);
}

#[test]
fn without_the_metal_stack_cluster_it_waits() {
    let mut fixture = Fixture::new();
    fixture.metal_cluster = None;

    let outcome = fixture.pass();

    assert_eq!(fixture.world.backend.calls(), vec![]);
    assert_condition(&outcome.status.conditions, ConditionType::Ready, false, Reason::NotReady);
}

#[test]
fn finalizer_is_added_before_anything_is_allocated() {
    let mut fixture = Fixture::new();
    fixture.object = metal_firewall("uid-fw");

    let outcome = fixture.pass();

    assert_eq!(outcome.finalizer, FinalizerAction::Add);
    assert_eq!(fixture.world.backend.calls(), vec![]);
    assert!(fixture.object.has_finalizer(FIREWALL_FINALIZER));
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

// ----- allocation -----

#[test]
fn allocates_with_node_network_external_networks_rules_and_firewall_tags() {
    let mut fixture = Fixture::new();
    let outcome = fixture.pass();

    let requests = fixture.world.backend.firewall_requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    let networks: Vec<&str> = request.machine.networks.iter().map(|n| n.network_id.as_str()).collect();
    assert!(networks.contains(&EXTERNAL_NETWORK), "{networks:?}");
    assert!(networks.contains(&fixture.world.node_network.as_str()), "{networks:?}");
    assert_eq!(request.rules, fixture.object.spec.metal_rules());
    assert_eq!(request.rules.egress[0].ports, vec![443, 53]);
    for expected in [
        "cluster.metal-stack.io/id=default.prod",
        "metal-stack.infrastructure.cluster.x-k8s.io/firewall-resource=default.prod-firewall",
        "metal-stack.infrastructure.cluster.x-k8s.io/uid=uid-fw",
        "metal-stack.infrastructure.cluster.x-k8s.io/purpose=firewall",
        "firewall.metal-stack.io/managed-by=capms",
    ] {
        assert!(
            request.machine.tags.contains(&expected.to_string()),
            "{expected} in {:?}",
            request.machine.tags
        );
    }
    assert_eq!(request.machine.project_id, PROJECT);
    assert_eq!(request.machine.image_id, MINI_LAB_FIREWALL_IMAGE);

    let id = fixture.firewall_id().expect("providerID written back");
    assert_eq!(outcome.provider_id, Some(format!("metal://mini-lab/{id}")));
    let firewall = fixture.world.machine(&id);
    let allocation = firewall.allocation.as_ref().expect("allocated");
    assert_eq!(allocation.role, MachineRole::Firewall);
    assert_eq!(allocation.firewall_rules.as_ref(), Some(&fixture.object.spec.metal_rules()));
    assert!(allocation.networks.iter().any(|n| n.underlay), "metal-api adds the underlay");
    assert!(has_event(&outcome.events, EventReason::Allocated));
}

#[test]
fn invalid_rules_report_invalid_configuration_without_calling_allocate() {
    let mut fixture = Fixture::new();
    fixture.object.spec.egress_rules.push(FirewallEgressRule {
        protocol: FirewallProtocol::Tcp,
        ports: vec![80],
        to: vec!["not-a-cidr".into()],
        comment: None,
    });

    let outcome = fixture.pass();

    assert!(!fixture.world.backend.called(Operation::AllocateFirewall));
    let conditions = &outcome.status.conditions;
    assert_condition(conditions, ConditionType::Ready, false, Reason::InvalidConfiguration);
    assert_condition(conditions, ConditionType::FirewallAllocated, false, Reason::InvalidConfiguration);
    assert!(condition(conditions, ConditionType::Ready).message.contains("not-a-cidr"));
    assert!(has_event(&outcome.events, EventReason::InvalidConfiguration));
    assert_eq!(outcome.status.phase.as_deref(), Some("Failed"));

    let again = fixture.pass();
    assert!(!has_event(&again.events, EventReason::InvalidConfiguration), "the event is recorded once");
    assert!(!fixture.world.backend.called(Operation::AllocateFirewall));
}

#[test]
fn lost_allocation_answer_is_adopted_on_the_next_pass() {
    let mut fixture = Fixture::new();
    fixture.world.backend.lose_next(Operation::AllocateFirewall);

    let lost = fixture.pass();
    assert_eq!(lost.provider_id, None);
    assert!(lost.requeue.expect("retried") <= Duration::from_secs(5));

    let next = fixture.pass();

    let firewalls = firewalls_with(&fixture.world.sim, &fixture.identity_tags());
    assert_eq!(firewalls.len(), 1, "adopted, not allocated twice");
    assert_eq!(fixture.world.backend.count(Operation::AllocateFirewall), 1);
    assert_eq!(next.provider_id, Some(format!("metal://mini-lab/{}", firewalls[0].id)));
    assert!(has_event(&next.events, EventReason::Adopted));
}

// ----- readiness -----

#[test]
fn readiness_comes_from_phoned_home_not_allocation_succeeded() {
    let mut fixture = Fixture::new();
    let id = fixture.allocate();

    fixture.world.sim.advance(Duration::from_secs(299));
    let provisioning = fixture.pass();
    assert!(!fixture.world.machine(&id).is_phoned_home());
    assert!(!ready_is_true(&provisioning.status.conditions));
    assert_eq!(provisioning.status.initialization, None);
    assert_condition(
        &provisioning.status.conditions,
        ConditionType::FirewallProvisioned,
        false,
        Reason::Provisioning,
    );

    fixture.world.sim.advance(Duration::from_secs(1));
    let ready = fixture.pass();
    assert!(fixture.world.machine(&id).is_phoned_home());
    assert_condition(&ready.status.conditions, ConditionType::Ready, true, Reason::Ready);
    assert_condition(&ready.status.conditions, ConditionType::FirewallProvisioned, true, Reason::PhonedHome);
    assert_eq!(ready.status.initialization.and_then(|i| i.provisioned), Some(true));
    assert_eq!(ready.status.phase.as_deref(), Some("Running"));
}

/// A firewall whose machine went silent: Unknown for metal-api, seen by one reconcile.
fn silent_firewall() -> (Fixture, FirewallOutcome) {
    let mut fixture = Fixture::new();
    let id = fixture.allocate();
    fixture.world.sim.advance(Duration::from_secs(300));
    fixture.pass();
    assert!(ready_is_true(fixture.conditions()));
    fixture.world.sim.kill_machine(&id);
    fixture.world.sim.advance(MACHINE_DEAD_AFTER + Duration::from_secs(1));
    let outcome = fixture.pass();
    (fixture, outcome)
}

#[test]
fn silent_firewall_is_not_ready_and_comes_back_when_it_would_be_given_up() {
    let (_, outcome) = silent_firewall();

    let conditions = &outcome.status.conditions;
    assert_condition(conditions, ConditionType::Ready, false, Reason::MachineLivelinessUnknown);
    assert_condition_unknown(conditions, ConditionType::FirewallHealthy, Reason::MachineLivelinessUnknown);
    assert!(!has_event(&outcome.events, EventReason::MachineDead));
    assert!(outcome.requeue.is_some_and(|after| after <= FIREWALL_REPLACE_AFTER), "{:?}", outcome.requeue);
}

#[test]
fn firewall_silent_for_the_replace_time_is_given_up_as_dead_once() {
    let (mut fixture, _) = silent_firewall();
    fixture.world.sim.advance(FIREWALL_REPLACE_AFTER - Duration::from_secs(1));
    let before = fixture.pass();
    assert_condition(
        &before.status.conditions,
        ConditionType::Ready,
        false,
        Reason::MachineLivelinessUnknown,
    );

    fixture.world.sim.advance(Duration::from_secs(1));
    let given_up = fixture.pass();
    let conditions = &given_up.status.conditions;
    assert_condition(conditions, ConditionType::Ready, false, Reason::MachineDead);
    assert_condition_unknown(conditions, ConditionType::FirewallHealthy, Reason::MachineLivelinessUnknown);
    assert!(has_event(&given_up.events, EventReason::MachineDead));

    let again = fixture.pass();
    assert!(!has_event(&again.events, EventReason::MachineDead), "the event is recorded once");
}

#[test]
fn a_lost_status_restarts_the_silence_count() {
    let (mut fixture, _) = silent_firewall();
    fixture.world.sim.advance(FIREWALL_REPLACE_AFTER);
    if let Some(status) = fixture.object.status.as_mut() {
        status.conditions.clear();
    }
    let outcome = fixture.pass();
    assert_condition(
        &outcome.status.conditions,
        ConditionType::Ready,
        false,
        Reason::MachineLivelinessUnknown,
    );
}

#[test]
fn externally_freed_firewall_is_reported_and_never_replaced() {
    let mut fixture = Fixture::new();
    let id = fixture.allocate();
    fixture.world.sim.free_machine_externally(&id);

    let outcome = fixture.pass();

    assert_condition(&outcome.status.conditions, ConditionType::Ready, false, Reason::MachineFreedExternally);
    assert_eq!(fixture.world.backend.count(Operation::AllocateFirewall), 1);
    assert!(has_event(&outcome.events, EventReason::MachineFreedExternally));
}

#[test]
fn addresses_cover_the_node_network_and_the_internet() {
    let mut fixture = Fixture::new();
    fixture.allocate();

    let addresses = fixture.object.status.clone().expect("status").addresses;

    let kinds: Vec<_> = addresses.iter().map(|a| a.type_).collect();
    assert!(kinds.contains(&MachineAddressType::Hostname), "{addresses:?}");
    assert!(kinds.contains(&MachineAddressType::InternalIp), "{addresses:?}");
    assert!(kinds.contains(&MachineAddressType::ExternalIp), "{addresses:?}");
    let external = addresses.iter().find(|a| a.type_ == MachineAddressType::ExternalIp).expect("external");
    assert!(external.address.starts_with("203.0.113.") || external.address.starts_with("2001:db8:0:113:"));
}

// ----- deletion -----

#[test]
fn deletion_frees_the_firewall_and_removes_the_finalizer() {
    let mut fixture = Fixture::new();
    let id = fixture.allocate();
    fixture.delete();

    let outcome = fixture.pass();

    assert_eq!(outcome.finalizer, FinalizerAction::Remove);
    assert!(fixture.world.machine(&id).allocation.is_none());
    assert!(has_event(&outcome.events, EventReason::Freed));
}

#[test]
fn deletion_frees_a_firewall_whose_allocation_answer_was_lost() {
    let mut fixture = Fixture::new();
    fixture.world.backend.lose_next(Operation::AllocateFirewall);
    fixture.pass();
    fixture.delete();

    let outcome = fixture.pass();

    assert_eq!(outcome.finalizer, FinalizerAction::Remove);
    assert!(firewalls_with(&fixture.world.sim, &fixture.identity_tags()).is_empty());
}

#[test]
fn deletion_never_frees_a_firewall_of_another_project() {
    let mut fixture = Fixture::new();
    let theirs = their_firewall(&fixture.world);
    fixture.object.spec.provider_id = Some(format!("metal://mini-lab/{theirs}"));
    fixture.delete();

    let outcome = fixture.pass();

    assert!(!fixture.world.backend.called(Operation::FreeMachine));
    assert_eq!(fixture.world.machine(&theirs).project_id(), Some(OTHER_PROJECT));
    assert!(has_event(&outcome.events, EventReason::NotOurs));
    assert_eq!(outcome.finalizer, FinalizerAction::Remove);
}

#[test]
fn deletion_with_an_unparsable_provider_id_completes() {
    let mut fixture = Fixture::new();
    fixture.object.spec.provider_id = Some("garbage".into());
    fixture.delete();

    assert_eq!(fixture.pass().finalizer, FinalizerAction::Remove);
}

#[test]
fn deletion_while_paused_frees_nothing_and_keeps_the_finalizer() {
    let mut fixture = Fixture::new();
    let id = fixture.allocate();
    fixture.cluster = Some(ClusterFacts { paused: true, ..cluster_facts() });
    fixture.delete();
    fixture.world.backend.clear();

    let outcome = fixture.pass();

    assert_eq!(fixture.world.backend.calls(), vec![]);
    assert_eq!(outcome.finalizer, FinalizerAction::Keep);
    assert!(fixture.world.machine(&id).allocation.is_some());
}

#[test]
fn deletion_for_move_removes_the_finalizer_and_frees_nothing() {
    let mut fixture = Fixture::new();
    let id = fixture.allocate();
    fixture.object = fixture.object.clone().annotated(capi::DELETE_FOR_MOVE_ANNOTATION);
    fixture.delete();
    fixture.world.backend.clear();

    let outcome = fixture.pass();

    assert_eq!(outcome.finalizer, FinalizerAction::Remove);
    assert_eq!(fixture.world.backend.calls(), vec![]);
    assert!(fixture.world.machine(&id).allocation.is_some());
}

//! The MetalStackCluster reconciler, branch by branch, against the simulated datacenter.

mod support;

use capms_backend_sim::Sim;
use capms_core::api::conditions::{ConditionStatus, ConditionType, Reason, set_condition};
use capms_core::api::{
    ApiEndpoint, CLUSTER_FINALIZER, MetalStackCluster, MetalStackFirewall, MetalStackFirewallStatus, capi,
};
use capms_core::metal::{MachineAllocateRequest, NetworkAllocateRequest, NetworkRequest};
use capms_core::reconcile::{
    ClusterFacts, ClusterInput, ClusterOutcome, EventReason, FinalizerAction, FirewallChild,
    reconcile_cluster,
};
use capms_core::tags;
use capms_core::{MetalBackend, Operation};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use std::time::Duration;
use support::*;

/// One MetalStackCluster and everything its reconcile reads.
struct Fixture {
    sim: Sim,
    backend: Recording,
    object: MetalStackCluster,
    cluster: Option<ClusterFacts>,
    machines_remaining: usize,
    firewall: Option<MetalStackFirewall>,
}

impl Fixture {
    /// `default/prod` with the finalizer, owned by an unpaused Cluster without endpoint.
    fn new() -> Self {
        let sim = sim();
        Fixture {
            backend: Recording::new(sim.backend()),
            sim,
            object: our_cluster(),
            cluster: Some(cluster_facts()),
            machines_remaining: 0,
            firewall: None,
        }
    }

    fn reconcile(&self) -> ClusterOutcome {
        let input = ClusterInput {
            metal_cluster: &self.object,
            cluster: self.cluster.as_ref(),
            machines_remaining: self.machines_remaining,
            firewall: self.firewall.as_ref(),
            now: self.sim.now(),
            jitter: 20,
        };
        block_on(reconcile_cluster(&input, &self.backend))
    }

    fn pass(&mut self) -> ClusterOutcome {
        let outcome = self.reconcile();
        apply_cluster(&mut self.object, &outcome);
        outcome
    }

    /// Reconciles until provisioned (without a firewall spec).
    fn provision(&mut self) -> ClusterOutcome {
        for _ in 0..3 {
            let outcome = self.pass();
            if outcome.status.initialization.is_some() {
                return outcome;
            }
        }
        panic!("not provisioned after three passes: {:#?}", self.object.status);
    }

    fn delete(&mut self) {
        let now = self.sim.now();
        self.object = self.object.clone().deleting(now);
    }

    /// Reconciles a deleting cluster until its finalizer goes, following the requeues.
    fn delete_until_done(&mut self) -> Vec<ClusterOutcome> {
        let mut outcomes = Vec::new();
        for _ in 0..10 {
            let outcome = self.pass();
            let done = outcome.finalizer == FinalizerAction::Remove;
            let requeue = outcome.requeue;
            outcomes.push(outcome);
            if done {
                return outcomes;
            }
            self.sim.advance(requeue.expect("a waiting deletion is looked at again"));
        }
        panic!("deletion did not finish in ten passes: {:#?}", self.object.status);
    }

    fn conditions(&self) -> &[Condition] {
        self.object.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default()
    }

    fn network_exists(&self, id: &str) -> bool {
        self.sim.networks().iter().any(|n| n.id == id)
    }

    fn ip_exists(&self, address: &str) -> bool {
        self.sim.ips().iter().any(|ip| ip.address == address)
    }

    fn labelled_networks(&self) -> Vec<String> {
        let labels = tags::network_ownership_labels(&cluster_identity());
        self.sim
            .networks()
            .into_iter()
            .filter(|n| labels.iter().all(|(k, v)| n.labels.get(k) == Some(v)))
            .map(|n| n.id)
            .collect()
    }
}

/// A network of our project without any capms label: the user's.
fn users_network(sim: &Sim) -> String {
    let request = NetworkAllocateRequest {
        project_id: PROJECT.into(),
        partition_id: PARTITION.into(),
        name: "users-network".into(),
        ..Default::default()
    };
    block_on(sim.backend().allocate_network(&request)).expect("network allocates").id
}

fn firewall_with_ready(ready: bool) -> MetalStackFirewall {
    let mut firewall = our_firewall("uid-fw");
    let mut conditions = Vec::new();
    let (status, reason) = if ready {
        (ConditionStatus::True, Reason::Ready)
    } else {
        (ConditionStatus::False, Reason::Provisioning)
    };
    set_condition(
        &mut conditions,
        ConditionType::Ready,
        status,
        reason,
        "",
        Some(1),
        jiff::Timestamp::UNIX_EPOCH,
    );
    firewall.status = Some(MetalStackFirewallStatus { conditions, ..Default::default() });
    firewall
}

// ----- externally managed, pause, owner, finalizer -----

#[test]
fn externally_managed_clusters_get_no_call_and_no_status_write() {
    let mut fixture = Fixture::new();
    fixture.object = metal_cluster().annotated(capi::MANAGED_BY_ANNOTATION);

    let outcome = fixture.reconcile();

    assert!(!outcome.write_status);
    assert_eq!(fixture.backend.calls(), vec![]);
    assert_eq!(outcome.finalizer, FinalizerAction::Keep);
    assert_eq!((outcome.node_network_id, outcome.control_plane_ip), (None, None));
    assert_eq!(outcome.firewall, FirewallChild::Keep);
}

#[test]
fn externally_managed_clusters_are_not_torn_down_either() {
    let mut fixture = Fixture::new();
    fixture.provision();
    fixture.object = fixture.object.clone().annotated(capi::MANAGED_BY_ANNOTATION);
    fixture.delete();
    fixture.backend.clear();

    let outcome = fixture.reconcile();

    assert!(!outcome.write_status);
    assert_eq!(fixture.backend.calls(), vec![]);
}

#[test]
fn paused_cluster_makes_no_call() {
    let mut fixture = Fixture::new();
    fixture.cluster = Some(ClusterFacts { paused: true, ..cluster_facts() });

    let outcome = fixture.pass();

    assert!(outcome.write_status);
    assert_eq!(fixture.backend.calls(), vec![]);
    assert_condition(&outcome.status.conditions, ConditionType::Paused, true, Reason::Paused);
    assert_eq!(outcome.status.initialization, None);
}

#[test]
fn without_an_owner_cluster_it_waits() {
    let mut fixture = Fixture::new();
    fixture.cluster = None;

    let outcome = fixture.pass();

    assert_eq!(fixture.backend.calls(), vec![]);
    assert_condition(&outcome.status.conditions, ConditionType::Ready, false, Reason::NotReady);
    assert_eq!(outcome.finalizer, FinalizerAction::Keep);
}

#[test]
fn finalizer_is_added_before_anything_is_allocated() {
    let mut fixture = Fixture::new();
    fixture.object = metal_cluster();

    let outcome = fixture.pass();

    assert_eq!(outcome.finalizer, FinalizerAction::Add);
    assert_eq!(fixture.backend.calls(), vec![]);
    assert!(fixture.object.has_finalizer(CLUSTER_FINALIZER));
}

// ----- node network -----

#[test]
fn allocates_the_node_network_with_identity_labels_and_writes_it_back() {
    let mut fixture = Fixture::new();

    let outcome = fixture.pass();

    let id = outcome.node_network_id.clone().expect("written back to spec.nodeNetworkID");
    let network = fixture.sim.networks().into_iter().find(|n| n.id == id).expect("allocated");
    for (key, value) in [
        ("cluster.metal-stack.io/id", "default.prod"),
        ("metal-stack.infrastructure.cluster.x-k8s.io/cluster-resource", "default.prod"),
        ("metal-stack.infrastructure.cluster.x-k8s.io/uid", CLUSTER_UID),
        ("metal-stack.infrastructure.cluster.x-k8s.io/purpose", "node-network"),
    ] {
        assert_eq!(network.labels.get(key).map(String::as_str), Some(value), "label {key}");
    }
    assert_eq!(network.project_id.as_deref(), Some(PROJECT));
    assert_eq!(network.partition_id.as_deref(), Some(PARTITION));
    assert_eq!(outcome.status.node_network_id.as_deref(), Some(id.as_str()));
    assert_condition(&outcome.status.conditions, ConditionType::NodeNetworkReady, true, Reason::Allocated);

    // The next pass uses the written-back id and still knows the network is capms's.
    let next = fixture.pass();
    assert_condition(&next.status.conditions, ConditionType::NodeNetworkReady, true, Reason::Allocated);
    assert_eq!(fixture.backend.count(Operation::AllocateNetwork), 1);
}

#[test]
fn adopts_an_existing_labelled_network_instead_of_allocating() {
    let mut fixture = Fixture::new();
    let request = NetworkAllocateRequest {
        project_id: PROJECT.into(),
        partition_id: PARTITION.into(),
        labels: tags::network_labels(&cluster_identity()),
        ..Default::default()
    };
    let existing = block_on(fixture.sim.backend().allocate_network(&request)).expect("allocates").id;

    let outcome = fixture.pass();

    assert_eq!(outcome.node_network_id.as_deref(), Some(existing.as_str()));
    assert!(!fixture.backend.called(Operation::AllocateNetwork));
    assert!(has_event(&outcome.events, EventReason::Adopted));
}

#[test]
fn lost_network_allocation_answer_is_adopted_on_the_next_pass() {
    let mut fixture = Fixture::new();
    fixture.backend.lose_next(Operation::AllocateNetwork);

    let lost = fixture.pass();
    assert_eq!(lost.node_network_id, None);
    assert!(lost.requeue.expect("retried") <= Duration::from_secs(5));

    let next = fixture.pass();

    assert_eq!(fixture.labelled_networks().len(), 1, "one network, not two");
    assert_eq!(next.node_network_id, Some(fixture.labelled_networks()[0].clone()));
}

#[test]
fn user_provided_node_network_is_used_and_never_freed() {
    let mut fixture = Fixture::new();
    let users = users_network(&fixture.sim);
    fixture.object.spec.node_network_id = Some(users.clone());

    let outcome = fixture.provision();

    assert_condition(&outcome.status.conditions, ConditionType::NodeNetworkReady, true, Reason::UserProvided);
    assert_eq!(outcome.status.node_network_id.as_deref(), Some(users.as_str()));
    assert!(!fixture.backend.called(Operation::AllocateNetwork));

    fixture.delete();
    fixture.delete_until_done();

    assert!(fixture.network_exists(&users), "defect D3: a user's network is never freed");
    assert!(!fixture.backend.called(Operation::FreeNetwork));
}

// ----- control-plane endpoint -----

#[test]
fn auto_allocated_control_plane_ip_is_written_back_and_freed_on_delete() {
    let mut fixture = Fixture::new();

    let outcome = fixture.provision();

    let ip = outcome.control_plane_ip.clone().expect("written back to spec.controlPlaneIP");
    assert_eq!(
        outcome.control_plane_endpoint,
        Some(ApiEndpoint { host: Some(ip.clone()), port: Some(6443) }),
        "the endpoint is written back with the API server port"
    );
    assert_eq!(fixture.object.spec.control_plane_ip.as_deref(), Some(ip.as_str()));
    assert_eq!(outcome.status.control_plane_ip.as_deref(), Some(ip.as_str()));
    let allocated = fixture.sim.ips().into_iter().find(|i| i.address == ip).expect("IP exists");
    assert_eq!(allocated.network_id, EXTERNAL_NETWORK, "from the default external network");
    assert!(allocated.tags.contains(&"cluster.metal-stack.io/id=default.prod".to_string()));

    fixture.delete();
    fixture.delete_until_done();

    assert!(!fixture.ip_exists(&ip), "defects D4/D5: capms's control-plane IP is freed");
}

#[test]
fn lost_ip_allocation_answer_is_adopted_on_the_next_pass() {
    let mut fixture = Fixture::new();
    fixture.backend.lose_next(Operation::AllocateIp);

    fixture.pass();
    let outcome = fixture.provision();

    let ours =
        |ip: &&capms_core::metal::Ip| ip.tags.contains(&"cluster.metal-stack.io/id=default.prod".into());
    let ips: Vec<_> = fixture.sim.ips().into_iter().filter(|ip| ours(&ip)).collect();
    assert_eq!(ips.len(), 1, "one control-plane IP, not two: {ips:?}");
    assert_eq!(outcome.control_plane_ip.as_deref(), Some(ips[0].address.as_str()));
}

#[test]
fn written_back_control_plane_ip_is_still_reported_as_allocated() {
    let mut fixture = Fixture::new();
    fixture.provision();
    assert!(fixture.object.spec.control_plane_endpoint.is_some(), "written back");

    let next = fixture.pass();

    assert_condition(&next.status.conditions, ConditionType::ControlPlaneIpReady, true, Reason::Allocated);
}

#[test]
fn status_is_rebuilt_after_a_move() {
    let mut fixture = Fixture::new();
    fixture.provision();
    let spec = fixture.object.spec.clone();

    // clusterctl move: spec copied, status lost, new UID.
    let mut moved = our_cluster();
    moved.metadata.uid = Some("uid-msc-prod-moved".into());
    moved.spec = spec.clone();
    fixture.object = moved;
    let outcome = fixture.pass();

    assert_eq!(outcome.status.initialization.and_then(|i| i.provisioned), Some(true));
    assert_eq!(outcome.status.node_network_id, spec.node_network_id);
    assert_eq!(outcome.status.control_plane_ip, spec.control_plane_ip, "status.controlPlaneIP rebuilt");
}

#[test]
fn moved_cluster_allocates_nothing_new() {
    let mut fixture = Fixture::new();
    fixture.provision();
    let mut moved = our_cluster();
    moved.metadata.uid = Some("uid-msc-prod-moved".into());
    moved.spec = fixture.object.spec.clone();
    fixture.object = moved;
    fixture.backend.clear();

    let outcome = fixture.pass();

    assert_eq!(outcome.status.initialization.and_then(|i| i.provisioned), Some(true));
    assert!(!fixture.backend.called(Operation::AllocateNetwork));
    assert!(!fixture.backend.called(Operation::AllocateIp));
}

#[test]
fn user_provided_control_plane_ip_is_used_and_never_freed() {
    let mut fixture = Fixture::new();
    let users = users_static_ip(&fixture.sim);
    fixture.object.spec.control_plane_ip = Some(users.address.clone());

    let outcome = fixture.provision();

    assert!(!fixture.backend.called(Operation::AllocateIp));
    assert_eq!(outcome.control_plane_ip, None, "nothing to write back");
    assert_eq!(
        outcome.control_plane_endpoint,
        Some(ApiEndpoint { host: Some(users.address.clone()), port: Some(6443) })
    );
    assert_condition(
        &outcome.status.conditions,
        ConditionType::ControlPlaneIpReady,
        true,
        Reason::UserProvided,
    );

    fixture.delete();
    fixture.delete_until_done();

    assert!(fixture.ip_exists(&users.address), "a user's IP is never freed");
    assert!(!fixture.backend.called(Operation::FreeIp));
}

#[test]
fn endpoint_set_by_a_control_plane_provider_allocates_no_ip() {
    let mut fixture = Fixture::new();
    let endpoint = ApiEndpoint { host: Some("prod.example.com".into()), port: Some(443) };
    fixture.cluster = Some(ClusterFacts { control_plane_endpoint: Some(endpoint), ..cluster_facts() });

    let outcome = fixture.provision();

    assert!(!fixture.backend.called(Operation::AllocateIp));
    assert_eq!(outcome.control_plane_ip, None);
    assert_eq!(outcome.control_plane_endpoint, None, "the provider's endpoint is not overwritten");
    assert_condition(
        &outcome.status.conditions,
        ConditionType::ControlPlaneIpReady,
        true,
        Reason::UserProvided,
    );
}

#[test]
fn endpoint_in_the_spec_allocates_no_ip() {
    let mut fixture = Fixture::new();
    fixture.object.spec.control_plane_endpoint =
        Some(ApiEndpoint { host: Some("203.0.113.200".into()), port: Some(6443) });

    let outcome = fixture.provision();

    assert!(!fixture.backend.called(Operation::AllocateIp));
    assert_eq!(outcome.control_plane_endpoint, None);
}

// ----- firewall and readiness -----

#[test]
fn firewall_spec_creates_the_firewall_and_the_cluster_waits_for_it() {
    let mut fixture = Fixture::new();
    fixture.object.spec.firewall = Some(firewall_template());

    let first = fixture.pass();

    assert_eq!(
        first.firewall,
        FirewallChild::Ensure { name: "prod-firewall".into(), spec: firewall_template().to_firewall_spec() }
    );
    assert_eq!(first.status.initialization, None, "defect D29: not provisioned before the firewall");
    assert_condition(&first.status.conditions, ConditionType::Ready, false, Reason::WaitingForFirewall);
    assert_condition(
        &first.status.conditions,
        ConditionType::FirewallReady,
        false,
        Reason::WaitingForFirewall,
    );
    assert!(first.requeue.is_some(), "looked at again, not only through the watch (defect D8)");
    assert_eq!(first.status.firewall_name.as_deref(), Some("prod-firewall"));

    fixture.firewall = Some(firewall_with_ready(false));
    let waiting = fixture.pass();
    assert_eq!(waiting.status.initialization, None, "an existing but unready firewall is not enough");
    assert_condition(&waiting.status.conditions, ConditionType::Ready, false, Reason::WaitingForFirewall);

    fixture.firewall = Some(firewall_with_ready(true));
    let ready = fixture.pass();
    assert_eq!(ready.status.initialization.and_then(|i| i.provisioned), Some(true));
    assert_condition(&ready.status.conditions, ConditionType::FirewallReady, true, Reason::Ready);
    assert_condition(&ready.status.conditions, ConditionType::Ready, true, Reason::Ready);
}

#[test]
fn without_firewall_spec_the_cluster_is_provisioned_after_network_and_ip() {
    let mut fixture = Fixture::new();

    let outcome = fixture.pass();

    assert_eq!(outcome.status.initialization.and_then(|i| i.provisioned), Some(true));
    assert!(outcome.node_network_id.is_some() && outcome.control_plane_ip.is_some());
    assert_eq!(outcome.firewall, FirewallChild::Keep);
    assert!(
        capms_core::api::conditions::get_condition(&outcome.status.conditions, "FirewallReady").is_none(),
        "no FirewallReady without a firewall spec"
    );
    assert_condition(fixture.conditions(), ConditionType::Ready, true, Reason::Ready);
}

#[test]
fn transient_errors_keep_the_cluster_unprovisioned_and_retry() {
    let mut fixture = Fixture::new();
    fixture.backend.fail_next(Operation::FindNetworks, transient(Operation::FindNetworks));

    let outcome = fixture.pass();

    assert_eq!(outcome.status.initialization, None);
    assert_condition(&outcome.status.conditions, ConditionType::Ready, false, Reason::BackendUnavailable);
    assert!(outcome.requeue.is_some());
    assert!(!fixture.backend.called(Operation::AllocateNetwork));
}

// ----- deletion -----

#[test]
fn deletion_waits_for_machines_then_the_firewall_then_frees_ip_then_network() {
    let mut fixture = Fixture::new();
    fixture.object.spec.firewall = Some(firewall_template());
    fixture.firewall = Some(firewall_with_ready(true));
    fixture.provision();
    let network = fixture.object.spec.node_network_id.clone().expect("network");
    let ip = fixture.object.spec.control_plane_ip.clone().expect("ip");
    fixture.delete();
    fixture.backend.clear();

    fixture.machines_remaining = 2;
    let machines = fixture.pass();
    assert_condition(&machines.status.conditions, ConditionType::Deleting, true, Reason::WaitingForMachines);
    assert_condition(&machines.status.conditions, ConditionType::Ready, false, Reason::Deleting);
    assert_eq!(machines.firewall, FirewallChild::Keep, "the firewall stays while machines remain");
    assert_eq!(machines.finalizer, FinalizerAction::Keep);
    assert!(machines.requeue.is_some());
    assert_eq!(fixture.backend.calls(), vec![], "nothing is freed while machines remain");

    fixture.machines_remaining = 0;
    let firewall = fixture.pass();
    assert_eq!(firewall.firewall, FirewallChild::Delete { name: "prod-firewall".into() });
    assert_condition(&firewall.status.conditions, ConditionType::Deleting, true, Reason::WaitingForFirewall);
    assert_eq!(firewall.finalizer, FinalizerAction::Keep);
    assert_eq!(fixture.backend.calls(), vec![], "nothing is freed while the firewall exists");
    assert!(fixture.network_exists(&network) && fixture.ip_exists(&ip));

    fixture.firewall = None;
    let done = fixture.pass();
    assert_eq!(done.finalizer, FinalizerAction::Remove);
    let calls = fixture.backend.calls();
    let free_ip = calls.iter().position(|&op| op == Operation::FreeIp).expect("IP freed");
    let free_network = calls.iter().position(|&op| op == Operation::FreeNetwork).expect("network freed");
    assert!(free_ip < free_network, "the IP goes before the network: {calls:?}");
    assert!(!fixture.network_exists(&network) && !fixture.ip_exists(&ip));
    assert_condition(&done.status.conditions, ConditionType::Deleting, true, Reason::DeletionCompleted);
}

#[test]
fn network_free_is_retried_while_metal_api_releases_the_ips_of_freed_machines() {
    let mut fixture = Fixture::new();
    fixture.provision();
    let network = fixture.object.spec.node_network_id.clone().expect("network");
    let ip = fixture.object.spec.control_plane_ip.clone().expect("ip");
    let request = MachineAllocateRequest {
        project_id: PROJECT.into(),
        partition_id: PARTITION.into(),
        size_id: SIZE.into(),
        image_id: IMAGE.into(),
        name: "worker-0".into(),
        networks: vec![NetworkRequest::auto(&network)],
        ..Default::default()
    };
    let backend = fixture.sim.backend();
    let machine = block_on(backend.allocate_machine(&request)).expect("allocates");
    block_on(backend.free_machine(&machine.id)).expect("frees");
    fixture.delete();

    let waiting = fixture.pass();

    assert_condition(&waiting.status.conditions, ConditionType::Deleting, true, Reason::WaitingForIpRelease);
    assert_eq!(waiting.finalizer, FinalizerAction::Keep);
    let requeue = waiting.requeue.expect("retried");
    assert!(requeue <= Duration::from_secs(10), "retried soon: {requeue:?}");
    assert!(fixture.network_exists(&network));
    assert!(!fixture.ip_exists(&ip), "the control-plane IP went first");

    fixture.sim.advance(requeue);
    let done = fixture.pass();

    assert_eq!(done.finalizer, FinalizerAction::Remove);
    assert!(!fixture.network_exists(&network));
}

/// An allocation that landed after its client gave up, for a MetalStackMachine deleted since:
/// nothing else would ever free it, and its IPs would hold the node network for ever. The
/// cluster's deletion frees it; a machine of the cluster without an object's tag (not capms's
/// allocation for an object) is left alone.
#[test]
fn deletion_frees_a_machine_left_over_from_a_deleted_object_before_the_network() {
    let mut fixture = Fixture::new();
    fixture.provision();
    let network = fixture.object.spec.node_network_id.clone().expect("network");
    let cluster = cluster_identity();
    let gone = tags::ObjectRef::new(NAMESPACE, "prod-md-7", "deleted-uid");
    let allocate = |name: &str, tags: Vec<String>| {
        let request = MachineAllocateRequest {
            project_id: PROJECT.into(),
            partition_id: PARTITION.into(),
            size_id: SIZE.into(),
            image_id: IMAGE.into(),
            name: name.into(),
            networks: vec![NetworkRequest::auto(&network)],
            tags,
            ..Default::default()
        };
        block_on(fixture.sim.backend().allocate_machine(&request)).expect("allocates")
    };
    let left_over = allocate(
        "prod-md-7",
        tags::allocation_tags(&cluster, &gone, tags::MACHINE_RESOURCE, tags::Purpose::Worker),
    );
    let foreign = allocate("someone-elses", vec![tags::cluster_id_tag(&cluster)]);
    fixture.delete();

    let first = fixture.pass();

    let allocated = |id: &str| fixture.sim.machines().iter().any(|m| m.id == id && m.allocation.is_some());
    assert!(!allocated(&left_over.id), "the left-over machine is freed");
    assert!(allocated(&foreign.id), "a machine without an object's tag is not capms's to free");
    assert!(first.events.iter().any(|e| e.message.contains(&left_over.id)), "{:?}", first.events);
    assert!(fixture.network_exists(&network), "the foreign machine's IPs still hold the network");
}

#[test]
fn deletion_without_a_firewall_spec_completes() {
    let mut fixture = Fixture::new();
    fixture.provision();
    assert!(fixture.object.spec.firewall.is_none());
    fixture.delete();

    let outcomes = fixture.delete_until_done();

    assert_eq!(outcomes.len(), 1, "defect D7: no firewall means nothing to wait for");
    assert!(fixture.labelled_networks().is_empty());
}

#[test]
fn deletion_of_a_never_provisioned_cluster_completes() {
    let mut fixture = Fixture::new();
    fixture.delete();

    let outcomes = fixture.delete_until_done();

    assert_eq!(outcomes.last().map(|o| o.finalizer), Some(FinalizerAction::Remove));
}

#[test]
fn failed_free_during_deletion_keeps_the_finalizer() {
    let mut fixture = Fixture::new();
    fixture.provision();
    fixture.delete();
    fixture.backend.fail_next(Operation::FreeIp, transient(Operation::FreeIp));

    let failed = fixture.pass();

    assert_eq!(failed.finalizer, FinalizerAction::Keep);
    assert!(failed.requeue.is_some());
    assert!(has_event(&failed.events, EventReason::FreeFailed));
    assert!(!fixture.backend.called(Operation::FreeNetwork), "the network waits for the IP");
    assert_eq!(fixture.pass().finalizer, FinalizerAction::Remove);
}

#[test]
fn deletion_while_paused_frees_nothing() {
    let mut fixture = Fixture::new();
    fixture.provision();
    let network = fixture.object.spec.node_network_id.clone().expect("network");
    fixture.cluster = Some(ClusterFacts { paused: true, ..cluster_facts() });
    fixture.delete();
    fixture.backend.clear();

    let outcome = fixture.pass();

    assert_eq!(fixture.backend.calls(), vec![]);
    assert_eq!(outcome.finalizer, FinalizerAction::Keep);
    assert_condition(&outcome.status.conditions, ConditionType::Deleting, true, Reason::Paused);
    assert!(fixture.network_exists(&network));
}

#[test]
fn deletion_for_move_removes_the_finalizer_and_frees_nothing() {
    let mut fixture = Fixture::new();
    fixture.object.spec.firewall = Some(firewall_template());
    fixture.firewall = Some(firewall_with_ready(true));
    fixture.provision();
    let network = fixture.object.spec.node_network_id.clone().expect("network");
    let ip = fixture.object.spec.control_plane_ip.clone().expect("ip");
    fixture.cluster = Some(ClusterFacts { paused: true, ..cluster_facts() });
    fixture.object = fixture.object.clone().annotated(capi::DELETE_FOR_MOVE_ANNOTATION);
    fixture.machines_remaining = 3;
    fixture.delete();
    fixture.backend.clear();

    let outcome = fixture.pass();

    assert_eq!(outcome.finalizer, FinalizerAction::Remove);
    assert_eq!(outcome.firewall, FirewallChild::Keep, "the firewall object is not deleted for a move");
    assert_eq!(fixture.backend.calls(), vec![]);
    assert!(fixture.network_exists(&network) && fixture.ip_exists(&ip));
    assert!(has_event(&outcome.events, EventReason::DeletedForMove));
}

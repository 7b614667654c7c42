//! The simulator's own behaviour beyond metal-api's contract: the lifecycle on the virtual
//! clock, and every fault verb. (metal-api semantics shared with the HTTP backend are in the
//! workspace contract suite, `tests/src/contract.rs`.)

use capms_backend_sim::{
    ErrorRates, FaultPlan, MACHINE_DEAD_AFTER, MINI_LAB_PROJECT, PartitionSpec, Phase, ProvisioningTimes,
    Sim, SimBuilder,
};
use capms_core::metal::{
    Liveliness, MachineAllocateRequest, MachineQuery, NetworkAllocateRequest, NetworkRequest,
    ProvisioningEventKind,
};
use capms_core::{ErrorKind, MetalBackend, Operation};
use futures::executor::block_on;
use std::time::Duration;

fn exact_times() -> ProvisioningTimes {
    ProvisioningTimes {
        provisioning: Duration::from_secs(300),
        reclaim: Duration::from_secs(120),
        ip_release: Duration::from_secs(5),
        jitter_percent: 0,
    }
}

fn sim(faults: FaultPlan) -> Sim {
    SimBuilder::new()
        .seed(3)
        .partition(PartitionSpec::mini_lab("mini-lab", 4))
        .provisioning(exact_times())
        .fault_plan(faults)
        .build()
}

fn network(sim: &Sim) -> String {
    let request = NetworkAllocateRequest {
        project_id: MINI_LAB_PROJECT.into(),
        partition_id: "mini-lab".into(),
        ..Default::default()
    };
    block_on(sim.backend().allocate_network(&request)).expect("network allocates").id
}

fn machine_request(network_id: &str, name: &str) -> MachineAllocateRequest {
    MachineAllocateRequest {
        project_id: MINI_LAB_PROJECT.into(),
        partition_id: "mini-lab".into(),
        size_id: "v1-small-x86".into(),
        image_id: "debian-13.0".into(),
        name: name.into(),
        networks: vec![NetworkRequest::auto(network_id)],
        tags: vec![format!("test/name={name}")],
        ..Default::default()
    }
}

fn events(sim: &Sim, machine_id: &str) -> Vec<ProvisioningEventKind> {
    let machine = block_on(sim.backend().get_machine(machine_id)).expect("machine exists");
    machine.events.into_iter().rev().map(|event| event.event).collect()
}

#[test]
fn machines_live_through_the_metal_stack_lifecycle_on_the_virtual_clock() {
    let sim = sim(FaultPlan::none());
    let network_id = network(&sim);
    let machine =
        block_on(sim.backend().allocate_machine(&machine_request(&network_id, "m"))).expect("allocates");
    assert_eq!(sim.machine_phase(&machine.id), Some(Phase::Provisioning));
    sim.advance(Duration::from_secs(299));
    assert_eq!(sim.machine_phase(&machine.id), Some(Phase::Provisioning));
    sim.advance(Duration::from_secs(1));
    assert_eq!(sim.machine_phase(&machine.id), Some(Phase::Running));
    use ProvisioningEventKind::*;
    assert_eq!(
        events(&sim, &machine.id),
        vec![Waiting, PxeBooting, Preparing, Installing, BootingNewKernel, PhonedHome]
    );

    block_on(sim.backend().free_machine(&machine.id)).expect("frees");
    assert_eq!(sim.machine_phase(&machine.id), Some(Phase::Reclaiming));
    sim.advance(Duration::from_secs(120));
    assert_eq!(sim.machine_phase(&machine.id), Some(Phase::Waiting));
    let tail: Vec<_> = events(&sim, &machine.id).into_iter().rev().take(4).collect();
    assert_eq!(tail, vec![Waiting, Preparing, PxeBooting, MachineReclaim]);
}

#[test]
fn a_lost_answer_still_allocates_and_the_machine_is_found_by_its_tags() {
    let sim = sim(FaultPlan { lost_response_rate: 1.0, ..FaultPlan::none() });
    let network_id = network_without_faults(&sim);
    let error = block_on(sim.backend().allocate_machine(&machine_request(&network_id, "lost")))
        .expect_err("the answer is lost");
    assert_eq!(error.kind(), ErrorKind::Transient);
    assert!(error.outcome_unknown(), "a lost write answer must say the outcome is unknown");
    sim.heal();
    let query = MachineQuery { tags: vec!["test/name=lost".into()], ..Default::default() };
    let found = block_on(sim.backend().find_machines(&query)).expect("find works after healing");
    assert_eq!(found.len(), 1, "the allocation happened although its answer was lost");
}

fn network_without_faults(sim: &Sim) -> String {
    let faults = sim.fault_plan();
    sim.set_fault_plan(FaultPlan::none());
    let id = network(sim);
    sim.set_fault_plan(faults);
    id
}

#[test]
fn injected_errors_do_not_take_effect() {
    let rates = ErrorRates { transient: 1.0, conflict: 0.0, auth: 0.0 };
    let sim = sim(FaultPlan { error_rates: rates, ..FaultPlan::none() });
    let error = block_on(sim.backend().list_partitions()).expect_err("every call fails");
    assert_eq!((error.kind(), error.status()), (ErrorKind::Transient, Some(500)));
    let per_operation = FaultPlan {
        error_rates_by_operation: [(
            Operation::AllocateNetwork,
            ErrorRates { conflict: 1.0, ..ErrorRates::default() },
        )]
        .into(),
        ..FaultPlan::none()
    };
    sim.set_fault_plan(per_operation);
    let request = NetworkAllocateRequest {
        project_id: MINI_LAB_PROJECT.into(),
        partition_id: "mini-lab".into(),
        ..Default::default()
    };
    let error = block_on(sim.backend().allocate_network(&request)).expect_err("allocate network conflicts");
    assert_eq!(error.kind(), ErrorKind::Conflict);
    assert_eq!(sim.networks().iter().filter(|n| n.parent_network_id.is_some()).count(), 0);
    assert!(block_on(sim.backend().list_partitions()).is_ok(), "other operations are unaffected");
}

#[test]
fn provisioning_failures_crash_loop_and_never_phone_home() {
    let sim = sim(FaultPlan { provisioning_failure_rate: 1.0, ..FaultPlan::none() });
    let network_id = network(&sim);
    let machine =
        block_on(sim.backend().allocate_machine(&machine_request(&network_id, "bad"))).expect("allocates");
    sim.advance(Duration::from_secs(3600));
    let machine = block_on(sim.backend().get_machine(&machine.id)).expect("exists");
    assert!(machine.crash_loop);
    assert!(!machine.is_phoned_home());
    assert!(!machine.is_ready());
    assert_eq!(sim.machine_phase(&machine.id), Some(Phase::CrashLoop));
}

#[test]
fn machines_die_and_are_freed_by_others_when_told() {
    let sim = sim(FaultPlan::none());
    let network_id = network(&sim);
    let backend = sim.backend();
    let first = block_on(backend.allocate_machine(&machine_request(&network_id, "a"))).expect("allocates");
    let second = block_on(backend.allocate_machine(&machine_request(&network_id, "b"))).expect("allocates");
    sim.advance(Duration::from_secs(300));
    assert!(sim.kill_machine(&first.id));
    sim.advance(MACHINE_DEAD_AFTER + Duration::from_secs(1));
    let dead = block_on(backend.get_machine(&first.id)).expect("exists");
    assert_eq!(dead.liveliness, Liveliness::Unknown, "metal-api never says Dead while allocated");
    assert!(!dead.is_ready(), "a silent machine is never ready");
    assert!(sim.free_machine_externally(&second.id));
    let freed = block_on(backend.get_machine(&second.id)).expect("exists");
    assert!(freed.allocation.is_none());
    assert!(!sim.kill_machine("no-such-machine"));
}

#[test]
fn scheduled_deaths_happen_and_healing_cancels_them() {
    let faults = FaultPlan { death_rate: 1.0, death_window: Duration::from_secs(600), ..FaultPlan::none() };
    let sim = sim(faults.clone());
    let network_id = network(&sim);
    let doomed =
        block_on(sim.backend().allocate_machine(&machine_request(&network_id, "doomed"))).expect("allocates");
    sim.advance(Duration::from_secs(900) + MACHINE_DEAD_AFTER + Duration::from_secs(1));
    assert_eq!(
        block_on(sim.backend().get_machine(&doomed.id)).expect("exists").liveliness,
        Liveliness::Unknown
    );

    let healed = self::sim(faults);
    let network_id = network(&healed);
    let saved = block_on(healed.backend().allocate_machine(&machine_request(&network_id, "saved")))
        .expect("allocates");
    healed.heal();
    healed.advance(Duration::from_secs(900));
    assert_eq!(
        block_on(healed.backend().get_machine(&saved.id)).expect("exists").liveliness,
        Liveliness::Alive
    );
}

#[test]
fn capacity_limits_are_lifted_by_healing() {
    let sim = sim(FaultPlan::none());
    let network_id = network(&sim);
    sim.set_capacity("mini-lab", "v1-small-x86", Some(1));
    let backend = sim.backend();
    block_on(backend.allocate_machine(&machine_request(&network_id, "one")))
        .expect("the one allowed allocation");
    let error =
        block_on(backend.allocate_machine(&machine_request(&network_id, "two"))).expect_err("limit reached");
    assert_eq!(error.kind(), ErrorKind::Capacity);
    sim.heal();
    block_on(backend.allocate_machine(&machine_request(&network_id, "two")))
        .expect("allocates after healing");
}

#[test]
fn parallel_allocation_refusals_are_capacity_errors() {
    let sim = sim(FaultPlan { parallel_allocation_rate: 1.0, ..FaultPlan::none() });
    let network_id = network(&sim);
    let error =
        block_on(sim.backend().allocate_machine(&machine_request(&network_id, "x"))).expect_err("refused");
    assert_eq!(error.kind(), ErrorKind::Capacity);
    assert!(error.message().contains("too many parallel machine allocations"));
}

#[test]
fn a_freed_machine_is_allocatable_again_only_after_reclaim() {
    let sim = SimBuilder::new()
        .partition(PartitionSpec::mini_lab("mini-lab", 1))
        .provisioning(exact_times())
        .build();
    let network_id = network(&sim);
    let backend = sim.backend();
    let machine = block_on(backend.allocate_machine(&machine_request(&network_id, "a"))).expect("allocates");
    block_on(backend.free_machine(&machine.id)).expect("frees");
    let error =
        block_on(backend.allocate_machine(&machine_request(&network_id, "b"))).expect_err("still reclaiming");
    assert_eq!(error.kind(), ErrorKind::Capacity);
    sim.advance(Duration::from_secs(120));
    let again =
        block_on(backend.allocate_machine(&machine_request(&network_id, "b"))).expect("waiting again");
    assert_eq!(again.id, machine.id);
    assert_ne!(again.allocation.map(|a| a.allocation_uuid), machine.allocation.map(|a| a.allocation_uuid));
}

#[test]
fn placement_tags_spread_machines_over_racks() {
    let sim = SimBuilder::new().partition(PartitionSpec::mini_lab("mini-lab", 8)).build();
    let network_id = network(&sim);
    let backend = sim.backend();
    let mut racks = Vec::new();
    for name in ["a", "b", "c", "d"] {
        let request = MachineAllocateRequest {
            placement_tags: vec!["cluster.metal-stack.io/id=default.spread".into()],
            tags: vec!["cluster.metal-stack.io/id=default.spread".into()],
            ..machine_request(&network_id, name)
        };
        racks.push(block_on(backend.allocate_machine(&request)).expect("allocates").rack_id);
    }
    racks.sort();
    assert_eq!(racks, vec!["mini-lab-rack-1", "mini-lab-rack-1", "mini-lab-rack-2", "mini-lab-rack-2"]);
}

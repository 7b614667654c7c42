//! Silent machines as metal-api reports them (`Unknown` while allocated, `Dead` otherwise),
//! and the faults of a metal-api that lags or has other users: machines that hang while
//! provisioning, finds that do not see young writes, writes that land after their client gave
//! up, and pinned machines someone else takes first.

use capms_backend_sim::{
    CLIENT_TIMEOUT, FaultPlan, LATE_WRITE_SPREAD, MACHINE_DEAD_AFTER, MINI_LAB_PROJECT, PartitionSpec, Phase,
    ProvisioningTimes, STOLEN_MACHINE_HELD, Sim, SimBuilder, machine_id,
};
use capms_core::metal::{
    IpAllocateRequest, IpQuery, Liveliness, Machine, MachineAllocateRequest, MachineQuery,
    NetworkAllocateRequest, NetworkQuery, NetworkRequest, ProvisioningEventKind,
};
use capms_core::{ErrorKind, MetalBackend};
use futures::executor::block_on;
use std::time::Duration;

const SECOND: Duration = Duration::from_secs(1);

fn sim(faults: FaultPlan) -> Sim {
    let times = ProvisioningTimes {
        provisioning: Duration::from_secs(300),
        reclaim: Duration::from_secs(120),
        ip_release: Duration::from_secs(5),
        jitter_percent: 0,
    };
    SimBuilder::new()
        .seed(11)
        .partition(PartitionSpec::mini_lab("mini-lab", 4))
        .provisioning(times)
        .fault_plan(faults)
        .build()
}

/// A network allocated with the faults switched off for the moment.
fn network(sim: &Sim) -> String {
    let faults = sim.fault_plan();
    sim.set_fault_plan(FaultPlan::none());
    let request = NetworkAllocateRequest {
        project_id: MINI_LAB_PROJECT.into(),
        partition_id: "mini-lab".into(),
        ..Default::default()
    };
    let id = block_on(sim.backend().allocate_network(&request)).expect("network allocates").id;
    sim.set_fault_plan(faults);
    id
}

fn request(network_id: &str, name: &str) -> MachineAllocateRequest {
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

fn get(sim: &Sim, id: &str) -> Machine {
    block_on(sim.backend().get_machine(id)).expect("machine exists")
}

fn find(sim: &Sim, name: &str) -> Vec<Machine> {
    let query = MachineQuery { tags: vec![format!("test/name={name}")], ..Default::default() };
    block_on(sim.backend().find_machines(&query)).expect("find answers")
}

/// A machine allocated and phoned home.
fn running(sim: &Sim, name: &str) -> Machine {
    let network_id = network(sim);
    let machine = block_on(sim.backend().allocate_machine(&request(&network_id, name))).expect("allocates");
    sim.advance(Duration::from_secs(300));
    assert_eq!(sim.machine_phase(&machine.id), Some(Phase::Running));
    machine
}

#[test]
fn an_allocated_silent_machine_turns_unknown_after_five_minutes_never_dead() {
    let sim = sim(FaultPlan::none());
    let machine = running(&sim, "silent");
    assert!(sim.kill_machine(&machine.id));
    let silent_since = sim.now();
    assert_eq!(sim.silent_since(&machine.id), Some(silent_since));

    sim.advance(MACHINE_DEAD_AFTER - SECOND);
    assert_eq!(get(&sim, &machine.id).liveliness, Liveliness::Alive, "metal-api waits 5 minutes");
    sim.advance(SECOND);
    assert_eq!(get(&sim, &machine.id).liveliness, Liveliness::Unknown);
    sim.advance(Duration::from_secs(24 * 3600));
    let still = get(&sim, &machine.id);
    assert_eq!(still.liveliness, Liveliness::Unknown, "never Dead while allocated");
    assert!(still.allocation.is_some());
}

#[test]
fn a_machine_that_dies_while_installing_sends_no_more_events() {
    let sim = sim(FaultPlan::none());
    let network_id = network(&sim);
    let machine =
        block_on(sim.backend().allocate_machine(&request(&network_id, "installing"))).expect("allocates");
    sim.advance(Duration::from_secs(60));
    assert_eq!(
        get(&sim, &machine.id).last_event().map(|e| e.event.clone()),
        Some(ProvisioningEventKind::PxeBooting)
    );
    sim.kill_machine(&machine.id);
    sim.advance(Duration::from_secs(3600));
    let silent = get(&sim, &machine.id);
    assert_eq!(silent.last_event().map(|e| e.event.clone()), Some(ProvisioningEventKind::PxeBooting));
    assert_eq!(silent.liveliness, Liveliness::Unknown);
    assert_eq!(sim.machine_phase(&machine.id), Some(Phase::Provisioning));
}

#[test]
fn a_silent_machine_is_dead_once_freed_and_never_comes_back() {
    let sim = sim(FaultPlan::none());
    let machine = running(&sim, "gone");
    sim.kill_machine(&machine.id);
    sim.advance(MACHINE_DEAD_AFTER);
    block_on(sim.backend().free_machine(&machine.id)).expect("frees");
    assert_eq!(get(&sim, &machine.id).liveliness, Liveliness::Dead, "unallocated and silent: dead");

    sim.advance(Duration::from_secs(3600));
    assert_eq!(sim.machine_phase(&machine.id), Some(Phase::Reclaiming), "a silent machine is never wiped");
    let network_id = network(&sim);
    let pinned =
        MachineAllocateRequest { machine_id: Some(machine.id.clone()), ..request(&network_id, "again") };
    let error = block_on(sim.backend().allocate_machine(&pinned)).expect_err("never allocatable again");
    assert_eq!(error.kind(), ErrorKind::Permanent);
}

#[test]
fn a_machine_freed_before_its_silence_is_noticed_turns_dead_then() {
    let sim = sim(FaultPlan::none());
    let machine = running(&sim, "early");
    sim.kill_machine(&machine.id);
    block_on(sim.backend().free_machine(&machine.id)).expect("frees");
    assert_eq!(get(&sim, &machine.id).liveliness, Liveliness::Alive);
    sim.advance(MACHINE_DEAD_AFTER);
    assert_eq!(get(&sim, &machine.id).liveliness, Liveliness::Dead);
}

#[test]
fn an_unallocated_silent_machine_turns_dead() {
    let sim = sim(FaultPlan::none());
    let waiting = machine_id(1);
    assert!(sim.kill_machine(&waiting));
    sim.advance(MACHINE_DEAD_AFTER);
    assert_eq!(get(&sim, &waiting).liveliness, Liveliness::Dead);
}

#[test]
fn healing_keeps_silent_machines_silent() {
    let sim = sim(FaultPlan::none());
    let machine = running(&sim, "healed");
    sim.kill_machine(&machine.id);
    sim.heal();
    sim.advance(MACHINE_DEAD_AFTER);
    assert_eq!(get(&sim, &machine.id).liveliness, Liveliness::Unknown);
}

#[test]
fn stuck_machines_hang_in_pxe_or_installation_without_a_failure_event() {
    let sim = sim(FaultPlan { stuck_provisioning_rate: 1.0, ..FaultPlan::none() });
    let network_id = network(&sim);
    let mut hung_at = Vec::new();
    for name in ["a", "b", "c", "d"] {
        let machine =
            block_on(sim.backend().allocate_machine(&request(&network_id, name))).expect("allocates");
        sim.heal(); // the hang was decided at allocation; healing does not undo it
        sim.advance(Duration::from_secs(3600));
        let stuck = get(&sim, &machine.id);
        let last = stuck.last_event().map(|event| event.event.clone());
        assert!(
            matches!(
                last,
                Some(
                    ProvisioningEventKind::PxeBooting
                        | ProvisioningEventKind::Preparing
                        | ProvisioningEventKind::Installing
                )
            ),
            "{last:?}"
        );
        assert!(!stuck.crash_loop, "no failure event, unlike provisioning_failures");
        assert_eq!(stuck.liveliness, Liveliness::Unknown, "silent since it hung");
        assert_eq!(sim.machine_phase(&machine.id), Some(Phase::Provisioning));
        hung_at.extend(last);
        sim.set_fault_plan(FaultPlan { stuck_provisioning_rate: 1.0, ..FaultPlan::none() });
    }
    hung_at.sort_by_key(|event| event.to_string());
    hung_at.dedup();
    assert!(hung_at.len() > 1, "the hang point is drawn: {hung_at:?}");
}

#[test]
fn finds_do_not_see_writes_younger_than_the_lag_but_gets_do() {
    let lag = Duration::from_secs(30);
    let sim = sim(FaultPlan { stale_read_lag: lag, ..FaultPlan::none() });
    let network_id = network(&sim);
    let machine =
        block_on(sim.backend().allocate_machine(&request(&network_id, "young"))).expect("allocates");
    assert!(find(&sim, "young").is_empty(), "the allocation is younger than the lag");
    assert!(get(&sim, &machine.id).allocation.is_some(), "a get is current");
    sim.advance(lag);
    assert_eq!(find(&sim, "young").len(), 1);

    block_on(sim.backend().free_machine(&machine.id)).expect("frees");
    let stale = find(&sim, "young");
    assert_eq!(stale.len(), 1, "the free is younger than the lag");
    assert!(stale[0].allocation.is_some(), "the find shows the machine as it was");
    sim.advance(lag);
    assert!(find(&sim, "young").is_empty());
}

#[test]
fn finds_of_networks_and_ips_lag_too_and_healing_ends_it() {
    let sim = sim(FaultPlan { stale_read_lag: Duration::from_secs(30), ..FaultPlan::none() });
    let backend = sim.backend();
    let labels = [("test".to_string(), "lag".to_string())].into();
    let allocate = NetworkAllocateRequest {
        project_id: MINI_LAB_PROJECT.into(),
        partition_id: "mini-lab".into(),
        labels,
        ..Default::default()
    };
    block_on(backend.allocate_network(&allocate)).expect("network allocates");
    let by_label = NetworkQuery { labels: allocate.labels.clone(), ..Default::default() };
    assert!(block_on(backend.find_networks(&by_label)).expect("find").is_empty());
    let ip = IpAllocateRequest {
        network_id: "internet-mini-lab".into(),
        project_id: MINI_LAB_PROJECT.into(),
        tags: vec!["test=lag".into()],
        ..Default::default()
    };
    block_on(backend.allocate_ip(&ip)).expect("ip allocates");
    let by_tag = IpQuery { tags: vec!["test=lag".into()], ..Default::default() };
    assert!(block_on(backend.find_ips(&by_tag)).expect("find").is_empty());

    sim.heal();
    assert_eq!(block_on(backend.find_networks(&by_label)).expect("find").len(), 1);
    assert_eq!(block_on(backend.find_ips(&by_tag)).expect("find").len(), 1);
}

#[test]
fn a_late_write_is_lost_after_the_client_timeout_and_lands_later() {
    let sim = sim(FaultPlan { late_write_rate: 1.0, ..FaultPlan::none() });
    let network_id = network(&sim);
    let sent = sim.now();
    let error = block_on(sim.backend().allocate_machine(&request(&network_id, "late"))).expect_err("lost");
    assert_eq!(error.kind(), ErrorKind::Transient);
    assert!(error.outcome_unknown());
    assert_eq!(
        sim.now().duration_since(sent).unsigned_abs(),
        CLIENT_TIMEOUT,
        "the client waited for its timeout"
    );
    assert!(find(&sim, "late").is_empty(), "nothing happened before the client gave up");

    sim.set_fault_plan(FaultPlan::none());
    sim.advance(LATE_WRITE_SPREAD);
    let landed = find(&sim, "late");
    assert_eq!(landed.len(), 1, "the write landed after the client's timeout");
    let created = landed[0].allocation.as_ref().map(|a| a.created).expect("allocated");
    assert!(created > sent.checked_add(CLIENT_TIMEOUT).expect("in range"));
}

#[test]
fn a_late_free_lands_after_the_client_timeout() {
    let sim = sim(FaultPlan::none());
    let machine = running(&sim, "late-free");
    sim.set_fault_plan(FaultPlan { late_write_rate: 1.0, ..FaultPlan::none() });
    block_on(sim.backend().free_machine(&machine.id)).expect_err("lost");
    assert!(get(&sim, &machine.id).allocation.is_some(), "not freed yet");
    sim.advance(LATE_WRITE_SPREAD);
    assert!(get(&sim, &machine.id).allocation.is_none(), "freed late");
}

#[test]
fn a_pinned_machine_is_taken_by_someone_else_first_and_given_back_later() {
    let sim = sim(FaultPlan { stolen_machine_rate: 1.0, ..FaultPlan::none() });
    let network_id = network(&sim);
    let pinned_id = machine_id(2);
    let pinned =
        MachineAllocateRequest { machine_id: Some(pinned_id.clone()), ..request(&network_id, "pinned") };
    let error = block_on(sim.backend().allocate_machine(&pinned)).expect_err("someone else was first");
    assert_eq!(error.status(), Some(422));
    assert!(error.message().contains("machine is already allocated"), "{error}");
    let taken = get(&sim, &pinned_id);
    let allocation = taken.allocation.clone().expect("allocated by someone else");
    assert_eq!(allocation.project_id, MINI_LAB_PROJECT, "in the same project");
    assert!(!taken.tags.contains(&"test/name=pinned".to_string()), "without the caller's tags");

    sim.set_fault_plan(FaultPlan::none());
    sim.advance(STOLEN_MACHINE_HELD - SECOND);
    assert!(get(&sim, &pinned_id).allocation.is_some(), "still held");
    sim.advance(SECOND + Duration::from_secs(120));
    let again = block_on(sim.backend().allocate_machine(&pinned)).expect("given back and reclaimed");
    assert_eq!(again.id, pinned_id);
}

#[test]
fn unpinned_allocations_are_never_stolen() {
    let sim = sim(FaultPlan { stolen_machine_rate: 1.0, ..FaultPlan::none() });
    let network_id = network(&sim);
    let machine = block_on(sim.backend().allocate_machine(&request(&network_id, "free-choice")))
        .expect("an unpinned allocation picks a free machine");
    assert_eq!(find(&sim, "free-choice").len(), 1);
    assert!(machine.allocation.is_some());
}

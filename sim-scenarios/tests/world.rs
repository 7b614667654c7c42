//! The world as a whole: the demo story passes, runs are byte-identical per seed, and the
//! explorer's canary (a machine reconciler without adoption) is caught by the checkers.

use capms_backend_sim::{ErrorRates, FaultPlan};
use capms_core::reconcile::machine::Variant;
use capms_sim_scenarios::demo;
use capms_sim_scenarios::operator::OperatorConfig;
use capms_sim_scenarios::scenario::{Scenario, run_scenario_with};
use capms_sim_scenarios::world::{Until, World};
use std::time::Duration;

#[test]
fn the_demo_creates_scales_heals_and_deletes_without_leaks() {
    let report = demo::run(1, &mut |_| {}).expect("the demo story completes");
    assert!(report.passed(), "leaks {:?}, violations {:?}", report.leaks, report.violations);
    assert!(report.calls.values().sum::<u64>() > 0);
}

#[test]
fn the_same_seed_gives_the_same_trace() {
    let first = demo::run(7, &mut |_| {}).expect("completes");
    let second = demo::run(7, &mut |_| {}).expect("completes");
    assert_eq!(first.trace_hash, second.trace_hash, "seed 7 is not deterministic");
    assert_eq!(first.calls, second.calls);
    let other = demo::run(8, &mut |_| {}).expect("completes");
    assert_ne!(first.trace_hash, other.trace_hash, "seeds 7 and 8 gave the same trace");
}

/// Lost answers to allocations under a given machine reconciler: returns the violations and
/// every object that ever had two machines at once.
fn lost_answers(variant: Variant) -> Vec<String> {
    let faults = FaultPlan { lost_response_rate: 0.3, ..FaultPlan::none() };
    let config = OperatorConfig { variant, ..OperatorConfig::default() };
    let mut world = World::new(3, demo::datacenter(3).fault_plan(faults), config);
    world.create_cluster(demo::plan("lossy", 1, 3, false)).expect("creates");
    let _ = world.run_until("lossy", Until::Ready, Duration::from_secs(3 * 3600));
    world.sim.heal();
    let _ = world.run_until("lossy", Until::Ready, Duration::from_secs(3600));
    world.run_for(Duration::from_secs(1200)).expect("runs");
    let mut found = world.checker.violations.clone();
    found.extend(
        world.checker.duplicates_seen.iter().map(|object| format!("{object} had two machines allocated")),
    );
    found
}

#[test]
fn lost_allocation_answers_never_leave_a_second_machine() {
    assert_eq!(lost_answers(Variant::Correct), Vec::<String>::new());
}

#[test]
fn the_checkers_catch_a_reconciler_that_does_not_adopt() {
    let violations = lost_answers(Variant::CanaryWithoutAdoption);
    assert!(
        violations.iter().any(|v| v.contains("machines allocated")),
        "the canary went unnoticed: {violations:?}"
    );
}

#[test]
fn clusters_converge_after_a_metal_api_outage() {
    let outage = FaultPlan {
        error_rates: ErrorRates { transient: 1.0, ..ErrorRates::default() },
        ..FaultPlan::none()
    };
    let mut world = World::new(5, demo::datacenter(5).fault_plan(outage), OperatorConfig::default());
    world.create_cluster(demo::plan("outage", 1, 1, false)).expect("creates");
    world.run_for(Duration::from_secs(600)).expect("runs");
    assert!(!world.holds("outage", Until::Provisioned), "nothing can be provisioned while metal-api is down");
    world.sim.heal();
    world.run_until("outage", Until::Ready, Duration::from_secs(3600)).expect("converges after the outage");
    world.delete_cluster("outage").expect("deletes");
    world.run_until("outage", Until::Gone, Duration::from_secs(3600)).expect("goes");
    world.run_for(Duration::from_secs(60)).expect("runs");
    assert_eq!(world.leaks("outage"), Vec::<String>::new());
    assert_eq!(world.checker.violations, Vec::<String>::new());
}

#[test]
fn exploration_passes_with_faults_on() {
    let found = capms_sim_scenarios::explore::explore(0, 12, 2, OperatorConfig::default(), &|_| {})
        .expect("explores");
    let seeds: Vec<u64> = found.iter().map(|f| f.seed).collect();
    assert!(found.is_empty(), "seeds {seeds:?} failed: {:?}", found.first().map(|f| &f.reason));
}

/// The canary of the shared glue: capms-sim runs core's glue (the plan capms-manager runs),
/// so a plan that never writes a machine's status leaves clusters that never get ready, and
/// the explorer finds them.
#[test]
fn exploration_catches_the_glue_canary() {
    let config = OperatorConfig { variant: Variant::CanaryGlueLosesStatus, ..OperatorConfig::default() };
    let found = capms_sim_scenarios::explore::first_failure(0, 200, config).expect("explores");
    let first = found.expect("the broken glue went unnoticed for 200 seeds");
    assert!(first.reason.contains("ready"), "caught for another reason: {}", first.reason);
}

#[test]
fn exploration_catches_the_canary_within_thirty_seeds() {
    let config = OperatorConfig { variant: Variant::CanaryWithoutAdoption, ..OperatorConfig::default() };
    let found = capms_sim_scenarios::explore::explore(0, 30, 2, config, &|_| {}).expect("explores");
    let first = found.first().expect("the broken reconciler went unnoticed for 30 seeds");
    assert!(first.reason.contains("two machines"), "caught for another reason: {}", first.reason);
    assert!(first.shrunk.lines().count() < first.scenario.lines().count(), "shrinking removed nothing");
}

/// The first of seeds 0 to 19 at which the scenario `file` fails with the ungated canary (writes
/// that skip the block-move gate), and the failure; the correct glue must pass that seed.
fn ungated_canary_caught(file: &str) -> (u64, String) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios").join(file);
    let scenario = Scenario::load(&path).unwrap_or_else(|error| panic!("{error}"));
    let ungated = OperatorConfig { variant: Variant::CanaryUngated, ..OperatorConfig::default() };
    let caught = (0..20).find_map(|seed| {
        let report = run_scenario_with(&scenario, Some(seed), ungated);
        report.failure.map(|failure| (seed, failure.reason))
    });
    let (seed, reason) =
        caught.unwrap_or_else(|| panic!("{file}: the ungated canary went unnoticed for 20 seeds"));
    let correct = run_scenario_with(&scenario, Some(seed), OperatorConfig::default());
    assert!(correct.passed(), "{correct}");
    (seed, reason)
}

/// The canary of the block-move handshake, allocating: passes that skip the gate keep
/// allocating after clusterctl copied the cluster, under the source objects' UIDs, and the
/// moved cluster allocates those machines again.
#[test]
fn a_move_while_reconciles_are_in_flight_catches_the_ungated_canary() {
    let (seed, reason) =
        ungated_canary_caught("a_cluster_moved_while_reconciles_are_in_flight_duplicates_nothing.yaml");
    // A second machine for one object: seen by the checker, by the count after the move, or by
    // the partition running out of machines that the duplicates took.
    let duplicated = reason.contains("machines") || reason.contains("no machine available");
    assert!(duplicated, "seed {seed}: caught for another reason: {reason}");
}

/// The canary of the block-move handshake, freeing: frees of deleting Machines that skip the
/// gate land while clusterctl has the cluster paused.
#[test]
fn a_move_while_machines_are_being_deleted_catches_the_ungated_canary() {
    let (seed, reason) = ungated_canary_caught(
        "a_cluster_moved_while_machines_are_being_deleted_frees_nothing_while_paused.yaml",
    );
    assert!(reason.contains("of paused cluster"), "seed {seed}: caught for another reason: {reason}");
}

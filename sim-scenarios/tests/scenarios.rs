//! Every scenario file in `scenarios/` passes (one test per file), runs are deterministic, the
//! parser's messages name the file, line and column, and `capms-sim run` exits as documented.

use capms_sim_scenarios::scenario::{Scenario, ScenarioError, run_scenario};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Scenario files that fail because of a known bug outside the scenario format and runner,
/// with the diagnosis. They are still run: a listed scenario that passes fails its test, so
/// the entry goes when the bug is fixed.
const KNOWN_FAILURES: &[(&str, &str)] = &[];

fn scenario_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios")
}

/// The file as a user in the workspace root names it (messages and reproduce commands).
fn label(name: &str) -> String {
    format!("sim-scenarios/scenarios/{name}.yaml")
}

fn load(name: &str) -> Scenario {
    let path = scenario_dir().join(format!("{name}.yaml"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    Scenario::parse(&label(name), &text).unwrap_or_else(|e| panic!("{e}"))
}

fn check(name: &str) {
    let scenario = load(name);
    let report = run_scenario(&scenario, None);
    match KNOWN_FAILURES.iter().find(|(known, _)| *known == name) {
        None => assert!(report.passed(), "{report}"),
        Some((_, reason)) => {
            assert!(
                !report.passed(),
                "{name} is a known failure ({reason}) but passes now: remove it from KNOWN_FAILURES"
            );
            eprintln!("known failure {name}: {reason}\n{report}");
        }
    }
}

macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        /// Every scenario file, by name; `every_scenario_file_has_a_test` keeps it complete.
        const SCENARIOS: &[&str] = &[$(stringify!($name)),*];
        $(
            #[test]
            fn $name() {
                check(stringify!($name));
            }
        )*
    };
}

scenarios!(
    a_reconcile_in_flight_when_two_replicas_raced_frees_nothing_once_the_cluster_is_paused,
    a_reconcile_in_flight_under_metal_api_faults_frees_nothing_once_the_cluster_is_paused,
    a_silent_firewall_is_replaced,
    machines_that_hang_while_provisioning_are_replaced,
    a_duplicate_caused_by_stale_metal_api_reads_is_found_and_freed,
    writes_that_land_after_the_client_gave_up_never_leave_a_second_machine,
    a_pinned_machine_someone_else_took_is_waited_for_and_never_replaced,
    an_externally_managed_cluster_is_left_alone,
    machines_without_bootstrap_data_are_never_installed,
    a_cluster_whose_machines_are_gone_still_deletes,
    a_cluster_without_firewall_deletes_cleanly,
    a_cluster_moved_while_reconciles_are_in_flight_duplicates_nothing,
    a_cluster_moved_while_machines_are_being_deleted_frees_nothing_while_paused,
    a_dead_machine_is_replaced_by_the_health_check,
    a_paused_cluster_is_not_taken_apart_until_unpaused,
    a_user_provided_control_plane_ip_is_never_freed,
    a_user_provided_node_network_is_never_freed,
    an_externally_freed_machine_is_detected_and_replaced,
    clusterctl_move_keeps_every_machine_and_the_moved_cluster_deletes_cleanly,
    control_plane_machines_are_reconciled,
    deleting_one_cluster_leaves_its_neighbour_alone,
    deletion_waits_while_metal_api_releases_ips,
    every_fault_at_once_then_healed_converges,
    exhausted_capacity_backs_off_and_recovers,
    failed_allocations_are_retried,
    lost_allocation_responses_never_create_a_second_machine,
    lost_status_writes_are_rebuilt_from_metal_api,
    machines_that_never_phone_home_are_replaced,
    operator_crashes_during_allocation_adopt_instead_of_allocating_again,
    pausing_a_cluster_freezes_everything,
    pausing_a_cluster_holds_scaling_until_unpaused,
    rejected_credentials_back_off_and_recover,
    rolling_workers_to_a_new_image_replaces_every_worker,
    scaling_the_control_plane_up_and_down,
    slow_metal_api_answers_do_not_confuse_reconciles,
    stale_informer_reads_never_duplicate_machines,
    lost_answers_under_a_lagging_informer_never_duplicate_machines,
    the_auto_allocated_control_plane_ip_is_freed_on_delete,
    the_cluster_is_provisioned_only_after_its_firewall_is_ready,
    the_firewall_is_owned_by_its_cluster_and_moves_with_it,
    the_firewall_is_ready_only_once_it_phoned_home,
    too_many_parallel_allocations_back_off_and_recover,
    transient_errors_do_not_drop_reconciles,
    two_replicas_racing_never_keep_a_second_machine,
    unpausing_a_cluster_reaches_its_infrastructure,
    workers_survive_a_metal_api_outage_while_scaling,
);

#[test]
fn every_scenario_file_has_a_test() {
    let mut files: Vec<String> = std::fs::read_dir(scenario_dir())
        .unwrap_or_else(|e| panic!("listing scenarios: {e}"))
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter_map(|name| name.strip_suffix(".yaml").map(str::to_string))
        .collect();
    files.sort();
    let mut listed: Vec<String> = SCENARIOS.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(files, listed, "add every scenario file to the scenarios! list (and only those)");
    assert!(files.len() >= 20, "at least 20 scenarios, found {}", files.len());
    for (known, _) in KNOWN_FAILURES {
        assert!(SCENARIOS.contains(known), "KNOWN_FAILURES names {known}, which is not a scenario");
    }
}

#[test]
fn every_scenario_names_its_defects_and_is_named_as_a_sentence() {
    for name in SCENARIOS {
        let scenario = load(name);
        assert_eq!(
            scenario.name.to_lowercase().replace(['-', ' '], "_"),
            *name,
            "the file name is the scenario's name"
        );
        let text = std::fs::read_to_string(scenario_dir().join(format!("{name}.yaml")))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(text.starts_with("# "), "{name}: starts with a comment saying what it proves");
        let header: String = text.lines().take_while(|l| l.starts_with('#')).collect();
        assert!(
            header.contains("PRODUCT.md") || header.contains("Defect"),
            "{name}: header names the behaviour"
        );
    }
}

#[test]
fn the_same_seed_gives_the_same_trace_and_another_seed_another() {
    let scenario = load("workers_survive_a_metal_api_outage_while_scaling");
    let first = run_scenario(&scenario, Some(7));
    let second = run_scenario(&scenario, Some(7));
    let other = run_scenario(&scenario, Some(8));
    assert!(first.passed() && second.passed() && other.passed(), "{first}\n{second}\n{other}");
    assert_eq!(first.trace_hash, second.trace_hash);
    assert_eq!(first, second);
    assert_ne!(first.trace_hash, other.trace_hash);
}

#[test]
fn the_seed_override_wins_over_the_file() {
    let scenario = load("workers_survive_a_metal_api_outage_while_scaling");
    assert_eq!(scenario.seed, Some(7));
    assert_eq!(run_scenario(&scenario, None).trace_hash, run_scenario(&scenario, Some(7)).trace_hash);
    assert_eq!(run_scenario(&scenario, Some(9)).seed, 9);
}

fn parse_error(text: &str) -> ScenarioError {
    match Scenario::parse("scenarios/x.yaml", text) {
        Ok(scenario) => panic!("parsed: {scenario:?}"),
        Err(error) => error,
    }
}

fn assert_error(text: &str, line: u64, column: u64, contains: &str) {
    let error = parse_error(text);
    let shown = error.to_string();
    assert_eq!((error.line, error.column), (line, column), "{shown}");
    assert!(shown.starts_with(&format!("scenarios/x.yaml:{line}:{column}: ")), "{shown}");
    assert!(shown.contains(contains), "{shown:?} does not contain {contains:?}");
}

const HEAD: &str = "name: x\nsteps:\n  - create_cluster: { name: prod, workers: 1 }\n";

#[test]
fn an_unknown_verb_is_named_with_a_suggestion() {
    let text = format!("{HEAD}  - scale_worker: {{ cluster: prod, to: 3 }}\n");
    assert_error(&text, 4, 5, "unknown verb \"scale_worker\" in step 2 (did you mean \"scale_workers\"?)");
}

#[test]
fn an_unknown_key_is_named_with_a_suggestion() {
    assert_error(
        "name: x\nsteps:\n  - create_cluster:\n      name: prod\n      wrokers: 2\n",
        5,
        7,
        "unknown key \"wrokers\" in \"create_cluster\" (did you mean \"workers\"?)",
    );
    assert_error(
        "name: x\nstep:\n  - run_for: 5m\n",
        2,
        1,
        "unknown key \"step\" in the scenario (did you mean \"steps\"?)",
    );
    let text = format!("{HEAD}expect: {{ leaks: none }}\n");
    assert_error(&text, 4, 11, "unknown key \"leaks\" in \"expect\" (did you mean \"leaked\"?)");
}

#[test]
fn an_unknown_fault_is_named_with_a_suggestion() {
    let text = format!("{HEAD}  - fault: {{ api_outtage: 5m }}\n");
    assert_error(&text, 4, 14, "unknown fault \"api_outtage\" in \"fault\" (did you mean \"api_outage\"?)");
}

#[test]
fn a_bad_duration_is_explained() {
    let text = format!("{HEAD}  - run_for: 5 minutes\n");
    assert_error(&text, 4, 14, "bad duration \"5 minutes\"");
    let text = format!("{HEAD}  - run_until: {{ ready: prod, within: 30 }}\n");
    assert_error(&text, 4, 39, "needs a unit: write 30s, 30m or 30h");
    let text = format!("{HEAD}  - fault: {{ api_outage: 5x }}\n");
    assert_error(&text, 4, 26, "unknown unit \"x\"");
}

#[test]
fn a_wrong_type_is_explained() {
    let text = format!("{HEAD}  - scale_workers: {{ cluster: prod, to: five }}\n");
    assert_error(&text, 4, 41, "\"to\" of \"scale_workers\" must be a whole number, found the text \"five\"");
    let text = format!("{HEAD}  - fault: {{ lost_responses: {{ rate: 2, for: 5m }} }}\n");
    assert_error(&text, 4, 38, "must be a probability from 0 to 1");
    let text = "name: x\nsteps:\n  - create_cluster: { name: prod, firewall: yes }\n";
    assert_error(text, 3, 45, "must be true or false, found the text \"yes\"");
    let text = "name: x\nsteps: { run_for: 5m }\n";
    assert_error(text, 2, 8, "\"steps\" must be a list, found a mapping");
}

#[test]
fn missing_and_unknown_names_are_explained() {
    assert_error("steps:\n  - run_for: 5m\n", 1, 1, "the scenario needs \"name\"");
    let text = format!("{HEAD}  - delete_cluster: {{ name: prdo }}\n");
    assert_error(&text, 4, 29, "unknown cluster \"prdo\" (did you mean \"prod\"?)");
    assert_error(
        "name: x\nsteps:\n  - create_cluster: { name: prod, image: ubuntu-24.4 }\n",
        3,
        42,
        "unknown image \"ubuntu-24.4\" in the datacenter (did you mean \"ubuntu-26.4\"?)",
    );
    assert_error(
        "name: x\nsteps:\n  - create_cluster: { name: prod, node_network: mine }\n",
        3,
        49,
        "unknown network \"mine\"; no earlier step allocates one with allocate_network",
    );
}

#[test]
fn yaml_syntax_errors_and_empty_files_have_a_place() {
    let error = parse_error("name: x\nsteps: [\n  - run_for: 5m\n");
    assert!(error.line >= 2, "{error}");
    assert!(error.to_string().contains("not valid YAML"), "{error}");
    let error = parse_error("");
    assert!(error.to_string().contains("the file is empty"), "{error}");
    let error = parse_error("name: x\nname: y\nsteps: [run_for: 5m]\n");
    assert_eq!(error.line, 2, "{error}");
}

fn temp_file(name: &str, text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("capms-sim-{}-{name}.yaml", std::process::id()));
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    path
}

#[test]
fn capms_sim_run_exits_zero_one_or_two() {
    let binary = env!("CARGO_BIN_EXE_capms-sim");
    let passing = scenario_dir().join("a_cluster_without_firewall_deletes_cleanly.yaml");
    let output = Command::new(binary).arg("run").arg(&passing).output().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("PASS "));

    let failing = temp_file(
        "failing",
        "name: too little time\nsteps:\n  - create_cluster: { name: slow, workers: 1 }\n  - run_until: { ready: slow, within: 1m }\n",
    );
    let output = Command::new(binary)
        .arg("run")
        .arg(&failing)
        .args(["--seed", "42"])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("failed step 2 of 2"), "{stderr}");
    assert!(stderr.contains("run_until: { ready: slow, within: 1m }"), "{stderr}");
    assert!(stderr.contains("seed: 42"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "reproduce: cargo run -p capms-sim-scenarios --bin capms-sim -- run {} --seed 42",
            failing.display()
        )),
        "{stderr}"
    );

    let invalid = temp_file("invalid", "name: x\nsteps:\n  - run_fro: 5m\n");
    let output = Command::new(binary).arg("run").arg(&invalid).output().unwrap_or_else(|e| panic!("{e}"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.starts_with(&format!("{}:3:5: unknown verb \"run_fro\"", invalid.display())), "{stderr}");
    let _ = std::fs::remove_file(failing);
    let _ = std::fs::remove_file(invalid);
}

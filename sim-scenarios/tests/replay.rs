//! Traces of simulated runs: recorded with faults, replayed without divergence; replayed with
//! the canary reconciler, the divergence is reported where it first acts differently; turned
//! into a scenario file that reproduces the recorded failure, and shrunk. Traces never hold
//! bootstrap data.

use capms_core::reconcile::machine::Variant;
use capms_core::trace;
use capms_sim_scenarios::explore;
use capms_sim_scenarios::operator::OperatorConfig;
use capms_sim_scenarios::replay::{self, ReplayError};
use capms_sim_scenarios::scenario::{Scenario, run_scenario_with};
use std::path::{Path, PathBuf};
use std::process::Command;

fn scenario_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios").join(format!("{name}.yaml"))
}

fn load(name: &str) -> Scenario {
    Scenario::load(&scenario_file(name)).unwrap_or_else(|error| panic!("{error}"))
}

/// Half of all write answers lost, a firewall, scaling and deletion.
const LOSSY: &str = "lost_allocation_responses_never_create_a_second_machine";

/// A lagging informer and lost answers: the canary allocates again where it should adopt.
const STORM: &str = "lost_answers_under_a_lagging_informer_never_duplicate_machines";

fn canary() -> OperatorConfig {
    OperatorConfig { variant: Variant::CanaryWithoutAdoption, ..OperatorConfig::default() }
}

#[test]
fn a_faulty_run_replays_without_divergence_and_holds_no_bootstrap_data() {
    let (report, text) =
        replay::record_scenario(&load(LOSSY), None, OperatorConfig::default()).expect("records");
    assert!(report.passed(), "{report}");
    // The simulated bootstrap provider writes this into every bootstrap Secret.
    assert!(!text.contains("SECRET-TOKEN"), "bootstrap data leaked into the trace");
    assert!(!text.contains("join token"), "bootstrap data leaked into the trace");
    assert!(text.contains("\"outcome_unknown\":true"), "the trace shows the lost answers");
    let summary = replay::replay_text(&text, Variant::Correct).unwrap_or_else(|error| panic!("{error}"));
    // Reconciles still in flight when an operator crashed or the run ended finish nowhere.
    assert!(summary.reconciles() as u64 <= report.reconciles, "{summary}");
    assert!(summary.machines > 0 && summary.clusters > 0 && summary.firewalls > 0, "{summary}");
    assert!(summary.backend_calls > 0 && summary.cache_calls > 0, "{summary}");
}

#[test]
fn the_canary_replayed_on_a_correct_trace_diverges_at_its_first_allocation() {
    let (_, text) = replay::record_scenario(&load(LOSSY), None, OperatorConfig::default()).expect("records");
    let Err(ReplayError::Diverged(divergence)) = replay::replay_text(&text, Variant::CanaryWithoutAdoption)
    else {
        panic!("the canary must diverge");
    };
    assert_eq!(divergence.kind, "machine", "{divergence}");
    assert_eq!(divergence.call, Some(1), "{divergence}");
    // The canary skips the search for an earlier allocation: the first call it does not make.
    assert!(divergence.expected.starts_with("findMachines"), "{divergence}");
    assert!(divergence.expected.contains("machine-resource=default.lossy"), "{divergence}");
    // No later than the first machine record that allocates.
    let parsed = trace::parse_trace(&text).expect("parses");
    let first_allocating = parsed
        .records
        .iter()
        .find(|record| {
            record.calls.iter().any(|call| {
                matches!(call, trace::Call::Backend { operation: capms_core::Operation::AllocateMachine, .. })
            })
        })
        .expect("a machine was allocated");
    assert!(divergence.sequence <= first_allocating.sequence, "{divergence}");
    let shown = divergence.to_string();
    assert!(shown.contains("at call 1") && shown.contains("recorded: findMachines"), "{shown}");
}

#[test]
fn damaged_traces_are_reported_not_panicked_on() {
    let (_, text) = replay::record_scenario(&load(LOSSY), None, OperatorConfig::default()).expect("records");
    for cut in [0, 10, text.len() / 3, text.len() / 2] {
        let cut = (cut..text.len()).find(|c| text.is_char_boundary(*c)).unwrap_or(0);
        let damaged = &text[..cut];
        if let Err(error) = replay::replay_text(damaged, Variant::Correct) {
            assert!(matches!(error, ReplayError::Invalid(_)), "{error}");
        }
    }
    assert!(matches!(replay::replay_text("{}", Variant::Correct), Err(ReplayError::Invalid(_))));
    assert!(matches!(
        replay::replay_text("\u{0}\u{1}garbage", Variant::Correct),
        Err(ReplayError::Invalid(_))
    ));
}

#[test]
fn a_trace_becomes_a_runnable_scenario_with_the_clusters_and_faults_seen() {
    let (report, text) = replay::record_scenario(&load(STORM), None, canary()).expect("records");
    assert!(!report.passed(), "the canary run fails: {report}");
    let parsed = trace::parse_trace(&text).expect("parses");
    let derived = replay::to_scenario::derive(&parsed, "canary.trace").expect("derives");
    assert!(
        derived.contains("create_cluster: { name: laggy, namespace: default, control_plane: 1, workers: 3"),
        "{derived}"
    );
    assert!(derived.contains("firewall: true"), "{derived}");
    assert!(derived.contains("stale_reads"), "the lagging informer shows in the trace:\n{derived}");
    assert!(derived.contains("delete_cluster: { name: laggy }"), "{derived}");
    let scenario =
        Scenario::parse("derived.yaml", &derived).unwrap_or_else(|error| panic!("{error}\n{derived}"));
    let fixed = run_scenario_with(&scenario, None, OperatorConfig::default());
    assert!(fixed.passed(), "{fixed}\n{derived}");
}

/// The canary's failing run, recorded, turned into a scenario that fails the same way: the
/// trace shows the duplicate, the seed search finds a seed of the derived scenario that
/// reproduces it with the recorded reconciler, and the correct reconciler passes it.
#[test]
fn a_trace_of_a_failing_run_becomes_a_scenario_that_fails_the_same_way() {
    // The canary allocates without adoption: an object read without its providerID gets a
    // second machine.
    let (report, text) = replay::record_scenario(&load(STORM), None, canary()).expect("records");
    let failure = report.failure.as_ref().expect("the canary run fails");
    let kind = explore::kind(&format!("{}: {}", failure.text, failure.reason));
    let parsed = trace::parse_trace(&text).expect("parses");
    assert_eq!(
        replay::recorded_variant(&parsed.header),
        Variant::CanaryWithoutAdoption,
        "{:?}",
        parsed.header
    );
    // The canary's own trace replays faithfully with the canary.
    replay::replay_trace(&parsed, Variant::CanaryWithoutAdoption).unwrap_or_else(|error| panic!("{error}"));
    let seen = replay::to_scenario::failure_seen(&parsed).expect("the trace shows the duplicate");
    assert_eq!(seen.kind, kind, "{seen:?}");
    assert!(seen.description.contains("default/laggy-"), "{seen:?}");
    let derived =
        replay::to_scenario::derive_reproducing(&parsed, "canary.trace", canary(), None).expect("derives");
    let reproduction =
        derived.reproduction.as_ref().unwrap_or_else(|| panic!("reproduces:\n{}", derived.text));
    assert!(derived.runs <= replay::to_scenario::SEED_SEARCH_MAX, "{}", derived.runs);
    assert!(derived.text.contains(&format!("\nseed: {}\n", reproduction.seed)), "{}", derived.text);
    // Deterministic: the same trace gives the same file.
    let again =
        replay::to_scenario::derive_reproducing(&parsed, "canary.trace", canary(), None).expect("derives");
    assert_eq!(again.text, derived.text);
    // What `capms-sim run` plays: the file's own seed, no override.
    let scenario = Scenario::parse("derived.yaml", &derived.text)
        .unwrap_or_else(|error| panic!("{error}\n{}", derived.text));
    let rerun = run_scenario_with(&scenario, None, canary());
    let refailure = rerun
        .failure
        .as_ref()
        .unwrap_or_else(|| panic!("the derived scenario reproduces:\n{}", derived.text));
    assert_eq!(
        explore::kind(&format!("{}: {}", refailure.text, refailure.reason)),
        kind,
        "{rerun}\n{}",
        derived.text
    );
    // With the correct reconciler the same scenario passes: the failure is the reconciler's.
    let fixed = run_scenario_with(&scenario, None, OperatorConfig::default());
    assert!(fixed.passed(), "{fixed}\n{}", derived.text);
    // A trace of a correct run shows no failure: nothing to search for.
    let (_, correct) =
        replay::record_scenario(&load(STORM), None, OperatorConfig::default()).expect("records");
    let correct = trace::parse_trace(&correct).expect("parses");
    assert_eq!(replay::to_scenario::failure_seen(&correct), None);
}

#[test]
fn shrinking_keeps_the_failure_with_fewer_steps() {
    let (_, text) = replay::record_scenario(&load(STORM), None, canary()).expect("records");
    let parsed = trace::parse_trace(&text).expect("parses");
    let derived =
        replay::to_scenario::derive_reproducing(&parsed, "canary.trace", canary(), None).expect("derives");
    assert!(derived.reproduction.is_some(), "{}", derived.text);
    let shrunk = replay::to_scenario::shrink("derived.yaml", &derived.text, canary()).expect("shrinks");
    let steps = |text: &str| text.lines().filter(|line| line.starts_with("  - ")).count();
    assert!(steps(&shrunk) < steps(&derived.text), "{shrunk}");
    let scenario = Scenario::parse("shrunk.yaml", &shrunk).unwrap_or_else(|error| panic!("{error}"));
    let rerun = run_scenario_with(&scenario, None, canary());
    let failure = rerun.failure.as_ref().unwrap_or_else(|| panic!("{shrunk}"));
    assert_eq!(explore::kind(&format!("{}: {}", failure.text, failure.reason)), "two machines", "{rerun}");
    assert!(run_scenario_with(&scenario, None, OperatorConfig::default()).passed(), "{shrunk}");
}

#[test]
fn the_command_line_records_replays_and_derives() {
    let dir = std::env::temp_dir().join(format!("capms-replay-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let trace_path = dir.join("run.trace");
    let sim = env!("CARGO_BIN_EXE_capms-sim");
    let run =
        Command::new(sim).arg("run").arg(scenario_file(LOSSY)).arg("--record").arg(&trace_path).output();
    assert_eq!(run.expect("runs").status.code(), Some(0));
    let replayed = Command::new(sim).arg("replay").arg(&trace_path).output().expect("runs");
    assert_eq!(replayed.status.code(), Some(0), "{}", String::from_utf8_lossy(&replayed.stderr));
    assert!(String::from_utf8_lossy(&replayed.stdout).contains("no divergence"));
    let diverged =
        Command::new(sim).args(["replay", "--variant", "canary"]).arg(&trace_path).output().expect("runs");
    assert_eq!(diverged.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&diverged.stderr).contains("divergence in reconcile"));
    let out = dir.join("derived.yaml");
    let derive = Command::new(sim).arg("replay").arg(&trace_path).arg("--to-scenario").arg(&out).output();
    assert_eq!(derive.expect("runs").status.code(), Some(0));
    let accepted = Command::new(sim).arg("run").arg(&out).output().expect("runs");
    assert_eq!(accepted.status.code(), Some(0), "{}", String::from_utf8_lossy(&accepted.stderr));
    // A canary's trace says so: its derived scenario reproduces the duplicate with the canary,
    // and `capms-sim run` (the correct reconciler) passes it.
    let (_, canary_trace) = replay::record_scenario(&load(STORM), None, canary()).expect("records");
    let canary_path = dir.join("canary.trace");
    std::fs::write(&canary_path, canary_trace).expect("writes");
    let out = dir.join("canary.yaml");
    let derive = Command::new(sim)
        .arg("replay")
        .arg(&canary_path)
        .arg("--to-scenario")
        .arg(&out)
        .output()
        .expect("runs");
    let said = String::from_utf8_lossy(&derive.stdout);
    assert_eq!(derive.status.code(), Some(0), "{said}{}", String::from_utf8_lossy(&derive.stderr));
    assert!(said.contains("reproduced with seed"), "{said}");
    let accepted = Command::new(sim).arg("run").arg(&out).output().expect("runs");
    assert_eq!(accepted.status.code(), Some(0), "{}", String::from_utf8_lossy(&accepted.stderr));
    // Forced to the correct reconciler no seed reproduces it: exit 1, the scenario still written.
    let forced = dir.join("forced.yaml");
    let derive = Command::new(sim)
        .args(["replay", "--variant", "correct"])
        .arg(&canary_path)
        .arg("--to-scenario")
        .arg(&forced)
        .output()
        .expect("runs");
    assert_eq!(derive.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&derive.stderr).contains("none of the 64 seeds"));
    assert!(forced.exists());
    let garbage = dir.join("garbage.trace");
    std::fs::write(&garbage, "{\"format\":\"capms-trace\",\"version\":1}\nnot json\n").expect("writes");
    let invalid = Command::new(sim).arg("replay").arg(&garbage).output().expect("runs");
    assert_eq!(invalid.status.code(), Some(2));
    let _ = std::fs::remove_dir_all(&dir);
}

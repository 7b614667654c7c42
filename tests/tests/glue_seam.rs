//! The seam between capms-manager and the simulator: both run core's operator glue
//! (`capms_core::glue`), never a copy of it. This test reads the sources of both and fails if
//! either stops calling a part of the glue, or if the simulator's operator model grows its own
//! gather, plan, watch mapping or backoff again (issue: the simulator explored a hand-kept copy).

use std::path::Path;

fn source(path: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::read_to_string(root.join(path)).unwrap_or_else(|error| panic!("cannot read {path}: {error}"))
}

/// The glue entry points every driver of the reconcilers must call.
const GLUE_CALLS: &[&str] = &[
    "glue::gather::machine(",
    "glue::gather::bootstrap(",
    "glue::gather::cluster(",
    "glue::gather::firewall(",
    "glue::reconcile::machine(",
    "glue::reconcile::cluster(",
    "glue::reconcile::firewall(",
    "glue::plan::cluster(",
    "glue::plan::firewall(",
    "glue::execute(",
    "Gate::new(",
    "fingerprint(",
    "glue::retry::next(",
    "glue::Backoff",
];

fn missing(text: &str, calls: &[&str]) -> Vec<String> {
    calls.iter().filter(|call| !text.contains(*call)).map(|call| call.to_string()).collect()
}

#[test]
fn capms_manager_runs_the_glue() {
    let text = source("operator/src/controller.rs");
    let mut calls = GLUE_CALLS.to_vec();
    calls.extend(["glue::plan::machine(", "glue::triggered("]);
    assert_eq!(
        missing(&text, &calls),
        Vec::<String>::new(),
        "operator/src/controller.rs stopped calling the glue"
    );
}

#[test]
fn capms_sim_runs_the_glue() {
    let text = source("sim-scenarios/src/operator.rs");
    let mut calls = GLUE_CALLS.to_vec();
    calls.extend(["glue::plan::machine_variant(", "glue::triggered_all("]);
    assert_eq!(
        missing(&text, &calls),
        Vec::<String>::new(),
        "sim-scenarios/src/operator.rs stopped calling the glue"
    );
}

#[test]
fn the_simulators_operator_model_keeps_no_copy_of_the_glue() {
    let text = source("sim-scenarios/src/operator.rs");
    // Names of the copies the model once had: owner lookups, the apply of outcomes, the watch
    // mapping, and its own retry delays.
    let copies = [
        "fn owner_named",
        "fn machine_facts",
        "fn apply_machine",
        "fn apply_metadata",
        "fn related_targets",
        "INVALID_RETRY",
        "STATUS_RETRY",
    ];
    let found: Vec<&str> = copies.into_iter().filter(|copy| text.contains(copy)).collect();
    assert!(found.is_empty(), "sim-scenarios/src/operator.rs has its own {found:?} again: use core's glue");
}

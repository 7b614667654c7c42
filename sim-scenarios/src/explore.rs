//! Swarm exploration: every seed writes its own scenario (a cluster, a fault mix with some
//! faults switched off entirely, a few disturbances, then healing), runs it, and requires that
//! the cluster converges after healing, deletes without leaks, never has two machines for one
//! object, and never trips a safety check.
//!
//! A seed's scenario is generated as scenario-file text and run through the scenario parser and
//! runner, so a failure saved to a file reproduces exactly. Failing scenarios are shrunk by
//! removing steps while the same kind of failure remains.

use crate::operator::OperatorConfig;
use crate::scenario::{Scenario, ScenarioReport, run_scenario_with};
use capms_backend_sim::{MINI_LAB_PARTITION, MINI_LAB_SIZE};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::fmt::Write as _;

/// How many runs a shrink may spend.
pub const SHRINK_RUNS_MAX: usize = 80;

/// One failing seed.
#[derive(Debug, Clone)]
pub struct Found {
    pub seed: u64,
    /// The faults the seed switched on, one per line.
    pub fault_mix: Vec<String>,
    /// What failed, as the scenario runner said it.
    pub reason: String,
    /// The generated scenario.
    pub scenario: String,
    /// The scenario after shrinking (same kind of failure, fewer steps).
    pub shrunk: String,
}

/// The generated scenario of a seed.
pub fn scenario_text(seed: u64) -> String {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let control_plane = rng.random_range(1..=3usize);
    let workers = rng.random_range(0..=3usize);
    let firewall = rng.random_bool(0.5);
    let machines = 2 * (control_plane + workers + 1) + 4;
    let provisioning = if rng.random_bool(0.5) { "2m" } else { "5m" };
    let mut faults = fault_mix(&mut rng);
    let second_replica = faults.iter().any(|f| f.contains("second_replica"));
    let mut steps = vec![format!(
        "create_cluster: {{ name: swarm, partition: {MINI_LAB_PARTITION}, control_plane: {control_plane}, workers: {workers}, size: {MINI_LAB_SIZE}, image: ubuntu-26.4, firewall: {firewall} }}"
    )];
    steps.append(&mut faults);
    steps.push(format!("run_for: {}m", rng.random_range(5..=20)));
    for _ in 0..rng.random_range(0..=3) {
        steps.extend(disturbance(&mut rng, control_plane));
    }
    steps.push("heal: {}".to_string());
    steps.push("run_until: { ready: swarm, within: 3h }".to_string());
    // Machines die or are freed by others once the cluster has machines; the health check
    // must then bring it back.
    match rng.random_range(0..3) {
        0 => steps.push("fault: { machine_death: { cluster: swarm, count: 1 } }".to_string()),
        1 => steps.push("fault: { external_free: { cluster: swarm, count: 1 } }".to_string()),
        _ => {}
    }
    steps.push("run_until: { ready: swarm, within: 3h }".to_string());
    steps.push("delete_cluster: { name: swarm }".to_string());
    steps.push("run_until: { gone: swarm, within: 2h }".to_string());
    // Two replicas at once may both allocate before either writes the providerID; the
    // duplicate must then be freed (the lasting-duplicate check), not prevented.
    let duplicates = if second_replica { 100 } else { 0 };
    let mut text = String::new();
    let _ = writeln!(text, "name: explore seed {seed}");
    let _ = writeln!(text, "seed: {seed}");
    let _ = writeln!(text, "datacenter:");
    let _ = writeln!(
        text,
        "  partitions: [{{ id: {MINI_LAB_PARTITION}, sizes: {{ {MINI_LAB_SIZE}: {machines} }} }}]"
    );
    let _ = writeln!(text, "  provisioning: {provisioning}");
    let _ = writeln!(text, "steps:");
    for step in &steps {
        let _ = writeln!(text, "  - {step}");
    }
    let _ = writeln!(text, "expect: {{ leaked: none, duplicate_allocations: {duplicates} }}");
    text
}

/// Each fault is switched on or off by the RNG, with rates drawn too.
fn fault_mix(rng: &mut ChaCha8Rng) -> Vec<String> {
    let mut faults = Vec::new();
    let mut maybe = |rng: &mut ChaCha8Rng, on: f64, make: &dyn Fn(&mut ChaCha8Rng) -> String| {
        if rng.random_bool(on) {
            faults.push(format!("fault: {{ {} }}", make(rng)));
        }
    };
    let rate = |rng: &mut ChaCha8Rng, max: f64| (rng.random_range(0.01..max) * 100.0).round() / 100.0;
    maybe(rng, 0.5, &|rng| format!("error_rate: {{ rate: {}, for: 30m }}", rate(rng, 0.3)));
    maybe(rng, 0.4, &|rng| format!("lost_responses: {{ rate: {}, for: 30m }}", rate(rng, 0.3)));
    maybe(rng, 0.3, &|rng| format!("latency: {{ max: {}s, for: 30m }}", rng.random_range(1..=5)));
    maybe(rng, 0.3, &|rng| format!("conflicts: {{ rate: {}, for: 30m }}", rate(rng, 0.2)));
    maybe(rng, 0.15, &|rng| format!("auth_errors: {{ rate: {}, for: 20m }}", rate(rng, 0.1)));
    maybe(rng, 0.3, &|rng| format!("parallel_allocations: {{ rate: {}, for: 30m }}", rate(rng, 0.4)));
    maybe(rng, 0.25, &|rng| format!("provisioning_failures: {{ rate: {}, for: 20m }}", rate(rng, 0.3)));
    maybe(rng, 0.4, &|rng| format!("operator_crash: {{ count: {}, within: 20m }}", rng.random_range(1..=3)));
    maybe(rng, 0.3, &|_| "stale_reads: { for: 10m }".to_string());
    maybe(rng, 0.3, &|rng| format!("lost_status_writes: {{ rate: {}, for: 20m }}", rate(rng, 0.3)));
    maybe(rng, 0.15, &|_| "second_replica: { for: 10m }".to_string());
    faults
}

fn disturbance(rng: &mut ChaCha8Rng, control_plane: usize) -> Vec<String> {
    match rng.random_range(0..5) {
        0 => vec![format!("scale_workers: {{ cluster: swarm, to: {} }}", rng.random_range(0..=4))],
        1 => vec!["roll_workers: { cluster: swarm, image: debian-13.0 }".to_string()],
        2 => vec![
            "pause_cluster: { cluster: swarm }".to_string(),
            format!("run_for: {}m", rng.random_range(1..=10)),
            "unpause_cluster: { cluster: swarm }".to_string(),
        ],
        3 => vec![format!("scale_control_plane: {{ cluster: swarm, to: {} }}", (control_plane % 3) + 1)],
        _ => vec![format!("run_for: {}m", rng.random_range(1..=15))],
    }
}

/// Runs one scenario text; `Err` carries the runner's report when it failed, or the parse
/// error (a bug of the generator).
pub fn run_text(name: &str, text: &str, config: OperatorConfig) -> Result<ScenarioReport, String> {
    let scenario =
        Scenario::parse(name, text).map_err(|error| format!("generated scenario does not parse: {error}"))?;
    Ok(run_scenario_with(&scenario, None, config))
}

/// The kind of a failure, so that shrinking keeps looking at the same problem.
pub fn kind(reason: &str) -> &'static str {
    [
        "two machines",
        "machines allocated",
        "leak",
        "claimed by",
        "providerID",
        "Ready but",
        "freed",
        "not Ready",
        "not Gone",
    ]
    .into_iter()
    .find(|kind| reason.contains(kind))
    .unwrap_or("other")
}

fn failure_reason(report: &ScenarioReport) -> Option<String> {
    report
        .failure
        .as_ref()
        .map(|failure| format!("step {:?} ({}): {}", failure.step, failure.text, failure.reason))
}

/// Explores one seed: `None` when everything held.
pub fn explore_seed(seed: u64, config: OperatorConfig) -> Result<Option<Found>, String> {
    let text = scenario_text(seed);
    let name = format!("explore-seed-{seed}.yaml");
    let report = run_text(&name, &text, config)?;
    let Some(reason) = failure_reason(&report) else { return Ok(None) };
    let shrunk = shrink(&name, &text, kind(&reason), config)?;
    let fault_mix =
        text.lines().filter(|line| line.contains("fault:")).map(|line| line.trim().to_string()).collect();
    Ok(Some(Found { seed, fault_mix, reason, scenario: text, shrunk }))
}

/// The first failing seed of `first..first + runs`, if any: exploration that stops at the
/// first catch (the canary tests).
pub fn first_failure(first: u64, runs: u64, config: OperatorConfig) -> Result<Option<Found>, String> {
    for seed in first..first.saturating_add(runs) {
        if let Some(found) = explore_seed(seed, config)? {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

/// Removes steps (never the first, which creates the cluster) while the scenario still fails
/// with the same kind of failure. Bounded by [`SHRINK_RUNS_MAX`] runs.
pub fn shrink(name: &str, text: &str, kind_wanted: &str, config: OperatorConfig) -> Result<String, String> {
    let (head, steps, tail) = split_steps(text);
    let mut kept = steps;
    let mut runs = 0;
    let mut changed = true;
    while changed && runs < SHRINK_RUNS_MAX {
        changed = false;
        let mut index = kept.len();
        while index > 1 && runs < SHRINK_RUNS_MAX {
            index -= 1;
            let mut candidate = kept.clone();
            candidate.remove(index);
            let text = join_steps(&head, &candidate, &tail);
            runs += 1;
            let report = run_text(name, &text, config)?;
            if failure_reason(&report).is_some_and(|reason| kind(&reason) == kind_wanted) {
                kept = candidate;
                changed = true;
            }
        }
    }
    Ok(join_steps(&head, &kept, &tail))
}

fn split_steps(text: &str) -> (Vec<String>, Vec<String>, Vec<String>) {
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    let start = lines.iter().position(|l| l == "steps:").map_or(lines.len(), |i| i + 1);
    let end = lines[start..].iter().position(|l| !l.starts_with("  - ")).map_or(lines.len(), |i| start + i);
    (lines[..start].to_vec(), lines[start..end].to_vec(), lines[end..].to_vec())
}

fn join_steps(head: &[String], steps: &[String], tail: &[String]) -> String {
    let mut text = String::new();
    for line in head.iter().chain(steps).chain(tail) {
        text.push_str(line);
        text.push('\n');
    }
    text
}

/// Explores `runs` seeds from `first`, on `threads` threads; reports every failure. Seeds are
/// independent, so the result does not depend on the number of threads.
pub fn explore(
    first: u64,
    runs: u64,
    threads: usize,
    config: OperatorConfig,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Vec<Found>, String> {
    let threads = threads.max(1) as u64;
    let results: Vec<Result<Vec<Found>, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|lane| {
                scope.spawn(move || {
                    let mut found = Vec::new();
                    let mut seed = first + lane;
                    while seed < first + runs {
                        if let Some(failure) = explore_seed(seed, config)? {
                            found.push(failure);
                        }
                        progress(seed);
                        seed += threads;
                    }
                    Ok(found)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("an explorer thread panicked".to_string())))
            .collect()
    });
    let mut found = Vec::new();
    for result in results {
        found.extend(result?);
    }
    found.sort_by_key(|f| f.seed);
    Ok(found)
}

//! Swarm exploration: every seed writes its own scenario (a cluster, a fault mix with some
//! faults switched off entirely, a few disturbances (scaling, rolls, pauses, clusterctl move),
//! then healing, and sometimes faults again while the cluster is deleted), runs it, and requires that
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
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

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
    if rng.random_bool(0.3) {
        steps.extend(deletion_faults(&mut rng));
    }
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
    maybe(rng, 0.15, &|rng| format!("stuck_provisioning: {{ rate: {}, for: 20m }}", rate(rng, 0.3)));
    maybe(rng, 0.1, &|rng| format!("stale_metal_reads: {{ lag: {}s, for: 20m }}", rng.random_range(5..=60)));
    maybe(rng, 0.1, &|rng| format!("late_writes: {{ rate: {}, for: 20m }}", rate(rng, 0.2)));
    maybe(rng, 0.1, &|rng| format!("api_outage: {}m", rng.random_range(1..=5)));
    maybe(rng, 0.1, &|rng| format!("capacity: {{ available: {}, for: 20m }}", rng.random_range(0..=3)));
    faults
}

/// Faults that stay on while the cluster is deleted (a subset of the mix, drawn again).
fn deletion_faults(rng: &mut ChaCha8Rng) -> Vec<String> {
    let rate = |rng: &mut ChaCha8Rng, max: f64| (rng.random_range(0.01..max) * 100.0).round() / 100.0;
    let mut faults = Vec::new();
    if rng.random_bool(0.5) {
        faults.push(format!("fault: {{ error_rate: {{ rate: {}, for: 20m }} }}", rate(rng, 0.3)));
    }
    if rng.random_bool(0.5) {
        faults.push(format!("fault: {{ lost_responses: {{ rate: {}, for: 20m }} }}", rate(rng, 0.3)));
    }
    if rng.random_bool(0.3) {
        faults.push(format!(
            "fault: {{ operator_crash: {{ count: {}, within: 10m }} }}",
            rng.random_range(1..=2)
        ));
    }
    if rng.random_bool(0.3) {
        faults.push("fault: { stale_reads: { for: 10m } }".to_string());
    }
    faults
}

fn disturbance(rng: &mut ChaCha8Rng, control_plane: usize) -> Vec<String> {
    match rng.random_range(0..6) {
        0 => vec![format!("scale_workers: {{ cluster: swarm, to: {} }}", rng.random_range(0..=4))],
        1 => vec!["roll_workers: { cluster: swarm, image: debian-13.0 }".to_string()],
        2 => vec![
            "pause_cluster: { cluster: swarm }".to_string(),
            format!("run_for: {}m", rng.random_range(1..=10)),
            "unpause_cluster: { cluster: swarm }".to_string(),
        ],
        3 => vec![format!("scale_control_plane: {{ cluster: swarm, to: {} }}", (control_plane % 3) + 1)],
        // clusterctl move while the fault mix is still on (and back, on a second move).
        4 => vec!["move_cluster: { cluster: swarm }".to_string()],
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
    explore_seeds(first..first.saturating_add(runs), threads, config, &|seed, _| progress(seed))
}

/// Explores every seed of `seeds` on `threads` threads and returns the failures in seed order.
/// Threads take the next unexplored seed as they become free; seeds are independent, so the
/// result does not depend on the number of threads or on which thread ran which seed.
/// `progress` is called once per seed as it finishes (in no particular order), with its
/// failure if it failed. The first error (a generated scenario that does not parse, a
/// panicking thread) stops the other threads at their next seed.
pub fn explore_seeds(
    seeds: Range<u64>,
    threads: usize,
    config: OperatorConfig,
    progress: &(dyn Fn(u64, Option<&Found>) + Sync),
) -> Result<Vec<Found>, String> {
    let next = AtomicU64::new(seeds.start);
    let stop = AtomicBool::new(false);
    let lane = || -> Result<Vec<Found>, String> {
        let mut found = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            // Once past the end the counter stays there (no wrap-around at u64::MAX).
            let Ok(seed) = next.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |seed| {
                (seed < seeds.end).then_some(seed + 1)
            }) else {
                break;
            };
            match explore_seed(seed, config) {
                Ok(failure) => {
                    progress(seed, failure.as_ref());
                    found.extend(failure);
                }
                Err(error) => {
                    stop.store(true, Ordering::Relaxed);
                    return Err(format!("seed {seed}: {error}"));
                }
            }
        }
        Ok(found)
    };
    let results: Vec<Result<Vec<Found>, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads.max(1)).map(|_| scope.spawn(lane)).collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    stop.store(true, Ordering::Relaxed);
                    Err("an explorer thread panicked".to_string())
                })
            })
            .collect()
    });
    let mut found = Vec::new();
    for result in results {
        found.extend(result?);
    }
    found.sort_by_key(|f| f.seed);
    Ok(found)
}

/// One of `count` parts of a sweep, numbered from 1 (`capms-sim explore --shard 2/4`).
///
/// Shard `index` of `count` runs the contiguous sub-range of the sweep's seeds that
/// [`Shard::seeds`] names: the sweep is cut into `count` consecutive pieces whose lengths differ
/// by at most one, in order. The pieces cover the sweep exactly, without overlap, so every seed
/// is run by exactly one shard; and a shard's piece is itself a plain `--seed A --runs B` range,
/// so a shard's result can be rerun (or split again) without `--shard`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// 1..=count.
    index: u64,
    count: u64,
}

impl Shard {
    /// The whole sweep in one part (no `--shard`).
    pub const WHOLE: Shard = Shard { index: 1, count: 1 };

    /// Part `index` (from 1) of `count`; an error unless 1 <= index <= count.
    pub fn new(index: u64, count: u64) -> Result<Shard, String> {
        if count == 0 {
            return Err("the number of shards N in I/N must be at least 1".to_string());
        }
        if index == 0 || index > count {
            return Err(format!(
                "shard {index}/{count}: I must be between 1 and {count} (shards count from 1)"
            ));
        }
        Ok(Shard { index, count })
    }

    pub fn index(self) -> u64 {
        self.index
    }

    pub fn count(self) -> u64 {
        self.count
    }

    /// The seeds of this shard of the sweep `first..first + runs`: pieces `index - 1` and
    /// `index` of the cut points `first + k * runs / count` (rounded down), k = 0..=count. An
    /// error when the sweep does not fit in u64 seeds.
    pub fn seeds(self, first: u64, runs: u64) -> Result<Range<u64>, String> {
        let end = first
            .checked_add(runs)
            .ok_or_else(|| format!("--seed {first} --runs {runs} goes past the last seed, {}", u64::MAX))?;
        let cut = |k: u64| {
            let offset = u128::from(k) * u128::from(runs) / u128::from(self.count);
            // offset <= runs, so the sum is at most `end`.
            first + u64::try_from(offset).unwrap_or(runs)
        };
        let seeds = cut(self.index - 1)..cut(self.index);
        debug_assert!(seeds.end <= end);
        Ok(seeds)
    }
}

impl std::str::FromStr for Shard {
    type Err = String;

    /// `I/N`, e.g. `2/4`.
    fn from_str(text: &str) -> Result<Shard, String> {
        let malformed = || format!("{text:?} is not a shard I/N with whole numbers 1 <= I <= N, like 2/4");
        let (index, count) = text.split_once('/').ok_or_else(malformed)?;
        let index = index.trim().parse::<u64>().map_err(|_| malformed())?;
        let count = count.trim().parse::<u64>().map_err(|_| malformed())?;
        Shard::new(index, count)
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::{Shard, scenario_text};

    /// The swarm reaches what the explorer must cover: moves, the newer metal-api faults,
    /// outages, exhausted capacity, and faults still on while the cluster is deleted; each in
    /// some of the first 200 seeds (the range the tests explore), none in all of them.
    #[test]
    fn the_swarm_covers_moves_new_faults_and_faults_during_deletion() {
        let texts: Vec<String> = (0..200).map(scenario_text).collect();
        // Faults between the last wait for readiness and the deletion.
        let faulty_deletion = |text: &String| {
            let (before_delete, _) = text.split_once("delete_cluster").unwrap_or_default();
            let last_wait = before_delete.rsplit_once("run_until: { ready").map(|(_, rest)| rest);
            last_wait.is_some_and(|rest| rest.contains("fault: {"))
        };
        type Found<'a> = &'a dyn Fn(&String) -> bool;
        let wanted: [(&str, Found<'_>); 7] = [
            ("move_cluster", &|t| t.contains("move_cluster")),
            ("stuck_provisioning", &|t| t.contains("stuck_provisioning")),
            ("stale_metal_reads", &|t| t.contains("stale_metal_reads")),
            ("late_writes", &|t| t.contains("late_writes")),
            ("api_outage", &|t| t.contains("api_outage")),
            ("capacity", &|t| t.contains("capacity:")),
            ("faults during deletion", &faulty_deletion),
        ];
        for (what, found) in wanted {
            let seeds = texts.iter().filter(|text| found(text)).count();
            assert!(seeds > 0 && seeds < texts.len(), "{what}: in {seeds} of {} seeds", texts.len());
        }
    }

    /// The shards of a sweep cover it exactly, in order, without overlap, with sizes that
    /// differ by at most one.
    #[test]
    fn shards_partition_the_sweep() {
        let firsts = [0, 1, 200, 7_777_777, u64::MAX - 10_000];
        let runs = [0, 1, 2, 3, 5, 7, 10, 99, 100, 101, 1000, 5000, 10_000];
        for first in firsts {
            for runs in runs {
                for count in 1..=12 {
                    let mut covered = first;
                    let mut sizes = Vec::new();
                    for index in 1..=count {
                        let shard = Shard::new(index, count).expect("valid shard");
                        let seeds = shard.seeds(first, runs).expect("fits");
                        assert_eq!(
                            seeds.start, covered,
                            "shard {shard} of {first}+{runs} leaves a gap or overlaps"
                        );
                        assert!(seeds.start <= seeds.end);
                        covered = seeds.end;
                        sizes.push(seeds.end - seeds.start);
                    }
                    assert_eq!(
                        covered,
                        first + runs,
                        "{count} shards of {first}+{runs} do not reach the end"
                    );
                    let (min, max) = (sizes.iter().min().unwrap_or(&0), sizes.iter().max().unwrap_or(&0));
                    assert!(max - min <= 1, "{count} shards of {runs}: sizes {sizes:?}");
                }
            }
        }
    }

    /// The same, seed by seed: every seed of the sweep is in exactly one shard.
    #[test]
    fn every_seed_is_in_exactly_one_shard() {
        let (first, runs) = (1_000_003, 257);
        for count in [1, 2, 3, 4, 16, 256, 257, 258, 1000] {
            let shards: Vec<_> = (1..=count)
                .map(|index| Shard::new(index, count).and_then(|s| s.seeds(first, runs)).expect("valid"))
                .collect();
            for seed in first..first + runs {
                let owners = shards.iter().filter(|seeds| seeds.contains(&seed)).count();
                assert_eq!(owners, 1, "seed {seed} is in {owners} of {count} shards");
            }
            let total: u64 = shards.iter().map(|seeds| seeds.end - seeds.start).sum();
            assert_eq!(total, runs);
        }
    }

    #[test]
    fn the_whole_sweep_is_one_shard() {
        assert_eq!(Shard::WHOLE.seeds(1000, 2000), Ok(1000..3000));
        assert_eq!("1/1".parse::<Shard>(), Ok(Shard::WHOLE));
        assert_eq!("2/4".parse::<Shard>().map(|s| s.seeds(0, 10)), Ok(Ok(2..5)));
        assert_eq!("4/4".parse::<Shard>().map(|s| s.seeds(0, 10)), Ok(Ok(7..10)));
        assert_eq!(Shard::new(3, 3).map(|s| s.to_string()), Ok("3/3".to_string()));
    }

    #[test]
    fn bad_shards_are_errors() {
        for text in [
            "0/3",
            "4/3",
            "x/y",
            "1/0",
            "0/0",
            "3",
            "",
            "/",
            "1/",
            "/3",
            "-1/3",
            "1/3/5",
            "1.5/3",
            "2/18446744073709551616",
        ] {
            let parsed = text.parse::<Shard>();
            assert!(parsed.is_err(), "{text:?} parsed as {parsed:?}");
        }
        assert!(Shard::new(4, 3).is_err_and(|e| e.contains("between 1 and 3")));
        assert!(Shard::new(1, 0).is_err_and(|e| e.contains("at least 1")));
    }

    #[test]
    fn a_sweep_past_the_last_seed_is_an_error() {
        assert!(Shard::WHOLE.seeds(u64::MAX, 1).is_err());
        assert!(Shard::WHOLE.seeds(u64::MAX - 1, 2).is_err());
        assert_eq!(Shard::WHOLE.seeds(u64::MAX - 1, 1), Ok(u64::MAX - 1..u64::MAX));
        assert_eq!(Shard::new(2, 2).and_then(|s| s.seeds(u64::MAX - 4, 4)), Ok(u64::MAX - 2..u64::MAX));
    }
}

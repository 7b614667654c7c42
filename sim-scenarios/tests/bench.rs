//! `capms-sim bench` in miniature: one cluster, one run. Only structural facts are asserted,
//! never timings: every machine becomes ready under both policies, capms reads less than the
//! baseline, every figure is finite, and everything but the wall time follows from the seed.

use capms_core::Operation;
use capms_sim_scenarios::bench::{self, BenchOptions, PolicyFigures, Report};
use std::time::Duration;

fn tiny(seed: u64) -> Report {
    let options = BenchOptions { clusters: 1, runs: 1, seed };
    // A fake clock: each reading is a millisecond later than the one before.
    let mut now = Duration::ZERO;
    let mut clock = || {
        now += Duration::from_millis(1);
        now
    };
    let mut lines = Vec::new();
    let report = bench::run(&options, &mut clock, &mut |line: &str| lines.push(line.to_string()))
        .expect("both worlds create, ready and delete their cluster");
    assert_eq!(lines.len(), 2, "one progress line per world: {lines:?}");
    report
}

fn assert_sound(figures: &PolicyFigures) {
    let name = figures.policy.name;
    assert_eq!(figures.runs, 1, "{name}");
    assert_eq!(figures.machines, 6, "{name}: a 3+3 cluster");
    assert_eq!(figures.ready_machines, figures.machines, "{name}: every machine became ready");
    assert!(figures.leaks.is_empty(), "{name} leaked {:?}", figures.leaks);
    assert!(figures.violations.is_empty(), "{name} violated {:?}", figures.violations);
    assert!(figures.passed(), "{name}");
    for (what, value) in [
        ("cluster lifecycles per second", figures.cluster_lifecycles_per_second()),
        ("machine lifecycles per second", figures.machine_lifecycles_per_second()),
        ("calls per machine", figures.calls_per_machine()),
        ("reads until ready per cluster", figures.reads_until_ready_per_cluster()),
        ("Phoned Home → Ready mean", figures.ready_delay_mean().as_secs_f64()),
        ("Phoned Home → Ready max", figures.ready_delay_max.as_secs_f64()),
        ("create → all ready", figures.time_to_ready_mean().as_secs_f64()),
    ] {
        assert!(value.is_finite() && value >= 0.0, "{name}: {what} is {value}");
    }
    assert!(figures.calls_per_machine() > 0.0, "{name} made no metal-api calls");
    assert!(figures.ready_delay_max >= figures.ready_delay_mean(), "{name}");
    // Each machine is allocated and freed exactly once in a fault-free world.
    assert_eq!(figures.calls.get(&Operation::AllocateMachine), Some(&6), "{name}");
    assert_eq!(figures.calls.get(&Operation::FreeMachine), Some(&6), "{name}");
}

#[test]
fn a_tiny_bench_shows_capms_reading_less_than_the_baseline() {
    let report = tiny(0);
    assert_eq!(report.capms.policy.name, "capms");
    assert_eq!(report.baseline.policy.name, "baseline");
    assert_sound(&report.capms);
    assert_sound(&report.baseline);
    assert!(report.passed());
    assert!(
        report.capms.reads_until_ready < report.baseline.reads_until_ready,
        "capms read {} times until ready, the baseline {}",
        report.capms.reads_until_ready,
        report.baseline.reads_until_ready
    );
    assert!(report.capms.calls_per_machine() < report.baseline.calls_per_machine());
    let text = report.to_string();
    for figure in
        ["lifecycles per second", "calls per machine", "read calls until ready", "Phoned Home → Ready"]
    {
        assert!(text.contains(figure), "the report lacks {figure:?}:\n{text}");
    }
    assert!(!text.contains("NaN") && !text.contains("inf"), "{text}");
}

#[test]
fn the_figures_follow_from_the_seed() {
    let (first, second) = (tiny(3), tiny(3));
    for (a, b) in [(&first.capms, &second.capms), (&first.baseline, &second.baseline)] {
        assert_eq!(a.calls, b.calls);
        assert_eq!(a.reads_until_ready, b.reads_until_ready);
        assert_eq!(a.ready_delay_total, b.ready_delay_total);
        assert_eq!(a.time_to_ready_total, b.time_to_ready_total);
    }
}

#[test]
fn nonsense_options_are_refused() {
    let mut clock = || Duration::ZERO;
    for options in [
        BenchOptions { clusters: 0, runs: 1, seed: 0 },
        BenchOptions { clusters: 1, runs: 0, seed: 0 },
        BenchOptions { clusters: bench::CLUSTERS_MAX + 1, runs: 1, seed: 0 },
    ] {
        assert!(bench::run(&options, &mut clock, &mut |_| {}).is_err(), "{options:?}");
    }
}

//! `capms-sim`: the capms world simulator on the command line.

use capms_sim_scenarios::demo;
use capms_sim_scenarios::scenario::{Scenario, run_scenario};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "capms-sim",
    version,
    about = "Simulate capms, Cluster API and metal-stack, deterministically"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create, scale, heal and delete a cluster in a simulated datacenter, with progress and a
    /// summary. Exits non-zero if anything leaked or a safety check failed.
    Demo {
        /// Seed of the world (the same seed gives the same run).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Print only the summary.
        #[arg(long)]
        quiet: bool,
    },
    /// Run a scenario file (see sim-scenarios/scenarios/README.md). Exits 0 when every step
    /// and expectation holds; otherwise prints the failed step, the seed and the command that
    /// reproduces the run, and exits 1. A file that is not a valid scenario exits 2.
    Run {
        /// The scenario file (YAML).
        file: PathBuf,
        /// Seed of the world; overrides the file's `seed`.
        #[arg(long)]
        seed: Option<u64>,
        /// On failure, also print the datacenter's whole event log.
        #[arg(long)]
        log: bool,
    },
    /// Swarm exploration: each seed generates its own scenario (cluster, fault mix, disturbances,
    /// healing, deletion) and must converge without leaks, duplicates or safety violations.
    /// Failures print the seed, the fault mix, the shrunk scenario and how to reproduce it.
    Explore {
        /// How many seeds to run.
        #[arg(long, default_value_t = 100)]
        runs: u64,
        /// The first seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Worker threads (results do not depend on it).
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Write each shrunk failing scenario to DIR/explore-seed-<seed>.yaml.
        #[arg(long, value_name = "DIR")]
        save: Option<PathBuf>,
        /// Run the deliberately broken machine reconciler (allocation without adoption) to
        /// check that exploration catches it.
        #[arg(long, hide = true)]
        canary: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Demo { seed, quiet } => run_demo(seed, quiet),
        Command::Run { file, seed, log } => run_file(&file, seed, log),
        Command::Explore { runs, seed, threads, save, canary } => {
            run_explore(seed, runs, threads, save, canary)
        }
    }
}

// The demo reports how long it took on the wall clock; the simulation itself never reads it.
#[allow(clippy::disallowed_methods, clippy::print_stdout, reason = "a command-line report of a finished run")]
fn run_demo(seed: u64, quiet: bool) -> ExitCode {
    let started = std::time::Instant::now();
    let mut progress = |line: &str| {
        if !quiet {
            println!("{line}");
        }
    };
    let report = match demo::run(seed, &mut progress) {
        Ok(report) => report,
        Err(error) => {
            eprintln!("demo failed: {error}");
            eprintln!(
                "reproduce with: cargo run -p capms-sim-scenarios --bin capms-sim -- demo --seed {seed}"
            );
            return ExitCode::FAILURE;
        }
    };
    let wall = started.elapsed();
    println!();
    println!("summary (seed {})", report.seed);
    println!(
        "  virtual time:       {}s (create to all ready: {}s)",
        report.virtual_time.as_secs(),
        report.time_to_ready.as_secs()
    );
    println!("  wall time:          {:.2}s", wall.as_secs_f64());
    println!("  metal-api calls:    {}", report.calls.values().sum::<u64>());
    for (operation, count) in &report.calls {
        println!("    {:<20} {count}", operation.operation_id());
    }
    println!("  reconciles:         {}", report.reconciles);
    println!("  invariants checked: {} times", report.checks);
    println!(
        "  leaks:              {}",
        if report.leaks.is_empty() { "none".to_string() } else { report.leaks.join(", ") }
    );
    println!(
        "  violations:         {}",
        if report.violations.is_empty() { "none".to_string() } else { report.violations.join("; ") }
    );
    println!("  trace:              {}", report.trace_hash);
    if report.passed() {
        ExitCode::SUCCESS
    } else {
        eprintln!("reproduce with: cargo run -p capms-sim-scenarios --bin capms-sim -- demo --seed {seed}");
        ExitCode::FAILURE
    }
}

// Reports how long the run took on the wall clock; the simulation itself never reads it.
#[allow(clippy::disallowed_methods, clippy::print_stdout, reason = "a command-line report of a finished run")]
fn run_file(file: &std::path::Path, seed: Option<u64>, log: bool) -> ExitCode {
    let scenario = match Scenario::load(file) {
        Ok(scenario) => scenario,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::from(2);
        }
    };
    let started = std::time::Instant::now();
    let report = run_scenario(&scenario, seed);
    let wall = started.elapsed();
    if report.passed() {
        println!("{report} ({:.2}s wall)", wall.as_secs_f64());
        ExitCode::SUCCESS
    } else {
        eprintln!("{report}");
        if log {
            eprintln!("datacenter event log:");
            for line in &report.event_log {
                eprintln!("    {line}");
            }
        }
        ExitCode::FAILURE
    }
}

// Exploration reports its wall time and progress; the simulation itself never reads the clock.
#[allow(clippy::disallowed_methods, clippy::print_stdout, reason = "a command-line report of finished runs")]
fn run_explore(first: u64, runs: u64, threads: usize, save: Option<PathBuf>, canary: bool) -> ExitCode {
    use capms_core::reconcile::machine::Variant;
    use capms_sim_scenarios::explore;
    use capms_sim_scenarios::operator::OperatorConfig;
    use std::sync::atomic::{AtomicU64, Ordering};
    let variant = if canary { Variant::CanaryWithoutAdoption } else { Variant::Correct };
    let config = OperatorConfig { variant, ..OperatorConfig::default() };
    let started = std::time::Instant::now();
    let done = AtomicU64::new(0);
    let progress = |_seed: u64| {
        let finished = done.fetch_add(1, Ordering::Relaxed) + 1;
        if finished.is_multiple_of(100) || finished == runs {
            println!("explored {finished}/{runs} seeds ({:.0}s)", started.elapsed().as_secs_f64());
        }
    };
    let found = match explore::explore(first, runs, threads, config, &progress) {
        Ok(found) => found,
        Err(error) => {
            eprintln!("explore: {error}");
            return ExitCode::from(2);
        }
    };
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "{runs} seeds from {first} in {elapsed:.1}s ({:.1} lifecycles per second), {} failed",
        runs as f64 / elapsed.max(1e-9),
        found.len()
    );
    for failure in &found {
        println!();
        println!("seed {} failed: {}", failure.seed, failure.reason);
        println!(
            "  fault mix: {}",
            if failure.fault_mix.is_empty() { "none".to_string() } else { failure.fault_mix.join("; ") }
        );
        println!(
            "  reproduce: cargo run -p capms-sim-scenarios --bin capms-sim -- explore --seed {} --runs 1",
            failure.seed
        );
        match &save {
            Some(dir) => {
                let path = dir.join(format!("explore-seed-{}.yaml", failure.seed));
                match std::fs::create_dir_all(dir).and_then(|_| std::fs::write(&path, &failure.shrunk)) {
                    Ok(()) => println!(
                        "  shrunk scenario: {} (cargo run -p capms-sim-scenarios --bin capms-sim -- run {})",
                        path.display(),
                        path.display()
                    ),
                    Err(error) => eprintln!("  cannot write {}: {error}", path.display()),
                }
            }
            None => println!("  shrunk scenario:\n{}", failure.shrunk),
        }
    }
    if found.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

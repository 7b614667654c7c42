//! `capms-sim`: the capms world simulator on the command line.

use capms_backend_sim::http::ServerClock;
use capms_sim_scenarios::scenario::{Scenario, run_scenario};
use capms_sim_scenarios::serve::ServeOptions;
use capms_sim_scenarios::{demo, explore};
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

mod progress;

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
        /// Also write a self-contained HTML picture of the run to FILE (machine phases,
        /// faults, steps, metal-api call rate, checks), even when the demo fails.
        #[arg(long, value_name = "FILE")]
        report: Option<PathBuf>,
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
        /// Also write a self-contained HTML picture of the run to FILE (machine phases,
        /// faults, steps, metal-api call rate, checks), whether it passes or fails.
        #[arg(long, value_name = "FILE")]
        report: Option<PathBuf>,
        /// Also write a trace of every reconcile to PATH (docs/traces.md), for `replay`.
        #[arg(long, value_name = "PATH", conflicts_with = "report")]
        record: Option<PathBuf>,
    },
    /// Swarm exploration: each seed generates its own scenario (cluster, fault mix, disturbances,
    /// healing, deletion) and must converge without leaks, duplicates or safety violations.
    /// Failures print the seed, the fault mix, the shrunk scenario and how to reproduce it.
    /// Progress on stderr (a bar on a terminal, otherwise a line per tenth of the sweep and at
    /// least once a minute), the summary on stdout.
    Explore {
        /// How many seeds the whole sweep has (all shards together).
        #[arg(long, default_value_t = 100)]
        runs: u64,
        /// The first seed of the sweep.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Run only part I of N of the sweep (I from 1): the I-th of N consecutive pieces of
        /// [SEED, SEED+RUNS), sizes differing by at most one. Shards 1/N to N/N together run
        /// every seed exactly once, so a sweep splits across processes or machines.
        #[arg(long, value_name = "I/N", default_value = "1/1")]
        shard: explore::Shard,
        /// Worker threads (results do not depend on it); default: one per CPU.
        #[arg(long)]
        threads: Option<usize>,
        /// Write each shrunk failing scenario to DIR/explore-seed-<seed>.yaml.
        #[arg(long, value_name = "DIR")]
        save: Option<PathBuf>,
        /// Run the deliberately broken machine reconciler (allocation without adoption) to
        /// check that exploration catches it.
        #[arg(long, hide = true)]
        canary: bool,
    },
    /// Serve a simulated metal-api over HTTP, in real time: a drop-in for mini-lab's metal-api
    /// (same partition, size, images, networks, project and HMAC keys) for capms-manager,
    /// metal-python, metalctl or curl. Stops on Ctrl-C or SIGTERM.
    Serve(ServeArgs),
    /// Replay a trace (`run --record`, `capms-manager --record-trace`): run the reconcilers
    /// again on the recorded inputs against the recorded answers. Exits 0 when every reconcile
    /// did exactly what was recorded, 1 at the first divergence (printed with its context), 2
    /// when the trace cannot be read.
    Replay {
        /// The trace file (JSON lines).
        trace: PathBuf,
        /// Instead of replaying, write a scenario file derived from the trace (the datacenter,
        /// clusters, steps and faults as observed).
        #[arg(long, value_name = "OUT.yaml")]
        to_scenario: Option<PathBuf>,
        /// With --to-scenario: remove steps that are not needed to reproduce the failure.
        #[arg(long, requires = "to_scenario")]
        shrink: bool,
        /// Replay with the deliberately broken machine reconciler (tests of divergence
        /// reports); default: the one the trace names.
        #[arg(long, hide = true, value_parser = ["correct", "canary"])]
        variant: Option<String>,
    },
    /// Benchmark capms's refresh policy against the Go provider's (a GET per machine every
    /// 30 s): lifecycles per second of the simulation, metal-api calls per machine, reads until
    /// ready and Phoned Home → Ready, side by side. Progress on stderr, the report on stdout.
    Bench {
        /// Clusters of 3+3 machines created together in each world (1 to 60).
        #[arg(long, default_value_t = 4)]
        clusters: usize,
        /// Worlds per policy; run i uses seed SEED + i.
        #[arg(long, default_value_t = 10)]
        runs: u64,
        /// The first seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// Address and port to listen on (port 0 picks a free port; the start-up line names it).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Seed of the datacenter (machine ids, IP addresses, provisioning jitter).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Path prefix in front of /v1 (mini-lab serves /metal/v1/...); "" for none.
    #[arg(long, default_value = "/metal")]
    base_path: String,
    /// HMAC key of the Metal-View type (read-only).
    #[arg(long, env = "CAPMS_SIM_HMAC_VIEW_KEY", default_value = "metal-view", hide_env_values = true)]
    hmac_view_key: String,
    /// HMAC key of the Metal-Edit type (allocate and free).
    #[arg(long, env = "CAPMS_SIM_HMAC_EDIT_KEY", default_value = "metal-edit", hide_env_values = true)]
    hmac_edit_key: String,
    /// HMAC key of the Metal-Admin type.
    #[arg(long, env = "CAPMS_SIM_HMAC_ADMIN_KEY", default_value = "metal-admin", hide_env_values = true)]
    hmac_admin_key: String,
    /// A bearer token accepted with admin rights ("Authorization: Bearer <token>"); without
    /// it, bearer tokens are rejected.
    #[arg(long, env = "CAPMS_SIM_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Time from allocation to Phoned Home, e.g. 2s, 90s, 5m.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    provisioning: Duration,
    /// Run the datacenter's clock this many times faster than the wall clock.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    speedup: u32,
    /// Machines of size v1-small-x86 in partition mini-lab.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    machines: u32,
    /// Also answer test-only control requests, unauthenticated, beside metal-api's API:
    /// `POST /capms-sim/v1/machine/{id}/kill?silent-for=SECONDS` kills a machine as if it had
    /// gone silent SECONDS ago (300 or more: metal-api reports it Unknown at once). For test
    /// harnesses only.
    #[arg(long)]
    control: bool,
}

impl ServeArgs {
    fn options(self) -> ServeOptions {
        let mut options = ServeOptions {
            seed: self.seed,
            machines: self.machines as usize,
            provisioning: self.provisioning,
            ..ServeOptions::default()
        };
        options.server.base_path = self.base_path;
        options.server.view_key = self.hmac_view_key;
        options.server.edit_key = self.hmac_edit_key;
        options.server.admin_key = self.hmac_admin_key;
        options.server.token = self.token;
        options.server.clock = ServerClock::WallClock { speedup: self.speedup };
        options.server.control = self.control;
        options
    }
}

/// Parses "2s", "5m", "1h 30m" or ISO 8601 ("PT2S") into a non-negative duration.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let parsed: jiff::SignedDuration =
        text.parse().map_err(|error| format!("{text:?} is not a duration like 2s, 90s or 5m: {error}"))?;
    Duration::try_from(parsed).map_err(|_| format!("{text:?} is negative"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Demo { seed, quiet, report } => run_demo(seed, quiet, report.as_deref()),
        Command::Run { file, seed, log, record: Some(trace), .. } => {
            capms_sim_scenarios::replay::run_recorded(&file, seed, log, &trace)
        }
        Command::Run { file, seed, log, report, record: None } => {
            run_file(&file, seed, log, report.as_deref())
        }
        Command::Explore { runs, seed, shard, threads, save, canary } => {
            let threads = threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, std::num::NonZero::get))
                .max(1);
            run_explore(seed, runs, shard, threads, save, canary)
        }
        Command::Serve(args) => run_serve(args.listen, args.options()),
        Command::Replay { trace, to_scenario, shrink, variant } => capms_sim_scenarios::replay::cli(
            &trace,
            &capms_sim_scenarios::replay::ReplayOptions::new(to_scenario, shrink, variant.as_deref()),
        ),
        Command::Bench { clusters, runs, seed } => {
            capms_sim_scenarios::bench::cli(capms_sim_scenarios::bench::BenchOptions { clusters, runs, seed })
        }
    }
}

#[allow(clippy::print_stdout, reason = "the start-up line of a command-line server")]
fn run_serve(listen: SocketAddr, options: ServeOptions) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("serve: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(listen).await {
            Ok(listener) => listener,
            Err(error) => {
                eprintln!("serve: cannot listen on {listen}: {error}");
                return ExitCode::FAILURE;
            }
        };
        let address = listener.local_addr().unwrap_or(listen);
        println!("{}", options.describe(address));
        let sim = options.build_sim();
        match capms_sim_scenarios::serve::serve(listener, sim, &options, shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("serve: {error}");
                ExitCode::FAILURE
            }
        }
    })
}

/// Completes on Ctrl-C or SIGTERM (the signal a container runtime sends).
async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
}

// The demo reports how long it took on the wall clock; the simulation itself never reads it.
#[allow(clippy::disallowed_methods, clippy::print_stdout, reason = "a command-line report of a finished run")]
fn run_demo(seed: u64, quiet: bool, html: Option<&std::path::Path>) -> ExitCode {
    let started = std::time::Instant::now();
    let mut progress = |line: &str| {
        if !quiet {
            println!("{line}");
        }
    };
    let result = match html {
        Some(path) => {
            let (result, record) = demo::run_recorded(seed, &mut progress);
            if let Err(code) = write_report(path, &record) {
                return code;
            }
            result
        }
        None => demo::run(seed, &mut progress),
    };
    let report = match result {
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
fn run_file(
    file: &std::path::Path,
    seed: Option<u64>,
    log: bool,
    html: Option<&std::path::Path>,
) -> ExitCode {
    let scenario = match Scenario::load(file) {
        Ok(scenario) => scenario,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::from(2);
        }
    };
    let started = std::time::Instant::now();
    let report = match html {
        Some(path) => {
            let config = capms_sim_scenarios::operator::OperatorConfig::default();
            let (report, record) = capms_sim_scenarios::report::record_scenario(&scenario, seed, config);
            if let Err(code) = write_report(path, &record) {
                return code;
            }
            report
        }
        None => run_scenario(&scenario, seed),
    };
    let wall = started.elapsed();
    if report.passed() {
        println!("{report} ({:.2}s wall)", wall.as_secs_f64());
        ExitCode::SUCCESS
    } else {
        eprintln!("{}", report.with_event_log(log));
        ExitCode::FAILURE
    }
}

/// Writes the HTML report of a run (`--report FILE`); a report that cannot be written fails
/// the command.
#[allow(clippy::print_stdout, reason = "a command-line report of a finished run")]
fn write_report(
    path: &std::path::Path,
    record: &capms_sim_scenarios::report::RunRecord,
) -> Result<(), ExitCode> {
    match std::fs::write(path, capms_sim_scenarios::report::render_html(record)) {
        Ok(()) => {
            println!("report: {}", path.display());
            Ok(())
        }
        Err(error) => {
            eprintln!("cannot write the report to {}: {error}", path.display());
            Err(ExitCode::FAILURE)
        }
    }
}

// Exploration reports its wall time; the simulation itself never reads the clock.
#[allow(clippy::print_stdout, reason = "a command-line report of finished runs")]
fn run_explore(
    first: u64,
    runs: u64,
    shard: explore::Shard,
    threads: usize,
    save: Option<PathBuf>,
    canary: bool,
) -> ExitCode {
    use capms_core::reconcile::machine::Variant;
    use capms_sim_scenarios::operator::OperatorConfig;
    let variant = if canary { Variant::CanaryWithoutAdoption } else { Variant::Correct };
    let config = OperatorConfig { variant, ..OperatorConfig::default() };
    let seeds = match shard.seeds(first, runs) {
        Ok(seeds) => seeds,
        Err(error) => {
            eprintln!("explore: {error}");
            return ExitCode::from(2);
        }
    };
    let count = seeds.end - seeds.start;
    let progress = progress::Progress::start(count);
    let found = explore::explore_seeds(seeds.clone(), threads, config, &|seed, failure| {
        progress.seed_done(seed, failure);
    });
    progress.finish();
    let found = match found {
        Ok(found) => found,
        Err(error) => {
            eprintln!("explore: {error}");
            return ExitCode::from(2);
        }
    };
    let elapsed = progress.elapsed().as_secs_f64();
    // One line to paste into docs/benchmarks.md: which seeds, how many failed, how fast.
    println!(
        "explore shard {shard} (seeds {} of {}): {count} runs, {} failed, {elapsed:.1} s wall, {:.1} runs/s, {threads} thread{}",
        seed_range(seeds),
        seed_range(first..first + runs),
        found.len(),
        count as f64 / elapsed.max(1e-9),
        if threads == 1 { "" } else { "s" },
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

/// `1000..=2999` (inclusive, as the seeds a reader would list), or `none`.
fn seed_range(seeds: std::ops::Range<u64>) -> String {
    if seeds.is_empty() { "none".to_string() } else { format!("{}..={}", seeds.start, seeds.end - 1) }
}

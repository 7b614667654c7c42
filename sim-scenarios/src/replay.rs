//! Traces of runs and their replay: `capms-sim run FILE --record PATH` writes a trace of every
//! reconcile (see `docs/traces.md`), `capms-sim replay TRACE` runs the core reconcilers again
//! on the recorded inputs against the recorded answers and reports the first divergence, and
//! `capms-sim replay TRACE --to-scenario OUT.yaml` turns a trace into a scenario file.
//!
//! Replay needs no world: every reconcile is replayed on its own, because everything it read
//! (inputs, metal-api answers, the shared machine cache's answers) is in its record. The same
//! code replays traces of `capms-manager --record-trace`.

pub mod to_scenario;

use crate::operator::OperatorConfig;
use crate::scenario::{Scenario, ScenarioReport, ScenarioRun};
use capms_core::reconcile::machine::Variant;
use capms_core::trace::{self, Divergence, Header, Record, Trace, TraceError, TraceSink};
use std::fmt;
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

/// Collects the records of a run in memory, numbered in the order they finish.
#[derive(Debug, Default)]
pub struct TraceBuffer {
    records: Mutex<Vec<Record>>,
}

impl TraceSink for TraceBuffer {
    fn write(&self, mut record: Record) {
        let mut records = self.lock();
        record.sequence = records.len() as u64 + 1;
        records.push(record);
    }
}

impl TraceBuffer {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Record>> {
        // Records are only appended; a panic elsewhere leaves them whole.
        self.records.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The trace so far as JSON lines, header first.
    pub fn text(&self, header: &Header) -> Result<String, TraceError> {
        let mut text = trace::header_line(header)?;
        text.push('\n');
        for record in self.lock().iter() {
            text.push_str(&record.to_line()?);
            text.push('\n');
        }
        Ok(text)
    }
}

/// Runs `scenario` as [`crate::scenario::run_scenario_with`] does, recording every reconcile;
/// returns the report and the trace text.
pub fn record_scenario(
    scenario: &Scenario,
    seed_override: Option<u64>,
    config: OperatorConfig,
) -> Result<(ScenarioReport, String), TraceError> {
    let buffer = Arc::new(TraceBuffer::default());
    let mut run = ScenarioRun::with_config(scenario, seed_override, config);
    let seed = run.seed;
    run.world.record_trace(buffer.clone());
    let (report, _) = run.play(scenario);
    let source = format!("capms-sim run {} --seed {seed}{}", scenario.file, variant_note(config.variant));
    let text = buffer.text(&Header::new(source))?;
    Ok((report, text))
}

/// Marks the header of a trace recorded with the test-only canary reconciler, so that its
/// replay and its derived scenario use the reconciler that produced it.
const CANARY_NOTE: &str = " (canary machine reconciler)";

fn variant_note(variant: Variant) -> &'static str {
    match variant {
        Variant::Correct => "",
        Variant::CanaryWithoutAdoption | Variant::CanaryGlueLosesStatus | Variant::CanaryUngated => {
            CANARY_NOTE
        }
    }
}

/// The machine reconciler a trace was recorded with, as its header says (traces of
/// `capms-manager` and of `capms-sim run` use the correct one).
pub fn recorded_variant(header: &Header) -> Variant {
    if header.source.ends_with(CANARY_NOTE) { Variant::CanaryWithoutAdoption } else { Variant::Correct }
}

/// What a faithful replay did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub machines: usize,
    pub clusters: usize,
    pub firewalls: usize,
    pub backend_calls: usize,
    pub cache_calls: usize,
}

impl Summary {
    pub fn reconciles(&self) -> usize {
        self.machines + self.clusters + self.firewalls
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} reconciles ({} machine, {} cluster, {} firewall), {} metal-api calls and {} machine cache answers replayed, no divergence",
            self.reconciles(),
            self.machines,
            self.clusters,
            self.firewalls,
            self.backend_calls,
            self.cache_calls
        )
    }
}

/// Why a replay did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayError {
    /// The trace could not be read.
    Invalid(TraceError),
    /// A reconcile did something else than recorded.
    Diverged(Box<Divergence>),
}

impl fmt::Display for ReplayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplayError::Invalid(error) => write!(f, "not a valid trace: {error}"),
            ReplayError::Diverged(divergence) => write!(f, "{divergence}"),
        }
    }
}

/// Replays every record of `trace` in order; stops at the first divergence.
pub fn replay_trace(trace: &Trace, variant: Variant) -> Result<Summary, Box<Divergence>> {
    let mut summary = Summary::default();
    for record in &trace.records {
        let replayed = futures::executor::block_on(trace::replay(record, variant)).map_err(Box::new)?;
        summary.backend_calls += replayed.backend_calls;
        summary.cache_calls += replayed.cache_calls;
        match &record.input {
            trace::Input::Machine(_) => summary.machines += 1,
            trace::Input::Cluster(_) => summary.clusters += 1,
            trace::Input::Firewall(_) => summary.firewalls += 1,
        }
    }
    Ok(summary)
}

/// Parses and replays a trace text.
pub fn replay_text(text: &str, variant: Variant) -> Result<Summary, ReplayError> {
    let trace = trace::parse_trace(text).map_err(ReplayError::Invalid)?;
    replay_trace(&trace, variant).map_err(ReplayError::Diverged)
}

/// Options of `capms-sim replay`.
#[derive(Debug, Clone, Default)]
pub struct ReplayOptions {
    /// Write a scenario file derived from the trace instead of replaying.
    pub to_scenario: Option<std::path::PathBuf>,
    /// With `to_scenario`: remove steps not needed to reproduce the failure.
    pub shrink: bool,
    /// The machine reconciler to replay with (only tests and the hidden flag pick a canary);
    /// `None`: the one the trace's header names ([`recorded_variant`]).
    pub variant: Option<Variant>,
}

/// `capms-sim replay`: exit 0 faithful (or scenario written), 1 divergence, 2 unreadable or
/// invalid trace.
#[allow(clippy::print_stdout, reason = "the command-line report of a replay")]
pub fn cli(path: &Path, options: &ReplayOptions) -> ExitCode {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) => {
            eprintln!("replay: cannot read {}: {error}", path.display());
            return ExitCode::from(2);
        }
    };
    if let Some(out) = &options.to_scenario {
        return write_scenario(path, &text, out, options);
    }
    let trace = match trace::parse_trace(&text) {
        Ok(trace) => trace,
        Err(error) => {
            eprintln!("replay: {} is not a valid capms trace: {error}", path.display());
            return ExitCode::from(2);
        }
    };
    let variant = options.variant.unwrap_or_else(|| recorded_variant(&trace.header));
    match replay_trace(&trace, variant) {
        Ok(summary) => {
            println!("{}: {summary}", path.display());
            ExitCode::SUCCESS
        }
        Err(divergence) => {
            eprintln!("{}: {divergence}", path.display());
            ExitCode::FAILURE
        }
    }
}

/// `--to-scenario`: 0 written (and, when the trace shows a failure, reproducing it), 1 the trace
/// shows a failure that no seed tried reproduces (the derived scenario is written anyway), 2
/// the trace cannot be read or the file cannot be written.
#[allow(clippy::print_stdout, reason = "the command-line report of a replay")]
fn write_scenario(path: &Path, text: &str, out: &Path, options: &ReplayOptions) -> ExitCode {
    let trace = match trace::parse_trace(text) {
        Ok(trace) => trace,
        Err(error) => {
            eprintln!("replay: {} is not a valid capms trace: {error}", path.display());
            return ExitCode::from(2);
        }
    };
    let name = out.file_name().map_or_else(|| "trace.yaml".to_string(), |n| n.to_string_lossy().into_owned());
    let variant = options.variant.unwrap_or_else(|| recorded_variant(&trace.header));
    let config = OperatorConfig { variant, ..OperatorConfig::default() };
    let derived = match to_scenario::derive_reproducing(&trace, &path.display().to_string(), config, None) {
        Ok(derived) => derived,
        Err(error) => {
            eprintln!("replay: cannot derive a scenario from {}: {error}", path.display());
            return ExitCode::from(2);
        }
    };
    let mut scenario = derived.text.clone();
    match (&derived.failure, &derived.reproduction) {
        (Some(failure), Some(reproduction)) => {
            println!(
                "the trace shows: {}\nreproduced with seed {} (after {} runs): {}",
                failure.description, reproduction.seed, derived.runs, reproduction.reason
            );
            if options.shrink {
                match to_scenario::shrink(&name, &scenario, config) {
                    Ok(shrunk) => scenario = shrunk,
                    Err(error) => {
                        eprintln!("replay: {error}");
                        return ExitCode::from(2);
                    }
                }
            }
        }
        (Some(failure), None) => eprintln!(
            "replay: the trace shows: {}\nbut none of the {} seeds tried reproduces it with the derived scenario; writing it anyway (not shrunk)",
            failure.description, derived.runs
        ),
        (None, _) if options.shrink => {
            eprintln!(
                "replay: the trace shows no failure: nothing to shrink, writing the scenario as derived"
            );
        }
        (None, _) => {}
    }
    if let Err(error) = std::fs::write(out, scenario) {
        eprintln!("replay: cannot write {}: {error}", out.display());
        return ExitCode::from(2);
    }
    println!(
        "scenario: {} (cargo run -p capms-sim-scenarios --bin capms-sim -- run {})",
        out.display(),
        out.display()
    );
    if derived.unreproduced() { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

impl ReplayOptions {
    /// Options from the command line; `variant` is `correct`, `canary` or not given (the one
    /// the trace names).
    pub fn new(to_scenario: Option<std::path::PathBuf>, shrink: bool, variant: Option<&str>) -> Self {
        let variant =
            variant.map(
                |variant| {
                    if variant == "canary" { Variant::CanaryWithoutAdoption } else { Variant::Correct }
                },
            );
        ReplayOptions { to_scenario, shrink, variant }
    }
}

/// `capms-sim run FILE --record PATH`: runs the scenario, writes the trace (also when the run
/// fails: that is when it is wanted), reports as `run` does.
#[allow(clippy::print_stdout, reason = "the command-line report of a run")]
pub fn run_recorded(file: &Path, seed: Option<u64>, log: bool, trace_path: &Path) -> ExitCode {
    let scenario = match Scenario::load(file) {
        Ok(scenario) => scenario,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::from(2);
        }
    };
    let (report, text) = match record_scenario(&scenario, seed, OperatorConfig::default()) {
        Ok(recorded) => recorded,
        Err(error) => {
            eprintln!("cannot write the trace: {error}");
            return ExitCode::from(2);
        }
    };
    if let Err(error) = std::fs::write(trace_path, text) {
        eprintln!("cannot write the trace to {}: {error}", trace_path.display());
        return ExitCode::from(2);
    }
    println!("trace: {}", trace_path.display());
    if report.passed() {
        println!("{report}");
        return ExitCode::SUCCESS;
    }
    eprintln!("{}", report.with_event_log(log));
    ExitCode::FAILURE
}

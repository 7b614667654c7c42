//! A picture of a run: `capms-sim run FILE --report out.html` and `capms-sim demo --report
//! out.html`.
//!
//! While a [`World`] runs with recording switched on ([`World::start_recording`]), a
//! [`Recorder`] looks at it after every step: the phase of every machine and firewall in the
//! datacenter, the faults in force (datacenter fault plan, capacity limits, operator faults),
//! disturbances (machine deaths, external frees, operator crashes, heals, safety violations)
//! and the metal-api calls per virtual minute. The scenario runner and the demo mark their
//! steps ([`World::mark`]). [`Recorder::finish`] turns it into a [`RunRecord`], and
//! [`render_html`] into one self-contained HTML page (inline CSS, SVG and a few lines of
//! script; nothing is fetched from anywhere).
//!
//! Deterministic like the rest of the crate: virtual time only, ordered collections only, so
//! the same seed gives the same page byte for byte.

mod html;

pub use html::render_html;

use crate::operator::OperatorConfig;
use crate::scenario::{Scenario, ScenarioReport, ScenarioRun};
use crate::world::{OperatorFaults, World};
use capms_backend_sim::{FaultPlan, Phase};
use capms_core::metal::{Liveliness, MachineRole};
use capms_core::{Operation, Timestamp};
use std::collections::BTreeMap;

/// Milliseconds of virtual time since the start of the recording.
pub type Millis = u64;

/// Everything the page shows about one run.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RunRecord {
    /// The scenario's name, or "demo".
    pub title: String,
    /// Where the run came from (the scenario file, or `capms-sim demo`).
    pub source: String,
    pub seed: u64,
    /// The command that runs it again.
    pub reproduce: String,
    /// Whether every step, expectation and check held.
    pub passed: bool,
    /// One line: how it ended.
    pub outcome: String,
    /// Virtual time the recording covers.
    pub duration: Millis,
    /// Every machine of the datacenter (firewalls are machines with the firewall role).
    pub machines: Vec<MachineRow>,
    /// Faults in force, as time ranges.
    pub faults: Vec<FaultSpan>,
    /// Disturbances and findings at one moment.
    pub events: Vec<RunEvent>,
    /// Steps of the scenario (or the demo's story).
    pub steps: Vec<StepMarker>,
    /// metal-api calls per virtual minute (the key) and operation id.
    pub calls_per_minute: BTreeMap<u64, BTreeMap<String, u64>>,
    /// Results of the invariant checks and expectations.
    pub checks: Vec<CheckResult>,
    /// Further facts (trace hash, totals), label and value.
    pub facts: Vec<(String, String)>,
}

/// One machine's life over the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineRow {
    pub id: String,
    pub rack: String,
    pub segments: Vec<Segment>,
}

impl MachineRow {
    /// Whether it was ever allocated (as a machine or a firewall).
    pub fn was_allocated(&self) -> bool {
        self.segments.iter().any(|s| s.state.role.is_some())
    }

    /// Whether it was ever a firewall.
    pub fn was_firewall(&self) -> bool {
        self.segments.iter().any(|s| s.state.role == Some(Role::Firewall))
    }

    /// The allocation names it carried, in order of first appearance.
    pub fn allocation_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for name in self.segments.iter().filter_map(|s| s.state.allocation.as_deref()) {
            if !names.contains(&name) {
                names.push(name);
            }
        }
        names
    }
}

/// A stretch of time in one state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub start: Millis,
    pub end: Millis,
    pub state: MachineState,
}

/// Where a machine is in its life, as the datacenter knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PhaseKind {
    /// Free, waiting for an allocation.
    Free,
    /// Allocated, installing.
    Provisioning,
    /// Allocated and phoned home.
    Running,
    /// Provisioning failed; it keeps crashing.
    CrashLoop,
    /// Freed; being wiped.
    Reclaiming,
}

impl PhaseKind {
    /// Every phase, in legend order.
    pub const ALL: [PhaseKind; 5] = [
        PhaseKind::Free,
        PhaseKind::Provisioning,
        PhaseKind::Running,
        PhaseKind::CrashLoop,
        PhaseKind::Reclaiming,
    ];

    /// The word shown in the legend and tooltips.
    pub fn label(self) -> &'static str {
        match self {
            PhaseKind::Free => "free (waiting)",
            PhaseKind::Provisioning => "provisioning",
            PhaseKind::Running => "phoned home (running)",
            PhaseKind::CrashLoop => "crash loop",
            PhaseKind::Reclaiming => "freed (reclaiming)",
        }
    }

    /// The CSS class of its bars.
    pub fn class(self) -> &'static str {
        match self {
            PhaseKind::Free => "p-free",
            PhaseKind::Provisioning => "p-prov",
            PhaseKind::Running => "p-run",
            PhaseKind::CrashLoop => "p-crash",
            PhaseKind::Reclaiming => "p-reclaim",
        }
    }

    fn of(phase: Phase) -> PhaseKind {
        match phase {
            Phase::Waiting => PhaseKind::Free,
            Phase::Provisioning => PhaseKind::Provisioning,
            Phase::Running => PhaseKind::Running,
            Phase::CrashLoop => PhaseKind::CrashLoop,
            Phase::Reclaiming => PhaseKind::Reclaiming,
        }
    }
}

/// What an allocation is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Machine,
    Firewall,
}

/// A machine's state at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineState {
    pub phase: PhaseKind,
    /// The newest provisioning event ("Installing", "Phoned Home", ...), if any.
    pub event: Option<String>,
    pub role: Option<Role>,
    /// The allocation's name (the MetalStackMachine's or firewall's), if allocated.
    pub allocation: Option<String>,
    /// Liveliness other than `Alive`: a dead machine is silent, and metal-api reports it
    /// `Unknown` while it is allocated, `Dead` once it is not.
    pub dead: bool,
}

/// What kind of fault a span is, for its colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    /// The datacenter's fault plan (errors, lost answers, latency, ...).
    Datacenter,
    /// A capacity limit.
    Capacity,
    /// Operator faults (stale reads, lost status writes, a second replica, scheduled crashes).
    Operator,
}

impl FaultKind {
    pub fn class(self) -> &'static str {
        match self {
            FaultKind::Datacenter => "f-dc",
            FaultKind::Capacity => "f-cap",
            FaultKind::Operator => "f-op",
        }
    }
}

/// A fault in force from `start` to `end`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultSpan {
    pub kind: FaultKind,
    /// What is in force ("metal-api errors", "latency", "stale reads", ...): one lane each.
    pub label: String,
    /// Rates and limits, as when the span started or last changed.
    pub detail: String,
    pub start: Millis,
    pub end: Millis,
}

/// What happened at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum EventKind {
    MachineDied,
    ExternalFree,
    OperatorCrash,
    Heal,
    Violation,
}

impl EventKind {
    pub fn label(self) -> &'static str {
        match self {
            EventKind::MachineDied => "machine died",
            EventKind::ExternalFree => "freed externally",
            EventKind::OperatorCrash => "operator crash",
            EventKind::Heal => "heal",
            EventKind::Violation => "safety violation",
        }
    }

    pub fn class(self) -> &'static str {
        match self {
            EventKind::MachineDied => "e-died",
            EventKind::ExternalFree => "e-free",
            EventKind::OperatorCrash => "e-crash",
            EventKind::Heal => "e-heal",
            EventKind::Violation => "e-viol",
        }
    }
}

/// A disturbance or finding at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunEvent {
    pub at: Millis,
    pub kind: EventKind,
    /// The machine it concerns, if any.
    pub machine: Option<String>,
    pub message: String,
}

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepOutcome {
    Passed,
    Failed,
    /// Not reached (an earlier step failed).
    NotRun,
}

/// One step of the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepMarker {
    /// 1-based.
    pub number: usize,
    pub label: String,
    pub start: Millis,
    pub end: Millis,
    pub outcome: StepOutcome,
    /// Why it failed.
    pub reason: Option<String>,
}

/// One invariant check or expectation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    pub name: String,
    pub passed: bool,
    /// Findings (empty when it passed), or what was checked.
    pub messages: Vec<String>,
}

impl CheckResult {
    pub fn new(name: &str, findings: Vec<String>) -> Self {
        CheckResult { name: name.to_string(), passed: findings.is_empty(), messages: findings }
    }
}

/// The safety checks the world runs after every step ([`crate::checks::Checker`]).
pub const SAFETY_CHECKS: &str = "no object with two machines, no machine claimed twice, providerIDs stable, \
nothing Ready on a gone machine or one that is not alive, nothing freed while paused, user networks and IPs kept";

/// Collects a [`RunRecord`] while the world runs. Lives in the [`World`] while recording.
#[derive(Debug, Clone)]
pub struct Recorder {
    start: Timestamp,
    /// What was seen last, to look again only when something may have changed.
    seen_events: u64,
    seen_crashes: u64,
    seen_violations: usize,
    seen_operator_faults: [bool; 4],
    log_position: usize,
    calls: BTreeMap<Operation, u64>,
    calls_per_minute: BTreeMap<u64, BTreeMap<String, u64>>,
    /// Per machine: rack and the state changes (time, new state).
    machines: BTreeMap<String, (String, Vec<(Millis, MachineState)>)>,
    /// Faults in force: label → (kind, detail, since).
    open_faults: BTreeMap<String, (FaultKind, String, Millis)>,
    faults: Vec<FaultSpan>,
    events: Vec<RunEvent>,
    /// Step labels and their start.
    marks: Vec<(Millis, String)>,
    last_at: Millis,
}

impl Recorder {
    /// A recorder whose time 0 is `start`.
    pub fn new(start: Timestamp) -> Self {
        Recorder {
            start,
            seen_events: u64::MAX,
            seen_crashes: 0,
            seen_violations: 0,
            seen_operator_faults: [false; 4],
            log_position: 0,
            calls: BTreeMap::new(),
            calls_per_minute: BTreeMap::new(),
            machines: BTreeMap::new(),
            open_faults: BTreeMap::new(),
            faults: Vec::new(),
            events: Vec::new(),
            marks: Vec::new(),
            last_at: 0,
        }
    }

    fn millis(&self, time: Timestamp) -> Millis {
        u64::try_from(time.duration_since(self.start).unsigned_abs().as_millis()).unwrap_or(u64::MAX)
    }

    /// Looks at the world (after every step). Cheap when nothing changed: the machines, calls
    /// and fault plan are read only when the datacenter logged something.
    pub fn observe(&mut self, world: &World) {
        let now = world.now();
        let at = self.millis(now);
        self.last_at = self.last_at.max(at);
        let events = world.sim.event_count();
        let crashes = world.operator_stats().crashes;
        let violations = world.checker.violations.len();
        let operator_faults = operator_fault_flags(&world.faults, now);
        if events == self.seen_events
            && crashes == self.seen_crashes
            && violations == self.seen_violations
            && operator_faults == self.seen_operator_faults
        {
            return;
        }
        if crashes > self.seen_crashes {
            for _ in self.seen_crashes..crashes {
                self.event(
                    at,
                    EventKind::OperatorCrash,
                    None,
                    "an operator replica crashed and restarted".to_string(),
                );
            }
        }
        self.seen_crashes = crashes;
        for message in world.checker.violations.iter().skip(self.seen_violations) {
            self.events.push(RunEvent {
                at,
                kind: EventKind::Violation,
                machine: None,
                message: message.clone(),
            });
        }
        self.seen_violations = violations;
        self.seen_operator_faults = operator_faults;
        let mut in_force = operator_fault_labels(&world.faults, now);
        if events != self.seen_events {
            self.seen_events = events;
            self.observe_datacenter(world, at);
            in_force.extend(datacenter_fault_labels(&world.sim.fault_plan()));
            for (partition, size) in world.capacity_limits() {
                in_force.push((
                    FaultKind::Capacity,
                    format!("capacity limit {partition}/{size}"),
                    String::new(),
                ));
            }
        } else {
            // The datacenter did not change: its faults are the ones already open.
            in_force.extend(
                self.open_faults
                    .iter()
                    .filter(|(_, (kind, _, _))| *kind != FaultKind::Operator)
                    .map(|(label, (kind, detail, _))| (*kind, label.clone(), detail.clone())),
            );
        }
        self.set_faults(at, in_force);
    }

    fn observe_datacenter(&mut self, world: &World, at: Millis) {
        let calls = world.sim.calls();
        for (operation, count) in &calls {
            let before = self.calls.get(operation).copied().unwrap_or(0);
            if *count > before {
                *self
                    .calls_per_minute
                    .entry(at / 60_000)
                    .or_default()
                    .entry(operation.operation_id().to_string())
                    .or_default() += count - before;
            }
        }
        self.calls = calls;
        for line in world.sim.event_log_since(self.log_position) {
            self.log_position += 1;
            if let Some((_, id)) = line.split_once("external free of machine ") {
                let id = id.trim().to_string();
                self.event(
                    at,
                    EventKind::ExternalFree,
                    Some(id.clone()),
                    format!("machine {id} freed by someone else"),
                );
            } else if line.contains("healed: all faults off") {
                self.event(at, EventKind::Heal, None, "all faults off".to_string());
            }
        }
        for machine in world.sim.machines() {
            let Some(phase) = world.sim.machine_phase(&machine.id) else { continue };
            let state = MachineState {
                phase: PhaseKind::of(phase),
                event: machine.last_event().map(|e| e.event.as_str().to_string()),
                role: machine.role().map(|role| match role {
                    MachineRole::Firewall => Role::Firewall,
                    MachineRole::Machine => Role::Machine,
                }),
                allocation: machine.allocation.as_ref().map(|a| a.name.clone()),
                dead: machine.liveliness != Liveliness::Alive,
            };
            let was_dead =
                self.machines.get(&machine.id).and_then(|(_, c)| c.last()).is_some_and(|(_, s)| s.dead);
            if state.dead && !was_dead {
                let message = format!(
                    "machine {} died (liveliness {}){}",
                    machine.id,
                    machine.liveliness.as_str(),
                    state.allocation.as_deref().map(|a| format!(" ({a})")).unwrap_or_default()
                );
                self.event(at, EventKind::MachineDied, Some(machine.id.clone()), message);
            }
            let (_, changes) = self
                .machines
                .entry(machine.id.clone())
                .or_insert_with(|| (machine.rack_id.clone(), Vec::new()));
            if changes.last().is_some_and(|(when, _)| *when == at) {
                changes.pop();
            }
            if changes.last().is_none_or(|(_, last)| *last != state) {
                changes.push((at, state));
            }
        }
    }

    fn event(&mut self, at: Millis, kind: EventKind, machine: Option<String>, message: String) {
        self.events.push(RunEvent { at, kind, machine, message });
    }

    /// Opens and closes fault spans so that exactly `in_force` is open.
    fn set_faults(&mut self, at: Millis, in_force: Vec<(FaultKind, String, String)>) {
        let now: BTreeMap<String, (FaultKind, String)> =
            in_force.into_iter().map(|(kind, label, detail)| (label, (kind, detail))).collect();
        let open: Vec<String> = self.open_faults.keys().cloned().collect();
        for label in open {
            let changed = match now.get(&label) {
                Some((_, detail)) => self.open_faults.get(&label).is_some_and(|(_, d, _)| d != detail),
                None => true,
            };
            if changed && let Some((kind, detail, start)) = self.open_faults.remove(&label) {
                self.faults.push(FaultSpan { kind, label, detail, start, end: at });
            }
        }
        for (label, (kind, detail)) in now {
            self.open_faults.entry(label).or_insert((kind, detail, at));
        }
    }

    /// Marks the start of a step.
    pub fn mark(&mut self, now: Timestamp, label: &str) {
        let at = self.millis(now);
        self.last_at = self.last_at.max(at);
        self.marks.push((at, label.to_string()));
    }

    /// The record so far, with the run's identity and results filled in by the caller.
    pub fn finish(mut self) -> RunRecord {
        let end = self.last_at;
        let open: Vec<String> = self.open_faults.keys().cloned().collect();
        for label in open {
            if let Some((kind, detail, start)) = self.open_faults.remove(&label) {
                self.faults.push(FaultSpan { kind, label, detail, start, end });
            }
        }
        self.faults.sort_by(|a, b| (a.start, &a.label).cmp(&(b.start, &b.label)));
        let machines = self
            .machines
            .into_iter()
            .map(|(id, (rack, changes))| {
                let segments = changes
                    .iter()
                    .enumerate()
                    .map(|(index, (start, state))| Segment {
                        start: *start,
                        end: changes.get(index + 1).map(|(next, _)| *next).unwrap_or(end),
                        state: state.clone(),
                    })
                    .collect();
                MachineRow { id, rack, segments }
            })
            .collect();
        let steps = self
            .marks
            .iter()
            .enumerate()
            .map(|(index, (start, label))| StepMarker {
                number: index + 1,
                label: label.clone(),
                start: *start,
                end: self.marks.get(index + 1).map(|(next, _)| *next).unwrap_or(end),
                outcome: StepOutcome::Passed,
                reason: None,
            })
            .collect();
        RunRecord {
            duration: end,
            machines,
            faults: self.faults,
            events: self.events,
            steps,
            calls_per_minute: self.calls_per_minute,
            passed: true,
            ..RunRecord::default()
        }
    }
}

/// Which operator faults are in force: stale reads, lost status writes, a second replica,
/// crashes scheduled.
fn operator_fault_flags(faults: &OperatorFaults, now: Timestamp) -> [bool; 4] {
    [
        faults.stale_reads_until.is_some_and(|until| now < until),
        faults.lost_status_writes.is_some_and(|(_, until)| now < until),
        faults.second_replica_until.is_some_and(|until| now < until),
        !faults.crashes.is_empty(),
    ]
}

fn operator_fault_labels(faults: &OperatorFaults, now: Timestamp) -> Vec<(FaultKind, String, String)> {
    let [stale, lost, second, crashes] = operator_fault_flags(faults, now);
    let mut labels = Vec::new();
    let kind = FaultKind::Operator;
    if stale {
        labels.push((kind, "stale informer reads".to_string(), String::new()));
    }
    if let (true, Some((rate, _))) = (lost, faults.lost_status_writes) {
        labels.push((kind, "lost status writes".to_string(), percent(rate)));
    }
    if second {
        labels.push((kind, "second operator replica".to_string(), String::new()));
    }
    if crashes {
        labels.push((
            kind,
            "operator crashes pending".to_string(),
            format!("{} to come", faults.crashes.len()),
        ));
    }
    labels
}

fn percent(rate: f64) -> String {
    format!("{:.0}%", rate * 100.0)
}

/// The faults of a datacenter fault plan, one label per kind.
fn datacenter_fault_labels(plan: &FaultPlan) -> Vec<(FaultKind, String, String)> {
    let mut labels = Vec::new();
    let kind = FaultKind::Datacenter;
    let mut errors = Vec::new();
    let rates = plan.error_rates;
    for (class, rate) in [("transient", rates.transient), ("conflict", rates.conflict), ("auth", rates.auth)]
    {
        if rate > 0.0 {
            errors.push(format!("{class} {}", percent(rate)));
        }
    }
    for (operation, rates) in &plan.error_rates_by_operation {
        for (class, rate) in
            [("transient", rates.transient), ("conflict", rates.conflict), ("auth", rates.auth)]
        {
            if rate > 0.0 {
                errors.push(format!("{} {class} {}", operation.operation_id(), percent(rate)));
            }
        }
    }
    if !errors.is_empty() {
        let label = if rates.transient >= 1.0 { "metal-api outage" } else { "metal-api errors" };
        labels.push((kind, label.to_string(), errors.join(", ")));
    }
    let mut rate = |label: &str, rate: f64| {
        if rate > 0.0 {
            labels.push((kind, label.to_string(), percent(rate)));
        }
    };
    rate("lost answers", plan.lost_response_rate);
    rate("parallel allocation refusals", plan.parallel_allocation_rate);
    rate("provisioning failures", plan.provisioning_failure_rate);
    rate("machine deaths", plan.death_rate);
    rate("external frees", plan.external_free_rate);
    rate("stuck provisioning", plan.stuck_provisioning_rate);
    rate("late writes", plan.late_write_rate);
    rate("stolen machines", plan.stolen_machine_rate);
    if let Some(latency) = plan.latency.filter(|l| !l.max.is_zero()) {
        labels.push((kind, "latency".to_string(), format!("{:?} to {:?}", latency.min, latency.max)));
    }
    if !plan.stale_read_lag.is_zero() {
        labels.push((kind, "stale metal-api reads".to_string(), format!("lag {:?}", plan.stale_read_lag)));
    }
    labels
}

/// Plays `scenario` (as [`crate::scenario::run_scenario_with`]) while recording it.
pub fn record_scenario(
    scenario: &Scenario,
    seed_override: Option<u64>,
    config: OperatorConfig,
) -> (ScenarioReport, RunRecord) {
    let mut run = ScenarioRun::with_config(scenario, seed_override, config);
    run.world.start_recording();
    let (report, mut run) = run.play(scenario);
    let recorder = run.world.take_recording().unwrap_or_else(|| Recorder::new(run.world.now()));
    let mut record = recorder.finish();
    describe_scenario(&mut record, &report, &run.world);
    (report, record)
}

/// Fills in the identity and results of a scenario run.
fn describe_scenario(record: &mut RunRecord, report: &ScenarioReport, world: &World) {
    record.title = report.name.clone();
    record.source = report.file.clone();
    record.seed = report.seed;
    record.reproduce = report.reproduce_command();
    record.passed = report.passed();
    record.outcome = match &report.failure {
        None => format!("PASS: all {} steps and the expectations held", report.steps),
        Some(failure) => match failure.step {
            Some(step) => format!("FAIL at step {step} (line {}): {}", failure.line, failure.reason),
            None => format!("FAIL: the expectations did not hold: {}", failure.reason),
        },
    };
    let failed_step = report.failure.as_ref().and_then(|f| f.step);
    for step in &mut record.steps {
        match failed_step {
            Some(failed) if step.number == failed => {
                step.outcome = StepOutcome::Failed;
                step.reason = report.failure.as_ref().map(|f| f.reason.clone());
            }
            Some(failed) if step.number > failed => step.outcome = StepOutcome::NotRun,
            _ => {}
        }
    }
    record.checks = vec![
        CheckResult {
            name: format!("safety checks ({} runs, after every step)", world.checker.checks),
            passed: report.violations.is_empty(),
            messages: if report.violations.is_empty() {
                vec![SAFETY_CHECKS.to_string()]
            } else {
                report.violations.clone()
            },
        },
        CheckResult::new(
            &format!("steps ({} of {} passed)", report.steps_passed, report.steps),
            report.failure.iter().filter(|f| f.step.is_some()).map(|f| f.reason.clone()).collect(),
        ),
        CheckResult::new("nothing leaked (clusters the scenario deleted)", report.leaks.clone()),
        CheckResult {
            name: format!("duplicate allocations (seen: {})", report.duplicate_allocations.len()),
            passed: !report
                .failure
                .as_ref()
                .is_some_and(|f| f.step.is_none() && f.reason.contains("duplicate")),
            messages: report.duplicate_allocations.clone(),
        },
    ];
    if !report.unpreventable_duplicates.is_empty() {
        record.checks.push(CheckResult {
            name: format!(
                "unpreventable duplicate allocations, freed within the grace (seen: {})",
                report.unpreventable_duplicates.len()
            ),
            passed: true,
            messages: report
                .unpreventable_duplicates
                .iter()
                .map(|(object, cause)| format!("{object}: {cause:?}"))
                .collect(),
        });
    }
    if let Some(failure) = report.failure.as_ref().filter(|f| f.step.is_none()) {
        record.checks.push(CheckResult::new(&failure.text, vec![failure.reason.clone()]));
    }
    record.facts = run_facts(world, report.metal_api_calls, &report.trace_hash);
}

/// Finishes the recording of `capms-sim demo` and fills in its identity and results.
pub fn describe_demo(
    world: &mut World,
    seed: u64,
    result: &Result<crate::demo::Report, String>,
) -> RunRecord {
    let recorder = world.take_recording().unwrap_or_else(|| Recorder::new(world.now()));
    let mut record = recorder.finish();
    let cluster = crate::demo::CLUSTER;
    record.title = format!("demo: the life of cluster {cluster}");
    record.source = "capms-sim demo".to_string();
    record.seed = seed;
    record.reproduce = format!("cargo run -p capms-sim-scenarios --bin capms-sim -- demo --seed {seed}");
    let violations = world.checker.violations.clone();
    let leaks = world.leaks(cluster);
    record.passed = result.is_ok() && violations.is_empty() && leaks.is_empty();
    record.outcome = match result {
        Ok(_) if record.passed => "PASS: created, scaled, healed and deleted; nothing leaked".to_string(),
        Ok(_) => "FAIL: the story completed, but a check failed".to_string(),
        Err(error) => format!("FAIL: {error}"),
    };
    if let (Err(error), Some(step)) = (result, record.steps.last_mut()) {
        step.outcome = StepOutcome::Failed;
        step.reason = Some(error.clone());
    }
    record.checks = vec![
        CheckResult {
            name: format!("safety checks ({} runs, after every step)", world.checker.checks),
            passed: violations.is_empty(),
            messages: if violations.is_empty() { vec![SAFETY_CHECKS.to_string()] } else { violations },
        },
        CheckResult::new("the story completed", result.as_ref().err().cloned().into_iter().collect()),
        CheckResult::new(&format!("nothing of cluster {cluster} left in the datacenter"), leaks),
    ];
    let calls = world.sim.calls().values().sum();
    record.facts = run_facts(world, calls, &world.trace_hash());
    record
}

/// Totals every run reports.
pub fn run_facts(world: &World, calls: u64, trace_hash: &str) -> Vec<(String, String)> {
    let stats = world.operator_stats();
    vec![
        ("metal-api calls".to_string(), calls.to_string()),
        ("reconciles".to_string(), stats.reconciles.to_string()),
        ("operator crashes".to_string(), stats.crashes.to_string()),
        ("lost status writes".to_string(), stats.lost_status_writes.to_string()),
        ("world steps".to_string(), world.steps.to_string()),
        ("trace hash".to_string(), trace_hash.to_string()),
    ]
}

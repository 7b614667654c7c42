//! The HTML report of a run (`--report`): what the record holds, that the page is
//! self-contained, escaped, deterministic and well-formed enough, and that headless Chromium
//! renders it without a script error.
//!
//! The browser test needs Debian's `chromium` (`apt-get install -y chromium`); with
//! `CAPMS_SKIP_BROWSER=1` it is skipped.

use capms_sim_scenarios::operator::OperatorConfig;
use capms_sim_scenarios::report::{
    CheckResult, EventKind, FaultKind, FaultSpan, MachineRow, MachineState, PhaseKind, Role, RunEvent,
    RunRecord, Segment, StepMarker, StepOutcome, record_scenario, render_html,
};
use capms_sim_scenarios::scenario::Scenario;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const HOSTILE: &str = "<script>alert('x')</script>&\"";

/// A short scenario with a firewall, faults of every kind the report shades, a machine death,
/// an external free, a heal and a delete.
const SHORT: &str = "name: a short run for the report
seed: 5
datacenter:
  partitions: [{ id: mini-lab, sizes: { v1-small-x86: 8 } }]
  provisioning: 2m
steps:
  - create_cluster: { name: pic, control_plane: 1, workers: 2, firewall: true }
  - fault: { error_rate: { rate: 0.2, for: 4m } }
  - fault: { stale_reads: { for: 3m } }
  - fault: { operator_crash: { count: 1, within: 2m } }
  - run_until: { ready: pic, within: 30m }
  - fault: { machine_death: { cluster: pic, count: 1 } }
  - run_for: 6m
  - fault: { capacity: { available: 1, for: 2m } }
  - run_until: { ready: pic, within: 30m }
  - fault: { external_free: { cluster: pic, count: 1 } }
  - run_until: { ready: pic, within: 30m }
  - heal: {}
  - delete_cluster: { name: pic }
  - run_until: { gone: pic, within: 30m }
expect: { leaked: none, duplicate_allocations: 0 }
";

fn short_scenario() -> Scenario {
    Scenario::parse("short.yaml", SHORT).unwrap_or_else(|e| panic!("{e}"))
}

fn state(phase: PhaseKind, role: Option<Role>, allocation: Option<&str>, dead: bool) -> MachineState {
    MachineState { phase, event: None, role, allocation: allocation.map(str::to_string), dead }
}

fn segment(start: u64, end: u64, state: MachineState) -> Segment {
    Segment { start, end, state }
}

/// A small hand-made record with a hostile string wherever the run puts text.
fn small_record() -> RunRecord {
    let firewall = Some(Role::Firewall);
    let machine = Some(Role::Machine);
    RunRecord {
        title: format!("small {HOSTILE}"),
        source: "small.yaml".to_string(),
        seed: 42,
        reproduce: "cargo run -p capms-sim-scenarios --bin capms-sim -- run small.yaml --seed 42".to_string(),
        passed: false,
        outcome: format!("FAIL at step 3: {HOSTILE}"),
        duration: 600_000,
        machines: vec![
            MachineRow {
                id: "m-fw".to_string(),
                rack: "rack-1".to_string(),
                segments: vec![
                    segment(0, 10_000, state(PhaseKind::Free, None, None, false)),
                    segment(
                        10_000,
                        130_000,
                        state(PhaseKind::Provisioning, firewall, Some("small-firewall"), false),
                    ),
                    segment(
                        130_000,
                        600_000,
                        state(PhaseKind::Running, firewall, Some("small-firewall"), false),
                    ),
                ],
            },
            MachineRow {
                id: format!("m-{HOSTILE}"),
                rack: "rack-2".to_string(),
                segments: vec![
                    segment(0, 20_000, state(PhaseKind::Free, None, None, false)),
                    segment(
                        20_000,
                        140_000,
                        state(PhaseKind::Provisioning, machine, Some("small-cp-1"), false),
                    ),
                    segment(140_000, 300_000, state(PhaseKind::Running, machine, Some("small-cp-1"), false)),
                    segment(300_000, 400_000, state(PhaseKind::Running, machine, Some("small-cp-1"), true)),
                    segment(400_000, 500_000, state(PhaseKind::Reclaiming, None, None, true)),
                    segment(500_000, 600_000, state(PhaseKind::Free, None, None, false)),
                ],
            },
            MachineRow {
                id: "m-idle".to_string(),
                rack: "rack-1".to_string(),
                segments: vec![segment(0, 600_000, state(PhaseKind::Free, None, None, false))],
            },
        ],
        faults: vec![FaultSpan {
            kind: FaultKind::Datacenter,
            label: "metal-api errors".to_string(),
            detail: format!("transient 20% {HOSTILE}"),
            start: 5_000,
            end: 200_000,
        }],
        events: vec![RunEvent {
            at: 300_000,
            kind: EventKind::MachineDied,
            machine: Some(format!("m-{HOSTILE}")),
            message: format!("machine died {HOSTILE}"),
        }],
        steps: vec![
            StepMarker {
                number: 1,
                label: "create_cluster: { name: small }".to_string(),
                start: 0,
                end: 150_000,
                outcome: StepOutcome::Passed,
                reason: None,
            },
            StepMarker {
                number: 2,
                label: "fault: { api_outage: 3m }".to_string(),
                start: 150_000,
                end: 300_000,
                outcome: StepOutcome::Passed,
                reason: None,
            },
            StepMarker {
                number: 3,
                label: format!("run_until: {HOSTILE}"),
                start: 300_000,
                end: 600_000,
                outcome: StepOutcome::Failed,
                reason: Some(format!("not ready {HOSTILE}")),
            },
        ],
        calls_per_minute: BTreeMap::from([
            (0, BTreeMap::from([("allocateMachine".to_string(), 3), ("findMachines".to_string(), 10)])),
            (4, BTreeMap::from([("findMachine".to_string(), 7)])),
        ]),
        checks: vec![
            CheckResult::new("safety checks", Vec::new()),
            CheckResult::new("nothing leaked", vec![format!("machine m-1 {HOSTILE}")]),
        ],
        facts: vec![("trace hash".to_string(), "abc".to_string())],
    }
}

/// Counts of opening and closing tags per element name (void elements excluded).
fn tag_balance(html: &str) -> BTreeMap<String, (usize, usize)> {
    let mut balance: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut rest = html;
    while let Some(start) = rest.find('<') {
        rest = &rest[start + 1..];
        let closing = rest.starts_with('/');
        let name: String = rest
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase();
        if name.is_empty() {
            continue;
        }
        let end = rest.find('>').unwrap_or(rest.len());
        let self_closing = rest[..end].ends_with('/');
        let entry = balance.entry(name).or_default();
        if closing {
            entry.1 += 1;
        } else if !self_closing {
            entry.0 += 1;
        }
    }
    balance
}

fn assert_well_formed(html: &str) {
    assert!(html.starts_with("<!DOCTYPE html>"), "{}", &html[..80.min(html.len())]);
    let balance = tag_balance(html);
    for name in
        ["html", "head", "body", "svg", "g", "table", "tr", "td", "ul", "li", "title", "script", "style"]
    {
        let (open, close) = balance.get(name).copied().unwrap_or_default();
        assert_eq!(open, close, "<{name}> opened {open} times, closed {close} times");
    }
    for name in ["html", "head", "body", "script", "style"] {
        assert_eq!(balance.get(name).map(|b| b.0), Some(1), "one <{name}>");
    }
}

fn assert_self_contained(html: &str) {
    for forbidden in ["http://", "https://", "src=", "href=", "@import", "//cdn", "<link", "<iframe", "<img"]
    {
        assert!(!html.contains(forbidden), "the page contains {forbidden:?}");
    }
    for (index, _) in html.match_indices("url(") {
        assert!(
            html[index..].starts_with("url(#"),
            "url() to something not in the page: {}",
            &html[index..index + 30]
        );
    }
}

#[test]
fn a_small_record_renders_its_rows_markers_checks_and_identity() {
    let record = small_record();
    let html = render_html(&record);
    assert_well_formed(&html);
    assert_self_contained(&html);
    // Rows: the two allocated machines each, the never-allocated one summarised.
    assert!(html.contains("data-machine=\"m-fw\""), "firewall row");
    assert!(html.contains("g class=\"mrow firewall\""), "the firewall row is marked");
    assert!(html.contains("data-machine=\"m-&lt;script&gt;"), "escaped machine row");
    assert!(html.contains("1 machines never allocated"), "idle machines summarised");
    assert!(html.contains("small-firewall") && html.contains("small-cp-1"), "allocation names");
    // Phases, faults, events, steps, calls, checks.
    for class in
        ["seg p-free", "seg p-prov", "seg p-run", "seg p-reclaim", "url(#hatch-fw)", "url(#hatch-dead)"]
    {
        assert!(html.contains(class), "{class}");
    }
    assert!(html.contains("rect class=\"fault f-dc\""), "fault lane");
    assert!(html.contains("rect class=\"shade f-dc\""), "fault shading");
    assert!(html.contains("path class=\"ev e-died\""), "event marker");
    assert!(html.contains("path class=\"mark e-died\""), "the death on the machine's row");
    for step in 1..=3 {
        assert!(html.contains(&format!("data-step=\"s{step}\"")), "step {step} in the table");
    }
    assert!(html.contains("g class=\"step failed\" data-steps=\"s3\""), "failed step marker");
    assert_eq!(html.matches("<g class=\"step").count(), 6, "3 markers on the timeline, 3 on the call chart");
    assert!(html.contains("<svg id=\"calls\""));
    assert!(html.contains("allocateMachine (3)") && html.contains("findMachines (10)"), "call legend");
    assert!(html.contains("\u{2713} safety checks") && html.contains("\u{2717} nothing leaked"));
    assert!(html.contains("<code id=\"seed\">42</code>"));
    assert!(html.contains(&record.reproduce));
    assert!(html.contains("<span class=\"badge fail\">FAIL</span>"));
    // Every string from the run is escaped.
    assert!(!html.contains(HOSTILE), "an unescaped string");
    assert!(!html.contains("<script>alert"), "an unescaped script");
    assert_eq!(html.matches("<script>").count(), 1, "only the page's own script");
    assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;"));
    // Pure.
    assert_eq!(html, render_html(&record));
}

#[test]
fn a_recorded_run_has_every_machine_fault_disturbance_step_and_call() {
    let scenario = short_scenario();
    let (report, record) = record_scenario(&scenario, None, OperatorConfig::default());
    assert!(report.passed(), "{report}");
    assert!(record.passed, "{}", record.outcome);
    assert_eq!(record.seed, 5);
    assert_eq!(record.title, scenario.name);
    assert!(record.reproduce.ends_with("run short.yaml --seed 5"), "{}", record.reproduce);
    assert_eq!(record.machines.len(), 8, "every machine of the datacenter");
    assert!(record.machines.iter().any(|m| m.was_firewall()), "the firewall");
    assert!(record.machines.iter().filter(|m| m.was_allocated()).count() >= 4);
    for machine in &record.machines {
        let first = machine.segments.first().map(|s| s.start);
        let last = machine.segments.last().map(|s| s.end);
        assert_eq!((first, last), (Some(0), Some(record.duration)), "{} covers the run", machine.id);
        for pair in machine.segments.windows(2) {
            assert_eq!(pair[0].end, pair[1].start, "{}: contiguous", machine.id);
        }
    }
    let phases: Vec<PhaseKind> =
        record.machines.iter().flat_map(|m| m.segments.iter().map(|s| s.state.phase)).collect();
    for phase in [PhaseKind::Free, PhaseKind::Provisioning, PhaseKind::Running, PhaseKind::Reclaiming] {
        assert!(phases.contains(&phase), "{phase:?} seen");
    }
    let labels: Vec<&str> = record.faults.iter().map(|f| f.label.as_str()).collect();
    for label in ["metal-api errors", "stale informer reads", "operator crashes pending"] {
        assert!(labels.contains(&label), "{label} in {labels:?}");
    }
    assert!(record.faults.iter().any(|f| f.kind == FaultKind::Capacity), "{labels:?}");
    let errors = record.faults.iter().find(|f| f.label == "metal-api errors").map(|f| (f.start, f.end));
    assert_eq!(errors, Some((0, 240_000)), "the error rate is in force for 4m from the start");
    let kinds: Vec<EventKind> = record.events.iter().map(|e| e.kind).collect();
    for kind in [EventKind::MachineDied, EventKind::ExternalFree, EventKind::OperatorCrash, EventKind::Heal] {
        assert!(kinds.contains(&kind), "{kind:?} in {kinds:?}");
    }
    assert_eq!(record.steps.len(), scenario.steps.len());
    assert!(record.steps.iter().all(|s| s.outcome == StepOutcome::Passed));
    assert!(record.steps.windows(2).all(|p| p[0].start <= p[1].start && p[0].end == p[1].start));
    let calls: u64 = record.calls_per_minute.values().flat_map(|m| m.values()).sum();
    assert_eq!(calls, report.metal_api_calls, "every call counted once");
    assert!(record.checks.iter().all(|c| c.passed), "{:?}", record.checks);

    let html = render_html(&record);
    assert_well_formed(&html);
    assert_self_contained(&html);
    for machine in record.machines.iter().filter(|m| m.was_allocated()) {
        assert!(html.contains(&format!("data-machine=\"{}\"", machine.id)), "row of {}", machine.id);
    }
    // The same seed gives the same page.
    let (_, again) = record_scenario(&scenario, None, OperatorConfig::default());
    assert_eq!(record, again);
    assert_eq!(html, render_html(&again));
}

#[test]
fn recording_does_not_change_the_run() {
    let scenario = short_scenario();
    let plain = capms_sim_scenarios::scenario::run_scenario(&scenario, None);
    let (recorded, _) = record_scenario(&scenario, None, OperatorConfig::default());
    assert_eq!(plain, recorded);
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}

#[test]
fn the_cli_writes_the_report_and_fails_clearly_when_it_cannot() {
    let dir = temp_dir("report-cli");
    let scenario = dir.join("short.yaml");
    std::fs::write(&scenario, SHORT).unwrap_or_else(|e| panic!("{e}"));
    let out = dir.join("out.html");
    let output = Command::new(env!("CARGO_BIN_EXE_capms-sim"))
        .arg("run")
        .arg(&scenario)
        .arg("--report")
        .arg(&out)
        .output()
        .unwrap_or_else(|e| panic!("running capms-sim: {e}"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let html = std::fs::read_to_string(&out).unwrap_or_else(|e| panic!("reading the report: {e}"));
    assert!(html.contains("a short run for the report"));
    assert_self_contained(&html);

    let unwritable = dir.join("no-such-dir").join("out.html");
    let output = Command::new(env!("CARGO_BIN_EXE_capms-sim"))
        .arg("run")
        .arg(&scenario)
        .arg("--report")
        .arg(&unwritable)
        .output()
        .unwrap_or_else(|e| panic!("running capms-sim: {e}"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "an unwritable report must fail the command");
    assert!(stderr.contains("cannot write the report") && stderr.contains("no-such-dir"), "{stderr}");
}

const CHROMIUM: &str = "/usr/bin/chromium";

/// Chromium's headless flags: no network services, no GPU, a throw-away profile.
fn chromium(profile: &Path) -> Command {
    let mut command = Command::new("timeout");
    command.arg("120").arg(CHROMIUM).args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--hide-scrollbars",
    ]);
    command.arg(format!("--user-data-dir={}", profile.display()));
    command
}

/// Width and height from a PNG's IHDR chunk.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert!(bytes.len() > 24 && bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert_eq!(&bytes[12..16], b"IHDR");
    let number = |at: usize| u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    (number(16), number(20))
}

#[test]
fn chromium_renders_the_report_without_script_errors() {
    if std::env::var("CAPMS_SKIP_BROWSER").as_deref() == Ok("1") {
        eprintln!("CAPMS_SKIP_BROWSER=1: the browser test is skipped");
        return;
    }
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: install it with `apt-get install -y chromium` (Debian), \
         or set CAPMS_SKIP_BROWSER=1 to skip this test"
    );
    let dir = temp_dir("report-browser");
    let (report, record) = record_scenario(&short_scenario(), None, OperatorConfig::default());
    assert!(report.passed(), "{report}");
    let page = dir.join("report.html");
    std::fs::write(&page, render_html(&record)).unwrap_or_else(|e| panic!("{e}"));
    let url = format!("file://{}", page.display());

    // The DOM after the page's script ran: the rendered marker, no error marker.
    let output = chromium(&dir.join("profile-dom"))
        .arg("--dump-dom")
        .arg(&url)
        .output()
        .unwrap_or_else(|e| panic!("running chromium: {e}"));
    let dom = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "chromium --dump-dom failed: {stderr}");
    assert!(dom.contains("id=\"capms-report-rendered\""), "the page's script did not finish:\n{stderr}");
    assert!(!dom.contains("id=\"capms-report-error\""), "the page's script failed:\n{dom}");
    let rows = record.machines.iter().filter(|m| m.was_allocated()).count()
        + usize::from(record.machines.iter().any(|m| !m.was_allocated()));
    assert!(dom.contains(&format!("data-machine-rows=\"{rows}\"")), "machine rows in the DOM");
    assert!(dom.contains(&format!("data-steps=\"{}\"", record.steps.len())), "steps in the DOM");

    // The error marker works: a page whose script fails shows it.
    let broken = dir.join("broken.html");
    let html = render_html(&record).replace("</body>", "<script>noSuchFunction();</script>\n</body>");
    std::fs::write(&broken, html).unwrap_or_else(|e| panic!("{e}"));
    let output = chromium(&dir.join("profile-broken"))
        .arg("--dump-dom")
        .arg(format!("file://{}", broken.display()))
        .output()
        .unwrap_or_else(|e| panic!("running chromium: {e}"));
    let dom = String::from_utf8_lossy(&output.stdout);
    assert!(dom.contains("id=\"capms-report-error\""), "a script error was not caught:\n{dom}");
    assert!(dom.contains("noSuchFunction"), "the error names what failed");

    // A screenshot of the right size with something on it; no console errors on the way.
    let shot = dir.join("shot.png");
    let output = chromium(&dir.join("profile-shot"))
        .args(["--enable-logging=stderr", "--v=0", "--window-size=1400,1000"])
        .arg(format!("--screenshot={}", shot.display()))
        .arg(&url)
        .output()
        .unwrap_or_else(|e| panic!("running chromium: {e}"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "chromium --screenshot failed: {stderr}");
    let console_errors: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("Uncaught") || (line.contains("CONSOLE") && line.contains("ERROR")))
        .collect();
    assert!(console_errors.is_empty(), "console errors: {console_errors:#?}");
    let png =
        std::fs::read(&shot).unwrap_or_else(|e| panic!("no screenshot at {}: {e}\n{stderr}", shot.display()));
    assert!(png.len() > 20 * 1024, "the screenshot is only {} bytes", png.len());
    assert_eq!(png_size(&png), (1400, 1000));
}

//! [`render_html`]: a [`RunRecord`] as one self-contained HTML page.
//!
//! Everything is inline: CSS in a `<style>`, the charts as `<svg>`, and a few lines of script
//! that catch errors (`#capms-report-error`), confirm that the page rendered
//! (`#capms-report-rendered`) and highlight a step's marker when its table row is hovered.
//! No `src=` or `href=` anywhere; nothing is fetched. Every string from the run is escaped.
//! The output depends on the record only (no clock, ordered collections), byte for byte.

use super::{
    EventKind, FaultKind, MachineRow, Millis, PhaseKind, Role, RunRecord, Segment, StepMarker, StepOutcome,
};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Width of the charts (SVG user units; the page scales them to its width).
const WIDTH: f64 = 1360.0;
/// Width of the label column left of the plots.
const LABELS: f64 = 300.0;
/// Right margin.
const MARGIN: f64 = 16.0;
const ROW: f64 = 14.0;
const ROW_GAP: f64 = 3.0;
const LANE: f64 = 12.0;
const LANE_GAP: f64 = 3.0;

/// Colours of the call-rate chart, one per operation (the most called first); the rest are
/// drawn as "other".
const OPERATION_COLOURS: [&str; 9] =
    ["#4263eb", "#f08c00", "#2f9e44", "#c2255c", "#1098ad", "#7048e8", "#a0522d", "#5c940d", "#e64980"];
const OTHER_COLOUR: &str = "#adb5bd";

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// Virtual time as `h:mm:ss`.
fn clock(at: Millis) -> String {
    let seconds = at / 1000;
    format!("{}:{:02}:{:02}", seconds / 3600, seconds / 60 % 60, seconds % 60)
}

/// A duration in words: `45s`, `12m 5s`, `2h 3m`.
fn span(ms: Millis) -> String {
    let seconds = ms / 1000;
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {}s", s / 60, s % 60),
        s => format!("{}h {}m", s / 3600, s / 60 % 60),
    }
}

/// Shortens a machine id for the label column: the last part of a UUID.
fn short_id(id: &str) -> &str {
    if id.len() == 36 && id.matches('-').count() == 4 { id.rsplit('-').next().unwrap_or(id) } else { id }
}

fn truncate(text: &str, chars: usize) -> String {
    if text.chars().count() <= chars {
        text.to_string()
    } else {
        let mut short: String = text.chars().take(chars.saturating_sub(1)).collect();
        short.push('…');
        short
    }
}

/// Maps virtual time to x.
#[derive(Debug, Clone, Copy)]
struct Scale {
    duration: Millis,
}

impl Scale {
    fn plot_width() -> f64 {
        WIDTH - LABELS - MARGIN
    }

    fn x(self, at: Millis) -> f64 {
        LABELS + Scale::plot_width() * (at.min(self.duration) as f64) / (self.duration.max(1) as f64)
    }

    /// A tick interval that gives 6 to 15 ticks.
    fn tick(self) -> Millis {
        const STEPS: [Millis; 12] = [
            10_000, 30_000, 60_000, 120_000, 300_000, 600_000, 900_000, 1_800_000, 3_600_000, 7_200_000,
            14_400_000, 43_200_000,
        ];
        STEPS.iter().copied().find(|step| self.duration / step <= 15).unwrap_or(86_400_000)
    }
}

fn num(value: f64) -> String {
    format!("{value:.1}")
}

/// The whole page.
pub fn render_html(record: &RunRecord) -> String {
    let scale = Scale { duration: record.duration.max(1000) };
    let mut page = String::with_capacity(64 * 1024);
    let status = if record.passed { "PASS" } else { "FAIL" };
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{status} {} (seed {}) - capms-sim run</title>\n<style>\n{CSS}</style>\n</head>\n<body>\n",
        escape(&record.title),
        record.seed
    );
    header(&mut page, record);
    legend(&mut page, record);
    page.push_str("<h2>Timeline</h2>\n");
    timeline(&mut page, record, scale);
    page.push_str("<h2>metal-api calls per virtual minute</h2>\n");
    call_chart(&mut page, record, scale);
    checks(&mut page, record);
    steps_table(&mut page, record);
    faults_table(&mut page, record);
    events_table(&mut page, record);
    facts(&mut page, record);
    page.push_str(
        "<footer>Written by capms-sim from virtual time only; the same seed gives the same page. \
         Self-contained: no network access needed.</footer>\n",
    );
    let _ = write!(page, "<script>\n{SCRIPT}</script>\n</body>\n</html>\n");
    page
}

fn header(page: &mut String, record: &RunRecord) {
    let class = if record.passed { "pass" } else { "fail" };
    let _ = write!(
        page,
        "<header>\n<h1><span class=\"badge {class}\">{}</span> {}</h1>\n<p class=\"outcome {class}\">{}</p>\n\
         <table class=\"meta\">\n<tr><th>scenario</th><td>{}</td></tr>\n<tr><th>source</th><td><code>{}</code></td></tr>\n\
         <tr><th>seed</th><td><code id=\"seed\">{}</code></td></tr>\n<tr><th>virtual time</th><td>{} ({})</td></tr>\n\
         <tr><th>reproduce</th><td><code id=\"reproduce\">{}</code></td></tr>\n</table>\n</header>\n",
        if record.passed { "PASS" } else { "FAIL" },
        escape(&record.title),
        escape(&record.outcome),
        escape(&record.title),
        escape(&record.source),
        record.seed,
        span(record.duration),
        clock(record.duration),
        escape(&record.reproduce),
    );
}

fn legend(page: &mut String, record: &RunRecord) {
    page.push_str("<div class=\"legend\">\n");
    for phase in PhaseKind::ALL {
        let _ = write!(page, "<span><i class=\"sw {}\"></i>{}</span>", phase.class(), phase.label());
    }
    page.push_str("<span><i class=\"sw p-run fw\"></i>firewall</span>");
    page.push_str("<span><i class=\"sw p-run dead\"></i>dead</span>");
    for (kind, label) in [
        (FaultKind::Datacenter, "datacenter fault"),
        (FaultKind::Capacity, "capacity limit"),
        (FaultKind::Operator, "operator fault"),
    ] {
        let _ = write!(page, "<span><i class=\"sw {}\"></i>{label}</span>", kind.class());
    }
    let kinds: Vec<EventKind> = {
        let mut kinds: Vec<EventKind> = record.events.iter().map(|e| e.kind).collect();
        kinds.sort();
        kinds.dedup();
        kinds
    };
    for kind in kinds {
        let _ = write!(page, "<span><i class=\"dot {}\"></i>{}</span>", kind.class(), kind.label());
    }
    page.push_str("<span><i class=\"stepline\"></i>step</span>\n</div>\n");
}

/// Groups step markers that would overlap: (x, first index, last index).
fn step_groups(steps: &[StepMarker], scale: Scale) -> Vec<(f64, usize, usize)> {
    let mut groups: Vec<(f64, usize, usize)> = Vec::new();
    for (index, step) in steps.iter().enumerate() {
        let x = scale.x(step.start);
        match groups.last_mut() {
            Some((gx, _, last)) if x - *gx < 16.0 => *last = index,
            _ => groups.push((x, index, index)),
        }
    }
    groups
}

fn step_lines(page: &mut String, record: &RunRecord, scale: Scale, top: f64, bottom: f64, labels: bool) {
    for (x, first, last) in step_groups(&record.steps, scale) {
        let group = &record.steps[first..=last];
        let failed = group.iter().any(|s| s.outcome == StepOutcome::Failed);
        let title: Vec<String> =
            group.iter().map(|s| format!("step {} at {}: {}", s.number, clock(s.start), s.label)).collect();
        let numbers = if first == last {
            record.steps[first].number.to_string()
        } else {
            format!("{}-{}", record.steps[first].number, record.steps[last].number)
        };
        let ids: Vec<String> = group.iter().map(|s| format!("s{}", s.number)).collect();
        let _ = write!(
            page,
            "<g class=\"step{}\" data-steps=\"{}\"><title>{}</title><line x1=\"{x}\" y1=\"{top}\" x2=\"{x}\" y2=\"{bottom}\"/>",
            if failed { " failed" } else { "" },
            ids.join(" "),
            escape(&title.join("\n")),
            x = num(x),
            top = num(top),
            bottom = num(bottom)
        );
        if labels {
            // Near the right edge the label goes left of its line.
            let (anchor, at) = if x > WIDTH - MARGIN - 40.0 { ("end", x - 2.0) } else { ("start", x + 2.0) };
            let _ = write!(
                page,
                "<text class=\"steplabel\" text-anchor=\"{anchor}\" x=\"{}\" y=\"12\">{}</text>",
                num(at),
                escape(&numbers)
            );
        }
        page.push_str("</g>\n");
    }
}

fn time_grid(page: &mut String, scale: Scale, top: f64, bottom: f64, labels: Option<f64>) {
    let tick = scale.tick();
    let mut at = 0;
    while at <= scale.duration {
        let x = num(scale.x(at));
        let _ = write!(
            page,
            "<line class=\"grid\" x1=\"{x}\" y1=\"{}\" x2=\"{x}\" y2=\"{}\"/>",
            num(top),
            num(bottom)
        );
        if let Some(y) = labels {
            let _ = write!(page, "<text class=\"tick\" x=\"{x}\" y=\"{}\">{}</text>", num(y), clock(at));
        }
        at += tick;
    }
    page.push('\n');
}

/// Lanes of faults: one per label, in order of first appearance.
fn fault_lanes(record: &RunRecord) -> Vec<(String, FaultKind)> {
    let mut lanes: Vec<(String, FaultKind)> = Vec::new();
    for fault in &record.faults {
        if !lanes.iter().any(|(label, _)| *label == fault.label) {
            lanes.push((fault.label.clone(), fault.kind));
        }
    }
    lanes
}

fn timeline(page: &mut String, record: &RunRecord, scale: Scale) {
    let lanes = fault_lanes(record);
    let (active, idle): (Vec<&MachineRow>, Vec<&MachineRow>) =
        record.machines.iter().partition(|m| m.was_allocated());
    let axis = 32.0;
    let faults_top = axis + 6.0;
    let events_top = faults_top + lanes.len() as f64 * (LANE + LANE_GAP) + 4.0;
    let rows_top = events_top + LANE + 10.0;
    let rows = active.len() + usize::from(!idle.is_empty());
    let rows_bottom = rows_top + rows as f64 * (ROW + ROW_GAP);
    let height = rows_bottom + 6.0;
    let _ = write!(
        page,
        "<svg id=\"timeline\" class=\"chart\" viewBox=\"0 0 {WIDTH} {h}\" width=\"{WIDTH}\" height=\"{h}\" role=\"img\" aria-label=\"machine phases over virtual time\">\n\
         <defs><pattern id=\"hatch-fw\" width=\"6\" height=\"6\" patternUnits=\"userSpaceOnUse\" patternTransform=\"rotate(45)\"><rect width=\"2\" height=\"6\" fill=\"#000\" fill-opacity=\"0.28\"/></pattern>\
         <pattern id=\"hatch-dead\" width=\"4\" height=\"4\" patternUnits=\"userSpaceOnUse\" patternTransform=\"rotate(-45)\"><rect width=\"2\" height=\"4\" fill=\"#111\" fill-opacity=\"0.75\"/></pattern></defs>\n",
        h = num(height)
    );
    time_grid(page, scale, axis - 6.0, rows_bottom, Some(axis - 10.0));
    // Fault shading over everything below the lanes: the union of the spans of each kind.
    for (kind, start, end) in shaded(record) {
        let (x1, x2) = (scale.x(start), scale.x(end));
        let _ = write!(
            page,
            "<rect class=\"shade {}\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\"/>",
            kind.class(),
            num(x1),
            num(events_top),
            num((x2 - x1).max(1.0)),
            num(rows_bottom - events_top)
        );
    }
    page.push('\n');
    for (index, (label, kind)) in lanes.iter().enumerate() {
        let y = faults_top + index as f64 * (LANE + LANE_GAP);
        let _ = write!(
            page,
            "<g class=\"lane\"><text class=\"lanelabel\" x=\"{}\" y=\"{}\">{}<title>{}</title></text>",
            num(LABELS - 8.0),
            num(y + LANE - 2.0),
            escape(&truncate(label, 40)),
            escape(label)
        );
        for fault in record.faults.iter().filter(|f| f.label == *label) {
            let (x1, x2) = (scale.x(fault.start), scale.x(fault.end));
            let _ = write!(
                page,
                "<rect class=\"fault {}\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{LANE}\"><title>{}</title></rect>",
                kind.class(),
                num(x1),
                num(y),
                num((x2 - x1).max(1.5)),
                escape(&format!(
                    "{label}{}{}: {} to {} ({})",
                    if fault.detail.is_empty() { "" } else { " " },
                    fault.detail,
                    clock(fault.start),
                    clock(fault.end),
                    span(fault.end - fault.start)
                ))
            );
        }
        page.push_str("</g>\n");
    }
    // Events lane.
    let _ = write!(
        page,
        "<text class=\"lanelabel\" x=\"{}\" y=\"{}\">disturbances and findings</text>",
        num(LABELS - 8.0),
        num(events_top + LANE - 2.0)
    );
    for event in &record.events {
        let x = scale.x(event.at);
        let y = events_top + LANE / 2.0;
        let _ = write!(
            page,
            "<path class=\"ev {}\" d=\"M{} {}l5 -6l5 6l-5 6z\"><title>{}</title></path>",
            event.kind.class(),
            num(x - 5.0),
            num(y),
            escape(&format!("{} {}: {}", clock(event.at), event.kind.label(), event.message))
        );
    }
    page.push('\n');
    for (index, machine) in active.iter().enumerate() {
        let y = rows_top + index as f64 * (ROW + ROW_GAP);
        machine_row(page, record, machine, y, scale);
    }
    if !idle.is_empty() {
        let y = rows_top + active.len() as f64 * (ROW + ROW_GAP);
        let ids: Vec<&str> = idle.iter().map(|m| m.id.as_str()).collect();
        let _ = writeln!(
            page,
            "<g class=\"mrow idle\"><title>{}</title><text class=\"rowlabel\" x=\"{}\" y=\"{}\">{} machines never allocated</text>\
             <rect class=\"seg p-free\" x=\"{LABELS}\" y=\"{}\" width=\"{}\" height=\"{ROW}\"/></g>",
            escape(&format!("never allocated, free the whole run: {}", ids.join(", "))),
            num(LABELS - 8.0),
            num(y + ROW - 3.0),
            idle.len(),
            num(y),
            num(Scale::plot_width())
        );
    }
    step_lines(page, record, scale, 16.0, rows_bottom, true);
    page.push_str("</svg>\n");
}

/// The time ranges in which faults of each kind were in force (overlapping spans merged).
fn shaded(record: &RunRecord) -> Vec<(FaultKind, Millis, Millis)> {
    let mut by_kind: BTreeMap<FaultKind, Vec<(Millis, Millis)>> = BTreeMap::new();
    for fault in &record.faults {
        by_kind.entry(fault.kind).or_default().push((fault.start, fault.end));
    }
    let mut merged = Vec::new();
    for (kind, mut spans) in by_kind {
        spans.sort();
        let mut current: Option<(Millis, Millis)> = None;
        for (start, end) in spans {
            current = match current {
                Some((s, e)) if start <= e => Some((s, e.max(end))),
                Some((s, e)) => {
                    merged.push((kind, s, e));
                    Some((start, end))
                }
                None => Some((start, end)),
            };
        }
        merged.extend(current.map(|(s, e)| (kind, s, e)));
    }
    merged
}

fn machine_row(page: &mut String, record: &RunRecord, machine: &MachineRow, y: f64, scale: Scale) {
    let names = machine.allocation_names();
    let firewall = machine.was_firewall();
    let _ = write!(
        page,
        "<g class=\"mrow{}\" data-machine=\"{}\"><text class=\"rowlabel\" x=\"{}\" y=\"{}\"><title>{}</title>{}<tspan class=\"id\"> {}</tspan></text>",
        if firewall { " firewall" } else { "" },
        escape(&machine.id),
        num(LABELS - 8.0),
        num(y + ROW - 3.0),
        escape(&format!(
            "machine {} (rack {}){}{}",
            machine.id,
            machine.rack,
            if names.is_empty() { "" } else { ": " },
            names.join(", ")
        )),
        escape(&truncate(&names.join(", "), 34)),
        escape(short_id(&machine.id)),
    );
    for segment in &machine.segments {
        segment_rect(page, machine, segment, y, scale);
    }
    for event in record.events.iter().filter(|e| e.machine.as_deref() == Some(machine.id.as_str())) {
        let x = scale.x(event.at);
        let _ = write!(
            page,
            "<path class=\"mark {}\" d=\"M{} {}l8 8m0 -8l-8 8\"><title>{}</title></path>",
            event.kind.class(),
            num(x - 4.0),
            num(y + 3.0),
            escape(&format!("{} {}: {}", clock(event.at), event.kind.label(), event.message))
        );
    }
    page.push_str("</g>\n");
}

fn segment_rect(page: &mut String, machine: &MachineRow, segment: &Segment, y: f64, scale: Scale) {
    let (x1, x2) = (scale.x(segment.start), scale.x(segment.end));
    if x2 <= x1 && segment.end > segment.start {
        return;
    }
    let width = num((x2 - x1).max(0.6));
    let state = &segment.state;
    let mut title = format!("{}: {}", machine.id, state.phase.label());
    if let Some(event) = &state.event {
        let _ = write!(title, ", last event {event}");
    }
    if let Some(name) = &state.allocation {
        let role = if state.role == Some(Role::Firewall) { "firewall" } else { "machine" };
        let _ = write!(title, ", {role} {name}");
    }
    if state.dead {
        title.push_str(", DEAD");
    }
    let _ = write!(
        title,
        "\n{} to {} ({})",
        clock(segment.start),
        clock(segment.end),
        span(segment.end - segment.start)
    );
    let _ = write!(
        page,
        "<rect class=\"seg {}\" x=\"{}\" y=\"{}\" width=\"{width}\" height=\"{ROW}\"><title>{}</title></rect>",
        state.phase.class(),
        num(x1),
        num(y),
        escape(&title)
    );
    for (on, pattern) in [(state.role == Some(Role::Firewall), "hatch-fw"), (state.dead, "hatch-dead")] {
        if on {
            let _ = write!(
                page,
                "<rect class=\"overlay\" fill=\"url(#{pattern})\" x=\"{}\" y=\"{}\" width=\"{width}\" height=\"{ROW}\"/>",
                num(x1),
                num(y)
            );
        }
    }
}

fn call_chart(page: &mut String, record: &RunRecord, scale: Scale) {
    let mut totals: BTreeMap<&str, u64> = BTreeMap::new();
    for per_operation in record.calls_per_minute.values() {
        for (operation, count) in per_operation {
            *totals.entry(operation.as_str()).or_default() += count;
        }
    }
    let mut ranked: Vec<(&str, u64)> = totals.iter().map(|(op, n)| (*op, *n)).collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let colour_of = |operation: &str| {
        ranked
            .iter()
            .position(|(op, _)| *op == operation)
            .and_then(|index| OPERATION_COLOURS.get(index))
            .copied()
            .unwrap_or(OTHER_COLOUR)
    };
    let peak = record.calls_per_minute.values().map(|m| m.values().sum::<u64>()).max().unwrap_or(0);
    let top_value = nice_ceiling(peak.max(1));
    let (top, plot) = (10.0, 150.0);
    let bottom = top + plot;
    let height = bottom + 24.0;
    let _ = writeln!(
        page,
        "<svg id=\"calls\" class=\"chart\" viewBox=\"0 0 {WIDTH} {h}\" width=\"{WIDTH}\" height=\"{h}\" role=\"img\" aria-label=\"metal-api calls per virtual minute\">",
        h = num(height)
    );
    time_grid(page, scale, top, bottom, Some(bottom + 16.0));
    for fraction in [0.0, 0.5, 1.0] {
        let y = bottom - plot * fraction;
        let _ = write!(
            page,
            "<line class=\"hgrid\" x1=\"{LABELS}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\"/><text class=\"ytick\" x=\"{}\" y=\"{}\">{}</text>",
            num(WIDTH - MARGIN),
            num(LABELS - 8.0),
            num(y + 4.0),
            (top_value as f64 * fraction).round() as u64,
            y = num(y)
        );
    }
    let _ = writeln!(
        page,
        "<text class=\"lanelabel\" x=\"{}\" y=\"{}\">calls per minute (total {})</text>",
        num(LABELS - 40.0),
        num(top + plot / 2.0),
        totals.values().sum::<u64>()
    );
    for (minute, per_operation) in &record.calls_per_minute {
        let start = minute * 60_000;
        let (x1, x2) = (scale.x(start), scale.x(start + 60_000));
        let width = (x2 - x1 - 0.5).max(0.8);
        let mut stacked: Vec<(&str, u64)> = per_operation.iter().map(|(op, n)| (op.as_str(), *n)).collect();
        stacked.sort_by_key(|(op, _)| ranked.iter().position(|(r, _)| r == op).unwrap_or(usize::MAX));
        let total: u64 = stacked.iter().map(|(_, n)| n).sum();
        let detail: Vec<String> = stacked.iter().map(|(op, n)| format!("{op} {n}")).collect();
        let _ = write!(
            page,
            "<g class=\"bar\"><title>{}</title>",
            escape(&format!(
                "minute {} to {}: {total} calls\n{}",
                clock(start),
                clock(start + 60_000),
                detail.join("\n")
            ))
        );
        let mut y = bottom;
        for (operation, count) in stacked {
            let h = plot * count as f64 / top_value as f64;
            y -= h;
            let _ = write!(
                page,
                "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{}\"/>",
                num(x1),
                num(y),
                num(width),
                num(h),
                colour_of(operation)
            );
        }
        page.push_str("</g>\n");
    }
    step_lines(page, record, scale, top, bottom, false);
    page.push_str("</svg>\n<div class=\"legend ops\">");
    for (index, (operation, count)) in ranked.iter().enumerate() {
        let colour = OPERATION_COLOURS.get(index).copied().unwrap_or(OTHER_COLOUR);
        let _ = write!(
            page,
            "<span><i class=\"sw\" style=\"background:{colour}\"></i>{} ({count})</span>",
            escape(operation)
        );
    }
    if ranked.is_empty() {
        page.push_str("<span>no metal-api calls</span>");
    }
    page.push_str("</div>\n");
}

/// 1, 2, 5 × 10^n at or above `value`.
fn nice_ceiling(value: u64) -> u64 {
    let mut base = 1;
    loop {
        for factor in [1, 2, 5] {
            if base * factor >= value {
                return base * factor;
            }
        }
        base = base.saturating_mul(10);
        if base == u64::MAX {
            return value;
        }
    }
}

fn checks(page: &mut String, record: &RunRecord) {
    page.push_str("<h2>Checks</h2>\n<ul id=\"checks\" class=\"checks\">\n");
    for check in &record.checks {
        let (class, mark) = if check.passed { ("pass", "\u{2713}") } else { ("fail", "\u{2717}") };
        let _ = write!(page, "<li class=\"{class}\"><b>{mark} {}</b>", escape(&check.name));
        if !check.messages.is_empty() {
            page.push_str("<ul>");
            for message in &check.messages {
                let _ = write!(page, "<li>{}</li>", escape(message));
            }
            page.push_str("</ul>");
        }
        page.push_str("</li>\n");
    }
    page.push_str("</ul>\n");
}

fn steps_table(page: &mut String, record: &RunRecord) {
    page.push_str(
        "<h2>Steps</h2>\n<table id=\"steps\" class=\"list\">\n<thead><tr><th>#</th><th>at</th><th>took</th><th>result</th><th>step</th></tr></thead>\n<tbody>\n",
    );
    for step in &record.steps {
        let (class, result) = match step.outcome {
            StepOutcome::Passed => ("pass", "passed"),
            StepOutcome::Failed => ("fail", "FAILED"),
            StepOutcome::NotRun => ("notrun", "not run"),
        };
        let _ = writeln!(
            page,
            "<tr class=\"{class}\" data-step=\"s{}\"><td>{}</td><td>{}</td><td>{}</td><td>{result}</td><td><code>{}</code>{}</td></tr>",
            step.number,
            step.number,
            clock(step.start),
            span(step.end - step.start),
            escape(&step.label),
            step.reason
                .as_deref()
                .map(|r| format!("<div class=\"reason\">{}</div>", escape(r)))
                .unwrap_or_default()
        );
    }
    page.push_str("</tbody>\n</table>\n");
}

fn faults_table(page: &mut String, record: &RunRecord) {
    page.push_str("<h2>Faults</h2>\n");
    if record.faults.is_empty() {
        page.push_str("<p>No faults were in force.</p>\n");
        return;
    }
    page.push_str(
        "<table id=\"faults\" class=\"list\">\n<thead><tr><th>from</th><th>to</th><th>fault</th><th>detail</th></tr></thead>\n<tbody>\n",
    );
    for fault in &record.faults {
        let _ = writeln!(
            page,
            "<tr><td>{}</td><td>{}</td><td><i class=\"sw {}\"></i>{}</td><td>{}</td></tr>",
            clock(fault.start),
            clock(fault.end),
            fault.kind.class(),
            escape(&fault.label),
            escape(&fault.detail)
        );
    }
    page.push_str("</tbody>\n</table>\n");
}

fn events_table(page: &mut String, record: &RunRecord) {
    let _ = writeln!(page, "<h2>Disturbances and findings ({})</h2>", record.events.len());
    if record.events.is_empty() {
        page.push_str("<p>None.</p>\n");
        return;
    }
    page.push_str(
        "<details open><summary>show</summary><table id=\"events\" class=\"list\">\n<thead><tr><th>at</th><th>what</th><th>message</th></tr></thead>\n<tbody>\n",
    );
    for event in &record.events {
        let _ = writeln!(
            page,
            "<tr><td>{}</td><td><i class=\"dot {}\"></i>{}</td><td>{}</td></tr>",
            clock(event.at),
            event.kind.class(),
            event.kind.label(),
            escape(&event.message)
        );
    }
    page.push_str("</tbody>\n</table></details>\n");
}

fn facts(page: &mut String, record: &RunRecord) {
    page.push_str("<h2>Facts</h2>\n<table class=\"meta\">\n");
    for (label, value) in &record.facts {
        let _ = writeln!(page, "<tr><th>{}</th><td><code>{}</code></td></tr>", escape(label), escape(value));
    }
    page.push_str("</table>\n");
}

const CSS: &str = r#"body{font:13px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:16px 20px;color:#212529;background:#fff}
h1{font-size:20px;margin:0 0 4px}h2{font-size:15px;margin:18px 0 6px;border-bottom:1px solid #dee2e6}
code{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:12px;background:#f1f3f5;padding:0 3px;border-radius:3px}
.badge{display:inline-block;padding:1px 8px;border-radius:4px;color:#fff;font-size:14px;vertical-align:2px}
.badge.pass{background:#2f9e44}.badge.fail{background:#e03131}
.outcome{margin:2px 0 6px;font-weight:600}.outcome.pass{color:#2b8a3e}.outcome.fail{color:#c92a2a}
table.meta th{text-align:left;font-weight:600;padding:0 12px 0 0;color:#495057}table.meta td{padding:0}
.legend{display:flex;flex-wrap:wrap;gap:4px 14px;margin:6px 0;font-size:12px}.legend span{white-space:nowrap}
.sw{display:inline-block;width:14px;height:10px;margin-right:4px;vertical-align:-1px;border:1px solid rgba(0,0,0,.15)}
.dot{display:inline-block;width:9px;height:9px;margin-right:4px;transform:rotate(45deg);vertical-align:0}
.stepline{display:inline-block;width:0;height:11px;border-left:2px dashed #343a40;margin:0 5px -1px 2px}
.sw.fw{background-image:repeating-linear-gradient(45deg,rgba(0,0,0,.3) 0 2px,transparent 2px 5px)}
.sw.dead{background-image:repeating-linear-gradient(-45deg,rgba(0,0,0,.75) 0 2px,transparent 2px 4px)}
svg.chart{display:block;max-width:100%;height:auto;font-size:11px}
.p-free{fill:#dee2e6;background:#dee2e6}.p-prov{fill:#fab005;background:#fab005}.p-run{fill:#40c057;background:#40c057}
.p-crash{fill:#e03131;background:#e03131}.p-reclaim{fill:#9775fa;background:#9775fa}
.f-dc{fill:#f76707;background:#f76707}.f-cap{fill:#1c7ed6;background:#1c7ed6}.f-op{fill:#ae3ec9;background:#ae3ec9}
rect.shade{fill-opacity:.09;pointer-events:none}rect.fault{fill-opacity:.85}rect.overlay{pointer-events:none}
.e-died{fill:#212529;stroke:#212529;background:#212529}.e-free{fill:#1c7ed6;stroke:#1c7ed6;background:#1c7ed6}
.e-crash{fill:#ae3ec9;stroke:#ae3ec9;background:#ae3ec9}.e-heal{fill:#2f9e44;stroke:#2f9e44;background:#2f9e44}
.e-viol{fill:#e03131;stroke:#e03131;background:#e03131}path.mark{stroke-width:2;fill:none}
line.grid{stroke:#e9ecef}line.hgrid{stroke:#e9ecef}text.tick{fill:#868e96;text-anchor:middle}
text.ytick,text.lanelabel,text.rowlabel{fill:#495057;text-anchor:end}text.rowlabel .id{fill:#868e96;font-family:ui-monospace,"DejaVu Sans Mono",monospace}
g.mrow.firewall text.rowlabel{font-weight:600}g.mrow:hover rect.seg{stroke:#212529;stroke-width:.6}
g.step line{stroke:#343a40;stroke-width:1;stroke-dasharray:3 3;stroke-opacity:.55}g.step.failed line{stroke:#e03131;stroke-opacity:1;stroke-width:2}
g.step text{fill:#343a40;font-weight:600}g.step.failed text{fill:#e03131}
g.step.hl line{stroke:#1c7ed6;stroke-width:3;stroke-opacity:1;stroke-dasharray:none}
ul.checks{list-style:none;padding-left:4px}ul.checks>li{margin:3px 0}ul.checks li.pass>b{color:#2b8a3e}ul.checks li.fail>b{color:#c92a2a}
ul.checks ul{margin:2px 0 4px 18px;padding:0;color:#495057}
table.list{border-collapse:collapse;font-size:12px}table.list th,table.list td{border-bottom:1px solid #e9ecef;padding:2px 8px;text-align:left;vertical-align:top}
table.list tr.fail td{background:#fff5f5}table.list tr.notrun td{color:#adb5bd}table.list tr.hl td{background:#e7f5ff}
.reason{color:#c92a2a}footer{margin-top:20px;color:#868e96;font-size:11px}
#capms-report-error{position:fixed;top:0;left:0;right:0;background:#e03131;color:#fff;padding:4px 8px}
"#;

const SCRIPT: &str = r##"(function () {
  "use strict";
  window.addEventListener("error", function (event) {
    var box = document.getElementById("capms-report-error");
    if (!box) {
      box = document.createElement("div");
      box.id = "capms-report-error";
      document.body.appendChild(box);
    }
    box.textContent = "report script error: " + (event && event.message ? event.message : "unknown");
  });
  function highlight(step, on) {
    var groups = document.querySelectorAll("g.step");
    for (var i = 0; i < groups.length; i++) {
      var steps = (groups[i].getAttribute("data-steps") || "").split(" ");
      if (steps.indexOf(step) >= 0) {
        groups[i].classList.toggle("hl", on);
      }
    }
  }
  var rows = document.querySelectorAll("#steps tr[data-step]");
  for (var i = 0; i < rows.length; i++) {
    (function (row) {
      var step = row.getAttribute("data-step");
      row.addEventListener("mouseenter", function () { highlight(step, true); row.classList.add("hl"); });
      row.addEventListener("mouseleave", function () { highlight(step, false); row.classList.remove("hl"); });
    })(rows[i]);
  }
  var done = document.createElement("div");
  done.id = "capms-report-rendered";
  done.hidden = true;
  done.setAttribute("data-machine-rows", String(document.querySelectorAll("g.mrow").length));
  done.setAttribute("data-steps", String(rows.length));
  document.body.appendChild(done);
})();
"##;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(escape("<a href=\"x\">'&'</a>"), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
    }

    #[test]
    fn nice_ceilings() {
        assert_eq!(nice_ceiling(1), 1);
        assert_eq!(nice_ceiling(3), 5);
        assert_eq!(nice_ceiling(11), 20);
        assert_eq!(nice_ceiling(500), 500);
        assert_eq!(nice_ceiling(501), 1000);
    }

    #[test]
    fn clocks_and_spans() {
        assert_eq!(clock(3_723_000), "1:02:03");
        assert_eq!(span(59_999), "59s");
        assert_eq!(span(125_000), "2m 5s");
        assert_eq!(span(7_380_000), "2h 3m");
        assert_eq!(short_id("00000000-0000-0000-0000-00000000000a"), "00000000000a");
    }
}

//! `capms-sim explore`'s progress on stderr, a module of the binary (never of the library: it
//! reads the wall clock). On a terminal, a bar with the seeds done, failures, the rate in runs
//! per second and the time left; otherwise (CI logs, pipes, files) a plain line at every tenth
//! of the sweep and at least once a minute, so a log gets about ten lines however long the sweep.
//! Either way a failing seed is announced as soon as it is found; the details follow in the
//! summary on stdout.

use capms_sim_scenarios::explore::Found;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use std::io::IsTerminal as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Longest time between two plain progress lines.
const LINE_INTERVAL: Duration = Duration::from_secs(60);

/// Plain progress lines per sweep, apart from the minute lines of long sweeps.
const LINE_STEPS: u64 = 10;

/// Progress of a sweep of `total` seeds, shared by the explorer's threads.
#[derive(Debug)]
pub struct Progress {
    total: u64,
    started: Instant,
    done: AtomicU64,
    failed: AtomicU64,
    output: Output,
}

#[derive(Debug)]
enum Output {
    Bar(ProgressBar),
    Lines(Mutex<Lines>),
}

#[derive(Debug)]
struct Lines {
    /// When the last line was printed, since the start.
    last: Duration,
    /// The next tenth of the sweep (1..=LINE_STEPS) that gets a line.
    next_step: u64,
}

impl Progress {
    /// Starts the clock; a bar when stderr is a terminal, plain lines otherwise.
    #[allow(clippy::disallowed_methods, reason = "progress of the binary's sweep: wall time, rate, ETA")]
    pub fn start(total: u64) -> Progress {
        let started = Instant::now();
        let output = if std::io::stderr().is_terminal() {
            Output::Bar(bar(total))
        } else {
            Output::Lines(Mutex::new(Lines { last: Duration::ZERO, next_step: 1 }))
        };
        Progress { total, started, done: AtomicU64::new(0), failed: AtomicU64::new(0), output }
    }

    /// Wall time since [`Progress::start`].
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// One seed finished, with its failure if it failed.
    pub fn seed_done(&self, seed: u64, failure: Option<&Found>) {
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        let failed = self.failed.fetch_add(u64::from(failure.is_some()), Ordering::Relaxed)
            + u64::from(failure.is_some());
        let notice = failure.map(|found| format!("seed {seed} failed: {}", found.reason));
        match &self.output {
            Output::Bar(bar) => {
                if let Some(notice) = notice {
                    bar.println(notice);
                    bar.set_message(format!("{failed} failed"));
                }
                bar.inc(1);
            }
            Output::Lines(lines) => {
                if let Some(notice) = notice {
                    eprintln!("explore: {notice}");
                }
                let Ok(mut lines) = lines.lock() else { return };
                let elapsed = self.started.elapsed();
                let step_reached = u128::from(done) * u128::from(LINE_STEPS)
                    >= u128::from(lines.next_step) * u128::from(self.total);
                if step_reached || elapsed.saturating_sub(lines.last) >= LINE_INTERVAL {
                    eprintln!("explore: {}", self.line(done, failed, elapsed));
                    lines.last = elapsed;
                    while lines.next_step <= LINE_STEPS
                        && u128::from(done) * u128::from(LINE_STEPS)
                            >= u128::from(lines.next_step) * u128::from(self.total)
                    {
                        lines.next_step += 1;
                    }
                }
            }
        }
    }

    /// Removes the bar (the summary follows on stdout).
    pub fn finish(&self) {
        if let Output::Bar(bar) = &self.output {
            bar.finish_and_clear();
        }
    }

    /// `1000/5000 seeds (20 %), 0 failed, 38 s, 26.3 runs/s, about 2m 32s left`
    fn line(&self, done: u64, failed: u64, elapsed: Duration) -> String {
        let seconds = elapsed.as_secs_f64();
        let rate = done as f64 / seconds.max(1e-9);
        let percent = if self.total == 0 { 100 } else { u128::from(done) * 100 / u128::from(self.total) };
        let left = self.total.saturating_sub(done);
        let eta = if left == 0 {
            "done".to_string()
        } else if done == 0 {
            "time left unknown".to_string()
        } else {
            format!("about {} left", short_duration(left as f64 / rate))
        };
        format!(
            "{done}/{} seeds ({percent} %), {failed} failed, {}, {rate:.1} runs/s, {eta}",
            self.total,
            short_duration(seconds)
        )
    }
}

/// The terminal's bar: `[00:01:12] ██████░░░░ 1881/5000 seeds  26.1 runs/s  ETA 2m 00s  0 failed`.
fn bar(total: u64) -> ProgressBar {
    let style = ProgressStyle::with_template(
        "[{elapsed_precise}] {wide_bar} {pos}/{len} seeds  {rate}  ETA {left}  {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .with_key("rate", |state: &ProgressState, out: &mut dyn std::fmt::Write| {
        let _ = write!(out, "{:.1} runs/s", average_rate(state));
    })
    .with_key("left", |state: &ProgressState, out: &mut dyn std::fmt::Write| {
        let rate = average_rate(state);
        let left = state.len().unwrap_or(0).saturating_sub(state.pos());
        let _ =
            if rate > 0.0 { write!(out, "{}", short_duration(left as f64 / rate)) } else { write!(out, "-") };
    })
    .progress_chars("█▓░");
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr()).with_style(style);
    bar.set_message("0 failed");
    // Redraws while a slow seed (a failure being shrunk) holds every thread.
    bar.enable_steady_tick(Duration::from_secs(1));
    bar
}

/// Runs per second since the start: steadier than a recent-rate estimate, as seeds differ in cost.
fn average_rate(state: &ProgressState) -> f64 {
    let seconds = state.elapsed().as_secs_f64();
    if seconds > 0.0 { state.pos() as f64 / seconds } else { 0.0 }
}

/// `38 s`, `2m 32s`, `3h 05m`.
pub fn short_duration(seconds: f64) -> String {
    let whole = seconds.max(0.0).round() as u64;
    match whole {
        0..60 => format!("{seconds:.1} s"),
        60..3600 => format!("{}m {:02}s", whole / 60, whole % 60),
        _ => format!("{}h {:02}m", whole / 3600, whole % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::short_duration;

    #[test]
    fn durations_are_short() {
        assert_eq!(short_duration(0.04), "0.0 s");
        assert_eq!(short_duration(38.26), "38.3 s");
        assert_eq!(short_duration(152.4), "2m 32s");
        assert_eq!(short_duration(3600.0 * 3.0 + 300.0), "3h 05m");
    }
}

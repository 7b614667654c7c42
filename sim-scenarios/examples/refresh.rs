//! Compares capms's refresh policy with the Go provider's (a GET per machine every 30 s); a
//! thin wrapper around `capms-sim bench` (see `capms_sim_scenarios::bench`), kept so the old
//! command still works: one 3+3 cluster per world, SEEDS worlds per policy.
//!
//! ```text
//! cargo run --release -p capms-sim-scenarios --example refresh -- [SEEDS]
//! ```

use capms_sim_scenarios::bench::{self, BenchOptions};
use std::process::ExitCode;

fn main() -> ExitCode {
    let runs = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(20);
    bench::cli(BenchOptions { clusters: 1, runs, seed: 0 })
}

//! `capms-sim serve`: the simulated metal-api on a socket, in real time, for a real operator,
//! `metal-python`, `curl` or the wire proofs in `scripts/wire-proof`.

use capms_backend_sim::http::{ServerClock, ServerConfig, serve_with_shutdown};
use capms_backend_sim::{PartitionSpec, ProvisioningTimes, Sim, SimBuilder};
use jiff::Timestamp;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

/// Everything `capms-sim serve` can be told. Defaults are mini-lab's, so that a client
/// configured for mini-lab works unchanged apart from the URL.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Seed of the datacenter's one RNG (machine ids, IPs, jitter).
    pub seed: u64,
    /// Keys, token, base path and clock of the HTTP front.
    pub server: ServerConfig,
    /// Machines of size `v1-small-x86` in partition `mini-lab`.
    pub machines: usize,
    /// From allocation to `Phoned Home`.
    pub provisioning: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            seed: 1,
            server: ServerConfig { clock: ServerClock::WallClock { speedup: 1 }, ..ServerConfig::default() },
            machines: 8,
            provisioning: ProvisioningTimes::default().provisioning,
        }
    }
}

impl ServeOptions {
    /// The datacenter to serve. Its virtual clock starts at the wall clock's now so that
    /// timestamps in answers look current to an operator; the event log is not kept (only its
    /// hash), so a server that runs for days does not grow.
    pub fn build_sim(&self) -> Sim {
        let times = ProvisioningTimes { provisioning: self.provisioning, ..ProvisioningTimes::default() };
        SimBuilder::new()
            .seed(self.seed)
            .start(wall_clock_now())
            .partition(PartitionSpec::mini_lab("mini-lab", self.machines))
            .provisioning(times)
            .keep_log(false)
            .check_invariants(false)
            .build()
    }

    /// A one-line description for the start-up message (no keys).
    pub fn describe(&self, address: SocketAddr) -> String {
        let speed = match self.server.clock {
            ServerClock::Virtual => "virtual clock".to_string(),
            ServerClock::WallClock { speedup } => format!("wall clock ×{speedup}"),
        };
        format!(
            "simulated metal-api on http://{address}{}/v1 (partition mini-lab, {} machines of v1-small-x86, \
             seed {}, provisioning {}s, {speed})",
            self.server.base_path.trim_end_matches('/'),
            self.machines,
            self.seed,
            self.provisioning.as_secs_f64(),
        )
    }
}

/// Serves `sim` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    sim: Sim,
    options: &ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with_shutdown(listener, sim, options.server.clone(), shutdown).await
}

#[allow(
    clippy::disallowed_methods,
    reason = "a served datacenter starts at the real now (ServerClock::WallClock)"
)]
fn wall_clock_now() -> Timestamp {
    Timestamp::now()
}

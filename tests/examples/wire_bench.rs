//! Requests per second and latency of `backend-metal` against `capms-sim serve` on loopback.
//!
//! ```text
//! cargo run --release -p capms-tests --example wire_bench -- [--requests 30000] [--concurrency 16]
//! cargo run --release -p capms-tests --example wire_bench -- --url http://127.0.0.1:8080/metal
//!     (with `capms-sim serve --machines 10000 --speedup 600` running)
//! ```
//!
//! Without `--url` it starts the same server as `capms-sim serve` (wall clock, mini-lab data and
//! keys) on its own runtime thread, with enough machines for the run. Each worker repeats the
//! mix: allocate an IP, get it, free it, allocate a machine, get it, free it; every answer must
//! be a success. It prints requests per second and p50/p99/max latency per operation and overall.

use capms_backend_metal::{HmacAuthType, MetalClient, MetalConfig};
use capms_backend_sim::{MINI_LAB_PARTITION, MINI_LAB_PROJECT, MINI_LAB_SIZE};
use capms_core::metal::{
    IpAllocateRequest, IpType, MachineAllocateRequest, NetworkAllocateRequest, NetworkRequest,
};
use capms_core::secret::SecretString;
use capms_core::{MetalBackend, Operation};
use capms_sim_scenarios::serve::ServeOptions;
use clap::Parser;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
struct Args {
    /// A running metal-api (e.g. `capms-sim serve --machines 10000`); default: start one.
    #[arg(long)]
    url: Option<String>,
    /// Total requests (rounded down to whole mixes of six).
    #[arg(long, default_value_t = 30_000)]
    requests: usize,
    /// Concurrent workers.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// The Metal-Edit HMAC key.
    #[arg(long, default_value = "metal-edit")]
    hmac_edit_key: String,
}

type Latencies = BTreeMap<Operation, Vec<Duration>>;

#[allow(clippy::print_stdout, reason = "a benchmark report")]
fn main() -> Result<(), String> {
    let args = Args::parse();
    let mixes = args.requests / 6;
    let concurrency = args.concurrency.max(1);
    let url = match &args.url {
        Some(url) => url.clone(),
        None => start_server(mixes + 16)?,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| error.to_string())?;
    let key = SecretString::new(args.hmac_edit_key.clone());
    let config = MetalConfig::new(url.clone()).with_hmac(key, HmacAuthType::Edit);
    let client = Arc::new(MetalClient::new(config).map_err(|error| error.to_string())?);
    println!("wire bench: {mixes} mixes of 6 requests, {concurrency} workers, against {url}");
    let (latencies, elapsed) = runtime.block_on(run(client, mixes, concurrency))?;
    report(&latencies, elapsed);
    Ok(())
}

/// Starts the simulated metal-api on its own runtime thread; answers its base URL. Its clock
/// runs 600 times faster than the wall, as with `capms-sim serve --speedup 600`, so that the
/// asynchronous IP release after a machine free (5 s) keeps up with thousands of frees.
fn start_server(machines: usize) -> Result<String, String> {
    let mut options = ServeOptions { machines, ..ServeOptions::default() };
    options.server.clock = capms_backend_sim::http::ServerClock::WallClock { speedup: 600 };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|error| error.to_string())?;
    listener.set_nonblocking(true).map_err(|error| error.to_string())?;
    let address = listener.local_addr().map_err(|error| error.to_string())?;
    let base = format!("http://{address}{}", options.server.base_path);
    std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_multi_thread().enable_all().build() else { return };
        runtime.block_on(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
            let sim = options.build_sim();
            let _ = capms_sim_scenarios::serve::serve(listener, sim, &options, std::future::pending()).await;
        });
    });
    Ok(base)
}

async fn run(
    client: Arc<MetalClient>,
    mixes: usize,
    concurrency: usize,
) -> Result<(Latencies, Duration), String> {
    let network_request = NetworkAllocateRequest {
        project_id: MINI_LAB_PROJECT.to_string(),
        partition_id: MINI_LAB_PARTITION.to_string(),
        name: "wire-bench".to_string(),
        ..NetworkAllocateRequest::default()
    };
    let network = client.allocate_network(&network_request).await.map_err(|error| error.to_string())?;
    let started = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..concurrency {
        let share = mixes / concurrency + usize::from(worker < mixes % concurrency);
        let client = client.clone();
        let network_id = network.id.clone();
        workers.push(tokio::spawn(async move { worker_loop(client, network_id, share).await }));
    }
    let mut latencies = Latencies::new();
    for worker in workers {
        let measured = worker.await.map_err(|error| error.to_string())??;
        for (operation, mut values) in measured {
            latencies.entry(operation).or_default().append(&mut values);
        }
    }
    Ok((latencies, started.elapsed()))
}

async fn worker_loop(
    client: Arc<MetalClient>,
    network_id: String,
    mixes: usize,
) -> Result<Latencies, String> {
    let mut latencies = Latencies::new();
    for _ in 0..mixes {
        one_mix(&client, &network_id, &mut latencies).await?;
    }
    Ok(latencies)
}

async fn timed<T, E: std::fmt::Display>(
    latencies: &mut Latencies,
    operation: Operation,
    call: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, String> {
    let started = Instant::now();
    let result = call.await;
    latencies.entry(operation).or_default().push(started.elapsed());
    result.map_err(|error| format!("{operation}: {error}"))
}

async fn one_mix(client: &MetalClient, network_id: &str, latencies: &mut Latencies) -> Result<(), String> {
    let ip_request = IpAllocateRequest {
        network_id: network_id.to_string(),
        project_id: MINI_LAB_PROJECT.to_string(),
        ip_type: IpType::Static,
        ..IpAllocateRequest::default()
    };
    let ip = timed(latencies, Operation::AllocateIp, client.allocate_ip(&ip_request)).await?;
    timed(latencies, Operation::FindIp, client.get_ip(&ip.address)).await?;
    timed(latencies, Operation::FreeIp, client.free_ip(&ip.address)).await?;
    let machine_request = MachineAllocateRequest {
        partition_id: MINI_LAB_PARTITION.to_string(),
        size_id: MINI_LAB_SIZE.to_string(),
        project_id: MINI_LAB_PROJECT.to_string(),
        image_id: "debian-13.0".to_string(),
        networks: vec![NetworkRequest::auto(network_id)],
        ..MachineAllocateRequest::default()
    };
    let machine =
        timed(latencies, Operation::AllocateMachine, client.allocate_machine(&machine_request)).await?;
    timed(latencies, Operation::FindMachine, client.get_machine(&machine.id)).await?;
    timed(latencies, Operation::FreeMachine, client.free_machine(&machine.id)).await?;
    Ok(())
}

#[allow(clippy::print_stdout, reason = "a benchmark report")]
fn report(latencies: &Latencies, elapsed: Duration) {
    let mut all: Vec<Duration> = latencies.values().flatten().copied().collect();
    let total = all.len();
    let rate = total as f64 / elapsed.as_secs_f64().max(1e-9);
    println!("{total} requests in {:.2}s: {rate:.0} requests/s", elapsed.as_secs_f64());
    println!("{:<18} {:>8} {:>9} {:>9} {:>9}", "operation", "count", "p50 ms", "p99 ms", "max ms");
    for (operation, values) in latencies {
        print_row(operation.operation_id(), &mut values.clone());
    }
    print_row("all", &mut all);
}

#[allow(clippy::print_stdout, reason = "a benchmark report")]
fn print_row(name: &str, values: &mut [Duration]) {
    values.sort();
    let at = |quantile: f64| {
        let index = ((values.len() as f64 - 1.0) * quantile).round() as usize;
        values.get(index).map(|value| value.as_secs_f64() * 1000.0).unwrap_or(0.0)
    };
    println!("{name:<18} {:>8} {:>9.2} {:>9.2} {:>9.2}", values.len(), at(0.5), at(0.99), at(1.0));
}

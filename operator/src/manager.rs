//! The manager: start-up checks, the metrics and probe endpoints, leader election, and the
//! controllers. [`run`] is what `capms-manager` runs and what the end-to-end tests run.

use crate::backend::{Backends, PartitionLimiter};
use crate::cli::{BackendKind, RunArgs, parse_bind_address};
use crate::clock::Clock;
use crate::controller::{self, Context, Scope};
use crate::metrics::Metrics;
use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use capms_backend_metal::{CaBundle, HmacAuthType, MetalClient, MetalConfig};
use capms_core::MetalBackend;
use capms_core::secret::SecretString;
use std::future::Future;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The name of the leader-election Lease.
pub const LEASE_NAME: &str = "capms-manager-leader";

/// Everything [`run`] needs besides the Kubernetes client and the default backend.
#[derive(Debug, Clone)]
pub struct Settings {
    pub scope: Scope,
    pub metrics_address: Option<SocketAddr>,
    pub health_address: Option<SocketAddr>,
    pub leader_elect: bool,
    pub leader_namespace: String,
    pub allocations_per_partition_max: usize,
    /// What "now" is for the reconcilers.
    pub clock: Clock,
    /// `--record-trace`: where reconciles are recorded, if anywhere.
    pub record_trace: Option<crate::trace::TraceSettings>,
}

impl Settings {
    pub fn from_args(args: &RunArgs) -> Result<Settings, String> {
        Ok(Settings {
            scope: Scope {
                namespace: given(args.namespace.as_deref()),
                watch_filter: given(args.watch_filter.as_deref()),
                concurrency: args.concurrency,
            },
            metrics_address: parse_bind_address(&args.metrics_bind_address)?,
            health_address: parse_bind_address(&args.health_probe_bind_address)?,
            leader_elect: args.leader_elect,
            leader_namespace: args
                .leader_elect_namespace
                .clone()
                .unwrap_or_else(|| "capms-system".to_string()),
            allocations_per_partition_max: args.allocations_per_partition_max,
            clock: Clock::wall(),
            record_trace: args
                .record_trace
                .clone()
                .map(|path| crate::trace::TraceSettings { path, max_bytes: args.record_trace_max_bytes }),
        })
    }
}

/// The manager's default backend, and for `--backend sim` the datacenter behind it (whose
/// clock the caller must drive with [`crate::clock::drive_sim`]).
pub struct DefaultBackend {
    pub backend: Arc<dyn MetalBackend>,
    pub sim: Option<capms_backend_sim::Sim>,
}

impl std::fmt::Debug for DefaultBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DefaultBackend").field("sim", &self.sim.is_some()).finish_non_exhaustive()
    }
}

/// The default backend from flags and environment. For `--backend metal`, the manager does not
/// start without METAL_API_URL and a key or token.
pub fn default_backend(args: &RunArgs) -> Result<DefaultBackend, String> {
    match args.backend {
        BackendKind::Sim => {
            let sim = capms_sim_options(args).build();
            let backend = Arc::new(sim.backend().with_latency_model(Arc::new(capms_backend_sim::Immediate)));
            Ok(DefaultBackend { backend, sim: Some(sim) })
        }
        BackendKind::Metal => Ok(DefaultBackend { backend: Arc::new(metal_backend(args)?), sim: None }),
    }
}

fn metal_backend(args: &RunArgs) -> Result<MetalClient, String> {
    let url = given(args.metal_api_url.as_deref()).ok_or(
        "METAL_API_URL is not set: set it (and METAL_API_HMAC or METAL_API_TOKEN) to metal-api's URL, \
         or use --backend sim to try capms without metal-stack",
    )?;
    let mut config = MetalConfig::new(url);
    let token = given(args.metal_api_token.as_ref().map(SecretString::expose));
    let key = given(args.metal_api_hmac.as_ref().map(SecretString::expose));
    config = match (token, key) {
        (Some(token), _) => config.with_bearer(SecretString::new(token)),
        (_, Some(key)) => {
            config.with_hmac(SecretString::new(key), hmac_auth_type(&args.metal_api_hmac_auth_type)?)
        }
        _ => {
            return Err(
                "neither METAL_API_HMAC nor METAL_API_TOKEN is set: metal-api needs one of them".to_string()
            );
        }
    };
    if let Some(path) = &args.metal_api_ca_file {
        config = config.with_ca_bundle(CaBundle::Path(path.clone()));
    }
    if args.metal_api_insecure {
        tracing::warn!(
            "TLS verification of metal-api is OFF (--metal-api-insecure-skip-tls-verify): use only for tests"
        );
        config = config.with_insecure_skip_tls_verify(true);
    }
    MetalClient::new(config).map_err(|error| error.to_string())
}

/// A setting's value without surrounding blanks; `None` when blank. The components default
/// optional settings to a blank (clusterctl requires variables with empty defaults), so blank
/// means unset, as it does for the credentials Secret's keys.
fn given(value: Option<&str>) -> Option<String> {
    value.map(str::trim).filter(|value| !value.is_empty()).map(String::from)
}

/// `METAL_API_HMAC_AUTH_TYPE`; empty means the default, Metal-Edit.
fn hmac_auth_type(value: &str) -> Result<HmacAuthType, String> {
    if value.trim().is_empty() {
        return Ok(HmacAuthType::Edit);
    }
    HmacAuthType::parse(value).ok_or_else(|| {
        format!("METAL_API_HMAC_AUTH_TYPE {value:?} is not Metal-View, Metal-Edit or Metal-Admin")
    })
}

fn capms_sim_options(args: &RunArgs) -> capms_backend_sim::SimBuilder {
    let times = capms_backend_sim::ProvisioningTimes {
        provisioning: args.sim_provisioning,
        ..capms_backend_sim::ProvisioningTimes::default()
    };
    capms_backend_sim::SimBuilder::new()
        .seed(args.sim_seed)
        .start(capms_core::Timestamp::now())
        .partition(capms_backend_sim::PartitionSpec::mini_lab(
            capms_backend_sim::MINI_LAB_PARTITION,
            args.sim_machines,
        ))
        .provisioning(times)
        .keep_log(false)
        .check_invariants(false)
}

/// Readiness: set once the configuration and the CRDs are checked.
#[derive(Debug, Default)]
struct Probes {
    ready: AtomicBool,
}

async fn serve_endpoints(address: SocketAddr, router: Router, what: &str) -> Result<(), String> {
    let listener = bind_listener(address)
        .and_then(tokio::net::TcpListener::from_std)
        .map_err(|error| format!("cannot listen for {what} on {address}: {error}"))?;
    tokio::spawn(async move { axum::serve(listener, router).await });
    Ok(())
}

/// Binds `address`. The unspecified IPv6 address (what ":8080" means) listens on IPv4 too,
/// whatever `net.ipv6.bindv6only` says, so that probes and scrapes reach the pod over either
/// family. If the IPv6 socket fails for another reason than a port in use or a privileged
/// port (IPv6 off in the pod, most likely), it falls back to 0.0.0.0.
pub fn bind_listener(address: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    if address.ip() != IpAddr::V6(Ipv6Addr::UNSPECIFIED) {
        let listener = std::net::TcpListener::bind(address)?;
        listener.set_nonblocking(true)?;
        return Ok(listener);
    }
    match dual_stack_listener(address.port()) {
        // A port in use or a privileged port is the same problem on IPv4: report it.
        Err(error) if matches!(error.kind(), ErrorKind::AddrInUse | ErrorKind::PermissionDenied) => {
            Err(error)
        }
        Err(error) => {
            tracing::info!(%error, port = address.port(), "no IPv6 socket; listening on IPv4 only");
            bind_listener(SocketAddr::from((Ipv4Addr::UNSPECIFIED, address.port())))
        }
        Ok(listener) => Ok(listener),
    }
}

fn dual_stack_listener(port: u16) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_only_v6(false)?;
    socket.set_reuse_address(true)?;
    socket.bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)).into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

async fn start_endpoints(
    settings: &Settings,
    metrics: Arc<Metrics>,
    probes: Arc<Probes>,
) -> Result<(), String> {
    if let Some(address) = settings.metrics_address {
        let router = Router::new().route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    match metrics.encode() {
                        Ok(text) => (
                            StatusCode::OK,
                            [("content-type", "application/openmetrics-text; version=1.0.0; charset=utf-8")],
                            text,
                        ),
                        Err(_) => (
                            StatusCode::INTERNAL_SERVER_ERROR,
                            [("content-type", "text/plain")],
                            String::new(),
                        ),
                    }
                }
            }),
        );
        serve_endpoints(address, router, "metrics").await?;
    }
    if let Some(address) = settings.health_address {
        let router = Router::new().route("/healthz", get(|| async { "ok" })).route(
            "/readyz",
            get(move || {
                let probes = probes.clone();
                async move {
                    if probes.ready.load(Ordering::Relaxed) {
                        (StatusCode::OK, "ok")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "controllers not running")
                    }
                }
            }),
        );
        serve_endpoints(address, router, "health probes").await?;
    }
    Ok(())
}

/// Waits until this replica holds the Lease. Losing it later ends the process's controllers
/// (the returned future completes and sets `lost`), as controller-runtime does, so that a new
/// leader starts clean; [`run`] then fails, and the pod restarts.
async fn acquire_leadership(
    client: &kube::Client,
    settings: &Settings,
    lost: Arc<AtomicBool>,
) -> Result<(impl Future<Output = ()> + Send + Sync + 'static, LeaseTask), String> {
    let identity =
        std::env::var("POD_NAME").unwrap_or_else(|_| format!("capms-manager-{}", rand::random::<u32>()));
    let manager = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), LEASE_NAME)
        .with_namespace(settings.leader_namespace.clone())
        .with_identity(identity)
        .build()
        .await
        .map_err(|error| format!("leader election: {error}"))?;
    let (mut leader, task) = manager.watch().await;
    tracing::info!(lease = LEASE_NAME, namespace = %settings.leader_namespace, "waiting for leadership");
    while !*leader.borrow_and_update() {
        leader.changed().await.map_err(|error| format!("leader election stopped: {error}"))?;
    }
    tracing::info!("leading");
    let lost_future = async move {
        while *leader.borrow() {
            if leader.changed().await.is_err() {
                break;
            }
        }
        lost.store(true, Ordering::Relaxed);
        tracing::warn!("lost leadership: stopping the controllers");
    };
    Ok((lost_future, task))
}

/// The lease manager's task: it releases the Lease once the leadership receiver is dropped.
type LeaseTask =
    tokio::task::JoinHandle<Result<kube_lease_manager::LeaseManager, kube_lease_manager::LeaseManagerError>>;

/// How long shutdown waits for the Lease to be released (a successor then starts at once
/// instead of after the lease duration).
const LEASE_RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs the manager until `shutdown` completes (or leadership is lost).
pub async fn run<F>(
    client: kube::Client,
    default_backend: Option<Arc<dyn MetalBackend>>,
    settings: Settings,
    metrics: Arc<Metrics>,
    shutdown: F,
) -> Result<(), String>
where
    F: Future<Output = ()> + Send + Sync + 'static,
{
    controller::check_crds(&client).await?;
    let probes = Arc::new(Probes::default());
    start_endpoints(&settings, metrics.clone(), probes.clone()).await?;
    // Ready once configured and the CRDs are there, before leadership: a standby replica and
    // the new pod of a rolling update (which waits for the old pod's Lease) must be ready, or
    // the rollout never finishes.
    probes.ready.store(true, Ordering::Relaxed);
    let lost_leadership = Arc::new(AtomicBool::new(false));
    let mut lease_task = None;
    let stop: futures::future::BoxFuture<'static, ()> = if settings.leader_elect {
        let (lost, task) = acquire_leadership(&client, &settings, lost_leadership.clone()).await?;
        lease_task = Some(task);
        Box::pin(async move {
            futures::future::select(Box::pin(shutdown), Box::pin(lost)).await;
        })
    } else {
        Box::pin(shutdown)
    };
    let limiter = Arc::new(PartitionLimiter::new(settings.allocations_per_partition_max));
    let backends = Backends::new(default_backend, client.clone(), metrics.clone(), limiter);
    let mut context = Context::new(client, backends, metrics, settings.clock.clone());
    if let Some(trace) = &settings.record_trace {
        let file = crate::trace::TraceFile::create(trace.clone())?;
        tracing::info!(path = %trace.path.display(), max_bytes = trace.max_bytes, "recording a trace");
        context.trace = Some(Arc::new(file));
    }
    let context = Arc::new(context);
    tracing::info!(namespace = ?settings.scope.namespace, watch_filter = ?settings.scope.watch_filter, "controllers running");
    // Nine watch and controller streams joined: boxed, not on the caller's stack.
    Box::pin(controller::run(context, settings.scope, SyncFuture::new(stop))).await;
    tracing::info!("controllers stopped");
    if let Some(task) = lease_task {
        // The controllers are gone, and with them the leadership receiver: the task releases
        // the Lease. Bounded, so that a hung apiserver cannot hold up the exit.
        match tokio::time::timeout(LEASE_RELEASE_WAIT, task).await {
            Ok(Ok(Ok(_))) => tracing::info!("released the Lease"),
            Ok(Ok(Err(error))) => tracing::warn!(%error, "could not release the Lease"),
            Ok(Err(_)) | Err(_) => tracing::warn!("the Lease was not released in time"),
        }
    }
    if lost_leadership.load(Ordering::Relaxed) {
        return Err(format!("lost the Lease {LEASE_NAME}; exiting so that the new leader starts clean"));
    }
    Ok(())
}

/// Makes a `Send` future `Sync` (kube-runtime's graceful shutdown trigger must be `Sync`) by
/// putting it behind a mutex that only its one poller ever locks.
struct SyncFuture {
    inner: std::sync::Mutex<futures::future::BoxFuture<'static, ()>>,
}

impl SyncFuture {
    fn new(inner: futures::future::BoxFuture<'static, ()>) -> Self {
        SyncFuture { inner: std::sync::Mutex::new(inner) }
    }
}

impl Future for SyncFuture {
    type Output = ();
    fn poll(self: std::pin::Pin<&mut Self>, context: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        match self.inner.lock() {
            Ok(mut inner) => inner.as_mut().poll(context),
            Err(_) => std::task::Poll::Ready(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use std::ffi::OsString;

    fn run_args(flags: &[&str]) -> RunArgs {
        let args = ["capms-manager", "run"].iter().chain(flags).map(OsString::from);
        match Cli::parse_from_env_args(args).command {
            Command::Run(args) => *args,
            other => panic!("not run: {other:?}"),
        }
    }

    /// The components default the optional settings to a blank (clusterctl requires variables
    /// with empty defaults); a blank must mean unset, as an empty value does.
    #[test]
    fn blank_settings_from_the_components_defaults_count_as_unset() {
        let blank = run_args(&[
            "--namespace= ",
            "--watch-filter= ",
            "--metal-api-url=http://metal.test/metal",
            "--metal-api-hmac= ",
            "--metal-api-token= ",
        ]);
        let settings = Settings::from_args(&blank).expect("settings");
        assert_eq!(settings.scope.namespace, None);
        assert_eq!(settings.scope.watch_filter, None);
        let error = metal_backend(&blank).expect_err("blank credentials are no credentials");
        assert!(error.contains("neither METAL_API_HMAC nor METAL_API_TOKEN"), "{error}");

        let hmac = run_args(&[
            "--metal-api-url=http://metal.test/metal",
            "--metal-api-hmac=metal-edit",
            "--metal-api-token= ",
        ]);
        metal_backend(&hmac).expect("the HMAC key is used when the token is blank");
        let scoped = run_args(&["--namespace= prod ", "--watch-filter=team-a"]);
        let settings = Settings::from_args(&scoped).expect("settings");
        assert_eq!(settings.scope.namespace.as_deref(), Some("prod"));
        assert_eq!(settings.scope.watch_filter.as_deref(), Some("team-a"));
    }
}

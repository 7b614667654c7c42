//! The command line of `capms-manager`: flags and environment compatible with the Go provider
//! (`METAL_API_URL`, `METAL_API_HMAC`, `METAL_API_HMAC_AUTH_TYPE`), plus `METAL_API_TOKEN`.

use capms_core::secret::SecretString;
use clap::builder::BoolishValueParser;
use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// `capms-manager`: the Cluster API infrastructure provider for metal-stack.
///
/// `capms-manager run` (or flags without a subcommand, as the Go provider is started) runs the
/// controllers for MetalStackCluster, MetalStackMachine and MetalStackFirewall against the
/// management cluster of the current kubeconfig (or the in-cluster service account) and
/// metal-api. `capms-manager run --help` lists its flags and environment variables.
#[derive(Parser, Debug)]
#[command(name = "capms-manager", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Parses `args`; flags without a subcommand mean `run` (Go-provider style invocations), and
    /// so does a bare `--help`, which therefore documents every flag and environment variable.
    /// Only `run` reads the run flags' environment, so a bad run setting never breaks `crds`.
    pub fn parse_from_env_args(args: impl IntoIterator<Item = OsString>) -> Cli {
        let mut args: Vec<OsString> = args.into_iter().collect();
        let first = args.get(1).and_then(|arg| arg.to_str()).map(str::to_string);
        let implicit_run = match first.as_deref() {
            None => true,
            Some("-V" | "--version") => false,
            Some(flag) => flag.starts_with('-'),
        };
        if implicit_run {
            args.insert(1.min(args.len()), OsString::from("run"));
        }
        Cli::parse_from(args)
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the controllers (the default when only flags are given).
    #[command(after_help = "Other commands: `capms-manager crds` prints the CRDs; `capms-manager manifests \
        [--out DIR] [--version V]` prints the clusterctl artifacts or writes a local clusterctl repository; \
        `capms-manager help` lists the commands.")]
    Run(Box<RunArgs>),
    /// Print the CustomResourceDefinitions as multi-document YAML (`capms-manager crds | kubectl apply -f -`).
    Crds,
    /// Print the clusterctl artifacts, or write a local clusterctl provider repository with
    /// `--out DIR` (DIR/infrastructure-metalstack/<version>/ and DIR/clusterctl.yaml).
    Manifests {
        /// Write a local clusterctl repository into DIR instead of printing.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// The release version in the repository layout.
        #[arg(long, default_value = concat!("v", env!("CARGO_PKG_VERSION")))]
        version: String,
    },
}

/// Which metal-stack the controllers talk to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    /// metal-api over HTTP (METAL_API_URL and METAL_API_HMAC or METAL_API_TOKEN).
    Metal,
    /// An in-process simulated datacenter with mini-lab's data, for trying capms without
    /// metal-stack. Machines phone home after --sim-provisioning.
    Sim,
}

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The flags of the controllers.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Which metal-stack to talk to.
    #[arg(long, value_enum, default_value_t = BackendKind::Metal, env = "CAPMS_BACKEND")]
    pub backend: BackendKind,

    /// metal-api's URL including any path prefix, e.g. http://api.172.17.0.1.nip.io:8080/metal
    /// (mini-lab). Required for --backend metal; clusters with spec.credentialsRef use their own.
    #[arg(long = "metal-api-url", env = "METAL_API_URL", value_name = "URL")]
    pub metal_api_url: Option<String>,

    /// HMAC key for metal-api (the Go provider's variable). Never logged.
    #[arg(long = "metal-api-hmac", env = "METAL_API_HMAC", value_name = "KEY", hide_env_values = true, value_parser = secret)]
    pub metal_api_hmac: Option<SecretString>,

    /// HMAC auth type: Metal-View, Metal-Edit or Metal-Admin (empty: Metal-Edit).
    #[arg(long = "metal-api-hmac-auth-type", env = "METAL_API_HMAC_AUTH_TYPE", default_value = "Metal-Edit")]
    pub metal_api_hmac_auth_type: String,

    /// Bearer token for metal-api, instead of an HMAC key. Never logged.
    #[arg(long = "metal-api-token", env = "METAL_API_TOKEN", value_name = "TOKEN", hide_env_values = true, value_parser = secret)]
    pub metal_api_token: Option<SecretString>,

    /// PEM file of CA certificates to trust for metal-api (in addition to the system's).
    #[arg(long = "metal-api-ca-file", env = "METAL_API_CA_FILE", value_name = "FILE")]
    pub metal_api_ca_file: Option<PathBuf>,

    /// Skip TLS verification of metal-api. Insecure; for test setups only.
    #[arg(long = "metal-api-insecure-skip-tls-verify", env = "METAL_API_INSECURE_SKIP_TLS_VERIFY", action = ArgAction::Set,
        num_args = 0..=1, default_value = "false", default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub metal_api_insecure: bool,

    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "CAPMS_NAMESPACE", value_name = "NAMESPACE")]
    pub namespace: Option<String>,

    /// Reconcile only objects labelled cluster.x-k8s.io/watch-filter=VALUE.
    #[arg(long = "watch-filter", env = "CAPMS_WATCH_FILTER", value_name = "VALUE")]
    pub watch_filter: Option<String>,

    /// Address of the Prometheus /metrics endpoint: ":PORT" listens on all interfaces, IPv4
    /// and IPv6; "HOST:PORT" on one; "0" disables it.
    #[arg(long = "metrics-bind-address", default_value = ":8080")]
    pub metrics_bind_address: String,

    /// Address of the /healthz and /readyz probes, as for --metrics-bind-address ("0"
    /// disables them).
    #[arg(long = "health-probe-bind-address", default_value = ":8081")]
    pub health_probe_bind_address: String,

    /// Run the controllers only while holding the Lease capms-manager-leader (for replicas > 1
    /// and rolling updates). `--leader-elect=true|false` works too.
    #[arg(long = "leader-elect", action = ArgAction::Set, num_args = 0..=1, default_value = "false",
        default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub leader_elect: bool,

    /// Namespace of the leader-election Lease (default: the pod's namespace from
    /// POD_NAMESPACE, else capms-system).
    #[arg(long = "leader-elect-namespace", env = "POD_NAMESPACE")]
    pub leader_elect_namespace: Option<String>,

    /// Reconciles running at once, per kind.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub concurrency: u16,

    /// Machine and firewall allocations in flight at once per partition (0: no limit).
    #[arg(long = "allocations-per-partition-max", default_value_t = 5)]
    pub allocations_per_partition_max: usize,

    /// Log format.
    #[arg(long = "log-format", value_enum, default_value_t = LogFormat::Text, env = "CAPMS_LOG_FORMAT")]
    pub log_format: LogFormat,

    /// Log filter (tracing's EnvFilter syntax), e.g. info or capms_operator=debug.
    #[arg(long = "log-level", env = "RUST_LOG", default_value = "info")]
    pub log_level: String,

    /// --backend sim: seed of the simulated datacenter.
    #[arg(long = "sim-seed", default_value_t = 1)]
    pub sim_seed: u64,

    /// --backend sim: time from allocation to Phoned Home, e.g. 2s or 5m.
    #[arg(long = "sim-provisioning", default_value = "30s", value_parser = parse_duration)]
    pub sim_provisioning: Duration,

    /// --backend sim: machines of size v1-small-x86 in partition mini-lab.
    #[arg(long = "sim-machines", default_value_t = 16)]
    pub sim_machines: usize,

    /// Record every reconcile (inputs, metal-api calls and answers, outcome; never user data
    /// or keys) to PATH, for `capms-sim replay PATH` (docs/traces.md).
    #[arg(long = "record-trace", env = "CAPMS_RECORD_TRACE", value_name = "PATH")]
    pub record_trace: Option<PathBuf>,

    /// With --record-trace: once the file reaches this size it moves to PATH.1 (replacing an
    /// older one) and a new file starts.
    #[arg(long = "record-trace-max-bytes", default_value_t = 100 * 1024 * 1024)]
    pub record_trace_max_bytes: u64,
}

/// A secret flag value, redacted in `Debug` from the moment it is parsed.
fn secret(text: &str) -> Result<SecretString, String> {
    Ok(SecretString::new(text))
}

/// Parses "2s", "5m", "1h 30m" or ISO 8601 ("PT2S").
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let parsed: jiff::SignedDuration =
        text.parse().map_err(|error| format!("{text:?} is not a duration like 2s or 5m: {error}"))?;
    Duration::try_from(parsed).map_err(|_| format!("{text:?} is negative"))
}

/// Parses a Go-style bind address: ":8080" (all interfaces, IPv6 and IPv4: `[::]:8080`),
/// "127.0.0.1:8080", "[::1]:8080", or "0" (off).
pub fn parse_bind_address(text: &str) -> Result<Option<SocketAddr>, String> {
    if text == "0" || text.is_empty() {
        return Ok(None);
    }
    let full = if text.starts_with(':') { format!("[::]{text}") } else { text.to_string() };
    full.parse().map(Some).map_err(|error| format!("{text:?} is not an address like :8080: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::parse_from_env_args(args.iter().map(OsString::from))
    }

    #[test]
    fn flags_without_a_subcommand_mean_run_and_go_style_booleans_work() {
        let Command::Run(args) =
            parse(&["capms-manager", "--leader-elect=true", "--metal-api-insecure-skip-tls-verify"]).command
        else {
            panic!("flags alone mean run");
        };
        assert!(args.leader_elect);
        assert!(args.metal_api_insecure);
        let Command::Run(args) =
            parse(&["capms-manager", "run", "--leader-elect", "--concurrency", "3"]).command
        else {
            panic!("run parses");
        };
        assert!(args.leader_elect && args.concurrency == 3);
        assert!(matches!(parse(&["capms-manager", "crds"]).command, Command::Crds));
    }

    #[test]
    fn secret_flags_are_redacted_in_debug() {
        let cli = parse(&[
            "capms-manager",
            "--metal-api-hmac",
            "very-secret-hmac",
            "--metal-api-token",
            "very-secret-token",
        ]);
        let debug = format!("{cli:?}");
        assert!(!debug.contains("very-secret-hmac") && !debug.contains("very-secret-token"), "{debug}");
    }

    #[test]
    fn go_style_bind_addresses_parse() {
        let all_interfaces = SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 8080));
        assert_eq!(parse_bind_address(":8080"), Ok(Some(all_interfaces)));
        assert_eq!(
            parse_bind_address("[::1]:9"),
            Ok(Some(SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 9))))
        );
        assert_eq!(parse_bind_address("127.0.0.1:9"), Ok(Some(SocketAddr::from(([127, 0, 0, 1], 9)))));
        assert_eq!(parse_bind_address("0"), Ok(None));
        assert!(parse_bind_address("eight").is_err());
    }

    #[test]
    fn durations_parse_in_friendly_form() {
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("soon").is_err());
    }
}

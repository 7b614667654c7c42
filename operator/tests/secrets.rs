//! Secrets stay secret: with trace-level logging and secret-bearing configuration, no HMAC
//! key, token or bootstrap user data appears in the manager's output, its events or the
//! objects it writes.

mod support;

use capms_core::api::MetalStackMachine;
use capms_operator::clock::Clock;
use std::io::Write;
use std::process::Command;
use std::sync::{Arc, Mutex};
use support::{
    BOOTSTRAP_SECRET_MARKER, Capi, Env, create_credentials, machine_allocated, management_cluster, metal_api,
    objects, wait_real,
};

const HMAC_KEY: &str = "HMAC-KEY-7f3a-do-not-log";
const TOKEN: &str = "TOKEN-91c2-do-not-log";

fn assert_no_secret(what: &str, text: &str) {
    for secret in [HMAC_KEY, TOKEN, BOOTSTRAP_SECRET_MARKER] {
        assert!(!text.contains(secret), "{what} contains the secret {secret:?}:\n{text}");
    }
}

#[test]
fn the_binary_never_prints_its_credentials_while_failing_to_start() {
    let home = tempfile::tempdir().expect("a temp home");
    let run = |extra: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_capms-manager"))
            .args(["--log-level", "trace", "--metrics-bind-address", "0", "--health-probe-bind-address", "0"])
            .args(extra)
            .env_clear()
            .env("HOME", home.path())
            .env("KUBECONFIG", home.path().join("missing-kubeconfig"))
            .env("METAL_API_URL", "http://127.0.0.1:9/metal")
            .env("METAL_API_HMAC", HMAC_KEY)
            .env("METAL_API_TOKEN", TOKEN)
            .output()
            .expect("capms-manager runs");
        let text =
            format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        (output.status, text)
    };
    let (status, text) = run(&[]);
    assert!(!status.success());
    assert!(text.contains("cannot reach the management cluster"), "{text}");
    assert_no_secret("the output of a start without a cluster", &text);

    let (status, text) = run(&["--metal-api-hmac-auth-type", "Metal-Root"]);
    assert!(!status.success());
    assert_no_secret("the output of a start with a bad auth type", &text);
}

/// A `MakeWriter` into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut buffer) = self.0.lock() {
            buffer.extend_from_slice(bytes);
        }
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Captured {
    fn text(&self) -> String {
        self.0.lock().map(|buffer| String::from_utf8_lossy(&buffer).into_owned()).unwrap_or_default()
    }
}

#[tokio::test]
async fn reconciles_with_per_cluster_credentials_log_no_key_and_no_user_data() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(captured.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let clock = Clock::wall();
    let sim = support::datacenter(&clock);
    let url = metal_api(sim.clone(), HMAC_KEY, Some(TOKEN)).await;
    let api = management_cluster();
    let env = Env::start_with(api, sim, None, clock).await;
    create_credentials(&env, url, HMAC_KEY).await;
    let capi = Capi { env: &env };
    let cluster =
        capi.create_cluster_with_credentials("sigma", false, false, Some("metal-credentials")).await;
    capi.create_machine(&cluster, "sigma-md-0", false).await;
    capi.wait_and_sync_cluster("sigma").await;
    wait_real(&env, "the machine is allocated through the credentials", machine_allocated).await;

    let logs = captured.text();
    assert!(logs.contains("TRACE") || logs.contains("DEBUG"), "the capture sees verbose logs");
    assert_no_secret("the trace-level log", &logs);
    let events = format!("{:?}", env.api.events());
    assert_no_secret("the events", &events);
    let capms_objects = format!("{:?}", objects::<MetalStackMachine>(&env.api));
    assert_no_secret("the MetalStackMachines", &capms_objects);
    env.stop().await.expect("the manager stops cleanly");
}

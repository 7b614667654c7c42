//! Secrets stay secret: with trace-level logging and secret-bearing configuration, no HMAC
//! key, token or bootstrap user data appears in the manager's output, its events or the
//! objects it writes.

mod support;

use capms_backend_sim::http::{ServerConfig, router};
use capms_core::api::MetalStackMachine;
use capms_fake_apiserver::WaitBound;
use capms_operator::clock::Clock;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use std::collections::BTreeMap;
use std::io::Write;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{BOOTSTRAP_SECRET_MARKER, Capi, Env, condition_status, management_cluster, objects};

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

/// A simulated metal-api over real HTTP that accepts only [`HMAC_KEY`] (as Metal-Edit).
async fn metal_api(sim: capms_backend_sim::Sim) -> String {
    let config = ServerConfig {
        edit_key: HMAC_KEY.to_string(),
        view_key: "view-unused".to_string(),
        admin_key: "admin-unused".to_string(),
        token: Some(TOKEN.to_string()),
        ..ServerConfig::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
    let address = listener.local_addr().expect("an address");
    tokio::spawn(async move { axum::serve(listener, router(sim, config)).await });
    format!("http://{address}/metal")
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
    let url = metal_api(sim.clone()).await;
    let api = management_cluster();
    let env = Env::start_with(api, sim, None, clock).await;
    let credentials = Secret {
        metadata: ObjectMeta { name: Some("metal-credentials".to_string()), ..ObjectMeta::default() },
        data: Some(BTreeMap::from([
            ("url".to_string(), ByteString(url.into_bytes())),
            ("hmac".to_string(), ByteString(HMAC_KEY.as_bytes().to_vec())),
        ])),
        ..Secret::default()
    };
    env.api::<Secret>().create(&PostParams::default(), &credentials).await.expect("the credentials Secret");
    let capi = Capi { env: &env };
    let cluster =
        capi.create_cluster_with_credentials("sigma", false, false, Some("metal-credentials")).await;
    capi.create_machine(&cluster, "sigma-md-0", false).await;
    capi.wait_and_sync_cluster("sigma").await;
    let allocated = env
        .api
        .wait_until(WaitBound::Timeout(Duration::from_secs(120)), |api| {
            objects::<MetalStackMachine>(api).iter().any(|machine| {
                condition_status(machine, "MachineAllocated").is_some_and(|s| s.starts_with("True"))
            })
        })
        .await;
    assert!(allocated.is_ok(), "the machine is allocated through the credentials: {}", env.describe());

    let logs = captured.text();
    assert!(logs.contains("TRACE") || logs.contains("DEBUG"), "the capture sees verbose logs");
    assert_no_secret("the trace-level log", &logs);
    let events = format!("{:?}", env.api.events());
    assert_no_secret("the events", &events);
    let capms_objects = format!("{:?}", objects::<MetalStackMachine>(&env.api));
    assert_no_secret("the MetalStackMachines", &capms_objects);
    env.stop().await.expect("the manager stops cleanly");
}

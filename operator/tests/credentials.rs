//! Credentials Secrets stay as long as a cluster needs them (`operator/src/credentials.rs`):
//! deleting a namespace deletes the Secret and the cluster together, and the cluster must still
//! free its machines with the Secret's credentials.

mod support;

use capms_core::api::capi::Cluster;
use capms_core::api::{MetalStackCluster, MetalStackMachine};
use capms_fake_apiserver::FakeApiServer;
use capms_operator::clock::{Clock, drive_sim};
use capms_operator::credentials::{CREDENTIALS_FINALIZER, CREDENTIALS_LABEL};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use kube::api::{DeleteParams, PostParams};
use std::collections::BTreeMap;
use std::time::Duration;
use support::{
    CREDENTIALS, Capi, Env, create_credentials, machine_allocated, management_cluster, metal_api, objects,
    wait_real,
};

const HMAC_KEY: &str = "credentials-test-key";

fn credentials_secret(api: &FakeApiServer) -> Option<serde_json::Value> {
    objects::<Secret>(api).into_iter().find(|secret| {
        secret.pointer("/metadata/name").and_then(serde_json::Value::as_str) == Some(CREDENTIALS)
    })
}

fn secret_state(api: &FakeApiServer) -> Option<(Vec<String>, bool)> {
    let secret = credentials_secret(api)?;
    let finalizers = secret
        .pointer("/metadata/finalizers")
        .and_then(serde_json::Value::as_array)
        .map(|items| items.iter().filter_map(|item| item.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    Some((finalizers, secret.pointer("/metadata/deletionTimestamp").is_some()))
}

/// The Secret has capms's finalizer and clusterctl's move label (so that `clusterctl move`
/// takes it along: it is outside the cluster's owner chain).
fn protected(api: &FakeApiServer) -> bool {
    let moves = credentials_secret(api)
        .is_some_and(|secret| secret.pointer("/metadata/labels/clusterctl.cluster.x-k8s.io~1move").is_some());
    moves
        && secret_state(api)
            .is_some_and(|(finalizers, _)| finalizers.iter().any(|f| f == CREDENTIALS_FINALIZER))
}

/// The manager without credentials of its own, a simulated metal-api over HTTP in real time,
/// and the Secret [`CREDENTIALS`] for it: every cluster must name the Secret.
async fn start_without_default_credentials() -> Env {
    let clock = Clock::wall();
    let sim = support::datacenter(&clock);
    // The datacenter follows the wall clock, so that metal-api releases the freed IPs.
    drive_sim(sim.clone(), clock.clone());
    let url = metal_api(sim.clone(), HMAC_KEY, None).await;
    let env = Env::start_with(management_cluster(), sim, None, clock).await;
    create_credentials(&env, url, HMAC_KEY).await;
    env
}

/// What deleting the namespace does: the credentials Secret is deleted first (or at the same
/// time as the cluster). The cluster must still free its machines with it, so the Secret
/// stays, marked deleted, until the cluster is gone.
#[tokio::test]
async fn a_credentials_secret_deleted_before_its_cluster_stays_until_the_cluster_is_freed() {
    let env = start_without_default_credentials().await;
    let sim = env.sim.clone();
    let capi = Capi { env: &env };
    let cluster = capi.create_cluster_with_credentials("tau", false, false, Some(CREDENTIALS)).await;
    capi.create_machine(&cluster, "tau-md-0", false).await;
    capi.wait_and_sync_cluster("tau").await;
    wait_real(&env, "the machine is allocated and the Secret protected", |api| {
        protected(api) && machine_allocated(api)
    })
    .await;

    let metrics = env.metrics.encode().expect("metrics encode");
    assert!(metrics.contains("capms_credentials_clients 1\n"), "one client for the Secret:\n{metrics}");

    env.api::<Secret>().delete(CREDENTIALS, &DeleteParams::default()).await.expect("deleted");
    assert_eq!(secret_state(&env.api).map(|(_, deleting)| deleting), Some(true), "marked deleted, kept");
    env.api::<Cluster>().delete("tau", &DeleteParams::background()).await.expect("the Cluster is deleted");
    wait_real(&env, "every capms object is gone", |api| {
        objects::<MetalStackMachine>(api).is_empty() && objects::<MetalStackCluster>(api).is_empty()
    })
    .await;
    wait_real(&env, "the Secret is released and gone", |api| secret_state(api).is_none()).await;
    let metrics = env.metrics.encode().expect("metrics encode");
    assert!(
        metrics.contains("capms_credentials_clients 0\n"),
        "the released Secret's client is dropped:\n{metrics}"
    );
    let allocated: Vec<_> =
        sim.machines().into_iter().filter(|machine| machine.allocation.is_some()).collect();
    assert!(
        allocated.is_empty(),
        "the machine was freed with the deleted Secret's credentials: {allocated:?}"
    );
    env.stop().await.expect("the manager stops cleanly");
}

/// A Secret that carries the mark but that no cluster names (its cluster moved to other
/// credentials, or is gone) loses the finalizer and the label.
#[tokio::test(start_paused = true)]
async fn a_marked_secret_that_no_cluster_names_is_released() {
    let env = Env::start().await;
    let marked = Secret {
        metadata: ObjectMeta {
            name: Some(CREDENTIALS.to_string()),
            finalizers: Some(vec![CREDENTIALS_FINALIZER.to_string(), "example.com/other".to_string()]),
            labels: Some(BTreeMap::from([(CREDENTIALS_LABEL.to_string(), "true".to_string())])),
            ..ObjectMeta::default()
        },
        ..Secret::default()
    };
    env.api::<Secret>().create(&PostParams::default(), &marked).await.expect("the marked Secret");
    env.wait("the mark is removed, other finalizers kept", |api| {
        secret_state(api).is_some_and(|(finalizers, _)| finalizers == ["example.com/other"])
    })
    .await;
    let secret = env.api::<Secret>().get(CREDENTIALS).await.expect("the Secret");
    assert!(!secret.labels().contains_key(CREDENTIALS_LABEL), "{:?}", secret.labels());
    // The controller's list and watch of the marked Secrets, and its patch of this one, ask for
    // metadata only: the manager never holds the credentials of Secrets it merely guards.
    let guarded: Vec<_> = env
        .api
        .request_log()
        .into_iter()
        .filter(|request| {
            let watched = request.path.ends_with("/secrets") && request.query.contains("labelSelector");
            watched || (request.method == "PATCH" && request.path.ends_with("/secrets/metal-credentials"))
        })
        .collect();
    assert!(guarded.iter().any(|request| request.method == "PATCH"), "the mark is removed by a patch");
    assert!(guarded.iter().any(|request| request.method == "GET"), "the marked Secrets are watched");
    for request in &guarded {
        let accept = request.accept.as_deref().unwrap_or_default();
        assert!(accept.contains("as=PartialObjectMetadata"), "a full read of Secrets: {request:?}");
    }
    env.stop().await.expect("the manager stops cleanly");
}

/// A cluster whose credentials Secret does not exist fails every reconcile. Each failure in a
/// row doubles the wait before the next attempt (from 60 s for this class, up to 5 min), so an
/// hour brings about 15 attempts where a fixed delay would bring 60.
#[tokio::test(start_paused = true)]
async fn a_cluster_whose_credentials_secret_is_missing_is_retried_less_and_less_often() {
    let env = Env::start().await;
    let capi = Capi { env: &env };
    capi.create_cluster_with_credentials("upsilon", false, false, Some("not-there")).await;
    env.idle(Duration::from_secs(3600)).await;
    let metrics = env.metrics.encode().expect("metrics encode");
    let failures = metrics
        .lines()
        .find(|line| line.starts_with("capms_reconcile_errors_total{") && line.contains("MetalStackCluster"))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|count| count.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no failure count for the cluster:\n{metrics}"));
    assert!((5..=20).contains(&failures), "{failures} failed reconciles in an hour");
    env.stop().await.expect("the manager stops cleanly");
}

fn secret_reconciles(env: &Env) -> u64 {
    let metrics = env.metrics.encode().unwrap_or_default();
    metrics
        .lines()
        .find(|line| line.starts_with("capms_reconciles_total{kind=\"Secret\"}"))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|count| count.parse().ok())
        .unwrap_or(0)
}

/// Two clusters share one credentials Secret: deleting one leaves the Secret protected for the
/// other; deleting the other releases it.
#[tokio::test]
async fn a_secret_shared_by_two_clusters_stays_protected_until_the_last_is_gone() {
    let env = start_without_default_credentials().await;
    let capi = Capi { env: &env };
    for name in ["phi", "chi"] {
        capi.create_cluster_with_credentials(name, false, false, Some(CREDENTIALS)).await;
    }
    wait_real(&env, "the Secret is protected", protected).await;

    // The reconcile that the new label caused is over before phi goes.
    wait_real(&env, "the Secret was looked at once", |_| secret_reconciles(&env) >= 1).await;
    env.api.clear_request_log();
    let before = secret_reconciles(&env);
    env.api::<Cluster>().delete("phi", &DeleteParams::background()).await.expect("phi is deleted");
    wait_real(&env, "phi's MetalStackCluster is gone and the Secret looked at since", |api| {
        objects::<MetalStackCluster>(api).len() == 1 && secret_reconciles(&env) > before
    })
    .await;
    // Whatever that look decides is written at once; give it time to show.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let patched: Vec<_> = env
        .api
        .request_log()
        .into_iter()
        .filter(|request| request.method == "PATCH" && request.path.ends_with("/secrets/metal-credentials"))
        .collect();
    assert!(patched.is_empty(), "the Secret was patched {} times after phi went", patched.len());
    assert!(protected(&env.api), "chi still names the Secret");

    env.api::<Cluster>().delete("chi", &DeleteParams::background()).await.expect("chi is deleted");
    wait_real(&env, "the Secret is released with the last cluster", |api| {
        objects::<MetalStackCluster>(api).is_empty() && secret_state(api).is_some_and(|(f, _)| f.is_empty())
    })
    .await;
    env.stop().await.expect("the manager stops cleanly");
}

/// The Ready condition of the object named `name` among `objects`: status, reason and message.
fn ready_of(objects: Vec<serde_json::Value>, name: &str) -> Option<(String, String, String)> {
    let object = objects
        .into_iter()
        .find(|object| object.pointer("/metadata/name").and_then(serde_json::Value::as_str) == Some(name))?;
    let conditions = object.pointer("/status/conditions")?.as_array()?.clone();
    let ready = conditions.iter().find(|c| c.get("type").and_then(|t| t.as_str()) == Some("Ready"))?;
    let field = |key: &str| ready.get(key).and_then(|value| value.as_str()).unwrap_or_default().to_string();
    Some((field("status"), field("reason"), field("message")))
}

/// True once the object's Ready is False with reason `CredentialsInvalid` and a message that
/// contains every one of `words`.
fn credentials_invalid(ready: Option<(String, String, String)>, words: &[&str]) -> bool {
    ready.is_some_and(|(status, reason, message)| {
        status == "False" && reason == "CredentialsInvalid" && words.iter().all(|word| message.contains(word))
    })
}

/// The notes of the Warning events with reason `CredentialsInvalid` about `kind` `name`.
fn credentials_warnings(api: &FakeApiServer, kind: &str, name: &str) -> Vec<String> {
    api.events()
        .into_iter()
        .filter(|event| event.event_type == "Warning" && event.reason == "CredentialsInvalid")
        .filter(|event| event.regarding_kind == kind && event.regarding_name == name)
        .map(|event| event.note)
        .collect()
}

/// A credentials Secret with `pairs` as its data.
async fn create_secret(env: &Env, name: &str, pairs: &[(&str, &str)]) {
    let data = pairs
        .iter()
        .map(|(key, value)| (key.to_string(), k8s_openapi::ByteString(value.as_bytes().to_vec())))
        .collect();
    let secret = Secret {
        metadata: ObjectMeta { name: Some(name.to_string()), ..ObjectMeta::default() },
        data: Some(data),
        ..Secret::default()
    };
    env.api::<Secret>().create(&PostParams::default(), &secret).await.expect("the Secret is created");
}

/// A Secret without `url`: the MetalStackCluster and its MetalStackMachine say so in Ready
/// (reason `CredentialsInvalid`) and in a Warning event that names the Secret and the key and
/// never the key's value. Adding the url clears it at once (the Secret's change triggers the
/// cluster), not after the retry's backoff.
#[tokio::test]
async fn a_credentials_secret_without_url_is_reported_on_the_objects_until_it_is_fixed() {
    let clock = Clock::wall();
    let sim = support::datacenter(&clock);
    drive_sim(sim.clone(), clock.clone());
    let url = metal_api(sim.clone(), HMAC_KEY, None).await;
    let env = Env::start_with(management_cluster(), sim, None, clock).await;
    create_secret(&env, CREDENTIALS, &[("hmac", HMAC_KEY)]).await;
    let capi = Capi { env: &env };
    let cluster = capi.create_cluster_with_credentials("omega", false, false, Some(CREDENTIALS)).await;
    capi.create_machine(&cluster, "omega-md-0", false).await;
    let secret = format!("default/{CREDENTIALS}");
    let words = [secret.as_str(), "url"];
    wait_real(&env, "the cluster and its machine report the Secret without url", |api| {
        credentials_invalid(ready_of(objects::<MetalStackCluster>(api), "omega"), &words)
            && credentials_invalid(ready_of(objects::<MetalStackMachine>(api), "omega-md-0"), &words)
            && !credentials_warnings(api, "MetalStackCluster", "omega").is_empty()
            && !credentials_warnings(api, "MetalStackMachine", "omega-md-0").is_empty()
    })
    .await;
    for note in credentials_warnings(&env.api, "MetalStackCluster", "omega") {
        assert!(note.contains(&secret) && note.contains("url"), "{note}");
        assert!(!note.contains(HMAC_KEY), "the event shows the key: {note}");
    }
    let objects_text = format!("{:?}", objects::<MetalStackCluster>(&env.api));
    assert!(!objects_text.contains(HMAC_KEY), "the status shows the key");

    let fix = serde_json::json!({"stringData": {"url": url}});
    let params = kube::api::PatchParams::default();
    env.api::<Secret>().patch(CREDENTIALS, &params, &kube::api::Patch::Merge(&fix)).await.expect("fixed");
    let cleared = env
        .api
        .wait_until(capms_fake_apiserver::WaitBound::Timeout(Duration::from_secs(20)), |api| {
            ready_of(objects::<MetalStackCluster>(api), "omega")
                .is_some_and(|(_, reason, _)| reason != "CredentialsInvalid")
        })
        .await;
    assert!(cleared.is_ok(), "the fixed Secret is not noticed within 20 s:\n{}", env.describe());
    capi.wait_and_sync_cluster("omega").await;
    wait_real(&env, "the machine is allocated with the fixed credentials", machine_allocated).await;
    env.stop().await.expect("the manager stops cleanly");
}

/// A Secret that does not exist: Ready False with `CredentialsInvalid` and a Warning event
/// naming the Secret; once the Secret is created, the next retry (at most 5 min later) gets
/// past the credentials.
#[tokio::test(start_paused = true)]
async fn a_missing_credentials_secret_is_reported_on_the_cluster_until_it_exists() {
    let env = Env::start().await;
    let capi = Capi { env: &env };
    capi.create_cluster_with_credentials("psi", false, false, Some("not-there")).await;
    let words = ["default/not-there", "does not exist"];
    env.wait("the cluster reports the missing Secret", |api| {
        credentials_invalid(ready_of(objects::<MetalStackCluster>(api), "psi"), &words)
            && !credentials_warnings(api, "MetalStackCluster", "psi").is_empty()
    })
    .await;
    // Nothing listens on the discard port: the cluster gets past its credentials and fails to
    // reach metal-api instead.
    create_secret(&env, "not-there", &[("url", "http://127.0.0.1:9/metal"), ("token", "psi-token")]).await;
    env.wait("the cluster no longer reports its credentials", |api| {
        ready_of(objects::<MetalStackCluster>(api), "psi")
            .is_some_and(|(_, reason, _)| reason != "CredentialsInvalid")
    })
    .await;
    env.stop().await.expect("the manager stops cleanly");
}

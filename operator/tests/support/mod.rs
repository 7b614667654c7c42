//! A management cluster for end-to-end tests: the fake apiserver with capms's and CAPI's CRDs,
//! a simulated datacenter, `capms-manager`'s real `run`, and a small model of CAPI core that
//! the test drives (Cluster, Machines with owner references, bootstrap Secrets, and the
//! Cluster's status once the infrastructure is provisioned). Time is tokio's: tests start
//! paused, so minutes of provisioning pass in milliseconds.

#![allow(dead_code, reason = "each test file uses a part of the support module")]

use capms_backend_sim::http::{ServerConfig, router};
use capms_backend_sim::{Immediate, PartitionSpec, ProvisioningTimes, Sim, SimBuilder};
use capms_core::Timestamp;
use capms_core::api::capi::{
    Bootstrap, Cluster, ClusterSpec, ContractVersionedObjectReference, Machine, MachineSpec,
};
use capms_core::api::{
    MetalStackCluster, MetalStackClusterSpec, MetalStackFirewall, MetalStackFirewallTemplateSpec,
    MetalStackMachine, MetalStackMachineSpec,
};
use capms_fake_apiserver::{FakeApiServer, WaitBound};
use capms_operator::clock::{Clock, drive_sim};
use capms_operator::controller::Scope;
use capms_operator::manager::{self, Settings};
use capms_operator::metrics::Metrics;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub const NAMESPACE: &str = "default";
pub const PROJECT: &str = capms_backend_sim::MINI_LAB_PROJECT;
pub const PARTITION: &str = capms_backend_sim::MINI_LAB_PARTITION;
pub const SIZE: &str = capms_backend_sim::MINI_LAB_SIZE;
/// How long a machine takes from allocation to Phoned Home in these tests.
pub const PROVISIONING: Duration = Duration::from_secs(120);
/// The bound on every wait: virtual (paused) time, generous.
pub const PATIENCE: Duration = Duration::from_secs(3 * 3600);

/// A running manager against a fake management cluster and a simulated datacenter.
pub struct Env {
    pub api: FakeApiServer,
    pub client: Client,
    pub sim: Sim,
    pub metrics: Arc<Metrics>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    manager: tokio::task::JoinHandle<Result<(), String>>,
}

/// One of the Cluster API CRDs vendored in the repository (`vendor/capi-crds/`).
fn capi_crd(file: &str) -> CustomResourceDefinition {
    let path = format!("{}/../vendor/capi-crds/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("cannot read {path}: {error}"));
    serde_saphyr::from_str(&text).unwrap_or_else(|error| panic!("{path} is not a CRD: {error}"))
}

/// A fake apiserver with capms's CRDs and CAPI's Cluster and Machine CRDs installed.
pub fn management_cluster() -> FakeApiServer {
    let api = FakeApiServer::new();
    for crd in capms_core::api::crds::all() {
        api.install_crd(&crd).expect("our CRDs install");
    }
    for file in ["cluster.x-k8s.io_clusters.yaml", "cluster.x-k8s.io_machines.yaml"] {
        api.install_crd(&capi_crd(file)).expect("CAPI CRDs install");
    }
    api
}

pub fn datacenter(clock: &Clock) -> Sim {
    datacenter_with(clock, 8)
}

/// The datacenter with `machines` machines (invariant checks off above a few hundred, as in
/// release builds: they are quadratic).
pub fn datacenter_with(clock: &Clock, machines: usize) -> Sim {
    SimBuilder::new()
        .seed(7)
        .start(clock.now())
        .check_invariants(machines <= 64 && cfg!(debug_assertions))
        .partition(PartitionSpec::mini_lab(PARTITION, machines))
        .provisioning(ProvisioningTimes { provisioning: PROVISIONING, ..ProvisioningTimes::default() })
        .build()
}

pub fn settings(clock: Clock) -> Settings {
    Settings {
        scope: Scope { namespace: None, watch_filter: None, concurrency: 4 },
        metrics_address: None,
        health_address: None,
        leader_elect: false,
        leader_namespace: "capms-system".to_string(),
        allocations_per_partition_max: 5,
        clock,
        record_trace: None,
    }
}

impl Env {
    /// Starts the manager's real `run` with the simulated datacenter as default backend.
    pub async fn start() -> Env {
        let api = management_cluster();
        Env::start_on(api).await
    }

    pub async fn start_on(api: FakeApiServer) -> Env {
        Env::start_sized(api, 8).await
    }

    /// [`Env::start_on`] with a datacenter of `machines` machines.
    pub async fn start_sized(api: FakeApiServer, machines: usize) -> Env {
        Env::start_configured(api, machines, |_| {}).await
    }

    /// The simulated datacenter of `machines` machines as default backend, on tokio's clock,
    /// and the manager's [`settings`] changed by `configure`.
    pub async fn start_configured(
        api: FakeApiServer,
        machines: usize,
        configure: impl FnOnce(&mut Settings),
    ) -> Env {
        let clock = Clock::tokio(Timestamp::from_second(1_767_225_600).expect("a valid start"));
        let sim = datacenter_with(&clock, machines);
        drive_sim(sim.clone(), clock.clone());
        let backend: Arc<dyn capms_core::MetalBackend> =
            Arc::new(sim.backend().with_latency_model(Arc::new(Immediate)));
        let mut settings = settings(clock);
        configure(&mut settings);
        Env::start_with_settings(api, sim, Some(backend), settings).await
    }

    /// Starts the manager with `default_backend` (None: every cluster needs credentials);
    /// `sim` is the datacenter the test inspects.
    pub async fn start_with(
        api: FakeApiServer,
        sim: Sim,
        default_backend: Option<Arc<dyn capms_core::MetalBackend>>,
        clock: Clock,
    ) -> Env {
        let settings = settings(clock);
        Env::start_with_settings(api, sim, default_backend, settings).await
    }

    /// A datacenter of 8 machines and the manager recording a trace to `trace` (trace tests).
    pub async fn start_recording(trace: &std::path::Path) -> Env {
        let trace = capms_operator::trace::TraceSettings { path: trace.to_path_buf(), max_bytes: u64::MAX };
        Env::start_configured(management_cluster(), 8, |settings| settings.record_trace = Some(trace)).await
    }

    /// [`Env::start_with`] with the manager's settings given.
    pub async fn start_with_settings(
        api: FakeApiServer,
        sim: Sim,
        default_backend: Option<Arc<dyn capms_core::MetalBackend>>,
        settings: Settings,
    ) -> Env {
        let backend = default_backend;
        let client = api.client();
        let metrics = Arc::new(Metrics::new());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let manager =
            tokio::spawn(manager::run(client.clone(), backend, settings, metrics.clone(), shutdown));
        Env { api, client, sim, metrics, stop: Some(stop), manager }
    }

    /// Stops the manager gracefully and returns what `run` returned.
    pub async fn stop(mut self) -> Result<(), String> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.manager).await.expect("the manager task does not panic")
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), NAMESPACE)
    }

    /// Waits (in virtual time, bounded by [`PATIENCE`]) until `done` holds; panics with
    /// `what` otherwise.
    pub async fn wait(&self, what: &str, done: impl Fn(&FakeApiServer) -> bool) {
        let result = self.api.wait_until(WaitBound::Timeout(PATIENCE), done).await;
        assert!(
            result.is_ok(),
            "{what}: not reached within {PATIENCE:?} of virtual time ({result:?}); capms objects:\n{}",
            self.describe()
        );
    }

    /// One line per capms object: name, finalizers, deletion, conditions (for failure messages).
    pub fn describe(&self) -> String {
        let kinds = [
            objects::<MetalStackCluster>(&self.api),
            objects::<MetalStackMachine>(&self.api),
            objects::<MetalStackFirewall>(&self.api),
        ];
        let mut lines = Vec::new();
        for object in kinds.iter().flatten() {
            let field =
                |pointer: &str| object.pointer(pointer).map(|value| value.to_string()).unwrap_or_default();
            lines.push(format!(
                "  {} {}: finalizers {} deleting {} conditions {}",
                field("/kind"),
                field("/metadata/name"),
                field("/metadata/finalizers"),
                field("/metadata/deletionTimestamp"),
                field("/status/conditions"),
            ));
        }
        lines.join("\n")
    }

    /// Lets `duration` of virtual time pass while the manager works.
    pub async fn idle(&self, duration: Duration) {
        tokio::time::sleep(duration).await;
    }
}

fn owner_reference<K: Resource<DynamicType = ()>>(owner: &K, controller: bool) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).to_string(),
        kind: K::kind(&()).to_string(),
        name: owner.name_any(),
        uid: owner.meta().uid.clone().unwrap_or_default(),
        controller: Some(controller),
        block_owner_deletion: Some(true),
    }
}

fn labels(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
    Some(pairs.iter().map(|(key, value)| (key.to_string(), value.to_string())).collect())
}

/// CAPI core, as far as the tests need it.
pub struct Capi<'a> {
    pub env: &'a Env,
}

impl Capi<'_> {
    /// Creates a Cluster and its MetalStackCluster (with a firewall if `firewall`).
    pub async fn create_cluster(&self, name: &str, paused: bool, firewall: bool) -> Cluster {
        self.create_cluster_with_credentials(name, paused, firewall, None).await
    }

    /// [`Capi::create_cluster`] whose MetalStackCluster names a credentials Secret.
    pub async fn create_cluster_with_credentials(
        &self,
        name: &str,
        paused: bool,
        firewall: bool,
        credentials: Option<&str>,
    ) -> Cluster {
        let cluster = Cluster {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some(NAMESPACE.to_string()),
                ..ObjectMeta::default()
            },
            spec: ClusterSpec {
                paused: Some(paused),
                control_plane_endpoint: None,
                infrastructure_ref: Some(ContractVersionedObjectReference {
                    api_group: capms_core::api::GROUP.to_string(),
                    kind: "MetalStackCluster".to_string(),
                    name: name.to_string(),
                }),
            },
            ..Cluster::default()
        };
        let cluster = self
            .env
            .api::<Cluster>()
            .create(&PostParams::default(), &cluster)
            .await
            .expect("the Cluster is created");
        let metal_cluster = MetalStackCluster {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some(NAMESPACE.to_string()),
                labels: labels(&[(capms_core::api::capi::CLUSTER_NAME_LABEL, name)]),
                owner_references: Some(vec![owner_reference(&cluster, true)]),
                ..ObjectMeta::default()
            },
            spec: MetalStackClusterSpec {
                project_id: PROJECT.to_string(),
                partition: PARTITION.to_string(),
                firewall: firewall.then(firewall_template),
                credentials_ref: credentials
                    .map(|name| capms_core::api::LocalSecretReference { name: name.to_string() }),
                ..MetalStackClusterSpec::default()
            },
            status: None,
        };
        self.env
            .api::<MetalStackCluster>()
            .create(&PostParams::default(), &metal_cluster)
            .await
            .expect("the MetalStackCluster is created");
        cluster
    }

    /// Creates a Machine, its bootstrap Secret and its MetalStackMachine.
    pub async fn create_machine(&self, cluster: &Cluster, name: &str, control_plane: bool) {
        let cluster_name = cluster.name_any();
        let mut machine_labels = vec![(capms_core::api::capi::CLUSTER_NAME_LABEL, cluster_name.as_str())];
        if control_plane {
            machine_labels.push((capms_core::api::capi::CONTROL_PLANE_LABEL, ""));
        }
        let secret_name = format!("{name}-bootstrap");
        let machine = Machine {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some(NAMESPACE.to_string()),
                labels: labels(&machine_labels),
                owner_references: Some(vec![owner_reference(cluster, false)]),
                ..ObjectMeta::default()
            },
            spec: MachineSpec {
                cluster_name: cluster_name.clone(),
                bootstrap: Bootstrap { config_ref: None, data_secret_name: Some(secret_name.clone()) },
                infrastructure_ref: Some(ContractVersionedObjectReference {
                    api_group: capms_core::api::GROUP.to_string(),
                    kind: "MetalStackMachine".to_string(),
                    name: name.to_string(),
                }),
                provider_id: None,
                failure_domain: None,
            },
            ..Machine::default()
        };
        let machine = self
            .env
            .api::<Machine>()
            .create(&PostParams::default(), &machine)
            .await
            .expect("the Machine is created");
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(secret_name),
                namespace: Some(NAMESPACE.to_string()),
                owner_references: Some(vec![owner_reference(&machine, true)]),
                ..ObjectMeta::default()
            },
            data: Some(BTreeMap::from([(
                "value".to_string(),
                ByteString(format!("#cloud-config\n# {BOOTSTRAP_SECRET_MARKER} for {name}\n").into_bytes()),
            )])),
            ..Secret::default()
        };
        self.env
            .api::<Secret>()
            .create(&PostParams::default(), &secret)
            .await
            .expect("the bootstrap Secret is created");
        let metal_machine = MetalStackMachine {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some(NAMESPACE.to_string()),
                labels: labels(&[(capms_core::api::capi::CLUSTER_NAME_LABEL, cluster_name.as_str())]),
                owner_references: Some(vec![owner_reference(&machine, true)]),
                ..ObjectMeta::default()
            },
            spec: MetalStackMachineSpec {
                size: SIZE.to_string(),
                image: "debian-13.0".to_string(),
                ..MetalStackMachineSpec::default()
            },
            status: None,
        };
        self.env
            .api::<MetalStackMachine>()
            .create(&PostParams::default(), &metal_machine)
            .await
            .expect("the MetalStackMachine is created");
    }

    /// CAPI's cluster controller: once the MetalStackCluster is provisioned, marks the
    /// Cluster's infrastructure provisioned and copies the control-plane endpoint.
    pub async fn sync_cluster(&self, name: &str) -> bool {
        let Ok(Some(metal_cluster)) = self.env.api::<MetalStackCluster>().get_opt(name).await else {
            return false;
        };
        let provisioned =
            metal_cluster.status.as_ref().and_then(|s| s.initialization.as_ref()).and_then(|i| i.provisioned)
                == Some(true);
        if !provisioned {
            return false;
        }
        let params = PatchParams::default();
        let endpoint = json!({"spec": {"controlPlaneEndpoint": metal_cluster.spec.control_plane_endpoint}});
        let status = json!({"status": {"initialization": {"infrastructureProvisioned": true}}});
        let clusters = self.env.api::<Cluster>();
        clusters.patch(name, &params, &Patch::Merge(&endpoint)).await.is_ok()
            && clusters.patch_status(name, &params, &Patch::Merge(&status)).await.is_ok()
    }

    /// Runs [`Capi::sync_cluster`] until it succeeds (bounded by [`PATIENCE`]).
    pub async fn wait_and_sync_cluster(&self, name: &str) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while !self.sync_cluster(name).await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the MetalStackCluster {name} never became provisioned"
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// A marker inside every bootstrap Secret, so that tests can look for leaks of user data.
pub const BOOTSTRAP_SECRET_MARKER: &str = "BOOTSTRAP-SECRET-9c1f";

pub fn firewall_template() -> MetalStackFirewallTemplateSpec {
    serde_json::from_value(json!({
        "size": SIZE,
        "image": capms_backend_sim::MINI_LAB_FIREWALL_IMAGE,
        "networks": ["internet-mini-lab"],
    }))
    .expect("a firewall template")
}

/// The objects of a kind, as JSON, from the fake apiserver.
pub fn objects<K: Resource<DynamicType = ()>>(api: &FakeApiServer) -> Vec<serde_json::Value> {
    api.list_json(&K::api_version(&()), &K::kind(&()))
}

pub fn is_provisioned(object: &serde_json::Value) -> bool {
    object.pointer("/status/initialization/provisioned") == Some(&json!(true))
}

pub fn condition_status(object: &serde_json::Value, type_: &str) -> Option<String> {
    let conditions = object.pointer("/status/conditions")?.as_array()?;
    let condition = conditions.iter().find(|c| c.get("type").and_then(|t| t.as_str()) == Some(type_))?;
    Some(format!(
        "{}/{}",
        condition.get("status")?.as_str()?,
        condition.get("reason").and_then(|r| r.as_str()).unwrap_or_default()
    ))
}

/// The firewall spec type, to satisfy the compiler about the import.
pub type Firewall = MetalStackFirewall;

/// A simulated metal-api over real HTTP on loopback that accepts only `edit_key` (as
/// Metal-Edit) and `token`; returns its base URL.
pub async fn metal_api(sim: Sim, edit_key: &str, token: Option<&str>) -> String {
    let config = ServerConfig {
        edit_key: edit_key.to_string(),
        view_key: "view-unused".to_string(),
        admin_key: "admin-unused".to_string(),
        token: token.map(str::to_string),
        ..ServerConfig::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
    let address = listener.local_addr().expect("an address");
    tokio::spawn(async move { axum::serve(listener, router(sim, config)).await });
    format!("http://{address}/metal")
}

/// The name of the credentials Secret of [`create_credentials`].
pub const CREDENTIALS: &str = "metal-credentials";

/// Creates the Secret [`CREDENTIALS`] for the metal-api at `url` with `hmac_key`.
pub async fn create_credentials(env: &Env, url: String, hmac_key: &str) {
    let credentials = Secret {
        metadata: ObjectMeta { name: Some(CREDENTIALS.to_string()), ..ObjectMeta::default() },
        data: Some(BTreeMap::from([
            ("url".to_string(), ByteString(url.into_bytes())),
            ("hmac".to_string(), ByteString(hmac_key.as_bytes().to_vec())),
        ])),
        ..Secret::default()
    };
    env.api::<Secret>().create(&PostParams::default(), &credentials).await.expect("the credentials Secret");
}

/// [`Env::wait`] for the tests that run in real time (a real HTTP metal-api): a bound of two
/// minutes, not hours.
pub async fn wait_real(env: &Env, what: &str, done: impl Fn(&FakeApiServer) -> bool) {
    let result = env.api.wait_until(WaitBound::Timeout(Duration::from_secs(120)), done).await;
    assert!(result.is_ok(), "{what}: not reached within two minutes; capms objects:\n{}", env.describe());
}

/// True once a MetalStackMachine has its metal machine.
pub fn machine_allocated(api: &FakeApiServer) -> bool {
    objects::<MetalStackMachine>(api).iter().any(|machine| {
        condition_status(machine, "MachineAllocated").is_some_and(|status| status.starts_with("True"))
    })
}

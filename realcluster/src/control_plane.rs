//! A Kubernetes control plane on loopback: etcd, kube-apiserver (client certificates, RBAC,
//! service-account tokens) and kube-controller-manager (the garbage collector that Cluster API's
//! owner references rely on, namespace deletion, role aggregation).

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Api;
use kube::api::PostParams;
use tokio::process::Command;

use crate::error::{Error, IoContext, KubeContext, Result};
use crate::kubeconfig::{self, Credentials};
use crate::parts::{Binaries, Part};
use crate::pki::Pki;
use crate::process::{Process, free_ports};
use crate::wait::{Progress, until};

/// How long etcd may take to serve clients.
const ETCD_READY: Duration = Duration::from_secs(30);
/// How long kube-apiserver may take to answer /readyz (about 6 s on the project's machine).
const APISERVER_READY: Duration = Duration::from_secs(90);
/// Lifetime of the service-account tokens the components run with (longer than any flow).
const TOKEN_SECONDS: i64 = 24 * 60 * 60;
/// The controllers of kube-controller-manager that a management cluster without nodes needs.
/// Node lifecycle is left out on purpose: the test's Nodes have no kubelet, and the flows set
/// their conditions themselves.
const CONTROLLERS: &str = "garbage-collector-controller,namespace-controller,serviceaccount-controller,\
clusterrole-aggregation-controller,root-ca-certificate-publisher-controller";

/// A running control plane.
pub struct ControlPlane {
    name: String,
    dir: PathBuf,
    pki: Pki,
    server: String,
    admin: PathBuf,
    client: kube::Client,
    processes: Vec<Process>,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ControlPlane")
            .field("name", &self.name)
            .field("server", &self.server)
            .field("dir", &self.dir)
            .finish()
    }
}

impl ControlPlane {
    /// Starts etcd, kube-apiserver and kube-controller-manager with their files under `dir`,
    /// and waits until the apiserver is ready. With `audit`, the apiserver logs every service
    /// account's requests to `<dir>/audit.log`.
    pub async fn start(binaries: &Binaries, dir: &Path, name: &str, audit: bool) -> Result<ControlPlane> {
        let pki = Pki::create(&dir.join("pki"), name)?;
        let [etcd_client, etcd_peer, api_port] = free_ports(3)?[..] else {
            return Err(Error::Invalid("free_ports returned the wrong count".to_string()));
        };
        let mut processes = vec![start_etcd(binaries, dir, etcd_client, etcd_peer).await?];
        let server = format!("https://127.0.0.1:{api_port}");
        let admin = dir.join("admin.kubeconfig");
        let admin_certificate = pki.client("admin", "capms-realcluster-admin", "system:masters")?;
        kubeconfig::write(
            &admin,
            &kubeconfig::kubeconfig(
                name,
                &server,
                &pki.ca_pem(),
                "admin",
                &Credentials::Certificate(admin_certificate),
            )?,
        )?;
        let signing = pki.signing_key("service-accounts")?;
        let mut apiserver = apiserver(binaries, dir, &pki, etcd_client, api_port, &signing)?;
        if audit {
            audit_service_accounts(&mut apiserver, dir)?;
        }
        processes.push(Process::spawn("kube-apiserver", apiserver, dir)?);
        let client = kubeconfig::client(&admin).await?;
        let mut plane = ControlPlane {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            pki,
            server,
            admin,
            client,
            processes,
        };
        plane.wait_ready().await?;
        let mut manager = binaries.command(Part::KubeControllerManager);
        manager.args(["--kubeconfig", &path(&plane.admin), "--leader-elect=false", "--secure-port=0"]);
        manager.args(["--controllers", CONTROLLERS, "--use-service-account-credentials=false"]);
        manager.args([
            "--service-account-private-key-file",
            &path(&signing.key),
            "--root-ca-file",
            &path(&plane.pki.ca_file()),
        ]);
        manager.args(["--cluster-name", name]);
        plane.processes.push(Process::spawn("kube-controller-manager", manager, dir)?);
        Ok(plane)
    }

    /// The cluster's name (its kubeconfig context).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The folder of its files and logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The apiserver's URL.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The admin kubeconfig's file (cluster-admin by client certificate).
    pub fn admin_kubeconfig(&self) -> &Path {
        &self.admin
    }

    /// An admin client.
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// The CA and its issued certificates.
    pub fn pki(&self) -> &Pki {
        &self.pki
    }

    /// Fails if one of its processes has exited.
    pub fn alive(&mut self) -> Result<()> {
        self.processes.iter_mut().try_for_each(Process::alive)
    }

    /// A kubeconfig (written to `<dir>/<namespace>-<account>.kubeconfig`) that authenticates as
    /// service account `namespace/account`, with a token from the TokenRequest API: what a pod
    /// of that account would have.
    pub async fn service_account_kubeconfig(&self, namespace: &str, account: &str) -> Result<PathBuf> {
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client(), namespace);
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: vec![],
                expiration_seconds: Some(TOKEN_SECONDS),
                ..Default::default()
            },
            ..Default::default()
        };
        let answer = accounts
            .create_token_request(account, &PostParams::default(), &request)
            .await
            .kube(|| format!("request a token for service account {namespace}/{account}"))?;
        let token = answer.status.map(|status| status.token).unwrap_or_default();
        if token.is_empty() {
            return Err(Error::Invalid(format!(
                "the token request for {namespace}/{account} returned no token"
            )));
        }
        let file = self.dir.join(format!("{namespace}-{account}.kubeconfig"));
        let user = format!("system:serviceaccount:{namespace}:{account}");
        kubeconfig::write(
            &file,
            &kubeconfig::kubeconfig(
                &self.name,
                &self.server,
                &self.pki.ca_pem(),
                &user,
                &Credentials::Token(token),
            )?,
        )?;
        Ok(file)
    }

    /// Stops every process, the apiserver before etcd.
    pub async fn stop(mut self) {
        while let Some(process) = self.processes.pop() {
            process.stop().await;
        }
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let client = self.client();
        let processes = &mut self.processes;
        until("kube-apiserver /readyz", APISERVER_READY, async || {
            processes.iter_mut().try_for_each(Process::alive)?;
            let request = http::Request::get("/readyz")
                .body(Vec::new())
                .map_err(|error| Error::Invalid(error.to_string()))?;
            Ok(match client.request_text(request).await {
                Ok(text) if text.trim() == "ok" => Progress::Done(()),
                Ok(text) => Progress::Waiting(text),
                Err(error) => Progress::Waiting(error.to_string()),
            })
        })
        .await
    }
}

async fn start_etcd(binaries: &Binaries, dir: &Path, client: u16, peer: u16) -> Result<Process> {
    let mut etcd = binaries.command(Part::Etcd);
    etcd.args(["--data-dir", &path(&dir.join("etcd")), "--unsafe-no-fsync", "--log-level", "warn"]);
    etcd.args(["--listen-client-urls", &format!("http://127.0.0.1:{client}")]);
    etcd.args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")]);
    let mut process = Process::spawn("etcd", etcd, dir)?;
    let log = process.log().to_path_buf();
    until("etcd to serve clients", ETCD_READY, async || {
        process.alive()?;
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        Ok(if text.lines().any(|line| line == "ready") {
            Progress::Done(())
        } else {
            Progress::Waiting("not ready".to_string())
        })
    })
    .await?;
    Ok(process)
}

fn apiserver(
    binaries: &Binaries,
    dir: &Path,
    pki: &Pki,
    etcd_client: u16,
    port: u16,
    signing: &crate::pki::KeyFiles,
) -> Result<Command> {
    let serving = pki.server("apiserver")?;
    let mut apiserver = binaries.command(Part::KubeApiserver);
    apiserver.args(["--etcd-servers", &format!("http://127.0.0.1:{etcd_client}")]);
    apiserver.args([
        "--bind-address",
        "127.0.0.1",
        "--advertise-address",
        "127.0.0.1",
        "--secure-port",
        &port.to_string(),
    ]);
    apiserver.args(["--cert-dir", &path(&dir.join("apiserver-certs"))]);
    apiserver.args(["--tls-cert-file", &path(&serving.cert), "--tls-private-key-file", &path(&serving.key)]);
    apiserver.args(["--client-ca-file", &path(&pki.ca_file()), "--authorization-mode", "Node,RBAC"]);
    apiserver.args(["--service-account-issuer", "https://kubernetes.default.svc.cluster.local"]);
    apiserver.args(["--service-account-key-file", &path(&signing.cert)]);
    apiserver.args(["--service-account-signing-key-file", &path(&signing.key)]);
    apiserver.args(["--service-cluster-ip-range", "10.0.0.0/24", "--allow-privileged"]);
    // The default endpoint reconciler refuses a loopback advertise address; nothing here needs
    // the `kubernetes` Service's endpoints.
    apiserver.args(["--endpoint-reconciler-type", "none"]);
    Ok(apiserver)
}

/// An audit policy that records the metadata of every service account's requests once, when
/// they complete, to `<dir>/audit.log`.
fn audit_service_accounts(apiserver: &mut Command, dir: &Path) -> Result<()> {
    let policy = dir.join("audit-policy.json");
    let rules = serde_json::json!({
        "apiVersion": "audit.k8s.io/v1",
        "kind": "Policy",
        "omitStages": ["RequestReceived", "ResponseStarted"],
        "rules": [
            { "level": "Metadata", "userGroups": ["system:serviceaccounts"] },
            { "level": "None" },
        ],
    });
    std::fs::write(&policy, rules.to_string()).io(|| format!("write {}", policy.display()))?;
    apiserver.args([
        "--audit-policy-file",
        &path(&policy),
        "--audit-log-path",
        &path(&dir.join("audit.log")),
    ]);
    apiserver.args(["--audit-log-format", "json", "--audit-log-maxsize", "0"]);
    Ok(())
}

/// A path as an argument.
pub fn path(path: &Path) -> String {
    path.display().to_string()
}

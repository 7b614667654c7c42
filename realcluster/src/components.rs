//! Installing providers the way `clusterctl init` does, and running their managers as
//! processes instead of Deployments.
//!
//! `clusterctl init` needs cert-manager running (it waits for a test Certificate) and installs
//! Deployments that cannot run here (no kubelet, no images). So the harness does what init does,
//! step by step, with the real pieces where they can run:
//!
//! 1. the components YAML: Cluster API's from its pinned module's `config/default` kustomizations
//!    (`kubectl kustomize`), capms's from `capms-manager manifests --out DIR`;
//! 2. variables substituted by the real `clusterctl generate yaml`;
//! 3. every object labelled as clusterctl labels it (`clusterctl.cluster.x-k8s.io` and
//!    `cluster.x-k8s.io/provider`), so that `clusterctl move` finds the CRDs;
//! 4. what cert-manager would do done by the harness: webhook configurations and CRD conversion
//!    webhooks point at the manager's webhook server on loopback (a URL instead of the Service)
//!    with the harness CA as `caBundle`, and the serving certificate is written where the manager
//!    reads it; cert-manager's Certificate and Issuer objects are left out;
//! 5. applied server-side with `kubectl`, then the provider inventory entry (the `Provider`
//!    object init writes);
//! 6. the Deployment is not applied: its container's arguments and environment start the real
//!    binary as a process, authenticated with a token of the Deployment's ServiceAccount, so the
//!    shipped RBAC is exactly what the manager has.

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use serde_json::{Value, json};
use tokio::process::Command;

use crate::control_plane::{ControlPlane, path};
use crate::error::{Error, IoContext, KubeContext, Result};
use crate::parts::{Binaries, Part};
use crate::process::{Process, output};
use crate::wait::{Progress, until};

/// clusterctl's label on everything it installs.
pub const CLUSTERCTL_LABEL: &str = "clusterctl.cluster.x-k8s.io";
/// Cluster API's provider label (the manifest label: `cluster-api`, `infrastructure-metalstack`).
pub const PROVIDER_LABEL: &str = "cluster.x-k8s.io/provider";
/// How long CRDs may take to become Established.
const CRDS_ESTABLISHED: Duration = Duration::from_secs(60);
/// How long a manager may take to answer its readiness probe.
const MANAGER_READY: Duration = Duration::from_secs(120);

/// The four kinds of provider clusterctl knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderType {
    Core,
    Bootstrap,
    ControlPlane,
    Infrastructure,
}

impl ProviderType {
    /// The inventory's `type`.
    fn inventory_type(self) -> &'static str {
        match self {
            ProviderType::Core => "CoreProvider",
            ProviderType::Bootstrap => "BootstrapProvider",
            ProviderType::ControlPlane => "ControlPlaneProvider",
            ProviderType::Infrastructure => "InfrastructureProvider",
        }
    }
}

/// A provider: what clusterctl calls it and which binary is its manager.
#[derive(Debug, Clone)]
pub struct Provider {
    pub provider_type: ProviderType,
    /// clusterctl's provider name: `cluster-api`, `kubeadm`, `metalstack`.
    pub name: &'static str,
    pub version: String,
    pub binary: Part,
}

impl Provider {
    /// clusterctl's manifest label: `cluster-api`, `bootstrap-kubeadm`, `control-plane-kubeadm`,
    /// `infrastructure-metalstack`.
    pub fn manifest_label(&self) -> String {
        match self.provider_type {
            ProviderType::Core => self.name.to_string(),
            ProviderType::Bootstrap => format!("bootstrap-{}", self.name),
            ProviderType::ControlPlane => format!("control-plane-{}", self.name),
            ProviderType::Infrastructure => format!("infrastructure-{}", self.name),
        }
    }
}

/// A flag of the manager's command line that the harness sets (ports and files of its own).
#[derive(Debug, Clone)]
pub struct Flag {
    pub name: &'static str,
    pub value: String,
}

/// A provider's components, ready to install.
#[derive(Debug, Clone)]
pub struct Components {
    pub provider: Provider,
    objects: Vec<Value>,
    deployment: Value,
    webhook_port: Option<u16>,
}

impl Components {
    /// Reads the components in `file` (clusterctl variables substituted by the real `clusterctl
    /// generate yaml` from `variables` and the clusterctl configuration `config`, as `clusterctl
    /// init --config` would), labels them as clusterctl does, and points their webhooks at
    /// `webhook_port` on loopback trusting `ca_pem`.
    pub async fn load(
        binaries: &Binaries,
        provider: Provider,
        file: &Path,
        config: &Path,
        variables: &[(&str, &str)],
        webhook_port: u16,
        ca_pem: &str,
    ) -> Result<Components> {
        let mut generate = clusterctl(binaries, file.parent().unwrap_or(file));
        generate.args(["generate", "yaml", "--config", &path(config), "--from", &path(file)]);
        generate.envs(variables.iter().copied());
        let text = output(generate).await?;
        let documents: Vec<Value> = serde_saphyr::from_multiple(&text)
            .map_err(|error| Error::Invalid(format!("{}: {error}", file.display())))?;
        let label = provider.manifest_label();
        let mut objects = Vec::new();
        let mut deployment = None;
        let mut has_webhooks = false;
        for mut object in documents.into_iter().filter(|document| !document.is_null()) {
            label_object(&mut object, &label);
            match kind(&object) {
                "Deployment" => deployment = Some(object),
                // cert-manager's objects: the harness issues the serving certificate itself.
                "Certificate" | "Issuer" if api_group(&object) == "cert-manager.io" => {}
                _ => {
                    has_webhooks |= webhooks_to_loopback(&mut object, webhook_port, ca_pem);
                    objects.push(object);
                }
            }
        }
        let deployment =
            deployment.ok_or_else(|| Error::Invalid(format!("{}: no Deployment", file.display())))?;
        Ok(Components { provider, objects, deployment, webhook_port: has_webhooks.then_some(webhook_port) })
    }

    /// The objects that are applied (everything but the Deployment and cert-manager's).
    pub fn objects(&self) -> &[Value] {
        &self.objects
    }

    /// The Deployment's namespace: where the provider is installed.
    pub fn namespace(&self) -> Result<String> {
        text(&self.deployment, "/metadata/namespace")
    }

    /// Applies the objects server-side, waits until their CRDs are Established, and writes the
    /// provider's inventory entry.
    pub async fn install(&self, plane: &ControlPlane) -> Result<()> {
        apply(plane, &format!("{}-components", self.provider.manifest_label()), &self.objects).await?;
        let crds: Vec<String> = self
            .objects
            .iter()
            .filter(|object| kind(object) == "CustomResourceDefinition")
            .filter_map(|object| object.pointer("/metadata/name").and_then(Value::as_str).map(String::from))
            .collect();
        wait_established(plane, &crds).await?;
        apply(plane, &format!("{}-inventory", self.provider.manifest_label()), &[self.inventory()?]).await
    }

    /// Starts the manager as a process: the Deployment's container arguments with `flags`
    /// replacing those of the same name, its environment (Secret keys read from the apiserver,
    /// pod fields filled in), and a kubeconfig of its ServiceAccount. With webhooks, the serving
    /// certificate goes to `--webhook-cert-dir`. Waits until `ready` answers.
    pub async fn run(
        &self,
        binaries: &Binaries,
        plane: &ControlPlane,
        flags: &[Flag],
        ready: Ready,
    ) -> Result<Process> {
        let namespace = self.namespace()?;
        let label = self.provider.manifest_label();
        let pod = self.deployment.pointer("/spec/template/spec").cloned().unwrap_or(Value::Null);
        let account = pod.get("serviceAccountName").and_then(Value::as_str).unwrap_or("default");
        let kubeconfig = plane.service_account_kubeconfig(&namespace, account).await?;
        let container = pod.pointer("/containers/0").cloned().unwrap_or(Value::Null);
        let mut args: Vec<String> = strings(container.get("args"));
        let mut flags = flags.to_vec();
        if let Some(port) = self.webhook_port {
            let certificates = plane.dir().join(format!("{label}-webhook"));
            std::fs::create_dir_all(&certificates).io(|| format!("create {}", certificates.display()))?;
            let serving = plane.pki().server(&format!("{label}-webhook"))?;
            copy(&serving.cert, &certificates.join("tls.crt"))?;
            copy(&serving.key, &certificates.join("tls.key"))?;
            flags.push(Flag { name: "--webhook-port", value: port.to_string() });
            flags.push(Flag { name: "--webhook-cert-dir", value: path(&certificates) });
        }
        for flag in &flags {
            set_flag(&mut args, flag);
        }
        let mut command = binaries.command(self.provider.binary);
        command.args(&args).env("KUBECONFIG", &kubeconfig);
        for (name, value) in environment(plane, &namespace, &label, &container).await? {
            command.env(name, value);
        }
        let mut process = Process::spawn(&label, command, plane.dir())?;
        wait_ready(&mut process, &ready).await?;
        Ok(process)
    }

    fn inventory(&self) -> Result<Value> {
        let label = self.provider.manifest_label();
        Ok(json!({
            "apiVersion": "clusterctl.cluster.x-k8s.io/v1alpha3",
            "kind": "Provider",
            "metadata": {
                "name": label,
                "namespace": self.namespace()?,
                "labels": { CLUSTERCTL_LABEL: "", PROVIDER_LABEL: label, "clusterctl.cluster.x-k8s.io/core": "inventory" },
            },
            "providerName": self.provider.name,
            "type": self.provider.provider_type.inventory_type(),
            "version": self.provider.version,
        }))
    }
}

/// Where a manager answers that it is ready.
#[derive(Debug, Clone)]
pub struct Ready {
    /// `http://127.0.0.1:<port>/readyz` or similar.
    pub url: String,
}

/// A `clusterctl` command with its configuration and version check kept inside `home`.
pub fn clusterctl(binaries: &Binaries, home: &Path) -> Command {
    let mut command = binaries.command(Part::Clusterctl);
    // clusterctl would ask GitHub for newer releases; this machine has no route there.
    command.env("CLUSTERCTL_DISABLE_VERSIONCHECK", "true");
    command.env("HOME", home).env("XDG_CONFIG_HOME", home.join(".config"));
    command
}

/// `kubectl` against `plane` as admin.
pub fn kubectl(plane: &ControlPlane) -> Command {
    let mut command = Command::new(std::env::var_os("KUBECTL").unwrap_or_else(|| "kubectl".into()));
    command.arg("--kubeconfig").arg(plane.admin_kubeconfig()).args(["--request-timeout", "60s"]);
    command
}

/// Applies `objects` server-side (as one `List`, written to `<dir>/<name>.json`).
pub async fn apply(plane: &ControlPlane, name: &str, objects: &[Value]) -> Result<()> {
    let file = plane.dir().join(format!("{name}.json"));
    let list = json!({ "apiVersion": "v1", "kind": "List", "items": objects });
    std::fs::write(&file, list.to_string()).io(|| format!("write {}", file.display()))?;
    let mut command = kubectl(plane);
    command.args([
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager",
        "capms-realcluster",
        "-f",
    ]);
    command.arg(&file);
    output(command).await.map(|_| ())
}

/// Waits until every CRD in `names` is Established.
pub async fn wait_established(plane: &ControlPlane, names: &[String]) -> Result<()> {
    if names.is_empty() {
        return Ok(());
    }
    let mut command = kubectl(plane);
    command.args([
        "wait",
        "--for",
        "condition=Established",
        "--timeout",
        &format!("{}s", CRDS_ESTABLISHED.as_secs()),
    ]);
    command.args(names.iter().map(|name| format!("crd/{name}")));
    output(command).await.map(|_| ())
}

/// The documents of `kubectl kustomize DIR`.
pub async fn kustomize(plane: &ControlPlane, dir: &Path) -> Result<String> {
    let mut command = kubectl(plane);
    command.arg("kustomize").arg(dir);
    output(command).await
}

/// Adds clusterctl's labels to `object`.
fn label_object(object: &mut Value, manifest_label: &str) {
    let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) else { return };
    let labels = metadata.entry("labels").or_insert_with(|| json!({}));
    if let Some(labels) = labels.as_object_mut() {
        labels.insert(CLUSTERCTL_LABEL.to_string(), json!(""));
        labels.insert(PROVIDER_LABEL.to_string(), json!(manifest_label));
    }
}

/// Points every webhook of a webhook configuration, and a CRD's conversion webhook, at
/// `https://127.0.0.1:<port><path>` trusting `ca_pem`. Returns whether `object` had any.
fn webhooks_to_loopback(object: &mut Value, port: u16, ca_pem: &str) -> bool {
    let bundle = STANDARD.encode(ca_pem);
    let mut client_configs: Vec<&mut Value> = Vec::new();
    match kind(object) {
        "MutatingWebhookConfiguration" | "ValidatingWebhookConfiguration" => {
            if let Some(webhooks) = object.get_mut("webhooks").and_then(Value::as_array_mut) {
                client_configs
                    .extend(webhooks.iter_mut().filter_map(|webhook| webhook.get_mut("clientConfig")));
            }
        }
        "CustomResourceDefinition" => {
            client_configs.extend(object.pointer_mut("/spec/conversion/webhook/clientConfig"));
        }
        _ => {}
    }
    let found = !client_configs.is_empty();
    for config in client_configs {
        let webhook_path = config.pointer("/service/path").and_then(Value::as_str).unwrap_or("/").to_string();
        *config = json!({ "url": format!("https://127.0.0.1:{port}{webhook_path}"), "caBundle": bundle });
    }
    if found
        && let Some(annotations) = object.pointer_mut("/metadata/annotations").and_then(Value::as_object_mut)
    {
        annotations.remove("cert-manager.io/inject-ca-from");
    }
    found
}

/// Replaces `--name=...` / `--name` in `args` with `--name=value`.
fn set_flag(args: &mut Vec<String>, flag: &Flag) {
    let prefix = format!("{}=", flag.name);
    args.retain(|arg| arg != flag.name && !arg.starts_with(&prefix));
    args.push(format!("{}={}", flag.name, flag.value));
}

/// The container's environment: plain values, Secret keys (read from the apiserver, as the
/// kubelet would), and the pod fields a Deployment's pod would have.
async fn environment(
    plane: &ControlPlane,
    namespace: &str,
    pod_name: &str,
    container: &Value,
) -> Result<Vec<(String, String)>> {
    let secrets: Api<Secret> = Api::namespaced(plane.client(), namespace);
    let mut environment = Vec::new();
    for variable in container.get("env").and_then(Value::as_array).into_iter().flatten() {
        let name = text(variable, "/name")?;
        let value = if let Some(value) = variable.get("value").and_then(Value::as_str) {
            Some(value.to_string())
        } else if let Some(reference) = variable.pointer("/valueFrom/secretKeyRef") {
            secret_key(&secrets, reference).await?
        } else {
            match variable.pointer("/valueFrom/fieldRef/fieldPath").and_then(Value::as_str) {
                Some("metadata.namespace") => Some(namespace.to_string()),
                Some("metadata.name") => Some(format!("{pod_name}-process")),
                Some("metadata.uid") => Some("00000000-0000-0000-0000-00000000cafe".to_string()),
                _ => None,
            }
        };
        environment.extend(value.map(|value| (name, value)));
    }
    Ok(environment)
}

async fn secret_key(secrets: &Api<Secret>, reference: &Value) -> Result<Option<String>> {
    let name = text(reference, "/name")?;
    let key = text(reference, "/key")?;
    let optional = reference.get("optional").and_then(Value::as_bool).unwrap_or(false);
    let secret = secrets.get_opt(&name).await.kube(|| format!("read Secret {name}"))?;
    let value = secret.and_then(|secret| secret.data).and_then(|data| data.get(&key).cloned());
    match value {
        Some(bytes) => Ok(Some(String::from_utf8_lossy(&bytes.0).into_owned())),
        None if optional => Ok(None),
        None => Err(Error::Invalid(format!("Secret {name} has no key {key}, and the Deployment needs it"))),
    }
}

async fn wait_ready(process: &mut Process, ready: &Ready) -> Result<()> {
    let name = process.name().to_string();
    until(&format!("{name} to be ready ({})", ready.url), MANAGER_READY, async || {
        process.alive()?;
        Ok(match http_get(&ready.url).await {
            Ok(200) => Progress::Done(()),
            Ok(status) => Progress::Waiting(format!("HTTP {status}")),
            Err(error) => Progress::Waiting(error),
        })
    })
    .await
}

/// The status code of an HTTP GET (probe endpoints on loopback).
async fn http_get(url: &str) -> std::result::Result<u16, String> {
    reqwest::get(url).await.map(|answer| answer.status().as_u16()).map_err(|error| error.to_string())
}

/// `object.kind`.
pub fn kind(object: &Value) -> &str {
    object.get("kind").and_then(Value::as_str).unwrap_or("")
}

fn api_group(object: &Value) -> &str {
    let version = object.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    version.split_once('/').map_or("", |(group, _)| group)
}

fn text(value: &Value, pointer: &str) -> Result<String> {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .map(String::from)
        .ok_or_else(|| Error::Invalid(format!("no {pointer} in {value}")))
}

fn strings(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(String::from)
        .collect()
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    std::fs::copy(from, to).map(|_| ()).io(|| format!("copy {} to {}", from.display(), to.display()))
}

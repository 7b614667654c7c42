//! Kubeconfig files with everything embedded (CA, client certificate or token), for the admin,
//! the components' service accounts and the workload clusters' `<cluster>-kubeconfig` Secrets,
//! and kube clients from them.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::{Value, json};

use crate::error::{Error, IoContext, Result};
use crate::pki::KeyFiles;

/// How a kubeconfig's user authenticates.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// A client certificate signed by the cluster's CA.
    Certificate(KeyFiles),
    /// A bearer token (a service account's, from the TokenRequest API).
    Token(String),
}

/// A kubeconfig for `server` (trusting `ca_pem`) with one context named `name`.
pub fn kubeconfig(
    name: &str,
    server: &str,
    ca_pem: &str,
    user: &str,
    credentials: &Credentials,
) -> Result<Value> {
    let user_entry = match credentials {
        Credentials::Certificate(files) => json!({
            "client-certificate-data": STANDARD.encode(read(&files.cert)?),
            "client-key-data": STANDARD.encode(read(&files.key)?),
        }),
        Credentials::Token(token) => json!({ "token": token }),
    };
    Ok(json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": name, "cluster": {
            "server": server,
            "certificate-authority-data": STANDARD.encode(ca_pem),
        }}],
        "users": [{ "name": user, "user": user_entry }],
        "contexts": [{ "name": name, "context": { "cluster": name, "user": user } }],
        "current-context": name,
    }))
}

/// Writes a kubeconfig (JSON is YAML, and every Kubernetes client reads it).
pub fn write(path: &Path, kubeconfig: &Value) -> Result<()> {
    std::fs::write(path, kubeconfig.to_string()).io(|| format!("write {}", path.display()))
}

/// A kube client for the kubeconfig file at `path`.
pub async fn client(path: &Path) -> Result<kube::Client> {
    let file = Kubeconfig::read_from(path)
        .map_err(|error| Error::Invalid(format!("{}: {error}", path.display())))?;
    let config = kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
        .await
        .map_err(|error| Error::Invalid(format!("{}: {error}", path.display())))?;
    kube::Client::try_from(config)
        .map_err(|source| Error::Kube { context: format!("client for {}", path.display()), source })
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).io(|| format!("read {}", path.display()))
}

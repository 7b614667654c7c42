//! Errors of the manager: values with a class that drives the retry and the metrics label.
//! Failures of metal-api calls do not appear here: the core reconcilers turn them into
//! conditions and requeues. What fails here is talking to Kubernetes and configuration.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// A read or write of the management cluster failed.
    #[error("kubernetes: {0}")]
    Kubernetes(#[from] kube::Error),
    /// The object changed since it was read; the next reconcile re-reads it.
    #[error("the object changed while it was reconciled")]
    Conflict,
    /// Neither the manager nor the cluster has metal-api credentials.
    #[error(
        "no metal-api credentials: set METAL_API_URL and METAL_API_HMAC (or METAL_API_TOKEN), or spec.credentialsRef on the MetalStackCluster"
    )]
    NoCredentials,
    /// A cluster's credentials Secret is unusable. Never contains the Secret's values.
    #[error("credentials Secret {secret} {reason}")]
    Credentials { secret: String, reason: String },
    /// The name of a cluster's firewall is taken by a MetalStackFirewall it does not own.
    #[error(
        "MetalStackFirewall {name} exists but is not owned by this MetalStackCluster: capms creates the cluster's firewall under this name; delete or rename the other object"
    )]
    FirewallNameTaken { name: String },
    /// An object could not be serialized for a write (a bug).
    #[error("cannot encode the write: {0}")]
    Encode(#[from] serde_json::Error),
}

impl OperatorError {
    /// The metrics label of the error.
    pub fn class(&self) -> &'static str {
        match self {
            OperatorError::Kubernetes(kube::Error::Api(status)) if status.code == 409 => "conflict",
            OperatorError::Kubernetes(kube::Error::Api(status)) if status.code == 404 => "not_found",
            OperatorError::Kubernetes(kube::Error::Api(status)) if status.code == 422 => "invalid",
            OperatorError::Kubernetes(_) => "kubernetes",
            OperatorError::Conflict => "conflict",
            OperatorError::NoCredentials | OperatorError::Credentials { .. } => "auth",
            OperatorError::FirewallNameTaken { .. } => "invalid",
            OperatorError::Encode(_) => "permanent",
        }
    }

    /// When to try again: conflicts at once (re-read), configuration after a while (someone
    /// has to fix it), the rest soon.
    pub fn retry_after(&self) -> Duration {
        match self.class() {
            "conflict" | "not_found" => Duration::from_millis(200),
            "auth" | "permanent" | "invalid" => Duration::from_secs(60),
            _ => Duration::from_secs(5),
        }
    }
}

/// True for the answers of a conditional write that lost the race: 409 for a stale
/// resourceVersion, or 422 for our failed `test` of `/metadata/resourceVersion`. Other 422s
/// (a rejected value, an immutable field) are real errors and must surface as such.
pub fn is_conflict(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) => {
            status.code == 409 || (status.code == 422 && status.message.contains("/metadata/resourceVersion"))
        }
        _ => false,
    }
}

//! Errors of the manager: values with a class ([`FailureClass`], core's) that drives the retry
//! and the metrics label. Failures of metal-api calls do not appear here: the core reconcilers
//! turn them into conditions and requeues. What fails here is talking to Kubernetes and
//! configuration.

use capms_core::glue::{CredentialsError, FailureClass, WriteError};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// A read of the management cluster failed.
    #[error("kubernetes: {0}")]
    Kubernetes(#[from] kube::Error),
    /// A write of the glue failed (conflicts, refusals, a taken firewall name).
    #[error(transparent)]
    Write(#[from] WriteError),
    /// Neither the manager nor the cluster has metal-api credentials.
    #[error(
        "no metal-api credentials: set METAL_API_URL and METAL_API_HMAC (or METAL_API_TOKEN), or spec.credentialsRef on the MetalStackCluster"
    )]
    NoCredentials,
    /// A cluster's credentials Secret is missing or unusable (reported on the objects by
    /// core's [`capms_core::glue::credentials`]). Never contains the Secret's values.
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
}

impl OperatorError {
    /// The class of the error.
    pub fn class(&self) -> FailureClass {
        match self {
            OperatorError::Kubernetes(error) => crate::apply::write_error_of(error).class(),
            OperatorError::Write(error) => error.class(),
            OperatorError::Credentials(error) => error.class(),
            OperatorError::NoCredentials => FailureClass::Auth,
        }
    }

    /// When to try again first: the class's delay, or what a 429 asked for.
    pub fn retry_after(&self) -> Duration {
        match self {
            OperatorError::Write(error) => error.retry_after(),
            other => other.class().retry_after(),
        }
    }
}

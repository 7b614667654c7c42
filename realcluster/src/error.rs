//! The harness's one error type: what failed, with what the failing part said.

use std::path::Path;

/// Everything that can stop the harness. Each variant names the part and the step, and where a
/// process failed, the last lines of its log: a failing flow is diagnosed from its message.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or process operation failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A request to a kube-apiserver failed.
    #[error("{context}: {source}")]
    Kube {
        context: String,
        #[source]
        source: kube::Error,
    },
    /// A command (kubectl, clusterctl, go, capms-manager) exited non-zero.
    #[error("`{command}` failed ({status}):\n{output}")]
    Command { command: String, status: String, output: String },
    /// A process the harness started exited while it was needed.
    #[error("{name} exited ({status}); last lines of {log}:\n{tail}")]
    Exited { name: String, status: String, log: String, tail: String },
    /// Something did not happen in time. `state` is what was seen last.
    #[error("timed out after {seconds} s waiting for {what}; last seen: {state}")]
    Timeout { what: String, seconds: u64, state: String },
    /// Certificates or keys could not be made.
    #[error("certificates: {0}")]
    Certificate(#[from] rcgen::Error),
    /// A document, a binary or an object was not what the harness expects.
    #[error("{0}")]
    Invalid(String),
}

/// The harness's result.
pub type Result<T> = std::result::Result<T, Error>;

/// Adds what was being done to an I/O error.
pub trait IoContext<T> {
    fn io(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn io(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io { context: context(), source })
    }
}

/// Adds what was being done to a kube-apiserver error.
pub trait KubeContext<T> {
    fn kube(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> KubeContext<T> for std::result::Result<T, kube::Error> {
    fn kube(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Kube { context: context(), source })
    }
}

/// The last `lines` lines of a log file (empty if it cannot be read).
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

//! Waiting for real processes: poll a probe until it is done or a deadline passes, and report
//! what was seen last when it does not finish.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// How often probes run.
pub const POLL: Duration = Duration::from_millis(250);

/// What a probe saw.
#[derive(Debug)]
pub enum Progress<T> {
    /// Finished, with its result.
    Done(T),
    /// Not yet; the text says what the probe saw (quoted if the wait times out).
    Waiting(String),
}

/// Runs `probe` every [`POLL`] until it is done, fails, or `timeout` passes.
pub async fn until<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl AsyncFnMut() -> Result<Progress<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        let state = match probe().await? {
            Progress::Done(value) => return Ok(value),
            Progress::Waiting(state) => state,
        };
        if Instant::now() >= deadline {
            return Err(Error::Timeout { what: what.to_string(), seconds: timeout.as_secs(), state });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Runs `future` with a deadline; for steps that wait inside one call.
pub async fn within<T>(what: &str, timeout: Duration, future: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(timeout, future).await.unwrap_or_else(|_| {
        Err(Error::Timeout {
            what: what.to_string(),
            seconds: timeout.as_secs(),
            state: "no answer".to_string(),
        })
    })
}

//! Logging: text or JSON lines on stderr, filtered by `--log-level` (tracing's EnvFilter syntax).
//! Nothing secret is ever handed to a log macro: keys and tokens live in `SecretString`s and
//! bootstrap data in `UserData`, whose `Debug` and `Display` are redacted.

use crate::cli::LogFormat;
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. A second call (tests) leaves the first in place.
pub fn init(format: LogFormat, filter: &str) -> Result<(), String> {
    let filter =
        EnvFilter::try_new(filter).map_err(|error| format!("invalid --log-level {filter:?}: {error}"))?;
    // Colours only on a terminal: a log file or a collector gets plain text (the real-cluster
    // harness's log files showed escape codes).
    let colours = std::io::stderr().is_terminal();
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(colours);
    let installed = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
    // Already installed (a test or an embedding program did it): keep that one.
    let _ = installed;
    Ok(())
}

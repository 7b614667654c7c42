//! `--record-trace PATH`: every reconcile written to a trace file (docs/traces.md), for
//! `capms-sim replay`. The file is size-bounded: once a record would take it past
//! `--record-trace-max-bytes`, it is renamed to `PATH.1` (replacing an older one) and a new file
//! starts with its own header, so at most twice the bound is on disk and each file replays on
//! its own.

use capms_core::trace::{self, Header, Record, TraceSink};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Where and how much to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceSettings {
    pub path: PathBuf,
    /// Size of one file before it rotates to `PATH.1`.
    pub max_bytes: u64,
}

/// A rotating trace file. Write failures are logged and the record dropped: recording must
/// never stop the operator.
#[derive(Debug)]
pub struct TraceFile {
    settings: TraceSettings,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    file: Option<File>,
    written: u64,
    sequence: u64,
}

fn header() -> Header {
    Header::new(format!("capms-manager {}", env!("CARGO_PKG_VERSION")))
}

/// `PATH.1`.
pub fn rotated_path(path: &Path) -> PathBuf {
    let mut rotated = path.as_os_str().to_owned();
    rotated.push(".1");
    PathBuf::from(rotated)
}

impl TraceFile {
    /// Creates (truncates) the trace file and writes its header.
    pub fn create(settings: TraceSettings) -> Result<TraceFile, String> {
        let (file, written) = open(&settings.path)?;
        Ok(TraceFile { settings, state: Mutex::new(State { file: Some(file), written, sequence: 0 }) })
    }

    fn append(&self, state: &mut State, line: &str) -> Result<(), String> {
        let length = line.len() as u64 + 1;
        if state.written + length > self.settings.max_bytes && state.written > 0 {
            self.rotate(state)?;
        }
        let file = state.file.as_mut().ok_or("the trace file is not open")?;
        file.write_all(line.as_bytes())
            .and_then(|()| file.write_all(b"\n"))
            .map_err(|error| error.to_string())?;
        state.written += length;
        Ok(())
    }

    fn rotate(&self, state: &mut State) -> Result<(), String> {
        state.file = None;
        let path = &self.settings.path;
        std::fs::rename(path, rotated_path(path)).map_err(|error| format!("cannot rotate: {error}"))?;
        let (file, written) = open(path)?;
        state.file = Some(file);
        state.written = written;
        Ok(())
    }
}

fn open(path: &Path) -> Result<(File, u64), String> {
    let mut file =
        File::create(path).map_err(|error| format!("cannot create {}: {error}", path.display()))?;
    let line = trace::header_line(&header()).map_err(|error| error.to_string())?;
    writeln!(file, "{line}").map_err(|error| format!("cannot write {}: {error}", path.display()))?;
    Ok((file, line.len() as u64 + 1))
}

impl TraceSink for TraceFile {
    fn write(&self, mut record: Record) {
        // A panic while holding the lock left at worst a partial line; keep writing.
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        state.sequence += 1;
        record.sequence = state.sequence;
        let result = record
            .to_line()
            .map_err(|error| error.to_string())
            .and_then(|line| self.append(&mut state, &line));
        if let Err(error) = result {
            tracing::warn!(path = %self.settings.path.display(), %error, "a reconcile could not be recorded");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(object: &str) -> Record {
        let line = format!(
            r#"{{"sequence":0,"object":"{object}","input":{{"kind":"firewall","firewall":{{"apiVersion":"infrastructure.cluster.x-k8s.io/v1alpha1","kind":"MetalStackFirewall","metadata":{{"name":"f","namespace":"default"}},"spec":{{"size":"s","image":"i"}}}},"cluster":null,"metal_cluster":null,"now":"2026-01-01T00:00:00Z","jitter":0}},"calls":[],"outcome":{{}}}}"#
        );
        trace::parse_record(&line, 1).expect("a valid record")
    }

    #[test]
    fn files_rotate_at_the_bound_and_each_starts_with_a_header() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("capms.trace");
        let sink = TraceFile::create(TraceSettings { path: path.clone(), max_bytes: 1500 }).expect("creates");
        for index in 0..20 {
            sink.write(record(&format!("default/f-{index}")));
        }
        let current = std::fs::read_to_string(&path).expect("current file");
        let previous = std::fs::read_to_string(rotated_path(&path)).expect("rotated file");
        for text in [&current, &previous] {
            assert!(text.len() <= 1500, "{} bytes", text.len());
            let parsed = trace::parse_trace(text).expect("each file is a whole trace");
            assert!(!parsed.records.is_empty());
        }
        assert!(current.contains("default/f-19"), "the newest record is in the current file");
    }
}

//! The datacenter's event log: one line per operation and per internal event, with a running
//! SHA-256 over all lines. Two runs with the same seed and the same calls produce the same
//! lines and therefore the same hash; the determinism tests compare the hashes.

use sha2::{Digest, Sha256};
use std::fmt;

/// An append-only log of what happened in the datacenter.
#[derive(Clone)]
pub struct EventLog {
    hasher: Sha256,
    lines: Option<Vec<String>>,
    count: u64,
}

impl fmt::Debug for EventLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventLog").field("count", &self.count).field("hash", &self.hash_hex()).finish()
    }
}

impl EventLog {
    /// A log that keeps its lines in memory when `keep` is set (the hash is always kept).
    pub fn new(keep: bool) -> Self {
        EventLog { hasher: Sha256::new(), lines: keep.then(Vec::new), count: 0 }
    }

    /// Appends one line.
    pub fn push(&mut self, line: String) {
        self.hasher.update(line.as_bytes());
        self.hasher.update(b"\n");
        self.count += 1;
        if let Some(lines) = self.lines.as_mut() {
            lines.push(line);
        }
    }

    /// The hash of every line so far, as lowercase hex.
    pub fn hash_hex(&self) -> String {
        let digest = self.hasher.clone().finalize();
        digest.iter().map(|byte| format!("{byte:02x}")).collect()
    }

    /// How many lines were logged.
    pub fn len(&self) -> u64 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The lines, if they are kept.
    pub fn lines(&self) -> Option<&[String]> {
        self.lines.as_deref()
    }
}

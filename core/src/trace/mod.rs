//! Reconcile traces: what a reconcile saw, what it asked metal-stack, what it decided.
//!
//! A trace is JSON lines (`docs/traces.md` documents the format). The first line is a
//! [`Header`] (`{"format":"capms-trace","version":1,...}`); every other line is one [`Record`]:
//! the inputs of one reconcile (the object, its owners' facts, the time, the jitter), every
//! [`MetalBackend`](crate::MetalBackend) call in order with its request and its answer, every
//! answer of the shared machine cache, and the outcome the reconciler returned.
//!
//! Secrets cannot enter a trace: every payload is a [`Redacted`], whose only constructor
//! serializes a value, and the `Serialize` of [`crate::secret::UserData`] and
//! [`crate::secret::SecretString`] writes a marker. User data is kept as a [`SecretDigest`]
//! (length and a non-cryptographic digest) so that a replay still notices a change to it.
//!
//! Recording ([`record`]) wraps the backend and the cache of one reconcile; replay
//! ([`replay`]) serves the recorded answers to the reconciler and reports the first
//! divergence. Both are pure; writing files is the caller's business.

pub mod record;
pub mod replay;

use crate::Timestamp;
use crate::api::{MetalStackCluster, MetalStackFirewall, MetalStackMachine};
use crate::error::{BackendError, Operation};
use crate::metal::{FirewallAllocateRequest, MachineAllocateRequest};
use crate::reconcile::RefreshPolicy;
use crate::reconcile::facts::{BootstrapData, CapiMachineFacts, ClusterFacts, MetalClusterFacts};
use crate::secret::UserData;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;
use std::time::Duration;

pub use record::{TraceSink, record_cluster, record_firewall, record_machine};
pub use replay::{Divergence, Replayed, replay};

/// The `format` of a trace's header line.
pub const FORMAT: &str = "capms-trace";

/// The version of the format this code writes and reads. Readers refuse other versions.
pub const VERSION: u32 = 1;

/// The first line of a trace file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Always [`FORMAT`].
    pub format: String,
    /// Always [`VERSION`] for traces this code writes.
    pub version: u32,
    /// Who wrote the trace (`capms-manager 0.1.0`, `capms-sim run FILE --seed N`).
    #[serde(default)]
    pub source: String,
}

impl Header {
    pub fn new(source: impl Into<String>) -> Self {
        Header { format: FORMAT.to_string(), version: VERSION, source: source.into() }
    }
}

/// A JSON value produced by serializing a domain value: secrets in it are already redacted by
/// their own `Serialize`. There is no way to build one from a plain string.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Redacted(Value);

impl Redacted {
    /// Serializes `value`. Domain values always serialize (string keys only); should one ever
    /// fail, the trace shows why instead of the value.
    pub fn of<T: Serialize + ?Sized>(value: &T) -> Self {
        Redacted(
            serde_json::to_value(value)
                .unwrap_or_else(|error| Value::String(format!("unserializable: {error}"))),
        )
    }

    /// The JSON value.
    pub fn json(&self) -> &Value {
        &self.0
    }

    /// The value as the type the reconciler expects.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, String> {
        serde_json::from_value(self.0.clone()).map_err(|error| error.to_string())
    }

    /// Replaces the field at `path` (object keys) if it exists and is not null.
    fn replace(&mut self, path: &[&str], value: Value) {
        let mut at = &mut self.0;
        for key in path {
            match at.get_mut(*key) {
                Some(next) => at = next,
                None => return,
            }
        }
        if !at.is_null() {
            *at = value;
        }
    }
}

/// What a trace keeps of a secret: its length and a digest (FNV-1a, 64 bits: enough to notice
/// a change, not meant to resist guessing; bootstrap data holds random tokens).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretDigest {
    pub bytes: usize,
    pub digest: String,
}

impl SecretDigest {
    pub fn of(secret: &str) -> Self {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in secret.as_bytes() {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        SecretDigest { bytes: secret.len(), digest: format!("fnv1a64:{hash:016x}") }
    }

    /// The stand-in user data a replay passes to the reconciler in place of the original.
    pub fn placeholder(&self) -> UserData {
        UserData::new(format!("<capms-trace placeholder for {} bytes, {}>", self.bytes, self.digest))
    }
}

/// How requests are redacted. A replay passes the placeholder of the recorded user data, and
/// counts it as the original when it comes back in a request.
#[derive(Debug, Clone, Default)]
pub struct Redaction {
    placeholder: Option<(UserData, SecretDigest)>,
}

impl Redaction {
    /// Redaction in a replay whose input carried `original` user data.
    pub fn with_placeholder(original: &SecretDigest) -> Self {
        Redaction { placeholder: Some((original.placeholder(), original.clone())) }
    }

    fn digest(&self, data: &UserData) -> SecretDigest {
        match &self.placeholder {
            Some((placeholder, original)) if placeholder == data => original.clone(),
            _ => SecretDigest::of(data.expose()),
        }
    }

    /// A request with an id or address as its only argument.
    pub fn id(&self, id: &str) -> Redacted {
        Redacted::of(&serde_json::json!({ "id": id }))
    }

    /// A request without arguments.
    pub fn none(&self) -> Redacted {
        Redacted(Value::Null)
    }

    /// A query or allocation without secrets.
    pub fn plain<T: Serialize>(&self, request: &T) -> Redacted {
        Redacted::of(request)
    }

    /// `allocate_specific_ip`'s two arguments.
    pub fn address_and<T: Serialize>(&self, address: &str, request: &T) -> Redacted {
        Redacted::of(&serde_json::json!({ "address": address, "request": Redacted::of(request) }))
    }

    /// A machine allocation: its user data becomes a [`SecretDigest`].
    pub fn machine(&self, request: &MachineAllocateRequest) -> Redacted {
        let mut redacted = Redacted::of(request);
        if let Some(data) = &request.user_data {
            redacted.replace(&["user_data"], Redacted::of(&self.digest(data)).0);
        }
        redacted
    }

    /// A firewall allocation: its machine's user data becomes a [`SecretDigest`].
    pub fn firewall(&self, request: &FirewallAllocateRequest) -> Redacted {
        let mut redacted = Redacted::of(request);
        if let Some(data) = &request.machine.user_data {
            redacted.replace(&["machine", "user_data"], Redacted::of(&self.digest(data)).0);
        }
        redacted
    }
}

/// The answer of a metal-api call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    Ok(Redacted),
    Error(BackendError),
}

/// One thing a reconcile asked its environment, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "call", rename_all = "snake_case")]
pub enum Call {
    /// A [`MetalBackend`](crate::MetalBackend) call.
    Backend { operation: Operation, request: Redacted, answer: Answer },
    /// The machine cache was asked for a machine: `hit` is its cached state, or `None` for a
    /// miss (the metal-api calls of the refresh follow as their own entries).
    CacheMachine { cluster: String, machine_id: String, hit: Option<Redacted> },
    /// The cache was asked for the cluster's machines carrying `tags`.
    CacheTagged { cluster: String, tags: Vec<String>, answer: Redacted },
    /// The reconcile told the cache to forget the cluster's machines.
    CacheInvalidate { cluster: String },
    /// The cache was asked when to look at a machine again.
    CacheNextLook { machine_id: String, answer: Duration },
}

impl Call {
    /// A short description for reports: the operation and its arguments.
    pub fn describe(&self) -> String {
        let text = match self {
            Call::Backend { operation, request, .. } => format!("{operation} {}", request.json()),
            Call::CacheMachine { cluster, machine_id, .. } => {
                format!("cache machine {machine_id} of {cluster}")
            }
            Call::CacheTagged { cluster, tags, .. } => format!("cache tagged {tags:?} of {cluster}"),
            Call::CacheInvalidate { cluster } => format!("cache invalidate {cluster}"),
            Call::CacheNextLook { machine_id, .. } => format!("cache next look of {machine_id}"),
        };
        shorten(&text, 400)
    }
}

/// The bootstrap data a machine reconcile saw, without the data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum RecordedBootstrap {
    NotReady,
    SecretMissing { secret: String },
    ValueMissing { secret: String },
    Present(SecretDigest),
}

impl RecordedBootstrap {
    pub fn of(bootstrap: &BootstrapData) -> Self {
        match bootstrap {
            BootstrapData::NotReady => RecordedBootstrap::NotReady,
            BootstrapData::SecretMissing { secret } => {
                RecordedBootstrap::SecretMissing { secret: secret.clone() }
            }
            BootstrapData::ValueMissing { secret } => {
                RecordedBootstrap::ValueMissing { secret: secret.clone() }
            }
            BootstrapData::Present(data) => RecordedBootstrap::Present(SecretDigest::of(data.expose())),
        }
    }

    /// What a replay passes to the reconciler: the placeholder instead of the data.
    pub fn replayed(&self) -> BootstrapData {
        match self {
            RecordedBootstrap::NotReady => BootstrapData::NotReady,
            RecordedBootstrap::SecretMissing { secret } => {
                BootstrapData::SecretMissing { secret: secret.clone() }
            }
            RecordedBootstrap::ValueMissing { secret } => {
                BootstrapData::ValueMissing { secret: secret.clone() }
            }
            RecordedBootstrap::Present(digest) => BootstrapData::Present(digest.placeholder()),
        }
    }
}

/// The inputs of a machine reconcile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MachineRecord {
    pub metal_machine: MetalStackMachine,
    pub capi_machine: Option<CapiMachineFacts>,
    pub cluster: Option<ClusterFacts>,
    pub metal_cluster: Option<MetalClusterFacts>,
    pub bootstrap: RecordedBootstrap,
    pub now: Timestamp,
    pub jitter: u64,
    /// The machine cache's policy (a replayed cache miss refreshes the way it did).
    pub refresh: RefreshPolicy,
}

/// The inputs of a cluster reconcile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterRecord {
    pub metal_cluster: MetalStackCluster,
    pub cluster: Option<ClusterFacts>,
    pub machines_remaining: usize,
    pub firewall: Option<MetalStackFirewall>,
    pub now: Timestamp,
    pub jitter: u64,
}

/// The inputs of a firewall reconcile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FirewallRecord {
    pub firewall: MetalStackFirewall,
    pub cluster: Option<ClusterFacts>,
    pub metal_cluster: Option<MetalClusterFacts>,
    pub now: Timestamp,
    pub jitter: u64,
}

/// The inputs of one reconcile, by kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Input {
    Machine(Box<MachineRecord>),
    Cluster(Box<ClusterRecord>),
    Firewall(Box<FirewallRecord>),
}

impl Input {
    pub fn kind(&self) -> &'static str {
        match self {
            Input::Machine(_) => "machine",
            Input::Cluster(_) => "cluster",
            Input::Firewall(_) => "firewall",
        }
    }

    pub fn now(&self) -> Timestamp {
        match self {
            Input::Machine(input) => input.now,
            Input::Cluster(input) => input.now,
            Input::Firewall(input) => input.now,
        }
    }
}

/// One reconcile: a line of a trace after the header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Position in the trace, counted by the writer from 1 (reconciles are written when they
    /// finish, so concurrent ones may appear out of start order; `input.now` says when each
    /// started).
    pub sequence: u64,
    /// `namespace/name` of the reconciled object.
    pub object: String,
    pub input: Input,
    pub calls: Vec<Call>,
    /// The outcome the reconciler returned.
    pub outcome: Redacted,
}

impl Record {
    /// The record as one JSON line (without the newline).
    pub fn to_line(&self) -> Result<String, TraceError> {
        serde_json::to_string(self).map_err(|error| TraceError::new(0, error.to_string()))
    }
}

/// A whole trace.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    pub header: Header,
    pub records: Vec<Record>,
}

/// Why a trace could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct TraceError {
    /// 1-based line number (0 when not about a line).
    pub line: usize,
    pub message: String,
}

impl TraceError {
    fn new(line: usize, message: impl Into<String>) -> Self {
        TraceError { line, message: message.into() }
    }
}

/// The header as one JSON line (without the newline).
pub fn header_line(header: &Header) -> Result<String, TraceError> {
    serde_json::to_string(header).map_err(|error| TraceError::new(0, error.to_string()))
}

/// Parses a header line and checks format and version.
pub fn parse_header(line: &str) -> Result<Header, TraceError> {
    let header: Header = serde_json::from_str(line)
        .map_err(|error| TraceError::new(1, format!("not a capms trace header: {error}")))?;
    if header.format != FORMAT {
        return Err(TraceError::new(1, format!("format is {:?}, not {FORMAT:?}", header.format)));
    }
    if header.version != VERSION {
        return Err(TraceError::new(
            1,
            format!("version {} is not supported (this capms reads version {VERSION})", header.version),
        ));
    }
    Ok(header)
}

/// Parses one record line (`number` is its 1-based line number, for the error).
pub fn parse_record(line: &str, number: usize) -> Result<Record, TraceError> {
    serde_json::from_str(line)
        .map_err(|error| TraceError::new(number, format!("not a reconcile record: {error}")))
}

/// Parses a whole trace. Blank lines are skipped; anything else that is not a record is an
/// error (never a panic: traces are external input).
pub fn parse_trace(text: &str) -> Result<Trace, TraceError> {
    let mut lines = text.lines().enumerate().filter(|(_, line)| !line.trim().is_empty());
    let Some((_, first)) = lines.next() else {
        return Err(TraceError::new(1, "empty trace: no header line"));
    };
    let header = parse_header(first)?;
    let records = lines.map(|(index, line)| parse_record(line, index + 1)).collect::<Result<Vec<_>, _>>()?;
    Ok(Trace { header, records })
}

/// `text` cut to at most `limit` characters.
pub(crate) fn shorten(text: &str, limit: usize) -> String {
    match text.char_indices().nth(limit) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

impl fmt::Display for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} version {} from {}", self.format, self.version, self.source)
    }
}

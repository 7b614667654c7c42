//! The block-move handshake: no metal-api write for an object once a pause is visible, and
//! `clusterctl move` waits for every write in flight.
//!
//! # Expected flow
//! A pass starts from the informer's view, which may lag: the Cluster may already be paused
//! (by `clusterctl move` or a user) without the pass seeing it. So before the first metal-api
//! write of a pass, its [`Gate`] opens:
//! 1. it persists `clusterctl.cluster.x-k8s.io/block-move` on the object, conditional on the
//!    resourceVersion the pass read, with a value naming this replica and the time
//!    ([`Hold`]);
//! 2. it reads the object's `cluster.x-k8s.io/paused` annotation (from the answer of that
//!    write) and the Cluster's `spec.paused` live from the apiserver, not from the informer;
//! 3. if either is set, the write and every later write of the pass fail with
//!    [`ErrorKind::Paused`] and nothing reaches metal-api; otherwise the writes go;
//! 4. the pass's last metadata write ([`super::execute`]) removes block-move, in the same
//!    conditional patch that persists the outcome (finalizers, providerID).
//!
//! Passes that write nothing to metal-api (most of them) never open the gate: no extra
//! apiserver calls. The annotation changes of the handshake trigger no reconcile
//! ([`super::triggers::fingerprint`] ignores them).
//!
//! # Guarantees
//! - A write reaches metal-api only while the object holds block-move, set before the pause
//!   was read live as absent. clusterctl pauses, then waits until no object holds block-move:
//!   so once it copies, no pass that saw the Cluster unpaused is still writing, and every later
//!   pass finds the pause at step 2.
//! - A replica never takes over another replica's fresh hold: two replicas never write to
//!   metal-api for one object at once (the second fails with [`ErrorKind::Conflict`]).
//! - A hold left behind (a crash between steps 1 and 4, a conflict on the last write) is
//!   removed by the next pass of the same replica, or by any pass once it is older than
//!   [`BLOCK_MOVE_STALE_AFTER`].
//!
//! # Assumptions
//! - A pass ends within [`BLOCK_MOVE_STALE_AFTER`] (metal-api calls have client timeouts).
//! - A user who sets `spec.paused` by hand does not wait for block-move: writes of passes
//!   that opened their gate before the pause still land after it (never a new one).
//! - Replica names are unique among running replicas (capms-manager uses its pod name).
//! - A write whose answer was lost (a timeout) is not in flight any more once the pass ends.
//!   metal-api may still apply a request its client gave up on; the hold does not cover that
//!   window (the simulator's `late_writes` lands such writes up to a minute after they were
//!   sent, and its checker reports frees landing that way after a pause instead of failing).

use super::objects::{Kind, ObjectKey, Target};
use super::plan::ObjectPatch;
use super::retry::WriteError;
use crate::Timestamp;
use crate::api::capi::{BLOCK_MOVE_ANNOTATION, PAUSED_ANNOTATION, has_annotation};
use crate::backend::{BackendResult, MetalBackend};
use crate::error::{BackendError, ErrorKind, Operation};
use crate::reconcile::ClusterFacts;
use async_trait::async_trait;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// A hold older than this is left over (a crashed replica) and any pass may remove it.
pub const BLOCK_MOVE_STALE_AFTER: Duration = Duration::from_secs(10 * 60);

/// What every block-move value capms writes starts with; others' holds are never touched.
const HOLD_PREFIX: &str = "capms-manager/";

/// block-move as capms holds it: which replica, since when. Written as the annotation's value
/// (`capms-manager/<replica>@<RFC 3339 time>`); clusterctl only looks at the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub replica: String,
    pub since: Timestamp,
}

impl Hold {
    /// The annotation value.
    pub fn value(&self) -> String {
        format!("{HOLD_PREFIX}{}@{}", self.replica, self.since)
    }

    /// The hold on `meta`: `None` if there is no block-move or it is not capms's.
    pub fn of(meta: &ObjectMeta) -> Option<Hold> {
        let value = meta.annotations.as_ref()?.get(BLOCK_MOVE_ANNOTATION)?;
        let (replica, since) = value.strip_prefix(HOLD_PREFIX)?.rsplit_once('@')?;
        Some(Hold { replica: replica.to_string(), since: since.parse().ok()? })
    }

    /// True once the hold is older than [`BLOCK_MOVE_STALE_AFTER`].
    pub fn is_stale(&self, now: Timestamp) -> bool {
        now.duration_since(self.since).unsigned_abs() >= BLOCK_MOVE_STALE_AFTER && now > self.since
    }

    /// Whether `replica` may remove (or take over) this hold at `now`.
    pub fn releasable_by(&self, replica: &str, now: Timestamp) -> bool {
        self.replica == replica || self.is_stale(now)
    }
}

/// What the gate writes and reads on the apiserver, live (never from a cache).
#[async_trait]
pub trait Apiserver: Send + Sync {
    /// Writes `patch` to the object `target`, conditional on `read`'s resourceVersion
    /// ([`ObjectPatch::json_patch`]); answers the object's metadata as written.
    async fn patch(
        &self,
        target: &Target,
        read: &ObjectMeta,
        patch: &ObjectPatch,
    ) -> Result<ObjectMeta, WriteError>;
    /// Whether the Cluster `cluster` has `spec.paused` (false if it does not exist).
    async fn cluster_paused(&self, cluster: &ObjectKey) -> Result<bool, WriteError>;
}

/// Why the gate stays shut for the rest of a pass.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Refusal {
    Paused,
    HeldBy(String),
    Apiserver(WriteError),
}

impl Refusal {
    fn error(&self, operation: Operation) -> BackendError {
        let (kind, message) = match self {
            Refusal::Paused => (
                ErrorKind::Paused,
                "not sent: the cluster is paused (read live from the apiserver)".to_string(),
            ),
            Refusal::HeldBy(replica) => (
                ErrorKind::Conflict,
                format!("not sent: capms-manager replica {replica} is writing to metal-api for this object"),
            ),
            Refusal::Apiserver(error) => {
                let kind = match error {
                    WriteError::Conflict | WriteError::AlreadyExists => ErrorKind::Conflict,
                    _ => ErrorKind::Transient,
                };
                (kind, format!("not sent: block-move could not be set: {error}"))
            }
        };
        BackendError::new(kind, operation, message)
    }
}

#[derive(Debug, Clone)]
enum State {
    /// Nothing written yet; the metadata as the pass read it.
    Shut(ObjectMeta),
    /// An opening is under way (a second write of the pass at the same time waits for none).
    Opening,
    Open(ObjectMeta),
    Refused(Option<ObjectMeta>, Refusal),
}

/// One pass's gate in front of metal-api: see the module documentation.
pub struct Gate {
    apiserver: Arc<dyn Apiserver>,
    target: Target,
    cluster: Option<ObjectKey>,
    replica: String,
    now: Timestamp,
    state: Mutex<State>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate").field("target", &self.target).field("replica", &self.replica).finish()
    }
}

/// What a pass's gate leaves for the pass's writes ([`super::execute`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Settled {
    /// The object's metadata after the gate's write, if it wrote (its writes are conditional
    /// on this version).
    pub written: Option<ObjectMeta>,
    /// Whether the pass's last write removes block-move.
    pub release: bool,
}

impl Gate {
    /// The gate of a pass by `replica` at `now` over the object of kind `kind` read as `read`;
    /// `cluster` is its Cluster as the pass gathered it, if found.
    pub fn new(
        apiserver: Arc<dyn Apiserver>,
        kind: Kind,
        read: &ObjectMeta,
        cluster: Option<&ClusterFacts>,
        replica: &str,
        now: Timestamp,
    ) -> Self {
        let namespace = read.namespace.clone().unwrap_or_default();
        Gate {
            apiserver,
            target: Target::new(kind, ObjectKey::of(read)),
            cluster: cluster.map(|cluster| ObjectKey::new(namespace, cluster.name.clone())),
            replica: replica.to_string(),
            now,
            state: Mutex::new(State::Shut(read.clone())),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Lets the write `operation` through, opening the gate first if this is the pass's first
    /// write; fails with the refusal otherwise.
    pub async fn pass(&self, operation: Operation) -> Result<(), BackendError> {
        // The lock is released before any arm runs (an arm locks again).
        let state = std::mem::replace(&mut *self.state(), State::Opening);
        let read = match state {
            State::Shut(read) => read,
            State::Opening => {
                // Reconcilers write one call at a time; a second write while the first opens
                // the gate is a bug of ours, refused rather than let through unchecked.
                debug_assert!(false, "two writes of one pass at once");
                let refusal = Refusal::Apiserver(WriteError::Conflict);
                return Err(refusal.error(operation));
            }
            other => {
                let result = match &other {
                    State::Refused(_, refusal) => Err(refusal.error(operation)),
                    _ => Ok(()),
                };
                *self.state() = other;
                return result;
            }
        };
        let next = self.open(read).await;
        let result = match &next {
            State::Refused(_, refusal) => Err(refusal.error(operation)),
            _ => Ok(()),
        };
        *self.state() = next;
        result
    }

    /// Steps 1 and 2 of the handshake.
    async fn open(&self, read: ObjectMeta) -> State {
        let apiserver = &self.apiserver;
        if let Some(hold) = Hold::of(&read).filter(|hold| !hold.releasable_by(&self.replica, self.now)) {
            return State::Refused(None, Refusal::HeldBy(hold.replica));
        }
        let hold = Hold { replica: self.replica.clone(), since: self.now };
        let mut patch = ObjectPatch::default();
        patch.annotations.insert(BLOCK_MOVE_ANNOTATION.to_string(), hold.value());
        let written = match apiserver.patch(&self.target, &read, &patch).await {
            Ok(written) => written,
            Err(error) => return State::Refused(None, Refusal::Apiserver(error)),
        };
        if has_annotation(&written, PAUSED_ANNOTATION) {
            return State::Refused(Some(written), Refusal::Paused);
        }
        let paused = match &self.cluster {
            Some(cluster) => apiserver.cluster_paused(cluster).await,
            None => Ok(false),
        };
        match paused {
            Ok(false) => State::Open(written),
            Ok(true) => State::Refused(Some(written), Refusal::Paused),
            Err(error) => State::Refused(Some(written), Refusal::Apiserver(error)),
        }
    }

    /// Whether the gate opened in this pass (a write went through it).
    pub fn opened(&self) -> bool {
        matches!(*self.state(), State::Open(_))
    }

    /// What the pass's writes need: the metadata after the gate's write, and whether to
    /// remove block-move (this replica's hold, or a stale one of capms).
    pub fn settle(&self) -> Settled {
        let (written, current) = match &*self.state() {
            State::Shut(read) => (None, read.clone()),
            State::Opening | State::Refused(None, _) => return Settled::default(),
            State::Open(meta) | State::Refused(Some(meta), _) => (Some(meta.clone()), meta.clone()),
        };
        let release = Hold::of(&current).is_some_and(|hold| hold.releasable_by(&self.replica, self.now));
        Settled { written, release }
    }
}

/// A [`MetalBackend`] whose writes pass a [`Gate`] first; reads go straight through.
#[allow(missing_debug_implementations, reason = "a backend handle and a gate: nothing to show")]
pub struct Gated<'a> {
    inner: &'a dyn MetalBackend,
    gate: &'a Gate,
}

impl<'a> Gated<'a> {
    pub fn new(inner: &'a dyn MetalBackend, gate: &'a Gate) -> Self {
        Gated { inner, gate }
    }

    async fn gated<T>(
        &self,
        operation: Operation,
        call: impl Future<Output = BackendResult<T>> + Send,
    ) -> BackendResult<T> {
        if !operation.is_read() {
            self.gate.pass(operation).await?;
        }
        call.await
    }
}

macro_rules! gated_methods {
    ($( fn $name:ident($($arg:ident: $type:ty),*) -> $out:ty, $operation:ident, |$redaction:ident| $request:expr; )*) => {
        #[async_trait]
        impl MetalBackend for Gated<'_> {
            $(
                async fn $name(&self $(, $arg: $type)*) -> BackendResult<$out> {
                    self.gated(Operation::$operation, self.inner.$name($($arg),*)).await
                }
            )*
        }
    };
}

crate::with_backend_methods!(gated_methods);

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).expect("in range")
    }

    fn meta_with(value: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            annotations: value.map(|v| [(BLOCK_MOVE_ANNOTATION.to_string(), v.to_string())].into()),
            resource_version: Some("1".to_string()),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn a_hold_reads_back_what_it_writes_and_ignores_others_values() {
        let hold = Hold { replica: "capms-7f9c".to_string(), since: at(1_800_000_000) };
        assert_eq!(Hold::of(&meta_with(Some(&hold.value()))), Some(hold));
        assert_eq!(Hold::of(&meta_with(Some("true"))), None);
        assert_eq!(Hold::of(&meta_with(Some("capms-manager/x@yesterday"))), None);
        assert_eq!(Hold::of(&meta_with(None)), None);
    }

    #[test]
    fn only_the_own_replica_or_staleness_releases_a_hold() {
        let hold = Hold { replica: "a".to_string(), since: at(1_000) };
        let fresh = at(1_000 + 60);
        let stale = at(1_000 + BLOCK_MOVE_STALE_AFTER.as_secs() as i64);
        assert!(hold.releasable_by("a", fresh));
        assert!(!hold.releasable_by("b", fresh));
        assert!(hold.releasable_by("b", stale));
    }

    /// An apiserver whose Cluster is paused or not, recording the patches.
    struct Recorded {
        paused: bool,
        patches: Mutex<Vec<ObjectPatch>>,
    }

    #[async_trait]
    impl Apiserver for Recorded {
        async fn patch(
            &self,
            _: &Target,
            read: &ObjectMeta,
            patch: &ObjectPatch,
        ) -> Result<ObjectMeta, WriteError> {
            self.patches.lock().unwrap_or_else(PoisonError::into_inner).push(patch.clone());
            let mut written = read.clone();
            written.annotations.get_or_insert_default().extend(patch.annotations.clone());
            written.resource_version = Some("2".to_string());
            Ok(written)
        }
        async fn cluster_paused(&self, _: &ObjectKey) -> Result<bool, WriteError> {
            Ok(self.paused)
        }
    }

    fn gate(paused: bool, read: &ObjectMeta) -> (Arc<Recorded>, Gate) {
        let apiserver = Arc::new(Recorded { paused, patches: Mutex::new(Vec::new()) });
        let cluster = ClusterFacts { name: "c".to_string(), ..ClusterFacts::default() };
        let gate = Gate::new(apiserver.clone(), Kind::Machine, read, Some(&cluster), "a", at(1_000));
        (apiserver, gate)
    }

    fn run<T>(future: impl Future<Output = T>) -> T {
        let waker = std::task::Waker::noop();
        let mut context = std::task::Context::from_waker(waker);
        let mut future = std::pin::pin!(future);
        match future.as_mut().poll(&mut context) {
            std::task::Poll::Ready(value) => value,
            std::task::Poll::Pending => panic!("the test apiserver answers at once"),
        }
    }

    #[test]
    fn an_unpaused_cluster_opens_the_gate_once_and_the_hold_is_released_at_the_end() {
        let (apiserver, gate) = gate(false, &meta_with(None));
        assert_eq!(run(gate.pass(Operation::AllocateMachine)), Ok(()));
        assert_eq!(run(gate.pass(Operation::FreeMachine)), Ok(()));
        assert_eq!(apiserver.patches.lock().map(|p| p.len()).unwrap_or(0), 1);
        let settled = gate.settle();
        assert_eq!(settled.written.and_then(|m| m.resource_version), Some("2".to_string()));
        assert!(settled.release);
    }

    #[test]
    fn a_cluster_paused_live_refuses_every_write_of_the_pass() {
        let (_, gate) = gate(true, &meta_with(None));
        for operation in [Operation::FreeMachine, Operation::AllocateMachine] {
            let refused = run(gate.pass(operation)).expect_err("paused");
            assert_eq!(refused.kind(), ErrorKind::Paused);
            assert_eq!(refused.operation(), operation);
        }
        assert!(!gate.opened());
        assert!(gate.settle().release, "the hold is removed although nothing was written");
    }

    #[test]
    fn another_replicas_fresh_hold_refuses_and_is_left_alone() {
        let other = Hold { replica: "b".to_string(), since: at(990) };
        let (apiserver, gate) = gate(false, &meta_with(Some(&other.value())));
        let refused = run(gate.pass(Operation::FreeMachine)).expect_err("held");
        assert_eq!(refused.kind(), ErrorKind::Conflict);
        assert!(apiserver.patches.lock().map(|p| p.is_empty()).unwrap_or(false));
        assert_eq!(gate.settle(), Settled::default());
    }

    #[test]
    fn a_pass_without_writes_releases_only_its_own_or_stale_holds() {
        let own = Hold { replica: "a".to_string(), since: at(100) };
        let (_, gate_a) = gate(false, &meta_with(Some(&own.value())));
        assert_eq!(gate_a.settle(), Settled { written: None, release: true });
        let other = Hold { replica: "b".to_string(), since: at(990) };
        let (_, gate_b) = gate(false, &meta_with(Some(&other.value())));
        assert_eq!(gate_b.settle(), Settled { written: None, release: false });
    }
}

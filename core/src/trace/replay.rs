//! Replaying one recorded reconcile: the reconciler runs again on the recorded inputs, a
//! backend and a cache serve the recorded answers in order, and the first difference (another
//! call, another request, a call too many or too few, another outcome) is reported.

use super::{Answer, Call, Input, Record, RecordedBootstrap, Redacted, Redaction, shorten};
use crate::Timestamp;

use crate::backend::{BackendResult, MetalBackend};
use crate::error::{BackendError, ErrorKind, Operation};
use crate::metal::Machine;
use crate::reconcile::cache::{CacheAccess, MachineCache};
use crate::reconcile::machine::{Variant, reconcile_machine_variant};
use crate::reconcile::{ClusterInput, FirewallInput, MachineInput, reconcile_cluster, reconcile_firewall};
use crate::tags::ObjectRef;
use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

/// The first point where a replayed reconcile did something else than the recorded one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Divergence {
    /// The record's `sequence`.
    pub sequence: u64,
    /// `machine`, `cluster` or `firewall`.
    pub kind: &'static str,
    /// `namespace/name`.
    pub object: String,
    /// The reconcile's time.
    pub now: Timestamp,
    /// 1-based position of the call that differs; `None` for the outcome.
    pub call: Option<usize>,
    /// What differs, in words.
    pub what: String,
    /// What the trace holds there.
    pub expected: String,
    /// What the replayed reconciler did.
    pub actual: String,
}

impl fmt::Display for Divergence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "divergence in reconcile {} ({} {}) at {}",
            self.sequence, self.kind, self.object, self.now
        )?;
        match self.call {
            Some(call) => writeln!(f, "  at call {call}: {}", self.what)?,
            None => writeln!(f, "  in the outcome: {}", self.what)?,
        }
        writeln!(f, "  recorded: {}", self.expected)?;
        write!(f, "  replayed: {}", self.actual)
    }
}

/// What a faithful replay of one record did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Replayed {
    /// metal-api calls served.
    pub backend_calls: usize,
    /// Cache answers served.
    pub cache_calls: usize,
}

/// A difference found while serving calls: where, what, recorded, replayed.
type Found = (usize, String, String, String);

/// The recorded calls and how far the replay got.
#[derive(Debug)]
struct Script<'a> {
    calls: &'a [Call],
    state: Mutex<Cursor>,
}

#[derive(Debug, Default)]
struct Cursor {
    position: usize,
    found: Option<Found>,
}

impl<'a> Script<'a> {
    fn new(calls: &'a [Call]) -> Self {
        Script { calls, state: Mutex::new(Cursor::default()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cursor> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The next recorded call, if the replay asked for the same thing; otherwise notes the
    /// first difference. After a difference nothing more is served.
    fn next(&self, actual: &Call, same: impl Fn(&Call) -> Option<String>) -> Option<&'a Call> {
        let mut cursor = self.lock();
        if cursor.found.is_some() {
            return None;
        }
        cursor.position += 1;
        let position = cursor.position;
        let Some(expected) = self.calls.get(position - 1) else {
            cursor.found = Some((
                position,
                "a call the recorded reconcile did not make".into(),
                "no more calls".into(),
                actual.describe(),
            ));
            return None;
        };
        match same(expected) {
            None => Some(expected),
            Some(difference) => {
                cursor.found = Some((position, difference, expected.describe(), actual.describe()));
                None
            }
        }
    }

    /// Notes an answer that does not decode (a damaged or hand-edited trace).
    fn undecodable(&self, error: String) {
        let mut cursor = self.lock();
        let position = cursor.position;
        cursor.found.get_or_insert((
            position,
            "the recorded answer does not decode".into(),
            error,
            String::new(),
        ));
    }

    /// The first difference, including calls recorded but not made.
    fn finish(&self) -> Option<Found> {
        let cursor = self.lock();
        if let Some(found) = &cursor.found {
            return Some(found.clone());
        }
        self.calls.get(cursor.position).map(|missing| {
            (
                cursor.position + 1,
                "a call the replayed reconcile did not make".to_string(),
                missing.describe(),
                "no more calls".to_string(),
            )
        })
    }

    fn counts(&self) -> Replayed {
        let backend = self.calls.iter().filter(|call| matches!(call, Call::Backend { .. })).count();
        Replayed { backend_calls: backend, cache_calls: self.calls.len() - backend }
    }
}

/// The error a replayed reconciler sees once it diverged: it finishes, the replay reports.
fn diverged(operation: Operation) -> BackendError {
    BackendError::new(ErrorKind::Transient, operation, "replay diverged from the trace")
}

/// A [`MetalBackend`] that serves the recorded answers in order.
#[derive(Debug)]
struct ReplayBackend<'a> {
    script: &'a Script<'a>,
    redaction: Redaction,
}

impl ReplayBackend<'_> {
    fn serve<T: DeserializeOwned>(&self, operation: Operation, request: Redacted) -> BackendResult<T> {
        let actual = Call::Backend { operation, request, answer: Answer::Ok(Redacted(Value::Null)) };
        let same = |expected: &Call| match (expected, &actual) {
            (
                Call::Backend { operation: recorded, request: recorded_request, .. },
                Call::Backend { operation, request, .. },
            ) => {
                if recorded != operation {
                    Some(format!("a different metal-api call ({operation} instead of {recorded})"))
                } else {
                    difference(recorded_request.json(), request.json(), "request").map(|(at, was, is)| {
                        format!("a different {operation} request (at {at}: {was} recorded, {is} replayed)")
                    })
                }
            }
            _ => Some("a metal-api call where the recorded reconcile asked the machine cache".to_string()),
        };
        let Some(Call::Backend { answer, .. }) = self.script.next(&actual, same) else {
            return Err(diverged(operation));
        };
        match answer {
            Answer::Error(error) => Err(error.clone()),
            Answer::Ok(value) => value.decode().map_err(|error| {
                self.script.undecodable(format!("{operation}: {error}"));
                diverged(operation)
            }),
        }
    }
}

macro_rules! replay_methods {
    ($( fn $name:ident($($arg:ident: $type:ty),*) -> $out:ty, $operation:ident, |$redaction:ident| $request:expr; )*) => {
        #[async_trait]
        impl MetalBackend for ReplayBackend<'_> {
            $(
                async fn $name(&self $(, $arg: $type)*) -> BackendResult<$out> {
                    let $redaction = &self.redaction;
                    self.serve(Operation::$operation, $request)
                }
            )*
        }
    };
}

crate::with_backend_methods!(replay_methods);

/// A machine cache that gives the recorded answers. A recorded miss refreshes from the
/// (replayed) backend the way the recorded cache did, into a scratch cache.
#[derive(Debug)]
struct ReplayCache<'a> {
    script: &'a Script<'a>,
    scratch: MachineCache,
}

impl ReplayCache<'_> {
    fn ask(&self, actual: &Call) -> Option<&Call> {
        let same = |expected: &Call| {
            let same_question = match (expected, actual) {
                (
                    Call::CacheMachine { cluster, machine_id, .. },
                    Call::CacheMachine { cluster: c, machine_id: m, .. },
                ) => cluster == c && machine_id == m,
                (Call::CacheTagged { cluster, tags, .. }, Call::CacheTagged { cluster: c, tags: t, .. }) => {
                    cluster == c && tags == t
                }
                (Call::CacheInvalidate { cluster }, Call::CacheInvalidate { cluster: c }) => cluster == c,
                (Call::CacheNextLook { machine_id, .. }, Call::CacheNextLook { machine_id: m, .. }) => {
                    machine_id == m
                }
                _ => false,
            };
            (!same_question).then(|| "a different question to the machine cache or backend".to_string())
        };
        self.script.next(actual, same)
    }

    fn decode<T: DeserializeOwned + Default>(&self, value: &Redacted) -> T {
        value.decode().unwrap_or_else(|error| {
            self.script.undecodable(format!("cache answer: {error}"));
            T::default()
        })
    }
}

#[async_trait]
impl CacheAccess for ReplayCache<'_> {
    async fn machine(
        &self,
        backend: &dyn MetalBackend,
        cluster: &ObjectRef,
        project_id: &str,
        machine_id: &str,
        now: Timestamp,
    ) -> Result<Option<Machine>, BackendError> {
        let actual =
            Call::CacheMachine { cluster: cluster.key(), machine_id: machine_id.to_string(), hit: None };
        match self.ask(&actual) {
            Some(Call::CacheMachine { hit: Some(machine), .. }) => {
                machine.decode().map(Some).map_err(|error| {
                    self.script.undecodable(format!("cached machine: {error}"));
                    diverged(Operation::FindMachines)
                })
            }
            Some(_) => self.scratch.fetch(backend, cluster, project_id, machine_id, now).await,
            None => Err(diverged(Operation::FindMachines)),
        }
    }

    fn tagged(&self, cluster: &ObjectRef, tags: &[String]) -> Vec<Machine> {
        let actual =
            Call::CacheTagged { cluster: cluster.key(), tags: tags.to_vec(), answer: Redacted(Value::Null) };
        match self.ask(&actual) {
            Some(Call::CacheTagged { answer, .. }) => self.decode(answer),
            _ => Vec::new(),
        }
    }

    fn invalidate(&self, cluster: &ObjectRef) {
        self.ask(&Call::CacheInvalidate { cluster: cluster.key() });
    }

    fn next_look(&self, machine: &Machine, _now: Timestamp) -> Duration {
        let actual = Call::CacheNextLook { machine_id: machine.id.clone(), answer: Duration::ZERO };
        match self.ask(&actual) {
            Some(Call::CacheNextLook { answer, .. }) => *answer,
            _ => Duration::ZERO,
        }
    }
}

/// Replays one record with the machine reconciler `variant` (only tests pick a canary).
pub async fn replay(record: &Record, variant: Variant) -> Result<Replayed, Divergence> {
    let script = Script::new(&record.calls);
    let outcome = run(&record.input, &script, variant).await;
    let found = script.finish().or_else(|| {
        difference(record.outcome.json(), outcome.json(), "outcome")
            .map(|(at, recorded, replayed)| (0, format!("a different outcome at {at}"), recorded, replayed))
    });
    match found {
        None => Ok(script.counts()),
        Some((call, what, expected, actual)) => Err(Divergence {
            sequence: record.sequence,
            kind: record.input.kind(),
            object: record.object.clone(),
            now: record.input.now(),
            call: (call > 0).then_some(call),
            what,
            expected,
            actual,
        }),
    }
}

/// Runs the reconciler of the record's kind against the script; returns its outcome.
async fn run(input: &Input, script: &Script<'_>, variant: Variant) -> Redacted {
    match input {
        Input::Machine(recorded) => {
            let bootstrap = recorded.bootstrap.replayed();
            let redaction = match &recorded.bootstrap {
                RecordedBootstrap::Present(digest) => Redaction::with_placeholder(digest),
                _ => Redaction::default(),
            };
            let input = MachineInput {
                metal_machine: &recorded.metal_machine,
                capi_machine: recorded.capi_machine.as_ref(),
                cluster: recorded.cluster.as_ref(),
                metal_cluster: recorded.metal_cluster.as_ref(),
                bootstrap: &bootstrap,
                now: recorded.now,
                jitter: recorded.jitter,
            };
            let backend = ReplayBackend { script, redaction };
            let cache = ReplayCache { script, scratch: MachineCache::new(recorded.refresh) };
            Redacted::of(&reconcile_machine_variant(&input, &backend, &cache, variant).await)
        }
        Input::Cluster(recorded) => {
            let input = ClusterInput {
                metal_cluster: &recorded.metal_cluster,
                cluster: recorded.cluster.as_ref(),
                machines_remaining: recorded.machines_remaining,
                firewall: recorded.firewall.as_ref(),
                now: recorded.now,
                jitter: recorded.jitter,
            };
            let backend = ReplayBackend { script, redaction: Redaction::default() };
            Redacted::of(&reconcile_cluster(&input, &backend).await)
        }
        Input::Firewall(recorded) => {
            let input = FirewallInput {
                firewall: &recorded.firewall,
                cluster: recorded.cluster.as_ref(),
                metal_cluster: recorded.metal_cluster.as_ref(),
                now: recorded.now,
                jitter: recorded.jitter,
            };
            let backend = ReplayBackend { script, redaction: Redaction::default() };
            Redacted::of(&reconcile_firewall(&input, &backend).await)
        }
    }
}

/// The first place where two JSON values differ: its path (`outcome.status.conditions[1]`),
/// the recorded and the replayed value there (shortened), or `None` if they are equal.
pub fn difference(recorded: &Value, replayed: &Value, path: &str) -> Option<(String, String, String)> {
    let show = |value: Option<&Value>| {
        value.map_or_else(|| "(absent)".to_string(), |v| shorten(&v.to_string(), 400))
    };
    match (recorded, replayed) {
        (Value::Object(a), Value::Object(b)) => {
            let keys = a.keys().chain(b.keys().filter(|key| !a.contains_key(*key)));
            keys.into_iter().find_map(|key| {
                let at = format!("{path}.{key}");
                match (a.get(key), b.get(key)) {
                    (Some(x), Some(y)) => difference(x, y, &at),
                    (x, y) => Some((at, show(x), show(y))),
                }
            })
        }
        (Value::Array(a), Value::Array(b)) => {
            let common =
                a.iter().zip(b).enumerate().find_map(|(i, (x, y))| difference(x, y, &format!("{path}[{i}]")));
            common.or_else(|| {
                let at = a.len().min(b.len());
                (a.len() != b.len()).then(|| (format!("{path}[{at}]"), show(a.get(at)), show(b.get(at))))
            })
        }
        _ => (recorded != replayed).then(|| (path.to_string(), show(Some(recorded)), show(Some(replayed)))),
    }
}

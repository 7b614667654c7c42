//! Recording one reconcile: a backend and a cache that pass everything through and note it.

use super::{
    Answer, Call, ClusterRecord, FirewallRecord, Input, MachineRecord, Record, RecordedBootstrap, Redacted,
    Redaction,
};
use crate::Timestamp;
use crate::api::{MetalStackCluster, MetalStackFirewall, MetalStackMachine};
use crate::backend::{BackendResult, MetalBackend};
use crate::error::{BackendError, Operation};
use crate::metal::Machine;
use crate::reconcile::cache::{CacheAccess, MachineCache};
use crate::reconcile::machine::{Variant, reconcile_machine_variant};
use crate::reconcile::{
    ClusterInput, ClusterOutcome, FirewallInput, FirewallOutcome, MachineInput, MachineOutcome,
    reconcile_cluster, reconcile_firewall,
};
use crate::tags::ObjectRef;
use async_trait::async_trait;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;
use std::sync::Mutex;
use std::time::Duration;

/// Where finished records go. The writer numbers them (`Record::sequence`).
pub trait TraceSink: Send + Sync {
    fn write(&self, record: Record);
}

/// The calls of one reconcile, in order.
#[derive(Debug, Default)]
pub struct Journal {
    calls: Mutex<Vec<Call>>,
}

impl Journal {
    fn push(&self, call: Call) {
        // A poisoned journal only means another call panicked; keep what was recorded.
        self.calls.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(call);
    }

    pub fn into_calls(self) -> Vec<Call> {
        self.calls.into_inner().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A [`MetalBackend`] that passes every call to `inner` and records request and answer.
#[derive(Debug)]
pub struct RecordingBackend<'a, B: ?Sized> {
    inner: &'a B,
    journal: &'a Journal,
    redaction: Redaction,
}

impl<'a, B: MetalBackend + ?Sized> RecordingBackend<'a, B> {
    pub fn new(inner: &'a B, journal: &'a Journal) -> Self {
        RecordingBackend { inner, journal, redaction: Redaction::default() }
    }

    fn note<T: Serialize>(&self, operation: Operation, request: Redacted, answer: &Result<T, BackendError>) {
        let answer = match answer {
            Ok(value) => Answer::Ok(Redacted::of(value)),
            Err(error) => Answer::Error(error.clone()),
        };
        self.journal.push(Call::Backend { operation, request, answer });
    }
}

macro_rules! recording_methods {
    ($( fn $name:ident($($arg:ident: $type:ty),*) -> $out:ty, $operation:ident, |$redaction:ident| $request:expr; )*) => {
        #[async_trait]
        impl<B: MetalBackend + ?Sized> MetalBackend for RecordingBackend<'_, B> {
            $(
                async fn $name(&self $(, $arg: $type)*) -> BackendResult<$out> {
                    let $redaction = &self.redaction;
                    let request = $request;
                    let answer = self.inner.$name($($arg),*).await;
                    self.note(Operation::$operation, request, &answer);
                    answer
                }
            )*
        }
    };
}

crate::with_backend_methods!(recording_methods);

/// A view of the shared [`MachineCache`] that records every answer it gives one reconcile.
#[derive(Debug)]
pub struct RecordingCache<'a> {
    inner: &'a MachineCache,
    journal: &'a Journal,
}

impl<'a> RecordingCache<'a> {
    pub fn new(inner: &'a MachineCache, journal: &'a Journal) -> Self {
        RecordingCache { inner, journal }
    }
}

#[async_trait]
impl CacheAccess for RecordingCache<'_> {
    async fn machine(
        &self,
        backend: &dyn MetalBackend,
        cluster: &ObjectRef,
        project_id: &str,
        machine_id: &str,
        now: Timestamp,
    ) -> Result<Option<Machine>, BackendError> {
        let hit = self.inner.cached(cluster, machine_id, now);
        self.journal.push(Call::CacheMachine {
            cluster: cluster.key(),
            machine_id: machine_id.to_string(),
            hit: hit.as_ref().map(Redacted::of),
        });
        match hit {
            Some(machine) => Ok(Some(machine)),
            // `backend` is the recording backend: the refresh's calls are recorded after this.
            None => self.inner.fetch(backend, cluster, project_id, machine_id, now).await,
        }
    }

    fn tagged(&self, cluster: &ObjectRef, tags: &[String]) -> Vec<Machine> {
        let answer = self.inner.tagged(cluster, tags);
        self.journal.push(Call::CacheTagged {
            cluster: cluster.key(),
            tags: tags.to_vec(),
            answer: Redacted::of(&answer),
        });
        answer
    }

    fn invalidate(&self, cluster: &ObjectRef) {
        self.inner.invalidate(cluster);
        self.journal.push(Call::CacheInvalidate { cluster: cluster.key() });
    }

    fn next_look(&self, machine: &Machine, now: Timestamp) -> Duration {
        let answer = self.inner.next_look(machine, now);
        self.journal.push(Call::CacheNextLook { machine_id: machine.id.clone(), answer });
        answer
    }
}

/// `namespace/name`.
fn object_name(meta: &ObjectMeta) -> String {
    format!("{}/{}", meta.namespace.as_deref().unwrap_or_default(), meta.name.as_deref().unwrap_or_default())
}

/// The object as recorded: without `managedFields`, which no reconciler reads and which are
/// most of an object's size.
fn trimmed<T: Clone>(object: &T, meta: impl Fn(&mut T) -> &mut ObjectMeta) -> T {
    let mut copy = object.clone();
    meta(&mut copy).managed_fields = None;
    copy
}

/// [`reconcile_machine_variant`], recorded into `sink`.
pub async fn record_machine(
    input: &MachineInput<'_>,
    backend: &dyn MetalBackend,
    cache: &MachineCache,
    variant: Variant,
    sink: &dyn TraceSink,
) -> MachineOutcome {
    let journal = Journal::default();
    let outcome = {
        let backend = RecordingBackend::new(backend, &journal);
        let cache = RecordingCache::new(cache, &journal);
        reconcile_machine_variant(input, &backend, &cache, variant).await
    };
    let recorded = MachineRecord {
        metal_machine: trimmed(input.metal_machine, |m: &mut MetalStackMachine| &mut m.metadata),
        capi_machine: input.capi_machine.cloned(),
        cluster: input.cluster.cloned(),
        metal_cluster: input.metal_cluster.cloned(),
        bootstrap: RecordedBootstrap::of(input.bootstrap),
        now: input.now,
        jitter: input.jitter,
        refresh: cache.policy(),
    };
    sink.write(Record {
        sequence: 0,
        object: object_name(&input.metal_machine.metadata),
        input: Input::Machine(Box::new(recorded)),
        calls: journal.into_calls(),
        outcome: Redacted::of(&outcome),
    });
    outcome
}

/// [`reconcile_cluster`], recorded into `sink`.
pub async fn record_cluster(
    input: &ClusterInput<'_>,
    backend: &dyn MetalBackend,
    sink: &dyn TraceSink,
) -> ClusterOutcome {
    let journal = Journal::default();
    let outcome = reconcile_cluster(input, &RecordingBackend::new(backend, &journal)).await;
    let recorded = ClusterRecord {
        metal_cluster: trimmed(input.metal_cluster, |c: &mut MetalStackCluster| &mut c.metadata),
        cluster: input.cluster.cloned(),
        machines_remaining: input.machines_remaining,
        firewall: input.firewall.map(|f| trimmed(f, |f: &mut MetalStackFirewall| &mut f.metadata)),
        now: input.now,
        jitter: input.jitter,
    };
    sink.write(Record {
        sequence: 0,
        object: object_name(&input.metal_cluster.metadata),
        input: Input::Cluster(Box::new(recorded)),
        calls: journal.into_calls(),
        outcome: Redacted::of(&outcome),
    });
    outcome
}

/// [`reconcile_firewall`], recorded into `sink`.
pub async fn record_firewall(
    input: &FirewallInput<'_>,
    backend: &dyn MetalBackend,
    sink: &dyn TraceSink,
) -> FirewallOutcome {
    let journal = Journal::default();
    let outcome = reconcile_firewall(input, &RecordingBackend::new(backend, &journal)).await;
    let recorded = FirewallRecord {
        firewall: trimmed(input.firewall, |f: &mut MetalStackFirewall| &mut f.metadata),
        cluster: input.cluster.cloned(),
        metal_cluster: input.metal_cluster.cloned(),
        now: input.now,
        jitter: input.jitter,
    };
    sink.write(Record {
        sequence: 0,
        object: object_name(&input.firewall.metadata),
        input: Input::Firewall(Box::new(recorded)),
        calls: journal.into_calls(),
        outcome: Redacted::of(&outcome),
    });
    outcome
}

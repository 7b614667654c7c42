//! Running a [`Plan`]: the one order of writes of every reconcile, over a [`Writer`] that
//! capms-manager implements with a kube client and the simulator with its object store.
//!
//! # Expected flow
//! 1. Events are published (reasons from core's closed `EventReason` enum); a failed event
//!    never fails the reconcile.
//! 2. Metadata and spec changes go in one write conditional on the resourceVersion the
//!    reconcile read (or the pass's gate wrote): a reconcile on stale inputs never writes
//!    ([`WriteError::Conflict`]). The same write removes the pass's block-move hold
//!    ([`super::gate`]), so the hold ends exactly when the outcome is persisted.
//! 3. The cluster's firewall child is created (owned by the cluster) or deleted (conditional on
//!    the UID the reconcile saw, so an object that replaced it is left alone). A name taken by
//!    an object the cluster does not own is [`WriteError::FirewallNameTaken`], with a Warning
//!    event.
//! 4. The status goes to the status subresource, conditional on the resourceVersion after
//!    step 2, and only when the plan has one (it changed and the object stays).
//!
//! # Guarantees
//! Nothing is written that the plan does not name; a failed step stops the ones after it (the
//! retry re-reads and plans anew); a removed finalizer is the last write on an object.

use super::gate::Settled;
use super::plan::{Plan, Reconciled};
use super::retry::WriteError;
use crate::api::capi::BLOCK_MOVE_ANNOTATION;
use crate::api::{MetalStackFirewall, MetalStackFirewallSpec};
use crate::reconcile::{Event, EventReason, FirewallChild};
use async_trait::async_trait;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube_core::Resource;

/// The writes of one reconcile, to wherever the objects live.
#[async_trait]
pub trait Writer<K: Reconciled>: Send {
    /// Publishes one event about `object`; failures are the writer's to log.
    async fn publish(&mut self, object: &K, event: &Event);
    /// Writes `patch` conditional on `object`'s resourceVersion; returns the new one.
    async fn patch(&mut self, object: &K, patch: &super::plan::ObjectPatch) -> Result<String, WriteError>;
    /// Writes the status conditional on `version`.
    async fn write_status(&mut self, object: &K, version: &str, status: &K::Status)
    -> Result<(), WriteError>;
    /// Creates `firewall` ([`WriteError::AlreadyExists`] if the name is taken).
    async fn create_firewall(&mut self, firewall: &MetalStackFirewall) -> Result<(), WriteError>;
    /// Reads the MetalStackFirewall `name` live (after a create found the name taken).
    async fn read_firewall(
        &mut self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<MetalStackFirewall>, WriteError>;
    /// Deletes the MetalStackFirewall `name` if its UID is still `uid` (any, if `None`).
    async fn delete_firewall(
        &mut self,
        namespace: &str,
        name: &str,
        uid: Option<&str>,
    ) -> Result<(), WriteError>;
}

/// Runs `plan` for `object` as the module documentation describes. `firewall_seen` is the
/// cluster's own firewall child as the reconcile read it (clusters only); `settled` what the
/// pass's gate wrote.
pub async fn execute<K: Reconciled>(
    writer: &mut dyn Writer<K>,
    object: &K,
    plan: &Plan<K>,
    firewall_seen: Option<&MetalStackFirewall>,
    settled: &Settled,
) -> Result<(), WriteError> {
    let gated;
    let object = match &settled.written {
        Some(meta) => {
            let mut copy = object.clone();
            *copy.meta_mut() = meta.clone();
            gated = copy;
            &gated
        }
        None => object,
    };
    for event in &plan.events {
        writer.publish(object, event).await;
    }
    let mut patch = plan.patch.clone();
    if settled.release {
        patch.removed_annotations.insert(BLOCK_MOVE_ANNOTATION.to_string());
    }
    let read = object.meta().resource_version.clone().unwrap_or_default();
    let version = if patch.is_empty() { read } else { writer.patch(object, &patch).await? };
    let child = firewall_child(writer, object, &plan.child, firewall_seen).await;
    if let Err(error @ WriteError::FirewallNameTaken { .. }) = &child {
        let event = Event::warning(EventReason::FirewallNameTaken, error.to_string());
        writer.publish(object, &event).await;
    }
    child?;
    match &plan.status {
        Some(status) => match writer.write_status(object, &version, status).await {
            // Gone meanwhile (the finalizer was removed by another replica): nothing to report.
            Err(WriteError::Gone) => Ok(()),
            result => result,
        },
        None => Ok(()),
    }
}

async fn firewall_child<K: Reconciled>(
    writer: &mut dyn Writer<K>,
    owner: &K,
    child: &FirewallChild,
    seen: Option<&MetalStackFirewall>,
) -> Result<(), WriteError> {
    let namespace = owner.meta().namespace.clone().unwrap_or_default();
    match child {
        FirewallChild::Keep => Ok(()),
        FirewallChild::Ensure { name, spec } => {
            let firewall = firewall_object(owner, name, spec);
            match writer.create_firewall(&firewall).await {
                Err(WriteError::AlreadyExists) => {
                    let taken = writer.read_firewall(&namespace, name).await?;
                    let owner_uid = owner.meta().uid.as_deref();
                    match taken {
                        Some(other) if !owned_by_uid(&other.metadata, owner_uid) => {
                            Err(WriteError::FirewallNameTaken { name: name.clone() })
                        }
                        _ => Ok(()),
                    }
                }
                result => result,
            }
        }
        FirewallChild::Delete { name } => {
            let uid = seen.and_then(|firewall| firewall.metadata.uid.as_deref());
            match writer.delete_firewall(&namespace, name, uid).await {
                // Gone, or replaced by another object (the UID precondition failed).
                Err(WriteError::Gone | WriteError::Conflict) => Ok(()),
                result => result,
            }
        }
    }
}

fn owned_by_uid(meta: &ObjectMeta, uid: Option<&str>) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|reference| reference.kind == "MetalStackCluster" && Some(reference.uid.as_str()) == uid)
}

/// The MetalStackFirewall a cluster creates as its child: owned (controller) by it, with its
/// labels.
pub fn firewall_object<K: Resource<DynamicType = ()>>(
    owner: &K,
    name: &str,
    spec: &MetalStackFirewallSpec,
) -> MetalStackFirewall {
    MetalStackFirewall {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: owner.meta().namespace.clone(),
            labels: owner.meta().labels.clone(),
            owner_references: Some(vec![controller_reference(owner)]),
            ..ObjectMeta::default()
        },
        spec: spec.clone(),
        status: None,
    }
}

/// A controller owner reference to `owner` that blocks its deletion.
pub fn controller_reference<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).to_string(),
        kind: K::kind(&()).to_string(),
        name: owner.meta().name.clone().unwrap_or_default(),
        uid: owner.meta().uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

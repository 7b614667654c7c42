//! Which reconciles a change of an object triggers: the watches of capms-manager's
//! controllers, as one mapping that the simulator uses too.
//!
//! - MetalStackMachine: itself; its Machine (by the Machine's `infrastructureRef`); its
//!   MetalStackCluster and Cluster (by the `cluster.x-k8s.io/cluster-name` label).
//! - MetalStackCluster: itself; its MetalStackFirewall (owned); its Cluster (by the Cluster's
//!   `infrastructureRef`).
//! - MetalStackFirewall: itself; its MetalStackCluster; that cluster's Cluster.
//!
//! - A credentials Secret capms protects: the MetalStackClusters that name it
//!   ([`clusters_naming_secret`]; a fixed Secret clears their `CredentialsInvalid` at once).
//!
//! A MetalStackCluster waiting for its machines to go requeues itself (core's cluster
//! reconciler), so a MetalStackMachine's deletion does not trigger it.
//!
//! A change counts only if it alters the object's [`fingerprint`]: the block-move handshake's
//! own annotation writes ([`super::gate`]) and a relist of unchanged objects trigger nothing.

use super::objects::{Kind, ObjectKey, Objects, Target};
use crate::api::capi::{self, Cluster, Machine};
use crate::api::{MetalStackCluster, MetalStackFirewall, MetalStackMachine};
use crate::reconcile::cluster::{firewall_name, firewall_name_of};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;
use serde_json::Value;
use std::hash::{DefaultHasher, Hash, Hasher};

/// An object whose change a controller watches.
#[derive(Debug, Clone, Copy)]
pub enum Changed<'a> {
    Cluster(&'a Cluster),
    Machine(&'a Machine),
    MetalCluster(&'a MetalStackCluster),
    MetalMachine(&'a MetalStackMachine),
    Firewall(&'a MetalStackFirewall),
}

impl Changed<'_> {
    /// The [`fingerprint`] of the changed object.
    pub fn fingerprint(&self) -> u64 {
        match self {
            Changed::Cluster(object) => fingerprint(*object),
            Changed::Machine(object) => fingerprint(*object),
            Changed::MetalCluster(object) => fingerprint(*object),
            Changed::MetalMachine(object) => fingerprint(*object),
            Changed::Firewall(object) => fingerprint(*object),
        }
    }
}

/// What a change of an object must alter to trigger reconciles: a hash of everything but its
/// resourceVersion, its managedFields and the block-move annotation. Two versions of an object
/// that differ only there trigger nothing; the same object always hashes the same.
pub fn fingerprint<K: Serialize>(object: &K) -> u64 {
    // A derived Serialize of a Kubernetes object does not fail; if it did, every version would
    // hash alike and the object would be reconciled at the resync only.
    let mut value = serde_json::to_value(object).unwrap_or(Value::Null);
    if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
        meta.remove("managedFields");
        if let Some(annotations) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
            annotations.remove(capi::BLOCK_MOVE_ANNOTATION);
            if annotations.is_empty() {
                meta.remove("annotations");
            }
        }
    }
    let mut hasher = DefaultHasher::new();
    value.to_string().hash(&mut hasher);
    hasher.finish()
}

/// The reconciles of `kind` that a change of `changed` triggers.
pub fn triggered(objects: &impl Objects, changed: Changed<'_>, kind: Kind) -> Vec<Target> {
    let keys = match (changed, kind) {
        (Changed::MetalMachine(machine), Kind::Machine) => vec![ObjectKey::of(&machine.metadata)],
        (Changed::Machine(machine), Kind::Machine) => {
            infrastructure(&machine.metadata, machine.spec.infrastructure_ref.as_ref(), "MetalStackMachine")
                .into_iter()
                .collect()
        }
        (Changed::MetalCluster(metal_cluster), Kind::Machine) => {
            let cluster = capi::label(&metal_cluster.metadata, capi::CLUSTER_NAME_LABEL);
            machines_of(objects, &metal_cluster.metadata, cluster)
        }
        (Changed::Cluster(cluster), Kind::Machine) => {
            machines_of(objects, &cluster.metadata, cluster.metadata.name.as_deref())
        }
        (Changed::MetalCluster(metal_cluster), Kind::Cluster) => vec![ObjectKey::of(&metal_cluster.metadata)],
        (Changed::Firewall(firewall), Kind::Cluster) => {
            controller_owner(&firewall.metadata).into_iter().collect()
        }
        (Changed::Cluster(cluster), Kind::Cluster) => {
            infrastructure(&cluster.metadata, cluster.spec.infrastructure_ref.as_ref(), "MetalStackCluster")
                .into_iter()
                .collect()
        }
        (Changed::Firewall(firewall), Kind::Firewall) => vec![ObjectKey::of(&firewall.metadata)],
        (Changed::MetalCluster(metal_cluster), Kind::Firewall) => {
            let namespace = metal_cluster.metadata.namespace.clone().unwrap_or_default();
            vec![ObjectKey::new(namespace, firewall_name(metal_cluster))]
        }
        (Changed::Cluster(cluster), Kind::Firewall) => {
            infrastructure(&cluster.metadata, cluster.spec.infrastructure_ref.as_ref(), "MetalStackCluster")
                .map(|key| ObjectKey::new(key.namespace, firewall_name_of(&key.name)))
                .into_iter()
                .collect()
        }
        _ => Vec::new(),
    };
    keys.into_iter().map(|key| Target::new(kind, key)).collect()
}

/// The reconciles of every kind that a change of `changed` triggers, in a stable order.
pub fn triggered_all(objects: &impl Objects, changed: Changed<'_>) -> Vec<Target> {
    [Kind::Cluster, Kind::Machine, Kind::Firewall]
        .into_iter()
        .flat_map(|kind| triggered(objects, changed, kind))
        .collect()
}

/// The MetalStackCluster reconciles that a change of the Secret of `secret` (its metadata)
/// triggers: those among `clusters` in its namespace whose `spec.credentialsRef` names it.
pub fn clusters_naming_secret<'a>(
    secret: &ObjectMeta,
    clusters: impl IntoIterator<Item = &'a MetalStackCluster>,
) -> Vec<Target> {
    let names = |cluster: &&MetalStackCluster| {
        cluster.metadata.namespace == secret.namespace
            && cluster.spec.credentials_ref.as_ref().map(|reference| &reference.name) == secret.name.as_ref()
    };
    clusters
        .into_iter()
        .filter(names)
        .map(|cluster| Target::new(Kind::Cluster, ObjectKey::of(&cluster.metadata)))
        .collect()
}

/// The object an `infrastructureRef` of kind `kind` names, in the referrer's namespace.
fn infrastructure(
    meta: &ObjectMeta,
    reference: Option<&capi::ContractVersionedObjectReference>,
    kind: &str,
) -> Option<ObjectKey> {
    let reference = reference.filter(|reference| reference.kind == kind)?;
    Some(ObjectKey::new(meta.namespace.clone().unwrap_or_default(), reference.name.clone()))
}

/// The MetalStackMachines labelled with `cluster` in the namespace of `meta`.
fn machines_of(objects: &impl Objects, meta: &ObjectMeta, cluster: Option<&str>) -> Vec<ObjectKey> {
    let Some(cluster) = cluster else { return Vec::new() };
    let namespace = meta.namespace.as_deref().unwrap_or_default();
    objects
        .metal_machines_of(namespace, cluster)
        .iter()
        .map(|machine| ObjectKey::of(&machine.metadata))
        .collect()
}

/// The MetalStackCluster that controls the object of `meta`.
fn controller_owner(meta: &ObjectMeta) -> Option<ObjectKey> {
    let reference = meta
        .owner_references
        .iter()
        .flatten()
        .find(|reference| reference.kind == "MetalStackCluster" && reference.controller == Some(true))?;
    Some(ObjectKey::new(meta.namespace.clone().unwrap_or_default(), reference.name.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_triggers_the_clusters_of_its_namespace_that_name_it() {
        let cluster = |namespace: &str, name: &str, secret: Option<&str>| {
            let mut cluster = MetalStackCluster::new(name, Default::default());
            cluster.metadata.namespace = Some(namespace.to_string());
            cluster.spec.credentials_ref =
                secret.map(|name| crate::api::LocalSecretReference { name: name.to_string() });
            cluster
        };
        let clusters = [
            cluster("a", "uses", Some("creds")),
            cluster("a", "other", Some("other-creds")),
            cluster("a", "default", None),
            cluster("b", "elsewhere", Some("creds")),
        ];
        let secret = ObjectMeta {
            namespace: Some("a".to_string()),
            name: Some("creds".to_string()),
            ..ObjectMeta::default()
        };
        let triggered = clusters_naming_secret(&secret, &clusters);
        assert_eq!(triggered, [Target::new(Kind::Cluster, ObjectKey::new("a", "uses"))]);
    }

    #[test]
    fn the_handshake_and_a_new_resource_version_leave_the_fingerprint_alone() {
        let mut machine = MetalStackMachine::new("m", Default::default());
        machine.metadata.resource_version = Some("1".to_string());
        let before = fingerprint(&machine);
        machine.metadata.resource_version = Some("2".to_string());
        machine.metadata.annotations = Some(
            [(capi::BLOCK_MOVE_ANNOTATION.to_string(), "capms-manager/a@2026-12-04T00:00:00Z".to_string())]
                .into(),
        );
        assert_eq!(fingerprint(&machine), before);
        machine.metadata.annotations = Some([(capi::PAUSED_ANNOTATION.to_string(), String::new())].into());
        assert_ne!(fingerprint(&machine), before, "any other annotation is a change");
    }
}

//! Which reconciles a change of an object triggers: the watches of capms-manager's
//! controllers, as one mapping that the simulator uses too.
//!
//! - MetalStackMachine: itself; its Machine (by the Machine's `infrastructureRef`); its
//!   MetalStackCluster and Cluster (by the `cluster.x-k8s.io/cluster-name` label).
//! - MetalStackCluster: itself; its MetalStackFirewall (owned); its Cluster (by the Cluster's
//!   `infrastructureRef`).
//! - MetalStackFirewall: itself; its MetalStackCluster; that cluster's Cluster.
//!
//! A MetalStackCluster waiting for its machines to go requeues itself (core's cluster
//! reconciler), so a MetalStackMachine's deletion does not trigger it.

use super::objects::{Kind, ObjectKey, Objects, Target};
use crate::api::capi::{self, Cluster, Machine};
use crate::api::{MetalStackCluster, MetalStackFirewall, MetalStackMachine};
use crate::reconcile::cluster::{firewall_name, firewall_name_of};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// An object whose change a controller watches.
#[derive(Debug, Clone, Copy)]
pub enum Changed<'a> {
    Cluster(&'a Cluster),
    Machine(&'a Machine),
    MetalCluster(&'a MetalStackCluster),
    MetalMachine(&'a MetalStackMachine),
    Firewall(&'a MetalStackFirewall),
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

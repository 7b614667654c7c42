//! The synchronous read interface the glue gathers inputs through, and the keys of the objects
//! capms reconciles.
//!
//! capms-manager implements [`Objects`] over kube-runtime reflector stores (the informer
//! caches); the world simulator over its model of an informer's view of the object store. Reads
//! may lag behind the apiserver in both: every write the glue plans is conditional on the
//! resourceVersion the reconcile read, and every input change triggers a reconcile once the
//! reader reflects it ([`super::triggers`]).

use crate::api::capi::{Cluster, Machine};
use crate::api::{MetalStackCluster, MetalStackFirewall, MetalStackMachine};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::sync::Arc;

/// Namespace and name of an object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectKey { namespace: namespace.into(), name: name.into() }
    }

    /// The key of the object `meta` describes.
    pub fn of(meta: &ObjectMeta) -> Self {
        ObjectKey::new(meta.namespace.clone().unwrap_or_default(), meta.name.clone().unwrap_or_default())
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The kinds capms reconciles: one controller each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Cluster,
    Machine,
    Firewall,
}

impl Kind {
    /// The Kubernetes kind.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Cluster => "MetalStackCluster",
            Kind::Machine => "MetalStackMachine",
            Kind::Firewall => "MetalStackFirewall",
        }
    }
}

/// One reconcile request: an object of a reconciled kind.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Target {
    pub kind: Kind,
    pub key: ObjectKey,
}

impl Target {
    pub fn new(kind: Kind, key: ObjectKey) -> Self {
        Target { kind, key }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.kind.as_str(), self.key)
    }
}

/// What the glue reads of the management cluster, synchronously, from a cache.
///
/// Lists are in a stable order (by namespace and name) so that whatever is built from them is
/// deterministic.
pub trait Objects {
    fn cluster(&self, namespace: &str, name: &str) -> Option<Arc<Cluster>>;
    fn machine(&self, namespace: &str, name: &str) -> Option<Arc<Machine>>;
    fn metal_cluster(&self, namespace: &str, name: &str) -> Option<Arc<MetalStackCluster>>;
    fn firewall(&self, namespace: &str, name: &str) -> Option<Arc<MetalStackFirewall>>;
    /// The MetalStackClusters of `namespace` labelled `cluster.x-k8s.io/cluster-name=<cluster>`.
    fn metal_clusters_of(&self, namespace: &str, cluster: &str) -> Vec<Arc<MetalStackCluster>>;
    /// The MetalStackMachines of `namespace` labelled `cluster.x-k8s.io/cluster-name=<cluster>`.
    fn metal_machines_of(&self, namespace: &str, cluster: &str) -> Vec<Arc<MetalStackMachine>>;
}

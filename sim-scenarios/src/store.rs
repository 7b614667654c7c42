//! A model of the Kubernetes object store of one management cluster: resource versions and
//! conflicts on stale writes, finalizers and deletion timestamps, owner references and garbage
//! collection, and the CEL immutability rule capms relies on (`providerID` once set).

use capms_core::Timestamp;
use capms_core::api::capi::{Cluster, Machine};
use capms_core::api::{MetalStackCluster, MetalStackFirewall, MetalStackMachine};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube_core::Resource;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

/// Namespace and name.
pub type Key = (String, String);

/// Why a write was refused, as an apiserver would refuse it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// 409: the write was based on an old resourceVersion.
    Conflict,
    /// 404.
    NotFound,
    /// 409 on create.
    AlreadyExists,
    /// 422: a validation rule rejected the write.
    Invalid(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Conflict => f.write_str("conflict: the object has been modified"),
            StoreError::NotFound => f.write_str("not found"),
            StoreError::AlreadyExists => f.write_str("already exists"),
            StoreError::Invalid(message) => write!(f, "invalid: {message}"),
        }
    }
}

/// The key of an object.
pub fn key_of(meta: &ObjectMeta) -> Key {
    (meta.namespace.clone().unwrap_or_default(), meta.name.clone().unwrap_or_default())
}

/// Objects of one kind. Objects are shared (`Arc`), so that copying a store (an informer's
/// view) copies pointers, and a write replaces the one object it changes.
#[derive(Debug, Clone)]
pub struct Collection<T> {
    objects: BTreeMap<Key, Arc<T>>,
}

impl<T> Default for Collection<T> {
    fn default() -> Self {
        Collection { objects: BTreeMap::new() }
    }
}

impl<T: Resource<DynamicType = ()> + Clone> Collection<T> {
    pub fn get(&self, namespace: &str, name: &str) -> Option<&T> {
        self.shared(namespace, name).map(Arc::as_ref)
    }

    /// The shared object (a cheap copy).
    pub fn shared(&self, namespace: &str, name: &str) -> Option<&Arc<T>> {
        self.objects.get(&(namespace.to_string(), name.to_string()))
    }

    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.objects.values().map(Arc::as_ref)
    }

    /// The shared objects in key order.
    pub fn shared_values(&self) -> impl Iterator<Item = &Arc<T>> {
        self.objects.values()
    }

    /// Mutable access to one object (copied first if a view still shares it).
    fn get_mut(&mut self, key: &Key) -> Option<&mut T> {
        self.objects.get_mut(key).map(Arc::make_mut)
    }

    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    fn insert(&mut self, object: T) {
        self.objects.insert(key_of(object.meta()), Arc::new(object));
    }

    fn remove(&mut self, key: &Key) -> Option<Arc<T>> {
        self.objects.remove(key)
    }

    /// Keys of objects whose deletion is complete (deletion timestamp, no finalizers).
    fn finished(&self) -> Vec<Key> {
        self.objects
            .iter()
            .filter(|(_, o)| {
                o.meta().deletion_timestamp.is_some()
                    && o.meta().finalizers.as_ref().is_none_or(|f| f.is_empty())
            })
            .map(|(key, _)| key.clone())
            .collect()
    }

    /// Keys of objects owned by any of `uids`.
    fn owned_by(&self, uids: &BTreeSet<String>) -> Vec<Key> {
        self.objects
            .iter()
            .filter(|(_, o)| {
                o.meta()
                    .owner_references
                    .as_ref()
                    .is_some_and(|refs| refs.iter().any(|r| uids.contains(&r.uid)))
            })
            .map(|(key, _)| key.clone())
            .collect()
    }
}

/// Every kind the world stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Cluster,
    Machine,
    Secret,
    MetalStackCluster,
    MetalStackMachine,
    MetalStackFirewall,
}

/// One management cluster's objects.
#[derive(Debug, Clone, Default)]
pub struct Store {
    pub clusters: Collection<Cluster>,
    pub machines: Collection<Machine>,
    pub secrets: Collection<Secret>,
    pub metal_clusters: Collection<MetalStackCluster>,
    pub metal_machines: Collection<MetalStackMachine>,
    pub firewalls: Collection<MetalStackFirewall>,
    resource_version: u64,
    /// How many objects have been created (for UIDs).
    created: u64,
    /// Bumped on every write: lets observers skip work when nothing changed.
    pub revision: u64,
    /// Distinguishes the UIDs of different management clusters' stores.
    pub id: u64,
}

/// Access to the collection of one kind.
pub trait Stored: Resource<DynamicType = ()> + Clone {
    const KIND: Kind;
    fn collection(store: &Store) -> &Collection<Self>;
    fn collection_mut(store: &mut Store) -> &mut Collection<Self>;
    /// Validation on update (the CEL rules that matter to the simulation).
    fn validate_update(_old: &Self, _new: &Self) -> Result<(), StoreError> {
        Ok(())
    }
}

macro_rules! stored {
    ($type:ty, $kind:ident, $field:ident) => {
        impl Stored for $type {
            const KIND: Kind = Kind::$kind;
            fn collection(store: &Store) -> &Collection<Self> {
                &store.$field
            }
            fn collection_mut(store: &mut Store) -> &mut Collection<Self> {
                &mut store.$field
            }
        }
    };
}

stored!(Cluster, Cluster, clusters);
stored!(Machine, Machine, machines);
stored!(Secret, Secret, secrets);
impl Stored for MetalStackCluster {
    const KIND: Kind = Kind::MetalStackCluster;
    fn collection(store: &Store) -> &Collection<Self> {
        &store.metal_clusters
    }
    fn collection_mut(store: &mut Store) -> &mut Collection<Self> {
        &mut store.metal_clusters
    }
    /// The CRD's CEL rules: project and partition never change; nodeNetworkID and
    /// controlPlaneIP never change once set.
    fn validate_update(old: &Self, new: &Self) -> Result<(), StoreError> {
        let (old, new) = (&old.spec, &new.spec);
        let once = |before: &Option<String>, after: &Option<String>| before.is_none() || before == after;
        if old.project_id != new.project_id || old.partition != new.partition {
            return Err(StoreError::Invalid("projectID and partition are immutable".to_string()));
        }
        if !once(&old.node_network_id, &new.node_network_id) {
            return Err(StoreError::Invalid("nodeNetworkID is immutable once set".to_string()));
        }
        if !once(&old.control_plane_ip, &new.control_plane_ip) {
            return Err(StoreError::Invalid("controlPlaneIP is immutable once set".to_string()));
        }
        Ok(())
    }
}
stored!(MetalStackFirewall, MetalStackFirewall, firewalls);

impl Stored for MetalStackMachine {
    const KIND: Kind = Kind::MetalStackMachine;
    fn collection(store: &Store) -> &Collection<Self> {
        &store.metal_machines
    }
    fn collection_mut(store: &mut Store) -> &mut Collection<Self> {
        &mut store.metal_machines
    }
    fn validate_update(old: &Self, new: &Self) -> Result<(), StoreError> {
        match (&old.spec.provider_id, &new.spec.provider_id) {
            (Some(before), after) if after.as_ref() != Some(before) => {
                Err(StoreError::Invalid("providerID is immutable once set".to_string()))
            }
            _ => Ok(()),
        }
    }
}

impl Store {
    /// An empty store of management cluster `id` (its UIDs differ from other stores').
    pub fn new(id: u64) -> Self {
        Store { id, ..Store::default() }
    }

    fn next_version(&mut self) -> String {
        self.resource_version += 1;
        self.revision += 1;
        self.resource_version.to_string()
    }

    pub fn get<T: Stored>(&self, namespace: &str, name: &str) -> Option<&T> {
        T::collection(self).get(namespace, name)
    }

    /// Creates an object: assigns UID, resourceVersion, generation and creation time.
    pub fn create<T: Stored>(&mut self, mut object: T, now: Timestamp) -> Result<T, StoreError> {
        let key = key_of(object.meta());
        if T::collection(self).get(&key.0, &key.1).is_some() {
            return Err(StoreError::AlreadyExists);
        }
        self.created += 1;
        let version = self.next_version();
        let meta = object.meta_mut();
        meta.uid =
            Some(format!("{:08x}-{:04x}-4000-8000-{:012x}", self.created, self.id, self.resource_version));
        meta.resource_version = Some(version);
        meta.generation = Some(1);
        meta.creation_timestamp = Some(Time(now));
        meta.deletion_timestamp = None;
        T::collection_mut(self).insert(object.clone());
        Ok(object)
    }

    /// Replaces an object if `object` carries the current resourceVersion. Bumps the
    /// generation when the spec changed (callers say so).
    pub fn update<T: Stored>(&mut self, mut object: T, spec_changed: bool) -> Result<T, StoreError> {
        let key = key_of(object.meta());
        let current = T::collection(self).get(&key.0, &key.1).ok_or(StoreError::NotFound)?;
        if current.meta().resource_version != object.meta().resource_version {
            return Err(StoreError::Conflict);
        }
        T::validate_update(current, &object)?;
        let generation = current.meta().generation.unwrap_or(1) + i64::from(spec_changed);
        let deletion = current.meta().deletion_timestamp.clone();
        let version = self.next_version();
        let meta = object.meta_mut();
        meta.resource_version = Some(version);
        meta.generation = Some(generation);
        meta.deletion_timestamp = deletion;
        T::collection_mut(self).insert(object.clone());
        self.collect();
        Ok(object)
    }

    /// Writes the status subresource (server-side apply with one field manager), metadata and
    /// spec untouched, if the object is still at `expected_version` (the apply carries it as a
    /// precondition; `None`: no precondition).
    /// A write that changes nothing is a no-op, as with server-side apply: no new
    /// resourceVersion, no watch event.
    pub fn write_status<T: Stored + PartialEq>(
        &mut self,
        namespace: &str,
        name: &str,
        expected_version: Option<&str>,
        write: impl FnOnce(&mut T),
    ) -> Result<(), StoreError> {
        let key = (namespace.to_string(), name.to_string());
        let current = T::collection(self).objects.get(&key).ok_or(StoreError::NotFound)?;
        if expected_version
            .is_some_and(|expected| current.meta().resource_version.as_deref() != Some(expected))
        {
            return Err(StoreError::Conflict);
        }
        let mut updated = T::clone(current);
        write(&mut updated);
        if &updated == current.as_ref() {
            return Ok(());
        }
        updated.meta_mut().resource_version = Some(self.next_version());
        T::collection_mut(self).objects.insert(key, Arc::new(updated));
        Ok(())
    }

    /// Marks an object deleted; it goes away once its finalizers are gone.
    pub fn delete<T: Stored>(
        &mut self,
        namespace: &str,
        name: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let version = self.next_version();
        let object = T::collection_mut(self)
            .get_mut(&(namespace.to_string(), name.to_string()))
            .ok_or(StoreError::NotFound)?;
        let meta = object.meta_mut();
        if meta.deletion_timestamp.is_none() {
            meta.deletion_timestamp = Some(Time(now));
            meta.resource_version = Some(version);
        }
        self.collect();
        Ok(())
    }

    /// Removes all finalizers regardless of controllers (what `clusterctl move` does to the
    /// source objects).
    pub fn force_remove_finalizers<T: Stored>(&mut self, namespace: &str, name: &str) {
        let version = self.next_version();
        if let Some(object) = T::collection_mut(self).get_mut(&(namespace.to_string(), name.to_string())) {
            object.meta_mut().finalizers = None;
            object.meta_mut().resource_version = Some(version);
        }
        self.collect();
    }

    /// Removes finished deletions and garbage-collects their dependents (background
    /// propagation), until nothing changes.
    fn collect(&mut self) {
        loop {
            let mut removed_uids = BTreeSet::new();
            removed_uids.extend(remove_finished(&mut self.clusters));
            removed_uids.extend(remove_finished(&mut self.machines));
            removed_uids.extend(remove_finished(&mut self.secrets));
            removed_uids.extend(remove_finished(&mut self.metal_clusters));
            removed_uids.extend(remove_finished(&mut self.metal_machines));
            removed_uids.extend(remove_finished(&mut self.firewalls));
            if removed_uids.is_empty() {
                return;
            }
            self.revision += 1;
            self.delete_owned(&removed_uids);
        }
    }

    fn delete_owned(&mut self, uids: &BTreeSet<String>) {
        let now = Timestamp::UNIX_EPOCH;
        for (namespace, name) in self.machines.owned_by(uids) {
            let _ = self.mark_deleted::<Machine>(&namespace, &name, now);
        }
        for (namespace, name) in self.secrets.owned_by(uids) {
            let _ = self.mark_deleted::<Secret>(&namespace, &name, now);
        }
        for (namespace, name) in self.metal_clusters.owned_by(uids) {
            let _ = self.mark_deleted::<MetalStackCluster>(&namespace, &name, now);
        }
        for (namespace, name) in self.metal_machines.owned_by(uids) {
            let _ = self.mark_deleted::<MetalStackMachine>(&namespace, &name, now);
        }
        for (namespace, name) in self.firewalls.owned_by(uids) {
            let _ = self.mark_deleted::<MetalStackFirewall>(&namespace, &name, now);
        }
    }

    fn mark_deleted<T: Stored>(
        &mut self,
        namespace: &str,
        name: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let object = T::collection_mut(self)
            .get_mut(&(namespace.to_string(), name.to_string()))
            .ok_or(StoreError::NotFound)?;
        let meta = object.meta_mut();
        if meta.deletion_timestamp.is_none() {
            meta.deletion_timestamp = Some(Time(now));
        }
        Ok(())
    }
}

fn remove_finished<T: Stored>(collection: &mut Collection<T>) -> Vec<String> {
    collection
        .finished()
        .into_iter()
        .filter_map(|key| collection.remove(&key))
        .filter_map(|object| object.meta().uid.clone())
        .collect()
}

/// An owner reference to `owner` (controller when `controller` is set).
pub fn owner_reference<T: Resource<DynamicType = ()>>(owner: &T, controller: bool) -> OwnerReference {
    OwnerReference {
        api_version: T::api_version(&()).to_string(),
        kind: T::kind(&()).to_string(),
        name: owner.meta().name.clone().unwrap_or_default(),
        uid: owner.meta().uid.clone().unwrap_or_default(),
        controller: Some(controller),
        block_owner_deletion: Some(true),
    }
}

/// Whether an object carries a finalizer.
pub fn has_finalizer(meta: &ObjectMeta, finalizer: &str) -> bool {
    meta.finalizers.as_ref().is_some_and(|f| f.iter().any(|f| f == finalizer))
}

/// Adds or removes a finalizer in `meta`.
pub fn set_finalizer(meta: &mut ObjectMeta, finalizer: &str, present: bool) {
    let finalizers = meta.finalizers.get_or_insert_with(Vec::new);
    finalizers.retain(|f| f != finalizer);
    if present {
        finalizers.push(finalizer.to_string());
    }
}

/// The glue reads the operator model's informer view through core's read interface, exactly
/// as capms-manager reads its reflector stores.
impl capms_core::glue::Objects for Store {
    fn cluster(&self, namespace: &str, name: &str) -> Option<Arc<Cluster>> {
        self.clusters.shared(namespace, name).cloned()
    }

    fn machine(&self, namespace: &str, name: &str) -> Option<Arc<Machine>> {
        self.machines.shared(namespace, name).cloned()
    }

    fn metal_cluster(&self, namespace: &str, name: &str) -> Option<Arc<MetalStackCluster>> {
        self.metal_clusters.shared(namespace, name).cloned()
    }

    fn firewall(&self, namespace: &str, name: &str) -> Option<Arc<MetalStackFirewall>> {
        self.firewalls.shared(namespace, name).cloned()
    }

    fn metal_clusters_of(&self, namespace: &str, cluster: &str) -> Vec<Arc<MetalStackCluster>> {
        labelled(&self.metal_clusters, namespace, cluster)
    }

    fn metal_machines_of(&self, namespace: &str, cluster: &str) -> Vec<Arc<MetalStackMachine>> {
        labelled(&self.metal_machines, namespace, cluster)
    }
}

/// The objects of `namespace` labelled `cluster.x-k8s.io/cluster-name=<cluster>`, in key order.
fn labelled<T: Resource<DynamicType = ()> + Clone>(
    collection: &Collection<T>,
    namespace: &str,
    cluster: &str,
) -> Vec<Arc<T>> {
    let label = capms_core::api::capi::CLUSTER_NAME_LABEL;
    collection
        .shared_values()
        .filter(|object| object.meta().namespace.as_deref() == Some(namespace))
        .filter(|object| capms_core::api::capi::label(object.meta(), label) == Some(cluster))
        .cloned()
        .collect()
}

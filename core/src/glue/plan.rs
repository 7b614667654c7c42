//! The writes an outcome asks for, as a value: which metadata and spec fields change, whether
//! the status is written, the cluster's firewall child, the events and the requeue.
//!
//! A plan is computed once, here, from the object as the reconcile read it and the outcome;
//! capms-manager renders its [`ObjectPatch`] as a JSON patch ([`ObjectPatch::json_patch`]), the
//! simulator applies the same patch to its stored object ([`ObjectPatch::apply_to`]), and both
//! run the writes in the one order [`super::execute`] keeps.
//!
//! Guarantees: a plan of a settled object is empty (no write when nothing changed); a removed
//! finalizer is the last write on an object (no status is planned after it).

use crate::api::{
    CLUSTER_FINALIZER, FIREWALL_FINALIZER, MACHINE_FINALIZER, MetalStackCluster, MetalStackClusterStatus,
    MetalStackFirewall, MetalStackFirewallStatus, MetalStackMachine, MetalStackMachineStatus,
};
use crate::reconcile::machine::Variant;
use crate::reconcile::{
    ClusterOutcome, Event, FinalizerAction, FirewallChild, FirewallOutcome, MachineOutcome, Requeue,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// A kind capms reconciles, as the glue writes it.
pub trait Reconciled:
    kube_core::Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + Send + Sync
{
    type Status: Clone + PartialEq + Default + Serialize + Send + Sync + std::fmt::Debug;
    /// capms's finalizer on this kind.
    const FINALIZER: &'static str;
    fn status(&self) -> Option<&Self::Status>;
    fn set_status(&mut self, status: Self::Status);
    /// The conditions of a status of this kind.
    fn conditions(status: &mut Self::Status) -> &mut Vec<Condition>;
}

impl Reconciled for MetalStackMachine {
    type Status = MetalStackMachineStatus;
    const FINALIZER: &'static str = MACHINE_FINALIZER;
    fn status(&self) -> Option<&Self::Status> {
        self.status.as_ref()
    }
    fn set_status(&mut self, status: Self::Status) {
        self.status = Some(status);
    }
    fn conditions(status: &mut Self::Status) -> &mut Vec<Condition> {
        &mut status.conditions
    }
}

impl Reconciled for MetalStackCluster {
    type Status = MetalStackClusterStatus;
    const FINALIZER: &'static str = CLUSTER_FINALIZER;
    fn status(&self) -> Option<&Self::Status> {
        self.status.as_ref()
    }
    fn set_status(&mut self, status: Self::Status) {
        self.status = Some(status);
    }
    fn conditions(status: &mut Self::Status) -> &mut Vec<Condition> {
        &mut status.conditions
    }
}

impl Reconciled for MetalStackFirewall {
    type Status = MetalStackFirewallStatus;
    const FINALIZER: &'static str = FIREWALL_FINALIZER;
    fn status(&self) -> Option<&Self::Status> {
        self.status.as_ref()
    }
    fn set_status(&mut self, status: Self::Status) {
        self.status = Some(status);
    }
    fn conditions(status: &mut Self::Status) -> &mut Vec<Condition> {
        &mut status.conditions
    }
}

/// Metadata and spec changes of one object: only what differs from what was read.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ObjectPatch {
    /// The complete new finalizer list, when it changes.
    pub finalizers: Option<Vec<String>>,
    /// Labels to set (only those that differ).
    pub labels: BTreeMap<String, String>,
    /// Labels to remove (only those present).
    pub removed_labels: std::collections::BTreeSet<String>,
    /// Annotations to set.
    pub annotations: BTreeMap<String, String>,
    /// Annotations to remove (each must be present at the version the patch applies to).
    pub removed_annotations: std::collections::BTreeSet<String>,
    /// Spec fields to set, by JSON name (only those that differ).
    pub spec: BTreeMap<&'static str, Value>,
}

/// Escapes a key for a JSON pointer (RFC 6901).
fn pointer_segment(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

impl ObjectPatch {
    /// Adds or removes `finalizer` as `action` says, if that changes anything.
    pub fn finalizer(&mut self, meta: &ObjectMeta, finalizer: &str, action: FinalizerAction) {
        let current: Vec<String> = meta.finalizers.clone().unwrap_or_default();
        let present = current.iter().any(|existing| existing == finalizer);
        self.finalizers = match action {
            FinalizerAction::Add if !present => {
                Some(current.iter().cloned().chain([finalizer.to_string()]).collect())
            }
            FinalizerAction::Remove if present => {
                Some(current.iter().filter(|f| *f != finalizer).cloned().collect())
            }
            _ => return,
        };
    }

    /// Sets the `labels` that differ.
    pub fn labels(&mut self, meta: &ObjectMeta, labels: &BTreeMap<String, String>) {
        let current = meta.labels.as_ref();
        for (key, value) in labels {
            if current.and_then(|current| current.get(key)) != Some(value) {
                self.labels.insert(key.clone(), value.clone());
            }
        }
    }

    /// Removes the label `key` if present.
    pub fn remove_label(&mut self, meta: &ObjectMeta, key: &str) {
        if meta.labels.as_ref().is_some_and(|labels| labels.contains_key(key)) {
            self.removed_labels.insert(key.to_string());
        }
    }

    /// Sets `spec.<field>` to `value` when it differs from `current`.
    pub fn spec_field<T: Serialize + PartialEq>(
        &mut self,
        field: &'static str,
        current: Option<&T>,
        value: Option<&T>,
    ) {
        let Some(value) = value else { return };
        if current == Some(value) {
            return;
        }
        // Domain values always serialize; a failure would be a bug in a derive.
        if let Ok(value) = serde_json::to_value(value) {
            self.spec.insert(field, value);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.finalizers.is_none()
            && self.labels.is_empty()
            && self.removed_labels.is_empty()
            && self.annotations.is_empty()
            && self.removed_annotations.is_empty()
            && self.spec.is_empty()
    }

    /// True if the spec changes (the generation goes up).
    pub fn changes_spec(&self) -> bool {
        !self.spec.is_empty()
    }

    /// The patch as JSON-patch operations (RFC 6902) that apply only to the resourceVersion
    /// `read_version`: the first operation tests it.
    pub fn json_patch(&self, meta: &ObjectMeta) -> Value {
        let read = meta.resource_version.clone().unwrap_or_default();
        let mut operations = vec![json!({"op": "test", "path": "/metadata/resourceVersion", "value": read})];
        if let Some(finalizers) = &self.finalizers {
            operations.push(json!({"op": "add", "path": "/metadata/finalizers", "value": finalizers}));
        }
        if !self.labels.is_empty() && meta.labels.is_none() {
            operations.push(json!({"op": "add", "path": "/metadata/labels", "value": {}}));
        }
        for (key, value) in &self.labels {
            let path = format!("/metadata/labels/{}", pointer_segment(key));
            operations.push(json!({"op": "add", "path": path, "value": value}));
        }
        for key in &self.removed_labels {
            let path = format!("/metadata/labels/{}", pointer_segment(key));
            operations.push(json!({"op": "remove", "path": path}));
        }
        if !self.annotations.is_empty() && meta.annotations.is_none() {
            operations.push(json!({"op": "add", "path": "/metadata/annotations", "value": {}}));
        }
        for (key, value) in &self.annotations {
            let path = format!("/metadata/annotations/{}", pointer_segment(key));
            operations.push(json!({"op": "add", "path": path, "value": value}));
        }
        for key in &self.removed_annotations {
            let path = format!("/metadata/annotations/{}", pointer_segment(key));
            operations.push(json!({"op": "remove", "path": path}));
        }
        for (field, value) in &self.spec {
            let path = format!("/spec/{}", pointer_segment(field));
            operations.push(json!({"op": "add", "path": path, "value": value}));
        }
        Value::Array(operations)
    }

    /// Applies the patch to `object` as the apiserver applies [`ObjectPatch::json_patch`].
    pub fn apply_to<K: Serialize + DeserializeOwned + kube_core::Resource>(
        &self,
        object: &mut K,
    ) -> Result<(), serde_json::Error> {
        let meta = object.meta_mut();
        if let Some(finalizers) = &self.finalizers {
            meta.finalizers = Some(finalizers.clone());
        }
        if !self.labels.is_empty() {
            let labels = meta.labels.get_or_insert_with(BTreeMap::new);
            labels.extend(self.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        if let Some(labels) = meta.labels.as_mut() {
            labels.retain(|key, _| !self.removed_labels.contains(key));
        }
        if !self.annotations.is_empty() {
            let annotations = meta.annotations.get_or_insert_with(BTreeMap::new);
            annotations.extend(self.annotations.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        if let Some(annotations) = meta.annotations.as_mut() {
            annotations.retain(|key, _| !self.removed_annotations.contains(key));
        }
        if self.spec.is_empty() {
            return Ok(());
        }
        let mut value = serde_json::to_value(&*object)?;
        if let Some(spec) = value.get_mut("spec").and_then(Value::as_object_mut) {
            spec.extend(self.spec.iter().map(|(field, value)| (field.to_string(), value.clone())));
        }
        *object = serde_json::from_value(value)?;
        Ok(())
    }
}

/// The writes of one reconcile of a `K`.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan<K: Reconciled> {
    pub events: Vec<Event>,
    pub patch: ObjectPatch,
    /// The cluster's firewall child (clusters only; [`FirewallChild::Keep`] otherwise).
    pub child: FirewallChild,
    /// The new status, when it differs from the stored one and the object stays.
    pub status: Option<K::Status>,
    pub requeue: Requeue,
}

/// The status to write: none after the finalizer goes, none if it equals the stored one.
fn status_write<K: Reconciled>(
    object: &K,
    finalizer: FinalizerAction,
    status: &K::Status,
) -> Option<K::Status> {
    let keep = finalizer != FinalizerAction::Remove && object.status() != Some(status);
    keep.then(|| status.clone())
}

/// The plan of a MetalStackMachine reconcile.
pub fn machine(object: &MetalStackMachine, outcome: &MachineOutcome) -> Plan<MetalStackMachine> {
    machine_variant(object, outcome, Variant::Correct)
}

/// [`machine`], or the glue canary's plan (it never writes the status) for the explorer's
/// test.
#[doc(hidden)]
pub fn machine_variant(
    object: &MetalStackMachine,
    outcome: &MachineOutcome,
    variant: Variant,
) -> Plan<MetalStackMachine> {
    let mut patch = ObjectPatch::default();
    patch.finalizer(&object.metadata, MACHINE_FINALIZER, outcome.finalizer);
    patch.labels(&object.metadata, &outcome.labels);
    patch.spec_field("providerID", object.spec.provider_id.as_ref(), outcome.provider_id.as_ref());
    Plan {
        events: outcome.events.clone(),
        patch,
        child: FirewallChild::Keep,
        status: status_write(object, outcome.finalizer, &outcome.status)
            .filter(|_| variant != Variant::CanaryGlueLosesStatus),
        requeue: outcome.requeue,
    }
}

/// The plan of a MetalStackCluster reconcile.
pub fn cluster(object: &MetalStackCluster, outcome: &ClusterOutcome) -> Plan<MetalStackCluster> {
    let spec = &object.spec;
    let mut patch = ObjectPatch::default();
    patch.finalizer(&object.metadata, CLUSTER_FINALIZER, outcome.finalizer);
    patch.spec_field("nodeNetworkID", spec.node_network_id.as_ref(), outcome.node_network_id.as_ref());
    patch.spec_field("controlPlaneIP", spec.control_plane_ip.as_ref(), outcome.control_plane_ip.as_ref());
    patch.spec_field(
        "controlPlaneEndpoint",
        spec.control_plane_endpoint.as_ref(),
        outcome.control_plane_endpoint.as_ref(),
    );
    let status =
        if outcome.write_status { status_write(object, outcome.finalizer, &outcome.status) } else { None };
    Plan {
        events: outcome.events.clone(),
        patch,
        child: outcome.firewall.clone(),
        status,
        requeue: outcome.requeue,
    }
}

/// The plan of a MetalStackFirewall reconcile.
pub fn firewall(object: &MetalStackFirewall, outcome: &FirewallOutcome) -> Plan<MetalStackFirewall> {
    let mut patch = ObjectPatch::default();
    patch.finalizer(&object.metadata, FIREWALL_FINALIZER, outcome.finalizer);
    patch.spec_field("providerID", object.spec.provider_id.as_ref(), outcome.provider_id.as_ref());
    Plan {
        events: outcome.events.clone(),
        patch,
        child: FirewallChild::Keep,
        status: status_write(object, outcome.finalizer, &outcome.status),
        requeue: outcome.requeue,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(finalizers: &[&str], labels: Option<&[(&str, &str)]>) -> ObjectMeta {
        ObjectMeta {
            resource_version: Some("7".to_string()),
            finalizers: Some(finalizers.iter().map(|f| f.to_string()).collect()),
            labels: labels.map(|pairs| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn adding_a_present_finalizer_or_removing_an_absent_one_writes_nothing() {
        let mut patch = ObjectPatch::default();
        patch.finalizer(&meta(&["a"], None), "a", FinalizerAction::Add);
        patch.finalizer(&meta(&["a"], None), "b", FinalizerAction::Remove);
        patch.finalizer(&meta(&["a"], None), "a", FinalizerAction::Keep);
        assert!(patch.is_empty());
    }

    #[test]
    fn finalizers_of_others_are_kept() {
        let mut patch = ObjectPatch::default();
        patch.finalizer(&meta(&["other", "ours"], None), "ours", FinalizerAction::Remove);
        assert_eq!(patch.finalizers, Some(vec!["other".to_string()]));
    }

    #[test]
    fn the_json_patch_tests_the_read_version_escapes_keys_and_creates_a_missing_label_map() {
        let mut patch = ObjectPatch::default();
        let read = meta(&[], None);
        let labels = BTreeMap::from([("topology.kubernetes.io/zone".to_string(), "rack-1".to_string())]);
        patch.labels(&read, &labels);
        assert_eq!(
            patch.json_patch(&read),
            json!([
                {"op": "test", "path": "/metadata/resourceVersion", "value": "7"},
                {"op": "add", "path": "/metadata/labels", "value": {}},
                {"op": "add", "path": "/metadata/labels/topology.kubernetes.io~1zone", "value": "rack-1"},
            ])
        );
    }

    #[test]
    fn only_a_present_label_is_removed() {
        let mut patch = ObjectPatch::default();
        patch.remove_label(&meta(&[], None), "a/b");
        patch.remove_label(&meta(&[], Some(&[("c", "d")])), "a/b");
        assert!(patch.is_empty());
        patch.remove_label(&meta(&[], Some(&[("a/b", "true")])), "a/b");
        let operations = patch.json_patch(&meta(&[], Some(&[("a/b", "true")])));
        assert_eq!(operations[1], json!({"op": "remove", "path": "/metadata/labels/a~1b"}));
    }

    #[test]
    fn an_unchanged_spec_field_writes_nothing() {
        let mut patch = ObjectPatch::default();
        let id = "metal://mini-lab/abc".to_string();
        patch.spec_field("providerID", Some(&id), Some(&id));
        patch.spec_field::<String>("providerID", Some(&id), None);
        assert!(patch.is_empty());
    }

    #[test]
    fn applying_a_patch_to_an_object_does_what_its_json_patch_does() {
        let mut object = MetalStackMachine::new("m", Default::default());
        object.metadata = meta(&["other"], Some(&[("keep", "1"), ("drop", "1")]));
        let mut patch = ObjectPatch::default();
        patch.finalizer(&object.metadata, MACHINE_FINALIZER, FinalizerAction::Add);
        patch.labels(&object.metadata, &BTreeMap::from([("rack".to_string(), "rack-1".to_string())]));
        patch.remove_label(&object.metadata, "drop");
        let id = "metal://mini-lab/abc".to_string();
        patch.spec_field("providerID", object.spec.provider_id.as_ref(), Some(&id));
        patch.apply_to(&mut object).expect("applies");
        assert_eq!(
            object.metadata.finalizers,
            Some(vec!["other".to_string(), MACHINE_FINALIZER.to_string()])
        );
        let labels = object.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels.keys().collect::<Vec<_>>(), ["keep", "rack"]);
        assert_eq!(object.spec.provider_id, Some(id));
    }
}

//! The tags and labels that tie metal-stack resources to Kubernetes objects.
//!
//! metal-api has no idempotency key, so capms makes allocations idempotent itself: every
//! machine, firewall and IP it allocates carries tags naming the Kubernetes object (namespace,
//! name and UID), and every network carries the same as labels. Before allocating, a reconciler
//! looks for an allocation with the object's identity tags and adopts it.
//!
//! One cluster identity is used everywhere: `cluster.metal-stack.io/id=<namespace>.<name>`, on
//! machines, firewalls, IPs, the node network's labels and the placement tags (the Go provider
//! mixed the node network id and `<ns>.<name>`, defect D15). metal-ccm reads the same value as
//! `METAL_CLUSTER_ID`.

use std::collections::BTreeMap;
use std::fmt;

/// metal-stack's cluster id tag, read by metal-ccm.
pub const CLUSTER_ID: &str = "cluster.metal-stack.io/id";
/// The machine association of an IP (machine scope).
pub const MACHINE_ID: &str = "machine.metal-stack.io/id";
/// System labels metal-api adds to machine tags at allocation.
pub const MACHINE_RACK: &str = "machine.metal-stack.io/rack";
pub const MACHINE_CHASSIS: &str = "machine.metal-stack.io/chassis";
pub const MACHINE_ASN: &str = "machine.metal-stack.io/network.primary.asn";
/// The label of a partition's default external network.
pub const DEFAULT_EXTERNAL_NETWORK: &str = "network.metal-stack.io/default";
/// Kubernetes' well-known zone and hostname labels, also put on machines as tags.
pub const ZONE: &str = "topology.kubernetes.io/zone";
pub const HOSTNAME: &str = "kubernetes.io/hostname";

/// The prefix of capms's own keys (shared with the Go provider so users can migrate).
pub const PREFIX: &str = "metal-stack.infrastructure.cluster.x-k8s.io";
pub const CLUSTER_RESOURCE: &str = "metal-stack.infrastructure.cluster.x-k8s.io/cluster-resource";
pub const MACHINE_RESOURCE: &str = "metal-stack.infrastructure.cluster.x-k8s.io/machine-resource";
pub const FIREWALL_RESOURCE: &str = "metal-stack.infrastructure.cluster.x-k8s.io/firewall-resource";
pub const OBJECT_UID: &str = "metal-stack.infrastructure.cluster.x-k8s.io/uid";
pub const PURPOSE: &str = "metal-stack.infrastructure.cluster.x-k8s.io/purpose";

/// A Kubernetes object that owns metal-stack resources.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct ObjectRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl ObjectRef {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>, uid: impl Into<String>) -> Self {
        ObjectRef { namespace: namespace.into(), name: name.into(), uid: uid.into() }
    }

    /// `<namespace>.<name>`: the object's key in tag values. Namespaces and names are DNS
    /// labels or subdomains, so the first '.' after a namespace is unambiguous.
    pub fn key(&self) -> String {
        format!("{}.{}", self.namespace, self.name)
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Why a resource was allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Purpose {
    ControlPlane,
    Worker,
    Firewall,
    ControlPlaneIp,
    NodeNetwork,
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::ControlPlane => "control-plane",
            Purpose::Worker => "worker",
            Purpose::Firewall => "firewall",
            Purpose::ControlPlaneIp => "control-plane-ip",
            Purpose::NodeNetwork => "node-network",
        }
    }
}

/// `key=value`.
pub fn tag(key: &str, value: &str) -> String {
    format!("{key}={value}")
}

/// The machine association tag of an IP.
pub fn machine_id_tag(machine_id: &str) -> String {
    tag(MACHINE_ID, machine_id)
}

/// The cluster id tag, `cluster.metal-stack.io/id=<ns>.<name>`.
pub fn cluster_id_tag(cluster: &ObjectRef) -> String {
    tag(CLUSTER_ID, &cluster.key())
}

/// Splits `key=value` at the first '='. A plain word has no value.
pub fn split(tag: &str) -> (&str, Option<&str>) {
    match tag.split_once('=') {
        Some((key, value)) => (key, Some(value)),
        None => (tag, None),
    }
}

/// The value of the first tag with `key`, if any.
pub fn value<'a>(tags: &'a [String], key: &str) -> Option<&'a str> {
    tags.iter().find_map(|tag| match split(tag) {
        (tag_key, Some(value)) if tag_key == key => Some(value),
        _ => None,
    })
}

/// The tags of a machine or firewall allocated for `object` in `cluster`.
///
/// `resource_key` is [`MACHINE_RESOURCE`] or [`FIREWALL_RESOURCE`].
pub fn allocation_tags(
    cluster: &ObjectRef,
    object: &ObjectRef,
    resource_key: &str,
    purpose: Purpose,
) -> Vec<String> {
    vec![
        cluster_id_tag(cluster),
        tag(CLUSTER_RESOURCE, &cluster.key()),
        tag(resource_key, &object.key()),
        tag(OBJECT_UID, &object.uid),
        tag(PURPOSE, purpose.as_str()),
    ]
}

/// The tags that find the allocation made for exactly this object (this UID): the adoption
/// filter. An object deleted and re-created under the same name has a new UID and does not
/// adopt its predecessor's machine, which may still be on its way out.
pub fn identity_tags(object: &ObjectRef, resource_key: &str) -> Vec<String> {
    vec![tag(resource_key, &object.key()), tag(OBJECT_UID, &object.uid)]
}

/// The tags a resource must still carry before capms frees it: cluster and object, by name.
/// The UID is left out on purpose: `clusterctl move` re-creates objects with new UIDs, and the
/// moved object must still be able to free what its predecessor allocated.
pub fn ownership_tags(cluster: &ObjectRef, object: &ObjectRef, resource_key: &str) -> Vec<String> {
    vec![cluster_id_tag(cluster), tag(resource_key, &object.key())]
}

/// The tags of an IP allocated for a cluster (the control-plane endpoint).
pub fn cluster_ip_tags(cluster: &ObjectRef, purpose: Purpose) -> Vec<String> {
    vec![
        cluster_id_tag(cluster),
        tag(CLUSTER_RESOURCE, &cluster.key()),
        tag(OBJECT_UID, &cluster.uid),
        tag(PURPOSE, purpose.as_str()),
    ]
}

/// The tags an IP must still carry before capms frees it as the cluster's control-plane IP
/// (without the UID, for the same reason as [`ownership_tags`]).
pub fn cluster_ip_ownership_tags(cluster: &ObjectRef, purpose: Purpose) -> Vec<String> {
    vec![cluster_id_tag(cluster), tag(CLUSTER_RESOURCE, &cluster.key()), tag(PURPOSE, purpose.as_str())]
}

/// The labels a node network must still carry before capms frees it (without the UID). A
/// network the user provided has none of them and is never freed.
pub fn network_ownership_labels(cluster: &ObjectRef) -> BTreeMap<String, String> {
    BTreeMap::from([
        (CLUSTER_ID.to_string(), cluster.key()),
        (CLUSTER_RESOURCE.to_string(), cluster.key()),
        (PURPOSE.to_string(), Purpose::NodeNetwork.as_str().to_string()),
    ])
}

/// The labels of a cluster's node network (networks carry labels, not tags).
pub fn network_labels(cluster: &ObjectRef) -> BTreeMap<String, String> {
    BTreeMap::from([
        (CLUSTER_ID.to_string(), cluster.key()),
        (CLUSTER_RESOURCE.to_string(), cluster.key()),
        (OBJECT_UID.to_string(), cluster.uid.clone()),
        (PURPOSE.to_string(), Purpose::NodeNetwork.as_str().to_string()),
    ])
}

/// The placement tags that spread a cluster's machines over racks.
pub fn placement_tags(cluster: &ObjectRef) -> Vec<String> {
    vec![cluster_id_tag(cluster)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster() -> ObjectRef {
        ObjectRef::new("default", "prod", "uid-cluster")
    }

    #[test]
    fn one_cluster_identity_everywhere() {
        let cluster = cluster();
        let machine = ObjectRef::new("default", "prod-md-0-x", "uid-machine");
        let expected = "cluster.metal-stack.io/id=default.prod";
        assert!(
            allocation_tags(&cluster, &machine, MACHINE_RESOURCE, Purpose::Worker)
                .contains(&expected.to_string())
        );
        assert!(cluster_ip_tags(&cluster, Purpose::ControlPlaneIp).contains(&expected.to_string()));
        assert_eq!(placement_tags(&cluster), vec![expected.to_string()]);
        assert_eq!(network_labels(&cluster).get(CLUSTER_ID).map(String::as_str), Some("default.prod"));
    }

    #[test]
    fn identity_includes_uid_and_ownership_does_not() {
        let machine = ObjectRef::new("ns", "m", "uid-1");
        let tags = allocation_tags(&cluster(), &machine, MACHINE_RESOURCE, Purpose::ControlPlane);
        for identity in identity_tags(&machine, MACHINE_RESOURCE) {
            assert!(tags.contains(&identity));
        }
        for owner in ownership_tags(&cluster(), &machine, MACHINE_RESOURCE) {
            assert!(tags.contains(&owner));
            assert!(!owner.contains("uid-1"));
        }
        let moved = ObjectRef::new("ns", "m", "uid-2");
        assert_ne!(identity_tags(&moved, MACHINE_RESOURCE), identity_tags(&machine, MACHINE_RESOURCE));
        assert_eq!(
            ownership_tags(&cluster(), &moved, MACHINE_RESOURCE),
            ownership_tags(&cluster(), &machine, MACHINE_RESOURCE)
        );
    }

    #[test]
    fn split_and_value() {
        assert_eq!(split("a=b=c"), ("a", Some("b=c")));
        assert_eq!(split("a="), ("a", Some("")));
        assert_eq!(split("plain"), ("plain", None));
        let tags = vec!["x=1".to_string(), "machine.metal-stack.io/rack=r1".to_string()];
        assert_eq!(value(&tags, MACHINE_RACK), Some("r1"));
        assert_eq!(value(&tags, MACHINE_CHASSIS), None);
    }
}

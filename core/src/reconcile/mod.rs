//! The three pure reconcilers: cluster, machine and firewall.
//!
//! A reconcile takes the object, the facts about its owners that the caller gathered, the
//! current time and a jitter value, talks to metal-stack only through
//! [`MetalBackend`](crate::MetalBackend), and returns an outcome value: the new status, spec
//! write-backs, labels, the finalizer decision, events and when to look again. The caller
//! (the operator or the world simulator) applies the outcome; core never touches Kubernetes,
//! never reads a clock and never draws random numbers.
//!
//! Every allocation is idempotent (see [`crate::tags`]): before allocating, a reconciler looks
//! for an allocation carrying the object's identity tags and adopts it, so a crash or a lost
//! answer between allocate and status write never creates a second machine. Nothing is freed
//! unless it is allocated to the cluster's project and still carries the object's ownership
//! tags, and nothing is freed while the cluster is paused or the object is deleted for
//! `clusterctl move`.

pub mod backoff;
pub mod cache;
pub mod cluster;
pub mod events;
pub mod facts;
pub mod firewall;
pub mod machine;

mod allocation;
mod deletion;
mod lifecycle;
mod status;

pub use backoff::{Backoff, requeue_after};
pub use cache::{CacheAccess, MachineCache, RefreshPolicy};
pub use cluster::{ClusterInput, ClusterOutcome, FirewallChild, reconcile_cluster};
pub use events::{Event, EventReason, EventType};
pub use facts::{BootstrapData, CapiMachineFacts, ClusterFacts, MetalClusterFacts};
pub use firewall::{FirewallInput, FirewallOutcome, reconcile_firewall};
pub use machine::{MachineInput, MachineOutcome, reconcile_machine};

use std::time::Duration;

/// What happens to the object's finalizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinalizerAction {
    /// Leave it as it is.
    #[default]
    Keep,
    /// Add it (before anything is allocated).
    Add,
    /// Remove it: everything of this object is freed (or deliberately left, for a move).
    Remove,
}

/// When to reconcile again, besides watch events.
pub type Requeue = Option<Duration>;

/// The annotations and flags every reconcile honours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Control {
    /// `Cluster.spec.paused` or the object's `cluster.x-k8s.io/paused` annotation.
    pub paused: bool,
    /// The object carries `clusterctl.cluster.x-k8s.io/delete-for-move`.
    pub delete_for_move: bool,
    /// The object has a deletion timestamp.
    pub deleting: bool,
    /// The object carries capms's finalizer.
    pub has_finalizer: bool,
}

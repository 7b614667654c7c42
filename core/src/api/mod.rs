//! The Kubernetes API capms serves (`infrastructure.cluster.x-k8s.io/v1alpha1`) and the
//! Cluster API objects it reads (`cluster.x-k8s.io/v1beta2`).
//!
//! Served kinds, all namespaced and in the category `cluster-api`:
//!
//! | kind | short | status | module |
//! |---|---|---|---|
//! | [`MetalStackCluster`] | `msc` | yes | [`cluster`] |
//! | [`MetalStackClusterTemplate`] | `msct` | no | [`cluster`] |
//! | [`MetalStackMachine`] | `msm` | yes | [`machine`] |
//! | [`MetalStackMachineTemplate`] | `msmt` | no | [`machine`] |
//! | [`MetalStackFirewall`] | `msfw` | yes | [`firewall`] |
//!
//! Design notes:
//! - The types derive `kube_derive::CustomResource` against `kube-core` directly, not the
//!   `kube` facade: a `kube` dependency unifies its features across the workspace, so an
//!   operator enabling `kube/client` would drag kube-client, tokio and hyper into core.
//! - Immutability rules (`self.spec.x == oldSelf.spec.x`) sit on the root object, not on the
//!   spec structs, because the templates embed the same spec structs: ClusterClass topology
//!   dry-runs server-side-apply changed templates, and a transition rule inside the template
//!   would make that dry-run fail (contract item M10). Format rules (patterns, IP checks) sit
//!   on the fields and therefore apply to templates too.
//! - Install the CRDs from [`crds::all`]: it adds the contract and provider labels that the
//!   derived `Kind::crd()` alone lacks.
//! - The CAPI kinds in [`capi`] are hand-written, lenient subsets (no schema, unknown fields
//!   ignored) that implement `kube_core::Resource`, so the operator can watch them.

pub mod capi;
pub mod cluster;
pub mod common;
pub mod conditions;
pub mod crds;
pub mod firewall;
pub mod machine;

pub use cluster::{
    MetalStackCluster, MetalStackClusterSpec, MetalStackClusterStatus, MetalStackClusterTemplate,
    MetalStackClusterTemplateResource, MetalStackClusterTemplateSpec,
};
pub use common::{
    ApiEndpoint, Initialization, LocalSecretReference, MachineAddress, MachineAddressType, Phase,
    TemplateObjectMeta,
};
pub use firewall::{
    FirewallEgressRule, FirewallIngressRule, FirewallProtocol, MetalStackFirewall, MetalStackFirewallSpec,
    MetalStackFirewallStatus, MetalStackFirewallTemplateSpec,
};
pub use machine::{
    MetalStackMachine, MetalStackMachineSpec, MetalStackMachineStatus, MetalStackMachineTemplate,
    MetalStackMachineTemplateResource, MetalStackMachineTemplateSpec,
};

/// The API group of every kind capms serves.
pub const GROUP: &str = "infrastructure.cluster.x-k8s.io";
/// The one served (and stored) version.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` of the served kinds.
pub const API_VERSION: &str = "infrastructure.cluster.x-k8s.io/v1alpha1";
/// The `kubectl get cluster-api` category every served kind is in.
pub const CATEGORY: &str = "cluster-api";

/// CRD label naming the CAPI contract; CAPI core refuses to reconcile a provider without it.
pub const CONTRACT_LABEL: &str = "cluster.x-k8s.io/v1beta2";
/// The API versions that implement the contract (`_`-joined, the last one is used).
pub const CONTRACT_LABEL_VALUE: &str = VERSION;
/// CRD label naming the provider, as `clusterctl init --infrastructure metalstack` sets it.
pub const PROVIDER_LABEL: &str = "cluster.x-k8s.io/provider";
/// Value of [`PROVIDER_LABEL`].
pub const PROVIDER_LABEL_VALUE: &str = "infrastructure-metalstack";

/// Finalizer on a MetalStackCluster: node network, control-plane IP and firewall are freed.
pub const CLUSTER_FINALIZER: &str = "metal-stack.infrastructure.cluster.x-k8s.io/cluster";
/// Finalizer on a MetalStackMachine: the metal-stack machine is freed.
pub const MACHINE_FINALIZER: &str = "metal-stack.infrastructure.cluster.x-k8s.io/machine";
/// Finalizer on a MetalStackFirewall: the metal-stack firewall is freed.
pub const FIREWALL_FINALIZER: &str = "metal-stack.infrastructure.cluster.x-k8s.io/firewall";

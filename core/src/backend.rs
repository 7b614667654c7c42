//! The one door to metal-stack.
//!
//! Reconcilers talk to metal-api only through [`MetalBackend`]. Two implementations exist: the
//! HTTP client in `capms-backend-metal` and the simulated datacenter in `capms-backend-sim`; the
//! contract suite in the `tests` crate runs the same tests against both.
//!
//! Semantics every implementation follows (they are metal-api's):
//! - allocations are not idempotent: a repeated allocate allocates again. Callers tag every
//!   allocation and look for it by tags first ([`crate::tags`]);
//! - `free_machine` is unconditional: it frees whatever the machine is allocated to. Callers
//!   check project and tags right before they free;
//! - IPs of a freed machine are released asynchronously, so freeing the network right after
//!   the last machine fails with a transient error for a while;
//! - a lost response is a transient error with [`BackendError::outcome_unknown`] set.

use crate::error::BackendError;
use crate::metal::{
    FirewallAllocateRequest, Image, Ip, IpAllocateRequest, IpQuery, Machine, MachineAllocateRequest,
    MachineQuery, Network, NetworkAllocateRequest, NetworkQuery, Partition, Project, Size,
};
use async_trait::async_trait;

/// The result of a metal-stack operation.
pub type BackendResult<T> = Result<T, BackendError>;

/// metal-api v1, as far as a Cluster API provider needs it. Object safe: use it as
/// `Arc<dyn MetalBackend>` or `&dyn MetalBackend`.
#[async_trait]
pub trait MetalBackend: Send + Sync {
    /// `POST /v1/machine/allocate`: picks a waiting machine (or the pinned one) and allocates it.
    /// Answers before the machine is installed.
    async fn allocate_machine(&self, request: &MachineAllocateRequest) -> BackendResult<Machine>;
    /// `GET /v1/machine/{id}`.
    async fn get_machine(&self, machine_id: &str) -> BackendResult<Machine>;
    /// `POST /v1/machine/find`.
    async fn find_machines(&self, query: &MachineQuery) -> BackendResult<Vec<Machine>>;
    /// `DELETE /v1/machine/{id}/free`: answers with the state before the free. Unconditional.
    async fn free_machine(&self, machine_id: &str) -> BackendResult<Machine>;

    /// `POST /v1/firewall/allocate`.
    async fn allocate_firewall(&self, request: &FirewallAllocateRequest) -> BackendResult<Machine>;
    /// `GET /v1/firewall/{id}`: not found for a machine that is not a firewall.
    async fn get_firewall(&self, machine_id: &str) -> BackendResult<Machine>;
    /// `POST /v1/firewall/find`: a machine find restricted to role firewall. Firewalls are
    /// freed with [`MetalBackend::free_machine`].
    async fn find_firewalls(&self, query: &MachineQuery) -> BackendResult<Vec<Machine>>;

    /// `POST /v1/network/allocate`: a child of the partition's private super network.
    async fn allocate_network(&self, request: &NetworkAllocateRequest) -> BackendResult<Network>;
    /// `GET /v1/network/{id}`.
    async fn get_network(&self, network_id: &str) -> BackendResult<Network>;
    /// `POST /v1/network/find`.
    async fn find_networks(&self, query: &NetworkQuery) -> BackendResult<Vec<Network>>;
    /// `DELETE /v1/network/free/{id}`: fails while IPs remain in the network.
    async fn free_network(&self, network_id: &str) -> BackendResult<Network>;

    /// `POST /v1/ip/allocate`: any free address of the network.
    async fn allocate_ip(&self, request: &IpAllocateRequest) -> BackendResult<Ip>;
    /// `POST /v1/ip/allocate/{ip}`: exactly this address.
    async fn allocate_specific_ip(&self, address: &str, request: &IpAllocateRequest) -> BackendResult<Ip>;
    /// `GET /v1/ip/{address}`.
    async fn get_ip(&self, address: &str) -> BackendResult<Ip>;
    /// `POST /v1/ip/find`.
    async fn find_ips(&self, query: &IpQuery) -> BackendResult<Vec<Ip>>;
    /// `DELETE /v1/ip/free/{address}`: refused for IPs attached to a machine.
    async fn free_ip(&self, address: &str) -> BackendResult<Ip>;

    /// `GET /v1/partition/{id}`.
    async fn get_partition(&self, partition_id: &str) -> BackendResult<Partition>;
    /// `GET /v1/partition`.
    async fn list_partitions(&self) -> BackendResult<Vec<Partition>>;
    /// `GET /v1/size/{id}`.
    async fn get_size(&self, size_id: &str) -> BackendResult<Size>;
    /// `GET /v1/size`.
    async fn list_sizes(&self) -> BackendResult<Vec<Size>>;
    /// `GET /v1/image/{id}`: partial ids resolve to the newest matching version.
    async fn get_image(&self, image_id: &str) -> BackendResult<Image>;
    /// `GET /v1/image`.
    async fn list_images(&self) -> BackendResult<Vec<Image>>;
    /// `GET /v1/project/{id}`.
    async fn get_project(&self, project_id: &str) -> BackendResult<Project>;
}

/// Calls `$apply!` with every [`MetalBackend`] method: its arguments, answer type, operation
/// and how its request is described (`|r| r.machine(request)`: `r` is whatever the wrapper
/// binds, with the methods `machine`, `firewall`, `id`, `plain`, `address_and` and `none`; the
/// trace recorder's `Redaction`, the operator's allocation scope). The one list of the methods:
/// every wrapper (the trace recorder and replayer, the glue's gate, capms-manager's metrics,
/// the simulator's interleaving) is built from it, so adding a method to [`MetalBackend`] and
/// here reaches all of them.
#[macro_export]
macro_rules! with_backend_methods {
    ($apply:ident) => {
        $apply! {
            fn allocate_machine(request: &$crate::metal::MachineAllocateRequest) -> $crate::metal::Machine, AllocateMachine, |r| r.machine(request);
            fn get_machine(machine_id: &str) -> $crate::metal::Machine, FindMachine, |r| r.id(machine_id);
            fn find_machines(query: &$crate::metal::MachineQuery) -> Vec<$crate::metal::Machine>, FindMachines, |r| r.plain(query);
            fn free_machine(machine_id: &str) -> $crate::metal::Machine, FreeMachine, |r| r.id(machine_id);
            fn allocate_firewall(request: &$crate::metal::FirewallAllocateRequest) -> $crate::metal::Machine, AllocateFirewall, |r| r.firewall(request);
            fn get_firewall(machine_id: &str) -> $crate::metal::Machine, FindFirewall, |r| r.id(machine_id);
            fn find_firewalls(query: &$crate::metal::MachineQuery) -> Vec<$crate::metal::Machine>, FindFirewalls, |r| r.plain(query);
            fn allocate_network(request: &$crate::metal::NetworkAllocateRequest) -> $crate::metal::Network, AllocateNetwork, |r| r.plain(request);
            fn get_network(network_id: &str) -> $crate::metal::Network, FindNetwork, |r| r.id(network_id);
            fn find_networks(query: &$crate::metal::NetworkQuery) -> Vec<$crate::metal::Network>, FindNetworks, |r| r.plain(query);
            fn free_network(network_id: &str) -> $crate::metal::Network, FreeNetwork, |r| r.id(network_id);
            fn allocate_ip(request: &$crate::metal::IpAllocateRequest) -> $crate::metal::Ip, AllocateIp, |r| r.plain(request);
            fn allocate_specific_ip(address: &str, request: &$crate::metal::IpAllocateRequest) -> $crate::metal::Ip, AllocateSpecificIp, |r| r.address_and(address, request);
            fn get_ip(address: &str) -> $crate::metal::Ip, FindIp, |r| r.id(address);
            fn find_ips(query: &$crate::metal::IpQuery) -> Vec<$crate::metal::Ip>, FindIps, |r| r.plain(query);
            fn free_ip(address: &str) -> $crate::metal::Ip, FreeIp, |r| r.id(address);
            fn get_partition(partition_id: &str) -> $crate::metal::Partition, FindPartition, |r| r.id(partition_id);
            fn list_partitions() -> Vec<$crate::metal::Partition>, ListPartitions, |r| r.none();
            fn get_size(size_id: &str) -> $crate::metal::Size, FindSize, |r| r.id(size_id);
            fn list_sizes() -> Vec<$crate::metal::Size>, ListSizes, |r| r.none();
            fn get_image(image_id: &str) -> $crate::metal::Image, FindImage, |r| r.id(image_id);
            fn list_images() -> Vec<$crate::metal::Image>, ListImages, |r| r.none();
            fn get_project(project_id: &str) -> $crate::metal::Project, FindProject, |r| r.id(project_id);
        }
    };
}

//! [`MetalBackend`] over metal-api v1: one method per operation, each a path, a wire body and
//! a mapping of the answer.

use crate::client::MetalClient;
use crate::decode::{all_to_domain, to_domain};
use async_trait::async_trait;
use capms_core::backend::BackendResult;
use capms_core::metal::{
    FirewallAllocateRequest, Image, Ip, IpAllocateRequest, IpQuery, Machine, MachineAllocateRequest,
    MachineQuery, Network, NetworkAllocateRequest, NetworkQuery, Partition, Project, Size,
};
use capms_core::{BackendError, ErrorKind, MetalBackend, Operation, wire};
use reqwest::Method;

/// For calls without a body.
const NO_BODY: Option<&()> = None;

/// An id as a path segment. Empty ids would address the list route (`GET /v1/machine`), and
/// `.`/`..` would be resolved away by URL normalisation: both are refused before sending.
fn id(operation: Operation, value: &str) -> BackendResult<&str> {
    if value.is_empty() || value == "." || value == ".." {
        let message = format!("invalid id {value:?}");
        return Err(BackendError::new(ErrorKind::Permanent, operation, message));
    }
    Ok(value)
}

impl MetalClient {
    async fn get_one<W, D>(&self, operation: Operation, segments: &[&str]) -> BackendResult<D>
    where
        W: serde::de::DeserializeOwned,
        D: TryFrom<W, Error = wire::WireError>,
    {
        let wire: W = self.call(operation, Method::GET, segments, NO_BODY).await?;
        to_domain(operation, wire)
    }

    async fn get_all<W, D>(&self, operation: Operation, segments: &[&str]) -> BackendResult<Vec<D>>
    where
        W: serde::de::DeserializeOwned,
        D: TryFrom<W, Error = wire::WireError>,
    {
        let wires: Vec<W> = self.call(operation, Method::GET, segments, NO_BODY).await?;
        all_to_domain(operation, wires)
    }

    async fn post_one<B, W, D>(&self, operation: Operation, segments: &[&str], body: &B) -> BackendResult<D>
    where
        B: serde::Serialize + Sync,
        W: serde::de::DeserializeOwned,
        D: TryFrom<W, Error = wire::WireError>,
    {
        let wire: W = self.call(operation, Method::POST, segments, Some(body)).await?;
        to_domain(operation, wire)
    }

    async fn post_all<B, W, D>(
        &self,
        operation: Operation,
        segments: &[&str],
        body: &B,
    ) -> BackendResult<Vec<D>>
    where
        B: serde::Serialize + Sync,
        W: serde::de::DeserializeOwned,
        D: TryFrom<W, Error = wire::WireError>,
    {
        let wires: Vec<W> = self.call(operation, Method::POST, segments, Some(body)).await?;
        all_to_domain(operation, wires)
    }

    async fn delete_one<W, D>(&self, operation: Operation, segments: &[&str]) -> BackendResult<D>
    where
        W: serde::de::DeserializeOwned,
        D: TryFrom<W, Error = wire::WireError>,
    {
        let wire: W = self.call(operation, Method::DELETE, segments, NO_BODY).await?;
        to_domain(operation, wire)
    }
}

#[async_trait]
impl MetalBackend for MetalClient {
    async fn allocate_machine(&self, request: &MachineAllocateRequest) -> BackendResult<Machine> {
        let body = wire::MachineAllocateRequest::from(request);
        self.post_one::<_, wire::MachineResponse, _>(
            Operation::AllocateMachine,
            &["machine", "allocate"],
            &body,
        )
        .await
    }

    async fn get_machine(&self, machine_id: &str) -> BackendResult<Machine> {
        let op = Operation::FindMachine;
        self.get_one::<wire::MachineResponse, _>(op, &["machine", id(op, machine_id)?]).await
    }

    async fn find_machines(&self, query: &MachineQuery) -> BackendResult<Vec<Machine>> {
        let body = wire::MachineFindRequest::from(query);
        self.post_all::<_, wire::MachineResponse, _>(Operation::FindMachines, &["machine", "find"], &body)
            .await
    }

    async fn free_machine(&self, machine_id: &str) -> BackendResult<Machine> {
        let op = Operation::FreeMachine;
        self.delete_one::<wire::MachineResponse, _>(op, &["machine", id(op, machine_id)?, "free"]).await
    }

    async fn allocate_firewall(&self, request: &FirewallAllocateRequest) -> BackendResult<Machine> {
        let body = wire::FirewallCreateRequest::from(request);
        self.post_one::<_, wire::FirewallResponse, _>(
            Operation::AllocateFirewall,
            &["firewall", "allocate"],
            &body,
        )
        .await
    }

    async fn get_firewall(&self, machine_id: &str) -> BackendResult<Machine> {
        let op = Operation::FindFirewall;
        self.get_one::<wire::FirewallResponse, _>(op, &["firewall", id(op, machine_id)?]).await
    }

    async fn find_firewalls(&self, query: &MachineQuery) -> BackendResult<Vec<Machine>> {
        let body = wire::FirewallFindRequest::from(query);
        self.post_all::<_, wire::FirewallResponse, _>(Operation::FindFirewalls, &["firewall", "find"], &body)
            .await
    }

    async fn allocate_network(&self, request: &NetworkAllocateRequest) -> BackendResult<Network> {
        let body = wire::NetworkAllocateRequest::from(request);
        self.post_one::<_, wire::NetworkResponse, _>(
            Operation::AllocateNetwork,
            &["network", "allocate"],
            &body,
        )
        .await
    }

    async fn get_network(&self, network_id: &str) -> BackendResult<Network> {
        let op = Operation::FindNetwork;
        self.get_one::<wire::NetworkResponse, _>(op, &["network", id(op, network_id)?]).await
    }

    async fn find_networks(&self, query: &NetworkQuery) -> BackendResult<Vec<Network>> {
        let body = wire::NetworkFindRequest::from(query);
        self.post_all::<_, wire::NetworkResponse, _>(Operation::FindNetworks, &["network", "find"], &body)
            .await
    }

    async fn free_network(&self, network_id: &str) -> BackendResult<Network> {
        let op = Operation::FreeNetwork;
        self.delete_one::<wire::NetworkResponse, _>(op, &["network", "free", id(op, network_id)?]).await
    }

    async fn allocate_ip(&self, request: &IpAllocateRequest) -> BackendResult<Ip> {
        let body = wire::IpAllocateRequest::from(request);
        self.post_one::<_, wire::IpResponse, _>(Operation::AllocateIp, &["ip", "allocate"], &body).await
    }

    async fn allocate_specific_ip(&self, address: &str, request: &IpAllocateRequest) -> BackendResult<Ip> {
        let op = Operation::AllocateSpecificIp;
        let body = wire::IpAllocateRequest::from(request);
        self.post_one::<_, wire::IpResponse, _>(op, &["ip", "allocate", id(op, address)?], &body).await
    }

    async fn get_ip(&self, address: &str) -> BackendResult<Ip> {
        let op = Operation::FindIp;
        self.get_one::<wire::IpResponse, _>(op, &["ip", id(op, address)?]).await
    }

    async fn find_ips(&self, query: &IpQuery) -> BackendResult<Vec<Ip>> {
        let body = wire::IpFindRequest::from(query);
        self.post_all::<_, wire::IpResponse, _>(Operation::FindIps, &["ip", "find"], &body).await
    }

    async fn free_ip(&self, address: &str) -> BackendResult<Ip> {
        let op = Operation::FreeIp;
        self.delete_one::<wire::IpResponse, _>(op, &["ip", "free", id(op, address)?]).await
    }

    async fn get_partition(&self, partition_id: &str) -> BackendResult<Partition> {
        let op = Operation::FindPartition;
        self.get_one::<wire::PartitionResponse, _>(op, &["partition", id(op, partition_id)?]).await
    }

    async fn list_partitions(&self) -> BackendResult<Vec<Partition>> {
        self.get_all::<wire::PartitionResponse, _>(Operation::ListPartitions, &["partition"]).await
    }

    async fn get_size(&self, size_id: &str) -> BackendResult<Size> {
        let op = Operation::FindSize;
        self.get_one::<wire::SizeResponse, _>(op, &["size", id(op, size_id)?]).await
    }

    async fn list_sizes(&self) -> BackendResult<Vec<Size>> {
        self.get_all::<wire::SizeResponse, _>(Operation::ListSizes, &["size"]).await
    }

    async fn get_image(&self, image_id: &str) -> BackendResult<Image> {
        let op = Operation::FindImage;
        self.get_one::<wire::ImageResponse, _>(op, &["image", id(op, image_id)?]).await
    }

    async fn list_images(&self) -> BackendResult<Vec<Image>> {
        self.get_all::<wire::ImageResponse, _>(Operation::ListImages, &["image"]).await
    }

    async fn get_project(&self, project_id: &str) -> BackendResult<Project> {
        let op = Operation::FindProject;
        self.get_one::<wire::ProjectResponse, _>(op, &["project", id(op, project_id)?]).await
    }
}

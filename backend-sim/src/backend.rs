//! [`SimBackend`]: the simulated datacenter behind the `MetalBackend` trait.

use crate::datacenter::Datacenter;
use crate::lag::{Write, ip_summary, machine_summary, network_summary};
use crate::sim::Sim;
use async_trait::async_trait;
use capms_core::backend::BackendResult;
use capms_core::metal::{
    FirewallAllocateRequest, Image, Ip, IpAllocateRequest, IpQuery, Machine, MachineAllocateRequest,
    MachineQuery, MachineRole, Network, NetworkAllocateRequest, NetworkQuery, Partition, Project, Size,
};
use capms_core::{BackendError, MetalBackend, Operation};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// How a caller experiences the latency of an answer.
pub trait LatencyModel: Send + Sync + fmt::Debug {
    /// Waits `latency` of virtual time before the answer is delivered.
    fn wait(&self, sim: &Sim, latency: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// The default: the call itself moves the virtual clock forward by its latency. Right for a
/// single caller; a world simulator with concurrent callers plugs in its own scheduler.
#[derive(Debug, Clone, Copy, Default)]
pub struct AdvanceClock;

impl LatencyModel for AdvanceClock {
    fn wait(&self, sim: &Sim, latency: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        if !latency.is_zero() {
            sim.advance(latency);
        }
        Box::pin(std::future::ready(()))
    }
}

/// Answers at once and leaves the clock alone: for a datacenter whose clock is driven from
/// outside (the HTTP server following the wall clock), where a call's latency is real.
#[derive(Debug, Clone, Copy, Default)]
pub struct Immediate;

impl LatencyModel for Immediate {
    fn wait(&self, _sim: &Sim, _latency: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(std::future::ready(()))
    }
}

/// A [`MetalBackend`] answered by a simulated datacenter, with metal-api's rules, errors and
/// asynchrony, and the datacenter's faults.
#[derive(Clone, Debug)]
pub struct SimBackend {
    sim: Sim,
    latency: Arc<dyn LatencyModel>,
}

impl SimBackend {
    pub fn new(sim: Sim) -> Self {
        SimBackend { sim, latency: Arc::new(AdvanceClock) }
    }

    /// Replaces how latency is waited for.
    pub fn with_latency_model(mut self, latency: Arc<dyn LatencyModel>) -> Self {
        self.latency = latency;
        self
    }

    /// The datacenter behind this backend.
    pub fn sim(&self) -> &Sim {
        &self.sim
    }

    /// A read (or anything that cannot take effect late).
    async fn run<T: Send>(
        &self,
        operation: Operation,
        describe: String,
        run: impl FnOnce(&mut Datacenter) -> Result<T, BackendError> + Send,
        summarize: impl FnOnce(&T) -> String + Send,
    ) -> BackendResult<T> {
        self.call(operation, describe, None, run, summarize).await
    }

    /// A write; `late` is its owned form, for when it takes effect after the client gave up.
    async fn write<T: Send>(
        &self,
        late: Write,
        describe: String,
        run: impl FnOnce(&mut Datacenter) -> Result<T, BackendError> + Send,
        summarize: impl FnOnce(&T) -> String + Send,
    ) -> BackendResult<T> {
        let operation = late.operation();
        self.call(operation, describe, Some(late), run, summarize).await
    }

    async fn call<T: Send>(
        &self,
        operation: Operation,
        describe: String,
        late: Option<Write>,
        run: impl FnOnce(&mut Datacenter) -> Result<T, BackendError> + Send,
        summarize: impl FnOnce(&T) -> String + Send,
    ) -> BackendResult<T> {
        let (result, latency) =
            self.sim.with(|datacenter| datacenter.call(operation, &describe, late, run, summarize));
        self.latency.wait(&self.sim, latency).await;
        result
    }
}

fn count<Items: AsRef<[Item]>, Item>(items: &Items) -> String {
    format!("{} found", items.as_ref().len())
}

#[async_trait]
impl MetalBackend for SimBackend {
    async fn allocate_machine(&self, request: &MachineAllocateRequest) -> BackendResult<Machine> {
        let operation = Operation::AllocateMachine;
        let run = |dc: &mut Datacenter| dc.allocate(operation, request, MachineRole::Machine, None);
        let late = Write::AllocateMachine(request.clone());
        self.write(late, format!("{request:?}"), run, machine_summary).await
    }

    async fn get_machine(&self, machine_id: &str) -> BackendResult<Machine> {
        let operation = Operation::FindMachine;
        let run = |dc: &mut Datacenter| dc.get_machine(operation, machine_id);
        self.run(operation, machine_id.to_string(), run, machine_summary).await
    }

    async fn find_machines(&self, query: &MachineQuery) -> BackendResult<Vec<Machine>> {
        let run = |dc: &mut Datacenter| Ok(dc.find_machines(query));
        self.run(Operation::FindMachines, format!("{query:?}"), run, count).await
    }

    async fn free_machine(&self, machine_id: &str) -> BackendResult<Machine> {
        let run = |dc: &mut Datacenter| dc.free_machine(machine_id);
        let late = Write::FreeMachine(machine_id.to_string());
        self.write(late, machine_id.to_string(), run, machine_summary).await
    }

    async fn allocate_firewall(&self, request: &FirewallAllocateRequest) -> BackendResult<Machine> {
        let operation = Operation::AllocateFirewall;
        let run = |dc: &mut Datacenter| {
            dc.allocate(operation, &request.machine, MachineRole::Firewall, Some(&request.rules))
        };
        let late = Write::AllocateFirewall(request.clone());
        self.write(late, format!("{request:?}"), run, machine_summary).await
    }

    async fn get_firewall(&self, machine_id: &str) -> BackendResult<Machine> {
        let run = |dc: &mut Datacenter| dc.get_firewall(machine_id);
        self.run(Operation::FindFirewall, machine_id.to_string(), run, machine_summary).await
    }

    async fn find_firewalls(&self, query: &MachineQuery) -> BackendResult<Vec<Machine>> {
        let query = MachineQuery { allocation_role: Some(MachineRole::Firewall), ..query.clone() };
        let describe = format!("{query:?}");
        let run = move |dc: &mut Datacenter| Ok(dc.find_machines(&query));
        self.run(Operation::FindFirewalls, describe, run, count).await
    }

    async fn allocate_network(&self, request: &NetworkAllocateRequest) -> BackendResult<Network> {
        let run = |dc: &mut Datacenter| dc.allocate_network(request);
        let late = Write::AllocateNetwork(request.clone());
        self.write(late, format!("{request:?}"), run, network_summary).await
    }

    async fn get_network(&self, network_id: &str) -> BackendResult<Network> {
        let run = |dc: &mut Datacenter| dc.get_network(network_id);
        let summarize = |network: &Network| format!("network {}", network.id);
        self.run(Operation::FindNetwork, network_id.to_string(), run, summarize).await
    }

    async fn find_networks(&self, query: &NetworkQuery) -> BackendResult<Vec<Network>> {
        let run = |dc: &mut Datacenter| Ok(dc.find_networks(query));
        self.run(Operation::FindNetworks, format!("{query:?}"), run, count).await
    }

    async fn free_network(&self, network_id: &str) -> BackendResult<Network> {
        let run = |dc: &mut Datacenter| dc.free_network(network_id);
        let summarize = |network: &Network| format!("network {} freed", network.id);
        let late = Write::FreeNetwork(network_id.to_string());
        self.write(late, network_id.to_string(), run, summarize).await
    }

    async fn allocate_ip(&self, request: &IpAllocateRequest) -> BackendResult<Ip> {
        let run = |dc: &mut Datacenter| dc.allocate_ip(None, request);
        let late = Write::AllocateIp { address: None, request: request.clone() };
        self.write(late, format!("{request:?}"), run, ip_summary).await
    }

    async fn allocate_specific_ip(&self, address: &str, request: &IpAllocateRequest) -> BackendResult<Ip> {
        let run = |dc: &mut Datacenter| dc.allocate_ip(Some(address), request);
        let late = Write::AllocateIp { address: Some(address.to_string()), request: request.clone() };
        self.write(late, format!("{address} {request:?}"), run, ip_summary).await
    }

    async fn get_ip(&self, address: &str) -> BackendResult<Ip> {
        let run = |dc: &mut Datacenter| dc.get_ip(address);
        self.run(Operation::FindIp, address.to_string(), run, ip_summary).await
    }

    async fn find_ips(&self, query: &IpQuery) -> BackendResult<Vec<Ip>> {
        let run = |dc: &mut Datacenter| Ok(dc.find_ips(query));
        self.run(Operation::FindIps, format!("{query:?}"), run, count).await
    }

    async fn free_ip(&self, address: &str) -> BackendResult<Ip> {
        let run = |dc: &mut Datacenter| dc.free_ip(address);
        let summarize = |ip: &Ip| format!("ip {} freed", ip.address);
        let late = Write::FreeIp(address.to_string());
        self.write(late, address.to_string(), run, summarize).await
    }

    async fn get_partition(&self, partition_id: &str) -> BackendResult<Partition> {
        let run = |dc: &mut Datacenter| dc.get_partition(partition_id);
        let summarize = |partition: &Partition| partition.id.clone();
        self.run(Operation::FindPartition, partition_id.to_string(), run, summarize).await
    }

    async fn list_partitions(&self) -> BackendResult<Vec<Partition>> {
        let run = |dc: &mut Datacenter| Ok(dc.partitions.values().cloned().collect());
        self.run(Operation::ListPartitions, String::new(), run, count).await
    }

    async fn get_size(&self, size_id: &str) -> BackendResult<Size> {
        let run = |dc: &mut Datacenter| dc.get_size(size_id);
        let summarize = |size: &Size| size.id.clone();
        self.run(Operation::FindSize, size_id.to_string(), run, summarize).await
    }

    async fn list_sizes(&self) -> BackendResult<Vec<Size>> {
        let run = |dc: &mut Datacenter| Ok(dc.sizes.values().cloned().collect());
        self.run(Operation::ListSizes, String::new(), run, count).await
    }

    async fn get_image(&self, image_id: &str) -> BackendResult<Image> {
        let run = |dc: &mut Datacenter| dc.get_image(image_id);
        let summarize = |image: &Image| image.id.clone();
        self.run(Operation::FindImage, image_id.to_string(), run, summarize).await
    }

    async fn list_images(&self) -> BackendResult<Vec<Image>> {
        let run = |dc: &mut Datacenter| Ok(dc.images.values().cloned().collect());
        self.run(Operation::ListImages, String::new(), run, count).await
    }

    async fn get_project(&self, project_id: &str) -> BackendResult<Project> {
        let run = |dc: &mut Datacenter| dc.get_project(project_id);
        let summarize = |project: &Project| project.id.clone();
        self.run(Operation::FindProject, project_id.to_string(), run, summarize).await
    }
}

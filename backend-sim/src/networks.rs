//! Networks and IPs: child networks carved for real from the partition's super network, IPs
//! taken from real prefixes, metal-api's rules and error answers.

use crate::datacenter::{Datacenter, not_found};
use crate::ipam;
use capms_core::metal::{
    AddressFamily, Ip, IpAllocateRequest, IpQuery, Network, NetworkAllocateRequest, NetworkQuery,
};
use capms_core::{BackendError, Operation, tags};
use ipnet::IpNet;
use rand::Rng;
use std::collections::{BTreeMap, BTreeSet};

fn error(operation: Operation, status: u16, message: impl Into<String>) -> BackendError {
    BackendError::from_response(operation, status, message)
}

impl Datacenter {
    /// `POST /v1/network/allocate`.
    pub(crate) fn allocate_network(
        &mut self,
        request: &NetworkAllocateRequest,
    ) -> Result<Network, BackendError> {
        let operation = Operation::AllocateNetwork;
        if request.project_id.is_empty() {
            return Err(error(operation, 400, "projectid should not be empty"));
        }
        if request.partition_id.is_empty() {
            return Err(error(operation, 400, "partitionid should not be empty"));
        }
        if !self.partitions.contains_key(&request.partition_id) {
            return Err(not_found(operation, "partition", &request.partition_id));
        }
        if !self.projects.contains_key(&request.project_id) {
            return Err(not_found(operation, "project", &request.project_id));
        }
        let parent = self.super_network(&request.partition_id).cloned().ok_or_else(|| {
            error(
                operation,
                404,
                format!("NotFound no supernetwork found in partition {}", request.partition_id),
            )
        })?;
        let prefixes = self.carve_children(operation, &parent, request)?;
        let network = Network {
            id: self.uuid(),
            name: request.name.clone(),
            description: request.description.clone(),
            partition_id: Some(request.partition_id.clone()),
            project_id: Some(request.project_id.clone()),
            parent_network_id: Some(parent.id.clone()),
            prefixes,
            destination_prefixes: request.destination_prefixes.clone(),
            default_child_prefix_length: BTreeMap::new(),
            vrf: Some(self.free_vrf()),
            shared: request.shared,
            nat: request.nat,
            private_super: false,
            underlay: false,
            labels: request.labels.clone(),
        };
        self.remember_network(&network.id);
        self.networks.insert(network.id.clone(), network.clone());
        Ok(network)
    }

    /// One child prefix per address family of the super network (or only the requested one).
    fn carve_children(
        &self,
        operation: Operation,
        parent: &Network,
        request: &NetworkAllocateRequest,
    ) -> Result<Vec<String>, BackendError> {
        let used: Vec<IpNet> = self
            .networks
            .values()
            .filter(|network| network.parent_network_id.as_deref() == Some(parent.id.as_str()))
            .flat_map(|network| network.prefixes.iter().filter_map(|prefix| ipam::parse_prefix(prefix)))
            .collect();
        let mut children = Vec::new();
        for prefix in &parent.prefixes {
            let family = AddressFamily::of(prefix);
            if request.address_family.is_some_and(|wanted| wanted != family) {
                continue;
            }
            let length =
                request.length.get(&family).or_else(|| parent.default_child_prefix_length.get(&family));
            let Some(&length) = length else {
                let message = format!(
                    "super network {} has no defaultchildprefixlength for {}",
                    parent.id,
                    family.as_str()
                );
                return Err(error(operation, 500, message));
            };
            let child = ipam::first_free_child(prefix, length, &used)
                .ok_or_else(|| error(operation, 422, "no more child prefixes contained in prefix pool"))?;
            children.push(child);
        }
        if children.is_empty() {
            return Err(error(operation, 400, "there is no prefix for the given addressfamily"));
        }
        Ok(children)
    }

    /// A VRF id no other network uses.
    fn free_vrf(&mut self) -> u64 {
        let used: BTreeSet<u64> = self.networks.values().filter_map(|network| network.vrf).collect();
        loop {
            let vrf = self.rng.random_range(1_000..1_000_000);
            if !used.contains(&vrf) {
                return vrf;
            }
        }
    }

    pub(crate) fn get_network(&self, network_id: &str) -> Result<Network, BackendError> {
        self.networks
            .get(network_id)
            .cloned()
            .ok_or_else(|| not_found(Operation::FindNetwork, "network", network_id))
    }

    /// Networks matching a query, in id order, as a find sees them (see
    /// [`crate::FaultPlan::stale_read_lag`]).
    pub(crate) fn find_networks(&mut self, query: &NetworkQuery) -> Vec<Network> {
        let current: Vec<Network> =
            self.networks.values().filter(|network| query.matches(network)).cloned().collect();
        let Some(cutoff) = self.stale_cutoff() else {
            return current;
        };
        let history = &self.histories.networks;
        let (found, hidden) = history.find_as_of(current, cutoff, |n| n.id.as_str(), |n| query.matches(n));
        self.note_stale("findNetworks", hidden);
        found
    }

    /// `DELETE /v1/network/free/{id}`: refused while any IP is left in one of its prefixes.
    pub(crate) fn free_network(&mut self, network_id: &str) -> Result<Network, BackendError> {
        let operation = Operation::FreeNetwork;
        let network =
            self.get_network(network_id).map_err(|_| not_found(operation, "network", network_id))?;
        if network.parent_network_id.is_none() {
            return Err(error(
                operation,
                400,
                format!("network {network_id} is not a child network and cannot be freed"),
            ));
        }
        let busy = network
            .prefixes
            .iter()
            .find(|prefix| self.ips.keys().any(|address| ipam::contains(prefix, address)));
        if let Some(prefix) = busy {
            return Err(error(operation, 422, format!("prefix {prefix} has ips, deletion not possible")));
        }
        self.remember_network(network_id);
        self.networks.remove(network_id);
        Ok(network)
    }

    /// `POST /v1/ip/allocate` (`address` = None) and `POST /v1/ip/allocate/{ip}`.
    pub(crate) fn allocate_ip(
        &mut self,
        address: Option<&str>,
        request: &IpAllocateRequest,
    ) -> Result<Ip, BackendError> {
        let operation = if address.is_some() { Operation::AllocateSpecificIp } else { Operation::AllocateIp };
        let network = self.check_ip_request(operation, request)?;
        let address = match address {
            Some(address) => self.check_specific_address(operation, address, request, &network)?,
            None => self.random_address(operation, request, &network)?,
        };
        let mut ip_tags = request.tags.clone();
        if let Some(machine_id) = &request.machine_id {
            ip_tags.push(tags::machine_id_tag(machine_id));
        }
        ip_tags.sort();
        ip_tags.dedup();
        let ip = Ip {
            address: address.clone(),
            allocation_uuid: self.uuid(),
            network_id: network.id.clone(),
            project_id: request.project_id.clone(),
            ip_type: request.ip_type,
            name: request.name.clone(),
            description: request.description.clone(),
            tags: ip_tags,
            created: self.now,
            changed: self.now,
        };
        self.remember_ip(&address);
        self.ips.insert(address, ip.clone());
        Ok(ip)
    }

    fn check_ip_request(
        &self,
        operation: Operation,
        request: &IpAllocateRequest,
    ) -> Result<Network, BackendError> {
        if request.network_id.is_empty() || request.project_id.is_empty() {
            return Err(error(operation, 400, "networkid and projectid should not be empty"));
        }
        let network = self
            .networks
            .get(&request.network_id)
            .cloned()
            .ok_or_else(|| not_found(operation, "network", &request.network_id))?;
        if !self.projects.contains_key(&request.project_id) {
            return Err(not_found(operation, "project", &request.project_id));
        }
        if network.prefixes.is_empty() {
            return Err(error(operation, 422, format!("network {} has no prefixes", network.id)));
        }
        let foreign = network.is_private()
            && !network.shared
            && network.project_id.as_deref() != Some(&request.project_id);
        if foreign || network.private_super || network.underlay {
            let message = format!(
                "ips can not be allocated in network {} by project {}",
                network.id, request.project_id
            );
            return Err(error(operation, 422, message));
        }
        Ok(network)
    }

    fn check_specific_address(
        &self,
        operation: Operation,
        address: &str,
        request: &IpAllocateRequest,
        network: &Network,
    ) -> Result<String, BackendError> {
        if request.address_family.is_some() {
            return Err(error(operation, 400, "address family can not be specified with a specific ip"));
        }
        let canonical = ipam::canonical_address(address)
            .ok_or_else(|| error(operation, 400, format!("{address:?} is not a valid IP")))?;
        if self.ips.contains_key(&canonical) {
            return Err(error(operation, 409, format!("Conflict ip already allocated: {canonical}")));
        }
        if !network.prefixes.iter().any(|prefix| ipam::contains(prefix, &canonical)) {
            let message = format!("ip {canonical} is not in any prefix of network {}", network.id);
            return Err(error(operation, 422, message));
        }
        Ok(canonical)
    }

    fn random_address(
        &self,
        operation: Operation,
        request: &IpAllocateRequest,
        network: &Network,
    ) -> Result<String, BackendError> {
        let prefixes: Vec<&String> = network
            .prefixes
            .iter()
            .filter(|prefix| request.address_family.is_none_or(|family| AddressFamily::of(prefix) == family))
            .collect();
        if prefixes.is_empty() {
            return Err(error(operation, 400, "there is no prefix for the given addressfamily"));
        }
        prefixes
            .into_iter()
            .find_map(|prefix| self.free_address(&network.id, prefix))
            .ok_or_else(|| error(operation, 500, "cannot allocate free ip in ipam, no ips left"))
    }

    /// The first free address of one of a network's prefixes. Only the network's own IPs can
    /// lie in its prefixes (networks never overlap), so only those are looked at.
    pub(crate) fn free_address(&self, network_id: &str, prefix: &str) -> Option<String> {
        let used: BTreeSet<String> =
            self.ips.values().filter(|ip| ip.network_id == network_id).map(|ip| ip.address.clone()).collect();
        ipam::first_free_address(prefix, &used)
    }

    pub(crate) fn get_ip(&self, address: &str) -> Result<Ip, BackendError> {
        ipam::canonical_address(address)
            .and_then(|canonical| self.ips.get(&canonical).cloned())
            .ok_or_else(|| not_found(Operation::FindIp, "ip", address))
    }

    /// IPs matching a query, in address order, as a find sees them (see
    /// [`crate::FaultPlan::stale_read_lag`]).
    pub(crate) fn find_ips(&mut self, query: &IpQuery) -> Vec<Ip> {
        let current: Vec<Ip> = self.ips.values().filter(|ip| query.matches(ip)).cloned().collect();
        let Some(cutoff) = self.stale_cutoff() else {
            return current;
        };
        let history = &self.histories.ips;
        let (found, hidden) =
            history.find_as_of(current, cutoff, |ip| ip.address.as_str(), |ip| query.matches(ip));
        self.note_stale("findIPs", hidden);
        found
    }

    /// `DELETE /v1/ip/free/{id}`: refused for IPs with machine scope.
    pub(crate) fn free_ip(&mut self, address: &str) -> Result<Ip, BackendError> {
        let operation = Operation::FreeIp;
        let ip = self.get_ip(address).map_err(|_| not_found(operation, "ip", address))?;
        if tags::value(&ip.tags, tags::MACHINE_ID).is_some() {
            return Err(error(operation, 400, "ip with machine scope can not be deleted"));
        }
        self.remember_ip(&ip.address);
        self.ips.remove(&ip.address);
        Ok(ip)
    }
}

//! Machines and firewalls: allocation with metal-api's rules and errors, the provisioning
//! lifecycle on the virtual clock, frees with asynchronous IP release and reclaim.

use crate::datacenter::{Datacenter, Phase, Scheduled, not_found};
use crate::faults::{MACHINE_DEAD_AFTER, STOLEN_MACHINE_HELD, chance};
use capms_core::metal::{
    FirewallRules, ImageFeature, Ip, IpType, Liveliness, Machine, MachineAllocateRequest, MachineAllocation,
    MachineNetwork, MachineQuery, MachineRole, MachineState, Network, NetworkType, ProvisioningEvent,
    ProvisioningEventKind,
};
use capms_core::{BackendError, Operation, Timestamp, tags};
use rand::Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// A requested network, resolved, with the role it plays for the machine.
#[derive(Debug, Clone)]
struct Gathered {
    network: Network,
    auto_acquire: bool,
    network_type: NetworkType,
}

/// SSH key types metal-api accepts in authorized_keys lines.
const SSH_KEY_TYPES: [&str; 7] = [
    "ssh-rsa",
    "ssh-ed25519",
    "ssh-dss",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
];

fn error(operation: Operation, status: u16, message: impl Into<String>) -> BackendError {
    BackendError::from_response(operation, status, message)
}

/// Whether a line looks like an authorized_keys entry: `<type> <base64> [comment]`.
fn valid_ssh_key(key: &str) -> bool {
    let mut fields = key.split_whitespace();
    let (Some(kind), Some(blob)) = (fields.next(), fields.next()) else {
        return false;
    };
    let base64 = |c: char| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=');
    SSH_KEY_TYPES.contains(&kind) && blob.len() % 4 == 0 && blob.chars().all(base64)
}

/// metal-api's tag processing: `key=value` tags are labels (later duplicates win, system
/// labels override), plain words stay; the result is de-duplicated. metal-api does not keep
/// the order; the simulator sorts, to stay deterministic.
fn process_tags(user: &[String], system: &[(&str, String)]) -> Vec<String> {
    let mut labels: BTreeMap<String, String> = BTreeMap::new();
    let mut words: BTreeSet<String> = BTreeSet::new();
    for tag in user {
        match tags::split(tag) {
            (key, Some(value)) => {
                labels.insert(key.to_string(), value.to_string());
            }
            (word, None) => {
                words.insert(word.to_string());
            }
        }
    }
    for (key, value) in system {
        labels.insert(key.to_string(), value.clone());
    }
    let mut result: Vec<String> = labels.iter().map(|(key, value)| tags::tag(key, value)).collect();
    result.extend(words);
    result.sort();
    result.dedup();
    result
}

impl Datacenter {
    /// `POST /v1/machine/allocate` and `POST /v1/firewall/allocate`.
    pub(crate) fn allocate(
        &mut self,
        operation: Operation,
        request: &MachineAllocateRequest,
        role: MachineRole,
        rules: Option<&FirewallRules>,
    ) -> Result<Machine, BackendError> {
        self.validate_allocation(operation, request, role, rules)?;
        if let Some(machine_id) = &request.machine_id {
            self.maybe_steal(machine_id, request);
        }
        let (partition_id, size_id) = self.target(operation, request)?;
        let networks = self.gather_networks(operation, request, role, &partition_id)?;
        self.check_given_ips(operation, request, &networks)?;
        if chance(&mut self.rng, self.faults.parallel_allocation_rate) {
            let message = "too many parallel machine allocations taking place, try again later";
            return Err(error(operation, 422, message));
        }
        let machine_id = match &request.machine_id {
            Some(id) => id.clone(),
            None => self
                .pick_machine(&partition_id, &size_id, &request.project_id, role, &request.placement_tags)
                .ok_or_else(|| error(operation, 422, "no machine available"))?,
        };
        self.take_capacity(&partition_id, &size_id)
            .then_some(())
            .ok_or_else(|| error(operation, 422, "no machine available"))?;
        let addresses = self.acquire_machine_ips(operation, &machine_id, request, &networks)?;
        Ok(self.write_allocation(&machine_id, request, role, rules, &networks, addresses))
    }

    fn validate_allocation(
        &self,
        operation: Operation,
        request: &MachineAllocateRequest,
        role: MachineRole,
        rules: Option<&FirewallRules>,
    ) -> Result<(), BackendError> {
        if request.networks.is_empty() {
            return Err(error(operation, 400, "network ids cannot be nil/empty"));
        }
        if !self.projects.contains_key(&request.project_id) {
            let message = format!("NotFound no project with id {:?} found", request.project_id);
            return Err(error(operation, 404, message));
        }
        let feature = match role {
            MachineRole::Machine => ImageFeature::Machine,
            MachineRole::Firewall => ImageFeature::Firewall,
        };
        let image = self.resolve_image(&request.image_id).ok_or_else(|| {
            error(operation, 400, format!("image {:?} could not be found", request.image_id))
        })?;
        if !image.features.contains(&feature) {
            let message = format!(
                "given image {} is not usable for a {}, features: {:?}",
                image.id,
                role.as_str(),
                image.features
            );
            return Err(error(operation, 400, message));
        }
        if let Some(key) = request.ssh_pub_keys.iter().find(|key| !valid_ssh_key(key)) {
            let shown: String = key.chars().take(40).collect();
            return Err(error(operation, 422, format!("invalid public SSH key: {shown}")));
        }
        if let Some(rules) = rules {
            rules.validate().map_err(|rule_error| error(operation, 400, rule_error.to_string()))?;
        }
        Ok(())
    }

    /// `stolen_machines`: someone else allocates the pinned machine first (in the same project,
    /// without the caller's tags, with no networks) and frees it after
    /// [`STOLEN_MACHINE_HELD`].
    fn maybe_steal(&mut self, machine_id: &str, request: &MachineAllocateRequest) {
        let allocatable = self.machines.get(machine_id).is_some_and(is_allocatable);
        if !allocatable || !chance(&mut self.rng, self.faults.stolen_machine_rate) {
            return;
        }
        let thief = MachineAllocateRequest {
            project_id: request.project_id.clone(),
            image_id: request.image_id.clone(),
            name: "someone-else".to_string(),
            hostname: "someone-else".to_string(),
            description: "allocated by someone else first (stolen_machines)".to_string(),
            tags: vec!["someone-else".to_string()],
            ..MachineAllocateRequest::default()
        };
        self.record(format!("machine {machine_id}: allocated by someone else first"));
        let machine =
            self.write_allocation(machine_id, &thief, MachineRole::Machine, None, &[], BTreeMap::new());
        let generation = self.generation_of(&machine.id).unwrap_or_default();
        let returned = Scheduled::ReturnStolen { machine_id: machine.id, generation };
        self.schedule(STOLEN_MACHINE_HELD, returned);
    }

    /// The partition and size to allocate in: the pinned machine's, or the request's.
    fn target(
        &self,
        operation: Operation,
        request: &MachineAllocateRequest,
    ) -> Result<(String, String), BackendError> {
        if let Some(id) = &request.machine_id {
            let machine = self.machines.get(id).ok_or_else(|| not_found(operation, "machine", id))?;
            if machine.machine.allocation.is_some() || machine.phase != Phase::Waiting {
                return Err(error(operation, 422, "machine is already allocated"));
            }
            return Ok((machine.machine.partition_id.clone(), machine.machine.size_id.clone()));
        }
        if !self.partitions.contains_key(&request.partition_id) {
            return Err(error(operation, 400, format!("partition:{} not found", request.partition_id)));
        }
        if !self.sizes.contains_key(&request.size_id) {
            return Err(error(operation, 400, format!("size:{} not found", request.size_id)));
        }
        Ok((request.partition_id.clone(), request.size_id.clone()))
    }

    /// metal-api's `gatherNetworksFromSpec`.
    fn gather_networks(
        &self,
        operation: Operation,
        request: &MachineAllocateRequest,
        role: MachineRole,
        partition_id: &str,
    ) -> Result<Vec<Gathered>, BackendError> {
        let ids: BTreeSet<&str> = request.networks.iter().map(|n| n.network_id.as_str()).collect();
        if ids.len() != request.networks.len() {
            return Err(error(operation, 400, "given network ids are not unique"));
        }
        let mut gathered = Vec::new();
        for wanted in &request.networks {
            let network =
                self.check_network(operation, &wanted.network_id, &request.project_id, partition_id)?;
            let network_type = if network.is_private() {
                NetworkType::PrivateSecondaryShared
            } else {
                NetworkType::External
            };
            gathered.push(Gathered { network, auto_acquire: wanted.auto_acquire, network_type });
        }
        assign_private_roles(operation, role, &mut gathered)?;
        if role == MachineRole::Firewall {
            self.add_underlay(operation, partition_id, &mut gathered)?;
            let any_auto = gathered.iter().any(|g| g.auto_acquire && !g.network.underlay);
            if !any_auto && request.ips.is_empty() {
                let message = "firewall allocation needs at least one network with auto acquire or one ip";
                return Err(error(operation, 422, message));
            }
        }
        Ok(gathered)
    }

    fn check_network(
        &self,
        operation: Operation,
        id: &str,
        project_id: &str,
        partition_id: &str,
    ) -> Result<Network, BackendError> {
        let network = self.networks.get(id).ok_or_else(|| {
            error(
                operation,
                404,
                format!("unable to gather networks:NotFound no network with id {id:?} found"),
            )
        })?;
        if network.underlay {
            return Err(error(
                operation,
                400,
                format!("underlay networks are not allowed to be set explicitly: {id}"),
            ));
        }
        if network.private_super {
            let message = format!("private super networks are not allowed to be set explicitly: {id}");
            return Err(error(operation, 400, message));
        }
        if network.prefixes.is_empty() {
            return Err(error(operation, 422, format!("network {id} has no prefixes")));
        }
        if network.is_private() {
            if network.partition_id.as_deref() != Some(partition_id) {
                let message = format!("private network {id} must be in the same partition as the machine");
                return Err(error(operation, 400, message));
            }
            if !network.shared && network.project_id.as_deref() != Some(project_id) {
                let message = format!("the given private network {id} does not belong to the project");
                return Err(error(operation, 400, message));
            }
        }
        Ok(network.clone())
    }

    fn add_underlay(
        &self,
        operation: Operation,
        partition_id: &str,
        gathered: &mut Vec<Gathered>,
    ) -> Result<(), BackendError> {
        let underlay = self.underlay_network(partition_id).ok_or_else(|| {
            error(operation, 422, format!("no underlay network found in partition {partition_id}"))
        })?;
        gathered.push(Gathered {
            network: underlay.clone(),
            auto_acquire: true,
            network_type: NetworkType::Underlay,
        });
        Ok(())
    }

    /// Checks the IPs a request wants attached: they exist, belong to the project and lie in
    /// one of the requested networks; and there are enough of them for networks without auto
    /// acquire.
    fn check_given_ips(
        &self,
        operation: Operation,
        request: &MachineAllocateRequest,
        networks: &[Gathered],
    ) -> Result<(), BackendError> {
        for address in &request.ips {
            let ip = crate::ipam::canonical_address(address)
                .and_then(|canonical| self.ips.get(&canonical))
                .ok_or_else(|| {
                error(operation, 422, format!("given ip {address:?} is not a valid IP or not allocated"))
            })?;
            if ip.project_id != request.project_id {
                return Err(error(
                    operation,
                    422,
                    format!("given ip {address} does not belong to the project"),
                ));
            }
            if tags::value(&ip.tags, tags::MACHINE_ID).is_some() {
                return Err(error(
                    operation,
                    422,
                    format!("given ip {address} is already attached to a machine"),
                ));
            }
            if !networks.iter().any(|g| g.network.id == ip.network_id) {
                return Err(error(
                    operation,
                    422,
                    format!("given ip {address} is not in any of the given networks"),
                ));
            }
        }
        let manual = request.networks.iter().filter(|n| !n.auto_acquire).count();
        if manual > request.ips.len() {
            return Err(error(operation, 422, "more networks without auto acquire than ips given"));
        }
        Ok(())
    }

    /// A random waiting machine, spread over racks: among racks with the fewest machines of
    /// the same project and role that carry all placement tags.
    fn pick_machine(
        &mut self,
        partition_id: &str,
        size_id: &str,
        project_id: &str,
        role: MachineRole,
        placement_tags: &[String],
    ) -> Option<String> {
        let candidates: Vec<(&str, &str)> = self
            .machines
            .values()
            .filter(|m| {
                is_allocatable(m) && m.machine.partition_id == partition_id && m.machine.size_id == size_id
            })
            .map(|m| (m.machine.id.as_str(), m.machine.rack_id.as_str()))
            .collect();
        let load = self.rack_load(project_id, role, placement_tags);
        let rack_load = |rack: &str| load.get(rack).copied().unwrap_or(0);
        let least = candidates.iter().map(|(_, rack)| rack_load(rack)).min()?;
        let best: Vec<String> = candidates
            .iter()
            .filter(|(_, rack)| rack_load(rack) == least)
            .map(|(id, _)| id.to_string())
            .collect();
        let index = self.rng.random_range(0..best.len());
        best.get(index).cloned()
    }

    /// Per rack, how many machines of the project and role carry all placement tags.
    fn rack_load(
        &self,
        project_id: &str,
        role: MachineRole,
        placement_tags: &[String],
    ) -> BTreeMap<String, usize> {
        let mut load = BTreeMap::new();
        if placement_tags.is_empty() {
            return load;
        }
        let spread = self.machines.values().map(|sim| &sim.machine).filter(|machine| {
            machine.project_id() == Some(project_id)
                && machine.role() == Some(role)
                && capms_core::metal::tags_match(&machine.tags, placement_tags)
        });
        for machine in spread {
            *load.entry(machine.rack_id.clone()).or_insert(0) += 1;
        }
        load
    }

    /// Takes one allocation from a limited capacity budget; `false` when it is used up.
    fn take_capacity(&mut self, partition_id: &str, size_id: &str) -> bool {
        match self.capacity_budget.get_mut(&(partition_id.to_string(), size_id.to_string())) {
            Some(0) => false,
            Some(budget) => {
                *budget -= 1;
                true
            }
            None => true,
        }
    }

    /// Acquires one IP per address family in every auto-acquire network, and attaches the
    /// given IPs. All or nothing: on exhaustion the IPs taken so far are given back.
    fn acquire_machine_ips(
        &mut self,
        operation: Operation,
        machine_id: &str,
        request: &MachineAllocateRequest,
        networks: &[Gathered],
    ) -> Result<BTreeMap<String, Vec<String>>, BackendError> {
        let mut acquired: Vec<String> = Vec::new();
        let mut addresses: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for gathered in networks.iter().filter(|g| g.auto_acquire) {
            for prefix in first_prefix_per_family(&gathered.network.prefixes) {
                let Some(address) = self.free_address(&gathered.network.id, &prefix) else {
                    for address in &acquired {
                        self.remember_ip(address);
                        self.ips.remove(address);
                    }
                    return Err(error(operation, 500, "cannot allocate free ip in ipam, no ips left"));
                };
                let ip = self.machine_ip(&address, machine_id, request, &gathered.network);
                self.remember_ip(&address);
                self.ips.insert(address.clone(), ip);
                acquired.push(address.clone());
                addresses.entry(gathered.network.id.clone()).or_default().push(address);
            }
        }
        let machine_tag = tags::machine_id_tag(machine_id);
        for address in request.ips.iter().filter_map(|a| crate::ipam::canonical_address(a)) {
            self.remember_ip(&address);
            if let Some(ip) = self.ips.get_mut(&address) {
                if !ip.tags.contains(&machine_tag) {
                    ip.tags.push(machine_tag.clone());
                    ip.tags.sort();
                }
                addresses.entry(ip.network_id.clone()).or_default().push(address);
            }
        }
        Ok(addresses)
    }

    fn machine_ip(
        &mut self,
        address: &str,
        machine_id: &str,
        request: &MachineAllocateRequest,
        network: &Network,
    ) -> Ip {
        Ip {
            address: address.to_string(),
            allocation_uuid: self.uuid(),
            network_id: network.id.clone(),
            project_id: request.project_id.clone(),
            ip_type: IpType::Ephemeral,
            name: request.name.clone(),
            description: "autoassigned".to_string(),
            tags: vec![tags::machine_id_tag(machine_id)],
            created: self.now,
            changed: self.now,
        }
    }

    fn write_allocation(
        &mut self,
        machine_id: &str,
        request: &MachineAllocateRequest,
        role: MachineRole,
        rules: Option<&FirewallRules>,
        networks: &[Gathered],
        addresses: BTreeMap<String, Vec<String>>,
    ) -> Machine {
        let asn = self.next_asn;
        self.next_asn += 1;
        let machine_networks = networks
            .iter()
            .map(|g| machine_network(g, addresses.get(&g.network.id).cloned().unwrap_or_default(), asn))
            .collect();
        let image_id =
            self.resolve_image(&request.image_id).map(|image| image.id.clone()).unwrap_or_default();
        let allocation = MachineAllocation {
            allocation_uuid: self.uuid(),
            project_id: request.project_id.clone(),
            name: request.name.clone(),
            hostname: if request.hostname.is_empty() {
                "metal".to_string()
            } else {
                request.hostname.clone()
            },
            description: request.description.clone(),
            role,
            image_id,
            ssh_pub_keys: request.ssh_pub_keys.clone(),
            user_data: request.user_data.clone(),
            networks: machine_networks,
            firewall_rules: rules.cloned(),
            created: self.now,
        };
        self.remember_machine(machine_id);
        let Some(sim) = self.machines.get_mut(machine_id) else {
            unreachable!("allocate picked machine {machine_id}, which does not exist");
        };
        let system = [
            (tags::MACHINE_ASN, asn.to_string()),
            (tags::MACHINE_RACK, sim.machine.rack_id.clone()),
            (tags::MACHINE_CHASSIS, sim.chassis.clone()),
        ];
        let machine_tags = process_tags(&request.tags, &system);
        sim.machine.allocation = Some(allocation);
        sim.machine.tags = machine_tags.clone();
        sim.phase = Phase::Provisioning;
        sim.generation += 1;
        let generation = sim.generation;
        let machine = sim.machine.clone();
        self.index_tags(machine_id, &machine_tags, true);
        self.schedule_provisioning(machine_id, generation);
        machine
    }

    /// Schedules the provisioning events of a fresh allocation, and its fate: a crash loop
    /// instead of `Phoned Home`, a hang (silence) in PXE boot or installation, a death, or an
    /// external free.
    fn schedule_provisioning(&mut self, machine_id: &str, generation: u64) {
        let total = self.jittered(self.times.provisioning);
        let fails = chance(&mut self.rng, self.faults.provisioning_failure_rate);
        let stuck = !fails && chance(&mut self.rng, self.faults.stuck_provisioning_rate);
        let mut steps = provisioning_steps(fails);
        if stuck {
            let hang = self.rng.random_range(0..HANG_STEPS);
            steps.truncate(hang + 1);
        }
        let hang_at = steps.last().map(|(percent, _, _)| *percent).unwrap_or_default();
        for (percent, event, phase) in steps {
            let scheduled = Scheduled::Event { machine_id: machine_id.to_string(), generation, event, phase };
            self.schedule(total.mul_f64(f64::from(percent) / 100.0), scheduled);
        }
        if stuck {
            let after = total.mul_f64(f64::from(hang_at) / 100.0);
            self.schedule(after, Scheduled::Hang { machine_id: machine_id.to_string(), generation });
        }
        self.schedule_fate(machine_id, generation, total, !fails && !stuck);
    }

    /// A death (after `Phoned Home`, only if the machine gets there) or an external free.
    fn schedule_fate(&mut self, machine_id: &str, generation: u64, total: Duration, may_die: bool) {
        let window_millis = self.faults.death_window.as_millis().max(1) as u64;
        if may_die && chance(&mut self.rng, self.faults.death_rate) {
            let after = total + Duration::from_millis(self.rng.random_range(0..window_millis));
            self.schedule(after, Scheduled::Die { machine_id: machine_id.to_string(), generation });
        }
        if chance(&mut self.rng, self.faults.external_free_rate) {
            let after = total + Duration::from_millis(self.rng.random_range(0..window_millis));
            self.schedule(after, Scheduled::ExternalFree { machine_id: machine_id.to_string(), generation });
        }
    }

    /// Applies a scheduled provisioning event unless the machine moved on since.
    pub(crate) fn apply_event(
        &mut self,
        machine_id: &str,
        generation: u64,
        event: ProvisioningEventKind,
        phase: Option<Phase>,
    ) {
        let now = self.now;
        let Some(sim) = self.machines.get_mut(machine_id) else {
            return;
        };
        if sim.generation != generation || sim.silent_since.is_some() {
            return;
        }
        if event == ProvisioningEventKind::Crashed {
            sim.machine.crash_loop = true;
        }
        if let Some(phase) = phase {
            sim.phase = phase;
        }
        let line = format!("machine {machine_id}: {event}");
        sim.machine.events.insert(0, ProvisioningEvent { event, message: String::new(), time: now });
        self.record(line);
    }

    /// The machine goes silent for ever: no event from now on (so no reclaim either), and
    /// [`MACHINE_DEAD_AFTER`] later metal-api turns it `Unknown` or `Dead`. Returns whether it
    /// exists.
    pub(crate) fn silence(&mut self, machine_id: &str) -> bool {
        self.silence_since(machine_id, self.now)
    }

    /// [`Datacenter::silence`] as if the machine had gone silent at `since` (not after now):
    /// metal-api's liveliness check runs [`MACHINE_DEAD_AFTER`] after `since`, at once if that
    /// is past.
    pub(crate) fn silence_since(&mut self, machine_id: &str, since: Timestamp) -> bool {
        let since = since.min(self.now);
        let Some(sim) = self.machines.get_mut(machine_id) else {
            return false;
        };
        if sim.silent_since.is_some() {
            return true;
        }
        sim.silent_since = Some(since);
        self.record(format!("machine {machine_id}: goes silent (since {since})"));
        let silent_for = self.now.duration_since(since).unsigned_abs();
        if silent_for >= MACHINE_DEAD_AFTER {
            self.liveliness_timeout(machine_id);
        } else {
            let timeout = Scheduled::LivelinessTimeout { machine_id: machine_id.to_string() };
            self.schedule(MACHINE_DEAD_AFTER - silent_for, timeout);
        }
        true
    }

    /// metal-api's liveliness check of a machine silent for [`MACHINE_DEAD_AFTER`]: `Unknown`
    /// while allocated (it may only have stopped phoning home), `Dead` otherwise.
    pub(crate) fn liveliness_timeout(&mut self, machine_id: &str) {
        let Some(sim) = self.machines.get_mut(machine_id) else {
            return;
        };
        let liveliness =
            if sim.machine.allocation.is_some() { Liveliness::Unknown } else { Liveliness::Dead };
        sim.machine.liveliness = liveliness;
        self.record(format!("machine {machine_id}: liveliness {}", liveliness.as_str()));
    }

    /// `DELETE /v1/machine/{id}/free`: unconditional, like metal-api.
    pub(crate) fn free_machine(&mut self, machine_id: &str) -> Result<Machine, BackendError> {
        let operation = Operation::FreeMachine;
        let sim = self.machines.get(machine_id).ok_or_else(|| not_found(operation, "machine", machine_id))?;
        if sim.machine.state == MachineState::Locked {
            return Err(error(operation, 422, "machine is locked"));
        }
        Ok(self.free_unchecked(machine_id))
    }

    /// Frees a machine: allocation and tags are cleared at once, its IPs are released later,
    /// and it is reclaimed (wiped) before it waits for the next allocation. Answers the state
    /// before the free.
    pub(crate) fn free_unchecked(&mut self, machine_id: &str) -> Machine {
        let machine_tag = tags::machine_id_tag(machine_id);
        let addresses: Vec<String> = self
            .ips
            .values()
            .filter(|ip| ip.tags.contains(&machine_tag))
            .map(|ip| ip.address.clone())
            .collect();
        let release_after = self.jittered(self.times.ip_release);
        let reclaim_after = self.jittered(self.times.reclaim);
        let now = self.now;
        self.remember_machine(machine_id);
        let Some(sim) = self.machines.get_mut(machine_id) else {
            unreachable!("free of machine {machine_id}, which was checked to exist");
        };
        let before = sim.machine.clone();
        let old_tags = std::mem::take(&mut sim.machine.tags);
        sim.machine.allocation = None;
        sim.machine.crash_loop = false;
        sim.generation += 1;
        sim.phase = Phase::Reclaiming;
        sim.machine.events.insert(
            0,
            ProvisioningEvent {
                event: ProvisioningEventKind::MachineReclaim,
                message: String::new(),
                time: now,
            },
        );
        let generation = sim.generation;
        let silent = sim.silent_since.is_some();
        if sim.machine.liveliness == Liveliness::Unknown {
            // Silent for long enough and no longer allocated: metal-api says dead.
            sim.machine.liveliness = Liveliness::Dead;
        }
        self.index_tags(machine_id, &old_tags, false);
        if !addresses.is_empty() {
            self.schedule(
                release_after,
                Scheduled::ReleaseIps { machine_id: machine_id.to_string(), addresses },
            );
        }
        if !silent {
            self.schedule_reclaim(machine_id, generation, reclaim_after);
        }
        self.record(format!("machine {machine_id}: Machine Reclaim"));
        before
    }

    fn schedule_reclaim(&mut self, machine_id: &str, generation: u64, total: Duration) {
        let steps = [
            (50, ProvisioningEventKind::PxeBooting, None),
            (75, ProvisioningEventKind::Preparing, None),
            (100, ProvisioningEventKind::Waiting, Some(Phase::Waiting)),
        ];
        for (percent, event, phase) in steps {
            let scheduled = Scheduled::Event { machine_id: machine_id.to_string(), generation, event, phase };
            self.schedule(total.mul_f64(f64::from(percent) / 100.0), scheduled);
        }
    }

    /// The asynchronous part of a free: ephemeral IPs go, static IPs lose the machine tag.
    pub(crate) fn release_ips(&mut self, machine_id: &str, addresses: &[String]) {
        let machine_tag = tags::machine_id_tag(machine_id);
        for address in addresses {
            if !self.ips.get(address).is_some_and(|ip| ip.tags.contains(&machine_tag)) {
                continue;
            }
            self.remember_ip(address);
            let Some(ip) = self.ips.get_mut(address) else {
                continue;
            };
            if ip.ip_type == IpType::Ephemeral {
                self.ips.remove(address);
            } else {
                ip.tags.retain(|tag| tag != &machine_tag);
                ip.changed = self.now;
            }
        }
        self.record(format!("machine {machine_id}: {} ips released", addresses.len()));
    }

    pub(crate) fn get_machine(
        &self,
        operation: Operation,
        machine_id: &str,
    ) -> Result<Machine, BackendError> {
        self.machines
            .get(machine_id)
            .map(|sim| sim.machine.clone())
            .ok_or_else(|| not_found(operation, "machine", machine_id))
    }

    pub(crate) fn get_firewall(&self, machine_id: &str) -> Result<Machine, BackendError> {
        let machine = self.get_machine(Operation::FindFirewall, machine_id)?;
        if machine.role() != Some(MachineRole::Firewall) {
            return Err(error(Operation::FindFirewall, 404, "machine is not a firewall"));
        }
        Ok(machine)
    }

    /// Machines matching a query, in id order, as a find sees them (see
    /// [`crate::FaultPlan::stale_read_lag`]).
    pub(crate) fn find_machines(&mut self, query: &MachineQuery) -> Vec<Machine> {
        let current = self.find_current_machines(query);
        let Some(cutoff) = self.stale_cutoff() else {
            return current;
        };
        let history = &self.histories.machines;
        let (found, hidden) = history.find_as_of(current, cutoff, |m| m.id.as_str(), |m| query.matches(m));
        self.note_stale("findMachines", hidden);
        found
    }

    /// Machines matching a query now, in id order. Tag filters go through the tag index.
    fn find_current_machines(&self, query: &MachineQuery) -> Vec<Machine> {
        let mut by_tags: Option<BTreeSet<&String>> = None;
        for tag in &query.tags {
            let ids: BTreeSet<&String> =
                self.tag_index.get(tag).map(|ids| ids.iter().collect()).unwrap_or_default();
            by_tags = Some(match by_tags {
                Some(found) => found.intersection(&ids).copied().collect(),
                None => ids,
            });
        }
        let candidates: Vec<&String> = match &by_tags {
            Some(ids) => ids.iter().copied().collect(),
            None => self.machines.keys().collect(),
        };
        candidates
            .into_iter()
            .filter_map(|id| self.machines.get(id))
            .map(|sim| &sim.machine)
            .filter(|machine| query.matches(machine))
            .cloned()
            .collect()
    }
}

/// How many of the first provisioning steps a machine can hang at: `PXE Booting`,
/// `Preparing`, `Installing`.
const HANG_STEPS: usize = 3;

/// The provisioning events of an allocation, in percent of its provisioning time, with the
/// phase each one starts: a crash loop instead of `Phoned Home` if it `fails`.
fn provisioning_steps(fails: bool) -> Vec<(u8, ProvisioningEventKind, Option<Phase>)> {
    let last = if fails {
        (85, ProvisioningEventKind::Crashed, Some(Phase::CrashLoop))
    } else {
        (100, ProvisioningEventKind::PhonedHome, Some(Phase::Running))
    };
    vec![
        (10, ProvisioningEventKind::PxeBooting, None),
        (25, ProvisioningEventKind::Preparing, None),
        (40, ProvisioningEventKind::Installing, None),
        (if fails { 60 } else { 85 }, ProvisioningEventKind::BootingNewKernel, None),
        last,
    ]
}

fn is_allocatable(sim: &crate::datacenter::SimMachine) -> bool {
    sim.phase == Phase::Waiting
        && sim.machine.allocation.is_none()
        && sim.machine.liveliness == Liveliness::Alive
        && sim.machine.state == MachineState::Available
}

/// Decides which private network is the machine's primary one (metal-api's rules: exactly one
/// unshared private network for a machine; without one, exactly one shared network is primary).
fn assign_private_roles(
    operation: Operation,
    role: MachineRole,
    gathered: &mut [Gathered],
) -> Result<(), BackendError> {
    let unshared = gathered.iter().filter(|g| g.network.is_private() && !g.network.shared).count();
    let shared = gathered.iter().filter(|g| g.network.is_private() && g.network.shared).count();
    if role == MachineRole::Machine {
        if unshared == 0 && shared == 0 {
            return Err(error(operation, 400, "no private network given"));
        }
        if unshared > 1 {
            return Err(error(
                operation,
                400,
                "multiple private networks provided, which is not allowed for machines",
            ));
        }
        if unshared == 0 && shared > 1 {
            return Err(error(
                operation,
                400,
                "multiple shared private networks provided without a primary network",
            ));
        }
    }
    for g in gathered.iter_mut().filter(|g| g.network.is_private()) {
        g.network_type = match (g.network.shared, unshared) {
            (false, _) => NetworkType::PrivatePrimaryUnshared,
            (true, 0) if role == MachineRole::Machine => NetworkType::PrivatePrimaryShared,
            (true, _) => NetworkType::PrivateSecondaryShared,
        };
    }
    Ok(())
}

fn machine_network(gathered: &Gathered, ips: Vec<String>, asn: i64) -> MachineNetwork {
    let network = &gathered.network;
    let primary = gathered.network_type.is_private_primary();
    MachineNetwork {
        network_id: network.id.clone(),
        network_type: gathered.network_type.clone(),
        ips,
        prefixes: network.prefixes.clone(),
        destination_prefixes: network.destination_prefixes.clone(),
        vrf: network.vrf.unwrap_or_default(),
        asn: if primary { asn } else { 0 },
        nat: network.nat,
        private: network.is_private(),
        underlay: network.underlay,
        project_id: network.project_id.clone(),
    }
}

/// One prefix per address family (the first), as metal-api acquires one IP per family.
fn first_prefix_per_family(prefixes: &[String]) -> Vec<String> {
    let mut seen = BTreeSet::new();
    prefixes
        .iter()
        .filter(|prefix| seen.insert(capms_core::metal::AddressFamily::of(prefix)))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_labels_with_system_overrides() {
        let user = vec![
            "a=1".to_string(),
            "a=2".to_string(),
            "word".to_string(),
            tags::tag(tags::MACHINE_RACK, "fake"),
        ];
        let processed = process_tags(&user, &[(tags::MACHINE_RACK, "rack-1".to_string())]);
        assert_eq!(processed, vec!["a=2", "machine.metal-stack.io/rack=rack-1", "word"]);
    }

    #[test]
    fn ssh_keys_are_checked() {
        assert!(valid_ssh_key("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHx4 user@host"));
        assert!(!valid_ssh_key("ssh-ed25519"));
        assert!(!valid_ssh_key("rsa AAAA"));
        assert!(!valid_ssh_key("ssh-rsa not*base64"));
    }
}

//! A metal-api that lags behind itself: finds that do not see writes younger than a lag
//! (stale reads), and writes that take effect only after their client gave up (late writes).
//!
//! Stale reads keep, while the fault is on, the version of every entity from before each
//! write; a find answers the current state with every entity written within the lag replaced
//! by its version from before those writes (absent if it did not exist). Late writes are the
//! owned form of a write request, scheduled on the timeline and applied when they land.

use crate::datacenter::Datacenter;
use capms_core::metal::{
    FirewallAllocateRequest, Ip, IpAllocateRequest, Machine, MachineAllocateRequest, MachineRole, Network,
    NetworkAllocateRequest,
};
use capms_core::{BackendError, Operation, Timestamp};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Versions of recently written entities of one kind, keyed by id (or address).
#[derive(Debug, Clone)]
pub(crate) struct History<T> {
    /// Entity key → (when it was written, the entity before that write), oldest first.
    writes: BTreeMap<String, Vec<(Timestamp, Option<T>)>>,
}

impl<T> Default for History<T> {
    fn default() -> Self {
        History { writes: BTreeMap::new() }
    }
}

impl<T: Clone> History<T> {
    /// Remembers `before`, the entity `key` as it was before a write at `at`, and forgets
    /// writes at or before `cutoff` (no find looks at them any more).
    pub(crate) fn record(&mut self, key: &str, at: Timestamp, before: Option<T>, cutoff: Timestamp) {
        self.writes.entry(key.to_string()).or_default().push((at, before));
        self.writes.retain(|_, writes| {
            writes.retain(|(written, _)| *written > cutoff);
            !writes.is_empty()
        });
    }

    pub(crate) fn clear(&mut self) {
        self.writes.clear();
    }

    /// Every entity written after `cutoff`, as it was at the cutoff (`None`: it did not
    /// exist yet).
    fn as_of(&self, cutoff: Timestamp) -> BTreeMap<&str, Option<&T>> {
        self.writes
            .iter()
            .filter_map(|(key, writes)| {
                let first = writes.iter().find(|(written, _)| *written > cutoff)?;
                Some((key.as_str(), first.1.as_ref()))
            })
            .collect()
    }

    /// A find's answer as of `cutoff`: `current` (what the find sees now) with every entity
    /// written since replaced by its version at the cutoff, if that matches. Ordered by key.
    /// Also says how many entities of the answer now or then were written since the cutoff.
    pub(crate) fn find_as_of(
        &self,
        current: Vec<T>,
        cutoff: Timestamp,
        key: impl Fn(&T) -> &str,
        matches: impl Fn(&T) -> bool,
    ) -> (Vec<T>, usize) {
        let older = self.as_of(cutoff);
        if older.is_empty() {
            return (current, 0);
        }
        let (written, unwritten): (Vec<T>, Vec<T>) =
            current.into_iter().partition(|entity| older.contains_key(key(entity)));
        let mut answer: BTreeMap<String, T> =
            unwritten.into_iter().map(|entity| (key(&entity).to_string(), entity)).collect();
        let then: Vec<T> =
            older.values().flatten().filter(|entity| matches(entity)).map(|e| (*e).clone()).collect();
        let stale: BTreeSet<String> =
            written.iter().chain(&then).map(|entity| key(entity).to_string()).collect();
        answer.extend(then.into_iter().map(|entity| (key(&entity).to_string(), entity)));
        (answer.into_values().collect(), stale.len())
    }
}

/// What finds may lag behind: machines (firewalls included), networks and IPs.
#[derive(Debug, Clone, Default)]
pub(crate) struct Histories {
    pub(crate) machines: History<Machine>,
    pub(crate) networks: History<Network>,
    pub(crate) ips: History<Ip>,
}

impl Histories {
    pub(crate) fn clear(&mut self) {
        self.machines.clear();
        self.networks.clear();
        self.ips.clear();
    }
}

impl Datacenter {
    /// The moment finds see the datacenter as of, while stale reads are on.
    pub(crate) fn stale_cutoff(&self) -> Option<Timestamp> {
        let lag = self.faults.stale_read_lag;
        (lag > Duration::ZERO).then(|| self.now.checked_sub(lag).unwrap_or(self.now))
    }

    /// Remembers machine `id` as it is now, before a write changes it (only while finds lag).
    pub(crate) fn remember_machine(&mut self, id: &str) {
        if let Some(cutoff) = self.stale_cutoff() {
            let before = self.machines.get(id).map(|sim| sim.machine.clone());
            self.histories.machines.record(id, self.now, before, cutoff);
        }
    }

    /// Remembers network `id` as it is now, before a write changes it (only while finds lag).
    pub(crate) fn remember_network(&mut self, id: &str) {
        if let Some(cutoff) = self.stale_cutoff() {
            let before = self.networks.get(id).cloned();
            self.histories.networks.record(id, self.now, before, cutoff);
        }
    }

    /// Remembers IP `address` as it is now, before a write changes it (only while finds lag).
    pub(crate) fn remember_ip(&mut self, address: &str) {
        if let Some(cutoff) = self.stale_cutoff() {
            let before = self.ips.get(address).cloned();
            self.histories.ips.record(address, self.now, before, cutoff);
        }
    }

    /// Notes in the event log that a find did not see `hidden` young writes.
    pub(crate) fn note_stale(&mut self, what: &str, hidden: usize) {
        if hidden > 0 {
            self.record(format!("stale read: {what} does not see the latest writes of {hidden} entities"));
        }
    }
}

/// A write request in owned form, so that it can take effect later (a late write).
#[derive(Debug, Clone)]
pub(crate) enum Write {
    AllocateMachine(MachineAllocateRequest),
    AllocateFirewall(FirewallAllocateRequest),
    FreeMachine(String),
    AllocateNetwork(NetworkAllocateRequest),
    FreeNetwork(String),
    AllocateIp { address: Option<String>, request: IpAllocateRequest },
    FreeIp(String),
}

impl Write {
    /// The operation the write is.
    pub(crate) fn operation(&self) -> Operation {
        match self {
            Write::AllocateMachine(_) => Operation::AllocateMachine,
            Write::AllocateFirewall(_) => Operation::AllocateFirewall,
            Write::FreeMachine(_) => Operation::FreeMachine,
            Write::AllocateNetwork(_) => Operation::AllocateNetwork,
            Write::FreeNetwork(_) => Operation::FreeNetwork,
            Write::AllocateIp { address: None, .. } => Operation::AllocateIp,
            Write::AllocateIp { address: Some(_), .. } => Operation::AllocateSpecificIp,
            Write::FreeIp(_) => Operation::FreeIp,
        }
    }

    /// Applies the write now; answers what the event log says about it.
    pub(crate) fn apply(&self, datacenter: &mut Datacenter) -> Result<String, BackendError> {
        match self {
            Write::AllocateMachine(request) => datacenter
                .allocate(Operation::AllocateMachine, request, MachineRole::Machine, None)
                .map(|machine| machine_summary(&machine)),
            Write::AllocateFirewall(request) => datacenter
                .allocate(
                    Operation::AllocateFirewall,
                    &request.machine,
                    MachineRole::Firewall,
                    Some(&request.rules),
                )
                .map(|machine| machine_summary(&machine)),
            Write::FreeMachine(id) => datacenter.free_machine(id).map(|machine| machine_summary(&machine)),
            Write::AllocateNetwork(request) => {
                datacenter.allocate_network(request).map(|network| network_summary(&network))
            }
            Write::FreeNetwork(id) => {
                datacenter.free_network(id).map(|network| format!("network {} freed", network.id))
            }
            Write::AllocateIp { address, request } => {
                datacenter.allocate_ip(address.as_deref(), request).map(|ip| ip_summary(&ip))
            }
            Write::FreeIp(address) => {
                datacenter.free_ip(address).map(|ip| format!("ip {} freed", ip.address))
            }
        }
    }
}

/// What the event log says about an answered machine.
pub(crate) fn machine_summary(machine: &Machine) -> String {
    let allocation = machine.allocation.as_ref().map(|a| a.allocation_uuid.as_str()).unwrap_or("-");
    format!("machine {} allocation {allocation}", machine.id)
}

pub(crate) fn network_summary(network: &Network) -> String {
    format!("network {} {:?}", network.id, network.prefixes)
}

pub(crate) fn ip_summary(ip: &Ip) -> String {
    format!("ip {}", ip.address)
}

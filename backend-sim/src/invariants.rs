//! The datacenter's own invariants. A violation is a bug in the simulator, never in the code
//! under test: the datacenter must stay a faithful, consistent model whatever callers do.

use crate::datacenter::{Datacenter, Phase};
use crate::faults::MACHINE_DEAD_AFTER;
use crate::ipam;
use capms_core::metal::Liveliness;
use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet};

/// Checks every invariant; the first violation is described in the error.
pub(crate) fn check(datacenter: &Datacenter) -> Result<(), String> {
    ips_lie_in_their_networks(datacenter)?;
    no_address_held_twice(datacenter)?;
    child_prefixes_disjoint_and_inside_parent(datacenter)?;
    tag_index_matches_machines(datacenter)?;
    allocations_are_unique_and_consistent(datacenter)?;
    liveliness_follows_silence(datacenter)?;
    Ok(())
}

/// metal-api's liveliness: `Alive` until a machine has been silent for longer than
/// [`MACHINE_DEAD_AFTER`], then `Unknown` while allocated and `Dead` while not.
fn liveliness_follows_silence(datacenter: &Datacenter) -> Result<(), String> {
    for sim in datacenter.machines.values() {
        let silent_for = sim.silent_since.map(|since| datacenter.now.duration_since(since).unsigned_abs());
        let expected = match silent_for {
            None => Liveliness::Alive,
            Some(silent_for) if silent_for < MACHINE_DEAD_AFTER => Liveliness::Alive,
            Some(silent_for) if silent_for == MACHINE_DEAD_AFTER => continue,
            Some(_) if sim.machine.allocation.is_some() => Liveliness::Unknown,
            Some(_) => Liveliness::Dead,
        };
        if sim.machine.liveliness != expected {
            return Err(format!(
                "machine {} is {} but should be {} (silent since {:?})",
                sim.machine.id,
                sim.machine.liveliness.as_str(),
                expected.as_str(),
                sim.silent_since
            ));
        }
    }
    Ok(())
}

fn ips_lie_in_their_networks(datacenter: &Datacenter) -> Result<(), String> {
    for ip in datacenter.ips.values() {
        let network = datacenter
            .networks
            .get(&ip.network_id)
            .ok_or_else(|| format!("ip {} refers to unknown network {}", ip.address, ip.network_id))?;
        if !network.prefixes.iter().any(|prefix| ipam::contains(prefix, &ip.address)) {
            return Err(format!("ip {} lies outside network {}", ip.address, network.id));
        }
    }
    Ok(())
}

/// An IP is in at most one place: held by at most one allocated machine, and every held
/// address exists as an IP.
fn no_address_held_twice(datacenter: &Datacenter) -> Result<(), String> {
    let mut holders: BTreeMap<&str, &str> = BTreeMap::new();
    for sim in datacenter.machines.values() {
        let Some(allocation) = &sim.machine.allocation else {
            continue;
        };
        for address in allocation.networks.iter().flat_map(|network| network.ips.iter()) {
            if let Some(other) = holders.insert(address, &sim.machine.id) {
                return Err(format!("ip {address} held by machines {other} and {}", sim.machine.id));
            }
            if !datacenter.ips.contains_key(address) {
                return Err(format!("machine {} holds ip {address}, which is not allocated", sim.machine.id));
            }
        }
    }
    Ok(())
}

fn child_prefixes_disjoint_and_inside_parent(datacenter: &Datacenter) -> Result<(), String> {
    let mut by_parent: BTreeMap<&str, Vec<(IpNet, &str)>> = BTreeMap::new();
    for network in datacenter.networks.values() {
        let Some(parent_id) = network.parent_network_id.as_deref() else {
            continue;
        };
        let parent = datacenter
            .networks
            .get(parent_id)
            .ok_or_else(|| format!("network {} has unknown parent {parent_id}", network.id))?;
        let parent_nets: Vec<IpNet> = parent.prefixes.iter().filter_map(|p| ipam::parse_prefix(p)).collect();
        for prefix in &network.prefixes {
            let child = ipam::parse_prefix(prefix)
                .ok_or_else(|| format!("network {} has bad prefix {prefix}", network.id))?;
            if !parent_nets.iter().any(|parent| parent.contains(&child)) {
                return Err(format!(
                    "child prefix {prefix} of {} lies outside its parent {parent_id}",
                    network.id
                ));
            }
            by_parent.entry(parent_id).or_default().push((child, &network.id));
        }
    }
    for children in by_parent.values() {
        for (index, (a, a_id)) in children.iter().enumerate() {
            if let Some((b, b_id)) = children[index + 1..].iter().find(|(b, _)| ipam::overlaps(a, b)) {
                return Err(format!("child prefixes {a} ({a_id}) and {b} ({b_id}) overlap"));
            }
        }
    }
    Ok(())
}

fn tag_index_matches_machines(datacenter: &Datacenter) -> Result<(), String> {
    let mut expected: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for sim in datacenter.machines.values() {
        for tag in &sim.machine.tags {
            expected.entry(tag.clone()).or_default().insert(sim.machine.id.clone());
        }
    }
    if expected != datacenter.tag_index {
        return Err("the tag index drifted from the machines' tags".to_string());
    }
    Ok(())
}

/// A machine is allocated at most once (one allocation uuid, never shared), and allocation and
/// phase agree.
fn allocations_are_unique_and_consistent(datacenter: &Datacenter) -> Result<(), String> {
    let mut uuids = BTreeSet::new();
    for sim in datacenter.machines.values() {
        let allocated_phase = matches!(sim.phase, Phase::Provisioning | Phase::Running | Phase::CrashLoop);
        match &sim.machine.allocation {
            Some(allocation) => {
                if !uuids.insert(allocation.allocation_uuid.as_str()) {
                    return Err(format!("allocation {} appears twice", allocation.allocation_uuid));
                }
                if !allocated_phase {
                    return Err(format!("machine {} is allocated but {:?}", sim.machine.id, sim.phase));
                }
            }
            None if allocated_phase => {
                return Err(format!("machine {} is {:?} without allocation", sim.machine.id, sim.phase));
            }
            None => {}
        }
    }
    Ok(())
}

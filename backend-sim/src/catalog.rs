//! Partitions, sizes, images, projects and the operator-created networks of a partition: how
//! they are seeded, and the read operations on them.

use crate::builder::PartitionSpec;
use crate::datacenter::{Datacenter, not_found};
use capms_core::metal::{Image, ImageFeature, Network, Partition, Project, Size, SizeConstraint};
use capms_core::{BackendError, Operation, tags};
use std::collections::{BTreeMap, BTreeSet};

pub(crate) fn image(id: &str, features: &[ImageFeature]) -> Image {
    Image {
        id: id.to_string(),
        name: id.to_string(),
        description: format!("simulated image {id}"),
        url: format!("http://images.metal-stack.invalid/{id}.tar.lz4"),
        features: features.iter().copied().collect::<BTreeSet<_>>(),
        classification: "supported".to_string(),
    }
}

pub(crate) fn project(id: &str, tenant_id: &str) -> Project {
    Project {
        id: id.to_string(),
        name: format!("project {id}"),
        description: String::new(),
        tenant_id: tenant_id.to_string(),
    }
}

pub(crate) fn partition(id: &str) -> Partition {
    Partition {
        id: id.to_string(),
        name: id.to_string(),
        description: format!("simulated partition {id}"),
        labels: BTreeMap::new(),
    }
}

pub(crate) fn size(id: &str) -> Size {
    Size {
        id: id.to_string(),
        name: id.to_string(),
        description: format!("simulated size {id}"),
        constraints: vec![
            SizeConstraint { kind: "cores".into(), min: 4, max: 4 },
            SizeConstraint { kind: "memory".into(), min: 8 << 30, max: 8 << 30 },
            SizeConstraint { kind: "storage".into(), min: 100 << 30, max: 100 << 30 },
        ],
        labels: BTreeMap::new(),
    }
}

/// The super, external and underlay networks of a partition.
pub(crate) fn partition_networks(spec: &PartitionSpec) -> Vec<Network> {
    let base = Network {
        id: String::new(),
        name: String::new(),
        description: String::new(),
        partition_id: Some(spec.id.clone()),
        project_id: None,
        parent_network_id: None,
        prefixes: Vec::new(),
        destination_prefixes: Vec::new(),
        default_child_prefix_length: BTreeMap::new(),
        vrf: None,
        shared: false,
        nat: false,
        private_super: false,
        underlay: false,
        labels: BTreeMap::new(),
    };
    let mut networks = vec![Network {
        id: spec.super_network.id.clone(),
        name: spec.super_network.id.clone(),
        prefixes: spec.super_network.prefixes.clone(),
        default_child_prefix_length: spec.super_network.child_prefix_length.clone(),
        private_super: true,
        ..base.clone()
    }];
    for (index, external) in spec.external_networks.iter().enumerate() {
        let labels = if index == 0 {
            BTreeMap::from([
                (tags::DEFAULT_EXTERNAL_NETWORK.to_string(), String::new()),
                ("network.metal-stack.io/default-external".to_string(), String::new()),
            ])
        } else {
            BTreeMap::new()
        };
        networks.push(Network {
            id: external.id.clone(),
            name: external.id.clone(),
            prefixes: external.prefixes.clone(),
            destination_prefixes: vec!["0.0.0.0/0".into(), "::/0".into()],
            vrf: Some(external.vrf),
            nat: true,
            labels,
            ..base.clone()
        });
    }
    if let Some((id, prefix)) = &spec.underlay {
        networks.push(Network {
            id: id.clone(),
            name: id.clone(),
            prefixes: vec![prefix.clone()],
            underlay: true,
            ..base
        });
    }
    networks
}

/// Splits an image id into comparable parts: numbers compare as numbers.
fn version_key(id: &str) -> Vec<(u64, String)> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut digits = false;
    for c in id.chars() {
        if c.is_ascii_digit() != digits && !current.is_empty() {
            parts.push(part(&current, digits));
            current.clear();
        }
        digits = c.is_ascii_digit();
        current.push(c);
    }
    if !current.is_empty() {
        parts.push(part(&current, digits));
    }
    parts
}

fn part(text: &str, digits: bool) -> (u64, String) {
    if digits { (text.parse().unwrap_or(u64::MAX), String::new()) } else { (0, text.to_string()) }
}

impl Datacenter {
    /// Resolves an image id like metal-api does: an exact id, or a partial version
    /// (`ubuntu-24`, `ubuntu`) resolving to the newest matching image.
    pub(crate) fn resolve_image(&self, id: &str) -> Option<&Image> {
        if let Some(image) = self.images.get(id) {
            return Some(image);
        }
        let matches = |candidate: &&Image| {
            candidate.id.strip_prefix(id).is_some_and(|rest| rest.starts_with(['.', '-']))
        };
        self.images.values().filter(matches).max_by_key(|image| version_key(&image.id))
    }

    pub(crate) fn get_partition(&mut self, id: &str) -> Result<Partition, BackendError> {
        self.partitions.get(id).cloned().ok_or_else(|| not_found(Operation::FindPartition, "partition", id))
    }

    pub(crate) fn get_size(&mut self, id: &str) -> Result<Size, BackendError> {
        self.sizes.get(id).cloned().ok_or_else(|| not_found(Operation::FindSize, "size", id))
    }

    pub(crate) fn get_image(&mut self, id: &str) -> Result<Image, BackendError> {
        self.resolve_image(id).cloned().ok_or_else(|| not_found(Operation::FindImage, "image", id))
    }

    pub(crate) fn get_project(&mut self, id: &str) -> Result<Project, BackendError> {
        self.projects.get(id).cloned().ok_or_else(|| not_found(Operation::FindProject, "project", id))
    }

    /// The private super network of a partition.
    pub(crate) fn super_network(&self, partition_id: &str) -> Option<&Network> {
        self.networks
            .values()
            .find(|network| network.private_super && network.partition_id.as_deref() == Some(partition_id))
    }

    /// The underlay network of a partition.
    pub(crate) fn underlay_network(&self, partition_id: &str) -> Option<&Network> {
        self.networks
            .values()
            .find(|network| network.underlay && network.partition_id.as_deref() == Some(partition_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_image_ids_resolve_to_the_newest() {
        let datacenter = Datacenter::new(
            &crate::SimBuilder::new()
                .image("ubuntu-24.04", &[ImageFeature::Machine])
                .image("ubuntu-24.10", &[ImageFeature::Machine])
                .image("ubuntu-9.10", &[ImageFeature::Machine]),
        );
        assert_eq!(datacenter.resolve_image("ubuntu-24").map(|i| i.id.as_str()), Some("ubuntu-24.10"));
        assert_eq!(datacenter.resolve_image("ubuntu").map(|i| i.id.as_str()), Some("ubuntu-26.4"));
        assert_eq!(datacenter.resolve_image("ubuntu-24.04").map(|i| i.id.as_str()), Some("ubuntu-24.04"));
        assert_eq!(datacenter.resolve_image("debian").map(|i| i.id.as_str()), Some("debian-13.0"));
        assert!(datacenter.resolve_image("ubunt").is_none());
    }
}

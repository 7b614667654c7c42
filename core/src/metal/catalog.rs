use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// A datacenter (metal-api partition).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partition {
    pub id: String,
    pub name: String,
    pub description: String,
    pub labels: BTreeMap<String, String>,
}

/// A machine size: a hardware class machines are allocated by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Size {
    pub id: String,
    pub name: String,
    pub description: String,
    pub constraints: Vec<SizeConstraint>,
    pub labels: BTreeMap<String, String>,
}

/// One hardware constraint of a size (`cores`, `memory`, `storage`, `gpu`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SizeConstraint {
    pub kind: String,
    pub min: u64,
    pub max: u64,
}

/// What an image may be installed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageFeature {
    Machine,
    Firewall,
}

impl ImageFeature {
    pub fn as_str(self) -> &'static str {
        match self {
            ImageFeature::Machine => "machine",
            ImageFeature::Firewall => "firewall",
        }
    }
}

/// An operating system image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    pub id: String,
    pub name: String,
    pub description: String,
    pub url: String,
    pub features: BTreeSet<ImageFeature>,
    pub classification: String,
}

/// A metal-stack project (from masterdata).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Project {
    pub id: String,
    pub name: String,
    pub description: String,
    pub tenant_id: String,
}

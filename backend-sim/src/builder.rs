//! Configuration of a simulated datacenter. Every default mirrors mini-lab's seed data, so a
//! client configured for mini-lab finds the partition, size, images, networks and project it
//! expects.

use crate::datacenter::Datacenter;
use crate::faults::FaultPlan;
use crate::sim::Sim;
use capms_core::Timestamp;
use capms_core::metal::{AddressFamily, ImageFeature};
use std::collections::BTreeMap;
use std::time::Duration;

/// mini-lab's partition.
pub const MINI_LAB_PARTITION: &str = "mini-lab";
/// mini-lab's machine size.
pub const MINI_LAB_SIZE: &str = "v1-small-x86";
/// mini-lab's project.
pub const MINI_LAB_PROJECT: &str = "00000000-0000-0000-0000-000000000001";
/// mini-lab's tenant.
pub const MINI_LAB_TENANT: &str = "metal-stack";
/// mini-lab's machine images.
pub const MINI_LAB_IMAGES: [&str; 2] = ["debian-13.0", "ubuntu-26.4"];
/// mini-lab's firewall image.
pub const MINI_LAB_FIREWALL_IMAGE: &str = "firewall-ubuntu-3.0";

/// One partition of the simulated datacenter with its networks and machines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionSpec {
    pub id: String,
    /// Machines per size.
    pub machines: BTreeMap<String, usize>,
    /// Racks the machines are spread over (round robin).
    pub racks: usize,
    /// The private super network tenant networks are carved from.
    pub super_network: SuperNetworkSpec,
    /// External networks (the first one is labelled as the default external network).
    pub external_networks: Vec<ExternalNetworkSpec>,
    /// The underlay network id and prefix firewalls are attached to.
    pub underlay: Option<(String, String)>,
}

/// A partition's private super network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuperNetworkSpec {
    pub id: String,
    pub prefixes: Vec<String>,
    /// Default child prefix length per address family.
    pub child_prefix_length: BTreeMap<AddressFamily, u8>,
}

/// An external (internet) network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalNetworkSpec {
    pub id: String,
    pub prefixes: Vec<String>,
    pub vrf: u64,
}

impl PartitionSpec {
    /// mini-lab's partition: networks `tenant-super-network-<id>`, `internet-<id>`,
    /// `underlay-<id>` with mini-lab's prefixes, and `machines` machines of size
    /// `v1-small-x86` in two racks.
    pub fn mini_lab(id: &str, machines: usize) -> Self {
        PartitionSpec {
            id: id.to_string(),
            machines: BTreeMap::from([(MINI_LAB_SIZE.to_string(), machines)]),
            racks: 2,
            super_network: SuperNetworkSpec {
                id: format!("tenant-super-network-{id}"),
                prefixes: vec!["10.0.0.0/16".into(), "2001:db8:0:10::/64".into()],
                child_prefix_length: BTreeMap::from([(AddressFamily::IPv4, 22), (AddressFamily::IPv6, 96)]),
            },
            external_networks: vec![ExternalNetworkSpec {
                id: format!("internet-{id}"),
                prefixes: vec!["203.0.113.128/25".into(), "2001:db8:0:113::/64".into()],
                vrf: 104009,
            }],
            underlay: Some((format!("underlay-{id}"), "10.1.0.0/24".into())),
        }
    }

    /// Replaces the machine counts: `sizes` maps size id to machine count.
    pub fn with_machines(mut self, sizes: &[(&str, usize)]) -> Self {
        self.machines = sizes.iter().map(|(size, count)| (size.to_string(), *count)).collect();
        self
    }
}

/// How long the steps of a machine's life take in virtual time. Every duration is a typical
/// value; the datacenter draws the real one from the seed within ±`jitter` of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProvisioningTimes {
    /// From allocation to `Phoned Home`.
    pub provisioning: Duration,
    /// From free to `Waiting` again (reclaim and wipe).
    pub reclaim: Duration,
    /// From free until the machine's IPs are released (metal-api does it asynchronously).
    pub ip_release: Duration,
    /// Relative spread of every duration, in percent (0 = exact).
    pub jitter_percent: u8,
}

impl Default for ProvisioningTimes {
    fn default() -> Self {
        ProvisioningTimes {
            provisioning: Duration::from_secs(5 * 60),
            reclaim: Duration::from_secs(2 * 60),
            ip_release: Duration::from_secs(5),
            jitter_percent: 20,
        }
    }
}

/// Builds a [`Sim`]: one documented setter per knob, defaults from mini-lab.
///
/// ```
/// use capms_backend_sim::{PartitionSpec, SimBuilder};
/// let sim = SimBuilder::new()
///     .seed(7)
///     .partition(PartitionSpec::mini_lab("fra-1", 12))
///     .build();
/// assert_eq!(sim.seed(), 7);
/// ```
#[derive(Debug, Clone)]
pub struct SimBuilder {
    pub(crate) seed: u64,
    pub(crate) start: Timestamp,
    pub(crate) partitions: Vec<PartitionSpec>,
    pub(crate) images: BTreeMap<String, Vec<ImageFeature>>,
    pub(crate) projects: BTreeMap<String, String>,
    pub(crate) times: ProvisioningTimes,
    pub(crate) faults: FaultPlan,
    pub(crate) keep_log: bool,
    pub(crate) check_invariants: bool,
    partitions_set: bool,
}

impl Default for SimBuilder {
    fn default() -> Self {
        SimBuilder::new()
    }
}

impl SimBuilder {
    /// mini-lab: partition `mini-lab` with 8 machines of size `v1-small-x86`, images
    /// `debian-13.0`, `ubuntu-26.4` (machine) and `firewall-ubuntu-3.0` (firewall), project
    /// `00000000-0000-0000-0000-000000000001`, seed 0, no faults, virtual time starting at
    /// 2026-01-01T00:00:00Z.
    pub fn new() -> Self {
        let mut images: BTreeMap<String, Vec<ImageFeature>> =
            MINI_LAB_IMAGES.iter().map(|id| (id.to_string(), vec![ImageFeature::Machine])).collect();
        images.insert(MINI_LAB_FIREWALL_IMAGE.to_string(), vec![ImageFeature::Firewall]);
        SimBuilder {
            seed: 0,
            start: Timestamp::from_second(1_767_225_600).unwrap_or(Timestamp::UNIX_EPOCH),
            partitions: vec![PartitionSpec::mini_lab(MINI_LAB_PARTITION, 8)],
            images,
            projects: BTreeMap::from([(MINI_LAB_PROJECT.to_string(), MINI_LAB_TENANT.to_string())]),
            times: ProvisioningTimes::default(),
            faults: FaultPlan::none(),
            keep_log: true,
            check_invariants: cfg!(debug_assertions),
            partitions_set: false,
        }
    }

    /// The seed of the one RNG every random choice of the datacenter draws from.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The virtual time the datacenter starts at.
    pub fn start(mut self, start: Timestamp) -> Self {
        self.start = start;
        self
    }

    /// Adds a partition. The first call replaces the default mini-lab partition.
    pub fn partition(mut self, partition: PartitionSpec) -> Self {
        if !self.partitions_set {
            self.partitions.clear();
            self.partitions_set = true;
        }
        self.partitions.push(partition);
        self
    }

    /// Adds (or replaces) an image with its features. Ids like `ubuntu-24.04` also answer to
    /// partial versions (`ubuntu-24`, `ubuntu`), resolving to the newest match.
    pub fn image(mut self, id: &str, features: &[ImageFeature]) -> Self {
        self.images.insert(id.to_string(), features.to_vec());
        self
    }

    /// Replaces all images.
    pub fn images(mut self, images: &[(&str, &[ImageFeature])]) -> Self {
        self.images = images.iter().map(|(id, features)| (id.to_string(), features.to_vec())).collect();
        self
    }

    /// Adds a project of a tenant.
    pub fn project(mut self, project_id: &str, tenant_id: &str) -> Self {
        self.projects.insert(project_id.to_string(), tenant_id.to_string());
        self
    }

    /// How long provisioning, reclaim and IP release take.
    pub fn provisioning(mut self, times: ProvisioningTimes) -> Self {
        self.times = times;
        self
    }

    /// The faults the datacenter injects until [`Sim::heal`] is called.
    pub fn fault_plan(mut self, faults: FaultPlan) -> Self {
        self.faults = faults;
        self
    }

    /// Keep every line of the event log in memory (for printing and diffing). The running
    /// hash is always kept. Default: on.
    pub fn keep_log(mut self, keep: bool) -> Self {
        self.keep_log = keep;
        self
    }

    /// Check the datacenter invariants after every operation and event. Default: on in debug
    /// builds, off in release builds (benchmarks).
    pub fn check_invariants(mut self, check: bool) -> Self {
        self.check_invariants = check;
        self
    }

    /// Builds the datacenter.
    pub fn build(self) -> Sim {
        Sim::new(Datacenter::new(&self))
    }
}

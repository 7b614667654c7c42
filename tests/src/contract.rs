//! The `MetalBackend` contract: metal-api's semantics as every backend must show them.
//!
//! Every test is an `async fn name(harness: Harness)` that tells one story through the
//! backend: allocate, look, free, fail. [`contract_suite!`](crate::contract_suite) turns the
//! whole list into one `#[tokio::test]` per story for a backend, so the simulated datacenter
//! (`tests/tests/contract_sim.rs`) and the HTTP client against a simulated metal-api server run
//! the identical suite.
//!
//! Rules for the stories:
//! - results are read through `harness.backend` only. `harness.sim` sets the scene and moves
//!   time (advance the clock, limit capacity, lock a machine), it is never asked for results;
//! - errors are checked by class ([`ErrorKind`]), HTTP status and operation, the things a
//!   reconciler decides on, not by the simulator's wording (except where metal-api's message
//!   is the only signal, like "has ips");
//! - every story assumes the one datacenter of [`datacenter`]: mini-lab with [`MACHINES`]
//!   machines in two racks, no faults, exact provisioning times.

use capms_backend_sim::{
    FaultPlan, MINI_LAB_FIREWALL_IMAGE, MINI_LAB_PARTITION, MINI_LAB_PROJECT, MINI_LAB_SIZE, MINI_LAB_TENANT,
    PartitionSpec, ProvisioningTimes, Sim, SimBuilder,
};
use capms_core::backend::BackendResult;
use capms_core::metal::{
    AddressFamily, EgressRule, FirewallAllocateRequest, FirewallRules, ImageFeature, IngressRule, Ip,
    IpAllocateRequest, IpQuery, IpType, Machine, MachineAllocateRequest, MachineQuery, MachineRole,
    MachineState, Network, NetworkAllocateRequest, NetworkQuery, NetworkRequest, NetworkType, Protocol,
    ProvisioningEventKind,
};
use capms_core::{BackendError, ErrorKind, MetalBackend, Operation, UserData, tags};
use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// The partition every story allocates in.
pub const PARTITION: &str = MINI_LAB_PARTITION;
/// The machine size of every machine in the datacenter.
pub const SIZE: &str = MINI_LAB_SIZE;
/// The project every story allocates for.
pub const PROJECT: &str = MINI_LAB_PROJECT;
/// A machine image.
pub const IMAGE: &str = "debian-13.0";
/// The firewall image.
pub const FIREWALL_IMAGE: &str = MINI_LAB_FIREWALL_IMAGE;
/// The partition's private super network.
pub const SUPER_NETWORK: &str = "tenant-super-network-mini-lab";
/// The partition's default external network.
pub const INTERNET: &str = "internet-mini-lab";
/// The partition's underlay network.
pub const UNDERLAY: &str = "underlay-mini-lab";
/// How many machines the partition has (mini-lab's `capms` flavor: 4 VMs).
pub const MACHINES: usize = 4;
/// From allocation to `Phoned Home`.
pub const PROVISIONING: Duration = Duration::from_secs(5 * 60);
/// From free to `Waiting` again.
pub const RECLAIM: Duration = Duration::from_secs(2 * 60);
/// From free until the machine's IPs are released.
pub const IP_RELEASE: Duration = Duration::from_secs(5);

/// A syntactically valid authorized_keys line.
const SSH_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEoWvVy2Hpux0c+JckPnOw/AAEqx6Wpe8EZV1C3kIC6m capms@contract";
/// A project that does not exist.
const UNKNOWN_PROJECT: &str = "ffffffff-ffff-ffff-ffff-ffffffffffff";

/// The one datacenter every contract test assumes: mini-lab with [`MACHINES`] machines of
/// [`SIZE`] in two racks, seed 1, no faults, provisioning [`PROVISIONING`], reclaim
/// [`RECLAIM`], IP release [`IP_RELEASE`], no jitter.
pub fn datacenter() -> SimBuilder {
    SimBuilder::new()
        .seed(1)
        .partition(PartitionSpec::mini_lab(PARTITION, MACHINES))
        .provisioning(ProvisioningTimes {
            provisioning: PROVISIONING,
            reclaim: RECLAIM,
            ip_release: IP_RELEASE,
            jitter_percent: 0,
        })
        .fault_plan(FaultPlan::none())
}

/// A backend under test and the datacenter behind it.
///
/// `sim` is for setup and time only (advance the clock, limit capacity, lock a machine);
/// results are read through `backend`.
pub struct Harness {
    pub sim: Sim,
    pub backend: Arc<dyn MetalBackend>,
    /// Runs after the story (e.g. checks every exchange against metal-api's spec).
    verify: Option<Arc<dyn Fn() + Send + Sync>>,
}

impl fmt::Debug for Harness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Harness").field("sim", &self.sim).finish_non_exhaustive()
    }
}

impl Harness {
    pub fn new(sim: Sim, backend: Arc<dyn MetalBackend>) -> Self {
        Harness { sim, backend, verify: None }
    }

    /// Adds a check that runs after the story and panics on failure.
    pub fn with_verify(mut self, verify: Arc<dyn Fn() + Send + Sync>) -> Self {
        self.verify = Some(verify);
        self
    }

    /// The check to run after the story, if any.
    pub fn verifier(&self) -> Option<Arc<dyn Fn() + Send + Sync>> {
        self.verify.clone()
    }

    /// [`datacenter`] answered directly by `SimBackend`.
    pub fn simulated() -> Self {
        let sim = datacenter().build();
        let backend = Arc::new(sim.backend());
        Harness::new(sim, backend)
    }

    /// Moves the datacenter's virtual clock forward.
    pub fn advance(&self, by: Duration) {
        self.sim.advance(by);
    }
}

/// Expands to one `#[tokio::test]` per contract test, each with a fresh harness from
/// `$make` (an expression of type [`Harness`]; it is evaluated inside the async test, so it
/// may `.await`).
///
/// ```no_run
/// capms_tests::contract_suite!(capms_tests::contract::Harness::simulated());
/// ```
#[macro_export]
macro_rules! contract_suite {
    ($make:expr) => {
        $crate::__contract_tests!(suite($make));
    };
}

/// The list of contract tests, handed to `__contract_emit!`. The one place the list lives.
#[doc(hidden)]
#[macro_export]
macro_rules! __contract_tests {
    ($mode:ident $args:tt) => {
        $crate::__contract_emit! { $mode $args;
            allocated_machine_is_returned_by_get_with_its_allocation,
            machine_gets_one_ephemeral_ip_per_family_in_its_node_network,
            allocation_keeps_user_tags_and_adds_rack_chassis_and_asn_labels,
            duplicate_tag_keys_are_merged_and_the_later_value_wins,
            allocation_without_hostname_gets_hostname_metal,
            allocation_is_not_idempotent,
            find_machines_by_tags_is_an_and_of_exact_strings,
            absent_filter_matches_everything_but_empty_string_matches_only_empty_values,
            find_returns_an_empty_list_when_nothing_matches,
            allocate_without_networks_is_rejected_with_bad_request,
            allocate_into_an_unknown_network_is_not_found,
            allocate_for_an_unknown_project_is_not_found,
            allocate_with_unknown_size_or_partition_is_permanent,
            machine_with_a_firewall_image_is_permanent,
            invalid_ssh_key_is_permanent_and_allocates_nothing,
            machine_phones_home_only_after_the_provisioning_time,
            machine_is_ready_only_after_phoning_home,
            free_answers_the_state_before_and_clears_allocation_and_tags,
            free_of_an_already_free_machine_is_accepted,
            free_or_get_of_an_unknown_machine_is_not_found,
            locked_machine_cannot_be_freed_until_unlocked,
            exhausted_partition_answers_capacity,
            capacity_limit_answers_capacity,
            freed_machine_is_allocatable_again_only_after_reclaim,
            pinned_machine_is_allocated_and_a_taken_pinned_machine_is_permanent,
            reallocation_of_a_machine_gets_a_new_allocation_uuid,
            placement_tags_spread_machines_over_racks,
            get_firewall_of_a_plain_machine_is_not_found,
            firewall_allocation_adds_the_underlay_and_keeps_its_rules,
            firewall_with_a_machine_image_is_permanent,
            invalid_firewall_rules_are_permanent_and_allocate_nothing,
            find_firewalls_returns_only_firewalls,
            network_allocation_carves_one_child_prefix_per_family_from_the_super_network,
            two_network_allocations_are_disjoint,
            find_networks_by_labels_is_an_and_of_exact_matches,
            find_networks_by_project_partition_and_kind,
            network_allocate_without_project_or_partition_is_permanent,
            network_free_fails_until_ips_of_freed_machine_are_released,
            free_network_twice_is_not_found,
            ip_allocate_get_find_by_tags_and_free,
            ip_allocation_by_address_family_picks_that_family,
            specific_ip_allocated_twice_conflicts,
            specific_ip_outside_the_network_is_permanent,
            ip_with_machine_scope_cannot_be_freed,
            free_or_get_of_an_unknown_ip_is_not_found,
            ip_allocate_without_project_is_permanent,
            ip_allocate_in_an_unknown_network_is_not_found,
            static_ip_survives_machine_free_and_ephemeral_ips_are_released,
            catalog_lists_the_partition_size_and_images,
            partial_image_version_resolves_to_the_newest_match,
            project_is_found_with_its_tenant,
            unknown_catalog_ids_are_not_found,
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __contract_emit {
    (suite($make:expr); $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let harness: $crate::contract::Harness = $make;
                let verify = harness.verifier();
                $crate::contract::$name(harness).await;
                if let Some(verify) = verify {
                    verify();
                }
            }
        )*
    };
    (names(); $($name:ident),* $(,)?) => {
        &[$(stringify!($name)),*]
    };
}

/// The names of all contract tests, in suite order.
pub const NAMES: &[&str] = crate::__contract_tests!(names());

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Asserts that a call failed the way metal-api fails: with this class, this HTTP status and
/// for this operation, as an answer (the outcome is known).
#[track_caller]
fn expect_error<T: fmt::Debug>(
    result: BackendResult<T>,
    operation: Operation,
    kind: ErrorKind,
    status: u16,
) -> BackendError {
    let error = match result {
        Ok(value) => panic!("{operation} should fail with {kind} ({status}), but answered {value:?}"),
        Err(error) => error,
    };
    assert_eq!(error.kind(), kind, "class of {error}");
    assert_eq!(error.status(), Some(status), "status of {error}");
    assert_eq!(error.operation(), operation, "operation of {error}");
    assert!(!error.outcome_unknown(), "an answer, not a lost response: {error}");
    error
}

fn strings(values: &[&str]) -> Vec<String> {
    values.iter().map(|value| value.to_string()).collect()
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(key, value)| (key.to_string(), value.to_string())).collect()
}

fn network_request(name: &str, label_pairs: &[(&str, &str)]) -> NetworkAllocateRequest {
    NetworkAllocateRequest {
        project_id: PROJECT.to_string(),
        partition_id: PARTITION.to_string(),
        name: name.to_string(),
        description: format!("contract test network {name}"),
        labels: labels(label_pairs),
        ..NetworkAllocateRequest::default()
    }
}

/// A project network in the partition (a child of the super network).
async fn node_network(harness: &Harness, name: &str) -> Network {
    let request = network_request(name, &[(tags::CLUSTER_ID, name)]);
    harness.backend.allocate_network(&request).await.expect("a node network allocates")
}

fn machine_request(network_id: &str, name: &str, tags: &[&str]) -> MachineAllocateRequest {
    MachineAllocateRequest {
        project_id: PROJECT.to_string(),
        partition_id: PARTITION.to_string(),
        size_id: SIZE.to_string(),
        image_id: IMAGE.to_string(),
        name: name.to_string(),
        hostname: name.to_string(),
        description: format!("contract test machine {name}"),
        networks: vec![NetworkRequest::auto(network_id)],
        tags: strings(tags),
        ..MachineAllocateRequest::default()
    }
}

async fn allocate(harness: &Harness, network_id: &str, name: &str, tags: &[&str]) -> Machine {
    let request = machine_request(network_id, name, tags);
    harness.backend.allocate_machine(&request).await.expect("a machine allocates")
}

fn firewall_rules() -> FirewallRules {
    FirewallRules {
        egress: vec![EgressRule {
            protocol: Protocol::Tcp,
            ports: vec![80, 443],
            to: strings(&["0.0.0.0/0"]),
            comment: "allow web egress".to_string(),
        }],
        ingress: vec![IngressRule {
            protocol: Protocol::Udp,
            ports: vec![53],
            from: strings(&["10.0.0.0/8"]),
            to: vec![],
            comment: "dns_in-bound".to_string(),
        }],
    }
}

fn firewall_request(
    network_id: &str,
    name: &str,
    tags: &[&str],
    rules: FirewallRules,
) -> FirewallAllocateRequest {
    let mut machine = machine_request(network_id, name, tags);
    machine.image_id = FIREWALL_IMAGE.to_string();
    machine.networks = vec![NetworkRequest::auto(INTERNET), NetworkRequest::auto(network_id)];
    FirewallAllocateRequest { machine, rules }
}

fn ip_request(network_id: &str, name: &str, tags: &[&str]) -> IpAllocateRequest {
    IpAllocateRequest {
        network_id: network_id.to_string(),
        project_id: PROJECT.to_string(),
        ip_type: IpType::Ephemeral,
        name: name.to_string(),
        description: format!("contract test ip {name}"),
        tags: strings(tags),
        ..IpAllocateRequest::default()
    }
}

fn prefix(text: &str) -> IpNet {
    text.parse().unwrap_or_else(|_| panic!("{text:?} is a prefix"))
}

fn address(text: &str) -> IpAddr {
    text.parse().unwrap_or_else(|_| panic!("{text:?} is an address"))
}

fn in_prefix(address_text: &str, prefix_text: &str) -> bool {
    prefix(prefix_text).contains(&address(address_text))
}

/// The machine's entry for a network, which must exist.
fn attached<'a>(machine: &'a Machine, network_id: &str) -> &'a capms_core::metal::MachineNetwork {
    let allocation = machine.allocation.as_ref().expect("the machine is allocated");
    allocation
        .networks
        .iter()
        .find(|network| network.network_id == network_id)
        .unwrap_or_else(|| panic!("machine {} is attached to network {network_id}", machine.id))
}

fn ids(machines: &[Machine]) -> BTreeSet<String> {
    machines.iter().map(|machine| machine.id.clone()).collect()
}

fn network_ids(networks: &[Network]) -> BTreeSet<String> {
    networks.iter().map(|network| network.id.clone()).collect()
}

/// Every machine of the partition, through the backend.
async fn partition_machines(harness: &Harness) -> Vec<Machine> {
    let query = MachineQuery { partition_id: Some(PARTITION.to_string()), ..MachineQuery::default() };
    harness.backend.find_machines(&query).await.expect("find machines answers")
}

/// A free machine of the partition, found through the backend.
async fn some_free_machine(harness: &Harness) -> Machine {
    partition_machines(harness)
        .await
        .into_iter()
        .find(|machine| machine.allocation.is_none())
        .expect("the partition has a free machine")
}

async fn project_machines(harness: &Harness) -> Vec<Machine> {
    let query = MachineQuery { allocation_project: Some(PROJECT.to_string()), ..MachineQuery::default() };
    harness.backend.find_machines(&query).await.expect("find machines answers")
}

// ---------------------------------------------------------------------------------------------
// Machines
// ---------------------------------------------------------------------------------------------

pub async fn allocated_machine_is_returned_by_get_with_its_allocation(harness: Harness) {
    let network = node_network(&harness, "get").await;
    let mut request = machine_request(&network.id, "worker-0", &["purpose=worker"]);
    request.ssh_pub_keys = vec![SSH_KEY.to_string()];
    request.user_data = Some(UserData::new("#cloud-config\n"));
    let allocated = harness.backend.allocate_machine(&request).await.expect("the machine allocates");

    let machine = harness.backend.get_machine(&allocated.id).await.expect("the machine is found");
    assert_eq!(machine.id, allocated.id);
    assert_eq!(machine.partition_id, PARTITION);
    assert_eq!(machine.size_id, SIZE);
    let allocation = machine.allocation.as_ref().expect("the machine is allocated");
    let answered = allocated.allocation.as_ref().expect("the allocate answer carries the allocation");
    assert_eq!(allocation.allocation_uuid, answered.allocation_uuid);
    assert!(!allocation.allocation_uuid.is_empty());
    assert_eq!(allocation.project_id, PROJECT);
    assert_eq!(allocation.name, "worker-0");
    assert_eq!(allocation.hostname, "worker-0");
    assert_eq!(allocation.description, "contract test machine worker-0");
    assert_eq!(allocation.role, MachineRole::Machine);
    assert_eq!(allocation.image_id, IMAGE);
    assert_eq!(allocation.ssh_pub_keys, vec![SSH_KEY.to_string()]);
    assert_eq!(allocation.user_data.as_ref().map(UserData::expose), Some("#cloud-config\n"));
    assert_eq!(machine.role(), Some(MachineRole::Machine));
    assert_eq!(machine.project_id(), Some(PROJECT));

    let node = attached(&machine, &network.id);
    assert_eq!(node.network_type, NetworkType::PrivatePrimaryUnshared);
    assert!(node.private);
    assert!(!node.underlay);
    assert!(!node.ips.is_empty(), "the machine got an IP in its node network");
    for ip in &node.ips {
        assert!(
            network.prefixes.iter().any(|prefix| in_prefix(ip, prefix)),
            "{ip} lies in the node network {:?}",
            network.prefixes
        );
    }
}

pub async fn machine_gets_one_ephemeral_ip_per_family_in_its_node_network(harness: Harness) {
    let network = node_network(&harness, "ips").await;
    let machine = allocate(&harness, &network.id, "worker-ips", &[]).await;
    let node = attached(&machine, &network.id);
    for network_prefix in &network.prefixes {
        let inside = node.ips.iter().filter(|ip| in_prefix(ip, network_prefix)).count();
        assert_eq!(inside, 1, "one IP in {network_prefix}, got {:?}", node.ips);
    }

    let query = IpQuery { machine_id: Some(machine.id.clone()), ..IpQuery::default() };
    let ips = harness.backend.find_ips(&query).await.expect("find ips answers");
    let found: BTreeSet<&str> = ips.iter().map(|ip| ip.address.as_str()).collect();
    let expected: BTreeSet<&str> = node.ips.iter().map(String::as_str).collect();
    assert_eq!(found, expected, "the machine's IPs are found by machine id");
    for ip in &ips {
        assert_eq!(ip.ip_type, IpType::Ephemeral);
        assert_eq!(ip.network_id, network.id);
        assert_eq!(ip.project_id, PROJECT);
        assert!(ip.tags.contains(&tags::machine_id_tag(&machine.id)), "machine scope: {:?}", ip.tags);
    }
}

pub async fn allocation_keeps_user_tags_and_adds_rack_chassis_and_asn_labels(harness: Harness) {
    let network = node_network(&harness, "labels").await;
    let user_tags = ["cluster.metal-stack.io/id=default.prod", "purpose=worker", "plain-word", "empty="];
    let machine = allocate(&harness, &network.id, "worker-labels", &user_tags).await;
    let machine = harness.backend.get_machine(&machine.id).await.expect("the machine is found");

    for tag in user_tags {
        assert!(machine.tags.contains(&tag.to_string()), "{tag} kept in {:?}", machine.tags);
    }
    assert_eq!(tags::value(&machine.tags, tags::MACHINE_RACK), Some(machine.rack_id.as_str()));
    let chassis = tags::value(&machine.tags, tags::MACHINE_CHASSIS).expect("a chassis label");
    assert!(!chassis.is_empty());
    let asn = tags::value(&machine.tags, tags::MACHINE_ASN).expect("a primary ASN label");
    let asn: i64 = asn.parse().unwrap_or_else(|_| panic!("the ASN label {asn:?} is a number"));
    assert_eq!(asn, attached(&machine, &network.id).asn, "the ASN of the primary network");
    assert_eq!(machine.tags.len(), user_tags.len() + 3, "nothing else: {:?}", machine.tags);
}

pub async fn duplicate_tag_keys_are_merged_and_the_later_value_wins(harness: Harness) {
    let network = node_network(&harness, "dedup").await;
    let rack_override = tags::tag(tags::MACHINE_RACK, "my-own-rack");
    let user_tags = ["a=1", "word", "a=2", "word", "b=x", rack_override.as_str()];
    let machine = allocate(&harness, &network.id, "worker-dedup", &user_tags).await;
    let machine = harness.backend.get_machine(&machine.id).await.expect("the machine is found");

    let count = |wanted: &str| machine.tags.iter().filter(|tag| tag.as_str() == wanted).count();
    assert_eq!(count("a=2"), 1, "the later value wins: {:?}", machine.tags);
    assert_eq!(count("a=1"), 0, "the earlier value is gone: {:?}", machine.tags);
    assert_eq!(count("word"), 1, "plain words are de-duplicated: {:?}", machine.tags);
    assert_eq!(count("b=x"), 1);
    let racks = machine.tags.iter().filter(|tag| tags::split(tag).0 == tags::MACHINE_RACK).count();
    assert_eq!(racks, 1, "one rack label: {:?}", machine.tags);
    assert_eq!(
        tags::value(&machine.tags, tags::MACHINE_RACK),
        Some(machine.rack_id.as_str()),
        "system labels override user values"
    );
}

pub async fn allocation_without_hostname_gets_hostname_metal(harness: Harness) {
    let network = node_network(&harness, "hostname").await;
    let mut request = machine_request(&network.id, "no-hostname", &[]);
    request.hostname = String::new();
    let machine = harness.backend.allocate_machine(&request).await.expect("the machine allocates");
    let machine = harness.backend.get_machine(&machine.id).await.expect("the machine is found");
    let allocation = machine.allocation.expect("the machine is allocated");
    assert_eq!(allocation.hostname, "metal");
    assert_eq!(allocation.name, "no-hostname");
}

pub async fn allocation_is_not_idempotent(harness: Harness) {
    let network = node_network(&harness, "twice").await;
    let tag = tags::tag(tags::MACHINE_RESOURCE, "default.worker-twice");
    let request = machine_request(&network.id, "worker-twice", &[tag.as_str()]);
    let first = harness.backend.allocate_machine(&request).await.expect("the first allocate succeeds");
    let second = harness.backend.allocate_machine(&request).await.expect("the repeated allocate succeeds");
    assert_ne!(first.id, second.id, "a repeated allocate allocates another machine");

    let query = MachineQuery { tags: vec![tag], ..MachineQuery::default() };
    let found = harness.backend.find_machines(&query).await.expect("find machines answers");
    assert_eq!(ids(&found), BTreeSet::from([first.id, second.id]));
}

pub async fn find_machines_by_tags_is_an_and_of_exact_strings(harness: Harness) {
    let network = node_network(&harness, "find").await;
    let blue = allocate(&harness, &network.id, "blue", &["team=blue", "tier=web"]).await;
    let green = allocate(&harness, &network.id, "green", &["team=green", "tier=web"]).await;

    let find = |tags: &[&str]| {
        let query = MachineQuery { tags: strings(tags), ..MachineQuery::default() };
        let backend = harness.backend.clone();
        async move { ids(&backend.find_machines(&query).await.expect("find machines answers")) }
    };
    assert_eq!(find(&["tier=web"]).await, BTreeSet::from([blue.id.clone(), green.id.clone()]));
    assert_eq!(find(&["tier=web", "team=blue"]).await, BTreeSet::from([blue.id.clone()]));
    assert_eq!(find(&["team=blue", "team=green"]).await, BTreeSet::new(), "AND, not OR");
    assert_eq!(find(&["team"]).await, BTreeSet::new(), "no key-only match");
    assert_eq!(find(&["team="]).await, BTreeSet::new(), "no prefix match");
    assert_eq!(find(&["team=blu"]).await, BTreeSet::new(), "no prefix match");
    assert_eq!(find(&["tier=web", "team=blue", "x=y"]).await, BTreeSet::new(), "every tag must match");

    let query = MachineQuery {
        tags: strings(&["tier=web"]),
        allocation_name: Some("green".to_string()),
        ..MachineQuery::default()
    };
    let found = harness.backend.find_machines(&query).await.expect("find machines answers");
    assert_eq!(ids(&found), BTreeSet::from([green.id]), "tags AND other filters");
}

pub async fn absent_filter_matches_everything_but_empty_string_matches_only_empty_values(harness: Harness) {
    let network = node_network(&harness, "filters").await;

    let everything = MachineQuery::default();
    let all = harness.backend.find_machines(&everything).await.expect("find machines answers");
    assert_eq!(all.len(), MACHINES, "no filter: every machine");
    let empty_partition = MachineQuery { partition_id: Some(String::new()), ..MachineQuery::default() };
    let none = harness.backend.find_machines(&empty_partition).await.expect("find machines answers");
    assert!(none.is_empty(), "\"\" is a filter value, and no machine has an empty partition");

    let all = harness.backend.find_networks(&NetworkQuery::default()).await.expect("find networks answers");
    assert!(all.iter().any(|n| n.id == network.id), "no filter: the project network too");
    assert!(all.iter().any(|n| n.id == INTERNET));
    let without_project = NetworkQuery { project_id: Some(String::new()), ..NetworkQuery::default() };
    let found = harness.backend.find_networks(&without_project).await.expect("find networks answers");
    let found = network_ids(&found);
    assert!(found.contains(INTERNET), "operator networks have the empty project: {found:?}");
    assert!(found.contains(SUPER_NETWORK), "{found:?}");
    assert!(found.contains(UNDERLAY), "{found:?}");
    assert!(!found.contains(&network.id), "the project's network does not have the empty project");
}

pub async fn find_returns_an_empty_list_when_nothing_matches(harness: Harness) {
    let network = node_network(&harness, "nothing").await;
    allocate(&harness, &network.id, "somebody", &["present=yes"]).await;
    let absent = strings(&["present=no"]);

    let machines = MachineQuery { tags: absent.clone(), ..MachineQuery::default() };
    assert_eq!(harness.backend.find_machines(&machines).await.expect("an answer, not an error"), vec![]);
    assert_eq!(harness.backend.find_firewalls(&machines).await.expect("an answer, not an error"), vec![]);
    let by_project = MachineQuery { allocation_project: Some(UNKNOWN_PROJECT.into()), ..Default::default() };
    assert_eq!(harness.backend.find_machines(&by_project).await.expect("an answer, not an error"), vec![]);
    let networks = NetworkQuery { labels: labels(&[("present", "no")]), ..NetworkQuery::default() };
    assert_eq!(harness.backend.find_networks(&networks).await.expect("an answer, not an error"), vec![]);
    let ips = IpQuery { tags: absent, ..IpQuery::default() };
    assert_eq!(harness.backend.find_ips(&ips).await.expect("an answer, not an error"), vec![]);
}

pub async fn allocate_without_networks_is_rejected_with_bad_request(harness: Harness) {
    let mut request = machine_request("unused", "no-networks", &[]);
    request.networks.clear();
    let result = harness.backend.allocate_machine(&request).await;
    expect_error(result, Operation::AllocateMachine, ErrorKind::Permanent, 400);
    assert_eq!(project_machines(&harness).await, vec![], "nothing was allocated");
}

pub async fn allocate_into_an_unknown_network_is_not_found(harness: Harness) {
    let request = machine_request("no-such-network", "lost", &[]);
    let result = harness.backend.allocate_machine(&request).await;
    expect_error(result, Operation::AllocateMachine, ErrorKind::NotFound, 404);
    assert_eq!(project_machines(&harness).await, vec![], "nothing was allocated");
}

pub async fn allocate_for_an_unknown_project_is_not_found(harness: Harness) {
    let network = node_network(&harness, "project").await;
    let mut request = machine_request(&network.id, "orphan", &[]);
    request.project_id = UNKNOWN_PROJECT.to_string();
    let result = harness.backend.allocate_machine(&request).await;
    expect_error(result, Operation::AllocateMachine, ErrorKind::NotFound, 404);
}

pub async fn allocate_with_unknown_size_or_partition_is_permanent(harness: Harness) {
    let network = node_network(&harness, "catalog").await;
    let mut unknown_size = machine_request(&network.id, "big", &[]);
    unknown_size.size_id = "v9-huge-x86".to_string();
    let result = harness.backend.allocate_machine(&unknown_size).await;
    expect_error(result, Operation::AllocateMachine, ErrorKind::Permanent, 400);

    let mut unknown_partition = machine_request(&network.id, "far", &[]);
    unknown_partition.partition_id = "atlantis".to_string();
    let result = harness.backend.allocate_machine(&unknown_partition).await;
    expect_error(result, Operation::AllocateMachine, ErrorKind::Permanent, 400);
    assert_eq!(project_machines(&harness).await, vec![], "nothing was allocated");
}

pub async fn machine_with_a_firewall_image_is_permanent(harness: Harness) {
    let network = node_network(&harness, "image").await;
    let mut request = machine_request(&network.id, "confused", &[]);
    request.image_id = FIREWALL_IMAGE.to_string();
    let result = harness.backend.allocate_machine(&request).await;
    expect_error(result, Operation::AllocateMachine, ErrorKind::Permanent, 400);

    request.image_id = "windows-95".to_string();
    let result = harness.backend.allocate_machine(&request).await;
    expect_error(result, Operation::AllocateMachine, ErrorKind::Permanent, 400);
    assert_eq!(project_machines(&harness).await, vec![], "nothing was allocated");
}

pub async fn invalid_ssh_key_is_permanent_and_allocates_nothing(harness: Harness) {
    let network = node_network(&harness, "ssh").await;
    let mut request = machine_request(&network.id, "keyless", &[]);
    request.ssh_pub_keys = vec![SSH_KEY.to_string(), "ssh-rsa not*a*key".to_string()];
    let result = harness.backend.allocate_machine(&request).await;
    expect_error(result, Operation::AllocateMachine, ErrorKind::Permanent, 422);
    assert_eq!(project_machines(&harness).await, vec![], "nothing was allocated");

    request.ssh_pub_keys = vec![SSH_KEY.to_string()];
    let machine = harness.backend.allocate_machine(&request).await.expect("a valid key is accepted");
    assert_eq!(machine.allocation.map(|a| a.ssh_pub_keys), Some(vec![SSH_KEY.to_string()]));
}

pub async fn machine_phones_home_only_after_the_provisioning_time(harness: Harness) {
    let network = node_network(&harness, "provisioning").await;
    let allocated = allocate(&harness, &network.id, "installing", &[]).await;
    assert!(!allocated.is_phoned_home(), "the allocate answer comes before the installation");

    harness.advance(PROVISIONING / 5);
    let early = harness.backend.get_machine(&allocated.id).await.expect("the machine is found");
    assert!(!early.is_phoned_home(), "not phoned home after a fifth of the provisioning time");
    harness.advance(PROVISIONING * 3 / 5);
    let later = harness.backend.get_machine(&allocated.id).await.expect("the machine is found");
    assert!(!later.is_phoned_home(), "not phoned home after four fifths of the provisioning time");
    assert!(later.events.len() > early.events.len(), "provisioning events arrive over time");

    harness.advance(PROVISIONING * 2 / 5);
    let done = harness.backend.get_machine(&allocated.id).await.expect("the machine is found");
    assert!(done.is_phoned_home(), "phoned home after the provisioning time: {:?}", done.events);
    assert_eq!(done.last_event().map(|event| &event.event), Some(&ProvisioningEventKind::PhonedHome));
    for pair in done.events.windows(2) {
        assert!(pair[0].time >= pair[1].time, "events are newest first: {:?}", done.events);
    }
    let position = |kind: ProvisioningEventKind| done.events.iter().position(|event| event.event == kind);
    let installing = position(ProvisioningEventKind::Installing).expect("an Installing event");
    assert!(installing > 0, "Installing is older than Phoned Home");
}

pub async fn machine_is_ready_only_after_phoning_home(harness: Harness) {
    let network = node_network(&harness, "ready").await;
    let machine = allocate(&harness, &network.id, "ready", &[]).await;
    assert!(!machine.is_ready());
    harness.advance(PROVISIONING * 4 / 5);
    let machine = harness.backend.get_machine(&machine.id).await.expect("the machine is found");
    assert!(!machine.is_ready(), "still installing: {:?}", machine.events);
    assert!(machine.is_healthy(), "alive while installing");
    harness.advance(PROVISIONING / 2);
    let machine = harness.backend.get_machine(&machine.id).await.expect("the machine is found");
    assert!(machine.is_ready(), "phoned home and alive: {machine:?}");

    harness.backend.free_machine(&machine.id).await.expect("the machine frees");
    let machine = harness.backend.get_machine(&machine.id).await.expect("the machine is found");
    assert!(!machine.is_ready(), "a freed machine is not a ready node");
}

pub async fn free_answers_the_state_before_and_clears_allocation_and_tags(harness: Harness) {
    let network = node_network(&harness, "free").await;
    let machine = allocate(&harness, &network.id, "doomed", &["doomed=yes"]).await;
    let allocation_uuid = machine.allocation.as_ref().map(|a| a.allocation_uuid.clone());

    let before = harness.backend.free_machine(&machine.id).await.expect("the machine frees");
    assert_eq!(before.id, machine.id);
    assert_eq!(before.allocation.as_ref().map(|a| a.allocation_uuid.clone()), allocation_uuid);
    assert!(before.tags.contains(&"doomed=yes".to_string()), "the answer shows the tags before the free");

    let after = harness.backend.get_machine(&machine.id).await.expect("the machine still exists");
    assert_eq!(after.allocation, None, "the allocation is cleared");
    assert_eq!(after.tags, Vec::<String>::new(), "the tags are wiped");
    let query = MachineQuery { tags: strings(&["doomed=yes"]), ..MachineQuery::default() };
    assert_eq!(harness.backend.find_machines(&query).await.expect("find machines answers"), vec![]);
    assert_eq!(project_machines(&harness).await, vec![], "no machine left in the project");
}

pub async fn free_of_an_already_free_machine_is_accepted(harness: Harness) {
    let network = node_network(&harness, "free-twice").await;
    let machine = allocate(&harness, &network.id, "twice", &[]).await;
    harness.backend.free_machine(&machine.id).await.expect("the first free succeeds");
    let second = harness.backend.free_machine(&machine.id).await.expect("metal-api's free is unconditional");
    assert_eq!(second.id, machine.id);
    assert_eq!(second.allocation, None, "the answer shows the (already free) state before");

    let never_allocated = some_free_machine(&harness).await;
    let answer = harness.backend.free_machine(&never_allocated.id).await.expect("free of a free machine");
    assert_eq!(answer.allocation, None);
}

pub async fn free_or_get_of_an_unknown_machine_is_not_found(harness: Harness) {
    let unknown = "ffffffff-0000-0000-0000-000000000000";
    expect_error(
        harness.backend.free_machine(unknown).await,
        Operation::FreeMachine,
        ErrorKind::NotFound,
        404,
    );
    expect_error(
        harness.backend.get_machine(unknown).await,
        Operation::FindMachine,
        ErrorKind::NotFound,
        404,
    );
}

pub async fn locked_machine_cannot_be_freed_until_unlocked(harness: Harness) {
    let network = node_network(&harness, "locked").await;
    let machine = allocate(&harness, &network.id, "locked", &[]).await;
    assert!(harness.sim.set_machine_state(&machine.id, MachineState::Locked));

    let locked = harness.backend.get_machine(&machine.id).await.expect("the machine is found");
    assert_eq!(locked.state, MachineState::Locked);
    let result = harness.backend.free_machine(&machine.id).await;
    expect_error(result, Operation::FreeMachine, ErrorKind::Permanent, 422);
    let still = harness.backend.get_machine(&machine.id).await.expect("the machine is found");
    assert!(still.allocation.is_some(), "a refused free changes nothing");

    assert!(harness.sim.set_machine_state(&machine.id, MachineState::Available));
    harness.backend.free_machine(&machine.id).await.expect("an unlocked machine frees");
    let freed = harness.backend.get_machine(&machine.id).await.expect("the machine is found");
    assert_eq!(freed.allocation, None);
}

pub async fn exhausted_partition_answers_capacity(harness: Harness) {
    let network = node_network(&harness, "exhaust").await;
    let mut allocated = BTreeSet::new();
    for index in 0..MACHINES {
        let machine = allocate(&harness, &network.id, &format!("worker-{index}"), &[]).await;
        allocated.insert(machine.id);
    }
    assert_eq!(allocated.len(), MACHINES, "every machine of the partition, each once");

    let request = machine_request(&network.id, "one-too-many", &[]);
    let result = harness.backend.allocate_machine(&request).await;
    let error = expect_error(result, Operation::AllocateMachine, ErrorKind::Capacity, 422);
    assert!(error.kind().is_retryable());
    assert_eq!(ids(&project_machines(&harness).await), allocated, "the failed allocate took nothing");
}

pub async fn capacity_limit_answers_capacity(harness: Harness) {
    let network = node_network(&harness, "limited").await;
    harness.sim.set_capacity(PARTITION, SIZE, Some(1));
    allocate(&harness, &network.id, "lucky", &[]).await;
    let request = machine_request(&network.id, "unlucky", &[]);
    let result = harness.backend.allocate_machine(&request).await;
    expect_error(result, Operation::AllocateMachine, ErrorKind::Capacity, 422);

    harness.sim.set_capacity(PARTITION, SIZE, None);
    harness.backend.allocate_machine(&request).await.expect("capacity is back");
    assert_eq!(project_machines(&harness).await.len(), 2);
}

pub async fn freed_machine_is_allocatable_again_only_after_reclaim(harness: Harness) {
    let network = node_network(&harness, "reclaim").await;
    let mut machines = Vec::new();
    for index in 0..MACHINES {
        machines.push(allocate(&harness, &network.id, &format!("worker-{index}"), &[]).await);
    }
    let freed = machines.first().expect("at least one machine").id.clone();
    harness.backend.free_machine(&freed).await.expect("the machine frees");

    let request = machine_request(&network.id, "next", &[]);
    let result = harness.backend.allocate_machine(&request).await;
    expect_error(result, Operation::AllocateMachine, ErrorKind::Capacity, 422);

    harness.advance(RECLAIM + RECLAIM / 2);
    let reclaimed = harness.backend.get_machine(&freed).await.expect("the machine is found");
    assert_eq!(reclaimed.last_event().map(|event| &event.event), Some(&ProvisioningEventKind::Waiting));
    let next = harness.backend.allocate_machine(&request).await.expect("the reclaimed machine allocates");
    assert_eq!(next.id, freed, "the only free machine is the reclaimed one");
}

pub async fn pinned_machine_is_allocated_and_a_taken_pinned_machine_is_permanent(harness: Harness) {
    let network = node_network(&harness, "pinned").await;
    let wanted = some_free_machine(&harness).await;
    let mut request = machine_request(&network.id, "pinned", &[]);
    request.machine_id = Some(wanted.id.clone());
    let machine = harness.backend.allocate_machine(&request).await.expect("the pinned machine allocates");
    assert_eq!(machine.id, wanted.id);

    let result = harness.backend.allocate_machine(&request).await;
    let error = expect_error(result, Operation::AllocateMachine, ErrorKind::Permanent, 422);
    assert!(!error.kind().is_retryable(), "waiting does not free a machine someone else holds");
    assert_eq!(project_machines(&harness).await.len(), 1, "the refused allocate took nothing");

    request.machine_id = Some("ffffffff-0000-0000-0000-000000000000".to_string());
    let result = harness.backend.allocate_machine(&request).await;
    expect_error(result, Operation::AllocateMachine, ErrorKind::NotFound, 404);
}

pub async fn reallocation_of_a_machine_gets_a_new_allocation_uuid(harness: Harness) {
    let network = node_network(&harness, "realloc").await;
    let wanted = some_free_machine(&harness).await;
    let mut request = machine_request(&network.id, "again", &[]);
    request.machine_id = Some(wanted.id.clone());
    let first = harness.backend.allocate_machine(&request).await.expect("the first allocation");
    harness.backend.free_machine(&wanted.id).await.expect("the machine frees");
    harness.advance(RECLAIM * 2);
    let second = harness.backend.allocate_machine(&request).await.expect("the second allocation");

    assert_eq!(first.id, second.id);
    let uuid = |machine: &Machine| machine.allocation.as_ref().map(|a| a.allocation_uuid.clone());
    assert!(uuid(&first).is_some());
    assert_ne!(uuid(&first), uuid(&second), "a new allocation uuid tells the re-allocation apart");
}

pub async fn placement_tags_spread_machines_over_racks(harness: Harness) {
    let network = node_network(&harness, "spread").await;
    let placement = tags::tag(tags::CLUSTER_ID, "default.spread");
    let mut racks = BTreeSet::new();
    for index in 0..2 {
        let mut request = machine_request(&network.id, &format!("cp-{index}"), &[placement.as_str()]);
        request.placement_tags = vec![placement.clone()];
        let machine = harness.backend.allocate_machine(&request).await.expect("the machine allocates");
        racks.insert(machine.rack_id);
    }
    assert_eq!(racks.len(), 2, "two machines with the same placement tags go to two racks: {racks:?}");
}

// ---------------------------------------------------------------------------------------------
// Firewalls
// ---------------------------------------------------------------------------------------------

pub async fn get_firewall_of_a_plain_machine_is_not_found(harness: Harness) {
    let network = node_network(&harness, "plain").await;
    let machine = allocate(&harness, &network.id, "plain", &[]).await;
    let result = harness.backend.get_firewall(&machine.id).await;
    expect_error(result, Operation::FindFirewall, ErrorKind::NotFound, 404);
    let unknown = harness.backend.get_firewall("ffffffff-0000-0000-0000-000000000000").await;
    expect_error(unknown, Operation::FindFirewall, ErrorKind::NotFound, 404);
}

pub async fn firewall_allocation_adds_the_underlay_and_keeps_its_rules(harness: Harness) {
    let network = node_network(&harness, "firewalled").await;
    let request = firewall_request(&network.id, "fw", &["purpose=firewall"], firewall_rules());
    let allocated = harness.backend.allocate_firewall(&request).await.expect("the firewall allocates");

    let firewall = harness.backend.get_firewall(&allocated.id).await.expect("the firewall is found");
    assert_eq!(firewall.role(), Some(MachineRole::Firewall));
    let allocation = firewall.allocation.as_ref().expect("the firewall is allocated");
    assert_eq!(allocation.image_id, FIREWALL_IMAGE);
    assert_eq!(allocation.firewall_rules, Some(firewall_rules()), "the rules are kept");
    assert!(firewall.tags.contains(&"purpose=firewall".to_string()));

    let underlay = attached(&firewall, UNDERLAY);
    assert!(underlay.underlay);
    assert_eq!(underlay.network_type, NetworkType::Underlay);
    let internet = attached(&firewall, INTERNET);
    assert_eq!(internet.network_type, NetworkType::External);
    assert!(!internet.ips.is_empty(), "an address in the internet network");
    let node = attached(&firewall, &network.id);
    assert!(node.private);
    assert!(!node.ips.is_empty(), "an address in the node network");
    assert_eq!(allocation.networks.len(), 3, "the requested networks plus the underlay");

    let machine = harness.backend.get_machine(&allocated.id).await.expect("a firewall is a machine");
    assert_eq!(machine.role(), Some(MachineRole::Firewall));
}

pub async fn firewall_with_a_machine_image_is_permanent(harness: Harness) {
    let network = node_network(&harness, "fw-image").await;
    let mut request = firewall_request(&network.id, "fw", &[], firewall_rules());
    request.machine.image_id = IMAGE.to_string();
    let result = harness.backend.allocate_firewall(&request).await;
    expect_error(result, Operation::AllocateFirewall, ErrorKind::Permanent, 400);
    let all = harness.backend.find_firewalls(&MachineQuery::default()).await.expect("find firewalls answers");
    assert_eq!(all, vec![], "nothing was allocated");
}

pub async fn invalid_firewall_rules_are_permanent_and_allocate_nothing(harness: Harness) {
    let network = node_network(&harness, "bad-rules").await;

    let mut comment = firewall_rules();
    comment.egress[0].comment = "allow; drop table".to_string();
    let mut port = firewall_rules();
    port.egress[0].ports = vec![443, 65536];
    let mut mixed = firewall_rules();
    mixed.ingress[0].from = strings(&["10.0.0.0/8"]);
    mixed.ingress[0].to = strings(&["2001:db8::/64"]);

    for (what, rules) in [("comment characters", comment), ("port range", port), ("mixed families", mixed)] {
        let request = firewall_request(&network.id, "fw", &[], rules);
        let result = harness.backend.allocate_firewall(&request).await;
        let error = expect_error(result, Operation::AllocateFirewall, ErrorKind::Permanent, 400);
        assert!(!error.message().is_empty(), "{what}: metal-api says why");
    }
    let all = harness.backend.find_firewalls(&MachineQuery::default()).await.expect("find firewalls answers");
    assert_eq!(all, vec![], "nothing was allocated");
    assert_eq!(project_machines(&harness).await, vec![]);
}

pub async fn find_firewalls_returns_only_firewalls(harness: Harness) {
    let network = node_network(&harness, "mixed").await;
    let cluster = "cluster.metal-stack.io/id=default.mixed";
    let machine = allocate(&harness, &network.id, "worker", &[cluster]).await;
    let request = firewall_request(&network.id, "fw", &[cluster], firewall_rules());
    let firewall = harness.backend.allocate_firewall(&request).await.expect("the firewall allocates");

    let query = MachineQuery { tags: strings(&[cluster]), ..MachineQuery::default() };
    let machines = harness.backend.find_machines(&query).await.expect("find machines answers");
    assert_eq!(ids(&machines), BTreeSet::from([machine.id.clone(), firewall.id.clone()]));
    let firewalls = harness.backend.find_firewalls(&query).await.expect("find firewalls answers");
    assert_eq!(ids(&firewalls), BTreeSet::from([firewall.id.clone()]));
    let all = harness.backend.find_firewalls(&MachineQuery::default()).await.expect("find firewalls answers");
    assert_eq!(ids(&all), BTreeSet::from([firewall.id.clone()]), "never a plain machine");
    let as_machine = MachineQuery { allocation_role: Some(MachineRole::Machine), ..MachineQuery::default() };
    let plain = harness.backend.find_machines(&as_machine).await.expect("find machines answers");
    assert_eq!(ids(&plain), BTreeSet::from([machine.id]));
}

// ---------------------------------------------------------------------------------------------
// Networks
// ---------------------------------------------------------------------------------------------

pub async fn network_allocation_carves_one_child_prefix_per_family_from_the_super_network(harness: Harness) {
    let request = network_request("carved", &[("purpose", "nodes")]);
    let network = harness.backend.allocate_network(&request).await.expect("the network allocates");
    assert_eq!(network.parent_network_id.as_deref(), Some(SUPER_NETWORK));
    assert_eq!(network.project_id.as_deref(), Some(PROJECT));
    assert_eq!(network.partition_id.as_deref(), Some(PARTITION));
    assert_eq!(network.name, "carved");
    assert_eq!(network.labels, labels(&[("purpose", "nodes")]));
    assert!(!network.private_super && !network.underlay);
    assert!(network.is_private());
    assert!(network.vrf.is_some(), "a child network has its own VRF");

    let super_network = harness.backend.get_network(SUPER_NETWORK).await.expect("the super network exists");
    assert_eq!(network.prefixes.len(), 2, "one prefix per family: {:?}", network.prefixes);
    for (family, length) in [(AddressFamily::IPv4, 22), (AddressFamily::IPv6, 96)] {
        let child: Vec<&String> =
            network.prefixes.iter().filter(|p| AddressFamily::of(p) == family).collect();
        assert_eq!(child.len(), 1, "one {} prefix: {:?}", family.as_str(), network.prefixes);
        let child = prefix(child[0]);
        assert_eq!(child.prefix_len(), length, "{} child length", family.as_str());
        assert!(
            super_network.prefixes.iter().any(|parent| prefix(parent).contains(&child)),
            "{child} lies in the super network {:?}",
            super_network.prefixes
        );
    }
    let found = harness.backend.get_network(&network.id).await.expect("the network is found");
    assert_eq!(found, network);
}

pub async fn two_network_allocations_are_disjoint(harness: Harness) {
    let first = node_network(&harness, "first").await;
    let second = node_network(&harness, "second").await;
    assert_ne!(first.id, second.id);
    assert_ne!(first.vrf, second.vrf);
    for a in &first.prefixes {
        for b in &second.prefixes {
            let (a, b) = (prefix(a), prefix(b));
            assert!(!a.contains(&b.network()) && !b.contains(&a.network()), "{a} and {b} overlap");
        }
    }
}

pub async fn find_networks_by_labels_is_an_and_of_exact_matches(harness: Harness) {
    let blue = harness
        .backend
        .allocate_network(&network_request("blue", &[("cluster", "prod"), ("team", "blue")]))
        .await
        .expect("the network allocates");
    let green = harness
        .backend
        .allocate_network(&network_request("green", &[("cluster", "prod"), ("team", "green")]))
        .await
        .expect("the network allocates");

    let find = |pairs: &[(&str, &str)]| {
        let query = NetworkQuery { labels: labels(pairs), ..NetworkQuery::default() };
        let backend = harness.backend.clone();
        async move { network_ids(&backend.find_networks(&query).await.expect("find networks answers")) }
    };
    assert_eq!(find(&[("cluster", "prod")]).await, BTreeSet::from([blue.id.clone(), green.id.clone()]));
    assert_eq!(find(&[("cluster", "prod"), ("team", "green")]).await, BTreeSet::from([green.id.clone()]));
    assert_eq!(find(&[("cluster", "pro")]).await, BTreeSet::new(), "no prefix match");
    assert_eq!(find(&[("cluster", "")]).await, BTreeSet::new(), "an empty value is a value");
    assert_eq!(
        find(&[("cluster", "prod"), ("tier", "web")]).await,
        BTreeSet::new(),
        "every label must match"
    );
    assert_eq!(
        find(&[(tags::DEFAULT_EXTERNAL_NETWORK, "")]).await,
        BTreeSet::from([INTERNET.to_string()]),
        "the default external network carries the label with an empty value"
    );
}

pub async fn find_networks_by_project_partition_and_kind(harness: Harness) {
    let first = node_network(&harness, "first").await;
    let second = node_network(&harness, "second").await;

    let find = |query: NetworkQuery| {
        let backend = harness.backend.clone();
        async move { network_ids(&backend.find_networks(&query).await.expect("find networks answers")) }
    };
    let project = NetworkQuery {
        project_id: Some(PROJECT.to_string()),
        partition_id: Some(PARTITION.to_string()),
        ..NetworkQuery::default()
    };
    assert_eq!(find(project).await, BTreeSet::from([first.id.clone(), second.id.clone()]));
    let other_project = NetworkQuery { project_id: Some(UNKNOWN_PROJECT.to_string()), ..Default::default() };
    assert_eq!(find(other_project).await, BTreeSet::new());
    let other_partition = NetworkQuery {
        project_id: Some(PROJECT.to_string()),
        partition_id: Some("atlantis".to_string()),
        ..NetworkQuery::default()
    };
    assert_eq!(find(other_partition).await, BTreeSet::new());
    let super_network = NetworkQuery {
        partition_id: Some(PARTITION.to_string()),
        private_super: Some(true),
        ..NetworkQuery::default()
    };
    assert_eq!(find(super_network).await, BTreeSet::from([SUPER_NETWORK.to_string()]));
    let underlay = NetworkQuery {
        partition_id: Some(PARTITION.to_string()),
        underlay: Some(true),
        ..NetworkQuery::default()
    };
    assert_eq!(find(underlay).await, BTreeSet::from([UNDERLAY.to_string()]));
    let children = NetworkQuery { parent_network_id: Some(SUPER_NETWORK.to_string()), ..Default::default() };
    assert_eq!(find(children).await, BTreeSet::from([first.id, second.id]));
}

pub async fn network_allocate_without_project_or_partition_is_permanent(harness: Harness) {
    let mut no_project = network_request("no-project", &[]);
    no_project.project_id = String::new();
    let result = harness.backend.allocate_network(&no_project).await;
    expect_error(result, Operation::AllocateNetwork, ErrorKind::Permanent, 400);

    let mut no_partition = network_request("no-partition", &[]);
    no_partition.partition_id = String::new();
    let result = harness.backend.allocate_network(&no_partition).await;
    expect_error(result, Operation::AllocateNetwork, ErrorKind::Permanent, 400);

    let query = NetworkQuery { project_id: Some(PROJECT.to_string()), ..NetworkQuery::default() };
    let networks = harness.backend.find_networks(&query).await.expect("find networks answers");
    assert_eq!(networks, vec![], "nothing was allocated");
}

pub async fn network_free_fails_until_ips_of_freed_machine_are_released(harness: Harness) {
    let network = node_network(&harness, "busy").await;
    let machine = allocate(&harness, &network.id, "tenant", &[]).await;

    let result = harness.backend.free_network(&network.id).await;
    let error = expect_error(result, Operation::FreeNetwork, ErrorKind::Transient, 422);
    assert!(error.network_has_ips(), "{error}");

    harness.backend.free_machine(&machine.id).await.expect("the machine frees");
    let result = harness.backend.free_network(&network.id).await;
    let error = expect_error(result, Operation::FreeNetwork, ErrorKind::Transient, 422);
    assert!(error.network_has_ips(), "right after the machine free: {error}");
    harness.backend.get_network(&network.id).await.expect("a refused free keeps the network");

    harness.advance(IP_RELEASE * 4);
    let query = IpQuery { network_id: Some(network.id.clone()), ..IpQuery::default() };
    assert_eq!(harness.backend.find_ips(&query).await.expect("find ips answers"), vec![]);
    let freed =
        harness.backend.free_network(&network.id).await.expect("the network frees once its IPs are gone");
    assert_eq!(freed.id, network.id);
    let result = harness.backend.get_network(&network.id).await;
    expect_error(result, Operation::FindNetwork, ErrorKind::NotFound, 404);
}

pub async fn free_network_twice_is_not_found(harness: Harness) {
    let network = node_network(&harness, "short-lived").await;
    harness.backend.free_network(&network.id).await.expect("an empty network frees");
    let result = harness.backend.free_network(&network.id).await;
    expect_error(result, Operation::FreeNetwork, ErrorKind::NotFound, 404);
    let result = harness.backend.get_network("no-such-network").await;
    expect_error(result, Operation::FindNetwork, ErrorKind::NotFound, 404);
}

// ---------------------------------------------------------------------------------------------
// IPs
// ---------------------------------------------------------------------------------------------

pub async fn ip_allocate_get_find_by_tags_and_free(harness: Harness) {
    let cluster = "cluster.metal-stack.io/id=default.prod";
    let purpose = "purpose=control-plane";
    let request = ip_request(INTERNET, "prod-control-plane", &[purpose, cluster, cluster]);
    let ip = harness.backend.allocate_ip(&request).await.expect("the IP allocates");
    assert!(in_prefix(&ip.address, "203.0.113.128/25") || in_prefix(&ip.address, "2001:db8:0:113::/64"));
    assert_eq!(ip.network_id, INTERNET);
    assert_eq!(ip.project_id, PROJECT);
    assert_eq!(ip.ip_type, IpType::Ephemeral);
    assert_eq!(ip.name, "prod-control-plane");
    assert_eq!(ip.tags, strings(&[cluster, purpose]), "tags are de-duplicated and sorted");
    assert!(!ip.allocation_uuid.is_empty());

    let found = harness.backend.get_ip(&ip.address).await.expect("the IP is found by its address");
    assert_eq!(found, ip);
    let other = harness.backend.allocate_ip(&ip_request(INTERNET, "other", &[cluster])).await;
    let other = other.expect("another IP allocates");
    assert_ne!(other.address, ip.address);

    let find = |tags: &[&str]| {
        let query = IpQuery { tags: strings(tags), ..IpQuery::default() };
        let backend = harness.backend.clone();
        async move {
            let ips: Vec<Ip> = backend.find_ips(&query).await.expect("find ips answers");
            ips.into_iter().map(|ip| ip.address).collect::<BTreeSet<_>>()
        }
    };
    assert_eq!(find(&[cluster]).await, BTreeSet::from([ip.address.clone(), other.address.clone()]));
    assert_eq!(find(&[cluster, purpose]).await, BTreeSet::from([ip.address.clone()]));
    assert_eq!(find(&["purpose"]).await, BTreeSet::new(), "no key-only match");

    let freed = harness.backend.free_ip(&ip.address).await.expect("the IP frees");
    assert_eq!(freed.address, ip.address);
    expect_error(harness.backend.get_ip(&ip.address).await, Operation::FindIp, ErrorKind::NotFound, 404);
    assert_eq!(find(&[cluster]).await, BTreeSet::from([other.address]));
}

pub async fn ip_allocation_by_address_family_picks_that_family(harness: Harness) {
    let mut request = ip_request(INTERNET, "v6", &[]);
    request.address_family = Some(AddressFamily::IPv6);
    let v6 = harness.backend.allocate_ip(&request).await.expect("an IPv6 address allocates");
    assert!(address(&v6.address).is_ipv6(), "{}", v6.address);
    assert!(in_prefix(&v6.address, "2001:db8:0:113::/64"), "{}", v6.address);

    request.address_family = Some(AddressFamily::IPv4);
    let v4 = harness.backend.allocate_ip(&request).await.expect("an IPv4 address allocates");
    assert!(in_prefix(&v4.address, "203.0.113.128/25"), "{}", v4.address);

    let query = IpQuery { address_family: Some(AddressFamily::IPv6), ..IpQuery::default() };
    let found = harness.backend.find_ips(&query).await.expect("find ips answers");
    assert_eq!(found.into_iter().map(|ip| ip.address).collect::<Vec<_>>(), vec![v6.address.clone()]);
    let found = harness.backend.get_ip(&v6.address).await.expect("an IPv6 address is an id too");
    assert_eq!(found.address, v6.address);
}

pub async fn specific_ip_allocated_twice_conflicts(harness: Harness) {
    let request = ip_request(INTERNET, "fixed", &[]);
    let ip = harness.backend.allocate_specific_ip("203.0.113.200", &request).await.expect("the IP allocates");
    assert_eq!(ip.address, "203.0.113.200");
    let result = harness.backend.allocate_specific_ip("203.0.113.200", &request).await;
    expect_error(result, Operation::AllocateSpecificIp, ErrorKind::Conflict, 409);
    let still = harness.backend.get_ip("203.0.113.200").await.expect("the first allocation stands");
    assert_eq!(still.allocation_uuid, ip.allocation_uuid);
}

pub async fn specific_ip_outside_the_network_is_permanent(harness: Harness) {
    let request = ip_request(INTERNET, "astray", &[]);
    let result = harness.backend.allocate_specific_ip("10.99.0.1", &request).await;
    expect_error(result, Operation::AllocateSpecificIp, ErrorKind::Permanent, 422);
    let result = harness.backend.get_ip("10.99.0.1").await;
    expect_error(result, Operation::FindIp, ErrorKind::NotFound, 404);
}

pub async fn ip_with_machine_scope_cannot_be_freed(harness: Harness) {
    let network = node_network(&harness, "scoped").await;
    let machine = allocate(&harness, &network.id, "holder", &[]).await;
    let address = attached(&machine, &network.id).ips.first().expect("the machine has an IP").clone();

    let result = harness.backend.free_ip(&address).await;
    expect_error(result, Operation::FreeIp, ErrorKind::Permanent, 400);
    let ip = harness.backend.get_ip(&address).await.expect("a refused free keeps the IP");
    assert!(ip.tags.contains(&tags::machine_id_tag(&machine.id)));
}

pub async fn free_or_get_of_an_unknown_ip_is_not_found(harness: Harness) {
    expect_error(harness.backend.free_ip("203.0.113.250").await, Operation::FreeIp, ErrorKind::NotFound, 404);
    expect_error(harness.backend.get_ip("203.0.113.250").await, Operation::FindIp, ErrorKind::NotFound, 404);
}

pub async fn ip_allocate_without_project_is_permanent(harness: Harness) {
    let mut request = ip_request(INTERNET, "homeless", &[]);
    request.project_id = String::new();
    expect_error(
        harness.backend.allocate_ip(&request).await,
        Operation::AllocateIp,
        ErrorKind::Permanent,
        400,
    );
    let result = harness.backend.allocate_specific_ip("203.0.113.201", &request).await;
    expect_error(result, Operation::AllocateSpecificIp, ErrorKind::Permanent, 400);
    assert_eq!(harness.backend.find_ips(&IpQuery::default()).await.expect("find ips answers"), vec![]);
}

pub async fn ip_allocate_in_an_unknown_network_is_not_found(harness: Harness) {
    let request = ip_request("no-such-network", "nowhere", &[]);
    expect_error(
        harness.backend.allocate_ip(&request).await,
        Operation::AllocateIp,
        ErrorKind::NotFound,
        404,
    );
}

pub async fn static_ip_survives_machine_free_and_ephemeral_ips_are_released(harness: Harness) {
    let network = node_network(&harness, "static").await;
    let mut request = ip_request(INTERNET, "ingress", &["purpose=ingress"]);
    request.ip_type = IpType::Static;
    let fixed = harness.backend.allocate_ip(&request).await.expect("a static IP allocates");
    assert_eq!(fixed.ip_type, IpType::Static);

    let mut machine_request = machine_request(&network.id, "edge", &[]);
    machine_request.networks.push(NetworkRequest { network_id: INTERNET.to_string(), auto_acquire: false });
    machine_request.ips = vec![fixed.address.clone()];
    let machine = harness.backend.allocate_machine(&machine_request).await.expect("the machine allocates");
    assert!(attached(&machine, INTERNET).ips.contains(&fixed.address), "the static IP is attached");
    let ephemeral = attached(&machine, &network.id).ips.clone();
    assert!(!ephemeral.is_empty());
    let attached_ip = harness.backend.get_ip(&fixed.address).await.expect("the static IP is found");
    assert!(attached_ip.tags.contains(&tags::machine_id_tag(&machine.id)), "{:?}", attached_ip.tags);

    harness.backend.free_machine(&machine.id).await.expect("the machine frees");
    harness.advance(IP_RELEASE * 4);

    let kept = harness.backend.get_ip(&fixed.address).await.expect("the static IP survives the machine");
    assert_eq!(kept.ip_type, IpType::Static);
    assert_eq!(kept.tags, strings(&["purpose=ingress"]), "only the machine tag is gone");
    for address in &ephemeral {
        let result = harness.backend.get_ip(address).await;
        expect_error(result, Operation::FindIp, ErrorKind::NotFound, 404);
    }
    harness.backend.free_ip(&fixed.address).await.expect("an untagged static IP frees");
}

// ---------------------------------------------------------------------------------------------
// Catalog
// ---------------------------------------------------------------------------------------------

pub async fn catalog_lists_the_partition_size_and_images(harness: Harness) {
    let partitions = harness.backend.list_partitions().await.expect("partitions are listed");
    assert!(partitions.iter().any(|partition| partition.id == PARTITION), "{partitions:?}");
    let partition = harness.backend.get_partition(PARTITION).await.expect("the partition is found");
    assert_eq!(partition.id, PARTITION);

    let sizes = harness.backend.list_sizes().await.expect("sizes are listed");
    assert!(sizes.iter().any(|size| size.id == SIZE), "{sizes:?}");
    let size = harness.backend.get_size(SIZE).await.expect("the size is found");
    assert_eq!(size.id, SIZE);

    let images = harness.backend.list_images().await.expect("images are listed");
    let image_ids: BTreeSet<&str> = images.iter().map(|image| image.id.as_str()).collect();
    for id in ["debian-13.0", "ubuntu-26.4", FIREWALL_IMAGE] {
        assert!(image_ids.contains(id), "{id} in {image_ids:?}");
    }
    let machine_image = harness.backend.get_image(IMAGE).await.expect("the image is found");
    assert_eq!(machine_image.id, IMAGE);
    assert!(machine_image.features.contains(&ImageFeature::Machine));
    assert!(!machine_image.features.contains(&ImageFeature::Firewall));
    let firewall_image = harness.backend.get_image(FIREWALL_IMAGE).await.expect("the image is found");
    assert!(firewall_image.features.contains(&ImageFeature::Firewall));
    assert!(!firewall_image.features.contains(&ImageFeature::Machine));
}

pub async fn partial_image_version_resolves_to_the_newest_match(harness: Harness) {
    let image = harness.backend.get_image("ubuntu-26").await.expect("a partial version resolves");
    assert_eq!(image.id, "ubuntu-26.4");
    let image = harness.backend.get_image("debian-13").await.expect("a partial version resolves");
    assert_eq!(image.id, "debian-13.0");

    let network = node_network(&harness, "partial").await;
    let mut request = machine_request(&network.id, "partial", &[]);
    request.image_id = "ubuntu-26".to_string();
    let machine = harness.backend.allocate_machine(&request).await.expect("a partial image id allocates");
    assert_eq!(machine.allocation.map(|a| a.image_id), Some("ubuntu-26.4".to_string()));
}

pub async fn project_is_found_with_its_tenant(harness: Harness) {
    let project = harness.backend.get_project(PROJECT).await.expect("the project is found");
    assert_eq!(project.id, PROJECT);
    assert_eq!(project.tenant_id, MINI_LAB_TENANT);
}

pub async fn unknown_catalog_ids_are_not_found(harness: Harness) {
    let backend = &harness.backend;
    expect_error(backend.get_partition("atlantis").await, Operation::FindPartition, ErrorKind::NotFound, 404);
    expect_error(backend.get_size("v9-huge-x86").await, Operation::FindSize, ErrorKind::NotFound, 404);
    expect_error(backend.get_image("windows-95").await, Operation::FindImage, ErrorKind::NotFound, 404);
    expect_error(backend.get_image("ubunt").await, Operation::FindImage, ErrorKind::NotFound, 404);
    expect_error(
        backend.get_project(UNKNOWN_PROJECT).await,
        Operation::FindProject,
        ErrorKind::NotFound,
        404,
    );
}

#[cfg(test)]
mod tests {
    use super::NAMES;
    use std::collections::BTreeSet;

    /// Every `pub async fn name(harness: Harness)` of this file is in the suite, once.
    #[test]
    fn every_contract_test_runs_in_the_suite() {
        let defined: Vec<&str> = include_str!("contract.rs")
            .lines()
            .filter_map(|line| line.strip_prefix("pub async fn "))
            .filter(|rest| rest.contains("(harness: Harness)"))
            .filter_map(|rest| rest.split('(').next())
            .collect();
        let listed: BTreeSet<&str> = NAMES.iter().copied().collect();
        assert_eq!(listed.len(), NAMES.len(), "a test is listed twice");
        assert_eq!(defined.iter().copied().collect::<BTreeSet<_>>(), listed);
        assert!(NAMES.len() >= 30);
    }
}

use super::*;
use crate::metal;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// A firewall-less worker as metal-api v0.44 answers `GET /v1/machine/{id}` (abridged by
/// hand from the spec: unknown fields kept to check they are ignored, Go `null` slices kept).
const MACHINE_JSON: &str = r#"{
  "id": "00000000-0000-0000-0000-000000000001",
  "name": "00000000-0000-0000-0000-000000000001",
  "description": "",
  "rackid": "rack-1",
  "roomid": "room-a",
  "liveliness": "Alive",
  "created": "2026-01-02T03:04:05.123456789Z",
  "changed": "2026-01-02T03:14:05Z",
  "tags": ["cluster.metal-stack.io/id=default.my-cluster", "machine.metal-stack.io/rack=rack-1"],
  "partition": {"id": "mini-lab", "name": "mini-lab", "description": "", "bootconfig": {"imageurl": "http://x/img", "kernelurl": "http://x/k", "commandline": ""}, "dns_servers": null},
  "size": {"id": "v1-small-x86", "name": "v1-small-x86", "constraints": [{"type": "cores", "min": 1, "max": 4}], "labels": {}},
  "state": {"value": "", "description": "", "metal_hammer_version": "v0.13.0", "issuer": ""},
  "ledstate": {"value": "LED-OFF", "description": ""},
  "bios": {"vendor": "SeaBIOS", "version": "1.16", "date": "04/01/2014"},
  "hardware": {
    "cpu_cores": 2, "memory": 2147483648,
    "cpus": [{"vendor": "GenuineIntel", "model": "QEMU", "cores": 2, "threads": 2}],
    "disks": [{"name": "/dev/vda", "size": 21474836480}],
    "nics": [{"identifier": "eth0", "mac": "aa:c1:ab:00:00:01", "name": "lan0", "neighbors": [{"identifier": "Ethernet0", "mac": "aa:c1:ab:00:00:ff", "name": "Ethernet0", "neighbors": null}]}]
  },
  "events": {
    "crash_loop": false,
    "failed_machine_reclaim": false,
    "last_event_time": "2026-01-02T03:14:00Z",
    "log": [
      {"event": "Phoned Home", "message": "phoned home", "time": "2026-01-02T03:14:00Z"},
      {"event": "Booting New Kernel", "message": "", "time": "2026-01-02T03:12:00Z"},
      {"event": "Installing", "time": "2026-01-02T03:10:00Z"},
      {"event": "Waiting", "message": "waiting for allocation", "time": "2026-01-02T03:00:00Z"}
    ]
  },
  "allocation": {
    "allocationuuid": "5d7c9e4a-0c1e-4a52-9f4b-6cbd2a1f0a10",
    "created": "2026-01-02T03:05:00Z",
    "creator": "Metal-Edit",
    "project": "00000000-0000-0000-0000-000000000001",
    "name": "md-0-abcde",
    "hostname": "md-0-abcde",
    "description": "default/md-0-abcde",
    "role": "machine",
    "reinstall": false,
    "succeeded": false,
    "ssh_pub_keys": null,
    "user_data": "I2Nsb3VkLWNvbmZpZw==",
    "image": {"id": "debian-13.0", "features": ["machine"], "expirationDate": "2027-01-01T00:00:00Z"},
    "filesystemlayout": {"id": "default"},
    "boot_info": {"image_id": "debian-13.0", "primary_disk": "/dev/vda", "os_partition": "/dev/vda2", "initrd": "", "cmdline": "", "kernel": "", "bootloaderid": "debian"},
    "networks": [
      {"networkid": "d0b3f5a4-1b6e-4c55-8e35-8fe1d2c7a001", "networktype": "privateprimaryunshared", "networktypev2": "child", "nattypev2": "none",
       "ips": ["10.0.0.1"], "prefixes": ["10.0.0.0/22"], "destinationprefixes": [], "vrf": 20, "asn": 4200000001,
       "nat": false, "private": true, "underlay": false, "projectid": "00000000-0000-0000-0000-000000000001"},
      {"networkid": "internet-mini-lab", "networktype": "external", "networktypev2": "external", "nattypev2": "ipv4-masq",
       "ips": ["203.0.113.130"], "prefixes": ["203.0.113.128/25"], "destinationprefixes": ["0.0.0.0/0"], "vrf": 104009, "asn": 4200000001,
       "nat": true, "private": false, "underlay": false, "projectid": ""}
    ]
  }
}"#;

const NETWORK_JSON: &str = r#"{
  "id": "d0b3f5a4-1b6e-4c55-8e35-8fe1d2c7a001",
  "name": "my-cluster",
  "description": "default/my-cluster",
  "partitionid": "mini-lab",
  "projectid": "00000000-0000-0000-0000-000000000001",
  "parentnetworkid": "tenant-super-network-mini-lab",
  "prefixes": ["10.0.0.0/22", "2001:db8:0:10::/96"],
  "destinationprefixes": null,
  "defaultchildprefixlength": null,
  "additionalAnnouncableCIDRs": [],
  "vrf": 20,
  "vrfshared": false,
  "shared": false,
  "nat": false,
  "privatesuper": false,
  "underlay": false,
  "labels": {"cluster.metal-stack.io/id": "default.my-cluster"},
  "networktype": "child",
  "nattype": "none",
  "usage": {"available_ips": 1020, "used_ips": 3, "available_prefixes": 0, "used_prefixes": 0},
  "consumption": {"ipv4": {"available_ips": 1020, "used_ips": 3, "available_prefixes": 0, "used_prefixes": 0}},
  "created": "2026-01-02T03:00:00Z",
  "changed": "2026-01-02T03:00:00Z"
}"#;

const IP_JSON: &str = r#"{
  "ipaddress": "203.0.113.140",
  "allocationuuid": "8a3e2f9c-7c1d-4a8b-9e0f-1a2b3c4d5e6f",
  "networkid": "internet-mini-lab",
  "projectid": "00000000-0000-0000-0000-000000000001",
  "type": "static",
  "name": "my-cluster-control-plane",
  "description": "",
  "tags": ["cluster.metal-stack.io/id=default.my-cluster", "metal-stack.infrastructure.cluster.x-k8s.io/purpose=control-plane"],
  "created": "2026-01-02T03:01:00Z",
  "changed": "2026-01-02T03:02:00.5Z"
}"#;

fn decode<T: serde::de::DeserializeOwned>(json: &str) -> T {
    serde_json::from_str(json).expect("decodes")
}

fn to_value<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).expect("serializes")
}

#[test]
fn decodes_a_realistic_machine_response() {
    let response: MachineResponse = decode(MACHINE_JSON);
    let machine = metal::Machine::try_from(response).expect("maps");
    assert_eq!(machine.id, "00000000-0000-0000-0000-000000000001");
    assert_eq!(machine.partition_id, "mini-lab");
    assert_eq!(machine.size_id, "v1-small-x86");
    assert_eq!(machine.rack_id, "rack-1");
    assert_eq!(machine.liveliness, metal::Liveliness::Alive);
    assert_eq!(machine.state, metal::MachineState::Available);
    assert_eq!(machine.events.len(), 4);
    assert_eq!(machine.events[0].event, metal::ProvisioningEventKind::PhonedHome, "newest first");
    assert_eq!(machine.events[2].message, "", "absent message is empty");
    assert!(machine.is_ready());
    let allocation = machine.allocation.as_ref().expect("allocated");
    assert_eq!(allocation.role, metal::MachineRole::Machine);
    assert_eq!(allocation.image_id, "debian-13.0");
    assert!(allocation.ssh_pub_keys.is_empty(), "null slice is empty");
    assert_eq!(allocation.user_data.as_ref().map(|data| data.expose()), Some("I2Nsb3VkLWNvbmZpZw=="));
    assert_eq!(allocation.created.to_string(), "2026-01-02T03:05:00Z");
    assert_eq!(allocation.networks.len(), 2);
    let private = &allocation.networks[0];
    assert_eq!(private.network_type, metal::NetworkType::PrivatePrimaryUnshared);
    assert_eq!((private.vrf, private.asn), (20, 4_200_000_001));
    assert_eq!(private.project_id.as_deref(), Some("00000000-0000-0000-0000-000000000001"));
    assert_eq!(allocation.networks[1].project_id, None, "empty project id is none");
}

#[test]
fn machine_response_debug_redacts_user_data() {
    let response: MachineResponse = decode(MACHINE_JSON);
    let shown = format!("{response:?}");
    assert!(!shown.contains("I2Nsb3VkLWNvbmZpZw=="), "{shown}");
}

#[test]
fn decodes_a_minimal_free_machine() {
    // An old server or a free machine: most required nested fields absent or null.
    let response: MachineResponse = decode(
        r#"{"id": "m1", "allocation": null, "events": null, "tags": null, "hardware": {"nics": null}}"#,
    );
    let machine = metal::Machine::try_from(response).expect("maps");
    assert_eq!(machine.allocation, None);
    assert!(machine.events.is_empty());
    assert_eq!(machine.liveliness, metal::Liveliness::Unknown);
}

#[test]
fn unmappable_machines_are_errors() {
    let no_id: MachineResponse = decode(r#"{"liveliness": "Alive"}"#);
    assert_eq!(metal::Machine::try_from(no_id), Err(WireError::Missing { entity: "machine", field: "id" }));
    let bad_role: MachineResponse = decode(r#"{"id": "m1", "allocation": {"role": "switch"}}"#);
    assert!(matches!(metal::Machine::try_from(bad_role), Err(WireError::Invalid { field: "role", .. })));
    let bad_protocol: MachineResponse = decode(
        r#"{"id": "m1", "allocation": {"role": "firewall", "firewall_rules": {"egress": [{"to": ["0.0.0.0/0"], "ports": [53], "protocol": "icmp"}]}}}"#,
    );
    assert!(matches!(
        metal::Machine::try_from(bad_protocol),
        Err(WireError::Invalid { field: "protocol", .. })
    ));
}

#[test]
fn machine_states_map_conservatively() {
    for (value, state) in [
        ("", metal::MachineState::Available),
        ("RESERVED", metal::MachineState::Reserved),
        ("LOCKED", metal::MachineState::Locked),
        ("TAINTED", metal::MachineState::Reserved),
    ] {
        let response: MachineResponse = decode(&json!({"id": "m", "state": {"value": value}}).to_string());
        assert_eq!(metal::Machine::try_from(response).expect("maps").state, state, "{value}");
    }
}

#[test]
fn machine_survives_a_round_trip_through_the_wire() {
    let machine = metal::Machine::try_from(decode::<MachineResponse>(MACHINE_JSON)).expect("maps");
    let wire = MachineResponse::from(&machine);
    let json = serde_json::to_string(&wire).expect("serializes");
    assert!(json.contains("I2Nsb3VkLWNvbmZpZw=="), "the simulated server sends user data as is");
    let back = metal::Machine::try_from(decode::<MachineResponse>(&json)).expect("maps");
    assert_eq!(back, machine);
}

#[test]
fn decodes_a_realistic_network_response() {
    let network = metal::Network::try_from(decode::<NetworkResponse>(NETWORK_JSON)).expect("maps");
    assert_eq!(network.partition_id.as_deref(), Some("mini-lab"));
    assert_eq!(network.parent_network_id.as_deref(), Some("tenant-super-network-mini-lab"));
    assert_eq!(network.prefixes, ["10.0.0.0/22", "2001:db8:0:10::/96"]);
    assert!(network.destination_prefixes.is_empty());
    assert_eq!(network.vrf, Some(20));
    assert!(network.is_private());
    assert_eq!(
        network.labels.get("cluster.metal-stack.io/id").map(String::as_str),
        Some("default.my-cluster")
    );
    let back = metal::Network::try_from(decode::<NetworkResponse>(
        &serde_json::to_string(&NetworkResponse::from(&network)).expect("serializes"),
    ))
    .expect("maps");
    assert_eq!(back, network);
}

#[test]
fn decodes_a_super_network_with_child_lengths() {
    let json = json!({
        "id": "tenant-super-network-mini-lab", "partitionid": "mini-lab", "projectid": "",
        "prefixes": ["10.0.0.0/16"], "privatesuper": true, "nat": false, "underlay": false,
        "defaultchildprefixlength": {"IPv4": 22, "IPv6": 96}, "vrf": null
    });
    let network = metal::Network::try_from(decode::<NetworkResponse>(&json.to_string())).expect("maps");
    assert_eq!(network.project_id, None);
    assert_eq!(network.vrf, None);
    assert_eq!(network.default_child_prefix_length.get(&metal::AddressFamily::IPv6), Some(&96));
    let too_long: NetworkResponse =
        decode(&json!({"id": "n", "defaultchildprefixlength": {"IPv4": 300}}).to_string());
    assert!(matches!(metal::Network::try_from(too_long), Err(WireError::Invalid { .. })));
}

#[test]
fn decodes_a_realistic_ip_response() {
    let ip = metal::Ip::try_from(decode::<IpResponse>(IP_JSON)).expect("maps");
    assert_eq!(ip.address, "203.0.113.140");
    assert_eq!(ip.ip_type, metal::IpType::Static);
    assert_eq!(ip.tags.len(), 2);
    assert_eq!(ip.changed.to_string(), "2026-01-02T03:02:00.5Z");
    let back = metal::Ip::try_from(decode::<IpResponse>(
        &serde_json::to_string(&IpResponse::from(&ip)).expect("serializes"),
    ))
    .expect("maps");
    assert_eq!(back, ip);
    let bad_type: IpResponse = decode(r#"{"ipaddress": "10.0.0.1", "type": "floating"}"#);
    assert!(matches!(metal::Ip::try_from(bad_type), Err(WireError::Invalid { field: "type", .. })));
}

fn allocate_request() -> metal::MachineAllocateRequest {
    metal::MachineAllocateRequest {
        project_id: "00000000-0000-0000-0000-000000000001".into(),
        partition_id: "mini-lab".into(),
        size_id: "v1-small-x86".into(),
        image_id: "debian-13.0".into(),
        name: "md-0-abcde".into(),
        hostname: "md-0-abcde".into(),
        description: String::new(),
        ssh_pub_keys: vec![],
        networks: vec![metal::NetworkRequest::auto("net-1")],
        ips: vec![],
        user_data: Some(crate::UserData::new("#cloud-config\n")),
        tags: vec!["a=b".into()],
        placement_tags: vec![],
        machine_id: None,
    }
}

#[test]
fn machine_allocate_request_serializes_exactly() {
    let wire = MachineAllocateRequest::from(&allocate_request());
    let expected = json!({
        "projectid": "00000000-0000-0000-0000-000000000001",
        "partitionid": "mini-lab", "sizeid": "v1-small-x86", "imageid": "debian-13.0",
        "name": "md-0-abcde", "hostname": "md-0-abcde",
        "ssh_pub_keys": [],
        "networks": [{"networkid": "net-1", "autoacquire": true}],
        "user_data": "#cloud-config\n",
        "tags": ["a=b"]
    });
    assert_eq!(to_value(&wire), expected, "empty description, ips, placement tags and uuid are omitted");
    let decoded: MachineAllocateRequest = decode(&expected.to_string());
    assert_eq!(metal::MachineAllocateRequest::from(decoded), allocate_request());
}

#[test]
fn firewall_create_request_round_trips() {
    let request = metal::FirewallAllocateRequest {
        machine: allocate_request(),
        rules: metal::FirewallRules {
            egress: vec![metal::EgressRule {
                protocol: metal::Protocol::Udp,
                ports: vec![53],
                to: vec!["0.0.0.0/0".into()],
                comment: "allow dns".into(),
            }],
            ingress: vec![metal::IngressRule {
                protocol: metal::Protocol::Tcp,
                ports: vec![443],
                from: vec!["0.0.0.0/0".into()],
                to: vec![],
                comment: String::new(),
            }],
        },
    };
    let value = to_value(&FirewallCreateRequest::from(&request));
    assert_eq!(
        value["firewall_rules"],
        json!({
            "egress": [{"comment": "allow dns", "ports": [53], "protocol": "udp", "to": ["0.0.0.0/0"]}],
            "ingress": [{"from": ["0.0.0.0/0"], "ports": [443], "protocol": "tcp"}]
        })
    );
    assert_eq!(value["imageid"], "debian-13.0", "machine fields are flattened");
    let decoded: FirewallCreateRequest = decode(&value.to_string());
    assert_eq!(metal::FirewallAllocateRequest::try_from(decoded), Ok(request));
}

#[test]
fn none_filters_are_absent_and_empty_strings_are_filters() {
    assert_eq!(to_value(&MachineFindRequest::from(&metal::MachineQuery::default())), json!({}));
    assert_eq!(to_value(&IpFindRequest::from(&metal::IpQuery::default())), json!({}));
    assert_eq!(to_value(&NetworkFindRequest::from(&metal::NetworkQuery::default())), json!({}));
    let query = metal::MachineQuery {
        partition_id: Some(String::new()),
        allocation_project: Some("p".into()),
        allocation_role: Some(metal::MachineRole::Firewall),
        tags: vec!["t=1".into()],
        ..metal::MachineQuery::default()
    };
    let value = to_value(&MachineFindRequest::from(&query));
    assert_eq!(
        value,
        json!({"partition_id": "", "allocation_project": "p", "allocation_role": "firewall", "tags": ["t=1"]})
    );
    let back = metal::MachineQuery::try_from(decode::<MachineFindRequest>(&value.to_string()));
    assert_eq!(back, Ok(query));
}

#[test]
fn ip_requests_round_trip() {
    let request = metal::IpAllocateRequest {
        network_id: "internet-mini-lab".into(),
        project_id: "p".into(),
        ip_type: metal::IpType::Static,
        name: "cp".into(),
        description: String::new(),
        tags: vec!["a=b".into()],
        machine_id: None,
        address_family: Some(metal::AddressFamily::IPv4),
    };
    let value = to_value(&IpAllocateRequest::from(&request));
    assert_eq!(
        value,
        json!({"networkid": "internet-mini-lab", "projectid": "p", "type": "static", "name": "cp", "tags": ["a=b"], "addressfamily": "IPv4"})
    );
    assert_eq!(
        metal::IpAllocateRequest::try_from(decode::<IpAllocateRequest>(&value.to_string())),
        Ok(request)
    );
    let query = metal::IpQuery {
        project_id: Some("p".into()),
        ip_type: Some(metal::IpType::Ephemeral),
        tags: vec!["x=y".into()],
        ..metal::IpQuery::default()
    };
    let value = to_value(&IpFindRequest::from(&query));
    assert_eq!(value, json!({"projectid": "p", "type": "ephemeral", "tags": ["x=y"]}));
    assert_eq!(metal::IpQuery::try_from(decode::<IpFindRequest>(&value.to_string())), Ok(query));
}

#[test]
fn network_requests_round_trip() {
    let request = metal::NetworkAllocateRequest {
        project_id: "p".into(),
        partition_id: "mini-lab".into(),
        name: "my-cluster".into(),
        description: String::new(),
        labels: BTreeMap::from([("cluster.metal-stack.io/id".into(), "default.my-cluster".into())]),
        destination_prefixes: vec![],
        shared: false,
        nat: false,
        length: BTreeMap::from([(metal::AddressFamily::IPv4, 24)]),
        address_family: None,
    };
    let value = to_value(&NetworkAllocateRequest::from(&request));
    assert_eq!(
        value,
        json!({"projectid": "p", "partitionid": "mini-lab", "name": "my-cluster",
               "labels": {"cluster.metal-stack.io/id": "default.my-cluster"},
               "shared": false, "nat": false, "length": {"IPv4": 24}})
    );
    assert_eq!(
        metal::NetworkAllocateRequest::try_from(decode::<NetworkAllocateRequest>(&value.to_string())),
        Ok(request)
    );
    let query = metal::NetworkQuery {
        labels: BTreeMap::from([(crate::tags::DEFAULT_EXTERNAL_NETWORK.into(), String::new())]),
        private_super: Some(false),
        ..metal::NetworkQuery::default()
    };
    let value = to_value(&NetworkFindRequest::from(&query));
    assert_eq!(value, json!({"privatesuper": false, "labels": {"network.metal-stack.io/default": ""}}));
    assert_eq!(metal::NetworkQuery::try_from(decode::<NetworkFindRequest>(&value.to_string())), Ok(query));
}

#[test]
fn catalog_responses_map() {
    let partition: PartitionResponse =
        decode(r#"{"id": "mini-lab", "name": "mini-lab", "bootconfig": {}, "labels": null}"#);
    assert_eq!(metal::Partition::try_from(partition).expect("maps").id, "mini-lab");
    let size: SizeResponse = decode(
        r#"{"id": "v1-small-x86", "constraints": [{"type": "memory", "min": 1073741824, "max": 4294967296}, {"type": "gpu", "identifier": "AD102", "max": 1}], "labels": null}"#,
    );
    let size = metal::Size::try_from(size).expect("maps");
    assert_eq!(size.constraints[1].min, 0, "omitted bound is 0");
    let image: ImageResponse = decode(
        r#"{"id": "firewall-ubuntu-3.0", "features": ["firewall", "hologram"], "expirationDate": "2027-01-01T00:00:00Z"}"#,
    );
    let image = metal::Image::try_from(image).expect("maps");
    assert_eq!(image.features.into_iter().collect::<Vec<_>>(), [metal::ImageFeature::Firewall]);
    let project: ProjectResponse = decode(
        r#"{"meta": {"id": "00000000-0000-0000-0000-000000000001", "kind": "Project", "apiversion": "v1", "version": 1}, "name": "capms", "tenant_id": "metal-stack", "quotas": {}}"#,
    );
    let project = metal::Project::try_from(project).expect("maps");
    assert_eq!(
        (project.id.as_str(), project.tenant_id.as_str()),
        ("00000000-0000-0000-0000-000000000001", "metal-stack")
    );
    assert!(matches!(metal::Project::try_from(ProjectResponse::default()), Err(WireError::Missing { .. })));
}

#[test]
fn error_response_decodes_only_error_objects() {
    let error: HttpErrorResponse = decode(r#"{"statuscode": 422, "message": "no machine available"}"#);
    assert_eq!(error, HttpErrorResponse::new(422, "no machine available"));
    assert!(serde_json::from_str::<HttpErrorResponse>(r#""tenant  not allowed""#).is_err());
    assert!(serde_json::from_str::<HttpErrorResponse>(r#"{"message": "x"}"#).is_err());
}

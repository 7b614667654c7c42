//! Every operation: method, path (under a base path prefix), body and headers as sent.

use super::server::{Reply, TestServer};
use super::*;
use capms_core::MetalBackend;
use capms_core::UserData;
use capms_core::metal::{
    AddressFamily, EgressRule, FirewallAllocateRequest, FirewallRules, IpAllocateRequest, IpQuery, IpType,
    MachineAllocateRequest, MachineQuery, MachineRole, NetworkAllocateRequest, NetworkQuery, NetworkRequest,
    Protocol,
};
use std::collections::BTreeMap;

fn machine_request() -> MachineAllocateRequest {
    MachineAllocateRequest {
        project_id: "p".into(),
        partition_id: "mini-lab".into(),
        size_id: "v1-small-x86".into(),
        image_id: "debian-13.0".into(),
        name: "md-0-abcde".into(),
        hostname: "md-0-abcde".into(),
        description: "default/md-0-abcde".into(),
        ssh_pub_keys: vec![],
        networks: vec![NetworkRequest::auto("net-1")],
        ips: vec![],
        user_data: Some(UserData::new("I2Nsb3VkLWNvbmZpZw==")),
        tags: vec!["cluster.metal-stack.io/id=default.c".into()],
        placement_tags: vec!["cluster.metal-stack.io/id=default.c".into()],
        machine_id: None,
    }
}

fn machine_body() -> Value {
    json!({
        "projectid": "p", "partitionid": "mini-lab", "sizeid": "v1-small-x86", "imageid": "debian-13.0",
        "name": "md-0-abcde", "hostname": "md-0-abcde", "description": "default/md-0-abcde",
        "ssh_pub_keys": [], "networks": [{"networkid": "net-1", "autoacquire": true}],
        "user_data": "I2Nsb3VkLWNvbmZpZw==",
        "tags": ["cluster.metal-stack.io/id=default.c"],
        "placement_tags": ["cluster.metal-stack.io/id=default.c"]
    })
}

fn firewall_request() -> FirewallAllocateRequest {
    let rule = EgressRule {
        protocol: Protocol::Tcp,
        ports: vec![443],
        to: vec!["0.0.0.0/0".into()],
        comment: String::new(),
    };
    FirewallAllocateRequest {
        machine: MachineAllocateRequest { user_data: None, ..machine_request() },
        rules: FirewallRules { egress: vec![rule], ingress: vec![] },
    }
}

fn ip_request() -> IpAllocateRequest {
    IpAllocateRequest {
        network_id: "internet-mini-lab".into(),
        project_id: "p".into(),
        ip_type: IpType::Static,
        name: "cp".into(),
        description: String::new(),
        tags: vec!["t=1".into()],
        machine_id: None,
        address_family: None,
    }
}

fn network_request() -> NetworkAllocateRequest {
    NetworkAllocateRequest {
        project_id: "p".into(),
        partition_id: "mini-lab".into(),
        name: "c".into(),
        labels: BTreeMap::from([("cluster.metal-stack.io/id".into(), "default.c".into())]),
        address_family: Some(AddressFamily::IPv4),
        ..NetworkAllocateRequest::default()
    }
}

/// The scripted answers, in call order.
fn replies() -> Vec<Reply> {
    let machine = || machine_json("m1", "machine");
    let firewall = || machine_json("fw1", "firewall");
    vec![
        Reply::json(200, machine()),
        Reply::json(200, machine()),
        Reply::json(200, json!([machine()])),
        Reply::json(200, machine()),
        Reply::json(200, firewall()),
        Reply::json(200, firewall()),
        Reply::json(200, json!([firewall()])),
        Reply::json(201, network_json("n1")),
        Reply::json(200, network_json("n1")),
        Reply::json(200, json!([network_json("n1")])),
        Reply::json(200, network_json("n1")),
        Reply::json(201, ip_json("203.0.113.140")),
        Reply::json(201, ip_json("203.0.113.140")),
        Reply::json(200, ip_json("2001:db8::1")),
        Reply::json(200, json!([ip_json("203.0.113.140")])),
        Reply::json(200, ip_json("203.0.113.140")),
        Reply::json(200, partition_json()),
        Reply::json(200, json!([partition_json()])),
        Reply::json(200, size_json()),
        Reply::json(200, json!([size_json()])),
        Reply::json(200, image_json()),
        Reply::json(200, json!([image_json()])),
        Reply::json(200, project_json()),
    ]
}

/// What the server must have received, in call order.
fn expected() -> Vec<(&'static str, &'static str, Option<Value>)> {
    let mut firewall_body = machine_body();
    if let Some(object) = firewall_body.as_object_mut() {
        object.remove("user_data");
        object.insert(
            "firewall_rules".into(),
            json!({"egress": [{"ports": [443], "protocol": "tcp", "to": ["0.0.0.0/0"]}], "ingress": []}),
        );
    }
    let ip_body = json!({"networkid": "internet-mini-lab", "projectid": "p", "type": "static", "name": "cp", "tags": ["t=1"]});
    vec![
        ("POST", "/metal/v1/machine/allocate", Some(machine_body())),
        ("GET", "/metal/v1/machine/m1", None),
        ("POST", "/metal/v1/machine/find", Some(json!({"allocation_project": "p", "tags": ["a=b"]}))),
        ("DELETE", "/metal/v1/machine/m1/free", None),
        ("POST", "/metal/v1/firewall/allocate", Some(firewall_body)),
        ("GET", "/metal/v1/firewall/fw1", None),
        (
            "POST",
            "/metal/v1/firewall/find",
            Some(json!({"partition_id": "mini-lab", "allocation_role": "firewall"})),
        ),
        (
            "POST",
            "/metal/v1/network/allocate",
            Some(json!({"projectid": "p", "partitionid": "mini-lab", "name": "c",
                        "labels": {"cluster.metal-stack.io/id": "default.c"}, "shared": false, "nat": false,
                        "addressfamily": "IPv4"})),
        ),
        ("GET", "/metal/v1/network/n1", None),
        ("POST", "/metal/v1/network/find", Some(json!({"projectid": "p", "partitionid": "mini-lab"}))),
        ("DELETE", "/metal/v1/network/free/n1", None),
        ("POST", "/metal/v1/ip/allocate", Some(ip_body.clone())),
        ("POST", "/metal/v1/ip/allocate/203.0.113.140", Some(ip_body)),
        ("GET", "/metal/v1/ip/2001:db8::1", None),
        (
            "POST",
            "/metal/v1/ip/find",
            Some(json!({"tags": ["cluster.metal-stack.io/id=default.c"], "machineid": ""})),
        ),
        ("DELETE", "/metal/v1/ip/free/203.0.113.140", None),
        ("GET", "/metal/v1/partition/mini-lab", None),
        ("GET", "/metal/v1/partition", None),
        ("GET", "/metal/v1/size/v1-small-x86", None),
        ("GET", "/metal/v1/size", None),
        ("GET", "/metal/v1/image/debian-13.0", None),
        ("GET", "/metal/v1/image", None),
        ("GET", "/metal/v1/project/p", None),
    ]
}

async fn call_every_operation(client: &MetalClient) {
    let machine_query = MachineQuery {
        allocation_project: Some("p".into()),
        tags: vec!["a=b".into()],
        ..MachineQuery::default()
    };
    let firewall_query = MachineQuery {
        partition_id: Some("mini-lab".into()),
        allocation_role: Some(MachineRole::Firewall),
        ..MachineQuery::default()
    };
    let network_query = NetworkQuery {
        project_id: Some("p".into()),
        partition_id: Some("mini-lab".into()),
        ..NetworkQuery::default()
    };
    let ip_query = IpQuery {
        tags: vec!["cluster.metal-stack.io/id=default.c".into()],
        machine_id: Some(String::new()),
        ..IpQuery::default()
    };
    let machine = client.allocate_machine(&machine_request()).await.expect("allocate machine");
    assert_eq!(machine.id, "m1");
    assert_eq!(client.get_machine("m1").await.expect("get machine").id, "m1");
    assert_eq!(client.find_machines(&machine_query).await.expect("find machines").len(), 1);
    assert_eq!(client.free_machine("m1").await.expect("free machine").id, "m1");
    let firewall = client.allocate_firewall(&firewall_request()).await.expect("allocate firewall");
    assert_eq!(firewall.role(), Some(MachineRole::Firewall));
    assert_eq!(client.get_firewall("fw1").await.expect("get firewall").id, "fw1");
    assert_eq!(client.find_firewalls(&firewall_query).await.expect("find firewalls").len(), 1);
    assert_eq!(client.allocate_network(&network_request()).await.expect("201 is success").id, "n1");
    assert_eq!(client.get_network("n1").await.expect("get network").vrf, Some(20));
    assert_eq!(client.find_networks(&network_query).await.expect("find networks").len(), 1);
    assert_eq!(client.free_network("n1").await.expect("free network").id, "n1");
    assert_eq!(client.allocate_ip(&ip_request()).await.expect("201 is success").address, "203.0.113.140");
    let specific =
        client.allocate_specific_ip("203.0.113.140", &ip_request()).await.expect("allocate specific ip");
    assert_eq!(specific.ip_type, IpType::Static);
    assert_eq!(client.get_ip("2001:db8::1").await.expect("get ip").address, "2001:db8::1");
    assert_eq!(client.find_ips(&ip_query).await.expect("find ips").len(), 1);
    assert_eq!(client.free_ip("203.0.113.140").await.expect("free ip").address, "203.0.113.140");
    assert_eq!(client.get_partition("mini-lab").await.expect("get partition").id, "mini-lab");
    assert_eq!(client.list_partitions().await.expect("list partitions").len(), 1);
    assert_eq!(client.get_size("v1-small-x86").await.expect("get size").constraints.len(), 1);
    assert_eq!(client.list_sizes().await.expect("list sizes").len(), 1);
    assert_eq!(client.get_image("debian-13.0").await.expect("get image").id, "debian-13.0");
    assert_eq!(client.list_images().await.expect("list images").len(), 1);
    assert_eq!(client.get_project("p").await.expect("get project").tenant_id, "metal-stack");
}

#[tokio::test]
async fn every_operation_sends_the_expected_request() {
    let server = TestServer::start("/metal", replies()).await;
    call_every_operation(&client(&server.base_url)).await;
    let requests = server.requests();
    let expected = expected();
    assert_eq!(requests.len(), expected.len());
    for (request, (method, path, body)) in requests.iter().zip(expected) {
        assert_eq!((request.method.as_str(), request.path.as_str()), (method, path));
        assert_eq!(request.json(), body, "{method} {path}");
        assert_eq!(request.header("accept"), Some("application/json"), "{path}");
        let content_type = body.as_ref().map(|_| "application/json");
        assert_eq!(request.header("content-type"), content_type, "{path}");
        verify_hmac(request);
    }
}

#[tokio::test]
async fn base_url_without_prefix_and_with_trailing_slash() {
    let server = TestServer::start("/", vec![Reply::json(200, partition_json())]).await;
    client(&server.base_url).get_partition("mini-lab").await.expect("partition");
    assert_eq!(server.requests()[0].path, "/v1/partition/mini-lab");
}

#[tokio::test]
async fn invalid_ids_are_refused_before_sending() {
    let server = TestServer::start("", vec![]).await;
    let client = client(&server.base_url);
    for id in ["", ".", ".."] {
        let error = client.get_machine(id).await.expect_err("refused");
        assert_eq!(error.kind(), capms_core::ErrorKind::Permanent);
    }
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn bearer_tokens_are_sent_as_is() {
    let server = TestServer::start("", vec![Reply::json(200, project_json())]).await;
    let config = config(&server.base_url).with_bearer(SecretString::new("eyJ.token"));
    MetalClient::new(config).expect("client").get_project("p").await.expect("project");
    let request = &server.requests()[0];
    assert_eq!(request.header("authorization"), Some("Bearer eyJ.token"));
    assert_eq!(request.header(X_DATE), None);
}

//! Client tests against a scripted local HTTP server (see [`server`]).

mod errors;
mod operations;
mod redaction;
mod retries;
mod server;
mod tls;

use crate::{HmacAuthType, MetalClient, MetalConfig, RetryPolicy, X_DATA_SALT, X_DATE, hmac_authorization};
use capms_core::secret::SecretString;
use serde_json::{Value, json};
use server::Recorded;
use std::time::Duration;

pub const KEY: &str = "metal-edit";

fn fast_retry(attempts_max: u32) -> RetryPolicy {
    RetryPolicy {
        attempts_max,
        base_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
    }
}

fn config(base_url: &str) -> MetalConfig {
    MetalConfig::new(base_url)
        .with_hmac(SecretString::new(KEY), HmacAuthType::Edit)
        .with_timeouts(Duration::from_secs(2), Duration::from_secs(5))
        .with_retry(fast_retry(3))
        .with_env_proxy(false)
}

fn client(base_url: &str) -> MetalClient {
    MetalClient::new(config(base_url)).expect("client")
}

/// Checks a recorded request's HMAC headers the way metal-api does, and returns its salt.
fn verify_hmac(request: &Recorded) -> String {
    let date = request.header(X_DATE).expect("x-date sent");
    let salt = request.header(X_DATA_SALT).expect("x-data-salt sent");
    assert!(date.len() == 20 && date.ends_with('Z'), "second precision with Z: {date}");
    assert!(salt.len() == 24 && salt.bytes().all(|byte| byte.is_ascii_alphabetic()), "{salt}");
    let expected = hmac_authorization(KEY.as_bytes(), "Metal-Edit", &request.method, date, salt.as_bytes())
        .expect("HMAC takes any key");
    assert_eq!(request.header("authorization"), Some(expected.as_str()));
    salt.to_string()
}

fn machine_json(id: &str, role: &str) -> Value {
    json!({
        "id": id,
        "partition": {"id": "mini-lab", "bootconfig": {}},
        "size": {"id": "v1-small-x86", "constraints": [], "labels": {}},
        "rackid": "rack-1",
        "liveliness": "Alive",
        "state": {"value": "", "description": "", "metal_hammer_version": ""},
        "events": {"log": [{"event": "Phoned Home", "message": "", "time": "2026-01-02T03:04:05Z"}], "crash_loop": false, "failed_machine_reclaim": false},
        "tags": ["a=b"],
        "bios": {"vendor": "", "version": "", "date": ""},
        "hardware": {"cpu_cores": 1, "memory": 1, "disks": [], "nics": []},
        "ledstate": {"value": "", "description": ""},
        "allocation": {
            "allocationuuid": "u-1", "created": "2026-01-02T03:00:00Z", "creator": "Metal-Edit",
            "project": "p", "name": id, "hostname": id, "role": role, "reinstall": false, "succeeded": false,
            "ssh_pub_keys": [], "networks": [], "image": {"id": "debian-13.0"}
        }
    })
}

fn network_json(id: &str) -> Value {
    json!({
        "id": id, "partitionid": "mini-lab", "projectid": "p", "parentnetworkid": "super",
        "prefixes": ["10.0.0.0/22"], "destinationprefixes": [], "vrf": 20, "nat": false,
        "privatesuper": false, "underlay": false, "labels": {}, "networktype": "child", "nattype": "none",
        "usage": {"available_ips": 1, "used_ips": 0, "available_prefixes": 0, "used_prefixes": 0},
        "consumption": {}
    })
}

fn ip_json(address: &str) -> Value {
    json!({
        "ipaddress": address, "allocationuuid": "ip-u-1", "networkid": "internet-mini-lab", "projectid": "p",
        "type": "static", "name": "cp", "tags": [], "created": "2026-01-02T03:00:00Z", "changed": "2026-01-02T03:00:00Z"
    })
}

fn partition_json() -> Value {
    json!({"id": "mini-lab", "name": "mini-lab", "bootconfig": {}, "labels": {}})
}

fn size_json() -> Value {
    json!({"id": "v1-small-x86", "constraints": [{"type": "cores", "min": 1, "max": 4}], "labels": {}})
}

fn image_json() -> Value {
    json!({"id": "debian-13.0", "features": ["machine"], "expirationDate": "2027-01-01T00:00:00Z"})
}

fn project_json() -> Value {
    json!({"meta": {"id": "p", "kind": "Project", "apiversion": "v1"}, "name": "capms", "tenant_id": "metal-stack"})
}

"""Allocates a network, a static IP, a machine and a firewall on the simulated server.

Usage: seed.py BASE_URL   (e.g. http://127.0.0.1:36249/metal)

Run by scripts/wire-proof before schemathesis, so that the find/list/get responses schemathesis
validates include allocated machines and firewalls (allocation, networks, IPs, firewall rules)
and not only the free seed machines. Plain HTTP with the HMAC headers of hooks.py: this is set-up,
not a test of a client; any non-2xx answer stops it.
"""

from __future__ import annotations

import json
import sys

import requests

from hooks import hmac_headers

PROJECT = "00000000-0000-0000-0000-000000000001"
PARTITION = "mini-lab"
TAG = "wire-proof.capms.dev/seed=schemathesis"


def call(base: str, method: str, path: str, body: dict) -> dict:
    headers = hmac_headers(method)
    headers["Content-Type"] = "application/json"
    response = requests.request(method, base + path, headers=headers, data=json.dumps(body), timeout=10)
    if not response.ok:
        raise SystemExit(f"seed: {method} {path} -> {response.status_code} {response.text}")
    return response.json()


def main() -> None:
    base = sys.argv[1].rstrip("/")
    network = call(base, "POST", "/v1/network/allocate", {
        "projectid": PROJECT, "partitionid": PARTITION, "name": "wire-proof-seed",
        "labels": {"wire-proof.capms.dev/seed": "schemathesis"},
    })
    ip = call(base, "POST", "/v1/ip/allocate", {
        "networkid": "internet-mini-lab", "projectid": PROJECT, "type": "static", "name": "wire-proof-seed",
        "tags": [TAG],
    })
    common = {"projectid": PROJECT, "partitionid": PARTITION, "sizeid": "v1-small-x86", "ssh_pub_keys": [], "tags": [TAG]}
    machine = call(base, "POST", "/v1/machine/allocate", {
        **common, "imageid": "debian-13.0", "hostname": "seed-worker",
        "networks": [{"networkid": network["id"], "autoacquire": True}],
    })
    firewall = call(base, "POST", "/v1/firewall/allocate", {
        **common, "imageid": "firewall-ubuntu-3.0", "hostname": "seed-firewall",
        "networks": [
            {"networkid": network["id"], "autoacquire": True},
            {"networkid": "internet-mini-lab", "autoacquire": False},
        ],
        "ips": [ip["ipaddress"]],
        "firewall_rules": {
            "egress": [{"to": ["0.0.0.0/0"], "ports": [53, 443], "protocol": "udp", "comment": "dns and quic"}],
            "ingress": [{"from": ["0.0.0.0/0"], "ports": [22], "protocol": "tcp", "comment": "ssh"}],
        },
    })
    print(f"seeded network {network['id']}, ip {ip['ipaddress']}, machine {machine['id']}, firewall {firewall['id']}")


if __name__ == "__main__":
    main()

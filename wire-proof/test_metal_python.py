"""The official metal-stack client (metal-python) against the simulated metal-api.

Run by scripts/wire-proof, which starts `capms-sim serve` and Prism in front of it and passes:

    WIRE_PROOF_PRISM_URL   Prism proxy (spec basePath "/": paths /v1/...), e.g. http://127.0.0.1:4010
    WIRE_PROOF_SERVER_URL  the simulated server itself, e.g. http://127.0.0.1:36249/metal

Most calls go THROUGH Prism (`prism proxy --errors`): Prism validates metal-python's requests and
the server's responses against vendor/metal-api/metal-api.json; a request violation is answered
422 by Prism without forwarding, a response violation 500. On top of that every Prism response
must come without an `sl-violations` header (no warnings either). metal-python itself refuses a
response without a field the spec marks required (ValueError while deserializing).

Some calls go straight to the server: what Prism answers itself (no Authorization header: 401,
unparsable JSON: 400 from Prism), and one lifecycle with the unmodified client to show that Prism
masks nothing.

The one adjustment of metal-python's transport through Prism: swagger-codegen's REST layer sends
the body `{}` with every DELETE. metal-api's spec declares no body for its DELETE operations, so
`prism --errors` rejects those requests (422 "No supported content types, but request included a
non-empty body") before forwarding them. metal-api (go-restful) ignores such a body, and so does
the simulated server: test_direct_lifecycle_without_prism sends the `{}` exactly as metal-python
does. Through Prism the `{}` is dropped so that the response of the free operations is validated.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import os
import time
import uuid

import pytest
import requests
from metal_python.api import (
    FirewallApi,
    HealthApi,
    ImageApi,
    IpApi,
    MachineApi,
    NetworkApi,
    PartitionApi,
    ProjectApi,
    SizeApi,
    VersionApi,
)
from metal_python.driver import Driver
from metal_python.models import (
    V1FirewallCreateRequest,
    V1FirewallEgressRule,
    V1FirewallFindRequest,
    V1FirewallIngressRule,
    V1FirewallRules,
    V1IPAllocateRequest,
    V1IPFindRequest,
    V1MachineAllocateRequest,
    V1MachineAllocationNetwork,
    V1MachineFindRequest,
    V1NetworkAllocateRequest,
    V1NetworkFindRequest,
)
from metal_python.rest import ApiException

from hooks import authorization, hmac_headers

PRISM_URL = os.environ.get("WIRE_PROOF_PRISM_URL", "")
SERVER_URL = os.environ.get("WIRE_PROOF_SERVER_URL", "")
if not PRISM_URL or not SERVER_URL:
    raise RuntimeError("set WIRE_PROOF_PRISM_URL and WIRE_PROOF_SERVER_URL (scripts/wire-proof does)")

# mini-lab's seed data, as the simulated server serves it.
PROJECT = "00000000-0000-0000-0000-000000000001"
PARTITION = "mini-lab"
SIZE = "v1-small-x86"
IMAGE = "debian-13.0"
FIREWALL_IMAGE = "firewall-ubuntu-3.0"
INTERNET = "internet-mini-lab"
UNDERLAY = "underlay-mini-lab"

EDIT = ("metal-edit", "Metal-Edit")
VIEW = ("metal-view", "Metal-View")

# Bounded waits (provisioning is 2 s, IP release after a free a few seconds).
PHONED_HOME_TIMEOUT = 30.0
NETWORK_FREE_TIMEOUT = 30.0
POLL_INTERVAL = 0.25

RUN_ID = uuid.uuid4().hex[:12]
RUN_TAG = f"wire-proof.capms.dev/run={RUN_ID}"
RUN_LABEL = ("wire-proof.capms.dev/run", RUN_ID)

# What Prism reported in `sl-violations` headers during the current test.
VIOLATIONS: list[str] = []


def through_prism(credentials=EDIT):
    """metal-python's ApiClient talking to Prism (which forwards to the server)."""
    driver = Driver(PRISM_URL, None, credentials[0], credentials[1])
    pool = driver.client.rest_client.pool_manager
    forward = pool.request

    def request(method, url, *args, **kwargs):
        # See the module doc: metal-python sends `{}` with every DELETE; the spec has no body there.
        if method == "DELETE" and kwargs.get("body") == "{}":
            kwargs["body"] = None
        response = forward(method, url, *args, **kwargs)
        violations = response.headers.get("sl-violations")
        if violations:
            VIOLATIONS.append(f"{method} {url} -> {response.status}: {violations}")
        return response

    pool.request = request
    return driver.client


def direct(credentials=EDIT):
    """The unmodified metal-python ApiClient talking straight to the simulated server."""
    return Driver(SERVER_URL, None, credentials[0], credentials[1]).client


def raw(method, path, body=None, *, data=None, headers=None, credentials=EDIT, base=None):
    """A plain HTTP request to the server (default): HMAC headers and, with a body, Content-Type
    application/json, unless `headers` is given (then exactly those headers are sent)."""
    if body is not None:
        data = json.dumps(body)
    if headers is None:
        sent = hmac_headers(method, *credentials)
        if data is not None:
            sent["Content-Type"] = "application/json"
    else:
        sent = dict(headers)
    return requests.request(method, (base or SERVER_URL) + path, headers=sent, data=data, timeout=10)


def api_error(excinfo) -> tuple[int, dict]:
    """Status and decoded body of an ApiException."""
    error = excinfo.value
    return error.status, json.loads(error.body)


def assert_metal_error(excinfo, status: int, message_part: str):
    """metal-api's error object `{"statuscode": N, "message": "..."}` with status N."""
    got_status, body = api_error(excinfo)
    assert got_status == status, f"expected {status}, got {got_status}: {body}"
    assert body.get("statuscode") == status, body
    assert message_part in body.get("message", ""), body


@pytest.fixture(autouse=True)
def no_prism_violations():
    VIOLATIONS.clear()
    yield
    assert not VIOLATIONS, "Prism reported spec violations:\n" + "\n".join(VIOLATIONS)


@pytest.fixture(scope="session", autouse=True)
def cleanup():
    """Frees what this run left behind (after failed tests), with plain requests to the server."""
    yield
    found = raw("POST", "/v1/machine/find", {"tags": [RUN_TAG]})
    for machine in found.json() if found.ok else []:
        raw("DELETE", f"/v1/machine/{machine['id']}/free")
    found = raw("POST", "/v1/ip/find", {"tags": [RUN_TAG]})
    for ip in found.json() if found.ok else []:
        raw("DELETE", f"/v1/ip/free/{ip['ipaddress']}")
    found = raw("POST", "/v1/network/find", {"labels": {RUN_LABEL[0]: RUN_LABEL[1]}})
    networks = [network["id"] for network in found.json()] if found.ok else []
    deadline = time.monotonic() + NETWORK_FREE_TIMEOUT
    while networks and time.monotonic() < deadline:
        networks = [n for n in networks if raw("DELETE", f"/v1/network/free/{n}").status_code not in (200, 404)]
        if networks:
            time.sleep(POLL_INTERVAL)


def allocate_network(client, name):
    network, status, _ = NetworkApi(client).allocate_network_with_http_info(
        V1NetworkAllocateRequest(
            projectid=PROJECT,
            partitionid=PARTITION,
            name=name,
            description="scripts/wire-proof",
            labels={RUN_LABEL[0]: RUN_LABEL[1]},
        )
    )
    assert status == 201
    return network


def free_network(client, network_id):
    """Frees a network, retrying while the IPs of freed machines are still being released."""
    deadline = time.monotonic() + NETWORK_FREE_TIMEOUT
    while True:
        try:
            freed, status, _ = NetworkApi(client).free_network_with_http_info(network_id)
            assert status == 200
            return freed
        except ApiException as error:
            if error.status != 422 or "has ips" not in error.body or time.monotonic() > deadline:
                raise
            time.sleep(POLL_INTERVAL)


def wait_phoned_home(client, machine_id):
    deadline = time.monotonic() + PHONED_HOME_TIMEOUT
    while True:
        machine = MachineApi(client).find_machine(machine_id)
        log = machine.events.log or []
        if log and log[0].event == "Phoned Home":
            return machine
        assert time.monotonic() < deadline, f"{machine_id} not Phoned Home after {PHONED_HOME_TIMEOUT}s: {log[:3]}"
        time.sleep(POLL_INTERVAL)


def allocation_network(machine, network_id):
    matches = [n for n in machine.allocation.networks if n.networkid == network_id]
    assert len(matches) == 1, [n.networkid for n in machine.allocation.networks]
    return matches[0]


# ---------------------------------------------------------------------------------------------
# The signer of hooks.py (used by schemathesis and the plain requests here)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key, auth_type, method, salt, expected",
    [
        # shared/reference/metal-api.md §2.2, vectors 2 to 5 (X-Date 2024-05-06T07:08:09Z)
        ("metal-admin", "Metal-Admin", "POST", "abcdefghijklmnopqrstuvwx",
         "4eaa449584cf2abde04951fc8ee41cc4ec028d20c1d61be671766de70dea849f"),
        ("metal-admin", "Metal-Admin", "GET", "abcdefghijklmnopqrstuvwx",
         "71d593f6aba3f899f2be634cab9399a569051f8e3ddd12dfc678af58e7792b6c"),
        ("metal-edit", "Metal-Edit", "DELETE", "QwErTyUiOpAsDfGhJkLzXcVb",
         "33a61282ae6570869e20f63e07c32a586f828684ac35a5e3831e7512af7ad01a"),
        ("metal-view", "Metal-View", "GET", "QwErTyUiOpAsDfGhJkLzXcVb",
         "75e440ef9b0deae9f45d5ec06d3e495aa4b204b9661988087f0154a1ab990867"),
    ],
)
def test_hook_signer_matches_reference_vectors(key, auth_type, method, salt, expected):
    assert authorization(key, auth_type, method, "2024-05-06T07:08:09Z", salt) == f"{auth_type} {expected}"


def test_hook_headers_shape():
    headers = hmac_headers("get", "metal-edit", "Metal-Edit")
    assert len(headers["X-Data-Salt"]) == 24 and headers["X-Data-Salt"].isalpha()
    datetime.datetime.strptime(headers["X-Date"], "%Y-%m-%dT%H:%M:%SZ")
    auth_type, mac = headers["Authorization"].split(" ")
    assert auth_type == "Metal-Edit" and len(mac) == 64
    assert headers["Authorization"] == authorization("metal-edit", "Metal-Edit", "GET", headers["X-Date"], headers["X-Data-Salt"])


# ---------------------------------------------------------------------------------------------
# Through Prism
# ---------------------------------------------------------------------------------------------


def test_catalog_and_health():
    client = through_prism(VIEW)
    assert HealthApi(client).health().status == "healthy"
    assert VersionApi(client).info().name == "metal-api"
    assert PARTITION in [p.id for p in PartitionApi(client).list_partitions()]
    assert PartitionApi(client).find_partition(PARTITION).id == PARTITION
    assert SizeApi(client).find_size(SIZE).id == SIZE
    assert SIZE in [s.id for s in SizeApi(client).list_sizes()]
    images = {image.id: image for image in ImageApi(client).list_images()}
    assert "machine" in images[IMAGE].features
    assert "firewall" in images[FIREWALL_IMAGE].features
    assert ImageApi(client).find_image(FIREWALL_IMAGE).id == FIREWALL_IMAGE
    assert ProjectApi(client).find_project(PROJECT).meta.id == PROJECT
    internet = NetworkApi(client).find_network(INTERNET)
    assert internet.id == INTERNET and internet.nat


def test_network_and_ip_lifecycle():
    client = through_prism()
    network = allocate_network(client, f"wire-proof-ips-{RUN_ID}")
    assert network.partitionid == PARTITION and network.projectid == PROJECT and network.prefixes
    assert NetworkApi(client).find_network(network.id).id == network.id
    found = NetworkApi(client).find_networks(V1NetworkFindRequest(projectid=PROJECT, partitionid=PARTITION))
    assert network.id in [n.id for n in found]

    ips = IpApi(client)
    private, status, _ = ips.allocate_ip_with_http_info(
        V1IPAllocateRequest(networkid=network.id, projectid=PROJECT, type="static", name="private", tags=[RUN_TAG])
    )
    assert status == 201 and private.networkid == network.id and private.type == "static"
    public, status, _ = ips.allocate_ip_with_http_info(
        V1IPAllocateRequest(networkid=INTERNET, projectid=PROJECT, type="ephemeral", name="public", tags=[RUN_TAG])
    )
    assert status == 201 and public.networkid == INTERNET and public.type == "ephemeral"

    tagged = ips.find_i_ps(V1IPFindRequest(tags=[RUN_TAG]))
    assert sorted(ip.ipaddress for ip in tagged) == sorted([private.ipaddress, public.ipaddress])
    assert ips.find_ip(public.ipaddress).allocationuuid == public.allocationuuid

    for ip in (private, public):
        freed, status, _ = ips.free_ip_with_http_info(ip.ipaddress)
        assert status == 200 and freed.ipaddress == ip.ipaddress
        with pytest.raises(ApiException) as excinfo:
            ips.find_ip(ip.ipaddress)
        assert_metal_error(excinfo, 404, "NotFound")

    assert free_network(client, network.id).id == network.id
    with pytest.raises(ApiException) as excinfo:
        NetworkApi(client).find_network(network.id)
    assert_metal_error(excinfo, 404, "NotFound")


def test_machine_and_firewall_lifecycle():
    client = through_prism()
    machines = MachineApi(client)
    firewalls = FirewallApi(client)
    network = allocate_network(client, f"wire-proof-node-{RUN_ID}")

    machine = machines.allocate_machine(
        V1MachineAllocateRequest(
            projectid=PROJECT,
            partitionid=PARTITION,
            sizeid=SIZE,
            imageid=IMAGE,
            name="wire-proof-worker",
            hostname="wire-proof-worker",
            description="scripts/wire-proof",
            ssh_pub_keys=[],
            user_data=base64.b64encode(b"#cloud-config\n").decode(),
            networks=[V1MachineAllocationNetwork(networkid=network.id, autoacquire=True)],
            tags=[RUN_TAG, "wire-proof.capms.dev/role=worker"],
        )
    )
    assert machine.allocation.project == PROJECT
    assert machine.allocation.role == "machine"
    assert machine.allocation.image.id == IMAGE
    assert allocation_network(machine, network.id).ips

    firewall = firewalls.allocate_firewall(
        V1FirewallCreateRequest(
            projectid=PROJECT,
            partitionid=PARTITION,
            sizeid=SIZE,
            imageid=FIREWALL_IMAGE,
            name="wire-proof-firewall",
            hostname="wire-proof-firewall",
            ssh_pub_keys=[],
            networks=[
                V1MachineAllocationNetwork(networkid=network.id, autoacquire=True),
                V1MachineAllocationNetwork(networkid=INTERNET, autoacquire=True),
            ],
            firewall_rules=V1FirewallRules(
                egress=[V1FirewallEgressRule(to=["0.0.0.0/0"], ports=[443], protocol="tcp", comment="https out")],
                ingress=[V1FirewallIngressRule(_from=["0.0.0.0/0"], ports=[22], protocol="tcp", comment="ssh in")],
            ),
            tags=[RUN_TAG, "wire-proof.capms.dev/role=firewall"],
        )
    )
    assert firewall.allocation.role == "firewall"
    assert firewall.allocation.image.id == FIREWALL_IMAGE
    assert allocation_network(firewall, network.id).ips
    assert allocation_network(firewall, INTERNET).ips
    # the partition's underlay is added to every firewall
    assert allocation_network(firewall, UNDERLAY).underlay

    # find by tags: AND of exact key=value matches
    both = machines.find_machines(V1MachineFindRequest(tags=[RUN_TAG]))
    assert sorted(m.id for m in both) == sorted([machine.id, firewall.id])
    workers = machines.find_machines(V1MachineFindRequest(tags=[RUN_TAG, "wire-proof.capms.dev/role=worker"]))
    assert [m.id for m in workers] == [machine.id]
    found = firewalls.find_firewalls(V1FirewallFindRequest(tags=[RUN_TAG]))
    assert [f.id for f in found] == [firewall.id]
    assert firewalls.find_firewall(firewall.id).id == firewall.id
    with pytest.raises(ApiException) as excinfo:
        firewalls.find_firewall(machine.id)
    assert_metal_error(excinfo, 404, "not a firewall")

    for allocated in (machine, firewall):
        ready = wait_phoned_home(client, allocated.id)
        assert ready.liveliness == "Alive"
        assert ready.allocation.allocationuuid == allocated.allocation.allocationuuid

    for allocated in (machine, firewall):
        freed = machines.free_machine(allocated.id)
        assert freed.id == allocated.id
        after = machines.find_machine(allocated.id)
        assert after.allocation is None
        assert RUN_TAG not in after.tags
    assert machines.find_machines(V1MachineFindRequest(tags=[RUN_TAG])) == []

    assert free_network(client, network.id).id == network.id


def test_error_codes_through_prism():
    client = through_prism()
    with pytest.raises(ApiException) as excinfo:
        IpApi(client).allocate_ip(V1IPAllocateRequest(networkid=f"no-such-network-{RUN_ID}", projectid=PROJECT, type="ephemeral"))
    assert_metal_error(excinfo, 404, "NotFound")

    with pytest.raises(ApiException) as excinfo:
        MachineApi(client).allocate_machine(
            V1MachineAllocateRequest(
                projectid=PROJECT,
                partitionid=PARTITION,
                sizeid=SIZE,
                imageid=IMAGE,
                ssh_pub_keys=[],
                networks=[V1MachineAllocationNetwork(networkid=f"no-such-network-{RUN_ID}", autoacquire=True)],
                tags=[RUN_TAG],
            )
        )
    assert_metal_error(excinfo, 404, "NotFound")

    with pytest.raises(ApiException) as excinfo:
        MachineApi(client).allocate_machine(
            V1MachineAllocateRequest(
                projectid=PROJECT, partitionid=PARTITION, sizeid=SIZE, imageid=IMAGE, ssh_pub_keys=[], networks=[]
            )
        )
    assert_metal_error(excinfo, 400, "network ids cannot be nil/empty")

    unknown = str(uuid.uuid4())
    with pytest.raises(ApiException) as excinfo:
        MachineApi(client).find_machine(unknown)
    assert_metal_error(excinfo, 404, "NotFound")
    with pytest.raises(ApiException) as excinfo:
        MachineApi(client).free_machine(unknown)
    assert_metal_error(excinfo, 404, "NotFound")

    with pytest.raises(ApiException) as excinfo:
        MachineApi(through_prism(("not-the-key", "Metal-Edit"))).find_machine(unknown)
    assert_metal_error(excinfo, 403, "Wrong HMAC found")

    with pytest.raises(ApiException) as excinfo:
        IpApi(through_prism(VIEW)).allocate_ip(V1IPAllocateRequest(networkid=INTERNET, projectid=PROJECT, type="ephemeral"))
    assert_metal_error(excinfo, 403, "you are not member in one of")


# ---------------------------------------------------------------------------------------------
# Straight to the server
# ---------------------------------------------------------------------------------------------


def test_error_codes_direct():
    # No credentials: metal-api's TenantEnsurer answers a bare JSON string (Prism would answer
    # 401 itself, as the spec requires an Authorization header).
    response = raw("GET", f"/v1/machine/{uuid.uuid4()}", headers={})
    assert response.status_code == 403
    assert response.json() == "tenant  not allowed"

    # Unparsable and ill-typed bodies: 400 with the error object (Prism would refuse them itself).
    for body in ('{"networkid": ', '{"networkid": 5, "projectid": "x", "type": "ephemeral"}', "[]"):
        response = raw("POST", "/v1/ip/allocate", data=body)
        assert response.status_code == 400, (body, response.text)
        assert response.json()["statuscode"] == 400

    # A POST without Content-Type matches no go-restful route.
    headers = hmac_headers("POST", *EDIT)
    response = raw("POST", "/v1/ip/allocate", headers=headers, data="{}")
    assert response.status_code == 415, response.text

    # An X-Date older than the lifetime (30 s for Metal-Edit).
    date = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=120)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    salt = "abcdefghijklmnopqrstuvwx"
    mac = hmac.new(b"metal-edit", (date + "GET" + salt).encode(), hashlib.sha256).hexdigest()
    stale = {"X-Date": date, "X-Data-Salt": salt, "Authorization": f"Metal-Edit {mac}"}
    response = raw("GET", f"/v1/machine/{uuid.uuid4()}", headers=stale)
    assert response.status_code == 403
    assert "too old" in response.json()["message"]

    # Health needs no credentials.
    response = raw("GET", "/v1/health", headers={})
    assert response.status_code == 200 and response.json()["status"] == "healthy"


def test_direct_lifecycle_without_prism():
    """The unmodified client, DELETE bodies `{}` included, without Prism in between."""
    client = direct()
    network = allocate_network(client, f"wire-proof-direct-{RUN_ID}")
    ip, status, _ = IpApi(client).allocate_ip_with_http_info(
        V1IPAllocateRequest(networkid=INTERNET, projectid=PROJECT, type="static", tags=[RUN_TAG])
    )
    assert status == 201
    machine = MachineApi(client).allocate_machine(
        V1MachineAllocateRequest(
            projectid=PROJECT,
            partitionid=PARTITION,
            sizeid=SIZE,
            imageid=IMAGE,
            ssh_pub_keys=[],
            networks=[
                V1MachineAllocationNetwork(networkid=network.id, autoacquire=True),
                V1MachineAllocationNetwork(networkid=INTERNET, autoacquire=False),
            ],
            ips=[ip.ipaddress],
            tags=[RUN_TAG, "wire-proof.capms.dev/path=direct"],
        )
    )
    assert ip.ipaddress in allocation_network(machine, INTERNET).ips
    found = MachineApi(client).find_machines(V1MachineFindRequest(tags=["wire-proof.capms.dev/path=direct"]))
    assert [m.id for m in found] == [machine.id]
    assert MachineApi(client).free_machine(machine.id).id == machine.id
    # a static IP survives the machine's free; the machine tag goes with the asynchronous release
    deadline = time.monotonic() + NETWORK_FREE_TIMEOUT
    while True:
        kept = IpApi(client).find_ip(ip.ipaddress)
        assert kept.type == "static"
        if not any(tag.startswith("machine.metal-stack.io/id=") for tag in kept.tags or []):
            break
        assert time.monotonic() < deadline, f"{ip.ipaddress} still machine-scoped: {kept.tags}"
        time.sleep(POLL_INTERVAL)
    assert IpApi(client).free_ip(ip.ipaddress).ipaddress == ip.ipaddress
    assert free_network(client, network.id).id == network.id

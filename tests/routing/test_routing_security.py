"""Who may reach what through the routing layer (issue 12, items 3, 6, 7), on the shared routing lab
(conftest.py: one host that is db host, etcd and HAProxy), from plain client containers on the lab
network, each with its own address:

- A tenant's client networks (its spec's ``hba``) hold on all three paths: through HAProxy by SNI,
  through HAProxy on the tenant's own port, and directly to the tenant's server. PostgreSQL only
  sees HAProxy's address, so HAProxy enforces the networks and pg_hba.conf admits the proxy host.
- HAProxy's statistics page and Prometheus metrics answer on the proxy host's loopback only.
- One client address cannot hold more than haproxy_max_conn_per_source connections at once,
  while another client still gets in.

The clients speak just enough of the PostgreSQL protocol (stdlib Python in the lab image) to tell
"admitted" (the server asks for a password) from "refused by HAProxy" (the connection is closed)
and "refused by pg_hba.conf" (an error message); the machine running the tests, inside the
tenant's networks too, logs in for real with psycopg on each path.
"""

import json
import subprocess
import time

import psycopg
import pytest
import yaml

from tests.routing.client import (
    DOMAIN,
    HAPROXY_STATS_SOCKET,
    PROBE,
    SNI_PORT,
    conninfo,
    haproxy_stats_command,
    postgres_port,
    proxy_port,
)

pytestmark = pytest.mark.lab

HBA_TENANT = "rth"
LAB_IMAGE = "localhost/shadowdb-lab:trixie-1"

# Run in two client containers at once: python3 -c <this> <role> <address> <port> <limit> <start>. At the
# wall-clock time <start> (containers share the machine's clock), "hog" opens <limit> connections
# to the SNI port and checks that one more is closed at once; "other" then connects once while the
# hog is still at its limit; "hog" checks again. All within HAProxy's inspect delay (5 s), after
# which it closes connections that sent no TLS hello anyway. Prints a JSON report.
PER_SOURCE = r"""
import json, socket, sys, time
role, address = sys.argv[1], sys.argv[2]
port, limit, start = int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])

def state(sock, wait):
    sock.settimeout(wait)
    try:
        return "closed" if sock.recv(1) == b"" else "data"
    except socket.timeout:
        return "open"
    except OSError:
        return "closed"

def attempt(wait):
    # One more connection: "closed" when HAProxy drops it (a reset may already end the connect).
    try:
        sock = socket.create_connection((address, port), timeout=5)
    except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError):
        return "closed"
    try:
        return state(sock, wait)
    finally:
        sock.close()

late = time.time() - start
time.sleep(max(0.0, start - time.time()))
report = {"late": late}
if role == "hog":
    held = [socket.create_connection((address, port), timeout=5) for _ in range(limit)]
    time.sleep(0.3)
    report["extra"] = attempt(1.0)
    time.sleep(max(0.0, start + 2.5 - time.time()))
    report["again"] = attempt(0.5)
    report["held"] = sum(state(s, 0.01) == "open" for s in held)
    for s in held:
        s.close()
else:
    time.sleep(max(0.0, start + 1.5 - time.time()))
    report["other"] = attempt(0.7)
print(json.dumps(report))
"""


def podman(lab, *args, check=True, timeout=120):
    return subprocess.run(
        ["podman", *args], env=lab.env, check=check, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def clients(lab):
    """Two plain client containers on the lab network: {'in': address, 'out': address}."""
    names = {"in": f"{lab.name}-cin", "out": f"{lab.name}-cout"}
    for name in names.values():
        podman(lab, "rm", "-f", name, check=False)
        podman(
            lab,
            "run", "-d", "--name", name, "--network", lab.name, "--label", f"shadowdb.lab={lab.name}",
            "--ulimit", "nofile=10000:10000", "--ulimit", "nproc=10000:10000",
            "--entrypoint", "sleep", LAB_IMAGE, "infinity",
        )  # fmt: skip
    try:
        yield {role: (name, lab.address(name)) for role, name in names.items()}
    finally:
        for name in names.values():
            podman(lab, "rm", "-f", "-t", "0", name, check=False)


def probe(lab, container: str, mode: str, tenant: str, port: int) -> str:
    address = lab.address(lab.hosts[0])
    out = subprocess.run(
        ["podman", "exec", "-i", container, "python3", "-", mode, tenant, address, str(port), DOMAIN],
        input=PROBE, env=lab.env, check=True, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return out.stdout.strip()


def gateway(lab) -> str:
    """The machine's address on the lab network (where the tests' own connections come from)."""
    info = json.loads(podman(lab, "network", "inspect", lab.name).stdout)[0]
    return info["subnets"][0]["gateway"]


@pytest.fixture(scope="module")
def hba_tenant(lab, clients):
    """Tenant rth admitting only the 'in' client and the machine; the proxy host's address known."""
    host = lab.hosts[0]
    host_vars_file = lab.inventory_dir / "host_vars" / f"{host}.yml"
    host_vars = yaml.safe_load(host_vars_file.read_text()) if host_vars_file.exists() else {}
    lab.write_host_vars(host, (host_vars or {}) | {"shadowdb_address": lab.address(host)})
    hba = sorted({f"{clients['in'][1]}/32", f"{gateway(lab)}/32"})
    spec = {"tenant": {"name": HBA_TENANT, "hba": hba}}
    lab.playbook("tenant.yml", "-e", f"tenant_host={host}", "-e", json.dumps(spec))
    return hba


PATHS = ["sni", "port", "direct"]


def path_port(lab, path: str, tenant: str) -> int:
    return {"sni": SNI_PORT, "port": proxy_port(lab, tenant), "direct": postgres_port(lab, tenant)}[path]


@pytest.mark.parametrize("path", PATHS)
def test_a_client_inside_the_tenants_networks_gets_in(lab, clients, hba_tenant, path):
    container = clients["in"][0]
    assert probe(lab, container, path, HBA_TENANT, path_port(lab, path, HBA_TENANT)) == "admitted"


@pytest.mark.parametrize("path", PATHS)
def test_a_client_outside_the_tenants_networks_is_refused(lab, clients, hba_tenant, path):
    container = clients["out"][0]
    answer = probe(lab, container, path, HBA_TENANT, path_port(lab, path, HBA_TENANT))
    # HAProxy closes the connection before PostgreSQL sees it; directly, pg_hba.conf refuses it.
    assert answer == ("nohba" if path == "direct" else "refused"), answer


@pytest.mark.parametrize("path", PATHS)
def test_the_networks_are_the_tenants_own(lab, clients, hba_tenant, path):
    """The client refused by rth still reaches rta (every network) on the same paths."""
    assert probe(lab, clients["out"][0], path, "rta", path_port(lab, path, "rta")) == "admitted"


@pytest.mark.parametrize("path", PATHS)
def test_a_client_inside_the_networks_logs_in(lab, hba_tenant, path):
    """The machine (in the tenant's networks) logs in with the tenant's password on each path:
    pg_hba.conf admits the proxy host for what HAProxy let through."""
    params = conninfo(lab, HBA_TENANT, path_port(lab, path, HBA_TENANT), direct=path == "sni")
    with psycopg.connect(autocommit=True, **params) as conn:
        assert conn.execute("SELECT current_setting('cluster_name')").fetchone() == (HBA_TENANT,)


def test_admin_endpoints_answer_to_root_on_the_proxy_host_only(lab, clients):
    """Statistics and metrics (they list every tenant) answer on a root-only unix socket: not on
    the network, not on loopback TCP (a tenant's server on the proxy host could reach that), and
    not to another OS user of the proxy host (a tenant's server runs as one)."""
    host = lab.hosts[0]
    for path in ("/stats;csv", "/metrics"):
        assert lab.sh(host, haproxy_stats_command(path)).splitlines()[0] == "200", path
    probe = (
        "import socket, sys\n"
        "try:\n    socket.create_connection((sys.argv[1], 8404), timeout=5); print('open')\n"
        "except OSError as e:\n    print(type(e).__name__)\n"
    )
    for client, address in ((clients["out"][0], lab.address(host)), (None, "127.0.0.1")):
        command = ["podman", "exec", "-i", client or host, "python3", "-", address]
        out = subprocess.run(
            command, input=probe, env=lab.env, check=True, capture_output=True, text=True, timeout=60
        )
        assert out.stdout.strip() == "ConnectionRefusedError", (client or host, address)
    # Another OS user of the proxy host (as a tenant's server is) cannot open the socket.
    as_nobody = lab.sh(
        host,
        f"setpriv --reuid=nobody --regid=nogroup --clear-groups python3 -c "
        f'"import socket; s = socket.socket(socket.AF_UNIX)\n'
        f"try:\n    s.connect('{HAPROXY_STATS_SOCKET}'); print('open')\n"
        f'except OSError as e:\n    print(type(e).__name__)"'
        f" || true",
    )
    assert as_nobody.strip() == "PermissionError", as_nobody


def test_one_client_cannot_take_every_slot(lab, clients):
    host = lab.hosts[0]
    config = lab.sh(host, "cat /etc/haproxy/haproxy.cfg")
    limit = int(config.split("sc0_conn_cur gt ", 1)[1].split()[0])
    address = lab.address(host)
    for attempt in range(3):
        start = time.time() + 8
        runs = {
            role: subprocess.Popen(
                [
                    "podman",
                    "exec",
                    clients[key][0],
                    "python3",
                    "-c",
                    PER_SOURCE,
                    role,
                    address,
                    str(SNI_PORT),
                    str(limit),
                    str(start),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=lab.env,
            )
            for role, key in (("hog", "in"), ("other", "out"))
        }
        reports = {}
        for role, run in runs.items():
            out, err = run.communicate(timeout=60)
            assert run.returncode == 0, err
            reports[role] = json.loads(out)
        if max(r["late"] for r in reports.values()) < 0:
            break
        print(f"attempt {attempt}: a client started late ({reports}), again")
    else:
        pytest.fail(f"the clients never started in time: {reports}")
    assert reports["hog"]["held"] == limit, reports
    assert reports["hog"]["extra"] == "closed", reports
    assert reports["hog"]["again"] == "closed", reports
    assert reports["other"]["other"] == "open", reports

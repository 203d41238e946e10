"""Verify the routing scenario: three tenants on db1, reached by name through HAProxy on proxy1.

The clients are psycopg on the machine running molecule (libpq 17: ``sslnegotiation=direct``),
connecting to the proxy host's address on the scenario's network with ``sslmode=verify-full``
against the scenario's CA, as an application would. The registry (etcd on proxy1) and the
proxy's configuration are read on the hosts with testinfra's podman backend.
The last test onboards a fourth tenant with playbooks/tenant.yml and molecule's inventory, while
sessions to the first three stay open through the proxy.
"""

import json
import os
import subprocess
import urllib.request
from pathlib import Path

import psycopg
import pytest
import testinfra
import yaml

_MOLECULE_FILE = os.environ.get("MOLECULE_FILE", str(Path(__file__).parents[1] / "molecule.yml"))
_SCENARIO = yaml.safe_load(Path(_MOLECULE_FILE).read_text())
_DB, _PROXY = (p["name"] for p in _SCENARIO["platforms"])
TENANTS = [t["name"] for t in _SCENARIO["provisioner"]["inventory"]["host_vars"][_DB]["shadowdb_tenants"]]
FOURTH = "delta"
DOMAIN = "db.shadowdb.test"
REPO = Path(__file__).resolve().parents[3]
EPHEMERAL = Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", Path(__file__).parents[1] / ".molecule"))
CA = EPHEMERAL / "pki" / "ca.crt"
WRONG_PASSWORD = "not-the-password"  # noqa: S105 (a test value, refused by design)

db = testinfra.get_host(f"podman://{_DB}")
proxy = testinfra.get_host(f"podman://{_PROXY}")


def address(name: str) -> str:
    out = subprocess.run(
        ["podman", "inspect", name, "--format", "{{json .NetworkSettings.Networks}}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return next(iter(json.loads(out).values()))["IPAddress"]


PROXY_ADDRESS = address(_PROXY)


def owner_password(tenant: str) -> str:
    env = db.file(f"/etc/shadowdb/tenants/{tenant}/owner.env").content_string
    return dict(line.split("=", 1) for line in env.splitlines() if "=" in line and not line.startswith("#"))[
        "PGPASSWORD"
    ]


def proxy_ports() -> dict[str, int]:
    """Each tenant's proxy port, as its registry record gives it."""
    return {tenant: record["proxy_port"] for tenant, record in registry().items()}


def registry() -> dict[str, dict]:
    """The records in etcd, read with etcdctl on the member with its own certificate."""
    out = proxy.check_output(
        "etcdctl --endpoints=https://127.0.0.1:2379 --cacert=/etc/etcd/pki/ca.crt"
        " --cert=/etc/etcd/pki/member.crt --key=/etc/etcd/pki/member.key"
        " get --prefix /shadowdb/tenants/ --print-value-only"
    )
    records = [json.loads(line) for line in out.splitlines() if line.strip()]
    return {r["tenant"]: r for r in records}


def connect(tenant: str, port: int, *, sni: bool, password: str | None = None, sslmode: str = "verify-full"):
    extra = {"sslnegotiation": "direct"} if sni else {}
    return psycopg.connect(
        host=f"{tenant}.{DOMAIN}",
        hostaddr=PROXY_ADDRESS,
        port=port,
        dbname=tenant,
        user=tenant,
        password=password if password is not None else owner_password(tenant),
        sslmode=sslmode,
        sslrootcert=str(CA),
        connect_timeout=10,
        autocommit=True,
        **extra,
    )


def served_by(conn) -> tuple:
    return conn.execute(
        "SELECT current_setting('cluster_name'), ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
    ).fetchone()


by_name = pytest.mark.parametrize("tenant", TENANTS)


def test_registry_holds_each_tenant_of_db1():
    records = registry()
    assert sorted(records) == sorted(TENANTS)
    leases = json.loads(db.file("/var/lib/shadowdb/ports/postgres.json").content_string)["leases"]
    for tenant in TENANTS:
        assert records[tenant]["host"] == _DB
        assert records[tenant]["port"] == leases[tenant]
    # Proxy ports are chosen from the registry: distinct, in the default range.
    ports = [records[tenant]["proxy_port"] for tenant in TENANTS]
    assert len(set(ports)) == len(ports) and all(30000 <= port <= 31999 for port in ports), ports


def test_haproxy_runs_on_the_proxy_host_only():
    assert proxy.service("haproxy.service").is_running
    assert not db.package("haproxy").is_installed
    assert proxy.service("etcd.service").is_running


@by_name
def test_reached_by_sni_on_the_shared_port(tenant):
    with connect(tenant, 5432, sni=True) as conn:
        assert served_by(conn) == (tenant, True)


@by_name
def test_reached_on_its_own_proxy_port(tenant):
    with connect(tenant, proxy_ports()[tenant], sni=False) as conn:
        assert served_by(conn) == (tenant, True)


def test_a_name_not_in_the_registry_is_refused():
    # No certificate check (sslmode=require): only HAProxy's refusal can fail this connection.
    with pytest.raises(psycopg.OperationalError) as refused:
        connect("nobody", 5432, sni=True, password=WRONG_PASSWORD, sslmode="require").close()
    assert "password authentication failed" not in str(refused.value)


def test_a_tenant_name_on_another_tenants_port_fails_verification():
    first, second = TENANTS[0], TENANTS[1]
    with pytest.raises(psycopg.OperationalError, match="does not match host name"):
        connect(first, proxy_ports()[second], sni=False).close()


def test_backends_are_up_in_haproxy():
    # The statistics page answers on a root-only unix socket (haproxy_admin_bind is empty).
    out = proxy.check_output(
        "python3 -c \"import http.client, socket; c = http.client.HTTPConnection('haproxy'); "
        "c.sock = socket.socket(socket.AF_UNIX); c.sock.connect('/run/haproxy/stats.sock'); "
        "c.request('GET', '/stats;csv'); print(c.getresponse().read().decode())\""
    )
    rows = [row.split(",") for row in out.splitlines() if row and not row.startswith("#")]
    status = {row[0]: row[17] for row in rows if row[1] == "BACKEND"}
    for tenant in TENANTS:
        assert status.get(f"t_{tenant}") == "UP", out


def test_admin_endpoints_are_not_on_the_network():
    for path in ("/stats", "/metrics"):
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://{PROXY_ADDRESS}:8404{path}", timeout=5)  # noqa: S310


def test_adding_a_fourth_tenant_keeps_open_sessions():
    sessions = [connect(t, 5432, sni=True) for t in TENANTS]
    sessions += [connect(t, proxy_ports()[t], sni=False) for t in TENANTS]
    pids = [s.execute("SELECT pg_backend_pid()").fetchone()[0] for s in sessions]
    inventory = Path(os.environ["MOLECULE_INVENTORY_FILE"]).parent
    try:
        run = subprocess.run(
            [
                "ansible-playbook",
                "-i",
                str(inventory),
                str(REPO / "playbooks" / "tenant.yml"),
                "-e",
                f"tenant_host={_DB}",
                "-e",
                json.dumps({"tenant": {"name": FOURTH}}),
            ],
            capture_output=True,
            text=True,
        )
        assert run.returncode == 0, (run.stdout + run.stderr)[-6000:]
        # Applied and reloaded in one call (haproxy_routes_only); the sessions prove a reload.
        assert "haproxy : Check and apply the configuration" in run.stdout
        for session, pid in zip(sessions, pids, strict=True):
            assert session.execute("SELECT pg_backend_pid()").fetchone()[0] == pid
        assert sorted(registry()) == sorted([*TENANTS, FOURTH])
        with connect(FOURTH, 5432, sni=True) as conn:
            assert served_by(conn) == (FOURTH, True)
        with connect(FOURTH, proxy_ports()[FOURTH], sni=False) as conn:
            assert served_by(conn) == (FOURTH, True)
    finally:
        for session in sessions:
            session.close()


def test_the_backup_repository_holds_alphas_stanza_only():
    """proxy1 is also the backup repository: alpha (backup: true) has its stanza, a first full
    backup and archived WAL there, the others (no backup in their spec) have none."""
    server = proxy.service("shadowdb-backup-repository.service")
    assert server.is_running and server.is_enabled
    for _ in range(60):  # the first full backup is started at creation, not waited for
        if not proxy.run("systemctl is-active -q 'shadowdb-backup@alpha:full.service'").rc == 0:
            break
        proxy.run("sleep 1")
    out = proxy.check_output(
        "runuser -u pgbackrest -- pgbackrest --config=/etc/pgbackrest/pgbackrest.conf "
        "--config-include-path=/etc/pgbackrest/conf.d --stanza=alpha --output=json info"
    )
    stanza = json.loads(out)[0]
    assert stanza["status"]["code"] == 0, stanza["status"]
    assert [b["type"] for b in stanza["backup"]] == ["full"]
    assert proxy.file("/etc/pgbackrest/conf.d/alpha.conf").exists
    for tenant in TENANTS[1:]:
        assert not proxy.file(f"/etc/pgbackrest/conf.d/{tenant}.conf").exists
        assert not db.service(f"shadowdb-backup-agent@{tenant}.service").is_enabled
    assert db.service("shadowdb-backup-agent@alpha.service").is_running

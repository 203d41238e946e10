"""Verify the default scenario: three tenants of different tiers on one lab host.

Runs with testinfra's podman backend (``podman exec``). Every check looks at the real thing:
systemd's view of the units, the kernel's view of processes, mounts and sockets, and
PostgreSQL's answers over TCP with TLS, using the credentials the playbook left on the host.
"""

import json
import os
from pathlib import Path

import pytest
import yaml

# The scenario's own inventory is the source of the tenants under test. Molecule passes the
# interpolated copy of molecule.yml in MOLECULE_FILE; outside molecule, read the scenario's.
_MOLECULE_FILE = os.environ.get("MOLECULE_FILE", str(Path(__file__).parents[1] / "molecule.yml"))
_SCENARIO = yaml.safe_load(Path(_MOLECULE_FILE).read_text())
_HOST = _SCENARIO["platforms"][0]["name"]
TENANTS = _SCENARIO["provisioner"]["inventory"]["host_vars"][_HOST]["shadowdb_tenants"]

# What each tier must produce, written out here rather than read from shadowdb/tiers.py
# so that a wrong tier table or a wrong rendering is caught. systemd reports MemoryMax in bytes
# and CPUQuota as CPU time per second.
TIERS = {
    "small": {
        "MemoryMax": str(512 * 1024**2),
        "CPUQuotaPerSecUSec": "500ms",
        "TasksMax": "256",
        "LimitNOFILE": "1024",
        "max_connections": "50",
    },
    "medium": {
        "MemoryMax": str(1024 * 1024**2),
        "CPUQuotaPerSecUSec": "1s",
        "TasksMax": "512",
        "LimitNOFILE": "2048",
        "max_connections": "100",
    },
    "large": {
        "MemoryMax": str(2048 * 1024**2),
        "CPUQuotaPerSecUSec": "2s",
        "TasksMax": "1024",
        "LimitNOFILE": "4096",
        "max_connections": "200",
    },
}

# A query that only works when the extension is really usable (not just listed).
EXTENSION_PROBES = {
    "pgcrypto": "SELECT encode(digest('shadowdb', 'sha256'), 'hex') IS NOT NULL",
    "pg_stat_statements": "SELECT count(*) >= 0 FROM pg_stat_statements",  # needs the preload
    "vector": "SELECT '[3,4]'::vector <-> '[0,0]'::vector = 5",
    "citext": "SELECT 'ShadowDB'::citext = 'shadowdb'::citext",
}

DOMAIN = "db.shadowdb.test"
CA = "/etc/shadowdb/ca.crt"
LEASES = "/var/lib/shadowdb/ports/postgres.json"
SECRETS = "/etc/shadowdb/tenants"

# Runs inside the host (python3-psycopg is installed there): connects like a client of the
# tenant, over TCP to 127.0.0.1 with TLS verified against the deployment CA, runs the queries
# and prints the rows or the server's error as JSON. Connection parameters come from the
# tenant's owner.env unless the test overrides them; another role's password can be taken from
# the tenant's passwords.json (keys postgres, owner, readonly).
_PROBE = r"""
import json, sys
import psycopg

request = json.loads(sys.argv[1])
env = {}
with open(request["env_file"]) as f:
    for line in f:
        key, sep, value = line.strip().partition("=")
        if sep and not key.startswith("#"):
            env[key] = value
params = {
    "host": env["PGHOST"], "hostaddr": env["PGHOSTADDR"], "port": env["PGPORT"],
    "dbname": env["PGDATABASE"], "user": env["PGUSER"], "password": env["PGPASSWORD"],
    "sslmode": "verify-full", "sslrootcert": env["PGSSLROOTCERT"], "connect_timeout": "10",
}
if "login_as" in request:
    with open(request["passwords_file"]) as f:
        params["password"] = json.load(f)[request["login_as"]]
    params["user"] = request["user"]
params.update(request["params"])
try:
    with psycopg.connect(autocommit=True, **params) as conn:
        rows = []
        for query in request["queries"]:
            cur = conn.execute(query)
            rows.append([list(r) for r in cur.fetchall()] if cur.description else [])
    print(json.dumps({"ok": True, "rows": rows}, default=str))
except psycopg.Error as e:
    print(json.dumps({"ok": False, "error": str(e), "sqlstate": e.sqlstate}))
"""


def pg(host, tenant, queries=(), *, login_as=None, params=None):
    """Connect to a tenant's cluster from inside the host; return the probe's JSON answer.

    ``params`` override libpq parameters; ``login_as`` (postgres, readonly) logs in as another of
    the tenant's roles, with its password from the tenant's passwords.json.
    """
    request = {
        "env_file": f"{SECRETS}/{tenant}/owner.env",
        "queries": list(queries),
        "params": params or {},
    }
    if login_as:
        user = {"postgres": "postgres", "readonly": f"{tenant}_ro"}[login_as]
        passwords = f"{SECRETS}/{tenant}/passwords.json"
        request |= {"passwords_file": passwords, "login_as": login_as, "user": user}
    out = host.check_output("python3 -c %s %s", _PROBE, json.dumps(request))
    return json.loads(out)


def pg_ok(host, tenant, queries, **kwargs):
    """Rows of each query (a list per query); fails the test when the connection is refused."""
    answer = pg(host, tenant, queries, **kwargs)
    assert answer["ok"], f"tenant {tenant}: {answer['error']}"
    return answer["rows"]


def value(host, tenant, query, **kwargs):
    """The single value a query returns."""
    return pg_ok(host, tenant, [query], **kwargs)[0][0][0]


def leases(host):
    return json.loads(host.file(LEASES).content_string)["leases"]


def main_pid(host, tenant):
    pid = host.check_output("systemctl show -P MainPID shadowdb-postgres@%s.service", tenant)
    assert pid.isdigit() and int(pid) > 0, f"tenant {tenant}: no main process ({pid!r})"
    return int(pid)


by_name = pytest.mark.parametrize("tenant", TENANTS, ids=[t["name"] for t in TENANTS])


def test_scenario_has_three_tiers():
    assert sorted(t["tier"] for t in TENANTS) == ["large", "medium", "small"]


@by_name
def test_units_active_and_enabled(host, tenant):
    name = tenant["name"]
    for unit in (f"shadowdb-volume@{name}.service", f"shadowdb-postgres@{name}.service"):
        service = host.service(unit)
        assert service.is_running, unit
        assert service.is_enabled, unit


@by_name
def test_postmaster_runs_as_tenant_user(host, tenant):
    name = tenant["name"]
    uid = host.user(f"pg-{name}").uid
    pid = main_pid(host, name)
    # Real, effective, saved and filesystem uid of the postmaster.
    status = host.file(f"/proc/{pid}/status").content_string.splitlines()
    uid_line = next(line for line in status if line.startswith("Uid:"))
    assert uid_line.split()[1:] == [str(uid)] * 4
    assert host.file(f"/proc/{pid}/exe").linked_to == "/usr/lib/postgresql/17/bin/postgres"
    # Every backend and auxiliary process too.
    children = host.check_output("ps -o uid= --ppid %s", str(pid)).split()
    assert children, f"tenant {name}: postmaster has no child processes"
    assert set(children) == {str(uid)}
    assert host.check_output("systemctl show -P User shadowdb-postgres@%s.service", name) == f"pg-{name}"


@by_name
def test_each_tenant_listens_on_its_own_leased_port(host, tenant):
    name = tenant["name"]
    lease = leases(host)[name]
    assert 20000 <= lease <= 29999
    pid = main_pid(host, name)
    listeners = host.check_output("ss -Hltnp sport = :%s", str(lease))
    assert f"pid={pid}," in listeners, listeners
    assert value(host, name, "SHOW port") == str(lease)
    assert host.check_output("grep -E '^PGPORT=' %s/%s/owner.env", SECRETS, name) == f"PGPORT={lease}"


def test_leases_are_distinct(host):
    ports = leases(host)
    assert sorted(ports) == sorted(t["name"] for t in TENANTS)
    assert len(set(ports.values())) == len(ports)


@by_name
def test_volume_mounted_by_label(host, tenant):
    name = tenant["name"]
    mountpoint = f"/mnt/db/{name}"
    source, fstype = host.check_output("findmnt -n -o SOURCE,FSTYPE --mountpoint %s", mountpoint).split()
    assert fstype == "ext4"
    assert host.check_output("blkid -p -s LABEL -o value %s", source) == name
    # The tenant's own loop image backs the device, and the data directory lives on it.
    backing = host.check_output("losetup -n -O BACK-FILE %s", source)
    assert backing == f"/var/lib/shadowdb/volumes/{name}.img"
    assert host.check_output("findmnt -n -o TARGET -T %s/data", mountpoint) == mountpoint
    data = host.file(f"{mountpoint}/data")
    assert (data.user, data.group, data.mode) == (f"pg-{name}", f"pg-{name}", 0o700)


def test_volumes_are_separate_devices(host):
    sources = {host.check_output("findmnt -n -o SOURCE --mountpoint /mnt/db/%s", t["name"]) for t in TENANTS}
    assert len(sources) == len(TENANTS)


@by_name
def test_tls_session_checksums_and_role(host, tenant):
    name = tenant["name"]
    rows = pg_ok(
        host,
        name,
        [
            "SHOW data_checksums",
            "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            "SELECT current_user, current_database()",
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
        ],
    )
    assert rows[0] == [["on"]]
    assert rows[1][0][0] is True
    assert rows[1][0][1] in ("TLSv1.2", "TLSv1.3")
    assert rows[2] == [[name, name]]
    assert rows[3] == [[False]], "the tenant's owner must not be a superuser"


@by_name
def test_extensions_present_and_usable(host, tenant):
    name = tenant["name"]
    installed = {r[0] for r in pg_ok(host, name, ["SELECT extname FROM pg_extension"])[0]}
    assert set(tenant["extensions"]) <= installed
    rows = pg_ok(host, name, [EXTENSION_PROBES[ext] for ext in tenant["extensions"]])
    assert rows == [[[True]]] * len(tenant["extensions"])


@by_name
def test_tier_and_settings_applied(host, tenant):
    name = tenant["name"]
    assert value(host, name, "SHOW max_connections") == TIERS[tenant["tier"]]["max_connections"]
    for setting, wanted in tenant.get("settings", {}).items():
        assert value(host, name, f"SHOW {setting}") == wanted


@by_name
def test_cgroup_limits_of_the_tier(host, tenant):
    """Recorded by systemd (not enforced on this machine's cgroup v1); LimitNOFILE is enforced."""
    name = tenant["name"]
    expected = TIERS[tenant["tier"]]
    props = [p for p in expected if p != "max_connections"]
    out = host.check_output("systemctl show -p %s shadowdb-postgres@%s.service", ",".join(props), name)
    shown = dict(line.split("=", 1) for line in out.splitlines())
    assert shown == {p: expected[p] for p in props}
    limits = host.file(f"/proc/{main_pid(host, name)}/limits").content_string
    nofile = next(line for line in limits.splitlines() if line.startswith("Max open files")).split()
    assert nofile[3:5] == [expected["LimitNOFILE"]] * 2


@by_name
def test_hba_refuses_connections_without_tls(host, tenant):
    answer = pg(host, tenant["name"], ["SELECT 1"], params={"sslmode": "disable"})
    assert not answer["ok"]
    assert "pg_hba.conf rejects connection" in answer["error"]
    assert "no encryption" in answer["error"]


@by_name
def test_hba_refuses_a_wrong_password(host, tenant):
    name = tenant["name"]
    answer = pg(host, name, ["SELECT 1"], params={"password": "not-the-password"})
    assert not answer["ok"]
    assert f'password authentication failed for user "{name}"' in answer["error"]


@by_name
def test_superuser_never_logs_in_over_the_network(host, tenant):
    """Even with TLS and its real password, postgres is refused over TCP (local peer only)."""
    answer = pg(host, tenant["name"], ["SELECT 1"], login_as="postgres")
    assert not answer["ok"]
    assert "pg_hba.conf rejects connection" in answer["error"]


def test_tenants_do_not_share_credentials_or_certificates(host):
    first, second = TENANTS[0]["name"], TENANTS[1]["name"]
    port = str(leases(host)[second])
    # The first tenant's owner, with its own password, on the second tenant's cluster.
    answer = pg(host, first, ["SELECT 1"], params={"port": port, "host": f"{second}.{DOMAIN}"})
    assert not answer["ok"]
    assert f'password authentication failed for user "{first}"' in answer["error"]
    # The second tenant's certificate does not pass for the first tenant's name.
    answer = pg(host, first, ["SELECT 1"], params={"port": port})
    assert not answer["ok"]
    assert f'server certificate for "{second}.{DOMAIN}" does not match host name' in answer["error"]


@by_name
def test_readonly_role(host, tenant):
    name = tenant["name"]
    exists = value(host, name, "SELECT count(*) FROM pg_roles WHERE rolname = current_database() || '_ro'")
    if not tenant.get("readonly_role"):
        assert exists == 0
        return
    assert exists == 1
    pg_ok(
        host,
        name,
        [
            "CREATE TABLE IF NOT EXISTS molecule_probe (id int)",
            "INSERT INTO molecule_probe VALUES (1) RETURNING id",
        ],
    )
    ro = {"login_as": "readonly"}
    assert value(host, name, "SELECT count(*) > 0 FROM molecule_probe", **ro) is True
    answer = pg(host, name, ["INSERT INTO molecule_probe VALUES (2)"], **ro)
    assert not answer["ok"]
    assert answer["sqlstate"] == "42501"  # insufficient_privilege


@by_name
def test_secrets_are_root_only(host, tenant):
    secrets = host.file(f"{SECRETS}/{tenant['name']}")
    assert (secrets.user, secrets.mode) == ("root", 0o700)
    for name in ("owner.env", "passwords.json"):
        secret = host.file(f"{SECRETS}/{tenant['name']}/{name}")
        assert (secret.user, secret.group, secret.mode) == ("root", "root", 0o600), name
    assert host.file(CA).exists

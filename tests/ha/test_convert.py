"""Converting a tenant between standalone and HA on an HA lab (3 db hosts + an etcd/HAProxy host):
a standalone tenant made by playbooks/tenant.yml becomes a Patroni cluster with one replica
through playbooks/tenant_ha.yml (replicas 1), on the same host, volume and data directory, then
goes back to standalone (replicas 0), and is removed. Rows written before each step are still
there, the owner's credentials and the HAProxy SNI name keep working, and a second run of each
step changes nothing.

    pytest tests/ha -q -k convert   (about 12 minutes on a quiet machine)
"""

import json
import re

import psycopg
import pytest

from tests.ha import hakit
from tests.ha.hakit import ETCDCTL, tenant_ha

pytestmark = pytest.mark.lab

TENANT = "hconv"


def recap(output: str) -> dict[str, int]:
    return {h: int(c) for h, c in re.findall(r"^(\S+)\s*:\s*ok=\d+\s+changed=(\d+)", output, re.M)}


def sni(lab, password: str, sql: str, readonly: bool = False) -> list[tuple]:
    """Run sql as the tenant's owner through HAProxy's SNI port (TLS verified end to end)."""
    conninfo = {
        "host": f"{TENANT}{'-ro' if readonly else ''}.{hakit.DOMAIN}",
        "hostaddr": lab.proxy[1],
        "port": hakit.SNI_PORT,
        "sslnegotiation": "direct",
        "sslmode": "verify-full",
        "sslrootcert": str(lab.inventory_dir / "pki" / "ca.crt"),
        "dbname": TENANT,
        "user": TENANT,
        "password": password,
        "connect_timeout": 3,
    }
    with psycopg.connect(**conninfo, autocommit=True) as conn:
        cursor = conn.execute(sql)
        return cursor.fetchall() if cursor.description else []


def count(lab, password: str, readonly: bool = False) -> int:
    return sni(lab, password, "SELECT count(*) FROM conv_rows", readonly)[0][0]


def standalone_state(host: str) -> dict[str, str]:
    """What a host has of the tenant's standalone cluster and of its Patroni member."""
    checks = {
        "postgres_unit": f"systemctl is-active shadowdb-postgres@{TENANT}",
        "postgres_dropin": f"ls -d /etc/systemd/system/shadowdb-postgres@{TENANT}.service.d",
        "postgres_lease": f"grep -h '\"{TENANT}\"' /var/lib/shadowdb/ports/postgres.json",
        "record": f"ls /var/lib/shadowdb/converged/{TENANT}.json",
        "patroni_unit": f"systemctl is-active shadowdb-patroni@{TENANT}",
        "patroni_files": f"ls -d /etc/patroni/{TENANT}.yml"
        f" /etc/systemd/system/shadowdb-patroni@{TENANT}.service.d",
        "patroni_leases": f"grep -h '\"{TENANT}\"' /var/lib/shadowdb/ports/ha_postgres.json"
        f" /var/lib/shadowdb/ports/patroni_api.json",
        "patroni_data": f"cd /mnt/db/{TENANT} && ls -d data/patroni.dynamic.json data/postgresql.base.conf"
        " tls/etcd.key",
    }
    return {what: hakit.sh(host, f"{cmd} 2>/dev/null; true").strip() for what, cmd in checks.items()}


def leftovers(host: str) -> dict[str, str]:
    """What a host still has of the tenant (empty strings: nothing)."""
    checks = {
        "units": f"systemctl list-units --all --plain --no-legend 'shadowdb-*@{TENANT}*' | grep -v not-found",
        "dropins": f"ls -d /etc/systemd/system/shadowdb-*@{TENANT}.service.d",
        "volume": f"ls /etc/shadowdb/volumes/{TENANT}.env /var/lib/shadowdb/volumes/{TENANT}.img",
        "mount": f"findmnt -n /mnt/db/{TENANT}",
        "user": f"getent passwd pg-{TENANT}",
        "config": f"ls /etc/patroni/{TENANT}.yml /etc/shadowdb/tenants/{TENANT}",
        "ports": f"grep -h '\"{TENANT}\"' /var/lib/shadowdb/ports/*.json",
        "record": f"ls /var/lib/shadowdb/converged/{TENANT}.json",
    }
    return {what: hakit.sh(host, f"{cmd} 2>/dev/null; true").strip() for what, cmd in checks.items()}


def registry(proxy: str) -> dict | None:
    value = hakit.sh(proxy, f"{ETCDCTL} get --print-value-only /shadowdb/tenants/{TENANT}").strip()
    return json.loads(value) if value else None


def dcs_keys(proxy: str) -> str:
    return hakit.sh(proxy, f"{ETCDCTL} get --prefix --keys-only /shadowdb/patroni/{TENANT}/").strip()


def test_standalone_to_ha_and_back(lab):
    host = next(iter(lab.db))
    proxy = lab.proxy[0]
    lab.playbook("tenant.yml", "-e", f"tenant_host={host}", "-e", json.dumps({"tenant": {"name": TENANT}}))
    password = json.loads(hakit.sh(host, f"cat /etc/shadowdb/tenants/{TENANT}/passwords.json"))["owner"]
    sysid = hakit.sh(
        host, f"/usr/lib/postgresql/17/bin/pg_controldata /mnt/db/{TENANT}/data | grep identifier"
    )
    sni(lab, password, "CREATE TABLE conv_rows (step text, n int)")
    sni(lab, password, "INSERT INTO conv_rows SELECT 'standalone', g FROM generate_series(1, 100) g")
    assert count(lab, password) == 100

    # The name is taken: tenant.yml on another db host is refused from the registry (one read on
    # the controller), before anything changes there.
    elsewhere = sorted(set(lab.db) - {host})[0]
    dupe = lab.playbook(
        "tenant.yml",
        "-e",
        f"tenant_host={elsewhere}",
        "-e",
        json.dumps({"tenant": {"name": TENANT}}),
        check=False,
    )
    assert f"a tenant named '{TENANT}' already exists on {host}" in dupe, dupe[-3000:]
    assert leftovers(elsewhere) == dict.fromkeys(leftovers(elsewhere), ""), leftovers(elsewhere)

    # Asking for more members than there are db hosts is refused before anything changes.
    refused = tenant_ha(lab, {"name": TENANT, "replicas": 3}, check=False)
    assert "needs 4 members on 4 different db hosts" in refused, refused[-3000:]
    assert set(recap(refused).values()) == {0}, recap(refused)
    assert standalone_state(host)["postgres_unit"] == "active"

    # --- Standalone -> HA (1 replica): same host (the leader), same volume and data ---
    tenant_ha(lab, {"name": TENANT, "replicas": 1})
    state = standalone_state(host)
    assert state["patroni_unit"] == "active", state
    for what in ("postgres_dropin", "postgres_lease", "record"):
        assert state[what] == "", (what, state)
    assert state["postgres_unit"] != "active", state
    # The same cluster (system identifier), not a copy.
    assert (
        hakit.sh(host, f"/usr/lib/postgresql/17/bin/pg_controldata /mnt/db/{TENANT}/data | grep identifier")
        == sysid
    )
    members = {h: a for h, a in lab.db.items() if leftovers(h)["volume"]}
    assert len(members) == 2 and host in members, members
    cluster = hakit.Cluster(TENANT, members, lab.proxy[1])
    try:
        assert hakit.wait_for("a healthy cluster of 2", cluster.healthy, timeout=120) == host
        assert cluster.password == password
        # Rows written before are there; the same name and credentials write through HAProxy and the
        # replica streams them.
        assert count(lab, password) == 100
        sni(lab, password, "INSERT INTO conv_rows SELECT 'ha', g FROM generate_series(1, 10) g")
        hakit.wait_for(
            "the rows on the replica", lambda: count(lab, password, readonly=True) == 110, timeout=30
        )
        assert sni(lab, password, "SELECT pg_is_in_recovery()", readonly=True) == [(True,)]
    finally:
        cluster.close()
    record = registry(proxy)
    assert sorted(m["host"] for m in record["members"]) == sorted(members)
    assert all("api_port" in m for m in record["members"]), record
    assert dcs_keys(proxy)

    again = tenant_ha(lab, {"name": TENANT, "replicas": 1})
    assert recap(again) and set(recap(again).values()) == {0}, recap(again)
    # An HA tenant is not converged by tenant.yml, even on its leader's host.
    ha_dupe = lab.playbook(
        "tenant.yml", "-e", f"tenant_host={host}", "-e", json.dumps({"tenant": {"name": TENANT}}), check=False
    )
    assert "(an HA tenant: converge it with playbooks/tenant_ha.yml)" in ha_dupe, ha_dupe[-3000:]

    # --- HA -> standalone (replicas 0): the replica goes, the leader's data is served standalone ---
    proxy_port = record["proxy_port"]
    tenant_ha(lab, {"name": TENANT, "replicas": 0})
    state = standalone_state(host)
    assert state["postgres_unit"] == "active", state
    assert state["postgres_lease"] and state["record"], state
    for what in ("patroni_unit", "patroni_files", "patroni_leases", "patroni_data"):
        assert state[what] in ("", "inactive"), (what, state)
    for other in set(lab.db) - {host}:
        assert leftovers(other) == dict.fromkeys(leftovers(other), ""), (other, leftovers(other))
    assert (
        hakit.sh(host, f"/usr/lib/postgresql/17/bin/pg_controldata /mnt/db/{TENANT}/data | grep identifier")
        == sysid
    )
    assert count(lab, password) == 110
    sni(lab, password, "INSERT INTO conv_rows SELECT 'standalone-again', g FROM generate_series(1, 5) g")
    assert count(lab, password) == 115
    record = registry(proxy)
    assert record["host"] == host and record["proxy_port"] == proxy_port, record
    assert [m["host"] for m in record["members"]] == [host] and "api_port" not in record["members"][0], record
    assert dcs_keys(proxy) == ""
    # Replication's roles and slots are gone (the query names no input).
    leftover_sql = (
        "SELECT count(*) FROM pg_roles WHERE rolname IN ('replicator', 'rewind')"
        " UNION ALL SELECT count(*) FROM pg_replication_slots"
    )
    leftover_roles = hakit.sh(
        host,
        f"runuser -u pg-{TENANT} -- psql -h /mnt/db/{TENANT}/run -p {record['port']} -U postgres"
        f' -Atc "{leftover_sql}"',
    ).split()
    assert leftover_roles == ["0", "0"], leftover_roles
    fragment = hakit.sh(proxy, f"cat /etc/haproxy/conf.d/{TENANT}.cfg")
    assert f"{lab.db[host]}:{record['port']}" in fragment, fragment

    again = tenant_ha(lab, {"name": TENANT, "replicas": 0})
    assert recap(again) and set(recap(again).values()) == {0}, recap(again)
    # tenant.yml finds the tenant as it makes it.
    again = lab.playbook(
        "tenant.yml", "-e", f"tenant_host={host}", "-e", json.dumps({"tenant": {"name": TENANT}})
    )
    assert recap(again) and set(recap(again).values()) == {0}, recap(again)

    # --- Removed like any standalone tenant: nothing left anywhere ---
    lab.playbook(
        "tenant_remove.yml",
        "-e",
        f"tenant_host={host}",
        "-e",
        f"tenant_name={TENANT}",
        "-e",
        f"confirm={TENANT}",
    )
    for member in lab.db:
        assert leftovers(member) == dict.fromkeys(leftovers(member), ""), (member, leftovers(member))
    assert registry(proxy) is None
    assert dcs_keys(proxy) == ""
    assert hakit.sh(proxy, f"ls /etc/haproxy/conf.d/{TENANT}.cfg 2>/dev/null; true").strip() == ""
    assert f"{TENANT}." not in hakit.sh(proxy, "cat /etc/haproxy/maps/sni.map")

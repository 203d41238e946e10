"""Lifecycle of an HA tenant on an HA lab (3 db hosts + an etcd/HAProxy host), through
playbooks/tenant_ha.yml: two replicas, then one replica removed from the live tenant (never the
leader; rows written before are still there, writes go on through the same HAProxy address),
then the whole tenant removed (nothing of it left on any host, in the registry, in Patroni's
DCS keys or in HAProxy).

    pytest tests/ha -q   (about 10 minutes on a quiet machine)
"""

import json
import re

import pytest
import yaml

from tests.ha import hakit, halab
from tests.ha.hakit import ETCDCTL

pytestmark = pytest.mark.lab

TENANT = "hlife"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    # A network of its own: the failover bench's and molecule's HA labs use .214 and .213.
    with halab.converged("halife", tmp_path_factory.mktemp("halife"), net="10.89.215") as lab:
        yield lab


def tenant_ha(lab, spec: dict, *extra: str, check: bool = True) -> str:
    # Flow style: ansible-playbook reads -e as YAML only when it starts with { or [.
    spec_yaml = yaml.safe_dump({"tenant": spec}, default_flow_style=True)
    return lab.playbook("tenant_ha.yml", "-e", spec_yaml, *extra, check=check)


def execute(cluster: hakit.Cluster, sql: str) -> None:
    with cluster.connect() as conn:
        conn.execute(sql)


def leftovers(host: str) -> dict[str, str]:
    """What a host still has of the tenant (empty strings: nothing)."""
    checks = {
        "units": f"systemctl list-units --all --plain --no-legend 'shadowdb-*@{TENANT}*' | grep -v not-found",
        "volume": f"ls /etc/shadowdb/volumes/{TENANT}.env /var/lib/shadowdb/volumes/{TENANT}.img",
        "mount": f"findmnt -n /mnt/db/{TENANT}",
        "user": f"getent passwd pg-{TENANT}",
        "config": f"ls /etc/patroni/{TENANT}.yml /etc/shadowdb/tenants/{TENANT}",
        "ports": f"grep -h '\"{TENANT}\"' /var/lib/shadowdb/ports/*.json",
    }
    return {what: hakit.sh(host, f"{cmd} 2>/dev/null; true").strip() for what, cmd in checks.items()}


def test_replica_removed_from_a_live_tenant_then_the_tenant(lab):
    tenant_ha(lab, {"name": TENANT, "replicas": 2})
    cluster = hakit.Cluster(TENANT, lab.db, lab.proxy[1])
    try:
        leader = hakit.wait_for("a healthy cluster of 3", cluster.healthy, timeout=120)
        hakit.Writer.prepare(cluster)
        execute(cluster, "INSERT INTO ha_writes (run, n) SELECT 1, g FROM generate_series(1, 100) g")
    finally:
        cluster.close()

    # One replica fewer: the leader stays where it is, one replica's host is emptied.
    output = tenant_ha(lab, {"name": TENANT, "replicas": 1})
    assert "Remove the members no longer wanted" in output
    remaining = {h: a for h, a in lab.db.items() if leftovers(h)["volume"]}
    dropped = sorted(set(lab.db) - set(remaining))
    assert len(remaining) == 2 and leader in remaining, (remaining, leader)
    assert len(dropped) == 1
    assert leftovers(dropped[0]) == dict.fromkeys(leftovers(dropped[0]), ""), leftovers(dropped[0])

    cluster = hakit.Cluster(TENANT, remaining, lab.proxy[1])
    try:
        assert hakit.wait_for("a healthy cluster of 2", cluster.healthy, timeout=120) == leader
        # Rows written before are there; writes and reads go on through the same address.
        assert cluster.query("SELECT count(*) FROM ha_writes WHERE run = 1") == [(100,)]
        execute(cluster, "INSERT INTO ha_writes (run, n) VALUES (2, 1)")
        hakit.wait_for(
            "the row on the replica",
            lambda: cluster.query("SELECT count(*) FROM ha_writes WHERE run = 2", readonly=True) == [(1,)],
            timeout=30,
        )
    finally:
        cluster.close()

    # HAProxy routes to the two remaining members only.
    proxy = lab.proxy[0]
    fragment = hakit.sh(proxy, f"cat /etc/haproxy/conf.d/{TENANT}.cfg")
    for host, address in lab.db.items():
        assert (address in fragment) == (host in remaining), (host, fragment)
    record = json.loads(hakit.sh(proxy, f"{ETCDCTL} get --print-value-only /shadowdb/tenants/{TENANT}"))
    assert sorted(m["host"] for m in record["members"]) == sorted(remaining)

    # A second run with the same spec changes nothing.
    again = tenant_ha(lab, {"name": TENANT, "replicas": 1})
    recap = dict(re.findall(r"^(\S+)\s*:\s*ok=\d+\s+changed=(\d+)", again, re.M))
    assert recap and set(recap.values()) == {"0"}, recap

    # The whole tenant: refused without the confirmation, then removed everywhere.
    refused = tenant_ha(lab, {"name": TENANT, "state": "absent"}, check=False)
    assert f"pass -e confirm={TENANT}" in refused
    assert leftovers(leader)["volume"], "nothing may be removed before the confirmation"

    tenant_ha(lab, {"name": TENANT, "state": "absent"}, "-e", f"confirm={TENANT}")
    for host in lab.db:
        assert leftovers(host) == dict.fromkeys(leftovers(host), ""), (host, leftovers(host))
    assert hakit.sh(proxy, f"{ETCDCTL} get --prefix --keys-only /shadowdb/patroni/{TENANT}/").strip() == ""
    assert hakit.sh(proxy, f"{ETCDCTL} get --keys-only /shadowdb/tenants/{TENANT}").strip() == ""
    assert hakit.sh(proxy, f"ls /etc/haproxy/conf.d/{TENANT}.cfg 2>/dev/null; true").strip() == ""
    assert f"{TENANT}." not in hakit.sh(proxy, "cat /etc/haproxy/maps/sni.map")

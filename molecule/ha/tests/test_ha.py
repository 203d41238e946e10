"""Verify the ha scenario: one tenant with two replicas (Patroni, synchronous mode) on three db
hosts, routed by the HAProxy of the fourth host, on a 3-member etcd (the fourth host and two
etcd-only hosts); then the faults, in order.

Every check looks at the real thing: systemd's units, Patroni's REST API, PostgreSQL's answers
through HAProxy with TLS and the owner's credentials. The fault tests run a bounded writer
through the same HAProxy address, inject the fault, and check that a new leader takes the writes,
the old leader comes back as a replica, and no acknowledged row is lost.
"""

import json
import os
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO))

from tests.ha import hakit  # noqa: E402

_MOLECULE_FILE = os.environ.get("MOLECULE_FILE", str(Path(__file__).parents[1] / "molecule.yml"))
_SCENARIO = yaml.safe_load(Path(_MOLECULE_FILE).read_text())
_PLATFORMS = _SCENARIO["platforms"]
DB = {p["name"]: p["ip"] for p in _PLATFORMS if "db" in p.get("groups", [])}
PROXY = next(p for p in _PLATFORMS if "proxy" in p.get("groups", []))
# The etcd members (the proxy host first, as in molecule.yml): {container: address}.
ETCD = {p["name"]: p["ip"] for p in _PLATFORMS if "etcd" in p.get("groups", [])}
# etcdctl on the proxy host, with the client certificate the etcd role issued it, to every member.
ETCDCTL = (
    "cd /etc/shadowdb/etcd && ETCDCTL_API=3 etcdctl --command-timeout=3s --dial-timeout=2s"
    f" --endpoints={','.join(f'https://{a}:2379' for a in ETCD.values())}"
    " --cacert=ca.crt --cert=client.crt --key=client.key"
)
TENANT = _SCENARIO["provisioner"]["inventory"]["group_vars"]["all"]["shadowdb_ha_test_tenant"]
NAME = TENANT["name"]


@pytest.fixture(scope="module")
def cluster():
    c = hakit.Cluster(NAME, DB, PROXY["ip"])
    hakit.wait_for("a healthy cluster", c.healthy, timeout=60)
    yield c
    c.close()


def test_one_member_per_db_host_one_leader(cluster):
    roles = cluster.roles()
    assert sorted(roles) == sorted(DB), roles
    assert sorted(role for role, _ in roles.values()) == ["primary", "replica", "replica"]
    assert all(state in ("running", "streaming") for _, state in roles.values()), roles
    # Each member is this host's own Patroni, under its own name.
    for member in DB:
        assert cluster.state(member)["patroni"]["scope"] == NAME


def test_a_synchronous_standby(cluster):
    standbys = hakit.wait_for("a synchronous standby", cluster.sync_standbys, timeout=30)
    assert len(standbys) == 1
    assert standbys[0] != cluster.leader()


@pytest.mark.parametrize("member", sorted(DB))
def test_member_unit_is_sandboxed_as_the_tenant(member):
    show = hakit.sh(
        member,
        f"systemctl show shadowdb-patroni@{NAME}.service -p ActiveState -p User -p ProtectSystem "
        "-p NoNewPrivileges -p MemoryMax -p LimitNOFILE -p UnitFileState",
    )
    props = dict(line.split("=", 1) for line in show.split())
    assert props == {
        "ActiveState": "active",
        "User": f"pg-{NAME}",
        "ProtectSystem": "strict",
        "NoNewPrivileges": "yes",
        "MemoryMax": str(512 * 1024**2),
        "LimitNOFILE": "1024",
        "UnitFileState": "enabled",
    }
    # PostgreSQL runs as the tenant's user, under Patroni, from the tenant's volume.
    owner = hakit.sh(member, f"stat -c %U /mnt/db/{NAME}/data/postmaster.pid").strip()
    assert owner == f"pg-{NAME}"
    assert hakit.sh(member, f"findmnt -n -o SOURCE /mnt/db/{NAME}").startswith("/dev/loop")


def test_rest_api_unsafe_endpoints_need_credentials(cluster):
    member = sorted(DB)[0]
    status, _ = cluster.api(member, "/restart", method="POST")
    assert status == 401
    status, _ = cluster.api(member, "/restart", method="POST", auth=("patroni", "wrong"))
    assert status == 401
    # TLS: the right password without a client certificate of the deployment CA is refused too.
    status, _ = cluster.api(
        member, "/restart", method="POST", auth=("patroni", cluster.restapi_password), client_cert=False
    )
    assert status == 403


def test_haproxy_routes_rw_and_ro_by_patroni_checks():
    cfg = hakit.sh(PROXY["name"], f"cat /etc/haproxy/conf.d/{NAME}.cfg")
    assert f"backend t_{NAME}\n" in cfg
    assert f"backend t_{NAME}-ro\n" in cfg
    assert "uri /primary" in cfg
    assert "uri /replica?lag=" in cfg
    assert "on-marked-down shutdown-sessions" in cfg
    assert cfg.count(" check port ") == 2 * len(DB)
    sni = hakit.sh(PROXY["name"], "cat /etc/haproxy/maps/sni.map")
    assert f"{NAME}-ro.db.shadowdb.test t_{NAME}-ro" in sni


def test_writes_through_haproxy_reach_the_leader(cluster):
    leader = cluster.leader()
    hakit.Writer.prepare(cluster)
    ((in_recovery, address),) = cluster.query("SELECT pg_is_in_recovery(), host(inet_server_addr())")
    assert in_recovery is False
    assert address == DB[leader]


def test_reads_on_ro_reach_a_replica(cluster):
    leader = cluster.leader()
    seen = set()
    for _ in range(4):
        ((in_recovery, address),) = cluster.query(
            "SELECT pg_is_in_recovery(), host(inet_server_addr())", readonly=True
        )
        assert in_recovery is True
        seen.add(address)
    assert seen <= {DB[m] for m in DB if m != leader}
    assert DB[leader] not in seen
    # The replicas have what the leader committed (synchronous standby, then streaming).
    with cluster.connect() as conn:
        conn.execute("INSERT INTO ha_writes (run, n) VALUES (0, 0) ON CONFLICT DO NOTHING")
    hakit.wait_for(
        "the row on the replicas",
        lambda: cluster.query("SELECT count(*) FROM ha_writes WHERE run = 0", readonly=True)[0][0] == 1,
        timeout=10,
    )


def _fault_trial(cluster, inject, recover=None, bound=90):
    """Writer through HAProxy, fault on the leader, then: a new leader, writes after the fault,
    the old leader back as a streaming replica, no acknowledged row lost."""
    old = hakit.wait_for("a healthy cluster", cluster.healthy, timeout=90)
    writer = hakit.Writer(cluster, duration=bound)
    writer.start()
    hakit.wait_for("the writer's first rows", lambda: len(writer.acked) >= 20, timeout=15)
    moment = inject(old)
    new = hakit.wait_for(
        "a new leader", lambda: (lead := cluster.leader()) not in (None, old) and lead, timeout=60
    )
    first = hakit.wait_for("a write after the fault", lambda: writer.first_ack_after(moment), timeout=60)
    if recover:
        recover(old)
    hakit.wait_for(
        "the old leader back as a streaming replica",
        lambda: cluster.roles().get(old) == ("replica", "streaming"),
        timeout=120,
        interval=1,
    )
    # A few more writes with the whole cluster back, then stop.
    count = len(writer.acked)
    hakit.wait_for("writes with the old leader back", lambda: len(writer.acked) > count + 10, timeout=30)
    writer.stop_event.set()
    writer.join(timeout=30)
    lost = writer.lost()
    print(
        f"\nfault on {old}: new leader {new}, writes through HAProxy interrupted "
        f"{writer.outage(moment):.1f}s, "
        f"{len(writer.acked)} rows acknowledged, {len(lost)} lost, {len(writer.errors)} failed attempts"
    )
    assert new != old
    assert first > moment
    assert lost == [], f"acknowledged rows lost: {lost[:20]}"
    return old, new


def test_fault_leader_postgres_killed(cluster):
    _fault_trial(cluster, lambda leader: hakit.kill_postgres(cluster, leader))


def test_fault_leader_host_stopped(cluster):
    loops = {}

    def inject(leader):
        loops[leader] = hakit.own_loop_devices(leader, NAME)
        return hakit.stop_host(leader)

    def recover(leader):
        # The host comes back (the same address): its Patroni starts at boot and rejoins.
        time.sleep(1)
        hakit.release_loops(loops[leader])
        hakit.start_host(leader)

    _fault_trial(cluster, inject, recover)


def etcd_healthy() -> bool:
    """Every member of the etcd cluster answers healthy (the member list asked of any member)."""
    out = hakit.sh(PROXY["name"], f"{ETCDCTL} endpoint health --cluster -w json", check=False, timeout=30)
    health = json.loads(out or "[]")
    return len(health) == len(ETCD) and all(h.get("health") for h in health)


def test_etcd_cluster_has_every_member():
    out = hakit.sh(PROXY["name"], f"{ETCDCTL} member list -w json")
    members = json.loads(out)["members"]
    assert sorted(m["name"] for m in members) == sorted(ETCD)
    assert hakit.wait_for("a healthy etcd cluster", etcd_healthy, timeout=30)


def test_fault_leader_partitioned_from_etcd(cluster):
    """The leader's host loses every etcd member ("prohibit" routes inside its container, on the
    scenario's network only): it cannot renew the leader lock and demotes itself; a replica
    takes over once the lock expires. Healing the routes brings the old leader back as a replica."""
    addresses = list(ETCD.values())
    _fault_trial(
        cluster,
        lambda leader: hakit.partition(leader, addresses),
        lambda leader: hakit.heal(leader, addresses),
    )


def test_fault_etcd_restarted(cluster):
    """The etcd members restarted one at a time under a writer, each once the cluster is healthy
    again: a quorum stays, so the DCS stays available (at most an etcd leader election) and the
    Patroni leader stays, or a new one is elected; writes go on through the same HAProxy address."""
    leader = hakit.wait_for("a healthy cluster", cluster.healthy, timeout=90)
    hakit.wait_for("a healthy etcd cluster", etcd_healthy, timeout=60)
    writer = hakit.Writer(cluster, duration=300)
    writer.start()
    hakit.wait_for("the writer's first rows", lambda: len(writer.acked) >= 20, timeout=15)
    windows = []
    for member in ETCD:
        moment = time.time()
        hakit.sh(member, "systemctl restart etcd.service")
        restarted = time.time()
        hakit.wait_for(
            f"a healthy etcd cluster after restarting {member}", etcd_healthy, timeout=90, interval=1
        )
        hakit.wait_for(
            f"writes after restarting {member}", lambda m=moment: writer.first_ack_after(m), timeout=60
        )
        # A moment of writes with the member back before the next one.
        count = len(writer.acked)
        hakit.wait_for("more writes", lambda c=count: len(writer.acked) > c + 10, timeout=30)
        windows.append((member, moment, restarted, time.time()))
    new = hakit.wait_for("a healthy cluster", cluster.healthy, timeout=90)
    writer.stop_event.set()
    writer.join(timeout=30)
    lost = writer.lost()
    for member, moment, restarted, until in windows:
        print(
            f"\netcd member {member} restarted ({restarted - moment:.1f}s for systemctl): "
            f"writes through HAProxy interrupted {writer.outage(moment, until):.1f}s"
        )
    print(
        f"etcd members restarted one at a time: leader {leader} -> {new}"
        f"{' (unchanged)' if new == leader else ' (a new one elected)'}, {len(writer.acked)} rows "
        f"acknowledged, {len(lost)} lost, {len(writer.errors)} failed attempts"
    )
    assert new in DB
    assert lost == [], f"acknowledged rows lost: {lost[:20]}"
    assert hakit.wait_for("every etcd member healthy", etcd_healthy, timeout=30)

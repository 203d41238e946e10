"""Backups of an HA tenant on the HA lab of tests/ha/conftest.py, whose proxy host is the backup
repository (tests/ha/halab.py): its WAL archived by the leader, its backups copied from a replica,
archiving going on after a switchover (the new leader archives), a restore to a time T as a
new Patroni cluster (the rows of T and nothing after, the replica rebuilt and streaming, its
registry record and HAProxy's files unchanged, archiving again on the new timeline), and a clone
at T on the third host (a standalone tenant with the rows of T).

    pytest tests/ha -q -k backup
"""

import json
import time

import pytest

from tests.ha import hakit
from tests.ha.hakit import members_of, tenant_ha

pytestmark = pytest.mark.lab

TENANT = "hbk"
CLONE = "hbkc"
REPOSITORY = (
    "runuser -u pgbackrest -- pgbackrest --config=/etc/pgbackrest/pgbackrest.conf "
    f"--config-include-path=/etc/pgbackrest/conf.d --stanza={TENANT}"
)
AS_TENANT = (
    f"runuser -u pg-{TENANT} -- pgbackrest --config=/mnt/db/{TENANT}/backup/pgbackrest.conf "
    f"--config-include-path=/mnt/db/{TENANT}/backup/conf.d --stanza={TENANT} --log-level-console=warn"
)
BACKUP_LOG = f"/var/log/pgbackrest/{TENANT}-backup.log"


def registry(lab) -> str:
    return hakit.sh(lab.proxy[0], f"{hakit.ETCDCTL} get --print-value-only /shadowdb/tenants/{TENANT}")


def haproxy_files(lab) -> str:
    return hakit.sh(lab.proxy[0], "find /etc/haproxy -type f | sort | xargs md5sum")


def info(lab) -> dict:
    return json.loads(hakit.sh(lab.proxy[0], f"{REPOSITORY} --output=json info"))[0]


def backups_done(lab) -> bool:
    running = hakit.sh(
        lab.proxy[0],
        f"systemctl is-active 'shadowdb-backup@{TENANT}:full.service' "
        f"'shadowdb-backup@{TENANT}:diff.service'; true",
    )
    return "active" not in running.split() and "activating" not in running.split()


def execute(cluster: hakit.Cluster, sql: str) -> bool:
    with cluster.connect() as conn:
        conn.execute(sql)
    return True


@pytest.fixture(scope="module")
def cluster(lab):
    """HA tenant TENANT with one replica and backups; removed at the end, its backups purged."""
    tenant_ha(lab, {"name": TENANT, "replicas": 1, "backup": True})
    cluster = hakit.Cluster(TENANT, members_of(lab, TENANT), lab.proxy[1])
    try:
        hakit.wait_for(f"a healthy cluster of 2 ({TENANT})", cluster.healthy, timeout=180)
        yield cluster
    finally:
        cluster.close()
        tenant_ha(
            lab, {"name": TENANT, "state": "absent"}, "-e", f"confirm={TENANT}", "-e", "purge_backups=true"
        )
        assert not hakit.sh(
            lab.proxy[0], f"ls /etc/pgbackrest/conf.d/{TENANT}.conf 2>/dev/null; true"
        ).strip()


def test_an_ha_tenant_backs_up_from_a_replica_and_archives_after_a_switchover(lab, cluster):
    leader = cluster.healthy()
    # The converge started a first full backup; a later one from the replica is what is checked.
    hakit.wait_for("the first backup to end", lambda: backups_done(lab), timeout=300, interval=2)
    execute(cluster, "CREATE TABLE t (i int); INSERT INTO t SELECT generate_series(1, 100)")
    hakit.sh(lab.proxy[0], f": > {BACKUP_LOG}")
    lab.playbook("tenant_backup.yml", "-e", f"tenant={TENANT}", "-e", "type=full")
    log = hakit.sh(lab.proxy[0], f"cat {BACKUP_LOG}")
    assert "replay on the standby" in log, log[-3000:]
    stanza = info(lab)
    assert stanza["status"]["message"] == "ok", stanza["status"]
    assert [b["type"] for b in stanza["backup"]].count("full") >= 1, stanza["backup"]

    # A switchover: the new leader archives (pgbackrest check switches a WAL segment and waits for
    # it in the repository), on the new timeline.
    cluster.switchover(leader)
    new_leader = hakit.wait_for(
        "a new leader", lambda: (lead := cluster.healthy()) and lead != leader and lead, timeout=120
    )
    hakit.wait_for(
        "writes through HAProxy", lambda: execute(cluster, "INSERT INTO t VALUES (101)"), timeout=60
    )
    hakit.sh(new_leader, f"{AS_TENANT} check")  # fails the test when the WAL does not get there
    archive = info(lab)["archive"][0]
    assert archive["max"][:8] > archive["min"][:8], archive  # a WAL segment of a later timeline


def test_an_ha_tenant_restored_to_a_time_is_a_new_cluster_with_the_rows_of_that_time(lab, cluster):
    hakit.wait_for("a healthy cluster", cluster.healthy, timeout=120)
    execute(
        cluster, "DROP TABLE IF EXISTS r; CREATE TABLE r (i int); INSERT INTO r SELECT generate_series(1, 50)"
    )
    target = cluster.query("SELECT now()::text")[0][0]
    time.sleep(1.1)
    execute(cluster, "INSERT INTO r SELECT generate_series(51, 80)")
    execute(cluster, "DROP TABLE r")
    before = {
        m: hakit.sh(m, f"cat /mnt/db/{TENANT}/data/postmaster.pid 2>/dev/null | head -1; true").strip()
        for m in cluster.members
    }
    host = next(iter(cluster.members))
    routes = (registry(lab), haproxy_files(lab))

    out = lab.playbook(
        "tenant_restore.yml",
        "-e",
        json.dumps({"tenant_host": host, "tenant": TENANT, "confirm": TENANT, "target": {"time": target}}),
    )
    assert "failed=0" in out, out[-3000:]
    leader = hakit.wait_for("the restored cluster healthy", cluster.healthy, timeout=240)
    after = {m: hakit.sh(m, f"head -1 /mnt/db/{TENANT}/data/postmaster.pid").strip() for m in cluster.members}
    assert all(after[m] != before[m] for m in cluster.members), (before, after)  # every member started anew
    assert cluster.query("SELECT count(*), min(i), max(i) FROM r") == [(50, 1, 50)]
    replica = next(m for m in cluster.members if m != leader)
    hakit.wait_for(
        "the rebuilt replica to have the rows",
        lambda: cluster.query("SELECT count(*) FROM r", readonly=True) == [(50,)],
        timeout=60,
    )
    assert cluster.roles()[replica] == ("replica", "streaming")
    assert (registry(lab), haproxy_files(lab)) == routes  # its registration and routes untouched
    # Archiving goes on from the restored leader (on its new timeline).
    hakit.sh(leader, f"{AS_TENANT} check")

    # A clone at T on the host that holds no member: a standalone tenant with the rows of T.
    spare = next(h for h in lab.db if h not in cluster.members)
    clone = {"name": CLONE, "source": {"tenant": TENANT, "time": target}}
    try:
        lab.playbook("tenant.yml", "-e", json.dumps({"tenant_host": spare, "tenant": clone}))
        port = json.loads(hakit.sh(spare, "cat /var/lib/shadowdb/ports/postgres.json"))["leases"][CLONE]
        psql = f"runuser -u pg-{CLONE} -- psql -X -At -h /mnt/db/{CLONE}/run -p {port} -U postgres -d {CLONE}"
        counted = hakit.sh(spare, psql + " -c 'SELECT count(*), min(i), max(i) FROM r'")  # noqa: S608
        assert counted.strip() == "50|1|50", counted
    finally:
        lab.playbook(
            "tenant_remove.yml",
            "-e",
            json.dumps({"tenant_host": spare, "tenant_name": CLONE, "confirm": CLONE, "purge_backups": True}),
        )

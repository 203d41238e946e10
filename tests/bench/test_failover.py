"""Failover benchmark: an HA tenant (2 replicas, synchronous mode) on a 4-host HA lab, a bounded
writer through HAProxy (SNI, the same address throughout), then each fault in turn, 3 trials each:

- planned switchover (Patroni REST API): the baseline, measured in the same run;
- the leader's PostgreSQL killed (SIGKILL; Patroni alive, primary_start_timeout 0);
- the leader's host stopped hard (podman kill: no clean shutdown), then started again;
- the leader's host partitioned from etcd (a "prohibit" route to the etcd host inside the
  leader's container: within the lab network only), then healed;
- etcd restarted (the lab has one member: "one at a time" is the whole DCS going away for the
  restart). The leader may stay: the time is the write gap, if any.

Printed per fault: how long writes through HAProxy were interrupted (the longest gap between two
acknowledged writes after the fault: median, min, max), as a ratio to the switchover's median,
and acknowledged rows lost (all trials).
Nothing is asserted on times; lost rows and a rejoining old leader are checked.

    pytest tests/bench/test_failover.py -q -s   (about 25 minutes; SHADOWDB_FAILOVER_TRIALS=3)
    SHADOWDB_FAILOVER_FAULTS="partition,etcd" runs only the faults whose names contain one of these
    words (the switchover baseline always runs).
"""

import os
import statistics
import time

import pytest

from tests.ha import hakit
from tests.ha.halab import HALab

TENANT = {"name": "hbench", "tier": "small", "replicas": 2}
TRIALS = int(os.environ.get("SHADOWDB_FAILOVER_TRIALS", "3"))
ONLY = [w for w in os.environ.get("SHADOWDB_FAILOVER_FAULTS", "").split(",") if w]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    lab = HALab("habench", tmp_path_factory.mktemp("habench"))
    lab.up()
    try:
        lab.converge(TENANT)
        c = hakit.Cluster(TENANT["name"], lab.db, lab.proxy[1])
        hakit.wait_for("a healthy cluster", c.healthy, timeout=90)
        hakit.Writer.prepare(c)
        c.etcd_host = lab.proxy
        yield c
        c.close()
    finally:
        lab.down()


def switchover(cluster, leader):
    moment = time.time()
    status, _ = cluster.api(
        leader,
        "/switchover",
        method="POST",
        auth=("patroni", cluster.restapi_password),
        timeout=30,
        body={"leader": leader},
    )
    assert status == 200, status
    return moment


def trial(cluster, inject, recover=None, new_leader=True):
    """One fault under a writer. new_leader=False: the fault need not move the leader."""
    old = hakit.wait_for("a healthy cluster", cluster.healthy, timeout=120, interval=1)
    hakit.wait_for("a synchronous standby", cluster.sync_standbys, timeout=30)
    writer = hakit.Writer(cluster, duration=150)
    writer.start()
    hakit.wait_for("the writer's first rows", lambda: len(writer.acked) >= 20, timeout=15)
    moment = inject(old)
    if new_leader:
        hakit.wait_for("a new leader", lambda: cluster.leader() not in (None, old), timeout=60)
    else:
        time.sleep(2)  # let the fault take effect before looking for a leader
        hakit.wait_for("a leader", cluster.leader, timeout=60)
    hakit.wait_for("a write after the fault", lambda: writer.first_ack_after(moment), timeout=60)
    if recover:
        recover(old)
    try:
        hakit.wait_for(
            "the old leader back as a replica (or the cluster healthy under it)",
            lambda: cluster.roles().get(old) == ("replica", "streaming") or cluster.healthy() == old,
            timeout=150,
            interval=1,
        )
    except AssertionError:
        print(f"\n{old} did not come back as a streaming replica; members: {cluster.roles()}")
        print(
            hakit.sh(
                old, f"journalctl -u shadowdb-patroni@{cluster.tenant} --no-pager | tail -n 30", check=False
            )
        )
        raise
    writer.stop_event.set()
    writer.join(timeout=30)
    return writer.outage(moment), len(writer.lost()), len(writer.acked)


def test_failover_times(cluster):
    name = cluster.tenant
    loops = {}

    def stop(leader):
        loops[leader] = hakit.own_loop_devices(leader, name)
        return hakit.stop_host(leader)

    def restart(leader):
        hakit.release_loops(loops.pop(leader))
        hakit.start_host(leader)

    etcd_host, etcd_address = cluster.etcd_host

    def restart_etcd(_leader):
        moment = time.time()
        hakit.sh(etcd_host, "systemctl restart etcd.service")
        return moment

    # name: (inject, recover, the leader must change)
    faults = {
        "planned switchover": (lambda leader: switchover(cluster, leader), None, True),
        "leader's postgres killed": (lambda leader: hakit.kill_postgres(cluster, leader), None, True),
        "leader's host stopped": (stop, restart, True),
        "leader partitioned from etcd": (
            lambda leader: hakit.partition(leader, etcd_address),
            lambda leader: hakit.heal(leader, etcd_address),
            True,
        ),
        "etcd restarted": (restart_etcd, None, False),
    }
    if ONLY:
        faults = {k: v for k, v in faults.items() if k == "planned switchover" or any(w in k for w in ONLY)}
    results = {}
    for fault, (inject, recover, new_leader) in faults.items():
        results[fault] = []
        for _ in range(TRIALS):
            outage, lost, _ = trial(cluster, inject, recover, new_leader)
            results[fault].append((outage, lost, _))
            print(f"\n{fault}: writes interrupted {outage:.1f}s, {lost} rows lost")

    base = statistics.median(t for t, _, _ in results["planned switchover"])
    print(f"\nfailover of an HA tenant (2 replicas, synchronous mode), {TRIALS} trials each,")
    print("writes interrupted (longest gap between acknowledged writes through HAProxy, same address):")
    for fault, rows in results.items():
        times = [t for t, _, _ in rows]
        lost = sum(n for _, n, _ in rows)
        acked = sum(n for _, _, n in rows)
        print(
            f"  {fault:26s} median {statistics.median(times):5.1f}s  min {min(times):5.1f}s  "
            f"max {max(times):5.1f}s  = {statistics.median(times) / base:5.1f}x switchover;  "
            f"rows lost {lost} of {acked}"
        )
    assert all(n == 0 for rows in results.values() for _, n, _ in rows)

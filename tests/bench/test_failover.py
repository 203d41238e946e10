"""Failover benchmark: an HA tenant (2 replicas, synchronous mode) on a 4-host HA lab, a bounded
writer through HAProxy (SNI, the same address throughout), then each fault in turn, 3 trials each:

- planned switchover (Patroni REST API): the baseline, measured in the same run;
- the leader's PostgreSQL killed (SIGKILL; Patroni alive, primary_start_timeout 0);
- the leader's host stopped hard (podman kill: no clean shutdown), then started again;
- the leader's host partitioned from etcd (a "prohibit" route to the etcd host inside the
  leader's container: within the lab network only) for 30 s, then healed. With failsafe_mode the
  leader stays while it reaches every member: the time is the write gap, if any;
- etcd restarted (the lab has one member: "one at a time" is the whole DCS going away for the
  restart). The leader may stay: the time is the write gap, if any.

The writer (hakit.Writer) bounds every attempt (connect timeout 2 s, statement_timeout 1.5 s, a
watchdog cutting a socket after 15 s) and records each one: start, end, outcome, and the member
that acknowledged it (inet_server_addr()). Per trial: the outage, from the fault to the first
write acknowledged by another member than the old leader (when the leader stays: the longest
time without an acknowledged write after the fault); attempts, acknowledged and failed writes
after the fault, acknowledged writes before and after it, the longest gap, the longest single
attempt and hung attempts (longer than their timeouts + 1 s), rows lost (read back on the new
leader), and what an idle session opened before the fault gets from its next query. Besides the
writer, new connections are opened every 0.2 s from 1 s before the fault for 8 s, each with a
20 s connect timeout (hakit.ConnectProbe): one that reaches it is a connection HAProxy left
hanging, which the writer's 2 s connect timeout would hide (docs/ha.md, "Clients through
HAProxy"). Per fault: the outage's median, min, max and ratio to the switchover's median, then
one line per trial.
Nothing is asserted on times; lost rows and a rejoining old leader are checked.

    pytest tests/bench/test_failover.py -q -s   (about 15 minutes; SHADOWDB_FAILOVER_TRIALS=3)
    SHADOWDB_FAILOVER_FAULTS="partition,etcd" runs only the faults whose names contain one of these
    words (the switchover baseline always runs); SHADOWDB_FAILOVER_BUDGET (seconds, 780) stops
    starting new trials once the faults have run that long.
"""

import contextlib
import os
import statistics
import threading
import time
from collections import Counter

import pytest

from tests.ha import hakit
from tests.ha.halab import HALab

TENANT = {"name": "hbench", "tier": "small", "replicas": 2}
TRIALS = int(os.environ.get("SHADOWDB_FAILOVER_TRIALS", "3"))
ONLY = [w for w in os.environ.get("SHADOWDB_FAILOVER_FAULTS", "").split(",") if w]
# Seconds: a writer runs at most WRITER_BOUND, and on for SETTLE after its fault; no new trial of
# a fault starts once the faults have run BUDGET (its first trial always runs).
WRITER_BOUND = 150
SETTLE = 12
# New connections opened from 1 s before each fault for CONNECT_SPAN s, each bounded by
# CONNECT_BOUND s (libpq connect_timeout).
CONNECT_SPAN = 8
CONNECT_BOUND = 20
BUDGET = float(os.environ.get("SHADOWDB_FAILOVER_BUDGET", "780"))


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
    cluster.switchover(leader)
    return moment


def probe(conn, limit: float = 10.0) -> str:
    """What an idle session opened before the fault gets from its next query: the member that
    answers, or the error, and how long it took. A watchdog cuts the socket after `limit` s."""
    start = time.monotonic()
    timer = threading.Timer(limit, hakit.abort_socket, (conn.pgconn.socket,))
    timer.start()
    try:
        (address,) = conn.execute("SELECT host(inet_server_addr())").fetchone()
        outcome = f"answered by {address}"
    except Exception as exc:  # noqa: BLE001 - the error is the finding
        outcome = type(exc).__name__
    finally:
        timer.cancel()
        with contextlib.suppress(Exception):
            conn.close()
    took = time.monotonic() - start
    return f"{outcome} in {took:.1f}s{' (HUNG: cut by the watchdog)' if took >= limit else ''}"


def trial(cluster, inject, recover=None, new_leader=True, hold=0.0) -> dict:
    """One fault under a writer. new_leader=False: the fault need not move the leader. hold: the
    fault lasts at least this many seconds before `recover`."""
    old = hakit.wait_for("a healthy cluster", cluster.healthy, timeout=120, interval=1)
    hakit.wait_for("a synchronous standby", cluster.sync_standbys, timeout=30)
    writer = hakit.Writer(cluster, duration=WRITER_BOUND)
    writer.start()
    held = cluster.connect(timeout=2)  # a session left idle through the fault
    # New connections around the fault, each with a 20 s connect timeout: one HAProxy leaves
    # hanging shows as 20 s (the writer's 2 s connect timeout hides such hangs).
    connects = hakit.ConnectProbe(cluster, span=CONNECT_SPAN, every=0.2, bound=CONNECT_BOUND)
    try:
        hakit.wait_for("the writer's first rows", lambda: len(writer.acked) >= 20, timeout=15)
        connects.start()
        time.sleep(1)
        moment = inject(old)
        if new_leader:
            hakit.wait_for("a new leader", lambda: cluster.leader() not in (None, old), timeout=60)
            hakit.wait_for(
                "a write acknowledged by the new leader",
                lambda: writer.first_ack_after(moment, exclude=old),
                timeout=60,
            )
        else:
            time.sleep(2)  # let the fault take effect before looking for a leader
            hakit.wait_for("a leader", cluster.leader, timeout=60)
            hakit.wait_for("a write after the fault", lambda: writer.first_ack_after(moment), timeout=60)
        held_outcome = probe(held)
        time.sleep(max(0.0, moment + hold - time.time()))
        leader_at_recovery = cluster.leader()
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
                    old,
                    # Patroni's and PostgreSQL's own lines, without the tracebacks' frames.
                    f"journalctl -u shadowdb-patroni@{cluster.tenant} --no-pager -o cat"
                    " | grep -v -E '^[[:space:]]|^Traceback' | tail -n 40",
                    check=False,
                )
            )
            raise
        # Write on for a while after the fault whatever happened, so that a late gap shows, and
        # stop only once a write went through after that: a trial never ends inside an outage.
        time.sleep(max(0.0, moment + SETTLE - time.time()))
        settled = time.time()
        hakit.wait_for(
            "a write after the cluster settled", lambda: writer.first_ack_after(settled), timeout=90
        )
    finally:
        writer.stop_event.set()
        writer.join(timeout=30)
        with contextlib.suppress(Exception):
            held.close()
        if connects.is_alive() or connects.results:
            connects.finish()
    result = summarize(writer, moment, old, new_leader, held_outcome)
    result["connects"] = connects.summary()
    result["leader at recovery"] = "old" if leader_at_recovery == old else leader_at_recovery
    return result


def summarize(writer, moment: float, old: str, new_leader: bool, held_outcome: str) -> dict:
    """The trial seen by the writer. outage: for a fault that moves the leader, from the fault to
    the first write acknowledged by another member than the old leader; otherwise the longest
    stretch without an acknowledged write after the fault (counted from the fault itself)."""
    after = [a for a in writer.attempts if a.end is None or a.end > moment]
    acked = [a for a in after if a.outcome == "ok"]
    stall = max(writer.attempts, key=lambda a: a.duration())
    members = [a.member for a in acked]
    new_first = writer.first_ack_after(moment, exclude=old)
    # No acknowledged write at all after the fault: silent until the writer's last attempt.
    times = [moment, *(sorted(a.end for a in acked) or [max(a.start for a in after)])]
    gap_after = max(b - a for a, b in zip(times, times[1:], strict=False))
    leader_changed = bool(members) and members[-1] != old
    errors = Counter(a.outcome for a in after if a.outcome not in ("ok", "in flight"))
    return {
        "outage": (new_first - moment) if new_leader and new_first else gap_after,
        "leader_changed": leader_changed,
        "longest_gap": writer.outage(moment),
        "attempts": len(after),
        "acked_before": sum(
            a.outcome == "ok" for a in writer.attempts if a.end is not None and a.end <= moment
        ),
        "acked": len(acked),
        # The longest single attempt of the trial (connect + INSERT): a hang shows here.
        "stall": (stall.duration(), stall.outcome),
        "acked_by_old": sum(m == old for m in members),
        "failed": sum(errors.values()),
        "errors": dict(errors),
        "hung": [(round(a.duration(), 1), a.outcome) for a in writer.hung()],
        "aborted": sum(a.aborted for a in writer.attempts),
        # Read back through HAProxy, from whichever member leads by then.
        "lost": len(hakit.wait_for("the rows read back", lambda: (writer.lost(),), timeout=60)[0]),
        "acked_total": len(writer.acked),
        "held": held_outcome,
    }


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

    # name: (inject, recover, the leader must change, seconds the fault lasts at least)
    faults = {
        "planned switchover": (lambda leader: switchover(cluster, leader), None, True, 0),
        "leader's postgres killed": (lambda leader: hakit.kill_postgres(cluster, leader), None, True, 0),
        "leader's host stopped": (stop, restart, True, 0),
        # failsafe_mode: a leader cut off from etcd only stays leader while it reaches every member
        # (docs/ha.md). The partition outlasts the leader lock's ttl (20 s), so an expiry shows.
        "leader partitioned from etcd": (
            lambda leader: hakit.partition(leader, etcd_address),
            lambda leader: hakit.heal(leader, etcd_address),
            False,
            30,
        ),
        "etcd restarted": (restart_etcd, None, False, 0),
    }
    if ONLY:
        faults = {k: v for k, v in faults.items() if k == "planned switchover" or any(w in k for w in ONLY)}
    results = {}
    started = time.monotonic()
    for fault, (inject, recover, new_leader, hold) in faults.items():
        results[fault] = []
        for i in range(TRIALS):
            if results[fault] and time.monotonic() - started > BUDGET:
                print(f"\n{fault}: trial {i + 1} skipped, past the time budget ({BUDGET:.0f}s)")
                break
            r = trial(cluster, inject, recover, new_leader, hold)
            results[fault].append(r)
            print(
                f"\n{fault} #{i + 1}: outage {r['outage']:.1f}s"
                f" ({'to the new leader' if new_leader else 'longest silence'},"
                f" leader {'changed' if r['leader_changed'] else 'kept'}),"
                f" attempts {r['attempts']}, acknowledged {r['acked_before']} before / {r['acked']} after"
                f" ({r['acked_by_old']} by the old leader), failed {r['failed']} {r['errors']},"
                f" longest gap {r['longest_gap']:.1f}s, longest attempt {r['stall'][0]:.1f}s"
                f" ({r['stall'][1]}), hung {len(r['hung'])} {r['hung'][:5]} (aborted {r['aborted']}),"
                f" lost {r['lost']} of {r['acked_total']}; new connections {r['connects']};"
                f" idle session held through it: {r['held']}; leader at recovery: {r['leader at recovery']}"
            )

    base = statistics.median(r["outage"] for r in results["planned switchover"])
    print(
        f"\nfailover of an HA tenant (2 replicas, synchronous mode), up to {TRIALS} trials each,"
        " through HAProxy (SNI, same address);"
    )
    print("outage = fault -> first write acknowledged by the new leader (partition, etcd: longest silence):")
    for fault, rows in results.items():
        times = [r["outage"] for r in rows]
        ratio = f"{statistics.median(times) / base:5.1f}x" if base > 0 else "  n/a"
        print(
            f"  {fault:28s} median {statistics.median(times):5.1f}s  min {min(times):5.1f}s  "
            f"max {max(times):5.1f}s  = {ratio} switchover;  acked/trial "
            f"{'/'.join(str(r['acked']) for r in rows)}, failed/trial "
            f"{'/'.join(str(r['failed']) for r in rows)}, hung {sum(len(r['hung']) for r in rows)}, "
            f"rows lost {sum(r['lost'] for r in rows)} of {sum(r['acked_total'] for r in rows)}"
        )
    print(
        "per trial: outage s | writer attempts after the fault | acked before/after | longest single"
        " attempt s | rows lost | new connections: ok/opened, longest s, hung (>= the 20 s bound)"
    )
    for fault, rows in results.items():
        for i, r in enumerate(rows, 1):
            c = r["connects"]
            print(
                f"  {fault:28s} #{i}  {r['outage']:5.1f} | {r['attempts']:4d} | {r['acked_before']:4d}/"
                f"{r['acked']:<4d} | {r['stall'][0]:5.1f} {r['stall'][1]:18s} | {r['lost']} |"
                f" {c['ok']}/{c['connects']}, {c['longest']:.1f}, {c['hung']}"
            )
    print(f"  ({len(results)} faults in {time.monotonic() - started:.0f}s)")
    assert all(r["lost"] == 0 for rows in results.values() for r in rows)

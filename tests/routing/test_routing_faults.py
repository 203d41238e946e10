"""Faults of the routing layer, on the shared routing lab (conftest.py): HAProxy and etcd on the
lab host, tenants rta and rtb routed through it.

- An invalid rendered configuration is refused by ``haproxy -c``: the run fails with HAProxy's
  message, the live files are untouched and the running HAProxy keeps serving.
- etcd unreachable while a tenant is onboarded: the run fails naming etcd and its endpoint
  before anything is made (the name is checked against the registry first), and the same run
  succeeds once etcd is back.
- HAProxy restarted while clients keep connecting: every client gets through again after the
  restart, and the failed attempts are counted and bounded; a reload under the same load fails
  no attempt at all.
"""

import json
import threading
import time
from dataclasses import dataclass, field

import psycopg
import pytest

from tests.routing.client import SNI_PORT, connect, conninfo

pytestmark = pytest.mark.lab

# Live configuration of the proxy (main file, SNI map, fragments), fingerprinted as a whole.
LIVE_FILES = "find /etc/haproxy -type f | sort | xargs sha256sum"
# HAProxy's master and its workers: a reload or restart changes them.
HAPROXY_PIDS = "pid=$(systemctl show -P MainPID haproxy.service); echo $pid; cat /proc/$pid/task/*/children"
ETCD_TENANT = "rte"


def served(lab, name: str) -> tuple:
    with connect(lab, name, SNI_PORT, direct=True) as conn:
        return conn.execute("SELECT current_setting('cluster_name'), pg_backend_pid()").fetchone()


# Rendered into the global section; HAProxy does not know the keyword.
BAD_VARS = {"haproxy_global_settings": {"no-such-keyword": "1"}}


def test_invalid_config_is_refused_and_the_live_one_kept(lab):
    host = lab.hosts[0]
    live_before = lab.sh(host, LIVE_FILES)
    pids_before = lab.sh(host, HAPROXY_PIDS)
    session = connect(lab, "rta", SNI_PORT, direct=True)
    try:
        out = lab.playbook("routing.yml", "-e", json.dumps(BAD_VARS), check=False)
        assert "Check and apply the configuration" in out
        assert "failed=1" in out, out[-4000:]
        assert "refused the candidate configuration" in out, out[-4000:]
        assert "live files in /etc/haproxy are untouched" in out
        assert "unknown keyword 'no-such-keyword'" in out, out[-4000:]
        # Nothing live changed: same files, same processes (no reload), no candidate left behind.
        assert lab.sh(host, LIVE_FILES) == live_before
        assert lab.sh(host, HAPROXY_PIDS) == pids_before
        assert lab.sh(host, "systemctl is-active haproxy.service").strip() == "active"
        # Still serving: the open session and new ones.
        assert session.execute("SELECT current_setting('cluster_name')").fetchone() == ("rta",)
        assert served(lab, "rtb")[0] == "rtb"
    finally:
        session.close()


def test_etcd_unreachable_during_registration(lab):
    host = lab.hosts[0]
    tenant = json.dumps({"tenant": {"name": ETCD_TENANT}})
    lab.sh(host, "systemctl stop etcd.service")
    try:
        out = lab.playbook("tenant.yml", "-e", f"tenant_host={host}", "-e", tenant, check=False)
        assert "failed=1" in out, out[-4000:]
        assert "etcd is unreachable" in out, out[-4000:]
        assert f"https://{lab.address(host)}:2379" in out or "https://127.0.0.1:2379" in out, out[-4000:]
        assert "repeat the run once etcd answers" in out
        # The name cannot be checked against the registry: nothing of the tenant was made.
        assert "PLAY [Converge the tenant]" not in out, out[-4000:]
        assert lab.sh(host, f"ls /etc/shadowdb/volumes/{ETCD_TENANT}.env 2>/dev/null; true").strip() == ""
        # The others are still served by HAProxy.
        assert served(lab, "rta")[0] == "rta"
    finally:
        lab.sh(host, "systemctl start etcd.service")
    # Once etcd is back, the same run completes: made, registered, routed.
    lab.playbook("tenant.yml", "-e", f"tenant_host={host}", "-e", tenant)
    assert served(lab, ETCD_TENANT)[0] == ETCD_TENANT


@dataclass
class Client:
    """A client that connects, runs one query and disconnects, again and again, until told to stop."""

    params: dict
    attempts: list = field(default_factory=list)  # (monotonic start, end, ok, error)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            begun = time.monotonic()
            try:
                with psycopg.connect(autocommit=True, **self.params) as conn:
                    conn.execute("SELECT 1").fetchone()
                self.attempts.append((begun, time.monotonic(), True, None))
            except psycopg.OperationalError as e:
                self.attempts.append((begun, time.monotonic(), False, str(e).splitlines()[0]))
                stop.wait(0.1)  # back off a little, then reconnect

    def failures(self) -> list:
        return [a for a in self.attempts if not a[2]]


def under_load(lab, action: str, clients: int = 4, before: float = 1.5, after: float = 3.0):
    """Run `clients` reconnecting clients (SNI port and proxy ports), do `action` on the lab host
    in the middle; return (clients, time the action started, time it returned)."""
    ports = {name: record["proxy_port"] for name, record in lab.registry(lab.hosts[0]).items()}
    plan = [
        ("rta", SNI_PORT, True),
        ("rtb", SNI_PORT, True),
        ("rta", ports["rta"], False),
        ("rtb", ports["rtb"], False),
    ]
    workers = [
        Client(conninfo(lab, name, port, direct, connect_timeout=2)) for name, port, direct in plan[:clients]
    ]
    stop = threading.Event()
    threads = [threading.Thread(target=w.run, args=(stop,), daemon=True) for w in workers]
    for t in threads:
        t.start()
    try:
        time.sleep(before)
        started = time.monotonic()
        lab.sh(lab.hosts[0], action)
        returned = time.monotonic()
        time.sleep(after)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)
    return workers, started, returned


def test_clients_reconnect_after_haproxy_restart(lab):
    held = connect(lab, "rta", SNI_PORT, direct=True)
    workers, started, returned = under_load(lab, "systemctl restart haproxy.service")
    failures = [f for w in workers for f in w.failures()]
    attempts = sum(len(w.attempts) for w in workers)
    print(f"\nrestart under load: {len(failures)} failed of {attempts} attempts by {len(workers)} clients")
    for w in workers:
        # Every failed attempt overlaps the restart (from `systemctl restart` until it returned,
        # i.e. until the new HAProxy listens): none failed before it, none begun after it did;
        # and each client got through again after it.
        for begun, ended, _, error in w.failures():
            assert ended >= started and begun <= returned, (begun - started, ended - started, error)
        assert any(ok for begun, _, ok, _ in w.attempts if begun > returned), w.attempts[-5:]
    # A session held across a restart is cut (a restart is not a reload); a new one works.
    with pytest.raises(psycopg.OperationalError):
        held.execute("SELECT 1")
    held.close()
    assert served(lab, "rta")[0] == "rta"


def test_a_reload_under_load_fails_no_attempt(lab):
    held = connect(lab, "rtb", SNI_PORT, direct=True)
    pid = held.execute("SELECT pg_backend_pid()").fetchone()[0]
    try:
        workers, _, _ = under_load(lab, "systemctl reload haproxy.service")
        failures = [f for w in workers for f in w.failures()]
        attempts = sum(len(w.attempts) for w in workers)
        print(f"\nreload under load: {len(failures)} failed of {attempts} attempts")
        assert attempts > len(workers)
        assert failures == []
        assert held.execute("SELECT pg_backend_pid()").fetchone()[0] == pid
    finally:
        held.close()

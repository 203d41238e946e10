"""HA tests and benchmarks: a tenant's Patroni cluster seen from outside, a bounded writer
through HAProxy, and the faults (leader's PostgreSQL killed, leader's host stopped).

Everything goes to the lab's own containers: `podman exec` into them, Patroni's REST API and
HAProxy at their addresses on the lab network. Every wait and every writer is bounded.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import psycopg
import yaml

from tests.labkit import lab_env

DOMAIN = "db.shadowdb.test"
SNI_PORT = 5432


def sh(container: str, script: str, check: bool = True, timeout: float = 120) -> str:
    proc = subprocess.run(
        ["podman", "exec", container, "/bin/sh", "-c", script],
        env=lab_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{container}: {script!r} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return proc.stdout


def podman(*args: str, check: bool = True, timeout: float = 120) -> str:
    proc = subprocess.run(["podman", *args], env=lab_env(), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return proc.stdout


def tenant_ha(lab, spec: dict, *extra: str, check: bool = True) -> str:
    """playbooks/tenant_ha.yml on the lab for one tenant spec (its output)."""
    # Flow style: ansible-playbook reads -e as YAML only when it starts with { or [.
    spec_yaml = yaml.safe_dump({"tenant": spec}, default_flow_style=True)
    return lab.playbook("tenant_ha.yml", "-e", spec_yaml, *extra, check=check)


def members_of(lab, tenant: str) -> dict[str, str]:
    """{db host: address} of the hosts that hold a member of the tenant."""
    return {
        h: a
        for h, a in lab.db.items()
        if sh(h, f"test -e /etc/shadowdb/volumes/{tenant}.env && echo yes; true").strip() == "yes"
    }


def wait_for(what: str, predicate, timeout: float, interval: float = 0.5):
    """Poll predicate() until it returns a truthy value (returned) or fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except Exception as exc:  # noqa: BLE001 - a failing probe is "not yet"
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class Cluster:
    """The HA tenant `tenant` with members on `members` ({container: address}) behind the
    HAProxy at `proxy_address`."""

    def __init__(self, tenant: str, members: dict[str, str], proxy_address: str):
        self.tenant = tenant
        self.members = dict(members)
        self.proxy_address = proxy_address
        first = next(iter(self.members))
        self.api_ports = {m: self._lease(m, "patroni_api") for m in self.members}
        self.pg_ports = {m: self._lease(m, "ha_postgres") for m in self.members}
        secrets = json.loads(sh(first, f"cat /etc/shadowdb/tenants/{tenant}/passwords.json"))
        self.password = secrets["owner"]
        self.restapi_password = secrets["restapi"]
        self.ca_file = self._copy(first, f"/mnt/db/{tenant}/tls/ca.crt")
        # The tenant's client certificate (its etcd identity, also what its members present to
        # each other's REST API): the unsafe endpoints want one of the CA besides the password.
        self.cert_file = self._copy(first, f"/mnt/db/{tenant}/tls/etcd.crt")
        self.key_file = self._copy(first, f"/mnt/db/{tenant}/tls/etcd.key")

    @staticmethod
    def _copy(member: str, path: str) -> str:
        with tempfile.NamedTemporaryFile("w", suffix=Path(path).suffix, delete=False) as f:
            f.write(sh(member, f"cat {path}"))
        return f.name

    def close(self) -> None:
        for path in (self.ca_file, self.cert_file, self.key_file):
            Path(path).unlink(missing_ok=True)

    def tls(self, client_cert: bool = True) -> ssl.SSLContext:
        """TLS to a member's REST API: its certificate verified against the deployment CA and by
        the member's address (which it names), with or without the tenant's client certificate."""
        context = ssl.create_default_context(cafile=self.ca_file)
        if client_cert:
            context.load_cert_chain(self.cert_file, self.key_file)
        return context

    def _lease(self, member: str, pool: str) -> int:
        return json.loads(sh(member, f"cat /var/lib/shadowdb/ports/{pool}.json"))["leases"][self.tenant]

    # --- Patroni's REST API ---
    def api(
        self,
        member: str,
        path: str,
        timeout: float = 1.0,
        method: str = "GET",
        auth=None,
        body=None,
        client_cert: bool = True,
    ):
        """(status, json body or None) of a request to https://<member>:<api port><path>."""
        request = urllib.request.Request(
            f"https://{self.members[member]}:{self.api_ports[member]}{path}",
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Content-Type": "application/json"} if body is not None else {},
        )
        if auth:
            import base64

            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(  # noqa: S310 - https:// only
                request, timeout=timeout, context=self.tls(client_cert)
            ) as response:
                body = response.read()
                status = response.status
        except urllib.error.HTTPError as err:
            body = err.read()
            status = err.code
        try:
            return status, json.loads(body) if body else None
        except ValueError:
            return status, None

    def switchover(self, leader: str) -> None:
        """A planned switchover through the leader's REST API (its password and the tenant's
        client certificate): Patroni picks the new leader."""
        status, _ = self.api(
            leader,
            "/switchover",
            method="POST",
            auth=("patroni", self.restapi_password),
            timeout=30,
            body={"leader": leader},
        )
        assert status == 200, status

    def state(self, member: str) -> dict | None:
        try:
            status, body = self.api(member, "/patroni")
        except OSError:
            return None
        return body if status in (200, 503) else None

    def roles(self) -> dict[str, tuple[str, str]]:
        """{member: (role, state)} of the members that answer."""
        out = {}
        for member in self.members:
            state = self.state(member)
            if state:
                # Patroni 4 reports a replica's streaming in replication_state (state: running).
                out[member] = (
                    state.get("role", "?"),
                    state.get("replication_state") or state.get("state", "?"),
                )
        return out

    def leader(self) -> str | None:
        leaders = [m for m, (role, state) in self.roles().items() if role == "primary" and state == "running"]
        return leaders[0] if len(leaders) == 1 else None

    def healthy(self) -> str | None:
        """The leader, when every member runs: one primary, the others streaming replicas."""
        roles = self.roles()
        if len(roles) != len(self.members):
            return None
        leaders = [m for m, (role, state) in roles.items() if role == "primary" and state == "running"]
        replicas = [m for m, (role, state) in roles.items() if role == "replica" and state == "streaming"]
        if len(leaders) == 1 and len(replicas) == len(self.members) - 1:
            return leaders[0]
        return None

    def sync_standbys(self) -> list[str]:
        leader = self.leader()
        if not leader:
            return []
        _, body = self.api(leader, "/cluster")
        return [m["name"] for m in (body or {}).get("members", []) if m.get("role") == "sync_standby"]

    # --- Clients through HAProxy ---
    def conninfo(self, readonly: bool = False, timeout: int = 2) -> dict:
        return {
            "host": f"{self.tenant}{'-ro' if readonly else ''}.{DOMAIN}",
            "hostaddr": self.proxy_address,
            "port": SNI_PORT,
            "sslnegotiation": "direct",
            "sslmode": "verify-full",
            "sslrootcert": self.ca_file,
            "dbname": self.tenant,
            "user": self.tenant,
            "password": self.password,
            "connect_timeout": timeout,
        }

    def connect(self, readonly: bool = False, timeout: int = 2) -> psycopg.Connection:
        return psycopg.connect(**self.conninfo(readonly, timeout), autocommit=True)

    def query(self, sql: str, readonly: bool = False, params=None) -> list[tuple]:
        with self.connect(readonly) as conn:
            return conn.execute(sql, params).fetchall()


@dataclass
class Attempt:
    """One write attempt of a Writer: connect (when it had no session) and INSERT."""

    n: int
    start: float  # time.time() when it began
    end: float | None = None  # None while in flight
    # "ok" (acknowledged), "unconfirmed" (committed locally, but its wait for the synchronous
    # standby was cancelled: not acknowledged as durable) or the exception's class name.
    outcome: str = "in flight"
    member: str | None = None  # who acknowledged it (container name, or the server's address)
    connected: bool = False  # it opened a new session first
    aborted: bool = False  # the writer's watchdog cut its socket (it ran past abort_after)

    def duration(self, now: float | None = None) -> float:
        return (self.end if self.end is not None else (now or time.time())) - self.start


def abort_socket(fd: int) -> None:
    """Shut a client socket down from another thread: a read blocked on it returns at once."""
    with contextlib.suppress(OSError), socket.socket(fileno=os.dup(fd)) as s:
        s.shutdown(socket.SHUT_RDWR)


class Writer(threading.Thread):
    """Inserts numbered rows through HAProxy, one transaction each, until stopped or `duration`
    seconds passed; reconnects after any error. Every attempt is bounded on the client side: a
    connect timeout, the server's statement_timeout, and a watchdog that cuts the socket of an
    attempt still running after `abort_after` seconds. Each is recorded as an Attempt (start,
    end, outcome, and which member acknowledged it, from inet_server_addr())."""

    INSERT = "INSERT INTO ha_writes (run, n) VALUES (%s, %s) RETURNING host(inet_server_addr())"
    SELECT = "SELECT n FROM ha_writes WHERE run = %s"
    SYNC_CANCELLED = "canceling wait for synchronous replication"

    def __init__(
        self,
        cluster: Cluster,
        duration: float,
        pause: float = 0.02,
        connect_timeout: int = 2,
        statement_timeout: float = 1.5,
        abort_after: float = 15.0,
    ):
        super().__init__(daemon=True)
        self.cluster = cluster
        self.duration = duration
        self.pause = pause
        # libpq and psycopg count connect_timeout in whole seconds, 2 at least.
        self.connect_timeout = max(2, int(connect_timeout))
        self.statement_timeout = statement_timeout
        self.abort_after = abort_after
        self.stop_event = threading.Event()
        self.attempts: list[Attempt] = []
        self.acked: list[tuple[int, float]] = []
        self.errors: list[float] = []
        self.run_id = int(time.time() * 1000)
        self._by_address = {address: member for member, address in cluster.members.items()}
        self._lock = threading.Lock()
        self._inflight: tuple[Attempt, int] | None = None  # the attempt and its socket

    @classmethod
    def prepare(cls, cluster: Cluster) -> None:
        with cluster.connect() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS ha_writes (run bigint, n bigint, PRIMARY KEY (run, n))")

    def limit(self, attempt: Attempt) -> float:
        """How long an attempt may take before it counts as hung (its timeouts + 1 s margin)."""
        return self.statement_timeout + (self.connect_timeout if attempt.connected else 0) + 1.0

    def hung(self) -> list[Attempt]:
        """Attempts that took (or, still in flight, have taken) longer than their limit."""
        now = time.time()
        return [a for a in self.attempts if a.duration(now) > self.limit(a)]

    def _connect(self) -> psycopg.Connection:
        conninfo = self.cluster.conninfo(timeout=self.connect_timeout)
        conninfo["options"] = f"-c statement_timeout={int(self.statement_timeout * 1000)}"
        # TCP keepalives to HAProxy, as a pooled client has: the client side of a dead path.
        conninfo |= {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3}
        conn = psycopg.connect(**conninfo, autocommit=True)
        conn.add_notice_handler(self._notice)
        return conn

    def _notice(self, diag) -> None:
        if self.SYNC_CANCELLED in (diag.message_primary or "") and self._inflight:
            self._inflight[0].outcome = "unconfirmed"

    def _watchdog(self) -> None:
        while self.is_alive():
            with self._lock:
                if self._inflight and self._inflight[0].duration() > self.abort_after:
                    attempt, fd = self._inflight
                    attempt.aborted = True
                    abort_socket(fd)
                    self._inflight = None
            time.sleep(0.2)

    def run(self) -> None:
        threading.Thread(target=self._watchdog, daemon=True).start()
        deadline = time.monotonic() + self.duration
        conn = None
        n = 0
        while time.monotonic() < deadline and not self.stop_event.is_set():
            attempt = Attempt(n, time.time(), connected=conn is None)
            self.attempts.append(attempt)
            try:
                if conn is None:
                    conn = self._connect()
                with self._lock:
                    self._inflight = (attempt, conn.pgconn.socket)
                (address,) = conn.execute(self.INSERT, (self.run_id, n)).fetchone()
                attempt.end = time.time()
                attempt.member = self._by_address.get(address, address)
                if attempt.outcome != "unconfirmed":
                    attempt.outcome = "ok"
                    self.acked.append((n, attempt.end))
            except Exception as exc:  # noqa: BLE001 - every failure is a reconnect
                attempt.end = time.time()
                attempt.outcome = type(exc).__name__
                self.errors.append(attempt.end)
                if conn is not None:
                    with self._lock:
                        self._inflight = None
                    with contextlib.suppress(Exception):
                        conn.close()
                    conn = None
                time.sleep(0.05)
            with self._lock:
                self._inflight = None
            n += 1
            time.sleep(self.pause)
        if conn is not None:
            conn.close()

    def first_ack_after(self, moment: float, exclude: str | None = None) -> float | None:
        """Time of the first write acknowledged after `moment` (by another member than
        `exclude`, when given: the new leader's first answer after a fault on `exclude`)."""
        later = [
            a.end
            for a in self.attempts
            if a.outcome == "ok" and a.end > moment and (exclude is None or a.member != exclude)
        ]
        return min(later) if later else None

    def outage(self, moment: float, until: float | None = None) -> float:
        """Longest time without an acknowledged write, over the gaps that end after `moment`
        (the fault): from the last write before the failover to the first one after it. With
        `until`, only the gaps that start before it (one fault among several in a run)."""
        times = sorted(t for _, t in self.acked)
        gaps = [
            b - a
            for a, b in zip(times, times[1:], strict=False)
            if b > moment and (until is None or a < until)
        ]
        return max(gaps, default=0.0)

    def lost(self) -> list[int]:
        """Acknowledged rows missing from the table, read through HAProxy from the leader."""
        rows = self.cluster.query(self.SELECT, params=(self.run_id,))
        present = {n for (n,) in rows}
        return sorted(n for n, _ in self.acked if n not in present)


class ConnectProbe(threading.Thread):
    """New connections through HAProxy opened during a fault, as a client with a long connect
    timeout opens them: one every `every` s for `span` s, each in its own thread and bounded by
    libpq's connect_timeout `bound` (s). Records (start, end, outcome) per connection: "ok" once
    the session is up (TLS, authentication), else the exception's class. One that reaches
    `bound` is a connection HAProxy left hanging (a hang the writer's 2 s timeout hides)."""

    def __init__(self, cluster: Cluster, span: float = 8.0, every: float = 0.2, bound: int = 20):
        super().__init__(daemon=True)
        self.cluster = cluster
        self.span = span
        self.every = every
        self.bound = bound
        self.results: list[tuple[float, float | None, str]] = []
        self._threads: list[threading.Thread] = []

    def _one(self, i: int) -> None:
        start = self.results[i][0]
        try:
            with psycopg.connect(**self.cluster.conninfo(timeout=self.bound), autocommit=True) as conn:
                conn.execute("SELECT 1")
            outcome = "ok"
        except Exception as exc:  # noqa: BLE001 - the outcome is the finding
            outcome = type(exc).__name__
        self.results[i] = (start, time.time(), outcome)

    def run(self) -> None:
        end = time.monotonic() + self.span
        while time.monotonic() < end:
            self.results.append((time.time(), None, "in flight"))
            t = threading.Thread(target=self._one, args=(len(self.results) - 1,), daemon=True)
            self._threads.append(t)
            t.start()
            time.sleep(self.every)

    def finish(self) -> None:
        """Wait for every connection to end (each is bounded by `bound` s)."""
        self.join(timeout=self.span + 5)
        for t in self._threads:
            t.join(timeout=self.bound + 5)

    def summary(self) -> dict:
        done = [(e - s, o) for s, e, o in self.results if e is not None]
        return {
            "connects": len(self.results),
            "ok": sum(o == "ok" for _, o in done),
            "longest": max((d for d, _ in done), default=0.0),
            "over_5s": sum(d > 5 for d, _ in done),
            # Still not up or refused after `bound` s (or never returned).
            "hung": sum(d >= self.bound - 0.5 for d, _ in done) + len(self.results) - len(done),
        }


# --- Faults ---
def kill_postgres(cluster: Cluster, member: str) -> float:
    """SIGKILL every PostgreSQL process of the tenant on the member (postmaster and backends;
    Patroni, a python process of the same user, stays up). Returns the time of the fault."""
    moment = time.time()
    sh(member, f"pkill -9 -u pg-{cluster.tenant} -x postgres")
    return moment


def _addresses(address: str | Iterable[str]) -> list[str]:
    return [address] if isinstance(address, str) else list(address)


# etcdctl on an etcd host, with the client certificate the etcd role installs there.
ETCDCTL = (
    "cd /etc/shadowdb/etcd && ETCDCTL_API=3 etcdctl --endpoints=https://127.0.0.1:2379"
    " --cacert=ca.crt --cert=client.crt --key=client.key"
)


def partition(member: str, address: str | Iterable[str]) -> float:
    """Cut the member off from `address`, one address or several (a "prohibit" route to each
    inside its container: the lab network only), all in one `podman exec`. Returns the time of
    the fault."""
    script = " && ".join(f"ip route add prohibit {a}/32" for a in _addresses(address))
    moment = time.time()
    sh(member, script)
    return moment


def heal(member: str, address: str | Iterable[str]) -> None:
    """Delete the routes partition() added (every one is tried; fails if any was missing)."""
    script = "rc=0; " + " ".join(f"ip route del prohibit {a}/32 || rc=1;" for a in _addresses(address))
    sh(member, script + " exit $rc")


def own_loop_devices(member: str, tenant: str) -> list[tuple[str, str]]:
    """(device, backing inode) of the loop devices this host attached for the tenant's volume."""
    image = f"/var/lib/shadowdb/volumes/{tenant}.img"
    st_dev, inode = sh(member, f"stat -c '%d %i' {image}").split()
    backing = f"{os.major(int(st_dev))}:{os.minor(int(st_dev))} {inode}"
    out = sh(member, f"losetup -j {image} | grep -v '(lost)' | cut -d: -f1", check=False)
    return [(dev.strip(), backing) for dev in out.split() if dev.strip().startswith("/dev/loop")]


def stop_host(member: str) -> float:
    """Stop the host hard (SIGKILL to its init: a crash, no clean shutdown). Returns the time."""
    moment = time.time()
    podman("kill", member)
    return moment


def release_loops(devices: list[tuple[str, str]]) -> None:
    """Detach the loop devices a killed host left attached (the kernel keeps them), each only if
    it is still backed by the same file (device and inode)."""
    for dev, backing in devices:
        proc = subprocess.run(
            ["losetup", "--list", "--noheadings", "--output", "BACK-MAJ:MIN,BACK-INO", dev],
            capture_output=True,
            text=True,
        )
        if proc.returncode == 0 and " ".join(proc.stdout.split()) == backing:
            subprocess.run(["losetup", "-d", dev], capture_output=True)


def start_host(member: str) -> None:
    podman("start", member)
    wait_for(
        f"{member} to boot",
        lambda: (
            sh(member, "systemctl is-system-running --wait", check=False).strip() in ("running", "degraded")
        ),
        timeout=120,
        interval=1,
    )

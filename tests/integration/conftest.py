"""Integration tests on a real lab: podman hosts booting systemd, tenants onboarded by the playbooks.

One lab per test session, named after the checkout (``sdb-it-<sha1 of the repo path>[:6]``) so
that two checkouts never collide and the lead's lab (``sdb-lab-*``) or molecule's (``sdb-m-*``)
are never touched. A stale lab of the same name is removed first; the lab is always removed at
the end, and the teardown checks that no container, network or loop device of it is left.

Session tenants (onboarded once, through playbooks/tenant.yml):
    db1: ita (small, pgcrypto), itb (small)
    db2: itc (small)
Tests that change a session tenant put it back as it was.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

REPO = Path(__file__).resolve().parents[2]
CHECKOUT_ID = hashlib.sha1(str(REPO).encode(), usedforsecurity=False).hexdigest()[:6]
LAB_NAME = "sdb-it-" + (os.environ.get("SHADOWDB_LAB_ID") or CHECKOUT_ID)
LAB_HOSTS = 2
PSQL = "/usr/lib/postgresql/17/bin/psql"
DOMAIN = "db.shadowdb.test"
LEASES = "/var/lib/shadowdb/ports/postgres.json"
VOLUMES = "/var/lib/shadowdb/volumes"
SHARED_APT_CACHE = Path.home() / ".cache" / "shadowdb" / "apt-archives"  # lab.yml's default

# Session tenants: name -> (host index, spec).
SESSION_TENANTS = {
    "ita": (0, {"name": "ita", "tier": "small", "extensions": ["pgcrypto"]}),
    "itb": (0, {"name": "itb", "tier": "small"}),
    "itc": (1, {"name": "itc", "tier": "small"}),
}

PLAYBOOK_TIMEOUT = 900  # seconds; a first onboarding installs packages
EXEC_TIMEOUT = 180

# Tenant-level state of a host, as one shell script printing "key: sorted values" lines.
# Bad input must leave every line unchanged; a removed tenant must vanish from every line.
_SNAPSHOT_SCRIPT = r"""
v() { sort | tr '\n' ' '; }
echo "users: $(getent passwd | cut -d: -f1 | grep '^pg-' | v)"
echo "groups: $(getent group | cut -d: -f1 | grep '^pg-' | v)"
echo "mountpoints: $(ls -A /mnt/db 2>/dev/null | v)"
echo "mounts: $(findmnt -rn -o TARGET | grep '^/mnt/db/' | v)"
echo "images: $(ls -A /var/lib/shadowdb/volumes 2>/dev/null | v)"
echo "loops: $(for f in /var/lib/shadowdb/volumes/*.img; do [ -e "$f" ] && losetup -j "$f"; done | v)"
echo "volume_env: $(ls -A /etc/shadowdb/volumes 2>/dev/null | v)"
echo "secrets: $(ls -A /etc/shadowdb/tenants 2>/dev/null | v)"
echo "unit_files: $(ls -A /etc/systemd/system | grep shadowdb | v)"
echo "enabled: $(ls -A /etc/systemd/system/multi-user.target.wants | grep shadowdb | v)"
active() { awk '$3 != "inactive" {print $1}'; }
echo "units: $(systemctl list-units 'shadowdb-*' --all --no-legend --plain | active | v)"
echo "leases: $(tr -d ' \n' < /var/lib/shadowdb/ports/postgres.json 2>/dev/null)"
"""


def _normalize(text: str) -> str:
    """Ansible's YAML callback folds long messages and doubles quotes: undo both for searching."""
    return " ".join(text.split()).replace("''", "'")


@dataclass
class Run:
    """Result of one ansible-playbook run."""

    args: list[str]
    rc: int
    output: str
    seconds: float
    log: Path

    @property
    def text(self) -> str:
        return _normalize(self.output)

    def recap(self) -> dict[str, dict[str, int]]:
        """PLAY RECAP counters per host: {host: {"ok": .., "changed": .., "failed": ..}}."""
        _, _, tail = self.output.rpartition("PLAY RECAP")
        result = {}
        for match in re.finditer(r"^(\S+)\s*:\s*((?:\w+=\d+\s*)+)$", tail, re.M):
            result[match.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(2))}
        return result

    def plays(self) -> list[str]:
        """Names of the plays that started, in order."""
        return re.findall(r"^PLAY \[(.*)\] \**$", self.output, re.M)

    def changed_tasks(self) -> list[str]:
        """Names of the tasks that reported a change (for idempotence failures)."""
        tasks, current = [], ""
        for line in self.output.splitlines():
            if line.startswith("TASK ["):
                current = line[6:].split("]")[0]
            elif line.startswith("changed:"):
                tasks.append(f"{current}: {line}")
        return tasks

    def describe(self, limit: int = 6000) -> str:
        command = " ".join(self.args)
        return f"ansible-playbook {command} -> rc {self.rc} (log {self.log}):\n{self.output[-limit:]}"


@dataclass
class Lab:
    name: str
    hosts: list[str]
    inventory_dir: Path
    log_dir: Path
    # (major:minor, inode) of every tenant image ever seen: after teardown, no loop device may
    # still be backed by one of them (the kernel's loop devices are shared by the whole machine).
    loop_keys: set[tuple[str, int]] = field(default_factory=set)
    ready: bool = False  # the session tenants are onboarded
    _runs: itertools.count = field(default_factory=lambda: itertools.count(1))

    # --- environment ---
    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            CONTAINERS_CONF=str(REPO / "lab" / "containers.conf"),
            ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
            PATH=f"{REPO / '.venv' / 'bin'}:{env.get('PATH', '')}",
            SHADOWDB_LAB=self.name,
            ANSIBLE_FORCE_COLOR="0",
            ANSIBLE_NOCOLOR="1",
            ANSIBLE_RETRY_FILES_ENABLED="0",
        )
        return env

    @property
    def inventory(self) -> Path:
        return self.inventory_dir / "hosts.yml"

    @property
    def ca_cert(self) -> Path:
        return self.inventory_dir / "pki" / "ca.crt"

    # --- ansible ---
    def playbook(
        self,
        playbook: str,
        extravars: dict | None = None,
        *args: str,
        inventory: Path | str | None = None,
        timeout: int = PLAYBOOK_TIMEOUT,
    ) -> Run:
        """Run playbooks/<playbook> against the lab (or another inventory); never raises on rc."""
        cmd = ["ansible-playbook", "-i", str(inventory or self.inventory), str(REPO / "playbooks" / playbook)]
        if extravars:
            cmd += ["-e", json.dumps(extravars)]
        cmd += list(args)
        log = self.log_dir / f"{next(self._runs):03d}-{playbook.removesuffix('.yml')}.log"
        start = time.monotonic()
        proc = subprocess.run(
            cmd, env=self.env, capture_output=True, text=True, timeout=timeout, cwd=REPO, check=False
        )
        output = proc.stdout + proc.stderr
        log.write_text(f"$ {' '.join(cmd)}\n{output}")
        return Run(cmd[1:], proc.returncode, output, time.monotonic() - start, log)

    @property
    def apt_cache(self) -> Path:
        """This lab's own apt archive directory, bind-mounted into its hosts. The default one is
        shared by every lab on the machine, and so is its lock: another lab installing packages
        at the same time makes apt fail here ("Could not get lock /var/cache/apt/archives/lock")."""
        return SHARED_APT_CACHE.with_name(f"apt-archives-{self.name}")

    def _seed_apt_cache(self) -> None:
        self.apt_cache.mkdir(parents=True, exist_ok=True)
        if not SHARED_APT_CACHE.is_dir():
            return
        for deb in SHARED_APT_CACHE.glob("*.deb"):
            target = self.apt_cache / deb.name
            if not target.exists():
                try:
                    os.link(deb, target)
                except OSError:
                    shutil.copy2(deb, target)

    def lab_playbook(self, state: str) -> Run:
        extravars = {"lab_state": state, "lab_inventory_dir": str(self.inventory_dir)}
        if state == "present":
            self._seed_apt_cache()
            extravars["lab_hosts"] = len(self.hosts)
            extravars["lab_apt_cache"] = str(self.apt_cache)
            # db2 keeps the backups (test_backup.py); the session tenants have none.
            extravars["lab_backup_host"] = self.hosts[1]
            extravars["lab_backup_default"] = False
        return self.playbook("lab.yml", extravars, inventory="localhost,")

    def onboard(self, host: str, spec: dict, **extravars) -> Run:
        return self.playbook("tenant.yml", {"tenant_host": host, "tenant": spec, **extravars})

    def remove(self, host: str, name: str, confirm: str | None = None) -> Run:
        extravars = {"tenant_host": host, "tenant_name": name}
        if confirm is not None:
            extravars["confirm"] = confirm
        return self.playbook("tenant_remove.yml", extravars)

    # --- hosts ---
    def sh(self, host: str, script: str, check: bool = True, timeout: int = EXEC_TIMEOUT) -> str:
        """Run a shell script as root in a lab host; return stdout (raise on failure when check)."""
        proc = self.exec(host, "/bin/sh", "-c", script, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"{host}: {script!r} -> rc {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc.stdout

    def exec(self, host: str, *argv: str, timeout: int = EXEC_TIMEOUT) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["podman", "exec", host, *argv],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def exists(self, host: str, path: str) -> bool:
        return self.exec(host, "test", "-e", path).returncode == 0

    def ip(self, host: str) -> str:
        """The host's current address on the lab network (it changes when the container restarts)."""
        out = subprocess.run(
            ["podman", "inspect", host, "--format", "{{json .NetworkSettings.Networks}}"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        return json.loads(out)[self.name]["IPAddress"]

    def snapshot(self, host: str) -> dict[str, str]:
        out = self.sh(host, _SNAPSHOT_SCRIPT)
        pairs = (line.split(":", 1) for line in out.splitlines() if ":" in line)
        return {key: value.strip() for key, value in pairs}

    @staticmethod
    def diff(before: dict[str, str], after: dict[str, str]) -> dict[str, tuple[str, str]]:
        """Lines of two snapshots that differ: {key: (before, after)}."""
        keys = sorted(before.keys() | after.keys())
        return {k: (before.get(k, ""), after.get(k, "")) for k in keys if before.get(k) != after.get(k)}

    def leases(self, host: str) -> dict[str, int]:
        text = self.sh(host, f"cat {LEASES} 2>/dev/null || echo '{{}}'")
        return json.loads(text).get("leases", {})

    def owner_env(self, host: str, tenant: str) -> dict[str, str]:
        text = self.sh(host, f"cat /etc/shadowdb/tenants/{tenant}/owner.env")
        pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))
        return {key.strip(): value.strip() for key, value in pairs}

    def postmaster_pid(self, host: str, tenant: str) -> int:
        return int(self.sh(host, f"systemctl show -P MainPID shadowdb-postgres@{tenant}.service").strip())

    def psql_root(self, host: str, tenant: str, sql: str) -> str:
        """Run SQL as the cluster's bootstrap superuser, as root on the host over the unix socket."""
        port = self.owner_env(host, tenant)["PGPORT"]
        proc = self.exec(
            host,
            PSQL,
            "-h",
            f"/mnt/db/{tenant}/run",
            "-p",
            port,
            "-U",
            "postgres",
            "-d",
            tenant,
            "-v",
            "ON_ERROR_STOP=1",
            "-Atc",
            sql,
        )
        assert proc.returncode == 0, f"psql as postgres in {tenant} on {host}: {sql!r}\n{proc.stderr}"
        return proc.stdout.strip()

    # --- clients ---
    def conninfo(self, host: str, tenant: str) -> dict:
        """How a client of the tenant connects: TCP over the lab network, TLS verify-full, own password."""
        env = self.owner_env(host, tenant)
        return {
            "host": f"{tenant}.{DOMAIN}",
            "hostaddr": self.ip(host),
            "port": int(env["PGPORT"]),
            "dbname": env["PGDATABASE"],
            "user": env["PGUSER"],
            "password": env["PGPASSWORD"],
            "sslmode": "verify-full",
            "sslrootcert": str(self.ca_cert),
        }

    def connect(self, host: str, tenant: str, timeout: int = 5, **kwargs) -> psycopg.Connection:
        return psycopg.connect(**self.conninfo(host, tenant), connect_timeout=timeout, **kwargs)

    def wait_serving(self, host: str, tenant: str, timeout: float = 60) -> float:
        """Connect over TLS until the tenant answers (bounded); return the seconds it took."""
        start = time.monotonic()
        last_error: Exception | None = None
        while time.monotonic() - start < timeout:
            try:
                with self.connect(host, tenant, timeout=3) as conn:
                    conn.execute("SELECT 1").fetchone()
                return time.monotonic() - start
            except (psycopg.Error, AssertionError, subprocess.SubprocessError, KeyError) as exc:
                last_error = exc
                time.sleep(1)
        raise AssertionError(f"{tenant} on {host} not serving after {timeout} s: {last_error}")

    # --- loop devices ---
    def image_keys(self, host: str) -> dict[str, tuple[str, int]]:
        """{image path: (major:minor, inode)} of the host's tenant images, as the kernel's loop
        devices report their backing file (losetup BACK-MAJ:MIN, BACK-INO)."""
        out = self.sh(
            host, f'for f in {VOLUMES}/*.img; do [ -e "$f" ] && stat -c \'%n %d %i\' "$f"; done; true'
        )
        keys = {}
        for line in out.split("\n"):
            if line.strip():
                path, dev, ino = line.rsplit(" ", 2)
                keys[path] = (f"{os.major(int(dev))}:{os.minor(int(dev))}", int(ino))
        self.loop_keys.update(keys.values())
        return keys

    def loops_of(self, keys) -> list[tuple[str, str, tuple[str, int]]]:
        """Loop devices of the machine backed by one of these (major:minor, inode) files."""
        keys = set(keys)
        return [loop for loop in machine_loops() if loop[2] in keys]

    def remember_loops(self) -> None:
        for host in self.hosts:
            if self.exec(host, "true", timeout=30).returncode == 0:
                self.image_keys(host)


def machine_loops() -> list[tuple[str, str, tuple[str, int]]]:
    """All loop devices of the machine: (device, backing file, (major:minor, inode))."""
    out = subprocess.run(
        ["losetup", "--list", "--json", "-O", "NAME,BACK-MAJ:MIN,BACK-INO,BACK-FILE"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    loops = []
    for device in json.loads(out)["loopdevices"] if out.strip() else []:
        key = ((device.get("back-maj:min") or "").strip(), int(device.get("back-ino") or 0))
        loops.append((device["name"], device.get("back-file") or "", key))
    return loops


# Modules run in this order: bad input first (on the freshest lab), the host restart late, and
# the idempotence check last, so that it also proves a rebooted host converges with no change.
MODULE_ORDER = ["test_bad_input", "test_isolation", "test_disk_full", "test_removal", "test_restart"]


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    mine = [item for item in items if here in Path(str(item.path)).parents]
    for item in mine:
        item.add_marker(pytest.mark.lab)

    def rank(item):
        stem = Path(str(item.path)).stem
        return MODULE_ORDER.index(stem) if stem in MODULE_ORDER else len(MODULE_ORDER)

    order = {id(item): (rank(item), n) for n, item in enumerate(mine)}
    slots = [n for n, item in enumerate(items) if id(item) in order]
    for slot, item in zip(slots, sorted(mine, key=lambda item: order[id(item)]), strict=True):
        items[slot] = item


def _lab_running(lab: Lab) -> bool:
    """All of the lab's hosts are up (a kept lab, see SHADOWDB_LAB_KEEP)."""
    running = subprocess.run(
        ["podman", "ps", "--filter", f"label=shadowdb.lab={lab.name}", "--format", "{{.Names}}"],
        env=lab.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    ).stdout.split()
    return lab.inventory.exists() and set(lab.hosts) <= set(running)


@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    """The session's lab: 2 hosts, the session tenants onboarded, always torn down.

    SHADOWDB_LAB_KEEP=1 (for working on a few tests): the lab lives in a fixed directory, is reused
    when it is already up with its session tenants, and is left up at the end. Remove it with a
    run without SHADOWDB_LAB_KEEP (which starts by removing a stale lab of the same name) or
    `ansible-playbook playbooks/lab.yml -e lab_state=absent -e lab_inventory_dir=<dir>/inventory`.
    """
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed: integration tests need lab hosts")
    keep = os.environ.get("SHADOWDB_LAB_KEEP", "") not in ("", "0")
    if keep:
        base = Path(tempfile.gettempdir()) / "shadowdb-lab-keep" / LAB_NAME
    else:
        base = tmp_path_factory.mktemp("lab")
    (base / "inventory").mkdir(parents=True, exist_ok=True)
    (base / "logs").mkdir(exist_ok=True)
    lab = Lab(
        name=LAB_NAME,
        hosts=[f"{LAB_NAME}-db{i}" for i in range(1, LAB_HOSTS + 1)],
        inventory_dir=base / "inventory",
        log_dir=base / "logs",
    )
    if keep:
        lab._runs = itertools.count(len(list(lab.log_dir.iterdir())) + 1)
    ready_mark = base / "ready"
    try:
        try:
            if keep and ready_mark.exists() and _lab_running(lab):
                lab.remember_loops()
                lab.ready = True
            else:
                ready_mark.unlink(missing_ok=True)
                stale = lab.lab_playbook("absent")
                assert stale.rc == 0, f"removing a stale lab failed: {stale.describe()}"
                up = lab.lab_playbook("present")
                assert up.rc == 0, f"lab did not start: {up.describe()}"
                # db2 is the backup repository (test_backup.py): converged first, as a deployment
                # is (site.yml), so that its system user is in db2's tenants' views from the start.
                repository = lab.playbook("backup_repository.yml")
                assert repository.rc == 0, f"backup repository: {repository.describe()}"
                _onboard_session_tenants(lab)
                lab.remember_loops()
                lab.ready = True
                if keep:
                    ready_mark.write_text("session tenants onboarded\n")
        except (AssertionError, subprocess.SubprocessError) as exc:
            # Every test needs the lab: stop the session with one message rather than one per test.
            pytest.exit(f"lab setup failed (logs in {lab.log_dir}): {exc}", returncode=1)
        yield lab
    finally:
        if not keep:
            _teardown(lab)


def _onboard_session_tenants(lab: Lab) -> None:
    """ita first (it creates the deployment CA and installs db1's packages), then itb (db1,
    nothing left to install) and itc (db2) side by side: two hosts must never install packages at
    once, they share one apt archive directory (and its lock)."""
    first, *rest = SESSION_TENANTS.values()
    run = lab.onboard(lab.hosts[first[0]], first[1])
    assert run.rc == 0, f"onboarding failed: {run.describe()}"
    with ThreadPoolExecutor(max_workers=len(rest)) as pool:
        runs = list(pool.map(lambda job: lab.onboard(lab.hosts[job[0]], job[1]), rest))
    for run in runs:
        assert run.rc == 0, f"onboarding failed: {run.describe()}"


def _teardown(lab: Lab) -> None:
    try:
        lab.remember_loops()
    except (AssertionError, subprocess.SubprocessError):
        pass  # a host that is gone has no images to remember
    problems = []
    if lab.ready and not lab.loops_of(lab.loop_keys):
        problems.append("no loop device found for the lab's images before teardown: the loop check is blind")
    down = lab.lab_playbook("absent")
    if down.rc != 0:
        problems.append(f"lab removal failed: {down.describe()}")
    containers = subprocess.run(
        ["podman", "ps", "-a", "--filter", f"label=shadowdb.lab={lab.name}", "--format", "{{.Names}}"],
        env=lab.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    ).stdout.split()
    if containers:
        problems.append(f"containers left: {containers}")
    networks = subprocess.run(
        ["podman", "network", "ls", "--format", "{{.Name}}"],
        env=lab.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    ).stdout.split()
    if lab.name in networks:
        problems.append(f"network {lab.name} left")
    # A loop device whose autoclear is pending goes away once its last user closes it: allow a
    # few seconds, bounded.
    deadline = time.monotonic() + 15
    while True:
        left = lab.loops_of(lab.loop_keys)
        if not left or time.monotonic() > deadline:
            break
        time.sleep(1)
    if left:
        problems.append(f"loop devices still backed by this lab's images: {left}")
    assert not problems, "; ".join(problems)


@pytest.fixture(scope="session")
def session_tenants(lab) -> dict[str, tuple[str, dict]]:
    """The session tenants: {name: (host, spec as onboarded)}."""
    return {name: (lab.hosts[index], spec) for name, (index, spec) in SESSION_TENANTS.items()}


@pytest.fixture(scope="session")
def db1(lab) -> str:
    return lab.hosts[0]


@pytest.fixture(scope="session")
def db2(lab) -> str:
    return lab.hosts[1]

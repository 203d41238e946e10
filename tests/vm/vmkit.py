"""What the VM lab's tests and benches share (docs/vm-lab.md): one qemu VM as a db host
(sdb-vmt-<checkout>-db1, SSH on a free port of 127.0.0.1), started by `running_lab` (a stale VM
of the same name first removed) and always removed at the end; commands in
the guest over SSH and module calls on the hypervisor (`VMLab`); `healthy`, a tenant mounted from
its own disk by label and answering; and the noisy-neighbour run (`noisy_run`): pgbench against
one tenant, alone or while a CPU hog runs inside another tenant's cluster, with the hog tenant's
cgroup CPU usage over the same interval.
"""

import contextlib
import json
import os
import re
import shlex
import socket
import statistics
import subprocess
import time
from pathlib import Path

import pytest

from tests.labkit import checkout_id

REPO = Path(__file__).resolve().parents[2]
# Machine-wide, as scripts/build-vm-image.sh: every checkout (and CI's clean clone) reuses the image.
CACHE = Path(
    os.environ.get("SHADOWDB_VM_CACHE")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "shadowdb" / "vm"
)
IMAGE = CACHE / "shadowdb-vm-trixie-1.qcow2"
# Named after the checkout, so that CI's clone and a developer's checkout never share a VM.
LAB = os.environ.get("SHADOWDB_VM_TEST_LAB", f"sdb-vmt-{checkout_id()}")


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now (qemu forwards the guest's SSH to it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PORT = int(os.environ.get("SHADOWDB_VM_TEST_PORT") or free_port())
# How long a wait that takes seconds on a quiet machine may take: qemu runs at nice 19 (TCG), and
# while `make test`'s other streams keep both cores busy the guest gets almost no CPU for a while.
BUSY_MACHINE_WAIT = 120
HOST = f"{LAB}-db1"
TENANTS = ["vma", "vmb"]
VM_DIR = CACHE / "vms" / HOST


def env() -> dict[str, str]:
    e = dict(os.environ)
    e.update(
        ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
        PYTHONPATH=str(REPO),
        PATH=f"{REPO / '.venv' / 'bin'}:{e.get('PATH', '')}",
        SHADOWDB_VM_LAB=LAB,
        SHADOWDB_VM_CACHE=str(CACHE),
    )
    return e


# An SSH connection that failed before the guest ran anything (a TCG guest busy with other work
# can miss ssh's connect or banner timeout): tried again, at most SSH_ATTEMPTS times in all.
SSH_NOT_CONNECTED = re.compile(
    r"Connection (refused|timed out|reset by peer)|kex_exchange_identification|banner exchange"
)
SSH_ATTEMPTS = 3


class VMLab:
    def __init__(self, inventory: Path):
        self.inventory = inventory

    def playbook(self, name: str, *args: str, timeout: int = 3600) -> float:
        started = time.monotonic()
        proc = subprocess.run(
            ["ansible-playbook", "-i", str(self.inventory), f"playbooks/{name}", *args],
            cwd=REPO,
            env=env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if proc.returncode:
            # The first failed task's line first: it is what a CI log's digest shows.
            fatal = next((line for line in proc.stdout.splitlines() if line.startswith("fatal:")), "")
            pytest.fail(f"{name} failed: {fatal[:400]}\n{proc.stdout[-6000:]}\n{proc.stderr[-2000:]}")
        return round(time.monotonic() - started, 1)

    def ssh_argv(self, script: str, timeout: int = 60) -> list[str]:
        return [
            "ssh", "-i", str(CACHE / "id_ed25519"), "-p", str(PORT),
            "-o", f"UserKnownHostsFile={self.inventory / 'known_hosts'}", "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes", "-o", f"ConnectTimeout={timeout}",
            "root@127.0.0.1", script,
        ]  # fmt: skip

    def sh(self, script: str, check: bool = True, timeout: int = 300) -> subprocess.CompletedProcess:
        for attempt in range(1, SSH_ATTEMPTS + 1):
            proc = subprocess.run(self.ssh_argv(script), capture_output=True, text=True, timeout=timeout)
            not_connected = proc.returncode == 255 and SSH_NOT_CONNECTED.search(proc.stderr)
            if not not_connected or attempt == SSH_ATTEMPTS:
                break
            time.sleep(5 * attempt)  # ssh never reached the guest's shell: the script did not run
        if check:
            why = f"{script!r} failed (rc {proc.returncode}): {proc.stdout}{proc.stderr}"
            assert proc.returncode == 0, why
        return proc

    def out(self, script: str) -> str:
        return self.sh(script).stdout.strip()

    def hypervisor(self, module: str, args: dict) -> dict:
        """One module call on the hypervisor (this machine), as the roles delegate it."""
        proc = subprocess.run(
            ["ansible", "localhost", "-i", str(self.inventory), "-m", module, "-a", json.dumps(args)],
            cwd=REPO,
            env=dict(env(), ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_STDOUT_CALLBACK="json"),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]

    def boot_id(self) -> str | None:
        try:
            proc = subprocess.run(
                self.ssh_argv("cat /proc/sys/kernel/random/boot_id", timeout=5),
                capture_output=True,
                text=True,
                timeout=30,
            )
        except subprocess.TimeoutExpired:
            return None
        return proc.stdout.strip() if proc.returncode == 0 else None


@contextlib.contextmanager
def running_lab(
    tmp_path_factory, times: dict[str, float], figures: dict | None = None, title: str = "VM lab"
):
    """The VM, booted and reachable over SSH (not yet converged); removed at the end, whatever
    happened, and `times` (and `figures`, other measurements) printed. Skips when the image was
    never built."""
    if not IMAGE.exists():
        pytest.skip(f"no VM image {IMAGE}: run scripts/vm-setup.sh (or make vm-setup)")
    inventory = tmp_path_factory.mktemp("vmlab")
    vm = VMLab(inventory)
    vm.playbook("vm_lab.yml", "-e", f"vm_lab_inventory_dir={inventory}", "-e", f"vm_lab_ssh_port={PORT}")
    vm.playbook("provision.yml", "-e", "vm_state=absent")  # a VM of this name left by a killed run
    try:
        times["provision (boot to SSH)"] = vm.playbook("provision.yml")
        yield vm
    finally:
        vm.playbook("provision.yml", "-e", "vm_state=absent")
        print(f"\n{title} figures (s):", json.dumps(times, indent=1))
        if figures:
            print(f"{title} measurements:", json.dumps(figures, indent=1))


def converge_tenants(vm: VMLab, times: dict[str, float], tier: str = "small") -> None:
    """site.yml, then the two tenants (one tenant.yml run)."""
    times["site.yml"] = vm.playbook("site.yml")
    spec = json.dumps({"tenants": [{"name": t, "tier": tier} for t in TENANTS]})
    times["tenant.yml (2 tenants)"] = vm.playbook("tenant.yml", "-e", f"tenant_host={HOST}", "-e", spec)


def healthy(vm: VMLab, tenant: str, timeout: int = 300) -> None:
    """The tenant's volume is mounted from its own disk by label and its cluster answers over TLS."""
    deadline = time.monotonic() + timeout
    while True:
        query = f"set -a; . /etc/shadowdb/tenants/{tenant}/owner.env; psql -Atc 'select 1'"
        try:
            proc = vm.sh(query, check=False, timeout=60)
            answer = proc.stdout.strip() or proc.stderr.strip()
        except subprocess.TimeoutExpired:
            answer = "no answer within 60 s"
        if answer == "1":
            break
        if time.monotonic() >= deadline:
            pytest.fail(f"{tenant} does not answer after {timeout} s: {answer}\n{unit_report(vm, tenant)}")
        time.sleep(5)
    # -f: the first line (the volume appears once more through /mnt/db's shared bind mount).
    source = vm.out(f"findmnt -nf -o SOURCE --mountpoint /mnt/db/{tenant}")
    assert re.fullmatch(r"/dev/vd[b-z]", source), source
    assert vm.out(f"readlink -f /dev/disk/by-id/virtio-{tenant}") == source
    assert vm.out(f"readlink -f /dev/disk/by-label/{tenant}") == source  # udev's link
    assert vm.out(f"blkid -s LABEL -o value {source}") == tenant


def unit_report(vm: VMLab, tenant: str) -> str:
    """The tenant's units as systemd sees them and their last journal lines, for a failure's message
    (its first line: each unit's state and result)."""
    units = f"shadowdb-postgres@{tenant}.service shadowdb-volume@{tenant}.service"
    script = (
        f'for u in {units}; do echo -n "$u: "; systemctl show -p ActiveState -p SubState -p Result'
        " -p NRestarts $u | paste -sd ' '; done | paste -sd ';';"
        f" journalctl --no-pager -o short-monotonic -n 25 -u {units.replace(' ', ' -u ')}"
    )
    try:
        proc = vm.sh(script, check=False, timeout=60)
    except subprocess.TimeoutExpired:
        return "(the guest did not answer for the units' report)"
    return proc.stdout + proc.stderr


# --- the noisy neighbour -------------------------------------------------------------------------


def unit(tenant: str) -> str:
    return f"shadowdb-postgres@{tenant}.service"


def cgroup(vm: VMLab, tenant: str) -> str:
    """The tenant's cgroup directory in the guest (systemd's escapes, e.g. \\x2d, as they are:
    quote it with shlex for the shell)."""
    return "/sys/fs/cgroup" + vm.out(f"systemctl show -p ControlGroup --value {unit(tenant)}")


def cpu_quota(vm: VMLab, tenant: str) -> float:
    """The tenant unit's CPUQuota in CPUs (systemd's CPUQuotaPerSecUSec, e.g. 500ms: 0.5)."""
    text = vm.out(f"systemctl show -p CPUQuotaPerSecUSec --value {unit(tenant)}")
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s)", text)
    assert match, f"{unit(tenant)} has no CPU quota: {text!r}"
    return float(match.group(1)) / (1000 if match.group(2) == "ms" else 1)


def as_owner(tenant: str, command: str) -> str:
    """A shell command run with the tenant owner's connection settings (PGHOST, TLS...)."""
    return f"(set -a; . /etc/shadowdb/tenants/{tenant}/owner.env; set +a; {command})"


def pgbench_init(vm: VMLab, tenant: str) -> None:
    """pgbench's tables (scale 1, 100 000 rows) in the tenant's database, as its owner."""
    vm.sh(as_owner(tenant, "pgbench -i -q -s 1 2>&1"), timeout=600)


# The hog: sessions of the hog tenant's owner, each a busy PL/pgSQL loop in its own backend (pure
# CPU: no memory, no temporary files), so the work runs inside the tenant's cgroup. Each stops by
# itself: statement_timeout ends the statement, `timeout` kills the psql if it hangs anyway.
HOG_SQL = "do $$ begin loop perform 1; end loop; end $$"

RUN_DIR = "/tmp/sdb-noisy"


def noisy_script(
    victim: str, hog_tenant: str, cgroups: dict[str, str], seconds: int, clients: int, hogs: int
) -> str:
    """The guest's side of `noisy_run`: one shell script, so that no SSH round trip falls inside
    the measured interval."""
    victim_cg, hog_cg = shlex.quote(cgroups[victim]), shlex.quote(cgroups[hog_tenant])
    hog_s = seconds + 15  # outlives pgbench; stops by itself after that
    pgbench = f"pgbench -n -S -c {clients} -j {min(clients, 2)} -T {seconds}"
    lines = [
        "set -u",
        f"run={RUN_DIR}; rm -rf $run; mkdir -p $run; chmod 777 $run",
        "usage() { awk '/^usage_usec/ {print $2}' \"$1/cpu.stat\"; }",
    ]
    for i in range(hogs):
        psql = f"exec timeout -s KILL {hog_s + 15} psql -qAtc {shlex.quote(HOG_SQL)}"
        psql = f"PGOPTIONS='-c statement_timeout={hog_s}s' {psql}"
        lines.append(f"{as_owner(hog_tenant, psql)} >$run/hog{i}.out 2>&1 & echo $! >>$run/hog.pids")
    if hogs:
        lines.append("sleep 3")  # the hog's backends connected and busy
    lines += [
        f"h0=$(usage {hog_cg}); v0=$(usage {victim_cg}); t0=$(date +%s%N)",
        as_owner(victim, f"cd $run && {pgbench} -l --log-prefix=$run/pgb") + " >$run/pgbench.out 2>&1; rc=$?",
        f"h1=$(usage {hog_cg}); v1=$(usage {victim_cg}); t1=$(date +%s%N)",
        'echo "rc=$rc hog_usec=$((h1 - h0)) victim_usec=$((v1 - v0)) interval_usec=$(((t1 - t0) / 1000))"',
        "cat $run/pgbench.out",
        "echo ==latencies",
        # pgbench's log: client, transaction, latency (us), script, epoch s, epoch us
        "cat $run/pgb.* | awk '{print $3}'",
    ]
    return "\n".join(lines)


def stop_hogs(vm: VMLab, hog_tenant: str) -> None:
    """Ends every hog, whether or not it stopped by itself: its psql processes by pid, then any
    backend of the hog tenant's owner still running the hog's statement."""
    vm.sh(f"[ -f {RUN_DIR}/hog.pids ] && kill -9 $(cat {RUN_DIR}/hog.pids) 2>/dev/null; true", check=False)
    terminate = (
        "select count(pg_terminate_backend(pid)) from pg_stat_activity"
        " where usename = current_user and pid <> pg_backend_pid() and query like 'do $$ begin loop%'"
    )
    vm.sh(as_owner(hog_tenant, f"psql -Atc {shlex.quote(terminate)}"), check=False, timeout=120)


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))]


def noisy_run(
    vm: VMLab, victim: str, hog_tenant: str, seconds: int = 20, clients: int = 4, hogs: int = 0
) -> dict:
    """pgbench -S against `victim` for `seconds` (with `hogs` busy sessions in `hog_tenant`'s
    cluster, or none): tps, p50 and p99 latency (ms), transactions, and the CPU-seconds each
    tenant's cgroup used over the same interval (hog_cpu, victim_cpu, as CPUs: seconds / interval).
    """
    cgroups = {t: cgroup(vm, t) for t in (victim, hog_tenant)}
    script = noisy_script(victim, hog_tenant, cgroups, seconds, clients, hogs)
    try:
        proc = vm.sh(script, check=False, timeout=seconds + 300)
    finally:
        if hogs:
            stop_hogs(vm, hog_tenant)
    head, _, latencies = proc.stdout.partition("==latencies")
    figures = dict(re.findall(r"(\w+)=(-?\d+)", head.splitlines()[0] if head else ""))
    assert figures.get("rc") == "0", f"pgbench failed: {proc.stdout[-3000:]}{proc.stderr[-2000:]}"
    tps = re.search(r"^tps = ([\d.]+)", head, re.M)
    assert tps, head
    ms = [int(v) / 1000 for v in latencies.split()]
    assert ms, f"no pgbench log: {head}"
    interval = int(figures["interval_usec"])
    return {
        "tps": round(float(tps.group(1)), 1),
        "transactions": len(ms),
        "p50_ms": round(percentile(ms, 50), 2),
        "p99_ms": round(percentile(ms, 99), 2),
        "interval_s": round(interval / 1e6, 1),
        "hog_cpu": round(int(figures["hog_usec"]) / interval, 3),
        "victim_cpu": round(int(figures["victim_usec"]) / interval, 3),
    }


def median_run(runs: list[dict]) -> dict:
    """Each figure of `noisy_run` as the median over the runs."""
    return {k: round(statistics.median(r[k] for r in runs), 3) for k in runs[0]}


def noisy_rounds(
    vm: VMLab, victim: str, hog_tenant: str, rounds: int = 2, seconds: int = 20, hogs: int = 3
) -> tuple[dict, dict, list[dict]]:
    """pgbench's tables made, a warm-up, then `rounds` pairs of runs alternating alone and beside
    the hog (so that a burst of other work on the machine spoils one pair, not one side): the
    medians alone, the medians beside the hog, and every run."""
    pgbench_init(vm, victim)
    noisy_run(vm, victim, hog_tenant, seconds=5)  # warm-up: connections, caches
    runs = []
    for _ in range(rounds):
        runs.append(dict(noisy_run(vm, victim, hog_tenant, seconds=seconds), hogs=0))
        runs.append(dict(noisy_run(vm, victim, hog_tenant, seconds=seconds, hogs=hogs), hogs=hogs))
    solo = median_run([r for r in runs if not r["hogs"]])
    hogged = median_run([r for r in runs if r["hogs"]])
    return solo, hogged, runs

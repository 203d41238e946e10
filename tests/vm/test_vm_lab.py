"""One db host as a qemu VM (issue 16, docs/vm-lab.md): the playbooks run unchanged against it
by SSH; each tenant gets a virtual disk hot-plugged and mounted by label through udev; the
tier's MemoryMax, TasksMax and CPUQuota are enforced (a CPU hog in one tenant is held to its
quota beside the other's pgbench); a tenant's disk grows with its tier, and leaves and comes back
while the other tenant answers; a reboot and a hard kill of qemu bring every tenant back.

Slow (a TCG boot takes minutes; 25 minutes for the module under CI load): `make test` runs it
in a stream of its own, `make vm-test` (or `pytest tests/vm -q -s`) alone; the figures are printed
at the end of the module.
"""

import contextlib
import json
import os
import shlex
import subprocess
import time

import pytest

from shadowdb.tiers import DEFAULT_TIERS
from tests.vm.vmkit import (
    BUSY_MACHINE_WAIT,
    CACHE,
    HOST,
    TENANTS,
    VM_DIR,
    VMLab,
    as_owner,
    cpu_quota,
    healthy,
    noisy_rounds,
    running_lab,
)

pytestmark = pytest.mark.vm

TIMES: dict[str, float] = {}
FIGURES: dict[str, object] = {}
MIB = 1048576


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with running_lab(tmp_path_factory, TIMES, FIGURES) as vm:
        yield vm


def test_site_and_tenants_on_their_own_disks(lab):
    TIMES["site.yml"] = lab.playbook("site.yml")
    spec = json.dumps({"tenants": [{"name": t, "tier": "small"} for t in TENANTS]})
    TIMES["tenant.yml (2 tenants)"] = lab.playbook("tenant.yml", "-e", f"tenant_host={HOST}", "-e", spec)
    for t in TENANTS:
        healthy(lab, t)
    sources = {lab.out(f"findmnt -nf -o SOURCE --mountpoint /mnt/db/{t}") for t in TENANTS}
    assert len(sources) == len(TENANTS)
    assert "BACKEND=virtio" in lab.out(f"cat /etc/shadowdb/volumes/{TENANTS[0]}.env")
    # A second run changes nothing.
    TIMES["tenant.yml again"] = lab.playbook("tenant.yml", "-e", f"tenant_host={HOST}", "-e", spec)


def test_hot_plug_and_unplug(lab):
    scratch = {"dir": str(CACHE / "vms" / HOST), "tenants": [{"name": "vmscratch", "size_mb": 64}]}
    started = time.monotonic()
    result = lab.hypervisor("shadowdb_vm_disk", scratch)
    assert any(a.startswith("hot-plugged") for a in result["actions"]["vmscratch"]), result
    wait_for_link(lab, "vmscratch", present=True)
    TIMES["hot-plug to by-id link"] = round(time.monotonic() - started, 1)
    started = time.monotonic()
    result = lab.hypervisor("shadowdb_vm_disk", dict(scratch, state="absent"))
    TIMES["unplug"] = round(time.monotonic() - started, 1)
    assert lab.sh("test -e /dev/disk/by-id/virtio-vmscratch", check=False).returncode != 0
    for t in TENANTS:  # the others' disks did not move
        healthy(lab, t, timeout=BUSY_MACHINE_WAIT)


def test_memory_max_is_enforced(lab):
    victim, neighbour = TENANTS
    unit = f"shadowdb-postgres@{victim}.service"
    assert lab.out(f"systemctl show -p MemoryMax --value {unit}") == str(512 * 1048576)
    # The unit's cgroup path has systemd's escapes (\x2d): quoted for every shell on the way.
    cgroup = "/sys/fs/cgroup" + lab.out(f"systemctl show -p ControlGroup --value {unit}")
    # A process that joins the tenant's cgroup and allocates 600 MB (the small tier allows 512; the
    # VM has about 700 MB free, so without the limit it would succeed).
    hog = (
        "import os, sys; open(sys.argv[1] + '/cgroup.procs', 'w').write(str(os.getpid())); "
        "b = bytearray(600 * 1048576); print(len(b))"
    )
    # Its exit status through a shell: a command killed by a signal makes ssh itself exit 255.
    proc = lab.sh(shlex.join(["python3", "-c", hog, cgroup]) + "; echo rc=$?", check=False)
    assert "rc=137" in proc.stdout, f"the hog was not killed: {proc.stdout}{proc.stderr}"
    # Killed by its cgroup's limit, not by the machine running out: the kernel names the cgroup.
    # (Reading the cgroup's memory.events afterwards does not work: systemd's OOMPolicy=stop stops
    # the unit and its cgroup is gone.)
    oom = lab.out("journalctl -k -o cat --no-pager | grep -F oom-kill: | tail -n 1")
    assert "constraint=CONSTRAINT_MEMCG" in oom and "oom_memcg=" in oom and unit in oom, oom
    healthy(lab, neighbour, timeout=BUSY_MACHINE_WAIT)
    state = lab.sh(f"systemctl is-active {unit}", check=False).stdout.strip()
    print(f"\n{victim} right after the hog: {state} (systemd's OOMPolicy acts on the unit)")
    lab.sh(f"systemctl is-active -q {unit} || systemctl start {unit}", check=False)
    healthy(lab, victim, timeout=180)


def test_tasks_max_and_nofile_hold(lab):
    tenant = TENANTS[1]
    unit = f"shadowdb-postgres@{tenant}.service"
    assert lab.out(f"systemctl show -p TasksMax --value {unit}") == "256"
    # The postmaster runs with the tier's LimitNOFILE (small: 1024).
    pid = lab.out(f"systemctl show -p MainPID --value {unit}")
    assert lab.out(f"awk '/^Max open files/ {{print $4, $5}}' /proc/{pid}/limits") == "1024 1024"
    cgroup = "/sys/fs/cgroup" + lab.out(f"systemctl show -p ControlGroup --value {unit}")
    # A process in the tenant's cgroup forks sleeping children until the kernel refuses one; it
    # prints how many it got and the errno, then ends them all.
    forker = (
        "import os, signal, sys, time\n"
        "open(sys.argv[1] + '/cgroup.procs', 'w').write(str(os.getpid()))\n"
        "kids, err = [], None\n"
        "for _ in range(400):\n"
        "    try:\n"
        "        pid = os.fork()\n"
        "    except OSError as e:\n"
        "        err = e.errno\n"
        "        break\n"
        "    if pid == 0:\n"
        "        time.sleep(60)\n"
        "        os._exit(0)\n"
        "    kids.append(pid)\n"
        "for k in kids:\n"
        "    os.kill(k, signal.SIGKILL)\n"
        "    os.waitpid(k, 0)\n"
        "print(len(kids), err)\n"
    )
    got, errno = lab.out(shlex.join(["python3", "-c", forker, cgroup])).split()
    assert errno == "11" and int(got) < 256, (got, errno)  # EAGAIN before the 256th task
    healthy(lab, tenant, timeout=BUSY_MACHINE_WAIT)


# The hog's sessions: more than the 2 vCPUs, so that without its quota the hog tenant would take
# what the guest gives it (1.26 CPUs measured beside vmb's pgbench, not 0.5).
HOGS = 3
# vmb's TPS beside the hog, against its TPS alone, at least (see the test's docstring).
TPS_RATIO_MIN = 0.3
# vmb's cgroup CPU usage beside the hog, against its usage alone, at least (the same).
VICTIM_CPU_RATIO_MIN = 0.7


def test_cpu_quota_keeps_a_hog_off_the_neighbour(lab):
    """A CPU hog in one small tenant (vma: 3 sessions, each a busy PL/pgSQL loop stopped by
    statement_timeout) beside pgbench -S against the other (vmb, 4 clients, 20 s); two rounds
    alternating alone and beside the hog, medians compared.

    The small tier's CPUQuota is 50 %: the hog gets at most half a CPU of the VM's two vCPUs, and
    vmb is itself capped at half a CPU (it reaches it alone: pgbench keeps it busy), so both fit
    with a vCPU left for pgbench's client, sshd and the kernel. The assertions:
    - the hog tenant's cgroup usage (cpu.stat usage_usec over pgbench's interval) is at most its
      quota (+15 % for the CFS bandwidth period's granularity), and at least half of it (the hog
      ran). This is the one that fails without the quota: lifted at runtime, the same hog used
      1.26 CPUs (tests/bench/test_vm_noisy_neighbour.py's control run);
    - vmb's own cgroup usage beside the hog is at least VICTIM_CPU_RATIO_MIN of its usage alone:
      it keeps its CPU time in the guest (0.86-0.94 in seven runs under `make test`; the guest is
      busier beside the hog, and the busier the machine the less CPU qemu gets at nice 19);
    - vmb's TPS beside the hog is at least 0.3 of its TPS alone. With both quotas the guest can
      give vmb its whole half CPU, so the ratio should be near 1 (0.73-0.90 measured), but runs of
      one kind spread by +-25 % under TCG (the vCPUs are threads of qemu at nice 19 on a 2-vCPU
      cloud machine shared with other work) and one pair by hand gave 0.31. The bound catches a
      neighbour starved outright; the guest's scheduler alone (equal CPUWeight per tenant) keeps
      it from happening even without the hog's quota, so it does not test the quota.
    """
    hog_tenant, victim = TENANTS
    quota = cpu_quota(lab, hog_tenant)
    assert quota == DEFAULT_TIERS["small"]["cpu_quota_pct"] / 100 == cpu_quota(lab, victim)
    solo, hogged, runs = noisy_rounds(lab, victim, hog_tenant, hogs=HOGS)
    ratio = round(hogged["tps"] / solo["tps"], 2)
    FIGURES["cpu quota of a small tenant (CPUs)"] = quota
    FIGURES["vmb alone (medians)"] = solo
    FIGURES["vmb beside vma's hog (medians)"] = hogged
    FIGURES["vmb tps ratio (hog/solo)"] = ratio
    FIGURES["vmb p99 ratio (hog/solo)"] = round(hogged["p99_ms"] / solo["p99_ms"], 2)
    print(f"\nsolo {solo}\nhog  {hogged}\nruns {runs}")
    print(f"tps ratio {ratio}, the hog tenant used {hogged['hog_cpu']} CPUs (quota {quota})")
    for run in runs:
        if run["hogs"]:  # every run: the hog ran, and was held to its quota
            assert run["hog_cpu"] >= quota * 0.5, f"the hog did not run: {run}"
            assert run["hog_cpu"] <= quota * 1.15, f"the hog tenant used more than its CPU quota: {run}"
    kept = hogged["victim_cpu"] / solo["victim_cpu"]
    assert kept >= VICTIM_CPU_RATIO_MIN, f"vmb kept {kept:.2f} of its CPU beside the hog: {solo} {hogged}"
    assert ratio >= TPS_RATIO_MIN, f"vmb kept {ratio} of its TPS beside the hog: {solo} {hogged}"
    for t in TENANTS:
        healthy(lab, t, timeout=BUSY_MACHINE_WAIT)


def disk_sizes(lab: VMLab, tenant: str) -> tuple[int, int]:
    """The tenant's disk as the guest sees it, and its mounted filesystem's size (bytes)."""
    device = lab.out(f"blockdev --getsize64 /dev/disk/by-id/virtio-{tenant}")
    filesystem = lab.out(f"df -B1 --output=size /mnt/db/{tenant} | tail -n 1")
    return int(device), int(filesystem)


def test_growing_a_tenant_disk(lab):
    """vmb from small to medium through tenant.yml: its disk file grows on the hypervisor, qemu
    tells the guest (block_resize), the filesystem is grown online; the data stays."""
    tenant = TENANTS[1]
    small, medium = (DEFAULT_TIERS[t]["disk_size_mb"] * MIB for t in ("small", "medium"))
    lab.sh(as_owner(tenant, "psql -qAtc 'create table if not exists grow_marker as select 42 as v'"))
    device, filesystem = disk_sizes(lab, tenant)
    assert device == small and filesystem <= small, (device, filesystem)
    spec = json.dumps({"tenants": [{"name": tenant, "tier": "medium"}]})
    TIMES["tenant.yml, small to medium (disk grown)"] = lab.playbook(
        "tenant.yml", "-e", f"tenant_host={HOST}", "-e", spec
    )
    assert (VM_DIR / "disks" / f"{tenant}.raw").stat().st_size == medium
    device_after, filesystem_after = disk_sizes(lab, tenant)
    FIGURES["grown disk (MiB, device / filesystem, before -> after)"] = (
        f"{device // MIB} / {filesystem // MIB} -> {device_after // MIB} / {filesystem_after // MIB}"
    )
    assert device_after == medium, device_after
    assert filesystem_after > filesystem + (medium - small) * 0.9, (filesystem, filesystem_after)
    healthy(lab, tenant, timeout=120)
    assert lab.out(as_owner(tenant, "psql -Atc 'select v from grow_marker'")) == "42"
    unit = f"shadowdb-postgres@{tenant}.service"
    assert lab.out(f"systemctl show -p MemoryMax --value {unit}") == str(1024 * MIB)  # the medium tier's
    # A second run changes nothing (the disk is not resized again).
    TIMES["tenant.yml again (grown)"] = lab.playbook("tenant.yml", "-e", f"tenant_host={HOST}", "-e", spec)
    assert disk_sizes(lab, tenant) == (device_after, filesystem_after)


PROBE = "/tmp/sdb-probe"


def wait_for_link(lab: VMLab, tenant: str, present: bool) -> None:
    """Until udev's /dev/disk/by-id/virtio-<tenant> names a block device (or is gone),
    BUSY_MACHINE_WAIT at most."""
    link = f"/dev/disk/by-id/virtio-{tenant}"
    test = f"[ -b {link} ]" if present else f"[ ! -e {link} ]"
    lab.sh(f"for i in $(seq {BUSY_MACHINE_WAIT * 4}); do {test} && exit 0; sleep 0.25; done; false")


def test_detach_and_attach_one_tenant_disk_while_the_other_runs(lab):
    """vma stopped, its disk unmounted and unplugged (shadowdb_vm_disk state=detached: the file
    kept), then plugged again (state=present) and vma started: back on its own disk, mounted by
    label. vmb is asked `select 1` every second all along and never fails."""
    tenant, other = TENANTS
    size_mb = DEFAULT_TIERS["small"]["disk_size_mb"]
    disk = {"dir": str(VM_DIR), "tenants": [{"name": tenant, "size_mb": size_mb}]}
    loop = (
        f"end=$(($(date +%s) + 900)); while [ ! -e {PROBE}/stop ] && [ $(date +%s) -lt $end ]; do"
        " if psql -Atc 'select 1' >/dev/null 2>&1; then echo ok; else echo fail $(date +%T); fi"
        f" >>{PROBE}/log; sleep 1; done"
    )
    lab.sh(f"rm -rf {PROBE}; mkdir -p {PROBE}; " + as_owner(other, f"nohup sh -c {shlex.quote(loop)}")
           + " >/dev/null 2>&1 </dev/null &")  # fmt: skip
    try:
        started = time.monotonic()
        lab.sh(f"systemctl stop shadowdb-postgres@{tenant}.service shadowdb-volume@{tenant}.service")
        assert lab.sh(f"findmnt -n /mnt/db/{tenant}", check=False).returncode == 1, "still mounted"
        TIMES["detach: tenant stopped, unmounted"] = round(time.monotonic() - started, 1)
        started = time.monotonic()
        result = lab.hypervisor("shadowdb_vm_disk", dict(disk, state="detached"))
        TIMES["detach: unplug (module call)"] = round(time.monotonic() - started, 1)
        assert any(a.startswith("unplugged") for a in result["actions"][tenant]), result
        wait_for_link(lab, tenant, present=False)
        assert (VM_DIR / "disks" / f"{tenant}.raw").exists()
        assert tenant not in json.loads((VM_DIR / "disks.json").read_text())["disks"]
        healthy(lab, other, timeout=BUSY_MACHINE_WAIT)
        started = time.monotonic()
        result = lab.hypervisor("shadowdb_vm_disk", disk)
        assert any(a.startswith("hot-plugged") for a in result["actions"][tenant]), result
        wait_for_link(lab, tenant, present=True)
        TIMES["attach: plug to by-id link"] = round(time.monotonic() - started, 1)
        started = time.monotonic()
        lab.sh(f"systemctl start shadowdb-postgres@{tenant}.service")
        healthy(lab, tenant, timeout=180)
        TIMES["attach: start to healthy"] = round(time.monotonic() - started, 1)
        healthy(lab, other, timeout=BUSY_MACHINE_WAIT)
    finally:
        lab.sh(f"touch {PROBE}/stop", check=False)
    log = lab.out(f"sleep 2; cat {PROBE}/log").splitlines()
    FIGURES["vmb probes during detach/attach (ok, failed)"] = (log.count("ok"), len(log) - log.count("ok"))
    assert log and all(line == "ok" for line in log), [line for line in log if line != "ok"]


def test_reboot_brings_every_tenant_back(lab):
    before = lab.boot_id()
    started = time.monotonic()
    with contextlib.suppress(subprocess.TimeoutExpired):  # the connection may go down with the guest
        lab.sh("systemctl reboot", check=False, timeout=BUSY_MACHINE_WAIT)
    deadline = time.monotonic() + 900
    while (now := lab.boot_id()) in (None, before):
        assert time.monotonic() < deadline, "the VM did not come back within 15 minutes"
        time.sleep(5)
    TIMES["reboot to SSH"] = round(time.monotonic() - started, 1)
    for t in TENANTS:
        healthy(lab, t)
    TIMES["reboot to healthy tenants"] = round(time.monotonic() - started, 1)
    assert now != before


def test_hard_kill_and_restart_attaches_the_disks_again(lab):
    pid = int((CACHE / "vms" / HOST / "qemu.pid").read_text())
    os.kill(pid, 9)
    started = time.monotonic()
    TIMES["restart after kill -9 (provision.yml)"] = lab.playbook("provision.yml")
    for t in TENANTS:
        healthy(lab, t)
    TIMES["restart to healthy tenants"] = round(time.monotonic() - started, 1)

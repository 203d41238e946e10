"""One db host as a qemu VM (issue 16, docs/vm-lab.md): the playbooks run unchanged against it
by SSH; each tenant gets a virtual disk hot-plugged and mounted by label through udev; the
tier's MemoryMax is enforced; a reboot and a hard kill of qemu bring every tenant back.

Slow (a TCG boot takes minutes): not in `make test`. Run with `make vm-test` (or
`pytest tests/vm -q -s`); the figures are printed at the end of the module.
"""

import json
import os
import re
import shlex
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.vm

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("SHADOWDB_VM_CACHE") or REPO / ".cache" / "vm")
IMAGE = CACHE / "shadowdb-vm-trixie-1.qcow2"
LAB = os.environ.get("SHADOWDB_VM_TEST_LAB", "sdb-vmt")
PORT = int(os.environ.get("SHADOWDB_VM_TEST_PORT", "22291"))
HOST = f"{LAB}-db1"
TENANTS = ["vma", "vmb"]
TIMES: dict[str, float] = {}


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
        assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-2000:]}"
        return round(time.monotonic() - started, 1)

    def ssh_argv(self, script: str, timeout: int = 20) -> list[str]:
        return [
            "ssh", "-i", str(CACHE / "id_ed25519"), "-p", str(PORT),
            "-o", f"UserKnownHostsFile={self.inventory / 'known_hosts'}", "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes", "-o", f"ConnectTimeout={timeout}",
            "root@127.0.0.1", script,
        ]  # fmt: skip

    def sh(self, script: str, check: bool = True, timeout: int = 300) -> subprocess.CompletedProcess:
        proc = subprocess.run(self.ssh_argv(script), capture_output=True, text=True, timeout=timeout)
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


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    if not IMAGE.exists():
        pytest.skip(f"no VM image {IMAGE}: run scripts/vm-setup.sh (or make vm-setup)")
    inventory = tmp_path_factory.mktemp("vmlab")
    vm = VMLab(inventory)
    vm.playbook("vm_lab.yml", "-e", f"vm_lab_inventory_dir={inventory}", "-e", f"vm_lab_ssh_port={PORT}")
    try:
        TIMES["provision (boot to SSH)"] = vm.playbook("provision.yml")
        yield vm
    finally:
        vm.playbook("provision.yml", "-e", "vm_state=absent")
        print("\nVM lab figures (s):", json.dumps(TIMES, indent=1))


def healthy(vm: VMLab, tenant: str, timeout: int = 300) -> None:
    """The tenant's volume is mounted from its own disk by label and its cluster answers over TLS."""
    deadline = time.monotonic() + timeout
    while True:
        query = f"set -a; . /etc/shadowdb/tenants/{tenant}/owner.env; psql -Atc 'select 1'"
        proc = vm.sh(query, check=False, timeout=60)
        if proc.stdout.strip() == "1":
            break
        assert time.monotonic() < deadline, f"{tenant} does not answer: {proc.stdout}{proc.stderr}"
        time.sleep(5)
    # -f: the first line (the volume appears once more through /mnt/db's shared bind mount).
    source = vm.out(f"findmnt -nf -o SOURCE --mountpoint /mnt/db/{tenant}")
    assert re.fullmatch(r"/dev/vd[b-z]", source), source
    assert vm.out(f"readlink -f /dev/disk/by-id/virtio-{tenant}") == source
    assert vm.out(f"readlink -f /dev/disk/by-label/{tenant}") == source  # udev's link
    assert vm.out(f"blkid -s LABEL -o value {source}") == tenant


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
    lab.sh(
        "for i in $(seq 120); do [ -b /dev/disk/by-id/virtio-vmscratch ] && exit 0; sleep 0.25; done; false"
    )
    TIMES["hot-plug to by-id link"] = round(time.monotonic() - started, 1)
    started = time.monotonic()
    result = lab.hypervisor("shadowdb_vm_disk", dict(scratch, state="absent"))
    TIMES["unplug"] = round(time.monotonic() - started, 1)
    assert lab.sh("test -e /dev/disk/by-id/virtio-vmscratch", check=False).returncode != 0
    for t in TENANTS:  # the others' disks did not move
        healthy(lab, t, timeout=30)


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
    healthy(lab, neighbour, timeout=30)
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
    healthy(lab, tenant, timeout=60)


def test_reboot_brings_every_tenant_back(lab):
    before = lab.boot_id()
    started = time.monotonic()
    lab.sh("systemctl reboot", check=False, timeout=30)
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

#!/usr/bin/python
# Copyright: ShadowDB contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Ansible module: one db-host VM under qemu, started, stopped or removed, in one call."""

import os
import shutil
import socket
import subprocess
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.shadowdb_qmp import QMPClient, QMPError
from ansible.module_utils.shadowdb_vm import (
    VM_NAME_RE,
    kernel_append,
    load_disks,
    paths,
    pid_alive,
    qemu_argv,
    read_pid,
)

DOCUMENTATION = r"""
---
module: shadowdb_vm
short_description: Start, stop or remove one db-host VM under qemu (with its tenant disks)
description:
  - Runs on the hypervisor. The VM is a directory (O(dir)) holding a qcow2 overlay on the base
    image O(image), the QMP socket, the pid file, the serial console log and C(disks.json), the
    tenant disks attached to it (written by M(shadowdb_vm_disk)).
  - With O(state=present) a VM that answers on its QMP socket is left alone; otherwise the overlay
    is made when missing and qemu is started (under C(nice)) with the kernel and initramfs
    O(kernel) and O(initrd), every disk of C(disks.json) attached again, and the guest's sshd
    reachable only on C(127.0.0.1:)O(ssh_port). The module then waits until sshd answers with its
    banner, and returns the guest's SSH host keys read over that loopback port.
  - With O(state=stopped) the guest is asked to power off (ACPI), and qemu is ended after
    O(stop_timeout) seconds if it has not; the overlay and the disks are kept.
  - With O(state=absent) qemu is ended and the VM's directory (overlay, tenant disks, their list)
    is deleted.
  - In check mode nothing is started, stopped or written.
options:
  name:
    description: The VM's name (also the guest's host name).
    type: str
    required: true
  state:
    description: V(present) (running), V(stopped) or V(absent).
    type: str
    choices: [present, stopped, absent]
    default: present
  dir:
    description: The VM's own directory.
    type: path
    required: true
  image:
    description: The base qcow2 image (read only; the VM writes to its overlay). Required to create a VM.
    type: path
  kernel:
    description: The guest kernel (copied out of the image when it was built).
    type: path
  initrd:
    description: The guest initramfs.
    type: path
  append:
    description: Extra kernel command line arguments.
    type: str
    default: ''
  memory_mb:
    description: Guest memory in MiB.
    type: int
    default: 1024
  cpus:
    description: Virtual CPUs.
    type: int
    default: 2
  accel:
    description: V(tcg) (software emulation, works everywhere) or V(kvm).
    type: str
    choices: [tcg, kvm]
    default: tcg
  tb_size_mb:
    description: TCG translation cache in MiB (qemu 7.2's default makes qemu's RSS about 1.8 GB).
    type: int
    default: 128
  nice:
    description: Niceness qemu runs with.
    type: int
    default: 19
  ssh_port:
    description: Port of 127.0.0.1 forwarded to the guest's port 22. Required with O(state=present).
    type: int
  ssh_timeout:
    description: Seconds to wait for the guest's sshd after a start (boots take minutes under TCG).
    type: int
    default: 900
  stop_timeout:
    description: Seconds the guest gets to power off (O(state=stopped)) before qemu is ended.
    type: int
    default: 180
  qemu:
    description: The qemu binary.
    type: str
    default: qemu-system-x86_64
author:
  - ShadowDB contributors
"""

EXAMPLES = r"""
- name: Db host VM
  shadowdb_vm:
    name: sdb-vm-db1
    dir: /srv/shadowdb/vms/sdb-vm-db1
    image: /srv/shadowdb/images/shadowdb-vm-trixie-1.qcow2
    kernel: /srv/shadowdb/images/shadowdb-vm-trixie-1.vmlinuz
    initrd: /srv/shadowdb/images/shadowdb-vm-trixie-1.initrd
    ssh_port: 22201
"""

RETURN = r"""
pid:
  description: qemu's process id (null when the VM is not running).
  returned: always
  type: int
started:
  description: Whether qemu was started by this call.
  returned: always
  type: bool
boot_seconds:
  description: Seconds from qemu's start to the guest's SSH banner (null when not started now).
  returned: always
  type: float
host_keys:
  description: The guest's ed25519 SSH host key as known_hosts lines for C([127.0.0.1]:<ssh_port>).
  returned: when state is present
  type: list
  elements: str
disks:
  description: The tenant disks attached at start ({tenant - file}).
  returned: always
  type: dict
"""


class VMError(Exception):
    """A refusal or a failed step; its text names the VM and the problem."""


def qmp_alive(path):
    """Whether qemu answers on its QMP socket."""
    if not os.path.exists(path):
        return False
    try:
        with QMPClient(path, timeout=5) as qmp:
            qmp.execute("query-status")
        return True
    except (OSError, QMPError):
        return False


def ssh_banner(port, timeout=5.0):
    """The guest sshd's banner line, or None. qemu's user network accepts the TCP connection
    even when nothing listens in the guest (then closes it): only the banner proves sshd is up."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            data = sock.recv(256)
    except OSError:
        return None
    return data.decode(errors="replace").strip() if data.startswith(b"SSH-") else None


def wait_for_ssh(port, timeout, alive):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ssh_banner(port):
            return True
        if not alive():
            return False
        time.sleep(2)
    return False


def keyscan_lines(text, port):
    """known_hosts lines of ssh-keyscan's output, for [127.0.0.1]:port."""
    host = f"[127.0.0.1]:{port}"
    lines = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 3 and not line.startswith("#"):
            lines.append(" ".join([host, fields[1], fields[2]]))
    return sorted(lines)


class VM:
    def __init__(self, module):
        self.module = module
        self.p = module.params
        self.files = paths(self.p["dir"])
        self.check = module.check_mode

    def run(self, argv):
        rc, out, err = self.module.run_command(argv)
        if rc != 0:
            raise VMError(f"vm {self.p['name']}: {' '.join(argv)} failed (rc {rc}): {(err or out).strip()}")
        return out

    def running(self):
        return qmp_alive(self.files["qmp"])

    def pid(self):
        pid = read_pid(self.files["pid"])
        return pid if pid_alive(pid) else None

    def start(self):
        p = self.p
        for option in ("image", "kernel", "initrd", "ssh_port"):
            if not p[option]:
                raise VMError(f"vm {p['name']}: {option} is required to start it")
        for option in ("image", "kernel", "initrd"):
            if not os.path.isfile(p[option]):
                raise VMError(f"vm {p['name']}: {option} {p[option]} not found (scripts/build-vm-image.sh)")
        if ssh_banner(p["ssh_port"], timeout=1) is not None or self.port_taken(p["ssh_port"]):
            raise VMError(
                f"vm {p['name']}: ssh_port {p['ssh_port']} of 127.0.0.1 is in use by another process"
            )
        os.makedirs(self.files["disk_dir"], mode=0o700, exist_ok=True)
        os.chmod(p["dir"], 0o700)
        if not os.path.exists(self.files["overlay"]):
            self.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", p["image"],
                      self.files["overlay"]])  # fmt: skip
        for stale in (self.files["qmp"], self.files["pid"]):
            if os.path.exists(stale):
                os.unlink(stale)
        disks = load_disks(self.files["disks"])
        missing = sorted(t for t, f in disks.items() if not os.path.isfile(f))
        if missing:
            raise VMError(
                f"vm {p['name']}: disks of {', '.join(missing)} are listed but their files are gone"
            )
        argv = qemu_argv(dict(
            name=p["name"], vm_dir=p["dir"], memory_mb=p["memory_mb"], cpus=p["cpus"], accel=p["accel"],
            tb_size_mb=p["tb_size_mb"], kernel=p["kernel"], initrd=p["initrd"],
            append=kernel_append(p["name"], p["append"]), ssh_port=p["ssh_port"], disks=disks,
            qemu=p["qemu"], nice=p["nice"],
        ))  # fmt: skip
        started = time.monotonic()
        self.run(argv)
        if not wait_for_ssh(p["ssh_port"], p["ssh_timeout"], self.running):
            tail = self.console_tail()
            raise VMError(
                f"vm {p['name']}: no SSH on 127.0.0.1:{p['ssh_port']} after {p['ssh_timeout']} s "
                f"(console {self.files['console']}): {tail}"
            )
        return round(time.monotonic() - started, 1), disks

    @staticmethod
    def port_taken(port):
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                return True
        return False

    def console_tail(self):
        try:
            with open(self.files["console"], "rb") as f:
                f.seek(max(0, os.path.getsize(self.files["console"]) - 600))
                return f.read().decode(errors="replace").strip()[-600:]
        except OSError:
            return "(no console log)"

    def host_keys(self):
        rc, out, _err = self.module.run_command(
            ["ssh-keyscan", "-T", "20", "-t", "ed25519", "-p", str(self.p["ssh_port"]), "127.0.0.1"]
        )
        return keyscan_lines(out, self.p["ssh_port"]) if rc == 0 else []

    def stop(self, graceful):
        pid = self.pid()
        try:
            with QMPClient(self.files["qmp"], timeout=10) as qmp:
                if graceful:
                    qmp.execute("system_powerdown")
                    deadline = time.monotonic() + self.p["stop_timeout"]
                    while time.monotonic() < deadline and pid_alive(pid):
                        time.sleep(1)
                if pid_alive(pid) or pid is None:
                    try:
                        qmp.execute("quit")
                    except QMPError:
                        pass  # qemu closes the socket as it quits
        except (OSError, QMPError):
            pass
        deadline = time.monotonic() + 30
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        if pid_alive(pid):
            os.kill(pid, 9)
        for stale in (self.files["qmp"], self.files["pid"]):
            if os.path.exists(stale):
                os.unlink(stale)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            state=dict(type="str", choices=["present", "stopped", "absent"], default="present"),
            dir=dict(type="path", required=True),
            image=dict(type="path"),
            kernel=dict(type="path"),
            initrd=dict(type="path"),
            append=dict(type="str", default=""),
            memory_mb=dict(type="int", default=1024),
            cpus=dict(type="int", default=2),
            accel=dict(type="str", choices=["tcg", "kvm"], default="tcg"),
            tb_size_mb=dict(type="int", default=128),
            nice=dict(type="int", default=19),
            ssh_port=dict(type="int"),
            ssh_timeout=dict(type="int", default=900),
            stop_timeout=dict(type="int", default=180),
            qemu=dict(type="str", default="qemu-system-x86_64"),
        ),
        required_if=[("state", "present", ["ssh_port"])],
        supports_check_mode=True,
    )
    p = module.params
    if not VM_NAME_RE.match(p["name"]):
        module.fail_json(msg=f"name '{p['name']}' must be lowercase letters, digits and '-' (at most 63)")
    if p["ssh_port"] is not None and not 1024 <= p["ssh_port"] <= 65535:
        module.fail_json(msg=f"ssh_port {p['ssh_port']} must be between 1024 and 65535")
    vm = VM(module)
    result = dict(changed=False, started=False, boot_seconds=None, pid=None, disks={})
    try:
        running = vm.running()
        if p["state"] == "present":
            if not running:
                result["changed"] = True
                if module.check_mode:
                    module.exit_json(**result)
                result["boot_seconds"], result["disks"] = vm.start()
                result["started"] = True
            else:
                result["disks"] = load_disks(vm.files["disks"])
                if not wait_for_ssh(p["ssh_port"], p["ssh_timeout"], vm.running):
                    raise VMError(f"vm {p['name']}: running, but no SSH on 127.0.0.1:{p['ssh_port']}")
            result["pid"] = vm.pid()
            result["host_keys"] = vm.host_keys()
        elif p["state"] == "stopped":
            if running:
                result["changed"] = True
                if not module.check_mode:
                    vm.stop(graceful=True)
        else:
            exists = os.path.exists(p["dir"])
            if running or exists:
                result["changed"] = True
                if not module.check_mode:
                    if running or vm.pid():
                        vm.stop(graceful=False)
                    shutil.rmtree(p["dir"])
    except (VMError, OSError, ValueError, QMPError, subprocess.SubprocessError) as e:
        module.fail_json(msg=str(e), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()

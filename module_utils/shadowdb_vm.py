# Copyright: ShadowDB contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""A db-host VM under qemu, as files in one directory: pure helpers shared by shadowdb_vm and
shadowdb_vm_disk (modules import it as ``ansible.module_utils.shadowdb_vm``).

A VM's directory holds its qcow2 overlay on the base image, its QMP socket, pid file, serial
console log, and ``disks.json``: the tenant disks attached to it, so that whatever starts qemu
again (a restart of the hypervisor, a hard kill) attaches them again. A tenant disk is a sparse
raw file ``disks/<tenant>.raw`` (raw, so the hypervisor can read its ext4 label with blkid), a
virtio-blk device whose serial is the tenant's name: the guest's udev links it as
``/dev/disk/by-id/virtio-<tenant>``.
"""

import json
import os
import re

# A tenant name (shadowdb/spec.py): also the disk's serial (virtio-blk keeps 20 bytes) and ids.
TENANT_RE = re.compile(r"^[a-z][a-z0-9-]{0,14}[a-z0-9]$")
VM_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
MIB = 1048576
# Fixed PCI slots: the root disk takes the first free one (0 and 1 are the host bridge and the
# ISA bridge; -vga none leaves 2 free), so it probes first and is /dev/vda at every boot. qemu gives
# a tenant disk (hot-plugged, or on the command line after a restart) the lowest free slot: with
# the root disk anywhere above 2, a tenant's disk took slot 2, became vda, and the guest booted
# from it after a reboot ("No init found").
ROOT_SLOT = "0x2"
NIC_SLOT = "0x3"


def paths(vm_dir):
    """The files of the VM whose directory is ``vm_dir``."""
    return {
        "overlay": os.path.join(vm_dir, "root.qcow2"),
        "qmp": os.path.join(vm_dir, "qmp.sock"),
        "pid": os.path.join(vm_dir, "qemu.pid"),
        "console": os.path.join(vm_dir, "console.log"),
        "disks": os.path.join(vm_dir, "disks.json"),
        "disk_dir": os.path.join(vm_dir, "disks"),
    }


def disk_path(vm_dir, tenant):
    return os.path.join(vm_dir, "disks", f"{tenant}.raw")


def node_name(tenant):
    """The block node and the device id of a tenant's disk (QMP ids: letters, digits, - _ .)."""
    return f"disk-{tenant}"


def blockdev(tenant, path):
    """The blockdev-add arguments (and the -blockdev JSON) of a tenant's raw disk file."""
    return {
        "driver": "raw",
        "node-name": node_name(tenant),
        "file": {"driver": "file", "filename": path, "aio": "threads"},
        "discard": "unmap",
    }


def disk_device(tenant):
    """The device_add arguments of a tenant's virtio disk; serial = tenant (by-id link)."""
    return {"driver": "virtio-blk-pci", "id": node_name(tenant), "drive": node_name(tenant), "serial": tenant}


def device_option(props):
    """``-device`` text of device_add arguments (driver first, then key=value)."""
    rest = [f"{k}={v}" for k, v in props.items() if k != "driver"]
    return ",".join([props["driver"], *rest])


def kernel_append(name, extra=""):
    """The guest kernel's command line: root on the first virtio disk, console on the serial port
    (the console log), eth0 for the one NIC (the image configures eth0), the VM's host name."""
    args = f"root=/dev/vda ro console=ttyS0,115200 net.ifnames=0 systemd.hostname={name}"
    return f"{args} {extra}".strip()


def qemu_argv(spec):
    """The qemu command line of a VM. ``spec``: name, vm_dir, memory_mb, cpus, accel, tb_size_mb,
    kernel, initrd, append, ssh_port, disks ({tenant: path}), qemu, nice. Pure: no file is read."""
    p = paths(spec["vm_dir"])
    accel = spec.get("accel", "tcg")
    tcg = accel == "tcg"
    if tcg and spec.get("tb_size_mb"):
        accel = f"tcg,tb-size={int(spec['tb_size_mb'])}"
    argv = []
    if spec.get("nice") is not None:
        argv += ["nice", "-n", str(int(spec["nice"]))]
    argv += [
        spec.get("qemu", "qemu-system-x86_64"),
        "-name", spec["name"],
        # pc (i440fx) has ACPI PCI hotplug, which the tenant disks need.
        "-machine", "pc",
        "-accel", accel,
        # TCG's default CPU (qemu64) offers AMD's SVM, so the guest's udev loads kvm_amd, and its
        # kernel (6.12) turns virtualization on in every CPU as the module loads. A guest panicked
        # right after that on a restart (a double fault in a process's page fault, CPU 1, 0.4 s
        # after "kvm_amd: Nested Virtualization enabled"). A db host needs no KVM of its own.
        *(["-cpu", "qemu64,-svm"] if tcg else []),
        "-smp", str(int(spec["cpus"])),
        "-m", f"{int(spec['memory_mb'])}M",
        "-nodefaults", "-vga", "none", "-display", "none",
        "-serial", f"file:{p['console']}",
        "-kernel", spec["kernel"],
        "-initrd", spec["initrd"],
        "-append", spec.get("append") or kernel_append(spec["name"]),
        "-blockdev", json.dumps({
            "driver": "qcow2", "node-name": "root",
            "file": {"driver": "file", "filename": p["overlay"], "aio": "threads"},
        }, sort_keys=True),
        "-device", f"virtio-blk-pci,drive=root,id=root,addr={ROOT_SLOT}",
        # User-mode network: the guest reaches out through qemu's NAT; the controller reaches the
        # guest's sshd only through a port of the loopback address.
        "-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{int(spec['ssh_port'])}-:22",
        "-device", f"virtio-net-pci,netdev=net0,addr={NIC_SLOT},romfile=",
        "-qmp", f"unix:{p['qmp']},server=on,wait=off",
        "-pidfile", p["pid"],
        "-daemonize",
    ]  # fmt: skip
    for tenant in sorted(spec.get("disks") or {}):
        argv += ["-blockdev", json.dumps(blockdev(tenant, spec["disks"][tenant]), sort_keys=True)]
        argv += ["-device", device_option(disk_device(tenant))]
    return argv


def load_disks(path):
    """The VM's attached disks ({tenant: file}); {} when none were ever attached."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return {}
    disks = data.get("disks") if isinstance(data, dict) else None
    if not isinstance(disks, dict):
        raise ValueError(f"{path}: expected {{'disks': {{tenant: file}}}}")
    return disks


def dump_disks(disks):
    return json.dumps({"disks": dict(sorted(disks.items()))}, indent=2, sort_keys=True) + "\n"


def save_disks(path, disks):
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(dump_disks(disks))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def attached_ids(qom_list):
    """Device ids under /machine/peripheral from a qom-list answer (children only)."""
    return {entry["name"] for entry in qom_list if str(entry.get("type", "")).startswith("child<")}


def read_pid(path):
    try:
        with open(path, encoding="utf-8") as f:
            return int(f.read().strip() or 0) or None
    except (FileNotFoundError, ValueError):
        return None


def pid_alive(pid):
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            state = f.read().rsplit(")", 1)[-1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"

#!/usr/bin/python
# Copyright: ShadowDB contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Ansible module: the tenants' virtual disks of one VM, made and hot-plugged (or unplugged and
deleted) on the hypervisor, in one call for a batch of tenants."""

import os
import subprocess
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.shadowdb_qmp import QMPClient, QMPError
from ansible.module_utils.shadowdb_vm import (
    MIB,
    TENANT_RE,
    attached_ids,
    blockdev,
    disk_device,
    disk_path,
    load_disks,
    node_name,
    paths,
    save_disks,
)
from ansible.module_utils.shadowdb_volume_rules import foreign_filesystem, parse_blkid_export, shrink_refusal

DOCUMENTATION = r"""
---
module: shadowdb_vm_disk
short_description: Make and hot-plug (or unplug and delete) the tenants' virtual disks of one VM
description:
  - Runs on the hypervisor of a VM started by M(shadowdb_vm) (its directory O(dir)). The guest side
    (label, filesystem, mount by label) is M(shadowdb_volume)'s C(virtio) backend.
  - With O(state=present), for each tenant of O(tenants), each step only when needed - the sparse
    raw file C(<dir>/disks/<tenant>.raw) made or grown (never shrunk), the disk listed in
    C(<dir>/disks.json) (M(shadowdb_vm) attaches the listed disks again whenever it starts qemu),
    and, when the VM runs, the disk hot-plugged through QMP (C(blockdev-add), C(device_add) of a
    C(virtio-blk-pci) device whose serial is the tenant's name: the guest sees
    C(/dev/disk/by-id/virtio-<tenant>)) or its new size announced (C(block_resize)).
  - With O(state=absent), the disk is unplugged (C(device_del), waiting for qemu's
    C(DEVICE_DELETED), then C(blockdev-del)), taken off the list, and its file deleted, but only when
    its filesystem carries the tenant's name as label or it has none (C(blkid -p) on the raw file):
    a disk that cannot be proven to be the tenant's is refused. The guest must have unmounted it
    (qemu does not refuse to unplug a mounted disk).
  - With O(state=detached), the disk is unplugged and taken off the list (a start of the VM does not
    attach it again) but its file is kept: O(state=present) with the same size attaches it again. As
    for V(absent), the guest must have stopped the tenant and unmounted the disk first.
  - In check mode nothing is written, plugged or unplugged.
options:
  dir:
    description: The VM's directory (as given to M(shadowdb_vm)).
    type: path
    required: true
  state:
    description: V(present), V(detached) (unplugged, file kept) or V(absent) (unplugged, file deleted).
    type: str
    choices: [present, detached, absent]
    default: present
  tenants:
    description: The tenants' disks.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: Tenant name; also the disk's serial.
        type: str
        required: true
      size_mb:
        description: Size of the disk in MiB (O(state=present)). Shrinking is refused.
        type: int
        default: 1024
  unplug_timeout:
    description: Seconds to wait for the guest to release an unplugged disk.
    type: int
    default: 60
author:
  - ShadowDB contributors
"""

EXAMPLES = r"""
- name: Disks of two tenants, hot-plugged
  shadowdb_vm_disk:
    dir: /srv/shadowdb/vms/sdb-vm-db1
    tenants:
      - {name: acme, size_mb: 1024}
      - {name: globex, size_mb: 2048}
"""

RETURN = r"""
actions:
  description: What was (or in check mode would be) done, per tenant, in order.
  returned: always
  type: dict
  sample: {acme: [made the 1024 MiB disk, listed it, hot-plugged it (0.03 s)]}
disks:
  description: The VM's disks after the call ({tenant - file}).
  returned: always
  type: dict
running:
  description: Whether the VM was running (only a running VM gets disks plugged or unplugged).
  returned: always
  type: bool
"""


class DiskError(Exception):
    """A refusal or a failed step; its text names the tenant and the problem."""


def label_refusal(name, blkid_export):
    """Why a disk must not be deleted (None when it is empty or labelled with the tenant's name)."""
    why = foreign_filesystem(parse_blkid_export(blkid_export), name)
    return f"tenant {name}: refusing to delete its disk: it holds {why}" if why else None


class Disks:
    def __init__(self, module):
        self.module = module
        self.dir = module.params["dir"]
        self.files = paths(self.dir)
        self.check = module.check_mode
        self.actions = {}
        self.disks = load_disks(self.files["disks"])
        self.qmp = None

    def did(self, tenant, action):
        self.actions.setdefault(tenant, []).append(action)

    def connect(self):
        if not os.path.exists(self.files["qmp"]):
            return False
        try:
            self.qmp = QMPClient(self.files["qmp"], timeout=30)
            self.qmp.connect()
        except (OSError, QMPError):
            self.qmp = None
            return False
        return True

    def attached(self):
        if self.qmp is None:
            return set()
        return attached_ids(self.qmp.execute("qom-list", path="/machine/peripheral"))

    def nodes(self):
        """{node name: size in bytes as qemu sees it} of the VM's block nodes."""
        if self.qmp is None:
            return {}
        return {
            n.get("node-name"): n.get("image", {}).get("virtual-size", 0)
            for n in self.qmp.execute("query-named-block-nodes")
        }

    def present(self, tenant, size_mb, attached, nodes):
        path = disk_path(self.dir, tenant)
        wanted = size_mb * MIB
        current = os.path.getsize(path) if os.path.exists(path) else None
        if current is not None:
            refusal = shrink_refusal(tenant, current, size_mb, what="disk")
            if refusal:
                raise DiskError(refusal)
        if current is None or current < wanted:
            self.did(tenant, f"{'made' if current is None else 'grew'} the {size_mb} MiB disk")
            if not self.check:
                os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
                try:
                    os.ftruncate(fd, wanted)  # sparse: no block is written
                finally:
                    os.close(fd)
        # qemu keeps the size it opened the file with: a plugged disk smaller than wanted (grown
        # just now, or by a run that failed before this step) is resized, and the guest told.
        plugged = nodes.get(node_name(tenant))
        if plugged is not None and plugged < wanted:
            self.did(tenant, f"told the guest its new size ({plugged // MIB} to {size_mb} MiB, block_resize)")
            if not self.check:
                self.qmp.execute("block_resize", **{"node-name": node_name(tenant), "size": wanted})
        if self.disks.get(tenant) != path:
            self.did(tenant, "listed it (attached again at every start)")
            self.disks[tenant] = path
            if not self.check:
                save_disks(self.files["disks"], self.disks)
        if self.qmp is not None and node_name(tenant) not in attached:
            started = time.monotonic()
            if not self.check:
                if node_name(tenant) not in nodes:
                    self.qmp.execute("blockdev-add", **blockdev(tenant, path))
                self.qmp.execute("device_add", **disk_device(tenant))
            self.did(tenant, f"hot-plugged it ({time.monotonic() - started:.2f} s)")

    def absent(self, tenant, attached, nodes, keep_file=False):
        path = self.disks.get(tenant) or disk_path(self.dir, tenant)
        if os.path.exists(path) and not keep_file:
            rc, out, err = self.module.run_command(["blkid", "-p", "-o", "export", path])
            if rc not in (0, 2):
                raise DiskError(f"tenant {tenant}: blkid -p {path} failed (rc {rc}): {err.strip()}")
            refusal = label_refusal(tenant, out)
            if refusal:
                raise DiskError(refusal)
        node = node_name(tenant)
        if node in attached:
            started = time.monotonic()
            if not self.check:
                self.qmp.execute("device_del", id=node)
                self.qmp.wait_event(
                    "DEVICE_DELETED", {"device": node}, timeout=self.module.params["unplug_timeout"]
                )
            self.did(tenant, f"unplugged it ({time.monotonic() - started:.2f} s)")
        if node in nodes:
            if not self.check:
                self.qmp.execute("blockdev-del", **{"node-name": node})
            self.did(tenant, "released its block node")
        if tenant in self.disks:
            self.did(tenant, "took it off the list")
            if not self.check:
                del self.disks[tenant]
                save_disks(self.files["disks"], self.disks)
        if os.path.exists(path) and not keep_file:
            self.did(tenant, f"deleted {os.path.basename(path)}")
            if not self.check:
                os.unlink(path)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            dir=dict(type="path", required=True),
            state=dict(type="str", choices=["present", "detached", "absent"], default="present"),
            tenants=dict(
                type="list",
                elements="dict",
                required=True,
                options=dict(name=dict(type="str", required=True), size_mb=dict(type="int", default=1024)),
            ),
            unplug_timeout=dict(type="int", default=60),
        ),
        supports_check_mode=True,
    )
    p = module.params
    for t in p["tenants"]:
        if not TENANT_RE.match(t["name"]):
            module.fail_json(msg=f"tenants: name '{t['name']}' must be a DNS label of 2-16 characters")
        if t["size_mb"] < 1:
            module.fail_json(msg=f"tenants: {t['name']}: size_mb must be positive, got {t['size_mb']}")
    if not os.path.isdir(p["dir"]):
        if p["state"] != "present":
            module.exit_json(changed=False, actions={}, disks={}, running=False)
        module.fail_json(msg=f"dir {p['dir']}: no such VM directory (provision the VM first)")
    disks = Disks(module)
    try:
        running = disks.connect()
        attached, nodes = disks.attached(), disks.nodes()
        for t in p["tenants"]:
            if p["state"] == "present":
                disks.present(t["name"], t["size_mb"], attached, nodes)
            else:
                disks.absent(t["name"], attached, nodes, keep_file=p["state"] == "detached")
    except (DiskError, QMPError, OSError, ValueError, subprocess.SubprocessError) as e:
        module.fail_json(msg=str(e), actions=disks.actions, disks=disks.disks)
    finally:
        if disks.qmp is not None:
            disks.qmp.close()
    module.exit_json(changed=bool(disks.actions), actions=disks.actions, disks=disks.disks, running=running)


if __name__ == "__main__":
    main()

#!/usr/bin/python
# Copyright: ShadowDB contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Ansible module: a tenant's labelled volume, made, grown and mounted in one call."""

import os
import re
import stat
import subprocess
import threading
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.shadowdb_batch import batch_argument_spec, run_batch
from ansible.module_utils.shadowdb_common import ENABLE_ON_DISK
from ansible.module_utils.shadowdb_volume_rules import (
    MIB,
    foreign_filesystem,
    parse_blkid_export,
    shrink_refusal,
)

DOCUMENTATION = r"""
---
module: shadowdb_volume
short_description: Make, grow and mount one tenant's labelled volume in one call
description:
  - The per-tenant work of the tenant_volume role, done in one round trip to the host (each
    task is one, and onboarding speed is one of the project's targets).
  - Before anything is written, the backing store is checked (the given disk exists and is a
    block device, the volume group exists, a loop image is not asked to shrink) and probed with
    C(blkid -p): it must be empty or hold an ext4 filesystem labelled with the tenant's name.
  - Then, each step only when needed, in order, the volume's settings file (O(env_file)), the
    sparse loop image or the logical volume (made or grown, never shrunk), the block device
    (attached by O(helper) C(device)), an ext4 filesystem labelled O(name) (C(-m 0)), the volume
    unit started and enabled (it mounts the volume at every boot), the filesystem grown to the
    volume (O(helper) C(grow)), and the unit restarted when the volume was unmounted behind its
    back.
  - In check mode nothing is changed or attached; the result says what would change.
options:
  name:
    description: Tenant name; also the filesystem label (a DNS label of 2-16 characters).
    type: str
    required: true
  backend:
    description:
      - V(loop) (sparse image file), V(lvm) (a logical volume named O(name)), V(device) (a given disk)
        or V(virtio) (a virtual disk the hypervisor hot-plugged with the tenant's name as serial:
        M(shadowdb_vm_disk); it is waited for up to O(device_wait) seconds).
    type: str
    choices: [loop, lvm, device, virtio]
    default: loop
  source:
    description: >-
      The image file (loop), C(/dev/<vg>/<name>) (lvm), the disk (device) or
      C(/dev/disk/by-id/virtio-<name>) (virtio).
    type: path
    required: true
  lvm_vg:
    description: Volume group of the lvm backend.
    type: str
    default: ''
  size_mb:
    description: Size in MiB of the image or logical volume (loop, lvm). Shrinking is refused.
    type: int
    default: 1024
  env_file:
    description: The volume's settings file, read by O(helper) and the unit.
    type: path
    required: true
  env_content:
    description: Text of O(env_file).
    type: str
    required: true
  helper:
    description: The volume helper script (commands C(device), C(sizes), C(grow)).
    type: path
    default: /usr/local/libexec/shadowdb/shadowdb-volume
  unit:
    description: The tenant's volume unit (mounts the volume).
    type: str
    required: true
  daemon_reload:
    description: Reload systemd before the unit is started (its template changed in this run); once per call.
    type: bool
    default: false
  device_wait:
    description: Seconds to wait for the V(virtio) backend's disk (udev links it after the hot-plug).
    type: int
    default: 60
  workers:
    description:
      - With O(tenants), how many volumes are made at once, each in a thread (a volume mostly waits on
        C(mkfs.ext4), the helper or systemd). V(1) makes them one after the other.
    type: int
    default: 4
author:
  - ShadowDB contributors
"""

EXAMPLES = r"""
- name: Volume of tenant acme
  shadowdb_volume:
    name: acme
    source: /var/lib/shadowdb/volumes/acme.img
    size_mb: 1024
    env_file: /etc/shadowdb/volumes/acme.env
    env_content: "{{ lookup('ansible.builtin.template', 'volume.env.j2') }}"
    unit: shadowdb-volume@acme.service
"""

RETURN = r"""
device:
  description: The tenant's block device (null in check mode when it is not attached yet).
  returned: always
  type: str
  sample: /dev/loop3
actions:
  description: What was (or in check mode would be) done, in order.
  returned: always
  type: list
  elements: str
  sample: [wrote /etc/shadowdb/volumes/acme.env, made the 1024 MiB image, attached /dev/loop3]
"""

NAME = re.compile(r"^[a-z][a-z0-9-]{0,14}[a-z0-9]$")


class VolumeError(Exception):
    """A refusal or a failed step; its text names the tenant and the problem."""


class VolumeFailure(Exception):
    """A failed converge, with what was done before it (reported beside the message)."""

    def __init__(self, msg, **partial):
        super().__init__(msg)
        self.partial = partial


def parse_sizes(text):
    """The helper's `sizes` line: (wanted bytes, filesystem bytes, mounted)."""
    fields = text.split()
    if len(fields) != 3:
        raise VolumeError(f"unexpected answer of the volume helper: {text.strip()!r}")
    return int(fields[0]), int(fields[1] or 0), fields[2] == "mounted"


def needs_growing(wanted_bytes, filesystem_bytes):
    """The filesystem is grown when the volume offers more than a MiB beyond it."""
    return filesystem_bytes + MIB < wanted_bytes


class ReloadOnce:
    """systemctl daemon-reload once per call, for the volumes made in threads: the first that
    starts a unit reloads, the others wait for it (a failed reload is tried again by the next)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._done = False

    def __call__(self, run):
        with self._lock:
            if not self._done:
                run(["systemctl", "daemon-reload"])
                self._done = True


class Volume:
    def __init__(self, module, params, reload_once):
        self.module = module
        self.p = params
        self.check = module.check_mode
        self.actions = []
        self.reload_once = reload_once  # a ReloadOnce shared by the call's volumes
        env_file = self.p["env_file"]
        self.diff = {"before": "", "after": "", "before_header": env_file, "after_header": env_file}

    def run(self, argv, ok=(0,)):
        rc, out, err = self.module.run_command(argv)
        if rc not in ok:
            why = (err or out).strip()
            raise VolumeError(f"tenant {self.p['name']}: {' '.join(argv)} failed (rc {rc}): {why}")
        return rc, out, err

    def did(self, action):
        self.actions.append(action)

    # --- checks that change nothing ---
    def check_store(self):
        name, backend, source = self.p["name"], self.p["backend"], self.p["source"]
        if backend == "virtio" and not self.wait_for_disk(source):
            if self.check:  # the hypervisor's side attached nothing in check mode either
                return
            raise VolumeError(
                f"tenant {name}: its virtual disk {source} did not appear within {self.p['device_wait']} s "
                "(the hypervisor attaches it: shadowdb_vm_disk)"
            )
        if backend in ("device", "virtio"):
            try:
                is_block = stat.S_ISBLK(os.stat(source).st_mode)
            except OSError:
                is_block = False
            if not is_block:
                raise VolumeError(
                    f"tenant_volume_device {source} for tenant {name} does not exist or is not a block device"
                )
        elif backend == "lvm":
            rc, _out, err = self.run(["vgs", "--noheadings", "-o", "vg_name", self.p["lvm_vg"]], ok=(0, 5))
            if rc != 0:
                raise VolumeError(f"tenant {name}: volume group {self.p['lvm_vg']} not found: {err.strip()}")
        current = self.current_bytes()
        if current is not None and backend in ("loop", "lvm"):
            refusal = shrink_refusal(name, current, self.p["size_mb"])
            if refusal:
                raise VolumeError(refusal)
        if current is not None:
            self.refuse_foreign(source)

    def wait_for_disk(self, source):
        """Whether the disk is there; a hot-plugged disk shows up a few seconds after the hypervisor
        adds it (check mode does not wait: it attached nothing)."""
        deadline = time.monotonic() + (0 if self.check else self.p["device_wait"])
        while not os.path.exists(source):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.5)
        return True

    def current_bytes(self):
        """Size of the existing image or logical volume (None when there is none yet)."""
        source = self.p["source"]
        if self.p["backend"] == "loop":
            try:
                return os.stat(source).st_size
            except FileNotFoundError:
                return None
        if not os.path.exists(source):
            if self.p["backend"] == "lvm":
                rc, out, _err = self.run(
                    ["lvs", "--noheadings", "--units", "b", "--nosuffix", "-o", "lv_size", source], ok=(0, 5)
                )
                return int(float(out.strip())) if rc == 0 and out.strip() else None
            return None
        with open(source, "rb") as f:
            return f.seek(0, os.SEEK_END)

    def refuse_foreign(self, path):
        """blkid reads an image file as well as a block device: empty, or this tenant's ext4."""
        _rc, out, _err = self.run(["blkid", "-p", "-o", "export", path], ok=(0, 2))
        why = foreign_filesystem(parse_blkid_export(out), self.p["name"])
        if why:
            prefix = "tenant_volume_device " if self.p["backend"] == "device" else ""
            raise VolumeError(
                f"{prefix}{path} for tenant {self.p['name']} already holds {why}: refusing to use it"
            )

    # --- steps, each only when needed ---
    def settings_file(self):
        path, content = self.p["env_file"], self.p["env_content"]
        try:
            with open(path, encoding="utf-8") as f:
                before = f.read()
        except FileNotFoundError:
            before = ""
        mode_ok = os.path.exists(path) and stat.S_IMODE(os.stat(path).st_mode) == 0o644
        if before == content and mode_ok:
            return
        self.diff.update(before=before, after=content)
        self.did(f"wrote {path}")
        if not self.check:
            os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
            tmp = f"{path}.tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(content)
                f.flush()
                os.fchmod(f.fileno(), 0o644)
                os.fsync(f.fileno())
            os.replace(tmp, path)

    def backing_store(self):
        """Make or grow the image or logical volume; True when it is new."""
        backend, wanted = self.p["backend"], self.p["size_mb"] * MIB
        if backend in ("device", "virtio"):  # made (and grown) outside the host
            return False
        current = self.current_bytes()
        if current is not None and current >= wanted:
            return False
        new = current is None
        kind = "image" if backend == "loop" else "logical volume"
        self.did(f"{'made' if new else 'grew'} the {self.p['size_mb']} MiB {kind}")
        if self.check:
            return new
        if backend == "loop":
            fd = os.open(self.p["source"], os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            try:
                os.ftruncate(fd, wanted)  # sparse: no block is written
                os.fchmod(fd, 0o600)
            finally:
                os.close(fd)
        elif new:
            size = f"{self.p['size_mb']}m"
            self.run(["lvcreate", "--yes", "-n", self.p["name"], "-L", size, self.p["lvm_vg"]])
        else:
            self.run(["lvextend", "-L", f"{self.p['size_mb']}m", self.p["source"]])
        return new

    def block_device(self):
        _rc, out, err = self.run([self.p["helper"], "device", self.p["name"]])
        device = out.strip().splitlines()[-1]
        if "attached" in err:
            self.did(f"attached {device}")
        return device

    def filesystem(self, device):
        _rc, out, _err = self.run(["blkid", "-p", "-o", "export", device], ok=(0, 2))
        found = parse_blkid_export(out)
        why = foreign_filesystem(found, self.p["name"])
        if why:
            raise VolumeError(f"{device} for tenant {self.p['name']} already holds {why}: refusing to use it")
        if found.get("TYPE"):
            return
        self.did(f"made the ext4 filesystem labelled {self.p['name']}")
        if not self.check:
            self.run(["mkfs.ext4", "-q", "-L", self.p["name"], "-m", "0", device])

    def unit_state(self):
        unit = self.p["unit"]
        _rc, enabled, _err = self.run(["systemctl", "is-enabled", unit], ok=(0, 1, 4))
        _rc, active, _err = self.run(["systemctl", "is-active", unit], ok=(0, 3, 4))
        return enabled.strip() == "enabled", active.strip() == "active"

    def start_unit(self):
        unit = self.p["unit"]
        if self.p["daemon_reload"] and not self.check:
            self.reload_once(self.run)
        enabled, active = self.unit_state()
        if enabled and active:
            return False
        self.did(f"started and enabled {unit}")
        if not self.check:
            if not enabled:
                self.run([*ENABLE_ON_DISK, unit])
            self.run(["systemctl", "start", unit])
        return True

    def size_and_mount(self):
        _rc, out, _err = self.run([self.p["helper"], "sizes", self.p["name"]])
        wanted, filesystem, mounted = parse_sizes(out)
        if needs_growing(wanted, filesystem):
            self.did(f"grew the filesystem from {filesystem // MIB} to {wanted // MIB} MiB")
            if not self.check:
                _rc, out, _err = self.run([self.p["helper"], "grow", self.p["name"]])
                self.actions[-1] += f" ({out.strip()})"
        if not mounted:
            self.did(f"mounted the volume again ({self.p['unit']} restarted)")
            if not self.check:
                self.run(["systemctl", "restart", self.p["unit"]])

    def converge(self):
        self.check_store()
        self.settings_file()
        self.backing_store()
        if self.check:
            device = self.attached()
            if device is None:  # check mode attaches nothing, so it cannot look further
                self.did(f"attached {self.p['source']} and mounted it")
                return None
        else:
            device = self.block_device()
        self.filesystem(device)
        if self.start_unit() and self.check:
            return device
        self.size_and_mount()
        return device

    def attached(self):
        """The block device already holding the volume (check mode attaches nothing)."""
        source = self.p["source"]
        if not os.path.exists(source):
            return None
        if self.p["backend"] != "loop":
            return source
        _rc, out, _err = self.run(["losetup", "-j", source])
        for line in out.splitlines():
            if "(lost)" not in line and ":" in line:
                return line.split(":", 1)[0]
        return None


PER_TENANT = dict(
    name=dict(type="str", required=True),
    source=dict(type="path", required=True),
    size_mb=dict(type="int", default=1024),
    env_file=dict(type="path", required=True),
    env_content=dict(type="str", required=True),
    unit=dict(type="str", required=True),
)

SHARED = dict(
    backend=dict(type="str", choices=["loop", "lvm", "device", "virtio"], default="loop"),
    device_wait=dict(type="int", default=60),
    lvm_vg=dict(type="str", default=""),
    helper=dict(type="path", default="/usr/local/libexec/shadowdb/shadowdb-volume"),
    daemon_reload=dict(type="bool", default=False),
    workers=dict(type="int", default=4),
)


def main():
    module = AnsibleModule(
        argument_spec=batch_argument_spec(PER_TENANT, SHARED),
        required_if=[("backend", "lvm", ["lvm_vg"])],
        supports_check_mode=True,
    )
    if module.params["workers"] < 1:
        module.fail_json(msg=f"workers must be at least 1, got {module.params['workers']}")
    reload_once = ReloadOnce()  # systemd is reloaded once per call, before the first unit is started

    def converge_one(params):
        name = params["name"]
        if not NAME.match(name):
            raise VolumeError(f"name '{name}' must be a DNS label of 2-16 characters")
        if params["size_mb"] < 1:
            raise VolumeError(f"tenant {name}: size_mb must be positive, got {params['size_mb']}")
        volume = Volume(module, params, reload_once)
        try:
            device = volume.converge()
        except (VolumeError, OSError, subprocess.SubprocessError) as e:
            raise VolumeFailure(str(e), actions=volume.actions) from e
        result = dict(changed=bool(volume.actions), device=device, actions=volume.actions)
        if module._diff and volume.diff["before"] != volume.diff["after"]:
            result["diff"] = volume.diff
        return result

    workers = module.params["workers"]
    run_batch(module, PER_TENANT, converge_one, (VolumeError, VolumeFailure), workers=workers)


if __name__ == "__main__":
    main()

# Copyright: ShadowDB contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Rules every tenant volume backend shares (loop, lvm, device: library/shadowdb_volume.py; a VM's
virtual disk: library/shadowdb_vm_disk.py): what a probed filesystem must be before a volume is
used or deleted, and that a volume never shrinks (modules import it as
``ansible.module_utils.shadowdb_volume_rules``). Standard library only."""

MIB = 1048576


def parse_blkid_export(text):
    """KEY=value lines of `blkid -o export` as a dict."""
    found = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            found[key.strip()] = value.strip()
    return found


def foreign_filesystem(found, name):
    """Why a probed volume is not the tenant's (None when it is empty or the tenant's ext4)."""
    fstype = found.get("TYPE", "")
    if not fstype:
        return None
    if fstype == "ext4" and found.get("LABEL", "") == name:
        return None
    return f"a {fstype} filesystem labelled '{found.get('LABEL', '')}', which is not tenant {name}"


def shrink_refusal(name, current_bytes, wanted_mb, what="volume"):
    """The error for a volume (or disk) asked to be smaller than it is (None when it is not)."""
    if current_bytes <= wanted_mb * MIB:
        return None
    sizes = f"{what} is {current_bytes // MIB} MiB, asked for {wanted_mb} MiB"
    return f"tenant {name}: {sizes}: shrinking is refused"

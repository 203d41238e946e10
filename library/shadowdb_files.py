#!/usr/bin/python
# Copyright: ShadowDB contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Ansible module: several directories and files (content rendered on the controller) in ONE call."""

import grp
import os
import pwd
import stat

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.shadowdb_common import read_text, write_atomic

DOCUMENTATION = r"""
---
module: shadowdb_files
short_description: Directories and small text files of one component, in one module call
description:
  - Makes every directory of O(directories), then writes every file of O(files), in that order,
    with the given owner, group and mode. Content is given in full (render it on the controller with
    C(lookup('ansible.builtin.template', ...))).
  - The point is speed - a C(ansible.builtin.template) task costs two or three round trips to the
    host, this module one for any number of files. ShadowDB uses it where one tenant needs several
    small files (configuration files, unit drop-ins).
  - A file whose content differs is replaced atomically (a temporary file in the same directory,
    owner and mode set, fsync, rename, fsync of the directory), so a reader sees the old file or the
    new one, never a part. Owner, group and mode alone are corrected in place.
  - Directories are created with their parents (parents get the same owner and mode); an existing
    directory gets its owner, group and mode corrected.
  - Supports check mode and diff mode (one diff per changed file).
options:
  directories:
    description: Directories to make before the files are written.
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: Absolute path.
        type: path
        required: true
      owner:
        description: Owner (user name). The module's user when omitted.
        type: str
      group:
        description: Group (name). The owner's primary group when omitted.
        type: str
      mode:
        description: Octal mode as a string, for example V('0700').
        type: str
        default: '0755'
  files:
    description: Files to write, in order.
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: Absolute path. Its directory must exist (or be in O(directories)).
        type: path
        required: true
      content:
        description: Full text of the file (UTF-8).
        type: str
        required: true
      owner:
        description: Owner (user name). The module's user when omitted.
        type: str
      group:
        description: Group (name). The owner's primary group when omitted.
        type: str
      mode:
        description: Octal mode as a string, for example V('0600').
        type: str
        default: '0644'
      force:
        description:
          - V(false) writes the file only if it does not exist yet (for example generated secrets); owner,
            group and mode are still corrected.
        type: bool
        default: true
author:
  - ShadowDB contributors
"""

EXAMPLES = r"""
- name: Configuration files of the tenant
  shadowdb_files:
    directories:
      - {path: /etc/systemd/system/shadowdb-postgres@acme.service.d, mode: '0755'}
    files:
      - path: /mnt/db/acme/data/postgresql.conf
        content: "{{ lookup('ansible.builtin.template', 'postgresql.conf.j2') }}"
        owner: sdb-acme
        group: sdb-acme
        mode: '0600'
      - path: /etc/systemd/system/shadowdb-postgres@acme.service.d/50-tenant.conf
        content: "{{ lookup('ansible.builtin.template', 'tenant.conf.j2') }}"
  register: acme_files

- name: Reload when postgresql.conf changed
  ansible.builtin.systemd_service:
    name: shadowdb-postgres@acme.service
    state: reloaded
  when: "'/mnt/db/acme/data/postgresql.conf' in acme_files.changed_paths"
"""

RETURN = r"""
changed_paths:
  description: Paths (directories and files) that were, or in check mode would be, created or changed.
  returned: always
  type: list
  elements: str
  sample: [/mnt/db/acme/data/postgresql.conf]
content_changed:
  description: Files whose content was, or in check mode would be, written (a subset of RV(changed_paths)).
  returned: always
  type: list
  elements: str
  sample: [/mnt/db/acme/data/postgresql.conf]
"""


def resolve_ids(owner, group):
    """(uid, gid) for names; -1 keeps the current process's (a new file) or the file's (os.chown)."""
    uid = gid = -1
    if owner:
        try:
            entry = pwd.getpwnam(owner)
        except KeyError:
            raise ValueError(f"unknown user '{owner}'") from None
        uid, gid = entry.pw_uid, entry.pw_gid
    if group:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise ValueError(f"unknown group '{group}'") from None
    return uid, gid


def parse_mode(text):
    try:
        mode = int(str(text), 8)
    except ValueError:
        raise ValueError(f"mode '{text}' is not an octal number") from None
    if not 0 <= mode <= 0o7777:
        raise ValueError(f"mode '{text}' is out of range")
    return mode


def wanted_attributes(entry):
    uid, gid = resolve_ids(entry.get("owner"), entry.get("group"))
    return parse_mode(entry.get("mode")), uid, gid


def attributes_differ(st, mode, uid, gid):
    return (
        stat.S_IMODE(st.st_mode) != mode
        or (uid != -1 and st.st_uid != uid)
        or (gid != -1 and st.st_gid != gid)
    )


def fix_attributes(path, mode, uid, gid):
    os.chown(path, uid, gid, follow_symlinks=False)
    os.chmod(path, mode)


def converge_directory(entry, attributes, check_mode):
    """True if the directory was (or would be) created or corrected."""
    path = entry["path"]
    mode, uid, gid = attributes
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if not check_mode:
            missing = []
            current = path
            while current and not os.path.exists(current):
                missing.append(current)
                current = os.path.dirname(current)
            for directory in reversed(missing):
                os.mkdir(directory, mode)
                fix_attributes(directory, mode, uid, gid)
        return True
    if not stat.S_ISDIR(st.st_mode):
        raise ValueError(f"{path} exists and is not a directory")
    if attributes_differ(st, mode, uid, gid):
        if not check_mode:
            fix_attributes(path, mode, uid, gid)
        return True
    return False


def current_text(path):
    """Text of path, None if missing, "" if it is not UTF-8 text (then it is always rewritten)."""
    try:
        return read_text(path)
    except UnicodeDecodeError:
        return ""


def converge_file(entry, attributes, check_mode):
    """(attributes or content changed, content changed, before) of one file."""
    path, content = entry["path"], entry["content"]
    mode, uid, gid = attributes
    directory = os.path.dirname(path)
    if not os.path.isdir(directory) and not check_mode:
        raise ValueError(f"directory {directory} of {path} does not exist")
    if os.path.isdir(path):
        raise ValueError(f"{path} is a directory")
    before = current_text(path)
    write = before is None or (entry["force"] and before != content)
    if write:
        if not check_mode:
            write_atomic(path, content, mode, uid, gid)
        return True, True, before
    if attributes_differ(os.stat(path), mode, uid, gid):
        if not check_mode:
            fix_attributes(path, mode, uid, gid)
        return True, False, before
    return False, False, before


def main():
    entry_attributes = dict(
        path=dict(type="path", required=True),
        owner=dict(type="str"),
        group=dict(type="str"),
    )
    module = AnsibleModule(
        argument_spec=dict(
            directories=dict(
                type="list",
                elements="dict",
                default=[],
                options=dict(entry_attributes, mode=dict(type="str", default="0755")),
            ),
            files=dict(
                type="list",
                elements="dict",
                default=[],
                options=dict(
                    entry_attributes,
                    content=dict(type="str", required=True),
                    mode=dict(type="str", default="0644"),
                    force=dict(type="bool", default=True),
                ),
            ),
        ),
        supports_check_mode=True,
    )
    changed_paths, content_changed, diffs = [], [], []
    # Every entry is checked (and its mode, owner and group resolved) before anything is
    # written: bad input changes nothing.
    attributes = {}
    for kind in ("directories", "files"):
        attributes[kind] = []
        for entry in module.params[kind]:
            if not os.path.isabs(entry["path"]):
                module.fail_json(msg=f"shadowdb_files: path '{entry['path']}' is not absolute")
            try:
                attributes[kind].append(wanted_attributes(entry))
            except ValueError as exc:
                module.fail_json(msg=f"shadowdb_files: {entry['path']}: {exc}")
    try:
        for entry, wanted in zip(module.params["directories"], attributes["directories"], strict=True):
            if converge_directory(entry, wanted, module.check_mode):
                changed_paths.append(entry["path"])
        for entry, wanted in zip(module.params["files"], attributes["files"], strict=True):
            changed, written, before = converge_file(entry, wanted, module.check_mode)
            if changed:
                changed_paths.append(entry["path"])
            if written:
                content_changed.append(entry["path"])
                diffs.append(
                    dict(
                        before_header=entry["path"],
                        after_header=entry["path"],
                        before=before or "",
                        after=entry["content"],
                    )
                )
    except (OSError, ValueError) as exc:
        module.fail_json(
            msg=f"shadowdb_files: {exc}", changed_paths=changed_paths, content_changed=content_changed
        )
    result = dict(changed=bool(changed_paths), changed_paths=changed_paths, content_changed=content_changed)
    if module._diff:
        result["diff"] = diffs
    module.exit_json(**result)


if __name__ == "__main__":
    main()

#!/usr/bin/python
# Copyright: ShadowDB contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Ansible module: several directories and files (content rendered on the controller) in ONE call."""

import grp
import os
import pwd
import stat

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.shadowdb_common import (
    UnsafePathError,
    open_safe_dir,
    safe_read_bytes,
    safe_write_atomic,
    split_path,
)

READ_LIMIT = 4096

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
  - Paths are walked from C(/) one directory at a time, each step relative to the directory opened
    before it. A symbolic link is followed only while every directory above it belongs to root (or the
    module's user) and is writable by nobody else; below a directory another user owns (a tenant's
    C(/mnt/db/<tenant>)) a symbolic link, a hard-linked file or a special file (FIFO, device) is
    refused and nothing is written, so root never writes, chmods, chowns or reads through a path the
    tenant planted. Owner and mode are set on open descriptors, never by name.
  - Error messages name the path and the reason, never a file's content.
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
  read:
    description:
      - Small files to read (first 4096 bytes, UTF-8) under the same rules, returned in RV(contents).
        A task that reads a file another user controls should be C(no_log) and check the value itself.
    type: list
    elements: path
    default: []
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
contents:
  description: Text of each file of O(read) (at most 4096 bytes), null when the file does not exist.
  returned: always
  type: dict
  sample: {/mnt/db/acme/data/PG_VERSION: "17\n"}
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


def fix_attributes(fd, mode, uid, gid):
    """Owner and mode through the open descriptor: the name may have been swapped since."""
    os.fchown(fd, uid, gid)
    os.fchmod(fd, mode)


def converge_directory(entry, attributes, check_mode):
    """True if the directory was (or would be) created or corrected.

    The path is walked from "/" one directory at a time (see shadowdb_common.SafeDir): a symbolic
    link planted in a directory another user owns (a tenant's volume) is refused, not followed.
    """
    path = entry["path"]
    mode, uid, gid = attributes
    parts = split_path(path)
    current = open_safe_dir("/")
    try:
        created = False
        for part in parts:
            if current.lstat(part) is None:
                if check_mode:
                    return True
                os.mkdir(part, mode, dir_fd=current.fd)
                created = True
            nxt = current.open_dir(part)
            current.close()
            current = nxt
            if created:
                fix_attributes(current.fd, mode, uid, gid)
        if created:
            return True
        if attributes_differ(os.fstat(current.fd), mode, uid, gid):
            if not check_mode:
                fix_attributes(current.fd, mode, uid, gid)
            return True
        return False
    finally:
        current.close()


def read_current(parent, name):
    """(fd or None, text or None) of name in parent; text "" when not UTF-8 (then it is rewritten)."""
    try:
        fd = parent.open_file(name)
    except FileNotFoundError:
        return None, None
    try:
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read()
    except BaseException:
        os.close(fd)
        raise
    try:
        return fd, data.decode("utf-8")
    except UnicodeDecodeError:
        return fd, ""


def converge_file(entry, attributes, check_mode):
    """(attributes or content changed, content changed, before) of one file."""
    path, content = entry["path"], entry["content"]
    mode, uid, gid = attributes
    directory, name = os.path.split(os.path.normpath(path))
    try:
        parent = open_safe_dir(directory)
    except FileNotFoundError:
        if check_mode:
            return True, True, None
        raise ValueError(f"directory {directory} of {path} does not exist") from None
    with parent:
        st = parent.lstat(name)
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise ValueError(f"{path} is a directory")
        fd, before = read_current(parent, name)
        try:
            write = before is None or (entry["force"] and before != content)
            if write:
                if not check_mode:
                    safe_write_atomic(parent, name, content, mode, uid, gid)
                return True, True, before
            if attributes_differ(os.fstat(fd), mode, uid, gid):
                if not check_mode:
                    fix_attributes(fd, mode, uid, gid)
                return True, False, before
            return False, False, before
        finally:
            if fd is not None:
                os.close(fd)


def read_small(path):
    """Text of a small file (at most READ_LIMIT bytes, UTF-8 or replaced), None when missing."""
    data = safe_read_bytes(path, READ_LIMIT)
    return None if data is None else data.decode("utf-8", errors="replace")


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
            read=dict(type="list", elements="path", default=[]),
        ),
        supports_check_mode=True,
    )
    changed_paths, content_changed, diffs, contents = [], [], [], {}
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
    for path in module.params["read"]:
        if not os.path.isabs(path):
            module.fail_json(msg=f"shadowdb_files: read: path '{path}' is not absolute")
    try:
        for path in module.params["read"]:
            contents[path] = read_small(path)
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
    except UnsafePathError as exc:
        module.fail_json(
            msg=f"shadowdb_files: {exc}", changed_paths=changed_paths, content_changed=content_changed
        )
    except (OSError, ValueError) as exc:
        # str() of an OSError names the error and the path, never a file's content.
        module.fail_json(
            msg=f"shadowdb_files: {exc}", changed_paths=changed_paths, content_changed=content_changed
        )
    result = dict(
        changed=bool(changed_paths),
        changed_paths=changed_paths,
        content_changed=content_changed,
        contents=contents,
    )
    if module._diff:
        result["diff"] = diffs
    module.exit_json(**result)


if __name__ == "__main__":
    main()

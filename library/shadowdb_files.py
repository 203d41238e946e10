#!/usr/bin/python
# Copyright: ShadowDB contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Ansible module: several directories and files (content rendered on the controller) in ONE call."""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.shadowdb_common import UnsafePathError
from ansible.module_utils.shadowdb_fs import (  # noqa: F401 (the tests import them from here)
    READ_LIMIT,
    attributes_differ,
    converge_directory,
    converge_file,
    fix_attributes,
    parse_mode,
    read_current,
    read_small,
    remove_file,
    resolve_ids,
    wanted_attributes,
)

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
  absent:
    description:
      - Files to remove after the writes, under the same rules - a symbolic link is removed itself, never
        what it points to, and no planted link above it is followed. A directory is refused; a missing
        file is no change.
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
            absent=dict(type="list", elements="path", default=[]),
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
    for option in ("read", "absent"):
        for path in module.params[option]:
            if not os.path.isabs(path):
                module.fail_json(msg=f"shadowdb_files: {option}: path '{path}' is not absolute")
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
        for path in module.params["absent"]:
            if remove_file(path, module.check_mode):
                changed_paths.append(path)
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

#!/usr/bin/python
# Copyright: ShadowDB contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Ansible module: a tenant's view of /etc/passwd and /etc/group, without the other tenants."""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.shadowdb_common import UnsafePathError
from ansible.module_utils.shadowdb_identity import converge_identity_view

DOCUMENTATION = r"""
---
module: shadowdb_identity_view
short_description: Write a tenant's view of /etc/passwd and /etc/group, without the other tenants
description:
  - Every tenant has a system user and group named after it, so the host's C(/etc/passwd) and
    C(/etc/group) list every tenant of the host. This writes copies without the other tenants'
    users and groups (those whose comment starts with C(ShadowDB tenant )) into O(dest) as
    C(passwd) and C(group) (root's, mode 0644); the tenant's unit bind-mounts them over
    C(/etc/passwd) and C(/etc/group) in its sandbox.
  - Standalone tenants get theirs from shadowdb_cluster_prepare; this module is for Patroni members.
  - A new tenant on the host does not change another's view; a new system user does (the sandbox
    sees it after the unit's next start).
options:
  os_user:
    description: The tenant's system user (kept in its view).
    type: str
    required: true
  dest:
    description: Existing root-only directory of the tenant's files (C(/etc/shadowdb/tenants/<tenant>)).
    type: path
    required: true
author: ShadowDB contributors
"""

EXAMPLES = r"""
- name: The member's view of the host's users
  shadowdb_identity_view:
    os_user: pg-acme
    dest: /etc/shadowdb/tenants/acme
"""

RETURN = r"""
changed:
  description: Whether a view was written or its owner or mode corrected.
  returned: always
  type: bool
"""


def main():
    module = AnsibleModule(
        argument_spec=dict(os_user=dict(type="str", required=True), dest=dict(type="path", required=True)),
        supports_check_mode=True,
    )
    try:
        changed = converge_identity_view(module.params["dest"], module.params["os_user"], module.check_mode)
    except (OSError, UnsafePathError, ValueError) as e:
        module.fail_json(msg=f"dest: cannot write the views in {module.params['dest']}: {e}")
    module.exit_json(changed=changed)


if __name__ == "__main__":
    main()

#!/usr/bin/python
# Copyright: ShadowDB contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Ansible module: a tenant's view of /etc/passwd and /etc/group, without the other tenants,
and its egress allowances in the host's tenant firewall."""

import socket

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.shadowdb_common import UnsafePathError
from ansible.module_utils.shadowdb_firewall import converge_firewall, egress_file_entry
from ansible.module_utils.shadowdb_fs import converge_file, wanted_attributes
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
  - Then converges the host's tenant egress firewall (module_utils/shadowdb_firewall.py): the
    tenant's processes may open connections only to O(egress) (Patroni: its members, etcd).
options:
  os_user:
    description: The tenant's system user (kept in its view).
    type: str
    required: true
  dest:
    description: Existing root-only directory of the tenant's files (C(/etc/shadowdb/tenants/<tenant>)).
    type: path
    required: true
  egress:
    description:
      - Where the tenant's processes may connect, written to O(dest)/egress.json; nowhere else.
      - Each item has C(addresses) (IPv4 addresses or host names, resolved here) and C(ports)
        (C("port") or C("first-last")).
    type: list
    elements: dict
    default: []
author: ShadowDB contributors
"""

EXAMPLES = r"""
- name: The member's view of the host's users
  shadowdb_identity_view:
    os_user: pg-acme
    dest: /etc/shadowdb/tenants/acme
    egress:
      - {addresses: [10.0.0.11, 10.0.0.12], ports: ["16000-17999", "18000-19999"]}
      - {addresses: [10.0.0.5], ports: ["2379"]}
"""

RETURN = r"""
changed:
  description: Whether a view or the allowances were written, or the firewall loaded.
  returned: always
  type: bool
"""


def resolved(allowance):
    """The allowance with its host names resolved to IPv4 addresses (nftables matches addresses)."""
    addresses = []
    for address in allowance.get("addresses") or []:
        try:
            addresses.append(socket.gethostbyname(str(address)))
        except OSError as e:
            raise ValueError(f"egress: cannot resolve {address!r}: {e}") from None
    return dict(allowance, addresses=addresses)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            os_user=dict(type="str", required=True),
            dest=dict(type="path", required=True),
            egress=dict(type="list", elements="dict", default=[]),
        ),
        supports_check_mode=True,
    )
    p = module.params
    try:
        changed = converge_identity_view(p["dest"], p["os_user"], module.check_mode)
    except (OSError, UnsafePathError, ValueError) as e:
        module.fail_json(msg=f"dest: cannot write the views in {p['dest']}: {e}")
    try:
        entry = egress_file_entry(p["dest"], [resolved(a) for a in p["egress"]])
        changed |= converge_file(entry, wanted_attributes(entry), module.check_mode)[0]
        changed |= converge_firewall(module, module.check_mode)
    except (OSError, UnsafePathError, ValueError) as e:
        module.fail_json(msg=f"egress: {e}")
    module.exit_json(changed=changed)


if __name__ == "__main__":
    main()

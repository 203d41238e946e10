#!/usr/bin/python
# Copyright: ShadowDB contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Ansible module: converge the host's tenant egress firewall (after a tenant's user is removed)."""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.shadowdb_common import UnsafePathError
from ansible.module_utils.shadowdb_firewall import converge_firewall

DOCUMENTATION = r"""
---
module: shadowdb_firewall
short_description: Converge the host's tenant egress firewall
description:
  - Renders C(/etc/shadowdb/firewall/tenant-egress.nft) from the host's tenant users (their
    comment starts with C(ShadowDB tenant )) and their allowances (C(/etc/shadowdb/tenants/<t>/egress.json)),
    and loads it with C(nft -f) when it changed or is not loaded (module_utils/shadowdb_firewall.py).
  - The tenant modules do this when they add a tenant (shadowdb_cluster_prepare,
    shadowdb_identity_view); this is for removals, so that a removed tenant's uid, which the next
    system user may get, leaves the ruleset.
options: {}
author: ShadowDB contributors
"""

EXAMPLES = r"""
- name: The tenant egress firewall without the removed tenant
  shadowdb_firewall:
"""

RETURN = r"""
changed:
  description: Whether the ruleset was written or loaded.
  returned: always
  type: bool
"""


def main():
    module = AnsibleModule(argument_spec={}, supports_check_mode=True)
    try:
        changed = converge_firewall(module, module.check_mode)
    except (OSError, UnsafePathError, ValueError) as e:
        module.fail_json(msg=f"tenant egress firewall: {e}")
    module.exit_json(changed=changed)


if __name__ == "__main__":
    main()

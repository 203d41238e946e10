#!/usr/bin/python
# Copyright: ShadowDB contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Ansible module: a Patroni member's TLS keys and signing requests, made on the host in the
tenant's directory without following anything the tenant planted there."""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.shadowdb_common import UnsafePathError
from ansible.module_utils.shadowdb_fs import converge_file, read_small, wanted_attributes
from ansible.module_utils.shadowdb_tls import new_key, signing_request

DOCUMENTATION = r"""
---
module: shadowdb_member_tls
short_description: A Patroni member's TLS keys made on the host and their signing requests
description:
  - For each name of O(keys), makes the private key C(<tls_dir>/<name>.key) (EC P-256, owned by
    O(owner), mode 0600) when there is none, and returns a certificate signing request for it and
    the certificate C(<tls_dir>/<name>.crt) found there (the controller's CA signs only the
    request's public key; names and usages are the controller's). The keys never leave the host.
  - O(tls_dir) belongs to the tenant, who may be superuser of its own cluster and so act as its OS
    user. Every path is walked without following a link the tenant could plant (a symbolic link,
    a hard-linked file or a special file below a directory the tenant owns is refused, naming the
    path), so root never reads or writes through one.
  - With O(root_copy_dir) (a root-only directory), the keys are also kept there, owned by root, for
    root's own TLS clients (the playbooks calling the member's REST API), which then never read the
    tenant's copies.
  - In check mode a key still to be made is reported, not made, and its request is null.
options:
  tls_dir:
    description: The tenant's TLS directory (C(/mnt/db/<tenant>/tls)); it must exist.
    type: path
    required: true
  owner:
    description: The tenant's OS user, owner of its keys.
    type: str
    required: true
  keys:
    description: Names of the keys (C(server), C(etcd)).
    type: list
    elements: str
    required: true
  root_copy_dir:
    description: Root-only directory that gets a root-owned copy of each key.
    type: path
author: ShadowDB contributors
"""

EXAMPLES = r"""
- name: Keys made on the host and their signing requests
  shadowdb_member_tls:
    tls_dir: /mnt/db/acme/tls
    owner: pg-acme
    keys: [server, etcd]
    root_copy_dir: /etc/shadowdb/tenants/acme/tls
  register: requests
"""

RETURN = r"""
requests:
  description:
    - Per key name, C(csr) (PEM; null in check mode for a key still to be made) and C(existing)
      (the certificate there, or null).
  returned: always
  type: dict
made:
  description: The keys made by this call.
  returned: always
  type: list
  elements: str
"""


def runner(module, name):
    """The command runner of module_utils/shadowdb_tls for the key ``name``."""

    def run(argv, data=None):
        rc, out, err = module.run_command(argv, data=data, binary_data=True)
        if rc != 0:
            raise ValueError(f"openssl {argv[1]} failed for the {name} key (rc {rc}): {err.strip()}")
        return out

    return run


def converge(module, p):
    """(requests, made, changed) for the keys of p."""
    requests, made, changed = {}, [], False
    for name in p["keys"]:
        key_path = f"{p['tls_dir']}/{name}.key"
        key = read_small(key_path)
        if not key:
            made.append(name)
            changed = True
            if module.check_mode:
                requests[name] = {"csr": None, "existing": None}
                continue
            key = new_key(runner(module, name))
            write_key(key_path, key, p["owner"], False)
        else:
            # A key kept from an earlier OS user of the same name (another uid), or whose mode
            # was changed, is given back to the tenant's user: Patroni must read it, nobody else.
            changed = write_key(key_path, key, p["owner"], module.check_mode) or changed
        if p["root_copy_dir"]:
            changed = write_key(f"{p['root_copy_dir']}/{name}.key", key, "root", module.check_mode) or changed
        existing = read_small(f"{p['tls_dir']}/{name}.crt")
        requests[name] = {"csr": signing_request(runner(module, name), key, name), "existing": existing}
    return requests, made, changed


def write_key(path, key, owner, check_mode):
    """Whether the key file at path was (or would be) written or corrected."""
    entry = dict(path=path, content=key, owner=owner, group=owner, mode="0600", force=True)
    changed, _written, _before = converge_file(entry, wanted_attributes(entry), check_mode)
    return changed


def main():
    module = AnsibleModule(
        argument_spec=dict(
            tls_dir=dict(type="path", required=True),
            owner=dict(type="str", required=True),
            keys=dict(type="list", elements="str", required=True, no_log=False),
            root_copy_dir=dict(type="path"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    for name in p["keys"]:
        if not name.isalnum():
            module.fail_json(msg=f"keys: {name!r} is not a key name (letters and digits)")
    try:
        requests, made, changed = converge(module, p)
    except (UnsafePathError, ValueError, FileNotFoundError) as e:
        module.fail_json(msg=f"tls_dir {p['tls_dir']}: {e}")
    module.exit_json(changed=changed, requests=requests, made=made)


if __name__ == "__main__":
    main()

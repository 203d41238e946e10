#!/usr/bin/python
# Copyright: ShadowDB contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""A tenant's side of its backups on its db host, in one call per step for a batch of tenants."""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.shadowdb_batch import TenantFailure, batch_argument_spec, run_batch, tenant_params
from ansible.module_utils.shadowdb_common import ENABLE_ON_DISK, UnsafePathError
from ansible.module_utils.shadowdb_fs import converge_directory, converge_file, read_small, wanted_attributes
from ansible.module_utils.shadowdb_tls import new_key, signing_request

DOCUMENTATION = r"""
---
module: shadowdb_backup_agent
short_description: A tenant's backup identity, pgBackRest configuration and backup agent on its db host
description:
  - "The db host's part of a tenant's backups (shadowdb/backup.py), in two steps around the
    controller's CA: V(prepare) makes the tenant's backup directories on its volume, its backup
    key C(<tls_dir>/backup.key) (EC P-256, made on the host, never leaving it) and returns a signing
    request and the certificate there; V(present) writes the signed certificate, the deployment CA
    and the tenant's pgBackRest configuration, then enables and starts the tenant's backup agent
    (C(shadowdb-backup-agent@<tenant>.service), pgBackRest's TLS server running as the tenant's
    user), restarting it when one of its files changed. V(absent) stops and disables the agent
    (its files go with the tenant's volume)."
  - The tenant owns its volume and may act as its OS user (it may be superuser of its cluster).
    Every path is walked from C(/) without following a link the tenant could plant (a symbolic
    link, a hard link or a special file below a directory it owns is refused, naming the path), so
    root never reads or writes through one.
  - "Batch form: O(tenants) lists the per-tenant options; a tenant's failure is its own
    (RV(results), RV(failed_tenants))."
options:
  state:
    description: The step.
    type: str
    choices: [prepare, present, absent]
    required: true
  name:
    description: Tenant name.
    type: str
    required: true
  os_user:
    description: The tenant's OS user (owner of its backup files).
    type: str
  backup_dir:
    description: The tenant's backup directory on its volume (C(/mnt/db/<tenant>/backup)).
    type: path
  tls_dir:
    description: The tenant's TLS directory (C(/mnt/db/<tenant>/tls)); it must exist.
    type: path
  certificate:
    description: V(present) - the signed certificate (PEM).
    type: str
  ca:
    description: V(present) - the deployment CA certificate (PEM).
    type: str
  config:
    description: V(present) - the tenant's pgBackRest configuration (text).
    type: str
  daemon_reload:
    description: V(present) - have systemd read its units first (the agent's template changed).
    type: bool
    default: false
  tenants:
    description: The batch form - one item per tenant with the options above (but O(state), O(daemon_reload)).
    type: list
    elements: dict
author:
  - ShadowDB contributors
"""

EXAMPLES = r"""
- name: Backup keys and signing requests
  shadowdb_backup_agent:
    state: prepare
    tenants:
      - {name: acme, os_user: pg-acme, backup_dir: /mnt/db/acme/backup, tls_dir: /mnt/db/acme/tls}
  register: prepared
"""

RETURN = r"""
results:
  description:
    - Per tenant - V(failed), V(msg), V(changed), V(actions); with V(prepare) also V(csr) (PEM, null
      in check mode for a key still to be made) and V(existing) (the certificate there, or null).
  returned: batch form
  type: dict
failed_tenants:
  description: Batch form - why each failed tenant failed.
  returned: batch form
  type: dict
"""

AGENT_UNIT = "shadowdb-backup-agent@{}.service"


class Agent:
    def __init__(self, module, params):
        self.module, self.p, self.check = module, params, module.check_mode
        self.actions = []
        self.unit = AGENT_UNIT.format(params["name"])

    def fail(self, what):
        raise TenantFailure(f"tenant {self.p['name']}: {what}", actions=self.actions)

    def run(self, argv, data=None, check_rc=True):
        rc, out, err = self.module.run_command(argv, data=data, binary_data=True)
        if check_rc and rc != 0:
            self.fail(f"{' '.join(argv[:3])} failed (rc {rc}): {(err or out).strip()[-300:]}")
        return rc, out

    def require(self, *keys):
        missing = [k for k in keys if not self.p.get(k)]
        if missing:
            self.fail(f"state {self.p['state']} needs {', '.join(missing)}")

    def directories(self):
        user = self.p["os_user"]
        backup_dir = self.p["backup_dir"]
        for path in (backup_dir, f"{backup_dir}/conf.d"):
            entry = dict(path=path, owner=user, group=user, mode="0700")
            if converge_directory(entry, wanted_attributes(entry), self.check):
                self.actions.append(f"made {path}")

    def write(self, path, content, mode="0600"):
        entry = dict(
            path=path,
            content=content,
            owner=self.p["os_user"],
            group=self.p["os_user"],
            mode=mode,
            force=True,
        )
        changed, written, _before = converge_file(entry, wanted_attributes(entry), self.check)
        if changed:
            self.actions.append(f"wrote {path}" if written else f"corrected owner or mode of {path}")
        return changed

    def prepare(self):
        self.require("os_user", "backup_dir", "tls_dir")
        self.directories()
        key_path = f"{self.p['tls_dir']}/backup.key"
        key = read_small(key_path)
        if not key:
            self.actions.append(f"made {key_path}")
            if self.check:
                return dict(csr=None, existing=None)
            key = new_key(lambda argv, data=None: self.run(argv, data)[1])
            self.write(key_path, key)
        csr = signing_request(lambda argv, data=None: self.run(argv, data)[1], key, self.p["name"])
        return dict(csr=csr, existing=read_small(f"{self.p['tls_dir']}/backup.crt"))

    def present(self):
        self.require("os_user", "backup_dir", "tls_dir", "certificate", "ca", "config")
        self.directories()
        changed = self.write(f"{self.p['tls_dir']}/backup.crt", self.p["certificate"], "0644")
        changed |= self.write(f"{self.p['backup_dir']}/ca.crt", self.p["ca"], "0644")
        changed |= self.write(f"{self.p['backup_dir']}/pgbackrest.conf", self.p["config"])
        enabled = self.run(["systemctl", "is-enabled", "--quiet", self.unit], check_rc=False)[0] == 0
        active = self.run(["systemctl", "is-active", "--quiet", self.unit], check_rc=False)[0] == 0
        if not enabled:
            self.actions.append(f"enabled {self.unit}")
            if not self.check:
                self.run([*ENABLE_ON_DISK, self.unit])
        if not active or changed:
            self.actions.append(f"{'restarted' if active else 'started'} {self.unit}")
            if not self.check:
                self.run(["systemctl", "restart", self.unit])
        return {}

    def absent(self):
        enabled = self.run(["systemctl", "is-enabled", "--quiet", self.unit], check_rc=False)[0] == 0
        active = self.run(["systemctl", "is-active", "--quiet", self.unit], check_rc=False)[0] == 0
        if enabled or active:
            self.actions.append(f"stopped and disabled {self.unit}")
            if not self.check:
                self.run(["systemctl", "disable", "--now", "--no-reload", self.unit])
        return {}

    def converge(self):
        result = getattr(self, self.p["state"])()
        return dict(result, changed=bool(self.actions), actions=self.actions)


PER_TENANT = dict(
    name=dict(type="str", required=True),
    os_user=dict(type="str"),
    backup_dir=dict(type="path"),
    tls_dir=dict(type="path"),
    certificate=dict(type="str"),
    ca=dict(type="str"),
    config=dict(type="str"),
)
SHARED = dict(
    state=dict(type="str", choices=["prepare", "present", "absent"], required=True),
    daemon_reload=dict(type="bool", default=False),
)


def main():
    module = AnsibleModule(argument_spec=batch_argument_spec(PER_TENANT, SHARED), supports_check_mode=True)
    items = tenant_params(module, PER_TENANT)

    def converge_one(params):
        agent = Agent(module, params)
        try:
            return agent.converge()
        except (UnsafePathError, OSError, ValueError) as e:
            raise TenantFailure(f"tenant {params['name']}: {e}", actions=agent.actions) from e

    if module.params["daemon_reload"] and module.params["state"] == "present" and not module.check_mode:
        rc, _out, err = module.run_command(["systemctl", "daemon-reload"])
        if rc != 0:
            module.fail_json(msg=f"systemctl daemon-reload failed: {err.strip()}")
    run_batch(module, PER_TENANT, converge_one, (TenantFailure,), items=items)


if __name__ == "__main__":
    main()

#!/usr/bin/python
# Copyright: ShadowDB contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Tenants' stanzas on the backup repository host, in one call for a batch of tenants."""

import os
import re
import shutil

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.shadowdb_batch import TenantFailure, batch_argument_spec, run_batch, tenant_params
from ansible.module_utils.shadowdb_common import ENABLE_ON_DISK
from ansible.module_utils.shadowdb_fs import converge_file, remove_file, wanted_attributes

DOCUMENTATION = r"""
---
module: shadowdb_backup_stanza
short_description: Tenants' stanzas, authorizations and backup timers on the repository host
description:
  - "V(present): writes C(<conf_d>/<tenant>.conf) (the tenant's stanza - how the repository reaches
    the tenant's backup agent - and the one C(tls-server-auth) line that authorizes the tenant's
    identity for its own stanza), has the repository's TLS server read its configuration again
    (once per call, when a file changed), creates the stanza when the repository has none
    (C(pgbackrest stanza-create) as O(user)), enables and starts the tenant's full and
    differential backup timers, and starts a first full backup (not waited for) of a stanza it
    created. A removal marker left for the tenant (O(removed_dir)) goes: the tenant is back."
  - "V(absent): stops and disables the tenant's timers, removes its stanza file (the tenant's
    identity is no longer authorized) and either leaves a removal marker (the backups are deleted by
    the repository's purge timer after its retention) or, with O(purge), deletes the stanza's
    backups and archive now."
  - "Batch form: O(tenants); a tenant's failure is its own (RV(results), RV(failed_tenants))."
options:
  state:
    description: Whether the tenants' stanzas are present or removed.
    type: str
    choices: [present, absent]
    default: present
  name:
    description: Tenant (and stanza) name.
    type: str
    required: true
  config:
    description: V(present) - the text of C(<conf_d>/<tenant>.conf).
    type: str
  purge:
    description: V(absent) - delete the stanza's backups and archive now.
    type: bool
    default: false
  tenants:
    description: The batch form - one item per tenant with the options above (but the shared ones).
    type: list
    elements: dict
  conf_d:
    description: The repository's configuration include directory.
    type: path
    default: /etc/pgbackrest/conf.d
  config_file:
    description: The repository's main configuration file.
    type: path
    default: /etc/pgbackrest/pgbackrest.conf
  repo_path:
    description: The repository (pgBackRest repo1-path).
    type: path
    default: /var/lib/pgbackrest
  removed_dir:
    description: Where removal markers are kept.
    type: path
    default: /var/lib/shadowdb/backup-removed
  user:
    description: The repository's system user.
    type: str
    default: pgbackrest
  server_unit:
    description: The repository's TLS server unit.
    type: str
    default: shadowdb-backup-repository.service
  first_backup:
    description: Start a full backup of a stanza this call created (not waited for).
    type: bool
    default: true
author:
  - ShadowDB contributors
"""

EXAMPLES = r"""
- name: Stanzas of the batch
  shadowdb_backup_stanza:
    tenants:
      - {name: acme, config: "[global]\ntls-server-auth=acme.backup.db.example=acme\n[acme]\n..."}
  delegate_to: "{{ groups['backup'][0] }}"
"""

RETURN = r"""
results:
  description: Per tenant - V(failed), V(msg), V(changed), V(actions), V(created) (the stanza was made).
  returned: batch form
  type: dict
failed_tenants:
  description: Batch form - why each failed tenant failed.
  returned: batch form
  type: dict
"""

TENANT_NAME = re.compile(r"[a-z][a-z0-9-]{0,14}[a-z0-9]", re.ASCII)
TIMERS = ("shadowdb-backup-full@{}.timer", "shadowdb-backup-diff@{}.timer")


class Repository:
    """What one call does on the repository host; the server is reloaded once, after the files."""

    def __init__(self, module):
        self.module, self.check = module, module.check_mode
        self.p = module.params

    def run(self, argv, check_rc=True):
        rc, out, err = self.module.run_command(argv)
        if check_rc and rc != 0:
            raise ValueError(f"{' '.join(argv[:4])} failed (rc {rc}): {(err or out).strip()[-400:]}")
        return rc, out

    def pgbackrest(self, name, *command):
        argv = [
            "runuser",
            "-u",
            self.p["user"],
            "--",
            "pgbackrest",
            f"--config={self.p['config_file']}",
            f"--config-include-path={self.p['conf_d']}",
            f"--stanza={name}",
            "--log-level-console=warn",
        ]
        return self.run(argv + list(command))

    def systemctl(self, *args, check_rc=True):
        return self.run(["systemctl", *args], check_rc=check_rc)[0]

    def stanza_file(self, name):
        return os.path.join(self.p["conf_d"], f"{name}.conf")

    def has_stanza(self, name):
        return os.path.exists(os.path.join(self.p["repo_path"], "backup", name, "backup.info"))

    def write_files(self, items):
        """{tenant: actions} for the files of every tenant (the server reads them all at once)."""
        actions = {}
        for params in items:
            name, done = params["name"], []
            try:
                if params["state"] == "present":
                    entry = dict(
                        path=self.stanza_file(name),
                        content=params["config"],
                        owner="root",
                        group=self.p["user"],
                        mode="0640",
                        force=True,
                    )
                    if converge_file(entry, wanted_attributes(entry), self.check)[0]:
                        done.append(f"wrote {entry['path']}")
                    if remove_file(os.path.join(self.p["removed_dir"], name), self.check):
                        done.append("removed the tenant's removal marker")
                elif remove_file(self.stanza_file(name), self.check):
                    done.append(f"removed {self.stanza_file(name)}")
            except (OSError, ValueError) as e:
                done.append(f"failed: {e}")
            actions[name] = done
        return actions

    def present(self, name, done):
        created = False
        if not self.has_stanza(name):
            done.append(f"created stanza {name}")
            created = True
            if not self.check:
                self.pgbackrest(name, "stanza-create")
        for timer in TIMERS:
            unit = timer.format(name)
            if self.systemctl("is-enabled", "--quiet", unit, check_rc=False) or self.systemctl(
                "is-active", "--quiet", unit, check_rc=False
            ):
                done.append(f"enabled and started {unit}")
                if not self.check:
                    self.run([*ENABLE_ON_DISK, unit])
                    self.systemctl("start", unit)
        if created and self.p["first_backup"] and not self.check:
            self.systemctl("start", "--no-block", f"shadowdb-backup@{name}:full.service")
            done.append("started a first full backup")
        return created

    def absent(self, name, purge, done):
        for timer in TIMERS:
            unit = timer.format(name)
            if not self.systemctl("is-enabled", "--quiet", unit, check_rc=False):
                done.append(f"stopped and disabled {unit}")
                if not self.check:
                    self.systemctl("disable", "--now", "--no-reload", unit)
        stanza_dirs = [os.path.join(self.p["repo_path"], kind, name) for kind in ("archive", "backup")]
        if purge:
            for path in stanza_dirs:
                if os.path.isdir(path) and not os.path.islink(path):
                    done.append(f"deleted {path}")
                    if not self.check:
                        shutil.rmtree(path)
            if remove_file(os.path.join(self.p["removed_dir"], name), self.check):
                done.append("removed the tenant's removal marker")
        elif any(os.path.isdir(path) for path in stanza_dirs):
            entry = dict(
                path=os.path.join(self.p["removed_dir"], name),
                content="removed\n",
                owner="root",
                group="root",
                mode="0640",
                force=False,
            )
            if converge_file(entry, wanted_attributes(entry), self.check)[0]:
                done.append("left a removal marker (the backups are kept for the retention period)")


PER_TENANT = dict(
    name=dict(type="str", required=True),
    config=dict(type="str"),
    purge=dict(type="bool", default=False),
)
SHARED = dict(
    state=dict(type="str", choices=["present", "absent"], default="present"),
    conf_d=dict(type="path", default="/etc/pgbackrest/conf.d"),
    config_file=dict(type="path", default="/etc/pgbackrest/pgbackrest.conf"),
    repo_path=dict(type="path", default="/var/lib/pgbackrest"),
    removed_dir=dict(type="path", default="/var/lib/shadowdb/backup-removed"),
    user=dict(type="str", default="pgbackrest"),
    server_unit=dict(type="str", default="shadowdb-backup-repository.service"),
    first_backup=dict(type="bool", default=True),
)


def main():
    module = AnsibleModule(argument_spec=batch_argument_spec(PER_TENANT, SHARED), supports_check_mode=True)
    items = tenant_params(module, PER_TENANT)
    for params in items:
        if not TENANT_NAME.fullmatch(params["name"] or ""):
            module.fail_json(msg=f"name: {params['name']!r} is not a tenant name")
        if params["state"] == "present" and not params.get("config"):
            module.fail_json(msg=f"tenant {params['name']}: state present needs config")
    repository = Repository(module)
    written = repository.write_files(items)
    if any(a and not a[-1].startswith("failed") for a in written.values()) and not module.check_mode:
        # pgBackRest's server reads its configuration again on SIGHUP: the new authorizations.
        repository.systemctl("reload-or-restart", module.params["server_unit"])

    def converge_one(params):
        name, done = params["name"], list(written[params["name"]])
        if done and done[-1].startswith("failed"):
            raise TenantFailure(f"tenant {name}: {done[-1][len('failed: ') :]}", actions=done[:-1])
        try:
            created = False
            if params["state"] == "present":
                created = repository.present(name, done)
            else:
                repository.absent(name, params["purge"], done)
        except (OSError, ValueError) as e:
            raise TenantFailure(f"tenant {name}: {e}", actions=done) from e
        return dict(changed=bool(done), actions=done, created=created)

    run_batch(module, PER_TENANT, converge_one, (TenantFailure,), items=items)


if __name__ == "__main__":
    main()

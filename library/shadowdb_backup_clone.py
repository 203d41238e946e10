#!/usr/bin/python
# Copyright: ShadowDB contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""A new tenant's data restored from another tenant's backups (a clone), before its first start."""

import json
import os
import re
import shutil
import subprocess
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.shadowdb_batch import TenantFailure, batch_argument_spec, run_batch, tenant_params
from ansible.module_utils.shadowdb_common import UnsafePathError
from ansible.module_utils.shadowdb_fs import converge_directory, converge_file, read_small, wanted_attributes
from ansible.module_utils.shadowdb_sql import scram_verifier

DOCUMENTATION = r"""
---
module: shadowdb_backup_clone
short_description: Restore a new tenant's data directory from another tenant's backups (a clone)
description:
  - For a new tenant whose data directory is still empty (its cluster never initialised), and
    only then - a tenant with a C(PG_VERSION) is left alone, so a second run changes nothing.
    With O(source) the tenant's own name, a removed tenant is made again from its own backups
    (nothing to rename).
  - "As the new tenant's OS user (it runs nothing yet: its PostgreSQL has never started): writes a
    temporary pgBackRest configuration, certificate and CA in C(<backup_dir>/clone), restores the
    source's stanza into the data directory (to O(restore_type)/O(restore_target)), starts a
    temporary server on the tenant's socket only (no TCP, no archiving, local trust through a
    temporary pg_hba in the tenant's own 0700 directories), waits until it is out of recovery,
    renames the source's database and owner role (and read-only role) after the new tenant, gives
    the bootstrap superuser the new tenant's password (a SCRAM verifier, never the password),
    stops it and removes the temporary files. The tenant's own configuration, passwords and
    objects come next (shadowdb_cluster_apply), as for any new tenant."
  - The temporary identity (a certificate of the deployment CA for the new tenant's backup key,
    CN C(<tenant>.clone.<domain>)) must be authorized for the source's stanza on the repository
    for the call only; the caller removes the authorization afterwards.
  - "Batch form: O(tenants); a tenant's failure is its own."
options:
  name:
    description: The new tenant.
    type: str
    required: true
  source:
    description: The source tenant (its stanza, database and owner role).
    type: str
  os_user:
    description: The new tenant's OS user.
    type: str
  data_dir:
    description: The new tenant's (empty) data directory.
    type: path
  socket_dir:
    description: The new tenant's socket directory.
    type: path
  backup_dir:
    description: The new tenant's backup directory (the temporary files go in its C(clone)).
    type: path
  bin_dir:
    description: Directory of the PostgreSQL server programs.
    type: path
  certificate:
    description: The temporary identity's certificate (PEM), for the tenant's backup key.
    type: str
  key_path:
    description: The tenant's backup key.
    type: path
  ca:
    description: The deployment CA (PEM).
    type: str
  config:
    description: The temporary pgBackRest configuration (repository, identity, stanza of the source).
    type: str
  restore_type:
    description: pgBackRest's restore type (V(default) - the latest, V(time), V(lsn)).
    type: str
    default: default
  restore_target:
    description: The time or LSN with O(restore_type) time or lsn.
    type: str
  superuser_password:
    description: The new tenant's bootstrap superuser password.
    type: str
  port:
    description: Port of the temporary server (on its socket only).
    type: int
  tenants:
    description: The batch form - one item per tenant with the options above.
    type: list
    elements: dict
author:
  - ShadowDB contributors
"""

EXAMPLES = r"""
- name: Clone acme-copy from acme
  shadowdb_backup_clone:
    tenants: "{{ clones }}"
  no_log: true
"""

RETURN = r"""
results:
  description: Per tenant - V(failed), V(msg), V(changed), V(actions).
  returned: batch form
  type: dict
failed_tenants:
  description: Batch form - why each failed tenant failed.
  returned: batch form
  type: dict
"""

RECOVERY_WAIT = 600  # seconds a restored cluster may take to replay up to its target
# What PostgreSQL logs (and stops on) when the WAL it was given ends before a commit after its target.
ARCHIVE_ENDED = "recovery ended before configured recovery target was reached"


class Clone:
    def __init__(self, module, params):
        self.module, self.p, self.check = module, params, module.check_mode
        self.actions = []
        self.work = os.path.join(params["backup_dir"], "clone")

    def fail(self, what):
        raise TenantFailure(
            f"tenant {self.p['name']}: clone of {self.p['source']}: {what}", actions=self.actions
        )

    def as_tenant(self, argv, data=None, ok=(0,), shown=None):
        """argv run as the new tenant's OS user (runuser: no shell, no login). A failure names
        ``shown`` instead of the command's last argument when that holds a secret."""
        rc, out, err = self.module.run_command(["runuser", "-u", self.p["os_user"], "--", *argv], data=data)
        if rc not in ok:
            command = f"{os.path.basename(argv[0])} {shown or (argv[-1] if len(argv) > 1 else '')}"
            self.fail(f"{command} failed (rc {rc}): {(err or out).strip()[-600:]}")
        return rc, out

    def write(self, name, content, mode="0600"):
        entry = dict(
            path=os.path.join(self.work, name),
            content=content,
            owner=self.p["os_user"],
            group=self.p["os_user"],
            mode=mode,
            force=True,
        )
        converge_file(entry, wanted_attributes(entry), False)

    def pgbackrest(self, *args):
        return [
            "pgbackrest",
            f"--config={self.work}/pgbackrest.conf",
            f"--config-include-path={self.work}/conf.d",
            f"--stanza={self.p['source']}",
            "--log-level-console=warn",
            *args,
        ]

    def psql_argv(self, sql, dbname="postgres"):
        argv = [os.path.join(self.p["bin_dir"], "psql"), "-X", "-At", "-v", "ON_ERROR_STOP=1"]
        argv += ["-h", self.p["socket_dir"], "-p", str(self.p["port"]), "-U", "postgres"]
        return [*argv, "-d", dbname, "-c", sql]

    def psql(self, sql, dbname="postgres", shown=None):
        return self.as_tenant(self.psql_argv(sql, dbname), shown=shown)[1].strip()

    def authorized(self):
        """The repository reads its authorizations on SIGHUP: wait until this identity is one."""
        why = ""
        for _ in range(30):
            argv = ["runuser", "-u", self.p["os_user"], "--", *self.pgbackrest("--output=json", "info")]
            rc, out, err = self.module.run_command(argv)
            if rc == 0 and "access denied" not in out + err:
                return
            why = (err or out).strip()[-400:]
            time.sleep(0.5)
        self.fail(f"the repository did not authorize the clone's identity for the source's stanza: {why}")

    def start_server(self):
        """Start the restored cluster on its socket and wait until it is out of recovery. False
        when PostgreSQL stopped because the archive ended before a commit after the target."""
        pg_ctl = os.path.join(self.p["bin_dir"], "pg_ctl")
        options = " ".join(
            [
                f"-c port={self.p['port']} -c listen_addresses=''",
                f"-c unix_socket_directories={self.p['socket_dir']} -c archive_mode=off -c ssl=off",
                # An HA source's configuration names its synchronous standbys: the clone has none.
                "-c synchronous_standby_names=''",
                f"-c hba_file={self.work}/pg_hba.conf -c ident_file={self.work}/pg_ident.conf",
            ]
        )
        argv = [pg_ctl, "-D", self.p["data_dir"], "-w", "-t", str(RECOVERY_WAIT)]
        self.as_tenant([*argv, "-l", f"{self.work}/server.log", "-o", options, "start"], ok=(0, 1))
        deadline = time.monotonic() + RECOVERY_WAIT
        while True:
            rc, out = self.as_tenant(self.psql_argv("SELECT pg_is_in_recovery()"), ok=(0, 2))
            if rc == 0 and out.strip() == "f":
                return True
            if rc != 0 and self.as_tenant([pg_ctl, "-D", self.p["data_dir"], "status"], ok=(0, 3))[0] == 3:
                log = self.server_log()
                if ARCHIVE_ENDED in log:
                    return False
                self.fail(f"the restored server stopped: {log[-600:].strip()}")
            if time.monotonic() > deadline:
                self.fail(f"still in recovery after {RECOVERY_WAIT} s")
            time.sleep(1)

    def server_log(self):
        return self.as_tenant(["tail", "-c", "20000", f"{self.work}/server.log"], ok=(0, 1))[1]

    def whole_archive_replayed(self, log):
        """Whether the recovery that ended early replayed the archive's last WAL segment (and not
        stopped at one the repository failed to give: PostgreSQL cannot tell the two apart)."""
        replayed = re.findall(r'restored log file "([0-9A-F]{24})" from archive', log)
        stanzas = json.loads(self.as_tenant(self.pgbackrest("--output=json", "info"))[1] or "[]")
        last = max((a.get("max") or "" for s in stanzas for a in s.get("archive", [])), default="")
        if not replayed or replayed[-1] != last:
            self.fail(
                f"recovery ended at WAL segment {replayed[-1] if replayed else '(none)'} before reaching "
                f"the target, but the repository holds up to {last or '(none)'}: it did not give every "
                "segment (unreachable meanwhile?); nothing was made, try again"
            )

    def stop_server(self):
        pg_ctl = os.path.join(self.p["bin_dir"], "pg_ctl")
        self.as_tenant([pg_ctl, "-D", self.p["data_dir"], "-m", "fast", "-w", "stop"], ok=(0, 1, 3))

    def rename(self):
        """The source's database and roles take the new tenant's names; the superuser its password."""
        # Both names are tenant names (letters, digits, "-"), checked by the spec: nothing to quote.
        source, name = self.p["source"], self.p["name"]
        verifier = scram_verifier(self.p["superuser_password"])
        self.psql(f"ALTER ROLE postgres PASSWORD '{verifier}'", shown="ALTER ROLE postgres PASSWORD (hidden)")
        if source == name:  # a removed tenant made again from its own backups: its names are right
            self.actions.append("new superuser password")
            return
        taken = self.psql(
            "SELECT string_agg(n, ', ') FROM (SELECT rolname n FROM pg_roles "  # noqa: S608
            f"WHERE rolname IN ('{name}', '{name}_ro') "
            f"UNION ALL SELECT datname FROM pg_database WHERE datname = '{name}') x"
        )
        if taken:
            self.fail(f"the source's cluster already has {taken}, the names the clone needs")
        self.psql(f'ALTER DATABASE "{source}" RENAME TO "{name}"')
        self.psql(f'ALTER ROLE "{source}" RENAME TO "{name}"')
        if self.psql(f"SELECT count(*) FROM pg_roles WHERE rolname = '{source}_ro'") == "1":  # noqa: S608
            self.psql(f'ALTER ROLE "{source}_ro" RENAME TO "{name}_ro"')
        self.actions.append(f"renamed database and owner {source} to {name}; new superuser password")

    def converge(self):
        if read_small(os.path.join(self.p["data_dir"], "PG_VERSION")) is not None:
            return dict(changed=False, actions=[])  # cloned (or initialised) before
        self.actions.append(
            f"restored {self.p['source']}'s backup ({self.p['restore_type']} "
            f"{self.p.get('restore_target') or ''}) into {self.p['data_dir']}"
        )
        if self.check:
            return dict(changed=True, actions=self.actions)
        entry = dict(path=self.work, owner=self.p["os_user"], group=self.p["os_user"], mode="0700")
        converge_directory(entry, wanted_attributes(entry), False)
        entry = dict(entry, path=os.path.join(self.work, "conf.d"))
        converge_directory(entry, wanted_attributes(entry), False)
        self.write("clone.crt", self.p["certificate"], "0644")
        self.write("ca.crt", self.p["ca"], "0644")
        self.write("pgbackrest.conf", self.p["config"])
        self.write("pg_hba.conf", "local all all trust\n")
        self.write("pg_ident.conf", "")
        started = restored = False
        try:
            self.authorized()
            target = []
            if self.p["restore_type"] != "default":
                target = [
                    f"--type={self.p['restore_type']}",
                    f"--target={self.p['restore_target']}",
                    "--target-action=promote",
                ]
            self.as_tenant(self.pgbackrest(f"--pg1-path={self.p['data_dir']}", *target, "restore"))
            started = True
            if not self.start_server():
                # The archive holds no commit after the target (the source was idle since, or is
                # removed). The repository checked the source's WAL up to now before this step
                # (clone_plan.yml), so once the archive's last segment was replayed its end is
                # the state at the target: recover to the end instead.
                self.whole_archive_replayed(self.server_log())
                self.stop_server()
                self.as_tenant(self.pgbackrest(f"--pg1-path={self.p['data_dir']}", "--delta", "restore"))
                self.actions.append("no commit after the target in the archive: recovered to its end")
                if not self.start_server():
                    self.fail(f"the restored server stopped: {self.server_log()[-600:].strip()}")
            self.rename()
            restored = True
        finally:
            if started:
                self.stop_server()
            if not restored:
                # The tenant never ran: start over next time from an empty data directory.
                self.as_tenant(["find", self.p["data_dir"], "-mindepth", "1", "-delete"], ok=(0, 1))
            shutil.rmtree(self.work, ignore_errors=True)
        return dict(changed=True, actions=self.actions)


PER_TENANT = dict(
    name=dict(type="str", required=True),
    source=dict(type="str"),
    os_user=dict(type="str"),
    data_dir=dict(type="path"),
    socket_dir=dict(type="path"),
    backup_dir=dict(type="path"),
    bin_dir=dict(type="path"),
    certificate=dict(type="str"),
    key_path=dict(type="path", no_log=False),
    ca=dict(type="str"),
    config=dict(type="str"),
    restore_type=dict(type="str", default="default", choices=["default", "time", "lsn"]),
    restore_target=dict(type="str"),
    superuser_password=dict(type="str", no_log=True),
    port=dict(type="int"),
)
REQUIRED = (
    "source",
    "os_user",
    "data_dir",
    "socket_dir",
    "backup_dir",
    "bin_dir",
    "certificate",
    "ca",
    "config",
    "superuser_password",
    "port",
)


def main():
    module = AnsibleModule(argument_spec=batch_argument_spec(PER_TENANT, {}), supports_check_mode=True)
    items = tenant_params(module, PER_TENANT)

    def converge_one(params):
        missing = [k for k in REQUIRED if params.get(k) in (None, "")]
        if missing:
            raise TenantFailure(f"tenant {params['name']}: missing {', '.join(missing)}")
        clone = Clone(module, params)
        try:
            return clone.converge()
        except (UnsafePathError, OSError, ValueError, subprocess.SubprocessError) as e:
            raise TenantFailure(f"tenant {params['name']}: clone: {e}", actions=clone.actions) from e

    run_batch(module, PER_TENANT, converge_one, (TenantFailure,), items=items)


if __name__ == "__main__":
    main()

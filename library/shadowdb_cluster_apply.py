#!/usr/bin/python
# Copyright: ShadowDB contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Ansible module: a prepared tenant cluster initialised, configured, started, populated, checked."""

import os
import re
import threading
import time

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.shadowdb_batch import batch_argument_spec, run_batch, tenant_params
from ansible.module_utils.shadowdb_common import ENABLE_ON_DISK, UnsafePathError
from ansible.module_utils.shadowdb_fs import converge_file, read_small, wanted_attributes
from ansible.module_utils.shadowdb_health import make_probe, not_serving_message, poll, scrub
from ansible.module_utils.shadowdb_record import TenantFailure, record_converged
from ansible.module_utils.shadowdb_sql import PSYCOPG_IMPORT_ERROR, TenantSql, connect, psycopg

DOCUMENTATION = r"""
---
module: shadowdb_cluster_apply
short_description: Initialise, configure, start, populate and check a tenant's cluster in one call
description:
  - The second half of a tenant cluster's per-tenant work on its db host (after
    shadowdb_cluster_prepare and the certificate's signature on the controller), in one round trip.
  - In order, each only when needed - C(initdb) as the tenant's OS user (data checksums,
    scram-sha-256, the superuser's password through a pipe, never a file); the rendered files
    (certificate, postgresql.conf, pg_hba.conf, pg_ident.conf, the unit's drop-in), written without
    following a link the tenant planted; the unit started and enabled, restarted when its drop-in
    or template changed, or reloaded when the configuration changed (restarted when a changed
    setting needs it; invalid settings, as C(pg_file_settings) reads them, are refused before
    any reload); the tenant's roles, database and extensions (one connection, passwords sent as
    SCRAM verifiers); a health check over TCP with TLS verified and the owner's credentials; then
    the configuration that came up healthy is kept root-only as the last good one, with the
    operator's connection file.
  - A configuration that does not come up is rolled back - the last good postgresql.conf and
    drop-in are put back, the server brought up on them, and the module fails naming the
    server's own error line (a new tenant has no good configuration yet - it fails naming the
    error).
  - "Batch form: O(tenants) lists the per-tenant options of many tenants of the host (see
    O(tenants)); the other options are shared. O(workers) tenants are converged at once, each
    rolled back on its own, and a tenant's failure is its own (RV(results), RV(failed_tenants)).
    systemd is reloaded once for the tenants whose unit changed together, not once per tenant."
  - The options marked required are required in the single form and in each item of O(tenants).
options:
  name:
    description: Tenant name.
    type: str
    required: true
  os_user:
    description: The tenant's system user (runs initdb and owns the cluster's files).
    type: str
    required: true
  unit:
    description: The cluster's systemd unit.
    type: str
    required: true
  data_dir:
    description: The cluster's data directory.
    type: path
    required: true
  socket_dir:
    description: The cluster's Unix socket directory.
    type: path
    required: true
  port:
    description: The cluster's port.
    type: int
    required: true
  bin_dir:
    description: Directory of the PostgreSQL server programs (initdb).
    type: path
    required: true
  pg_version:
    description:
      - The cluster's PostgreSQL major version. From 17 on, initdb flushes the new cluster with one
        C(syncfs) of the tenant's own volume instead of an fsync of every file (the same durability,
        about a quarter of initdb's time); without it, or before 17, initdb's default.
    type: int
  superuser_password:
    description: Password of the bootstrap superuser, given to initdb.
    type: str
    required: true
    no_log: true
  files:
    description: Rendered files (path, content, owner, group, mode), written before the unit starts.
    type: list
    elements: dict
    required: true
  dropin:
    description: The unit's drop-in among O(files) (a change restarts the unit).
    type: path
    required: true
  restart_files:
    description: Other files of O(files) whose change needs a restart rather than a reload, if any.
    type: list
    elements: path
    default: []
  unit_template_changed:
    description: The unit template changed in this run (systemd is reloaded and the unit restarted).
    type: bool
    default: false
  last_good_dir:
    description: Root-only directory of the last configuration that came up healthy.
    type: path
    required: true
  sql:
    description:
      - The tenant's objects - owner, owner_password, superuser, dbname, extensions, readonly,
        readonly_user, readonly_password.
    type: dict
    required: true
  health:
    description: The health check (address, server_name, dbname, user, password, sslrootcert, timeout).
    type: dict
    required: true
  credentials_file:
    description: The operator's connection file of the owner (root only).
    type: path
    required: true
  credentials:
    description: Text of O(credentials_file).
    type: str
    required: true
    no_log: true
  record:
    description:
      - Once the tenant converged and passed its health check, write its converged record as
        C(shadowdb_tenant_check) O(state=record) does (the fingerprint given, the SHA-256 of the files
        given, the units, the mount point and O(port)), in the same call. Reported as a change only when
        the record differs from O(record.previous) beyond the fingerprint (a new fingerprint alone is
        bookkeeping). A record that cannot be written fails the tenant (its converge is not undone).
      - Suboptions state_dir (default C(/var/lib/shadowdb/converged)), fingerprint, files, units,
        mountpoint and previous (the record the run forgot before the converge; V({}) for a new tenant).
      - Without it, nothing is recorded.
    type: dict
  ready_timeout:
    description: Seconds to wait for the server to accept connections after a start, restart or reload.
    type: int
    default: 60
  tenants:
    description:
      - The batch form - one item per tenant, each with the per-tenant options above (O(name),
        O(os_user), O(unit), O(data_dir), O(socket_dir), O(port), O(bin_dir),
        O(superuser_password), O(files), O(dropin), O(restart_files), O(last_good_dir), O(sql),
        O(health), O(credentials_file), O(credentials), O(record)), which are then not given at the top
        level. Their secrets are C(no_log) there too.
      - A tenant listed twice is refused.
    type: list
    elements: dict
  workers:
    description:
      - How many tenants of a batch are converged at once (threads of the module's process; each
        mostly waits on its server, systemd or initdb). V(1) converges them one after the other.
      - Ignored in the single form.
    type: int
    default: 4
author:
  - ShadowDB contributors
"""

RETURN = r"""
actions:
  description: What was (or in check mode would be) done, in order; never a secret.
  returned: always (single form)
  type: list
  elements: str
content_changed:
  description: Files of O(files) whose content was (or would be) written.
  returned: always (single form)
  type: list
  elements: str
health:
  description: What the health check saw (server version, data checksums, TLS).
  returned: success, not in check mode (single form)
  type: dict
recorded:
  description: With O(record), whether the record changed (see O(record)).
  returned: success, with O(record) (single form)
  type: bool
results:
  description:
    - Batch form - per tenant, V(failed), V(msg) (when it failed), V(changed) and the single form's
      return values (RV(actions), RV(content_changed), RV(health) on success when not in check
      mode); a failed tenant has V(failed), V(msg) and the RV(actions) and RV(content_changed)
      done before the failure. Never a secret.
  returned: batch form
  type: dict
  sample: {acme: {failed: false, changed: true, actions: [wrote /mnt/db/acme/data/postgresql.conf,
           reloaded shadowdb-cluster@acme.service], content_changed: [/mnt/db/acme/data/postgresql.conf],
           health: {server_version: "17.2", data_checksums: true, ssl: true}}}
failed_tenants:
  description: Batch form - the message of each tenant that failed (never a secret).
  returned: batch form
  type: dict
  sample: {globex: "tenant globex: postgresql.conf has invalid settings: work_mem"}
"""

FATAL_LINE = re.compile(r"(FATAL|PANIC):")
NOT_APPLIED = "setting could not be applied"
LAST_GOOD_FILES = ("postgresql.conf", "50-tenant.conf")


class ApplyError(Exception):
    """A failed step; its text names the tenant and the problem, never a secret."""


class ClusterFailure(Exception):
    """A failed converge, with what was done before it (reported beside the message)."""

    def __init__(self, msg, **partial):
        super().__init__(msg)
        self.partial = partial


class DaemonReload:
    """systemctl daemon-reload for the tenants of one call, converged in threads: one reload at a
    time, and none for a tenant when a reload begun after its unit files were written (mark())
    has succeeded since: systemd read them then. After a template change, a batch reloads
    systemd about once, not once per tenant."""

    def __init__(self):
        self._lock = threading.Lock()
        self._started = 0  # reloads begun
        self._succeeded = 0  # the number of the last one that succeeded

    def mark(self):
        """Taken once the caller's unit files are written: the reloads begun later read them."""
        return self._started

    def reload(self, run, since):
        """run() the reload unless one begun after the mark ``since`` succeeded; True when it ran."""
        with self._lock:
            if self._succeeded > since:
                return False
            self._started += 1
            ticket = self._started
            run()
            self._succeeded = ticket
            return True


def invalid_settings(rows):
    """Names of settings pg_file_settings reports as invalid (not merely waiting for a restart)."""
    return sorted({name for name, error in rows if error and error != NOT_APPLIED})


def needs_restart(rows):
    return any(error == NOT_APPLIED for _name, error in rows)


def last_error_line(journal, fallback):
    """The server's last FATAL or PANIC line of its journal, else fallback (at most 300 characters)."""
    lines = [line for line in journal.splitlines() if FATAL_LINE.search(line)]
    line = lines[-1] if lines else fallback
    return line if len(line) <= 300 else line[:297] + "..."


class Cluster:
    """One tenant's converge. Tenants of a batch run in threads: a Cluster keeps its state to
    itself and changes nothing process-wide (no umask, working directory or environment); the
    shared module is only read, and used for run_command."""

    def __init__(self, module, params, reloader=None, batch=False):
        self.module = module
        self.p = params
        self.check = module.check_mode
        self.actions = []
        self.content_changed = []
        self.diffs = []
        self.reloader = DaemonReload() if reloader is None else reloader
        self.unit_files_mark = 0
        # In a batch a command that cannot be run (OSError) is its tenant's failure: run_command's
        # own handling would fail_json, exiting the whole module from a worker thread.
        self.command_options = dict(handle_exceptions=False) if batch else {}

    def fail_text(self, text):
        return scrub(text, (self.p["superuser_password"], self.p["sql"]["owner_password"]))

    def run(self, argv, data=None, ok=(0,)):
        rc, out, err = self.module.run_command(argv, data=data, binary_data=True, **self.command_options)
        if rc not in ok:
            raise ApplyError(
                self.fail_text(
                    f"tenant {self.p['name']}: {' '.join(argv[:3])} failed (rc {rc}): {(err or out).strip()}"
                )
            )
        return rc, out

    def systemctl(self, *args, ok=(0,)):
        return self.run(["systemctl", *args], ok=ok)

    def daemon_reload(self):
        self.reloader.reload(lambda: self.systemctl("daemon-reload"), self.unit_files_mark)

    # --- initdb ---
    def initdb(self):
        try:
            version = read_small(os.path.join(self.p["data_dir"], "PG_VERSION"))
        except FileNotFoundError:
            version = None
        if version is not None:
            return False
        self.actions.append("initialised the cluster (initdb)")
        if self.check:
            return True
        rc, out, err = self.module.run_command(
            [
                "runuser", "-u", self.p["os_user"], "--", "/bin/sh", "-c",
                # initdb reopens its --pwfile: the pipe it reads must belong to the tenant's user, so
                # the password is passed on through a pipe of the tenant's own shell.
                'cat | exec "$0" "$@"',
                os.path.join(self.p["bin_dir"], "initdb"),
                f"--pgdata={self.p['data_dir']}", "--data-checksums", "--auth=scram-sha-256",
                "--username=postgres", "--pwfile=/dev/stdin", "--encoding=UTF8", "--locale=C.UTF-8",
                *(["--sync-method=syncfs"] if (self.p.get("pg_version") or 0) >= 17 else []),
            ],
            data=self.p["superuser_password"],
            binary_data=True,
            **self.command_options,
        )  # fmt: skip
        if rc != 0:
            raise ApplyError(
                self.fail_text(
                    f"initdb of tenant {self.p['name']} failed (rc {rc}): {err.strip()} {out.strip()}"
                )
            )
        return True

    # --- files ---
    def write_files(self, entries, diff=True):
        changed = []
        for entry in entries:
            entry = dict(entry, force=True)
            entry.setdefault("mode", "0644")
            _changed, written, before = converge_file(entry, wanted_attributes(entry), self.check)
            if written:
                changed.append(entry["path"])
                if diff:
                    self.diffs.append(
                        dict(
                            before_header=entry["path"],
                            after_header=entry["path"],
                            before=before or "",
                            after=entry["content"],
                        )
                    )
        return changed

    # --- the server ---
    def connect(self, timeout=2):
        return psycopg.connect(
            host=self.p["socket_dir"],
            port=self.p["port"],
            user="postgres",
            dbname="postgres",
            autocommit=True,
            connect_timeout=timeout,
            application_name="shadowdb_cluster_apply",
        )

    def wait_ready(self):
        deadline = time.monotonic() + self.p["ready_timeout"]
        while True:
            try:
                with self.connect():
                    return
            except psycopg.Error as e:
                if time.monotonic() > deadline:
                    first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
                    raise ApplyError(
                        f"tenant {self.p['name']}: the server does not accept connections after "
                        f"{self.p['ready_timeout']}s: {first_line}"
                    ) from None
            time.sleep(0.5)

    def is_active(self):
        _rc, out = self.systemctl("is-active", self.p["unit"], ok=(0, 3, 4))
        return out.strip() == "active"

    def systemd_copy_is_stale(self):
        """Whether systemd may hold an older copy of the unit than its files: not loaded from them
        (an earlier copy that failed to load is never read again by itself), or NeedDaemonReload.
        Asking loads a unit systemd has not loaded yet from its files as they are now, so a new
        tenant's unit needs no daemon-reload: that re-reads every unit of the host, and takes
        longer the more tenants the host has (0.2 s with 50)."""
        _rc, out = self.systemctl("show", "--property=LoadState,NeedDaemonReload", self.p["unit"])
        state = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        return state.get("LoadState") != "loaded" or state.get("NeedDaemonReload") != "no"

    def serve(self, restart_needed, conf_changed):
        """Start, restart or reload the unit as the changed files need; wait until it serves."""
        unit = self.p["unit"]
        if (
            restart_needed
            and not self.check
            and (self.p["unit_template_changed"] or self.systemd_copy_is_stale())
        ):
            self.daemon_reload()
        _rc, enabled = self.systemctl("is-enabled", unit, ok=(0, 1, 4))
        if enabled.strip() != "enabled":
            self.actions.append(f"enabled {unit}")
            if not self.check:
                self.run([*ENABLE_ON_DISK, unit])
        if not self.is_active():
            self.actions.append(f"started {unit}")
            if not self.check:
                self.systemctl("start", unit)
                self.wait_ready()
            return
        if restart_needed:
            self.actions.append(f"restarted {unit} (its unit or drop-in changed)")
            if not self.check:
                self.systemctl("restart", unit)
                self.wait_ready()
            return
        if not conf_changed or self.check:
            if conf_changed:
                self.actions.append(f"reloaded {unit}")
            return
        # pg_file_settings re-reads postgresql.conf at query time: invalid values show before they go
        # live, and settings that need a restart say so.
        with self.connect() as conn:
            rows = conn.execute("SELECT name, error FROM pg_file_settings WHERE error IS NOT NULL").fetchall()
        invalid = invalid_settings(rows)
        if invalid:
            raise ApplyError(
                f"tenant {self.p['name']}: postgresql.conf has invalid settings: {', '.join(invalid)}"
            )
        if needs_restart(rows):
            self.actions.append(f"restarted {unit} (a changed setting needs it)")
            self.systemctl("restart", unit)
        else:
            self.actions.append(f"reloaded {unit}")
            self.systemctl("reload", unit)
        self.wait_ready()

    def rollback(self, error):
        """Put the last good configuration back, bring the server up on it, and fail naming the error."""
        name, unit = self.p["name"], self.p["unit"]
        _rc, journal = self.run(
            ["journalctl", "--unit", unit, "--lines", "60", "--no-pager", "--output", "cat"], ok=(0, 1)
        )
        why = last_error_line(journal, str(error))
        good = {}
        for file in LAST_GOOD_FILES:
            try:
                good[file] = read_small(os.path.join(self.p["last_good_dir"], file))
            except FileNotFoundError:
                good[file] = None
        if None in good.values():
            raise ApplyError(
                f"tenant {name}: the server did not come up: {why} (no earlier configuration of this tenant "
                "came up healthy, so there is none to put back)"
            )
        conf = next(f for f in self.p["files"] if f["path"].endswith("/postgresql.conf"))
        dropin = next(f for f in self.p["files"] if f["path"] == self.p["dropin"])
        restored = self.write_files(
            [dict(conf, content=good["postgresql.conf"]), dict(dropin, content=good["50-tenant.conf"])],
            diff=False,
        )
        self.unit_files_mark = self.reloader.mark()
        try:
            if self.p["dropin"] in restored:
                self.daemon_reload()
            up = True
            try:
                with self.connect():
                    pass
            except psycopg.Error:
                up = False
            self.systemctl("reload" if up else "restart", unit, ok=(0, 1))
            self.wait_ready()
            outcome = "The last good configuration was put back and the server serves it again"
        except ApplyError:
            outcome = "The last good configuration was put back, but the server is not serving on it either"
        raise ApplyError(
            f"tenant {name}: the new configuration did not come up: {why}. {outcome}; "
            "change the tenant's settings and converge again."
        )

    # --- the tenant's objects, health, and what came up healthy ---
    def objects(self):
        with connect(self.p, "postgres") as conn:
            work = TenantSql(self.module, conn)
            work.converge(self.p["sql"], lambda dbname: connect(self.p, dbname))
        self.actions.extend(work.actions)

    def healthy(self):
        h = self.p["health"]
        params = dict(
            address=h["address"],
            port=self.p["port"],
            server_name=h["server_name"],
            dbname=h["dbname"],
            user=h["user"],
            password=h["password"],
            sslmode="verify-full",
            sslrootcert=h["sslrootcert"],
            sslnegotiation="postgres",
            require_ssl=True,
        )
        timeout = h["timeout"]
        outcome = poll(make_probe(params), timeout, 1.0)
        if outcome["facts"] is None:
            error = scrub(outcome["error"] or "no attempt completed", (h["password"],))
            raise ApplyError(f"tenant {self.p['name']}: {not_serving_message(params, timeout, error)}")
        return outcome["facts"]

    def keep_good(self):
        conf = next(f for f in self.p["files"] if f["path"].endswith("/postgresql.conf"))
        dropin = next(f for f in self.p["files"] if f["path"] == self.p["dropin"])
        root = dict(owner="root", group="root", mode="0600")
        kept = self.write_files(
            [
                dict(root, path=self.p["credentials_file"], content=self.p["credentials"]),
                dict(
                    root,
                    path=os.path.join(self.p["last_good_dir"], "postgresql.conf"),
                    content=conf["content"],
                ),
                dict(
                    root,
                    path=os.path.join(self.p["last_good_dir"], "50-tenant.conf"),
                    content=dropin["content"],
                ),
            ],
            diff=False,
        )
        if kept:
            self.actions.append("kept the configuration as the last good one, and the connection file")

    def converge(self):
        new = self.initdb()
        self.content_changed = self.write_files(self.p["files"])
        self.unit_files_mark = self.reloader.mark()
        for path in self.content_changed:
            self.actions.append(f"wrote {path}")
        restart_files = {self.p["dropin"], *self.p["restart_files"]}
        restart_needed = self.p["unit_template_changed"] or bool(restart_files & set(self.content_changed))
        conf_changed = bool(set(self.content_changed) - restart_files)
        try:
            self.serve(restart_needed, conf_changed)
        except (ApplyError, psycopg.Error) as e:
            self.rollback(e)  # a new tenant has no good configuration yet: it fails naming the error
        if self.check and (new or not self.is_active()):
            return None
        self.objects()
        if self.check:
            return None
        facts = self.healthy()
        self.keep_good()
        return facts


PER_TENANT = dict(
    name=dict(type="str", required=True),
    os_user=dict(type="str", required=True),
    unit=dict(type="str", required=True),
    data_dir=dict(type="path", required=True),
    socket_dir=dict(type="path", required=True),
    port=dict(type="int", required=True),
    bin_dir=dict(type="path", required=True),
    pg_version=dict(type="int"),
    superuser_password=dict(type="str", required=True, no_log=True),
    files=dict(type="list", elements="dict", required=True),
    dropin=dict(type="path", required=True),
    restart_files=dict(type="list", elements="path", default=[]),
    last_good_dir=dict(type="path", required=True),
    sql=dict(
        type="dict",
        required=True,
        options=dict(
            owner=dict(type="str", required=True),
            owner_password=dict(type="str", required=True, no_log=True),
            superuser=dict(type="bool", default=False),
            dbname=dict(type="str", required=True),
            extensions=dict(type="list", elements="str", default=[]),
            readonly=dict(type="bool", default=False),
            readonly_user=dict(type="str"),
            readonly_password=dict(type="str", no_log=True),
        ),
        required_if=[("readonly", True, ["readonly_user", "readonly_password"])],
    ),
    health=dict(
        type="dict",
        required=True,
        options=dict(
            address=dict(type="str", default="127.0.0.1"),
            server_name=dict(type="str", required=True),
            dbname=dict(type="str", required=True),
            user=dict(type="str", required=True),
            password=dict(type="str", required=True, no_log=True),
            sslrootcert=dict(type="path", required=True),
            timeout=dict(type="int", default=60),
        ),
    ),
    credentials_file=dict(type="path", required=True),
    credentials=dict(type="str", required=True, no_log=True),
    record=dict(
        type="dict",
        options=dict(
            state_dir=dict(type="path", default="/var/lib/shadowdb/converged"),
            fingerprint=dict(type="str", required=True, no_log=False),
            files=dict(type="list", elements="path", default=[]),
            units=dict(type="list", elements="str", default=[]),
            mountpoint=dict(type="path", default=""),
            previous=dict(type="dict"),
        ),
    ),
)

SHARED = dict(
    unit_template_changed=dict(type="bool", default=False),
    ready_timeout=dict(type="int", default=60),
    workers=dict(type="int", default=4),
)


def write_record(p, module):
    """Write the converged record of the tenant of p (O(record)); whether it changed (see
    O(record.previous)). Raises TenantFailure."""
    record = p["record"]
    params = dict(
        name=p["name"],
        fingerprint=record["fingerprint"],
        files=record["files"],
        units=record["units"],
        mountpoint=record["mountpoint"],
        port=p["port"],
    )
    name = p["name"]
    _result, changed = record_converged(
        record["state_dir"],
        params,
        record["previous"],
        module.check_mode,
        lambda msg: module.warn(f"tenant {name}: {msg}"),
        "record.",
    )
    return changed


def main():
    module = AnsibleModule(argument_spec=batch_argument_spec(PER_TENANT, SHARED), supports_check_mode=True)
    items = tenant_params(module, PER_TENANT)  # a wrong call is refused before the shared checks
    if psycopg is None:
        module.fail_json(msg=missing_required_lib("psycopg"), exception=PSYCOPG_IMPORT_ERROR)
    workers = module.params["workers"]
    if workers < 1:
        module.fail_json(msg=f"workers must be at least 1, got {workers}")
    batch = module.params["tenants"] is not None
    reloader = DaemonReload()  # one per call, shared by the tenants' threads

    def converge_one(p):
        if not any(f.get("path") == p["dropin"] for f in p["files"]) or not any(
            str(f.get("path", "")).endswith("/postgresql.conf") for f in p["files"]
        ):
            raise ApplyError(
                f"tenant {p['name']}: files must hold postgresql.conf and the drop-in {p['dropin']}"
            )
        cluster = Cluster(module, p, reloader, batch)
        try:
            facts = cluster.converge()
        except (ApplyError, UnsafePathError, OSError, ValueError, psycopg.Error) as e:
            raise ClusterFailure(
                cluster.fail_text(str(e)), actions=cluster.actions, content_changed=cluster.content_changed
            ) from e
        result = dict(
            changed=bool(cluster.actions), actions=cluster.actions, content_changed=cluster.content_changed
        )
        if facts is not None:
            result["health"] = facts
        if p["record"] is not None:
            try:
                result["recorded"] = write_record(p, module)
            except TenantFailure as e:
                raise ClusterFailure(
                    f"tenant {p['name']}: converged, but its record: {e}",
                    actions=cluster.actions,
                    content_changed=cluster.content_changed,
                ) from e
            result["changed"] = result["changed"] or result["recorded"]
        if module._diff:
            result["diff"] = cluster.diffs
        return result

    run_batch(module, PER_TENANT, converge_one, (ApplyError, ClusterFailure), workers=workers, items=items)


if __name__ == "__main__":
    main()

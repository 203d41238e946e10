"""The deployment's inventory, as the API reads it: its db hosts (a new tenant goes to the one
with the fewest tenants: ``shadowdb.pick_host``).

The inventory also says whether routing is deployed (an etcd group): jobs then end with a
routing step (api/jobs.py); which PostgreSQL majors each db host can install
(``shadowdb_pg_versions``, default [17]: Debian trixie); the deployment's tier table
(``shadowdb_tiers``); and the tenants it declares itself (``shadowdb_tenants``, converged by
site.yml), whose names the API must not hand out again.
"""

import json
import logging
import os
import subprocess
import threading
import time
from pathlib import Path

from shadowdb import NoHosts, SpecError, resolve_tiers, shadowdb_backup_enabled

from .settings import ansible_env

log = logging.getLogger("shadowdb.api.inventory")
_TTL = 60.0
# PostgreSQL majors a db host can install when the inventory does not say (Debian trixie: 17).
DEFAULT_HOST_PG_VERSIONS = (17,)


class Inventory:
    """The hosts of one inventory group, read with ansible-inventory and kept for a minute.

    Only the first read makes a request wait. After that a request gets the view it has and, when
    that is over a minute old, starts a new read in the background: ansible-inventory takes 0.7 s
    of CPU on a quiet machine and more under load, and every request that came while it ran used
    to wait for it (ten creates sent together all queued behind one read). A read that fails keeps
    the last view, and the error goes to the log each time.
    """

    def __init__(self, inventory: Path, group: str, repo: Path):
        self.inventory, self.group, self.repo = inventory, group, repo
        self._data: dict | None = None
        self._read_at = 0.0
        self._refreshing = False
        self._lock = threading.Lock()

    def _current(self) -> dict:
        with self._lock:
            if self._data is None:
                self._data = self._read()
                self._read_at = time.monotonic()
            elif time.monotonic() - self._read_at > _TTL and not self._refreshing:
                self._refreshing = True
                threading.Thread(target=self._refresh, name="shadowdb-inventory", daemon=True).start()
            return self._data

    def _refresh(self) -> None:
        try:
            data = self._read()
        except (NoHosts, OSError, subprocess.SubprocessError, ValueError) as e:
            log.error("inventory %s: keeping the view read before: %s", self.inventory, e)
            data = None
        with self._lock:
            if data is not None:
                self._data = data
            self._read_at = time.monotonic()  # a failed read is tried again a minute later
            self._refreshing = False

    def hostvars(self, host: str) -> dict:
        """A host's variables as the inventory resolves them (group_vars included)."""
        return ((self._current().get("_meta") or {}).get("hostvars") or {}).get(host) or {}

    def pg_versions(self, host: str) -> list[int]:
        """The PostgreSQL majors a db host can install (inventory ``shadowdb_pg_versions``)."""
        value = self.hostvars(host).get("shadowdb_pg_versions")
        if value is None:
            return list(DEFAULT_HOST_PG_VERSIONS)
        if not isinstance(value, list):
            value = [value]
        versions = set()
        for v in value:
            try:
                versions.add(int(v))
            except (TypeError, ValueError):
                log.warning("inventory: %s has a bad shadowdb_pg_versions entry %r (ignored)", host, v)
        return sorted(versions)

    def served_pg_versions(self) -> list[int]:
        """The PostgreSQL majors at least one db host can install."""
        return sorted({v for host in self.hosts() for v in self.pg_versions(host)})

    def tiers(self) -> dict | None:
        """The deployment's tier table, validated; None: the package's defaults.

        It is ``shadowdb_tiers`` as the db hosts see it: the inventory's group_vars/all.yml, its
        all/db group vars or host vars, the first db host defining it. As in the playbooks
        (``shadowdb.resolve_tiers``), a non-empty table replaces the defaults whole: a tier it
        does not define is refused. A table the rules refuse is the deployment's fault, not the
        client's: 503, the reason in the API's log.
        """
        for host in self.hosts():
            tiers = self.hostvars(host).get("shadowdb_tiers")
            if tiers:
                try:
                    return resolve_tiers(tiers)
                except SpecError as exc:
                    log.error("inventory: %s has an invalid shadowdb_tiers: %s", host, exc)
                    raise NoHosts("the deployment's tier table is invalid (see the API's log)") from None
        return None

    def declared_tenants(self) -> dict[str, str]:
        """Tenants the inventory itself declares (``shadowdb_tenants`` per db host): name -> host."""
        declared: dict[str, str] = {}
        for host in self.hosts():
            for spec in self.hostvars(host).get("shadowdb_tenants") or []:
                if isinstance(spec, dict) and isinstance(spec.get("name"), str):
                    declared.setdefault(spec["name"], host)
        return declared

    def host_tenants(self) -> dict[str, list[dict]]:
        """The inventory's own tenant specs per db host (``shadowdb_tenants``), for placement."""
        return {
            host: [s for s in self.hostvars(host).get("shadowdb_tenants") or [] if isinstance(s, dict)]
            for host in self.hosts()
        }

    def hosts(self, group: str | None = None) -> list[str]:
        """The hosts of a group (default: the db group) and of its children."""
        data = self._current()
        hosts: set[str] = set()
        todo = [group or self.group]
        while todo:  # the group and its children
            entry = data.get(todo.pop(), {})
            hosts.update(entry.get("hosts", []))
            todo.extend(entry.get("children", []))
        return sorted(hosts)

    def backups(self, spec: dict) -> bool:
        """Whether a tenant of this spec has backups: a repository host in the backup group, and
        the spec's ``backup``, else the db hosts' ``shadowdb_backup_default`` (true)."""
        if not self.hosts("backup"):
            return False
        hosts = self.hosts()
        default = self.hostvars(hosts[0]).get("shadowdb_backup_default", True) if hosts else True
        return shadowdb_backup_enabled(spec, default, ["backup"])

    def routed(self) -> bool:
        """Whether the inventory deploys routing (a registry: an etcd group with hosts)."""
        return bool(self.hosts("etcd"))

    def _read(self) -> dict:
        env = dict(os.environ) | ansible_env(self.repo)
        proc = subprocess.run(
            ["ansible-inventory", "-i", str(self.inventory), "--list"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        if proc.returncode != 0:
            # The tool's output stays in the server log; the client gets a short reason.
            log.error("ansible-inventory -i %s failed: %s", self.inventory, proc.stderr.strip()[-2000:])
            raise NoHosts("cannot read the deployment's inventory (see the API's log)")
        return json.loads(proc.stdout)

"""Drift: does the catalog match the hosts? Reported, never repaired.

A periodic task of the workers (api/jobs.py, every ``drift_interval`` seconds) runs
api/playbooks/drift.yml, which only reads: each db host's converged standalone tenants and
Patroni members, the registry's records, and which member leads each HA tenant now. ``compare``
holds that against the catalog and the inventory's own tenants; the findings of the last check
are kept in the catalog (drift_checks) and shown by ``GET /v1/tenants`` and ``/metrics``; so is
when each tenant's last backup ended (``backups``, read on the backup repository when the
inventory has one), shown as its age by ``GET /v1/tenants/{name}`` and ``/metrics``.

Findings (``kind``):
- ``unknown_on_host``: a tenant on a db host that neither the catalog nor the inventory knows;
- ``unknown_in_registry``: a registered tenant that neither knows;
- ``missing_from_host``: a ready catalog tenant (or one of its members) that its host lacks;
- ``not_registered``: a ready catalog tenant the registry lacks (routed deployments);
- ``leader_changed``: an HA tenant whose leader is not the member the catalog shows as primary
  (Patroni failed over since its last job);
- ``host_unreachable``: a db host the check could not read (nothing is concluded about it).

Tenants with a job queued or running, or one that finished after the check began, are left out:
their state is moving, not drifting.
"""

import logging
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import ansible_runner
from psycopg.types.json import Jsonb

from .settings import Settings, ansible_env

log = logging.getLogger("shadowdb.api.drift")
# Checks kept in the catalog (the last one is shown).
_KEEP_CHECKS = 20
# Seconds a check may run (it holds the routing lock meanwhile).
CHECK_TIMEOUT = 300


def compare(tenants: list[dict], declared: set[str], observed: dict, moving: set[str]) -> list[dict]:
    """The findings of one check (see the module docstring), sorted.

    ``tenants``: catalog rows (name, host, state, ha, members); ``declared``: the inventory's
    own tenants; ``observed``: drift.yml's custom stat {hosts, registry, leaders}; ``moving``:
    tenants to leave out."""
    findings = []

    def add(kind: str, tenant: str | None, host: str | None, detail: str) -> None:
        findings.append({"kind": kind, "tenant": tenant, "host": host, "detail": detail})

    catalog = {t["name"]: t for t in tenants}
    known = set(catalog) | declared | moving
    hosts = observed.get("hosts") or {}
    registry = observed.get("registry")
    leaders = observed.get("leaders") or {}
    reachable = {h for h, seen in hosts.items() if seen.get("reachable")}
    for host, seen in sorted(hosts.items()):
        if host not in reachable:
            add("host_unreachable", None, host, f"db host {host} could not be read")
            continue
        for name in sorted(set(seen.get("standalone") or []) | set(seen.get("members") or [])):
            if name not in known:
                add("unknown_on_host", name, host, f"{name} is on {host} but not in the catalog")
    registered = {r.get("tenant"): r for r in registry or [] if isinstance(r, dict)}
    for name in sorted(set(registered) - known):
        add(
            "unknown_in_registry",
            name,
            registered[name].get("host"),
            f"{name} is registered but not in the catalog",
        )

    for name, tenant in sorted(catalog.items()):
        if name in moving or tenant["state"] != "ready":
            continue
        members = [m for m in tenant.get("members") or [] if m.get("host")] if tenant.get("ha") else []
        if members:
            for member in members:
                host = member["host"]
                if host in reachable and name not in (hosts[host].get("members") or []):
                    add("missing_from_host", name, host, f"{name}'s member on {host} is not there")
            primary = next((m["host"] for m in members if m.get("role") in ("primary", "leader")), None)
            leader = leaders.get(name)
            if leader and primary and leader != primary:
                add("leader_changed", name, leader, f"{name} is led by {leader} now (catalog: {primary})")
        else:
            host = tenant["host"]
            if host in reachable and name not in (hosts[host].get("standalone") or []):
                add("missing_from_host", name, host, f"{name} is not converged on {host}")
        if registry is not None and name not in registered:
            add("not_registered", name, tenant["host"], f"{name} is not in the registry")
    return sorted(findings, key=lambda f: (f["kind"], f["tenant"] or "", f["host"] or ""))


class DriftCheck:
    """One run of drift.yml and its comparison, recorded in the catalog."""

    def __init__(self, settings: Settings, declared=None):
        self.settings = settings
        # The inventory's own tenants (names): not the API's, not drift.
        self.declared = declared or (lambda: set())

    def run(self, conn) -> dict:
        """Check now; returns the recorded check {started_at, finished_at, error, findings}."""
        started = datetime.now(UTC)
        observed, error = self._observe()
        findings = []
        if observed is not None:
            moving = {
                r["tenant"]
                for r in conn.execute(
                    "SELECT DISTINCT tenant FROM jobs"
                    " WHERE status IN ('queued', 'running') OR finished_at >= %s",
                    (started,),
                ).fetchall()
            }
            tenants = conn.execute("SELECT name, host, state, ha, members FROM tenants").fetchall()
            findings = compare(tenants, set(self.declared()), observed, moving)
        with conn.transaction():
            backups = (observed or {}).get("backups")
            row = conn.execute(
                "INSERT INTO drift_checks (started_at, finished_at, error, findings, backups)"
                " VALUES (%s, now(), %s, %s, %s) RETURNING *",
                (started, error, Jsonb(findings), Jsonb(backups) if isinstance(backups, dict) else None),
            ).fetchone()
            conn.execute(
                "DELETE FROM drift_checks WHERE id <= (SELECT max(id) FROM drift_checks) - %s",
                (_KEEP_CHECKS,),
            )
        if findings:
            log.warning("drift: %s", "; ".join(f["detail"] for f in findings))
        return row

    def _observe(self) -> tuple[dict | None, str | None]:
        """(drift.yml's custom stat, None), or (None, why the check could not run)."""
        stats: dict = {}

        def on_event(event: dict) -> bool:
            if event.get("event") == "playbook_on_stats":
                stats.update((event.get("event_data") or {}).get("artifact_data") or {})
            return False

        self.settings.work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with tempfile.TemporaryDirectory(prefix="drift-", dir=self.settings.work_dir) as data_dir:
            runner = ansible_runner.run(
                private_data_dir=data_dir,
                project_dir=str(self.settings.repo),
                playbook=str(Path(self.settings.repo) / "api" / "playbooks" / "drift.yml"),
                inventory=str(self.settings.inventory),
                envvars=ansible_env(self.settings.repo) | {"ANSIBLE_NOCOLOR": "1"},
                suppress_env_files=True,
                quiet=True,
                event_handler=on_event,
                # It holds the routing lock: a host that hangs does not stop routing for long.
                timeout=min(self.settings.job_timeout, CHECK_TIMEOUT),
                settings={"pexpect_timeout": 1, "suppress_ansible_output": True},
            )
        observed = stats.get("shadowdb_api_drift")
        if isinstance(observed, dict):
            return observed, None  # unreachable hosts fail the run but are findings, not an error
        log.warning("drift check: drift.yml ended %s (rc %s) without a result", runner.status, runner.rc)
        return None, f"the drift check could not run (ansible-playbook {runner.status}, rc {runner.rc})"

"""A tenant's backups as the repository holds them now (GET /v1/tenants/{name}/backups).

Read by a run of playbooks/tenant_backup.yml with type none (it only reads: pgbackrest info of
the tenant's stanza on the backup repository), in the request's thread pool: a few seconds.
Taking a backup or restoring is a job (POST .../backups, POST .../restore).
"""

import logging
import tempfile
from pathlib import Path

import ansible_runner

from .settings import Settings, ansible_env

log = logging.getLogger("shadowdb.api.backups")
# Seconds a read may take.
READ_TIMEOUT = 120


class BackupsUnavailable(Exception):
    """The repository could not be read (the message says why, never a secret)."""


def read_backups(settings: Settings, tenant: str) -> dict:
    """The tenant's backups (shadowdb.shadowdb_backup_summary's form); BackupsUnavailable when the
    repository cannot be read or has no stanza of the tenant."""
    stats: dict = {}
    failures: list[str] = []

    def on_event(event: dict) -> bool:
        data = event.get("event_data") or {}
        if event.get("event") == "playbook_on_stats":
            stats.update(data.get("artifact_data") or {})
        elif event.get("event") == "runner_on_failed" and not data.get("ignore_errors"):
            failures.append(str((data.get("res") or {}).get("msg") or "a task failed"))
        return False

    settings.work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    with tempfile.TemporaryDirectory(prefix="backups-", dir=settings.work_dir) as data_dir:
        runner = ansible_runner.run(
            private_data_dir=data_dir,
            project_dir=str(settings.repo),
            playbook=str(Path(settings.repo) / "playbooks" / "tenant_backup.yml"),
            inventory=str(settings.inventory),
            extravars={"tenant": tenant, "type": "none"},
            envvars=ansible_env(settings.repo) | {"ANSIBLE_NOCOLOR": "1"},
            suppress_env_files=True,
            quiet=True,
            event_handler=on_event,
            timeout=READ_TIMEOUT,
            settings={"pexpect_timeout": 1, "suppress_ansible_output": True},
        )
    summary = stats.get("shadowdb_backups")
    if runner.status == "successful" and isinstance(summary, dict):
        return summary
    log.warning(
        "backups of %s: tenant_backup.yml ended %s (rc %s): %s", tenant, runner.status, runner.rc, failures
    )
    reason = " ".join(failures[-1].split())[:300] if failures else f"the run ended {runner.status}"
    raise BackupsUnavailable(reason)

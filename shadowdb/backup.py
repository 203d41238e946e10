"""Backups of a tenant with pgBackRest: names, paths and settings, stated once.

A deployment with hosts in its ``backup`` inventory group keeps every tenant's backups there (the
repository host, roles/backup_repository), one pgBackRest stanza per tenant, named after it. Two
TLS servers of pgBackRest take part, both checking the client's certificate (deployment CA) and
its common name against ``tls-server-auth``:
- the repository's (user ``pgbackrest``): a tenant's identity ``<tenant>.backup.<domain>`` is
  authorized for its own stanza only, so one tenant can neither read nor delete another's backups;
- the tenant's backup agent on its db host (the tenant's OS user, sandboxed like its PostgreSQL):
  pgBackRest takes backups from the repository host, which reaches the tenant's data directory
  through it with the repository's identity ``backup-repository`` (authorized for that stanza).
Tenant names have no dots, so no tenant identity can be the repository's.

WAL leaves the tenant by its ``archive_command`` (asynchronous ``archive-push``, spooled on the
tenant's own volume, the queue bounded so that a repository outage never fills the tenant's disk).

The roles derive the same names (roles/tenant_backup/vars/main.yml,
roles/backup_repository/defaults/main.yml): change them together.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from .errors import SpecError
from .layout import MOUNT_ROOT, tenant_layout
from .tiers import OPTIONAL_TIER_KEYS, shadowdb_tier
from .values import show

# The repository's identity towards the tenants' agents (not a valid tenant-derived name).
REPOSITORY_CLIENT_CN = "backup-repository"
# The tenant's pgBackRest files on its own volume (the agent and archive_command read them there:
# the tenant's sandbox hides /etc/shadowdb and /etc/pgbackrest).
BACKUP_DIR_NAME = "backup"
AGENT_UNIT = "shadowdb-backup-agent@{tenant}.service"
# The repository host's timers, per tenant.
FULL_TIMER = "shadowdb-backup-full@{tenant}.timer"
DIFF_TIMER = "shadowdb-backup-diff@{tenant}.timer"
# The spool of asynchronous archiving never holds more than this share of the tenant's disk: past
# it, pgBackRest drops WAL (PostgreSQL goes on; point-in-time recovery has a gap until the next
# backup, and `pgbackrest check` says so) rather than filling the volume.
QUEUE_SHARE = 4


def shadowdb_backup_client_cn(tenant: str, domain: str) -> str:
    """The tenant's identity at the repository: ``<tenant>.backup.<domain>``."""
    return f"{tenant_layout(tenant).name}.backup.{domain}"


def shadowdb_backup_enabled(spec, default: bool, repository_hosts) -> bool:
    """Whether a tenant has backups: its spec's ``backup`` when given, else the deployment's
    default, and only where the inventory has a repository host."""
    if not repository_hosts:
        return False
    wanted = spec.get("backup")
    return bool(default if wanted is None else wanted)


def shadowdb_backup_layout(tenant, mount_root: str = MOUNT_ROOT) -> dict:
    """Paths and units of a tenant's backups on its db host."""
    layout = tenant_layout(tenant, mount_root=mount_root)
    backup_dir = f"{layout.home}/{BACKUP_DIR_NAME}"
    return {
        "dir": backup_dir,
        "config": f"{backup_dir}/pgbackrest.conf",
        "spool": f"{backup_dir}/spool",
        "log": f"{backup_dir}/log",
        "lock": f"{backup_dir}/lock",
        "ca": f"{backup_dir}/ca.crt",
        "key": f"{layout.tls_dir}/backup.key",
        "cert": f"{layout.tls_dir}/backup.crt",
        "agent_unit": AGENT_UNIT.format(tenant=layout.name),
        "full_timer": FULL_TIMER.format(tenant=layout.name),
        "diff_timer": DIFF_TIMER.format(tenant=layout.name),
    }


def shadowdb_archive_settings(tenant, tier_name, tiers=None, mount_root: str = MOUNT_ROOT) -> dict:
    """postgresql.conf settings of a tenant with backups (managed: a tenant cannot set them)."""
    tier = shadowdb_tier(tier_name, tiers)
    paths = shadowdb_backup_layout(tenant, mount_root)
    timeout = tier.get("archive_timeout_s", OPTIONAL_TIER_KEYS["archive_timeout_s"])
    return {
        "archive_mode": "on",
        "archive_command": (
            f"pgbackrest --config={paths['config']} --config-include-path={paths['dir']}/conf.d"
            f" --stanza={tenant} archive-push %p"
        ),
        "archive_timeout": f"{timeout}s",
    }


def shadowdb_archive_queue_max_mb(tier_name, tiers=None) -> int:
    """The bound of a tenant's archive spool (pgBackRest archive-push-queue-max), in MiB."""
    return max(16, shadowdb_tier(tier_name, tiers)["disk_size_mb"] // QUEUE_SHARE)


# What a restore may be asked to go back to.
RESTORE_TARGET_KINDS = ("time", "lsn", "latest")
_LSN_RE = re.compile(r"[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}", re.ASCII)


def shadowdb_check_restore_target(target) -> dict:
    """A restore target's shape ({time: <with a zone>}, {lsn: ...} or {latest: true}), checked
    without the backups (the API, before a job is queued); the playbook checks it against them."""
    kind, value = _target_kind(target)
    if kind == "latest" and value is not True:
        raise SpecError("target.latest", f"{show(value)}: only true")
    if kind == "lsn" and not (isinstance(value, str) and _LSN_RE.fullmatch(value)):
        raise SpecError("target.lsn", f"{show(value)} is not an LSN; use the form 0/3000060")
    if kind == "time":
        _target_time(value)
    return {kind: value}


def _target_kind(target) -> tuple:
    """(kind, value) of a restore target of one key among RESTORE_TARGET_KINDS; SpecError else."""
    if not isinstance(target, dict) or len(target) != 1 or next(iter(target)) not in RESTORE_TARGET_KINDS:
        raise SpecError(
            "target",
            f"{show(target)} is not a restore target; use one of "
            "{time: ...}, {lsn: ...}, {latest: true}",
        )
    return next(iter(target.items()))


def _target_time(value) -> datetime:
    """A target time with its zone; SpecError naming target.time else."""
    try:
        return _parse_time(str(value))
    except ValueError:
        raise SpecError(
            "target.time", f"{show(value)} is not a time with a zone; use the form 2026-12-02 10:00:00+00"
        ) from None


def _parse_time(value: str) -> datetime:
    text = value.strip().replace(" ", "T", 1)
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError("no time zone")
    return moment


def shadowdb_restore_target(target, info=None, now=None) -> dict:
    """Check a restore target against a stanza's ``pgbackrest info --output=json`` entry.

    ``target``: {"time": "2026-12-02 10:00:00+00"}, {"lsn": "0/3000060"} or {"latest": true}.
    Returns the pgBackRest options: {"type": ..., "target": ... or None, "time": epoch or None}.
    Refuses (SpecError naming the problem) a target the backups cannot reach: a time before the
    end of the first backup, a time in the future, or a stanza with no backup at all.
    """
    kind, value = _target_kind(target)
    backups = (info or {}).get("backup") or []
    if not backups:
        raise SpecError("target", "the tenant has no backup yet; nothing to restore from")
    first_stop = min(b["timestamp"]["stop"] for b in backups)
    if kind == "latest":
        return {"type": "default", "target": None, "time": None}
    if kind == "lsn":
        if not isinstance(value, str) or not _LSN_RE.fullmatch(value):
            raise SpecError("target.lsn", f"{show(value)} is not an LSN; use the form 0/3000060")
        first_lsn = min(b.get("lsn", {}).get("stop", "0/0") for b in backups)
        if _lsn(value) < _lsn(first_lsn):
            raise SpecError("target.lsn", f"{value} is before the end of the first backup ({first_lsn})")
        return {"type": "lsn", "target": value.upper(), "time": None}
    moment = _target_time(value)
    epoch = int(moment.timestamp())
    now = datetime.now(UTC).timestamp() if now is None else now
    if epoch > now:
        raise SpecError("target.time", f"{value} is in the future")
    if epoch < first_stop:
        first = datetime.fromtimestamp(first_stop, UTC).isoformat(sep=" ")
        raise SpecError("target.time", f"{value} is before the end of the first backup ({first})")
    return {"type": "time", "target": moment.isoformat(sep=" "), "time": epoch}


def _lsn(text: str) -> int:
    high, low = text.split("/")
    return (int(high, 16) << 32) + int(low, 16)


def shadowdb_backup_summary(info) -> dict:
    """A stanza's backups for people and the API: each backup's type, times, sizes and WAL range,
    and the restorable window (from the end of the first backup to the last archived WAL)."""
    backups = []
    for b in (info or {}).get("backup") or []:
        backups.append(
            {
                "label": b["label"],
                "type": b["type"],
                "start": b["timestamp"]["start"],
                "stop": b["timestamp"]["stop"],
                "size": b.get("info", {}).get("size"),
                "repo_size": b.get("info", {}).get("repository", {}).get("delta"),
                "wal_start": b.get("archive", {}).get("start"),
                "wal_stop": b.get("archive", {}).get("stop"),
                "lsn_stop": b.get("lsn", {}).get("stop"),
            }
        )
    archives = (info or {}).get("archive") or []
    wal_max = max((a.get("max") for a in archives if a.get("max")), default=None)
    return {
        "backups": backups,
        "restorable_from": min((b["stop"] for b in backups), default=None),
        "last_backup_stop": max((b["stop"] for b in backups), default=None),
        "wal_max": wal_max,
    }


def shadowdb_clone_plan(clones, infos, now=None) -> dict:
    """What each clone restores: {clone: {"source", "type", "target"} or {"error": why}}.

    ``clones``: [{name, source: {tenant, time|lsn|latest}}]; ``infos``: {source tenant: its
    stanza's ``pgbackrest info --output=json`` entry, or None when it has none}. A clone whose
    source has no backups, or whose target they cannot reach, gets an error naming the problem.
    """
    plan = {}
    for clone in clones:
        source = dict(clone["source"])
        tenant = source.pop("tenant")
        info = (infos or {}).get(tenant)
        if not info:
            plan[clone["name"]] = {"error": f"source {tenant}: no backups (no such tenant, or it has none)"}
            continue
        try:
            options = shadowdb_restore_target(source, info, now)
        except SpecError as e:
            plan[clone["name"]] = {"error": f"source {tenant}: {e}"}
            continue
        plan[clone["name"]] = {"source": tenant, "type": options["type"], "target": options["target"] or ""}
    return plan


def shadowdb_restore_target_of_summary(target, summary, now=None) -> dict:
    """shadowdb_restore_target against a summary (shadowdb_backup_summary's form, what the API reads)."""
    backups = [
        {"timestamp": {"stop": b["stop"]}, "lsn": {"stop": b.get("lsn_stop") or "0/0"}}
        for b in (summary or {}).get("backups") or []
    ]
    return shadowdb_restore_target(target, {"backup": backups}, now)

"""shadowdb/backup.py: who has backups, the names and paths of a tenant's backups, the archive
settings, and the restore targets refused before anything is stopped."""

import re
from datetime import UTC, datetime

import pytest

from shadowdb import SpecError
from shadowdb.backup import (
    REPOSITORY_CLIENT_CN,
    shadowdb_archive_queue_max_mb,
    shadowdb_archive_settings,
    shadowdb_backup_client_cn,
    shadowdb_backup_enabled,
    shadowdb_backup_layout,
    shadowdb_backup_summary,
    shadowdb_clone_plan,
    shadowdb_restore_target,
)
from shadowdb.spec import TENANT_NAME_RE, shadowdb_validate_tenant

FIRST_STOP = int(datetime(2026, 12, 2, 10, 0, 0, tzinfo=UTC).timestamp())
NOW = FIRST_STOP + 3600
INFO = {
    "backup": [
        {
            "label": "20261202-100000F",
            "type": "full",
            "timestamp": {"start": FIRST_STOP - 5, "stop": FIRST_STOP},
            "lsn": {"start": "0/2000028", "stop": "0/2000100"},
            "archive": {"start": "000000010000000000000002", "stop": "000000010000000000000002"},
            "info": {"size": 30000000, "repository": {"delta": 5000000}},
        },
        {
            "label": "20261202-100000F_20261202-103000D",
            "type": "diff",
            "timestamp": {"start": FIRST_STOP + 1795, "stop": FIRST_STOP + 1800},
            "lsn": {"start": "0/5000028", "stop": "0/5000100"},
            "archive": {"start": "000000010000000000000005", "stop": "000000010000000000000005"},
            "info": {"size": 30000000, "repository": {"delta": 100000}},
        },
    ],
    "archive": [{"min": "000000010000000000000001", "max": "000000010000000000000007"}],
}


@pytest.mark.parametrize(
    ("spec", "default", "repositories", "expected"),
    [
        ({"name": "acme"}, True, ["backup1"], True),
        ({"name": "acme"}, False, ["backup1"], False),
        ({"name": "acme", "backup": True}, False, ["backup1"], True),
        ({"name": "acme", "backup": False}, True, ["backup1"], False),
        ({"name": "acme", "backup": True}, True, [], False),
    ],
)
def test_backups_need_a_repository_and_follow_the_spec_then_the_default(
    spec, default, repositories, expected
):
    assert shadowdb_backup_enabled(spec, default, repositories) is expected


def test_the_spec_keeps_backup_only_when_given():
    assert "backup" not in shadowdb_validate_tenant({"name": "acme"})
    assert shadowdb_validate_tenant({"name": "acme", "backup": "no"})["backup"] is False
    with pytest.raises(SpecError, match="tenant.backup"):
        shadowdb_validate_tenant({"name": "acme", "backup": "sometimes"})
    assert shadowdb_validate_tenant({"name": "acme", "backup": True, "replicas": 1})["backup"] is True
    assert "backup" not in shadowdb_validate_tenant({"name": "acme", "replicas": 1})  # the default: none
    with pytest.raises(SpecError, match="a clone is made standalone"):
        shadowdb_validate_tenant({"name": "acme", "replicas": 1, "source": {"tenant": "src", "latest": True}})


def test_no_tenant_identity_can_be_the_repositorys():
    """Tenant names have no dot, so <tenant>.backup.<domain> never equals the repository's CN,
    and the repository's placeholder stanza "_none" is no tenant's."""
    assert shadowdb_backup_client_cn("acme", "db.example") == "acme.backup.db.example"
    assert "." not in REPOSITORY_CLIENT_CN
    assert not re.fullmatch(TENANT_NAME_RE, "_none")


def test_layout_and_archive_settings_live_on_the_tenants_volume():
    paths = shadowdb_backup_layout("acme")
    assert paths["config"] == "/mnt/db/acme/backup/pgbackrest.conf"
    assert paths["key"] == "/mnt/db/acme/tls/backup.key"
    assert paths["agent_unit"] == "shadowdb-backup-agent@acme.service"
    settings = shadowdb_archive_settings("acme", "large")
    assert settings["archive_mode"] == "on"
    assert settings["archive_timeout"] == "60s"
    assert settings["archive_command"] == (
        "pgbackrest --config=/mnt/db/acme/backup/pgbackrest.conf"
        " --config-include-path=/mnt/db/acme/backup/conf.d --stanza=acme archive-push %p"
    )


def test_a_tier_without_backup_keys_gets_the_defaults():
    tiers = {
        "tiny": {
            "disk_size_mb": 64,
            "memory_mb": 128,
            "cpu_quota_pct": 10,
            "max_connections": 5,
            "nofile": 256,
            "tasks_max": 32,
        }
    }
    assert shadowdb_archive_settings("acme", "tiny", tiers)["archive_timeout"] == "300s"
    assert shadowdb_archive_queue_max_mb("tiny", tiers) == 16  # a quarter of 64 MiB, at least 16
    assert shadowdb_archive_queue_max_mb("small") == 256


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ({"latest": True}, {"type": "default", "target": None, "time": None}),
        (
            {"time": "2026-12-02 10:10:00+00"},
            {"type": "time", "target": "2026-12-02 10:10:00+00:00", "time": FIRST_STOP + 600},
        ),
        (
            {"time": "2026-12-02T11:10:00+01:00"},
            {"type": "time", "target": "2026-12-02 11:10:00+01:00", "time": FIRST_STOP + 600},
        ),
        (
            {"time": "2026-12-02 10:00:00Z"},
            {"type": "time", "target": "2026-12-02 10:00:00+00:00", "time": FIRST_STOP},
        ),
        ({"lsn": "0/3000060"}, {"type": "lsn", "target": "0/3000060", "time": None}),
    ],
)
def test_reachable_targets(target, expected):
    assert shadowdb_restore_target(target, INFO, now=NOW) == expected


@pytest.mark.parametrize(
    ("target", "info", "field", "message"),
    [
        ({"time": "2026-12-02 09:59:59+00"}, INFO, "target.time", "is before the end of the first backup"),
        ({"time": "2026-12-02 11:00:01+00"}, INFO, "target.time", "is in the future"),
        ({"time": "2026-12-02 10:10:00"}, INFO, "target.time", "is not a time with a zone"),
        ({"time": 12}, INFO, "target.time", "is not a time with a zone"),
        ({"lsn": "0/1000000"}, INFO, "target.lsn", "is before the end of the first backup"),
        ({"lsn": "nowhere"}, INFO, "target.lsn", "is not an LSN"),
        ({"latest": True}, {"backup": []}, "target", "has no backup yet"),
        ({"when": "now"}, INFO, "target", "is not a restore target"),
        ({"time": "x", "lsn": "0/1"}, INFO, "target", "is not a restore target"),
        ("latest", INFO, "target", "is not a restore target"),
    ],
)
def test_unreachable_targets_are_refused(target, info, field, message):
    with pytest.raises(SpecError) as exc:
        shadowdb_restore_target(target, info, now=NOW)
    assert exc.value.field == field and message in str(exc.value)


def test_summary_shows_each_backup_and_the_restorable_window():
    summary = shadowdb_backup_summary(INFO)
    assert [b["type"] for b in summary["backups"]] == ["full", "diff"]
    assert summary["restorable_from"] == FIRST_STOP
    assert summary["last_backup_stop"] == FIRST_STOP + 1800
    assert summary["wal_max"] == "000000010000000000000007"
    assert summary["backups"][1]["repo_size"] == 100000
    assert shadowdb_backup_summary({})["backups"] == []


def test_a_clone_source_is_checked_for_its_shape():
    spec = shadowdb_validate_tenant(
        {"name": "copy", "source": {"tenant": "acme", "time": "2026-12-02 10:10:00+00"}}
    )
    assert spec["source"] == {"tenant": "acme", "time": "2026-12-02 10:10:00+00"}
    assert shadowdb_validate_tenant({"name": "copy", "source": {"tenant": "acme", "latest": "yes"}})[
        "source"
    ] == {
        "tenant": "acme",
        "latest": True,
    }
    assert "source" not in shadowdb_validate_tenant({"name": "copy"})
    # Its own name: a removed tenant made again from its backups.
    assert shadowdb_validate_tenant({"name": "copy", "source": {"tenant": "copy", "latest": True}})[
        "source"
    ] == {
        "tenant": "copy",
        "latest": True,
    }


@pytest.mark.parametrize(
    ("source", "field", "message"),
    [
        ("acme", "tenant.source", "is not a mapping"),
        ({"tenant": "acme"}, "tenant.source", "exactly one of time, lsn, latest"),
        ({"tenant": "acme", "time": "x", "lsn": "0/1"}, "tenant.source", "exactly one of time, lsn, latest"),
        ({"tenant": "Acme!", "latest": True}, "tenant.source.tenant", ""),
        ({"tenant": "acme", "latest": False}, "tenant.source.latest", "only true"),
        ({"tenant": "acme", "when": "now"}, "tenant.source.when", "unknown field"),
        ({"tenant": "acme", "time": 12}, "tenant.source.time", "is not a time"),
    ],
)
def test_a_bad_clone_source_is_refused(source, field, message):
    with pytest.raises(SpecError) as exc:
        shadowdb_validate_tenant({"name": "copy", "source": source})
    assert exc.value.field == field and message in str(exc.value)


def test_clone_plan_names_each_clone_that_its_source_cannot_give():
    clones = [
        {"name": "c1", "source": {"tenant": "acme", "time": "2026-12-02 10:10:00+00"}},
        {"name": "c2", "source": {"tenant": "acme", "time": "2001-01-01 00:00:00+00"}},
        {"name": "c3", "source": {"tenant": "gone", "latest": True}},
        {"name": "c4", "source": {"tenant": "acme", "latest": True}},
    ]
    plan = shadowdb_clone_plan(clones, {"acme": INFO, "gone": None}, now=NOW)
    assert plan["c1"] == {"source": "acme", "type": "time", "target": "2026-12-02 10:10:00+00:00"}
    assert "before the end of the first backup" in plan["c2"]["error"]
    assert plan["c3"] == {"error": "source gone: no backups (no such tenant, or it has none)"}
    assert plan["c4"] == {"source": "acme", "type": "default", "target": ""}

"""Unit tests for shadowdb/tiers.py: tiers, setting overrides, postgresql.conf, tier bounds."""

from __future__ import annotations

import json

import pytest

from shadowdb.spec import shadowdb_validate_tenant, shadowdb_validate_tenants
from shadowdb.tiers import (
    DEFAULT_TIERS,
    OVERRIDABLE_SETTINGS,
    TIER_KEYS,
    TIER_SETTING_BOUNDS,
    shadowdb_pg_settings,
    shadowdb_tier,
    shadowdb_tier_limits,
    shadowdb_validate_settings,
)
from tests.unit.spec_cases import TINY, assert_spec_error, raises_spec_error

# ---------------------------------------------------------------------------
# Tiers
# ---------------------------------------------------------------------------

EXPECTED_TIERS = {
    "small": {
        "archive_timeout_s": 300,
        "backup_retention_full": 2,
        "cpu_quota": "50%",
        "cpu_quota_pct": 50,
        "disk_size_mb": 1024,
        "effective_cache_size_mb": 384,
        "maintenance_work_mem_mb": 32,
        "max_connections": 50,
        "memory_max": "512M",
        "memory_mb": 512,
        "name": "small",
        "nofile": 1024,
        "shared_buffers_mb": 128,
        "shm_size": "128M",
        "tasks_max": 256,
        "temp_file_limit_mb": 512,
        "work_mem_kb": 2621,
    },
    "medium": {
        "archive_timeout_s": 120,
        "backup_retention_full": 3,
        "cpu_quota": "100%",
        "cpu_quota_pct": 100,
        "disk_size_mb": 2048,
        "effective_cache_size_mb": 768,
        "maintenance_work_mem_mb": 64,
        "max_connections": 100,
        "memory_max": "1024M",
        "memory_mb": 1024,
        "name": "medium",
        "nofile": 2048,
        "shared_buffers_mb": 256,
        "shm_size": "256M",
        "tasks_max": 512,
        "temp_file_limit_mb": 1024,
        "work_mem_kb": 2621,
    },
    "large": {
        "archive_timeout_s": 60,
        "backup_retention_full": 4,
        "cpu_quota": "200%",
        "cpu_quota_pct": 200,
        "disk_size_mb": 4096,
        "effective_cache_size_mb": 1536,
        "maintenance_work_mem_mb": 128,
        "max_connections": 200,
        "memory_max": "2048M",
        "memory_mb": 2048,
        "name": "large",
        "nofile": 4096,
        "shared_buffers_mb": 512,
        "shm_size": "512M",
        "tasks_max": 1024,
        "temp_file_limit_mb": 2048,
        "work_mem_kb": 2621,
    },
}


@pytest.mark.parametrize("tier", sorted(EXPECTED_TIERS))
def test_tier_sizing(tier):
    result = shadowdb_tier(tier)
    assert result == EXPECTED_TIERS[tier]
    assert list(result) == sorted(result)


def test_tier_does_not_mutate_the_default_table():
    before = json.dumps(DEFAULT_TIERS, sort_keys=True)
    shadowdb_tier("small")["memory_mb"] = 1
    assert json.dumps(DEFAULT_TIERS, sort_keys=True) == before


def test_custom_tiers_replace_the_defaults_and_floors_apply():
    tier = shadowdb_tier("tiny", tiers=TINY)
    # 128MB spread over 500 connections would be tiny: floored at 1MB / 16MB.
    assert tier["work_mem_kb"] == 1024
    assert tier["maintenance_work_mem_mb"] == 16
    assert tier["shared_buffers_mb"] == 32
    assert tier["temp_file_limit_mb"] == 150
    assert (tier["memory_max"], tier["cpu_quota"]) == ("128M", "25%")
    assert tier["shm_size"] == "64M"  # a quarter of 128M, floored at 64M
    exc = raises_spec_error(shadowdb_tier, "small", tiers=TINY)
    assert_spec_error(exc, "tenant.tier", None, "unknown tier 'small'; known tiers: tiny")


@pytest.mark.parametrize("tiers", [None, {}])
def test_empty_tiers_mean_defaults(tiers):
    assert shadowdb_tier("medium", tiers=tiers) == EXPECTED_TIERS["medium"]


def test_custom_tier_values_may_be_digit_strings():
    tiers = {"tiny": {key: str(value) for key, value in TINY["tiny"].items()}}
    assert shadowdb_tier("tiny", tiers=tiers) == shadowdb_tier("tiny", tiers=TINY)


@pytest.mark.parametrize("tier", ["huge", "Small", "", None, 1])
def test_unknown_tier(tier):
    exc = raises_spec_error(shadowdb_tier, tier)
    assert_spec_error(exc, "tenant.tier", None, "known tiers: large, medium, small")
    assert str(exc).startswith(f"tenant.tier: unknown tier {tier!r}")


def test_unknown_tier_message_is_exact():
    exc = raises_spec_error(shadowdb_validate_tenant, {"name": "acme", "tier": "huge"})
    assert str(exc) == "tenant.tier: unknown tier 'huge'; known tiers: large, medium, small"


@pytest.mark.parametrize(
    ("tiers", "field", "fragment"),
    [
        ({"tiny": {**TINY["tiny"], "nofile": None}}, "tiers.tiny.nofile", "not an integer"),
        ({"tiny": {**TINY["tiny"], "memory_mb": 0}}, "tiers.tiny.memory_mb", "not positive"),
        ({"tiny": {**TINY["tiny"], "memory_mb": True}}, "tiers.tiny.memory_mb", "not an integer"),
        (
            {"tiny": {k: v for k, v in TINY["tiny"].items() if k != "tasks_max"}},
            "tiers.tiny.tasks_max",
            "missing",
        ),
        ({"tiny": {**TINY["tiny"], "memory_MB": 1}}, "tiers.tiny.memory_MB", "unknown tier key"),
        ({"tiny": "big"}, "tiers.tiny", "not a mapping"),
        (["small"], "tiers", "not a mapping"),
    ],
)
def test_invalid_tier_tables(tiers, field, fragment):
    exc = raises_spec_error(shadowdb_tier, "tiny", tiers=tiers)
    assert_spec_error(exc, field, None, fragment)


# ---------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("work_mem", 4096, "4096"),
        ("work_mem", "64MB", "64MB"),
        ("work_mem", "64 MB", "64MB"),
        ("work_mem", " 1GB ", "1GB"),
        ("work_mem", "65536B", "65536B"),
        ("maintenance_work_mem", "1TB", "1TB"),
        ("shared_buffers", "128kB", "128kB"),
        ("shared_buffers", 16, "16"),
        ("effective_cache_size", "3GB", "3GB"),
        ("temp_file_limit", -1, "-1"),
        ("temp_file_limit", "-1", "-1"),
        ("temp_file_limit", 0, "0"),
        ("max_wal_size", "1GB", "1GB"),
        ("min_wal_size", 80, "80"),
        ("statement_timeout", 0, "0"),
        ("statement_timeout", "30s", "30s"),
        ("statement_timeout", "5 min", "5min"),
        ("lock_timeout", "1500ms", "1500ms"),
        ("idle_in_transaction_session_timeout", "1h", "1h"),
        ("log_min_duration_statement", -1, "-1"),
        ("log_min_duration_statement", "250ms", "250ms"),
        ("checkpoint_timeout", "5min", "5min"),
        ("checkpoint_timeout", 300, "300"),
        ("checkpoint_timeout", "1d", "1d"),
        ("autovacuum_naptime", "1s", "1s"),
        ("random_page_cost", 1.1, "1.1"),
        ("random_page_cost", "1.1", "1.1"),
        ("random_page_cost", 4, "4"),
        ("random_page_cost", "4.0", "4"),
        ("checkpoint_completion_target", 0.9, "0.9"),
        ("effective_io_concurrency", 200, "200"),
        ("effective_io_concurrency", "0", "0"),
        ("default_statistics_target", 10000, "10000"),
        ("max_parallel_workers_per_gather", 64, "64"),
        ("max_connections", 5, "5"),
        ("jit", True, "on"),
        ("jit", False, "off"),
        ("jit", "off", "off"),
        ("jit", "TRUE", "on"),
        ("autovacuum", "on", "on"),
        ("log_connections", "false", "off"),
        ("log_statement", "DDL", "ddl"),
        ("log_statement", "none", "none"),
        ("synchronous_commit", False, "off"),
        ("synchronous_commit", "remote_apply", "remote_apply"),
        ("synchronous_commit", "local", "local"),
        ("wal_compression", True, "on"),
        ("wal_compression", "zstd", "zstd"),
        ("huge_pages", "try", "try"),
        ("huge_pages", False, "off"),
        ("default_transaction_isolation", "Repeatable Read", "repeatable read"),
        ("timezone", "Europe/Paris", "Europe/Paris"),
        ("datestyle", "ISO, DMY", "ISO, DMY"),
        ("search_path", '"$user", public', '"$user", public'),
        ("search_path", "", ""),
    ],
)
def test_setting_values_are_normalized(name, value, expected):
    assert shadowdb_validate_settings({name: value}) == {name: expected}


def test_setting_names_are_case_insensitive_and_output_sorted():
    result = shadowdb_validate_settings({"work_mem": "8MB", "TimeZone": "UTC", "JIT": False})
    assert result == {"jit": "off", "timezone": "UTC", "work_mem": "8MB"}
    assert list(result) == sorted(result)


@pytest.mark.parametrize("settings", [None, {}])
def test_no_settings(settings):
    assert shadowdb_validate_settings(settings) == {}


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("work_mem", "12 XB", "is not a valid size; use an integer number of kB or a number with a unit"),
        ("work_mem", "64mb", "is not a valid size"),
        ("work_mem", "1.5MB", "is not a valid size"),
        ("work_mem", "-5", "is not a valid size"),
        ("work_mem", 1.5, "is not a valid size"),
        ("work_mem", True, "is not a valid size"),
        ("work_mem", None, "is not a valid size"),
        ("work_mem", "1kB", "is below the minimum of 64kB"),
        ("work_mem", -1, "no -1 for this setting"),
        ("work_mem", "3000000000", "is above the maximum"),
        ("work_mem", "9" * 5000, "is above the maximum"),
        ("max_connections", "9" * 5000, "use an integer from 5 to 10000"),
        ("random_page_cost", "9" * 5000, "is out of range"),
        ("shared_buffers", "64kB", "is below the minimum of 128kB"),
        ("max_wal_size", "16MB", "is below the minimum of 32MB"),
        ("temp_file_limit", -2, "is negative"),
        ("statement_timeout", "10 sec", "is not a valid time; use an integer number of ms"),
        ("statement_timeout", -1, "no -1 for this setting"),
        ("checkpoint_timeout", "10s", "is below the minimum of 30s"),
        ("checkpoint_timeout", "2d", "is above the maximum of 1d"),
        ("jit", "maybe", "is not a boolean"),
        ("jit", 1, "is not a boolean"),
        ("log_statement", "verbose", "use one of: none, ddl, mod, all"),
        ("log_statement", True, "use one of"),
        ("synchronous_commit", "sometimes", "use one of: on, off, local, remote_write, remote_apply"),
        ("wal_compression", "gzip", "use one of"),
        ("default_transaction_isolation", "snapshot", "use one of"),
        ("random_page_cost", "fast", "is not a number"),
        ("random_page_cost", -1, "is out of range"),
        ("random_page_cost", float("nan"), "is out of range"),
        ("random_page_cost", float("inf"), "is out of range"),
        ("checkpoint_completion_target", 1.5, "use a number from 0 to 1"),
        ("effective_io_concurrency", 1001, "use an integer from 0 to 1000"),
        ("effective_io_concurrency", "ten", "is not an integer"),
        ("effective_io_concurrency", 2.0, "is not an integer"),
        ("default_statistics_target", 0, "use an integer from 1 to 10000"),
        ("max_parallel_workers_per_gather", 65, "use an integer from 0 to 64"),
        ("max_connections", 4, "use an integer from 5 to 10000"),
        ("search_path", "public'; DROP TABLE x; --", "contains a single quote"),
        ("search_path", "public\nport = 1", "contains a newline"),
        ("timezone", "UTC\x00", "contains a NUL character"),
        ("datestyle", "ISO\\", "contains a backslash"),
        ("datestyle", "ISO\t", "contains a control character"),
        ("timezone", "x" * 1025, "1025 characters long"),
        ("timezone", 5, "is not a string"),
    ],
)
def test_invalid_setting_values(name, value, fragment):
    exc = raises_spec_error(shadowdb_validate_settings, {name: value})
    field = f"tenant.settings.{name}"
    assert exc.field == field
    if isinstance(value, str) and len(repr(value)) < 80:
        assert_spec_error(exc, field, value, fragment)
    else:
        assert_spec_error(exc, field, None, fragment)


@pytest.mark.parametrize(
    "name",
    [
        "port",
        "listen_addresses",
        "unix_socket_directories",
        "data_directory",
        "hba_file",
        "ssl",
        "ssl_key_file",
        "shared_preload_libraries",
        "password_encryption",
        "archive_command",
        "cluster_name",
        "logging_collector",
    ],
)
def test_managed_settings_cannot_be_overridden(name):
    exc = raises_spec_error(shadowdb_validate_settings, {name: "x"})
    assert str(exc) == f"tenant.settings.{name}: {name!r} is managed by ShadowDB and cannot be overridden"
    assert exc.field == f"tenant.settings.{name}"


def test_managed_setting_check_ignores_case():
    exc = raises_spec_error(shadowdb_validate_settings, {"Port": 5433})
    assert_spec_error(exc, "tenant.settings.Port", None, "'Port' is managed by ShadowDB")


def test_unknown_setting_lists_overridable_settings_sorted():
    exc = raises_spec_error(shadowdb_validate_settings, {"foo": 1})
    expected = ", ".join(sorted(OVERRIDABLE_SETTINGS))
    assert str(exc) == (
        f"tenant.settings.foo: unknown or not overridable setting 'foo'; overridable settings: {expected}"
    )
    assert exc.field == "tenant.settings.foo"


def test_custom_field_prefix():
    exc = raises_spec_error(shadowdb_validate_settings, {"foo": 1}, field="overrides")
    assert exc.field == "overrides.foo"


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        ("work_mem=8MB", "is not a mapping"),
        (["work_mem"], "is not a mapping"),
        ({"work mem": 1}, "is not a valid setting name"),
        ({1: 1}, "is not a valid setting name"),
    ],
)
def test_malformed_settings(settings, fragment):
    exc = raises_spec_error(shadowdb_validate_settings, settings)
    assert_spec_error(exc, "tenant.settings", None, fragment)


def test_same_setting_twice_with_different_case():
    exc = raises_spec_error(shadowdb_validate_settings, {"TimeZone": "UTC", "timezone": "UTC"})
    assert exc.field.lower() == "tenant.settings.timezone"
    assert "given twice" in str(exc)


# ---------------------------------------------------------------------------
# postgresql.conf settings
# ---------------------------------------------------------------------------


def test_pg_settings_from_tier():
    assert shadowdb_pg_settings("small") == {
        "effective_cache_size": "384MB",
        "maintenance_work_mem": "32MB",
        "max_connections": "50",
        "shared_buffers": "128MB",
        "shared_preload_libraries": "pg_stat_statements",
        "temp_file_limit": "512MB",
        "work_mem": "2621kB",
    }


def test_pg_settings_overrides_win_and_output_is_sorted_strings():
    result = shadowdb_pg_settings(
        "large",
        overrides={"work_mem": "16MB", "max_connections": 150, "jit": False, "statement_timeout": "30s"},
    )
    assert result["work_mem"] == "16MB"
    assert result["max_connections"] == "150"
    assert result["jit"] == "off"
    assert result["statement_timeout"] == "30s"
    assert result["shared_buffers"] == "512MB"  # not overridden: from the tier
    assert list(result) == sorted(result)
    assert all(isinstance(v, str) for v in result.values())


@pytest.mark.parametrize("extensions", [None, [], ["citext"], ["pg_stat_statements"], ["postgis", "vector"]])
def test_pg_stat_statements_is_always_preloaded(extensions):
    result = shadowdb_pg_settings("small", extensions=extensions)
    assert result["shared_preload_libraries"] == "pg_stat_statements"


def test_pg_settings_cannot_override_preload():
    exc = raises_spec_error(
        shadowdb_pg_settings, "small", overrides={"shared_preload_libraries": "auto_explain"}
    )
    assert exc.field == "tenant.settings.shared_preload_libraries"


def test_pg_settings_validates_everything():
    assert raises_spec_error(shadowdb_pg_settings, "small", {"work_mem": "lots"}).field == (
        "tenant.settings.work_mem"
    )
    assert raises_spec_error(shadowdb_pg_settings, "huge").field == "tenant.tier"
    assert raises_spec_error(shadowdb_pg_settings, "small", extensions=["foo"]).field == "tenant.extensions"


def test_pg_settings_with_custom_tiers():
    result = shadowdb_pg_settings("tiny", tiers=TINY)
    assert result["max_connections"] == "500"
    assert result["work_mem"] == "1024kB"


# ---------------------------------------------------------------------------
# Tier bounds on settings
# ---------------------------------------------------------------------------

EXPECTED_LIMITS = {
    "small": {
        "effective_cache_size": "512MB",
        "maintenance_work_mem": "128MB",
        "max_connections": "50",
        "max_parallel_workers_per_gather": "2",
        "max_wal_size": "512MB",
        "min_wal_size": "512MB",
        "shared_buffers": "256MB",
        "temp_file_limit": "1GB",
        "work_mem": "128MB",
    },
    "large": {
        "effective_cache_size": "2GB",
        "maintenance_work_mem": "512MB",
        "max_connections": "200",
        "max_parallel_workers_per_gather": "2",
        "max_wal_size": "2GB",
        "min_wal_size": "2GB",
        "shared_buffers": "1GB",
        "temp_file_limit": "4GB",
        "work_mem": "512MB",
    },
}


@pytest.mark.parametrize("tier", sorted(EXPECTED_LIMITS))
def test_tier_limits(tier):
    assert shadowdb_tier_limits(tier) == EXPECTED_LIMITS[tier]


def test_every_resource_setting_has_a_tier_bound():
    # A memory or disk setting added to OVERRIDABLE_SETTINGS must say how its tier bounds it.
    sizes = {name for name, spec in OVERRIDABLE_SETTINGS.items() if spec["type"] == "size"}
    assert sizes | {"max_connections", "max_parallel_workers_per_gather"} == set(TIER_SETTING_BOUNDS)
    for key, num, den, minimum in TIER_SETTING_BOUNDS.values():
        assert key in TIER_KEYS and num > 0 and den > 0 and minimum >= 0


@pytest.mark.parametrize(
    ("tier", "settings", "message"),
    [
        (
            "small",
            {"max_connections": 10000},
            "tenant.settings.max_connections: 10000 is above the small tier's limit of 50",
        ),
        (
            "small",
            {"max_connections": "51"},
            "tenant.settings.max_connections: '51' is above the small tier's limit of 50",
        ),
        (
            "medium",
            {"Max_Connections": 101},
            "tenant.settings.Max_Connections: 101 is above the medium tier's limit of 100",
        ),
        (
            "small",
            {"shared_buffers": "257MB"},
            "tenant.settings.shared_buffers: '257MB' is above the small tier's limit of 256MB "
            "(half of its 512MB memory)",
        ),
        (
            "small",
            {"shared_buffers": 32769},  # 8kB pages: 256MB + 8kB
            "tenant.settings.shared_buffers: 32769 is above the small tier's limit of 256MB "
            "(half of its 512MB memory)",
        ),
        (
            "large",
            {"shared_buffers": "64GB"},
            "tenant.settings.shared_buffers: '64GB' is above the large tier's limit of 1GB "
            "(half of its 2GB memory)",
        ),
        (
            "small",
            {"work_mem": "129MB"},
            "tenant.settings.work_mem: '129MB' is above the small tier's limit of 128MB "
            "(a quarter of its 512MB memory)",
        ),
        (
            "small",
            {"maintenance_work_mem": "1GB"},
            "tenant.settings.maintenance_work_mem: '1GB' is above the small tier's limit of 128MB "
            "(a quarter of its 512MB memory)",
        ),
        (
            "small",
            {"effective_cache_size": "513MB"},
            "tenant.settings.effective_cache_size: '513MB' is above the small tier's limit of 512MB "
            "(its 512MB memory)",
        ),
        (
            "small",
            {"temp_file_limit": "1025MB"},
            "tenant.settings.temp_file_limit: '1025MB' is above the small tier's limit of 1GB (its 1GB disk)",
        ),
        (
            "medium",
            {"max_wal_size": "2GB"},
            "tenant.settings.max_wal_size: '2GB' is above the medium tier's limit of 1GB "
            "(half of its 2GB disk)",
        ),
        (
            "small",
            {"min_wal_size": 513},
            "tenant.settings.min_wal_size: 513 is above the small tier's limit of 512MB "
            "(half of its 1GB disk)",
        ),
        (
            "large",
            {"max_parallel_workers_per_gather": 3},
            "tenant.settings.max_parallel_workers_per_gather: 3 is above the large tier's limit of 2 "
            "(one per CPU of its 200% CPU quota, at least 2)",
        ),
    ],
)
def test_settings_above_the_tier_are_refused(tier, settings, message):
    exc = raises_spec_error(shadowdb_validate_tenant, {"name": "acme", "tier": tier, "settings": settings})
    assert str(exc) == message
    assert exc.field == message.split(": ", 1)[0]
    # The same bound where the roles render postgresql.conf.
    assert str(raises_spec_error(shadowdb_pg_settings, tier, settings)) == message


@pytest.mark.parametrize("tier", sorted(DEFAULT_TIERS))
def test_settings_at_the_tier_limit_and_the_tier_defaults_are_accepted(tier):
    limits = shadowdb_tier_limits(tier)
    spec = shadowdb_validate_tenant({"name": "acme", "tier": tier, "settings": limits})
    assert spec["settings"] == limits
    assert shadowdb_pg_settings(tier, limits)["shared_buffers"] == limits["shared_buffers"]
    # What ShadowDB derives from the tier is within the bounds a tenant gets.
    derived = shadowdb_pg_settings(tier)
    bounded = {name: derived[name] for name in limits if name in derived}
    assert set(bounded) == {
        "effective_cache_size",
        "maintenance_work_mem",
        "max_connections",
        "shared_buffers",
        "temp_file_limit",
        "work_mem",
    }
    assert shadowdb_validate_tenant({"name": "acme", "tier": tier, "settings": bounded})


def test_temp_file_limit_may_be_unlimited():
    # -1: temp files are still bounded by the tenant's own filesystem, which is the tier's disk.
    spec = shadowdb_validate_tenant({"name": "acme", "settings": {"temp_file_limit": -1}})
    assert spec["settings"] == {"temp_file_limit": "-1"}


def test_tier_bounds_come_from_the_tiers_in_effect():
    # The inventory's tier table replaces the default one: its figures bound the settings.
    spec = {"name": "acme", "tier": "tiny", "settings": {"max_connections": 500, "shared_buffers": "64MB"}}
    assert shadowdb_validate_tenant(spec, tiers=TINY)["settings"]["max_connections"] == "500"
    assert shadowdb_validate_tenants([spec], tiers=TINY)[0]["settings"]["shared_buffers"] == "64MB"
    exc = raises_spec_error(
        shadowdb_validate_tenant, {**spec, "settings": {"shared_buffers": "65MB"}}, tiers=TINY
    )
    assert str(exc) == (
        "tenant.settings.shared_buffers: '65MB' is above the tiny tier's limit of 64MB "
        "(half of its 128MB memory)"
    )
    exc = raises_spec_error(shadowdb_validate_tenants, [{**spec, "settings": {"max_connections": 501}}], TINY)
    assert_spec_error(
        exc, "tenant.settings.max_connections", 501, "tiny tier's limit of 500", "(in tenants[0]"
    )
    # The same 500 connections are refused in the default small tier.
    exc = raises_spec_error(shadowdb_validate_tenant, {**spec, "tier": "small"})
    assert str(exc) == "tenant.settings.max_connections: 500 is above the small tier's limit of 50"
    assert shadowdb_tier_limits("tiny", TINY)["max_connections"] == "500"


def test_validate_settings_bounds_only_with_a_tier():
    assert shadowdb_validate_settings({"max_connections": 10000}) == {"max_connections": "10000"}
    exc = raises_spec_error(
        shadowdb_validate_settings, {"max_connections": 10000}, "tenant.settings", "small"
    )
    assert str(exc) == "tenant.settings.max_connections: 10000 is above the small tier's limit of 50"
    exc = raises_spec_error(shadowdb_validate_settings, {}, "tenant.settings", "huge")
    assert exc.field == "tenant.tier"


def test_an_absent_tenant_is_not_bounded():
    spec = {"name": "acme", "state": "absent", "settings": {"max_connections": 10000}}
    assert shadowdb_validate_tenant(spec)["settings"] == {"max_connections": "10000"}

"""Unit tests for filter_plugins/shadowdb.py, the tenant specification rules."""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = ROOT / "filter_plugins" / "shadowdb.py"
MODULE_NAME = "_shadowdb_filter_plugin_under_test"


def _load_plugin():
    # filter_plugins/ is not a package: load the file by path, as Ansible and the API do.
    spec = importlib.util.spec_from_file_location(MODULE_NAME, PLUGIN)
    module = importlib.util.module_from_spec(spec)
    sys.modules[MODULE_NAME] = module  # lets pickle find SpecError
    spec.loader.exec_module(module)
    return module


sdb = _load_plugin()
SpecError = sdb.SpecError

NAME_RULE = (
    "use 2-16 characters, lowercase letters, digits and '-', "
    "starting with a letter and ending with a letter or digit"
)


def raises_spec_error(func, *args, **kwargs) -> SpecError:
    with pytest.raises(SpecError) as info:
        func(*args, **kwargs)
    return info.value


def assert_spec_error(exc: SpecError, field: str, value=None, *fragments: str) -> None:
    """The field is right, the message names the field then the bad value, and says what is allowed."""
    assert exc.field == field
    message = str(exc)
    assert message.startswith(f"{field}: "), message
    if value is not None:
        assert message.startswith(f"{field}: {value!r}"), message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


# ---------------------------------------------------------------------------
# Constants
# ---------------------------------------------------------------------------


def test_constants_are_consistent():
    assert sdb.TENANT_NAME_RE == r"^[a-z][a-z0-9-]{0,14}[a-z0-9]$"
    assert sdb.SUPPORTED_PG_VERSIONS == [15, 16, 17]
    assert sdb.DEFAULT_PG_VERSION in sdb.SUPPORTED_PG_VERSIONS
    assert sdb.DEFAULT_TIER in sdb.DEFAULT_TIERS
    assert set(sdb.DEFAULT_TIERS) == {"small", "medium", "large"}
    for tier in sdb.DEFAULT_TIERS.values():
        assert set(tier) == set(sdb.TIER_KEYS)
    assert sdb.PRELOAD_EXTENSIONS <= set(sdb.EXTENSIONS)
    assert not set(sdb.OVERRIDABLE_SETTINGS) & sdb.MANAGED_SETTINGS
    assert len(sdb.OVERRIDABLE_SETTINGS) >= 30
    for name, spec in sdb.OVERRIDABLE_SETTINGS.items():
        assert name == name.lower()
        assert spec["type"] in {"size", "time", "int", "real", "bool", "enum", "string"}
    for template in sdb.EXTENSIONS.values():
        assert template is None or "{pg_version}" in template


def test_spec_error_is_an_ansible_filter_error_and_picklable():
    from ansible.errors import AnsibleFilterError

    exc = SpecError("tenant.name", "'X' is bad")
    assert isinstance(exc, AnsibleFilterError)
    assert exc.field == "tenant.name"
    assert str(exc) == "tenant.name: 'X' is bad"
    clone = pickle.loads(pickle.dumps(exc))  # noqa: S301 - our own object
    assert type(clone) is SpecError
    assert (clone.field, str(clone)) == (exc.field, str(exc))


def test_filter_module_exposes_all_filters():
    filters = sdb.FilterModule().filters()
    assert filters == {
        "shadowdb_extension_packages": sdb.shadowdb_extension_packages,
        "shadowdb_os_user": sdb.shadowdb_os_user,
        "shadowdb_pg_settings": sdb.shadowdb_pg_settings,
        "shadowdb_tier": sdb.shadowdb_tier,
        "shadowdb_tier_limits": sdb.shadowdb_tier_limits,
        "shadowdb_validate_settings": sdb.shadowdb_validate_settings,
        "shadowdb_validate_tenant": sdb.shadowdb_validate_tenant,
        "shadowdb_validate_tenants": sdb.shadowdb_validate_tenants,
    }


# ---------------------------------------------------------------------------
# Tenant names
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ab", "a1", "acme", "acme-prod", "x-1", "a" * 16, "a--b"])
def test_valid_names(name):
    assert sdb.shadowdb_os_user(name) == f"pg-{name}"
    assert sdb.shadowdb_validate_tenant({"name": name})["name"] == name


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("Acme", "it contains uppercase letters"),
        ("Foo_1", "it contains uppercase letters; it contains invalid character(s) '_'"),
        ("foo_bar", "it contains invalid character(s) '_'"),
        ("foo.bar", "it contains invalid character(s) '.'"),
        ("café", "it contains invalid character(s) 'é'"),
        ("a" * 17, "it is 17 characters long, the maximum is 16"),
        ("a" * 40, "it is 40 characters long, the maximum is 16"),
        ("1abc", "it starts with a digit"),
        ("-abc", "it starts with '-'"),
        ("abc-", "it ends with '-'"),
        ("a", "it is 1 character long, the minimum is 2"),
        ("", "it is 0 characters long, the minimum is 2"),
        ("acme\n", "invalid character(s) '\\n'"),
    ],
)
def test_invalid_names_give_a_precise_reason(name, reason):
    for func in (sdb.shadowdb_os_user, lambda n: sdb.shadowdb_validate_tenant({"name": n})):
        exc = raises_spec_error(func, name)
        assert_spec_error(exc, "tenant.name", name, "is not a valid tenant name", reason, NAME_RULE)


@pytest.mark.parametrize("name", [123, None, ["acme"], True])
def test_name_must_be_a_string(name):
    exc = raises_spec_error(sdb.shadowdb_validate_tenant, {"name": name})
    assert_spec_error(exc, "tenant.name", None, NAME_RULE)


def test_name_is_required():
    exc = raises_spec_error(sdb.shadowdb_validate_tenant, {"tier": "small"})
    assert_spec_error(exc, "tenant.name", None, "missing required field", NAME_RULE)


# ---------------------------------------------------------------------------
# Reserved names
# ---------------------------------------------------------------------------

RESERVED_CASES = [
    # PostgreSQL's own roles and databases
    ("postgres", "PostgreSQL's bootstrap superuser role and maintenance database"),
    ("template0", "PostgreSQL's template database"),
    ("template1", "PostgreSQL's template database"),
    ("public", "PostgreSQL's pseudo-role"),
    ("none", "a role name PostgreSQL reserves"),
    # pg_hba.conf keywords
    *[(n, "a pg_hba.conf keyword") for n in ("all", "replication", "sameuser", "samerole", "samegroup")],
    *[(n, "a pg_hba.conf keyword") for n in ("samehost", "samenet")],
    # reserved SQL keywords
    *[(n, "a reserved SQL keyword") for n in ("default", "user", "select", "table", "grant", "null")],
    # ShadowDB's own roles and names
    ("replicator", "the replication role ShadowDB creates"),
    ("rewind", "the pg_rewind role ShadowDB creates"),
    ("patroni", "Patroni's REST API"),
    ("haproxy", "HAProxy's health checks"),
    ("shadowdb", "ShadowDB's own name"),
    ("monitoring", "ShadowDB's monitoring role"),
    ("pgbackrest", "backup tool"),
    # system accounts
    *[(n, "a system account on the hosts") for n in ("root", "daemon", "bin", "sys", "nobody", "www-data")],
    *[(n, "a system account on the hosts") for n in ("backup", "etcd", "prometheus", "messagebus")],
    *[(n, "a systemd service account") for n in ("systemd-network", "systemd-timesync", "systemd-x")],
    # host volumes and LVM
    *[(n, "a filesystem label or LVM volume name") for n in ("boot", "swap", "home", "cloudimg-rootfs")],
    ("pvmove0", "LVM reserves volume names starting with 'pvmove'"),
    ("snapshot-a", "LVM reserves volume names starting with 'snapshot'"),
    # routes derived from another tenant's name
    ("acme-ro", "the read-only route of an HA tenant (the HA tenant 'acme' serves reads at 'acme-ro."),
    ("a-ro", "the HA tenant 'a' serves reads"),
    ("x-1-ro", "the HA tenant 'x-1' serves reads"),
]


@pytest.mark.parametrize(("name", "reason"), RESERVED_CASES, ids=[case[0] for case in RESERVED_CASES])
def test_reserved_names_are_refused_with_the_reason(name, reason):
    exc = raises_spec_error(sdb.shadowdb_validate_tenant, {"name": name})
    assert_spec_error(exc, "tenant.name", name, f"{name!r} is reserved: ", reason, "choose another name")
    exc = raises_spec_error(
        sdb.shadowdb_validate_tenants, [{"name": "acme"}, {"name": name, "tier": "large"}]
    )
    assert_spec_error(exc, "tenant.name", name, "is reserved", "(in tenants[1])")


def test_reserved_name_messages_are_exact():
    messages = {}
    for name in ("postgres", "acme-ro"):
        messages[name] = str(raises_spec_error(sdb.shadowdb_validate_tenant, {"name": name}))
    assert messages == {
        "postgres": "tenant.name: 'postgres' is reserved: PostgreSQL's bootstrap superuser role and "
        "maintenance database; choose another name",
        "acme-ro": "tenant.name: 'acme-ro' is reserved: a name ending in '-ro' is the read-only route of "
        "an HA tenant (the HA tenant 'acme' serves reads at 'acme-ro.<domain>'); choose another name",
    }


@pytest.mark.parametrize(
    "name",
    [
        "acme",
        "acme-rox",
        "ro",
        "rob",
        "acmero",
        "ro-acme",
        "postgres2",
        "pg-acme",
        "roots",
        "systemd",
        "users",
    ],
)
def test_near_misses_are_not_reserved(name):
    assert sdb.reserved_name_reason(name) is None
    assert sdb.shadowdb_validate_tenant({"name": name})["name"] == name


def test_reserved_table_is_documented_and_reachable():
    assert list(sdb.RESERVED_NAMES) == sorted(sdb.RESERVED_NAMES)
    for name, reason in sdb.RESERVED_NAMES.items():
        # Every entry is a name the regex would otherwise accept: none is dead weight.
        assert sdb._TENANT_NAME.fullmatch(name), name
        assert isinstance(reason, str) and reason and not reason.endswith(";"), name
    for fragment in [*sdb.RESERVED_PREFIXES, *sdb.RESERVED_SUFFIXES]:
        assert set(fragment) <= set("abcdefghijklmnopqrstuvwxyz0123456789-"), fragment


def test_shadowdb_role_names_are_reserved():
    # The roles the patroni role creates, and the user of HAProxy's PostgreSQL health check
    # (its startup packet, as hex, in roles/haproxy/vars/main.yml).
    patroni_vars = (ROOT / "roles" / "patroni" / "vars" / "main.yml").read_text()
    for var in ("patroni_restapi_user", "patroni_replication_user", "patroni_rewind_user"):
        line = next(line for line in patroni_vars.splitlines() if line.startswith(f"{var}:"))
        assert line.split(":", 1)[1].strip() in sdb.RESERVED_NAMES, line
    haproxy_vars = (ROOT / "roles" / "haproxy" / "vars" / "main.yml").read_text()
    startup = bytes.fromhex(haproxy_vars.split("haproxy_pg_startup_hex: >-", 1)[1].split()[0])
    fields = startup[8:].split(b"\0")
    user = fields[fields.index(b"user") + 1].decode()
    database = fields[fields.index(b"database") + 1].decode()
    assert user in sdb.RESERVED_NAMES and database in sdb.RESERVED_NAMES


def test_read_only_route_suffix_matches_the_templates():
    sni_map = (ROOT / "roles" / "haproxy" / "templates" / "sni.map.j2").read_text()
    assert "{{ record.tenant }}-ro.{{ haproxy_domain }} t_{{ record.tenant }}-ro" in sni_map
    assert "-ro" in sdb.RESERVED_SUFFIXES


@pytest.mark.skipif(not Path("/usr/share/base-passwd/passwd.master").exists(), reason="not Debian")
def test_debian_base_accounts_are_reserved():
    accounts = [
        line.split(":", 1)[0]
        for line in Path("/usr/share/base-passwd/passwd.master").read_text().splitlines()
    ]
    possible = [name for name in accounts if sdb._TENANT_NAME.fullmatch(name)]
    assert possible and not [name for name in possible if sdb.reserved_name_reason(name) is None]


@pytest.mark.parametrize("name", ["postgres", "default", "root", "acme-ro"])
def test_a_reserved_name_can_still_be_removed_and_named(name):
    # Tenants made before a name was reserved stay removable (tenant_remove.yml validates
    # {name, state: absent}), and their OS user can still be named.
    spec = sdb.shadowdb_validate_tenant({"name": name, "state": "absent"})
    assert (spec["name"], spec["state"]) == (name, "absent")
    assert sdb.shadowdb_os_user(name) == f"pg-{name}"
    exc = raises_spec_error(sdb.shadowdb_validate_tenant, {"name": name, "state": "present"})
    assert_spec_error(exc, "tenant.name", name, "is reserved")


# ---------------------------------------------------------------------------
# Tiers
# ---------------------------------------------------------------------------

EXPECTED_TIERS = {
    "small": {
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
        "tasks_max": 256,
        "temp_file_limit_mb": 512,
        "work_mem_kb": 2621,
    },
    "medium": {
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
        "tasks_max": 512,
        "temp_file_limit_mb": 1024,
        "work_mem_kb": 2621,
    },
    "large": {
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
        "tasks_max": 1024,
        "temp_file_limit_mb": 2048,
        "work_mem_kb": 2621,
    },
}


@pytest.mark.parametrize("tier", sorted(EXPECTED_TIERS))
def test_tier_sizing(tier):
    result = sdb.shadowdb_tier(tier)
    assert result == EXPECTED_TIERS[tier]
    assert list(result) == sorted(result)


def test_tier_does_not_mutate_the_default_table():
    before = json.dumps(sdb.DEFAULT_TIERS, sort_keys=True)
    sdb.shadowdb_tier("small")["memory_mb"] = 1
    assert json.dumps(sdb.DEFAULT_TIERS, sort_keys=True) == before


TINY = {
    "tiny": {
        "disk_size_mb": 300,
        "memory_mb": 128,
        "cpu_quota_pct": 25,
        "max_connections": 500,
        "nofile": 512,
        "tasks_max": 64,
    }
}


def test_custom_tiers_replace_the_defaults_and_floors_apply():
    tier = sdb.shadowdb_tier("tiny", tiers=TINY)
    # 128MB spread over 500 connections would be tiny: floored at 1MB / 16MB.
    assert tier["work_mem_kb"] == 1024
    assert tier["maintenance_work_mem_mb"] == 16
    assert tier["shared_buffers_mb"] == 32
    assert tier["temp_file_limit_mb"] == 150
    assert (tier["memory_max"], tier["cpu_quota"]) == ("128M", "25%")
    exc = raises_spec_error(sdb.shadowdb_tier, "small", tiers=TINY)
    assert_spec_error(exc, "tenant.tier", None, "unknown tier 'small'; known tiers: tiny")


@pytest.mark.parametrize("tiers", [None, {}])
def test_empty_tiers_mean_defaults(tiers):
    assert sdb.shadowdb_tier("medium", tiers=tiers) == EXPECTED_TIERS["medium"]


def test_custom_tier_values_may_be_digit_strings():
    tiers = {"tiny": {key: str(value) for key, value in TINY["tiny"].items()}}
    assert sdb.shadowdb_tier("tiny", tiers=tiers) == sdb.shadowdb_tier("tiny", tiers=TINY)


@pytest.mark.parametrize("tier", ["huge", "Small", "", None, 1])
def test_unknown_tier(tier):
    exc = raises_spec_error(sdb.shadowdb_tier, tier)
    assert_spec_error(exc, "tenant.tier", None, "known tiers: large, medium, small")
    assert str(exc).startswith(f"tenant.tier: unknown tier {tier!r}")


def test_unknown_tier_message_is_exact():
    exc = raises_spec_error(sdb.shadowdb_validate_tenant, {"name": "acme", "tier": "huge"})
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
    exc = raises_spec_error(sdb.shadowdb_tier, "tiny", tiers=tiers)
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
    assert sdb.shadowdb_validate_settings({name: value}) == {name: expected}


def test_setting_names_are_case_insensitive_and_output_sorted():
    result = sdb.shadowdb_validate_settings({"work_mem": "8MB", "TimeZone": "UTC", "JIT": False})
    assert result == {"jit": "off", "timezone": "UTC", "work_mem": "8MB"}
    assert list(result) == sorted(result)


@pytest.mark.parametrize("settings", [None, {}])
def test_no_settings(settings):
    assert sdb.shadowdb_validate_settings(settings) == {}


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
    exc = raises_spec_error(sdb.shadowdb_validate_settings, {name: value})
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
    exc = raises_spec_error(sdb.shadowdb_validate_settings, {name: "x"})
    assert str(exc) == f"tenant.settings.{name}: {name!r} is managed by ShadowDB and cannot be overridden"
    assert exc.field == f"tenant.settings.{name}"


def test_managed_setting_check_ignores_case():
    exc = raises_spec_error(sdb.shadowdb_validate_settings, {"Port": 5433})
    assert_spec_error(exc, "tenant.settings.Port", None, "'Port' is managed by ShadowDB")


def test_unknown_setting_lists_overridable_settings_sorted():
    exc = raises_spec_error(sdb.shadowdb_validate_settings, {"foo": 1})
    expected = ", ".join(sorted(sdb.OVERRIDABLE_SETTINGS))
    assert str(exc) == (
        f"tenant.settings.foo: unknown or not overridable setting 'foo'; overridable settings: {expected}"
    )
    assert exc.field == "tenant.settings.foo"


def test_custom_field_prefix():
    exc = raises_spec_error(sdb.shadowdb_validate_settings, {"foo": 1}, field="overrides")
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
    exc = raises_spec_error(sdb.shadowdb_validate_settings, settings)
    assert_spec_error(exc, "tenant.settings", None, fragment)


def test_same_setting_twice_with_different_case():
    exc = raises_spec_error(sdb.shadowdb_validate_settings, {"TimeZone": "UTC", "timezone": "UTC"})
    assert exc.field.lower() == "tenant.settings.timezone"
    assert "given twice" in str(exc)


# ---------------------------------------------------------------------------
# postgresql.conf settings
# ---------------------------------------------------------------------------


def test_pg_settings_from_tier():
    assert sdb.shadowdb_pg_settings("small") == {
        "effective_cache_size": "384MB",
        "maintenance_work_mem": "32MB",
        "max_connections": "50",
        "shared_buffers": "128MB",
        "shared_preload_libraries": "pg_stat_statements",
        "temp_file_limit": "512MB",
        "work_mem": "2621kB",
    }


def test_pg_settings_overrides_win_and_output_is_sorted_strings():
    result = sdb.shadowdb_pg_settings(
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
    result = sdb.shadowdb_pg_settings("small", extensions=extensions)
    assert result["shared_preload_libraries"] == "pg_stat_statements"


def test_pg_settings_cannot_override_preload():
    exc = raises_spec_error(
        sdb.shadowdb_pg_settings, "small", overrides={"shared_preload_libraries": "auto_explain"}
    )
    assert exc.field == "tenant.settings.shared_preload_libraries"


def test_pg_settings_validates_everything():
    assert raises_spec_error(sdb.shadowdb_pg_settings, "small", {"work_mem": "lots"}).field == (
        "tenant.settings.work_mem"
    )
    assert raises_spec_error(sdb.shadowdb_pg_settings, "huge").field == "tenant.tier"
    assert (
        raises_spec_error(sdb.shadowdb_pg_settings, "small", extensions=["foo"]).field == "tenant.extensions"
    )


def test_pg_settings_with_custom_tiers():
    result = sdb.shadowdb_pg_settings("tiny", tiers=TINY)
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
    assert sdb.shadowdb_tier_limits(tier) == EXPECTED_LIMITS[tier]


def test_every_resource_setting_has_a_tier_bound():
    # A memory or disk setting added to OVERRIDABLE_SETTINGS must say how its tier bounds it.
    sizes = {name for name, spec in sdb.OVERRIDABLE_SETTINGS.items() if spec["type"] == "size"}
    assert sizes | {"max_connections", "max_parallel_workers_per_gather"} == set(sdb.TIER_SETTING_BOUNDS)
    for key, num, den, minimum in sdb.TIER_SETTING_BOUNDS.values():
        assert key in sdb.TIER_KEYS and num > 0 and den > 0 and minimum >= 0


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
    exc = raises_spec_error(
        sdb.shadowdb_validate_tenant, {"name": "acme", "tier": tier, "settings": settings}
    )
    assert str(exc) == message
    assert exc.field == message.split(": ", 1)[0]
    # The same bound where the roles render postgresql.conf.
    assert str(raises_spec_error(sdb.shadowdb_pg_settings, tier, settings)) == message


@pytest.mark.parametrize("tier", sorted(sdb.DEFAULT_TIERS))
def test_settings_at_the_tier_limit_and_the_tier_defaults_are_accepted(tier):
    limits = sdb.shadowdb_tier_limits(tier)
    spec = sdb.shadowdb_validate_tenant({"name": "acme", "tier": tier, "settings": limits})
    assert spec["settings"] == limits
    assert sdb.shadowdb_pg_settings(tier, limits)["shared_buffers"] == limits["shared_buffers"]
    # What ShadowDB derives from the tier is within the bounds a tenant gets.
    derived = sdb.shadowdb_pg_settings(tier)
    bounded = {name: derived[name] for name in limits if name in derived}
    assert set(bounded) == {
        "effective_cache_size",
        "maintenance_work_mem",
        "max_connections",
        "shared_buffers",
        "temp_file_limit",
        "work_mem",
    }
    assert sdb.shadowdb_validate_tenant({"name": "acme", "tier": tier, "settings": bounded})


def test_temp_file_limit_may_be_unlimited():
    # -1: temp files are still bounded by the tenant's own filesystem, which is the tier's disk.
    spec = sdb.shadowdb_validate_tenant({"name": "acme", "settings": {"temp_file_limit": -1}})
    assert spec["settings"] == {"temp_file_limit": "-1"}


def test_tier_bounds_come_from_the_tiers_in_effect():
    # The inventory's tier table replaces the default one: its figures bound the settings.
    spec = {"name": "acme", "tier": "tiny", "settings": {"max_connections": 500, "shared_buffers": "64MB"}}
    assert sdb.shadowdb_validate_tenant(spec, tiers=TINY)["settings"]["max_connections"] == "500"
    assert sdb.shadowdb_validate_tenants([spec], tiers=TINY)[0]["settings"]["shared_buffers"] == "64MB"
    exc = raises_spec_error(
        sdb.shadowdb_validate_tenant, {**spec, "settings": {"shared_buffers": "65MB"}}, tiers=TINY
    )
    assert str(exc) == (
        "tenant.settings.shared_buffers: '65MB' is above the tiny tier's limit of 64MB "
        "(half of its 128MB memory)"
    )
    exc = raises_spec_error(
        sdb.shadowdb_validate_tenants, [{**spec, "settings": {"max_connections": 501}}], TINY
    )
    assert_spec_error(
        exc, "tenant.settings.max_connections", 501, "tiny tier's limit of 500", "(in tenants[0]"
    )
    # The same 500 connections are refused in the default small tier.
    exc = raises_spec_error(sdb.shadowdb_validate_tenant, {**spec, "tier": "small"})
    assert str(exc) == "tenant.settings.max_connections: 500 is above the small tier's limit of 50"
    assert sdb.shadowdb_tier_limits("tiny", TINY)["max_connections"] == "500"


def test_validate_settings_bounds_only_with_a_tier():
    assert sdb.shadowdb_validate_settings({"max_connections": 10000}) == {"max_connections": "10000"}
    exc = raises_spec_error(
        sdb.shadowdb_validate_settings, {"max_connections": 10000}, "tenant.settings", "small"
    )
    assert str(exc) == "tenant.settings.max_connections: 10000 is above the small tier's limit of 50"
    exc = raises_spec_error(sdb.shadowdb_validate_settings, {}, "tenant.settings", "huge")
    assert exc.field == "tenant.tier"


def test_an_absent_tenant_is_not_bounded():
    spec = {"name": "acme", "state": "absent", "settings": {"max_connections": 10000}}
    assert sdb.shadowdb_validate_tenant(spec)["settings"] == {"max_connections": "10000"}


# ---------------------------------------------------------------------------
# Extensions
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extensions", "pg_version", "expected"),
    [
        ([], 17, []),
        (None, 17, []),
        (["citext", "pg_trgm", "uuid-ossp", "pg_stat_statements"], 17, []),
        (["postgis"], 16, ["postgresql-16-postgis-3"]),
        (
            ["vector", "citext", "postgis", "vector"],
            "17",
            ["postgresql-17-pgvector", "postgresql-17-postgis-3"],
        ),
        (["vector"], 15, ["postgresql-15-pgvector"]),
    ],
)
def test_extension_packages(extensions, pg_version, expected):
    assert sdb.shadowdb_extension_packages(extensions, pg_version) == expected


def test_extension_packages_with_custom_allow_list():
    allowed = {"timescaledb": "timescaledb-2-postgresql-{pg_version}", "citext": None}
    assert sdb.shadowdb_extension_packages(["timescaledb", "citext"], 16, allowed_extensions=allowed) == [
        "timescaledb-2-postgresql-16"
    ]
    exc = raises_spec_error(sdb.shadowdb_extension_packages, ["vector"], 16, allowed_extensions=allowed)
    assert_spec_error(exc, "tenant.extensions", "vector", "allowed: citext, timescaledb")


@pytest.mark.parametrize(
    ("extensions", "pg_version", "field", "value"),
    [
        (["foo"], 17, "tenant.extensions", "foo"),
        (["PostGIS"], 17, "tenant.extensions", "PostGIS"),
        ("postgis", 17, "tenant.extensions", "postgis"),
        (["postgis"], 14, "tenant.pg_version", 14),
        (["postgis"], "latest", "tenant.pg_version", "latest"),
    ],
)
def test_extension_packages_errors(extensions, pg_version, field, value):
    exc = raises_spec_error(sdb.shadowdb_extension_packages, extensions, pg_version)
    assert_spec_error(exc, field, value)


# ---------------------------------------------------------------------------
# Tenant specs
# ---------------------------------------------------------------------------


def test_minimal_tenant_gets_defaults():
    assert sdb.shadowdb_validate_tenant({"name": "acme"}) == {
        "extensions": [],
        "hba": ["0.0.0.0/0"],
        "name": "acme",
        "pg_version": 17,
        "readonly_role": False,
        "replicas": 0,
        "settings": {},
        "state": "present",
        "tier": "small",
    }


def test_null_fields_take_their_defaults():
    spec = dict.fromkeys(sdb.TENANT_FIELDS)
    spec["name"] = "acme"
    assert sdb.shadowdb_validate_tenant(spec) == sdb.shadowdb_validate_tenant({"name": "acme"})


def test_full_tenant_is_normalized():
    spec = {
        "name": "acme-prod",
        "tier": "large",
        "pg_version": "16",
        "extensions": ["vector", "citext", "vector", "pg_stat_statements"],
        "settings": {"TimeZone": "UTC", "work_mem": "32 MB", "synchronous_commit": False},
        "hba": ["10.1.0.0/16", "192.0.2.7", "2001:DB8::/32", "10.1.0.0/16"],
        "replicas": "2",
        "state": "absent",
        "readonly_role": "yes",
    }
    result = sdb.shadowdb_validate_tenant(spec)
    assert result == {
        "extensions": ["citext", "pg_stat_statements", "vector"],
        "hba": ["10.1.0.0/16", "192.0.2.7/32", "2001:db8::/32"],
        "name": "acme-prod",
        "pg_version": 16,
        "readonly_role": True,
        "replicas": 2,
        "settings": {"synchronous_commit": "off", "timezone": "UTC", "work_mem": "32MB"},
        "state": "absent",
        "tier": "large",
    }
    assert list(result) == sorted(result)


def test_validation_is_deterministic_and_does_not_mutate_input():
    spec = {"name": "acme", "extensions": ["vector", "citext"], "settings": {"work_mem": "8MB", "jit": True}}
    permuted = {
        "settings": {"jit": True, "work_mem": "8MB"},
        "extensions": ["citext", "vector"],
        "name": "acme",
    }
    before = json.dumps(spec)
    first = sdb.shadowdb_validate_tenant(spec)
    assert json.dumps(spec) == before
    assert json.dumps(first) == json.dumps(sdb.shadowdb_validate_tenant(permuted))


def test_empty_hba_means_socket_only():
    assert sdb.shadowdb_validate_tenant({"name": "acme", "hba": []})["hba"] == []


def _load_digest():
    spec = importlib.util.spec_from_file_location(
        "_shadowdb_digest_for_filters", PLUGIN.with_name("shadowdb_digest.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("value", [False, "no", "false", None])
def test_superuser_off_leaves_the_spec_as_before(value):
    # Off (the default) adds no key: a tenant made before the field existed keeps the same
    # normalized spec, so the same fingerprint, and converges with nothing to do.
    spec = sdb.shadowdb_validate_tenant({"name": "acme", "superuser": value})
    assert spec == sdb.shadowdb_validate_tenant({"name": "acme"})
    assert "superuser" not in spec
    digest = _load_digest()
    assert digest.shadowdb_fingerprint(spec) == digest.shadowdb_fingerprint(
        sdb.shadowdb_validate_tenant({"name": "acme"})
    )


@pytest.mark.parametrize("value", [True, "yes", "true", "on"])
def test_superuser_on(value):
    spec = sdb.shadowdb_validate_tenant({"name": "acme", "superuser": value})
    assert spec["superuser"] is True
    assert list(spec) == sorted(spec)
    assert {k: v for k, v in spec.items() if k != "superuser"} == sdb.shadowdb_validate_tenant(
        {"name": "acme"}
    )
    digest = _load_digest()
    assert digest.shadowdb_fingerprint(spec) != digest.shadowdb_fingerprint(
        sdb.shadowdb_validate_tenant({"name": "acme"})
    )


@pytest.mark.parametrize("version", [15, 16, 17, "15", " 16 "])
def test_supported_pg_versions(version):
    assert sdb.shadowdb_validate_tenant({"name": "acme", "pg_version": version})["pg_version"] == int(version)


def test_pg_versions_override():
    result = sdb.shadowdb_validate_tenant({"name": "acme"}, pg_versions=[15, 16])
    assert result["pg_version"] == 16  # 17 is not offered: default falls back to the newest offered
    exc = raises_spec_error(
        sdb.shadowdb_validate_tenant, {"name": "acme", "pg_version": 17}, pg_versions=[15, 16]
    )
    assert_spec_error(exc, "tenant.pg_version", 17, "supported versions: 15, 16")


def test_allowed_extensions_override_as_list():
    spec = {"name": "acme", "extensions": ["citext"]}
    assert sdb.shadowdb_validate_tenant(spec, allowed_extensions=["citext"])["extensions"] == ["citext"]
    exc = raises_spec_error(
        sdb.shadowdb_validate_tenant,
        {"name": "acme", "extensions": ["vector"]},
        allowed_extensions=["citext"],
    )
    assert_spec_error(exc, "tenant.extensions", "vector", "allowed: citext")


@pytest.mark.parametrize("replicas", [0, 4, "3"])
def test_replicas_in_range(replicas):
    assert sdb.shadowdb_validate_tenant({"name": "acme", "replicas": replicas})["replicas"] == int(replicas)


ALLOWED_EXTENSIONS = "allowed: btree_gist, citext, hstore, pg_stat_statements, pg_trgm, pgcrypto, postgis"


@pytest.mark.parametrize(
    ("extra", "field", "value", "fragments"),
    [
        ({"tier": "huge"}, "tenant.tier", None, ["unknown tier 'huge'; known tiers: large, medium, small"]),
        ({"extensions": ["foo"]}, "tenant.extensions", "foo", ["is not allow-listed", ALLOWED_EXTENSIONS]),
        ({"extensions": ["citext", 3]}, "tenant.extensions", 3, ["is not allow-listed"]),
        ({"extensions": "citext"}, "tenant.extensions", "citext", ["is not a list"]),
        ({"settings": {"port": 5433}}, "tenant.settings.port", "port", ["is managed by ShadowDB"]),
        (
            {"settings": {"foo": "1"}},
            "tenant.settings.foo",
            None,
            ["unknown or not overridable setting 'foo'"],
        ),
        ({"settings": {"work_mem": "12 XB"}}, "tenant.settings.work_mem", "12 XB", ["not a valid size"]),
        ({"settings": {"search_path": "a'b"}}, "tenant.settings.search_path", "a'b", ["single quote"]),
        ({"settings": "jit=off"}, "tenant.settings", "jit=off", ["is not a mapping"]),
        ({"hba": ["10.0.0.1/24"]}, "tenant.hba", "10.0.0.1/24", ["host bits set", "'10.0.0.0/24'"]),
        ({"hba": ["10.0.0.0/33"]}, "tenant.hba", "10.0.0.0/33", ["is not a valid network"]),
        ({"hba": ["everyone"]}, "tenant.hba", "everyone", ["is not a valid network"]),
        ({"hba": ["2001:db8::1/32"]}, "tenant.hba", "2001:db8::1/32", ["host bits set", "'2001:db8::/32'"]),
        ({"hba": [10]}, "tenant.hba", 10, ["is not a network"]),
        ({"hba": "10.0.0.0/8"}, "tenant.hba", "10.0.0.0/8", ["is not a list of networks"]),
        (
            {"domain": "acme.example.com"},
            "tenant.domain",
            None,
            ["unknown field; known fields: extensions, hba,"],
        ),
        ({"Name": "acme"}, "tenant.Name", None, ["unknown field"]),
        ({"pg_version": 14}, "tenant.pg_version", 14, ["not a supported", "supported versions: 15, 16, 17"]),
        ({"pg_version": 18}, "tenant.pg_version", 18, ["supported versions: 15, 16, 17"]),
        ({"pg_version": "17.1"}, "tenant.pg_version", "17.1", ["not a PostgreSQL major version"]),
        ({"pg_version": 17.0}, "tenant.pg_version", 17.0, ["not a PostgreSQL major version"]),
        ({"pg_version": True}, "tenant.pg_version", True, ["not a PostgreSQL major version"]),
        ({"pg_version": "1" * 5000}, "tenant.pg_version", None, ["not a supported PostgreSQL version"]),
        ({"pg_version": "\u00b2"}, "tenant.pg_version", "\u00b2", ["not a PostgreSQL major version"]),
        ({"replicas": 5}, "tenant.replicas", 5, ["out of range; use an integer from 0 to 4"]),
        ({"replicas": -1}, "tenant.replicas", -1, ["out of range; use an integer from 0 to 4"]),
        ({"replicas": "many"}, "tenant.replicas", "many", ["not an integer"]),
        ({"replicas": True}, "tenant.replicas", True, ["not an integer"]),
        ({"state": "gone"}, "tenant.state", "gone", ["use one of: absent, present"]),
        ({"readonly_role": "maybe"}, "tenant.readonly_role", "maybe", ["not a boolean"]),
        ({"superuser": "maybe"}, "tenant.superuser", "maybe", ["not a boolean"]),
        ({"superuser": 1}, "tenant.superuser", 1, ["not a boolean"]),
    ],
)
def test_invalid_tenant_fields(extra, field, value, fragments):
    exc = raises_spec_error(sdb.shadowdb_validate_tenant, {"name": "acme", **extra})
    assert_spec_error(exc, field, value, *fragments)


def test_unknown_field_message_lists_known_fields():
    exc = raises_spec_error(sdb.shadowdb_validate_tenant, {"name": "acme", "domain": "x"})
    assert str(exc) == (
        "tenant.domain: unknown field; known fields: "
        "extensions, hba, name, pg_version, readonly_role, replicas, settings, state, superuser, tier"
    )


@pytest.mark.parametrize("spec", ["acme", ["acme"], None, 42])
def test_tenant_spec_must_be_a_mapping(spec):
    exc = raises_spec_error(sdb.shadowdb_validate_tenant, spec)
    assert_spec_error(exc, "tenant", spec, "is not a mapping")


def test_tenant_with_custom_tiers():
    assert sdb.shadowdb_validate_tenant({"name": "acme", "tier": "tiny"}, tiers=TINY)["tier"] == "tiny"
    exc = raises_spec_error(sdb.shadowdb_validate_tenant, {"name": "acme"}, tiers=TINY)
    assert_spec_error(exc, "tenant.tier", None, "unknown tier 'small'; known tiers: tiny")


# ---------------------------------------------------------------------------
# Tenant lists
# ---------------------------------------------------------------------------


def test_validate_tenants_keeps_input_order():
    result = sdb.shadowdb_validate_tenants([{"name": "zeta"}, {"name": "acme", "tier": "medium"}])
    assert [t["name"] for t in result] == ["zeta", "acme"]
    assert result[1]["tier"] == "medium"


@pytest.mark.parametrize("specs", [None, []])
def test_validate_tenants_empty(specs):
    assert sdb.shadowdb_validate_tenants(specs) == []


def test_duplicate_tenants():
    exc = raises_spec_error(
        sdb.shadowdb_validate_tenants, [{"name": "acme"}, {"name": "beta"}, {"name": "acme"}]
    )
    assert exc.field == "tenants"
    assert str(exc).startswith("tenants: tenant name 'acme' is declared 2 times")


def test_all_duplicates_are_reported_sorted():
    specs = [{"name": n} for n in ["zz", "acme", "zz", "acme", "zz"]]
    exc = raises_spec_error(sdb.shadowdb_validate_tenants, specs)
    message = str(exc)
    assert "'acme' is declared 2 times" in message
    assert "'zz' is declared 3 times" in message
    assert message.index("'acme'") < message.index("'zz'")


def test_error_in_a_list_keeps_its_field_and_says_where():
    specs = [{"name": "acme"}, {"name": "beta", "replicas": 9}]
    exc = raises_spec_error(sdb.shadowdb_validate_tenants, specs)
    assert_spec_error(exc, "tenant.replicas", 9, "(in tenants[1], name 'beta')")
    exc = raises_spec_error(sdb.shadowdb_validate_tenants, [{"name": "acme"}, {"name": "Beta"}])
    assert_spec_error(exc, "tenant.name", "Beta", "(in tenants[1])")


def test_validate_tenants_passes_options_through():
    specs = [{"name": "acme", "tier": "tiny", "pg_version": 15}]
    result = sdb.shadowdb_validate_tenants(specs, tiers=TINY, pg_versions=[15])
    assert (result[0]["tier"], result[0]["pg_version"]) == ("tiny", 15)


@pytest.mark.parametrize("specs", [{"name": "acme"}, "acme"])
def test_validate_tenants_needs_a_list(specs):
    exc = raises_spec_error(sdb.shadowdb_validate_tenants, specs)
    assert_spec_error(exc, "tenants", specs, "is not a list")


# ---------------------------------------------------------------------------
# Import without Ansible (the API service) and use from Ansible
# ---------------------------------------------------------------------------


def test_importable_without_ansible():
    code = textwrap.dedent(
        """
        import importlib.util, json, sys
        sys.modules["ansible"] = None  # any "import ansible..." now raises ImportError
        spec = importlib.util.spec_from_file_location("shadowdb_filters", sys.argv[1])
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        try:
            mod.shadowdb_validate_tenant({"name": "Bad_Name"})
        except ValueError as exc:  # the fallback base class
            error = {"field": exc.field, "message": str(exc), "type": type(exc).__name__}
        print(json.dumps({
            "error": error,
            "base": mod.AnsibleFilterError.__module__,
            "ansible_loaded": any(k.startswith("ansible.") for k in sys.modules),
            "tenant": mod.shadowdb_validate_tenant({"name": "acme"}),
        }))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(PLUGIN)], capture_output=True, text=True, check=True, timeout=60
    )
    out = json.loads(proc.stdout)
    assert out["base"] == "shadowdb_filters"
    assert not out["ansible_loaded"]
    assert out["error"]["type"] == "SpecError"
    assert out["error"]["field"] == "tenant.name"
    assert out["error"]["message"].startswith("tenant.name: 'Bad_Name' is not a valid tenant name")
    assert out["tenant"]["pg_version"] == 17


PLAYBOOK = """\
- hosts: localhost
  gather_facts: false
  vars:
    tenants:
      - name: acme
        tier: medium
        extensions: [vector, citext]
        settings:
          synchronous_commit: off   # YAML 1.1 boolean
          work_mem: 8MB
  tasks:
    - name: Render filter results
      ansible.builtin.copy:
        dest: "{{ out }}"
        content: >-
          {{ {'tenants': tenants | shadowdb_validate_tenants,
              'conf': tenants[0].tier
                      | shadowdb_pg_settings(tenants[0].settings, extensions=tenants[0].extensions),
              'packages': tenants[0].extensions | shadowdb_extension_packages(17),
              'user': tenants[0].name | shadowdb_os_user} | to_json }}
    - name: Reject a bad tenant
      ansible.builtin.debug:
        msg: "{{ [{'name': 'acme', 'replicas': 9}] | shadowdb_validate_tenants }}"
"""


@pytest.mark.skipif(
    shutil.which("ansible-playbook", path=os.path.dirname(sys.executable)) is None, reason="no ansible"
)
def test_filters_work_in_a_playbook(tmp_path):
    (tmp_path / "play.yml").write_text(PLAYBOOK)
    out = tmp_path / "out.json"
    env = {
        **os.environ,
        "ANSIBLE_FILTER_PLUGINS": str(PLUGIN.parent),
        "ANSIBLE_HOME": str(tmp_path / "ansible-home"),
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_LOCALHOST_WARNING": "0",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0",
    }
    proc = subprocess.run(
        [
            str(Path(sys.executable).with_name("ansible-playbook")),
            "-i",
            "localhost,",
            "-c",
            "local",
            "-e",
            f"ansible_python_interpreter={sys.executable}",
            "-e",
            f"out={out}",
            "play.yml",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    result = json.loads(out.read_text())
    assert result["user"] == "pg-acme"
    assert result["packages"] == ["postgresql-17-pgvector"]
    assert result["tenants"][0]["settings"] == {"synchronous_commit": "off", "work_mem": "8MB"}
    assert result["conf"]["synchronous_commit"] == "off"
    assert result["conf"]["shared_buffers"] == "256MB"
    assert result["conf"]["shared_preload_libraries"] == "pg_stat_statements"
    # The second task fails with the SpecError message intact.
    assert proc.returncode != 0
    assert "tenant.replicas: 9 is out of range; use an integer from 0 to 4 (in tenants[0], name 'acme')" in (
        proc.stdout + proc.stderr
    )

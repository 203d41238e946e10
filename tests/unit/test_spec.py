"""Unit tests for shadowdb/spec.py: tenant names, reserved names, tenant specs and lists."""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import pytest

from shadowdb.errors import SpecError
from shadowdb.fingerprint import shadowdb_fingerprint
from shadowdb.layout import shadowdb_os_user
from shadowdb.postgres import DEFAULT_PG_VERSION, EXTENSIONS, PRELOAD_EXTENSIONS, SUPPORTED_PG_VERSIONS
from shadowdb.spec import (
    RESERVED_NAMES,
    RESERVED_PREFIXES,
    RESERVED_SUFFIXES,
    TENANT_FIELDS,
    TENANT_NAME_RE,
    reserved_name_reason,
    shadowdb_batch_refusals,
    shadowdb_check_tenants,
    shadowdb_validate_tenant,
    shadowdb_validate_tenants,
)
from shadowdb.tiers import (
    DEFAULT_TIER,
    DEFAULT_TIERS,
    MANAGED_SETTINGS,
    OPTIONAL_TIER_KEYS,
    OVERRIDABLE_SETTINGS,
    TIER_KEYS,
)
from tests.unit.spec_cases import TINY, assert_spec_error, raises_spec_error

ROOT = Path(__file__).resolve().parents[2]
NAME_RULE = (
    "use 2-16 characters, lowercase letters, digits and '-', "
    "starting with a letter and ending with a letter or digit"
)


# ---------------------------------------------------------------------------
# Constants
# ---------------------------------------------------------------------------


def test_constants_are_consistent():
    assert TENANT_NAME_RE == r"^[a-z][a-z0-9-]{0,14}[a-z0-9]$"
    assert SUPPORTED_PG_VERSIONS == [15, 16, 17]
    assert DEFAULT_PG_VERSION in SUPPORTED_PG_VERSIONS
    assert DEFAULT_TIER in DEFAULT_TIERS
    assert set(DEFAULT_TIERS) == {"small", "medium", "large"}
    for tier in DEFAULT_TIERS.values():
        assert set(tier) == set(TIER_KEYS) | set(OPTIONAL_TIER_KEYS)
    assert PRELOAD_EXTENSIONS <= set(EXTENSIONS)
    assert not set(OVERRIDABLE_SETTINGS) & MANAGED_SETTINGS
    assert len(OVERRIDABLE_SETTINGS) >= 30
    for name, spec in OVERRIDABLE_SETTINGS.items():
        assert name == name.lower()
        assert spec["type"] in {"size", "time", "int", "real", "bool", "enum", "string"}
    for template in EXTENSIONS.values():
        assert template is None or "{pg_version}" in template


def test_spec_error_is_a_value_error_and_picklable():
    exc = SpecError("tenant.name", "'X' is bad")
    assert isinstance(exc, ValueError)
    assert exc.field == "tenant.name"
    assert str(exc) == "tenant.name: 'X' is bad"
    clone = pickle.loads(pickle.dumps(exc))  # noqa: S301 - our own object
    assert type(clone) is SpecError
    assert (clone.field, clone.reason, str(clone)) == (exc.field, exc.reason, str(exc))


# ---------------------------------------------------------------------------
# Tenant names
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ab", "a1", "acme", "acme-prod", "x-1", "a" * 16, "a--b"])
def test_valid_names(name):
    assert shadowdb_os_user(name) == f"pg-{name}"
    assert shadowdb_validate_tenant({"name": name})["name"] == name


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
    for func in (shadowdb_os_user, lambda n: shadowdb_validate_tenant({"name": n})):
        exc = raises_spec_error(func, name)
        assert_spec_error(exc, "tenant.name", name, "is not a valid tenant name", reason, NAME_RULE)


@pytest.mark.parametrize("name", [123, None, ["acme"], True])
def test_name_must_be_a_string(name):
    exc = raises_spec_error(shadowdb_validate_tenant, {"name": name})
    assert_spec_error(exc, "tenant.name", None, NAME_RULE)


def test_name_is_required():
    exc = raises_spec_error(shadowdb_validate_tenant, {"tier": "small"})
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
    exc = raises_spec_error(shadowdb_validate_tenant, {"name": name})
    assert_spec_error(exc, "tenant.name", name, f"{name!r} is reserved: ", reason, "choose another name")
    exc = raises_spec_error(shadowdb_validate_tenants, [{"name": "acme"}, {"name": name, "tier": "large"}])
    assert_spec_error(exc, "tenant.name", name, "is reserved", "(in tenants[1])")


def test_reserved_name_messages_are_exact():
    messages = {}
    for name in ("postgres", "acme-ro"):
        messages[name] = str(raises_spec_error(shadowdb_validate_tenant, {"name": name}))
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
    assert reserved_name_reason(name) is None
    assert shadowdb_validate_tenant({"name": name})["name"] == name


def test_reserved_table_is_documented_and_reachable():
    assert list(RESERVED_NAMES) == sorted(RESERVED_NAMES)
    for name, reason in RESERVED_NAMES.items():
        # Every entry is a name the regex would otherwise accept: none is dead weight.
        assert re.fullmatch(TENANT_NAME_RE, name), name
        assert isinstance(reason, str) and reason and not reason.endswith(";"), name
    for fragment in [*RESERVED_PREFIXES, *RESERVED_SUFFIXES]:
        assert set(fragment) <= set("abcdefghijklmnopqrstuvwxyz0123456789-"), fragment


def test_shadowdb_role_names_are_reserved():
    # The roles the patroni role creates, and the user of HAProxy's PostgreSQL health check
    # (its startup packet, as hex, in roles/haproxy/vars/main.yml).
    patroni_vars = (ROOT / "roles" / "patroni" / "vars" / "main.yml").read_text()
    for var in ("patroni_restapi_user", "patroni_replication_user", "patroni_rewind_user"):
        line = next(line for line in patroni_vars.splitlines() if line.startswith(f"{var}:"))
        assert line.split(":", 1)[1].strip() in RESERVED_NAMES, line
    haproxy_vars = (ROOT / "roles" / "haproxy" / "vars" / "main.yml").read_text()
    startup = bytes.fromhex(haproxy_vars.split("haproxy_pg_startup_hex: >-", 1)[1].split()[0])
    fields = startup[8:].split(b"\0")
    user = fields[fields.index(b"user") + 1].decode()
    database = fields[fields.index(b"database") + 1].decode()
    assert user in RESERVED_NAMES and database in RESERVED_NAMES


def test_read_only_route_suffix_matches_the_templates():
    sni_map = (ROOT / "roles" / "haproxy" / "templates" / "sni.map.j2").read_text()
    assert "{{ record.tenant }}-ro.{{ haproxy_domain }} t_{{ record.tenant }}-ro" in sni_map
    assert "-ro" in RESERVED_SUFFIXES


@pytest.mark.skipif(not Path("/usr/share/base-passwd/passwd.master").exists(), reason="not Debian")
def test_debian_base_accounts_are_reserved():
    accounts = [
        line.split(":", 1)[0]
        for line in Path("/usr/share/base-passwd/passwd.master").read_text().splitlines()
    ]
    possible = [name for name in accounts if re.fullmatch(TENANT_NAME_RE, name)]
    assert possible and not [name for name in possible if reserved_name_reason(name) is None]


@pytest.mark.parametrize("name", ["postgres", "default", "root", "acme-ro"])
def test_a_reserved_name_can_still_be_removed_and_named(name):
    # Tenants made before a name was reserved stay removable (tenant_remove.yml validates
    # {name, state: absent}), and their OS user can still be named.
    spec = shadowdb_validate_tenant({"name": name, "state": "absent"})
    assert (spec["name"], spec["state"]) == (name, "absent")
    assert shadowdb_os_user(name) == f"pg-{name}"
    exc = raises_spec_error(shadowdb_validate_tenant, {"name": name, "state": "present"})
    assert_spec_error(exc, "tenant.name", name, "is reserved")


# ---------------------------------------------------------------------------
# Tenant specs
# ---------------------------------------------------------------------------


def test_minimal_tenant_gets_defaults():
    assert shadowdb_validate_tenant({"name": "acme"}) == {
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
    spec = dict.fromkeys(TENANT_FIELDS)
    spec["name"] = "acme"
    assert shadowdb_validate_tenant(spec) == shadowdb_validate_tenant({"name": "acme"})


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
    result = shadowdb_validate_tenant(spec)
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
    first = shadowdb_validate_tenant(spec)
    assert json.dumps(spec) == before
    assert json.dumps(first) == json.dumps(shadowdb_validate_tenant(permuted))


def test_empty_hba_means_socket_only():
    assert shadowdb_validate_tenant({"name": "acme", "hba": []})["hba"] == []


@pytest.mark.parametrize("value", [False, "no", "false", None])
def test_superuser_off_leaves_the_spec_as_before(value):
    # Off (the default) adds no key: a tenant made before the field existed keeps the same
    # normalized spec, so the same fingerprint, and converges with nothing to do.
    spec = shadowdb_validate_tenant({"name": "acme", "superuser": value})
    assert spec == shadowdb_validate_tenant({"name": "acme"})
    assert "superuser" not in spec
    assert shadowdb_fingerprint(spec) == shadowdb_fingerprint(shadowdb_validate_tenant({"name": "acme"}))


@pytest.mark.parametrize("value", [True, "yes", "true", "on"])
def test_superuser_on(value):
    spec = shadowdb_validate_tenant({"name": "acme", "superuser": value})
    assert spec["superuser"] is True
    assert list(spec) == sorted(spec)
    assert {k: v for k, v in spec.items() if k != "superuser"} == shadowdb_validate_tenant({"name": "acme"})
    assert shadowdb_fingerprint(spec) != shadowdb_fingerprint(shadowdb_validate_tenant({"name": "acme"}))


@pytest.mark.parametrize("version", [15, 16, 17, "15", " 16 "])
def test_supported_pg_versions(version):
    assert shadowdb_validate_tenant({"name": "acme", "pg_version": version})["pg_version"] == int(version)


def test_pg_versions_override():
    result = shadowdb_validate_tenant({"name": "acme"}, pg_versions=[15, 16])
    assert result["pg_version"] == 16  # 17 is not offered: default falls back to the newest offered
    exc = raises_spec_error(
        shadowdb_validate_tenant, {"name": "acme", "pg_version": 17}, pg_versions=[15, 16]
    )
    assert_spec_error(exc, "tenant.pg_version", 17, "supported versions: 15, 16")


def test_allowed_extensions_override_as_list():
    spec = {"name": "acme", "extensions": ["citext"]}
    assert shadowdb_validate_tenant(spec, allowed_extensions=["citext"])["extensions"] == ["citext"]
    exc = raises_spec_error(
        shadowdb_validate_tenant,
        {"name": "acme", "extensions": ["vector"]},
        allowed_extensions=["citext"],
    )
    assert_spec_error(exc, "tenant.extensions", "vector", "allowed: citext")


@pytest.mark.parametrize("replicas", [0, 4, "3"])
def test_replicas_in_range(replicas):
    assert shadowdb_validate_tenant({"name": "acme", "replicas": replicas})["replicas"] == int(replicas)


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
            ["unknown field; known fields: backup, extensions, hba,"],
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
    exc = raises_spec_error(shadowdb_validate_tenant, {"name": "acme", **extra})
    assert_spec_error(exc, field, value, *fragments)


def test_unknown_field_message_lists_known_fields():
    exc = raises_spec_error(shadowdb_validate_tenant, {"name": "acme", "domain": "x"})
    assert str(exc) == (
        "tenant.domain: unknown field; known fields: "
        "backup, extensions, hba, name, pg_version, readonly_role, replicas, settings, source, state, "
        "superuser, tier"
    )


@pytest.mark.parametrize("spec", ["acme", ["acme"], None, 42])
def test_tenant_spec_must_be_a_mapping(spec):
    exc = raises_spec_error(shadowdb_validate_tenant, spec)
    assert_spec_error(exc, "tenant", spec, "is not a mapping")


def test_tenant_with_custom_tiers():
    assert shadowdb_validate_tenant({"name": "acme", "tier": "tiny"}, tiers=TINY)["tier"] == "tiny"
    exc = raises_spec_error(shadowdb_validate_tenant, {"name": "acme"}, tiers=TINY)
    assert_spec_error(exc, "tenant.tier", None, "unknown tier 'small'; known tiers: tiny")


# ---------------------------------------------------------------------------
# Tenant lists
# ---------------------------------------------------------------------------


def test_validate_tenants_keeps_input_order():
    result = shadowdb_validate_tenants([{"name": "zeta"}, {"name": "acme", "tier": "medium"}])
    assert [t["name"] for t in result] == ["zeta", "acme"]
    assert result[1]["tier"] == "medium"


@pytest.mark.parametrize("specs", [None, []])
def test_validate_tenants_empty(specs):
    assert shadowdb_validate_tenants(specs) == []


def test_duplicate_tenants():
    exc = raises_spec_error(shadowdb_validate_tenants, [{"name": "acme"}, {"name": "beta"}, {"name": "acme"}])
    assert exc.field == "tenants"
    assert str(exc).startswith("tenants: tenant name 'acme' is declared 2 times")


def test_all_duplicates_are_reported_sorted():
    specs = [{"name": n} for n in ["zz", "acme", "zz", "acme", "zz"]]
    exc = raises_spec_error(shadowdb_validate_tenants, specs)
    message = str(exc)
    assert "'acme' is declared 2 times" in message
    assert "'zz' is declared 3 times" in message
    assert message.index("'acme'") < message.index("'zz'")


def test_error_in_a_list_keeps_its_field_and_says_where():
    specs = [{"name": "acme"}, {"name": "beta", "replicas": 9}]
    exc = raises_spec_error(shadowdb_validate_tenants, specs)
    assert_spec_error(exc, "tenant.replicas", 9, "(in tenants[1], name 'beta')")
    exc = raises_spec_error(shadowdb_validate_tenants, [{"name": "acme"}, {"name": "Beta"}])
    assert_spec_error(exc, "tenant.name", "Beta", "(in tenants[1])")


def test_validate_tenants_passes_options_through():
    specs = [{"name": "acme", "tier": "tiny", "pg_version": 15}]
    result = shadowdb_validate_tenants(specs, tiers=TINY, pg_versions=[15])
    assert (result[0]["tier"], result[0]["pg_version"]) == ("tiny", 15)


@pytest.mark.parametrize("specs", [{"name": "acme"}, "acme"])
def test_validate_tenants_needs_a_list(specs):
    exc = raises_spec_error(shadowdb_validate_tenants, specs)
    assert_spec_error(exc, "tenants", specs, "is not a list")


# --- shadowdb_check_tenants: a batch, each spec on its own ---


def test_a_batch_keeps_the_valid_specs_and_names_each_refusal():
    checked = shadowdb_check_tenants(
        [
            {"name": "acme"},
            {"name": "postgres"},
            {"name": "globex", "replicas": 1},
            "nope",
            {"name": "initech"},
        ],
        standalone=True,
    )
    assert [entry["name"] for entry in checked] == ["acme", "postgres", "globex", None, "initech"]
    assert [entry["spec"]["name"] if entry["spec"] else None for entry in checked] == [
        "acme", None, None, None, "initech"
    ]  # fmt: skip
    assert checked[1]["error"].startswith("tenant.name: ")
    assert checked[2]["error"].startswith(
        "tenant.replicas: 1 replica(s) asked; this playbook converges standalone"
    )
    assert checked[3]["error"].startswith("tenant: ")
    assert checked[0]["error"] is None and checked[0]["spec"] == shadowdb_validate_tenant({"name": "acme"})


def test_a_name_given_twice_in_a_batch_refuses_both():
    checked = shadowdb_check_tenants([{"name": "acme"}, {"name": "acme", "tier": "medium"}, {"name": "b2"}])
    assert [entry["spec"] is None for entry in checked] == [True, True, False]
    assert checked[0]["error"] == "tenant.name: tenant name 'acme' is given 2 times"


def test_replicas_are_refused_only_for_standalone_batches():
    assert shadowdb_check_tenants([{"name": "acme", "replicas": 2}])[0]["spec"]["replicas"] == 2


def test_a_batch_that_is_not_a_list_is_refused():
    error = raises_spec_error(shadowdb_check_tenants, {"name": "acme"})
    assert error.field == "tenants" and "is not a list of tenant specs" in str(error)


def test_a_strict_check_raises_the_first_refusal():
    error = raises_spec_error(
        shadowdb_check_tenants, [{"name": "acme", "replicas": 1}], standalone=True, strict=True
    )
    assert error.field == "tenant.replicas" and str(error).startswith("tenant.replicas: 1 replica(s) asked")


def test_batch_refusals_name_each_refused_tenant_or_its_position():
    checked = shadowdb_check_tenants([{"name": "acme"}, {"name": "Bad_Name"}, {"name": "globex"}, 42])
    refusals = shadowdb_batch_refusals(checked, {"globex": "tenant.name: 'globex' is served by db2"})
    assert sorted(refusals) == ["Bad_Name", "globex", "tenants[3]"]
    assert refusals["globex"] == "tenant.name: 'globex' is served by db2"
    assert refusals["Bad_Name"].startswith("tenant.name:")
    assert shadowdb_batch_refusals(shadowdb_check_tenants([{"name": "acme"}])) == {}

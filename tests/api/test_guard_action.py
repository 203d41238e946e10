"""Unit tests for api/playbooks/action_plugins/shadowdb_api_guard.py's pure parts: the create
guard's refusals (names, versions) and where each name already is (db hosts, registry)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location(
    "shadowdb_api_guard_action", ROOT / "api" / "playbooks" / "action_plugins" / "shadowdb_api_guard.py"
)
guard = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(guard)


def test_bad_names_and_versions_a_host_cannot_install_are_refused_by_name():
    tenants = [
        {"name": "acme", "pg_version": 17, "host": "db1"},
        {"name": "Bad", "pg_version": 17, "host": "db1"},
        {"name": "old", "pg_version": 15, "host": "db1"},
        {"name": "ha", "pg_version": 15, "host": ""},  # an HA create: placed later
        {"name": "odd", "pg_version": "x", "host": "db2"},
    ]
    refused = guard.refusals(tenants, {"db1": [16, 17]})
    only = "only (inventory shadowdb_pg_versions)"
    assert refused == {
        "Bad": "tenant.name: 'Bad' is not a tenant name",
        "old": f"tenant.pg_version: host db1 can install PostgreSQL 16, 17 {only}, not 15",
        "odd": f"tenant.pg_version: host db2 can install PostgreSQL 17 {only}, not x",
    }


def test_a_name_found_on_a_host_or_in_the_registry_is_a_conflict_naming_where():
    found = {
        "db1": ["acme OS user pg-acme", "acme /mnt/db/acme", "acmex /mnt/db/acmex"],
        "db2": [],
        "db3": ["globex /etc/shadowdb/volumes/globex.env"],
    }
    records = [{"tenant": "globex", "host": "db3"}, {"tenant": "initech", "host": ""}]
    out = guard.conflicts(["acme", "globex", "initech", "fresh"], found, records)
    assert out == {
        "acme": {"hosts": ["db1"], "found": {"db1": ["OS user pg-acme", "/mnt/db/acme"]}, "registry": False},
        "globex": {
            "hosts": ["db3"],
            "found": {"db3": ["/etc/shadowdb/volumes/globex.env"]},
            "registry": True,
        },
        "initech": {"hosts": ["the registry"], "found": {}, "registry": True},
    }

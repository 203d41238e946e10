"""Unit tests for action_plugins/shadowdb_cluster.py's pure parts: a tenant's postgresql.conf
settings (the tier, the tenant's own, then what ShadowDB manages and the archive settings)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from shadowdb.backup import shadowdb_archive_settings
from shadowdb.layout import tenant_layout
from shadowdb.tiers import shadowdb_pg_settings

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location(
    "shadowdb_cluster_action", ROOT / "action_plugins" / "shadowdb_cluster.py"
)
action = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(action)


def spec(**given):
    return {"name": "acme", "tier": "small", "pg_version": 17, "extensions": [], "settings": {}} | given


def test_managed_settings_are_the_tenants_own_and_over_its_tier():
    layout = tenant_layout("acme")
    settings = action.pg_conf(spec(settings={"work_mem": "8MB"}), 24817, layout, [], {})
    assert settings["work_mem"] == "8MB"
    assert settings["port"] == "24817"
    assert settings["cluster_name"] == "acme"
    assert settings["unix_socket_directories"] == "/mnt/db/acme/run"
    assert settings["ssl_cert_file"] == "/mnt/db/acme/tls/server.crt"
    assert settings["ssl_key_file"] == "/mnt/db/acme/tls/server.key"
    assert settings["ssl"] == "on"
    assert settings["password_encryption"] == action.MANAGED_SETTINGS["password_encryption"]
    # Everything else is the tier's (and the tenant's override) as the filter gives it.
    tier = shadowdb_pg_settings("small", {"work_mem": "8MB"}, {}, [])
    assert {k: v for k, v in settings.items() if k in tier and k not in action.MANAGED_SETTINGS} == {
        k: v
        for k, v in tier.items()
        if k not in action.MANAGED_SETTINGS and k not in ("port", "cluster_name")
    }
    assert "archive_mode" not in settings


def test_a_tenant_with_backups_archives_its_wal():
    settings = action.pg_conf(spec(), 24817, tenant_layout("acme"), ["acme"], {})
    for key, value in shadowdb_archive_settings("acme", "small", {}).items():
        assert settings[key] == value
    assert settings["archive_mode"] == "on"


def test_the_rendered_files_are_the_role_templates():
    templates = ROOT / "roles" / "tenant_cluster" / "templates"
    assert all((templates / name).is_file() for name in action.TEMPLATES)


def test_the_record_apply_writes_is_the_one_the_shadowdb_role_records():
    from shadowdb.layout import shadowdb_converged_record

    whole = shadowdb_converged_record("acme", "f" * 64, 24817)
    assert action.converged_record("acme", "f" * 64, 24817) == {
        key: whole[key] for key in ("fingerprint", "files", "units", "mountpoint")
    }

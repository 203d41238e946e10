"""Unit tests for shadowdb/layout.py: a tenant's names and paths on its host, the same as the
roles derive them (their defaults and vars rendered here with the role's own templates)."""

from __future__ import annotations

from pathlib import Path

import jinja2
import pytest
import yaml

from shadowdb.errors import SpecError
from shadowdb.layout import (
    MOUNT_ROOT,
    OS_USER_PREFIX,
    PORT_RANGES,
    SECRETS_ROOT,
    shadowdb_os_user,
    tenant_layout,
)

ROOT = Path(__file__).resolve().parents[2]


def role_vars(role: str, **given) -> dict:
    """A role's defaults and vars, ``given`` on top, with every template that only needs plain
    variables rendered (the others, e.g. those calling filters or facts, stay as they are)."""
    data: dict = {}
    for part in ("defaults", "vars"):
        path = ROOT / "roles" / role / part / "main.yml"
        if path.exists():
            data |= yaml.safe_load(path.read_text()) or {}
    data |= given
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)  # noqa: S701 - not HTML
    for _ in range(5):
        for key, value in data.items():
            if isinstance(value, str) and "{{" in value:
                try:
                    data[key] = env.from_string(value).render(data)
                except jinja2.TemplateError:
                    pass
    return data


def test_layout_of_a_tenant():
    layout = tenant_layout("acme")
    assert layout.as_dict() == {
        "name": "acme",
        "os_user": "pg-acme",
        "owner": "acme",
        "readonly_user": "acme_ro",
        "home": "/mnt/db/acme",
        "data_dir": "/mnt/db/acme/data",
        "socket_dir": "/mnt/db/acme/run",
        "tls_dir": "/mnt/db/acme/tls",
        "secrets_dir": "/etc/shadowdb/tenants/acme",
        "volume_env_file": "/etc/shadowdb/volumes/acme.env",
        "loop_image": "/var/lib/shadowdb/volumes/acme.img",
        "postgres_unit": "shadowdb-postgres@acme.service",
        "volume_unit": "shadowdb-volume@acme.service",
        "patroni_unit": "shadowdb-patroni@acme.service",
        "patroni_config": "/etc/patroni/acme.yml",
    }
    assert tenant_layout("acme", mount_root="/srv/db").data_dir == "/srv/db/acme/data"


def test_a_reserved_name_has_a_layout_a_bad_one_has_not():
    # A tenant made before its name was reserved still has a user, a mount and units to remove.
    assert tenant_layout("postgres").os_user == shadowdb_os_user("postgres") == "pg-postgres"
    with pytest.raises(SpecError, match=r"^tenant\.name: 'Bad_Name' is not a valid tenant name"):
        tenant_layout("Bad_Name")


def test_same_layout_as_the_tenant_cluster_role():
    role = role_vars("tenant_cluster", tenant_cluster_name="acme")
    layout = tenant_layout("acme")
    assert role["tenant_cluster_mount_root"] == MOUNT_ROOT
    assert role["tenant_cluster_secrets_dir"] == SECRETS_ROOT
    assert role["tenant_cluster_os_user"] == layout.os_user
    assert role["tenant_cluster_owner"] == role["tenant_cluster_dbname"] == layout.owner
    assert role["tenant_cluster_readonly_user"] == layout.readonly_user
    assert role["tenant_cluster_home"] == layout.home
    assert role["tenant_cluster_data_dir"] == layout.data_dir
    assert role["tenant_cluster_socket_dir"] == layout.socket_dir
    assert role["tenant_cluster_tls_dir"] == layout.tls_dir
    assert role["tenant_cluster_tenant_secrets"] == layout.secrets_dir
    assert role["tenant_cluster_unit"] == layout.postgres_unit
    ports = (role["tenant_cluster_port_range_start"], role["tenant_cluster_port_range_end"])
    assert ports == PORT_RANGES["postgres"]


def test_same_layout_as_the_tenant_volume_role():
    role = role_vars("tenant_volume", tenant_volume_name="acme", tenant_volume_backend="loop")
    layout = tenant_layout("acme")
    assert role["tenant_volume_mount_root"] == MOUNT_ROOT
    assert role["tenant_volume_mountpoint"] == layout.home
    assert role["tenant_volume_unit"] == layout.volume_unit
    assert role["tenant_volume_env_file"] == layout.volume_env_file
    assert role["tenant_volume_source"].strip() == layout.loop_image


def test_same_layout_as_the_patroni_role():
    role = role_vars("patroni", patroni_tenant="acme", patroni_pg_version=17)
    layout = tenant_layout("acme")
    assert role["patroni_mount_root"] == MOUNT_ROOT
    assert role["patroni_secrets_dir"] == SECRETS_ROOT
    assert role["patroni_os_user"] == layout.os_user
    assert role["patroni_home"] == layout.home
    assert role["patroni_data_dir"] == layout.data_dir
    assert role["patroni_tls_dir"] == layout.tls_dir
    assert role["patroni_unit"] == layout.patroni_unit
    assert role["patroni_config_file"] == layout.patroni_config
    assert (role["patroni_port_range_start"], role["patroni_port_range_end"]) == PORT_RANGES["ha_postgres"]
    api_ports = (role["patroni_api_port_range_start"], role["patroni_api_port_range_end"])
    assert api_ports == PORT_RANGES["patroni_api"]


def test_port_pools_do_not_overlap_and_avoid_the_ephemeral_range():
    ranges = sorted(PORT_RANGES.values())
    assert all(low <= high for low, high in ranges)
    assert all(prev[1] < nxt[0] for prev, nxt in zip(ranges, ranges[1:], strict=False))
    assert ranges[-1][1] < 32768
    assert OS_USER_PREFIX == "pg-"

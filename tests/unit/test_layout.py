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


# role -> (the variables a play gives it, {role variable: what it must equal}).
ROLES = {
    "tenant_cluster": (
        {"tenant_cluster_name": "acme"},
        {
            "tenant_cluster_mount_root": MOUNT_ROOT,
            "tenant_cluster_secrets_dir": SECRETS_ROOT,
            "tenant_cluster_os_user": "os_user",
            "tenant_cluster_owner": "owner",
            "tenant_cluster_dbname": "owner",
            "tenant_cluster_readonly_user": "readonly_user",
            "tenant_cluster_home": "home",
            "tenant_cluster_data_dir": "data_dir",
            "tenant_cluster_socket_dir": "socket_dir",
            "tenant_cluster_tls_dir": "tls_dir",
            "tenant_cluster_tenant_secrets": "secrets_dir",
            "tenant_cluster_unit": "postgres_unit",
            "tenant_cluster_port_range_start": PORT_RANGES["postgres"][0],
            "tenant_cluster_port_range_end": PORT_RANGES["postgres"][1],
        },
    ),
    "tenant_volume": (
        {"tenant_volume_name": "acme", "tenant_volume_backend": "loop"},
        {
            "tenant_volume_mount_root": MOUNT_ROOT,
            "tenant_volume_mountpoint": "home",
            "tenant_volume_unit": "volume_unit",
            "tenant_volume_env_file": "volume_env_file",
            "tenant_volume_source": "loop_image",
        },
    ),
    "patroni": (
        {"patroni_tenant": "acme", "patroni_pg_version": 17},
        {
            "patroni_mount_root": MOUNT_ROOT,
            "patroni_secrets_dir": SECRETS_ROOT,
            "patroni_os_user": "os_user",
            "patroni_home": "home",
            "patroni_data_dir": "data_dir",
            "patroni_tls_dir": "tls_dir",
            "patroni_unit": "patroni_unit",
            "patroni_config_file": "patroni_config",
            "patroni_port_range_start": PORT_RANGES["ha_postgres"][0],
            "patroni_port_range_end": PORT_RANGES["ha_postgres"][1],
            "patroni_api_port_range_start": PORT_RANGES["patroni_api"][0],
            "patroni_api_port_range_end": PORT_RANGES["patroni_api"][1],
        },
    ),
}


@pytest.mark.parametrize("role", sorted(ROLES))
def test_same_layout_as_the_role(role):
    given, expected = ROLES[role]
    values = role_vars(role, **given)
    layout = tenant_layout("acme").as_dict()
    for var, want in expected.items():
        want = layout[want] if isinstance(want, str) and want in layout else want
        got = values[var].strip() if isinstance(values[var], str) else values[var]
        assert got == want, var


def test_port_pools_do_not_overlap_and_avoid_the_ephemeral_range():
    ranges = sorted(PORT_RANGES.values())
    assert all(low <= high for low, high in ranges)
    assert all(prev[1] < nxt[0] for prev, nxt in zip(ranges, ranges[1:], strict=False))
    assert ranges[-1][1] < 32768
    assert OS_USER_PREFIX == "pg-"


def test_the_converged_record_names_what_proves_a_tenant_converged():
    from shadowdb.layout import shadowdb_converged_record

    record = shadowdb_converged_record("acme", "f" * 64, "20001")
    assert record["port"] == 20001 and record["mountpoint"] == "/mnt/db/acme"
    assert "/mnt/db/acme/data/postgresql.conf" in record["files"]
    assert "/etc/systemd/system/shadowdb-postgres@acme.service.d/50-tenant.conf" in record["files"]
    assert record["units"] == ["shadowdb-volume@acme.service", "shadowdb-postgres@acme.service"]

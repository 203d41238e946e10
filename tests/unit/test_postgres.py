"""Unit tests for shadowdb/postgres.py: allow-listed extensions and their packages."""

from __future__ import annotations

import pytest

from shadowdb.postgres import shadowdb_extension_packages
from tests.unit.spec_cases import assert_spec_error, raises_spec_error

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
    assert shadowdb_extension_packages(extensions, pg_version) == expected


def test_extension_packages_with_custom_allow_list():
    allowed = {"timescaledb": "timescaledb-2-postgresql-{pg_version}", "citext": None}
    assert shadowdb_extension_packages(["timescaledb", "citext"], 16, allowed_extensions=allowed) == [
        "timescaledb-2-postgresql-16"
    ]
    exc = raises_spec_error(shadowdb_extension_packages, ["vector"], 16, allowed_extensions=allowed)
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
    exc = raises_spec_error(shadowdb_extension_packages, extensions, pg_version)
    assert_spec_error(exc, field, value)

"""What PostgreSQL a tenant runs: the major versions it may ask for and the extensions it may
install (an allow-list, with the Debian package each one needs)."""

from __future__ import annotations

from collections.abc import Mapping

from .errors import SpecError
from .values import as_int, is_int, is_list, join_names, show, to_int

# Extension allow-list: extension name -> Debian package providing it, as a
# template where "{pg_version}" is replaced by the major version, or None when
# the extension ships with the server package (contrib).
EXTENSIONS = {
    "btree_gist": None,
    "citext": None,
    "hstore": None,
    "pg_stat_statements": None,
    "pg_trgm": None,
    "pgcrypto": None,
    "postgis": "postgresql-{pg_version}-postgis-3",
    "uuid-ossp": None,
    "vector": "postgresql-{pg_version}-pgvector",
}

# Extensions whose library must be in shared_preload_libraries. Those shipped
# with the server (contrib) are always preloaded, so that CREATE EXTENSION later
# never needs a restart; others only when the tenant asks for them (their
# package may not be installed otherwise).
PRELOAD_EXTENSIONS = frozenset({"pg_stat_statements"})

# PostgreSQL major versions a tenant may run, and the default.
SUPPORTED_PG_VERSIONS = [15, 16, 17]
DEFAULT_PG_VERSION = 17


def resolve_extensions(allowed_extensions) -> dict:
    """Extension allow-list in effect: a dict name -> package template/None, or a list of names
    (packages then taken from EXTENSIONS, None for names it does not know)."""
    if not allowed_extensions:
        return EXTENSIONS
    if isinstance(allowed_extensions, Mapping):
        table = {}
        for name, template in allowed_extensions.items():
            if template is not None and not isinstance(template, str):
                raise SpecError(
                    f"allowed_extensions.{name}",
                    f"{show(template)} is not a package name template; use a string or null (contrib)",
                )
            table[str(name)] = None if template is None else str(template)
        return table
    if is_list(allowed_extensions):
        return {str(name): EXTENSIONS.get(str(name)) for name in allowed_extensions}
    raise SpecError(
        "allowed_extensions", f"{show(allowed_extensions)} is not a mapping or list of extensions"
    )


def check_extensions(extensions, table: Mapping, field: str = "tenant.extensions") -> list:
    """Validate a list of extension names against the allow-list; return them sorted and deduplicated."""
    if extensions is None:
        return []
    if not is_list(extensions):
        raise SpecError(field, f"{show(extensions)} is not a list of extension names")
    for ext in extensions:
        if not isinstance(ext, str) or ext not in table:
            raise SpecError(field, f"{show(ext)} is not allow-listed; allowed: {join_names(table)}")
    return sorted({str(ext) for ext in extensions})


def resolve_pg_versions(pg_versions) -> list:
    if not pg_versions:
        return list(SUPPORTED_PG_VERSIONS)
    if not is_list(pg_versions):
        raise SpecError("pg_versions", f"{show(pg_versions)} is not a list of PostgreSQL major versions")
    return sorted({as_int(v, "pg_versions", "use PostgreSQL major versions such as 17") for v in pg_versions})


def check_pg_version(value, versions: list, field: str = "tenant.pg_version") -> int:
    supported = ", ".join(str(v) for v in versions)
    hint = f"supported versions: {supported}"
    if is_int(value):
        number = int(value)
    elif isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        number = to_int(value.strip())
    else:
        raise SpecError(field, f"{show(value)} is not a PostgreSQL major version; {hint}")
    if number not in versions:
        raise SpecError(field, f"{show(value)} is not a supported PostgreSQL version; {hint}")
    return number


def shadowdb_extension_packages(extensions, pg_version, allowed_extensions=None) -> list:
    """Sorted, deduplicated Debian packages needed for ``extensions`` on ``pg_version``.

    Contrib extensions need nothing beyond the server package.
    """
    table = resolve_extensions(allowed_extensions)
    names = check_extensions(extensions, table)
    version = check_pg_version(pg_version, list(SUPPORTED_PG_VERSIONS))
    packages = {table[n].replace("{pg_version}", str(version)) for n in names if table[n] is not None}
    return sorted(packages)

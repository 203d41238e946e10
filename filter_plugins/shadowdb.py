"""ShadowDB Ansible filters: the tenant specification rules, in one place.

Every rule about what a tenant may ask for (name, tier, PostgreSQL version,
extensions, settings, network access, replicas) lives in this file, so that the
playbooks and the FastAPI service enforce exactly the same contract. The API
imports this file by path, which is why it must work without Ansible installed.

All functions are pure: no I/O, no clock, no randomness. Output dicts are built
in sorted key order so that rendered files and API responses are stable.

Every validation failure raises :class:`SpecError`, whose ``field`` is the dotted
path of the offending input (``tenant.name``, ``tenant.settings.work_mem``, ...)
and whose message starts with that field and the bad value, then says what is
allowed.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Mapping

try:
    from ansible.errors import AnsibleFilterError
except ImportError:  # imported by the API service, outside Ansible

    class AnsibleFilterError(ValueError):  # type: ignore[no-redef]
        """Stand-in for ansible.errors.AnsibleFilterError when Ansible is absent."""


class SpecError(AnsibleFilterError):
    """A tenant specification (or ShadowDB configuration) is invalid.

    ``field`` is the dotted path of the offending input, e.g. ``tenant.name``.
    ``str(exc)`` is the full message, which starts with ``"<field>: "``.
    """

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.reason = message
        super().__init__(f"{field}: {message}")

    def __reduce__(self):
        # Keep SpecError picklable (worker processes) despite the two-argument constructor.
        return (type(self), (self.field, self.reason))


# ---------------------------------------------------------------------------
# Constants: the single source of truth for the tenant contract.
# ---------------------------------------------------------------------------

# A tenant name is used as a DNS label (SNI routing name), an ext4 filesystem
# label (max 16 bytes), and the suffix of the tenant's OS user ("pg-<name>").
# The intersection of those rules: 2-16 characters, lowercase ASCII letters,
# digits and '-', starting with a letter and ending with a letter or digit.
TENANT_NAME_RE = r"^[a-z][a-z0-9-]{0,14}[a-z0-9]$"
TENANT_NAME_MIN_LEN = 2
TENANT_NAME_MAX_LEN = 16
_TENANT_NAME = re.compile(TENANT_NAME_RE, re.ASCII)
_NAME_RULE = (
    "use 2-16 characters, lowercase letters, digits and '-', "
    "starting with a letter and ending with a letter or digit"
)

# Prefix of the per-tenant OS user that owns the cluster and runs its service.
OS_USER_PREFIX = "pg-"

# Reserved tenant names. A tenant's name is also its owner role and database, its ext4 label
# and LVM volume name, the suffix of its OS user and units, its TLS/SNI name and the name of
# its HAProxy backend; so a name that already means something in one of those places is
# refused when a tenant is created (a tenant being removed may still carry one: it was made
# before the name was reserved, and must stay removable). Each entry says why, and the error
# repeats it. Only names the TENANT_NAME_RE regex accepts are listed: everything with an
# underscore (pg_*, current_user, session_user, _apt, ...) is already impossible.
# Classes (one reason string each):
_RESERVED_PG = {
    # PostgreSQL's own roles and databases, and role names it refuses or treats specially.
    "postgres": "PostgreSQL's bootstrap superuser role and maintenance database",
    "template0": "PostgreSQL's template database",
    "template1": "PostgreSQL's template database",
    "public": "PostgreSQL's pseudo-role that stands for every role",
    "none": "a role name PostgreSQL reserves",
}
_HBA_KEYWORD = "a pg_hba.conf keyword (a rule naming it would match other databases, roles or hosts)"
_RESERVED_HBA = dict.fromkeys(
    ("all", "replication", "samegroup", "samehost", "samenet", "samerole", "sameuser"), _HBA_KEYWORD
)
# PostgreSQL's reserved SQL keywords (category "reserved" of the keyword appendix, the ones
# without '_'): they cannot name a role or database without quotes.
_SQL_KEYWORD = "a reserved SQL keyword (the owner role and database could not be named without quotes)"
_RESERVED_SQL = dict.fromkeys(
    (
        "analyse analyze and any array as asc asymmetric both case cast check collate column "
        "constraint create default deferrable desc distinct do else end except false fetch for "
        "foreign from grant group having in initially intersect into lateral leading limit "
        "localtime localtimestamp not null offset on only or order placing primary references "
        "returning select some symmetric table then to trailing true union unique user using "
        "variadic when where window with"
    ).split(),
    _SQL_KEYWORD,
)
# Roles, users and names ShadowDB itself uses (roles/patroni/vars/main.yml, the HAProxy health
# check's startup packet, /etc/shadowdb, the etcd prefix /shadowdb/), and the agents it runs or
# plans to run next to the tenants (monitoring, backups, pooling).
_RESERVED_SHADOWDB = {
    "replicator": "the replication role ShadowDB creates in every HA tenant",
    "rewind": "the pg_rewind role ShadowDB creates in every HA tenant",
    "patroni": "the user of Patroni's REST API in every HA tenant",
    "haproxy": "the role HAProxy's health checks log in as (and HAProxy's OS account)",
    "shadowdb": "ShadowDB's own name (its directories, units and etcd prefix)",
    "monitoring": "reserved for ShadowDB's monitoring role",
    "monitor": "reserved for ShadowDB's monitoring role",
    "exporter": "reserved for ShadowDB's monitoring role",
    "pgbouncer": "the connection pooler's role and OS account",
    "pgbackrest": "the backup tool's role and OS account",
    "barman": "the backup tool's role and OS account",
}
# System accounts on the hosts: Debian's base-passwd list (trixie and bookworm) plus the
# service users of the packages ShadowDB installs (postgresql, haproxy, etcd-server, patroni,
# prometheus-postgres-exporter, openssh-server, dbus, polkitd). libpq and the tools on a host
# take the OS user's name as the default role and database, so a tenant with such a name
# would be what an account's psql, cron job or agent reaches without asking for it.
_SYSTEM_ACCOUNT = "a system account on the hosts (its tools would reach this tenant's database by default)"
_RESERVED_ACCOUNTS = dict.fromkeys(
    (
        "root daemon bin sys sync games man lp mail news uucp proxy www-data backup list irc gnats "
        "nobody messagebus polkitd sshd etcd prometheus"
    ).split(),
    _SYSTEM_ACCOUNT,
)
# Filesystem labels and LVM volume names hosts commonly give their own disks: the tenant's
# volume is labelled after the tenant (mounted by LABEL=) and, with the lvm backend, is the
# logical volume /dev/<vg>/<name>.
_HOST_VOLUME = "a filesystem label or LVM volume name hosts use for their own disks"
_RESERVED_VOLUMES = dict.fromkeys(
    "boot efi esp home opt rootfs cloudimg-rootfs srv swap tmp usr var".split(), _HOST_VOLUME
)

# Every reserved tenant name -> why it is reserved (the error message says it).
RESERVED_NAMES = dict(
    sorted(
        (
            _RESERVED_VOLUMES
            | _RESERVED_ACCOUNTS
            | _RESERVED_SHADOWDB
            | _RESERVED_SQL
            | _RESERVED_HBA
            | _RESERVED_PG  # last: PostgreSQL's own reason wins (postgres is also an OS account)
        ).items()
    )
)
# Reserved endings and beginnings -> why.
#   -ro       an HA tenant <t> owns the read-only route <t>-ro (the SNI name <t>-ro.<domain>, the
#             HAProxy backend t_<t>-ro, the server certificate's second name): a tenant named
#             <t>-ro would take that route. With the suffix refused, every <t> is free of it.
#   systemd-  systemd's own service accounts (systemd-network, systemd-timesync, ...).
#   pvmove, snapshot  LVM refuses logical volume names starting with these.
RESERVED_SUFFIXES = {
    "-ro": "a name ending in '-ro' is the read-only route of an HA tenant "
    "(the HA tenant {base!r} serves reads at '{name}.<domain>')",
}
RESERVED_PREFIXES = {
    "systemd-": "a name starting with 'systemd-' is a systemd service account",
    "pvmove": "LVM reserves volume names starting with 'pvmove'",
    "snapshot": "LVM reserves volume names starting with 'snapshot'",
}

# Keys every tier must define; all are positive integers.
#   disk_size_mb     size of the tenant's dedicated filesystem image
#   memory_mb        systemd MemoryMax of the tenant's postgres unit
#   cpu_quota_pct    systemd CPUQuota (100 = one full CPU)
#   max_connections  postgresql.conf max_connections
#   nofile           systemd LimitNOFILE
#   tasks_max        systemd TasksMax
TIER_KEYS = ("cpu_quota_pct", "disk_size_mb", "max_connections", "memory_mb", "nofile", "tasks_max")

# Default tier table. Every filter taking ``tiers`` accepts a replacement table
# (e.g. from inventory); when given and non-empty it replaces this one entirely.
DEFAULT_TIERS = {
    "small": {
        "disk_size_mb": 1024,
        "memory_mb": 512,
        "cpu_quota_pct": 50,
        "max_connections": 50,
        "nofile": 1024,
        "tasks_max": 256,
    },
    "medium": {
        "disk_size_mb": 2048,
        "memory_mb": 1024,
        "cpu_quota_pct": 100,
        "max_connections": 100,
        "nofile": 2048,
        "tasks_max": 512,
    },
    "large": {
        "disk_size_mb": 4096,
        "memory_mb": 2048,
        "cpu_quota_pct": 200,
        "max_connections": 200,
        "nofile": 4096,
        "tasks_max": 1024,
    },
}
DEFAULT_TIER = "small"

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

# Streaming replicas a tenant may ask for.
MAX_REPLICAS = 4

# Tenant lifecycle states.
TENANT_STATES = ("absent", "present")

# Networks allowed to connect when a tenant spec gives no "hba".
DEFAULT_HBA = ("0.0.0.0/0",)

# Fields a tenant spec may contain; anything else is rejected (typos must not
# be silently ignored).
TENANT_FIELDS = (
    "extensions",
    "hba",
    "name",
    "pg_version",
    "readonly_role",
    "replicas",
    "settings",
    "state",
    "superuser",
    "tier",
)

# PostgreSQL int GUCs are 32-bit: no value may exceed this many base units.
_INT_MAX = 2**31 - 1


def _size(unit: str, minimum: int = 0, allow_minus_one: bool = False) -> dict:
    """Memory setting; ``unit`` is the base unit of a bare integer, ``minimum`` is in that unit."""
    return {"type": "size", "unit": unit, "min": minimum, "max": _INT_MAX, "allow_minus_one": allow_minus_one}


def _time(unit: str, minimum: int = 0, maximum: int = _INT_MAX, allow_minus_one: bool = False) -> dict:
    """Time setting; ``unit`` is the base unit of a bare integer, bounds are in that unit."""
    return {"type": "time", "unit": unit, "min": minimum, "max": maximum, "allow_minus_one": allow_minus_one}


def _int(minimum: int, maximum: int) -> dict:
    return {"type": "int", "min": minimum, "max": maximum}


def _real(minimum: float, maximum: float) -> dict:
    return {"type": "real", "min": minimum, "max": maximum}


def _enum(*values: str, bool_ok: bool = False) -> dict:
    """Enumerated setting; ``bool_ok`` when it also accepts on/off (YAML turns those into booleans)."""
    return {"type": "enum", "values": values, "bool_ok": bool_ok}


_BOOL = {"type": "bool"}
_STRING = {"type": "string"}

# Settings a tenant may override in its spec, with the type and bounds of their
# values. Bounds follow PostgreSQL's where a bad value would stop the server
# from starting (e.g. shared_buffers >= 128kB, max_wal_size >= 2 WAL segments).
OVERRIDABLE_SETTINGS = {
    # memory / disk
    "work_mem": _size("kB", minimum=64),
    "maintenance_work_mem": _size("kB", minimum=1024),
    "effective_cache_size": _size("8kB", minimum=1),
    "shared_buffers": _size("8kB", minimum=16),
    "temp_file_limit": _size("kB", allow_minus_one=True),
    "max_wal_size": _size("MB", minimum=32),
    "min_wal_size": _size("MB", minimum=32),
    # timeouts
    "statement_timeout": _time("ms"),
    "lock_timeout": _time("ms"),
    "idle_in_transaction_session_timeout": _time("ms"),
    "idle_session_timeout": _time("ms"),
    "log_min_duration_statement": _time("ms", allow_minus_one=True),
    "checkpoint_timeout": _time("s", minimum=30, maximum=86400),
    "autovacuum_naptime": _time("s", minimum=1, maximum=_INT_MAX // 1000),
    # planner / executor
    "random_page_cost": _real(0.0, 1_000_000.0),
    "seq_page_cost": _real(0.0, 1_000_000.0),
    "checkpoint_completion_target": _real(0.0, 1.0),
    "effective_io_concurrency": _int(0, 1000),
    "default_statistics_target": _int(1, 10000),
    "max_parallel_workers_per_gather": _int(0, 64),
    "max_connections": _int(5, 10000),
    "jit": _BOOL,
    "huge_pages": _enum("off", "on", "try", bool_ok=True),
    # logging / statistics
    "log_statement": _enum("none", "ddl", "mod", "all"),
    "log_connections": _BOOL,
    "log_disconnections": _BOOL,
    "log_lock_waits": _BOOL,
    "track_io_timing": _BOOL,
    # WAL / durability
    "synchronous_commit": _enum("on", "off", "local", "remote_write", "remote_apply", bool_ok=True),
    "wal_compression": _enum("off", "on", "pglz", "lz4", "zstd", bool_ok=True),
    "autovacuum": _BOOL,
    # session defaults
    "default_transaction_isolation": _enum(
        "serializable", "repeatable read", "read committed", "read uncommitted"
    ),
    "timezone": _STRING,
    "datestyle": _STRING,
    "search_path": _STRING,
}

# Settings ShadowDB sets itself (paths, networking, TLS, preloading,
# authentication, archiving, logging location, replication plumbing). A tenant
# spec overriding one is rejected with an explicit message rather than as an
# unknown setting.
MANAGED_SETTINGS = frozenset(
    {
        "archive_command",
        "archive_library",
        "archive_mode",
        "cluster_name",
        "config_file",
        "data_directory",
        "dynamic_library_path",
        "external_pid_file",
        "hba_file",
        "hot_standby",
        "ident_file",
        "listen_addresses",
        "local_preload_libraries",
        "log_destination",
        "log_directory",
        "log_filename",
        "logging_collector",
        "max_replication_slots",
        "max_wal_senders",
        "password_encryption",
        "port",
        "primary_conninfo",
        "primary_slot_name",
        "restore_command",
        "session_preload_libraries",
        "shared_preload_libraries",
        "ssl",
        "ssl_ca_file",
        "ssl_cert_file",
        "ssl_ciphers",
        "ssl_crl_file",
        "ssl_key_file",
        "ssl_min_protocol_version",
        "ssl_passphrase_command",
        "superuser_reserved_connections",
        "unix_socket_directories",
        "unix_socket_group",
        "unix_socket_permissions",
        "wal_level",
    }
)

# Longest string value accepted for a string setting.
MAX_STRING_SETTING_LEN = 1024

# Tier bounds on resource settings. The bounds in OVERRIDABLE_SETTINGS are PostgreSQL's; on
# top of them a tenant's override may not ask for more of a resource than its tier pays for:
#   count settings   at most the tier's own figure (max_connections);
#   memory settings  at most a fixed fraction of the tier's memory_mb (its MemoryMax): half for
#                    shared_buffers, a quarter for each per-operation area (work_mem,
#                    maintenance_work_mem), all of it for the planner's effective_cache_size;
#   disk settings    at most the tier's disk_size_mb for temp_file_limit (-1, no limit, stays
#                    allowed: temp files live on the tenant's own filesystem, which has that
#                    size), half of it for the WAL budget (max_wal_size, min_wal_size);
#   cpu settings     max_parallel_workers_per_gather: one worker per CPU of the tier's CPUQuota,
#                    and never less than PostgreSQL's default of 2.
# No sum is checked (work_mem is per sort or hash, per connection): systemd's MemoryMax is the
# hard limit, these bounds refuse what could only ever fail against it. Settings that a tenant
# cannot override (temp_buffers, wal_buffers, max_worker_processes, ...) need no bound. The
# bounds come from the tier in effect, i.e. from the inventory's `tiers` when it replaces ours.
# setting -> (tier key, numerator, denominator, minimum): limit = max(minimum, key * num // den)
# in the setting's unit (MB for memory and disk, connections, workers; cpu_quota_pct in %).
TIER_SETTING_BOUNDS = {
    "max_connections": ("max_connections", 1, 1, 0),
    "shared_buffers": ("memory_mb", 1, 2, 0),
    "effective_cache_size": ("memory_mb", 1, 1, 0),
    "work_mem": ("memory_mb", 1, 4, 0),
    "maintenance_work_mem": ("memory_mb", 1, 4, 0),
    "temp_file_limit": ("disk_size_mb", 1, 1, 0),
    "max_wal_size": ("disk_size_mb", 1, 2, 0),
    "min_wal_size": ("disk_size_mb", 1, 2, 0),
    "max_parallel_workers_per_gather": ("cpu_quota_pct", 1, 100, 2),
}

_SIZE_UNITS = {"B": 1, "kB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}
_SIZE_BASE_BYTES = {"kB": 1024, "8kB": 8192, "MB": 1024**2}
_SIZE_RE = re.compile(r"([0-9]+)\s*(B|kB|MB|GB|TB)?", re.ASCII)
_TIME_UNITS_US = {"us": 1, "ms": 1000, "s": 10**6, "min": 60 * 10**6, "h": 3600 * 10**6, "d": 86400 * 10**6}
_TIME_RE = re.compile(r"([0-9]+)\s*(us|ms|s|min|h|d)?", re.ASCII)
_INT_RE = re.compile(r"-?[0-9]+", re.ASCII)
_REAL_RE = re.compile(r"-?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+)?", re.ASCII)
_SETTING_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)
_FIELD_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)
_BOOL_STRINGS = {"true": True, "on": True, "yes": True, "false": False, "off": False, "no": False}
_MAX_REPR = 80


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def _show(value) -> str:
    """repr() of a user value for messages, truncated; plain types for str/int subclasses."""
    if isinstance(value, bool):
        text = repr(bool(value))
    elif isinstance(value, str):
        text = repr(str(value))
    elif isinstance(value, int):
        text = repr(int(value))
    else:
        text = repr(value)
    if len(text) > _MAX_REPR:
        text = text[: _MAX_REPR - 3] + "..."
    return text


def _join(names) -> str:
    return ", ".join(sorted(str(n) for n in names))


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_list(value) -> bool:
    return isinstance(value, list | tuple)


def _to_int(digits: str) -> int:
    """int() of an ASCII digit string, clamped so absurdly long input cannot trip Python's digit limit."""
    negative = digits.startswith("-")
    if len(digits.lstrip("-")) > 18:
        return -(10**18) if negative else 10**18
    return int(digits)


def _as_int(value, field: str, what: str) -> int:
    """Accept an int or a string of digits (inventory vars may be strings); reject bools and floats."""
    if _is_int(value):
        return int(value)
    if isinstance(value, str) and _INT_RE.fullmatch(value.strip()):
        return _to_int(value.strip())
    raise SpecError(field, f"{_show(value)} is not an integer; {what}")


def _as_bool(value, field: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _BOOL_STRINGS:
        return _BOOL_STRINGS[value.strip().lower()]
    raise SpecError(field, f"{_show(value)} is not a boolean; use true or false")


def _human_size(num_bytes: int) -> str:
    for unit in ("TB", "GB", "MB", "kB"):
        factor = _SIZE_UNITS[unit]
        if num_bytes >= factor and num_bytes % factor == 0:
            return f"{num_bytes // factor}{unit}"
    return f"{num_bytes}B"


def _human_time(micros: int) -> str:
    for unit in ("d", "h", "min", "s", "ms"):
        factor = _TIME_UNITS_US[unit]
        if micros >= factor and micros % factor == 0:
            return f"{micros // factor}{unit}"
    return f"{micros}us"


# ---------------------------------------------------------------------------
# Setting values
# ---------------------------------------------------------------------------


def _check_quantity(value, field, spec, kind, units, base_factor, parse_re, human):
    """Shared size/time validation. Returns the normalized string ("64MB", "1000", "-1")."""
    unit = spec["unit"]
    allow_m1 = spec["allow_minus_one"]
    unit_list = ", ".join(units)
    example = "'64MB'" if kind == "size" else "'30s'"
    hint = f"use an integer number of {unit} or a number with a unit ({unit_list}), e.g. {example}" + (
        ", or -1 to disable" if allow_m1 else ""
    )
    if _is_int(value):
        number, value_unit, text = int(value), None, str(int(value))
    elif isinstance(value, str):
        stripped = value.strip()
        if stripped == "-1":
            number, value_unit, text = -1, None, "-1"
        else:
            match = parse_re.fullmatch(stripped)
            if not match:
                raise SpecError(field, f"{_show(value)} is not a valid {kind}; {hint}")
            number, value_unit = _to_int(match.group(1)), match.group(2)
            text = f"{number}{value_unit or ''}"
    else:
        raise SpecError(field, f"{_show(value)} is not a valid {kind}; {hint}")

    if number == -1 and value_unit is None:
        if allow_m1:
            return "-1"
        raise SpecError(field, f"{_show(value)} is not allowed (no -1 for this setting); {hint}")
    if number < 0:
        raise SpecError(field, f"{_show(value)} is negative; {hint}")
    amount = number * (units[value_unit] if value_unit else base_factor)
    low, high = spec["min"] * base_factor, spec["max"] * base_factor
    if amount < low:
        raise SpecError(field, f"{_show(value)} is below the minimum of {human(low)}")
    if amount > high:
        raise SpecError(field, f"{_show(value)} is above the maximum of {human(high)}")
    return text


def _check_setting_value(value, field: str, spec: Mapping) -> str:
    """Validate one setting value against its type spec; return it as a postgresql.conf string."""
    kind = spec["type"]
    if kind == "size":
        return _check_quantity(
            value, field, spec, "size", _SIZE_UNITS, _SIZE_BASE_BYTES[spec["unit"]], _SIZE_RE, _human_size
        )
    if kind == "time":
        return _check_quantity(
            value, field, spec, "time", _TIME_UNITS_US, _TIME_UNITS_US[spec["unit"]], _TIME_RE, _human_time
        )
    if kind == "bool":
        if isinstance(value, bool):
            return "on" if value else "off"
        if isinstance(value, str) and value.strip().lower() in _BOOL_STRINGS:
            return "on" if _BOOL_STRINGS[value.strip().lower()] else "off"
        raise SpecError(field, f"{_show(value)} is not a boolean; use on/off or true/false")
    if kind == "enum":
        allowed = spec["values"]
        if isinstance(value, bool) and spec["bool_ok"]:
            return "on" if value else "off"
        if isinstance(value, str):
            lowered = value.strip().lower()
            if lowered in allowed:
                return lowered
            if spec["bool_ok"] and lowered in _BOOL_STRINGS:
                return "on" if _BOOL_STRINGS[lowered] else "off"
        raise SpecError(field, f"{_show(value)} is not allowed; use one of: {', '.join(allowed)}")
    if kind == "int":
        low, high = spec["min"], spec["max"]
        number = _as_int(value, field, f"use an integer from {low} to {high}")
        if not low <= number <= high:
            raise SpecError(field, f"{_show(value)} is out of range; use an integer from {low} to {high}")
        return str(number)
    if kind == "real":
        low, high = spec["min"], spec["max"]
        hint = f"use a number from {low:g} to {high:g}"
        if _is_int(value) or isinstance(value, float):
            number = float(value)
        elif isinstance(value, str) and _REAL_RE.fullmatch(value.strip()):
            number = float(value.strip())
        else:
            raise SpecError(field, f"{_show(value)} is not a number; {hint}")
        if not math.isfinite(number) or not low <= number <= high:
            raise SpecError(field, f"{_show(value)} is out of range; {hint}")
        if number.is_integer():
            return str(int(number))
        return repr(number)
    if kind == "string":
        rule = (
            "string values must not contain single quotes, backslashes, newlines, NUL or other "
            f"control characters, and are limited to {MAX_STRING_SETTING_LEN} characters"
        )
        if not isinstance(value, str):
            raise SpecError(field, f"{_show(value)} is not a string; {rule}")
        text = str(value)
        if "'" in text:
            raise SpecError(field, f"{_show(value)} contains a single quote; {rule}")
        if "\\" in text:
            raise SpecError(field, f"{_show(value)} contains a backslash; {rule}")
        if "\n" in text or "\r" in text:
            raise SpecError(field, f"{_show(value)} contains a newline; {rule}")
        if "\x00" in text:
            raise SpecError(field, f"{_show(value)} contains a NUL character; {rule}")
        if any(ord(c) < 32 or ord(c) == 127 for c in text):
            raise SpecError(field, f"{_show(value)} contains a control character; {rule}")
        if len(text) > MAX_STRING_SETTING_LEN:
            raise SpecError(field, f"{_show(value)} is {len(text)} characters long; {rule}")
        return text
    raise AssertionError(f"unknown setting type {kind!r}")  # pragma: no cover - table bug


def shadowdb_validate_settings(settings, field: str = "tenant.settings", tier=None, tiers=None) -> dict:
    """Validate tenant setting overrides; return them normalized, as a sorted dict of strings.

    Setting names are case-insensitive (as in PostgreSQL) and returned lowercase.
    Values contain no quote, backslash or control character, so a template may
    render every one of them as ``name = 'value'`` (PostgreSQL accepts quoted
    values for every type).

    With ``tier`` (a tier name of ``tiers``, or of the default table), resource
    settings are also bounded by that tier (TIER_SETTING_BOUNDS).
    """
    if settings is None:
        return {}
    if not isinstance(settings, Mapping):
        raise SpecError(field, f"{_show(settings)} is not a mapping of setting names to values")
    result = {}
    seen = {}
    for key in sorted(settings, key=str):
        value = settings[key]
        if not isinstance(key, str) or not _SETTING_NAME_RE.fullmatch(key):
            raise SpecError(field, f"{_show(key)} is not a valid setting name")
        name = key.lower()
        key_field = f"{field}.{key}"
        if name in MANAGED_SETTINGS:
            raise SpecError(key_field, f"{_show(key)} is managed by ShadowDB and cannot be overridden")
        spec = OVERRIDABLE_SETTINGS.get(name)
        if spec is None:
            raise SpecError(
                key_field,
                f"unknown or not overridable setting {_show(key)}; "
                f"overridable settings: {_join(OVERRIDABLE_SETTINGS)}",
            )
        if name in seen:
            raise SpecError(
                key_field, f"{key!r} is given twice (also as {seen[name]!r}); setting names ignore case"
            )
        seen[name] = key
        result[name] = _check_setting_value(value, key_field, spec)
    if tier is not None:
        table = _resolve_tiers(tiers)
        tier_name = _tier_name(tier, table)
        limits = _tier_limits(table[tier_name])
        for name in sorted(result):
            if name not in limits:
                continue
            limit, limit_text, why = limits[name]
            amount = _setting_amount(result[name], OVERRIDABLE_SETTINGS[name])
            if amount > limit:
                key = seen[name]
                raise SpecError(
                    f"{field}.{key}",
                    f"{_show(settings[key])} is above the {tier_name} tier's limit of {limit_text}{why}",
                )
    return dict(sorted(result.items()))


def _setting_amount(text: str, spec: Mapping) -> int:
    """A normalized setting value as a number: bytes for sizes, the integer for ints (-1 stays -1)."""
    if spec["type"] == "int" or text == "-1":
        return int(text)
    match = _SIZE_RE.fullmatch(text)
    unit = match.group(2)
    return int(match.group(1)) * (_SIZE_UNITS[unit] if unit else _SIZE_BASE_BYTES[spec["unit"]])


_FRACTIONS = {(1, 1): "", (1, 2): "half of ", (1, 4): "a quarter of "}


def _tier_limits(tier: Mapping) -> dict:
    """setting -> (limit as _setting_amount compares it, limit as text, why) for one resolved tier."""
    limits = {}
    for name, (key, num, den, minimum) in TIER_SETTING_BOUNDS.items():
        figure = tier[key]
        value = max(minimum, figure * num // den)
        if key == "max_connections":
            limits[name] = (value, str(value), "")
        elif key == "cpu_quota_pct":
            why = f" (one per CPU of its {figure}% CPU quota, at least {minimum})"
            limits[name] = (value, str(value), why)
        else:
            fraction = _FRACTIONS.get((num, den), f"{num}/{den} of ")
            what = "memory" if key == "memory_mb" else "disk"
            why = f" ({fraction}its {_human_size(figure * 1024**2)} {what})"
            limits[name] = (value * 1024**2, _human_size(value * 1024**2), why)
    return limits


def shadowdb_tier_limits(tier_name, tiers=None) -> dict:
    """The largest override a tenant of ``tier_name`` may give each bounded setting, as a sorted
    dict of postgresql.conf strings (e.g. ``{"max_connections": "50", "shared_buffers": "256MB"}``).

    See TIER_SETTING_BOUNDS for the rule.
    """
    table = _resolve_tiers(tiers)
    name = _tier_name(tier_name, table)
    return {setting: text for setting, (_, text, _) in sorted(_tier_limits(table[name]).items())}


# ---------------------------------------------------------------------------
# Tiers
# ---------------------------------------------------------------------------


def _resolve_tiers(tiers) -> dict:
    """Return the tier table in effect (validated): ``tiers`` if given and non-empty, else DEFAULT_TIERS."""
    if tiers is None or (isinstance(tiers, Mapping) and not tiers):
        return DEFAULT_TIERS
    if not isinstance(tiers, Mapping):
        raise SpecError("tiers", f"{_show(tiers)} is not a mapping of tier names to tier definitions")
    table = {}
    for name in sorted(tiers, key=str):
        if not isinstance(name, str) or not name:
            raise SpecError("tiers", f"{_show(name)} is not a valid tier name; use a non-empty string")
        tier = tiers[name]
        if not isinstance(tier, Mapping):
            raise SpecError(f"tiers.{name}", f"{_show(tier)} is not a mapping; define {', '.join(TIER_KEYS)}")
        unknown = sorted(set(map(str, tier)) - set(TIER_KEYS))
        if unknown:
            raise SpecError(
                f"tiers.{name}.{unknown[0]}", f"unknown tier key; known keys: {', '.join(TIER_KEYS)}"
            )
        entry = {}
        for key in TIER_KEYS:
            key_field = f"tiers.{name}.{key}"
            if key not in tier:
                raise SpecError(key_field, "missing; every tier must define " + ", ".join(TIER_KEYS))
            number = _as_int(tier[key], key_field, "use a positive integer")
            if number < 1:
                raise SpecError(key_field, f"{_show(tier[key])} is not positive; use a positive integer")
            entry[key] = number
        table[str(name)] = entry
    return table


def _tier_name(tier_name, table: Mapping, field: str = "tenant.tier") -> str:
    if isinstance(tier_name, str) and tier_name in table:
        return str(tier_name)
    raise SpecError(field, f"unknown tier {_show(tier_name)}; known tiers: {_join(table)}")


def shadowdb_tier(tier_name, tiers=None) -> dict:
    """Return a tier's definition plus derived sizing, as a sorted dict.

    Derived keys: shared_buffers_mb (25% of memory), effective_cache_size_mb (75%),
    work_mem_kb (memory spread over 4 sorts per connection, at least 1MB),
    maintenance_work_mem_mb (memory/16, at least 16MB), temp_file_limit_mb (half
    the disk), memory_max (systemd MemoryMax, "512M"), cpu_quota (systemd
    CPUQuota, "50%") and name.
    """
    table = _resolve_tiers(tiers)
    name = _tier_name(tier_name, table)
    tier = dict(table[name])
    memory_mb = tier["memory_mb"]
    tier.update(
        name=name,
        shared_buffers_mb=memory_mb // 4,
        effective_cache_size_mb=memory_mb * 3 // 4,
        work_mem_kb=max(1024, memory_mb * 1024 // (tier["max_connections"] * 4)),
        maintenance_work_mem_mb=max(16, memory_mb // 16),
        temp_file_limit_mb=tier["disk_size_mb"] // 2,
        memory_max=f"{memory_mb}M",
        cpu_quota=f"{tier['cpu_quota_pct']}%",
    )
    return dict(sorted(tier.items()))


# ---------------------------------------------------------------------------
# Extensions and versions
# ---------------------------------------------------------------------------


def _resolve_extensions(allowed_extensions) -> dict:
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
                    f"{_show(template)} is not a package name template; use a string or null (contrib)",
                )
            table[str(name)] = None if template is None else str(template)
        return table
    if _is_list(allowed_extensions):
        return {str(name): EXTENSIONS.get(str(name)) for name in allowed_extensions}
    raise SpecError(
        "allowed_extensions", f"{_show(allowed_extensions)} is not a mapping or list of extensions"
    )


def _check_extensions(extensions, table: Mapping, field: str = "tenant.extensions") -> list:
    """Validate a list of extension names against the allow-list; return them sorted and deduplicated."""
    if extensions is None:
        return []
    if not _is_list(extensions):
        raise SpecError(field, f"{_show(extensions)} is not a list of extension names")
    for ext in extensions:
        if not isinstance(ext, str) or ext not in table:
            raise SpecError(field, f"{_show(ext)} is not allow-listed; allowed: {_join(table)}")
    return sorted({str(ext) for ext in extensions})


def _resolve_pg_versions(pg_versions) -> list:
    if not pg_versions:
        return list(SUPPORTED_PG_VERSIONS)
    if not _is_list(pg_versions):
        raise SpecError("pg_versions", f"{_show(pg_versions)} is not a list of PostgreSQL major versions")
    return sorted(
        {_as_int(v, "pg_versions", "use PostgreSQL major versions such as 17") for v in pg_versions}
    )


def _check_pg_version(value, versions: list, field: str = "tenant.pg_version") -> int:
    supported = ", ".join(str(v) for v in versions)
    hint = f"supported versions: {supported}"
    if _is_int(value):
        number = int(value)
    elif isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        number = _to_int(value.strip())
    else:
        raise SpecError(field, f"{_show(value)} is not a PostgreSQL major version; {hint}")
    if number not in versions:
        raise SpecError(field, f"{_show(value)} is not a supported PostgreSQL version; {hint}")
    return number


def shadowdb_extension_packages(extensions, pg_version, allowed_extensions=None) -> list:
    """Sorted, deduplicated Debian packages needed for ``extensions`` on ``pg_version``.

    Contrib extensions need nothing beyond the server package.
    """
    table = _resolve_extensions(allowed_extensions)
    names = _check_extensions(extensions, table)
    version = _check_pg_version(pg_version, list(SUPPORTED_PG_VERSIONS))
    packages = {table[n].replace("{pg_version}", str(version)) for n in names if table[n] is not None}
    return sorted(packages)


# ---------------------------------------------------------------------------
# postgresql.conf
# ---------------------------------------------------------------------------


def shadowdb_pg_settings(
    tier_name, overrides=None, tiers=None, extensions=None, allowed_extensions=None
) -> dict:
    """postgresql.conf settings for a tenant, as a sorted dict of strings.

    Order of precedence: tier-derived sizing, then shared_preload_libraries,
    then the tenant's validated overrides on top (managed settings, including
    shared_preload_libraries, cannot be overridden).
    """
    sizing = shadowdb_tier(tier_name, tiers)
    table = _resolve_extensions(allowed_extensions)
    wanted = set(_check_extensions(extensions, table))
    preload = sorted(
        ext for ext in PRELOAD_EXTENSIONS if table.get(ext, EXTENSIONS.get(ext)) is None or ext in wanted
    )
    result = {
        "max_connections": str(sizing["max_connections"]),
        "shared_buffers": f"{sizing['shared_buffers_mb']}MB",
        "effective_cache_size": f"{sizing['effective_cache_size_mb']}MB",
        "work_mem": f"{sizing['work_mem_kb']}kB",
        "maintenance_work_mem": f"{sizing['maintenance_work_mem_mb']}MB",
        "temp_file_limit": f"{sizing['temp_file_limit_mb']}MB",
        "shared_preload_libraries": ",".join(preload),
    }
    result.update(shadowdb_validate_settings(overrides, "tenant.settings", sizing["name"], tiers))
    return dict(sorted(result.items()))


# ---------------------------------------------------------------------------
# Tenant specs
# ---------------------------------------------------------------------------


def _name_problems(name: str) -> list:
    problems = []
    if len(name) > TENANT_NAME_MAX_LEN:
        problems.append(f"it is {len(name)} characters long, the maximum is {TENANT_NAME_MAX_LEN}")
    elif len(name) < TENANT_NAME_MIN_LEN:
        chars = "character" if len(name) == 1 else "characters"
        problems.append(f"it is {len(name)} {chars} long, the minimum is {TENANT_NAME_MIN_LEN}")
    if any(c.isupper() for c in name):
        problems.append("it contains uppercase letters")
    bad = sorted({c for c in name if not (c.isascii() and (c.islower() or c.isdigit() or c == "-"))})
    bad = [c for c in bad if not c.isupper()]
    if bad:
        problems.append("it contains invalid character(s) " + " ".join(repr(c) for c in bad))
    if name[:1].isdigit():
        problems.append("it starts with a digit")
    elif name[:1] == "-":
        problems.append("it starts with '-'")
    if len(name) > 1 and name.endswith("-"):
        problems.append("it ends with '-'")
    return problems


def reserved_name_reason(name: str):
    """Why ``name`` may not name a new tenant (RESERVED_NAMES, _SUFFIXES, _PREFIXES), or None."""
    if name in RESERVED_NAMES:
        return RESERVED_NAMES[name]
    for suffix, reason in RESERVED_SUFFIXES.items():
        if name.endswith(suffix):
            return reason.format(name=name, base=name[: -len(suffix)])
    for prefix, reason in RESERVED_PREFIXES.items():
        if name.startswith(prefix):
            return reason
    return None


def _check_name(name, field: str = "tenant.name", reserved_ok: bool = False) -> str:
    """A valid tenant name; a reserved one (RESERVED_NAMES) only with ``reserved_ok``."""
    if name is None:
        raise SpecError(field, f"missing required field; a tenant name is required ({_NAME_RULE})")
    if not isinstance(name, str):
        raise SpecError(field, f"{_show(name)} is not a valid tenant name: it is not a string; {_NAME_RULE}")
    if _TENANT_NAME.fullmatch(name):
        reason = None if reserved_ok else reserved_name_reason(name)
        if reason:
            raise SpecError(field, f"{_show(name)} is reserved: {reason}; choose another name")
        return str(name)
    problems = _name_problems(name)
    reason = ("; ".join(problems) + "; ") if problems else ""
    raise SpecError(field, f"{_show(name)} is not a valid tenant name: {reason}{_NAME_RULE}")


def _check_hba(hba, field: str = "tenant.hba") -> list:
    if hba is None:
        return list(DEFAULT_HBA)
    if not _is_list(hba):
        raise SpecError(field, f"{_show(hba)} is not a list of networks; use CIDRs such as '10.0.0.0/8'")
    result = []
    for entry in hba:
        if not isinstance(entry, str):
            raise SpecError(field, f"{_show(entry)} is not a network; use CIDRs such as '10.0.0.0/8'")
        try:
            network = ipaddress.ip_network(entry.strip(), strict=True)
        except ValueError:
            try:
                loose = ipaddress.ip_network(entry.strip(), strict=False)
            except ValueError:
                raise SpecError(
                    field,
                    f"{_show(entry)} is not a valid network; "
                    "use CIDRs such as '10.0.0.0/8' or '2001:db8::/32'",
                ) from None
            raise SpecError(
                field,
                f"{_show(entry)} has host bits set; use the network address, e.g. '{loose.with_prefixlen}'",
            ) from None
        text = network.with_prefixlen
        if text not in result:
            result.append(text)
    return result


def shadowdb_validate_tenant(spec, tiers=None, allowed_extensions=None, pg_versions=None) -> dict:
    """Validate one tenant spec; return it normalized with defaults filled, as a sorted dict.

    Fields: name (required), tier ("small"), pg_version (17), extensions ([],
    sorted and deduplicated), settings ({}, normalized), hba (["0.0.0.0/0"],
    normalized CIDRs, duplicates dropped, order kept), replicas (0, 0..4), state
    ("present"), readonly_role (false), superuser (false: the key is only returned
    when true). A field set to null takes its default.

    A new tenant's name may not be reserved (RESERVED_NAMES) and its resource settings
    are bounded by its tier (TIER_SETTING_BOUNDS); neither applies with state "absent",
    so that a tenant made before a rule existed can still be removed.
    """
    if not isinstance(spec, Mapping):
        raise SpecError("tenant", f"{_show(spec)} is not a mapping; a tenant spec is a dict with a 'name'")
    for key in sorted(spec, key=str):
        if not isinstance(key, str) or not _FIELD_NAME_RE.fullmatch(key):
            raise SpecError(
                "tenant", f"{_show(key)} is not a valid field name; known fields: {_join(TENANT_FIELDS)}"
            )
        if key not in TENANT_FIELDS:
            raise SpecError(f"tenant.{key}", f"unknown field; known fields: {_join(TENANT_FIELDS)}")

    table = _resolve_tiers(tiers)
    versions = _resolve_pg_versions(pg_versions)
    default_version = DEFAULT_PG_VERSION if DEFAULT_PG_VERSION in versions else versions[-1]

    def get(key, default):
        value = spec.get(key)
        return default if value is None else value

    # A tenant being removed is what it was made as: a name reserved since, or settings above
    # today's tier bounds, must not make it impossible to remove.
    state = get("state", "present")
    absent = state == "absent"
    name = _check_name(spec.get("name"), reserved_ok=absent)
    tier = _tier_name(get("tier", DEFAULT_TIER), table)
    pg_version = _check_pg_version(get("pg_version", default_version), versions)
    extensions = _check_extensions(spec.get("extensions"), _resolve_extensions(allowed_extensions))
    settings = shadowdb_validate_settings(
        spec.get("settings"), "tenant.settings", None if absent else tier, table
    )
    hba = _check_hba(spec.get("hba"))

    replicas_hint = f"use an integer from 0 to {MAX_REPLICAS}"
    replicas = _as_int(get("replicas", 0), "tenant.replicas", replicas_hint)
    if not 0 <= replicas <= MAX_REPLICAS:
        raise SpecError("tenant.replicas", f"{_show(spec.get('replicas'))} is out of range; {replicas_hint}")

    if not isinstance(state, str) or state not in TENANT_STATES:
        raise SpecError(
            "tenant.state", f"{_show(state)} is not a valid state; use one of: {_join(TENANT_STATES)}"
        )

    readonly_role = _as_bool(get("readonly_role", False), "tenant.readonly_role")
    superuser = _as_bool(get("superuser", False), "tenant.superuser")

    result = {
        "extensions": extensions,
        "hba": hba,
        "name": name,
        "pg_version": pg_version,
        "readonly_role": readonly_role,
        "replicas": replicas,
        "settings": settings,
        "state": str(state),
        "tier": tier,
    }
    # Only when true: the spec of every tenant made before the field existed stays the same
    # (and so its fingerprint and its stored copies). Read it as spec.get("superuser", False).
    if superuser:
        result["superuser"] = True
    return dict(sorted(result.items()))


def shadowdb_validate_tenants(specs, tiers=None, allowed_extensions=None, pg_versions=None) -> list:
    """Validate a list of tenant specs; return them normalized, in input order.

    An error in one spec keeps its field and gets the spec's position (and name,
    when known) appended. Names declared more than once raise SpecError("tenants").
    """
    if specs is None:
        return []
    if not _is_list(specs):
        raise SpecError("tenants", f"{_show(specs)} is not a list of tenant specs")
    result = []
    for index, spec in enumerate(specs):
        try:
            result.append(shadowdb_validate_tenant(spec, tiers, allowed_extensions, pg_versions))
        except SpecError as exc:
            where = f"tenants[{index}]"
            if isinstance(spec, Mapping) and isinstance(spec.get("name"), str) and exc.field != "tenant.name":
                where += f", name {_show(spec.get('name'))}"
            raise SpecError(exc.field, f"{exc.reason} (in {where})") from None
    counts = {}
    for tenant in result:
        counts[tenant["name"]] = counts.get(tenant["name"], 0) + 1
    duplicates = sorted(name for name, count in counts.items() if count > 1)
    if duplicates:
        raise SpecError(
            "tenants",
            "; ".join(f"tenant name {name!r} is declared {counts[name]} times" for name in duplicates)
            + "; tenant names must be unique",
        )
    return result


def shadowdb_os_user(name) -> str:
    """OS user owning a tenant's cluster: "pg-<name>".

    A reserved name is accepted here (a tenant made before it was reserved has that user).
    """
    return OS_USER_PREFIX + _check_name(name, reserved_ok=True)


class FilterModule:
    """Ansible filter plugin entry point."""

    def filters(self):
        return {
            "shadowdb_extension_packages": shadowdb_extension_packages,
            "shadowdb_os_user": shadowdb_os_user,
            "shadowdb_pg_settings": shadowdb_pg_settings,
            "shadowdb_tier": shadowdb_tier,
            "shadowdb_tier_limits": shadowdb_tier_limits,
            "shadowdb_validate_settings": shadowdb_validate_settings,
            "shadowdb_validate_tenant": shadowdb_validate_tenant,
            "shadowdb_validate_tenants": shadowdb_validate_tenants,
        }

"""Tiers and settings: what a tenant of each tier gets, and which postgresql.conf settings it may
change, within PostgreSQL's bounds and its tier's.

A tier sizes the tenant's volume, its systemd limits (MemoryMax, CPUQuota, TasksMax,
LimitNOFILE) and its max_connections; postgresql.conf's memory settings are derived from it.
A deployment may replace the default tier table with its own (inventory ``shadowdb_tiers``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

from .errors import SpecError
from .postgres import EXTENSIONS, PRELOAD_EXTENSIONS, check_extensions, resolve_extensions
from .values import BOOL_STRINGS, as_int, is_int, join_names, show, to_int

# Keys every tier must define; all are positive integers.
#   disk_size_mb     size of the tenant's dedicated filesystem image
#   memory_mb        systemd MemoryMax of the tenant's postgres unit
#   cpu_quota_pct    systemd CPUQuota (100 = one full CPU)
#   max_connections  postgresql.conf max_connections
#   nofile           systemd LimitNOFILE
#   tasks_max        systemd TasksMax
TIER_KEYS = ("cpu_quota_pct", "disk_size_mb", "max_connections", "memory_mb", "nofile", "tasks_max")

# Keys a tier may define (positive integers); a tier without one gets the default below. They
# matter only for tenants with backups (shadowdb/backup.py):
#   archive_timeout_s      PostgreSQL archive_timeout: the longest a committed row waits to leave
#                          the host in an archived WAL segment (the tier's RPO)
#   backup_retention_full  full backups kept (with their differentials and the WAL they need)
OPTIONAL_TIER_KEYS = {"archive_timeout_s": 300, "backup_retention_full": 2}

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
        "archive_timeout_s": 300,
        "backup_retention_full": 2,
    },
    "medium": {
        "disk_size_mb": 2048,
        "memory_mb": 1024,
        "cpu_quota_pct": 100,
        "max_connections": 100,
        "nofile": 2048,
        "tasks_max": 512,
        "archive_timeout_s": 120,
        "backup_retention_full": 3,
    },
    "large": {
        "disk_size_mb": 4096,
        "memory_mb": 2048,
        "cpu_quota_pct": 200,
        "max_connections": 200,
        "nofile": 4096,
        "tasks_max": 1024,
        "archive_timeout_s": 60,
        "backup_retention_full": 4,
    },
}
DEFAULT_TIER = "small"

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
_REAL_RE = re.compile(r"-?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+)?", re.ASCII)
_SETTING_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)


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
    if is_int(value):
        number, value_unit, text = int(value), None, str(int(value))
    elif isinstance(value, str):
        stripped = value.strip()
        if stripped == "-1":
            number, value_unit, text = -1, None, "-1"
        else:
            match = parse_re.fullmatch(stripped)
            if not match:
                raise SpecError(field, f"{show(value)} is not a valid {kind}; {hint}")
            number, value_unit = to_int(match.group(1)), match.group(2)
            text = f"{number}{value_unit or ''}"
    else:
        raise SpecError(field, f"{show(value)} is not a valid {kind}; {hint}")

    if number == -1 and value_unit is None:
        if allow_m1:
            return "-1"
        raise SpecError(field, f"{show(value)} is not allowed (no -1 for this setting); {hint}")
    if number < 0:
        raise SpecError(field, f"{show(value)} is negative; {hint}")
    amount = number * (units[value_unit] if value_unit else base_factor)
    low, high = spec["min"] * base_factor, spec["max"] * base_factor
    if amount < low:
        raise SpecError(field, f"{show(value)} is below the minimum of {human(low)}")
    if amount > high:
        raise SpecError(field, f"{show(value)} is above the maximum of {human(high)}")
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
        if isinstance(value, str) and value.strip().lower() in BOOL_STRINGS:
            return "on" if BOOL_STRINGS[value.strip().lower()] else "off"
        raise SpecError(field, f"{show(value)} is not a boolean; use on/off or true/false")
    if kind == "enum":
        allowed = spec["values"]
        if isinstance(value, bool) and spec["bool_ok"]:
            return "on" if value else "off"
        if isinstance(value, str):
            lowered = value.strip().lower()
            if lowered in allowed:
                return lowered
            if spec["bool_ok"] and lowered in BOOL_STRINGS:
                return "on" if BOOL_STRINGS[lowered] else "off"
        raise SpecError(field, f"{show(value)} is not allowed; use one of: {', '.join(allowed)}")
    if kind == "int":
        low, high = spec["min"], spec["max"]
        number = as_int(value, field, f"use an integer from {low} to {high}")
        if not low <= number <= high:
            raise SpecError(field, f"{show(value)} is out of range; use an integer from {low} to {high}")
        return str(number)
    if kind == "real":
        low, high = spec["min"], spec["max"]
        hint = f"use a number from {low:g} to {high:g}"
        if is_int(value) or isinstance(value, float):
            number = float(value)
        elif isinstance(value, str) and _REAL_RE.fullmatch(value.strip()):
            number = float(value.strip())
        else:
            raise SpecError(field, f"{show(value)} is not a number; {hint}")
        if not math.isfinite(number) or not low <= number <= high:
            raise SpecError(field, f"{show(value)} is out of range; {hint}")
        if number.is_integer():
            return str(int(number))
        return repr(number)
    if kind == "string":
        rule = (
            "string values must not contain single quotes, backslashes, newlines, NUL or other "
            f"control characters, and are limited to {MAX_STRING_SETTING_LEN} characters"
        )
        if not isinstance(value, str):
            raise SpecError(field, f"{show(value)} is not a string; {rule}")
        text = str(value)
        if "'" in text:
            raise SpecError(field, f"{show(value)} contains a single quote; {rule}")
        if "\\" in text:
            raise SpecError(field, f"{show(value)} contains a backslash; {rule}")
        if "\n" in text or "\r" in text:
            raise SpecError(field, f"{show(value)} contains a newline; {rule}")
        if "\x00" in text:
            raise SpecError(field, f"{show(value)} contains a NUL character; {rule}")
        if any(ord(c) < 32 or ord(c) == 127 for c in text):
            raise SpecError(field, f"{show(value)} contains a control character; {rule}")
        if len(text) > MAX_STRING_SETTING_LEN:
            raise SpecError(field, f"{show(value)} is {len(text)} characters long; {rule}")
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
        raise SpecError(field, f"{show(settings)} is not a mapping of setting names to values")
    result = {}
    seen = {}
    for key in sorted(settings, key=str):
        value = settings[key]
        if not isinstance(key, str) or not _SETTING_NAME_RE.fullmatch(key):
            raise SpecError(field, f"{show(key)} is not a valid setting name")
        name = key.lower()
        key_field = f"{field}.{key}"
        if name in MANAGED_SETTINGS:
            raise SpecError(key_field, f"{show(key)} is managed by ShadowDB and cannot be overridden")
        spec = OVERRIDABLE_SETTINGS.get(name)
        if spec is None:
            raise SpecError(
                key_field,
                f"unknown or not overridable setting {show(key)}; "
                f"overridable settings: {join_names(OVERRIDABLE_SETTINGS)}",
            )
        if name in seen:
            raise SpecError(
                key_field, f"{key!r} is given twice (also as {seen[name]!r}); setting names ignore case"
            )
        seen[name] = key
        result[name] = _check_setting_value(value, key_field, spec)
    if tier is not None:
        table = resolve_tiers(tiers)
        tier_name = check_tier(tier, table)
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
                    f"{show(settings[key])} is above the {tier_name} tier's limit of {limit_text}{why}",
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
    table = resolve_tiers(tiers)
    name = check_tier(tier_name, table)
    return {setting: text for setting, (_, text, _) in sorted(_tier_limits(table[name]).items())}


# ---------------------------------------------------------------------------
# Tiers
# ---------------------------------------------------------------------------


def resolve_tiers(tiers) -> dict:
    """Return the tier table in effect (validated): ``tiers`` if given and non-empty, else DEFAULT_TIERS."""
    if tiers is None or (isinstance(tiers, Mapping) and not tiers):
        return DEFAULT_TIERS
    if not isinstance(tiers, Mapping):
        raise SpecError("tiers", f"{show(tiers)} is not a mapping of tier names to tier definitions")
    table = {}
    for name in sorted(tiers, key=str):
        if not isinstance(name, str) or not name:
            raise SpecError("tiers", f"{show(name)} is not a valid tier name; use a non-empty string")
        tier = tiers[name]
        if not isinstance(tier, Mapping):
            raise SpecError(f"tiers.{name}", f"{show(tier)} is not a mapping; define {', '.join(TIER_KEYS)}")
        known = TIER_KEYS + tuple(OPTIONAL_TIER_KEYS)
        unknown = sorted(set(map(str, tier)) - set(known))
        if unknown:
            raise SpecError(f"tiers.{name}.{unknown[0]}", f"unknown tier key; known keys: {', '.join(known)}")
        entry = {}
        for key in known:
            key_field = f"tiers.{name}.{key}"
            if key not in tier and key in OPTIONAL_TIER_KEYS:
                entry[key] = OPTIONAL_TIER_KEYS[key]
                continue
            if key not in tier:
                raise SpecError(key_field, "missing; every tier must define " + ", ".join(TIER_KEYS))
            number = as_int(tier[key], key_field, "use a positive integer")
            if number < 1:
                raise SpecError(key_field, f"{show(tier[key])} is not positive; use a positive integer")
            entry[key] = number
        table[str(name)] = entry
    return table


def check_tier(tier_name, table: Mapping, field: str = "tenant.tier") -> str:
    if isinstance(tier_name, str) and tier_name in table:
        return str(tier_name)
    raise SpecError(field, f"unknown tier {show(tier_name)}; known tiers: {join_names(table)}")


def shadowdb_tier(tier_name, tiers=None) -> dict:
    """Return a tier's definition plus derived sizing, as a sorted dict.

    Derived keys: shared_buffers_mb (25% of memory), effective_cache_size_mb (75%),
    work_mem_kb (memory spread over 4 sorts per connection, at least 1MB),
    maintenance_work_mem_mb (memory/16, at least 16MB), temp_file_limit_mb (half
    the disk), memory_max (systemd MemoryMax, "512M"), cpu_quota (systemd
    CPUQuota, "50%"), shm_size (the tenant's private /dev/shm: a quarter of its
    memory, at least 64M; its pages count against MemoryMax) and name.
    """
    table = resolve_tiers(tiers)
    name = check_tier(tier_name, table)
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
        shm_size=f"{max(64, memory_mb // 4)}M",
    )
    return dict(sorted(tier.items()))


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
    table = resolve_extensions(allowed_extensions)
    wanted = set(check_extensions(extensions, table))
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

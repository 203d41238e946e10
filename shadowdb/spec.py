"""The tenant spec: one schema for inventories, extra vars and the API, validated once before
anything is touched.

Every rule about what a tenant may ask for (name, tier, PostgreSQL version, extensions,
settings, network access, replicas) is checked here or by the modules it calls (tiers,
postgres), so that the playbooks (through the filter plugins) and the API enforce exactly the
same contract.

All functions are pure: no I/O, no clock, no randomness. Output dicts are built in sorted key
order so that rendered files and API responses are stable.

Every validation failure raises :class:`SpecError`, whose ``field`` is the dotted path of the
offending input (``tenant.name``, ``tenant.settings.work_mem``, ...) and whose message starts
with that field and the bad value, then says what is allowed.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping

from .errors import SpecError
from .postgres import (
    DEFAULT_PG_VERSION,
    check_extensions,
    check_pg_version,
    resolve_extensions,
    resolve_pg_versions,
)
from .tiers import DEFAULT_TIER, check_tier, resolve_tiers, shadowdb_validate_settings
from .values import as_bool, as_int, is_list, join_names, show

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

# Streaming replicas a tenant may ask for.
MAX_REPLICAS = 4

# Tenant lifecycle states.
TENANT_STATES = ("absent", "present")

# Networks allowed to connect when a tenant spec gives no "hba".
DEFAULT_HBA = ("0.0.0.0/0",)

# Fields a tenant spec may contain; anything else is rejected (typos must not
# be silently ignored).
TENANT_FIELDS = (
    "backup",
    "extensions",
    "hba",
    "name",
    "pg_version",
    "readonly_role",
    "replicas",
    "settings",
    "source",
    "state",
    "superuser",
    "tier",
)

_FIELD_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)


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


def check_name(name, field: str = "tenant.name", reserved_ok: bool = False) -> str:
    """A valid tenant name; a reserved one (RESERVED_NAMES) only with ``reserved_ok``."""
    if name is None:
        raise SpecError(field, f"missing required field; a tenant name is required ({_NAME_RULE})")
    if not isinstance(name, str):
        raise SpecError(field, f"{show(name)} is not a valid tenant name: it is not a string; {_NAME_RULE}")
    if _TENANT_NAME.fullmatch(name):
        reason = None if reserved_ok else reserved_name_reason(name)
        if reason:
            raise SpecError(field, f"{show(name)} is reserved: {reason}; choose another name")
        return str(name)
    problems = _name_problems(name)
    reason = ("; ".join(problems) + "; ") if problems else ""
    raise SpecError(field, f"{show(name)} is not a valid tenant name: {reason}{_NAME_RULE}")


def _check_hba(hba, field: str = "tenant.hba") -> list:
    if hba is None:
        return list(DEFAULT_HBA)
    if not is_list(hba):
        raise SpecError(field, f"{show(hba)} is not a list of networks; use CIDRs such as '10.0.0.0/8'")
    result = []
    for entry in hba:
        if not isinstance(entry, str):
            raise SpecError(field, f"{show(entry)} is not a network; use CIDRs such as '10.0.0.0/8'")
        try:
            network = ipaddress.ip_network(entry.strip(), strict=True)
        except ValueError:
            try:
                loose = ipaddress.ip_network(entry.strip(), strict=False)
            except ValueError:
                raise SpecError(
                    field,
                    f"{show(entry)} is not a valid network; "
                    "use CIDRs such as '10.0.0.0/8' or '2001:db8::/32'",
                ) from None
            raise SpecError(
                field,
                f"{show(entry)} has host bits set; use the network address, e.g. '{loose.with_prefixlen}'",
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
    when true), backup (returned only when given: true or false; without it the deployment's
    shadowdb_backup_default decides, shadowdb/backup.py), source (a clone's source, returned only
    when given: check_source). A field set to null takes its default.

    A new tenant's name may not be reserved (RESERVED_NAMES) and its resource settings
    are bounded by its tier (TIER_SETTING_BOUNDS); neither applies with state "absent",
    so that a tenant made before a rule existed can still be removed.
    """
    if not isinstance(spec, Mapping):
        raise SpecError("tenant", f"{show(spec)} is not a mapping; a tenant spec is a dict with a 'name'")
    for key in sorted(spec, key=str):
        if not isinstance(key, str) or not _FIELD_NAME_RE.fullmatch(key):
            raise SpecError(
                "tenant", f"{show(key)} is not a valid field name; known fields: {join_names(TENANT_FIELDS)}"
            )
        if key not in TENANT_FIELDS:
            raise SpecError(f"tenant.{key}", f"unknown field; known fields: {join_names(TENANT_FIELDS)}")

    table = resolve_tiers(tiers)
    versions = resolve_pg_versions(pg_versions)
    default_version = DEFAULT_PG_VERSION if DEFAULT_PG_VERSION in versions else versions[-1]

    def get(key, default):
        value = spec.get(key)
        return default if value is None else value

    # A tenant being removed is what it was made as: a name reserved since, or settings above
    # today's tier bounds, must not make it impossible to remove.
    state = get("state", "present")
    absent = state == "absent"
    name = check_name(spec.get("name"), reserved_ok=absent)
    tier = check_tier(get("tier", DEFAULT_TIER), table)
    pg_version = check_pg_version(get("pg_version", default_version), versions)
    extensions = check_extensions(spec.get("extensions"), resolve_extensions(allowed_extensions))
    settings = shadowdb_validate_settings(
        spec.get("settings"), "tenant.settings", None if absent else tier, table
    )
    hba = _check_hba(spec.get("hba"))

    replicas_hint = f"use an integer from 0 to {MAX_REPLICAS}"
    replicas = as_int(get("replicas", 0), "tenant.replicas", replicas_hint)
    if not 0 <= replicas <= MAX_REPLICAS:
        raise SpecError("tenant.replicas", f"{show(spec.get('replicas'))} is out of range; {replicas_hint}")

    if not isinstance(state, str) or state not in TENANT_STATES:
        raise SpecError(
            "tenant.state", f"{show(state)} is not a valid state; use one of: {join_names(TENANT_STATES)}"
        )

    readonly_role = as_bool(get("readonly_role", False), "tenant.readonly_role")
    superuser = as_bool(get("superuser", False), "tenant.superuser")

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
    if spec.get("backup") is not None:
        result["backup"] = as_bool(spec["backup"], "tenant.backup")
    if spec.get("source") is not None and not absent:
        result["source"] = check_source(spec["source"], name)
        if replicas > 0:
            raise SpecError("tenant.source", "a clone is made standalone; add replicas once it exists")
    return dict(sorted(result.items()))


# What a clone may be made from: another tenant's backups, at a time, an LSN or their latest.
SOURCE_TARGETS = ("time", "lsn", "latest")


def check_source(source, name) -> dict:
    """A clone's source, {tenant: <name>, time: ...} (or lsn, or latest: true): the shape only;
    whether its backups reach the target is checked against them when the clone is made. The
    tenant's own name restores a removed tenant under its name."""
    hint = "use {tenant: <name>, time: '<timestamp with a zone>'} (or lsn: ..., or latest: true)"
    if not isinstance(source, Mapping):
        raise SpecError("tenant.source", f"{show(source)} is not a mapping; {hint}")
    unknown = sorted(set(map(str, source)) - {"tenant", *SOURCE_TARGETS})
    if unknown:
        raise SpecError(f"tenant.source.{unknown[0]}", f"unknown field; {hint}")
    # Its own name: a removed tenant made again from its backups (they outlive it for a while).
    tenant = check_name(source.get("tenant"), "tenant.source.tenant", reserved_ok=True)
    targets = [key for key in SOURCE_TARGETS if source.get(key) is not None]
    if len(targets) != 1:
        raise SpecError("tenant.source", f"give exactly one of time, lsn, latest; {hint}")
    kind = targets[0]
    value = source[kind]
    if kind == "latest":
        if as_bool(value, "tenant.source.latest") is not True:
            raise SpecError("tenant.source.latest", f"{show(value)}: only true; {hint}")
        value = True
    elif not isinstance(value, str) or not value.strip():
        raise SpecError(f"tenant.source.{kind}", f"{show(value)} is not a {kind}; {hint}")
    return {"tenant": tenant, kind: value}


def shadowdb_validate_tenants(specs, tiers=None, allowed_extensions=None, pg_versions=None) -> list:
    """Validate a list of tenant specs; return them normalized, in input order.

    An error in one spec keeps its field and gets the spec's position (and name,
    when known) appended. Names declared more than once raise SpecError("tenants").
    """
    if specs is None:
        return []
    if not is_list(specs):
        raise SpecError("tenants", f"{show(specs)} is not a list of tenant specs")
    result = []
    for index, spec in enumerate(specs):
        try:
            result.append(shadowdb_validate_tenant(spec, tiers, allowed_extensions, pg_versions))
        except SpecError as exc:
            where = f"tenants[{index}]"
            if isinstance(spec, Mapping) and isinstance(spec.get("name"), str) and exc.field != "tenant.name":
                where += f", name {show(spec.get('name'))}"
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


STANDALONE_ONLY = (
    "{replicas} replica(s) asked; this playbook converges standalone tenants (replicas 0): onboard an "
    "HA tenant with playbooks/tenant_ha.yml (Patroni, see docs/ha.md)"
)


def shadowdb_check_tenants(
    specs, tiers=None, allowed_extensions=None, pg_versions=None, standalone=False, strict=False
) -> list:
    """Validate each spec of a batch on its own: one bad spec does not refuse the others.

    Returns, in input order, ``{"name", "spec", "error"}`` per entry: ``spec`` the normalized spec
    (None when refused), ``error`` the message naming the field (None when valid), ``name`` the
    spec's name when it has a string one. A name given twice refuses every entry of it;
    ``standalone`` refuses specs that ask for replicas; ``strict`` raises the first refusal as a
    SpecError instead (one tenant: nothing to go on with).
    """
    if specs is None:
        specs = []
    if not is_list(specs):
        raise SpecError("tenants", f"{show(specs)} is not a list of tenant specs")
    out = []
    for spec in specs:
        name = spec.get("name") if isinstance(spec, Mapping) and isinstance(spec.get("name"), str) else None
        try:
            valid = shadowdb_validate_tenant(spec, tiers, allowed_extensions, pg_versions)
        except SpecError as exc:
            out.append({"name": name, "spec": None, "error": str(exc)})
            continue
        if standalone and valid["replicas"] > 0:
            error = str(SpecError("tenant.replicas", STANDALONE_ONLY.format(replicas=valid["replicas"])))
            out.append({"name": name, "spec": None, "error": error})
            continue
        out.append({"name": valid["name"], "spec": valid, "error": None})
    counts: dict = {}
    for entry in out:
        counts[entry["name"]] = counts.get(entry["name"], 0) + 1
    for entry in out:
        if entry["name"] is not None and counts[entry["name"]] > 1:
            entry["spec"] = None
            entry["error"] = str(
                SpecError(
                    "tenant.name", f"tenant name {entry['name']!r} is given {counts[entry['name']]} times"
                )
            )
    refused = [entry["error"] for entry in out if entry["error"]]
    if strict and refused:
        raise SpecError(*refused[0].split(": ", 1))
    return out


def shadowdb_batch_refusals(checked, taken=None) -> dict:
    """What a batch refuses, before anything changes: ``{tenant or "tenants[i]": reason}``.

    ``checked`` is shadowdb_check_tenants' answer; ``taken`` maps names found on another host to
    the error naming that host. An entry without a usable name is keyed by its position.
    """
    taken = taken or {}
    refusals = {}
    for position, entry in enumerate(checked):
        key = entry["name"] if entry["name"] is not None else f"tenants[{position}]"
        if entry["error"]:
            refusals[key] = entry["error"]
        elif entry["name"] in taken:
            refusals[key] = taken[entry["name"]]
    return refusals

# Copyright: ShadowDB contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Filters of the haproxy role: registry records checked before anything is rendered from them.

A record is data written by whoever can write the registry; HAProxy's configuration is text in
which a newline, a space or a '#' changes the meaning. So every value that reaches a template is
checked here first (names are DNS labels, addresses are IP addresses or host names, ports are
integers in range, client networks are CIDRs, anything else is a single safe token), and a record
that fails is left out of the configuration with a warning naming its registry key: that tenant
is not routed until its record is fixed, and the other tenants keep being served.
"""

import ipaddress
import json
import re

TENANT_RE = re.compile(r"[a-z][a-z0-9-]{0,14}[a-z0-9]")
# Inventory host names (rendered as HAProxy server names, after the template's own sanitizing).
HOST_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,252}")
HOSTNAME_LABEL_RE = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
TIER_RE = re.compile(r"[a-z][a-z0-9_-]{0,31}")
RECORD_STATES = ("active", "maintenance", "disabled")
# Values of keys this filter does not know (added later by other parts of ShadowDB) pass only as
# one token HAProxy cannot read as more than one word: no blank, quote, comment, escape or variable.
SAFE_TOKEN_RE = re.compile(r"[A-Za-z0-9_.:/@+,=%-]{0,253}")
MAX_HBA = 64
MAX_MEMBERS = 16


class RecordError(ValueError):
    """A record value that must not be rendered; the message names the field."""


def _show(value, limit=80):
    text = json.dumps(value, ensure_ascii=True, default=repr)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _fullmatch(regex, value):
    return isinstance(value, str) and regex.fullmatch(value) is not None


def _port(value, field, optional=False):
    if value is None and optional:
        return None
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,5}", value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise RecordError(f"{field}={_show(value)} is not a port (an integer from 1 to 65535)")
    return value


def _address(value, field):
    """An IP address (returned in its canonical form) or an RFC 1123 host name."""
    if isinstance(value, str):
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            pass
        labels = value.rstrip(".").split(".") if len(value) <= 253 else []
        if (
            labels
            and all(HOSTNAME_LABEL_RE.fullmatch(label) for label in labels)
            and not labels[-1].isdigit()
        ):
            return value
    raise RecordError(f"{field}={_show(value)} is not an IP address or host name")


def _host(value, field):
    if not _fullmatch(HOST_RE, value):
        raise RecordError(f"{field}={_show(value)} is not a host name (letters, digits, '_', '.', '-')")
    return value


def _hba(value, field):
    if not isinstance(value, list) or len(value) > MAX_HBA:
        raise RecordError(f"{field}={_show(value)} is not a list of at most {MAX_HBA} networks (CIDRs)")
    networks = []
    for i, entry in enumerate(value):
        try:
            if not isinstance(entry, str) or "/" not in entry:
                raise ValueError
            network = ipaddress.ip_network(entry, strict=True).with_prefixlen
        except ValueError:
            raise RecordError(
                f"{field}[{i}]={_show(entry)} is not a network (a CIDR such as 10.0.0.0/8)"
            ) from None
        if network not in networks:
            networks.append(network)
    return networks


def _token(value, field):
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if not _fullmatch(SAFE_TOKEN_RE, value):
        raise RecordError(
            f"{field}={_show(value)} is not a plain value (letters, digits and _.:/@+,=%- only)"
        )
    return value


def _member(member, field):
    if not isinstance(member, dict):
        raise RecordError(f"{field}={_show(member)} is not a dict")
    out = {}
    for key in sorted(member, key=str):
        if not _fullmatch(TIER_RE, key):
            raise RecordError(f"{field} has an invalid key {_show(key)}")
        value = member[key]
        if key == "host":
            out[key] = _host(value, f"{field}.host")
        elif key == "address":
            out[key] = _address(value, f"{field}.address")
        elif key in ("port", "api_port"):
            out[key] = _port(value, f"{field}.{key}", optional=key == "api_port")
        else:
            out[key] = _token(value, f"{field}.{key}")
    for key in ("host", "address", "port"):
        if key not in out:
            raise RecordError(f"{field} has no {key}")
    return out


def check_record(record):
    """Return the record with every rendered value checked and normalized; raise RecordError naming the field.

    Known fields are checked by type (tenant, host, address, port, proxy_port, pg_version, tier,
    state, hba, members); any other field passes only as a single safe token.
    """
    if not isinstance(record, dict):
        raise RecordError(f"record={_show(record)} is not a dict")
    tenant = record.get("tenant")
    if not _fullmatch(TENANT_RE, tenant):
        raise RecordError(
            f"tenant={_show(tenant)} is not a tenant name (a DNS label matching {TENANT_RE.pattern})"
        )
    out = {}
    for key in sorted(record, key=str):
        value = record[key]
        if not _fullmatch(TIER_RE, key):
            raise RecordError(f"record has an invalid key {_show(key)}")
        if key == "tenant":
            out[key] = tenant
        elif key == "host":
            out[key] = _host(value, key)
        elif key == "address":
            out[key] = _address(value, key)
        elif key == "port":
            out[key] = _port(value, key)
        elif key == "proxy_port":
            out[key] = _port(value, key, optional=True)
        elif key == "pg_version":
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 99
            ):
                raise RecordError(f"pg_version={_show(value)} is not a PostgreSQL major version")
            out[key] = value
        elif key == "tier":
            if value is not None and not _fullmatch(TIER_RE, value):
                raise RecordError(f"tier={_show(value)} is not a tier name")
            out[key] = value
        elif key == "state":
            if value is not None and value not in RECORD_STATES:
                raise RecordError(f"state={_show(value)} is not one of {', '.join(RECORD_STATES)}")
            out[key] = value
        elif key == "hba":
            out[key] = None if value is None else _hba(value, key)
        elif key == "members":
            if value is None:
                value = []
            if not isinstance(value, list) or len(value) > MAX_MEMBERS:
                raise RecordError(f"members={_show(value)} is not a list of at most {MAX_MEMBERS} members")
            out[key] = [_member(m, f"members[{i}]") for i, m in enumerate(value)]
        else:
            out[key] = _token(value, key)
    for key in ("host", "address", "port"):
        if key not in out:
            raise RecordError(f"record has no {key}")
    return out


def registry_key(prefix, record):
    tenant = record.get("tenant") if isinstance(record, dict) else None
    return json.dumps(f"{prefix}{tenant if isinstance(tenant, str) else '?'}", ensure_ascii=True)


def split_records(records, prefix="/shadowdb/tenants/"):
    """Return (valid records, normalized and sorted by tenant; [warning per invalid record])."""
    valid, warnings = [], []
    if records is None:
        records = []
    if not isinstance(records, list):
        return [], [f"registry records {_show(records)} are not a list: nothing rendered from them"]
    for record in records:
        try:
            valid.append(check_record(record))
        except RecordError as e:
            warnings.append(
                f"registry key {registry_key(prefix, record)} holds an invalid record ({e}): "
                "skipped, its tenant is not routed until the record is fixed"
            )
    return sorted(valid, key=lambda r: r["tenant"]), warnings


def clash(records, sni_port, stats_port):
    """Why records (valid, as split_records returns them) cannot be served together, or None: a
    tenant twice, a proxy port twice, or a proxy port that is the SNI or stats port (HAProxy would
    refuse the whole configuration)."""
    tenants = [r["tenant"] for r in records]
    ports = [r["proxy_port"] for r in records if r.get("proxy_port") is not None]
    twice = sorted({t for t in tenants if tenants.count(t) > 1})
    shared = sorted({p for p in ports if ports.count(p) > 1})
    reserved = sorted({p for p in ports if p in (int(sni_port), int(stats_port))})
    if not (twice or shared or reserved):
        return None
    why = []
    if twice:
        why.append(f"tenant(s) {', '.join(twice)} registered more than once")
    if shared:
        why.append(f"proxy port(s) {', '.join(map(str, shared))} given to more than one tenant")
    if reserved:
        why.append(
            f"proxy port(s) {', '.join(map(str, reserved))} equal to haproxy_sni_port {sni_port} or "
            f"haproxy_stats_port {stats_port}"
        )
    return "haproxy: the tenant records cannot be served together: " + "; ".join(why)


def shadowdb_haproxy_records(records, prefix="/shadowdb/tenants/", sni_port=None, stats_port=None):
    """Filter: the records safe to render; every invalid one is skipped with a warning naming its
    key. Given sni_port and stats_port, records that cannot be served together (clash) fail it
    before anything is rendered."""
    valid, warnings = split_records(records, prefix)
    if warnings:
        from ansible.utils.display import Display  # only when running inside Ansible

        display = Display()
        for warning in warnings:
            display.warning(warning)
    if sni_port is not None and stats_port is not None:
        error = clash(valid, sni_port, stats_port)
        if error:
            from ansible.errors import AnsibleFilterError  # only when running inside Ansible

            raise AnsibleFilterError(error)
    return valid


def shadowdb_is_ip(value):
    """Test-like filter: whether value is an IP address (for the admin bind addresses)."""
    if not isinstance(value, str):
        return False
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


class FilterModule:
    def filters(self):
        return {
            "shadowdb_haproxy_records": shadowdb_haproxy_records,
            "shadowdb_is_ip": shadowdb_is_ip,
        }

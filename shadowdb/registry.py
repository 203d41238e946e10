"""The registry records of one db host's standalone tenants (roles/shadowdb/tasks/tenants_register.yml).

A record is what HAProxy routes by and what the API and drift checks read: the tenant's host,
address and PostgreSQL port, its proxy port, PostgreSQL major version, tier, client networks and
members. A batch of tenants is registered from one read of the registry: these functions decide,
for all of them at once, what each record becomes and which tenants are refused, so that the
playbook does one read and one write however many tenants the host has.

Pure Python (standard library only).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

# The client networks of a tenant that admits every client: not written into its record.
ALL_NETWORKS = ["0.0.0.0/0"]


def shadowdb_registry_current(records: Iterable[Mapping], specs: Iterable[Mapping]) -> dict[str, dict]:
    """Return {tenant: its record in the registry} for the tenants of specs that have one."""
    names = {spec["name"] for spec in specs}
    return {record["tenant"]: dict(record) for record in records if record.get("tenant") in names}


def shadowdb_registry_records(
    specs: Iterable[Mapping],
    records: Iterable[Mapping],
    host: str,
    address: str,
    ports: Mapping[str, int],
    versions: Mapping[str, str] | None = None,
    routed: bool = False,
) -> dict:
    """Return what registering the specs' tenants on host writes, refuses and fails.

    specs: the tenants (validated specs, or as little as {name}: a tier, version or client
    networks left out are kept from the tenant's current record; a version neither gives comes
    from versions, read on the host). records: every record of the registry. ports: each
    tenant's PostgreSQL port on host. routed: the deployment has proxy hosts, so a tenant without
    a proxy port gets one: its record says "auto" and the registry module chooses it from the
    registry as it writes (library/shadowdb_registry.py, proxy_ports).

    Returns {"records": [{"tenant", "record"}] to write, "refused": [messages] (a tenant without
    a cluster here, a proxy port another tenant holds: the caller stops before any write),
    "failed": {tenant: message} (registered on another host: left as it is)}.
    """
    records = list(records)
    current = shadowdb_registry_current(records, specs)
    versions = versions or {}
    holders: dict[int, list[str]] = {}
    for record in records:
        if record.get("proxy_port") is not None:
            holders.setdefault(record["proxy_port"], []).append(record["tenant"])

    out, refused, failed = [], [], {}
    for spec in specs:
        name = spec["name"]
        now = current.get(name, {})
        if now.get("host", host) != host:
            failed[name] = (
                f"register: tenant.name: a tenant named '{name}' is already registered on {now['host']}, "
                f"not {host}"
            )
            continue
        port = int(ports.get(name) or 0)
        record = {
            "tenant": name,
            "host": host,
            "address": address,
            "port": port,
            "proxy_port": now.get("proxy_port") or ("auto" if routed else None),
            "pg_version": int(spec.get("pg_version") or now.get("pg_version") or versions.get(name) or 0),
            "tier": spec.get("tier") or now.get("tier") or None,
            "state": "active",
            "members": [{"host": host, "address": address, "port": port}],
        }
        hba = spec["hba"] if "hba" in spec else now.get("hba")
        if hba is not None and list(hba) != ALL_NETWORKS:
            record["hba"] = list(hba)
        out.append({"tenant": name, "record": record})

        if port <= 0 or record["pg_version"] <= 0:
            refused.append(
                f"tenant_register: tenant '{name}' has no PostgreSQL port lease or data directory on {host}: "
                "onboard it first (playbooks/tenant.yml)"
            )
        clash = [other for other in holders.get(record["proxy_port"], []) if other != name]
        if record["proxy_port"] not in (None, "auto") and clash:
            refused.append(
                f"tenant_register: proxy port {record['proxy_port']} of tenant '{name}' is already the proxy "
                f"port of {', '.join(clash)} in the registry"
            )
    return {"records": out, "refused": refused, "failed": failed}


def shadowdb_ha_members(record: Mapping) -> list[dict]:
    """The Patroni members of a registry record: an HA tenant's members each have their REST API
    port (api_port); a standalone tenant's record has none ([])."""
    return [dict(member) for member in (record or {}).get("members") or [] if "api_port" in member]


def shadowdb_ha_records(records: Iterable[Mapping]) -> list[dict]:
    """The records of HA tenants among ``records`` (those with Patroni members)."""
    return [dict(record) for record in records if shadowdb_ha_members(record)]


def shadowdb_registry_taken(records: Iterable[Mapping], names: Iterable[str], host: str) -> dict[str, str]:
    """Return {name: the error} for the names of this run (to be served on host) that the
    registry gives to another host, or to an HA tenant (whose members are converged by
    tenant_ha.yml, never by tenant.yml, even on this host)."""
    by_name = {record.get("tenant"): record for record in records}
    taken = {}
    for name in names:
        record = by_name.get(name)
        if record is None:
            continue
        ha = bool(shadowdb_ha_members(record))
        hosts = [member["host"] for member in record.get("members") or []] if ha else [record["host"]]
        if ha or set(hosts) - {host}:
            taken[name] = f"tenant.name: a tenant named '{name}' already exists on {', '.join(hosts)}" + (
                " (an HA tenant: converge it with playbooks/tenant_ha.yml)" if ha else ""
            )
    return taken

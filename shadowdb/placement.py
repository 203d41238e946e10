"""Placement: which db hosts a tenant's cluster (or its Patroni members) goes to (pure functions).

``pick_host(hosts, counts)`` places a standalone tenant created through the API: the host with
the fewest tenants.

``tenant_hosts(hosts, spec, records=..., ...)``: the db hosts a tenant's job touches, its host
first: a new standalone tenant's host (the fewest tenants, HA members counted), or an HA
tenant's members (its current ones kept, the others placed as below). The API locks these hosts
for the job and hands an HA job's hosts to tenant_ha.yml (``shadowdb_ha_candidates``).

``shadowdb_placement(hosts, members, tenant, records=..., tiers=..., host_tenants=...)``
returns ``members`` distinct host names chosen among ``hosts`` for an HA tenant:

- hosts that already carry a member of the tenant (``current``, or the members of its
  registry record) are kept first, so a re-run never moves a member;
- the other members go to the least loaded hosts, by committed memory (the tier memory of
  every tenant or member already on the host, from the registry records and the inventory
  specs), then by tenant count, then by name (deterministic);
- fewer usable hosts than members is a clear error, raised before anything is created.
"""

from __future__ import annotations

from collections.abc import Mapping

from .errors import SpecError
from .tiers import resolve_tiers


class NoHosts(Exception):
    """There is no host to place a tenant on (the API answers 503)."""


def pick_host(hosts: list[str], counts: dict[str, int]) -> str:
    """The host with the fewest tenants; ties go to the first name."""
    if not hosts:
        raise NoHosts("the inventory has no db host")
    return min(hosts, key=lambda h: (counts.get(h, 0), h))


def tenant_hosts(hosts, spec: Mapping, records=None, tiers=None, host_tenants=None, current=None) -> list:
    """The hosts a job of ``spec`` touches (see the module docstring); ``current``: the hosts
    that hold its cluster or members now. Fewer members wanted than current ones (a replica
    removed, the tenant removed) touches the current hosts only."""
    current = [h for h in dict.fromkeys(current or []) if h]
    name = spec.get("name")
    members = int(spec.get("replicas") or 0) + 1
    if spec.get("state") == "absent" or (current and members <= len(current)):
        return current
    if members == 1:
        load = shadowdb_host_load(hosts, records, tiers, host_tenants, exclude=name)
        return current or [pick_host(list(hosts), {h: load[h]["tenants"] for h in load})]
    placed = shadowdb_placement(hosts, members, name, records, tiers, host_tenants, current)
    return list(dict.fromkeys(current + placed))


def _tier_memory(tier, table: Mapping) -> int:
    """Committed memory (MB) of a tenant of ``tier``; unknown tiers count as the smallest."""
    if isinstance(tier, str) and tier in table:
        return int(table[tier]["memory_mb"])
    return min(int(t["memory_mb"]) for t in table.values())


def shadowdb_host_load(hosts, records=None, tiers=None, host_tenants=None, exclude=None) -> dict:
    """Load of each host: ``{host: {"memory_mb": int, "tenants": int}}``.

    ``records``: registry records (a member on a host commits its tier's memory there; a
    record without members counts on its ``host``). ``host_tenants``: ``{host: [spec, ...]}``
    from the inventory, counted when the registry does not already know the tenant on that
    host. ``exclude``: a tenant name left out (the one being placed).
    """
    table = resolve_tiers(tiers)
    load = {str(h): {"memory_mb": 0, "tenants": 0} for h in hosts or []}
    seen = set()

    def add(host, tenant, tier):
        if host in load and (host, tenant) not in seen and tenant != exclude:
            seen.add((host, tenant))
            load[host]["memory_mb"] += _tier_memory(tier, table)
            load[host]["tenants"] += 1

    for record in records or []:
        members = record.get("members") or [{"host": record.get("host")}]
        for member in members:
            add(member.get("host"), record.get("tenant"), record.get("tier"))
    for host, specs in (host_tenants or {}).items():
        for spec in specs or []:
            if isinstance(spec, Mapping) and spec.get("state", "present") == "present":
                add(host, spec.get("name"), spec.get("tier", "small"))
    return load


def shadowdb_placement(
    hosts, members, tenant=None, records=None, tiers=None, host_tenants=None, current=None
) -> list:
    """Choose ``members`` distinct hosts for ``tenant`` (see the module docstring)."""
    if isinstance(hosts, (str, bytes)) or not hosts:
        hosts = [] if not hosts else [hosts]
    hosts = sorted({str(h) for h in hosts})
    try:
        wanted = int(members)
    except (TypeError, ValueError) as exc:
        raise SpecError("tenant.replicas", f"{members!r} members is not a number") from exc
    if wanted < 1:
        raise SpecError("tenant.replicas", f"{wanted} members asked; a tenant has at least one")
    who = f"tenant {tenant}" if tenant else "the tenant"
    if len(hosts) < wanted:
        raise SpecError(
            "tenant.replicas",
            f"{who} needs {wanted} members on {wanted} different db hosts "
            f"({wanted - 1} replica(s) + the primary), but only {len(hosts)} db host(s) are available"
            f" ({', '.join(hosts) or 'none'}): add db hosts or ask for fewer replicas",
        )

    kept = []
    record = next((r for r in records or [] if r.get("tenant") == tenant), None) if tenant else None
    for host in list(current or []) + [m.get("host") for m in (record or {}).get("members") or []]:
        if host in hosts and host not in kept:
            kept.append(host)

    load = shadowdb_host_load(hosts, records, tiers, host_tenants, exclude=tenant)
    others = sorted(
        (h for h in hosts if h not in kept),
        key=lambda h: (load[h]["memory_mb"], load[h]["tenants"], h),
    )
    return (kept + others)[:wanted]

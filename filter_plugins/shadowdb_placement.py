"""Placement of a tenant's Patroni members on distinct db hosts (pure functions).

``shadowdb_placement(hosts, members, tenant, records=..., tiers=..., host_tenants=...)``
returns ``members`` distinct host names chosen among ``hosts``:

- hosts that already carry a member of the tenant (``current``, or the members of its
  registry record) are kept first, so a re-run never moves a member;
- the other members go to the least loaded hosts, by committed memory (the tier memory of
  every tenant or member already on the host, from the registry records and the inventory
  specs), then by tenant count, then by name (deterministic);
- fewer usable hosts than members is a clear error, raised before anything is created.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Mapping
from pathlib import Path

try:
    from ansible.errors import AnsibleFilterError
except ImportError:  # imported outside Ansible (unit tests)

    class AnsibleFilterError(ValueError):  # type: ignore[no-redef]
        """Stand-in for ansible.errors.AnsibleFilterError when Ansible is absent."""


def _spec_module():
    # filter_plugins/ is not a package: load the tier rules from the sibling file by path.
    name = "_shadowdb_filters_for_placement"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("shadowdb.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


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
    table = _spec_module()._resolve_tiers(tiers)
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
        raise AnsibleFilterError(f"tenant.replicas: {members!r} members is not a number") from exc
    if wanted < 1:
        raise AnsibleFilterError(f"tenant.replicas: {wanted} members asked; a tenant has at least one")
    who = f"tenant {tenant}" if tenant else "the tenant"
    if len(hosts) < wanted:
        raise AnsibleFilterError(
            f"tenant.replicas: {who} needs {wanted} members on {wanted} different db hosts "
            f"({wanted - 1} replica(s) + the primary), but only {len(hosts)} db host(s) are available"
            f" ({', '.join(hosts) or 'none'}): add db hosts or ask for fewer replicas"
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


class FilterModule:
    """Ansible filter plugin entry point."""

    def filters(self):
        return {
            "shadowdb_host_load": shadowdb_host_load,
            "shadowdb_placement": shadowdb_placement,
        }

"""Which proxy addresses a tenant's pg_hba must admit.

Clients that come through HAProxy reach PostgreSQL from a proxy host's address. HAProxy
enforces the tenant's client networks (its spec's ``hba``, carried in its registry record), so
PostgreSQL admits the proxy hosts too, with TLS and scram-sha-256 still.

``shadowdb_proxy_cidrs(spec, proxies)`` returns the networks to add to the tenant's pg_hba:
one host network per proxy address that the tenant's own ``hba`` does not already cover. A
proxy whose address is unknown is an error for a tenant restricted to some networks (it would
be refused through the proxy), raised while the playbooks validate, before anything changes.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

from .errors import SpecError


def _network(text: str, what: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(str(text).strip(), strict=False)
    except ValueError:
        raise SpecError(what, f"{str(text)[:60]!r} is not an IP address or network") from None


def shadowdb_proxy_cidrs(spec: Mapping, proxies) -> list:
    """The proxy networks pg_hba adds for ``spec`` (a validated tenant spec: name, hba).

    ``proxies`` lists ``{"host": <inventory name>, "address": <address, network or None>}``
    (``shadowdb_proxy_entries``, built by roles/shadowdb/tasks/proxy_addresses.yml).
    """
    name = spec.get("name", "?")
    hba = [_network(cidr, f"tenant.hba of {name}") for cidr in spec.get("hba") or ["0.0.0.0/0"]]
    out = []
    for proxy in proxies or []:
        address = proxy.get("address")
        if address in (None, ""):
            if any(net.prefixlen == 0 for net in hba):
                continue  # the tenant admits every address of that family anyway
            raise SpecError(
                "tenant.hba",
                f"tenant {name} admits only {', '.join(map(str, hba))} and the address of "
                f"proxy host {proxy.get('host', '?')} is unknown (clients through HAProxy would be "
                f"refused): set shadowdb_address for {proxy.get('host', '?')} (or "
                "shadowdb_proxy_addresses for the deployment)",
            )
        network = _network(address, f"address of proxy host {proxy.get('host', '?')}")
        # The same network in the tenant's hba, or all of its family, needs no line of its own
        # (a narrower test than containment keeps the files of existing tenants as they are).
        covered = any(
            network.version == net.version and (net == network or net.prefixlen == 0) for net in hba
        )
        if not covered and str(network) not in out:
            out.append(str(network))
    return sorted(out)

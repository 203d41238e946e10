# Copyright: ShadowDB contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""The tenants' egress firewall of a db host (nftables): a tenant's processes open no connection.

A tenant may be superuser of its own cluster, and so run programs (COPY ... PROGRAM, untrusted
languages) as its OS user. From there it could connect to its neighbours' ports, on this host or
another, and read their names from their server certificates (PostgreSQL shows its certificate to
anyone who opens TLS), or try their passwords, or reach HAProxy and etcd. Nothing a tenant runs
needs to open a connection, except Patroni (it runs as the tenant's user): its own members'
PostgreSQL and REST API ports, and etcd. So the packets of every tenant OS user (the users whose
comment starts with "ShadowDB tenant ", as in shadowdb_identity) that would open a connection are
rejected, unless they go to one of its own egress allowances (<tenant dir>/egress.json, written by
the patroni role through shadowdb_identity_view). Answers to connections made to the tenant
(a client's session, a replica's stream) are not affected.

The ruleset is rendered whole into RULESET_PATH and loaded by ``nft -f`` in one transaction (the
shadowdb-firewall service of the host role loads the same file at boot). Modules import it as
``ansible.module_utils.shadowdb_firewall``.
"""

import ipaddress
import json
import os
import re

from ansible.module_utils.shadowdb_fs import converge_file, wanted_attributes
from ansible.module_utils.shadowdb_identity import TENANT_COMMENT_PREFIX

TABLE = "shadowdb_tenant_egress"
FIREWALL_DIR = "/etc/shadowdb/firewall"
RULESET_PATH = FIREWALL_DIR + "/tenant-egress.nft"
TENANTS_DIR = "/etc/shadowdb/tenants"
EGRESS_FILE = "egress.json"
# A tenant's name as shadowdb/spec.py allows it (TENANT_NAME_RE): a path component, never "..".
TENANT_NAME = re.compile(r"[a-z][a-z0-9-]{0,14}[a-z0-9]", re.ASCII)


def tenant_users(passwd_text):
    """{user name: (uid, tenant)} of the tenant OS users of the host (their comment names the tenant)."""
    users = {}
    for line in passwd_text.splitlines():
        fields = line.split(":")
        if len(fields) >= 5 and fields[4].startswith(TENANT_COMMENT_PREFIX) and fields[2].isdigit():
            tenant = fields[4][len(TENANT_COMMENT_PREFIX) :]
            users[fields[0]] = (int(fields[2]), tenant if TENANT_NAME.fullmatch(tenant) else None)
    return users


def check_allowance(allowance, where="egress"):
    """An allowance {addresses: [IPv4], ports: ["port" or "first-last"]}, checked and sorted."""
    if not isinstance(allowance, dict) or set(allowance) - {"addresses", "ports"}:
        raise ValueError(f"{where}: {allowance!r} is not {{addresses: [...], ports: [...]}}")
    addresses, ports = allowance.get("addresses") or [], allowance.get("ports") or []
    if not addresses or not ports:
        raise ValueError(f"{where}: needs at least one address and one port, got {allowance!r}")
    for address in addresses:
        try:
            ipaddress.IPv4Address(str(address))
        except ValueError:
            raise ValueError(f"{where}.addresses: {address!r} is not an IPv4 address") from None
    for port in ports:
        bounds = str(port).split("-")
        if (
            len(bounds) > 2
            or not all(b.isdigit() and 0 < int(b) < 65536 for b in bounds)
            or bounds != sorted(bounds, key=int)
        ):
            raise ValueError(f"{where}.ports: {port!r} is not a port or a range 'first-last'")
    return {"addresses": sorted({str(a) for a in addresses}), "ports": sorted({str(p) for p in ports})}


def render_ruleset(users, allowances):
    """The nft script replacing the table: ``users`` as tenant_users gives them, ``allowances``
    {user: [allowance]}."""
    uids = {user: uid for user, (uid, _) in users.items()}
    lines = [
        "# Managed by ShadowDB (module_utils/shadowdb_firewall.py): tenants open no connection,",
        "# except their own allowances (Patroni: its members and etcd). Loaded whole by nft -f.",
        f"table inet {TABLE}",
        f"delete table inet {TABLE}",
        f"table inet {TABLE} {{",
        "\tset tenant_uids {",
        "\t\ttype uid",
    ]
    if uids:
        lines.append("\t\telements = { " + ", ".join(str(uids[u]) for u in sorted(uids)) + " }")
    lines += [
        "\t}",
        "",
        "\tchain output {",
        "\t\ttype filter hook output priority filter; policy accept;",
        "\t\tmeta skuid @tenant_uids jump tenant",
        "\t}",
        "",
        "\tchain tenant {",
        "\t\tct state established,related accept",
    ]
    for user in sorted(allowances):
        if user not in uids:
            continue
        for allowance in allowances[user]:
            lines.append(
                f"\t\tmeta skuid {uids[user]} ip daddr {{ {', '.join(allowance['addresses'])} }}"
                f' tcp dport {{ {", ".join(allowance["ports"])} }} accept comment "{user}"'
            )
    lines += [
        "\t\tmeta l4proto tcp reject with tcp reset",
        "\t\treject with icmpx admin-prohibited",
        "\t}",
        "}",
        "",
    ]
    return "\n".join(lines)


def read_allowances(users, tenants_dir=TENANTS_DIR):
    """{user: [allowance]} from <tenants_dir>/<tenant>/egress.json of the tenants with a user."""
    allowances = {}
    for user, (_, tenant) in users.items():
        if tenant is None:
            continue
        path = os.path.join(tenants_dir, tenant, EGRESS_FILE)
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            continue
        except ValueError as e:
            raise ValueError(f"{path}: not JSON ({e})") from None
        allowances[user] = [check_allowance(a, path) for a in data]
    return allowances


def egress_file_entry(tenant_dir, allowances):
    """The converge_file entry of a tenant's egress.json (root's; it holds no secret)."""
    content = json.dumps([check_allowance(a) for a in allowances], sort_keys=True, indent=1) + "\n"
    return dict(path=os.path.join(tenant_dir, EGRESS_FILE), content=content, owner="root", group="root",
                mode="0644", force=True)  # fmt: skip


def converge_firewall(module, check_mode, etc="/etc", tenants_dir=TENANTS_DIR, ruleset_path=RULESET_PATH):
    """Render the host's tenant egress ruleset and load it when it changed or is not loaded.

    ``module``: the AnsibleModule (its get_bin_path and run_command). True when changed.
    """
    nft = module.get_bin_path("nft")
    directory = os.path.dirname(ruleset_path)
    if not nft or not os.path.isdir(directory):
        if check_mode:  # the host role, in the same check run, would install them
            return True
        missing = "nft is not installed" if not nft else f"{directory} does not exist"
        raise ValueError(f"{missing} on this host: run the host role (site.yml) first")
    with open(os.path.join(etc, "passwd"), encoding="utf-8") as f:
        users = tenant_users(f.read())
    ruleset = render_ruleset(users, read_allowances(users, tenants_dir))
    entry = dict(path=ruleset_path, content=ruleset, owner="root", group="root", mode="0644", force=True)
    changed = converge_file(entry, wanted_attributes(entry), check_mode)[0]
    loaded = module.run_command([nft, "list", "table", "inet", TABLE])[0] == 0
    if check_mode or (loaded and not changed):
        return changed or not loaded
    rc, _, err = module.run_command([nft, "-f", ruleset_path])
    if rc != 0:
        raise ValueError(f"nft -f {ruleset_path} failed: {err.strip()}")
    return True

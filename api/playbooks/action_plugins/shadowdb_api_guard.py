# Copyright: ShadowDB contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Action plugin (controller only): the create guard's look-up (api/playbooks/tasks/guard_lookup.yml)
in one task. Each name is checked, each version against its host, then what each db host's look
for traces printed (guard_hosts.yml; that every db host answered is checked by the task before)
and the registry, read once (the shadowdb_registry action, in this process). Nothing is changed
anywhere; nothing secret is read.

Sets the facts api_guard_refused ({name: why}: a bad name, or a version its host cannot install)
and api_guard_conflicts ({name: {hosts, found, registry}}: where a tenant of that name already
is).
"""

from __future__ import annotations

import re

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase, VariableLayer

from shadowdb.spec import TENANT_NAME_RE

TENANT_NAME = re.compile(TENANT_NAME_RE)

ARGUMENT_SPEC = dict(
    # [{name, pg_version, host}]: host '' for an HA create (placed later).
    tenants=dict(type="list", elements="dict", required=True),
    # {host: [PostgreSQL majors it can install]} for the hosts of the tenants.
    versions=dict(type="dict", default={}),
    # {db host: the lines its look printed}.
    found=dict(type="dict", required=True),
    # {connection, prefix} of the registry (the inventory has an etcd group), or none.
    registry=dict(type="dict"),
)


def as_int(value) -> int:
    """An integer as Jinja's int filter reads one: 0 when it is none."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def refusals(tenants, versions) -> dict:
    """{name: why} for the names that are not tenant names and the versions a host cannot install."""
    refused = {}
    for tenant in tenants:
        name = str(tenant.get("name", ""))
        if not TENANT_NAME.match(name):
            refused[name] = f"tenant.name: '{name}' is not a tenant name"
        elif tenant.get("host"):
            allowed = [int(v) for v in versions.get(tenant["host"], [17])]
            if as_int(tenant.get("pg_version", 17)) not in allowed:
                refused[name] = (
                    f"tenant.pg_version: host {tenant['host']} can install PostgreSQL "
                    f"{', '.join(map(str, allowed))} only (inventory shadowdb_pg_versions), "
                    f"not {tenant.get('pg_version')}"
                )
    return refused


def conflicts(names, found, records) -> dict:
    """{name: {hosts, found, registry}} for the names a db host or the registry already has.
    ``found`` maps each db host to the lines of its look ("<name> <what>")."""
    registered = {record["tenant"]: record for record in records}
    out = {}
    for name in names:
        where = {}
        for host, lines in found.items():
            traces = [line.split(" ", 1)[1] for line in lines or [] if line.startswith(name + " ")]
            if traces:
                where[host] = traces
        hosts = list(where)
        if name in registered:
            hosts.append(registered[name].get("host") or "the registry")
        if hosts:
            out[name] = {"hosts": list(dict.fromkeys(hosts)), "found": where, "registry": name in registered}
    return out


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _supports_check_mode = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        if self._connection.transport != "local":
            raise AnsibleActionFail("shadowdb_api_guard runs on the controller (delegate_to: localhost)")
        _validation, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        refused = refusals(args["tenants"], args["versions"])
        names = [str(t.get("name", "")) for t in args["tenants"] if str(t.get("name", "")) not in refused]
        found = {}
        if names:
            registry = self._shared_loader_obj.action_loader.get("shadowdb_registry", class_only=True)
            records = registry.records_for(self, task_vars, args["registry"]) if args["registry"] else []
            found = conflicts(names, args["found"], records)
        facts = {"api_guard_refused": refused, "api_guard_conflicts": found}
        self.register_host_variables(facts, VariableLayer.EPHEMERAL_FACT)
        result.update(changed=False, refused=refused, conflicts=found)
        return result

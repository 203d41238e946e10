# Copyright: ShadowDB contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Action plugin (controller only, no remote call): tenant.yml's check of one host's tenant specs
before anything changes (roles/shadowdb/tasks/tenant_check.yml), in one task instead of seven.

Each spec is validated by the shadowdb package (shadowdb.spec.shadowdb_check_tenants: one bad
spec refuses only itself, a name given twice refuses every entry of it); with a registry, the
names it gives to another host or to an HA tenant are refused (one read through the
shadowdb_registry action in this process, the rule of shadowdb.registry); the proxy networks each
accepted tenant admits are computed (shadowdb.network.shadowdb_proxy_cidrs). Without a registry,
tenant_check.yml looks at the other db hosts, then runs this action again with what it found
(`elsewhere`). `strict` (one tenant, not a batch) fails on the first refusal; a run with no
tenant left fails naming each refusal.

The outcome is set as facts of the host, as set_fact would (no task of its own):
  shadowdb_batch          shadowdb_check_tenants' answer ({name, spec, error} per entry)
  shadowdb_taken          {name: why}: names taken on another host or by an HA tenant
  shadowdb_tenant_specs   the specs this run converges or removes
  shadowdb_batch_refused  {tenant or "tenants[i]": reason}
  shadowdb_proxy_cidrs_of {tenant: [networks]} (present tenants)
  shadowdb_tenant         the one tenant (strict only)
"""

from __future__ import annotations

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase, VariableLayer

from shadowdb.errors import SpecError
from shadowdb.network import shadowdb_proxy_cidrs
from shadowdb.registry import shadowdb_registry_taken
from shadowdb.spec import shadowdb_batch_refusals, shadowdb_check_tenants

ARGUMENT_SPEC = dict(
    # The specs as given (tenants, or [tenant]); validated here, so not typed further.
    specs=dict(type="raw", required=True),
    strict=dict(type="bool", default=False),
    tiers=dict(type="dict", default={}),
    pg_versions=dict(type="raw"),
    host=dict(type="str", required=True),
    # {connection, prefix} of the registry (the inventory has an etcd group), or none.
    registry=dict(type="dict"),
    # [{host, address}] of the proxy hosts (tasks/tenant_check.yml gathers the addresses needed).
    proxies=dict(type="list", elements="dict", default=[]),
    # Without a registry: the results of a stat of /etc/shadowdb/volumes/<name>.env on each other
    # db host (item [host, name]), from tasks/tenant_check.yml.
    elsewhere=dict(type="list", elements="dict", default=[]),
)


def found_elsewhere(results) -> dict:
    """{name: why} for the names whose volume settings a stat found on another db host."""
    hosts: dict = {}
    for result in results:
        if (result.get("stat") or {}).get("exists"):
            host, name = result["item"]
            hosts.setdefault(name, []).append(host)
    return {
        name: f"tenant.name: a tenant named '{name}' already exists on {', '.join(where)}"
        for name, where in hosts.items()
    }


class Refused(Exception):
    """No tenant is left to converge (or, strict, one was refused): the message names each."""


def outcome(checked, taken, strict, proxies) -> dict:
    """The facts of the check, from shadowdb_check_tenants' answer and the names taken elsewhere
    (pure: unit-tested). Raises Refused when no tenant is left, or on any refusal when strict;
    SpecError when a restricted tenant cannot admit a proxy host."""
    refused = shadowdb_batch_refusals(checked, taken)
    specs = [entry["spec"] for entry in checked if entry["spec"] and entry["name"] not in taken]
    if not specs or (strict and refused):
        raise Refused("; ".join(refused.values()) or "tenants: no tenant given")
    facts = {
        "shadowdb_batch": checked,
        "shadowdb_taken": taken,
        "shadowdb_tenant_specs": specs,
        "shadowdb_batch_refused": refused,
        "shadowdb_proxy_cidrs_of": {
            spec["name"]: shadowdb_proxy_cidrs(spec, proxies) for spec in specs if spec["state"] == "present"
        },
    }
    if strict:
        facts["shadowdb_tenant"] = specs[0]
    return facts


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _supports_check_mode = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        if self._connection.transport != "local":
            raise AnsibleActionFail("shadowdb_tenant_specs runs on the controller (delegate_to: localhost)")
        _validation, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        try:
            checked = shadowdb_check_tenants(
                args["specs"],
                args["tiers"],
                None,
                args["pg_versions"],
                standalone=True,
                strict=args["strict"],
            )
            names = [entry["name"] for entry in checked if entry["spec"]]
            taken = {}
            if args["registry"]:
                registry = self._shared_loader_obj.action_loader.get("shadowdb_registry", class_only=True)
                records = registry.records_for(self, task_vars, args["registry"])
                taken = shadowdb_registry_taken(records, names, args["host"])
            taken.update(found_elsewhere(args["elsewhere"]))
            facts = outcome(checked, taken, args["strict"], args["proxies"])
        except (SpecError, Refused) as exc:
            raise AnsibleActionFail(str(exc)) from None
        self.register_host_variables(facts, VariableLayer.EPHEMERAL_FACT)
        result.update(
            changed=False,
            tenants=[spec["name"] for spec in facts["shadowdb_tenant_specs"]],
            refused=facts["shadowdb_batch_refused"],
        )
        return result

# Copyright: ShadowDB contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Action plugin (controller only): register a batch of one db host's tenants in the registry
(roles/shadowdb/tasks/tenants_register.yml), the rules being shadowdb/registry.py's.

state=plan reads the registry and returns what the batch needs from the hosts before it can be
registered: the tenants whose PostgreSQL version neither the spec nor the record gives (read on
the db host); with host, also the names taken on another host or by an HA tenant (refused before
anything changes). state=present reads the registry again, plans every record, refuses the batch
before any write when a tenant has no cluster on the host or a proxy port is another tenant's,
and writes the records (a record changed by someone else since the read is that tenant's
failure, never overwritten). With proxy_ports, a tenant without a proxy port gets a random
free one of that range, chosen from the registry as the records are written, in one
transaction guarded against other writers (library/shadowdb_registry.py). A tenant registered
on another host is reported in failed_tenants and left as it is; the others are registered.

Every read and write goes through the shadowdb_registry action in this same process, and the
whole registry stays inside the task: the playbook keeps only the batch's small results, so a
host with hundreds of tenants does not make every later task carry them.
"""

from __future__ import annotations

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from shadowdb.registry import shadowdb_registry_current, shadowdb_registry_records, shadowdb_registry_taken

ARGUMENT_SPEC = dict(
    connection=dict(type="dict", required=True),
    prefix=dict(type="str", default="/shadowdb/tenants/"),
    state=dict(type="str", default="present", choices=["plan", "present"]),
    specs=dict(type="list", elements="dict", required=True),
    host=dict(type="str"),
    address=dict(type="str"),
    ports=dict(type="dict", default={}),
    versions=dict(type="dict", default={}),
    proxy_ports=dict(type="dict"),
)


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _supports_check_mode = True

    def _registry(self, task_vars, **args):
        """The result of the shadowdb_registry action with these arguments (in this process)."""
        registry = self._shared_loader_obj.action_loader.get("shadowdb_registry", class_only=True)
        return registry.run_for(
            self, task_vars, **args, connection=self._args["connection"], prefix=self._args["prefix"]
        )

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        if self._connection.transport != "local":
            raise AnsibleActionFail("shadowdb_register runs on the controller (delegate_to: localhost)")
        _validation, self._args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        args = self._args
        specs = args["specs"]
        records = self._registry(task_vars, state="query")["records"]

        if args["state"] == "plan":
            current = shadowdb_registry_current(records, specs)
            result.update(
                changed=False,
                unversioned=[s["name"] for s in specs if not (s.get("pg_version") or s["name"] in current)],
            )
            if args.get("host"):
                result["taken"] = shadowdb_registry_taken(records, [s["name"] for s in specs], args["host"])
            return result

        for required in ("host", "address"):
            if not args.get(required):
                raise AnsibleActionFail(f"shadowdb_register: {required} is required with state=present")
        plan = shadowdb_registry_records(
            specs,
            records,
            host=args["host"],
            address=args["address"],
            ports=args["ports"],
            versions=args["versions"],
            routed=bool(args.get("proxy_ports")),
        )
        if plan["refused"]:
            raise AnsibleActionFail("; ".join(plan["refused"]))
        failed = dict(plan["failed"])
        written = {"changed": False, "results": {}}
        if plan["records"]:
            extra = {"proxy_ports": args["proxy_ports"]} if args.get("proxy_ports") else {}
            written = self._registry(task_vars, state="present", records=plan["records"], **extra)
            for name, why in written.get("failed_tenants", {}).items():
                failed[name] = f"register: {why}"
        result.update(
            changed=written["changed"],
            failed_tenants=failed,
            # The batch's records as written, with the proxy ports chosen (the API reads each
            # tenant's proxy port there).
            records=[
                {"tenant": name, "record": outcome["record"]}
                for name, outcome in sorted(written["results"].items())
                if not outcome.get("failed")
            ],
        )
        if written.get("diff"):
            result["diff"] = written["diff"]
        return result

# Copyright: ShadowDB contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Action plugin of library/shadowdb_registry.py: on the controller (the registry writer's tasks
are `delegate_to: localhost`), the module's code runs in Ansible's own process instead of being
packaged, copied and started as a new Python for every registry read or write (about 1 s each
on a loaded 2-core machine, a few milliseconds in process). On any other host (a proxy host
reading the registry with its own identity) the module runs there as usual.
"""

from __future__ import annotations

import importlib.util

from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.parameters import remove_values
from ansible.plugins.action import ActionBase
from ansible.plugins.loader import module_loader

MODULE = "shadowdb_registry"
_loaded = None


def registry_module():
    """The module's code (library/shadowdb_registry.py, found the way Ansible finds the module)."""
    global _loaded
    if _loaded is None:
        found = module_loader.find_plugin_with_context(MODULE)
        if not found.resolved:
            raise ImportError(f"module {MODULE} not found in the library path")
        path = found.plugin_resolved_path
        spec = importlib.util.spec_from_file_location(f"_shadowdb_inprocess_{MODULE}", path)
        code = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(code)
        _loaded = code
    return _loaded


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _supports_check_mode = True

    @classmethod
    def run_for(cls, caller, task_vars, **args):
        """This action's result for these arguments, run within the calling action's task (its
        connection, loader and templar): how the controller's other actions read and write the
        registry. A failure raises AnsibleActionFail naming the caller and the registry's error."""
        task = caller._task.copy()
        task.args = args
        action = caller._shared_loader_obj.action_loader.get(
            MODULE,
            task=task,
            connection=caller._connection,
            play_context=caller._play_context,
            loader=caller._loader,
            templar=caller._templar,
            shared_loader_obj=caller._shared_loader_obj,
        )
        result = action.run(task_vars=task_vars)
        if result.get("failed"):
            raise AnsibleActionFail(
                f"{caller._task.action}: the registry: {result.get('msg')}", result=result
            )
        return result

    @classmethod
    def records_for(cls, caller, task_vars, registry):
        """Every record of the registry {connection, prefix} (run_for, state=query)."""
        return (
            cls.run_for(
                caller,
                task_vars,
                connection=registry["connection"],
                prefix=registry.get("prefix") or "/shadowdb/tenants/",
                state="query",
            ).get("records")
            or []
        )

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        if self._connection.transport != "local":
            result.update(self._execute_module(module_name=MODULE, task_vars=task_vars))
            return result

        module = registry_module()
        validation, params = self.validate_argument_spec(argument_spec=module.ARGUMENT_SPEC)
        warnings = []
        # etcd's tokens are kept between runs beside the controller's auth file (root-only, as
        # the password in it): each run then skips etcd's bcrypt check of the password.
        auth_file = module.with_connection(params).get("auth_file")
        token_cache = f"{auth_file}.tokens" if auth_file else None
        failed, outcome = module.execute(
            params, self._task.check_mode, warn=warnings.append, token_cache=token_cache
        )
        # As AnsibleModule.exit_json would: no value of a no_log argument in the result.
        outcome = remove_values(outcome, validation._no_log_values)
        result.update(outcome, changed=outcome.get("changed", False))
        if failed:
            result["failed"] = True
        if warnings:
            result["warnings"] = warnings
        return result

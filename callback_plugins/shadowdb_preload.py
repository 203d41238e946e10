# Copyright: ShadowDB contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Load the plays' connection and shell plugins once, in the run's own process.

Ansible runs every task, set_fact and skipped ones too, in a new process forked from the
run's process, and that process sets up the task's connection: it imports the connection
plugin (compiling a collection's source again, as containers.podman.podman's) and parses its
documentation for its settings, then does the same for the shell plugin. Loaded in the run's
process first, both are inherited by every fork instead. Measured on a lab host: 100 set_fact
tasks 5.7-6.1 s without, 4.4-4.6 s with; a tenant run has about 115 tasks.

Loaded without being enabled (CALLBACK_NEEDS_ENABLED is false). The plugins are those the
inventory names in ansible_connection (plain values; a templated one is left to the task),
the default transport and local. Nothing changes what a task does: a plugin that cannot be
loaded here is loaded by the task, as before.
"""

from ansible import constants as C
from ansible.plugins.callback import CallbackBase
from ansible.plugins.loader import connection_loader, shell_loader

LOADERS = {"connection": connection_loader, "shell": shell_loader}

DOCUMENTATION = r"""
name: shadowdb_preload
type: aggregate
short_description: Load the plays' connection and shell plugins once, before the tasks fork
description:
  - At the start of each play, loads the connection plugins the inventory names (ansible_connection),
    the default transport and local, and the sh shell plugin, in the run's process, so that the
    process forked for each task inherits them instead of loading them again.
"""


def inventory_connections(inventory):
    """The connection plugins the inventory's hosts and groups name (plain values only)."""
    names = set()
    for entity in list(inventory.hosts.values()) + list(inventory.groups.values()):
        name = entity.vars.get("ansible_connection")
        if isinstance(name, str) and name and "{" not in name:
            names.add(name)
    return names


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "shadowdb_preload"
    CALLBACK_NEEDS_ENABLED = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._loaded = set()  # (kind, name) of the plugins loaded in this run

    def v2_playbook_on_play_start(self, play):
        connections = {C.DEFAULT_TRANSPORT, "local"}
        inventory = getattr(play.get_variable_manager(), "_inventory", None)
        if inventory is not None:
            connections |= inventory_connections(inventory)
        wanted = {("connection", name) for name in connections} | {("shell", "sh")}
        for kind, name in sorted(wanted - self._loaded):
            self._loaded.add((kind, name))
            try:
                LOADERS[kind].get(name, class_only=True)
            except Exception as e:  # noqa: BLE001 - the task loads it again and reports any error
                self._display.vvv(f"shadowdb_preload: {kind} {name} not preloaded ({e})")

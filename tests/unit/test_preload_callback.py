"""Unit tests for callback_plugins/shadowdb_preload.py: the connection plugins an inventory names
are loaded in the run's process at the start of a play (so that each task's fork inherits them)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ansible import constants as C
from ansible.inventory.manager import InventoryManager
from ansible.parsing.dataloader import DataLoader
from ansible.plugins.loader import connection_loader, init_plugin_loader

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location(
    "shadowdb_preload", ROOT / "callback_plugins" / "shadowdb_preload.py"
)
preload = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(preload)

INVENTORY = """
all:
  children:
    db:
      vars:
        ansible_connection: community.general.chroot
      hosts:
        db1: {}
        db2: {ansible_connection: local}
        db3: {ansible_connection: "{{ some_var }}"}
"""


def inventory(tmp_path):
    path = tmp_path / "hosts.yml"
    path.write_text(INVENTORY)
    return InventoryManager(loader=DataLoader(), sources=[str(path)])


def cached(name):
    found = connection_loader.find_plugin_with_context(name)
    return found.plugin_resolved_path in connection_loader._module_cache


class Play:
    def __init__(self, inv):
        self._variable_manager = type("VariableManager", (), {"_inventory": inv})()

    def get_variable_manager(self):
        return self._variable_manager


def test_the_plain_connections_of_the_inventory(tmp_path):
    # A templated value is left to the task that resolves it.
    assert preload.inventory_connections(inventory(tmp_path)) == {"community.general.chroot", "local"}


def test_a_play_start_loads_them_in_this_process(tmp_path):
    init_plugin_loader(C.COLLECTIONS_PATHS)  # as ansible-playbook does before any play
    assert not cached("community.general.chroot")
    callback = preload.CallbackModule()
    callback.v2_playbook_on_play_start(Play(inventory(tmp_path)))
    assert cached("community.general.chroot")
    assert cached("local")
    # Once per run: a second play does not load them again.
    assert ("connection", "community.general.chroot") in callback._loaded

"""Count the remote module calls of a playbook run, per host (the benches' measure of the
tenant path's cost: each call is a round trip and a module run on the host).

A call is a task result (or loop item) that ran a module on a host: results of actions the
controller runs itself (set_fact, assert, include_*, ...), of tasks delegated to localhost and
of skipped tasks are not counted. Enabled by the benches only:

    ANSIBLE_CALLBACK_PLUGINS=tests/bench/callback_plugins ANSIBLE_CALLBACKS_ENABLED=shadowdb_calls \
    SHADOWDB_CALLS_FILE=/tmp/calls.json ansible-playbook ...

writes {"hosts": {host: calls}, "tasks": [[host, task, calls], ...]} to SHADOWDB_CALLS_FILE.
"""

from __future__ import annotations

import json
import os
from collections import Counter

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: shadowdb_calls
type: aggregate
short_description: count remote module calls per host
description: Writes the number of remote module calls per host and task to SHADOWDB_CALLS_FILE.
requirements: [enabled in ANSIBLE_CALLBACKS_ENABLED]
"""

# Actions that run on the controller only (no module is sent to the host).
CONTROLLER_ACTIONS = {
    "add_host",
    "assert",
    "debug",
    "fail",
    "group_by",
    "include_role",
    "include_tasks",
    "include_vars",
    "import_role",
    "import_tasks",
    "meta",
    "set_fact",
    "set_stats",
    "validate_argument_spec",
}
LOCAL_HOSTS = {"localhost", "127.0.0.1"}


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "shadowdb_calls"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self.calls: Counter = Counter()

    def _count(self, result, item: bool = False) -> None:
        task = result._task
        action = task.action.rsplit(".", 1)[-1]
        if action in CONTROLLER_ACTIONS:
            return
        delegated_vars = result._result.get("_ansible_delegated_vars") or {}
        delegated = delegated_vars.get("ansible_delegated_host") or task.delegate_to or ""
        host = result._host.get_name()
        if delegated in LOCAL_HOSTS or (not delegated and host in LOCAL_HOSTS):
            return
        if task.loop is not None and not item:
            return  # a looped task is counted per item
        self.calls[(delegated or host, task.get_name())] += 1

    def v2_runner_on_ok(self, result):
        self._count(result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._count(result)

    def v2_runner_item_on_ok(self, result):
        self._count(result, item=True)

    def v2_runner_item_on_failed(self, result):
        self._count(result, item=True)

    def v2_playbook_on_stats(self, stats):
        path = os.environ.get("SHADOWDB_CALLS_FILE")
        if not path:
            return
        hosts: Counter = Counter()
        for (host, _task), n in self.calls.items():
            hosts[host] += n
        with open(path, "w", encoding="utf-8") as out:
            json.dump(
                {"hosts": dict(hosts), "tasks": [[h, t, n] for (h, t), n in sorted(self.calls.items())]},
                out,
                indent=1,
            )

"""Shared helpers for the unit tests of the custom modules in library/."""

import json
import os
import subprocess
import sys
from pathlib import Path

import ansible.module_utils
import pytest

REPO = Path(__file__).resolve().parents[2]
LIBRARY = REPO / "library"
MODULE_UTILS = REPO / "module_utils"
sys.path.insert(0, str(LIBRARY))  # lets the tests import the modules' pure helpers
# The modules import ansible.module_utils.shadowdb_common, as Ansible resolves it from ansible.cfg.
ansible.module_utils.__path__.append(str(MODULE_UTILS))

# Runs a module file as a script, with the project's module_utils importable as Ansible would.
RUN_MODULE = (
    "import runpy, sys, ansible.module_utils as m; m.__path__.append(sys.argv.pop(1)); "
    "sys.argv.pop(0); runpy.run_path(sys.argv[0], run_name='__main__')"
)


# Role-local modules (roles/<role>/library/<module>.py) the tests also run.
ROLE_MODULES = {"shadowdb_haproxy_config": REPO / "roles" / "haproxy" / "library"}


def module_command(module, args, tmp_path, check_mode=False):
    """Write the args file AnsibleModule reads from argv[1] and return the command that runs the module."""
    payload = dict(args)
    if check_mode:
        payload["_ansible_check_mode"] = True
    args_file = tmp_path / f"args-{module}-{os.urandom(4).hex()}.json"
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": payload}))
    module_file = ROLE_MODULES.get(module, LIBRARY) / f"{module}.py"
    return [sys.executable, "-c", RUN_MODULE, str(MODULE_UTILS), str(module_file), str(args_file)]


def parse_result(proc):
    try:
        return json.loads(proc.stdout)
    except ValueError:
        pytest.fail(f"module printed no JSON (rc={proc.returncode}):\n{proc.stdout}\n{proc.stderr}")


@pytest.fixture
def run_module(tmp_path):
    """run_module(module, args, check_mode=False, env=None) -> (result dict, CompletedProcess)."""

    def run(module, args, check_mode=False, env=None):
        cmd = module_command(module, args, tmp_path, check_mode)
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
        return parse_result(proc), proc

    return run


def local_playbook(tmp_path, tasks, *args, env=None):
    """ansible-playbook of these tasks on localhost (connection local) with the repository's
    ansible.cfg, from the repository; env adds to (or overrides) the environment."""
    playbook = tmp_path / f"local-{os.urandom(4).hex()}.yml"
    playbook.write_text(json.dumps([{"hosts": "localhost", "gather_facts": False, "tasks": tasks}]))
    return subprocess.run(
        ["ansible-playbook", "-i", "localhost,", "-c", "local", str(playbook), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), **(env or {})),
        cwd=REPO,
    )

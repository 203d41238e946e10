"""Shared helpers for the unit tests of the custom modules in library/."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

LIBRARY = Path(__file__).resolve().parents[2] / "library"
sys.path.insert(0, str(LIBRARY))  # lets the tests import the modules' pure helpers


def module_command(module, args, tmp_path, check_mode=False):
    """Write the args file AnsibleModule reads from argv[1] and return the command that runs the module."""
    payload = dict(args)
    if check_mode:
        payload["_ansible_check_mode"] = True
    args_file = tmp_path / f"args-{module}-{os.urandom(4).hex()}.json"
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": payload}))
    return [sys.executable, str(LIBRARY / f"{module}.py"), str(args_file)]


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

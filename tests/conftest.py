"""Every test's subprocesses (ansible-playbook, molecule, the API as a server) import this
checkout's ``shadowdb`` package, however pytest was started: pytest's own ``pythonpath`` setting
only reaches the test process, and .venv may be another checkout's."""

import os
from pathlib import Path

REPO = str(Path(__file__).resolve().parents[1])

if os.environ.get("PYTHONPATH", "").split(os.pathsep)[0] != REPO:
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")]))

"""callback_plugins/shadowdb_module_cache.py: module payloads built by one ansible-playbook run are
used by the next, from a directory keyed by everything they are built from."""

import os
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "callback_plugins"))

import shadowdb_module_cache as cache  # noqa: E402
from conftest import local_playbook  # noqa: E402

TASKS = [
    {"name": "builtin", "ansible.builtin.ping": {}},
    {"name": "ours", "shadowdb_tenant_check": {"state": "check", "tenants": [], "state_dir": "/nonexistent"}},
]


def run(tmp_path, setting):
    proc = local_playbook(tmp_path, TASKS, "-vvv", env={"SHADOWDB_MODULE_CACHE": str(setting)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def payloads(parent):
    return {p.name: p.stat().st_mtime_ns for p in parent.glob("*/*") if not p.name.endswith(".lock")}


def test_a_second_run_uses_the_payloads_the_first_built(tmp_path):
    parent = tmp_path / "cache"
    out = run(tmp_path, parent)
    assert f"module payloads kept in {parent / cache.cache_key()}" in out
    built = payloads(parent)
    assert any("shadowdb_tenant_check" in name for name in built), built
    assert any("ping" in name for name in built), built
    modes = {p.stat().st_mode & 0o777 for p in (parent, parent / cache.cache_key())}
    assert modes == {0o700}, modes

    run(tmp_path, parent)
    assert payloads(parent) == built  # the same files, not rebuilt


def test_the_key_follows_the_modules_code(tmp_path, monkeypatch):
    project = tmp_path / "project"
    for tree in ("library", "module_utils"):
        shutil.copytree(REPO / tree, project / tree, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(cache, "PROJECT", project)
    before = cache.cache_key()
    assert cache.cache_key() == before
    module = project / "module_utils" / "shadowdb_common.py"
    module.write_text(module.read_text() + "\n# changed\n")
    assert cache.cache_key() != before


def test_an_unsafe_directory_is_not_used(tmp_path):
    parent = tmp_path / "shared"
    parent.mkdir(mode=0o777)
    parent.chmod(0o777)  # others may write: a payload is code run as root on the hosts
    out = run(tmp_path, parent)
    assert "must be owned by this user with mode 0700" in out
    assert list(parent.iterdir()) == []


def test_off_leaves_ansible_its_own_cache(tmp_path):
    out = run(tmp_path, "off")
    assert "module payloads kept" not in out


def test_old_keys_are_pruned(tmp_path):
    parent = tmp_path / "cache"
    parent.mkdir(mode=0o700)
    for n in range(cache.KEEP + 2):
        old = parent / f"old{n}"
        old.mkdir()
        os.utime(old, (n, n))
    current = parent / "current"
    current.mkdir()
    cache._prune(parent, current)
    kept = sorted(p.name for p in parent.iterdir())
    assert "current" in kept and len(kept) == cache.KEEP, kept
    assert "old0" not in kept

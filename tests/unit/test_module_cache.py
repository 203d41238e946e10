"""callback_plugins/shadowdb_module_cache.py: module payloads built by one ansible-playbook run are
used by the next, from a directory keyed by everything they are built from."""

import base64
import dataclasses
import io
import os
import pickle
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

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


def kept_payload(parent, module):
    """The zip of a kept payload (Ansible's _CachedModule, pickled)."""
    [path] = [p for p in parent.glob(f"*/*{module}*") if not p.name.endswith(".lock")]
    with path.open("rb") as f:
        return base64.b64decode(pickle.load(f).zip_data)  # noqa: S301 (our own cache, as Ansible reads it)


def test_a_kept_payload_has_bytecode_that_this_python_uses(tmp_path):
    parent = tmp_path / "cache"
    run(tmp_path, parent)
    payload = tmp_path / "payload.zip"
    payload.write_bytes(kept_payload(parent, "shadowdb_tenant_check"))
    names = set(zipfile.ZipFile(payload).namelist())
    sources = {n for n in names if n.endswith(".py")}
    assert "ansible/module_utils/basic.py" in sources
    assert {n[:-3] + ".pyc" for n in sources} <= names

    # The payload's code imported with source compiling forbidden: only the bytecode can serve.
    check = (
        "import sys, zipimport\n"
        "def refuse(*args): raise AssertionError(f'compiled from source: {args[0]}')\n"
        "zipimport._compile_source = refuse\n"
        f"sys.path.insert(0, {str(payload)!r})\n"
        "import ansible.module_utils.basic, ansible.module_utils.shadowdb_common\n"
    )
    proc = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_stale_or_foreign_bytecode_is_not_used(tmp_path):
    source = io.BytesIO()
    with zipfile.ZipFile(source, "w") as z:
        z.writestr("probe.py", "VALUE = 1\n")
    built = cache.with_bytecode(base64.b64encode(source.getvalue()))
    payload = zipfile.ZipFile(io.BytesIO(base64.b64decode(built)))
    pyc = payload.read("probe.pyc")

    def imported_value(py, pyc_bytes):
        path = tmp_path / f"probe-{os.urandom(4).hex()}.zip"
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("probe.py", py)
            z.writestr("probe.pyc", pyc_bytes)
        code = f"import sys; sys.path.insert(0, {str(path)!r}); import probe; print(probe.VALUE)"
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        return proc.stdout.strip()

    assert imported_value("VALUE = 1\n", pyc) == "1"
    assert imported_value("VALUE = 2\n", pyc) == "2"  # the .py changed: its hash no longer matches
    assert imported_value("VALUE = 1\n", b"\0\0" + pyc[2:]) == "1"  # another Python's magic number


def test_bytecode_off_keeps_the_payload_as_built(tmp_path):
    parent = tmp_path / "cache"
    proc = local_playbook(
        tmp_path, TASKS, env={"SHADOWDB_MODULE_CACHE": str(parent), "SHADOWDB_MODULE_BYTECODE": "off"}
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    names = zipfile.ZipFile(io.BytesIO(kept_payload(parent, "shadowdb_tenant_check"))).namelist()
    assert "ansible/module_utils/basic.py" in names
    assert not [n for n in names if n.endswith(".pyc")]


def test_a_payload_that_is_not_a_zip_is_kept_as_built(tmp_path):
    kept = []

    @dataclasses.dataclass(frozen=True)
    class Cached:
        zip_data: bytes

        def dump(self, path):
            kept.append(self)

    class Common:
        _CachedModule = Cached

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cache, "module_common", Common)
        assert cache.add_bytecode_when_built()
        assert not cache.add_bytecode_when_built()  # wrapped once only
        Cached(zip_data=b"bm90IGEgemlw").dump(tmp_path / "payload")
    assert kept == [Cached(zip_data=b"bm90IGEgemlw")]

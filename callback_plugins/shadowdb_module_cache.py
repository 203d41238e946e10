# Copyright: ShadowDB contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Keep Ansible's built module payloads from one run to the next.

Before it sends a Python module to a host, Ansible builds its payload (AnsiballZ): it parses the
module and, recursively, every module_utils file it imports (ansible.module_utils.basic and its
tree) to zip them. It caches each payload in the run's private temporary directory only, so
every ansible-playbook run builds again each module it uses: on a no-op tenant.yml run, about a
third of the controller's CPU samples (py-spy over every process), and each module's first call
waits for it.

This callback, loaded without being enabled (CALLBACK_NEEDS_ENABLED is false), points that cache
at a directory that outlives the run, one per version of everything a payload is built from:
ansible-core's version, this checkout (its path, its library/ and module_utils/ trees), and the
installed collections' versions. A change to any of them selects a new, empty directory, so a
payload is never served from other code. The directory is the user's own (mode 0700: a payload is
code run as root on the hosts); the KEEP most recently used are kept, older ones removed.

Each payload also gets its bytecode. A host runs a module from the payload's zip, and Python
compiles every .py it imports from a zip again on every call, never keeping the result: about 55 of
ansible.module_utils' files for each module, 65-80 ms of each call's 160-250 ms on a lab host.
When the payload is built, a .pyc is added beside each .py, compiled by the controller's Python.
It is a checked-hash .pyc: the host's Python uses it only if its magic number is the controller's
(the same minor version, as in the lab: 3.13 in the controller's venv and on the Debian 13 hosts)
and the hash of the .py beside it matches, and otherwise compiles the .py as before. The payload
is about 2.8 times larger (115 KB to 320 KB for ping, compressed).

Settings (environment):
  SHADOWDB_MODULE_CACHE       the parent directory (default: $XDG_CACHE_HOME or ~/.cache, then
                              shadowdb/ansiballz); "off" leaves Ansible's own per-run cache alone.
  SHADOWDB_MODULE_BYTECODE    "off": payloads without bytecode.
Nothing here changes what runs on a host: with the cache off, or with an Ansible that lays out
its cache differently, every payload is simply built in the run as before.
"""

import base64
import dataclasses
import hashlib
import importlib.util
import io
import json
import os
import shutil
import zipfile
from importlib._bootstrap_external import _code_to_hash_pyc
from pathlib import Path

from ansible import constants as C
from ansible.executor import module_common
from ansible.plugins.callback import CallbackBase
from ansible.release import __version__ as ansible_version

DOCUMENTATION = r"""
name: shadowdb_module_cache
type: aggregate
short_description: Keep Ansible's built module payloads (AnsiballZ) from one run to the next
description:
  - Points the run's module payload cache at a directory that outlives the run, keyed by a digest of
    ansible-core's version, the checkout's path, its library/ and module_utils/ and the installed
    collections' versions.
  - Set the environment variable SHADOWDB_MODULE_CACHE to a directory, or to V(off) to disable it.
  - Adds a checked-hash .pyc beside each .py of a payload it builds, used by a host whose Python has the
    controller's magic number; set SHADOWDB_MODULE_BYTECODE to V(off) to build payloads without.
"""

PROJECT = Path(__file__).resolve().parent.parent
# Ansible's per-run cache of built payloads, inside the run's private temporary directory
# (ansible/executor/module_common.py, _find_module_utils).
ANSIBLE_CACHE_NAME = "ansiballz_cache"
KEEP = 8


def _tree_digest(digest, root):
    for path in sorted(p for p in Path(root).rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")


def _collections_versions():
    versions = {}
    for base in C.COLLECTIONS_PATHS:
        for manifest in Path(base).glob("ansible_collections/*/*/MANIFEST.json"):
            info = json.loads(manifest.read_text()).get("collection_info", {})
            versions.setdefault(f"{info.get('namespace')}.{info.get('name')}", info.get("version"))
    return versions


def bytecode_wanted():
    return os.environ.get("SHADOWDB_MODULE_BYTECODE", "") != "off"


def cache_key():
    """Digest of everything a payload is built from."""
    # The checkout's own path too: a payload's metadata names its source files by path.
    digest = hashlib.sha256(ansible_version.encode() + b"\0" + str(PROJECT).encode() + b"\0")
    if bytecode_wanted():
        digest.update(b"bytecode " + importlib.util.MAGIC_NUMBER + b"\0")
    for tree in ("library", "module_utils"):
        _tree_digest(digest, PROJECT / tree)
    digest.update(json.dumps(_collections_versions(), sort_keys=True).encode())
    return digest.hexdigest()[:24]


def with_bytecode(zip_data):
    """A payload's zip (base64, as Ansible keeps it) with a checked-hash .pyc beside each .py."""
    source = zipfile.ZipFile(io.BytesIO(base64.b64decode(zip_data)))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as payload:
        for info in source.infolist():
            data = source.read(info)
            payload.writestr(info, data)
            if not info.filename.endswith(".py"):
                continue
            try:
                code = compile(data, info.filename, "exec", dont_inherit=True)
            except (SyntaxError, ValueError):
                continue  # not this Python's syntax: the host compiles it, as without bytecode
            pyc = zipfile.ZipInfo(info.filename[:-3] + ".pyc", info.date_time)
            pyc.compress_type = zipfile.ZIP_DEFLATED
            source_hash = importlib.util.source_hash(data)
            payload.writestr(pyc, bytes(_code_to_hash_pyc(code, source_hash, checked=True)))
    return base64.b64encode(out.getvalue())


def add_bytecode_when_built():
    """Ansible keeps a payload it built with _CachedModule.dump (module_common._find_module_utils):
    the kept one gets its bytecode, in this process and in the task processes forked from it. The
    first call after the build sends the payload as built; every later one, the kept payload."""
    cached = getattr(module_common, "_CachedModule", None)
    dump = getattr(cached, "dump", None)
    if dump is None or getattr(dump, "shadowdb_bytecode", False):
        return False
    if not dataclasses.is_dataclass(cached) or "zip_data" not in {f.name for f in dataclasses.fields(cached)}:
        return False

    def dump_with_bytecode(self, path):
        try:
            kept = dataclasses.replace(self, zip_data=with_bytecode(self.zip_data))
        except (ValueError, zipfile.BadZipFile):  # not a zip in base64 after all: keep it as built
            kept = self
        return dump(kept, path)

    dump_with_bytecode.shadowdb_bytecode = True
    cached.dump = dump_with_bytecode
    return True


def _prune(parent, current):
    """Keep the KEEP most recently used key directories."""
    dirs = [d for d in parent.iterdir() if d.is_dir() and not d.is_symlink()]
    dirs.sort(key=lambda d: d.stat().st_mtime)
    for old in dirs[:-KEEP]:
        if old != current:
            shutil.rmtree(old, ignore_errors=True)


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "shadowdb_module_cache"
    CALLBACK_NEEDS_ENABLED = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if bytecode_wanted() and add_bytecode_when_built():
            self._display.vvv("shadowdb_module_cache: module payloads built with bytecode")
        setting = os.environ.get("SHADOWDB_MODULE_CACHE", "")
        if setting == "off":
            return
        try:
            self._link(Path(setting) if setting else self._default_parent())
        except OSError as e:
            self._display.vvv(f"shadowdb_module_cache: not used ({e})")

    @staticmethod
    def _default_parent():
        return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "shadowdb" / "ansiballz"

    def _link(self, parent):
        run_tmp = Path(C.DEFAULT_LOCAL_TMP)
        link = run_tmp / ANSIBLE_CACHE_NAME
        if link.exists() or link.is_symlink():
            return  # already built into, or linked, in this run
        parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        stat = parent.stat()
        if stat.st_uid != os.getuid() or stat.st_mode & 0o077:
            raise OSError(f"{parent} must be owned by this user with mode 0700")
        target = parent / cache_key()
        target.mkdir(exist_ok=True, mode=0o700)
        os.utime(target)
        link.symlink_to(target, target_is_directory=True)
        _prune(parent, target)
        self._display.vvv(f"shadowdb_module_cache: module payloads kept in {target}")

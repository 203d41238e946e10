"""Fingerprints of a tenant's desired state, for the no-op fast path.

A playbook records ``spec | shadowdb_fingerprint(code_digest, ...)`` on the host after a tenant
has fully converged (module ``shadowdb_tenant_check``). On the next run, a tenant whose fingerprint
is unchanged (and whose files, units, mount and port are still as recorded) is skipped. So the
fingerprint must change whenever anything that shapes the tenant changes: its spec, deployment-wide
settings (passed as extra arguments) and the code itself (``shadowdb_tree_digest`` of the
directories that converge tenants: roles/shadowdb/tasks/fingerprints.yml names them).

Pure Python (standard library only). Errors are :class:`FingerprintError` (a ValueError).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping


class FingerprintError(ValueError):
    """A value has no canonical form, or a tree could not be read whole."""


# Skipped by shadowdb_tree_digest: byte code and molecule's ephemeral state change without the code changing.
SKIP_DIRS = frozenset({"__pycache__", ".molecule"})
SKIP_SUFFIXES = (".pyc",)
_CHUNK = 1 << 20


def _plain(value, where: str):
    """Return value as plain JSON types (dict with str keys, list, str, int, float, bool, None).

    Iterating rebuilds Ansible's lazy or unsafe containers and strings as plain ones, so a value hashes
    the same however it was produced.
    """
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, Mapping):
        plain = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise FingerprintError(
                    f"shadowdb_fingerprint: {where} has the key {key!r} of type {type(key).__name__}; "
                    "only string keys are canonical"
                )
            plain[str(key)] = _plain(item, f"{where}[{key!r}]")
        return plain
    if isinstance(value, list | tuple):
        return [_plain(item, f"{where}[{i}]") for i, item in enumerate(value)]
    raise FingerprintError(
        f"shadowdb_fingerprint: {where} is a {type(value).__name__}, which has no canonical JSON form; "
        "use a dict, list, string, number, boolean or null"
    )


def canonical_json(value) -> str:
    """Return the canonical JSON text of value: sorted keys, no whitespace, ASCII only, no NaN/Infinity."""
    plain = _plain(value, "the value")
    try:
        return json.dumps(plain, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    except ValueError as e:  # NaN or Infinity
        raise FingerprintError(f"shadowdb_fingerprint: the value is not canonical JSON data: {e}") from e


def shadowdb_fingerprint(spec, *extra) -> str:
    """Return the SHA-256 hex digest of the canonical JSON of [spec, *extra].

    Dicts hash the same whatever their key order; lists keep their order; tuples hash like lists.
    Values that JSON cannot represent exactly (sets, bytes, NaN, non-string dict keys) are refused.
    """
    return hashlib.sha256(canonical_json([spec, *extra]).encode("ascii")).hexdigest()


def _tree_files(root: str) -> list[tuple[str, str]]:
    """Return sorted (relative posix path, absolute path) of the regular files under root.

    Symlinks to regular files count as the file they point to; symlinked directories are not followed.
    """
    found = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=_raise):
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS]
        for filename in filenames:
            if filename.endswith(SKIP_SUFFIXES):
                continue
            path = os.path.join(dirpath, filename)
            if not os.path.isfile(path):  # sockets, fifos, dangling symlinks
                continue
            rel = os.path.relpath(path, root).replace(os.sep, "/")
            found.append((rel, path))
    found.sort()
    return found


def _raise(error: OSError) -> None:
    raise error


def _update_file(h, path: str) -> None:
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        h.update(f"{size}\n".encode())
        read = 0
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            read += len(chunk)
    if read != size:  # the file changed while being read
        raise FingerprintError(f"shadowdb_tree_digest: {path} changed while being read; run again")


def shadowdb_tree_digest(paths) -> str:
    """Return a SHA-256 hex digest of every regular file under the given directories.

    ``paths`` is a directory (or file) path or a list of them. For each path, in the given order, the
    digest covers its index in the list and, sorted by relative path, each file's relative path, size
    and content - not the absolute paths, so two checkouts of the same code at different places digest
    the same. ``__pycache__`` and ``.molecule`` directories and ``*.pyc`` files are skipped. A path
    that is a regular file is digested as a single file named by its base name.
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    if not isinstance(paths, Iterable) or isinstance(paths, bytes | dict):
        raise FingerprintError(
            f"shadowdb_tree_digest: expected a path or a list of paths, got {type(paths).__name__}"
        )
    h = hashlib.sha256(b"shadowdb_tree_digest v1\n")
    for index, root in enumerate(paths):
        if not isinstance(root, str | os.PathLike):
            raise FingerprintError(
                f"shadowdb_tree_digest: paths[{index}]={root!r} is invalid: it must be a path string"
            )
        root = os.fspath(root)
        try:
            if os.path.isdir(root):
                files = _tree_files(root)
            elif os.path.isfile(root):
                files = [(os.path.basename(root), root)]
            else:
                raise FingerprintError(
                    f"shadowdb_tree_digest: paths[{index}]={root!r} is not a directory or a regular file"
                )
            h.update(f"root {index} {len(files)}\n".encode())
            for rel, path in files:
                rel_bytes = os.fsencode(rel)
                h.update(f"file {len(rel_bytes)}\n".encode() + rel_bytes)
                _update_file(h, path)
        except OSError as e:
            raise FingerprintError(
                f"shadowdb_tree_digest: paths[{index}]={root!r}: cannot read {e.filename or root}: "
                f"{e.strerror or e}"
            ) from e
    return h.hexdigest()

# Copyright: ShadowDB contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""A tenant's converged record: what proves it converged (its fingerprint, the hashes of its
files, its units, mount point and port), kept as C(<state_dir>/<name>.json).

Shared by shadowdb_tenant_check (records checked, written, forgotten) and shadowdb_cluster_apply
(a tenant's record written by the call that converged it). Modules import it as
``ansible.module_utils.shadowdb_record``.
"""

import hashlib
import json
import os
import re

from ansible.module_utils.shadowdb_common import ensure_dir, fsync_dir, open_safe_dir, read_text, write_atomic

IDENTIFIER_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
# systemd unit name characters; a leading '-' would be read as an option by systemctl.
UNIT_RE = re.compile(r"^[A-Za-z0-9:_.\\@][A-Za-z0-9:_.\\@-]*$")
PORT_MIN = 1
PORT_MAX = 65535
FILE_MODE = 0o600
DIR_MODE = 0o700
CHUNK = 1 << 20


class RecordError(Exception):
    """A record file exists but cannot be read or does not have the expected structure."""


def invalid_fingerprint(arg, value):
    if not isinstance(value, str) or not value.strip():
        return f"{arg}={value!r} is invalid: it must be a non-empty string"
    return None


def record_error(params, where=""):
    """The error of the first invalid option of one record (name excepted), or None.

    ``where`` prefixes the option names (``records[2].`` in the list form)."""
    error = invalid_fingerprint(f"{where}fingerprint", params["fingerprint"])
    if error:
        return error
    for i, path in enumerate(params.get("files") or []):
        if not os.path.isabs(path):
            return f"{where}files[{i}]={path!r} is invalid: it must be an absolute path"
    for i, unit in enumerate(params.get("units") or []):
        if not UNIT_RE.match(unit):
            return f"{where}units[{i}]={unit!r} is invalid: it must be a unit name matching {UNIT_RE.pattern}"
    mountpoint = params.get("mountpoint")
    if mountpoint and not os.path.isabs(mountpoint):
        return f"{where}mountpoint={mountpoint!r} is invalid: it must be an absolute path or empty"
    port = params.get("port")
    if port is not None and not PORT_MIN <= port <= PORT_MAX:
        return f"{where}port={port} is invalid: it must be between {PORT_MIN} and {PORT_MAX}, or null"
    return None


def record_path(state_dir, name):
    return os.path.join(state_dir, f"{name}.json")


def sha256_file(path):
    """SHA-256 of a regular file, reached without following a link planted in a tenant's directory
    (shadowdb_common.SafeDir): a tenant's symlink to a root-only file is refused, not hashed."""
    h = hashlib.sha256()
    directory, name = os.path.split(os.path.normpath(path))
    with open_safe_dir(directory) as parent:
        fd = parent.open_file(name)
    with os.fdopen(fd, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def build_record(fingerprint, files, units, mountpoint, port, digest=sha256_file):
    """Return the record of a tenant; digest(path) hashes each file (OSError propagates)."""
    return {
        "files": {os.path.normpath(p): digest(os.path.normpath(p)) for p in files or []},
        "fingerprint": fingerprint,
        "mountpoint": os.path.normpath(mountpoint) if mountpoint else "",
        "port": port,
        "units": sorted(set(units or [])),
    }


def dump_record(record):
    return json.dumps(record, indent=2, sort_keys=True) + "\n"


def parse_record(text):
    """Parse and validate the JSON text of a record file; return the record."""
    try:
        data = json.loads(text)
    except ValueError as e:
        raise RecordError(f"invalid JSON: {e}") from e
    if not isinstance(data, dict):
        raise RecordError("top level is not a JSON object")
    fingerprint = data.get("fingerprint")
    if not isinstance(fingerprint, str):
        raise RecordError("'fingerprint' is not a string")
    files = data.get("files", {})
    if not isinstance(files, dict) or not all(
        isinstance(p, str) and os.path.isabs(p) and isinstance(h, str) for p, h in files.items()
    ):
        raise RecordError("'files' is not an object of absolute paths to SHA-256 strings")
    units = data.get("units", [])
    if not isinstance(units, list) or not all(isinstance(u, str) and UNIT_RE.match(u) for u in units):
        raise RecordError("'units' is not a list of systemd unit names")
    mountpoint = data.get("mountpoint") or ""
    if not isinstance(mountpoint, str) or (mountpoint and not os.path.isabs(mountpoint)):
        raise RecordError("'mountpoint' is not an absolute path or empty")
    port = data.get("port")
    if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 0 < port <= PORT_MAX):
        raise RecordError("'port' is not a TCP port or null")
    return dict(files=files, fingerprint=fingerprint, mountpoint=mountpoint, port=port, units=units)


def load_record(path):
    """Return the record stored at path, None if there is none; RecordError if it is unusable."""
    try:
        text = read_text(path)
    except (OSError, UnicodeDecodeError) as e:
        raise RecordError(f"cannot read it: {getattr(e, 'strerror', None) or e}") from e
    return None if text is None else parse_record(text)


class TenantFailure(Exception):
    """A tenant's record could not be read, hashed, written or deleted; .partial is its result so far."""

    def __init__(self, msg, partial):
        super().__init__(msg)
        self.partial = partial


def read_record_text(state_dir, name, path, result):
    try:
        return read_text(path)
    except (OSError, UnicodeDecodeError) as e:
        raise TenantFailure(
            f"state_dir={state_dir!r}: cannot read the record of {name!r} ({path}): "
            f"{getattr(e, 'strerror', None) or e}",
            result,
        ) from e


def store_record(state_dir, name, path, after, result, check_mode):
    """Write (after: text) or delete (after: None) the record file when it changes."""
    if not result["changed"] or check_mode:
        return
    try:
        if after is not None:
            ensure_dir(state_dir, DIR_MODE)
            write_atomic(path, after, FILE_MODE)
        else:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            fsync_dir(state_dir)
    except OSError as e:
        raise TenantFailure(
            f"state_dir={state_dir!r}: cannot {'write' if after else 'delete'} the record of "
            f"{name!r}: {e.strerror or e} ({e.filename or path})",
            result,
        ) from e


def record_tenant(state_dir, params, check_mode, warn):
    """Write the record of the tenant of params (name, fingerprint, files, units, mountpoint, port);
    return the single form's result (TenantFailure on error)."""
    name = params["name"]
    path = record_path(state_dir, name)
    result = dict(changed=False, name=name, path=path, record=None)
    before = read_record_text(state_dir, name, path, result)
    unhashable = []

    def digest(path):
        try:
            return sha256_file(path)
        except OSError as e:
            if not check_mode:
                raise
            # In check mode the files of a new tenant do not exist yet: predict, do not fail.
            unhashable.append(f"{path} ({e.strerror})")
            return None

    try:
        new = build_record(
            params["fingerprint"],
            params["files"],
            params["units"],
            params["mountpoint"],
            params["port"],
            digest=digest,
        )
    except OSError as e:
        raise TenantFailure(
            f"files: cannot hash {e.filename}: {e.strerror}; record a tenant only after it converged", result
        ) from e
    if unhashable:
        warn(f"check mode: cannot hash {', '.join(unhashable)}; a real run fails unless they exist by then")
    after = dump_record(new)
    result["record"] = new
    result["changed"] = before != after
    result["diff"] = dict(before=before or "", after=after, before_header=path, after_header=path)
    store_record(state_dir, name, path, after, result, check_mode)
    return result


def differs_from_previous(new, previous):
    """Whether a tenant's new record differs from its previous one beyond the fingerprint (a new
    fingerprint alone, the same files after an upgrade of ShadowDB, is bookkeeping)."""

    def without_fingerprint(rec):
        return {k: v for k, v in (rec or {}).items() if k != "fingerprint"}

    return without_fingerprint(new) != without_fingerprint(previous)


def record_converged(state_dir, params, previous, check_mode, warn, where=""):
    """Check (record_error, option names prefixed by where) and write one tenant's record
    (record_tenant). Returns (record_tenant's result, whether the record changed: against
    previous beyond the fingerprint when previous is given, else whether its file changed).
    Raises TenantFailure."""
    error = record_error(params, where)
    if error:
        raise TenantFailure(error, {})
    result = record_tenant(state_dir, params, check_mode, warn)
    changed = result["changed"] if previous is None else differs_from_previous(result["record"], previous)
    return result, changed

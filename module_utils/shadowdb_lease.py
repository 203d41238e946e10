# Copyright: ShadowDB contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Stable, random, host-local TCP port leases (one JSON file and one flock per pool).

Shared by shadowdb_port and shadowdb_cluster_prepare (modules import it as
``ansible.module_utils.shadowdb_lease``).
"""

import fcntl
import json
import os
import random
import re
from contextlib import contextmanager

from ansible.module_utils.shadowdb_common import ensure_dir, write_atomic

IDENTIFIER_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
PORT_MIN = 1024
PORT_MAX = 65535
FILE_MODE = 0o644
DIR_MODE = 0o755


class LeaseFileError(Exception):
    """The lease file exists but cannot be read or does not have the expected structure."""


def parse_lease_data(text):
    """Parse and validate the JSON text of a lease file; return the document (with a 'leases' dict)."""
    try:
        data = json.loads(text)
    except ValueError as e:
        raise LeaseFileError(f"invalid JSON: {e}") from e
    if not isinstance(data, dict):
        raise LeaseFileError("top level is not a JSON object")
    leases = data.setdefault("leases", {})
    if not isinstance(leases, dict):
        raise LeaseFileError("'leases' is not a JSON object")
    for owner, port in leases.items():
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= PORT_MAX:
            raise LeaseFileError(f"lease {owner!r} has invalid port {port!r}")
    return data


def load_lease_file(path):
    """Return the lease document stored at path, or an empty one if the file does not exist."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return {"leases": {}}
    except OSError as e:
        raise LeaseFileError(f"cannot read it: {e.strerror}") from e
    return parse_lease_data(text)


def dump_lease_data(data):
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def choose_port(range_start, range_end, leased, listening, rng):
    """Pick a random port of the inclusive range that is neither leased nor listening (None if none is)."""
    candidates = [p for p in range(range_start, range_end + 1) if p not in leased and p not in listening]
    return rng.choice(candidates) if candidates else None


def lease_new_ports(leases, names, range_start, range_end, listening, rng, pool):
    """Give each of names that has no lease in leases (a pool's dict, updated in place) a free port
    of the range, in the order given: when the range is short, the last ones go without. Returns
    {name: why it got no port}."""
    leased = set(leases.values())
    exhausted = {}
    for name in names:
        if leases.get(name) is not None:
            continue
        port = choose_port(range_start, range_end, leased, listening, rng)
        if port is None:
            exhausted[name] = exhausted_message(range_start, range_end, pool, leased, listening)
            continue
        leases[name] = port
        leased.add(port)
    return exhausted


def _plural(count, word):
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def exhausted_message(range_start, range_end, pool, leased, listening):
    in_range = range(range_start, range_end + 1)
    n_leased = sum(1 for p in in_range if p in leased)
    n_listening = sum(1 for p in in_range if p in listening and p not in leased)
    busy = f", {n_listening} listening without a lease" if n_listening else ""
    return (
        f"port range {range_start}-{range_end} of pool '{pool}' is exhausted: "
        f"{_plural(n_leased, 'port')} leased{busy}, 0 free; "
        "widen range_start/range_end or release leases with state=absent"
    )


def diff_line(name, port):
    return f"{name}: {'absent' if port is None else port}\n"


@contextmanager
def pool_lock(path, create):
    """Hold an exclusive flock on path, creating it.

    With create=False (check mode) take a shared lock if the file exists and no lock if it does not.
    """
    if create:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        mode = fcntl.LOCK_EX
    else:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            yield
            return
        mode = fcntl.LOCK_SH
    try:
        fcntl.flock(fd, mode)
        yield
    finally:
        os.close(fd)  # closing the only descriptor releases the lock


def lease_port(lease_dir, pool, name, range_start, range_end, listening, rng, check_mode=False):
    """(port before, port after) of name's lease in pool: kept when it exists, else a free one.

    Raises LeaseFileError for an unusable lease file and ValueError when the range is exhausted.
    """
    lease_file = os.path.join(lease_dir, f"{pool}.json")
    if not check_mode:
        ensure_dir(lease_dir, DIR_MODE)
    with pool_lock(os.path.join(lease_dir, f"{pool}.lock"), create=not check_mode):
        data = load_lease_file(lease_file)
        leases = data["leases"]
        before = leases.get(name)
        if before is not None:
            return before, before
        leased = set(leases.values())
        after = choose_port(range_start, range_end, leased, listening, rng)
        if after is None:
            raise ValueError(exhausted_message(range_start, range_end, pool, leased, listening))
        leases[name] = after
        if not check_mode:
            write_atomic(lease_file, dump_lease_data(data), FILE_MODE)
        return before, after


def ports_short(lease_dir, pool, names, range_start, range_end, read_listening):
    """{name: why} for the names without a lease in pool that would get no free port of the range
    (nothing is written; the pool's lock is taken shared). read_listening() returns (the listening
    ports, whether they could be read); it is called only when a name needs a new port.

    Raises LeaseFileError for an unusable lease file, OSError when the listening ports cannot be read.
    """
    with pool_lock(os.path.join(lease_dir, f"{pool}.lock"), create=False):
        leases = load_lease_file(os.path.join(lease_dir, f"{pool}.json"))["leases"]
        if all(leases.get(name) is not None for name in names):
            return {}
        listening, read = read_listening()
        if not read:
            raise OSError("neither /proc/net/tcp nor /proc/net/tcp6 is readable")
        # Which free port each would take does not matter here, only whether there is one.
        return lease_new_ports(dict(leases), names, range_start, range_end, listening, random.Random(0), pool)

#!/usr/bin/python
# Copyright: ShadowDB contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Ansible module: stable, random, host-local TCP port leases for ShadowDB tenants."""

import os
import random

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.shadowdb_common import (
    ensure_dir,
    parse_listening_ports,  # noqa: F401 (part of this module's tested helpers)
    read_listening_ports,
    write_atomic,
)
from ansible.module_utils.shadowdb_lease import (  # noqa: F401 (the tests import them from here)
    DIR_MODE,
    FILE_MODE,
    IDENTIFIER_RE,
    PORT_MAX,
    PORT_MIN,
    LeaseFileError,
    choose_port,
    diff_line,
    dump_lease_data,
    exhausted_message,
    lease_new_ports,
    load_lease_file,
    parse_lease_data,
    pool_lock,
)

DOCUMENTATION = r"""
---
module: shadowdb_port
short_description: Lease a stable, randomly chosen TCP port from a per-host pool
description:
  - Hands out one TCP port per lease owner (typically a tenant) from a port range, for example the port
    of the tenant's PostgreSQL cluster.
  - The first allocation picks a port uniformly at random among the ports of the range that are neither
    leased in the same pool nor currently listening on the host. Every later run returns the same port,
    forever, even if O(range_start)/O(range_end) change afterwards (a warning is emitted in that case).
  - 'Leases are stored per pool in C(<lease_dir>/<pool>.json) as C({"leases": {"<name>": <port>}}).
    The file is rewritten atomically (temporary file and rename, mode C(0644)).'
  - An exclusive C(flock) on C(<lease_dir>/<pool>.lock) is held for the whole read-modify-write, so
    concurrent runs on the same host never lease the same port twice.
  - Pools are independent; give each pool (C(postgres), C(proxy), C(patroni_api), ...) a range that does
    not overlap the ranges of the other pools.
  - The list form (O(names) instead of O(name)) leases or releases the ports of a batch of owners in one
    call, with one read-modify-write of the lease file under the lock. Each owner gets a distinct port,
    an existing lease is kept. When the range cannot hold them all, the owners that get no port are
    listed in RV(failed_tenants) and the task does not fail (the others get theirs); a wrong call
    (an invalid or repeated name, a bad range, an unusable lease file) fails the task.
options:
  name:
    description:
      - Owner of the lease, usually the tenant name (the single form).
      - Must match C(^[a-z0-9][a-z0-9_-]*$).
      - Exactly one of O(name) and O(names) is required.
    type: str
  names:
    description:
      - Owners of the leases, usually tenant names (the list form). With O(state=present) each gets a
        port (RV(ports)), with O(state=absent) each one's lease is released. May be empty.
      - Each must match C(^[a-z0-9][a-z0-9_-]*$); names must be unique.
      - New leases are chosen in the order given.
    type: list
    elements: str
  pool:
    description:
      - Name of the port pool. Each pool has its own lease file and lock.
      - Must match C(^[a-z0-9][a-z0-9_-]*$).
    type: str
    default: postgres
  range_start:
    description:
      - First port of the range new leases are chosen from.
      - Must satisfy C(1024 <= range_start <= range_end).
      - Required when O(state=present). When given with O(state=absent) it is validated but not used.
    type: int
  range_end:
    description:
      - Last port (inclusive) of the range new leases are chosen from.
      - Must satisfy C(range_start <= range_end <= 65535).
      - Required when O(state=present). When given with O(state=absent) it is validated but not used.
    type: int
  state:
    description:
      - V(present) returns the existing lease of O(name) (of each of O(names)) or creates one.
      - V(absent) releases the lease of O(name) (of each of O(names)), if any, and returns the released
        port.
    type: str
    choices: [present, absent]
    default: present
  lease_dir:
    description:
      - Directory holding the lease (C(<pool>.json)) and lock (C(<pool>.lock)) files.
      - Created with mode C(0755) when a lease is first written.
    type: path
    default: /var/lib/shadowdb/ports
  check_free:
    description:
      - When V(true), never hand out a port that currently has a listening TCP socket on the host
        (any address, IPv4 or IPv6), as read from C(/proc/net/tcp) and C(/proc/net/tcp6).
      - Only applies when a new lease is chosen; an existing lease is returned even if its port is
        listening (normally by the owner's own service).
    type: bool
    default: true
notes:
  - Listening sockets are read from C(/proc) of the network namespace the module runs in (Linux only);
    nothing is bound to probe a port.
  - In check mode the would-be port is computed and reported with C(changed=true), but nothing is
    written and O(lease_dir) is not created. Without the lock held a later real run may choose a different
    port for a new lease. With O(names), the would-be ports are distinct, and the names the range cannot
    hold are listed in RV(failed_tenants) as in a real run.
attributes:
  check_mode:
    support: full
    description: Computes the port that would be leased or released without writing the lease file.
  diff_mode:
    support: full
    description: "Returns the lease of O(name) (one line for each of O(names)) before and after, as
      C(<name>: <port or absent>)."
author:
  - ShadowDB contributors
"""

EXAMPLES = r"""
- name: Lease the PostgreSQL port of tenant acme
  shadowdb_port:
    name: acme
    pool: postgres
    range_start: 20000
    range_end: 29999
  register: acme_pg_port

- name: Lease the proxy port of tenant acme from a separate pool
  shadowdb_port:
    name: acme
    pool: proxy
    range_start: 30000
    range_end: 30999

- name: Release the Patroni REST API port of a deleted tenant
  shadowdb_port:
    name: oldcorp
    pool: patroni_api
    state: absent

- name: Use the leased port
  ansible.builtin.debug:
    msg: "acme listens on {{ acme_pg_port.port }}"

- name: Lease the PostgreSQL ports of a batch of tenants in one call
  shadowdb_port:
    names: [acme, globex, initech]
    pool: postgres
    range_start: 20000
    range_end: 29999
  register: batch_ports  # batch_ports.ports.globex; batch_ports.failed_tenants when the range is full
"""

RETURN = r"""
port:
  description:
    - With O(state=present), the port leased to O(name) (the would-be port in check mode).
    - With O(state=absent), the port that was released, or V(null) if O(name) held no lease.
  returned: with O(name)
  type: int
  sample: 24817
ports:
  description:
    - With O(state=present), each of O(names) that has a port mapped to it (the would-be port in check
      mode); the names of RV(failed_tenants) are left out.
    - With O(state=absent), each of O(names) mapped to the port that was released, or V(null) if it held no
      lease.
  returned: with O(names)
  type: dict
  sample: {"acme": 24817, "globex": 21003}
failed_tenants:
  description:
    - With O(names), each name that got no port because the range is exhausted, mapped to why (the
      message the single form fails with). Empty with O(state=absent).
  returned: with O(names)
  type: dict
  sample: {"initech": "port range 20000-20001 of pool 'postgres' is exhausted: 2 ports leased, 0 free; ..."}
pool:
  description: The pool the lease belongs to.
  returned: always
  type: str
  sample: postgres
name:
  description: The lease owner.
  returned: with O(name)
  type: str
  sample: acme
leases_count:
  description: Number of leases in the pool after the operation (as it would be, in check mode).
  returned: always
  type: int
  sample: 12
diff:
  description: Lease of O(name) (of each of O(names), one line each) before and after the operation.
  returned: always
  type: dict
  sample: {"before": "acme: absent\n", "after": "acme: 24817\n"}
"""


def validate_params(params):
    """Return an error message naming the offending argument, or None if the arguments are valid."""
    names = params.get("names")
    if names is None:
        if not IDENTIFIER_RE.match(params["name"]):
            return f"name={params['name']!r} is invalid: it must match {IDENTIFIER_RE.pattern}"
    else:
        for i, name in enumerate(names):
            if not IDENTIFIER_RE.match(name):
                return f"names[{i}]={name!r} is invalid: it must match {IDENTIFIER_RE.pattern}"
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            return f"names: {', '.join(twice)} listed more than once"
    if not IDENTIFIER_RE.match(params["pool"]):
        return f"pool={params['pool']!r} is invalid: it must match {IDENTIFIER_RE.pattern}"
    start, end = params.get("range_start"), params.get("range_end")
    if start is not None and not PORT_MIN <= start <= PORT_MAX:
        return f"range_start={start} is invalid: it must be between {PORT_MIN} and {PORT_MAX}"
    if end is not None and not PORT_MIN <= end <= PORT_MAX:
        return f"range_end={end} is invalid: it must be between {PORT_MIN} and {PORT_MAX}"
    if start is not None and end is not None and start > end:
        return f"range_end={end} is invalid: it must be greater than or equal to range_start={start}"
    return None


class PortError(Exception):
    """The call failed for every name (unusable lease file, unreadable sockets, failed write); .partial
    is the result so far."""

    def __init__(self, msg, **partial):
        super().__init__(msg)
        self.partial = partial


def report(params, names, before, after, exhausted, count):
    """The module's result, of the single form (O(name)) or of the list form (O(names))."""
    result = dict(
        changed=before != after,
        pool=params["pool"],
        leases_count=count,
        diff=dict(
            before="".join(diff_line(n, before[n]) for n in names),
            after="".join(diff_line(n, after[n]) for n in names),
        ),
    )
    present = params["state"] == "present"
    if params["names"] is None:
        name = params["name"]
        result.update(name=name, port=after[name] if present else before[name])
    elif present:
        result.update(ports={n: after[n] for n in names if n not in exhausted}, failed_tenants=exhausted)
    else:
        result.update(ports=before, failed_tenants={})
    return result


def converge_leases(params, names, check_mode, warn, rng):
    """Lease (state=present) or release (state=absent) the port of each of names in one read-modify-write
    of the pool, under its lock. Returns (the result, {name: why it got no port}); raises PortError."""
    pool, lease_dir = params["pool"], params["lease_dir"]
    lease_file = os.path.join(lease_dir, f"{pool}.json")
    with pool_lock(os.path.join(lease_dir, f"{pool}.lock"), create=not check_mode):
        try:
            data = load_lease_file(lease_file)
        except LeaseFileError as e:
            raise PortError(
                f"lease file {lease_file} (lease_dir={lease_dir!r}, pool={pool!r}) is unusable: {e}; "
                "fix or remove it"
            ) from e
        leases = data["leases"]
        before = {name: leases.get(name) for name in names}
        exhausted = {}
        if params["state"] == "present":
            start, end = params["range_start"], params["range_end"]
            for name in names:
                port = before[name]
                if port is not None and not start <= port <= end:
                    warn(
                        f"{name!r} keeps its lease of port {port} in pool {pool!r}, which is outside "
                        f"range_start-range_end {start}-{end}; leases are stable, release it with "
                        "state=absent to get a new port"
                    )
            new = [name for name in names if before[name] is None]
            listening = set()
            if new and params["check_free"]:
                listening, read = read_listening_ports()
                if not read:
                    raise PortError(
                        "check_free=true but neither /proc/net/tcp nor /proc/net/tcp6 is "
                        "readable; set check_free=false to lease without checking listening sockets"
                    )
            exhausted = lease_new_ports(leases, new, start, end, listening, rng, pool)
        else:
            for name in names:
                leases.pop(name, None)
        after = {name: leases.get(name) for name in names}
        result = report(params, names, before, after, exhausted, len(leases))
        if result["changed"] and not check_mode:
            try:
                write_atomic(lease_file, dump_lease_data(data), FILE_MODE)
            except OSError as e:
                raise PortError(
                    f"lease_dir={lease_dir!r}: cannot update leases of pool {pool!r}: "
                    f"{e.strerror or e} ({e.filename or lease_dir})",
                    **result,
                ) from e
        return result, exhausted


def main():
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str"),
            names=dict(type="list", elements="str"),
            pool=dict(type="str", default="postgres"),
            range_start=dict(type="int"),
            range_end=dict(type="int"),
            state=dict(type="str", default="present", choices=["present", "absent"]),
            lease_dir=dict(type="path", default="/var/lib/shadowdb/ports"),
            check_free=dict(type="bool", default=True),
        ),
        required_if=[("state", "present", ("range_start", "range_end"))],
        required_one_of=[("name", "names")],
        mutually_exclusive=[("name", "names")],
        supports_check_mode=True,
    )
    p = module.params
    error = validate_params(p)
    if error:
        module.fail_json(msg=error)

    single = p["names"] is None
    names = [p["name"]] if single else p["names"]
    lease_dir, pool = p["lease_dir"], p["pool"]
    if single:
        result = dict(changed=False, name=p["name"], pool=pool, port=None, leases_count=0)
    else:
        result = dict(changed=False, pool=pool, ports={}, failed_tenants={}, leases_count=0)

    if not module.check_mode:
        try:
            ensure_dir(lease_dir, DIR_MODE)
        except OSError as e:
            module.fail_json(msg=f"lease_dir={lease_dir!r}: cannot create directory: {e.strerror}", **result)
    try:
        result, exhausted = converge_leases(p, names, module.check_mode, module.warn, random.SystemRandom())
    except PortError as e:
        module.fail_json(msg=str(e), **dict(result, **e.partial))
    except OSError as e:  # the lock
        module.fail_json(
            msg=f"lease_dir={lease_dir!r}: cannot update leases of pool {pool!r}: "
            f"{e.strerror or e} ({e.filename or lease_dir})",
            **result,
        )
    if single and exhausted:
        # The single form fails; the list form reports the names in failed_tenants.
        module.fail_json(
            msg=exhausted[p["name"]],
            changed=False,
            name=p["name"],
            pool=pool,
            port=None,
            leases_count=result["leases_count"],
        )
    module.exit_json(**result)


if __name__ == "__main__":
    main()

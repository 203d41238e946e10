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
options:
  name:
    description:
      - Owner of the lease, usually the tenant name.
      - Must match C(^[a-z0-9][a-z0-9_-]*$).
    type: str
    required: true
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
      - V(present) returns the existing lease of O(name) or creates one.
      - V(absent) releases the lease of O(name), if any, and returns the released port.
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
    port for a new lease.
attributes:
  check_mode:
    support: full
    description: Computes the port that would be leased or released without writing the lease file.
  diff_mode:
    support: full
    description: "Returns the lease of O(name) before and after, as C(<name>: <port or absent>)."
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
"""

RETURN = r"""
port:
  description:
    - With O(state=present), the port leased to O(name) (the would-be port in check mode).
    - With O(state=absent), the port that was released, or V(null) if O(name) held no lease.
  returned: always
  type: int
  sample: 24817
pool:
  description: The pool the lease belongs to.
  returned: always
  type: str
  sample: postgres
name:
  description: The lease owner.
  returned: always
  type: str
  sample: acme
leases_count:
  description: Number of leases in the pool after the operation (as it would be, in check mode).
  returned: always
  type: int
  sample: 12
diff:
  description: Lease of O(name) before and after the operation.
  returned: always
  type: dict
  sample: {"before": "acme: absent\n", "after": "acme: 24817\n"}
"""


def validate_params(params):
    """Return an error message naming the offending argument, or None if the arguments are valid."""
    for arg in ("name", "pool"):
        if not IDENTIFIER_RE.match(params[arg]):
            return f"{arg}={params[arg]!r} is invalid: it must match {IDENTIFIER_RE.pattern}"
    start, end = params.get("range_start"), params.get("range_end")
    if start is not None and not PORT_MIN <= start <= PORT_MAX:
        return f"range_start={start} is invalid: it must be between {PORT_MIN} and {PORT_MAX}"
    if end is not None and not PORT_MIN <= end <= PORT_MAX:
        return f"range_end={end} is invalid: it must be between {PORT_MIN} and {PORT_MAX}"
    if start is not None and end is not None and start > end:
        return f"range_end={end} is invalid: it must be greater than or equal to range_start={start}"
    return None


def main():
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            pool=dict(type="str", default="postgres"),
            range_start=dict(type="int"),
            range_end=dict(type="int"),
            state=dict(type="str", default="present", choices=["present", "absent"]),
            lease_dir=dict(type="path", default="/var/lib/shadowdb/ports"),
            check_free=dict(type="bool", default=True),
        ),
        required_if=[("state", "present", ("range_start", "range_end"))],
        supports_check_mode=True,
    )
    p = module.params
    error = validate_params(p)
    if error:
        module.fail_json(msg=error)

    name, pool, state, lease_dir = p["name"], p["pool"], p["state"], p["lease_dir"]
    lease_file = os.path.join(lease_dir, f"{pool}.json")
    lock_file = os.path.join(lease_dir, f"{pool}.lock")
    result = dict(changed=False, name=name, pool=pool, port=None, leases_count=0)

    if not module.check_mode:
        try:
            ensure_dir(lease_dir, DIR_MODE)
        except OSError as e:
            module.fail_json(msg=f"lease_dir={lease_dir!r}: cannot create directory: {e.strerror}", **result)

    try:
        with pool_lock(lock_file, create=not module.check_mode):
            try:
                data = load_lease_file(lease_file)
            except LeaseFileError as e:
                module.fail_json(
                    msg=f"lease file {lease_file} (lease_dir={lease_dir!r}, pool={pool!r}) is unusable: {e}; "
                    "fix or remove it",
                    **result,
                )
            leases = data["leases"]
            before = leases.get(name)

            if state == "present":
                start, end = p["range_start"], p["range_end"]
                if before is not None:
                    after = before
                    if not start <= before <= end:
                        module.warn(
                            f"{name!r} keeps its lease of port {before} in pool {pool!r}, which is outside "
                            f"range_start-range_end {start}-{end}; leases are stable, release it with "
                            "state=absent to get a new port"
                        )
                else:
                    listening = set()
                    if p["check_free"]:
                        listening, read = read_listening_ports()
                        if not read:
                            module.fail_json(
                                msg="check_free=true but neither /proc/net/tcp nor /proc/net/tcp6 is "
                                "readable; set check_free=false to lease without checking listening sockets",
                                **result,
                            )
                    leased = set(leases.values())
                    after = choose_port(start, end, leased, listening, random.SystemRandom())
                    if after is None:
                        result["leases_count"] = len(leases)
                        module.fail_json(msg=exhausted_message(start, end, pool, leased, listening), **result)
                    leases[name] = after
                result["port"] = after
            else:
                after = None
                leases.pop(name, None)
                result["port"] = before

            result["changed"] = before != after
            result["leases_count"] = len(leases)
            result["diff"] = dict(before=diff_line(name, before), after=diff_line(name, after))

            if result["changed"] and not module.check_mode:
                write_atomic(lease_file, dump_lease_data(data), FILE_MODE)
    except OSError as e:
        module.fail_json(
            msg=f"lease_dir={lease_dir!r}: cannot update leases of pool {pool!r}: "
            f"{e.strerror or e} ({e.filename or lease_dir})",
            **result,
        )

    module.exit_json(**result)


if __name__ == "__main__":
    main()

#!/usr/bin/python
# Copyright: ShadowDB contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Ansible module: record converged tenants; tell in one call per host which ones are still converged."""

import fcntl
import os
import re
import socket
import struct

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.shadowdb_common import (
    PROC_NET_TCP,
    parse_listening_ports,  # noqa: F401 (part of this module's tested helpers)
    read_listening_ports,
    read_text,
)
from ansible.module_utils.shadowdb_lease import PORT_MIN as LEASE_PORT_MIN
from ansible.module_utils.shadowdb_lease import LeaseFileError, ports_short
from ansible.module_utils.shadowdb_record import (
    IDENTIFIER_RE,
    PORT_MAX,
    RecordError,
    TenantFailure,
    build_record,  # noqa: F401 (tested through this module)
    dump_record,  # noqa: F401 (tested through this module)
    invalid_fingerprint,
    load_record,
    parse_record,
    read_record_text,
    record_converged,
    record_error,
    record_path,
    record_tenant,
    sha256_file,
    store_record,
)

DOCUMENTATION = r"""
---
module: shadowdb_tenant_check
short_description: Fast path for no-op runs, one call per host tells which tenants are still converged
description:
  - After a tenant has fully converged, O(state=record) stores a record of it in
    C(<state_dir>/<name>.json) - the fingerprint of its desired state (computed on the controller, for
    example with the C(shadowdb_fingerprint) filter), the SHA-256 of the files that make up its
    configuration, the systemd units that must be active, its mount point and its listening port.
  - O(state=check) then checks every tenant of O(tenants) at once, so a playbook only has to converge the
    tenants that are not provably converged. A tenant is converged if and only if all of the following hold.
    They are checked in this order, and the first that fails is the reason reported in RV(stale).
  - '1. Its record exists and is usable (reasons C(no record), C(record <path> unusable: <why>)).'
  - 2. The recorded fingerprint equals the given one (C(fingerprint changed)).
  - 3. The recorded mount point, if any, is a mount point (C(/mnt/db/acme not mounted)).
  - '4. Every recorded file exists with the recorded SHA-256 (C(/mnt/db/acme/data/postgresql.conf changed),
    C(<path> missing), C(cannot read <path>: Permission denied)).'
  - '5. Every recorded unit is active (C(shadowdb-postgres@acme.service is failed),
    C(cannot check units: systemctl not found)).'
  - 6. The recorded port, if any, has a listening TCP socket (C(port 21234 not listening)).
  - The check is built for speed, with no per-tenant process - mount points are read once from
    C(/proc/self/mountinfo), listening sockets once from C(/proc/net/tcp) and C(/proc/net/tcp6), and the
    units of all tenants are checked with a single C(systemctl is-active) call.
  - With O(default_address), O(state=check) also returns the host's IPv4 address on its default route as
    the fact C(default_ipv4) (RV(ansible_facts)), the address the host's tenants are registered with, so
    that a run which finds the host converged needs no fact gathering. It is the primary address of the
    interface of the default route with the lowest metric in C(/proc/net/route); no fact when there is no
    default route.
  - With O(ports), O(state=check) also tells which tenants would get no port of their pool (RV(ports_short)),
    read from the pool's lease file as C(shadowdb_port) keeps it, so that a full port range is refused
    before anything of a tenant is made, in the same call. Nothing is leased.
  - O(state=absent) deletes the record of O(name), for example when the tenant is removed.
  - 'List forms, to converge a batch of tenants of a host in one call each: O(state=absent) with O(tenants)
    deletes the records of all of them (RV(records)), O(state=record) with O(records) writes all of them
    (RV(results)). A tenant''s failure (a file that cannot be hashed, an invalid option of its record, a
    record that cannot be written) is its own: it is listed in RV(failed_tenants), the other tenants go on
    and the task does not fail. A wrong call (an invalid or repeated name, a single-form option given
    beside the list) fails the task.'
  - 'Records are written atomically (temporary file and rename) with mode C(0600) as JSON with sorted keys,
    V({"files": {"<path>": "<sha256>"}, "fingerprint": "...", "mountpoint": "<path or empty>",
    "port": <int or null>, "units": ["<unit>", ...]}).'
options:
  state:
    description:
      - V(check) checks the tenants of O(tenants) and returns RV(converged) and RV(stale); never changes
        anything.
      - V(record) writes the record of the tenant O(name), or of each tenant of O(records).
      - V(absent) deletes the record of the tenant O(name), or of each tenant of O(tenants), if any.
    type: str
    required: true
    choices: [check, record, absent]
  default_address:
    description:
      - With O(state=check), return the host's default IPv4 address as the fact C(default_ipv4).
      - Leave it off in a task delegated to another host; the fact would be given to the task's own host.
    type: bool
    default: false
  ports:
    description:
      - With O(state=check), the tenants that need a port of a pool (see C(shadowdb_port)); each that has no
        lease yet and would find no free port of the range is listed in RV(ports_short).
    type: dict
    suboptions:
      names:
        description: The tenants, in the order their leases would be taken.
        type: list
        elements: str
        required: true
      pool:
        description: The lease pool.
        type: str
        default: postgres
      range_start:
        description: First port of the pool's range.
        type: int
        required: true
      range_end:
        description: Last port of the pool's range.
        type: int
        required: true
      lease_dir:
        description: Directory of the pools' lease files.
        type: path
        default: /var/lib/shadowdb/ports
  state_dir:
    description:
      - Directory holding the records, one C(<name>.json) per tenant.
      - Created with mode C(0700) when a record is first written.
    type: path
    default: /var/lib/shadowdb/converged
  tenants:
    description:
      - With O(state=check), the tenants to check. Required with O(state=check), may be empty.
      - With O(state=absent), the tenants whose records are deleted (the list form; mutually exclusive
        with O(name)).
      - Tenant names must be unique.
    type: list
    elements: dict
    suboptions:
      name:
        description: Tenant name; must match C(^[a-z0-9][a-z0-9_-]*$).
        type: str
        required: true
      fingerprint:
        description:
          - Fingerprint of the tenant's desired state now, compared with the recorded one.
          - Required with O(state=check); not used with O(state=absent).
        type: str
  records:
    description:
      - With O(state=record), the tenants to record, each with the options of the single form (the list
        form; mutually exclusive with O(name)). May be empty.
      - Tenant names must be unique.
    type: list
    elements: dict
    suboptions:
      name:
        description: Tenant name; must match C(^[a-z0-9][a-z0-9_-]*$).
        type: str
        required: true
      fingerprint:
        description: As O(fingerprint).
        type: str
        required: true
      files:
        description: As O(files).
        type: list
        elements: path
      units:
        description: As O(units).
        type: list
        elements: str
      mountpoint:
        description: As O(mountpoint).
        type: path
      port:
        description: As O(port).
        type: int
      previous:
        description:
          - The tenant's record before its converge, as a O(state=absent) call returned it in RV(records).
          - When given (a dict, possibly empty), the tenant's RV(results) C(changed) says whether the new
            record differs from it in anything but C(fingerprint) (a new fingerprint alone, the same files
            after an upgrade of ShadowDB, is bookkeeping, not a change of the tenant).
          - When V(null) or omitted, C(changed) says whether the record file changes, as in the single form
            (after an O(state=absent) call the file is gone, so it is V(true)).
        type: dict
  name:
    description:
      - With O(state=record) or O(state=absent), the tenant whose record is written or deleted (the single
        form; see O(records) and O(tenants) for the list forms).
      - Must match C(^[a-z0-9][a-z0-9_-]*$).
    type: str
  fingerprint:
    description: With O(state=record), the fingerprint of the desired state the tenant has converged to.
    type: str
  files:
    description:
      - With O(state=record), absolute paths of files whose SHA-256 is recorded, typically the rendered
        configuration files of the tenant. Every file must exist and be readable.
    type: list
    elements: path
  units:
    description:
      - With O(state=record), systemd units that must be active for the tenant to be converged, for
        example V(shadowdb-postgres@acme.service). Stored sorted and without duplicates.
    type: list
    elements: str
  mountpoint:
    description:
      - With O(state=record), absolute path that must be a mount point, or empty (or V(null)) for none.
    type: path
  port:
    description:
      - With O(state=record), TCP port that must have a listening socket (any address, IPv4 or IPv6), or
        V(null) for none.
    type: int
notes:
  - Mount points and sockets are read from C(/proc) of the namespaces the module runs in (Linux only).
  - With O(state=check) a unit counts as active only if C(systemctl is-active) prints V(active) for it.
    If C(systemctl) cannot be found or its output cannot be parsed, every tenant with recorded units is
    reported stale with the reason; the module does not fail.
  - An unusable record (unreadable, invalid JSON, wrong structure) makes its tenant stale, and is replaced
    by the next O(state=record).
  - With O(state=record) the module does not verify that units are active, the mount point is mounted or
    the port is listening; record a tenant only right after it has fully converged.
attributes:
  check_mode:
    support: full
    description:
      - O(state=check) runs normally in check mode (it is read-only).
      - O(state=record) and O(state=absent) report what would change, and write or delete nothing.
      - With O(state=record), a file of O(files) that cannot be read (for example not created yet, because
        its task was only simulated) is recorded with a V(null) digest and a warning, instead of failing.
  diff_mode:
    support: full
    description: With O(state=record) and O(state=absent), returns the record text before and after.
author:
  - ShadowDB contributors
"""

EXAMPLES = r"""
- name: Fingerprint of every present tenant of this host (the same value is used to check and to record)
  ansible.builtin.set_fact:
    tenant_fingerprints: >-
      {{ dict(tenant_specs | map(attribute='name')
              | zip(tenant_specs | map('shadowdb_fingerprint', code_digest))) }}
  vars:
    tenant_specs: "{{ shadowdb_tenant_specs | selectattr('state', '==', 'present') | list }}"

- name: Which tenants of this host are still converged
  shadowdb_tenant_check:
    state: check
    tenants: "{{ tenant_fingerprints | dict2items(key_name='name', value_name='fingerprint') }}"
  register: tenant_check

- name: The same with literal fingerprints
  shadowdb_tenant_check:
    state: check
    tenants:
      - name: acme
        fingerprint: 3f0c...e1
      - name: globex
        fingerprint: 9a41...07

- name: Record tenant acme after it has converged
  shadowdb_tenant_check:
    state: record
    name: acme
    fingerprint: 3f0c...e1
    files:
      - /mnt/db/acme/data/postgresql.conf
      - /mnt/db/acme/data/pg_hba.conf
      - /etc/systemd/system/shadowdb-postgres@acme.service.d/50-tenant.conf
    units:
      - shadowdb-volume@acme.service
      - shadowdb-postgres@acme.service
    mountpoint: /mnt/db/acme
    port: 21234

- name: Forget tenant oldcorp
  shadowdb_tenant_check:
    state: absent
    name: oldcorp

- name: Forget the records of a batch of tenants before their converge
  shadowdb_tenant_check:
    state: absent
    tenants: [{name: acme}, {name: globex}]
  register: forgotten

- name: Record the batch once converged; changed only for tenants whose record changed beyond the fingerprint
  shadowdb_tenant_check:
    state: record
    records:
      - name: acme
        fingerprint: 3f0c...e1
        files: [/mnt/db/acme/data/postgresql.conf]
        units: [shadowdb-postgres@acme.service]
        mountpoint: /mnt/db/acme
        port: 21234
        previous: "{{ forgotten.records['acme'] }}"
  register: recorded
"""

RETURN = r"""
converged:
  description: With O(state=check), names of the tenants that are provably converged, sorted.
  returned: state is check
  type: list
  elements: str
  sample: ["acme", "globex"]
stale:
  description:
    - With O(state=check), every other tenant of O(tenants), mapped to the first reason found.
  returned: state is check
  type: dict
  sample: {"initech": "fingerprint changed", "umbrella": "shadowdb-postgres@umbrella.service is failed"}
name:
  description: The tenant whose record was written or deleted.
  returned: state is record or absent, with O(name)
  type: str
  sample: acme
path:
  description: Path of the record file of O(name).
  returned: state is record or absent, with O(name)
  type: str
  sample: /var/lib/shadowdb/converged/acme.json
record:
  description:
    - With O(state=record), the record as written (or as it would be written, in check mode).
    - With O(state=absent), the record that was deleted, V(null) if there was none or it was unusable.
  returned: state is record or absent, with O(name)
  type: dict
  sample:
    fingerprint: 3f0c...e1
    files:
      /mnt/db/acme/data/postgresql.conf: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
    units: ["shadowdb-postgres@acme.service"]
    mountpoint: /mnt/db/acme
    port: 21234
records:
  description:
    - With O(state=absent) and O(tenants), each tenant mapped to its record that was deleted (as RV(record)),
      V(null) if there was none, it was unusable, or the tenant is in RV(failed_tenants).
  returned: state is absent, with O(tenants)
  type: dict
  sample: {"acme": {"fingerprint": "3f0c...e1", "files": {}, "units": [], "mountpoint": "", "port": 21234},
           "globex": null}
results:
  description:
    - With O(state=record) and O(records), each tenant mapped to C(record) (as RV(record); V(null) when the
      tenant failed), C(path), C(changed) (see O(records[].previous)), C(failed) and, when it failed, C(msg).
  returned: state is record, with O(records)
  type: dict
  sample: {"acme": {"record": {"fingerprint": "3f0c...e1", "files": {}, "units": [], "mountpoint": "",
                               "port": 21234},
                    "path": /var/lib/shadowdb/converged/acme.json, "changed": false, "failed": false}}
failed_tenants:
  description: In the list forms, each tenant that failed mapped to why (the task itself does not fail).
  returned: state is record with O(records), or absent with O(tenants)
  type: dict
  sample: {"globex": "files: cannot hash /mnt/db/globex/data/pg_hba.conf: No such file or directory; ..."}
ports_short:
  description: With O(ports), each tenant that would get no port mapped to why.
  returned: state is check with O(ports)
  type: dict
  sample: {"globex": "port range 20000-20001 of pool 'postgres' is exhausted: 2 ports leased, 0 free; ..."}
ansible_facts:
  description:
    - With O(state=check), C(default_ipv4) (C(address), C(interface), C(gateway)) when the host has an IPv4
      default route, as C(ansible.builtin.setup) names it.
  returned: state is check with O(default_address), when the host has an IPv4 default route
  type: dict
  sample: {"default_ipv4": {"address": "10.89.0.2", "interface": "eth0", "gateway": "10.89.0.1"}}
diff:
  description:
    - With O(state=record) and O(state=absent), the record text before and after (empty if none).
    - In the list forms, a list of them, one per record file that changed.
  returned: state is record or absent
  type: raw
"""

PROC_MOUNTINFO = "/proc/self/mountinfo"
PROC_NET_ROUTE = "/proc/net/route"
RTF_UP = 0x1
SIOCGIFADDR = 0x8915
RECORD_ARGS = ("name", "fingerprint", "files", "units", "mountpoint", "port")


# --- validation ---


def _invalid_name(arg, value):
    if not isinstance(value, str) or not IDENTIFIER_RE.match(value):
        return f"{arg}={value!r} is invalid: it must match {IDENTIFIER_RE.pattern}"
    return None


def _invalid_names(option, items):
    """The error of the first invalid or repeated name of a list of tenants, or None."""
    seen = set()
    for i, item in enumerate(items):
        error = _invalid_name(f"{option}[{i}].name", item["name"])
        if error:
            return error
        if item["name"] in seen:
            return f"{option}[{i}].name={item['name']!r} is invalid: the name is listed twice"
        seen.add(item["name"])
    return None


def validate_params(params):
    """Return an error message naming the offending argument, or None if the arguments are valid.

    These are the errors of the call. In the list forms (O(tenants) with state=absent, O(records)),
    the error of one record's options is that tenant's own (record_error), not the call's.
    """
    state = params["state"]
    tenants, records = params.get("tenants"), params.get("records")
    if records is not None and state != "record":
        return f"records is only used with state=record, not with state={state}"
    if state == "check":
        if any(tenant.get("fingerprint") is None for tenant in tenants or []):
            # The message Ansible gave when fingerprint was a required suboption.
            return "missing required arguments: fingerprint found in tenants"
        given = [arg for arg in RECORD_ARGS if params.get(arg) not in (None, "", [])]
        if given:
            return f"{given[0]} is only used with state=record or state=absent; with state=check use tenants"
        seen = set()
        for i, tenant in enumerate(tenants or []):
            error = _invalid_name(f"tenants[{i}].name", tenant["name"]) or invalid_fingerprint(
                f"tenants[{i}].fingerprint", tenant["fingerprint"]
            )
            if error:
                return error
            if tenant["name"] in seen:
                return f"tenants[{i}].name={tenant['name']!r} is invalid: the name is listed twice"
            seen.add(tenant["name"])
        return None

    if tenants is not None and state == "record":
        return "tenants is only used with state=check or state=absent; with state=record use records"
    items = tenants if state == "absent" else records
    if items is not None:
        option = "tenants" if state == "absent" else "records"
        given = [arg for arg in RECORD_ARGS if params.get(arg) not in (None, "", [])]
        if given:
            return f"{given[0]}: give the options of each tenant inside {option}, not beside it"
        return _invalid_names(option, items)
    error = _invalid_name("name", params["name"])
    if error or state == "absent":
        return error
    if params.get("fingerprint") is None:
        # The message Ansible gave when fingerprint was required with state=record.
        return "state is record but all of the following are missing: fingerprint"
    return record_error(params)


# --- host state parsers (pure) ---


def parse_is_active(output, units):
    """Map each unit to its state from the output of `systemctl is-active <units...>` (one line per unit).

    Raises ValueError if the output does not have exactly one non-empty line per unit.
    """
    lines = [line.strip() for line in output.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    if len(lines) != len(units) or not all(lines):
        raise ValueError(f"systemctl is-active printed {len(lines)} lines for {len(units)} units")
    return {unit: lines[i] for i, unit in enumerate(units)}


_MOUNTINFO_ESCAPE = re.compile(r"\\([0-7]{3})")


def parse_mountpoints(text):
    """Return the set of mount points (field 5, octal escapes decoded) of /proc/self/mountinfo text."""
    points = set()
    for line in text.splitlines():
        fields = line.split(" ")
        if len(fields) >= 5:
            points.add(_MOUNTINFO_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), fields[4]))
    return points


class HostProbe:
    """Reads host state lazily, each source at most once.

    Every method returns (value, error message or None). unit_runner(units) returns the same for the
    states of units and is called at most once per probe.
    """

    def __init__(self, unit_runner, mountinfo_path=PROC_MOUNTINFO, tcp_paths=PROC_NET_TCP):
        self._unit_runner = unit_runner
        self._mountinfo_path = mountinfo_path
        self._tcp_paths = tcp_paths
        self._cache = {}

    def mountpoints(self):
        if "mounts" not in self._cache:
            try:
                with open(self._mountinfo_path, encoding="utf-8", errors="surrogateescape") as f:
                    self._cache["mounts"] = (parse_mountpoints(f.read()), None)
            except OSError as e:
                self._cache["mounts"] = (set(), f"cannot read {self._mountinfo_path}: {e.strerror}")
        return self._cache["mounts"]

    def listening_ports(self):
        if "ports" not in self._cache:
            ports, read = read_listening_ports(self._tcp_paths)
            error = None if read else f"none of {', '.join(self._tcp_paths)} is readable"
            self._cache["ports"] = (ports, error)
        return self._cache["ports"]

    def unit_states(self, units):
        if "units" not in self._cache:
            self._cache["units"] = self._unit_runner(units) if units else ({}, None)
        return self._cache["units"]


def file_reason(files):
    """Return the reason the first of the recorded files (path -> sha256) differs, or None."""
    for path in sorted(files):
        try:
            digest = sha256_file(path)
        except FileNotFoundError:
            return f"{path} missing"
        except OSError as e:
            return f"cannot read {path}: {e.strerror}"
        if digest != files[path]:
            return f"{path} changed"
    return None


def check_tenants(tenants, state_dir, probe):
    """Return (sorted converged names, {stale name: first reason}) for tenants [{name, fingerprint}]."""
    stale = {}
    pending = []
    for tenant in tenants:
        name = tenant["name"]
        path = record_path(state_dir, name)
        try:
            record = load_record(path)
        except RecordError as e:
            stale[name] = f"record {path} unusable: {e}"
            continue
        if record is None:
            stale[name] = "no record"
            continue
        if record["fingerprint"] != tenant["fingerprint"]:
            stale[name] = "fingerprint changed"
            continue
        mountpoint = record["mountpoint"]
        if mountpoint:
            mounts, error = probe.mountpoints()
            if error:
                stale[name] = f"cannot check mountpoint: {error}"
                continue
            if os.path.normpath(mountpoint) not in mounts:
                stale[name] = f"{mountpoint} not mounted"
                continue
        reason = file_reason(record["files"])
        if reason:
            stale[name] = reason
            continue
        pending.append((name, record))

    # One systemctl call for the units of every tenant still in the running.
    all_units = list(dict.fromkeys(u for _name, record in pending for u in record["units"]))
    states, units_error = probe.unit_states(all_units)
    converged = []
    for name, record in pending:
        reason = None
        if record["units"] and units_error:
            reason = f"cannot check units: {units_error}"
        for unit in record["units"]:
            if reason:
                break
            if states.get(unit) != "active":
                reason = f"{unit} is {states.get(unit, 'unknown')}"
        if not reason and record["port"] is not None:
            ports, error = probe.listening_ports()
            if error:
                reason = f"cannot check port: {error}"
            elif record["port"] not in ports:
                reason = f"port {record['port']} not listening"
        if reason:
            stale[name] = reason
        else:
            converged.append(name)
    return sorted(converged), dict(sorted(stale.items()))


# --- writing ---


# --- the host's default address ---


def parse_default_route(text):
    """(interface, gateway) of the IPv4 default route with the lowest metric in /proc/net/route's
    text, or None. Addresses there are hexadecimal in the host's byte order."""
    best = None
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 8:
            continue
        interface, destination, gateway, flags = fields[:4]
        metric, mask = int(fields[6]), fields[7]
        if destination != "00000000" or mask != "00000000" or not int(flags, 16) & RTF_UP:
            continue
        if best is None or metric < best[0]:
            best = (metric, interface, socket.inet_ntoa(struct.pack("=I", int(gateway, 16))))
    return best[1:] if best else None


def interface_ipv4(interface):
    """The primary IPv4 address of a network interface (SIOCGIFADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("256s", interface.encode()[:15])
        return socket.inet_ntoa(fcntl.ioctl(sock.fileno(), SIOCGIFADDR, request)[20:24])


def default_ipv4(route_path=PROC_NET_ROUTE):
    """The default_ipv4 fact (address, interface, gateway), or {} without a default route."""
    try:
        found = parse_default_route(read_text(route_path) or "")
        if not found:
            return {}
        interface, gateway = found
        return {"address": interface_ipv4(interface), "interface": interface, "gateway": gateway}
    except OSError:
        return {}


def ports_short_of(ports, module):
    """{tenant: why it would get no port} of the O(ports) request; fails the call on an unusable
    lease file or unreadable sockets (shadowdb_port would fail on them too)."""
    error = ports_error(ports)
    if error:
        module.fail_json(msg=error)
    try:
        return ports_short(
            ports["lease_dir"],
            ports["pool"],
            ports["names"],
            ports["range_start"],
            ports["range_end"],
            read_listening_ports,
        )
    except (LeaseFileError, OSError) as e:
        where = f"pool {ports['pool']!r} in {ports['lease_dir']}"
        module.fail_json(msg=f"ports: cannot check the leases of {where}: {e}")


def ports_error(ports):
    """The error of the O(ports) request (naming the argument), or None."""
    for i, name in enumerate(ports["names"]):
        if not IDENTIFIER_RE.match(name):
            return f"ports.names[{i}]={name!r} is invalid: it must match {IDENTIFIER_RE.pattern}"
    if not IDENTIFIER_RE.match(ports["pool"]):
        return f"ports.pool={ports['pool']!r} is invalid: it must match {IDENTIFIER_RE.pattern}"
    start, end = ports["range_start"], ports["range_end"]
    for arg, value in (("range_start", start), ("range_end", end)):
        if not LEASE_PORT_MIN <= value <= PORT_MAX:
            return f"ports.{arg}={value} is invalid: it must be between {LEASE_PORT_MIN} and {PORT_MAX}"
    if start > end:
        return f"ports.range_end={end} is invalid: it must not be below ports.range_start={start}"
    return None


def systemctl_runner(module):
    """Return unit_runner(units) -> ({unit: state}, error) running one `systemctl is-active` for all units."""

    def run(units):
        systemctl = module.get_bin_path("systemctl")
        if not systemctl:
            return {}, "systemctl not found"
        rc, out, err = module.run_command([systemctl, "is-active", *units], environ_update={"LC_ALL": "C"})
        try:
            return parse_is_active(out, units), None
        except ValueError as e:
            detail = (err.strip().splitlines() or [""])[0]
            return {}, f"{e} (rc={rc}{', ' + detail if detail else ''})"

    return run


def forget_tenant(state_dir, name, check_mode):
    """Delete the record of tenant name; return the single form's result (TenantFailure on error)."""
    path = record_path(state_dir, name)
    result = dict(changed=False, name=name, path=path, record=None)
    before = read_record_text(state_dir, name, path, result)
    if before is not None:
        try:
            result["record"] = parse_record(before)
        except RecordError:
            pass
    result["changed"] = before is not None
    result["diff"] = dict(before=before or "", after="", before_header=path, after_header=path)
    store_record(state_dir, name, path, None, result, check_mode)
    return result


def forget_many(state_dir, tenants, check_mode):
    """The result of state=absent with tenants: records, failed_tenants, changed, diff."""
    records, failed, diffs = {}, {}, []
    for tenant in tenants:
        name = tenant["name"]
        try:
            result = forget_tenant(state_dir, name, check_mode)
        except TenantFailure as e:
            failed[name] = str(e)
            records[name] = None
            continue
        records[name] = result["record"]
        if result["changed"]:
            diffs.append(result["diff"])
    return dict(changed=bool(diffs), records=records, failed_tenants=failed, diff=diffs)


def record_many(state_dir, items, check_mode, warn):
    """The result of state=record with records: results, failed_tenants, changed, diff."""
    results, failed, diffs = {}, {}, []
    for i, item in enumerate(items):
        name = item["name"]
        try:
            result, changed = record_converged(
                state_dir,
                item,
                item.get("previous"),
                check_mode,
                lambda msg, n=name: warn(f"tenant {n}: {msg}"),
                f"records[{i}].",
            )
        except TenantFailure as e:
            failed[name] = str(e)
            results[name] = dict(
                changed=False, failed=True, msg=str(e), record=None, path=record_path(state_dir, name)
            )
            continue
        if result["changed"]:
            diffs.append(result["diff"])
        results[name] = dict(changed=changed, failed=False, record=result["record"], path=result["path"])
    return dict(
        changed=any(r["changed"] for r in results.values()),
        results=results,
        failed_tenants=failed,
        diff=diffs,
    )


RECORD_OPTIONS = dict(
    name=dict(type="str", required=True),
    fingerprint=dict(type="str", required=True, no_log=False),
    files=dict(type="list", elements="path"),
    units=dict(type="list", elements="str"),
    mountpoint=dict(type="path"),
    port=dict(type="int"),
    previous=dict(type="dict"),
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", required=True, choices=["check", "record", "absent"]),
            state_dir=dict(type="path", default="/var/lib/shadowdb/converged"),
            default_address=dict(type="bool", default=False),
            ports=dict(
                type="dict",
                options=dict(
                    names=dict(type="list", elements="str", required=True),
                    pool=dict(type="str", default="postgres"),
                    range_start=dict(type="int", required=True),
                    range_end=dict(type="int", required=True),
                    lease_dir=dict(type="path", default="/var/lib/shadowdb/ports"),
                ),
            ),
            tenants=dict(
                type="list",
                elements="dict",
                options=dict(
                    name=dict(type="str", required=True),
                    # Required with state=check (validate_params), not needed with state=absent.
                    fingerprint=dict(type="str", no_log=False),
                ),
            ),
            records=dict(type="list", elements="dict", options=RECORD_OPTIONS),
            name=dict(type="str"),
            fingerprint=dict(type="str", no_log=False),
            files=dict(type="list", elements="path"),
            units=dict(type="list", elements="str"),
            mountpoint=dict(type="path"),
            port=dict(type="int"),
        ),
        required_if=[
            ("state", "check", ("tenants",)),
            ("state", "record", ("name", "records"), True),
            ("state", "absent", ("name", "tenants"), True),
        ],
        supports_check_mode=True,
    )
    p = module.params
    error = validate_params(p)
    if error:
        module.fail_json(msg=error)
    state, state_dir = p["state"], p["state_dir"]

    if state == "check":
        probe = HostProbe(systemctl_runner(module))
        converged, stale = check_tenants(p["tenants"], state_dir, probe)
        address = default_ipv4() if p["default_address"] else {}
        facts = {"ansible_facts": {"default_ipv4": address}} if address else {}
        if p["ports"] is not None:
            facts["ports_short"] = ports_short_of(p["ports"], module)
        module.exit_json(changed=False, converged=converged, stale=stale, **facts)

    if p["name"] is None:
        if state == "absent":
            module.exit_json(**forget_many(state_dir, p["tenants"], module.check_mode))
        module.exit_json(**record_many(state_dir, p["records"], module.check_mode, module.warn))

    try:
        if state == "absent":
            result = forget_tenant(state_dir, p["name"], module.check_mode)
        else:
            result = record_tenant(state_dir, p, module.check_mode, module.warn)
    except TenantFailure as e:
        module.fail_json(msg=str(e), **e.partial)
    module.exit_json(**result)


if __name__ == "__main__":
    main()

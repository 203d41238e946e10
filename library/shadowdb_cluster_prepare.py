#!/usr/bin/python
# Copyright: ShadowDB contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Ansible module: everything a tenant's cluster needs before its certificate is signed, in one call."""

import grp
import os
import pwd
import random
import secrets
import string

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.shadowdb_batch import batch_argument_spec, run_batch, tenant_params
from ansible.module_utils.shadowdb_common import UnsafePathError, read_listening_ports
from ansible.module_utils.shadowdb_firewall import EGRESS_FILE, converge_firewall, egress_file_entry
from ansible.module_utils.shadowdb_fs import converge_directory, converge_file, read_small, wanted_attributes
from ansible.module_utils.shadowdb_identity import converge_identity_view
from ansible.module_utils.shadowdb_lease import LeaseFileError, lease_port
from ansible.module_utils.shadowdb_tls import new_key, signing_request

DOCUMENTATION = r"""
---
module: shadowdb_cluster_prepare
short_description: Prepare a tenant's cluster up to its certificate signing request, in one call
description:
  - The first half of a tenant cluster's per-tenant work on its db host, in one round trip (the
    certificate is then signed on the controller, and the second half renders, starts and checks
    the cluster).
  - Checks that change nothing come first, so that bad input changes nothing - the extensions
    asked for are installed for O(pg_version), an existing cluster is of the same major version
    (its C(PG_VERSION) read without following a link the tenant may have planted).
  - Then, each only when needed, the tenant's system group and user, its directories (walked from
    C(/) one directory at a time; a planted link is refused, never followed), the tenant's view of
    C(/etc/passwd) and C(/etc/group) without the other tenants (C(<secrets_dir>/passwd) and
    C(<secrets_dir>/group), bind-mounted in its sandbox), the host's tenant egress firewall with
    the tenant's user in it (its processes open no connection; module_utils/shadowdb_firewall.py,
    loaded with C(nft) once per call and after each new user), a stable random port
    leased from the host's C(postgres) pool, the generated passwords (kept root-only in
    C(<secrets_dir>/passwords.json), never replaced), the server's private key (EC P-256, made on
    the host, never leaving it) and a signing request for O(server_name).
  - Returns the passwords; the task must be C(no_log) (its messages never hold a secret, so a
    following task can show RV(msg)).
  - "Batch form: O(tenants) lists the per-tenant options of many tenants of the host (see
    O(tenants)); the other options are shared. Each tenant is prepared in turn, and a tenant's
    failure is its own (RV(results), RV(failed_tenants)). A port leased for a tenant is never given
    to a later tenant of the same call, in check mode too."
  - The options marked required are required in the single form and in each item of O(tenants).
options:
  name:
    description: Tenant name.
    type: str
    required: true
  os_user:
    description: The tenant's system user and group.
    type: str
    required: true
  home:
    description: The tenant's volume mount point (the user's home).
    type: path
    required: true
  directories:
    description: Directories to make, in order (path, owner, group, mode as for shadowdb_files).
    type: list
    elements: dict
    required: true
  data_dir:
    description: The cluster's data directory.
    type: path
    required: true
  tls_dir:
    description: Directory of the server key, signing request and certificate (owned by O(os_user)).
    type: path
    required: true
  secrets_dir:
    description: Root-only directory of the tenant's generated passwords.
    type: path
    required: true
  pg_version:
    description: PostgreSQL major version of the cluster.
    type: int
    required: true
  extensions:
    description: Extensions the tenant asks for (their control files must be installed).
    type: list
    elements: str
    default: []
  server_name:
    description: The name the server's certificate carries (C(<tenant>.<domain>)).
    type: str
    required: true
  egress:
    description:
      - Where the tenant's processes may open connections (its backup repository's address and
        port, as C({addresses: [IPv4], ports: ["8432"]})), written root-only to
        C(<secrets_dir>/egress.json) for the host's tenant egress firewall. Empty - no connection
        at all (an allowances file left there is removed).
    type: list
    elements: dict
    default: []
  tenants:
    description:
      - The batch form - one item per tenant, each with the per-tenant options above (O(name),
        O(os_user), O(home), O(directories), O(data_dir), O(tls_dir), O(secrets_dir),
        O(pg_version), O(extensions), O(server_name), O(egress)), which are then not given at the top level.
      - A tenant listed twice is refused.
    type: list
    elements: dict
  port_range_start:
    description: First port new leases are drawn from.
    type: int
    required: true
  port_range_end:
    description: Last port (inclusive) new leases are drawn from.
    type: int
    required: true
  lease_dir:
    description: Directory of the host's port leases.
    type: path
    default: /var/lib/shadowdb/ports
  host:
    description: The host's inventory name (for messages).
    type: str
    default: this host
author:
  - ShadowDB contributors
"""

RETURN = r"""
port:
  description: The tenant's leased port.
  returned: success (single form)
  type: int
existing_version:
  description: Whether the data directory already holds a cluster (its PG_VERSION).
  returned: success (single form)
  type: bool
csr:
  description: PEM signing request for O(server_name) (only its public key is used by the signer).
  returned: success (single form)
  type: str
existing_certificate:
  description: The server certificate on the host (PEM), null when there is none yet.
  returned: success (single form)
  type: str
passwords:
  description: The generated passwords (postgres, owner, readonly). Secret.
  returned: success (single form)
  type: dict
actions:
  description: What was (or in check mode would be) done.
  returned: always (single form)
  type: list
  elements: str
results:
  description:
    - Batch form - per tenant, V(failed), V(msg) (when it failed), V(changed) and the single form's
      return values (RV(port), RV(existing_version), RV(csr), RV(existing_certificate),
      RV(passwords), RV(actions)); a failed tenant has V(failed), V(msg) and the RV(actions) done
      before the failure. Holds the passwords - the task must be C(no_log).
  returned: batch form
  type: dict
  sample: {acme: {failed: false, changed: true, port: 20417, existing_version: false, csr: "-----BEGIN...",
           existing_certificate: null, passwords: {postgres: "...", owner: "...", readonly: "..."},
           actions: [made the user pg-acme, leased port 20417]}}
failed_tenants:
  description: Batch form - the message of each tenant that failed (never a secret).
  returned: batch form
  type: dict
  sample: {globex: "tenant globex: directories: path 'data' is not absolute"}
"""

PASSWORD_ALPHABET = string.ascii_letters + string.digits
PASSWORD_ROLES = ("postgres", "owner", "readonly")


class PrepareError(Exception):
    """A refusal or a failed step; its text names the tenant and the problem, never a secret."""


class PrepareFailure(Exception):
    """A failed converge, with what was done before it (reported beside the message)."""

    def __init__(self, msg, **partial):
        super().__init__(msg)
        self.partial = partial


class TakenPorts:
    """The ports a new lease must not get, for all the tenants of one call (lease_port asks
    ``port in taken``): the ports given to earlier tenants of the call (in check mode no lease is
    written, so the lease file does not hold them), and the host's listening ports, read from
    /proc/net/tcp once per call and only when a tenant needs a new lease (a tenant holding one
    needs none). In check mode, a range exhausted by the call's own tenants counts their ports as
    listening without a lease."""

    def __init__(self, read=read_listening_ports):
        self._read = read
        self._listening = None
        self.given = set()

    def __contains__(self, port):
        if port in self.given:
            return True
        if self._listening is None:
            self._listening, _files = self._read()
        return port in self._listening


def missing_extensions(extensions, pg_version, exists=os.path.exists):
    """Extensions whose control file is not installed for pg_version."""
    return [e for e in extensions if not exists(f"/usr/share/postgresql/{pg_version}/extension/{e}.control")]


def version_refusal(name, found, wanted):
    """Why the cluster on disk cannot be served (None when there is none, or it is the same major)."""
    if found is None:
        return None
    found = found.strip()
    if found == str(wanted):
        return None
    shown = found if found.isdigit() and len(found) <= 3 else "(unreadable PG_VERSION)"
    return (
        f"tenant {name} holds a PostgreSQL {shown} cluster, the spec asks for {wanted}: "
        "major upgrades are not done in place"
    )


def read_if_there(path):
    """A small file's text read without following a planted link; None when it or its directory is missing."""
    try:
        return read_small(path)
    except FileNotFoundError:
        return None


def new_passwords(rng=secrets):
    """Fresh passwords of 32 letters and digits, one per role."""
    return {role: "".join(rng.choice(PASSWORD_ALPHABET) for _ in range(32)) for role in PASSWORD_ROLES}


def user_changes(entry, home, gid, comment, shell="/usr/sbin/nologin"):
    """usermod arguments that bring an existing passwd entry to the wanted one."""
    args = []
    if entry.pw_dir != home:
        args += ["--home", home]
    if entry.pw_gid != gid:
        args += ["--gid", str(gid)]
    if entry.pw_shell != shell:
        args += ["--shell", shell]
    if entry.pw_gecos != comment:
        args += ["--comment", comment]
    return args


class Firewall:
    """The host's tenant egress firewall (module_utils/shadowdb_firewall.py), converged once per
    call, and again after each new tenant user (its uid joins the ruleset before it starts)."""

    def __init__(self, module):
        self.module = module
        self.converged = False

    def converge(self, new_user):
        if self.converged and not new_user:
            return False
        self.converged = True
        return converge_firewall(self.module, self.module.check_mode)


class Prepare:
    def __init__(self, module, params, taken=None, firewall=None):
        self.module = module
        self.p = params
        self.check = module.check_mode
        self.actions = []
        self.taken = TakenPorts() if taken is None else taken
        self.firewall = Firewall(module) if firewall is None else firewall
        self.new_user = False

    def run(self, argv, data=None):
        rc, out, err = self.module.run_command(argv, data=data, binary_data=True)
        if rc != 0:
            raise PrepareError(f"tenant {self.p['name']}: {argv[0]} failed (rc {rc}): {(err or out).strip()}")
        return out

    def checks(self):
        p = self.p
        missing = missing_extensions(p["extensions"], p["pg_version"])
        if missing:
            raise PrepareError(
                f"tenant {p['name']}: extension(s) {', '.join(missing)} are not installed for PostgreSQL "
                f"{p['pg_version']} on {p['host']} (add them to host_extensions)"
            )
        try:
            found = read_if_there(os.path.join(p["data_dir"], "PG_VERSION"))
        except OSError as e:
            raise PrepareError(f"tenant {p['name']}: cannot read PG_VERSION safely: {e}") from None
        refusal = version_refusal(p["name"], found, p["pg_version"])
        if refusal:
            raise PrepareError(refusal)
        return found is not None

    def os_user(self):
        """Make or correct the tenant's group and user; True when the user exists afterwards."""
        user, home = self.p["os_user"], self.p["home"]
        comment = f"ShadowDB tenant {self.p['name']}"
        try:
            gid = grp.getgrnam(user).gr_gid
        except KeyError:
            self.actions.append(f"made the group {user}")
            if self.check:
                return False
            self.run(["groupadd", "--system", user])
            gid = grp.getgrnam(user).gr_gid
        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            self.actions.append(f"made the user {user}")
            self.new_user = True
            if not self.check:
                self.run(
                    ["useradd", "--system", "--gid", str(gid), "--home-dir", home, "--no-create-home"]
                    + ["--shell", "/usr/sbin/nologin", "--comment", comment, user]
                )
            return not self.check
        changes = user_changes(entry, home, gid, comment)
        if changes:
            self.actions.append(f"corrected the user {user} ({' '.join(changes[::2])})")
            if not self.check:
                self.run(["usermod", *changes, user])
        return True

    def directories(self):
        for entry in self.p["directories"]:
            if converge_directory(entry, wanted_attributes(entry), self.check):
                self.actions.append(f"made or corrected {entry['path']}")

    def port(self):
        p = self.p
        try:
            before, after = lease_port(
                p["lease_dir"],
                "postgres",
                p["name"],
                p["port_range_start"],
                p["port_range_end"],
                self.taken,
                random.SystemRandom(),
                self.check,
            )
        except LeaseFileError as e:
            raise PrepareError(
                f"tenant {p['name']}: the port lease file in {p['lease_dir']} is unusable: {e}"
            ) from None
        except ValueError as e:
            raise PrepareError(f"tenant {p['name']}: {e}") from None
        if before is None:
            self.actions.append(f"leased port {after}")
            self.taken.given.add(after)
        return after

    def passwords(self):
        path = os.path.join(self.p["secrets_dir"], "passwords.json")
        entry = dict(path=path, content="", owner="root", group="root", mode="0600", force=False)
        current = read_if_there(path)
        if current is None:
            entry["content"] = self.module.jsonify(new_passwords()) + "\n"
        changed, written, _before = converge_file(entry, wanted_attributes(entry), self.check)
        if written:
            self.actions.append(f"generated the passwords in {path}")
        elif changed:
            self.actions.append(f"corrected the mode of {path}")
        if self.check and current is None:
            return {}
        stored = self.module.from_json(read_small(path))
        if not all(isinstance(stored.get(role), str) and stored[role] for role in PASSWORD_ROLES):
            raise PrepareError(
                f"tenant {self.p['name']}: {path} lacks a password of {', '.join(PASSWORD_ROLES)}"
            )
        return {role: stored[role] for role in PASSWORD_ROLES}

    def tls(self, user_exists):
        """(signing request, existing certificate); the key is made on the host and never leaves it."""
        tls_dir, name = self.p["tls_dir"], self.p["server_name"]
        key_path = os.path.join(tls_dir, "server.key")
        key = read_if_there(key_path) if user_exists else None
        if not key:
            self.actions.append(f"made the server key {key_path}")
            if self.check:
                return None, None
            key = new_key(self.run)
            user = self.p["os_user"]
            entry = dict(path=key_path, content=key, owner=user, group=user, mode="0600", force=True)
            converge_file(entry, wanted_attributes(entry), False)
        csr = signing_request(
            self.run, key, name, [f"subjectAltName=DNS:{name}", "extendedKeyUsage=serverAuth"]
        )
        return csr, read_if_there(os.path.join(tls_dir, "server.crt"))

    def egress(self):
        """A standalone tenant opens no connection, but to the addresses of O(egress) (its backup
        repository); an allowance left by its Patroni past goes. Whether the allowances changed."""
        allowances = os.path.join(self.p["secrets_dir"], EGRESS_FILE)
        if self.p["egress"]:
            entry = egress_file_entry(self.p["secrets_dir"], self.p["egress"])
            if converge_file(entry, wanted_attributes(entry), self.check)[0]:
                self.actions.append(f"wrote {allowances}")
                return True
            return False
        if not os.path.lexists(allowances):
            return False
        self.actions.append(f"removed {allowances} (the tenant opens no connection)")
        if not self.check:
            os.unlink(allowances)
        return True

    def converge(self):
        existing_version = self.checks()
        user_exists = self.os_user()
        if user_exists:  # in check mode, a user still to be made owns nothing yet
            self.directories()
            if converge_identity_view(self.p["secrets_dir"], self.p["os_user"], self.check):
                self.actions.append("wrote the tenant's view of /etc/passwd and /etc/group")
        allowances_changed = self.egress()
        if self.firewall.converge(self.new_user or allowances_changed):
            self.actions.append("loaded the host's tenant egress firewall")
        port = self.port()
        passwords = self.passwords()
        csr, certificate = self.tls(user_exists)
        return dict(
            port=port,
            existing_version=existing_version,
            csr=csr,
            existing_certificate=certificate,
            passwords=passwords,
        )


PER_TENANT = dict(
    name=dict(type="str", required=True),
    os_user=dict(type="str", required=True),
    home=dict(type="path", required=True),
    directories=dict(type="list", elements="dict", required=True),
    data_dir=dict(type="path", required=True),
    tls_dir=dict(type="path", required=True),
    secrets_dir=dict(type="path", required=True),
    pg_version=dict(type="int", required=True),
    extensions=dict(type="list", elements="str", default=[]),
    server_name=dict(type="str", required=True),
    egress=dict(type="list", elements="dict", default=[]),
)

SHARED = dict(
    port_range_start=dict(type="int", required=True),
    port_range_end=dict(type="int", required=True),
    lease_dir=dict(type="path", default="/var/lib/shadowdb/ports"),
    host=dict(type="str", default="this host"),
)


def checked_directories(name, directories):
    """The directories with their default mode; PrepareError for a relative path."""
    checked = []
    for entry in directories:
        entry = dict(entry)
        entry.setdefault("mode", "0755")
        if not os.path.isabs(entry.get("path") or ""):
            raise PrepareError(f"tenant {name}: directories: path {entry.get('path')!r} is not absolute")
        checked.append(entry)
    return checked


def main():
    module = AnsibleModule(argument_spec=batch_argument_spec(PER_TENANT, SHARED), supports_check_mode=True)
    items = tenant_params(module, PER_TENANT)  # a wrong call is refused before the shared checks
    p = module.params
    if not 1024 <= p["port_range_start"] <= p["port_range_end"] <= 65535:
        tenant = f"tenant {p['name']}: " if p["tenants"] is None else ""
        module.fail_json(
            msg=f"{tenant}port range {p['port_range_start']}-{p['port_range_end']} is invalid "
            "(1024 <= port_range_start <= port_range_end <= 65535)"
        )
    taken = TakenPorts()  # one per call: a port leased for a tenant is not given to the next
    firewall = Firewall(module)

    def converge_one(params):
        params = dict(params, directories=checked_directories(params["name"], params["directories"]))
        prepare = Prepare(module, params, taken, firewall)
        try:
            result = prepare.converge()
        except (PrepareError, UnsafePathError, OSError, ValueError) as e:
            # str() of these names the step and the path, never a secret or a file's content.
            raise PrepareFailure(str(e), actions=prepare.actions) from e
        return dict(changed=bool(prepare.actions), actions=prepare.actions, **result)

    run_batch(module, PER_TENANT, converge_one, (PrepareError, PrepareFailure), items=items)


if __name__ == "__main__":
    main()

#!/usr/bin/python
# Copyright: ShadowDB contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Ansible module: etcd v3 authentication (users, roles, key permissions), converged idempotently."""

import base64
import json
import re
import ssl
import urllib.error
import urllib.request

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
---
module: shadowdb_etcd_auth
short_description: Converge etcd's users, roles and key permissions, and turn authentication on
description:
  - Talks to etcd's v3 JSON gateway (C(/v3/auth/...)) over HTTPS with Python's standard library.
  - Authenticates as C(root) with O(root_password) once authentication is on (the gateway ignores
    the common name of client certificates, so every gateway client authenticates with a
    password); before that, every request is allowed, and the module creates what is missing and
    then turns authentication on (O(enable)).
  - Each role in O(roles) gets exactly the listed permissions (missing ones granted, others
    revoked); each user in O(users) exactly the listed roles, and its password when one is given
    (checked by authenticating as that user; a user without a password authenticates only by the
    common name of its client certificate, on etcd's gRPC API).
  - Users and roles not listed are left alone; O(state=absent) deletes the listed ones.
options:
  endpoint:
    description: etcd client URL, for example C(https://127.0.0.1:2379).
    type: str
    required: true
  ca_cert:
    description: CA certificate file the server certificate must chain to.
    type: path
  client_cert:
    description: Client certificate file (TLS only; the identity is the password's).
    type: path
  client_key:
    description: Private key of O(client_cert).
    type: path
  root_password:
    description: Password of etcd's C(root) user (created with it when missing).
    type: str
    required: true
  roles:
    description: Roles to converge.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Role name.
        type: str
        required: true
      permissions:
        description:
          - Exactly the role's permissions, each C({key, type, prefix}); C(type) is C(read), C(write) or
            C(readwrite); C(prefix) (default true) covers every key starting with C(key).
        type: list
        elements: dict
        default: []
  users:
    description: Users to converge.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: User name (the common name of its client certificate).
        type: str
        required: true
      password:
        description: Its password; without one the user authenticates only by certificate.
        type: str
      roles:
        description: Exactly the user's roles.
        type: list
        elements: str
        default: []
  state:
    description: V(present) converges the listed users and roles; V(absent) deletes them.
    type: str
    choices: [present, absent]
    default: present
  enable:
    description: Turn authentication on (it needs user C(root) with role C(root), made here).
    type: bool
    default: true
  timeout:
    description: Seconds to wait for each request.
    type: float
    default: 10
attributes:
  check_mode:
    support: full
    description: Reads users and roles and reports what would change.
  diff_mode:
    support: none
author:
  - ShadowDB contributors
"""

EXAMPLES = r"""
- name: Tenant acme's Patroni may use its own prefix only
  shadowdb_etcd_auth:
    endpoint: https://127.0.0.1:2379
    ca_cert: /etc/etcd/pki/ca.crt
    client_cert: /etc/etcd/pki/member.crt
    client_key: /etc/etcd/pki/member.key
    root_password: "{{ root_password }}"
    roles:
      - name: patroni-acme
        permissions: [{key: /shadowdb/patroni/acme/, type: readwrite, prefix: true}]
    users:
      - {name: patroni-acme, password: "{{ acme_etcd_password }}", roles: [patroni-acme]}
"""

RETURN = r"""
actions:
  description: What was changed (or would be, in check mode), one line each, no secrets.
  returned: always
  type: list
  elements: str
enabled:
  description: Whether authentication is on after the run (or would be, in check mode).
  returned: always
  type: bool
"""

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$")
PERM_TYPES = {"read": "READ", "write": "WRITE", "readwrite": "READWRITE"}
NOT_ENABLED = "authentication is not enabled"
BAD_PASSWORD = "invalid user ID or password"  # noqa: S105 (etcd's error text)


class AuthError(Exception):
    """An etcd request failed; the message names the argument or the request."""


def b64(data):
    return base64.b64encode(data if isinstance(data, bytes) else data.encode("utf-8")).decode("ascii")


def prefix_range_end(prefix):
    """etcd's range_end of every key starting with prefix."""
    data = bytearray(prefix.encode("utf-8"))
    while data and data[-1] == 0xFF:
        data.pop()
    if not data:
        return b"\0"
    data[-1] += 1
    return bytes(data)


def wanted_permissions(role):
    """{(permType, key b64, range_end b64)} of a role of the arguments."""
    out = set()
    for i, perm in enumerate(role.get("permissions") or []):
        field = f"roles[{role['name']}].permissions[{i}]"
        key = perm.get("key")
        if not isinstance(key, str) or not key:
            raise AuthError(f"{field}.key is required (a key or key prefix)")
        kind = PERM_TYPES.get(str(perm.get("type", "")).lower())
        if kind is None:
            raise AuthError(f"{field}.type={perm.get('type')!r} is invalid: read, write or readwrite")
        end = b64(prefix_range_end(key)) if perm.get("prefix", True) else ""
        out.add((kind, b64(key), end))
    return out


def stored_permissions(answer):
    """The same set from a /v3/auth/role/get answer (JSON leaves out READ, enum value 0)."""
    perms = answer.get("perm") or []
    return {(p.get("permType", "READ"), p.get("key", ""), p.get("range_end", "")) for p in perms}


def validate(params):
    for kind in ("roles", "users"):
        for i, item in enumerate(params[kind]):
            if not isinstance(item, dict) or not NAME_RE.match(str(item.get("name", ""))):
                name = item.get("name") if isinstance(item, dict) else item
                raise AuthError(f"{kind}[{i}].name={name!r} is invalid")
    for role in params["roles"]:
        wanted_permissions(role)


class Gateway:
    def __init__(self, endpoint, ca_cert=None, client_cert=None, client_key=None, timeout=10.0):
        if not re.match(r"^https?://[^/\s]+/?$", endpoint or ""):
            raise AuthError(f"endpoint={endpoint!r} is invalid: an http:// or https:// URL without a path")
        self.endpoint = endpoint.rstrip("/")
        self.timeout = timeout
        self.token = None
        self.context = None
        if self.endpoint.startswith("https://"):
            try:
                self.context = ssl.create_default_context(cafile=ca_cert)
                if client_cert:
                    self.context.load_cert_chain(client_cert, client_key)
            except (OSError, ssl.SSLError) as e:
                raise AuthError(f"ca_cert/client_cert/client_key: cannot load them: {e}") from e

    def call(self, path, body):
        """POST body; return (answer dict, None) or (None, etcd's error message)."""
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = self.token
        request = urllib.request.Request(  # noqa: S310 (http and https only, checked above)
            self.endpoint + path, data=json.dumps(body).encode("utf-8"), headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=self.context) as response:  # noqa: S310
                return json.loads(response.read().decode("utf-8") or "{}"), None
        except urllib.error.HTTPError as e:
            text = e.read().decode("utf-8", "replace")
            try:
                data = json.loads(text)
                return None, str(data.get("message") or data.get("error") or text)
            except ValueError:
                return None, f"HTTP {e.code}: {text.strip()[:300]}"
        except (urllib.error.URLError, OSError, ValueError) as e:
            raise AuthError(f"etcd at {self.endpoint} is unreachable ({path}): {e}") from e

    def must(self, path, body):
        answer, error = self.call(path, body)
        if error is not None:
            raise AuthError(f"etcd refused {path}: {error}")
        return answer

    def authenticate(self, name, password):
        """A token, or None when authentication is off; raises AuthError on a wrong password."""
        answer, error = self.call("/v3/auth/authenticate", {"name": name, "password": password})
        if error is None:
            return answer.get("token")
        if NOT_ENABLED in error:
            return None
        raise AuthError(f"etcd refused user {name}: {error}")

    def password_ok(self, name, password):
        answer, error = self.call("/v3/auth/authenticate", {"name": name, "password": password})
        if error is None:
            return True
        if BAD_PASSWORD in error or NOT_ENABLED in error:
            return False
        raise AuthError(f"etcd refused /v3/auth/authenticate of user {name}: {error}")


def run(params, check_mode, gateway=None):
    validate(params)
    gw = gateway or Gateway(
        params["endpoint"], params.get("ca_cert"), params.get("client_cert"), params.get("client_key"),
        params.get("timeout") or 10.0,
    )  # fmt: skip
    actions = []
    try:
        gw.token = gw.authenticate("root", params["root_password"])
    except AuthError as e:
        raise AuthError(f"root_password: {e}") from e
    enabled = gw.token is not None

    def do(action, path, body):
        actions.append(action)
        if not check_mode:
            gw.must(path, body)

    users = list(params["users"])
    roles = list(params["roles"])
    if params["state"] == "present" and params["enable"]:
        if not any(u["name"] == "root" for u in users):
            users.append({"name": "root", "password": params["root_password"], "roles": ["root"]})
        if not any(r["name"] == "root" for r in roles):
            roles.append({"name": "root", "permissions": []})

    def delete(kind, name, path, body):
        # Another run removing the same tenant may delete it between our get and our delete:
        # "not found" then means the wanted state is reached, not a failure.
        _, error = gw.call(f"/v3/auth/{kind}/get", body)
        if error is not None:
            return
        actions.append(f"{kind} {name} deleted")
        if not check_mode:
            _, error = gw.call(path, body)
            if error is not None and f"{kind} name not found" not in error:
                raise AuthError(f"etcd refused {path}: {error}")

    if params["state"] == "absent":
        for user in users:
            delete("user", user["name"], "/v3/auth/user/delete", {"name": user["name"]})
        for role in roles:
            delete("role", role["name"], "/v3/auth/role/delete", {"role": role["name"]})
        return {"changed": bool(actions), "actions": actions, "enabled": enabled}

    for role in sorted(roles, key=lambda r: r["name"]):
        name = role["name"]
        answer, error = gw.call("/v3/auth/role/get", {"role": name})
        if error is not None and "role name not found" not in error:
            raise AuthError(f"etcd refused /v3/auth/role/get of role {name}: {error}")
        if error is not None:
            do(f"role {name} added", "/v3/auth/role/add", {"name": name})
            current = set()
        else:
            current = stored_permissions(answer)
        if name == "root":
            continue
        wanted = wanted_permissions(role)
        for kind, key, end in sorted(wanted - current):
            perm = {"permType": kind, "key": key}
            if end:
                perm["range_end"] = end
            do(f"role {name}: {kind} on {base64.b64decode(key).decode()} granted", "/v3/auth/role/grant",
               {"name": name, "perm": perm})  # fmt: skip
        for kind, key, end in sorted(current - wanted):
            body = {"role": name, "key": key}
            if end:
                body["range_end"] = end
            what = base64.b64decode(key).decode()
            do(f"role {name}: {kind} on {what} revoked", "/v3/auth/role/revoke", body)

    for user in sorted(users, key=lambda u: u["name"]):
        name, password = user["name"], user.get("password")
        answer, error = gw.call("/v3/auth/user/get", {"name": name})
        if error is not None and "user name not found" not in error:
            raise AuthError(f"etcd refused /v3/auth/user/get of user {name}: {error}")
        if error is not None:
            body = {"name": name}
            if password:
                body["password"] = password
            else:
                body["options"] = {"no_password": True}
            do(f"user {name} added", "/v3/auth/user/add", body)
            current = set()
        else:
            current = set(answer.get("roles") or [])
            # Before authentication is on a password cannot be checked: set it again.
            if password and not (enabled and gw.password_ok(name, password)):
                body = {"name": name, "password": password}
                do(f"user {name}: password set", "/v3/auth/user/changepw", body)
        wanted = set(user.get("roles") or [])
        for role in sorted(wanted - current):
            do(f"user {name}: role {role} granted", "/v3/auth/user/grant", {"user": name, "role": role})
        for role in sorted(current - wanted):
            do(f"user {name}: role {role} revoked", "/v3/auth/user/revoke", {"name": name, "role": role})

    if params["enable"] and not enabled:
        do("authentication enabled", "/v3/auth/enable", {})
        enabled = True
    return {"changed": bool(actions), "actions": actions, "enabled": enabled}


def main():
    module = AnsibleModule(
        argument_spec=dict(
            endpoint=dict(type="str", required=True),
            ca_cert=dict(type="path"),
            client_cert=dict(type="path"),
            client_key=dict(type="path", no_log=False),
            root_password=dict(type="str", required=True, no_log=True),
            roles=dict(
                type="list",
                elements="dict",
                default=[],
                options=dict(
                    name=dict(type="str", required=True),
                    permissions=dict(type="list", elements="dict", default=[]),
                ),
            ),
            users=dict(
                type="list",
                elements="dict",
                default=[],
                options=dict(
                    name=dict(type="str", required=True),
                    password=dict(type="str", no_log=True),
                    roles=dict(type="list", elements="str", default=[]),
                ),
            ),
            state=dict(type="str", default="present", choices=["present", "absent"]),
            enable=dict(type="bool", default=True),
            timeout=dict(type="float", default=10.0),
        ),
        supports_check_mode=True,
    )
    try:
        result = run(module.params, module.check_mode)
    except AuthError as e:
        module.fail_json(msg=str(e))
    module.exit_json(**result)


if __name__ == "__main__":
    main()

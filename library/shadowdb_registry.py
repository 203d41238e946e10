#!/usr/bin/python
# Copyright: ShadowDB contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Ansible module: the ShadowDB tenant registry, one JSON record per tenant in etcd."""

import base64
import ipaddress
import json
import os
import random
import re
import ssl
import time
import urllib.error
import urllib.request

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
---
module: shadowdb_registry
short_description: Read and write tenant endpoint records in the ShadowDB registry (etcd)
description:
  - Keeps one record per tenant under a key prefix in etcd, as canonical JSON (sorted keys, no
    whitespace) at C(<prefix><tenant>). The record says where the tenant is served (host, address,
    port), its proxy port, version, tier, routing state and members. HAProxy's configuration is
    rendered from these records.
  - Talks to etcd's v3 JSON gateway (C(/v3/kv/range), C(/v3/kv/txn)) over HTTPS with Python's
    standard library only, so managed hosts need no etcd client package.
  - Writes are compare-and-swap transactions on the key's C(mod_revision) as read - a record changed
    by someone else between the read and the write is never overwritten silently (the module fails
    and can be re-run).
  - Endpoints are tried in order; the first that answers is used. When none answers the module fails
    naming every endpoint and its error.
  - 'The list forms converge a batch of tenants in one module run: O(state=present) with O(records) writes
    each record, O(state=absent) with O(tenants) deletes each tenant''s key. The keys are read at once (one
    transaction of range requests per 100 keys), then each record that differs is written as in the single
    form (its own compare-and-swap transaction), so only the changed ones cost a request. A tenant''s own
    failure (an invalid record, a key changed by someone else in between) is listed in
    RV(failed_tenants) and the others go on; a wrong call (an invalid or repeated tenant name) or an
    etcd that cannot be reached fails the task.'
options:
  endpoints:
    description:
      - etcd client URLs, for example C(https://10.0.0.11:2379). Tried in order.
      - Only C(http) and C(https) URLs are accepted.
      - Required unless O(connection) gives them.
    type: list
    elements: str
  connection:
    description:
      - The connection arguments in one dict (keys C(endpoints), C(ca_cert), C(client_cert),
        C(client_key), C(auth_file)), for example the C(etcd_registry_writer) fact the etcd role's
        C(controller) entry point sets. Arguments given on their own take precedence.
    type: dict
  ca_cert:
    description:
      - CA certificate file (on the managed host) that the etcd server certificates must chain to.
      - When omitted the system trust store is used.
    type: path
  client_cert:
    description: Client certificate file, for an etcd that requires client certificates.
    type: path
  client_key:
    description: Private key of O(client_cert).
    type: path
  username:
    description:
      - etcd user to authenticate as, when etcd's authentication is on (required then - etcd's JSON
        gateway ignores the common name of client certificates, so gateway clients authenticate
        with a password and send the token etcd returns).
      - Given with O(password), or read from O(auth_file).
    type: str
  password:
    description: Password of O(username).
    type: str
  auth_file:
    description:
      - 'JSON file C({"username": ..., "password": ...}) with the credentials, on the host that runs the
        module (root-only).'
      - Defaults to C(auth.json) in the directory of O(client_cert) when that file exists and
        O(username) is not given (the etcd role's C(client) entry point writes it there).
    type: path
  prefix:
    description:
      - Key prefix of the deployment's records. Must start and end with C(/).
    type: str
    default: /shadowdb/tenants/
  tenant:
    description:
      - Tenant name (DNS label, 2-16 characters). Required with O(state=present) and O(state=absent),
        unless O(records) or O(tenants) is given (the list forms).
      - With O(state=query), also returns that tenant's record as RV(record).
    type: str
  tenants:
    description:
      - With O(state=absent), the list form of O(tenant) - the tenants whose keys are deleted. May be empty.
      - Each a DNS label of 2-16 characters; unique. Not given with O(tenant) or O(record).
    type: list
    elements: str
  records:
    description:
      - With O(state=present), the list form of O(tenant) and O(record) - the records to write. May be
        empty.
      - Tenants must be unique. Not given with O(tenant) or O(record).
    type: list
    elements: dict
    suboptions:
      tenant:
        description: As O(tenant).
        type: str
        required: true
      record:
        description: As O(record) (its C(tenant) key must equal the item's C(tenant)).
        type: dict
        required: true
  record:
    description:
      - The tenant's record, required with O(state=present) unless O(records) is given.
      - Keys C(tenant) (must equal O(tenant)), C(host) and C(address) (strings) and C(port) (1-65535)
        are required; C(proxy_port) (1-65535, null, or V(auto) with O(proxy_ports)), C(pg_version)
        (int), C(tier) (string),
        C(state) (C(active), C(maintenance) or C(disabled); default C(active)), C(members) (list
        of dicts) and C(hba) (the tenant's client networks - a list of CIDRs, stored in canonical
        form; empty closes the tenant to every client) are optional. Other keys are refused.
      - Integers given as strings of digits are converted.
    type: dict
  proxy_ports:
    description:
      - 'The range new proxy ports are chosen from, C({start: 30000, end: 31999}): a record whose
        C(proxy_port) is V(auto) keeps the proxy port its stored record has, or gets a random port
        of the range that no record of O(prefix) holds (HAProxy on the proxy hosts must have the
        range to itself).'
      - The choice is safe against other writers - the records of the call are written in one
        transaction that succeeds only if no key under O(prefix) was written since the registry was read
        (re-read and chosen again otherwise, a few times), so two runs never give one port to two
        tenants. A tenant for which no port is left fails on its own.
    type: dict
    suboptions:
      start:
        description: First port of the range.
        type: int
        required: true
      end:
        description: Last port of the range.
        type: int
        required: true
  state:
    description:
      - V(present) writes the record if the stored one differs; V(absent) deletes the tenant's key;
        V(query) changes nothing and returns RV(records) (and RV(record) when O(tenant) is given).
    type: str
    choices: [present, absent, query]
    default: present
  timeout:
    description: Seconds to wait for each HTTP request to one endpoint.
    type: float
    default: 5
notes:
  - Stored values that are not valid JSON objects are replaced by O(state=present), and are left out of
    RV(records) with a warning.
attributes:
  check_mode:
    support: full
    description: Reads the registry and reports what would change without writing.
  diff_mode:
    support: full
    description: Returns the tenant's record before and after as indented JSON.
author:
  - ShadowDB contributors
"""

EXAMPLES = r"""
- name: Register tenant acme
  shadowdb_registry:
    endpoints: [https://10.0.0.11:2379, https://10.0.0.12:2379, https://10.0.0.13:2379]
    ca_cert: /etc/shadowdb/etcd/ca.crt
    client_cert: /etc/shadowdb/etcd/client.crt
    client_key: /etc/shadowdb/etcd/client.key
    tenant: acme
    record:
      tenant: acme
      host: db1
      address: 10.0.0.21
      port: 24817
      proxy_port: 30412
      pg_version: 17
      tier: small
      state: active
      members: [{host: db1, address: 10.0.0.21, port: 24817}]

- name: Every tenant of the deployment
  shadowdb_registry:
    endpoints: [https://10.0.0.11:2379]
    ca_cert: /etc/shadowdb/etcd/ca.crt
    client_cert: /etc/shadowdb/etcd/client.crt
    client_key: /etc/shadowdb/etcd/client.key
    state: query
  register: registry

- name: Register a batch of tenants in one run
  shadowdb_registry:
    connection: "{{ etcd_registry_writer }}"
    records:
      - tenant: acme
        record: {tenant: acme, host: db1, address: 10.0.0.21, port: 24817}
      - tenant: globex
        record: {tenant: globex, host: db1, address: 10.0.0.21, port: 21003}
  register: registered  # registered.results.acme.changed; registered.failed_tenants

- name: Unregister a batch of tenants in one run
  shadowdb_registry:
    connection: "{{ etcd_registry_writer }}"
    tenants: [oldcorp, initech]
    state: absent

- name: Unregister tenant acme
  shadowdb_registry:
    endpoints: [https://10.0.0.11:2379]
    ca_cert: /etc/shadowdb/etcd/ca.crt
    client_cert: /etc/shadowdb/etcd/client.crt
    client_key: /etc/shadowdb/etcd/client.key
    tenant: acme
    state: absent
"""

RETURN = r"""
key:
  description: The tenant's key (when O(tenant) is given).
  returned: when O(tenant) is given
  type: str
  sample: /shadowdb/tenants/acme
record:
  description:
    - The tenant's record after the operation (as it would be, in check mode), or V(null) when absent.
  returned: when O(tenant) is given
  type: dict
  sample: {"tenant": "acme", "host": "db1", "address": "10.0.0.21", "port": 24817, "state": "active"}
records:
  description: Every valid record under O(prefix), sorted by tenant.
  returned: when O(state=query)
  type: list
  elements: dict
endpoint:
  description: The endpoint that answered.
  returned: success
  type: str
  sample: https://10.0.0.11:2379
revision:
  description: etcd's store revision after the operation.
  returned: success
  type: int
  sample: 42
results:
  description:
    - With O(records) or O(tenants), each tenant mapped to C(changed), C(key), C(record) (as RV(record);
      V(null) when absent or failed) and C(failed); a failed tenant also has C(msg).
  returned: with O(records) or O(tenants)
  type: dict
  sample: {"acme": {"changed": true, "failed": false, "key": /shadowdb/tenants/acme,
                    "record": {"tenant": "acme", "host": "db1", "address": "10.0.0.21", "port": 24817}}}
failed_tenants:
  description:
    - With O(records) or O(tenants), each tenant that failed mapped to why (the task itself does not fail).
  returned: with O(records) or O(tenants)
  type: dict
  sample: {"globex": "record.port=0 is invalid: it must be between 1 and 65535"}
diff:
  description:
    - The tenant's record before and after, as indented JSON (empty when absent).
    - With O(records) or O(tenants), a list of them (with the key as header), one per key that changed.
  returned: when O(tenant), O(records) or O(tenants) is given
  type: raw
"""

TENANT_RE = re.compile(r"^[a-z][a-z0-9-]{0,14}[a-z0-9]$")
RECORD_STATES = ("active", "maintenance", "disabled")
REQUIRED_KEYS = ("tenant", "host", "address", "port")
OPTIONAL_KEYS = ("proxy_port", "pg_version", "tier", "state", "members", "hba")
# A record's proxy_port chosen by the module (proxy_ports), and how many times a write that
# raced another writer is read and chosen again.
AUTO = "auto"
AUTO_ATTEMPTS = 8
# Records per transaction (etcd refuses more than --max-txn-ops, 128 by default, compares included).
TXN_RECORDS = 100
# Errors worth trying the next endpoint for (the member is down, has no leader, is overloaded).
RETRY_HTTP = (500, 502, 503, 504)


class RegistryError(Exception):
    """A registry operation failed; the message names the argument or endpoint at fault."""


class TenantError(RegistryError):
    """A tenant's own failure: its record is invalid, or its key was changed by someone else between
    the read and the write (nothing written). In the list forms the other tenants go on."""


# --- pure helpers ---


def validate_params(params):
    """Return an error message naming the offending argument, or None."""
    endpoints = params.get("endpoints") or []
    if not endpoints:
        return "endpoints is empty: give at least one etcd client URL"
    for i, url in enumerate(endpoints):
        if not re.match(r"^https?://[^/\s]+/?$", url or ""):
            return f"endpoints[{i}]={url!r} is invalid: it must be an http:// or https:// URL without a path"
    prefix = params.get("prefix") or ""
    if not (prefix.startswith("/") and prefix.endswith("/") and len(prefix) > 1):
        return f"prefix={prefix!r} is invalid: it must start and end with '/'"
    state, tenant = params.get("state"), params.get("tenant")
    if tenant is not None and not TENANT_RE.match(tenant):
        return f"tenant={tenant!r} is invalid: it must be a DNS label matching {TENANT_RE.pattern}"
    error = validate_lists(params)
    if error:
        return error
    many = params.get("records") is not None or params.get("tenants") is not None
    if state in ("present", "absent") and tenant is None and not many:
        return f"tenant is required with state={state}"
    if state == "present" and params.get("record") is None and not many:
        return "record is required with state=present"
    bounds = params.get("proxy_ports")
    if bounds and not 1 <= bounds["start"] <= bounds["end"] <= 65535:
        return f"proxy_ports={bounds!r} is invalid: it must be 1 <= start <= end <= 65535"
    if bool(params.get("client_cert")) != bool(params.get("client_key")):
        return "client_cert and client_key must be given together"
    if bool(params.get("username")) != bool(params.get("password")):
        return "username and password must be given together"
    if params.get("username") and params.get("auth_file"):
        return "username/password and auth_file are exclusive"
    return None


def validate_lists(params):
    """The error of the list forms' arguments (records, tenants), or None. A record's own errors
    are its tenant's, reported by run_many."""
    records, tenants, state = params.get("records"), params.get("tenants"), params.get("state")
    for option, items, wanted in (("records", records, "present"), ("tenants", tenants, "absent")):
        if items is None:
            continue
        if state != wanted:
            return f"{option} is only used with state={wanted}, not with state={state}"
        beside = [arg for arg in ("tenant", "record") if params.get(arg) is not None]
        if beside:
            return f"{beside[0]} is not used with {option}: give each tenant inside {option}"
        names = [item["tenant"] for item in items] if option == "records" else list(items)
        for i, name in enumerate(names):
            if not isinstance(name, str) or not TENANT_RE.match(name):
                where = f"records[{i}].tenant" if option == "records" else f"tenants[{i}]"
                return f"{where}={name!r} is invalid: it must be a DNS label matching {TENANT_RE.pattern}"
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            return f"{option}: {', '.join(twice)} listed more than once"
    return None


def read_credentials(params):
    """(username, password) from the arguments or an auth file, or (None, None)."""
    if params.get("username"):
        return params["username"], params["password"]
    path = params.get("auth_file")
    if not path and params.get("client_cert"):
        default = os.path.join(os.path.dirname(params["client_cert"]), "auth.json")
        path = default if os.path.exists(default) else None
    if not path:
        return None, None
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise RegistryError(f"auth_file={path!r}: cannot read it as JSON: {e.__class__.__name__}") from e
    if not isinstance(data, dict) or not data.get("username") or not data.get("password"):
        raise RegistryError(f"auth_file={path!r} must hold a JSON object with username and password")
    return str(data["username"]), str(data["password"])


def _as_int(value, field, minimum=None, maximum=None):
    if isinstance(value, bool):
        raise RegistryError(f"{field}={value!r} is invalid: it must be an integer")
    if isinstance(value, str) and re.fullmatch(r"[0-9]+", value.strip()):
        value = int(value.strip())
    if not isinstance(value, int):
        raise RegistryError(f"{field}={value!r} is invalid: it must be an integer")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise RegistryError(f"{field}={value} is invalid: it must be between {minimum} and {maximum}")
    return value


def _as_str(value, field):
    if not isinstance(value, str) or not value.strip():
        raise RegistryError(f"{field}={value!r} is invalid: it must be a non-empty string")
    return value.strip()


def normalize_member(member, field):
    if not isinstance(member, dict):
        raise RegistryError(f"{field}={member!r} is invalid: it must be a dict")
    out = {}
    for key, value in member.items():
        if key == "port":
            out[key] = _as_int(value, f"{field}.port", 1, 65535)
        elif isinstance(value, (str, int, float, bool)) or value is None:
            out[key] = value
        else:
            raise RegistryError(f"{field}.{key}={value!r} is invalid: members hold scalar values only")
    return out


def normalize_hba(hba):
    """The tenant's client networks: a list of CIDRs, each written canonically.

    An empty list is valid, as in the tenant spec: no client network may connect (HAProxy
    refuses every client of that tenant)."""
    if not isinstance(hba, list):
        raise RegistryError(f"record.hba={hba!r} is invalid: it must be a list of CIDRs")
    out = []
    for i, cidr in enumerate(hba):
        try:
            network = ipaddress.ip_network(str(cidr).strip(), strict=False)
        except ValueError as e:
            raise RegistryError(f"record.hba[{i}]={cidr!r} is invalid: {e}") from e
        if not isinstance(cidr, str):
            raise RegistryError(f"record.hba[{i}]={cidr!r} is invalid: it must be a CIDR string")
        out.append(str(network))
    return out


def normalize_record(record, tenant, auto=False):
    """Validate a record for tenant and return it with types fixed and defaults filled. auto:
    proxy_port may be AUTO (O(proxy_ports) is given), kept as it is.

    Raises RegistryError naming the field (record.<key>) at fault.
    """
    if not isinstance(record, dict):
        raise RegistryError(f"record={record!r} is invalid: it must be a dict")
    unknown = sorted(set(record) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS))
    if unknown:
        allowed = ", ".join(REQUIRED_KEYS + OPTIONAL_KEYS)
        raise RegistryError(f"record has unknown key(s) {', '.join(unknown)}: allowed keys are {allowed}")
    missing = [k for k in REQUIRED_KEYS if record.get(k) in (None, "")]
    if missing:
        raise RegistryError(f"record is missing {', '.join('record.' + k for k in missing)}")
    out = {
        "tenant": _as_str(record["tenant"], "record.tenant"),
        "host": _as_str(record["host"], "record.host"),
        "address": _as_str(record["address"], "record.address"),
        "port": _as_int(record["port"], "record.port", 1, 65535),
        "state": record.get("state") or "active",
    }
    if out["tenant"] != tenant:
        raise RegistryError(f"record.tenant={out['tenant']!r} is invalid: it must equal tenant={tenant!r}")
    if out["state"] not in RECORD_STATES:
        raise RegistryError(
            f"record.state={out['state']!r} is invalid: it must be one of {', '.join(RECORD_STATES)}"
        )
    if record.get("proxy_port") == AUTO and auto:
        out["proxy_port"] = AUTO  # chosen by run_many before anything is written
    elif record.get("proxy_port") is not None:
        out["proxy_port"] = _as_int(record["proxy_port"], "record.proxy_port", 1, 65535)
    else:
        out["proxy_port"] = None
    if record.get("pg_version") is not None:
        out["pg_version"] = _as_int(record["pg_version"], "record.pg_version", 9, 99)
    if record.get("tier") is not None:
        out["tier"] = _as_str(record["tier"], "record.tier")
    if record.get("hba") is not None:
        out["hba"] = normalize_hba(record["hba"])
    members = record.get("members")
    if members is None:
        members = []
    if not isinstance(members, list):
        raise RegistryError(f"record.members={members!r} is invalid: it must be a list of dicts")
    out["members"] = [normalize_member(m, f"record.members[{i}]") for i, m in enumerate(members)]
    return out


def canonical_json(record):
    """The stored form of a record: JSON with sorted keys and no whitespace."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def pretty_json(record):
    return "" if record is None else json.dumps(record, sort_keys=True, indent=2) + "\n"


def b64(text):
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def unb64(text):
    return base64.b64decode(text or "").decode("utf-8")


def prefix_range_end(prefix):
    """etcd's range_end (bytes) for "every key starting with prefix": its last byte below 0xff, plus 1."""
    data = bytearray(prefix.encode("utf-8"))
    while data and data[-1] == 0xFF:
        data.pop()
    if not data:
        return b"\0"
    data[-1] += 1
    return bytes(data)


def parse_stored(value_text):
    """Parse a stored value; return the record dict or None when it is not a JSON object."""
    try:
        value = json.loads(value_text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def put_txn(key, value, mod_revision):
    """Compare-and-swap put: only if the key's mod_revision is still the one read (0: absent)."""
    return {
        "compare": [{"key": b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": str(mod_revision)}],
        "success": [{"request_put": {"key": b64(key), "value": b64(value)}}],
    }


def choose_proxy_ports(stored, wanted, start, end, pick=random.choice):
    """{tenant: proxy port} for the tenants of wanted (names, in order): the port of the tenant's
    stored record when it has one, else a port of start..end (pick, at random by default) that no
    stored record holds and no earlier tenant of wanted got; None when none is left. stored:
    {tenant: record or None}."""
    chosen = {tenant: (stored.get(tenant) or {}).get("proxy_port") for tenant in wanted}
    taken = {r.get("proxy_port") for r in stored.values() if r and r.get("proxy_port")}
    free = set(range(start, end + 1)) - taken
    for tenant in wanted:
        if not chosen[tenant] and free:
            chosen[tenant] = pick(sorted(free))
            free.discard(chosen[tenant])
    return chosen


def guarded_txn(prefix, revision, writes):
    """One transaction writing writes [(key, value, mod_revision read)], each compared as put_txn
    does, and only if no key under prefix changed after revision (a record another writer added
    in between may hold a port chosen here)."""
    range_end = base64.b64encode(prefix_range_end(prefix)).decode("ascii")
    compare = [
        {
            "key": b64(prefix),
            "range_end": range_end,
            "target": "MOD",
            "result": "LESS",
            "mod_revision": str(revision + 1),
        }
    ]
    success = []
    for key, value, mod_revision in writes:
        compare.append(
            {"key": b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": str(mod_revision)}
        )
        success.append({"request_put": {"key": b64(key), "value": b64(value)}})
    return {"compare": compare, "success": success}


def delete_txn(key, mod_revision):
    return {
        "compare": [{"key": b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": str(mod_revision)}],
        "success": [{"request_delete_range": {"key": b64(key)}}],
    }


def error_text(body):
    """The message of an etcd gateway error body, or the body itself."""
    try:
        data = json.loads(body)
    except ValueError:
        return body.strip()[:300]
    if isinstance(data, dict):
        return str(data.get("message") or data.get("error") or body.strip()[:300])
    return body.strip()[:300]


# --- etcd client ---


class EtcdClient:
    """Minimal client of etcd's v3 JSON gateway with endpoint failover."""

    def __init__(
        self,
        endpoints,
        ca_cert=None,
        client_cert=None,
        client_key=None,
        timeout=5.0,
        username=None,
        password=None,
        token_cache=None,
    ):
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self.timeout = timeout
        self.username, self.password = username, password
        # Tokens are per member (etcd's simple tokens): one per endpoint, got on first use.
        self.tokens = {}
        # A file keeping the tokens between runs (the controller's, beside its auth file): etcd
        # checks a password with bcrypt, about 0.1 s of each registry call, while a token is
        # accepted until it has been idle for etcd's token TTL (then: 401, authenticate again).
        self.token_cache = token_cache
        self.context = None
        if any(e.startswith("https://") for e in self.endpoints):
            try:
                self.context = ssl.create_default_context(cafile=ca_cert)
            except (OSError, ssl.SSLError) as e:
                raise RegistryError(f"ca_cert={ca_cert!r}: cannot load the CA certificate: {e}") from e
            if client_cert:
                try:
                    self.context.load_cert_chain(client_cert, client_key)
                except (OSError, ssl.SSLError) as e:
                    raise RegistryError(
                        f"client_cert={client_cert!r}/client_key={client_key!r}: cannot load them: {e}"
                    ) from e
        self.endpoint = None

    def _raw_post(self, endpoint, path, body, token=None):
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = token
        request = urllib.request.Request(  # noqa: S310 (validate_params allows http and https only)
            endpoint + path,
            data=json.dumps(body).encode("utf-8"),
            headers=headers,
            method="POST",
        )
        context = self.context if endpoint.startswith("https://") else None
        with urllib.request.urlopen(request, timeout=self.timeout, context=context) as response:  # noqa: S310
            return json.loads(response.read().decode("utf-8") or "{}")

    def _cached_tokens(self):
        """{endpoint: token} of the token cache for this user ({} when there is none)."""
        if not self.token_cache:
            return {}
        try:
            with open(self.token_cache, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict) or data.get("username") != self.username:
            return {}
        tokens = data.get("tokens")
        return tokens if isinstance(tokens, dict) else {}

    def _keep_token(self, endpoint, token):
        """Write the token into the cache (owner-only, replaced atomically); a cache that cannot
        be written only costs the next run an authentication."""
        if not self.token_cache:
            return
        tokens = {e: t for e, t in self._cached_tokens().items() if e in self.endpoints}
        if token:
            tokens[endpoint] = token
        else:
            tokens.pop(endpoint, None)
        temporary = f"{self.token_cache}.{os.getpid()}.tmp"
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"username": self.username, "tokens": tokens}, f)
            os.replace(temporary, self.token_cache)
        except OSError:
            try:
                os.unlink(temporary)
            except OSError:
                pass

    def _token(self, endpoint, renew=False):
        """The auth token of this endpoint (None without credentials or with authentication off)."""
        if not self.username:
            return None
        if not renew and endpoint not in self.tokens:
            cached = self._cached_tokens().get(endpoint)
            if cached:
                self.tokens[endpoint] = cached
        if renew or endpoint not in self.tokens:
            credentials = {"name": self.username, "password": self.password}
            try:
                answer = self._raw_post(endpoint, "/v3/auth/authenticate", credentials)
            except urllib.error.HTTPError as e:
                message = error_text(e.read().decode("utf-8", "replace"))
                if "authentication is not enabled" in message:
                    answer = {}
                elif e.code in RETRY_HTTP:
                    raise
                else:
                    raise RegistryError(
                        f"etcd endpoint {endpoint} refused username={self.username!r}: {message}"
                    ) from e
            self.tokens[endpoint] = answer.get("token")
            self._keep_token(endpoint, self.tokens[endpoint])
        return self.tokens[endpoint]

    def _post(self, endpoint, path, body):
        try:
            return self._raw_post(endpoint, path, body, self._token(endpoint))
        except urllib.error.HTTPError as e:
            if not self.username or e.code != 401:
                raise
            # An expired or unknown token (a restarted member): authenticate again, once.
            return self._raw_post(endpoint, path, body, self._token(endpoint, renew=True))

    def call(self, path, body):
        """POST body to path on the first endpoint that answers; return the decoded JSON."""
        errors = []
        order = (
            self.endpoints
            if self.endpoint is None
            else [self.endpoint] + [e for e in self.endpoints if e != self.endpoint]
        )
        for endpoint in order:
            try:
                result = self._post(endpoint, path, body)
            except urllib.error.HTTPError as e:
                message = error_text(e.read().decode("utf-8", "replace"))
                if e.code in RETRY_HTTP:
                    errors.append(f"{endpoint}: HTTP {e.code}: {message}")
                    continue
                raise RegistryError(
                    f"etcd endpoint {endpoint} refused {path}: HTTP {e.code}: {message}"
                ) from e
            except urllib.error.URLError as e:
                errors.append(f"{endpoint}: {e.reason}")
                continue
            except (TimeoutError, ConnectionError, ssl.SSLError, OSError) as e:
                errors.append(f"{endpoint}: {e}")
                continue
            except ValueError as e:
                errors.append(f"{endpoint}: answer is not JSON ({e})")
                continue
            self.endpoint = endpoint
            return result
        raise RegistryError(
            "etcd is unreachable (endpoints): "
            + "; ".join(errors)
            + " (nothing was changed in the registry: repeat the run once etcd answers)"
        )

    def get(self, key):
        """Return (value text or None, mod_revision, store revision) of one key."""
        result = self.call("/v3/kv/range", {"key": b64(key)})
        revision = int(result.get("header", {}).get("revision", 0))
        kvs = result.get("kvs") or []
        if not kvs:
            return None, 0, revision
        return unb64(kvs[0].get("value")), int(kvs[0].get("mod_revision", 0)), revision

    def get_prefix(self, prefix):
        """Return ({key: value text}, store revision) of every key under prefix."""
        kvs, revision = self.get_prefix_kvs(prefix)
        return {key: text for key, (text, _mod_revision) in kvs.items()}, revision

    def get_prefix_kvs(self, prefix):
        """Return ({key: (value text, mod_revision)}, store revision) of every key under prefix."""
        body = {"key": b64(prefix), "range_end": base64.b64encode(prefix_range_end(prefix)).decode("ascii")}
        result = self.call("/v3/kv/range", body)
        revision = int(result.get("header", {}).get("revision", 0))
        kvs = result.get("kvs") or []
        return {
            unb64(kv.get("key")): (unb64(kv.get("value")), int(kv.get("mod_revision", 0))) for kv in kvs
        }, revision

    def get_many(self, keys, chunk=100):
        """Return ({key: (value text or None, mod_revision)}, store revision) of keys: ranges read in
        transactions of at most chunk requests (etcd refuses more than --max-txn-ops, 128 by default)."""
        found, revision = {}, 0
        for start in range(0, len(keys), chunk):
            part = keys[start : start + chunk]
            result = self.call("/v3/kv/txn", {"success": [{"request_range": {"key": b64(k)}} for k in part]})
            revision = int(result.get("header", {}).get("revision", 0))
            responses = result.get("responses") or []
            if len(responses) != len(part):
                raise RegistryError(
                    f"etcd endpoint {self.endpoint} answered {len(responses)} ranges for {len(part)} keys"
                )
            for key, response in zip(part, responses, strict=True):
                kvs = (response.get("response_range") or {}).get("kvs") or []
                found[key] = (
                    (unb64(kvs[0].get("value")), int(kvs[0].get("mod_revision", 0))) if kvs else (None, 0)
                )
        return found, revision

    def txn(self, body):
        """Run a transaction; return (succeeded, store revision)."""
        result = self.call("/v3/kv/txn", body)
        return bool(result.get("succeeded")), int(result.get("header", {}).get("revision", 0))


def collect_records(values, prefix):
    """Turn {key: value text} into (records sorted by tenant, keys whose values are not records)."""
    records, invalid = [], []
    for key in sorted(values):
        record = parse_stored(values[key])
        if record is None or record.get("tenant") != key[len(prefix) :]:
            invalid.append(key)
            continue
        records.append(record)
    return records, invalid


def converge_key(client, key, tenant, desired, stored, mod_revision, revision, check_mode):
    """Write desired (a normalized record; None deletes the key) over stored (the value text read, or
    None) with a compare-and-swap on the mod_revision read. Returns the result of the key; raises
    TenantError when someone else changed it in between."""
    changed = stored != canonical_json(desired) if desired is not None else stored is not None
    if changed and not check_mode:
        if desired is not None:
            ok, revision = client.txn(put_txn(key, canonical_json(desired), mod_revision))
        else:
            ok, revision = client.txn(delete_txn(key, mod_revision))
        if not ok:
            raise TenantError(
                f"the record of tenant={tenant!r} ({key}) was changed by someone else while this run "
                "was updating it: nothing written, re-run to apply"
            )
    return dict(
        changed=changed, key=key, record=desired, revision=revision, diff=record_diff(stored, desired)
    )


def record_diff(stored, desired):
    """The diff of a key: the record before (its stored text when it is not a record) and after."""
    before = parse_stored(stored) if stored is not None else None
    diff = {"before": pretty_json(before if stored is not None else None), "after": pretty_json(desired)}
    if stored is not None and before is None:
        diff["before"] = stored + "\n"
    return diff


def many_result(results, failed, diffs, revision, client):
    """The result of the list forms (run_many, run_chosen)."""
    return dict(
        changed=any(r["changed"] for r in results.values()),
        results=results,
        failed_tenants=failed,
        diff=diffs,
        revision=revision,
        endpoint=client.endpoint,
    )


def run_chosen(params, check_mode, client, items):
    """The present form when a record's proxy_port is AUTO (O(proxy_ports)): items [(tenant,
    record)] written in transactions of TXN_RECORDS, each from one read of the whole prefix with
    the ports chosen from it (choose_proxy_ports) and guarded by guarded_txn; a transaction that
    lost a race is read, chosen and tried again. Returns what run_many returns."""
    prefix, bounds = params["prefix"], params["proxy_ports"]
    results, failed, diffs, desired = {}, {}, [], {}
    for tenant, record in items:
        try:
            desired[tenant] = normalize_record(record, tenant, auto=True)
        except RegistryError as e:
            failed[tenant] = str(e)
            results[tenant] = dict(changed=False, failed=True, msg=str(e), key=prefix + tenant, record=None)
    names = [tenant for tenant, _record in items if tenant in desired]
    revision = 0
    for first in range(0, len(names), TXN_RECORDS):
        part = names[first : first + TXN_RECORDS]
        for attempt in range(AUTO_ATTEMPTS):
            if attempt:
                time.sleep(random.uniform(0.05, 0.3))  # spreads racing writers apart
            kvs, revision = client.get_prefix_kvs(prefix)
            stored = {key[len(prefix) :]: parse_stored(text) for key, (text, _mod) in kvs.items()}
            auto = [tenant for tenant in part if desired[tenant]["proxy_port"] == AUTO]
            chosen = choose_proxy_ports(stored, auto, bounds["start"], bounds["end"])
            outcome, writes, lacking = {}, [], []
            for tenant in part:
                key, record = prefix + tenant, dict(desired[tenant])
                if record["proxy_port"] == AUTO:
                    record["proxy_port"] = chosen[tenant]
                    if record["proxy_port"] is None:
                        lacking.append(tenant)
                        continue
                text, mod_revision = kvs.get(key, (None, 0))
                changed = text != canonical_json(record)
                outcome[tenant] = (key, record, text, changed)
                if changed:
                    writes.append((key, canonical_json(record), mod_revision))
            if not writes or check_mode:
                break
            ok, revision = client.txn(guarded_txn(prefix, revision, writes))
            if ok:
                break
        else:
            raise RegistryError(
                f"the registry under {prefix} kept changing while proxy ports were chosen for "
                f"{', '.join(part)} ({AUTO_ATTEMPTS} attempts): nothing written for them, re-run"
            )
        for tenant in lacking:
            msg = (
                f"record.proxy_port: no free proxy port is left in {bounds['start']}-{bounds['end']} "
                f"for tenant={tenant!r} (proxy_ports): widen the range or remove tenants"
            )
            failed[tenant] = msg
            results[tenant] = dict(changed=False, failed=True, msg=msg, key=prefix + tenant, record=None)
        for tenant, (key, record, text, changed) in outcome.items():
            if changed:
                diffs.append(dict(record_diff(text, record), before_header=key, after_header=key))
            results[tenant] = dict(changed=changed, failed=False, key=key, record=record)
    return many_result(results, failed, diffs, revision, client)


def run_many(params, check_mode, client):
    """The list forms: write each of records (state=present) or delete the key of each of tenants
    (state=absent), with one read of all their keys. A tenant's own failure (TenantError) is listed in
    failed_tenants; any other error fails the call (RegistryError, with the results so far as .partial)."""
    prefix, present = params["prefix"], params["state"] == "present"
    if present:
        items = [(item["tenant"], item["record"]) for item in params["records"]]
        if params.get("proxy_ports") and any((r or {}).get("proxy_port") == AUTO for _t, r in items):
            return run_chosen(params, check_mode, client, items)
    else:
        items = [(tenant, None) for tenant in params["tenants"]]
    results, failed, diffs = {}, {}, []
    stored, revision = client.get_many([prefix + tenant for tenant, _record in items])
    for tenant, record in items:
        key = prefix + tenant
        try:
            desired = None
            if present:
                try:
                    desired = normalize_record(record, tenant)
                except RegistryError as e:
                    raise TenantError(str(e)) from None
            text, mod_revision = stored[key]
            result = converge_key(client, key, tenant, desired, text, mod_revision, revision, check_mode)
        except TenantError as e:
            failed[tenant] = str(e)
            results[tenant] = dict(changed=False, failed=True, msg=str(e), key=key, record=None)
            continue
        except RegistryError as e:
            e.partial = dict(
                changed=any(r["changed"] for r in results.values()),
                results=results,
                failed_tenants=failed,
            )
            raise
        revision = result.pop("revision")
        diff = result.pop("diff")
        if result["changed"]:
            diffs.append(dict(diff, before_header=key, after_header=key))
        results[tenant] = dict(result, failed=False)
    return many_result(results, failed, diffs, revision, client)


def run(params, check_mode, client=None, warn=None, token_cache=None):
    """The module's logic, separated from AnsibleModule for testing. Returns the result dict.
    token_cache: see EtcdClient (the controller's in-process runs only)."""
    error = validate_params(params)
    if error:
        raise RegistryError(error)
    state, tenant, prefix = params["state"], params.get("tenant"), params["prefix"]
    if client is None:
        username, password = read_credentials(params)
        client = EtcdClient(
            params["endpoints"],
            params.get("ca_cert"),
            params.get("client_cert"),
            params.get("client_key"),
            params.get("timeout") or 5.0,
            username,
            password,
            token_cache if username else None,
        )
    if params.get("records") is not None or params.get("tenants") is not None:
        return run_many(params, check_mode, client)
    if (
        state == "present"
        and params.get("proxy_ports")
        and (params["record"] or {}).get("proxy_port") == AUTO
    ):
        many = run_chosen(params, check_mode, client, [(tenant, params["record"])])
        if many["failed_tenants"]:
            raise RegistryError(many["failed_tenants"][tenant])
        one = many["results"][tenant]
        return dict(
            changed=one["changed"],
            key=one["key"],
            record=one["record"],
            revision=many["revision"],
            diff=many["diff"][0]
            if many["diff"]
            else record_diff(canonical_json(one["record"]), one["record"]),
            endpoint=client.endpoint,
        )
    desired = normalize_record(params["record"], tenant) if state == "present" else None
    result = {"changed": False}

    if state == "query":
        values, revision = client.get_prefix(prefix)
        records, invalid = collect_records(values, prefix)
        for key in invalid:
            if warn:
                warn(f"registry key {key} does not hold a valid record: ignored")
        result.update(records=records, revision=revision, endpoint=client.endpoint)
        if tenant is not None:
            result["key"] = prefix + tenant
            result["record"] = next((r for r in records if r["tenant"] == tenant), None)
        return result

    key = prefix + tenant
    stored, mod_revision, revision = client.get(key)
    result.update(converge_key(client, key, tenant, desired, stored, mod_revision, revision, check_mode))
    result["endpoint"] = client.endpoint
    return result


CONNECTION_KEYS = ("endpoints", "ca_cert", "client_cert", "client_key", "auth_file")


def with_connection(params):
    """The arguments with the missing connection arguments taken from params['connection']."""
    merged = dict(params)
    for key in CONNECTION_KEYS:
        if merged.get(key) is None and (params.get("connection") or {}).get(key) is not None:
            merged[key] = params["connection"][key]
    return merged


ARGUMENT_SPEC = dict(
    endpoints=dict(type="list", elements="str"),
    connection=dict(type="dict"),
    ca_cert=dict(type="path"),
    client_cert=dict(type="path"),
    client_key=dict(type="path", no_log=False),
    username=dict(type="str"),
    password=dict(type="str", no_log=True),
    auth_file=dict(type="path"),
    prefix=dict(type="str", default="/shadowdb/tenants/"),
    tenant=dict(type="str"),
    record=dict(type="dict"),
    records=dict(
        type="list",
        elements="dict",
        options=dict(tenant=dict(type="str", required=True), record=dict(type="dict", required=True)),
    ),
    tenants=dict(type="list", elements="str"),
    proxy_ports=dict(
        type="dict", options=dict(start=dict(type="int", required=True), end=dict(type="int", required=True))
    ),
    state=dict(type="str", default="present", choices=["present", "absent", "query"]),
    timeout=dict(type="float", default=5.0),
)


def execute(params, check_mode, warn=None, token_cache=None):
    """The result of a run on validated arguments: (failed, result). Shared by main() and the
    action plugin that runs this module in the controller's process (action_plugins/), which
    keeps etcd's tokens between runs in token_cache."""
    params = with_connection(params)
    if not params.get("endpoints"):
        return True, {"msg": "endpoints is required (directly or in connection)"}
    try:
        return False, run(params, check_mode, warn=warn, token_cache=token_cache)
    except RegistryError as e:
        return True, dict(getattr(e, "partial", {}), msg=str(e))


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    failed, result = execute(module.params, module.check_mode, warn=module.warn)
    if failed:
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()

#!/usr/bin/python
# Copyright: ShadowDB contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Ansible module: check that a tenant PostgreSQL cluster serves TLS connections with its own credentials."""

import os

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.shadowdb_health import (  # noqa: F401 (the tests import them from here)
    MAX_ERROR_LEN,
    PSYCOPG_IMPORT_ERROR,
    WEAK_SSLMODES,
    FatalError,
    RetryableError,
    build_connect_kwargs,
    connect_timeout_for,
    format_endpoint,
    make_probe,
    not_serving_message,
    poll,
    psycopg,
    resolve_address,
    scrub,
    summarize_error,
)

DOCUMENTATION = r"""
---
module: shadowdb_pg_health
short_description: Check that a tenant PostgreSQL cluster serves TLS connections with the tenant's credentials
description:
  - Connects to a tenant's PostgreSQL cluster over TCP exactly like a client of the tenant would (TLS,
    certificate verification against the tenant's server name, password authentication) and runs one
    read-only query reporting the server version, whether data checksums are enabled and the TLS session.
  - Retries until the check passes or O(timeout) seconds have elapsed, so it can be used right after
    starting or restarting a cluster.
  - Never changes anything on the host or in the cluster; C(changed) is always V(false).
requirements:
  - psycopg >= 3 (Python package, on the managed host)
  - libpq >= 17 when O(sslnegotiation=direct)
options:
  address:
    description:
      - Where to connect. A numeric IPv4/IPv6 address, or a host name that is resolved on the managed host
        with C(getaddrinfo) before every attempt (the first result is used).
      - The resolved address is passed to libpq as C(hostaddr), so libpq never resolves names itself.
    type: str
    default: 127.0.0.1
  port:
    description: TCP port of the tenant cluster.
    type: int
    required: true
  server_name:
    description:
      - TLS server name to verify, for example C(acme.db.example). Passed to libpq as C(host) (while
        C(hostaddr) is the resolved O(address)), so with O(sslmode=verify-full) the server certificate must
        be valid for this name, and it is sent as SNI.
      - When omitted, O(address) is used as C(host).
    type: str
  dbname:
    description: Database to connect to.
    type: str
    required: true
  user:
    description: Role to authenticate as.
    type: str
    required: true
  password:
    description: Password of O(user). Never logged or returned, and scrubbed from error messages.
    type: str
    required: true
  sslmode:
    description: libpq C(sslmode).
    type: str
    choices: [disable, allow, prefer, require, verify-ca, verify-full]
    default: verify-full
  sslrootcert:
    description:
      - CA certificate file (on the managed host) used to verify the server certificate, or V(system) to
        use the system trust store (libpq >= 16).
      - When omitted libpq uses its default, C(~/.postgresql/root.crt).
    type: path
  sslnegotiation:
    description:
      - libpq C(sslnegotiation). V(direct) starts the TLS handshake immediately (ALPN C(postgresql)) instead
        of sending an SSLRequest first; it requires O(sslmode) V(require), V(verify-ca) or V(verify-full).
    type: str
    choices: [postgres, direct]
    default: postgres
  timeout:
    description: Keep retrying for this many seconds before failing. V(0) makes a single attempt.
    type: int
    default: 30
  interval:
    description: Seconds to wait between attempts.
    type: float
    default: 1.0
  require_ssl:
    description:
      - Fail (immediately, without retrying) if the session is not encrypted.
      - Must be V(false) with O(sslmode=disable).
    type: bool
    default: true
notes:
  - Each attempt uses a libpq C(connect_timeout) of 5 seconds (less near the end of O(timeout), but at
    least 2), so the module may run up to a few seconds longer than O(timeout).
  - Runs the check in check mode as well, because it changes nothing.
attributes:
  check_mode:
    support: full
    description: The check is read-only and also runs in check mode.
  diff_mode:
    support: none
    description: Nothing is changed, so there is no diff.
author:
  - ShadowDB contributors
"""

EXAMPLES = r"""
- name: Wait until tenant acme serves verified TLS connections
  shadowdb_pg_health:
    address: 127.0.0.1
    port: "{{ acme_pg_port.port }}"
    server_name: acme.db.example
    sslrootcert: /etc/shadowdb/tls/ca.crt
    dbname: acme
    user: acme
    password: "{{ acme_password }}"
    timeout: 60
  register: acme_health

- name: Data checksums must be on
  ansible.builtin.assert:
    that: acme_health.data_checksums

- name: Check the direct TLS handshake path through the public name
  shadowdb_pg_health:
    address: acme.db.example
    port: 5432
    sslnegotiation: direct
    sslrootcert: system
    dbname: acme
    user: acme
    password: "{{ acme_password }}"
"""

RETURN = r"""
server_version_num:
  description: C(server_version_num) of the cluster.
  returned: success
  type: int
  sample: 180001
server_version:
  description: C(server_version) setting of the cluster.
  returned: success
  type: str
  sample: "18.1 (Debian 18.1-1.pgdg13+2)"
version:
  description: Full output of C(version()).
  returned: success
  type: str
  sample: "PostgreSQL 18.1 (Debian 18.1-1.pgdg13+2) on x86_64-pc-linux-gnu, compiled by gcc ..., 64-bit"
data_checksums:
  description: Whether data checksums are enabled.
  returned: success
  type: bool
  sample: true
ssl:
  description: Whether the session is encrypted with TLS.
  returned: success
  type: bool
  sample: true
ssl_version:
  description: TLS protocol version of the session, V(null) if not encrypted.
  returned: success
  type: str
  sample: TLSv1.3
ssl_cipher:
  description: TLS cipher of the session, V(null) if not encrypted.
  returned: success
  type: str
  sample: TLS_AES_256_GCM_SHA384
attempts:
  description: Number of connection attempts made.
  returned: always
  type: int
  sample: 3
elapsed:
  description: Seconds spent until the check passed or gave up.
  returned: always
  type: float
  sample: 2.041
error:
  description: Last error reported by libpq (first line, password scrubbed).
  returned: failure
  type: str
  sample: 'connection failed: connection to server at "127.0.0.1", port 6123 failed: Connection refused'
"""


def validate_params(params):
    """Return an error message naming the offending argument, or None if the arguments are valid."""
    if not 1 <= params["port"] <= 65535:
        return f"port={params['port']} is invalid: it must be between 1 and 65535"
    if params["timeout"] < 0:
        return f"timeout={params['timeout']} is invalid: it must be >= 0"
    if not params["interval"] > 0:
        return f"interval={params['interval']} is invalid: it must be > 0"
    if not params["address"]:
        return "address must not be empty"
    if params["sslnegotiation"] == "direct" and params["sslmode"] in WEAK_SSLMODES:
        return (
            f"sslnegotiation=direct cannot be used with sslmode={params['sslmode']}: "
            "use sslmode require, verify-ca or verify-full"
        )
    if params["require_ssl"] and params["sslmode"] == "disable":
        return "sslmode=disable contradicts require_ssl=true: set require_ssl=false or use another sslmode"
    cert = params.get("sslrootcert")
    if cert and cert != "system" and not os.path.isfile(cert):
        return f"sslrootcert={cert!r} is not a file on the managed host"
    return None


def main():
    module = AnsibleModule(
        argument_spec=dict(
            address=dict(type="str", default="127.0.0.1"),
            port=dict(type="int", required=True),
            server_name=dict(type="str"),
            dbname=dict(type="str", required=True),
            user=dict(type="str", required=True),
            password=dict(type="str", required=True, no_log=True),
            sslmode=dict(
                type="str",
                default="verify-full",
                choices=["disable", "allow", "prefer", "require", "verify-ca", "verify-full"],
            ),
            sslrootcert=dict(type="path"),
            sslnegotiation=dict(type="str", default="postgres", choices=["postgres", "direct"]),
            timeout=dict(type="int", default=30),
            interval=dict(type="float", default=1.0),
            require_ssl=dict(type="bool", default=True),
        ),
        supports_check_mode=True,
    )
    p = module.params
    if psycopg is None:
        module.fail_json(msg=missing_required_lib("psycopg (version 3)"), exception=PSYCOPG_IMPORT_ERROR)
    error = validate_params(p)
    if error:
        module.fail_json(msg=error)

    outcome = poll(make_probe(p), p["timeout"], p["interval"])
    result = dict(changed=False, attempts=outcome["attempts"], elapsed=round(outcome["elapsed"], 3))
    if outcome["facts"] is None:
        error = scrub(outcome["error"] or "no attempt completed", (p["password"],))
        if outcome["fatal"]:
            endpoint = format_endpoint(p["address"], p["port"])
            msg = (
                f"tenant cluster at {endpoint} (db {p['dbname']}, user {p['user']}) "
                f"failed the health check: {error}"
            )
        else:
            msg = not_serving_message(p, p["timeout"], error)
        module.fail_json(msg=msg, error=error, **result)
    result.update(outcome["facts"])
    module.exit_json(**result)


if __name__ == "__main__":
    main()

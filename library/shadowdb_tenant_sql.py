#!/usr/bin/python
# Copyright: ShadowDB contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Ansible module: a tenant's roles, database, extensions and grants, over one local connection."""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.shadowdb_sql import (  # noqa: F401 (the tests import them from here)
    PSYCOPG_IMPORT_ERROR,
    READONLY_FLAGS,  # noqa: F401 (the tests import it from here)
    TenantSql,
    connect,
    flag_words,
    owner_flags,
    psycopg,
    scram_matches,
    scram_verifier,
)

DOCUMENTATION = r"""
---
module: shadowdb_tenant_sql
short_description: A tenant's owner and read-only roles, database, extensions and grants in one call
description:
  - Connects once as the bootstrap superuser over the cluster's Unix socket (root is mapped to it
    by pg_ident) and brings the tenant's objects to the spec, each only when needed - pg_hba.conf
    as the server reads it has no error; the owner role (LOGIN, CREATEDB, SUPERUSER only when
    O(superuser)); the tenant's database owned by it; the extensions in that database; the
    read-only role, a member of C(pg_read_all_data) (or dropped when O(readonly) is false).
  - Passwords are sent as SCRAM-SHA-256 verifiers computed here, so the plain text never reaches
    the server (nor its log); a role's password is changed only when the stored verifier does not
    match it.
  - Used on a standalone tenant's host and on an HA tenant's leader.
requirements:
  - psycopg >= 3 (Python package, on the managed host)
options:
  socket_dir:
    description: The cluster's Unix socket directory.
    type: path
    required: true
  port:
    description: The cluster's port (names the socket file).
    type: int
    required: true
  owner:
    description: The owner role (also the database's name unless O(dbname) is given).
    type: str
    required: true
  owner_password:
    description: The owner's password.
    type: str
    required: true
    no_log: true
  superuser:
    description: The owner role is a superuser.
    type: bool
    default: false
  dbname:
    description: The tenant's database.
    type: str
  extensions:
    description: Extensions to create in the tenant's database (with CASCADE).
    type: list
    elements: str
    default: []
  readonly:
    description: Whether the read-only role exists.
    type: bool
    default: false
  readonly_user:
    description: The read-only role.
    type: str
  readonly_password:
    description: The read-only role's password (required when O(readonly)).
    type: str
    no_log: true
  check_hba:
    description: Fail when pg_hba.conf as the server reads it has an error (pg_hba_file_rules).
    type: bool
    default: true
author:
  - ShadowDB contributors
"""

RETURN = r"""
actions:
  description: What was (or in check mode would be) done, in order; never a secret.
  returned: always
  type: list
  elements: str
  sample: [created role acme, created database acme owned by acme, created extension pgcrypto]
"""


def main():
    module = AnsibleModule(
        argument_spec=dict(
            socket_dir=dict(type="path", required=True),
            port=dict(type="int", required=True),
            owner=dict(type="str", required=True),
            owner_password=dict(type="str", required=True, no_log=True),
            superuser=dict(type="bool", default=False),
            dbname=dict(type="str"),
            extensions=dict(type="list", elements="str", default=[]),
            readonly=dict(type="bool", default=False),
            readonly_user=dict(type="str"),
            readonly_password=dict(type="str", no_log=True),
            check_hba=dict(type="bool", default=True),
        ),
        required_if=[("readonly", True, ["readonly_user", "readonly_password"])],
        supports_check_mode=True,
    )
    if psycopg is None:
        module.fail_json(msg=missing_required_lib("psycopg"), exception=PSYCOPG_IMPORT_ERROR)
    p = module.params
    spec = dict(p, dbname=p["dbname"] or p["owner"])
    actions = []
    try:
        with connect(p, "postgres") as conn:
            work = TenantSql(module, conn)
            actions = work.actions
            work.converge(spec, lambda dbname: connect(p, dbname), check_hba=p["check_hba"])
    except (psycopg.Error, ValueError) as e:
        # psycopg's messages name the object and the problem; the passwords are sent only as verifiers.
        module.fail_json(msg=f"tenant {p['owner']}: {str(e).strip()}", actions=actions)
    module.exit_json(changed=bool(actions), actions=actions)


if __name__ == "__main__":
    main()

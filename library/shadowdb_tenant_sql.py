#!/usr/bin/python
# Copyright: ShadowDB contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Ansible module: a tenant's roles, database, extensions and grants, over one local connection."""

import base64
import hashlib
import hmac
import os
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

PSYCOPG_IMPORT_ERROR = None
try:
    import psycopg
    from psycopg import sql
except ImportError:
    psycopg = None
    PSYCOPG_IMPORT_ERROR = traceback.format_exc()

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

SCRAM_ITERATIONS = 4096
OWNER_FLAGS = ("rolcanlogin", "rolcreatedb", "rolsuper", "rolcreaterole", "rolreplication", "rolbypassrls")
ROLE_QUERY = (
    "SELECT rolcanlogin, rolcreatedb, rolsuper, rolcreaterole, rolreplication, rolbypassrls, rolpassword"
    " FROM pg_authid WHERE rolname = %s"
)
FLAG_WORDS = {
    "rolcanlogin": "LOGIN",
    "rolcreatedb": "CREATEDB",
    "rolsuper": "SUPERUSER",
    "rolcreaterole": "CREATEROLE",
    "rolreplication": "REPLICATION",
    "rolbypassrls": "BYPASSRLS",
}


def scram_keys(password, salt, iterations):
    """(StoredKey, ServerKey) of RFC 5802 for a password (ASCII passwords need no SASLprep)."""
    salted = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    return hashlib.sha256(client_key).digest(), server_key


def scram_verifier(password, salt=None, iterations=SCRAM_ITERATIONS):
    """The verifier PostgreSQL stores in pg_authid.rolpassword for scram-sha-256."""
    salt = salt if salt is not None else os.urandom(16)
    stored, server = scram_keys(password, salt, iterations)
    b64 = base64.b64encode
    return f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}${b64(stored).decode()}:{b64(server).decode()}"


def scram_matches(verifier, password):
    """Whether a stored verifier is the one of password (False for any other form, or none)."""
    try:
        method, rest = verifier.split("$", 1)
        params, keys = rest.split("$", 1)
        iterations, salt = params.split(":", 1)
        stored, server = keys.split(":", 1)
        if method != "SCRAM-SHA-256":
            return False
        want_stored, want_server = scram_keys(password, base64.b64decode(salt), int(iterations))
        got_stored, got_server = base64.b64decode(stored), base64.b64decode(server)
    except (AttributeError, ValueError):  # binascii.Error is a ValueError
        return False
    return hmac.compare_digest(got_stored, want_stored) and hmac.compare_digest(got_server, want_server)


def owner_flags(superuser):
    return {
        "rolcanlogin": True,
        "rolcreatedb": True,
        "rolsuper": bool(superuser),
        "rolcreaterole": False,
        "rolreplication": False,
        "rolbypassrls": False,
    }


READONLY_FLAGS = {
    "rolcanlogin": True,
    "rolcreatedb": False,
    "rolsuper": False,
    "rolcreaterole": False,
    "rolreplication": False,
    "rolbypassrls": False,
}


def flag_words(flags):
    """LOGIN NOSUPERUSER ... for CREATE/ALTER ROLE."""
    return " ".join(FLAG_WORDS[k] if flags[k] else "NO" + FLAG_WORDS[k] for k in OWNER_FLAGS)


class TenantSql:
    def __init__(self, module, conn):
        self.module = module
        self.conn = conn
        self.check = module.check_mode
        self.actions = []

    def execute(self, query, params=None):
        if not self.check:
            self.conn.execute(query, params)

    def row(self, query, params=None, conn=None):
        return (conn or self.conn).execute(query, params).fetchone()

    def hba(self):
        rows = self.conn.execute(
            "SELECT line_number, error FROM pg_hba_file_rules WHERE error IS NOT NULL ORDER BY line_number"
        ).fetchall()
        if rows:
            lines = "; ".join(f"line {n}: {error}" for n, error in rows)
            raise ValueError(f"pg_hba.conf as the server reads it has errors: {lines}")

    def role(self, name, password, flags):
        found = self.row(ROLE_QUERY, (name,))
        ident = sql.Identifier(name)
        if found is None:
            self.actions.append(f"created role {name}")
            verifier = scram_verifier(password)
            create = sql.SQL("CREATE ROLE {} " + flag_words(flags) + " PASSWORD {}")
            self.execute(create.format(ident, sql.Literal(verifier)))
            return
        current = dict(zip(OWNER_FLAGS, found[:-1], strict=True))
        if current != flags:
            self.actions.append(f"set the attributes of role {name} ({flag_words(flags)})")
            self.execute(sql.SQL("ALTER ROLE {} " + flag_words(flags)).format(ident))
        if not scram_matches(found[-1], password):
            self.actions.append(f"set the password of role {name}")
            verifier = scram_verifier(password)
            self.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(ident, sql.Literal(verifier)))

    def drop_role(self, name):
        if self.row("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)) is not None:
            self.actions.append(f"dropped role {name}")
            self.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))

    def database(self, dbname, owner):
        found = self.row("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (dbname,))
        if found is None:
            self.actions.append(f"created database {dbname} owned by {owner}")
            self.execute(
                sql.SQL("CREATE DATABASE {} OWNER {} ENCODING 'UTF8'").format(
                    sql.Identifier(dbname), sql.Identifier(owner)
                )
            )
            return True
        if found[0] != owner:
            self.actions.append(f"gave database {dbname} to {owner}")
            alter = sql.SQL("ALTER DATABASE {} OWNER TO {}")
            self.execute(alter.format(sql.Identifier(dbname), sql.Identifier(owner)))
        return False

    def membership(self, member, group):
        found = self.row("SELECT pg_has_role(%s, %s, 'MEMBER')", (member, group))
        if not found[0]:
            self.actions.append(f"granted {group} to {member}")
            self.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(group), sql.Identifier(member)))

    def extensions(self, conn, names):
        for name in names:
            if self.row("SELECT 1 FROM pg_extension WHERE extname = %s", (name,), conn=conn) is None:
                self.actions.append(f"created extension {name}")
                if not self.check:
                    create = sql.SQL("CREATE EXTENSION IF NOT EXISTS {} CASCADE")
                    conn.execute(create.format(sql.Identifier(name)))


def connect(params, dbname):
    return psycopg.connect(
        host=params["socket_dir"],
        port=params["port"],
        user="postgres",
        dbname=dbname,
        autocommit=True,
        connect_timeout=10,
        application_name="shadowdb_tenant_sql",
    )


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
    dbname = p["dbname"] or p["owner"]
    actions = []
    try:
        with connect(p, "postgres") as conn:
            work = TenantSql(module, conn)
            actions = work.actions
            if p["check_hba"]:
                work.hba()
            work.role(p["owner"], p["owner_password"], owner_flags(p["superuser"]))
            new_db = work.database(dbname, p["owner"])
            if p["readonly"]:
                work.role(p["readonly_user"], p["readonly_password"], READONLY_FLAGS)
                work.membership(p["readonly_user"], "pg_read_all_data")
            elif p["readonly_user"]:
                work.drop_role(p["readonly_user"])
            if p["extensions"] and not (module.check_mode and new_db):
                with connect(p, dbname) as db_conn:
                    work.extensions(db_conn, p["extensions"])
            elif p["extensions"]:
                actions.extend(f"created extension {name}" for name in p["extensions"])
    except (psycopg.Error, ValueError) as e:
        # psycopg's messages name the object and the problem; the passwords are sent only as verifiers.
        module.fail_json(msg=f"tenant {p['owner']}: {str(e).strip()}", actions=actions)
    module.exit_json(changed=bool(actions), actions=actions)


if __name__ == "__main__":
    main()

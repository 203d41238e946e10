# Copyright: ShadowDB contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""A tenant's roles, database, extensions and grants, over a local superuser connection.

Shared by shadowdb_tenant_sql and shadowdb_cluster_apply (``ansible.module_utils.shadowdb_sql``).
"""

import base64
import hashlib
import hmac
import os
import traceback

PSYCOPG_IMPORT_ERROR = None
try:
    import psycopg
    from psycopg import sql
except ImportError:
    psycopg = sql = None
    PSYCOPG_IMPORT_ERROR = traceback.format_exc()

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

    def converge(self, spec, connect_db, check_hba=True):
        """Bring the tenant's objects to spec (owner, owner_password, superuser, dbname,
        extensions, readonly, readonly_user, readonly_password): pg_hba.conf has no error, the
        owner role, its database, the read-only role (dropped when not wanted), the extensions.
        connect_db(dbname) opens a superuser connection to the tenant's database."""
        if check_hba:
            self.hba()
        self.role(spec["owner"], spec["owner_password"], owner_flags(spec["superuser"]))
        new_db = self.database(spec["dbname"], spec["owner"])
        if spec["readonly"]:
            self.role(spec["readonly_user"], spec["readonly_password"], READONLY_FLAGS)
            self.membership(spec["readonly_user"], "pg_read_all_data")
        elif spec.get("readonly_user"):
            self.drop_role(spec["readonly_user"])
        if not spec["extensions"]:
            return
        if self.check and new_db:  # no database to look in yet: every extension would be made
            self.actions.extend(f"created extension {name}" for name in spec["extensions"])
            return
        with connect_db(spec["dbname"]) as db_conn:
            self.extensions(db_conn, spec["extensions"])


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

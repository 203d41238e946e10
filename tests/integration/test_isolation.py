"""Isolation: a tenant that gets SUPERUSER still cannot read or signal another tenant on its host.

PostgreSQL superusers run programs and read files as the server's OS user, so what stops them
is the operating system: one OS user per tenant, a private (0700) volume per tenant, a sandboxed
unit. The test grants ita SUPERUSER, tries to reach itb from inside ita's server, and checks the
errors come from the OS (controls on ita's own files and postmaster show the methods work).
"""

import psycopg
import pytest
from psycopg import sql

ITB_FILE = "/mnt/db/itb/data/PG_VERSION"


def os_output(conn, command: str) -> str:
    """Run a shell command as ita's server process; return its stdout+stderr and exit code."""
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS it_os_out (line text)")
    conn.execute("TRUNCATE it_os_out")
    program = f'{command} 2>&1; echo "exit=$?"'
    conn.execute(sql.SQL("COPY it_os_out FROM PROGRAM {}").format(sql.Literal(program)))
    return "\n".join(row[0] for row in conn.execute("SELECT line FROM it_os_out").fetchall())


@pytest.fixture
def ita_superuser(lab, db1):
    # ita's server sees the other tenants' volumes that were mounted when it started (the unit
    # has its own mount namespace). Restart it so itb's volume is surely visible in there: then
    # only the OS permissions stand between ita and itb, which is what this test is about.
    lab.sh(db1, "systemctl restart shadowdb-postgres@ita.service")
    lab.wait_serving(db1, "ita", timeout=60)
    ita_pid = lab.postmaster_pid(db1, "ita")
    lab.sh(db1, f"nsenter -t {ita_pid} -m test -f {ITB_FILE}")  # visible to root in ita's namespace
    lab.psql_root(db1, "ita", "ALTER ROLE ita SUPERUSER")
    try:
        yield
    finally:
        lab.psql_root(db1, "ita", "ALTER ROLE ita NOSUPERUSER")
        assert lab.psql_root(db1, "ita", "SELECT rolsuper FROM pg_roles WHERE rolname = 'ita'") == "f"


def test_superuser_tenant_cannot_read_or_signal_another_tenant(lab, db1, ita_superuser):
    itb_pid = lab.postmaster_pid(db1, "itb")
    ita_pid = lab.postmaster_pid(db1, "ita")
    assert itb_pid > 0 and ita_pid > 0
    with lab.connect(db1, "ita", autocommit=True) as conn:
        assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone() == (
            True,
        )

        # Controls: the same methods work on ita's own files and postmaster.
        assert (
            conn.execute("SELECT pg_read_file('/mnt/db/ita/data/PG_VERSION')").fetchone()[0].strip() == "17"
        )
        assert "exit=0" in os_output(conn, f"kill -0 {ita_pid}")
        assert os_output(conn, "id -un").splitlines()[0] == "pg-ita"

        # Reading another tenant's file through a program: refused by the OS.
        with pytest.raises(psycopg.errors.ExternalRoutineException) as failed:
            conn.execute(f"COPY (SELECT 1) TO PROGRAM 'cat {ITB_FILE}'")
        assert "exited with exit code 1" in str(failed.value)
        out = os_output(conn, f"cat {ITB_FILE}")
        assert "Permission denied" in out and "exit=1" in out, out

        # Reading it through the server's own file functions: refused by the OS.
        with pytest.raises(psycopg.Error) as failed:
            conn.execute(sql.SQL("SELECT pg_read_file({})").format(sql.Literal(ITB_FILE)))
        assert "Permission denied" in str(failed.value), failed.value
        with pytest.raises(psycopg.Error) as failed:
            conn.execute("SELECT pg_ls_dir('/mnt/db/itb/data')")
        assert "Permission denied" in str(failed.value), failed.value

        # Writing into it: refused (read-only in ita's sandbox, and not ita's directory anyway).
        with pytest.raises(psycopg.Error) as failed:
            conn.execute("COPY (SELECT 'x') TO '/mnt/db/itb/data/it_intruder'")
        assert any(m in str(failed.value) for m in ("Permission denied", "Read-only file system")), (
            failed.value
        )

        # Signalling the other tenant's postmaster: refused by the OS.
        with pytest.raises(psycopg.errors.ExternalRoutineException):
            conn.execute(sql.SQL("COPY (SELECT 1) TO PROGRAM {}").format(sql.Literal(f"kill -0 {itb_pid}")))
        out = os_output(conn, f"kill -0 {itb_pid}")
        assert "Operation not permitted" in out and "exit=0" not in out, out

    assert not lab.exists(db1, "/mnt/db/itb/data/it_intruder")
    assert lab.postmaster_pid(db1, "itb") == itb_pid
    lab.wait_serving(db1, "itb", timeout=10)


def test_superuser_tenant_cannot_see_another_tenants_processes(lab, db1, ita_superuser):
    itb_pid = lab.postmaster_pid(db1, "itb")
    with lab.connect(db1, "ita", autocommit=True) as conn:
        listing = os_output(conn, "ps -eo user:32,pid,args")
        assert "exit=0" in listing, listing
        owners = {
            line.split()[0] for line in listing.splitlines()[1:] if line and not line.startswith("exit=")
        }
        assert "pg-ita" in owners, listing  # control: ita sees its own processes
        assert "pg-itb" not in owners, f"ita sees itb's processes:\n{listing}"
        cmdline = os_output(conn, f"cat /proc/{itb_pid}/cmdline")
        assert "exit=0" not in cmdline, f"ita reads itb's command line: {cmdline}"

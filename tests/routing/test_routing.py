"""Routing on a 1-host lab (the host is also etcd and HAProxy): tenants reached by name.

Each tenant is reached through HAProxy by TLS SNI on the shared port (libpq 17+,
sslnegotiation=direct, verify-full) and on its own proxy port; a name not in the registry is
refused; sessions open through the proxy survive the reload that routes a newly added tenant.
"""

import json
import time

import psycopg
import pytest

from tests.routing.client import TENANTS, connect, haproxy_stats_command, proxy_port

pytestmark = pytest.mark.lab

WRONG_PASSWORD = "not-the-password"  # noqa: S105 (a test value, refused by design)


@pytest.mark.parametrize("name", TENANTS)
def test_reached_by_sni_on_the_shared_port(lab, name):
    with connect(lab, name, 5432, direct=True) as conn:
        assert conn.execute("SELECT current_setting('cluster_name')").fetchone() == (name,)
        assert conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone() == (True,)


@pytest.mark.parametrize("name", TENANTS)
def test_reached_on_its_own_proxy_port(lab, name):
    with connect(lab, name, proxy_port(lab, name), direct=False) as conn:
        assert conn.execute("SELECT current_setting('cluster_name')").fetchone() == (name,)


def test_unknown_name_is_refused(lab):
    # No certificate check: only HAProxy's refusal (no default backend) can fail this connection.
    with pytest.raises(psycopg.OperationalError) as refused:
        connect(lab, "nobody", 5432, direct=True, password=WRONG_PASSWORD, sslmode="require").close()
    assert "password authentication failed" not in str(refused.value)


def test_wrong_password_is_refused_through_the_proxy(lab):
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        connect(lab, "rta", 5432, direct=True, password=WRONG_PASSWORD).close()


def test_open_sessions_survive_adding_a_tenant(lab):
    sessions = [connect(lab, name, 5432, direct=True) for name in TENANTS]
    sessions += [connect(lab, name, proxy_port(lab, name), direct=False) for name in TENANTS]
    pids = [s.execute("SELECT pg_backend_pid()").fetchone()[0] for s in sessions]
    try:
        out = lab.playbook(
            "tenant.yml", "-e", f"tenant_host={lab.hosts[0]}", "-e", json.dumps({"tenant": {"name": "rtc"}})
        )
        # Applied and reloaded in one call on a converged proxy (haproxy_routes_only); the
        # sessions below prove it was a reload, not a restart.
        assert "haproxy : Check and apply the configuration" in out
        for session, pid in zip(sessions, pids, strict=True):
            assert session.execute("SELECT pg_backend_pid()").fetchone()[0] == pid
        with connect(lab, "rtc", 5432, direct=True) as conn:
            assert conn.execute("SELECT current_setting('cluster_name')").fetchone() == ("rtc",)
    finally:
        for session in sessions:
            session.close()


@pytest.mark.parametrize("name", TENANTS)
def test_health_checks_pass_and_leave_the_tenant_log_quiet(lab, name):
    """HAProxy checks each backend at layer 7 (a protocol request the postmaster answers) every
    10 s since the tenant was routed, and none of those checks shows up in the tenant's log."""
    # Right after a reload or restart (earlier tests make both) a server is "UP 1/3" with its
    # check status INI until its first check ("* INI" while that check is in flight): wait up to
    # three check intervals for one to complete.
    deadline = time.monotonic() + 35
    while True:
        stats = lab.sh(lab.hosts[0], haproxy_stats_command("/stats;csv"))
        rows = [row.split(",") for row in stats.splitlines() if row.startswith(f"t_{name},")]
        server = next(row for row in rows if row[1] not in ("BACKEND", "FRONTEND"))
        check_status = server[36].removeprefix("* ")
        if check_status != "INI" or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert (server[17], check_status) == ("UP", "L7OK"), server
    log = lab.sh(lab.hosts[0], f"journalctl -u shadowdb-postgres@{name} --no-pager -o cat")
    assert "could not receive data from client" not in log
    assert "could not accept SSL connection" not in log

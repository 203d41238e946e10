"""Routing on a 1-host lab (the host is also etcd and HAProxy): tenants reached by name.

Each tenant is reached through HAProxy by TLS SNI on the shared port (libpq 17+,
sslnegotiation=direct, verify-full) and on its own proxy port; a name not in the registry is
refused; sessions open through the proxy survive the reload that routes a newly added tenant.
"""

import json

import psycopg
import pytest

from tests.labkit import Lab

pytestmark = pytest.mark.lab

TENANTS = ["rta", "rtb"]
WRONG_PASSWORD = "not-the-password"  # noqa: S105 (a test value, refused by design)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = Lab("rt", hosts=1, inventory_dir=tmp_path_factory.mktemp("routing-inventory"), routing=True)
    lab.up()
    try:
        lab.playbook("routing.yml")
        for name in TENANTS:
            lab.playbook(
                "tenant.yml",
                "-e",
                f"tenant_host={lab.hosts[0]}",
                "-e",
                json.dumps({"tenant": {"name": name}}),
            )
        yield lab
    finally:
        lab.down()


def owner_password(lab: Lab, name: str) -> str:
    env = lab.sh(lab.hosts[0], f"cat /etc/shadowdb/tenants/{name}/owner.env")
    return dict(line.split("=", 1) for line in env.splitlines() if "=" in line and not line.startswith("#"))[
        "PGPASSWORD"
    ]


def proxy_port(lab: Lab, name: str) -> int:
    return json.loads(lab.sh(lab.hosts[0], "cat /var/lib/shadowdb/ports/proxy.json"))["leases"][name]


def connect(lab: Lab, name: str, port: int, direct: bool, password: str | None = None, sslmode="verify-full"):
    extra = {"sslnegotiation": "direct"} if direct else {}
    return psycopg.connect(
        host=f"{name}.db.shadowdb.test",
        hostaddr=lab.address(lab.hosts[0]),
        port=port,
        dbname=name,
        user=name,
        password=password if password is not None else owner_password(lab, name),
        sslmode=sslmode,
        sslrootcert=str(lab.inventory_dir / "pki" / "ca.crt"),
        connect_timeout=5,
        autocommit=True,
        **extra,
    )


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
        assert "Reload HAProxy" in out
        for session, pid in zip(sessions, pids, strict=True):
            assert session.execute("SELECT pg_backend_pid()").fetchone()[0] == pid
        with connect(lab, "rtc", 5432, direct=True) as conn:
            assert conn.execute("SELECT current_setting('cluster_name')").fetchone() == ("rtc",)
    finally:
        for session in sessions:
            session.close()

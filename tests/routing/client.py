"""Client side of the routing tests: connect to a tenant of a routing lab as an application would."""

import json

import psycopg

from tests.labkit import Lab

DOMAIN = "db.shadowdb.test"
SNI_PORT = 5432
# Tenants of the shared lab (conftest.py), onboarded before the first test.
TENANTS = ["rta", "rtb"]


# Run inside a client container or a lab host: python3 - <mode> <tenant> <address> <port> <domain>;
# prints one word:
# "admitted" (the server asked for authentication), "refused" (closed before any answer),
# "nohba" (PostgreSQL refused: no pg_hba.conf entry) or "error: <message>".
PROBE = r"""
import socket, ssl, struct, sys
mode, tenant, address, port, domain = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
context = ssl.create_default_context()
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE
try:
    sock = socket.create_connection((address, port), timeout=5)
    if mode == "sni":
        context.set_alpn_protocols(["postgresql"])
    else:
        sock.sendall(struct.pack("!ii", 8, 80877103))
        if sock.recv(1) != b"S":
            raise ConnectionResetError("no TLS")
    tls = context.wrap_socket(sock, server_hostname=f"{tenant}.{domain}")
    params = b"user\0" + tenant.encode() + b"\0database\0" + tenant.encode() + b"\0\0"
    tls.sendall(struct.pack("!ii", 8 + len(params), 196608) + params)
    kind = tls.recv(1)
    if kind == b"R":
        print("admitted")
    elif kind == b"E":
        body = tls.recv(4096).decode("utf-8", "replace")
        print("nohba" if "no pg_hba.conf entry" in body else "error: " + body.replace("\0", " ")[:200])
    elif not kind:
        print("refused")
    else:
        print("error: answer " + repr(kind))
except (ConnectionError, ssl.SSLError, socket.timeout, OSError) as e:
    print("refused" if not isinstance(e, ConnectionRefusedError) else "error: " + str(e))
"""

# HAProxy's statistics and metrics listen on a root-only unix socket on the proxy host (and on the
# admin addresses of haproxy_admin_bind, none in the lab). This command, run on the proxy host,
# prints the HTTP status of GET <path> there, then the body.
HAPROXY_STATS_SOCKET = "/run/haproxy/stats.sock"


def haproxy_stats_command(path: str) -> str:
    return (
        "python3 -c \"import http.client, socket; c = http.client.HTTPConnection('haproxy'); "
        "c.sock = socket.socket(socket.AF_UNIX); "
        f"c.sock.connect('{HAPROXY_STATS_SOCKET}'); c.request('GET', '{path}'); "
        'r = c.getresponse(); print(r.status); print(r.read().decode())"'
    )


def owner_password(lab: Lab, name: str) -> str:
    env = lab.sh(lab.hosts[0], f"cat /etc/shadowdb/tenants/{name}/owner.env")
    return dict(line.split("=", 1) for line in env.splitlines() if "=" in line and not line.startswith("#"))[
        "PGPASSWORD"
    ]


def proxy_port(lab: Lab, name: str) -> int:
    """The tenant's proxy port, as its registry record gives it (the lab host is an etcd member)."""
    return lab.registry(lab.hosts[0])[name]["proxy_port"]


def postgres_port(lab: Lab, name: str) -> int:
    return json.loads(lab.sh(lab.hosts[0], "cat /var/lib/shadowdb/ports/postgres.json"))["leases"][name]


def conninfo(
    lab: Lab, name: str, port: int, direct: bool, password: str | None = None, sslmode="verify-full", **extra
) -> dict:
    """libpq parameters for tenant `name` on `port` of the lab host (HAProxy or the tenant itself)."""
    params = {
        "host": f"{name}.{DOMAIN}",
        "hostaddr": lab.address(lab.hosts[0]),
        "port": port,
        "dbname": name,
        "user": name,
        "password": password if password is not None else owner_password(lab, name),
        "sslmode": sslmode,
        "sslrootcert": str(lab.inventory_dir / "pki" / "ca.crt"),
        "connect_timeout": 5,
    }
    if direct:
        params["sslnegotiation"] = "direct"
    return params | extra


def connect(lab: Lab, name: str, port: int, direct: bool, password: str | None = None, sslmode="verify-full"):
    return psycopg.connect(autocommit=True, **conninfo(lab, name, port, direct, password, sslmode))

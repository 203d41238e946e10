"""Connect to demo tenants over TLS and print their connection strings.

The password is written to a root-only passfile next to the lab inventory and referenced by the
connection string; it is never printed.
"""

import argparse
import json
import os
import subprocess
from pathlib import Path

import psycopg


def host_address(container: str) -> str:
    out = subprocess.run(
        ["podman", "inspect", container, "--format", "{{json .NetworkSettings.Networks}}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    networks = json.loads(out)
    return next(iter(networks.values()))["IPAddress"]


def host_file(container: str, path: str) -> str:
    return subprocess.run(
        ["podman", "exec", container, "cat", path], check=True, capture_output=True, text=True
    ).stdout


def tenant_env(container: str, tenant: str) -> dict[str, str]:
    out = host_file(container, f"/etc/shadowdb/tenants/{tenant}/owner.env")
    return dict(line.split("=", 1) for line in out.splitlines() if line and not line.startswith("#"))


def proxy_port(container: str, tenant: str) -> int:
    """The tenant's proxy port, from its registry record (read with etcdctl on the etcd member)."""
    record = subprocess.run(
        ["podman", "exec", container, "etcdctl", "--endpoints=https://127.0.0.1:2379",
         "--cacert=/etc/etcd/pki/ca.crt", "--cert=/etc/etcd/pki/member.crt", "--key=/etc/etcd/pki/member.key",
         "get", "--print-value-only", f"/shadowdb/tenants/{tenant}"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return json.loads(record)["proxy_port"]


def check(conninfo: str) -> str:
    with psycopg.connect(conninfo, connect_timeout=10) as conn:
        version, ssl, checksums = conn.execute(
            "SELECT current_setting('server_version'), ssl, current_setting('data_checksums') "
            "FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
        ).fetchone()
    return f"PostgreSQL {version}, TLS {'on' if ssl else 'off'}, data checksums {checksums}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--inventory", required=True, type=Path)
    parser.add_argument("--work", required=True, type=Path, help="where passfiles are written")
    parser.add_argument("--host", required=True)
    parser.add_argument("tenants", nargs="+")
    args = parser.parse_args()

    inventory = args.inventory.resolve()
    ca = inventory / "pki" / "ca.crt"
    address = host_address(args.host)
    for tenant in args.tenants:
        env = tenant_env(args.host, tenant)
        passfile = args.work.resolve() / f"{tenant}.pgpass"
        fd = os.open(passfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            # Any port: the same credentials work directly and through HAProxy.
            f.write(f"*:*:{env['PGDATABASE']}:{env['PGUSER']}:{env['PGPASSWORD']}\n")
        common = (
            f"host={env['PGHOST']} hostaddr={address} dbname={env['PGDATABASE']} user={env['PGUSER']} "
            f"passfile={passfile} sslmode=verify-full sslrootcert={ca}"
        )
        routes = {
            # One port for every tenant, routed by TLS SNI (libpq 17+ clients).
            "HAProxy SNI (port 5432)": f"{common} port=5432 sslnegotiation=direct",
            # The tenant's own proxy port, for clients older than libpq 17.
            "HAProxy per-tenant port": f"{common} port={proxy_port(args.host, tenant)}",
        }
        print(f"{tenant}:")
        for label, conninfo in routes.items():
            print(f"  {label}: {check(conninfo)}")
            print(f"    {conninfo}")


if __name__ == "__main__":
    main()

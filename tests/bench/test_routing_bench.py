"""Routing benchmark: pgbench directly against a tenant and through HAProxy, in the same run.

Method
------
One lab host (podman container booting systemd) is db host, etcd and HAProxy at once; one
tenant (``rtbench``, tier medium) holds pgbench's tables (scale SHADOWDB_BENCH_SCALE, default 10).
pgbench 17 (Debian's postgresql-client-17) runs INSIDE the lab host, so client, HAProxy and
PostgreSQL share the machine's 2 cores (with whatever else runs on them), exactly like an
application on the proxy host; every path uses TLS with ``sslmode=verify-full`` and
scram-sha-256, and goes to the host's own address on the lab network:

- direct: the tenant's PostgreSQL port (SSLRequest negotiation, as any libpq client does);
- sni:    HAProxy's shared port 5432, routed by TLS SNI (``sslnegotiation=direct``);
- port:   HAProxy's per-tenant port (SSLRequest negotiation, like older clients).

For select-only (``-S``) and simple-update (``-N``), at 1 and 16 clients, the three paths run
back to back in ROUNDS rounds (SHADOWDB_BENCH_ROUNDS, default 3) of SHADOWDB_BENCH_SECONDS
(default 8) seconds each, the order reversed every other round. The machine's 2 cores are shared
with other work whose load comes and goes: a ratio is therefore taken between runs of the SAME
round (seconds apart), and the median over the rounds is printed. Printed per path: TPS, average
latency and p99 latency (from pgbench's per-transaction log, ``-l``), TPS/direct, and the added
latency per query in microseconds (average latency minus direct's). Connection setup:
``pgbench -C`` (a new TLS + scram connection per transaction, 1 client, select-only, 5 s), average
connection time per path and its ratio to direct; direct is also measured with
``sslnegotiation=direct`` (direct/tls), the negotiation the SNI path uses.
Simple-update commits with fsync on the tenant's loop device: its figures mostly show the
machine's disk, not the proxy.

Targets (issue #4): +<= 40 us per query at 1 client, >= 0.85x direct TPS at 16 clients,
connection setup through the proxy <= 1.1x direct. Figures only, no assertions on them.

SHADOWDB_BENCH_HAPROXY_GLOBAL (JSON {keyword: value}) re-renders HAProxy with these global
settings (haproxy_global_settings) before measuring, to try tunings.
Run with `make bench` or `pytest tests/bench/test_routing_bench.py -q -s`.
"""

import json
import os
import shlex
import statistics

import pytest

from tests.labkit import Lab

pytestmark = pytest.mark.bench

TENANT = "rtbench"
DOMAIN = "db.shadowdb.test"
SECONDS = int(os.environ.get("SHADOWDB_BENCH_SECONDS", "8"))
ROUNDS = int(os.environ.get("SHADOWDB_BENCH_ROUNDS", "3"))
SCALE = int(os.environ.get("SHADOWDB_BENCH_SCALE", "10"))
CONNECT_SECONDS = int(os.environ.get("SHADOWDB_BENCH_CONNECT_SECONDS", "5"))
HAPROXY_GLOBAL = os.environ.get("SHADOWDB_BENCH_HAPROXY_GLOBAL", "")
PGBENCH = "/usr/lib/postgresql/17/bin/pgbench"
LOGS = "/tmp/pgbench-logs"
# CPU time (ns) HAProxy's processes have run so far: the first field of each thread's schedstat.
HAPROXY_CPU_NS = (
    'for d in /proc/[0-9]*; do [ "$(cat $d/comm 2>/dev/null)" = haproxy ] && cat $d/task/*/schedstat; done'
    " 2>/dev/null | awk '{s += $1} END {printf \"%d\\n\", s}'"
)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = Lab("rtb", hosts=1, inventory_dir=tmp_path_factory.mktemp("routing-bench-inventory"), routing=True)
    lab.up()
    try:
        lab.playbook("routing.yml")
        spec = {"tenant": {"name": TENANT, "tier": "medium"}}
        lab.playbook("tenant.yml", "-e", f"tenant_host={lab.hosts[0]}", "-e", json.dumps(spec))
        if HAPROXY_GLOBAL:
            lab.playbook(
                "routing.yml", "-e", json.dumps({"haproxy_global_settings": json.loads(HAPROXY_GLOBAL)})
            )
        yield lab
    finally:
        lab.down()


def paths(lab: Lab) -> dict[str, str]:
    """libpq connection strings of the three paths (the password comes from owner.env)."""
    host = lab.hosts[0]
    leases = {
        "postgres": json.loads(lab.sh(host, "cat /var/lib/shadowdb/ports/postgres.json"))["leases"][TENANT],
        "proxy": lab.registry(host)[TENANT]["proxy_port"],
    }
    common = (
        f"host={TENANT}.{DOMAIN} hostaddr={lab.address(host)} dbname={TENANT} user={TENANT} "
        "sslmode=verify-full sslrootcert=/etc/shadowdb/ca.crt"
    )
    return {
        "direct": f"{common} port={leases['postgres']}",
        "sni": f"{common} port=5432 sslnegotiation=direct",
        "port": f"{common} port={leases['proxy']}",
    }


def pgbench(lab: Lab, conninfo: str, *args: str, log: bool = False) -> dict:
    """Run pgbench in the lab host with the tenant's owner credentials; return its figures."""
    logging = f"rm -rf {LOGS} && mkdir -p {LOGS} && cd {LOGS} && " if log else ""
    flags = " ".join(shlex.quote(a) for a in args) + (" -l" if log else "")
    script = (
        f"set -a; . /etc/shadowdb/tenants/{TENANT}/owner.env; set +a; "
        f'echo "haproxy before = $({HAPROXY_CPU_NS})"; '
        f"{logging}{PGBENCH} {flags} {shlex.quote(conninfo)} 2>&1; "
        f'echo "haproxy after = $({HAPROXY_CPU_NS})"'
    )
    out = lab.sh(lab.hosts[0], script)
    figures = {}
    for line in out.splitlines():
        key, sep, value = line.partition(" = ")
        if not sep:
            key, sep, value = line.partition(": ")
        if sep:
            figures[key.strip()] = value
    assert "tps" in figures, out
    transactions = int(figures["number of transactions actually processed"].split()[0].split("/")[0])
    haproxy_ns = int(figures["haproxy after"]) - int(figures["haproxy before"])
    result = {
        "tps": float(figures["tps"].split()[0]),
        "avg_ms": float(figures["latency average"].split()[0]),
        "connect_ms": float(figures.get("average connection time", "0").split()[0]),
        # HAProxy's own CPU time per transaction: what tuning changes, whatever else runs here.
        "haproxy_us": haproxy_ns / 1000 / max(transactions, 1),
    }
    if log:
        # Column 3 of pgbench's per-transaction log is the transaction's latency in microseconds.
        latencies = sorted(
            int(v) for v in lab.sh(lab.hosts[0], f"cat {LOGS}/pgbench_log.* | cut -d' ' -f3").split()
        )
        result["p99_ms"] = latencies[int(0.99 * (len(latencies) - 1))] / 1000
    return result


def measure(lab: Lab, conninfos: dict[str, str], *args: str, log: bool = True) -> dict[str, dict]:
    """ROUNDS rounds; in each, every path runs back to back (order reversed every other round), so
    the paths of one round see the same background load. Per path: the medians over the rounds of
    its figures and of its ratios to direct in the same round."""
    rounds = []
    for i in range(ROUNDS):
        order = list(conninfos) if i % 2 == 0 else list(reversed(conninfos))
        rounds.append({name: pgbench(lab, conninfos[name], *args, log=log) for name in order})
    results = {}
    for name in conninfos:
        mine = [r[name] for r in rounds]
        results[name] = {key: statistics.median(m[key] for m in mine) for key in mine[0]} | {
            "tps_ratio": statistics.median(r[name]["tps"] / r["direct"]["tps"] for r in rounds),
            "added_us": statistics.median((r[name]["avg_ms"] - r["direct"]["avg_ms"]) * 1000 for r in rounds),
            "connect_ratio": statistics.median(
                r[name]["connect_ms"] / r["direct"]["connect_ms"] if r["direct"]["connect_ms"] else 0
                for r in rounds
            ),
        }
    return results


def test_pgbench_direct_and_through_haproxy(lab):
    conninfos = paths(lab)
    lab.sh(
        lab.hosts[0],
        f"set -a; . /etc/shadowdb/tenants/{TENANT}/owner.env; set +a; "
        f"{PGBENCH} -i -q -s {SCALE} {shlex.quote(conninfos['direct'])} >/dev/null 2>&1",
    )
    haproxy = lab.sh(
        lab.hosts[0],
        "haproxy -v | head -1; echo Nice=$(systemctl show -P Nice haproxy.service);"
        " grep -E '^\\s+(nbthread|tune|cpu-map|busy)' /etc/haproxy/haproxy.cfg || true",
    )
    print(f"\n[bench] routing: pgbench {SECONDS} s x {ROUNDS} rounds a path, scale {SCALE}, in the lab host")
    print(f"[bench]   {' / '.join(haproxy.strip().splitlines())}")
    if HAPROXY_GLOBAL:
        print(f"[bench]   haproxy_global_settings {HAPROXY_GLOBAL}")
    head = f"{'workload':<22} {'path':<7} {'TPS':>9} {'avg ms':>8} {'p99 ms':>8} {'TPS/direct':>10}"
    head += f" {'+us/query':>9} {'HAProxy CPU us/tx':>17}"
    print(f"[bench]   {head}")
    for mode, flag in (("select-only", "-S"), ("simple-update", "-N")):
        for clients in (1, 16):
            threads = min(clients, 2)
            results = measure(
                lab, conninfos, flag, "-c", str(clients), "-j", str(threads), "-T", str(SECONDS)
            )
            for name, r in results.items():
                workload = f"{mode} {clients:>2} clients"
                print(
                    f"[bench]   {workload:<22} {name:<7} {r['tps']:9.0f} {r['avg_ms']:8.3f}"
                    f" {r['p99_ms']:8.3f} {r['tps_ratio']:9.2f}x {r['added_us']:+9.0f}"
                    f" {r['haproxy_us']:17.1f}"
                )

    # Connection setup: a new TLS + scram connection per transaction.
    connect_paths = conninfos | {"direct/tls": conninfos["direct"] + " sslnegotiation=direct"}
    results = measure(lab, connect_paths, "-C", "-S", "-c", "1", "-T", str(CONNECT_SECONDS), log=False)
    print("[bench]   connection setup (pgbench -C, 1 client): average connection time")
    for name, r in results.items():
        print(
            f"[bench]   {name:<11} {r['connect_ms']:7.2f} ms   {r['connect_ratio']:5.2f}x direct"
            f"   ({r['tps']:.0f} connections/s, HAProxy CPU {r['haproxy_us']:.0f} us/connection)"
        )

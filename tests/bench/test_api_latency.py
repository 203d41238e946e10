"""Onboarding latency through the API: request -> tenant healthy AND routable by SNI through HAProxy.

A 2-host lab with routing (db1 is also etcd and HAProxy), the API as a real process on a real
catalog. In the same run:
- raw shell baseline: tests/bench/raw_tenant.sh (truncate + losetup + mkfs + mount + useradd +
  initdb + unit + start + pg_isready) on a lab host, SHADOWDB_BENCH_RAW times;
- one tenant at a time: SHADOWDB_BENCH_SINGLE onboardings, one after the other;
- SHADOWDB_BENCH_CONCURRENT (default 10) requests at once for ONE host, right after the single
  ones so that the host holds about as many tenants as when one tenant was timed (an API process
  on the same catalog whose host group is that host alone places them; the first API's worker
  runs them): on db1, then the same on db2, which also evens out the two hosts;
- 2 x SHADOWDB_BENCH_CONCURRENT requests at once over both hosts, run by the API's worker and a
  second worker process (``python -m api worker``) on the same catalog;
- the engine's own overhead per job, from the jobs' events: claimed -> first playbook start, and
  last playbook end -> job done.
Each latency runs from the POST to the first successful query over TLS through HAProxy's SNI
port (sslnegotiation=direct, verify-full) with the credentials the job returned; each client
follows its job's event stream (api/client.py), as a platform would, instead of polling.
Targets (issue #14): p50 <= 10 s for one tenant; 10 at once for one host, and 20 over 2 hosts
with 2 workers, each all done within 2x one tenant's time.
Prints figures and ratios; asserts only that every tenant ended up healthy and routable.
Run with `make bench` or `pytest tests/bench/test_api_latency.py -s`.
"""

import io
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import psycopg
import pytest

from api.catalog import Catalog, migrate
from api.client import follow
from api.devdb import DevDB
from tests.api.conftest import REPO, Server, Worker, bearer, server_env
from tests.bench.cpukit import CpuMeter, background_load
from tests.bench.rawkit import raw_times
from tests.labkit import Lab

pytestmark = pytest.mark.bench

RAW = int(os.environ.get("SHADOWDB_BENCH_RAW", "3"))
SINGLE = int(os.environ.get("SHADOWDB_BENCH_SINGLE", "3"))
CONCURRENT = int(os.environ.get("SHADOWDB_BENCH_CONCURRENT", "10"))
TIMEOUT = 1800


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = Lab("apib", hosts=2, inventory_dir=tmp_path_factory.mktemp("apib-inventory"), routing=True)
    lab.up()
    try:
        lab.playbook("site.yml")  # packages on both hosts, registry, HAProxy
        yield lab
    finally:
        lab.down()


@pytest.fixture(scope="module")
def api(lab, tmp_path_factory):
    db = DevDB.start()
    try:
        migrate(db.url)
        env = server_env(
            {
                "database_url": db.url,
                "inventory": lab.inventory_dir,
                "work_dir": tmp_path_factory.mktemp("apib-work"),
                "poll_interval": 0.1,
                "sni_port": 5432,
                "max_workers": 8,
                # The drift check is a periodic task on wall-clock minutes (a playbook over every
                # host): off, so that it never lands inside a measured phase.
                "drift_interval": 0,
            }
        )
        server = Server(env, tmp_path_factory.mktemp("apib-log") / "api.log").start()
        # The same catalog, placing on one host alone (its host group), queueing only: for the
        # requests aimed at one host.
        server.alone = {}
        for host in lab.hosts:
            group = f"bench_{host.rsplit('-', 1)[-1]}"
            (lab.inventory_dir / f"{group}.yml").write_text(f"{group}:\n  hosts:\n    {host}:\n")
            server.alone[host] = Server(
                env | {"SHADOWDB_API_HOST_GROUP": group, "SHADOWDB_API_ENGINE": "false"},
                tmp_path_factory.mktemp(f"apib-log-{group}") / "api.log",
            ).start()
        server.worker_env = env | {"PYTHONPATH": str(REPO)}
        catalog = Catalog(db.url, max_size=2)
        catalog.open()
        try:
            server.token = catalog.create_token("bench", "admin")[1]
            server.database_url = db.url
        finally:
            catalog.close()
        try:
            yield server
        finally:
            for alone in server.alone.values():
                alone.stop()
            server.stop()
    finally:
        db.stop()


# Per tenant, the client's wall-clock marks (posted, job seen done, routable), for phases().
MARKS: dict[str, dict[str, float]] = {}


def onboard(lab: Lab, api, name: str, via=None) -> float:
    """POST a tenant (to ``via``, default the API), wait for its job, then connect by SNI through
    HAProxy: seconds, end to end."""
    h = bearer(api.token)
    t0 = time.monotonic()
    MARKS[name] = {"posted": time.time()}
    r = httpx.post(f"{(via or api).url}/v1/tenants", json={"name": name}, headers=h, timeout=30)
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    # Followed by its event stream, as api/client.py does: 10 clients polling GET /v1/jobs every
    # 0.1 s took about a third of the machine's 2 cores from the run they waited for.
    end = follow(api.url, api.token, job_id, out=io.StringIO(), timeout=TIMEOUT)
    assert end["status"] == "succeeded", f"{name}: {end['status']}: {end['error']}"
    job = httpx.get(f"{api.url}/v1/jobs/{job_id}", headers=h, timeout=30).json()  # the credentials, once
    MARKS[name]["seen_done"] = time.time()
    sni = httpx.get(f"{api.url}/v1/tenants/{name}", headers=h, timeout=30).json()["endpoints"]["sni"]
    with psycopg.connect(
        host=sni["host"],
        hostaddr=lab.address(lab.hosts[0]),
        port=sni["port"],
        dbname=sni["dbname"],
        user=sni["user"],
        password=job["credentials"]["password"],
        sslmode="verify-full",
        sslnegotiation="direct",
        sslrootcert=str(lab.inventory_dir / "pki" / "ca.crt"),
        connect_timeout=10,
    ) as conn:
        assert conn.execute("SELECT current_setting('cluster_name')").fetchone() == (name,)
    MARKS[name]["routable"] = time.time()
    return time.monotonic() - t0


def test_api_onboarding_latency(lab, api, tmp_path):
    # Warm-up, not timed: the first tenant of each host converges the host's shared parts.
    with ThreadPoolExecutor(2) as pool:
        warm = list(pool.map(lambda name: onboard(lab, api, name), ["warm1", "warm2"]))

    raw = raw_times(lab, lab.hosts[1], RAW)

    load = background_load()
    with CpuMeter() as single_cpu:
        single = [onboard(lab, api, f"one{i}") for i in range(SINGLE)]

    cpu = {}

    def at_once(prefix, count, via=None):
        names = [f"{prefix}{i}" for i in range(count)]
        t0 = time.monotonic()
        with CpuMeter() as cpu[prefix], ThreadPoolExecutor(count) as pool:
            each = list(pool.map(lambda name: onboard(lab, api, name, via), names))
        return each, time.monotonic() - t0

    # One host at a time, right after the single ones: a host then holds about as many tenants
    # as when one tenant was timed (a host's runs slow down as it fills, docs/performance.md).
    # db2's turn also evens out the hosts, so that placement (least loaded first) then gives
    # each host half of the requests over both.
    fill, one_host, one_host_total = {}, {}, {}
    for host, prefix in zip(lab.hosts, ("many", "more"), strict=False):
        fill[host] = tenants_on(api, host)
        one_host[host], one_host_total[host] = at_once(prefix, CONCURRENT, via=api.alone[host])
    fill["both"] = {host: tenants_on(api, host) for host in lab.hosts}
    worker = Worker(api.worker_env, tmp_path / "worker.log").start()
    try:
        two_hosts, two_hosts_total = at_once("wide", 2 * CONCURRENT)
    finally:
        worker.stop()
    claim, finish = overhead(api)
    runs = batch_sizes(api)
    split = {prefix: phases(api, prefix) for prefix in ("one", "many")}

    raw_p50, one_p50 = statistics.median(raw), statistics.median(single)
    print("\n[bench] API onboarding (request -> healthy and routable by SNI), 2 lab hosts, proxy on db1")
    print(f"[bench]   warm-up (first tenant per host): {', '.join(f'{w:.1f}' for w in warm)} s")
    print(f"[bench]   raw shell, {RAW}x        : p50 {raw_p50:6.2f} s  max {max(raw):6.2f} s")
    print(
        f"[bench]   API, 1 at a time, {SINGLE}x : p50 {one_p50:6.2f} s  max {max(single):6.2f} s"
        f"  = {one_p50 / raw_p50:5.1f}x raw  (target p50 <= 10 s)"
    )
    for host in lab.hosts:
        print(
            f"[bench]   API, {CONCURRENT} at once, 1 host ({host.rsplit('-', 1)[-1]}, {fill[host]} tenants"
            f" on it): p50 {statistics.median(one_host[host]):6.2f} s  all done in"
            f" {one_host_total[host]:6.2f} s = {one_host_total[host] / one_p50:4.2f}x one (target <= 2x)"
        )
    print(
        f"[bench]   API, {2 * CONCURRENT} at once, 2 hosts, 2 workers ({fill['both']} tenants):"
        f" p50 {statistics.median(two_hosts):6.2f} s"
        f"  all done in {two_hosts_total:6.2f} s = {two_hosts_total / one_p50:4.2f}x one (target <= 2x)"
    )
    # Busy CPU-seconds / cores is the least time the work can take here (tests/bench/cpukit.py).
    print(f"[bench]   {load}")
    print(f"[bench]   CPU, 1 at a time : {single_cpu.summary(SINGLE)}")
    for prefix, count, where in (
        ("many", CONCURRENT, "db1"),
        ("more", CONCURRENT, "db2"),
        ("wide", 2 * CONCURRENT, "2 hosts"),
    ):
        print(
            f"[bench]   CPU, {count} at once, {where}: {cpu[prefix].summary(count)}"
            f" = {cpu[prefix].floor / one_p50:4.2f}x one"
        )
    for prefix in ("many", "more", "wide"):
        print(f"[bench]   runs of the {prefix}* jobs (tenants per run, by host): {runs.get(prefix, {})}")
    for prefix, label in (("one", "1 at a time"), ("many", f"{CONCURRENT} at once, db1")):
        print(
            f"[bench]   where the time goes, {label} (p50 s): "
            + ", ".join(f"{k} {v:.2f}" for k, v in split[prefix].items())
        )
    print(
        f"[bench]   engine overhead per job: claimed -> playbook start p50 {statistics.median(claim):.2f} s"
        f" (max {max(claim):.2f}), playbook end -> job done p50 {statistics.median(finish):.2f} s"
        f" (max {max(finish):.2f}), {len(claim)} jobs"
    )


def catalog_rows(api, sql: str, params: tuple = ()) -> list[dict]:
    """The rows of one query on the bench's catalog."""
    catalog = Catalog(api.database_url, max_size=2)
    catalog.open()
    try:
        with catalog.conn() as conn:
            return conn.execute(sql, params).fetchall()
    finally:
        catalog.close()


def tenants_on(api, host: str) -> int:
    """How many tenants the catalog places on host."""
    return catalog_rows(api, "SELECT count(*) AS n FROM tenants WHERE host = %s", (host,))[0]["n"]


def overhead(api) -> tuple[list[float], list[float]]:
    """The engine's own time per job of the catalog, from its events (see engine_overhead)."""
    from tests.api.test_e2e_lab import engine_overhead

    streams: dict[str, list] = {}
    for e in catalog_rows(
        api,
        "SELECT e.job_id, e.type, e.data, e.created_at FROM job_events e JOIN jobs j ON j.id = e.job_id"
        " WHERE j.status = 'succeeded' ORDER BY e.job_id, e.seq",
    ):
        streams.setdefault(str(e["job_id"]), []).append(
            (e["type"], e["data"] | {"at": e["created_at"].isoformat()})
        )
    return engine_overhead(streams)


def phases(api, prefix: str) -> dict[str, float]:
    """Median seconds of each phase of the jobs of tenants named prefix + digits, from the
    client's marks (MARKS) and the catalog's times: POST -> job in the catalog, -> claimed by a
    worker, -> its host step started (the batch gathered), -> step finished (the playbook run),
    -> job done, -> seen done by the client (its event stream), -> first query through HAProxy."""
    rows = catalog_rows(
        api,
        "SELECT j.tenant, extract(epoch FROM j.created_at) AS created, e.type, e.data,"
        " extract(epoch FROM e.created_at) AS at FROM jobs j JOIN job_events e ON e.job_id = j.id"
        " WHERE j.tenant ~ %s AND j.kind = 'create' ORDER BY e.seq",
        (f"^{prefix}[0-9]+$",),
    )
    times: dict[str, dict[str, float]] = {}
    for row in rows:
        t = times.setdefault(row["tenant"], {"created": float(row["created"])})
        kind, data, at = row["type"], row["data"], float(row["at"])
        if kind == "job" and data.get("status") == "running":
            t.setdefault("claimed", at)
        elif kind == "step" and data.get("state") == "started":
            t.setdefault("started", at)
        elif kind == "step" and data.get("state") == "finished":
            t["finished"] = at
        elif kind == "job" and data.get("status") in ("succeeded", "failed"):
            t["done"] = at
    order = ["posted", "created", "claimed", "started", "finished", "done", "seen_done", "routable"]
    out = {}
    for before, after in zip(order, order[1:], strict=False):
        gaps = [
            m[after] - m[before]
            for name, t in times.items()
            for m in [MARKS.get(name, {}) | t]
            if before in m and after in m
        ]
        if gaps:
            out[f"{before}->{after}"] = statistics.median(gaps)
    return out


def batch_sizes(api) -> dict[str, dict[str, list[int]]]:
    """{name prefix: {host: the number of tenants of each host-step run, in order}} from the
    jobs' step events (a batch's events name its run and tenants; a run of one names neither)."""
    rows = catalog_rows(
        api,
        "SELECT j.tenant, j.host, e.data FROM job_events e JOIN jobs j ON j.id = e.job_id"
        " WHERE e.type = 'step' AND e.data->>'step' = 'host' AND e.data->>'state' = 'started'"
        " ORDER BY e.created_at",
    )
    seen, out = set(), {}
    for row in rows:
        prefix = row["tenant"].rstrip("0123456789")
        run = row["data"].get("run") or row["tenant"]
        if (prefix, run) in seen:
            continue
        seen.add((prefix, run))
        size = len(row["data"].get("tenants") or [row["tenant"]])
        out.setdefault(prefix, {}).setdefault(row["host"], []).append(size)
    return out

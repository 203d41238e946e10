"""End to end on a lab host: the API as a real process, real playbooks, a real tenant.

create (SSE followed to the end) -> connect over TLS with the password returned once -> patch
tier small -> medium -> a second tenant, the API killed mid-job and restarted (the job re-runs,
the tenant ends up healthy) -> delete both -> nothing left on the host. The password is looked for in the
runner artifacts, the catalog and the API log: it must be in none of them.
"""

import json
import time

import httpx
import psycopg
import pytest

from tests.labkit import Lab

from .conftest import Server, bearer, server_env

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = Lab("api", hosts=1, inventory_dir=tmp_path_factory.mktemp("api-inventory"))
    lab.up()
    yield lab
    lab.down()


@pytest.fixture(scope="module")
def api(lab, devdb, tmp_path_factory):
    from .conftest import truncate

    truncate(devdb.url)
    work = tmp_path_factory.mktemp("api-work")
    env = server_env(
        {
            "database_url": devdb.url,
            "inventory": lab.inventory_dir,
            "work_dir": work,
            "keep_artifacts": "true",  # kept so that this test can search them for secrets
            "poll_interval": 0.2,
        }
    )
    server = Server(env, tmp_path_factory.mktemp("api-log") / "api.log").start()
    server.work_dir = work
    yield server
    server.stop()


@pytest.fixture(scope="module")
def token(devdb):
    from api.catalog import Catalog

    catalog = Catalog(devdb.url, max_size=2)
    catalog.open()
    try:
        return catalog.create_token("e2e", "admin")[1]
    finally:
        catalog.close()


def follow(api, token, job_id, until=None, timeout=600):
    """Read a job's SSE stream until its 'end' event (or until(event) is true); return the events."""
    events = []
    deadline = time.monotonic() + timeout
    with httpx.stream(
        "GET", f"{api.url}/v1/jobs/{job_id}/events", headers=bearer(token), timeout=httpx.Timeout(30, read=60)
    ) as r:
        assert r.status_code == 200, r.read()
        kind = None
        for line in r.iter_lines():
            assert time.monotonic() < deadline, f"job {job_id} still running after {timeout} s"
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                events.append((kind, json.loads(line[6:])))
                if kind == "end" or (until and until(kind, events[-1][1])):
                    return events
    raise AssertionError(f"stream ended without 'end': {events[-5:]}")


def succeeded(api, token, job_id, events) -> None:
    if events[-1][1].get("status") != "succeeded":
        job = httpx.get(f"{api.url}/v1/jobs/{job_id}", headers=bearer(token)).json()
        raise AssertionError(f"job {job_id} ({job['kind']} {job['tenant']}) {job['status']}: {job['error']}")


def connect(lab, endpoint, password, ca):
    conninfo = (
        f"host={endpoint['host']} hostaddr={lab.address(lab.hosts[0])} port={endpoint['port']} "
        f"dbname={endpoint['dbname']} user={endpoint['user']} sslmode=verify-full sslrootcert={ca}"
    )
    return psycopg.connect(conninfo, password=password, connect_timeout=10)


def test_tenant_lifecycle_through_the_api(lab, api, token, devdb):
    h = bearer(token)
    ca = lab.inventory_dir / "pki" / "ca.crt"
    host = lab.hosts[0]

    # --- create, followed live ---
    t0 = time.monotonic()
    r = httpx.post(f"{api.url}/v1/tenants", json={"name": "apie2e", "extensions": ["pgcrypto"]}, headers=h)
    assert r.status_code == 202, r.text
    job = r.json()
    events = follow(api, token, job["id"])
    created_in = time.monotonic() - t0
    succeeded(api, token, job["id"], events)
    tasks = [d["task"] for k, d in events if k == "task"]
    assert "Health check over TCP with TLS and the tenant's own credentials" in tasks
    assert any(k == "result" and d["status"] == "changed" for k, d in events)

    first = httpx.get(f"{api.url}/v1/jobs/{job['id']}", headers=h).json()
    creds = first["credentials"]
    assert creds and creds["user"] == "apie2e" and len(creds["password"]) >= 20
    assert httpx.get(f"{api.url}/v1/jobs/{job['id']}", headers=h).json()["credentials"] is None

    tenant = httpx.get(f"{api.url}/v1/tenants/apie2e", headers=h).json()
    assert tenant["state"] == "ready" and tenant["host"] == host
    direct = tenant["endpoints"]["direct"]
    with connect(lab, direct, creds["password"], ca) as conn:
        ssl, ext = conn.execute(
            "SELECT ssl, (SELECT count(*) FROM pg_extension WHERE extname = 'pgcrypto')"
            " FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
        ).fetchone()
        assert ssl and ext == 1
        assert conn.execute("SHOW max_connections").fetchone()[0] == "50"
    with pytest.raises(psycopg.OperationalError):
        connect(lab, direct, "wrong-password", ca).close()

    # --- patch the tier ---
    r = httpx.patch(f"{api.url}/v1/tenants/apie2e", json={"tier": "medium"}, headers=h)
    assert r.status_code == 202, r.text
    events = follow(api, token, r.json()["id"])
    succeeded(api, token, r.json()["id"], events)
    assert httpx.get(f"{api.url}/v1/tenants/apie2e", headers=h).json()["spec"]["tier"] == "medium"
    with connect(lab, direct, creds["password"], ca) as conn:
        assert conn.execute("SHOW max_connections").fetchone()[0] == "100"
    assert "MemoryMax=1073741824" in lab.sh(host, "systemctl show -p MemoryMax shadowdb-postgres@apie2e")

    # --- the API killed in the middle of a job, then restarted: the job runs again ---
    r = httpx.post(f"{api.url}/v1/tenants", json={"name": "apikill"}, headers=h)
    assert r.status_code == 202, r.text
    kill_job = r.json()["id"]
    follow(api, token, kill_job, until=lambda k, d: k == "play" and d["play"] == "Converge the tenant")
    api.kill()
    api.start()
    events = follow(api, token, kill_job)
    succeeded(api, token, kill_job, events)
    assert any(k == "job" and d["status"] == "interrupted" for k, d in events)
    again = httpx.get(f"{api.url}/v1/jobs/{kill_job}", headers=h).json()
    assert again["attempts"] == 2 and again["credentials"], again  # sealed in the catalog: survives the crash
    killed = httpx.get(f"{api.url}/v1/tenants/apikill", headers=h).json()
    assert killed["state"] == "ready"
    with connect(lab, killed["endpoints"]["direct"], again["credentials"]["password"], ca) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)

    # --- the password is nowhere: artifacts, catalog, API log ---
    secrets = [creds["password"], again["credentials"]["password"]]
    for path in api.work_dir.rglob("*"):
        if path.is_file():
            text = path.read_text(errors="replace")
            assert not any(s in text for s in secrets), f"a password is in {path}"
    assert any(api.work_dir.rglob("job_events/*.json"))  # the search did look at events
    with psycopg.connect(devdb.url) as conn:
        for table in ("jobs", "job_events", "tenants", "api_tokens"):
            dump = json.dumps(conn.execute(f"SELECT * FROM {table}").fetchall(), default=str)  # noqa: S608
            assert not any(s in dump for s in secrets), f"a password is in the catalog table {table}"
    assert not any(s in api.log.read_text() for s in secrets)

    # --- delete both: nothing left ---
    assert httpx.delete(f"{api.url}/v1/tenants/apie2e", headers=h).status_code == 422  # no confirm
    # apikill first: its cluster's sandboxed service was started after apie2e's volume was mounted
    for name in ("apikill", "apie2e"):
        r = httpx.delete(f"{api.url}/v1/tenants/{name}", params={"confirm": name}, headers=h)
        assert r.status_code == 202, r.text
        events = follow(api, token, r.json()["id"])
        succeeded(api, token, r.json()["id"], events)
        assert httpx.get(f"{api.url}/v1/tenants/{name}", headers=h).status_code == 404
        leftovers = lab.sh(
            host,
            f"systemctl list-units --all --plain --no-legend 'shadowdb-*@{name}*' | grep . ;"
            f"getent passwd pg-{name};"
            f"findmnt -n /mnt/db/{name};"
            f"ls -d /var/lib/shadowdb/volumes/{name}.img /etc/shadowdb/tenants/{name} /mnt/db/{name}"
            " 2>/dev/null;"
            f"blkid -t LABEL={name} -o device; true",
        )
        assert leftovers.strip() == "", f"{name} left behind:\n{leftovers}"
    assert httpx.get(f"{api.url}/v1/tenants", headers=h).json()["tenants"] == []
    print(f"\nAPI onboarding of one tenant (request -> healthy): {created_in:.1f} s")


def test_concurrent_onboardings(lab, api, token):
    """N tenants requested at once (SHADOWDB_API_CONCURRENT, default 3; the issue's figure is 10):
    all healthy, distinct ports, never two runs on one host at the same time."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    n = int(os.environ.get("SHADOWDB_API_CONCURRENT", "3"))
    h = bearer(token)
    ca = lab.inventory_dir / "pki" / "ca.crt"
    names = [f"conc{i}" for i in range(n)]
    t0 = time.monotonic()
    with ThreadPoolExecutor(n) as pool:
        posts = list(
            pool.map(lambda name: httpx.post(f"{api.url}/v1/tenants", json={"name": name}, headers=h), names)
        )
    assert [r.status_code for r in posts] == [202] * n, [r.text for r in posts]
    jobs = [r.json()["id"] for r in posts]
    with ThreadPoolExecutor(n) as pool:
        streams = list(pool.map(lambda job_id: follow(api, token, job_id, timeout=300 * n), jobs))
    elapsed = time.monotonic() - t0
    for job_id, events in zip(jobs, streams, strict=True):
        succeeded(api, token, job_id, events)
    done = [httpx.get(f"{api.url}/v1/jobs/{j}", headers=h).json() for j in jobs]
    spans = sorted((d["started_at"], d["finished_at"]) for d in done)
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False)), (
        "two runs overlapped on one host"
    )
    tenants = [httpx.get(f"{api.url}/v1/tenants/{name}", headers=h).json() for name in names]
    ports = {t["endpoints"]["direct"]["port"] for t in tenants}
    assert len(ports) == n
    for tenant, job in zip(tenants, done, strict=True):
        with connect(lab, tenant["endpoints"]["direct"], job["credentials"]["password"], ca) as conn:
            assert conn.execute("SELECT current_user").fetchone() == (tenant["name"],)
    print(f"\n{n} concurrent onboardings on one host: {elapsed:.1f} s")
    # Newest first: a cluster's sandboxed service keeps the volumes mounted before it started.
    deletes = [
        httpx.delete(f"{api.url}/v1/tenants/{name}", params={"confirm": name}, headers=h).json()["id"]
        for name in reversed(names)
    ]
    for job_id in deletes:
        succeeded(api, token, job_id, follow(api, token, job_id))
    assert httpx.get(f"{api.url}/v1/tenants", headers=h).json()["tenants"] == []

"""Issue 12's API items against the real catalog (no lab): authentication before any look-up,
event streams that end when their token is revoked, short errors without tracebacks or tool
output, versions no db host can install refused before any job, superuser tenants for admin
tokens only, a create that never adopts (the catalog's and the inventory's names, and the
on-host guard of api/playbooks/create_guard.yml run for real against this machine's own paths
under a scratch directory)."""

import json
import socket
import sys
import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from api import sealing
from api.app import create_app
from api.jobs import Engine, new_job_id
from api.runs import GUARD_TASK, failure_message

from .conftest import Server, bearer, make_settings, server_env, truncate

UNKNOWN_JOB = "00000000-0000-4000-8000-000000000000"


def inventory(path, hosts: dict, group_vars: dict | None = None):
    """An inventory whose db hosts carry the given variables (JSON is YAML)."""
    data = {
        "all": {
            "vars": {"ansible_connection": "containers.podman.podman"} | (group_vars or {}),
            "children": {"db": {"hosts": hosts}},
        }
    }
    path.mkdir(parents=True, exist_ok=True)
    (path / "hosts.yml").write_text(json.dumps(data, indent=1) + "\n")
    return path


@pytest.fixture
def app_for(devdb, catalog, tmp_path):
    """An app (engine off) on an inventory of its own: app_for(hosts, group_vars)."""
    clients = []

    def make(hosts: dict, group_vars: dict | None = None, **settings):
        inv = inventory(tmp_path / f"inv{len(clients)}", hosts, group_vars)
        client = TestClient(create_app(make_settings(devdb, inv, tmp_path / "work", **settings)))
        clients.append(client.__enter__())
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def writer(catalog):
    return bearer(catalog.create_token("test-writer", "write")[1])


# --- authentication before any look-up -----------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", f"/v1/jobs/{UNKNOWN_JOB}"),
        ("GET", f"/v1/jobs/{UNKNOWN_JOB}/events"),
        ("POST", f"/v1/jobs/{UNKNOWN_JOB}/cancel"),
        ("GET", "/v1/tenants/ghost"),
        ("PATCH", "/v1/tenants/ghost"),
        ("DELETE", "/v1/tenants/ghost?confirm=ghost"),
    ],
)
def test_no_token_is_401_before_404(client, admin, method, path):
    """Unknown ids answer 401 without a token or with a bad one: nobody learns what exists."""
    body = {"json": {"tier": "medium"}} if method == "PATCH" else {}
    assert client.request(method, path, headers=admin, **body).status_code == 404  # it is unknown
    for headers in ({}, bearer("sdb_wrong"), {"Authorization": "Basic dXNlcjpwdw=="}):
        r = client.request(method, path, headers=headers, **body)
        assert r.status_code == 401, (method, path, r.status_code, r.text)
        assert "ghost" not in r.text and UNKNOWN_JOB not in r.text


def test_known_and_unknown_ids_answer_alike_without_a_token(client, admin):
    job = client.post("/v1/tenants", json={"name": "acme"}, headers=admin).json()
    for path in (f"/v1/jobs/{job['id']}", f"/v1/jobs/{job['id']}/events", "/v1/tenants/acme"):
        known = client.get(path)
        unknown = client.get(path.replace(job["id"], UNKNOWN_JOB).replace("acme", "ghost"))
        assert known.status_code == unknown.status_code == 401
        assert known.json() == unknown.json()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", f"/v1/jobs/{UNKNOWN_JOB}/cancel"),
        ("PATCH", "/v1/tenants/ghost"),
        ("DELETE", "/v1/tenants/ghost?confirm=ghost"),
        ("DELETE", "/v1/tenants/ghost"),
    ],
)
def test_read_scope_is_403_before_404(client, reader, method, path):
    body = {"json": {"tier": "medium"}} if method == "PATCH" else {}
    r = client.request(method, path, headers=reader, **body)
    assert r.status_code == 403, r.text


def test_write_scope_manages_tenants(client, writer):
    job = client.post("/v1/tenants", json={"name": "acme"}, headers=writer)
    assert job.status_code == 202, job.text
    assert client.get(f"/v1/jobs/{job.json()['id']}", headers=writer).status_code == 200
    assert client.post(f"/v1/jobs/{job.json()['id']}/cancel", headers=writer).status_code == 202


# --- event streams end when their token is revoked ------------------------------------------


@pytest.fixture(scope="module")
def live_api(devdb, fake_inventory, tmp_path_factory):
    truncate(devdb.url)
    env = server_env(
        {
            "database_url": devdb.url,
            "inventory": fake_inventory,
            "work_dir": tmp_path_factory.mktemp("security-work"),
            "engine": "false",
        }
    )
    server = Server(env, tmp_path_factory.mktemp("security-log") / "api.log").start()
    yield server
    server.stop()


def test_event_stream_ends_when_its_token_is_revoked(live_api, catalog):
    admin_id, admin = catalog.create_token("streamer", "admin")
    r = httpx.post(f"{live_api.url}/v1/tenants", json={"name": "acme"}, headers=bearer(admin))
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]  # the engine is off: the job stays queued, its stream stays open
    revoked_at = {}

    def revoke():
        revoked_at["t"] = time.monotonic()
        catalog.revoke_token(admin_id)

    timer = threading.Timer(1.0, revoke)
    lines = []
    with httpx.stream(
        "GET", f"{live_api.url}/v1/jobs/{job_id}/events", headers=bearer(admin), timeout=httpx.Timeout(10)
    ) as stream:
        assert stream.status_code == 200
        timer.start()
        for line in stream.iter_lines():  # a stream that does not end fails on the read timeout
            lines.append(line)
    ended = time.monotonic()
    timer.join()
    assert "event: error" in lines and any("token revoked" in line for line in lines), lines
    assert "event: end" not in lines
    assert ended - revoked_at["t"] < 6, "the stream outlived its token by more than a few seconds"
    r = httpx.get(f"{live_api.url}/v1/jobs/{job_id}/events", headers=bearer(admin))
    assert r.status_code == 401


# --- short errors: no tracebacks, no tool output ---------------------------------------------


def test_an_internal_error_is_a_short_500(devdb, catalog, fake_inventory, tmp_path, admin, caplog):
    settings = make_settings(devdb, fake_inventory, tmp_path)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:

        def broken():
            raise RuntimeError("psycopg said: secret-internal-detail at /srv/catalog")

        client.app.state.catalog.tenants = broken
        r = client.get("/v1/tenants", headers=admin)
    assert r.status_code == 500
    assert r.headers["content-type"].startswith("application/json")
    detail = r.json()["detail"]
    assert "internal error" in detail and "reference" in detail
    assert "Traceback" not in r.text and "secret-internal-detail" not in r.text and "File " not in r.text
    assert "secret-internal-detail" in caplog.text  # the operator has it, in the server log


def test_job_errors_carry_no_tool_output():
    stderr = "Traceback (most recent call last):\n  File \"/usr/lib/x.py\"\nKeyError: 'secret'"
    assert (
        failure_message({"msg": "non-zero return code", "stderr": stderr, "rc": 1}) == "non-zero return code"
    )
    assert failure_message({"msg": "MODULE FAILURE\nSee stdout/stderr", "module_stderr": stderr}) == (
        "the module failed (details in the API's log)"
    )
    assert "Traceback" not in failure_message({"msg": stderr})
    long = failure_message({"msg": "x" * 5000 + "\nsecond line"})
    assert len(long) <= 300 and "second line" not in long
    assert failure_message({"msg": {"nested": "dict"}}) == "failed"


# --- versions no db host can install: 422 before any job ------------------------------------


def test_pg_version_no_host_serves_is_422(client, admin, catalog):
    r = client.post("/v1/tenants", json={"name": "acme", "pg_version": 15}, headers=admin)
    assert r.status_code == 422, r.text
    (error,) = r.json()["detail"]
    assert error["loc"] == ["body", "pg_version"]
    assert "PostgreSQL 15" in error["msg"] and "17" in error["msg"] and "shadowdb_pg_versions" in error["msg"]
    assert catalog.tenants() == [] and catalog.job_counts() == {}


def test_placement_goes_only_to_hosts_serving_the_version(app_for, admin, catalog):
    client = app_for({"old": {"shadowdb_pg_versions": [15, 17]}, "new": {}})
    hosts = [
        client.post("/v1/tenants", json={"name": f"v{i}", "pg_version": 15}, headers=admin).json()["host"]
        for i in range(3)
    ]
    assert hosts == ["old"] * 3
    assert client.post("/v1/tenants", json={"name": "v17"}, headers=admin).json()["host"] == "new"
    r = client.post("/v1/tenants", json={"name": "v16", "pg_version": 16}, headers=admin)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "pg_version"]
    schema = client.get("/openapi.json").json()["components"]["schemas"]["TenantCreate"]
    assert schema["properties"]["pg_version"]["enum"] == [15, 17]


def test_the_deployments_own_tiers(app_for, admin, catalog):
    tiny = {"disk_size_mb": 256, "memory_mb": 128, "cpu_quota_pct": 25, "max_connections": 20}
    tiny |= {"nofile": 1024, "tasks_max": 128}
    client = app_for({"a": {}}, {"shadowdb_tiers": {"tiny": tiny, "small": tiny | {"disk_size_mb": 512}}})
    r = client.post("/v1/tenants", json={"name": "t1", "tier": "tiny"}, headers=admin)
    assert r.status_code == 202, r.text
    r = client.post("/v1/tenants", json={"name": "t2", "tier": "large"}, headers=admin)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "tier"], r.text
    schema = client.get("/openapi.json").json()["components"]["schemas"]["TenantCreate"]
    assert schema["properties"]["tier"]["enum"] == ["small", "tiny"]


# --- superuser tenants: admin tokens only ----------------------------------------------------


def test_superuser_needs_an_admin_token(client, admin, writer, catalog):
    r = client.post("/v1/tenants", json={"name": "root-ish", "superuser": True}, headers=writer)
    assert r.status_code == 403 and "admin" in r.json()["detail"], r.text
    assert catalog.tenants() == [] and catalog.job_counts() == {}
    r = client.post("/v1/tenants", json={"name": "plain"}, headers=writer)
    assert r.status_code == 202, r.text
    assert client.get("/v1/tenants/plain", headers=writer).json()["superuser"] is False
    r = client.post("/v1/tenants", json={"name": "su", "superuser": True}, headers=admin)
    assert r.status_code == 202, r.text
    tenant = client.get("/v1/tenants/su", headers=admin).json()
    assert tenant["superuser"] is True and tenant["spec"]["superuser"] is True
    assert catalog.job(r.json()["id"])["spec"]["superuser"] is True  # what the playbook gets
    r = client.patch("/v1/tenants/plain", json={"superuser": True}, headers=admin)
    assert r.status_code == 422  # set at creation only


# --- a create never adopts -------------------------------------------------------------------


def test_create_of_a_catalog_name_is_409_naming_the_host(client, admin, catalog):
    host = client.post("/v1/tenants", json={"name": "acme"}, headers=admin).json()["host"]
    r = client.post("/v1/tenants", json={"name": "acme", "tier": "large"}, headers=admin)
    assert r.status_code == 409 and f"already exists on host {host}" in r.json()["detail"]
    assert len(catalog.jobs_for("acme")) == 1


def test_create_of_an_inventory_tenant_is_409_naming_the_host(app_for, admin, catalog):
    client = app_for({"a": {}, "b": {"shadowdb_tenants": [{"name": "opsmade", "tier": "small"}]}})
    r = client.post("/v1/tenants", json={"name": "opsmade"}, headers=admin)
    assert r.status_code == 409 and "already exists on host b" in r.json()["detail"], r.text
    assert catalog.tenants() == [] and catalog.job_counts() == {}


def test_the_guard_is_skipped_only_after_an_attempt_passed_it(devdb, fake_inventory, tmp_path, catalog):
    engine = Engine(make_settings(devdb, fake_inventory, tmp_path))
    job = catalog.create_tenant(
        {"name": "acme"}, lambda spec, records, current: ["h"], {"id": new_job_id(), "created_by": None}, 10
    )
    steps = dict((step, extravars) for step, _, extravars in engine._steps(job | {"attempts": 1}))
    assert list(steps) == ["host"] and steps["host"]["api_job_guard_passed"] is False
    other = catalog.create_tenant(
        {"name": "other"}, lambda spec, records, current: ["h"], {"id": new_job_id(), "created_by": None}, 10
    )
    # In a batch: the creates an earlier attempt of which passed the guard are not guarded again.
    _, extravars, _ = engine._batch(job, [job, other], passed={str(other["id"])})
    assert [g["name"] for g in extravars["api_guards"]] == ["acme"]
    assert [t["name"] for t in extravars["api_tenants"]] == ["acme", "other"]
    with catalog.conn() as conn:
        assert not engine._guard_passed(conn, job | {"attempts": 2})
        from api.catalog import add_event

        add_event(conn, job["id"], "result", {"task": GUARD_TASK, "status": "ok", "host": "h"})
        assert not engine._guard_passed(conn, job | {"attempts": 1})
        assert engine._guard_passed(conn, job | {"attempts": 2})


def test_the_on_host_guard_refuses_an_existing_tenant(devdb, catalog, tmp_path, admin):
    """A real run of tenant_job.yml, on this machine (local connection), with the tenant's
    on-host paths looked for under a scratch root holding a volume record of 'dupe': the job
    fails before tenant.yml starts, says where the tenant is, returns no credentials, and the
    catalog forgets the name (it was never the API's)."""
    root = tmp_path / "root"
    (root / "etc" / "shadowdb" / "volumes").mkdir(parents=True)
    (root / "etc" / "shadowdb" / "volumes" / "dupe.env").write_text("TENANT=dupe\n")
    inv = inventory(
        tmp_path / "inv",
        {
            "sdb-guard-local": {
                "ansible_connection": "local",
                "ansible_python_interpreter": sys.executable,
                "api_guard_root": str(root),
            }
        },
    )
    settings = make_settings(devdb, inv, tmp_path / "work", engine=True)
    private, public = sealing.generate_keypair()
    job_id = new_job_id()
    # An unknown tier: were the guard to let the job through, tenant.yml would stop at its
    # first task (spec validation), before changing anything on this machine.
    job = catalog.create_tenant(
        {"name": "dupe", "tier": "no-such-tier"},
        lambda spec, records, current: ["sdb-guard-local"],
        {"id": job_id, "created_by": None, "public_key": public, "wrapped_key": b"x"},
        10,
    )
    engine = Engine(settings)
    engine.start()
    try:
        deadline = time.monotonic() + 180
        while catalog.job(job_id)["status"] in ("queued", "running") and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        engine.stop()
    row = catalog.job(job["id"])
    assert row["status"] == "failed", row
    assert row["error"] == "tenant dupe already exists on host sdb-guard-local", row["error"]
    assert row["result"] == {"conflict": {"hosts": ["sdb-guard-local"]}}
    assert row["sealed_credentials"] is None and row["wrapped_key"] is None
    assert catalog.tenants() == []  # not the API's tenant: nothing to show, change or remove
    tasks = [e["data"].get("task") for e in catalog.events(job_id) if e["type"] == "task"]
    assert "Look for tenants of those names on this host" in tasks
    plays = [e["data"]["play"] for e in catalog.events(job_id) if e["type"] == "play"]
    # tenant.yml never ran
    assert plays == [
        "Look for the tenants on every db host",
        "Refuse to create a tenant that already exists",
    ], plays
    dump = json.dumps([e["data"] for e in catalog.events(job_id)])
    assert "Traceback" not in dump
    assert (root / "etc" / "shadowdb" / "volumes" / "dupe.env").read_text() == "TENANT=dupe\n"


def test_the_guard_of_a_batch_refuses_the_existing_tenant_alone(devdb, catalog, tmp_path):
    """Two creates for one host share one real run of tenants_job.yml (local connection, on-host
    paths under a scratch root holding an OS-less trace of 'dupe'): the guard fails 'dupe' with
    its conflict and leaves it out; 'fresh' goes on into tenant.yml, whose spec check refuses its
    unknown tier before anything changes, and only 'fresh' has the guard's pass in its stream."""
    root = tmp_path / "root"
    (root / "var" / "lib" / "shadowdb" / "converged").mkdir(parents=True)
    (root / "var" / "lib" / "shadowdb" / "converged" / "dupe.json").write_text("{}")
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    inv = inventory(tmp_path / "inv", {"sdb-guard-batch": local | {"api_guard_root": str(root)}})
    settings = make_settings(devdb, inv, tmp_path / "work", engine=True)
    jobs = {
        name: catalog.create_tenant(
            {"name": name, "tier": "no-such-tier"},
            lambda spec, records, current: ["sdb-guard-batch"],
            {"id": new_job_id(), "created_by": None},
            10,
        )
        for name in ("dupe", "fresh")
    }
    engine = Engine(settings)
    engine.start()
    try:
        deadline = time.monotonic() + 180
        while any(catalog.job(j["id"])["status"] in ("queued", "running") for j in jobs.values()):
            assert time.monotonic() < deadline
            time.sleep(0.5)
    finally:
        engine.stop()
    dupe, fresh = (catalog.job(jobs[name]["id"]) for name in ("dupe", "fresh"))
    assert dupe["status"] == "failed", dupe
    assert dupe["error"] == "tenant dupe already exists on host sdb-guard-batch", dupe["error"]
    assert dupe["result"] == {"conflict": {"hosts": ["sdb-guard-batch"]}}
    assert fresh["status"] == "failed" and "no-such-tier" in fresh["error"], fresh["error"]
    steps = [e["data"] for e in catalog.events(fresh["id"]) if e["type"] == "step"]
    assert sorted(steps[0]["tenants"]) == ["dupe", "fresh"]  # one run for both
    plays = [e["data"]["play"] for e in catalog.events(fresh["id"]) if e["type"] == "play"]
    assert "Check the tenant specs before anything changes" in plays, plays  # tenant.yml ran for fresh
    with catalog.conn() as conn:
        assert engine._guard_passed(conn, fresh | {"attempts": 2})
        assert not engine._guard_passed(conn, dupe | {"attempts": 2})
    assert [t["name"] for t in catalog.tenants()] == ["fresh"]


def test_the_guard_fails_when_a_db_host_does_not_answer(devdb, catalog, tmp_path):
    """A create looks on every db host at once (api/playbooks/guard_hosts.yml); one that cannot
    be reached (SSH to a closed port of this machine's loopback) fails the job naming that host,
    before tenant.yml starts: a create never goes on without every db host's answer."""
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    down = {"ansible_connection": "ssh", "ansible_host": "127.0.0.1", "ansible_port": closed}
    root = tmp_path / "root"
    root.mkdir()
    inv = inventory(
        tmp_path / "inv", {"sdb-guard-up": local | {"api_guard_root": str(root)}, "sdb-guard-down": down}
    )
    settings = make_settings(devdb, inv, tmp_path / "work", engine=True)
    job = catalog.create_tenant(
        {"name": "lonely", "tier": "no-such-tier"},
        lambda spec, records, current: ["sdb-guard-up"],
        {"id": new_job_id(), "created_by": None},
        10,
    )
    engine = Engine(settings)
    engine.start()
    try:
        deadline = time.monotonic() + 180
        while catalog.job(job["id"])["status"] in ("queued", "running"):
            assert time.monotonic() < deadline
            time.sleep(0.5)
    finally:
        engine.stop()
    row = catalog.job(job["id"])
    assert row["status"] == "failed", row
    assert "cannot look for lonely on host sdb-guard-down (unreachable)" in row["error"], row["error"]
    plays = [e["data"]["play"] for e in catalog.events(job["id"]) if e["type"] == "play"]
    assert "Check the tenant specs before anything changes" not in plays, plays  # tenant.yml never ran


def test_a_token_is_checked_on_every_request_and_its_use_written_once_a_minute(catalog):
    token_id, token = catalog.create_token("poller", "read")

    def last_used():
        with catalog.conn() as conn:
            return conn.execute("SELECT last_used_at FROM api_tokens WHERE id = %s", (token_id,)).fetchone()[
                "last_used_at"
            ]

    assert catalog.token(token)["id"] == token_id
    first = last_used()
    assert first is not None
    assert catalog.token(token)["name"] == "poller"
    assert last_used() == first  # a client polling a job does not write on every request
    with catalog.conn() as conn:
        conn.execute(
            "UPDATE api_tokens SET last_used_at = now() - interval '2 minutes' WHERE id = %s", (token_id,)
        )
    assert catalog.token(token)["scope"] == "read"
    assert last_used() >= first  # written again: it was two minutes old
    catalog.revoke_token(token_id)
    assert catalog.token(token) is None
    assert catalog.token("not-a-token") is None

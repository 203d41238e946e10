"""High availability through the API, against the real catalog (no lab): which requests run
tenant_ha.yml, the early 422s on replicas, the locks of HA steps (they may touch every db host),
what GET /tenants/{name} shows of members and endpoints, and one real ansible-runner run of the
HA wrapper playbook against missing hosts."""

import base64
import subprocess
import time

import pytest
from fastapi.testclient import TestClient

from api import sealing
from api.app import create_app
from api.jobs import HOST_LOCK_CLASS, Engine

from .conftest import REPO, make_settings
from .test_engine import fetch_all

HA_HOSTS = ["sdb-api-nohost-h1", "sdb-api-nohost-h2", "sdb-api-nohost-h3"]
PROXY = "sdb-api-nohost-px"


@pytest.fixture(scope="module")
def ha_inventory(tmp_path_factory):
    """3 db hosts and an etcd + proxy host, none of which exists (runs fail fast)."""
    path = tmp_path_factory.mktemp("ha-inventory")
    lines = ["all:", "  vars:", "    ansible_connection: containers.podman.podman", "  children:"]
    for group, hosts in (("db", HA_HOSTS), ("etcd", [PROXY]), ("proxy", [PROXY])):
        lines += [f"    {group}:", "      hosts:"] + [f"        {h}: {{}}" for h in hosts]
    (path / "hosts.yml").write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def ha_app(devdb, ha_inventory, tmp_path_factory):
    settings = make_settings(
        devdb, ha_inventory, tmp_path_factory.mktemp("ha-work"), max_replicas=3, sni_port=5432
    )
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture
def ha(ha_app, catalog):
    return ha_app


@pytest.fixture
def engine(devdb, ha_inventory, tmp_path, catalog):
    return Engine(make_settings(devdb, ha_inventory, tmp_path, max_attempts=2), routed=lambda: True)


def job_row(catalog, job):
    return catalog.job(job["id"])


def finish(engine, catalog, job, result, status="succeeded"):
    """Start a job and finish it the way the engine does after a run (real catalog, real code)."""
    with catalog.conn() as conn:
        assert engine._begin(conn, job["id"], catalog.job(job["id"])["step"]) is not None
        engine._finish(conn, job["id"], status, None, result, None)


HA_RESULT = {
    "host": "sdb-api-nohost-h2",
    "endpoint": {
        "host": "acme.db.shadowdb.test",
        "ro_host": "acme-ro.db.shadowdb.test",
        "address": "10.89.217.12",
        "port": 16001,
        "proxy_port": 30001,
        "dbname": "acme",
        "user": "acme",
        "readonly_user": None,
    },
    "members": [
        {"host": "sdb-api-nohost-h3", "address": "10.89.217.13", "port": 16002, "api_port": 18002, "role": "replica"},  # noqa: E501
        {"host": "sdb-api-nohost-h2", "address": "10.89.217.12", "port": 16001, "api_port": 18001, "role": "leader"},  # noqa: E501
    ],
}  # fmt: skip


# --- validation: early 422 naming the field ------------------------------------------------


@pytest.mark.parametrize(
    ("replicas", "words"),
    [(3, "the inventory has 3 (at most 2 replicas)"), (4, "at most 3 (SHADOWDB_API_MAX_REPLICAS)")],
)
def test_too_many_replicas_is_422_before_any_job(ha, admin, catalog, replicas, words):
    r = ha.post("/v1/tenants", json={"name": "acme", "replicas": replicas}, headers=admin)
    assert r.status_code == 422, r.text
    (error,) = r.json()["detail"]
    assert error["loc"] == ["body", "replicas"] and words in error["msg"], error
    assert catalog.tenants() == [] and catalog.job_counts() == {}


def test_replicas_on_an_inventory_without_registry_is_422(client, admin, devdb):
    # The default app (max_replicas 0) names the setting; HA is opt-in for a deployment.
    r = client.post("/v1/tenants", json={"name": "acme", "replicas": 1}, headers=admin)
    assert r.status_code == 422 and "SHADOWDB_API_MAX_REPLICAS" in r.json()["detail"][0]["msg"]


def test_patch_to_too_many_replicas_is_422(ha, admin, catalog):
    ha.post("/v1/tenants", json={"name": "acme"}, headers=admin)
    with catalog.conn() as conn:
        conn.execute("UPDATE jobs SET status = 'succeeded'")
        conn.execute("UPDATE tenants SET state = 'ready'")
    r = ha.patch("/v1/tenants/acme", json={"replicas": 3}, headers=admin)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "replicas"]
    assert len(catalog.jobs_for("acme")) == 1


def test_openapi_shows_the_deployment_cap(ha):
    schemas = ha.get("/openapi.json").json()["components"]["schemas"]
    assert schemas["TenantCreate"]["properties"]["replicas"]["maximum"] == 3
    assert "sni_ro" in schemas["Endpoints"]["properties"]


# --- which playbook each request runs ------------------------------------------------------


def test_create_with_replicas_is_one_exclusive_ha_step(ha, admin, catalog, engine):
    r = ha.post("/v1/tenants", json={"name": "acme", "replicas": 2}, headers=admin)
    assert r.status_code == 202, r.text
    row = job_row(catalog, r.json())
    assert row["exclusive"] and row["kind"] == "create" and row["public_key"]
    ((step, playbook, extravars),) = engine._steps(row)
    assert step == "ha" and playbook.endswith("api/playbooks/tenant_ha_job.yml")
    assert extravars["tenant"]["replicas"] == 2 and extravars["tenant"]["name"] == "acme"
    assert base64.b64decode(extravars["api_job_public_key"]) == bytes(row["public_key"])
    assert "confirm" not in extravars


def test_standalone_tenants_keep_their_path(ha, admin, catalog, engine):
    job = ha.post("/v1/tenants", json={"name": "solo"}, headers=admin).json()
    row = job_row(catalog, job)
    assert not row["exclusive"]
    assert [s for s, _, _ in engine._steps(row)] == ["host"]
    finish(engine, catalog, job, {"endpoint": None})
    patched = ha.patch("/v1/tenants/solo", json={"tier": "medium", "replicas": 0}, headers=admin).json()
    row = job_row(catalog, patched)
    assert not row["exclusive"] and [s for s, _, _ in engine._steps(row)] == ["host"]
    finish(engine, catalog, patched, {"endpoint": None})
    deleted = ha.delete("/v1/tenants/solo?confirm=solo", headers=admin).json()
    assert [s for s, _, _ in engine._steps(job_row(catalog, deleted))] == ["route", "host"]


def test_an_ha_tenant_is_restored_in_one_exclusive_step_on_its_members_hosts(
    ha, admin, catalog, engine, monkeypatch
):
    """tenant_restore.yml from its catalog host (any member: the playbook finds the leader), the
    members' hosts locked; the job's result is where it went back to."""
    job = ha.post("/v1/tenants", json={"name": "acme", "replicas": 1, "backup": True}, headers=admin).json()
    finish(engine, catalog, job, HA_RESULT)
    monkeypatch.setattr(ha.app.state.inventory, "backups", lambda spec: True)
    summary = {"backups": [{"label": "x", "type": "full", "start": 1, "stop": 2}]}
    monkeypatch.setattr("api.app.read_backups", lambda settings, name: summary)
    body = {"target": {"latest": True}, "confirm": "acme"}
    r = ha.post("/v1/tenants/acme/restore", json=body, headers=admin)
    assert r.status_code == 202 and r.json()["kind"] == "restore", r.text
    row = job_row(catalog, r.json())
    assert row["exclusive"] and sorted(row["hosts"]) == ["sdb-api-nohost-h2", "sdb-api-nohost-h3"], row
    ((step, playbook, extravars),) = engine._steps(row)
    assert step == "ha" and playbook == str(REPO / "playbooks" / "tenant_restore.yml")
    assert extravars == {
        "tenant_host": "sdb-api-nohost-h2",
        "tenant": "acme",
        "confirm": "acme",
        "target": row["request"]["target"],
    }
    with catalog.conn() as conn:
        assert sorted(engine._step_hosts(conn, row, step)) == ["sdb-api-nohost-h2", "sdb-api-nohost-h3"]
    restored = {"type": "default"}
    assert engine._result(row, {"ha": {"shadowdb_restored": restored}})[:3] == (
        "succeeded",
        None,
        {"restored": restored},
    )
    # The members stay where they are, after a restore and after a backup.
    members = ha.get("/v1/tenants/acme", headers=admin).json()["members"]
    assert len(members) == 2
    finish(engine, catalog, r.json(), {"restored": restored})
    backup = ha.post("/v1/tenants/acme/backups", headers=admin).json()
    finish(engine, catalog, backup, {"backups": {"backups": []}})
    tenant = ha.get("/v1/tenants/acme", headers=admin).json()
    assert tenant["state"] == "ready" and tenant["ha"] and tenant["members"] == members, tenant


def test_conversion_round_trip_and_ha_delete(ha, admin, catalog, engine):
    """0 -> 1 (conversion) and 1 -> 0 run tenant_ha.yml with the merged spec; the members and
    endpoints shown follow the playbook's result; an HA delete is state absent + confirm."""
    job = ha.post("/v1/tenants", json={"name": "acme", "extensions": ["pgcrypto"]}, headers=admin).json()
    finish(engine, catalog, job, {"endpoint": {**HA_RESULT["endpoint"], "ro_host": None, "port": 5433}})
    tenant = ha.get("/v1/tenants/acme", headers=admin).json()
    assert not tenant["ha"] and tenant["endpoints"]["direct"]["port"] == 5433
    assert tenant["endpoints"]["sni_ro"] is None

    up = ha.patch("/v1/tenants/acme", json={"replicas": 1}, headers=admin).json()
    row = job_row(catalog, up)
    assert row["exclusive"] and row["spec"]["replicas"] == 1 and row["spec"]["extensions"] == ["pgcrypto"]
    ((step, _, extravars),) = engine._steps(row)
    assert step == "ha" and extravars["tenant"] == row["spec"] and extravars["api_job_public_key"] == ""
    finish(engine, catalog, up, HA_RESULT)

    tenant = ha.get("/v1/tenants/acme", headers=admin).json()
    assert tenant["ha"] and tenant["host"] == "sdb-api-nohost-h2" and tenant["state"] == "ready"
    assert tenant["members"] == [
        {"host": "sdb-api-nohost-h2", "role": "primary", "address": "10.89.217.12", "port": 16001, "api_port": 18001},  # noqa: E501
        {"host": "sdb-api-nohost-h3", "role": "replica", "address": "10.89.217.13", "port": 16002, "api_port": 18002},  # noqa: E501
    ]  # fmt: skip
    eps = tenant["endpoints"]
    assert eps["direct"] is None  # members change roles: clients go through HAProxy
    assert eps["sni"]["host"] == "acme.db.shadowdb.test" and eps["sni"]["sslnegotiation"] == "direct"
    assert eps["sni_ro"]["host"] == "acme-ro.db.shadowdb.test" and eps["sni_ro"]["port"] == 5432
    assert "host=acme-ro.db.shadowdb.test port=5432" in eps["sni_ro"]["conninfo"]
    assert eps["proxy"]["port"] == 30001

    # Any change of an HA tenant runs tenant_ha.yml, replicas kept.
    tier = ha.patch("/v1/tenants/acme", json={"tier": "medium"}, headers=admin).json()
    row = job_row(catalog, tier)
    assert row["exclusive"] and row["spec"]["replicas"] == 1 and row["spec"]["tier"] == "medium"
    finish(engine, catalog, tier, HA_RESULT)

    down = ha.patch("/v1/tenants/acme", json={"replicas": 0}, headers=admin).json()
    assert job_row(catalog, down)["exclusive"]
    standalone = {
        "endpoint": {**HA_RESULT["endpoint"], "ro_host": None, "port": 5434},
        "host": "sdb-api-nohost-h2",
    }
    finish(engine, catalog, down, standalone | {"members": []})
    tenant = ha.get("/v1/tenants/acme", headers=admin).json()
    assert not tenant["ha"] and tenant["members"] == [
        {"host": "sdb-api-nohost-h2", "role": "primary", "address": None, "port": None, "api_port": None}
    ]
    assert tenant["endpoints"]["direct"]["port"] == 5434
    # Standalone again: the next change takes today's path.
    assert not job_row(catalog, ha.patch("/v1/tenants/acme", json={"tier": "large"}, headers=admin).json())[
        "exclusive"
    ]


def test_delete_of_an_ha_tenant(ha, admin, catalog, engine):
    job = ha.post("/v1/tenants", json={"name": "acme", "replicas": 1}, headers=admin).json()
    finish(engine, catalog, job, HA_RESULT)
    deleted = ha.delete("/v1/tenants/acme?confirm=acme", headers=admin).json()
    row = job_row(catalog, deleted)
    assert row["exclusive"]
    assert row["hosts"] == [m["host"] for m in HA_RESULT["members"]]  # locked: its members' hosts only
    ((step, playbook, extravars),) = engine._steps(row)
    assert extravars == {"tenant": {"name": "acme", "state": "absent"}, "confirm": "acme"}
    finish(engine, catalog, deleted, {})
    assert ha.get("/v1/tenants/acme", headers=admin).status_code == 404


def test_a_started_conversion_keeps_the_tenant_on_the_ha_path(ha, admin, catalog, engine):
    """A conversion that failed half-way is never handed to tenant.yml or tenant_remove.yml."""
    job = ha.post("/v1/tenants", json={"name": "acme"}, headers=admin).json()
    finish(engine, catalog, job, {"endpoint": None})
    up = ha.patch("/v1/tenants/acme", json={"replicas": 1}, headers=admin).json()
    with catalog.conn() as conn:  # what _run records when the HA step starts
        conn.execute("UPDATE tenants SET ha = true WHERE name = 'acme'")
    finish(engine, catalog, up, None, status="failed")
    assert catalog.tenant("acme")["spec"]["replicas"] == 0  # the catalog keeps the last good spec
    retry = ha.patch("/v1/tenants/acme", json={"replicas": 0}, headers=admin).json()
    assert job_row(catalog, retry)["exclusive"]


# --- placement over the catalog, and the hosts an HA job locks -------------------------------


def test_placement_counts_members_and_an_ha_job_touches_its_members_only(ha, admin, catalog, engine):
    """The API places an HA tenant's members itself (the catalog's tenants, members counted on
    each of their hosts), locks those hosts only for its run, and hands them to tenant_ha.yml;
    a standalone tenant then goes to the host the HA tenant left free."""
    h1, h2, h3 = HA_HOSTS
    first = ha.post("/v1/tenants", json={"name": "solo"}, headers=admin).json()
    assert job_row(catalog, first)["hosts"] == [h1]  # every host empty: the first
    job = ha.post("/v1/tenants", json={"name": "acme", "replicas": 1}, headers=admin).json()
    row = job_row(catalog, job)
    assert row["hosts"] == [h2, h3] and row["host"] == h2  # h1 holds solo
    ((step, _, extravars),) = engine._steps(row)
    assert extravars["shadowdb_ha_candidates"] == [h2, h3]
    # While acme's create runs (no members recorded yet), its hosts count already.
    assert catalog.tenant_counts() == {h1: 1, h2: 1, h3: 1}
    finish(engine, catalog, job, HA_RESULT)
    assert catalog.tenant_counts() == {h1: 1, h2: 1, h3: 1}  # acme's members, as registered
    nxt = ha.post("/v1/tenants", json={"name": "solo2"}, headers=admin).json()
    assert job_row(catalog, nxt)["hosts"] == [h1]  # a tie everywhere: the first name
    # Adding a replica keeps the members where they are and adds the emptiest other host.
    up = ha.patch("/v1/tenants/acme", json={"replicas": 2}, headers=admin).json()
    assert job_row(catalog, up)["hosts"] == [h3, h2, h1]


# --- serialization: one route or HA step at a time ------------------------------------------


def enqueue(ha, admin, name, replicas=0):
    r = ha.post("/v1/tenants", json={"name": name, "replicas": replicas}, headers=admin)
    assert r.status_code == 202, r.text
    return r.json()


def test_ha_steps_take_the_routing_lock(ha, admin, catalog, engine):
    """An HA step waits for the route and HA steps queued before it, and those after it wait for
    it (procrastinate's lock, in queue order); host steps on its hosts are kept out by their host
    locks (tests/api/test_engine.py: test_an_ha_step_excludes_host_steps_on_its_hosts_only)."""
    s1 = enqueue(ha, admin, "s1")
    h1 = enqueue(ha, admin, "ha-a", replicas=1)
    enqueue(ha, admin, "ha-b", replicas=1)
    got = fetch_all(engine, 3)
    assert [t and t.task_kwargs for t in got] == [
        {"job_id": s1["id"], "step": "host"},  # a create's host step: its host's lock only
        {"job_id": h1["id"], "step": "ha"},
        None,  # the second HA step waits for the first
    ]
    assert got[1].lock == "shadowdb:routing"


def test_the_ha_result_needs_a_record_and_credentials(engine):
    job = {"kind": "create", "public_key": b"k" * 32, "exclusive": True}
    stats = {
        "ha": {
            "shadowdb_api_ha": HA_RESULT | {"endpoint": HA_RESULT["endpoint"]},
            "shadowdb_api_sealed": "box",
        }
    }
    status, error, result, sealed = engine._result(job, stats)
    assert (status, error, sealed) == ("succeeded", None, "box")
    assert result["host"] == "sdb-api-nohost-h2" and len(result["members"]) == 2
    assert engine._result(job, {"ha": {"shadowdb_api_ha": HA_RESULT}})[:2] == (
        "failed",
        "the run succeeded but returned no credentials",
    )
    assert engine._result(job | {"kind": "update"}, {"ha": {}})[0] == "failed"
    # Unset values of the playbook's record (a standalone record, no proxy) are dropped.
    unset = HA_RESULT | {"endpoint": HA_RESULT["endpoint"] | {"ro_host": "None", "proxy_port": ""}}
    result = engine._result(job | {"kind": "update"}, {"ha": {"shadowdb_api_ha": unset}})[2]
    assert result["endpoint"]["ro_host"] is None and "proxy_port" not in result["endpoint"]


# --- the wrapper playbook, for real ---------------------------------------------------------


def test_the_ha_wrapper_playbook_parses(ha_inventory):
    proc = subprocess.run(
        [str(REPO / ".venv" / "bin" / "ansible-playbook"), "--syntax-check", "-i", str(ha_inventory),
         str(REPO / "api" / "playbooks" / "tenant_ha_job.yml")],
        capture_output=True, text=True, cwd=REPO, env={"ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
                                                      "PATH": f"{REPO / '.venv' / 'bin'}:/usr/bin:/bin"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_seal_filter_opens_with_the_job_key():
    import importlib.util

    path = REPO / "api" / "playbooks" / "filter_plugins" / "shadowdb_api.py"
    spec = importlib.util.spec_from_file_location("shadowdb_api_filters", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    private, public = sealing.generate_keypair()
    # A '-' is outside base64's alphabet: the password cannot appear in the box by chance ("pw" did).
    credentials = {"password": "owner-pw-9f3c", "readonly_password": None}
    box = module.shadowdb_api_seal(credentials, base64.b64encode(public))
    assert credentials["password"] not in box and sealing.unseal(private, box) == credentials


def test_a_real_ha_run_against_missing_hosts_fails_cleanly(devdb, ha_inventory, tmp_path, catalog, ha, admin):
    """ansible-runner runs tenant_ha_job.yml for real; no host exists: the job fails with the
    reason, the tenant stays on the HA path, the routing lock is released, nothing is left."""
    job = enqueue(ha, admin, "ghost", replicas=1)
    engine = Engine(make_settings(devdb, ha_inventory, tmp_path, engine=True), routed=lambda: True)
    engine.start()
    try:
        deadline = time.monotonic() + 180
        while job_row(catalog, job)["status"] in ("queued", "running") and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        engine.stop()
    row = job_row(catalog, job)
    assert row["status"] == "failed", row
    assert "sdb-api-nohost-h" in row["error"]
    steps = [e["data"] for e in catalog.events(job["id"]) if e["type"] == "step"]
    assert [s["step"] for s in steps] == ["ha", "ha"]
    tenant = catalog.tenant("ghost")
    assert tenant["state"] == "failed" and tenant["ha"]
    assert row["wrapped_key"] is None
    assert len(row["hosts"]) == 2  # the two members placed by the API, locked by the step
    with catalog.conn() as conn:  # the HA step let its hosts go
        for host in row["hosts"]:
            lock = (HOST_LOCK_CLASS, host)
            assert conn.execute("SELECT pg_try_advisory_lock(%s, hashtext(%s)) AS ok", lock).fetchone()["ok"]
            conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", lock)
    assert list(tmp_path.iterdir()) == []

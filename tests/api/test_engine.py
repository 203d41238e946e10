"""The job engine against the real catalog: per-host serialization, crash recovery, a real run."""

import time

import pytest

from api.catalog import ROUTING_LOCK
from api.jobs import Engine, new_job_id, sanitize_event

from .conftest import make_settings


def enqueue(catalog, name, host):
    job = {"id": new_job_id(), "created_by": None}
    return catalog.create_tenant({"name": name}, lambda counts: host, job, max_queued=100)


@pytest.fixture
def engine(devdb, fake_inventory, tmp_path, catalog):
    return Engine(make_settings(devdb, fake_inventory, tmp_path, max_attempts=2))


def events(catalog, job_id):
    return [(e["type"], e["data"]) for e in catalog.events(job_id)]


def test_one_running_job_per_host_and_hosts_in_parallel(engine, catalog):
    a1 = enqueue(catalog, "a1", "host-a")
    a2 = enqueue(catalog, "a2", "host-a")
    b1 = enqueue(catalog, "b1", "host-b")
    claimed = []
    try:
        for _ in range(3):
            got = engine._claim()
            if got:
                claimed.append(got)
        assert [str(job["id"]) for _, job in claimed] == [str(a1["id"]), str(b1["id"])]
        assert catalog.job(a2["id"])["status"] == "queued"
    finally:
        for conn, _ in claimed:
            conn.close()


def test_the_catalog_refuses_two_running_jobs_on_one_host(catalog):
    import psycopg

    enqueue(catalog, "a1", "host-a")
    enqueue(catalog, "a2", "host-a")
    with catalog.conn() as conn:
        conn.execute("UPDATE jobs SET status = 'running' WHERE tenant = 'a1'")
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("UPDATE jobs SET status = 'running' WHERE tenant = 'a2'")


def test_a_job_in_its_routing_step_releases_its_host(engine, catalog):
    a1 = enqueue(catalog, "a1", "host-a")
    a2 = enqueue(catalog, "a2", "host-a")
    conn1, job1 = engine._claim()
    try:
        assert engine._claim() is None  # a1 holds host-a
        conn1.execute("UPDATE jobs SET host_released_at = now() WHERE id = %s", (job1["id"],))
        conn2, job2 = engine._claim()  # a1 is routing: a2 starts on host-a meanwhile
        conn2.close()
        assert (str(job1["id"]), str(job2["id"])) == (str(a1["id"]), str(a2["id"]))
        assert catalog.job(a1["id"])["status"] == "running"
    finally:
        conn1.close()


def test_routing_steps_run_one_at_a_time(engine, catalog):
    first, second = engine._connect(), engine._connect()
    try:
        assert engine._routing_lock(first, lambda: False)
        waited = []
        # The second waits while the first holds the lock; here it gives up (a cancel).
        assert not engine._routing_lock(second, lambda: waited.append(1) or len(waited) > 3)
        assert len(waited) == 4
        first.execute("SELECT pg_advisory_unlock(%s)", (ROUTING_LOCK,))
        assert engine._routing_lock(second, lambda: True)
    finally:
        first.close()
        second.close()


@pytest.mark.parametrize(
    ("routed", "kind", "steps"),
    [
        (False, "create", ["host"]),
        (False, "delete", ["host"]),
        (True, "create", ["host", "route"]),
        (True, "update", ["host", "route"]),
        (True, "delete", ["route", "host"]),
    ],
)
def test_steps_of_a_job(engine, routed, kind, steps):
    engine.routed = lambda: routed
    job = {"kind": kind, "tenant": "a1", "host": "host-a", "spec": {"name": "a1"}, "public_key": None}
    planned = engine._steps(job)
    assert [step for step, _, _ in planned] == steps
    by_step = {step: (playbook, extravars) for step, playbook, extravars in planned}
    if routed:
        playbook, extravars = by_step["route"]
        assert playbook.endswith("api/playbooks/tenant_route.yml")
        assert extravars["api_route_state"] == ("absent" if kind == "delete" else "present")
    assert by_step["host"][0].endswith("tenant_remove.yml" if kind == "delete" else "tenant_job.yml")


def test_a_job_whose_process_died_is_queued_again(engine, catalog):
    job = enqueue(catalog, "a1", "host-a")
    conn, claimed = engine._claim()
    assert claimed["attempts"] == 1
    assert engine.recover() == 0  # its process (here: its connection) is alive
    assert catalog.job(job["id"])["status"] == "running"
    conn.close()  # what PostgreSQL sees when the API process dies
    assert engine.recover() == 1
    row = catalog.job(job["id"])
    assert row["status"] == "queued" and row["attempts"] == 1
    assert events(catalog, job["id"])[-1][1]["status"] == "interrupted"
    # Second run dies too: max_attempts (2) reached, the job fails and the tenant is marked failed.
    conn, claimed = engine._claim()
    assert claimed["attempts"] == 2
    conn.close()
    assert engine.recover() == 1
    row = catalog.job(job["id"])
    assert row["status"] == "failed" and "interrupted 2 times" in row["error"]
    assert catalog.tenant("a1")["state"] == "failed"


def test_cancel_of_a_running_job_is_a_request(engine, catalog):
    job = enqueue(catalog, "a1", "host-a")
    conn, _ = engine._claim()
    try:
        row = catalog.request_cancel(job["id"])
        assert row["status"] == "running" and row["cancel_requested"]
    finally:
        conn.close()


def test_sanitized_events_keep_no_results():
    event = {
        "event": "runner_on_ok",
        "event_data": {
            "task": "Read the passwords",
            "host": "h",
            "duration": 0.5,
            "res": {"changed": False, "content": "c2VjcmV0", "_ansible_no_log": True},
            "task_args": "src=/etc/x",
        },
    }
    kind, data = sanitize_event(event)
    assert kind == "result" and data == {
        "task": "Read the passwords",
        "role": None,
        "host": "h",
        "status": "ok",
        "duration": 0.5,
    }
    failed = {"event": "runner_on_failed", "event_data": {"task": "t", "host": "h", "res": {"msg": "boom"}}}
    assert sanitize_event(failed)[1]["msg"] == "boom"
    assert sanitize_event({"event": "runner_item_on_ok", "event_data": {"item": "secret"}}) is None
    assert sanitize_event({"event": "verbose", "stdout": "secret"}) is None


def test_a_real_run_against_a_missing_host_fails_cleanly(devdb, fake_inventory, tmp_path, catalog):
    """ansible-runner runs tenant.yml for real; the host does not exist, so the job fails with the reason."""
    settings = make_settings(devdb, fake_inventory, tmp_path, engine=True)
    engine = Engine(settings)
    job = enqueue(catalog, "ghost", "sdb-api-nohost-a")
    engine.start()
    try:
        deadline = time.monotonic() + 180
        while catalog.job(job["id"])["status"] in ("queued", "running") and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        engine.stop()
    row = catalog.job(job["id"])
    assert row["status"] == "failed", row
    assert "sdb-api-nohost-a" in row["error"]
    kinds = [kind for kind, _ in events(catalog, job["id"])]
    assert kinds[0] == "job" and "play" in kinds and "task" in kinds and "result" in kinds
    assert kinds[-1] == "job"
    assert catalog.tenant("ghost")["state"] == "failed"
    assert row["wrapped_key"] is None  # no credentials will come: the key is forgotten
    assert list(tmp_path.iterdir()) == []  # runner directories removed


def test_ansible_runs_import_the_checkouts_own_package(engine, monkeypatch):
    """ansible-runner gets the checkout first on PYTHONPATH: its filter plugins import its
    shadowdb package, also when the venv was installed from another checkout."""
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    env = engine._envvars()
    repo = str(engine.settings.repo)
    assert env["PYTHONPATH"].split(":") == [repo, "/elsewhere"]
    assert env["ANSIBLE_CONFIG"] == f"{repo}/ansible.cfg"
    assert env["ANSIBLE_NOCOLOR"] == "1"

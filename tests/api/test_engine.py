"""The job engine on procrastinate, against the real catalog: the locks (one run per host, one
route or HA step in the deployment, HA runs excluding host runs), the steps of a job, the
recovery of a step whose worker died, real ansible-runner runs, and worker processes
(``python -m api worker``) sharing one catalog: a job retried after its worker is SIGKILLed,
one run per host at a time over two workers."""

import asyncio
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest

from api.catalog import ROUTING, STEP_TASK, defer_step
from api.jobs import DRIFT_TASK, HOST_LOCK_CLASS, Engine, new_job_id
from api.runs import sanitize_event

from .conftest import REPO, Worker, make_settings, server_env


def enqueue(catalog, name, host):
    job = {"id": new_job_id(), "created_by": None}
    return catalog.create_tenant({"name": name}, lambda spec, records, current: [host], job, max_queued=100)


@pytest.fixture
def engine(devdb, fake_inventory, tmp_path, catalog):
    return Engine(make_settings(devdb, fake_inventory, tmp_path, max_attempts=2))


def events(catalog, job_id):
    return [(e["type"], e["data"]) for e in catalog.events(job_id)]


def fetch_all(engine, n: int) -> list:
    """What procrastinate's workers may start now: n fetches by one registered worker
    (procrastinate's own fetch query, the one its workers run)."""

    async def go():
        async with engine.app.open_async():
            manager = engine.app.job_manager
            worker_id = await manager.register_worker()
            return [await manager.fetch_job(queues=["shadowdb"], worker_id=worker_id) for _ in range(n)]

    return asyncio.run(go())


def test_one_run_per_host_and_hosts_in_parallel(engine, catalog):
    a1 = enqueue(catalog, "a1", "host-a")
    enqueue(catalog, "a2", "host-a")
    b1 = enqueue(catalog, "b1", "host-b")
    got = fetch_all(engine, 3)
    assert [t and t.task_kwargs["job_id"] for t in got] == [str(a1["id"]), str(b1["id"]), None]
    assert got[0].lock == "shadowdb:host:host-a" and got[1].lock == "shadowdb:host:host-b"


def test_route_and_ha_steps_run_one_at_a_time(engine, catalog):
    """Route steps (and HA steps, which render HAProxy too) share the deployment's routing lock."""
    jobs = [enqueue(catalog, f"r{i}", f"host-{i}") for i in range(3)]
    with catalog.conn() as conn, conn.transaction():
        conn.execute("DELETE FROM procrastinate_jobs")
        defer_step(conn, jobs[0], "route")
        defer_step(conn, jobs[1], "ha")
        defer_step(conn, jobs[2], "route")
    got = fetch_all(engine, 2)
    assert got[0].task_kwargs == {"job_id": str(jobs[0]["id"]), "step": "route"} and got[0].lock == ROUTING
    assert got[1] is None  # the HA step waits for the route step, the next route step behind it


def test_an_ha_step_excludes_host_steps_on_its_hosts_only(engine, catalog):
    host_step, ha_step, later_host_step, other_host = (engine._connect() for _ in range(4))
    ha_hosts = ["host-a", "host-b"]
    try:
        assert engine._hold_hosts(host_step, ["host-a"], exclusive=False, stop=lambda: False)
        result = {}
        waiter = threading.Thread(
            target=lambda: result.setdefault("ha", engine._hold_hosts(ha_step, ha_hosts, True, lambda: False))
        )
        waiter.start()
        time.sleep(0.5)
        assert "ha" not in result  # waits for the running host step on one of its hosts
        polls = []
        # A host step on its host coming after the waiting HA step queues behind it (no starvation).
        assert not engine._hold_hosts(
            later_host_step, ["host-a"], False, lambda: polls.append(1) or len(polls) > 3
        )
        # A host step on a host the HA step does not touch goes on.
        assert engine._hold_hosts(other_host, ["host-c"], False, lambda: True)
        host_step.execute("SELECT pg_advisory_unlock_shared(%s, hashtext(%s))", (HOST_LOCK_CLASS, "host-a"))
        waiter.join(10)
        assert result == {"ha": True}
        for host in ha_hosts:  # the HA run holds both of its hosts
            assert not engine._hold_hosts(later_host_step, [host], False, lambda: True)
        # A cancelled HA step stops waiting, and holds nothing.
        assert not engine._hold_hosts(host_step, ["host-c", "host-d"], True, lambda: True)
        assert engine._hold_hosts(later_host_step, ["host-d"], False, lambda: True)
    finally:
        for conn in (host_step, ha_step, later_host_step, other_host):
            conn.close()


def test_the_hosts_a_step_locks(engine, catalog):
    job = enqueue(catalog, "lk", "host-a")
    with catalog.conn() as conn:
        assert engine._step_hosts(conn, job, "host") == ["host-a"]
        assert engine._step_hosts(conn, job | {"hosts": ["host-b", "host-c"]}, "ha") == ["host-b", "host-c"]
        # A job queued before jobs had hosts: every host the catalog knows.
        enqueue(catalog, "lk2", "host-z")
        assert engine._step_hosts(conn, job | {"hosts": None}, "ha") == ["host-a", "host-z"]


@pytest.mark.parametrize(
    ("routed", "kind", "steps"),
    [
        (False, "create", ["host"]),
        (False, "update", ["host"]),
        (False, "delete", ["host"]),
        (True, "create", ["host"]),
        (True, "update", ["host"]),
        (True, "delete", ["route", "host"]),
    ],
)
def test_steps_of_a_job(engine, routed, kind, steps):
    engine.routed = lambda: routed
    job = {"kind": kind, "tenant": "a1", "host": "host-a", "spec": {"name": "a1"}, "public_key": None}
    planned = engine._steps(job)
    assert [step for step, _, _ in planned] == steps
    by_step = {step: (playbook, extravars) for step, playbook, extravars in planned}
    if routed and kind == "delete":  # unregistered first; creates and updates register in their host step
        playbook, extravars = by_step["route"]
        assert playbook.endswith("api/playbooks/tenant_route.yml")
        assert extravars["api_route_state"] == "absent"
    assert by_step["host"][0].endswith("tenant_remove.yml" if kind == "delete" else "tenant_job.yml")
    if kind == "create":  # the host step's run begins with the create guard
        assert by_step["host"][1]["api_job_kind"] == "create"
        assert by_step["host"][1]["api_job_guard_passed"] is False


def test_the_steps_are_fixed_when_the_job_is_queued(catalog):
    catalog.routed = lambda: True
    job = enqueue(catalog, "a1", "host-a")
    assert job["steps"] == ["host"] and job["step"] == "host"
    with catalog.conn() as conn:
        (task,) = conn.execute("SELECT lock, args FROM procrastinate_jobs").fetchall()
    assert task == {"lock": "shadowdb:host:host-a", "args": {"job_id": str(job["id"]), "step": "host"}}


def test_a_step_whose_worker_died_is_queued_again(engine, catalog):
    job = enqueue(catalog, "a1", "host-a")
    (task,) = fetch_all(engine, 1)  # a worker took it...
    with catalog.conn() as conn:
        assert engine._begin(conn, str(job["id"]), "host")[0]["attempts"] == 1
        assert engine.recover() == 0  # ...and is alive (its heartbeat is fresh)
        # ...then its process died: no heartbeat since.
        conn.execute("UPDATE procrastinate_workers SET last_heartbeat = now() - interval '1 hour'")
    assert engine.recover() == 1
    row = catalog.job(job["id"])
    assert row["status"] == "queued" and row["attempts"] == 1
    assert events(catalog, job["id"])[-1][1]["status"] == "interrupted"
    # Second run dies too: max_attempts (2) reached, the job fails and the tenant is marked failed.
    (again,) = fetch_all(engine, 1)
    assert again.id == task.id and again.attempts == 1  # procrastinate's retry of the same job
    with catalog.conn() as conn:
        assert engine._begin(conn, str(job["id"]), "host")[0]["attempts"] == 2
        conn.execute("UPDATE procrastinate_workers SET last_heartbeat = now() - interval '1 hour'")
    assert engine.recover() == 1
    row = catalog.job(job["id"])
    assert row["status"] == "failed" and "interrupted 2 times" in row["error"]
    assert catalog.tenant("a1")["state"] == "failed"
    with catalog.conn() as conn:
        assert conn.execute("SELECT status FROM procrastinate_jobs").fetchone()["status"] == "failed"


def test_a_drift_check_whose_worker_died_lets_the_routing_lock_go(engine, catalog):
    """A drift check holds the routing lock while it reads; its worker killed, the recovery ends it
    so that the route steps queued behind it run (the next period checks again)."""
    job = enqueue(catalog, "r1", "host-a")

    async def defer_drift():
        async with engine.app.open_async():
            await engine.app.tasks[DRIFT_TASK].defer_async(timestamp=0)

    asyncio.run(defer_drift())
    with catalog.conn() as conn, conn.transaction():
        conn.execute("DELETE FROM procrastinate_jobs WHERE task_name = %s", (STEP_TASK,))
        defer_step(conn, job, "route")
    (drift,) = fetch_all(engine, 1)  # a worker took the check (priority over steps)...
    assert drift.task_name == DRIFT_TASK and drift.lock == ROUTING
    assert fetch_all(engine, 1) == [None]  # ...the route step waits for its lock
    with catalog.conn() as conn:  # ...then its process died: no heartbeat since.
        conn.execute("UPDATE procrastinate_workers SET last_heartbeat = now() - interval '1 hour'")
    engine.recover()
    (route,) = fetch_all(engine, 1)
    assert route.task_kwargs == {"job_id": str(job["id"]), "step": "route"}


def test_a_stale_copy_of_a_step_does_nothing(engine, catalog):
    job = enqueue(catalog, "a1", "host-a")
    with catalog.conn() as conn:
        assert engine._begin(conn, str(job["id"]), "route") is None  # not the job's step
        catalog.request_cancel(job["id"])
        # Its queued step left procrastinate's queue; a worker that had taken it does nothing.
        assert conn.execute("SELECT count(*) AS n FROM procrastinate_jobs").fetchone()["n"] == 0
        assert engine._begin(conn, str(job["id"]), "host") is None


def test_cancel_of_a_running_job_is_a_request(engine, catalog):
    job = enqueue(catalog, "a1", "host-a")
    with catalog.conn() as conn:
        engine._begin(conn, str(job["id"]), "host")
    row = catalog.request_cancel(job["id"])
    assert row["status"] == "running" and row["cancel_requested"]


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


def wait_for(catalog, job_id, timeout=180):
    deadline = time.monotonic() + timeout
    while catalog.job(job_id)["status"] in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.3)
    return catalog.job(job_id)


def test_a_real_run_against_a_missing_host_fails_cleanly(devdb, fake_inventory, tmp_path, catalog):
    """ansible-runner runs tenant.yml for real; the host does not exist, so the job fails with the reason."""
    settings = make_settings(devdb, fake_inventory, tmp_path, engine=True)
    engine = Engine(settings)
    job = enqueue(catalog, "ghost", "sdb-api-nohost-a")
    engine.start()
    try:
        row = wait_for(catalog, job["id"])
    finally:
        engine.stop()
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


# --- real runs of stand-in playbooks on this machine, workers in this and other processes ------

# The API's playbooks replaced by stand-ins (a checkout of their own: settings.repo) that run on
# this machine (local connection): the host step logs its start and end per host and sleeps
# (long on a tenant's first run, so that a test can kill its worker meanwhile), then hands back
# an endpoint as tenant_job.yml does; the route step hands back a proxy port.
# fake_rendezvous, shell lines of both stand-ins (in place of their line `RENDEZVOUS`): wait (up
# to that many seconds) until a run on another host has begun.
RENDEZVOUS = """\
        for _ in $(seq 1 {{ (fake_rendezvous | default(0) | int) * 10 }}); do
          [ "$(awk '$1 == "start" {print $3}' {{ fake_log }} | sort -u | wc -l)" -ge 2 ] && break
          sleep 0.1
        done
"""

HOST_STEP = """\
- name: Converge the tenant (stand-in)
  hosts: "{{ tenant_host }}"
  gather_facts: false
  tasks:
    - name: Run for a while
      ansible.builtin.shell: |
        n=$(grep -c "^start {{ tenant.name }} " {{ fake_log }} 2>/dev/null || true)
        echo "start {{ tenant.name }} {{ tenant_host }} $(date +%s.%N)" >> {{ fake_log }}
        RENDEZVOUS
        if [ "${n:-0}" -eq 0 ]; then sleep {{ fake_first_sleep }}; else sleep {{ fake_sleep }}; fi
        echo "end {{ tenant.name }} {{ tenant_host }} $(date +%s.%N)" >> {{ fake_log }}
      changed_when: false
    - name: Endpoint as custom stats
      ansible.builtin.set_stats:
        data:
          shadowdb_api_endpoint:
            host: "{{ tenant.name }}.test"
            address: 127.0.0.1
            port: 5432
            dbname: "{{ tenant.name }}"
            user: "{{ tenant.name }}"
            readonly_user: null
          shadowdb_api_route:
            proxy_port: 30001
        per_host: false
        aggregate: false
""".replace("        RENDEZVOUS\n", RENDEZVOUS)
ROUTE_STEP = """\
- name: Route the tenant (stand-in)
  hosts: "{{ tenant_host }}"
  gather_facts: false
  tasks:
    - name: Proxy port as custom stats
      ansible.builtin.set_stats:
        data:
          shadowdb_api_route:
            proxy_port: 30001
        per_host: false
        aggregate: false
"""


# A batch (api/playbooks/tenants_job.yml): one run for several tenants of the host. Its create
# guard first (as create_guards.yml hands it back): a create named taken* already exists on the
# host, and is left out of the converge; then a tenant named bad* fails on its own, as tenant.yml
# reports it.
BATCH_STEP = """\
- name: Refuse to create a tenant that already exists (stand-in)
  hosts: "{{ tenant_host }}"
  gather_facts: false
  tasks:
    - name: One look for all the names
      ansible.builtin.shell: echo "guard {{ names }} - 0" >> {{ fake_log | default('/dev/null') }}
      vars:
        names: "{{ api_guards | map(attribute='name') | join(',') }}"
      changed_when: false
      when: api_guards | length > 0
    - name: No tenant of that name on any db host or in the registry
      ansible.builtin.set_fact:
        api_guard_passed: "{{ api_guards | map(attribute='name') | reject('match', 'taken') | list }}"
        api_guard_stopped: "{{ api_guards | map(attribute='name') | select('match', 'taken') | list }}"
    - name: Each tenant's conflict
      ansible.builtin.set_stats:
        data:
          shadowdb_api_guard:
            refused: {}
            conflicts: >-
              {% set out = {} %}{% for name in api_guard_stopped %}{%
                set _ = out.update({name: {'hosts': [tenant_host], 'found': {}, 'registry': false}})
              %}{% endfor %}{{ out }}
        per_host: false
        aggregate: false

- name: Converge the tenants (stand-in)
  hosts: "{{ tenant_host }}"
  gather_facts: false
  vars:
    tenants: "{{ api_tenants | rejectattr('name', 'in', api_guard_stopped) | list }}"
  tasks:
    - name: Run for a while
      ansible.builtin.shell: |
        echo "start {{ names }} {{ tenant_host }} $(date +%s.%N)" >> {{ fake_log }}
        RENDEZVOUS
        sleep {{ fake_sleep }}
        echo "end {{ names }} {{ tenant_host }} $(date +%s.%N)" >> {{ fake_log }}
      vars:
        names: "{{ tenants | map(attribute='name') | join(',') }}"
      changed_when: false
    - name: Results as custom stats
      ansible.builtin.set_stats:
        data:
          shadowdb_api_batch: >-
            {% set out = {} %}{% for t in tenants if not t.name.startswith('bad') %}{%
              set _ = out.update({t.name: {'endpoint': {'host': t.name ~ '.test', 'port': 5432},
                                           'sealed': ''}})
            %}{% endfor %}{{ out }}
          shadowdb_api_failed: >-
            {% set out = {} %}{% for t in tenants if t.name.startswith('bad') %}{%
              set _ = out.update({t.name: 'cluster: the server did not start'}) %}{% endfor %}{{ out }}
        per_host: false
        aggregate: false
""".replace("        RENDEZVOUS\n", RENDEZVOUS)


@pytest.fixture
def standin(tmp_path):
    """A checkout with stand-in playbooks and an inventory of local hosts: (repo, inventory, log)."""
    repo = tmp_path / "repo"
    (repo / "api" / "playbooks").mkdir(parents=True)
    (repo / "ansible.cfg").write_text("[defaults]\nhost_key_checking = False\n")
    (repo / "api" / "playbooks" / "tenant_job.yml").write_text(HOST_STEP)
    (repo / "api" / "playbooks" / "tenant_route.yml").write_text(ROUTE_STEP)
    (repo / "api" / "playbooks" / "tenants_job.yml").write_text(BATCH_STEP)
    log = tmp_path / "runs.log"
    inventory = tmp_path / "inventory"
    inventory.mkdir()
    local = f"ansible_connection: local, ansible_python_interpreter: {sys.executable}"
    (inventory / "hosts.yml").write_text(
        "all:\n  children:\n    db:\n      hosts:\n"
        f"        host-a: {{{local}}}\n        host-b: {{{local}}}\n"
    )
    return repo, inventory, log


def spans(log: Path) -> dict[str, list[tuple[float, float]]]:
    """Per host, the (start, end) of each finished host step in the stand-in's log."""
    starts, result = {}, {}
    for line in log.read_text().splitlines():
        what, name, host, at = line.split()
        if what == "guard":
            continue
        if what == "start":
            starts[name] = float(at)
        else:
            result.setdefault(host, []).append((starts[name], float(at)))
    return result


def test_a_routed_create_is_one_step(devdb, catalog, tmp_path, standin):
    """A create with routing: one host step (its run begins with the create guard), which
    registers the tenant (its proxy port is in the result); the host is released after it."""
    repo, inventory, log = standin
    settings = make_settings(devdb, inventory, tmp_path / "work", engine=True, repo=repo, poll_interval=0.2)
    catalog.routed = lambda: True
    with open(inventory / "hosts.yml", "a") as f:
        f.write("  vars:\n    fake_log: " + str(log) + "\n    fake_first_sleep: 0\n    fake_sleep: 0\n")
    job = enqueue(catalog, "two", "host-a")
    engine = Engine(settings)
    engine.start()
    try:
        row = wait_for(catalog, job["id"], timeout=120)
    finally:
        engine.stop()
    assert row["status"] == "succeeded", row
    assert row["result"]["endpoint"]["proxy_port"] == 30001 and row["result"]["endpoint"]["port"] == 5432
    assert row["host_released_at"] and row["stats"] is None
    steps = [(d["step"], d["state"]) for k, d in events(catalog, job["id"]) if k == "step"]
    assert steps == [("host", "started"), ("host", "finished")]
    assert catalog.tenant("two")["state"] == "ready"


def test_a_stopping_worker_interrupts_its_run_and_another_runs_it(devdb, catalog, tmp_path, standin):
    """A worker asked to stop (SIGTERM, the API's shutdown) stops its ansible-playbook and hands
    the step back to the queue (procrastinate's retry): the next worker runs it, no wait for a
    heartbeat to go stale."""
    repo, inventory, log = standin
    with open(inventory / "hosts.yml", "a") as f:
        f.write("  vars:\n    fake_log: " + str(log) + "\n    fake_first_sleep: 120\n    fake_sleep: 0\n")
    settings = make_settings(devdb, inventory, tmp_path / "work", engine=True, repo=repo, stalled_after=600)
    job = enqueue(catalog, "stop", "host-a")
    first = Engine(settings)
    first.start()
    try:
        deadline = time.monotonic() + 60
        while not (log.exists() and "start stop" in log.read_text()):
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        first.stop()
    assert not first.alive()
    row = catalog.job(job["id"])
    assert row["status"] == "queued" and row["attempts"] == 1, row
    with catalog.conn() as conn:
        (task,) = conn.execute("SELECT status, attempts FROM procrastinate_jobs").fetchall()
    assert task == {"status": "todo", "attempts": 1}
    second = Engine(settings)
    second.start()
    try:
        row = wait_for(catalog, job["id"], timeout=90)
    finally:
        second.stop()
    assert row["status"] == "succeeded" and row["attempts"] == 2, row
    statuses = [d["status"] for k, d in events(catalog, job["id"]) if k == "job"]
    assert statuses == ["running", "interrupted", "running", "succeeded"], statuses


def test_a_batch_converges_the_jobs_waiting_for_a_host(devdb, catalog, tmp_path, standin):
    """Jobs waiting for their host while it is busy are converged by one run (a batch): each keeps
    its own job, events and result, and one tenant's failure fails its own job only."""
    repo, inventory, log = standin
    with open(inventory / "hosts.yml", "a") as f:
        f.write("  vars:\n    fake_log: " + str(log) + "\n    fake_first_sleep: 8\n    fake_sleep: 0\n")
    settings = make_settings(devdb, inventory, tmp_path / "work", engine=True, repo=repo, poll_interval=0.2)
    engine = Engine(settings)
    engine.start()
    try:
        lead = enqueue(catalog, "lead", "host-a")  # holds host-a for 8 s
        deadline = time.monotonic() + 60
        while not (log.exists() and "start lead" in log.read_text()):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        waiting = [enqueue(catalog, name, "host-a") for name in ("ok1", "bad1", "ok2")]
        assert "end lead" not in log.read_text(), "the host was free before the jobs waited for it"
        rows = {j["tenant"]: wait_for(catalog, j["id"], timeout=120) for j in [lead, *waiting]}
    finally:
        engine.stop()
    runs = [line.split()[1] for line in log.read_text().splitlines() if line.startswith("start")]
    assert runs[0] == "lead" and len(runs) == 2 and sorted(runs[1].split(",")) == ["bad1", "ok1", "ok2"], runs
    assert {name: row["status"] for name, row in rows.items()} == {
        "lead": "succeeded", "ok1": "succeeded", "bad1": "failed", "ok2": "succeeded"
    }  # fmt: skip
    assert rows["bad1"]["error"] == "bad1: cluster: the server did not start"
    assert rows["ok2"]["result"]["endpoint"] == {"host": "ok2.test", "port": 5432}
    assert catalog.tenant("bad1")["state"] == "failed" and catalog.tenant("ok1")["state"] == "ready"
    leaders = set()
    for job in waiting:  # each job has its own stream with the batch's run in it
        steps = [d for k, d in events(catalog, job["id"]) if k == "step" and d["step"] == "host"]
        assert [d["state"] for d in steps] == ["started", "finished"]
        assert sorted(steps[0]["tenants"]) == ["bad1", "ok1", "ok2"]
        leaders.add(steps[0]["batch"])
        assert "Run for a while" in [d["task"] for k, d in events(catalog, job["id"]) if k == "task"]
        assert catalog.job(job["id"])["attempts"] == 1
    assert len(leaders) == 1 and leaders <= {str(j["id"]) for j in waiting}


def test_a_batch_guards_its_creates_and_one_refused_fails_alone(devdb, catalog, tmp_path, standin):
    """Creates waiting at once for one host share one run that begins with their create guard: a
    name found on a host fails its own job with the conflict (the catalog forgets it) and is left
    out of the converge; the guard's result goes to the streams of the creates it passed only
    (so that they skip it if they run again), and those succeed."""
    repo, inventory, log = standin
    with open(inventory / "hosts.yml", "a") as f:
        f.write("  vars:\n    fake_log: " + str(log) + "\n    fake_first_sleep: 0\n    fake_sleep: 0\n")
    settings = make_settings(devdb, inventory, tmp_path / "work", engine=True, repo=repo, poll_interval=0.2)
    jobs = [enqueue(catalog, name, "host-a") for name in ("g1", "taken1", "g2")]
    engine = Engine(settings)
    engine.start()
    try:
        rows = {j["tenant"]: wait_for(catalog, j["id"], timeout=120) for j in jobs}
    finally:
        engine.stop()
    lines = [line.split()[:2] for line in log.read_text().splitlines()]
    assert [what for what, _ in lines] == ["guard", "start", "end"], lines  # one run
    assert lines[0][1] == "g1,taken1,g2" and lines[1][1] == "g1,g2", lines
    assert {name: row["status"] for name, row in rows.items()} == {
        "g1": "succeeded", "taken1": "failed", "g2": "succeeded"
    }  # fmt: skip
    assert rows["taken1"]["error"] == "tenant taken1 already exists on host host-a", rows["taken1"]
    assert rows["taken1"]["result"] == {"conflict": {"hosts": ["host-a"]}}
    assert sorted(t["name"] for t in catalog.tenants()) == ["g1", "g2"]
    with catalog.conn() as conn:
        passed = {j["tenant"]: Engine(settings)._guard_passed(conn, j | {"attempts": 2}) for j in jobs}
    assert passed == {"g1": True, "taken1": False, "g2": True}


def worker_env(devdb, repo, inventory, work, **extra) -> dict:
    settings = {
        "database_url": devdb.url,
        "inventory": inventory,
        "repo": repo,
        "work_dir": work,
        "poll_interval": 0.5,
        "stalled_after": 2,
        "recovery_interval": 1,
    }
    env = server_env(settings | extra)
    env["PYTHONPATH"] = str(REPO)
    return env


def workers_seen(catalog, job_ids) -> set[str]:
    """The workers that ran a step of these jobs (their step events name them)."""
    return {
        d["worker"]
        for job_id in job_ids
        for kind, d in events(catalog, job_id)
        if (kind, d.get("status"), d.get("state")) in (("job", "running", None), ("step", None, "started"))
    }


def test_a_job_is_run_again_after_its_worker_is_killed(devdb, catalog, tmp_path, standin):
    repo, inventory, log = standin
    with open(inventory / "hosts.yml", "a") as f:
        f.write("  vars:\n    fake_log: " + str(log) + "\n    fake_first_sleep: 120\n    fake_sleep: 0\n")
    env = worker_env(devdb, repo, inventory, tmp_path / "work")
    first = Worker(env, tmp_path / "worker1.log").start()
    second = Worker(env, tmp_path / "worker2.log")
    try:
        job = enqueue(catalog, "crash", "host-a")
        deadline = time.monotonic() + 60
        while not (log.exists() and "start crash" in log.read_text()):
            assert time.monotonic() < deadline, (tmp_path / "worker1.log").read_text()[-3000:]
            time.sleep(0.2)
        assert catalog.job(job["id"])["status"] == "running"
        first.kill()  # mid-run
        killed_at = time.monotonic()
        second.start()
        row = wait_for(catalog, job["id"], timeout=90)
        recovered_in = time.monotonic() - killed_at
    finally:
        first.stop()
        second.stop()
    assert row["status"] == "succeeded", (row, (tmp_path / "worker2.log").read_text()[-3000:])
    assert row["attempts"] == 2
    statuses = [d["status"] for k, d in events(catalog, job["id"]) if k == "job"]
    assert statuses == ["running", "interrupted", "running", "succeeded"], statuses
    assert len(workers_seen(catalog, [job["id"]])) == 2
    assert log.read_text().count("start crash") == 2
    print(f"\nkilled worker's job succeeded on another worker {recovered_in:.1f} s after the kill")


def test_two_worker_processes_one_run_per_host(devdb, catalog, tmp_path, standin):
    repo, inventory, log = standin
    with open(inventory / "hosts.yml", "a") as f:
        # A run waits until the other host's has begun: with one worker (or one run at a time)
        # that never happens before it ends, and the runs do not overlap (seen under CI load with
        # plain 2 s runs: a worker that started late missed the other's run).
        f.write(
            "  vars:\n    fake_log: " + str(log) + "\n    fake_first_sleep: 2\n    fake_sleep: 1\n"
            "    fake_rendezvous: 60\n"
        )
    env = worker_env(devdb, repo, inventory, tmp_path / "work", max_workers=1)
    workers = [Worker(env, tmp_path / f"worker{i}.log").start() for i in range(2)]
    try:
        deadline = time.monotonic() + 60
        with psycopg.connect(devdb.url) as conn:  # both registered before the jobs come
            while conn.execute("SELECT count(*) FROM procrastinate_workers").fetchone()[0] < 2:
                assert time.monotonic() < deadline
                time.sleep(0.2)
        jobs = [enqueue(catalog, f"t{i}", "host-a" if i % 2 == 0 else "host-b") for i in range(6)]
        rows = [wait_for(catalog, job["id"], timeout=180) for job in jobs]
    finally:
        for worker in workers:
            worker.stop()
    assert [r["status"] for r in rows] == ["succeeded"] * 6, [r["error"] for r in rows]
    assert all(r["attempts"] == 1 for r in rows)
    by_host = spans(log)  # jobs that waited for their host share a run (a batch)
    assert sorted(by_host) == ["host-a", "host-b"] and all(len(s) <= 3 for s in by_host.values())
    for host, runs in by_host.items():
        runs.sort()
        assert all(a[1] <= b[0] for a, b in zip(runs, runs[1:], strict=False)), f"two runs at once on {host}"
    both = [max(a[0], b[0]) < min(a[1], b[1]) for a in by_host["host-a"] for b in by_host["host-b"]]
    assert any(both), "the two hosts never ran at the same time"
    assert len(workers_seen(catalog, [j["id"] for j in jobs])) == 2


def test_a_create_queued_with_a_guard_step_moves_to_its_host_step(catalog):
    """Migration 0010: a create queued by an earlier version (steps guard, host; its guard step
    waiting in procrastinate without a lock) goes to its host step, with the host's lock; a
    finished job keeps its history."""
    queued, done = enqueue(catalog, "old1", "host-a"), enqueue(catalog, "old2", "host-b")
    with catalog.conn() as conn, conn.transaction():
        conn.execute(
            "UPDATE jobs SET steps = '{guard,host}', step = 'guard' WHERE id = ANY(%s::uuid[])",
            ([str(queued["id"]), str(done["id"])],),
        )
        conn.execute("UPDATE jobs SET status = 'succeeded' WHERE id = %s", (done["id"],))
        conn.execute('UPDATE procrastinate_jobs SET lock = NULL, args = args || \'{"step": "guard"}\'')
        conn.execute((REPO / "api" / "migrations" / "0010_guard_in_host_step.sql").read_text())
    assert (catalog.job(queued["id"])["steps"], catalog.job(queued["id"])["step"]) == (["host"], "host")
    assert (catalog.job(done["id"])["steps"], catalog.job(done["id"])["step"]) == (["guard", "host"], "guard")
    with catalog.conn() as conn:
        tasks = conn.execute("SELECT lock, args FROM procrastinate_jobs ORDER BY id").fetchall()
    assert tasks[0] == {"lock": "shadowdb:host:host-a", "args": {"job_id": str(queued["id"]), "step": "host"}}


@pytest.mark.parametrize(
    ("arrivals", "batch_max", "waits"),
    [
        ([], 10, 1),  # alone: one window
        ([["b1"], ["b2", "b3"]], 10, 3),  # two windows brought more jobs, the third none
        ([["b1"], ["b2"], ["b3"]], 3, 2),  # batch_max jobs waiting: no need to wait for more
        ([["other"]], 10, 1),  # a job for another host does not count
    ],
)
def test_a_host_step_waits_while_jobs_for_its_host_keep_coming(
    devdb, fake_inventory, tmp_path, catalog, monkeypatch, arrivals, batch_max, waits
):
    engine = Engine(make_settings(devdb, fake_inventory, tmp_path, batch_max=batch_max, batch_wait=0.01))
    first = enqueue(catalog, "a1", "host-a")
    sleeps = []

    def sleep(seconds):  # each window: the jobs that reached the catalog meanwhile
        sleeps.append(seconds)
        for name in arrivals[len(sleeps) - 1] if len(sleeps) <= len(arrivals) else []:
            enqueue(catalog, name, "host-b" if name == "other" else "host-a")

    monkeypatch.setattr("api.jobs.time.sleep", sleep)
    with engine._connect() as conn:
        engine._gather(conn, str(first["id"]))
    assert sleeps == [0.01] * waits


def test_a_job_taken_by_a_batch_does_not_wait_for_more(devdb, fake_inventory, tmp_path, catalog, monkeypatch):
    """A job a batch took along keeps its own task, which runs after the batch: it returns at
    once, without a gather window (each one held the host's lock for batch_wait: 10 jobs of a
    batch kept the host from its next batch for 4.5 s in the API bench)."""
    engine = Engine(make_settings(devdb, fake_inventory, tmp_path, batch_wait=5))
    lead, taken, done = (enqueue(catalog, name, "host-a") for name in ("a1", "a2", "a3"))
    with catalog.conn() as conn:
        running = "UPDATE jobs SET status = 'running', run_by = %s WHERE id = %s"
        conn.execute(running, (lead["id"], taken["id"]))
        conn.execute("UPDATE jobs SET status = 'succeeded' WHERE id = %s", (done["id"],))
    with engine._connect() as conn:
        assert engine._waiting(conn, str(lead["id"]), "host")
    sleeps = []
    monkeypatch.setattr("api.jobs.time.sleep", sleeps.append)
    for job in (taken, done):
        engine._step_task(None, str(job["id"]), "host")
    assert sleeps == []
    assert catalog.job(taken["id"])["run_by"] == lead["id"]


def test_a_host_step_waits_at_most_batch_wait_max(devdb, fake_inventory, tmp_path, catalog, monkeypatch):
    engine = Engine(make_settings(devdb, fake_inventory, tmp_path, batch_wait=0.01, batch_wait_max=0.2))
    first = enqueue(catalog, "a1", "host-a")
    count = iter(range(1000))

    def sleep(seconds):  # a job arrives in every window, forever
        enqueue(catalog, f"c{next(count)}", "host-a")
        real_sleep(seconds)

    real_sleep = time.sleep
    monkeypatch.setattr("api.jobs.time.sleep", sleep)
    t0 = time.monotonic()
    with engine._connect() as conn:
        engine._gather(conn, str(first["id"]))
    assert time.monotonic() - t0 < 2

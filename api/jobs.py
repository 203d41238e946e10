"""The job engine: each job is one ansible-runner run of the project's own playbooks.

- Queue: the jobs table. A dispatcher thread claims the oldest queued job whose host has no
  running job (a partial unique index makes "one running job per host" a catalog rule, so two
  API processes sharing a catalog cannot break it either) while fewer than ``max_workers`` runs
  are in flight; admission stops at ``max_queued`` unfinished jobs (HTTP 429), so a burst
  never forks more than ``max_workers`` ansible processes.
- Liveness: the process running a job holds a session advisory lock on it, on the connection
  that claimed it. When the process dies, PostgreSQL drops the lock with the connection; the
  recovery sweep (at start-up and every ``_SWEEP_EVERY`` s, in any API process) finds running
  jobs whose lock it can take, records them as interrupted and queues them again (the
  playbooks are idempotent), up to ``max_attempts`` runs.
- Routing: with a registry (an etcd group in the inventory) a create or update ends with a
  routing step (register, render HAProxy on the proxy hosts) and a delete starts with one. All
  hosts share the proxies, so routing steps run one at a time in the whole deployment (a
  session advisory lock); a job's routing step no longer holds its host (host_released_at), so
  the host's next job starts meanwhile. Renders never interleave: each one reads the registry
  after every earlier step wrote to it.
- High availability: a job of an HA tenant (replicas > 0, a conversion either way, or the
  removal of an HA tenant) is one step, api/playbooks/tenant_ha_job.yml (tenant_ha.yml, which
  places the members, converges them, registers and routes the tenant itself). It may touch any
  db host and renders HAProxy, so it is exclusive: claimed only when no job runs, nothing else is
  claimed while it runs or waits ahead in the queue, and it holds the routing lock for its run.
- Runs: a fresh private_data_dir per run (under ``work_dir``, removed afterwards unless
  ``keep_artifacts``), extra vars on the command line, ``suppress_env_files``, events filtered
  to a fixed set of fields before they reach the catalog, credentials sealed by the playbook.
"""

import base64
import logging
import shutil
import tempfile
import threading
import time
import uuid

import ansible_runner
import psycopg
from psycopg import errors
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from .catalog import CLAIM_LOCK, ROUTING_LOCK, _settle_tenant, add_event, job_lock_key
from .settings import Settings, ansible_env

log = logging.getLogger("shadowdb.api.jobs")

_SWEEP_EVERY = 10.0
_CANCEL_CHECK_EVERY = 1.0
_MAX_MSG = 300
# The last task of api/playbooks/create_guard.yml: when an attempt of a create job passed it,
# later attempts (after a crash) skip the guard, since what is on the host is their own work.
GUARD_TASK = "No tenant of that name on any db host or in the registry"
_ROUTING_POLL = 0.2

# A queued job is claimed when nothing it may touch is in use:
# - an exclusive (HA) job, when no job runs at all (it may touch any db host, and the proxies);
# - any other job, when its host is free, no exclusive job runs, and no exclusive job waits ahead
#   of it (FIFO: an HA job is never starved by a stream of standalone jobs).
# Claims are serialized by CLAIM_LOCK (a transaction lock taken first), so two API processes
# sharing the catalog see each other's claims; the unique index still guards one job per host.
_CLAIM = """
UPDATE jobs SET status = 'running', started_at = clock_timestamp(), attempts = attempts + 1,
    host_released_at = NULL
WHERE id = (
    SELECT j.id FROM jobs j
    WHERE j.status = 'queued'
      AND NOT EXISTS (SELECT 1 FROM jobs x WHERE x.status = 'running' AND x.exclusive)
      AND CASE WHEN j.exclusive
          THEN NOT EXISTS (SELECT 1 FROM jobs r WHERE r.status = 'running')
          ELSE NOT EXISTS (SELECT 1 FROM jobs r
                           WHERE r.host = j.host AND r.status = 'running' AND r.host_released_at IS NULL)
               AND NOT EXISTS (SELECT 1 FROM jobs q
                               WHERE q.status = 'queued' AND q.exclusive AND q.created_at < j.created_at)
          END
    ORDER BY j.created_at
    LIMIT 1
    FOR UPDATE SKIP LOCKED)
RETURNING *
"""

# Ansible runner events kept, and what they become in the catalog (and on the SSE stream).
_RESULT_EVENTS = {
    "runner_on_ok": "ok",
    "runner_on_failed": "failed",
    "runner_on_skipped": "skipped",
    "runner_on_unreachable": "unreachable",
}


def sanitize_event(event: dict) -> tuple[str, dict] | None:
    """Reduce an ansible-runner event to (type, data) with a fixed set of safe fields, or None.

    Results keep the task, host, status, duration and, for failures only, the message (no_log
    results arrive already censored by Ansible). Task arguments, registered results, items,
    stdout and custom stats are never kept.
    """
    kind = event.get("event")
    data = event.get("event_data") or {}
    if kind == "playbook_on_play_start":
        return "play", {"play": data.get("name") or data.get("play")}
    if kind == "playbook_on_task_start":
        return "task", {"task": data.get("task"), "role": data.get("role"), "play": data.get("play")}
    if kind in _RESULT_EVENTS:
        res = data.get("res") or {}
        status = _RESULT_EVENTS[kind]
        if status == "ok" and res.get("changed"):
            status = "changed"
        out = {
            "task": data.get("task"),
            "role": data.get("role"),
            "host": data.get("host"),
            "status": status,
            "duration": round(float(data.get("duration") or 0), 3),
        }
        if status in ("failed", "unreachable"):
            if data.get("ignore_errors"):
                out["ignored"] = True
            out["msg"] = failure_message(res)
        return "result", out
    if kind == "playbook_on_stats":
        recap = {}
        for key in ("ok", "changed", "failures", "skipped", "unreachable", "rescued", "ignored"):
            for host, n in (data.get(key) or {}).items():
                recap.setdefault(host, {})[key] = n
        return "recap", {"hosts": recap}
    return None


def failure_message(res: dict) -> str:
    """A failed result's message for clients: its first line, short, never tool output.

    The task's own message (a failed assert's, a module's ``msg``) says what went wrong; stdout,
    stderr, module output and tracebacks stay in the server log (:func:`log_failure`).
    """
    msg = res.get("msg") or res.get("reason") or "failed"
    items = res.get("results")
    if msg == "All items completed" and isinstance(items, list):  # a loop: its first bad item
        bad = [i for i in items if isinstance(i, dict) and (i.get("failed") or i.get("unreachable"))]
        if bad:
            item = bad[0].get("item")
            prefix = f"{item}: " if isinstance(item, str | int) else ""
            msg = prefix + (
                str(bad[0].get("msg") or "failed") if not bad[0].get("_ansible_no_log") else "failed"
            )
    if not isinstance(msg, str):
        msg = "failed"
    if "Traceback (most recent call last)" in msg or msg.startswith("MODULE FAILURE"):
        return "the module failed (details in the API's log)"
    line = next((part.strip() for part in msg.splitlines() if part.strip()), "failed")
    return line if len(line) <= _MAX_MSG else line[: _MAX_MSG - 3] + "..."


def log_failure(job_id: str, data: dict, res: dict) -> None:
    """The whole failure of a task, for the operator: in the server log only."""
    detail = {k: res[k] for k in ("msg", "rc", "stderr", "module_stderr", "module_stdout") if res.get(k)}
    log.warning("job %s: %s on %s failed: %s", job_id, data.get("task"), data.get("host"), detail)


class Engine:
    def __init__(self, settings: Settings, metrics=None, routed=None):
        self.settings = settings
        self.metrics = metrics
        # Whether jobs have a routing step (the inventory has a registry): a callable.
        self.routed = routed or (lambda: False)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._slots = threading.BoundedSemaphore(settings.max_workers)
        self._running: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()
        self._dispatcher: threading.Thread | None = None
        self._last_sweep = 0.0

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self.settings.work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.recover()
        self._dispatcher = threading.Thread(target=self._dispatch, name="shadowdb-dispatcher", daemon=True)
        self._dispatcher.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop claiming; interrupt running runs (they are queued again for the next start)."""
        self._stop.set()
        self._wake.set()
        if self._dispatcher:
            self._dispatcher.join(timeout)
        deadline = time.monotonic() + timeout
        for thread in list(self._running.values()):
            thread.join(max(0.1, deadline - time.monotonic()))

    def notify(self) -> None:
        self._wake.set()

    def running_count(self) -> int:
        return len(self._running)

    def _connect(self) -> psycopg.Connection:
        return psycopg.connect(self.settings.database_url, autocommit=True, row_factory=dict_row)

    # --- recovery --------------------------------------------------------------------------

    def recover(self) -> int:
        """Queue again (or fail, past max_attempts) running jobs whose process is gone."""
        recovered = 0
        with self._connect() as conn:
            running = conn.execute("SELECT id FROM jobs WHERE status = 'running'").fetchall()
            for row in running:
                key = job_lock_key(row["id"])
                if not conn.execute("SELECT pg_try_advisory_lock(%s) AS ok", (key,)).fetchone()["ok"]:
                    continue  # its process is alive (this one or another)
                try:
                    with conn.transaction():
                        job = conn.execute(
                            "SELECT * FROM jobs WHERE id = %s AND status = 'running' FOR UPDATE", (row["id"],)
                        ).fetchone()
                        if job is None:
                            continue
                        recovered += 1
                        if job["attempts"] >= self.settings.max_attempts or job["cancel_requested"]:
                            reason = (
                                "cancelled; the API stopped while it ran"
                                if job["cancel_requested"]
                                else f"interrupted {job['attempts']} times; giving up"
                            )
                            status = "cancelled" if job["cancel_requested"] else "failed"
                            job = conn.execute(
                                "UPDATE jobs SET status = %s, finished_at = now(), error = %s"
                                " WHERE id = %s RETURNING *",
                                (status, reason, job["id"]),
                            ).fetchone()
                            _settle_tenant(conn, job)
                            add_event(conn, job["id"], "job", {"status": status, "message": reason})
                        else:
                            conn.execute(
                                "UPDATE jobs SET status = 'queued', host_released_at = NULL WHERE id = %s",
                                (job["id"],),
                            )
                            add_event(
                                conn,
                                job["id"],
                                "job",
                                {
                                    "status": "interrupted",
                                    "message": "the API stopped while this job ran; it runs again "
                                    "(the playbooks are idempotent)",
                                    "attempt": job["attempts"],
                                },
                            )
                        log.warning("job %s was interrupted (attempt %s)", job["id"], job["attempts"])
                finally:
                    conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
        if recovered:
            self._wake.set()
        return recovered

    # --- dispatch --------------------------------------------------------------------------

    def _dispatch(self) -> None:
        while not self._stop.is_set():
            try:
                if time.monotonic() - self._last_sweep > _SWEEP_EVERY:
                    self._last_sweep = time.monotonic()
                    self.recover()
                while not self._stop.is_set() and self._slots.acquire(blocking=False):
                    claimed = self._claim()
                    if claimed is None:
                        self._slots.release()
                        break
                    conn, job = claimed
                    thread = threading.Thread(
                        target=self._run, args=(conn, job), name=f"shadowdb-job-{job['id']}", daemon=True
                    )
                    with self._lock:
                        self._running[str(job["id"])] = thread
                    thread.start()
            except Exception:
                log.exception("dispatcher error (retrying)")
            self._wake.wait(self.settings.poll_interval)
            self._wake.clear()

    def _claim(self):
        conn = self._connect()
        try:
            with conn.transaction():
                # started_at is clock_timestamp(), not now(): now() is when this transaction began,
                # before the wait for CLAIM_LOCK, i.e. before the host's previous job let it go.
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (CLAIM_LOCK,))
                job = conn.execute(_CLAIM).fetchone()
                if job is None:
                    conn.close()
                    return None
                # Session lock: held until this connection closes (or the process dies).
                conn.execute("SELECT pg_advisory_lock(%s)", (job_lock_key(job["id"]),))
            return conn, job
        except errors.UniqueViolation:
            conn.close()  # another process claimed a job of that host first
            return None
        except BaseException:
            conn.close()
            raise

    # --- one job: its steps ---------------------------------------------------------------

    def _steps(self, job: dict, guard_passed: bool = False) -> list[tuple[str, str, dict]]:
        """(step, playbook, extra vars) of a job, in order.

        Without routing (no etcd group) a job is one host step. With routing, a create or update
        is its host step (tenant.yml with tag register skipped) then its routing step
        (api/playbooks/tenant_route.yml), and a delete is its routing step (unregister) then its
        host step (tenant_remove.yml, register skipped).
        """
        playbooks = self.settings.repo / "api" / "playbooks"
        name = job["tenant"]
        public_key = base64.b64encode(bytes(job["public_key"])).decode() if job["public_key"] else ""
        # A create runs the create guard first (api/playbooks/create_guard.yml): never adopt.
        guard = {"api_job_kind": job["kind"], "api_job_guard_passed": guard_passed}
        if job.get("exclusive"):
            extravars = {"tenant": job["spec"], "api_job_public_key": public_key} | guard
            if job["kind"] == "delete":
                extravars = {"tenant": {"name": name, "state": "absent"}, "confirm": name}
            return [("ha", str(playbooks / "tenant_ha_job.yml"), extravars)]
        if job["kind"] == "delete":
            host = (
                "host",
                str(self.settings.repo / "playbooks" / "tenant_remove.yml"),
                {"tenant_host": job["host"], "tenant_name": name, "confirm": name},
            )
        else:
            host = (
                "host",
                str(playbooks / "tenant_job.yml"),
                {"tenant_host": job["host"], "tenant": job["spec"], "api_job_public_key": public_key} | guard,
            )
        if not self.routed():
            return [host]
        route = (
            "route",
            str(playbooks / "tenant_route.yml"),
            {
                "tenant_host": job["host"],
                "tenant": job["spec"],
                "api_route_state": "absent" if job["kind"] == "delete" else "present",
            },
        )
        return [route, host] if job["kind"] == "delete" else [host, route]

    def _run(self, conn: psycopg.Connection, job: dict) -> None:
        job_id = str(job["id"])
        started = time.monotonic()
        data_dirs: list[str] = []
        check = {"last": 0.0, "cancel": False}

        def cancelled() -> bool:
            if self._stop.is_set():
                return True
            now = time.monotonic()
            if now - check["last"] >= _CANCEL_CHECK_EVERY:
                check["last"] = now
                row = conn.execute("SELECT cancel_requested FROM jobs WHERE id = %s", (job_id,)).fetchone()
                check["cancel"] = bool(row and row["cancel_requested"])
            return check["cancel"]

        stats: dict[str, dict] = {}
        status = error = conflict = None
        try:
            add_event(
                conn, job_id, "job", {"status": "running", "attempt": job["attempts"], "host": job["host"]}
            )
            steps = self._steps(job, guard_passed=self._guard_passed(conn, job))
            if job.get("exclusive"):
                # From now on the tenant may be HA on the hosts: its next jobs go through
                # tenant_ha.yml too, until one leaves it standalone (catalog._settle_tenant).
                conn.execute("UPDATE tenants SET ha = true WHERE name = %s", (job["tenant"],))
            for step, playbook, extravars in steps:
                if step in ("route", "ha"):
                    if step == "route" and job["kind"] != "delete":
                        # The host step is done: the host's next job may start.
                        conn.execute("UPDATE jobs SET host_released_at = now() WHERE id = %s", (job_id,))
                        self._wake.set()
                    if not self._routing_lock(conn, cancelled):
                        status, error = self._stopped()
                        break
                skip = "register" if step == "host" and len(steps) > 1 else None
                data_dir = tempfile.mkdtemp(
                    prefix=f"{job_id}-{job['attempts']}-{step}-", dir=self.settings.work_dir
                )
                data_dirs.append(data_dir)
                add_event(conn, job_id, "step", {"step": step, "state": "started"})
                try:
                    runner, state = self._ansible(
                        conn, job, step, playbook, extravars, skip, data_dir, cancelled
                    )
                    add_event(
                        conn, job_id, "step", {"step": step, "state": "finished", "runner": runner.status}
                    )
                finally:
                    if step in ("route", "ha"):
                        conn.execute("SELECT pg_advisory_unlock(%s)", (ROUTING_LOCK,))
                stats[step] = state["stats"]
                status, error = self._failure(runner, state)
                conflict = self._conflict(job, state["stats"]) if status == "failed" else None
                if conflict:
                    error = conflict["error"]
                if status:
                    break
        except Exception:  # the runner itself failed: record it, never leave the job running
            log.exception("job %s: runner error", job_id)
            status, error = "failed", "internal error while running the job (details in the API's log)"
        result = sealed = None
        if conflict:
            result = {"conflict": {"hosts": conflict["hosts"]}}
        if status is None:
            status, error, result, sealed = self._result(job, stats)
        try:
            if status == "interrupted":
                conn.execute(
                    "UPDATE jobs SET status = 'queued', host_released_at = NULL WHERE id = %s", (job_id,)
                )
                add_event(
                    conn,
                    job_id,
                    "job",
                    {
                        "status": "interrupted",
                        "message": "the API is stopping; the job runs again at its next start",
                    },
                )
            else:
                self._finish(conn, job_id, status, error, result, sealed)
            if self.metrics and status != "interrupted":
                self.metrics.job_finished(job["kind"], status, time.monotonic() - started)
        except Exception:
            log.exception("job %s: could not record the outcome (the recovery sweep will re-run it)", job_id)
        finally:
            conn.close()  # releases the job's advisory lock (and the routing lock, if held)
            with self._lock:
                self._running.pop(job_id, None)
            self._slots.release()
            self._wake.set()
            if not self.settings.keep_artifacts:
                for data_dir in data_dirs:
                    shutil.rmtree(data_dir, ignore_errors=True)

    def _guard_passed(self, conn, job: dict) -> bool:
        """Whether an earlier attempt of this create job passed the create guard (its events say)."""
        if job["kind"] != "create" or job["attempts"] <= 1:
            return False
        row = conn.execute(
            "SELECT 1 FROM job_events WHERE job_id = %s AND type = 'result'"
            " AND data->>'task' = %s AND data->>'status' = 'ok' LIMIT 1",
            (job["id"], GUARD_TASK),
        ).fetchone()
        return row is not None

    @staticmethod
    def _conflict(job: dict, stats: dict) -> dict | None:
        """A create refused by the create guard: {error, hosts}, or None."""
        found = (stats or {}).get("shadowdb_api_conflict")
        if job["kind"] != "create" or not isinstance(found, dict):
            return None
        hosts = [str(h) for h in found.get("hosts") or []] or ["(unknown)"]
        log.warning("job %s: tenant %s already exists: %s", job["id"], job["tenant"], found)
        return {
            "error": f"tenant {job['tenant']} already exists on host {', '.join(hosts)}",
            "hosts": hosts,
        }

    def _routing_lock(self, conn, cancelled) -> bool:
        """Wait for the deployment's routing lock (False: the job was cancelled or the API stops)."""
        while True:
            if conn.execute("SELECT pg_try_advisory_lock(%s) AS ok", (ROUTING_LOCK,)).fetchone()["ok"]:
                return True
            if cancelled():
                return False
            time.sleep(_ROUTING_POLL)

    def _stopped(self) -> tuple[str, str | None]:
        if self._stop.is_set():
            return "interrupted", None
        return "cancelled", "cancelled while running"

    def _ansible(self, conn, job, step, playbook, extravars, skip_tags, data_dir, cancelled):
        """One ansible-runner run of a job's step; its events go to the job's stream."""
        job_id = str(job["id"])
        state: dict = {"stats": {}, "failure": None}

        def on_event(event: dict) -> bool:
            if event.get("event") == "playbook_on_stats":
                state["stats"] = (event.get("event_data") or {}).get("artifact_data") or {}
            item = sanitize_event(event)
            if item is not None:
                kind, data = item
                if (
                    kind == "result"
                    and data["status"] in ("failed", "unreachable")
                    and not data.get("ignored")
                ):
                    state["failure"] = data
                    log_failure(job_id, data, (event.get("event_data") or {}).get("res") or {})
                add_event(conn, job_id, kind, data)
            return self.settings.keep_artifacts

        runner = ansible_runner.run(
            private_data_dir=data_dir,
            project_dir=str(self.settings.repo),
            playbook=playbook,
            inventory=str(self.settings.inventory),
            extravars=extravars,
            envvars=self._envvars(),
            ident=f"{job_id}-{job['attempts']}-{step}",
            skip_tags=skip_tags,
            suppress_env_files=True,
            quiet=True,
            event_handler=on_event,
            cancel_callback=cancelled,
            timeout=self.settings.job_timeout,
            settings={"pexpect_timeout": 1, "suppress_ansible_output": True},
        )
        return runner, state

    def _envvars(self) -> dict:
        return ansible_env(self.settings.repo) | {"ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1"}

    def _failure(self, runner, state: dict) -> tuple[str | None, str | None]:
        """(status, error) of a run that did not succeed, (None, None) for a successful one."""
        if runner.status == "successful":
            return None, None
        if runner.status == "canceled":
            return self._stopped()
        if runner.status == "timeout":
            return "failed", f"timed out after {self.settings.job_timeout} s"
        failure = state["failure"]
        if failure:
            error = f"{failure['task']} on {failure['host']}: {failure['msg']}"
        else:
            error = f"ansible-playbook exited with {runner.rc} (details in the API's log)"
            try:
                output = runner.stdout.read()[-3000:]
            except Exception:  # noqa: BLE001 - the log line is best effort
                output = "(no output)"
            log.warning("%s: ansible-playbook exited with %s: %s", runner.config.ident, runner.rc, output)
        return "failed", error[: 2 * _MAX_MSG]

    def _result(self, job: dict, stats: dict[str, dict]):
        """(status, error, result, sealed) of a job whose steps all succeeded."""
        if job["kind"] == "delete":
            return "succeeded", None, {}, None
        if job.get("exclusive"):
            return self._ha_result(job, stats.get("ha") or {})
        host = stats.get("host") or {}
        endpoint = host.get("shadowdb_api_endpoint")
        proxy_port = ((stats.get("route") or {}).get("shadowdb_api_route") or {}).get("proxy_port")
        if endpoint and proxy_port not in (None, "", "None"):
            endpoint = dict(endpoint) | {"proxy_port": int(proxy_port)}
        sealed = host.get("shadowdb_api_sealed") or None
        if job["kind"] == "create" and job["public_key"] and not sealed:
            return "failed", "the run succeeded but returned no credentials", {"endpoint": endpoint}, None
        return "succeeded", None, {"endpoint": endpoint}, sealed

    def _ha_result(self, job: dict, stats: dict):
        """(status, error, result, sealed) of a successful tenant_ha_job.yml run: the registry's
        record as the playbook left it (members with their roles at registration, proxy port)."""
        ha = stats.get("shadowdb_api_ha") or {}
        endpoint = ha.get("endpoint") or None
        if endpoint:  # unset values (no proxy, no replica) may come as null, "" or "None"
            endpoint = {k: (None if v in ("", "None") else v) for k, v in endpoint.items()}
            if endpoint.get("proxy_port") is None:
                endpoint.pop("proxy_port", None)
        result = {"endpoint": endpoint, "host": ha.get("host") or None, "members": ha.get("members") or []}
        sealed = stats.get("shadowdb_api_sealed") or None
        if not endpoint:
            return "failed", "the run succeeded but the tenant has no registry record", result, None
        if job["kind"] == "create" and job["public_key"] and not sealed:
            return "failed", "the run succeeded but returned no credentials", result, None
        return "succeeded", None, result, sealed

    def _finish(self, conn, job_id: str, status: str, error, result, sealed) -> None:
        with conn.transaction():
            job = conn.execute(
                "UPDATE jobs SET status = %s, finished_at = now(), error = %s, result = %s,"
                " sealed_credentials = %s WHERE id = %s RETURNING *",
                (status, error, Jsonb(result) if result is not None else None, sealed, job_id),
            ).fetchone()
            if job["kind"] == "create" and status != "succeeded":
                # No credentials will come: forget the key.
                conn.execute("UPDATE jobs SET wrapped_key = NULL WHERE id = %s", (job_id,))
            _settle_tenant(conn, job)
            event = {"status": status}
            if error:
                event["message"] = error
            add_event(conn, job_id, "job", event)


def new_job_id() -> str:
    return str(uuid.uuid4())

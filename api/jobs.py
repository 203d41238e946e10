"""The job engine: each step of a job is one procrastinate job running one ansible-runner run.

- Queue: procrastinate (its tables in the catalog database, psycopg 3). A job's steps (see
  catalog.plan) are queued one after the other, each when the previous one succeeded, in the
  same transaction as the catalog's update. procrastinate's lock of a step (catalog.step_lock)
  gives one run at a time per host and one route or HA step at a time in the deployment, in
  queue order; workers in any number of processes (the API's own, ``python -m api worker``
  elsewhere) share the catalog. Admission stops at ``max_queued`` unfinished jobs (HTTP 429);
  a worker runs at most ``max_workers`` steps at once.
- High availability: an HA step (tenant_ha.yml) may touch any db host. Besides the routing lock
  it takes HOSTS_LOCK, a PostgreSQL advisory lock, exclusively, while every host step holds it
  shared: an HA run waits for the host steps running, and host steps wait behind a waiting HA
  run (PostgreSQL queues a shared request behind a waiting exclusive one), so it never starves.
- Liveness: procrastinate's workers send heartbeats. A periodic task (and each worker at its
  start) finds the steps of workers silent for ``stalled_after`` seconds (killed, their machine
  gone), records them as interrupted and queues them again (the playbooks are idempotent), up to
  ``max_attempts`` runs of the job, then fails it. A worker asked to stop (SIGTERM) interrupts
  its runs the same way: they are retried by the next worker.
- Runs: a fresh private_data_dir per run (under ``work_dir``, removed afterwards unless
  ``keep_artifacts``), extra vars on the command line, ``suppress_env_files``, events filtered
  to a fixed set of fields before they reach the catalog, credentials sealed by the playbook.
"""

import asyncio
import base64
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import ansible_runner
import procrastinate
import psycopg
from procrastinate import sql as procrastinate_sql
from psycopg import errors
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from .catalog import ACTIVE, QUEUE, STEP_TASK, _settle_tenant, add_event, defer_step, plan
from .settings import Settings, ansible_env

log = logging.getLogger("shadowdb.api.jobs")

_CANCEL_CHECK_EVERY = 1.0
_MAX_MSG = 300
# The last task of api/playbooks/create_guard.yml: when an attempt of a create job passed it,
# later attempts (after a crash) skip the guard, since what is on the host is their own work.
GUARD_TASK = "No tenant of that name on any db host or in the registry"
# Advisory locks (arbitrary, fixed keys): every db host (shared: a host step; exclusive: an HA
# step), and the recovery of stalled steps (a transaction lock: one recovery at a time).
HOSTS_LOCK = 0x5DB0005
_RECOVERY_LOCK = 0x5DB0006
_LOCK_POLL = 0.2
RECOVER_TASK = "shadowdb_recover"


class Interrupted(Exception):
    """The worker stops while a step runs: procrastinate retries the step (RetryStrategy)."""


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
        # Whether jobs have a route step: only for jobs queued without their steps (tests).
        self.routed = routed or (lambda: False)
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self._running = 0
        self._count_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._worker: asyncio.Task | None = None
        self._started = threading.Event()
        connector = procrastinate.PsycopgConnector(conninfo=settings.database_url, min_size=1, max_size=4)
        self.app = procrastinate.App(connector=connector)
        self.app.task(
            name=STEP_TASK,
            queue=QUEUE,
            pass_context=True,
            retry=procrastinate.RetryStrategy(retry_exceptions={Interrupted}),
        )(self._step_task)
        recover = self.app.task(name=RECOVER_TASK, queue=QUEUE, priority=10, queueing_lock=RECOVER_TASK)(
            self._recover_task
        )
        self.app.periodic(cron=f"* * * * * */{settings.recovery_interval}")(recover)

    # --- lifecycle -------------------------------------------------------------------------

    def _worker_options(self, install_signal_handlers: bool) -> dict:
        heartbeat = max(0.5, self.settings.stalled_after / 3)
        return {
            "name": f"shadowdb-{self.name}",
            "queues": [QUEUE],
            "concurrency": self.settings.max_workers,
            "fetch_job_polling_interval": self.settings.poll_interval,
            "abort_job_polling_interval": 5.0,
            "shutdown_graceful_timeout": 0,  # running steps are interrupted and retried
            "delete_jobs": "successful",
            "install_signal_handlers": install_signal_handlers,
            "update_heartbeat_interval": heartbeat,
            "stalled_worker_timeout": self.settings.stalled_after,
        }

    async def _serve(self, install_signal_handlers: bool) -> None:
        loop = asyncio.get_running_loop()
        # Sync tasks run in the loop's default executor: room for every run, and the recovery.
        loop.set_default_executor(
            ThreadPoolExecutor(self.settings.max_workers + 2, thread_name_prefix="shadowdb-step")
        )
        async with self.app.open_async():
            self._loop = loop
            self._worker = asyncio.current_task()
            self._started.set()
            await self.app.run_worker_async(**self._worker_options(install_signal_handlers))

    def run(self) -> None:
        """A worker in the foreground (``python -m api worker``) until SIGTERM or SIGINT."""
        self.settings.work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.recover()
        asyncio.run(self._serve(install_signal_handlers=True))

    def start(self) -> None:
        """A worker in a thread of this process (the API's embedded worker, tests)."""
        self.settings.work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.recover()

        def main():
            try:
                asyncio.run(self._serve(install_signal_handlers=False))
            except asyncio.CancelledError:
                pass
            except Exception:
                log.exception("the worker stopped")

        self._thread = threading.Thread(target=main, name="shadowdb-worker", daemon=True)
        self._thread.start()
        self._started.wait(30)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the worker; its running steps are interrupted and queued again (retried)."""
        if self._loop and self._worker and not self._loop.is_closed():
            try:
                self._loop.call_soon_threadsafe(self._worker.cancel)
            except RuntimeError:
                pass  # the loop has just closed
        if self._thread:
            self._thread.join(timeout)

    def alive(self) -> bool:
        return bool(self._thread and self._thread.is_alive())

    def running_count(self) -> int:
        return self._running

    def _connect(self) -> psycopg.Connection:
        return psycopg.connect(self.settings.database_url, autocommit=True, row_factory=dict_row)

    # --- recovery --------------------------------------------------------------------------

    def _recover_task(self, timestamp: int) -> None:
        self.recover()

    def recover(self) -> int:
        """Queue again (or fail, past max_attempts) the steps of workers gone silent.

        procrastinate's own query finds them (workers whose heartbeat is older than
        ``stalled_after``, or pruned); each is put back in its queue with procrastinate's retry,
        in the same transaction as its job's catalog row and event.
        """
        recovered = 0
        queries = procrastinate_sql.queries
        with self._connect() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_RECOVERY_LOCK,))
            stalled = conn.execute(
                queries["select_stalled_jobs_by_heartbeat"],
                {
                    "queue": QUEUE,
                    "task_name": STEP_TASK,
                    "seconds_since_heartbeat": self.settings.stalled_after,
                },
            ).fetchall()
            for task in stalled:
                args = task["args"] or {}
                job = conn.execute(
                    "SELECT * FROM jobs WHERE id = %s FOR UPDATE", (args.get("job_id"),)
                ).fetchone()
                if job is None or job["status"] not in ACTIVE or job["step"] != args.get("step"):
                    # Its work was done (the worker died after recording it): nothing to re-run.
                    conn.execute(
                        queries["finish_job"], {"job_id": task["id"], "status": "failed", "delete_job": True}
                    )
                    continue
                recovered += 1
                if job["attempts"] >= self.settings.max_attempts or job["cancel_requested"]:
                    status = "cancelled" if job["cancel_requested"] else "failed"
                    reason = (
                        "cancelled; its worker stopped while it ran"
                        if job["cancel_requested"]
                        else f"interrupted {job['attempts']} times; giving up"
                    )
                    self._finish(conn, job["id"], status, reason, None, None)
                    conn.execute(
                        queries["finish_job"], {"job_id": task["id"], "status": "failed", "delete_job": False}
                    )
                else:
                    conn.execute("UPDATE jobs SET status = 'queued' WHERE id = %s", (job["id"],))
                    add_event(
                        conn,
                        job["id"],
                        "job",
                        {
                            "status": "interrupted",
                            "message": "the worker running this job stopped; it runs again "
                            "(the playbooks are idempotent)",
                            "attempt": job["attempts"],
                        },
                    )
                    conn.execute(
                        queries["retry_job"],
                        {"job_id": task["id"], "retry_at": None, "new_priority": None,
                         "new_queue_name": None, "new_lock": None},
                    )  # fmt: skip
                log.warning("job %s was interrupted (attempt %s)", job["id"], job["attempts"])
        return recovered

    # --- one step of a job ----------------------------------------------------------------

    def _steps(self, job: dict, guard_passed: bool = False) -> list[tuple[str, str, dict]]:
        """(step, playbook, extra vars) of a job, in order (catalog.plan).

        With routing, the host step of a create or update runs with tag register skipped: its
        route step (api/playbooks/tenant_route.yml) registers and routes the tenant.
        """
        playbooks = self.settings.repo / "api" / "playbooks"
        name = job["tenant"]
        public_key = base64.b64encode(bytes(job["public_key"])).decode() if job["public_key"] else ""
        # A create runs the create guard first (api/playbooks/create_guard.yml): never adopt.
        guard = {"api_job_kind": job["kind"], "api_job_guard_passed": guard_passed}
        steps = job.get("steps") or plan(job, self.routed())
        planned = []
        for step in steps:
            if step == "ha":
                extravars = {"tenant": job["spec"], "api_job_public_key": public_key} | guard
                if job["kind"] == "delete":
                    extravars = {"tenant": {"name": name, "state": "absent"}, "confirm": name}
                planned.append(("ha", str(playbooks / "tenant_ha_job.yml"), extravars))
            elif step == "host" and job["kind"] == "delete":
                planned.append(
                    (
                        "host",
                        str(self.settings.repo / "playbooks" / "tenant_remove.yml"),
                        {"tenant_host": job["host"], "tenant_name": name, "confirm": name},
                    )
                )
            elif step == "host":
                extravars = {
                    "tenant_host": job["host"],
                    "tenant": job["spec"],
                    "api_job_public_key": public_key,
                }
                planned.append(("host", str(playbooks / "tenant_job.yml"), extravars | guard))
            else:
                state = "absent" if job["kind"] == "delete" else "present"
                extravars = {"tenant_host": job["host"], "tenant": job["spec"], "api_route_state": state}
                planned.append(("route", str(playbooks / "tenant_route.yml"), extravars))
        return planned

    def _begin(self, conn, job_id: str, step: str) -> dict | None:
        """Mark the job running for this step; None when there is nothing to run (the job
        was cancelled or has finished, or this step is a stale copy of a finished one)."""
        with conn.transaction():
            job = conn.execute("SELECT * FROM jobs WHERE id = %s FOR UPDATE", (job_id,)).fetchone()
            if job is None or job["status"] not in ACTIVE or job["step"] != step:
                log.info("job %s: step %s has nothing to do", job_id, step)
                return None
            if job["cancel_requested"]:  # cancelled between two steps
                self._finish(conn, job_id, "cancelled", "cancelled while running", None, None)
                return None
            first = job["status"] == "queued"
            job = conn.execute(
                "UPDATE jobs SET status = 'running', attempts = attempts + %s::int,"
                " started_at = CASE WHEN %s THEN clock_timestamp() ELSE started_at END,"
                " host_released_at = CASE WHEN %s THEN NULL ELSE host_released_at END"
                " WHERE id = %s RETURNING *",
                (int(first), first and step == job["steps"][0], step == "host", job_id),
            ).fetchone()
            if first:
                add_event(
                    conn,
                    job_id,
                    "job",
                    {
                        "status": "running",
                        "attempt": job["attempts"],
                        "host": job["host"],
                        "worker": self.name,
                    },
                )
        return job

    def _hold_hosts(self, conn, exclusive: bool, stop) -> bool:
        """Take HOSTS_LOCK (False: the step was cancelled or the worker stops while waiting).

        A host step takes it shared (try, then poll); an HA step waits in PostgreSQL's lock queue
        (2 s at a time, to notice a cancel), so that the shared requests coming after it wait
        behind it.
        """
        if not exclusive:
            query = "SELECT pg_try_advisory_lock_shared(%s) AS ok"
            while not conn.execute(query, (HOSTS_LOCK,)).fetchone()["ok"]:
                if stop():
                    return False
                time.sleep(_LOCK_POLL)
            return True
        conn.execute("SET lock_timeout = '2s'")
        try:
            while True:
                try:
                    conn.execute("SELECT pg_advisory_lock(%s)", (HOSTS_LOCK,))
                    return True
                except errors.LockNotAvailable:
                    if stop():
                        return False
        finally:
            conn.execute("RESET lock_timeout")

    def _step_task(self, context, job_id: str, step: str) -> None:
        """procrastinate's task: one step of one job."""
        with self._connect() as conn:  # the step's session (its advisory lock goes with it)
            job = self._begin(conn, job_id, step)
            if job is None:
                return
            with self._count_lock:
                self._running += 1
            try:
                self._run_step(context, conn, job, step)
            finally:
                with self._count_lock:
                    self._running -= 1

    def _run_step(self, context, conn, job: dict, step: str) -> None:
        job_id = str(job["id"])
        data_dir = None
        check = {"last": 0.0, "cancel": False}

        def cancelled() -> bool:
            if context.should_abort():  # the worker stops
                return True
            now = time.monotonic()
            if now - check["last"] >= _CANCEL_CHECK_EVERY:
                check["last"] = now
                row = conn.execute("SELECT cancel_requested FROM jobs WHERE id = %s", (job_id,)).fetchone()
                check["cancel"] = bool(row and row["cancel_requested"])
            return check["cancel"]

        def stopped() -> tuple[str, str | None]:
            if context.should_abort():
                return "interrupted", None
            return "cancelled", "cancelled while running"

        stats = dict(job["stats"] or {})
        status = error = conflict = None
        try:
            if step in ("host", "ha") and not self._hold_hosts(conn, step == "ha", cancelled):
                status, error = stopped()
            else:
                if step == "ha":
                    # From now on the tenant may be HA on the hosts: its next jobs go through
                    # tenant_ha.yml too, until one leaves it standalone (catalog._settle_tenant).
                    conn.execute("UPDATE tenants SET ha = true WHERE name = %s", (job["tenant"],))
                planned = {s: (p, e) for s, p, e in self._steps(job, self._guard_passed(conn, job))}
                playbook, extravars = planned[step]
                skip = "register" if step == "host" and len(planned) > 1 else None
                data_dir = tempfile.mkdtemp(
                    prefix=f"{job_id}-{job['attempts']}-{step}-", dir=self.settings.work_dir
                )
                add_event(conn, job_id, "step", {"step": step, "state": "started"})
                runner, state = self._ansible(conn, job, step, playbook, extravars, skip, data_dir, cancelled)
                add_event(conn, job_id, "step", {"step": step, "state": "finished", "runner": runner.status})
                stats[step] = state["stats"]
                status, error = self._failure(runner, state)
                if status == "cancelled" or status == "interrupted":
                    status, error = stopped()
                conflict = self._conflict(job, state["stats"]) if status == "failed" else None
                if conflict:
                    error = conflict["error"]
        except Exception:  # the runner itself failed: record it, never leave the job running
            log.exception("job %s: runner error", job_id)
            status, error = "failed", "internal error while running the job (details in the API's log)"
        finally:
            if data_dir and not self.settings.keep_artifacts:
                shutil.rmtree(data_dir, ignore_errors=True)
        if status == "interrupted":
            with conn.transaction():
                conn.execute("UPDATE jobs SET status = 'queued' WHERE id = %s", (job_id,))
                add_event(
                    conn,
                    job_id,
                    "job",
                    {"status": "interrupted", "message": "the worker is stopping; the job runs again"},
                )
            raise Interrupted(f"job {job_id}: its worker stops")
        steps = job["steps"] or [step]
        if status is None and steps.index(step) + 1 < len(steps):
            following = steps[steps.index(step) + 1]
            with conn.transaction():
                row = conn.execute(
                    "UPDATE jobs SET step = %s, stats = %s,"
                    " host_released_at = CASE WHEN %s THEN now() ELSE host_released_at END"
                    " WHERE id = %s RETURNING *",
                    (following, Jsonb(stats), step == "host", job_id),
                ).fetchone()
                defer_step(conn, row, following)  # the host is free for its next job meanwhile
            return
        result = sealed = None
        if conflict:
            result = {"conflict": {"hosts": conflict["hosts"]}}
        if status is None:
            status, error, result, sealed = self._result(job, stats)
        with conn.transaction():
            self._finish(conn, job_id, status, error, result, sealed)
        if self.metrics:
            started = job["started_at"] or datetime.now(UTC)
            self.metrics.job_finished(job["kind"], status, (datetime.now(UTC) - started).total_seconds())

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
            return "cancelled", "cancelled while running"
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
                " sealed_credentials = %s, stats = NULL WHERE id = %s RETURNING *",
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

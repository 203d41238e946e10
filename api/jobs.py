"""The job engine: each step of a job is one procrastinate job running one ansible-runner run.

- Queue: procrastinate (its tables in the catalog database, psycopg 3). A job's steps (see
  catalog.plan) are queued one after the other, each when the previous one succeeded, in the
  same transaction as the catalog's update. procrastinate's lock of a step (catalog.step_lock)
  gives one run at a time per host and one route (a delete's) or HA step at a time in the
  deployment, in queue order; workers in any number of processes (the API's own, ``python -m api worker``
  elsewhere) share the catalog. Admission stops at ``max_queued`` unfinished jobs (HTTP 429);
  a worker runs at most ``max_workers`` steps at once.
- Batches: a host step of a create or update takes along the creates and updates waiting for a
  host step on the same host (``batch_max``): one run of tenant.yml for all their tenants (with
  routing, it registers and routes them too), each job keeping its own outcome (``jobs.run_by``:
  the job whose run does a job's step). The run begins with the create guard of the creates
  among them (api/playbooks/create_guards.yml: one look at every db host and the registry for
  all their names); a create refused there fails alone. A host step waits ``batch_wait``
  seconds first, and again while more jobs for its host keep coming (up to ``batch_wait_max``),
  so that requests sent together share one run.
- High availability: an HA step (tenant_ha.yml) touches the hosts of its members, chosen when
  the job is queued (``jobs.hosts``, shadowdb.tenant_hosts; tenant_ha.yml places them there).
  Besides the routing lock it takes a PostgreSQL advisory lock per host it touches
  (HOST_LOCK_CLASS, the host's name hashed) exclusively, while a host step holds its own host's
  shared: an HA run waits for the host steps running on its hosts, host steps on its hosts wait
  behind a waiting HA run (PostgreSQL queues a shared request behind a waiting exclusive one),
  so it never starves, and host steps on the other hosts go on.
- Liveness: procrastinate's workers send heartbeats. A periodic task (and each worker at its
  start) finds the steps of workers silent for ``stalled_after`` seconds (killed, their machine
  gone), records them as interrupted and queues them again (the playbooks are idempotent), up to
  ``max_attempts`` runs of the job, then fails it. A worker asked to stop (SIGTERM) interrupts
  its runs the same way: they are retried by the next worker.
- Drift: a periodic task (``drift_interval``) runs the read-only drift check (api/drift.py) on
  one worker at a time and records its findings; it never changes a tenant.
- Runs (api/runs.py): a fresh private_data_dir per run (under ``work_dir``, removed afterwards
  unless ``keep_artifacts``), extra vars on the command line, ``suppress_env_files``, events
  filtered to a fixed set of fields before they reach the catalog, credentials sealed by the
  playbook.
"""

import asyncio
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

import procrastinate
import psycopg
from procrastinate import sql as procrastinate_sql
from psycopg import errors
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from .catalog import (
    ACTIVE,
    QUEUE,
    ROUTING,
    STEP_TASK,
    _settle_tenant,
    add_event,
    defer_step,
    placement_records,
)
from .drift import DriftCheck
from .runs import Runs
from .settings import Settings

log = logging.getLogger("shadowdb.api.jobs")

_CANCEL_CHECK_EVERY = 1.0
# Advisory locks (arbitrary, fixed keys): a db host (two-key form: this class and the host's
# name hashed; shared: a host step; exclusive: an HA step), and the recovery of stalled steps (a
# transaction lock: one recovery at a time).
HOST_LOCK_CLASS = 0x5DB0005
_RECOVERY_LOCK = 0x5DB0006
_LOCK_POLL = 0.2
RECOVER_TASK = "shadowdb_recover"
DRIFT_TASK = "shadowdb_drift"


class Interrupted(Exception):
    """The worker stops while a step runs: procrastinate retries the step (RetryStrategy)."""


class Engine(Runs):
    def __init__(self, settings: Settings, metrics=None, routed=None, declared=None):
        self.settings = settings
        self.metrics = metrics
        self.drift = DriftCheck(settings, declared)
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
        if settings.drift_interval:
            # The routing lock: it reads the registry with the controller's identity, which route
            # and HA steps may be issuing at the same moment.
            drift = self.app.task(
                name=DRIFT_TASK, queue=QUEUE, priority=5, queueing_lock=DRIFT_TASK, lock=ROUTING
            )(self._drift_task)
            interval = settings.drift_interval
            # cron: seconds below a minute, whole minutes above (rounded down)
            every = f"* * * * * */{interval}" if interval < 60 else f"*/{interval // 60} * * * *"
            self.app.periodic(cron=every)(drift)

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

    def _drift_task(self, timestamp: int) -> None:
        with self._connect() as conn:
            self.drift.run(conn)

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
                # The job and the jobs of its batch (their own queued steps wait behind it).
                members = conn.execute(
                    "SELECT * FROM jobs WHERE run_by = %s AND id <> %s FOR UPDATE", (job["id"], job["id"])
                ).fetchall()
                again = []
                for member in [job, *members]:
                    recovered += 1
                    log.warning("job %s was interrupted (attempt %s)", member["id"], member["attempts"])
                    if member["attempts"] >= self.settings.max_attempts or member["cancel_requested"]:
                        reason = (
                            "cancelled; its worker stopped while it ran"
                            if member["cancel_requested"]
                            else f"interrupted {member['attempts']} times; giving up"
                        )
                        status = "cancelled" if member["cancel_requested"] else "failed"
                        self._finish(conn, member["id"], status, reason, None, None)
                    else:
                        again.append(member)
                self._requeue(
                    conn,
                    again,
                    "the worker running this job stopped; it runs again (the playbooks are idempotent)",
                )
                if job in again:
                    conn.execute(
                        queries["retry_job"],
                        {"job_id": task["id"], "retry_at": None, "new_priority": None,
                         "new_queue_name": None, "new_lock": None},
                    )  # fmt: skip
                else:
                    conn.execute(
                        queries["finish_job"], {"job_id": task["id"], "status": "failed", "delete_job": False}
                    )
            # A drift check whose worker died holds the routing lock: end it (the next period
            # checks again), so that route and HA steps go on.
            for task in conn.execute(
                queries["select_stalled_jobs_by_heartbeat"],
                {
                    "queue": QUEUE,
                    "task_name": DRIFT_TASK,
                    "seconds_since_heartbeat": self.settings.stalled_after,
                },
            ).fetchall():
                log.warning("the drift check %s stopped with its worker", task["id"])
                conn.execute(
                    queries["finish_job"], {"job_id": task["id"], "status": "failed", "delete_job": True}
                )
        return recovered

    # --- one step of a job ----------------------------------------------------------------

    def _begin(self, conn, job_id: str, step: str) -> list[dict] | None:
        """Mark the job running for this step, with the jobs its run takes along: for a host
        step of a create or update, the other creates and updates waiting for a host step on the
        same host (a batch, up to ``batch_max``). None when there is nothing to run: the job was
        cancelled or has finished, a run is doing its step, or this is a stale copy of a step."""
        with conn.transaction():
            job = conn.execute("SELECT * FROM jobs WHERE id = %s FOR UPDATE", (job_id,)).fetchone()
            if not _waits_for(job, step):
                log.info("job %s: step %s has nothing to do", job_id, step)
                return None
            if job["cancel_requested"]:  # cancelled between two steps
                self._finish(conn, job_id, "cancelled", "cancelled while running", None, None)
                return None
            members = [job]
            if (
                step == "host"
                and job["kind"] in ("create", "update")
                and not job["exclusive"]
                and self.settings.batch_max > 1
            ):
                # The same steps: whether the run registers the tenants or their route steps do.
                members += conn.execute(
                    "SELECT * FROM jobs WHERE host = %s AND step = 'host' AND run_by IS NULL"
                    " AND status IN ('queued', 'running') AND kind IN ('create', 'update') AND NOT exclusive"
                    " AND NOT cancel_requested AND id <> %s AND steps = %s::text[]"
                    " ORDER BY created_at LIMIT %s FOR UPDATE SKIP LOCKED",
                    (job["host"], job_id, job["steps"], self.settings.batch_max - 1),
                ).fetchall()
            started = []
            for member in members:
                first = member["status"] == "queued"
                row = conn.execute(
                    "UPDATE jobs SET status = 'running', run_by = %s, attempts = attempts + %s::int,"
                    " started_at = CASE WHEN %s THEN clock_timestamp() ELSE started_at END,"
                    " host_released_at = CASE WHEN %s THEN NULL ELSE host_released_at END"
                    " WHERE id = %s RETURNING *",
                    (job_id, int(first), first and step == member["steps"][0], step == "host", member["id"]),
                ).fetchone()
                if first:
                    event = {"status": "running", "attempt": row["attempts"], "host": row["host"]}
                    add_event(conn, row["id"], "job", event | {"worker": self.name})
                started.append(row)
        return started

    def _requeue(self, conn, jobs: list[dict], message: str) -> None:
        """Put jobs back in the queue (their step runs again): in the caller's transaction."""
        for job in jobs:
            conn.execute("UPDATE jobs SET status = 'queued', run_by = NULL WHERE id = %s", (job["id"],))
            add_event(
                conn,
                job["id"],
                "job",
                {"status": "interrupted", "message": message, "attempt": job["attempts"]},
            )

    def _hold_hosts(self, conn, hosts: list[str], exclusive: bool, stop) -> bool:
        """Take the locks of ``hosts`` (False: the step was cancelled or the worker stops while
        waiting; nothing is held then).

        A host step takes its host's shared (try, then poll); an HA step takes each of its hosts
        exclusively, in name order, waiting in PostgreSQL's lock queue (2 s at a time, to notice
        a cancel), so that the shared requests coming after it wait behind it. Only one HA step
        runs at a time (the routing lock), so the order cannot deadlock.
        """
        key = "SELECT {}(%s, hashtext(%s)) AS ok"
        if not exclusive:
            for host in hosts:
                while not conn.execute(
                    key.format("pg_try_advisory_lock_shared"), (HOST_LOCK_CLASS, host)
                ).fetchone()["ok"]:
                    if stop():
                        conn.execute("SELECT pg_advisory_unlock_all()")
                        return False
                    time.sleep(_LOCK_POLL)
            return True
        conn.execute("SET lock_timeout = '2s'")
        try:
            for host in sorted(set(hosts)):
                while True:
                    try:
                        conn.execute(key.format("pg_advisory_lock"), (HOST_LOCK_CLASS, host))
                        break
                    except errors.LockNotAvailable:
                        if stop():
                            conn.execute("SELECT pg_advisory_unlock_all()")
                            return False
            return True
        finally:
            conn.execute("RESET lock_timeout")

    def _step_hosts(self, conn, job: dict, step: str) -> list[str]:
        """The hosts a step locks: a host step its host; an HA step the job's hosts (a job
        queued before jobs had hosts: every host the catalog knows, as before)."""
        if step == "host":
            return [job["host"]]
        if job.get("hosts"):
            return list(job["hosts"])
        known = {m["host"] for record in placement_records(conn) for m in record["members"]}
        return sorted(known | {job["host"]})

    def _step_task(self, context, job_id: str, step: str) -> None:
        """procrastinate's task: one step of one job (and of the jobs of its batch)."""
        with self._connect() as conn:  # the step's session (its advisory lock goes with it)
            # A job a batch took along (or one finished) keeps its own task, which comes here
            # after the batch's run: it has nothing to do, and must not wait for more jobs first
            # (it would hold its host's lock for batch_wait, once per job of the batch).
            if step == "host" and self.settings.batch_max > 1 and self._waiting(conn, job_id, step):
                self._gather(conn, job_id)
            members = self._begin(conn, job_id, step)
            if members is None:
                return
            with self._count_lock:
                self._running += 1
            try:
                self._run_step(context, conn, members, step)
            finally:
                with self._count_lock:
                    self._running -= 1

    @staticmethod
    def _waiting(conn, job_id: str, step: str) -> bool:
        """Whether the job still waits for a run of this step (_begin's test, without its lock)."""
        job = conn.execute("SELECT status, step, run_by FROM jobs WHERE id = %s", (job_id,)).fetchone()
        return _waits_for(job, step)

    def _gather(self, conn, job_id: str) -> None:
        """Before a host step takes the jobs waiting for its host along: wait ``batch_wait``
        seconds, and again while more of them keep coming (requests sent together reach the
        catalog over a few seconds when the API is busy placing them), up to ``batch_wait_max``
        seconds in all or ``batch_max`` jobs. A job alone waits ``batch_wait`` once."""
        waiting = (
            "SELECT count(*) AS n FROM jobs WHERE host = (SELECT host FROM jobs WHERE id = %s)"
            " AND step = 'host' AND run_by IS NULL AND status IN ('queued', 'running')"
            " AND kind IN ('create', 'update') AND NOT exclusive"
        )
        began = time.monotonic()
        deadline = began + self.settings.batch_wait_max
        first = seen = conn.execute(waiting, (job_id,)).fetchone()["n"]
        while True:
            time.sleep(self.settings.batch_wait)
            now = conn.execute(waiting, (job_id,)).fetchone()["n"]
            if now <= seen or now >= self.settings.batch_max or time.monotonic() >= deadline:
                log.info(
                    "job %s: %d job(s) waiting for its host when its step began, %d after %.2f s",
                    job_id, first, now, time.monotonic() - began,
                )  # fmt: skip
                return
            seen = now

    def _run_step(self, context, conn, members: list[dict], step: str) -> None:
        job = members[0]
        job_id = str(job["id"])
        ids = [str(m["id"]) for m in members]
        data_dir = None
        check = {"last": 0.0, "cancel": False}

        def cancelled() -> bool:
            if context.should_abort():  # the worker stops
                return True
            now = time.monotonic()
            if now - check["last"] >= _CANCEL_CHECK_EVERY:
                check["last"] = now
                row = conn.execute(
                    "SELECT bool_or(cancel_requested) AS c FROM jobs WHERE id = ANY(%s::uuid[])", (ids,)
                ).fetchone()
                check["cancel"] = bool(row and row["c"])
            return check["cancel"]

        def stopped() -> tuple[str, str | None]:
            if context.should_abort():
                return "interrupted", None
            return "cancelled", "cancelled while running"

        stats: dict = {}
        status = error = conflict = None
        try:
            hosts = self._step_hosts(conn, job, step) if step in ("host", "ha") else []
            if hosts and not self._hold_hosts(conn, hosts, step == "ha", cancelled):
                status, error = stopped()
            else:
                if step == "ha":
                    # From now on the tenant may be HA on the hosts: its next jobs go through
                    # tenant_ha.yml too, until one leaves it standalone (catalog._settle_tenant).
                    conn.execute("UPDATE tenants SET ha = true WHERE name = %s", (job["tenant"],))
                if len(members) > 1:
                    passed = {str(m["id"]) for m in members if self._guard_passed(conn, m)}
                    playbook, extravars, skip = self._batch(job, members, passed)
                else:
                    planned = {s: (p, e) for s, p, e in self._steps(job, self._guard_passed(conn, job))}
                    playbook, extravars = planned[step]
                    skip = "register" if step == "host" and "route" in planned else None
                data_dir = tempfile.mkdtemp(
                    prefix=f"{job_id}-{job['attempts']}-{step}-", dir=self.settings.work_dir
                )
                batch = (
                    {"batch": job_id, "tenants": [m["tenant"] for m in members]} if len(members) > 1 else {}
                )
                # The run's own name (its artifacts directory): a retried job may lead a new batch
                # under the same first job, so only this tells two runs of one batch key apart.
                batch["run"] = os.path.basename(data_dir)
                started = {"step": step, "state": "started", "worker": self.name} | batch
                for i in ids:
                    add_event(conn, i, "step", started)
                # A batch's guard task: its result goes to the streams of the creates it passed.
                guarded = {m["tenant"]: str(m["id"]) for m in members} if len(members) > 1 else None
                runner, state = self._ansible(
                    conn, job, step, playbook, extravars, skip, data_dir, cancelled, ids, guarded
                )
                for i in ids:
                    add_event(
                        conn, i, "step", {"step": step, "state": "finished", "runner": runner.status} | batch
                    )
                stats = state["stats"]
                status, error = self._failure(runner, state)
                if status == "cancelled" or status == "interrupted":
                    status, error = stopped()
                conflict = self._conflict(job, stats) if status == "failed" else None
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
                self._requeue(conn, members, "the worker is stopping; the job runs again")
            raise Interrupted(f"job {job_id}: its worker stops")
        if status == "cancelled" and len(members) > 1:
            # One job of the batch was cancelled: the run stopped; the others run again.
            with conn.transaction():
                flags = conn.execute(
                    "SELECT id, cancel_requested FROM jobs WHERE id = ANY(%s::uuid[])", (ids,)
                ).fetchall()
                gone = {str(r["id"]) for r in flags if r["cancel_requested"]}
                for member in members:
                    if str(member["id"]) in gone:
                        self._finish(conn, member["id"], "cancelled", error, None, None)
                again = [m for m in members if str(m["id"]) not in gone]
                self._requeue(conn, again, "another job of its batch was cancelled; it runs again")
                if job in again:  # this procrastinate job ends: the first job needs another
                    defer_step(conn, job, step)
            return
        for member in members:
            outcome, reason, own, found = status, error, stats, conflict
            if len(members) > 1:
                # Refused by the create guard: its own reason, whether or not the run went on.
                outcome, reason, found = self._guard_outcome(member, stats)
                own = {}
                if outcome is None and status is None:
                    outcome, reason, own = self._batch_outcome(member, stats)
                elif outcome is None:
                    outcome, reason = status, error
            self._advance(conn, member, step, outcome, reason, own, found)

    def _advance(self, conn, job: dict, step: str, status, error, step_stats: dict, conflict) -> None:
        """After a step of a job: queue its next step, or end the job (its outcome)."""
        job_id = str(job["id"])
        stats = dict(job["stats"] or {}) | {step: step_stats}
        steps = job["steps"] or [step]
        if status is None and steps.index(step) + 1 < len(steps):
            following = steps[steps.index(step) + 1]
            with conn.transaction():
                row = conn.execute(
                    "UPDATE jobs SET step = %s, stats = %s, run_by = NULL,"
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

    def _finish(self, conn, job_id: str, status: str, error, result, sealed) -> None:
        with conn.transaction():
            job = conn.execute(
                "UPDATE jobs SET status = %s, finished_at = now(), error = %s, result = %s,"
                " sealed_credentials = %s, stats = NULL,"
                " host_released_at = CASE WHEN step = 'host' THEN now() ELSE host_released_at END"
                " WHERE id = %s RETURNING *",
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


def _waits_for(job: dict | None, step: str) -> bool:
    """Whether a job's row says it waits for a run of ``step``: unfinished, at that step, and no
    run doing it (not taken along by another job's batch)."""
    return job is not None and job["status"] in ACTIVE and job["step"] == step and not job["run_by"]


def new_job_id() -> str:
    return str(uuid.uuid4())

"""The catalog: a PostgreSQL database (psycopg 3 + psycopg_pool) holding tokens, tenants, jobs, events.

Schema changes are plain SQL files in api/migrations/, applied in name order, each once, inside
one transaction per file, under an advisory lock so that two API processes starting together
do not race. Applied versions are recorded in schema_migrations.
"""

import hashlib
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import errors
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# Advisory lock keys (arbitrary, fixed): schema migrations, job admission (transaction locks).
_MIGRATION_LOCK = 0x5DB0001
_ADMISSION_LOCK = 0x5DB0002
# The job steps' queue in procrastinate's tables (api/jobs.py runs them): one procrastinate job
# per step, with a lock that serializes what must not overlap (see step_lock).
QUEUE = "shadowdb"
STEP_TASK = "shadowdb_step"
ROUTING = "shadowdb:routing"
ACTIVE = ("queued", "running")
TOKEN_PREFIX = "sdb_"  # noqa: S105 - a prefix, not a secret


class Conflict(Exception):
    """The request conflicts with the catalog's state (HTTP 409)."""


class NotFound(Exception):
    """No such tenant or job (HTTP 404)."""


class QueueFull(Exception):
    """Too many unfinished jobs (HTTP 429)."""


def migrate(conninfo: str) -> list[str]:
    """Apply the migrations not applied yet, the catalog's then procrastinate's; return the
    versions applied now (idempotent)."""
    applied_now = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for path in sorted(MIGRATIONS.glob("*.sql")):
            if _apply(conn, path.stem, lambda path=path: conn.execute(path.read_text())):
                applied_now.append(path.stem)
        applied_now += _migrate_procrastinate(conn)
    return applied_now


def _apply(conn, version: str, run) -> bool:
    """Run one migration once, in a transaction, under the migration lock (False: done before)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        if conn.execute("SELECT 1 FROM schema_migrations WHERE version = %s", (version,)).fetchone():
            return False
        run()
        conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
        return True


def _migrate_procrastinate(conn) -> list[str]:
    """procrastinate's own schema (its tables, in the catalog database): on a new catalog its
    schema.sql, which includes every migration file shipped with the installed version; later,
    after an upgrade of the pinned version, the migration files not applied yet, in name order.
    Recorded in schema_migrations as procrastinate/<file>."""
    from procrastinate.schema import SchemaManager, migrations_path

    files = sorted(Path(migrations_path).glob("*.sql"))
    applied = []

    def base():
        conn.execute(SchemaManager.get_schema())
        for path in files:
            conn.execute(
                "INSERT INTO schema_migrations (version) VALUES (%s)", (f"procrastinate/{path.stem}",)
            )

    if _apply(conn, "procrastinate/schema", base):
        applied.append("procrastinate/schema")
    for path in files:
        if _apply(conn, f"procrastinate/{path.stem}", lambda path=path: conn.execute(path.read_text())):
            applied.append(f"procrastinate/{path.stem}")
    return applied


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def plan(job: dict, routed: bool) -> list[str]:
    """The steps of a job, in order (api/jobs.py runs each as one ansible-runner run).

    An HA job is one step (tenant_ha.yml routes the tenant itself). A create or update is its
    host step, which also registers and routes the tenant when the inventory has routing; a
    create's host step begins with the create guard, in the same run. A delete with routing is
    its route step (unregister, before the cluster goes) then its host step.
    """
    if job["kind"] == "backup":
        return ["backup"]  # on the repository host: the tenant's host is not held
    if job.get("exclusive"):
        return ["ha"]
    if job["kind"] == "delete":
        return ["route", "host"] if routed else ["host"]
    return ["host"]


def step_lock(job: dict, step: str) -> str | None:
    """procrastinate's lock of a step: one run at a time per lock, in queue order.

    A host step holds its host. Host steps on different hosts may register tenants and render
    HAProxy at the same time: the proxy applies a render only when it was made from a newer
    registry revision than the live one (shadowdb_haproxy_config), so the last render holds
    every tenant. A route step (a delete's unregistration) and an HA step take the deployment's
    routing lock (one at a time); an HA step also locks the hosts of its members (jobs.hosts)
    in api/jobs.py (host locks).
    """
    if step == "backup":
        return f"shadowdb:backup:{job['tenant']}"  # pgBackRest runs one backup of a stanza at a time
    return ROUTING if step in ("route", "ha") else f"shadowdb:host:{job['host']}"


def defer_step(conn, job: dict, step: str) -> int:
    """Queue one step of a job for the workers, in the caller's transaction (procrastinate's
    own SQL function; its trigger notifies listening workers at commit)."""
    row = conn.execute(
        "SELECT unnest(procrastinate_defer_jobs_v1(ARRAY[ROW(%s, %s, 0, %s, NULL, %s, NULL)"
        "::procrastinate_job_to_defer_v1])) AS id",
        (QUEUE, STEP_TASK, step_lock(job, step), Jsonb({"job_id": str(job["id"]), "step": step})),
    ).fetchone()
    return row["id"] if isinstance(row, dict) else row[0]


class Catalog:
    def __init__(self, conninfo: str, max_size: int = 16, routed=None):
        self.conninfo = conninfo
        # Whether jobs have a route step (the inventory has a registry): a callable.
        self.routed = routed or (lambda: False)
        self.pool = ConnectionPool(
            conninfo,
            min_size=1,
            max_size=max_size,
            kwargs={"row_factory": dict_row, "autocommit": True},
            open=False,
            name="shadowdb-catalog",
        )

    def open(self) -> None:
        self.pool.open(wait=True, timeout=30)

    def close(self) -> None:
        self.pool.close()

    @contextmanager
    def conn(self) -> Iterator[psycopg.Connection]:
        with self.pool.connection() as conn:
            yield conn

    def ping(self) -> bool:
        with self.conn() as conn:
            return conn.execute("SELECT 1 AS ok").fetchone()["ok"] == 1

    # --- tokens ----------------------------------------------------------------------------

    def create_token(self, name: str, scope: str) -> tuple[int, str]:
        """A new bearer token; the token itself is returned once and only its SHA-256 is kept."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self.conn() as conn:
            row = conn.execute(
                "INSERT INTO api_tokens (name, scope, token_sha256) VALUES (%s, %s, %s) RETURNING id",
                (name, scope, hash_token(token)),
            ).fetchone()
        return row["id"], token

    def token(self, token: str) -> dict | None:
        """The valid token of that value (id, name, scope), or None. Its last use is written at
        most once a minute: a write (and a lock on the token's row) on every request made clients
        that poll a job queue behind each other."""
        with self.conn() as conn:
            return conn.execute(
                "WITH valid AS (SELECT id, name, scope, last_used_at FROM api_tokens"
                " WHERE token_sha256 = %s AND revoked_at IS NULL),"
                " used AS (UPDATE api_tokens t SET last_used_at = now() FROM valid WHERE t.id = valid.id"
                " AND (valid.last_used_at IS NULL OR valid.last_used_at < now() - interval '1 minute'))"
                " SELECT id, name, scope FROM valid",
                (hash_token(token),),
            ).fetchone()

    def token_active(self, token_id: int) -> bool:
        """Whether a token is still valid (not revoked): read-only, for long requests (SSE)."""
        with self.conn() as conn:
            return (
                conn.execute(
                    "SELECT 1 FROM api_tokens WHERE id = %s AND revoked_at IS NULL", (token_id,)
                ).fetchone()
                is not None
            )

    def revoke_token(self, token_id: int) -> bool:
        with self.conn() as conn:
            cur = conn.execute(
                "UPDATE api_tokens SET revoked_at = now() WHERE id = %s AND revoked_at IS NULL", (token_id,)
            )
            return cur.rowcount == 1

    # --- tenants ---------------------------------------------------------------------------

    def tenants(self) -> list[dict]:
        with self.conn() as conn:
            return conn.execute("SELECT * FROM tenants ORDER BY name").fetchall()

    def tenant(self, name: str) -> dict:
        with self.conn() as conn:
            row = conn.execute("SELECT * FROM tenants WHERE name = %s", (name,)).fetchone()
        if row is None:
            raise NotFound(f"no tenant named {name!r}")
        return row

    def tenant_counts(self) -> dict[str, int]:
        """Tenants per db host, every member of an HA tenant counted on its host."""
        with self.conn() as conn:
            records = placement_records(conn)
        counts: dict[str, int] = {}
        for record in records:
            for member in record["members"]:
                counts[member["host"]] = counts.get(member["host"], 0) + 1
        return counts

    def last_drift_check(self) -> dict | None:
        """The last drift check (api/drift.py), or None."""
        with self.conn() as conn:
            return conn.execute("SELECT * FROM drift_checks ORDER BY id DESC LIMIT 1").fetchone()

    # --- job admission ---------------------------------------------------------------------

    def _admit(self, conn, max_queued: int) -> None:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_ADMISSION_LOCK,))
        n = conn.execute("SELECT count(*) AS n FROM jobs WHERE status IN ('queued', 'running')").fetchone()[
            "n"
        ]
        if n >= max_queued:
            raise QueueFull(f"{n} jobs are queued or running (limit {max_queued}); retry later")

    def _insert_job(self, conn, job: dict, routed: bool) -> dict:
        """Record a job and queue its first step (one transaction: both or neither)."""
        job = {
            "public_key": None,
            "wrapped_key": None,
            "prior_state": None,
            "exclusive": False,
            "hosts": None,
            "request": None,
        } | job
        steps = plan(job, routed)
        request = Jsonb(job["request"]) if job["request"] is not None else None
        try:
            with conn.transaction():
                row = conn.execute(
                    "INSERT INTO jobs (id, kind, tenant, host, hosts, spec, created_by, public_key,"
                    " wrapped_key, prior_state, exclusive, steps, step, request) VALUES (%(id)s, %(kind)s,"
                    " %(tenant)s, %(host)s, %(hosts)s, %(spec)s, %(created_by)s, %(public_key)s,"
                    " %(wrapped_key)s, %(prior_state)s, %(exclusive)s, %(steps)s, %(step)s, %(request)s)"
                    " RETURNING *",
                    job | {"spec": Jsonb(job["spec"]), "steps": steps, "step": steps[0], "request": request},
                ).fetchone()
                defer_step(conn, row, steps[0])
                return row
        except errors.UniqueViolation:
            raise Conflict(
                f"tenant {job['tenant']!r} has a job queued or running; wait for it or cancel it"
            ) from None

    def create_tenant(self, spec: dict, place, job: dict, max_queued: int) -> dict:
        """Record a new tenant (state creating) and its create job, atomically.

        ``place(spec, records, current) -> [host, ...]``: the hosts the job touches, its host
        first (shadowdb.tenant_hosts), from the catalog's tenants (``placement_records``)."""
        routed = self.routed()  # may read the inventory: before the transaction's locks
        with self.conn() as conn, conn.transaction():
            self._admit(conn, max_queued)
            existing = conn.execute("SELECT host FROM tenants WHERE name = %s", (spec["name"],)).fetchone()
            if existing:
                raise Conflict(f"tenant {spec['name']!r} already exists on host {existing['host']}")
            hosts = place(spec, placement_records(conn), [])
            conn.execute(
                "INSERT INTO tenants (name, host, spec, state, last_job_id)"
                " VALUES (%s, %s, %s, 'creating', %s)",
                (spec["name"], hosts[0], Jsonb(spec), job["id"]),
            )
            return self._insert_job(
                conn,
                job
                | {
                    "kind": "create",
                    "tenant": spec["name"],
                    "host": hosts[0],
                    "hosts": hosts,
                    "spec": spec,
                    "exclusive": spec.get("replicas", 0) > 0,
                },
                routed,
            )

    def change_tenant(self, name: str, kind: str, build_spec, job: dict, max_queued: int, place=None) -> dict:
        """Queue an update, delete, backup or restore job for an existing tenant (409 when one is
        unfinished). A backup or restore keeps the tenant's spec (its request is ``job["request"]``).

        The job is exclusive (an HA job: tenant_ha.yml) when the tenant is HA or may be (a job of
        tenant_ha.yml touched it and did not leave it standalone), or the new spec asks for
        replicas; see :func:`ha_job`. Its hosts: the tenant's hosts now, and for an HA job that
        adds members the hosts ``place`` (as for create_tenant) chooses for them.
        """
        routed = self.routed()  # may read the inventory: before the transaction's locks
        with self.conn() as conn, conn.transaction():
            self._admit(conn, max_queued)
            tenant = conn.execute("SELECT * FROM tenants WHERE name = %s FOR UPDATE", (name,)).fetchone()
            if tenant is None:
                raise NotFound(f"no tenant named {name!r}")
            if tenant["state"] == "deleting" and kind != "delete":
                raise Conflict(f"tenant {name!r} is being deleted")
            if kind in ("backup", "restore") and tenant["state"] != "ready":
                raise Conflict(f"tenant {name!r} is {tenant['state']}; a {kind} needs it ready")
            spec = build_spec(tenant)
            exclusive = ha_job(tenant, spec)
            current = [tenant["host"]]
            if tenant["members"]:
                current = list(dict.fromkeys(m["host"] for m in tenant["members"] if m.get("host")))
            hosts = current
            if exclusive and place is not None:
                hosts = place(spec, placement_records(conn), current)
            row = self._insert_job(
                conn,
                job
                | {
                    "kind": kind,
                    "tenant": name,
                    "host": tenant["host"],
                    "hosts": hosts,
                    "spec": spec,
                    "prior_state": tenant["state"],
                    "exclusive": exclusive,
                },
                routed,
            )
            state = "deleting" if kind == "delete" else "updating"
            conn.execute(
                "UPDATE tenants SET state = %s, last_job_id = %s, updated_at = now() WHERE name = %s",
                (state, job["id"], name),
            )
            return row

    # --- jobs ------------------------------------------------------------------------------

    def job(self, job_id) -> dict:
        with self.conn() as conn:
            row = conn.execute("SELECT * FROM jobs WHERE id = %s", (job_id,)).fetchone()
        if row is None:
            raise NotFound(f"no job {job_id}")
        return row

    def jobs_for(self, tenant: str, limit: int = 20) -> list[dict]:
        with self.conn() as conn:
            return conn.execute(
                "SELECT * FROM jobs WHERE tenant = %s ORDER BY created_at DESC LIMIT %s", (tenant, limit)
            ).fetchall()

    def events(self, job_id, after: int = 0, limit: int = 500) -> list[dict]:
        with self.conn() as conn:
            return conn.execute(
                "SELECT seq, created_at, type, data FROM job_events WHERE job_id = %s AND seq > %s"
                " ORDER BY seq LIMIT %s",
                (job_id, after, limit),
            ).fetchall()

    def take_credentials(self, job_id) -> dict | None:
        """The sealed credentials and wrapped key of a job, removed from the catalog (once)."""
        with self.conn() as conn:
            return conn.execute(
                "UPDATE jobs j SET sealed_credentials = NULL, wrapped_key = NULL,"
                " credentials_delivered_at = now()"
                " FROM (SELECT id, sealed_credentials, wrapped_key FROM jobs"
                "       WHERE id = %s AND sealed_credentials IS NOT NULL FOR UPDATE) old"
                " WHERE j.id = old.id RETURNING old.sealed_credentials, old.wrapped_key",
                (job_id,),
            ).fetchone()

    def request_cancel(self, job_id) -> dict:
        """Cancel a queued job now, or flag a running one (its runner stops it); 409 when finished."""
        with self.conn() as conn, conn.transaction():
            job = conn.execute("SELECT * FROM jobs WHERE id = %s FOR UPDATE", (job_id,)).fetchone()
            if job is None:
                raise NotFound(f"no job {job_id}")
            if job["status"] not in ACTIVE:
                raise Conflict(f"job {job_id} is already {job['status']}")
            if job["status"] == "queued":
                job = conn.execute(
                    "UPDATE jobs SET status = 'cancelled', cancel_requested = true, finished_at = now(),"
                    " error = 'cancelled before it started' WHERE id = %s RETURNING *",
                    (job_id,),
                ).fetchone()
                _settle_tenant(conn, job)
                add_event(conn, job_id, "job", {"status": "cancelled", "message": job["error"]})
                # Its queued step leaves procrastinate's queue (a worker that took it already
                # finds the job cancelled and does nothing).
                conn.execute(
                    "SELECT procrastinate_cancel_job_v1(id, false, true) FROM procrastinate_jobs"
                    " WHERE status = 'todo' AND queue_name = %s AND args->>'job_id' = %s",
                    (QUEUE, str(job_id)),
                )
                return job
            return conn.execute(
                "UPDATE jobs SET cancel_requested = true WHERE id = %s RETURNING *", (job_id,)
            ).fetchone()

    def job_counts(self) -> dict[str, int]:
        with self.conn() as conn:
            rows = conn.execute(
                "SELECT status, count(*) AS n FROM jobs WHERE status IN ('queued', 'running') GROUP BY status"
            ).fetchall()
        return {r["status"]: r["n"] for r in rows}

    def tenant_state_counts(self) -> dict[str, int]:
        with self.conn() as conn:
            rows = conn.execute("SELECT state, count(*) AS n FROM tenants GROUP BY state").fetchall()
        return {r["state"]: r["n"] for r in rows}


# The channel notified with a job's id when the job gets an event (at commit): api/events.py wakes
# that job's event streams.
EVENTS_CHANNEL = "shadowdb_job_events"


def add_event(conn, job_id, type_: str, data: dict) -> int:
    """Append an event to a job (sequence numbers are per job, gap-free); its streams are woken."""
    row = conn.execute(
        "WITH added AS (INSERT INTO job_events (job_id, seq, type, data)"
        "  SELECT %s, coalesce(max(seq), 0) + 1, %s, %s FROM job_events WHERE job_id = %s"
        "  RETURNING job_id, seq)"
        " SELECT seq, pg_notify(%s, job_id::text) FROM added",
        (job_id, type_, Jsonb(data), job_id, EVENTS_CHANNEL),
    ).fetchone()
    return row["seq"] if isinstance(row, dict) else row[0]


def add_events(conn, job_ids, type_: str, data: dict) -> None:
    """Append the same event to each of these jobs (a batch's run writes each of its events to
    every job of the batch) in one statement, instead of one statement and commit per job."""
    conn.execute(
        "WITH added AS (INSERT INTO job_events (job_id, seq, type, data)"
        "  SELECT j.id, coalesce((SELECT max(e.seq) FROM job_events e WHERE e.job_id = j.id), 0) + 1, %s, %s"
        "  FROM (SELECT DISTINCT unnest(%s::uuid[]) AS id) j"
        "  RETURNING job_id)"
        " SELECT pg_notify(%s, job_id::text) FROM added",
        (type_, Jsonb(data), [str(job_id) for job_id in job_ids], EVENTS_CHANNEL),
    )


def placement_records(conn) -> list[dict]:
    """The catalog's tenants as shadowdb's placement reads registry records: {tenant, host,
    tier, members: [{host}]}. An HA tenant counts on each member's host; one whose members are
    not recorded yet (a create or conversion under way) on its last job's hosts."""
    rows = conn.execute(
        "SELECT t.name, t.host, t.spec->>'tier' AS tier, coalesce("
        "  (SELECT array_agg(m->>'host') FROM jsonb_array_elements(t.members) m WHERE m ? 'host'),"
        "  j.hosts, ARRAY[t.host]) AS hosts"
        " FROM tenants t LEFT JOIN jobs j ON j.id = t.last_job_id ORDER BY t.name"
    ).fetchall()
    return [
        {
            "tenant": r["name"],
            "host": r["host"],
            "tier": r["tier"] or "small",
            "members": [{"host": h} for h in dict.fromkeys(r["hosts"])],
        }
        for r in rows
    ]


def ha_job(tenant: dict, spec: dict) -> bool:
    """Whether a change of a tenant runs tenant_ha.yml (an exclusive job) rather than the
    standalone playbooks: the tenant is HA, or an HA job touched it last without leaving it
    standalone (tenants.ha), or the new spec asks for replicas (a conversion)."""
    return bool(
        tenant.get("ha")
        or (tenant["spec"] or {}).get("replicas", 0) > 0
        or (spec.get("state") != "absent" and spec.get("replicas", 0) > 0)
    )


def _settle_tenant(conn, job: dict) -> None:
    """Bring a tenant's row in line with a finished job."""
    name, status, kind = job["tenant"], job["status"], job["kind"]
    if status == "succeeded":
        if kind == "delete":
            conn.execute("DELETE FROM tenants WHERE name = %s AND last_job_id = %s", (name, job["id"]))
        else:
            result = job["result"] or {}
            endpoint = result.get("endpoint")
            conn.execute(
                "UPDATE tenants SET state = 'ready', spec = %s, endpoint = coalesce(%s, endpoint),"
                " updated_at = now() WHERE name = %s",
                (Jsonb(job["spec"]), Jsonb(endpoint) if endpoint else None, name),
            )
            if job.get("exclusive") and kind in ("create", "update"):
                # An HA job: where the tenant is now, as the playbook registered it. Back to
                # standalone (replicas 0), its next jobs take the standalone path again. (A
                # backup or restore leaves the members where they are.)
                conn.execute(
                    "UPDATE tenants SET host = coalesce(%s, host), members = %s, ha = %s WHERE name = %s",
                    (
                        result.get("host") or None,
                        Jsonb(result.get("members") or []),
                        job["spec"].get("replicas", 0) > 0,
                        name,
                    ),
                )
    elif kind == "create" and status == "cancelled" and job["started_at"] is None:
        # Nothing was touched on the host: the tenant never existed.
        conn.execute("DELETE FROM tenants WHERE name = %s AND last_job_id = %s", (name, job["id"]))
    elif kind == "create" and status == "failed" and (job["result"] or {}).get("conflict"):
        # The create found a tenant of that name already on a host (made outside the API) and
        # touched nothing: that tenant is not the API's to show, change or remove.
        conn.execute("DELETE FROM tenants WHERE name = %s AND last_job_id = %s", (name, job["id"]))
    elif kind == "backup" or (status == "cancelled" and job["started_at"] is None):
        # A backup that failed touched nothing of the tenant; a job cancelled before it started
        # neither: the tenant is as it was before this job.
        conn.execute(
            "UPDATE tenants SET state = %s, updated_at = now() WHERE name = %s",
            (job["prior_state"] or "failed", name),
        )
    else:
        conn.execute("UPDATE tenants SET state = 'failed', updated_at = now() WHERE name = %s", (name,))

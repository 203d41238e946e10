"""The FastAPI application: /v1 tenants and jobs, /healthz, /metrics.

python -m api serve              # uvicorn on 127.0.0.1:8080, settings from SHADOWDB_API_*
"""

import asyncio
import ipaddress
import logging
import time
import uuid
from collections.abc import AsyncIterable
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime
from typing import Annotated

from cryptography.exceptions import InvalidTag
from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Query, Request, Response, status
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.sse import EventSourceResponse, ServerSentEvent
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

import shadowdb
from shadowdb import NoHosts, SpecError, tenant_hosts

from . import __version__, sealing
from .auth import Principal, admin, reader, writer
from .backups import BackupsUnavailable, read_backups
from .catalog import ACTIVE, Catalog, Conflict, NotFound, QueueFull, migrate
from .events import EventWaker
from .inventory import Inventory
from .jobs import Engine, new_job_id
from .metrics import Metrics
from .models import (
    BackupList,
    BackupRequest,
    BackupStatus,
    Credentials,
    Drift,
    Endpoint,
    Endpoints,
    ErrorBody,
    Health,
    Job,
    JobSummary,
    Member,
    RestoreRequest,
    Tenant,
    TenantCreate,
    TenantList,
    TenantPatch,
)
from .settings import Settings

log = logging.getLogger("shadowdb.api")

_ERRORS = {
    401: {"model": ErrorBody, "description": "missing or invalid token"},
    403: {"model": ErrorBody, "description": "token scope too small"},
}
_WRITE_ERRORS = _ERRORS | {
    409: {"model": ErrorBody, "description": "conflicts with the tenant's state or an unfinished job"},
    413: {"model": ErrorBody, "description": "request body too large"},
    429: {"model": ErrorBody, "description": "job queue full"},
}
# An event stream is woken by the job's new events (api/events.py), and looks on its own this often.
_EVENT_FALLBACK = 2.0
# An open event stream checks its token this often: a revoked token ends the stream.
_TOKEN_RECHECK = 2.0
# Dependencies run before the handler looks anything up: a caller without a valid token (401) or
# with too small a scope (403) learns nothing about which jobs and tenants exist (no 404 first).
AdminToken = Annotated[Principal, Depends(admin)]
WriterToken = Annotated[Principal, Depends(writer)]
ReaderToken = Annotated[Principal, Depends(reader)]


def readable_job(request: Request, job_id: uuid.UUID, who: ReaderToken) -> dict:
    """The job, looked up only once the caller's token is known to be valid (else 401, not 404)."""
    return request.app.state.catalog.job(job_id)


ReadableJob = Annotated[dict, Depends(readable_job)]


def rules_name_path():
    return PathParam(
        pattern=shadowdb.TENANT_NAME_RE,
        min_length=shadowdb.TENANT_NAME_MIN_LEN,
        max_length=shadowdb.TENANT_NAME_MAX_LEN,
        description="tenant name",
    )


def spec_error(exc: SpecError) -> RequestValidationError:
    """A SpecError of the tenant rules as a 422 naming the field in the request body."""
    parts = exc.field.split(".")
    loc = ("body", *parts[1:]) if parts[0] == "tenant" else ("body", *parts)
    return RequestValidationError(
        [{"loc": loc, "msg": exc.reason, "type": "value_error.spec", "input": None}]
    )


def field_error(loc: tuple, msg: str) -> RequestValidationError:
    return RequestValidationError([{"loc": loc, "msg": msg, "type": "value_error", "input": None}])


class _HttpMetrics:
    """ASGI middleware counting requests by route template (streams are not buffered)."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        seen = {"status": 500}

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            self.metrics.observe_request(scope["method"], path, seen["status"], started)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    if not settings.database_url:
        raise SystemExit("SHADOWDB_API_DATABASE_URL is not set (python -m api devdb start gives one)")
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        migrate(settings.database_url)
        inventory = Inventory(settings.inventory, settings.host_group, settings.repo)
        catalog = Catalog(settings.database_url, max_size=settings.pool_max, routed=inventory.routed)
        catalog.open()
        engine = Engine(
            settings, metrics, routed=inventory.routed, declared=lambda: set(inventory.declared_tenants())
        )
        metrics.bind(catalog, engine)
        waker = EventWaker(settings.database_url)
        waker.start(asyncio.get_running_loop())
        app.state.waker = waker
        app.state.catalog = catalog
        app.state.engine = engine
        app.state.inventory = inventory
        if settings.engine:
            await run_in_threadpool(engine.start)
        try:
            yield
        finally:
            if settings.engine:
                await run_in_threadpool(engine.stop)
            await run_in_threadpool(waker.stop)
            catalog.close()

    app = FastAPI(
        title="ShadowDB API",
        version=__version__,
        description="Tenant onboarding as a service: one isolated PostgreSQL cluster per tenant, "
        "provisioned by the project's own playbooks. See docs/api.md.",
        lifespan=lifespan,
        max_body_size=settings.max_body_bytes,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.add_middleware(_HttpMetrics, metrics=metrics)

    @app.exception_handler(NotFound)
    async def _not_found(request: Request, exc: NotFound):
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(Conflict)
    async def _conflict(request: Request, exc: Conflict):
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(QueueFull)
    async def _queue_full(request: Request, exc: QueueFull):
        return JSONResponse({"detail": str(exc)}, status_code=429, headers={"Retry-After": "10"})

    @app.exception_handler(NoHosts)
    async def _no_hosts(request: Request, exc: NoHosts):
        return JSONResponse({"detail": str(exc)}, status_code=503)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception):
        # The traceback stays in the server log; the client gets a reference to find it there.
        ref = uuid.uuid4().hex[:12]
        log.error("internal error %s on %s %s", ref, request.method, request.url.path, exc_info=exc)
        return JSONResponse({"detail": f"internal error (reference {ref} in the API's log)"}, status_code=500)

    @app.get("/healthz", response_model=Health, tags=["ops"])
    def healthz(request: Request, response: Response) -> Health:
        try:
            catalog_ok = request.app.state.catalog.ping()
        except Exception:
            catalog_ok = False
        engine = request.app.state.engine
        engine_ok = (not settings.engine) or engine.alive()
        ok = catalog_ok and engine_ok
        if not ok:
            response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return Health(
            status="ok" if ok else "degraded", catalog=catalog_ok, engine=engine_ok, version=__version__
        )

    @app.get("/metrics", response_class=PlainTextResponse, tags=["ops"])
    def prometheus_metrics() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.include_router(_v1(settings))

    def openapi() -> dict:
        """The spec, with this deployment's own limits where they are narrower than the rules'."""
        if app.openapi_schema is None:
            spec = FastAPI.openapi(app)
            inventory = getattr(app.state, "inventory", None)
            try:
                tiers = sorted((inventory and inventory.tiers()) or shadowdb.DEFAULT_TIERS)
                versions = (inventory and inventory.served_pg_versions()) or None
            except NoHosts:
                tiers, versions = sorted(shadowdb.DEFAULT_TIERS), None
            schemas = spec["components"]["schemas"]
            for model in ("TenantCreate", "TenantPatch"):
                props = schemas[model]["properties"]
                for variant in props["replicas"].get("anyOf", [props["replicas"]]):
                    if variant.get("type") == "integer":
                        variant["maximum"] = settings.max_replicas
                for variant in props["tier"].get("anyOf", [props["tier"]]):
                    if variant.get("type") == "string":
                        variant["enum"] = tiers
            if versions:
                schemas["TenantCreate"]["properties"]["pg_version"]["enum"] = versions
        return app.openapi_schema

    app.openapi = openapi
    return app


# --- representation ------------------------------------------------------------------------


def _summary(job: dict | None) -> JobSummary | None:
    if job is None:
        return None
    return JobSummary(
        id=str(job["id"]),
        kind=job["kind"],
        status=job["status"],
        created_at=job["created_at"],
        finished_at=job["finished_at"],
        error=job["error"],
    )


def _ha_members(tenant: dict) -> list[dict]:
    """The tenant's Patroni members as the playbook registered them (empty: standalone)."""
    return [m for m in tenant.get("members") or [] if isinstance(m, dict) and m.get("api_port")]


def _endpoints(tenant: dict, settings: Settings) -> Endpoints:
    ep = tenant["endpoint"]
    if not ep:
        return Endpoints()
    try:
        hostaddr = str(ipaddress.ip_address(ep["address"]))
    except (ValueError, TypeError):
        hostaddr = None
    base = f"host={ep['host']} port={{port}} dbname={ep['dbname']} user={ep['user']} sslmode=verify-full"
    ha = bool(_ha_members(tenant))
    direct = None
    if not ha:  # an HA tenant's members change roles: clients go through HAProxy
        direct_info = base.format(port=ep["port"]) + (f" hostaddr={hostaddr}" if hostaddr else "")
        direct = Endpoint(
            host=ep["host"],
            hostaddr=hostaddr or ep["address"],
            port=ep["port"],
            dbname=ep["dbname"],
            user=ep["user"],
            conninfo=direct_info,
        )
    sni = sni_ro = None
    if settings.sni_port:
        sni = Endpoint(
            host=ep["host"],
            port=settings.sni_port,
            dbname=ep["dbname"],
            user=ep["user"],
            sslnegotiation="direct",
            conninfo=base.format(port=settings.sni_port) + " sslnegotiation=direct",
        )
        if ha and ep.get("ro_host"):
            sni_ro = Endpoint(
                host=ep["ro_host"],
                port=settings.sni_port,
                dbname=ep["dbname"],
                user=ep["user"],
                sslnegotiation="direct",
                conninfo=f"host={ep['ro_host']} port={settings.sni_port} dbname={ep['dbname']}"
                f" user={ep['user']} sslmode=verify-full sslnegotiation=direct",
            )
    proxy = None
    if ep.get("proxy_port"):
        proxy = Endpoint(
            host=ep["host"],
            port=ep["proxy_port"],
            dbname=ep["dbname"],
            user=ep["user"],
            conninfo=base.format(port=ep["proxy_port"]),
        )
    return Endpoints(direct=direct, sni=sni, proxy=proxy, sni_ro=sni_ro)


def _members(tenant: dict) -> list[Member]:
    members = _ha_members(tenant)
    if not members:
        return [Member(host=tenant["host"], role="primary")]
    return [
        Member(
            host=m["host"],
            role="primary" if m.get("role") in ("leader", "primary", "master") else "replica",
            address=m.get("address"),
            port=m.get("port"),
            api_port=m.get("api_port"),
        )
        for m in sorted(members, key=lambda m: (m.get("role") != "leader", m["host"]))
    ]


def _backup_status(name: str, check: dict | None) -> BackupStatus | None:
    """The tenant's last backup from the last drift check that read the repository, if it has a stanza."""
    backups = (check or {}).get("backups")
    if not isinstance(backups, dict) or name not in backups:
        return None
    stop = backups[name]
    last = datetime.fromtimestamp(stop, UTC) if isinstance(stop, int | float) else None
    age = (datetime.now(UTC) - last).total_seconds() if last else None
    return BackupStatus(last_backup_at=last, last_backup_age_seconds=age, checked_at=check["finished_at"])


def _tenant(tenant: dict, last_job: dict | None, settings: Settings, check: dict | None = None) -> Tenant:
    return Tenant(
        name=tenant["name"],
        state=tenant["state"],
        host=tenant["host"],
        ha=bool(tenant.get("ha")),
        spec=tenant["spec"],
        superuser=bool((tenant["spec"] or {}).get("superuser", False)),
        endpoints=_endpoints(tenant, settings),
        members=_members(tenant),
        readonly_user=(tenant["endpoint"] or {}).get("readonly_user"),
        last_job=_summary(last_job),
        backup=_backup_status(tenant["name"], check),
        created_at=tenant["created_at"],
        updated_at=tenant["updated_at"],
    )


def _job(job: dict, credentials: Credentials | None = None, pending: bool = False) -> Job:
    return Job(
        id=str(job["id"]),
        kind=job["kind"],
        status=job["status"],
        tenant=job["tenant"],
        host=job["host"],
        created_at=job["created_at"],
        started_at=job["started_at"],
        finished_at=job["finished_at"],
        attempts=job["attempts"],
        cancel_requested=job["cancel_requested"],
        error=job["error"],
        result=job["result"],
        credentials=credentials,
        credentials_pending=pending,
        events_url=f"/v1/jobs/{job['id']}/events",
    )


def _accepted(job: dict, response: Response) -> Job:
    response.status_code = status.HTTP_202_ACCEPTED
    response.headers["Location"] = f"/v1/jobs/{job['id']}"
    return _job(job)


def _keys(who: Principal, job_id: str) -> dict:
    private, public = sealing.generate_keypair()
    return {"public_key": public, "wrapped_key": sealing.wrap_private_key(who.token, job_id, private)}


# --- /v1 -----------------------------------------------------------------------------------


def _v1(settings: Settings) -> APIRouter:
    router = APIRouter(prefix="/v1")

    def placer(inventory: Inventory, hosts: list[str]):
        """Where a job's tenant goes (shadowdb.tenant_hosts): among ``hosts``, the catalog's
        tenants and the inventory's own counted, with the deployment's tiers."""
        tiers, declared = inventory.tiers(), inventory.host_tenants()

        def place(spec: dict, records: list[dict], current: list[str]) -> list[str]:
            try:
                return tenant_hosts(hosts, spec, records, tiers, declared, current)
            except SpecError as exc:
                raise spec_error(exc) from None

        return place

    def check_replicas(request: Request, replicas: int | None, loc: tuple, hosts=None) -> None:
        """Replicas this deployment can serve, checked before any job (422 naming the field).
        ``hosts``: the db hosts that can serve the tenant (default: all of them)."""
        if not replicas:
            return
        if replicas > settings.max_replicas:
            raise field_error(
                loc,
                f"{replicas} replicas asked; this deployment allows at most {settings.max_replicas}"
                + (
                    " (high availability is not enabled: SHADOWDB_API_MAX_REPLICAS)"
                    if settings.max_replicas == 0
                    else " (SHADOWDB_API_MAX_REPLICAS)"
                ),
            )
        inventory = request.app.state.inventory
        if not inventory.routed():
            raise field_error(
                loc, "high availability needs a registry (an etcd group) and HAProxy; the inventory has none"
            )
        hosts = inventory.hosts() if hosts is None else hosts
        if replicas > len(hosts) - 1:
            raise field_error(
                loc,
                f"{replicas} replicas need {replicas + 1} members on as many different db hosts; "
                f"the inventory has {len(hosts)} (at most {max(len(hosts) - 1, 0)} replicas)",
            )

    def check_source(request: Request, spec: dict) -> None:
        """A clone's source is a tenant of the catalog, or its own name (a removed tenant made
        again from its backups); the spec says a clone is standalone. Its source's backups and
        the target are checked on the hosts, before anything is made there."""
        loc = ("body", "source")
        source = spec["source"]["tenant"]
        if source == spec["name"]:
            return  # a removed tenant made again from its backups (its name is free, else 409)
        try:
            request.app.state.catalog.tenant(source)
        except NotFound:
            raise field_error(loc, f"no tenant {source!r} to clone from") from None

    @router.post(
        "/tenants",
        status_code=status.HTTP_202_ACCEPTED,
        response_model=Job,
        responses=_WRITE_ERRORS | {503: {"model": ErrorBody, "description": "no host to place it on"}},
        tags=["tenants"],
        summary="Create a tenant (202: follow the job)",
    )
    def create_tenant(body: TenantCreate, request: Request, response: Response, who: WriterToken):
        if body.superuser and who.scope != "admin":
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"token {who.name!r} has scope {who.scope!r}; a superuser tenant needs an admin token",
            )
        inventory = request.app.state.inventory
        raw = body.model_dump(exclude_none=True)
        served = inventory.served_pg_versions()
        try:
            spec = shadowdb.shadowdb_validate_tenant(raw, inventory.tiers(), None, served or None)
        except SpecError as exc:
            if exc.field == "tenant.pg_version":
                raise field_error(
                    ("body", "pg_version"),
                    f"no db host of this deployment can install PostgreSQL {body.pg_version}; "
                    f"they serve {', '.join(map(str, served)) or 'none'} (inventory shadowdb_pg_versions)",
                ) from None
            raise spec_error(exc) from None
        hosts = [h for h in inventory.hosts() if spec["pg_version"] in inventory.pg_versions(h)]
        if body.source is not None:
            check_source(request, spec)
        check_replicas(request, body.replicas, ("body", "replicas"), hosts)
        declared = inventory.declared_tenants().get(spec["name"])
        if declared:
            raise Conflict(
                f"tenant {spec['name']!r} already exists on host {declared} (declared in the inventory)"
            )
        job_id = new_job_id()
        job = request.app.state.catalog.create_tenant(
            spec,
            placer(inventory, hosts),
            {"id": job_id, "created_by": who.id} | _keys(who, job_id),
            settings.max_queued,
        )
        return _accepted(job, response)

    @router.get("/tenants", response_model=TenantList, responses=_ERRORS, tags=["tenants"])
    def list_tenants(request: Request, who: ReaderToken) -> TenantList:
        catalog = request.app.state.catalog
        tenants = catalog.tenants()
        jobs = {}
        for t in tenants:
            if t["last_job_id"]:
                try:
                    jobs[t["name"]] = catalog.job(t["last_job_id"])
                except NotFound:
                    pass
        check = catalog.last_drift_check()
        drift = None
        if check is not None:
            drift = Drift(
                started_at=check["started_at"],
                checked_at=check["finished_at"],
                error=check["error"],
                findings=check["findings"],
            )
        return TenantList(
            tenants=[_tenant(t, jobs.get(t["name"]), settings, check) for t in tenants], drift=drift
        )

    def _get_tenant(request: Request, name: str) -> Tenant:
        catalog = request.app.state.catalog
        tenant = catalog.tenant(name)
        last = None
        if tenant["last_job_id"]:
            try:
                last = catalog.job(tenant["last_job_id"])
            except NotFound:
                last = None
        return _tenant(tenant, last, settings, catalog.last_drift_check())

    @router.get(
        "/tenants/{name}",
        response_model=Tenant,
        responses=_ERRORS | {404: {"model": ErrorBody}},
        tags=["tenants"],
    )
    def get_tenant(request: Request, name: Annotated[str, rules_name_path()], who: ReaderToken) -> Tenant:
        return _get_tenant(request, name)

    @router.patch(
        "/tenants/{name}",
        status_code=status.HTTP_202_ACCEPTED,
        response_model=Job,
        responses=_WRITE_ERRORS | {404: {"model": ErrorBody}},
        tags=["tenants"],
        summary="Change tier, settings, extensions, networks, read-only role or replicas (202)",
    )
    def patch_tenant(
        body: TenantPatch,
        request: Request,
        response: Response,
        name: Annotated[str, rules_name_path()],
        who: WriterToken,
    ):
        changes = body.model_dump(exclude_unset=True)
        if not changes:
            raise field_error(("body",), "nothing to change; give at least one field")
        check_replicas(request, changes.get("replicas"), ("body", "replicas"))
        if "settings" in changes:
            changes["settings"] = body.settings.model_dump(exclude_none=True) if body.settings else {}
        catalog = request.app.state.catalog
        current = catalog.tenant(name)
        tiers = request.app.state.inventory.tiers()
        table = tiers or shadowdb.DEFAULT_TIERS

        def build_spec(tenant: dict) -> dict:
            merged = dict(tenant["spec"]) | {k: v for k, v in changes.items() if v is not None}
            try:
                spec = shadowdb.shadowdb_validate_tenant(merged, tiers)
            except SpecError as exc:
                raise spec_error(exc) from None
            old = table.get(tenant["spec"].get("tier"), {}).get("disk_size_mb", 0)
            new = table.get(spec["tier"], {}).get("disk_size_mb", 0)
            if new < old:
                raise field_error(
                    ("body", "tier"),
                    f"tier {spec['tier']!r} has a smaller disk than {tenant['spec']['tier']!r}; "
                    "volumes do not shrink",
                )
            return spec

        job_id = new_job_id()
        job = {"id": job_id, "created_by": who.id}
        if current["endpoint"] is None:
            # Never converged (its create failed): this run hands the credentials to the caller.
            job |= _keys(who, job_id)
        inventory = request.app.state.inventory
        row = catalog.change_tenant(
            name, "update", build_spec, job, settings.max_queued, placer(inventory, inventory.hosts())
        )
        return _accepted(row, response)

    @router.delete(
        "/tenants/{name}",
        status_code=status.HTTP_202_ACCEPTED,
        response_model=Job,
        responses=_WRITE_ERRORS | {404: {"model": ErrorBody}},
        tags=["tenants"],
        summary="Remove a tenant and all its data (202); ?confirm=<name> is required",
    )
    def delete_tenant(
        request: Request,
        response: Response,
        name: Annotated[str, rules_name_path()],
        who: WriterToken,
        confirm: Annotated[str, Query(max_length=64, description="the tenant's name again")],
    ):
        catalog = request.app.state.catalog
        catalog.tenant(name)  # 404 first
        if confirm != name:
            raise field_error(
                ("query", "confirm"), f"removing a tenant destroys its data: pass ?confirm={name}"
            )
        job = {"id": new_job_id(), "created_by": who.id}
        row = catalog.change_tenant(
            name, "delete", lambda t: {"name": name, "state": "absent"}, job, settings.max_queued
        )
        return _accepted(row, response)

    def backed_up_tenant(request: Request, name: str) -> dict:
        """A tenant that has backups (404 unknown; 422 one without backups)."""
        tenant = request.app.state.catalog.tenant(name)
        if not request.app.state.inventory.backups(tenant["spec"] or {}):
            raise field_error(
                ("path", "name"),
                f"{name} has no backups (its spec says backup: false, or the inventory has no backup group)",
            )
        return tenant

    async def backups_now(name: str) -> dict:
        """The tenant's backups read on the repository now (502 when it cannot be read)."""
        try:
            return await run_in_threadpool(read_backups, settings, name)
        except BackupsUnavailable as exc:
            raise HTTPException(
                status.HTTP_502_BAD_GATEWAY, f"the backups of {name} could not be read: {exc}"
            ) from None

    @router.get(
        "/tenants/{name}/backups",
        response_model=BackupList,
        responses=_ERRORS | {404: {"model": ErrorBody}, 502: {"model": ErrorBody}},
        tags=["backups"],
        summary="The tenant's backups on the repository now, and the window a restore can reach",
    )
    async def list_backups(request: Request, name: Annotated[str, rules_name_path()], who: ReaderToken):
        await run_in_threadpool(backed_up_tenant, request, name)
        return await backups_now(name)

    @router.post(
        "/tenants/{name}/backups",
        status_code=status.HTTP_202_ACCEPTED,
        response_model=Job,
        responses=_WRITE_ERRORS | {404: {"model": ErrorBody}},
        tags=["backups"],
        summary="Back the tenant up now (202: follow the job; its result lists the backups)",
    )
    def backup_tenant(
        request: Request,
        response: Response,
        name: Annotated[str, rules_name_path()],
        who: WriterToken,
        body: BackupRequest | None = None,
    ):
        backed_up_tenant(request, name)
        kind = (body or BackupRequest()).type
        job = {"id": new_job_id(), "created_by": who.id, "request": {"type": kind}}
        row = request.app.state.catalog.change_tenant(
            name, "backup", lambda t: t["spec"], job, settings.max_queued
        )
        return _accepted(row, response)

    @router.post(
        "/tenants/{name}/restore",
        status_code=status.HTTP_202_ACCEPTED,
        response_model=Job,
        responses=_WRITE_ERRORS | {404: {"model": ErrorBody}},
        tags=["backups"],
        summary="Restore the tenant in place to a time, an LSN or the latest (202); confirm: <name>",
    )
    async def restore_tenant(
        request: Request,
        response: Response,
        name: Annotated[str, rules_name_path()],
        who: WriterToken,
        body: RestoreRequest,
    ):
        await run_in_threadpool(backed_up_tenant, request, name)
        if body.confirm != name:
            raise field_error(
                ("body", "confirm"), f"a restore replaces the tenant's data: confirm with {name!r}"
            )
        try:
            target = shadowdb.shadowdb_check_restore_target(body.target)
        except SpecError as exc:
            raise field_error(("body", "target"), exc.reason) from None
        # Checked against the backups before a job is queued (the job checks again).
        summary = await backups_now(name)
        try:
            shadowdb.shadowdb_restore_target_of_summary(target, summary)
        except SpecError as exc:
            raise field_error(("body", "target"), exc.reason) from None
        job = {"id": new_job_id(), "created_by": who.id, "request": {"target": target}}
        row = await run_in_threadpool(
            request.app.state.catalog.change_tenant,
            name,
            "restore",
            lambda t: t["spec"],
            job,
            settings.max_queued,
        )
        return _accepted(row, response)

    @router.get(
        "/jobs/{job_id}",
        response_model=Job,
        responses=_ERRORS | {404: {"model": ErrorBody}},
        tags=["jobs"],
        summary="A job; carries the new tenant's credentials once, to its creator",
    )
    def get_job(request: Request, who: ReaderToken, job: ReadableJob) -> Job:
        if job["sealed_credentials"] is None:
            return _job(job)
        if who.id != job["created_by"]:
            return _job(job, pending=True)
        taken = request.app.state.catalog.take_credentials(job["id"])
        if taken is None:  # another request of the creator got them first
            return _job(request.app.state.catalog.job(job["id"]))
        try:
            private = sealing.unwrap_private_key(who.token, str(job["id"]), bytes(taken["wrapped_key"]))
            secret = sealing.unseal(private, taken["sealed_credentials"])
        except (InvalidTag, ValueError):
            log.error("job %s: sealed credentials could not be opened", job["id"])
            return _job(request.app.state.catalog.job(job["id"]))
        endpoint = (job["result"] or {}).get("endpoint") or {}
        creds = Credentials(
            user=endpoint.get("user") or job["tenant"],
            password=secret["password"],
            readonly_user=endpoint.get("readonly_user"),
            readonly_password=secret.get("readonly_password"),
        )
        return _job(request.app.state.catalog.job(job["id"]), credentials=creds)

    @router.get(
        "/jobs/{job_id}/events",
        response_class=EventSourceResponse,
        responses=_ERRORS | {404: {"model": ErrorBody}},
        tags=["jobs"],
        summary="Server-Sent Events of a job: job, step, play, task, result, recap; ends with 'end'",
    )
    async def job_events(
        request: Request,
        who: ReaderToken,
        job: ReadableJob,
        last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    ) -> AsyncIterable[ServerSentEvent]:
        catalog = request.app.state.catalog
        after = int(last_event_id) if last_event_id and last_event_id.isdigit() else 0
        job_id = job["id"]
        checked = time.monotonic()
        with request.app.state.waker.subscribe(job_id) as woken:
            while True:
                woken.clear()  # before looking: an event written from here on wakes the wait below
                if time.monotonic() - checked >= _TOKEN_RECHECK:
                    checked = time.monotonic()
                    if not await run_in_threadpool(catalog.token_active, who.id):
                        log.info("job %s: event stream of token %s ended: token revoked", job_id, who.id)
                        yield ServerSentEvent(event="error", data={"detail": "token revoked"})
                        return
                rows = await run_in_threadpool(catalog.events, job_id, after)
                for row in rows:
                    after = row["seq"]
                    data = row["data"] | {"at": row["created_at"].isoformat()}
                    yield ServerSentEvent(event=row["type"], id=str(row["seq"]), data=data)
                if rows:
                    continue
                current = await run_in_threadpool(catalog.job, job_id)
                if current["status"] not in ACTIVE:
                    if await run_in_threadpool(catalog.events, job_id, after, 1):
                        continue
                    yield ServerSentEvent(
                        event="end",
                        data={"status": current["status"], "error": current["error"], "job": str(job_id)},
                    )
                    return
                if await request.is_disconnected():
                    return
                with suppress(TimeoutError):
                    await asyncio.wait_for(woken.wait(), _EVENT_FALLBACK)

    @router.post(
        "/jobs/{job_id}/cancel",
        status_code=status.HTTP_202_ACCEPTED,
        response_model=Job,
        responses=_ERRORS | {404: {"model": ErrorBody}, 409: {"model": ErrorBody}},
        tags=["jobs"],
        summary="Cancel a queued job, or stop a running one (409 when it has finished)",
    )
    def cancel_job(request: Request, response: Response, job_id: uuid.UUID, who: WriterToken) -> Job:
        row = request.app.state.catalog.request_cancel(job_id)
        response.status_code = status.HTTP_202_ACCEPTED
        return _job(row)

    return router

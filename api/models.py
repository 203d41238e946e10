"""Request and response models. The tenant fields are built from the ``shadowdb`` package.

Types, enums and bounds come from its constants (so the OpenAPI schema documents them), and
every spec is then passed through ``shadowdb_validate_tenant`` itself, the function the
playbooks' filter runs, so the API can never accept what the playbooks would refuse.
"""

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

import shadowdb

TenantName = Annotated[
    str,
    Field(
        pattern=shadowdb.TENANT_NAME_RE,
        min_length=shadowdb.TENANT_NAME_MIN_LEN,
        max_length=shadowdb.TENANT_NAME_MAX_LEN,
        description="DNS label: also the ext4 label, the OS user pg-<name>, the database and the owner role",
        examples=["acme"],
    ),
]
# A tier name: the deployment's own table (inventory shadowdb_tiers) may replace the default one,
# so the names are checked by the rules against it (the OpenAPI enum shows the deployment's).
Tier = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$", examples=[shadowdb.DEFAULT_TIER])]
PgVersion = Literal[tuple(shadowdb.SUPPORTED_PG_VERSIONS)]  # type: ignore[valid-type]
Extension = Literal[tuple(sorted(shadowdb.EXTENSIONS))]  # type: ignore[valid-type]
Cidr = Annotated[str, Field(min_length=2, max_length=49, pattern=r"^[0-9A-Fa-f.:]+/[0-9]{1,3}$")]

_SIZE_PATTERN = r"^[0-9]{1,10}\s?(B|kB|MB|GB|TB)?$"
_TIME_PATTERN = r"^[0-9]{1,10}\s?(us|ms|s|min|h|d)?$"
_STRING_PATTERN = r"^[^'\\\x00-\x1f\x7f]*$"


def _setting_type(spec: dict) -> Any:
    """The pydantic type of one overridable setting, from its rule in OVERRIDABLE_SETTINGS."""
    kind = spec["type"]
    if kind in ("size", "time"):
        low = -1 if spec["allow_minus_one"] else spec["min"]
        pattern = _SIZE_PATTERN if kind == "size" else _TIME_PATTERN
        return Annotated[int, Field(ge=low, le=spec["max"])] | Annotated[str, Field(pattern=pattern)]
    if kind == "int":
        return Annotated[int, Field(ge=spec["min"], le=spec["max"])]
    if kind == "real":
        return Annotated[float, Field(ge=spec["min"], le=spec["max"], allow_inf_nan=False)]
    if kind == "bool":
        return bool
    if kind == "enum":
        values = Literal[tuple(spec["values"])]  # type: ignore[valid-type]
        return values | bool if spec["bool_ok"] else values
    if kind == "string":
        return Annotated[str, Field(max_length=1024, pattern=_STRING_PATTERN)]
    raise AssertionError(f"unknown setting type {kind!r}")  # pragma: no cover


TenantSettings = create_model(
    "TenantSettings",
    __config__=ConfigDict(extra="forbid"),
    __doc__="postgresql.conf overrides (allow-listed and type-checked; ShadowDB's own settings are refused)",
    **{
        name: (_setting_type(spec) | None, None)
        for name, spec in sorted(shadowdb.OVERRIDABLE_SETTINGS.items())
    },
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CloneSource(_Strict):
    """A clone's source: another tenant's backups at a time, an LSN or their latest (one of them)."""

    tenant: TenantName
    time: str | None = Field(None, max_length=64, description="a timestamp with a zone")
    lsn: str | None = Field(None, max_length=32, description="an LSN, e.g. 0/3000060")
    latest: bool | None = Field(None, description="the latest the backups hold")


class TenantCreate(_Strict):
    """A new tenant: the spec of shared/DESIGN.md (state is implied: DELETE removes a tenant)."""

    name: TenantName
    tier: Tier = Field(shadowdb.DEFAULT_TIER, description="size tier (the deployment's tiers)")
    pg_version: PgVersion = Field(shadowdb.DEFAULT_PG_VERSION, description="PostgreSQL major version")  # type: ignore[valid-type]
    extensions: list[Extension] = Field(  # type: ignore[valid-type]
        default_factory=list, max_length=len(shadowdb.EXTENSIONS), description="allow-listed extensions"
    )
    settings: TenantSettings | None = None  # type: ignore[valid-type]
    hba: list[Cidr] | None = Field(None, max_length=64, description="client networks (CIDR); default all")
    readonly_role: bool = Field(False, description="also create <name>_ro with pg_read_all_data")
    replicas: int = Field(0, ge=0, le=shadowdb.MAX_REPLICAS, description="standbys (0: standalone)")
    superuser: bool = Field(
        False, description="the owner role is a PostgreSQL superuser (admin tokens only; set at creation)"
    )
    backup: bool | None = Field(
        None,
        description="archiving and scheduled backups (default: the deployment's, when it has a repository)",
    )
    source: CloneSource | None = Field(
        None, description="a clone: the data of another tenant's backups at a time (standalone tenants only)"
    )


class TenantPatch(_Strict):
    """Changes to a tenant; absent fields keep their value, ``settings`` replaces all overrides."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1})

    tier: Tier | None = None
    extensions: list[Extension] | None = Field(None, max_length=len(shadowdb.EXTENSIONS))  # type: ignore[valid-type]
    settings: TenantSettings | None = None  # type: ignore[valid-type]
    hba: list[Cidr] | None = Field(None, max_length=64)
    readonly_role: bool | None = None
    replicas: int | None = Field(None, ge=0, le=shadowdb.MAX_REPLICAS)


class Endpoint(BaseModel):
    host: str = Field(description="TLS server name (verify-full)")
    hostaddr: str | None = Field(None, description="address of the host serving the tenant")
    port: int
    dbname: str
    user: str
    sslmode: str = "verify-full"
    sslnegotiation: str | None = None
    conninfo: str = Field(description="libpq connection string, password not included")


class Endpoints(BaseModel):
    direct: Endpoint | None = Field(None, description="the tenant's own port on its host")
    sni: Endpoint | None = Field(
        None, description="the shared SNI port (libpq 17+), when a router is deployed"
    )
    proxy: Endpoint | None = Field(
        None,
        description="the tenant's own port on the proxy (any libpq), when a router is deployed; "
        "for an HA tenant it goes to the leader",
    )
    sni_ro: Endpoint | None = Field(
        None,
        description="HA tenants: the read-only name <name>-ro on the shared SNI port, routed to the "
        "replicas (libpq 17+)",
    )


class Member(BaseModel):
    host: str = Field(description="inventory host")
    role: Literal["primary", "replica"] = Field(
        description="for HA tenants, the role when the playbook registered it (Patroni may fail over since)"
    )
    address: str | None = None
    port: int | None = Field(None, description="the member's PostgreSQL port on its host")
    api_port: int | None = Field(None, description="the member's Patroni REST API port (HA only)")


class JobSummary(BaseModel):
    id: str
    kind: Literal["create", "update", "delete", "backup", "restore"]
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    created_at: datetime
    finished_at: datetime | None = None
    error: str | None = None


class BackupRequest(_Strict):
    """An on-demand backup."""

    type: Literal["full", "diff", "incr"] = Field("full", description="full, differential or incremental")


class RestoreRequest(_Strict):
    """A restore in place: the tenant's data goes back to the target (what came after is lost)."""

    target: dict[str, Any] = Field(
        description='{"time": "<timestamp with a zone>"}, {"lsn": "0/3000060"} or {"latest": true}'
    )
    confirm: str = Field(description="the tenant's name, again")


class BackupInfo(BaseModel):
    label: str
    type: str
    start: int = Field(description="unix time")
    stop: int = Field(description="unix time")
    size: int | None = Field(None, description="the data directory's size, bytes")
    repo_size: int | None = Field(None, description="what this backup added to the repository, bytes")
    wal_start: str | None = None
    wal_stop: str | None = None


class BackupList(BaseModel):
    """A tenant's backups on the repository now, and the window a restore or clone can reach."""

    backups: list[BackupInfo]
    restorable_from: int | None = Field(None, description="the end of the first backup (unix time)")
    last_backup_stop: int | None = None
    wal_max: str | None = Field(None, description="the last archived WAL segment")


class BackupStatus(BaseModel):
    """The tenant's last backup, as the last drift check read it on the backup repository."""

    last_backup_at: datetime | None = Field(None, description="when its last backup ended; null: none yet")
    last_backup_age_seconds: float | None = Field(None, description="how long ago, in seconds")
    checked_at: datetime = Field(description="when the repository was read")


class Tenant(BaseModel):
    name: str
    state: Literal["creating", "ready", "updating", "deleting", "failed"]
    host: str = Field(
        description="the standalone cluster's host; for an HA tenant, its leader at registration"
    )
    ha: bool = Field(
        False,
        description="HA (a Patroni cluster), or a conversion was started: its jobs run tenant_ha.yml",
    )
    spec: dict[str, Any]
    superuser: bool = Field(False, description="the owner role is a PostgreSQL superuser")
    endpoints: Endpoints
    members: list[Member]
    readonly_user: str | None = None
    last_job: JobSummary | None = None
    backup: BackupStatus | None = Field(
        None,
        description="its last backup (tenants with backups, once the drift check has read the repository)",
    )
    created_at: datetime
    updated_at: datetime


class DriftFinding(BaseModel):
    """A difference between the catalog and the hosts or the registry (api/drift.py)."""

    kind: str = Field(
        description="unknown_on_host, unknown_in_registry, missing_from_host, not_registered,"
        " leader_changed or host_unreachable"
    )
    tenant: str | None = None
    host: str | None = None
    detail: str


class Drift(BaseModel):
    """The last drift check: reported only, never repaired by the API."""

    started_at: datetime
    checked_at: datetime = Field(description="when the check ended")
    error: str | None = Field(None, description="why the check could not run (then no findings)")
    findings: list[DriftFinding]


class TenantList(BaseModel):
    tenants: list[Tenant]
    drift: Drift | None = Field(None, description="the last drift check (none yet: null)")


class Credentials(BaseModel):
    """Returned once, to the caller that created the tenant, then wiped from the catalog."""

    user: str
    password: str
    readonly_user: str | None = None
    readonly_password: str | None = None


class Job(JobSummary):
    tenant: str
    host: str
    started_at: datetime | None = None
    attempts: int
    cancel_requested: bool
    result: dict[str, Any] | None = None
    credentials: Credentials | None = Field(
        None, description="the new tenant's credentials: in the first GET by its creator after success only"
    )
    credentials_pending: bool = Field(
        False, description="credentials are waiting for the creating token (this response did not carry them)"
    )
    events_url: str


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    catalog: bool
    engine: bool
    version: str


class ErrorBody(BaseModel):
    detail: Any

"""Where a tenant lives on its host: its OS user, mount, directories, systemd units, secrets and
the port pools its ports are leased from.

The roles derive the same names on the hosts (roles/tenant_cluster/vars/main.yml,
roles/patroni/vars/main.yml, roles/tenant_volume/{defaults,vars}/main.yml, the port pools of
roles/shadowdb/tasks/tenants_converge.yml, tenant_register.yml and roles/patroni/tasks/present.yml);
this module states them once for the controller's Python (the filters, the API, tools, tests).
Change a path here and in those files together.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .spec import check_name

# Prefix of the per-tenant OS user that owns the cluster and runs its service.
OS_USER_PREFIX = "pg-"
# Each tenant's volume is mounted at <MOUNT_ROOT>/<tenant> (LABEL=<tenant>).
MOUNT_ROOT = "/mnt/db"
# Root-only directory of each tenant's generated passwords and connection file.
SECRETS_ROOT = "/etc/shadowdb/tenants"
# The volume unit's environment file, <VOLUME_ENV_DIR>/<tenant>.env.
VOLUME_ENV_DIR = "/etc/shadowdb/volumes"
# Sparse image files of the loop volume backend, <LOOP_DIR>/<tenant>.img.
LOOP_DIR = "/var/lib/shadowdb/volumes"
# The deployment CA's certificate on every host.
HOST_CA = "/etc/shadowdb/ca.crt"
# Patroni's configuration of an HA tenant's member, <PATRONI_CONFIG_DIR>/<tenant>.yml.
PATRONI_CONFIG_DIR = "/etc/patroni"
# systemd template units, instantiated per tenant.
POSTGRES_UNIT = "shadowdb-postgres@{tenant}.service"
VOLUME_UNIT = "shadowdb-volume@{tenant}.service"
PATRONI_UNIT = "shadowdb-patroni@{tenant}.service"
# Port pools (library/shadowdb_port.py) -> default range, inclusive. A port, once leased to a
# tenant, never changes. postgres: standalone clusters (inventory shadowdb_port_range_start/_end);
# ha_postgres, patroni_api: HA members (patroni_port_range_*, patroni_api_port_range_*); proxy: a
# tenant's own HAProxy frontend (shadowdb_proxy_port_range_*). All below the kernel's ephemeral
# range 32768-60999.
PORT_RANGES = {
    "postgres": (20000, 29999),
    "ha_postgres": (16000, 17999),
    "patroni_api": (18000, 19999),
    "proxy": (30000, 31999),
}


@dataclass(frozen=True)
class TenantLayout:
    """The names and paths of one tenant on its host."""

    name: str
    os_user: str
    owner: str  # the owner role, also the database
    readonly_user: str  # the optional read-only login role
    home: str  # the volume's mount point
    data_dir: str
    socket_dir: str
    tls_dir: str
    secrets_dir: str
    volume_env_file: str
    loop_image: str
    postgres_unit: str
    volume_unit: str
    patroni_unit: str
    patroni_config: str

    def as_dict(self) -> dict:
        return asdict(self)


def shadowdb_os_user(name) -> str:
    """OS user owning a tenant's cluster: "pg-<name>".

    A reserved name is accepted here (a tenant made before it was reserved has that user).
    """
    return OS_USER_PREFIX + check_name(name, reserved_ok=True)


def tenant_layout(name, mount_root: str = MOUNT_ROOT, secrets_root: str = SECRETS_ROOT) -> TenantLayout:
    """The layout of tenant ``name`` (a valid tenant name; a reserved one is accepted, as for
    shadowdb_os_user). ``mount_root`` and ``secrets_root``: the roles' *_mount_root and
    *_secrets_dir when an inventory changes them."""
    name = check_name(name, reserved_ok=True)
    home = f"{mount_root}/{name}"
    return TenantLayout(
        name=name,
        os_user=OS_USER_PREFIX + name,
        owner=name,
        readonly_user=f"{name}_ro",
        home=home,
        data_dir=f"{home}/data",
        socket_dir=f"{home}/run",
        tls_dir=f"{home}/tls",
        secrets_dir=f"{secrets_root}/{name}",
        volume_env_file=f"{VOLUME_ENV_DIR}/{name}.env",
        loop_image=f"{LOOP_DIR}/{name}.img",
        postgres_unit=POSTGRES_UNIT.format(tenant=name),
        volume_unit=VOLUME_UNIT.format(tenant=name),
        patroni_unit=PATRONI_UNIT.format(tenant=name),
        patroni_config=f"{PATRONI_CONFIG_DIR}/{name}.yml",
    )


def shadowdb_converged_record(name, fingerprint: str, port) -> dict:
    """What proves a standalone tenant converged (library/shadowdb_tenant_check.py, state record):
    its fingerprint, the files ShadowDB renders, its units, its mount and its port."""
    tenant = tenant_layout(name)
    return {
        "name": tenant.name,
        "fingerprint": fingerprint,
        "files": [
            f"{tenant.data_dir}/postgresql.conf",
            f"{tenant.data_dir}/pg_hba.conf",
            f"{tenant.data_dir}/pg_ident.conf",
            f"{tenant.tls_dir}/server.crt",
            f"/etc/systemd/system/{tenant.postgres_unit}.d/50-tenant.conf",
            tenant.volume_env_file,
        ],
        "units": [tenant.volume_unit, tenant.postgres_unit],
        "mountpoint": tenant.home,
        "port": int(port),
    }

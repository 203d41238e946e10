"""ShadowDB's domain model: the rules of a tenant, in one place, standard library only.

- ``spec``: the tenant spec and its validation, tenant names and reserved names;
- ``tiers``: tiers, the settings a tenant may override and their tier bounds, postgresql.conf;
- ``postgres``: supported PostgreSQL versions, allow-listed extensions and their packages;
- ``layout``: a tenant's OS user, paths, systemd units and port pools on its host;
- ``placement``: which db hosts a tenant (or its HA members) goes to;
- ``network``: the proxy networks a restricted tenant's pg_hba admits;
- ``registry``: the registry records of a host's tenants (what a registration writes or refuses);
- ``backup``: a tenant's backups with pgBackRest: identities, paths, archive settings, restore targets;
- ``fingerprint``: digests of a tenant's desired state and of the code, for the no-op fast path;
- ``errors``: SpecError (a ValueError naming the offending field), ``values``: input helpers.

The Ansible filter plugins (filter_plugins/) are thin adapters over these functions, and the
API imports them, so the playbooks and the API enforce exactly the same contract. Nothing here
imports Ansible.
"""

from .backup import (
    shadowdb_archive_queue_max_mb,
    shadowdb_archive_settings,
    shadowdb_backup_client_cn,
    shadowdb_backup_enabled,
    shadowdb_backup_layout,
    shadowdb_backup_summary,
    shadowdb_check_restore_target,
    shadowdb_clone_plan,
    shadowdb_restore_target,
    shadowdb_restore_target_of_summary,
)
from .errors import SpecError
from .fingerprint import FingerprintError, canonical_json, shadowdb_fingerprint, shadowdb_tree_digest
from .layout import OS_USER_PREFIX, TenantLayout, shadowdb_converged_record, shadowdb_os_user, tenant_layout
from .network import shadowdb_proxy_cidrs
from .placement import NoHosts, pick_host, shadowdb_host_load, shadowdb_placement, tenant_hosts
from .postgres import (
    DEFAULT_PG_VERSION,
    EXTENSIONS,
    PRELOAD_EXTENSIONS,
    SUPPORTED_PG_VERSIONS,
    shadowdb_extension_packages,
)
from .registry import (
    shadowdb_ha_members,
    shadowdb_ha_records,
    shadowdb_registry_current,
    shadowdb_registry_records,
)
from .spec import (
    DEFAULT_HBA,
    MAX_REPLICAS,
    RESERVED_NAMES,
    TENANT_FIELDS,
    TENANT_NAME_MAX_LEN,
    TENANT_NAME_MIN_LEN,
    TENANT_NAME_RE,
    TENANT_STATES,
    reserved_name_reason,
    shadowdb_batch_refusals,
    shadowdb_check_tenants,
    shadowdb_validate_tenant,
    shadowdb_validate_tenants,
)
from .tiers import (
    DEFAULT_TIER,
    DEFAULT_TIERS,
    MANAGED_SETTINGS,
    OVERRIDABLE_SETTINGS,
    TIER_KEYS,
    TIER_SETTING_BOUNDS,
    resolve_tiers,
    shadowdb_pg_settings,
    shadowdb_tier,
    shadowdb_tier_limits,
    shadowdb_validate_settings,
)

__all__ = [
    "shadowdb_archive_queue_max_mb",
    "shadowdb_archive_settings",
    "shadowdb_backup_client_cn",
    "shadowdb_backup_enabled",
    "shadowdb_backup_layout",
    "shadowdb_backup_summary",
    "shadowdb_check_restore_target",
    "shadowdb_clone_plan",
    "shadowdb_restore_target",
    "shadowdb_restore_target_of_summary",
    "DEFAULT_HBA",
    "DEFAULT_PG_VERSION",
    "DEFAULT_TIER",
    "DEFAULT_TIERS",
    "EXTENSIONS",
    "MANAGED_SETTINGS",
    "MAX_REPLICAS",
    "OS_USER_PREFIX",
    "OVERRIDABLE_SETTINGS",
    "PRELOAD_EXTENSIONS",
    "RESERVED_NAMES",
    "SUPPORTED_PG_VERSIONS",
    "TENANT_FIELDS",
    "TENANT_NAME_MAX_LEN",
    "TENANT_NAME_MIN_LEN",
    "TENANT_NAME_RE",
    "TENANT_STATES",
    "TIER_KEYS",
    "TIER_SETTING_BOUNDS",
    "FingerprintError",
    "NoHosts",
    "SpecError",
    "TenantLayout",
    "canonical_json",
    "pick_host",
    "tenant_hosts",
    "reserved_name_reason",
    "resolve_tiers",
    "shadowdb_batch_refusals",
    "shadowdb_check_tenants",
    "shadowdb_extension_packages",
    "shadowdb_fingerprint",
    "shadowdb_ha_members",
    "shadowdb_ha_records",
    "shadowdb_host_load",
    "shadowdb_converged_record",
    "shadowdb_os_user",
    "shadowdb_pg_settings",
    "shadowdb_placement",
    "shadowdb_proxy_cidrs",
    "shadowdb_registry_current",
    "shadowdb_registry_records",
    "shadowdb_tier",
    "shadowdb_tier_limits",
    "shadowdb_tree_digest",
    "shadowdb_validate_settings",
    "shadowdb_validate_tenant",
    "shadowdb_validate_tenants",
    "tenant_layout",
]

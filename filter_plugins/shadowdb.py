"""ShadowDB Ansible filters: the tenant specification rules of the ``shadowdb`` package.

A thin adapter: the rules live in shadowdb/ (spec, tiers, postgres, layout, backup, registry), which the API
imports too. Each filter is the package's function, its SpecError (a ValueError) raised as
AnsibleFilterError with the same message.
"""

from ansible.errors import AnsibleFilterError

from shadowdb import backup, layout, postgres, registry, spec, tiers
from shadowdb.errors import raising

FILTERS = {
    "shadowdb_archive_queue_max_mb": backup.shadowdb_archive_queue_max_mb,
    "shadowdb_archive_settings": backup.shadowdb_archive_settings,
    "shadowdb_backup_client_cn": backup.shadowdb_backup_client_cn,
    "shadowdb_backup_enabled": backup.shadowdb_backup_enabled,
    "shadowdb_backup_layout": backup.shadowdb_backup_layout,
    "shadowdb_backup_summary": backup.shadowdb_backup_summary,
    "shadowdb_clone_plan": backup.shadowdb_clone_plan,
    "shadowdb_restore_target": backup.shadowdb_restore_target,
    "shadowdb_batch_refusals": spec.shadowdb_batch_refusals,
    "shadowdb_check_tenants": spec.shadowdb_check_tenants,
    "shadowdb_converged_record": layout.shadowdb_converged_record,
    "shadowdb_extension_packages": postgres.shadowdb_extension_packages,
    "shadowdb_ha_members": registry.shadowdb_ha_members,
    "shadowdb_ha_records": registry.shadowdb_ha_records,
    "shadowdb_os_user": layout.shadowdb_os_user,
    "shadowdb_pg_settings": tiers.shadowdb_pg_settings,
    "shadowdb_registry_current": registry.shadowdb_registry_current,
    "shadowdb_registry_records": registry.shadowdb_registry_records,
    "shadowdb_tier": tiers.shadowdb_tier,
    "shadowdb_tier_limits": tiers.shadowdb_tier_limits,
    "shadowdb_validate_settings": tiers.shadowdb_validate_settings,
    "shadowdb_validate_tenant": spec.shadowdb_validate_tenant,
    "shadowdb_validate_tenants": spec.shadowdb_validate_tenants,
}


class FilterModule:
    """Ansible filter plugin entry point."""

    def filters(self):
        return {name: raising(AnsibleFilterError, func) for name, func in FILTERS.items()}

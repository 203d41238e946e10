"""ShadowDB Ansible filters: placement of a tenant's Patroni members on distinct db hosts.

A thin adapter over shadowdb/placement.py (see its docstring for the rules); its errors are
raised as AnsibleFilterError with the same message.
"""

from ansible.errors import AnsibleFilterError

from shadowdb import placement
from shadowdb.errors import raising

FILTERS = {
    "shadowdb_host_load": placement.shadowdb_host_load,
    "shadowdb_placement": placement.shadowdb_placement,
}


class FilterModule:
    """Ansible filter plugin entry point."""

    def filters(self):
        return {name: raising(AnsibleFilterError, func) for name, func in FILTERS.items()}

"""ShadowDB Ansible filter: the proxy networks a tenant's pg_hba admits (shadowdb/network.py)."""

from ansible.errors import AnsibleFilterError

from shadowdb import network
from shadowdb.errors import raising


class FilterModule:
    """Ansible filter plugin entry point."""

    def filters(self):
        return {"shadowdb_proxy_cidrs": raising(AnsibleFilterError, network.shadowdb_proxy_cidrs)}

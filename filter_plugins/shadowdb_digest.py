"""ShadowDB Ansible filters: fingerprints of a tenant's desired state, for the no-op fast path.

A thin adapter over shadowdb/fingerprint.py (see its docstring); its errors are raised as
AnsibleFilterError with the same message.
"""

from ansible.errors import AnsibleFilterError

from shadowdb import fingerprint
from shadowdb.errors import raising

FILTERS = {
    "shadowdb_fingerprint": fingerprint.shadowdb_fingerprint,
    "shadowdb_tree_digest": fingerprint.shadowdb_tree_digest,
}


class FilterModule:
    """Ansible filter plugin entry point."""

    def filters(self):
        return {name: raising(AnsibleFilterError, func) for name, func in FILTERS.items()}

"""The tenant contract, loaded from filter_plugins/shadowdb.py: one source for the rules.

The filter file is imported by path (it is an Ansible plugin, not a package) and works without
Ansible installed. Everything the API validates goes through its functions.
"""

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
_FILTERS = REPO / "filter_plugins" / "shadowdb.py"


def _load():
    name = "shadowdb_filter_rules"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, _FILTERS)
    if spec is None or spec.loader is None:  # pragma: no cover - the file is part of the repo
        raise ImportError(f"cannot load the tenant rules from {_FILTERS}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


shadowdb = _load()

SpecError = shadowdb.SpecError
validate_tenant = shadowdb.shadowdb_validate_tenant
validate_settings = shadowdb.shadowdb_validate_settings
TENANT_NAME_RE = shadowdb.TENANT_NAME_RE
TENANT_NAME_MAX_LEN = shadowdb.TENANT_NAME_MAX_LEN
TENANT_NAME_MIN_LEN = shadowdb.TENANT_NAME_MIN_LEN
DEFAULT_TIERS = shadowdb.DEFAULT_TIERS
DEFAULT_TIER = shadowdb.DEFAULT_TIER
EXTENSIONS = shadowdb.EXTENSIONS
OVERRIDABLE_SETTINGS = shadowdb.OVERRIDABLE_SETTINGS
SUPPORTED_PG_VERSIONS = shadowdb.SUPPORTED_PG_VERSIONS
DEFAULT_PG_VERSION = shadowdb.DEFAULT_PG_VERSION
MAX_REPLICAS = shadowdb.MAX_REPLICAS
TENANT_FIELDS = shadowdb.TENANT_FIELDS

"""Filters of the API's playbook: split tenant credentials into a public endpoint and a sealed box.

They run inside Ansible's own process, so the owner password goes from the no_log fact
straight into ciphertext (api/sealing.py) and never into a runner event or artifact in clear.
"""

import base64
import importlib.util
from pathlib import Path

_SEALING = Path(__file__).resolve().parents[2] / "sealing.py"
_spec = importlib.util.spec_from_file_location("shadowdb_api_sealing", _SEALING)
_sealing = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_sealing)

# Fields of tenant_cluster_credentials that are secrets; everything else is an endpoint.
SECRET_FIELDS = ("password", "readonly_password")


def shadowdb_api_endpoint(credentials) -> dict:
    """The non-secret part of tenant_cluster_credentials (host, address, port, dbname, users)."""
    return {k: v for k, v in sorted(dict(credentials).items()) if k not in SECRET_FIELDS}


def shadowdb_api_seal(credentials, public_key_b64) -> str:
    """The secret part of tenant_cluster_credentials, sealed for the job's public key (base64)."""
    secrets = {k: credentials.get(k) for k in SECRET_FIELDS}
    return _sealing.seal(base64.b64decode(public_key_b64), secrets)


def shadowdb_api_batch(credentials_by_tenant, done, jobs, registered=()) -> dict:
    """{tenant: {endpoint, sealed, proxy_port}} of the tenants of a batch that converged: each
    tenant's credentials sealed for its own job's public key ('' when the job has none), and its
    proxy port when the run registered it (``registered``: [{tenant, record}], else None)."""
    proxy_ports = {item["tenant"]: (item.get("record") or {}).get("proxy_port") for item in registered or []}
    out = {}
    for job in jobs:
        name = job["name"]
        credentials = (credentials_by_tenant or {}).get(name)
        if name in (done or []) and credentials:
            key = job.get("public_key") or ""
            out[name] = {
                "endpoint": shadowdb_api_endpoint(credentials),
                "sealed": shadowdb_api_seal(credentials, key) if key else "",
                "proxy_port": proxy_ports.get(name),
            }
    return out


class FilterModule:
    def filters(self):
        return {
            "shadowdb_api_batch": shadowdb_api_batch,
            "shadowdb_api_endpoint": shadowdb_api_endpoint,
            "shadowdb_api_seal": shadowdb_api_seal,
        }

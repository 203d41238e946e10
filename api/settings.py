"""API settings, from SHADOWDB_API_* environment variables (pydantic-settings)."""

import os
import sys
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SHADOWDB_API_", extra="forbid")

    database_url: str = Field(
        "", description="libpq connection string of the catalog database (postgresql://...)"
    )
    inventory: Path = Field(
        REPO / "inventories" / "lab", description="Ansible inventory the jobs run against"
    )
    host_group: str = Field("db", description="inventory group whose hosts receive tenants")
    repo: Path = Field(REPO, description="checkout holding playbooks/, roles/ and ansible.cfg")
    work_dir: Path = Field(
        Path("/var/tmp/shadowdb-api"), description="parent of the per-job ansible-runner directories"
    )
    keep_artifacts: bool = Field(
        False, description="keep each job's runner directory (debugging; never holds secrets in clear)"
    )
    max_workers: int = Field(
        4, ge=1, le=64, description="ansible-runner runs at once in one worker (never two on one host)"
    )
    batch_max: int = Field(
        10, ge=1, le=100, description="jobs of one host converged by one run of tenant.yml (1: no batches)"
    )
    batch_wait: float = Field(
        0.5,
        ge=0,
        le=10,
        description="seconds a host step waits before taking the waiting jobs along, so that"
        " requests sent together share one run (0: no wait)",
    )
    batch_wait_max: float = Field(
        5.0,
        ge=0,
        le=60,
        description="seconds a host step waits at most while more jobs for its host keep coming",
    )
    max_queued: int = Field(64, ge=1, description="unfinished jobs accepted before new ones get 429")
    max_attempts: int = Field(3, ge=1, description="runs of one job (first run + re-runs after a crash)")
    stalled_after: float = Field(
        30.0, ge=1, description="seconds without a heartbeat before a worker's runs are run again"
    )
    recovery_interval: int = Field(
        10, ge=1, le=59, description="seconds between two looks for the runs of stalled workers"
    )
    job_timeout: int = Field(1800, ge=10, description="seconds before a run is stopped")
    drift_interval: int = Field(
        300,
        ge=0,
        description="seconds between two drift checks of the catalog against the hosts"
        " (whole minutes above 60; 0: none)",
    )
    max_body_bytes: int = Field(64 * 1024, ge=1024, description="largest request body accepted")
    max_replicas: int = Field(0, ge=0, description="replicas a tenant may ask for (0 until HA is deployed)")
    sni_port: int | None = Field(
        None, description="port of the SNI router (HAProxy) when deployed; adds the SNI endpoint"
    )
    engine: bool = Field(True, description="run a worker in the API process (false: only queue jobs)")
    poll_interval: float = Field(
        1.0, gt=0, description="seconds between queue polls when idle (besides NOTIFY)"
    )
    pool_max: int = Field(16, ge=2, description="catalog connections for requests")


def ansible_env(repo: Path) -> dict[str, str]:
    """Environment of the Ansible tools the API runs on the checkout ``repo``: its ansible.cfg,
    this venv's bin/ first on PATH, and ``repo`` first on PYTHONPATH, so that its filter plugins
    import its own ``shadowdb`` package (also when the venv was installed from another checkout)."""
    bin_dir = os.path.dirname(os.path.abspath(sys.executable))
    pythonpath = [str(repo), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {
        "ANSIBLE_CONFIG": str(repo / "ansible.cfg"),
        # ansible-runner appends its own callback directory to this one (ansible.cfg's setting
        # would be overridden): the module payload cache (callback_plugins/shadowdb_module_cache.py).
        "ANSIBLE_CALLBACK_PLUGINS": str(repo / "callback_plugins"),
        "PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "PYTHONPATH": os.pathsep.join(pythonpath),
    }

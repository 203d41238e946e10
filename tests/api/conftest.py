"""Fixtures for the API tests: a real PostgreSQL catalog (api/devdb.py), the app, tokens, a server.

The catalog server is started once per test session from the machine's own PostgreSQL binaries
(Debian package ``postgresql``) and removed at the end; every test starts from empty tables.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.catalog import Catalog, migrate
from api.devdb import DevDB, DevDBError
from api.settings import Settings

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def devdb():
    try:
        db = DevDB.start()
    except DevDBError as exc:
        pytest.fail(f"cannot start the catalog database: {exc}")
    migrate(db.url)
    yield db
    db.stop()


def truncate(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "TRUNCATE job_events, jobs, tenants, api_tokens, drift_checks, procrastinate_jobs,"
            " procrastinate_workers, procrastinate_periodic_defers, procrastinate_events"
            " RESTART IDENTITY CASCADE"
        )


@pytest.fixture
def catalog(devdb):
    truncate(devdb.url)
    cat = Catalog(devdb.url, max_size=4)
    cat.open()
    yield cat
    cat.close()


def write_inventory(path: Path, hosts: list[str]) -> Path:
    """An inventory whose db hosts are podman containers that do not exist (runs fail fast)."""
    lines = [
        "all:",
        "  children:",
        "    db:",
        "      vars:",
        "        ansible_connection: containers.podman.podman",
    ]
    lines += ["      hosts:"] + [f"        {h}: {{}}" for h in hosts]
    path.mkdir(parents=True, exist_ok=True)
    (path / "hosts.yml").write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="session")
def fake_inventory(tmp_path_factory):
    return write_inventory(tmp_path_factory.mktemp("inventory"), ["sdb-api-nohost-a", "sdb-api-nohost-b"])


def make_settings(devdb, inventory: Path, work_dir: Path, **overrides) -> Settings:
    values = {
        "database_url": devdb.url,
        "inventory": inventory,
        "work_dir": work_dir,
        "engine": False,
        "max_queued": 20,
        "max_body_bytes": 16 * 1024,
        "poll_interval": 0.2,
    }
    return Settings(**(values | overrides))


@pytest.fixture(scope="module")
def app_client(devdb, fake_inventory, tmp_path_factory):
    """The app with its job engine off: jobs stay queued (no ansible run)."""
    settings = make_settings(devdb, fake_inventory, tmp_path_factory.mktemp("work"))
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture
def client(app_client, catalog):
    return app_client


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def admin(catalog):
    return bearer(catalog.create_token("test-admin", "admin")[1])


@pytest.fixture
def reader(catalog):
    return bearer(catalog.create_token("test-reader", "read")[1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``python -m api serve`` as a real process (its own log file); kill() is a crash."""

    def __init__(self, env: dict, log: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env, self.log = env, log
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Server":
        log = open(self.log, "ab")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "api", "serve", "--port", str(self.port), "--log-level", "info"],
            cwd=REPO,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"API exited ({self.proc.returncode}):\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"API not healthy in 60 s:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL the API process alone (its ansible-playbook loses its pty and gets SIGHUP)."""
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, 9)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()


def server_env(settings: dict) -> dict:
    env = dict(os.environ)
    env.update({f"SHADOWDB_API_{k.upper()}": str(v) for k, v in settings.items()})
    env["CONTAINERS_CONF"] = str(REPO / "lab" / "containers.conf")
    env["ANSIBLE_CONFIG"] = str(REPO / "ansible.cfg")
    env["PATH"] = f"{REPO / '.venv' / 'bin'}:{env['PATH']}"
    return env


class Worker:
    """``python -m api worker`` as a real process; kill() is SIGKILL (a crash)."""

    def __init__(self, env: dict, log: Path):
        self.env, self.log = env, log
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Worker":
        out = open(self.log, "ab")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "api", "worker", "--log-level", "info"],
            cwd=REPO,
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
        try:  # what the worker left behind (a killed worker's ansible-playbook, its sleep)
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

"""A throwaway PostgreSQL server for the catalog (tests, the demo), from the machine's own binaries.

Installs nothing: it looks for initdb/pg_ctl (PATH, then /usr/lib/postgresql/<newest>/bin) and
fails with a clear message when they are missing (Debian: apt-get install postgresql). PostgreSQL
refuses to run as root, so as root the server runs as an unprivileged user (``nobody`` unless
SHADOWDB_DEVDB_USER names another) in a private directory it owns. It listens on 127.0.0.1 on a
free port (and a unix socket in its directory), with scram-sha-256 and a generated password.

    db = DevDB.start()          # or: python -m api devdb start --dir /var/tmp/sdb-devdb
    db.url                      # postgresql://shadowdb:...@127.0.0.1:<port>/shadowdb
    db.stop()                   # stops the server and removes its directory
"""

import glob
import json
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

_STATE = "devdb.json"


class DevDBError(RuntimeError):
    pass


def find_bindir() -> Path:
    """Directory holding initdb and pg_ctl: PATH first, then the newest /usr/lib/postgresql/*/bin."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(os.path.realpath(found)).parent
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]), reverse=True
    )
    if candidates:
        return Path(candidates[0]).parent
    raise DevDBError(
        "PostgreSQL server binaries (initdb, pg_ctl) not found; on Debian: apt-get install -y postgresql "
        "(make setup does it)"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_as(user: str | None, argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    if user:
        argv = ["runuser", "-u", user, "--", *argv]
    proc = subprocess.run(argv, capture_output=True, text=True, **kwargs)
    if proc.returncode != 0:
        raise DevDBError(
            f"{' '.join(argv)} failed ({proc.returncode}): {(proc.stderr or proc.stdout).strip()[-800:]}"
        )
    return proc


@dataclass
class DevDB:
    directory: Path
    port: int
    password: str
    user: str | None
    bindir: Path
    dbname: str = "shadowdb"
    role: str = "shadowdb"

    @property
    def url(self) -> str:
        return f"postgresql://{self.role}:{quote(self.password, safe='')}@127.0.0.1:{self.port}/{self.dbname}"

    @property
    def data(self) -> Path:
        return self.directory / "data"

    @classmethod
    def start(cls, directory: Path | None = None, port: int | None = None) -> "DevDB":
        bindir = find_bindir()
        user = None
        if os.geteuid() == 0:
            user = os.environ.get("SHADOWDB_DEVDB_USER", "nobody")
            try:
                pw = pwd.getpwnam(user)
            except KeyError:
                raise DevDBError(
                    f"user {user!r} does not exist (PostgreSQL refuses to run as root)"
                ) from None
        if directory is None:
            directory = Path(tempfile.mkdtemp(prefix="shadowdb-devdb-"))
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        if user:
            os.chown(directory, pw.pw_uid, pw.pw_gid)
            if subprocess.run(["runuser", "-u", user, "--", "test", "-w", str(directory)]).returncode != 0:
                raise DevDBError(
                    f"{user} cannot write to {directory}: a parent directory is not searchable by others; "
                    "use a directory under /tmp or /var/tmp"
                )
        db = cls(directory, port or _free_port(), secrets.token_urlsafe(24), user, bindir)
        pwfile = directory / "pwfile"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(db.password + "\n")
        if user:
            os.chown(pwfile, pw.pw_uid, pw.pw_gid)
        try:
            _run_as(
                user,
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(db.data),
                    "-U",
                    db.role,
                    "--auth=scram-sha-256",
                    f"--pwfile={pwfile}",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-sync",
                ],
                cwd=directory,
            )
        finally:
            pwfile.unlink(missing_ok=True)
        db.run()
        try:
            db._create_database()
        except BaseException:
            db.stop(remove=False)
            raise
        state = directory / _STATE
        fd = os.open(state, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"port": db.port, "password": db.password, "user": user, "bindir": str(bindir)}, f)
        return db

    @classmethod
    def attach(cls, directory: Path) -> "DevDB":
        """The server started earlier in ``directory`` (python -m api devdb start --dir)."""
        state = json.loads((Path(directory) / _STATE).read_text())
        return cls(Path(directory), state["port"], state["password"], state["user"], Path(state["bindir"]))

    def run(self) -> None:
        """Start the server of an initialised directory (again, e.g. after a reboot)."""
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.directory} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        log = str(self.directory / "server.log")
        _run_as(
            self.user,
            [
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                log,
                "-o",
                options,
                "-w",
                "-t",
                "60",
                "start",
            ],
            cwd=self.directory,
        )

    def _create_database(self) -> None:
        import psycopg

        admin_url = self.url.rsplit("/", 1)[0] + "/postgres"
        with psycopg.connect(admin_url, autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.dbname,)).fetchone():
                conn.execute(f'CREATE DATABASE "{self.dbname}"')

    def running(self) -> bool:
        """pg_ctl status: a stale postmaster.pid (after a reboot) is not a running server."""
        if not (self.data / "postmaster.pid").exists():
            return False
        argv = [str(self.bindir / "pg_ctl"), "-D", str(self.data), "status"]
        if self.user:
            argv = ["runuser", "-u", self.user, "--", *argv]
        return subprocess.run(argv, capture_output=True, cwd=self.directory).returncode == 0

    def stop(self, remove: bool = True) -> None:
        if self.running():
            try:
                _run_as(
                    self.user,
                    [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"],
                    cwd=self.directory,
                )
            except DevDBError:
                if self.running():
                    raise
        if remove:
            shutil.rmtree(self.directory, ignore_errors=True)

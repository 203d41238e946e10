"""Isolation: a SUPERUSER tenant still cannot reach anything on its host that is not its own.

A tenant onboarded with ``superuser: true`` (itsu, on db1 beside the session tenants ita and itb)
runs programs and reads files as its server's OS user. What stops it is the operating system: one
OS user per tenant, a private (0700) volume each, root-only secrets, and the unit's sandbox
(ProtectSystem=strict, PrivateTmp, PrivateDevices, ProtectProc=invisible, InaccessiblePaths,
no capabilities, a system-call filter). Every attack below is asserted refused, and each comes
with a control that shows the same method works on the tenant's own resources - so a refusal
means isolation, not a broken method.
"""

from __future__ import annotations

import re

import psycopg
import pytest
from psycopg import sql

SU = "itsu"
OTHER = "itb"
SU_SPEC = {"name": SU, "tier": "small", "superuser": True}
OWN_FILE = f"/mnt/db/{SU}/data/PG_VERSION"
OTHER_FILES = [
    f"/mnt/db/{OTHER}/data/PG_VERSION",
    f"/mnt/db/{OTHER}/data/postgresql.conf",
    f"/mnt/db/{OTHER}/tls/server.key",
]
# Deployment files (secrets, volume settings, port leases, etcd/Patroni/HAProxy/pgBackRest
# configuration and keys) found on the host by root: all of them are out of a tenant's reach.
DEPLOYMENT_DIRS = "/etc/shadowdb /var/lib/shadowdb /etc/etcd /etc/patroni /etc/haproxy /etc/pgbackrest"
SECURITY_THRESHOLD = 5.0  # systemd-analyze security: below 5.0 is rated "OK" or better


# --- helpers ---------------------------------------------------------------------------------
def run_program(conn: psycopg.Connection, command: str) -> tuple[int, str]:
    """Run a shell command as the tenant's server (COPY FROM PROGRAM): (exit code, stdout+stderr).

    Read as CSV with control characters as delimiter and quote: every line is one value, tabs
    and backslashes included."""
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS it_os_out (n serial, line text)")
    conn.execute("TRUNCATE it_os_out")
    program = f'({command}) 2>&1; rc=$?; echo; echo "exit=$rc"'
    conn.execute(
        sql.SQL(
            "COPY it_os_out (line) FROM PROGRAM {} WITH (FORMAT csv, DELIMITER E'\\x01', QUOTE E'\\x02')"
        ).format(sql.Literal(program))
    )
    lines = [row[0] or "" for row in conn.execute("SELECT line FROM it_os_out ORDER BY n").fetchall()]
    code = int(lines[-1].removeprefix("exit="))
    return code, "\n".join(lines[:-1]).strip("\n")


def refused(conn: psycopg.Connection, query: sql.Composable | str) -> str:
    """Run a statement that must fail; return the error (the connection stays usable)."""
    try:
        conn.execute(query)
    except psycopg.Error as exc:
        return str(exc)
    raise AssertionError(
        f"not refused: {query.as_string(conn) if isinstance(query, sql.Composable) else query}"
    )


def lit(value: str) -> sql.Literal:
    return sql.Literal(value)


# --- fixtures --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def su(lab, db1):
    """itsu: onboarded with superuser: true beside ita and itb; removed at the end of the module."""
    run = lab.onboard(db1, SU_SPEC)
    try:
        assert run.rc == 0, f"onboarding the superuser tenant failed: {run.describe()}"
        lab.wait_serving(db1, SU, timeout=60)
        yield SU
    finally:
        removed = lab.remove(db1, SU, confirm=SU)
        assert removed.rc == 0, f"removing {SU} failed: {removed.describe()}"


@pytest.fixture
def conn(lab, db1, su):
    with lab.connect(db1, su, autocommit=True) as connection:
        yield connection


@pytest.fixture(scope="module")
def secrets(lab, db1, su) -> list[str]:
    """Every deployment file on db1 (root's view), the other tenants' files and /etc/shadow."""
    found = lab.sh(db1, f"find {DEPLOYMENT_DIRS} -type f 2>/dev/null; true").split()
    assert f"/etc/shadowdb/tenants/{OTHER}/owner.env" in found, found  # the list is not blind
    assert f"/etc/shadowdb/tenants/{SU}/owner.env" in found, found
    return sorted(found) + OTHER_FILES + ["/etc/shadow"]


# --- the flag --------------------------------------------------------------------------------
def test_superuser_spec_makes_the_owner_a_superuser(conn):
    assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone() == (True,)
    # The server runs as the tenant's own OS user (not postgres, not root).
    code, out = run_program(conn, "id -un; id -u")
    assert code == 0 and out.splitlines()[0] == f"pg-{SU}", out
    assert out.splitlines()[1] != "0"


# --- reading ---------------------------------------------------------------------------------
def test_cannot_read_other_tenants_files_or_any_secret(conn, secrets):
    # Controls: every method reads the tenant's own file.
    assert (
        conn.execute(sql.SQL("SELECT pg_read_file({})").format(lit(OWN_FILE))).fetchone()[0].strip() == "17"
    )
    assert conn.execute(sql.SQL("SELECT (pg_stat_file({})).size").format(lit(OWN_FILE))).fetchone()[0] > 0
    oid = conn.execute(sql.SQL("SELECT lo_import({})").format(lit(OWN_FILE))).fetchone()[0]
    conn.execute("SELECT lo_unlink(%s)", (oid,))
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS it_read (line text)")
    conn.execute(sql.SQL("COPY it_read FROM {}").format(lit(OWN_FILE)))
    assert run_program(conn, f"cat {OWN_FILE}") == (0, "17")
    own_dir = sql.SQL("SELECT count(*) > 0 FROM pg_ls_dir({})").format(lit(f"/mnt/db/{SU}/data"))
    assert conn.execute(own_dir).fetchone()[0]

    leaks = []
    for path in secrets:
        for method, query in (
            ("pg_read_file", sql.SQL("SELECT pg_read_file({})").format(lit(path))),
            ("pg_read_binary_file", sql.SQL("SELECT pg_read_binary_file({})").format(lit(path))),
            ("lo_import", sql.SQL("SELECT lo_import({})").format(lit(path))),
            ("COPY FROM", sql.SQL("COPY it_read FROM {}").format(lit(path))),
        ):
            try:
                conn.execute(query)
            except psycopg.Error:
                continue
            leaks.append(f"{method} {path}")
        code, out = run_program(conn, f"cat '{path}' > /dev/null")
        if code == 0:
            leaks.append(f"COPY FROM PROGRAM cat {path}")
        # Not even its size and times, where it lies in another user's or root's private tree
        # (/etc/shadow's directory is public: stat() of it is allowed everywhere on Linux).
        if path != "/etc/shadow":
            try:
                conn.execute(sql.SQL("SELECT pg_stat_file({})").format(lit(path)))
                leaks.append(f"pg_stat_file {path}")
            except psycopg.Error:
                pass
    assert not leaks, f"the superuser tenant read: {leaks}"

    for directory in (
        f"/mnt/db/{OTHER}",
        f"/mnt/db/{OTHER}/data",
        "/etc/shadowdb/tenants",
        "/var/lib/shadowdb",
    ):
        error = refused(conn, sql.SQL("SELECT pg_ls_dir({})").format(lit(directory)))
        assert "ermission denied" in error or "No such file" in error, error


# --- writing ---------------------------------------------------------------------------------
def test_cannot_write_outside_its_own_volume(lab, db1, conn):
    name = "it_intruder"
    # Control: the tenant writes into its own volume, by every method.
    conn.execute(sql.SQL("COPY (SELECT 'x') TO {}").format(lit(f"/mnt/db/{SU}/data/{name}")))
    assert run_program(conn, f"echo x > /mnt/db/{SU}/data/{name}.sh")[0] == 0
    assert lab.exists(db1, f"/mnt/db/{SU}/data/{name}") and lab.exists(db1, f"/mnt/db/{SU}/data/{name}.sh")

    targets = [
        "/",
        "/etc",
        "/etc/systemd/system",
        "/etc/shadowdb",
        "/etc/shadowdb/tenants",
        "/var/lib/shadowdb",
        "/usr/local/libexec/shadowdb",
        "/mnt/db",
        f"/mnt/db/{OTHER}",
        f"/mnt/db/{OTHER}/data",
        "/root",
    ]
    written = []
    for directory in targets:
        path = f"{directory.rstrip('/')}/{name}"
        try:
            conn.execute(sql.SQL("COPY (SELECT 'x') TO {}").format(lit(path)))
            written.append(f"COPY TO {path}")
        except psycopg.Error:
            pass
        code, _ = run_program(conn, f"echo x > '{path}'")
        if code == 0:
            written.append(f"COPY FROM PROGRAM echo > {path}")
    # Overwriting root's volume helper (run by root at every boot) would be root's code.
    code, _ = run_program(conn, "echo 'id > /tmp/pwned' >> /usr/local/libexec/shadowdb/shadowdb-volume")
    if code == 0:
        written.append("append to /usr/local/libexec/shadowdb/shadowdb-volume")
    assert not written, f"the superuser tenant wrote: {written}"
    for directory in targets:
        path = f"{directory.rstrip('/')}/{name}"
        assert not lab.exists(db1, path), f"{path} exists on the host"

    # /tmp and /var/tmp are the tenant's own (PrivateTmp): nothing reaches the host's.
    for tmp in ("/tmp", "/var/tmp"):
        assert run_program(conn, f"echo x > {tmp}/{name}")[0] == 0
        assert not lab.exists(db1, f"{tmp}/{name}")
    assert "pwned" not in lab.sh(db1, "cat /usr/local/libexec/shadowdb/shadowdb-volume")
    run_program(
        conn, f"rm -f /mnt/db/{SU}/data/{name} /mnt/db/{SU}/data/{name}.sh /tmp/{name} /var/tmp/{name}"
    )


# --- signals ---------------------------------------------------------------------------------
def test_cannot_signal_another_tenants_server(lab, db1, conn):
    other_pid = lab.postmaster_pid(db1, OTHER)
    own_pid = lab.postmaster_pid(db1, SU)
    assert other_pid > 0 and own_pid > 0
    # Control: the tenant signals its own postmaster (signal 0: the permission check only).
    assert run_program(conn, f"kill -0 {own_pid}")[0] == 0
    for pid in (other_pid, 1):
        code, out = run_program(conn, f"kill -0 {pid}")
        assert code != 0, f"kill -0 {pid}: {out}"
        code, out = run_program(conn, f"kill -TERM {pid}")
        assert code != 0, f"kill -TERM {pid}: {out}"
    # pg_terminate_backend and pg_cancel_backend only know the tenant's own cluster.
    assert conn.execute("SELECT pg_terminate_backend(%s)", (other_pid,)).fetchone() == (False,)
    assert lab.postmaster_pid(db1, OTHER) == other_pid
    lab.wait_serving(db1, OTHER, timeout=10)


# --- processes ---------------------------------------------------------------------------------
def test_cannot_list_or_inspect_other_processes(lab, db1, conn):
    other_pid = lab.postmaster_pid(db1, OTHER)
    own_pid = lab.postmaster_pid(db1, SU)
    code, listing = run_program(conn, "ps -eo user:32,pid,args")
    assert code == 0, listing
    owners = {line.split()[0] for line in listing.splitlines()[1:] if line.strip()}
    assert owners == {f"pg-{SU}"}, f"the tenant sees other users' processes:\n{listing}"
    # Control: its own postmaster's command line is readable.
    code, out = run_program(conn, f"tr '\\0' ' ' < /proc/{own_pid}/cmdline")
    assert code == 0 and "postgres" in out, out
    for path in (
        f"/proc/{other_pid}/cmdline",
        f"/proc/{other_pid}/environ",
        "/proc/1/environ",
        "/proc/1/cmdline",
    ):
        code, out = run_program(conn, f"cat {path}")
        assert code != 0, f"{path} is readable: {out}"
    # ProcSubset=pid: no kernel-wide files (/proc/kallsyms, /proc/sys) in the tenant's /proc.
    for path in ("/proc/kallsyms", "/proc/sys/kernel/hostname", "/proc/sysrq-trigger"):
        code, _ = run_program(conn, f"test -e {path}")
        assert code != 0, f"{path} is visible"


# --- devices, namespaces, privileges -------------------------------------------------------------
def test_no_devices_no_namespaces_no_privileges(lab, db1, conn):
    loops = lab.sh(db1, "ls /dev | grep '^loop' | head -n 3; true").split()
    assert loops, "no loop devices on the host: the device check is blind"
    assert run_program(conn, "head -c 1 /dev/zero > /dev/null")[0] == 0  # control: API devices work
    for device in loops:
        code, _ = run_program(conn, f"test -e /dev/{device}")
        assert code != 0, f"/dev/{device} is visible to the tenant (PrivateDevices)"
    code, out = run_program(conn, "unshare --user --map-root-user id -u")
    assert code != 0, f"the tenant made a user namespace: {out}"
    code, out = run_program(conn, "grep -E '^Cap(Prm|Eff|Bnd|Amb):' /proc/self/status")
    assert code == 0, out
    caps = dict(line.split(":\t") for line in out.splitlines())
    assert set(caps.values()) == {"0000000000000000"}, f"the tenant's server keeps capabilities: {caps}"
    code, out = run_program(conn, "grep -E '^NoNewPrivs:' /proc/self/status")
    assert out.split()[-1] == "1", out


# --- other tenants' sockets ----------------------------------------------------------------------
def test_cannot_reach_another_tenants_unix_socket(lab, db1, conn):
    ports = lab.leases(db1)
    pg_isready = "/usr/lib/postgresql/17/bin/pg_isready"
    # Control: the tenant reaches its own server's socket.
    code, out = run_program(conn, f"{pg_isready} -h /mnt/db/{SU}/run -p {ports[SU]}")
    assert code == 0, out
    code, out = run_program(conn, f"{pg_isready} -h /mnt/db/{OTHER}/run -p {ports[OTHER]}")
    assert code != 0, f"the tenant reached {OTHER}'s socket: {out}"
    code, out = run_program(conn, f"ls /mnt/db/{OTHER}/run")
    assert code != 0 and "No such file" in out, out  # not even there in the tenant's sandbox


# --- the names of the other tenants -------------------------------------------------------------
def names(tenant: str, text: str) -> bool:
    """Whether text names the tenant (as a word: "pg-itb", "@itb.service", "/mnt/db/itb")."""
    return re.search(rf"(?<![A-Za-z0-9_]){tenant}(?![A-Za-z0-9_])", text) is not None


# Where a host lists its tenants. "host": root outside any sandbox sees OTHER there (the control);
# "own": the tenant sees itself there (the place is private to each tenant, even on the host).
TENANT_LISTS = {
    "users and groups": ("getent passwd; getent group", "host"),
    "the mount root": ("ls -a /mnt/db", "host"),
    "the mount table": ("cat /proc/self/mountinfo", "host"),
    "unit files and unit state": (
        "ls -R /etc/systemd/system /run/systemd/units /run/systemd/propagate",
        "host",
    ),
    "systemd over D-Bus": ("systemctl list-units --all --no-legend --plain 'shadowdb-*'", "host"),
    "the cgroup tree": ("find /sys/fs/cgroup -maxdepth 8 -name 'shadowdb-postgres@*'", "host"),
    "POSIX shared memory": ("ls -la /dev/shm", "own"),
    "System V IPC": ("ipcs -a", "own"),
}


@pytest.mark.parametrize("place", sorted(TENANT_LISTS))
def test_no_list_of_the_hosts_tenants_in_the_sandbox(lab, db1, conn, place):
    """The product's first promise: a tenant cannot see which other tenants share its host."""
    command, control = TENANT_LISTS[place]
    if control == "host":
        assert names(OTHER, lab.sh(db1, f"{command} 2>&1; true")), (
            f"the host does not show {OTHER} in {place}"
        )
    _, out = run_program(conn, command)
    if control == "own":
        assert names(f"pg-{SU}", out), f"the tenant does not see itself in {place}: {out[:300]}"
    assert not names(OTHER, out), f"{place} names {OTHER} to the tenant: {out[:600]}"


def test_no_file_or_directory_names_another_tenant(conn):
    """A search of everything the tenant can read (names under /, contents of /etc and /run)."""
    prune = " -o ".join(
        f"-path {p}" for p in ("/proc", "/sys", "/usr", "/var/lib/dpkg", "/var/lib/apt", "/var/cache")
    )
    _, out = run_program(conn, f"find / \\( {prune} \\) -prune -o -name '*{OTHER}*' -print 2>/dev/null; true")
    assert not [line for line in out.splitlines() if names(OTHER, line.rsplit("/", 1)[-1])], out
    pattern = f"(pg-|@|/){OTHER}([^A-Za-z0-9_]|$)"
    _, out = run_program(conn, f"grep -rlsE '{pattern}' /etc /run; true")
    assert out == "", f"files naming {OTHER}: {out}"


def test_no_world_writable_place_is_shared_with_the_host(lab, db1, conn):
    """The host's world-writable directories are not the tenant's (a channel to other tenants, a
    tmpfs of the host's to fill): /run/lock is an empty read-only one in its sandbox, /tmp,
    /var/tmp and /dev/shm private ones."""
    # The control: outside its sandbox the tenant's user can write in the host's /run/lock.
    lab.sh(db1, f"runuser -u pg-{SU} -- touch /run/lock/it-control && rm /run/lock/it-control")
    for place in ("/run/lock", "/tmp", "/var/tmp", "/dev/shm"):
        run_program(conn, f"touch {place}/it-shared; true")
        assert not lab.exists(db1, f"{place}/it-shared"), f"the tenant wrote in the host's {place}"


def test_shared_memory_is_private_and_sized_by_the_tier(lab, db1, conn):
    """A tenant that fills its /dev/shm fills its own (the tier's size), never the host's or a
    neighbour's: the neighbour's parallel query still gets its dynamic shared memory."""
    _, out = run_program(conn, "df -k --output=size /dev/shm | tail -1")
    assert int(out) == 128 * 1024, f"/dev/shm of a small tenant: {out} KiB"  # small: 512M / 4
    try:
        # Bounded: dd stops at the tmpfs's size, or after 16 MiB more than it.
        code, out = run_program(conn, "dd if=/dev/zero of=/dev/shm/it-fill bs=1M count=144")
        assert code != 0 and "No space left" in out, out
        assert "it-fill" not in lab.sh(db1, "ls -a /dev/shm"), "the tenant's /dev/shm is the host's"
        with lab.connect(db1, OTHER, autocommit=True) as neighbour:
            neighbour.execute(
                "CREATE TABLE IF NOT EXISTS it_parallel AS SELECT g FROM generate_series(1, 200000) g"
            )
            for setting in ("parallel_setup_cost", "parallel_tuple_cost", "min_parallel_table_scan_size"):
                neighbour.execute(f"SET {setting} = 0")
            neighbour.execute("SET max_parallel_workers_per_gather = 2")
            plan = "\n".join(
                row[0]
                for row in neighbour.execute("EXPLAIN (ANALYZE, COSTS OFF) SELECT count(*) FROM it_parallel")
            )
            neighbour.execute("DROP TABLE it_parallel")
        launched = re.search(r"Workers Launched: (\d+)", plan)
        assert launched and int(launched.group(1)) > 0, plan
    finally:
        run_program(conn, "rm -f /dev/shm/it-fill")


# --- admin endpoints ---------------------------------------------------------------------------
_PROBE = r"""
import socket, ssl, sys
host, port = sys.argv[1], int(sys.argv[2])
def get(wrap):
    try:
        s = socket.create_connection((host, port), timeout=3)
        if wrap:
            ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
            s = ctx.wrap_socket(s)
        s.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n"); s.settimeout(3)
        data = s.recv(4096); s.close(); return data
    except Exception as exc:
        return repr(exc).encode()
print((get(False) + b"|" + get(True)).decode(errors="replace").replace("\n", " ")[:400])
"""
_ADMIN_MARKERS = ("Statistics Report", "etcdserver", "etcdcluster", '"patroni"', "# HELP", "# TYPE")


def test_cannot_use_the_hosts_admin_endpoints(lab, db1, conn):
    ports = set(lab.leases(db1).values())
    listeners = set()
    wildcard = {"*", "[::]", "0." * 3 + "0"}  # any address: probe it on loopback
    for line in lab.sh(db1, "ss -Hltn").splitlines():
        address, _, port = line.split()[3].rpartition(":")
        if int(port) not in ports:
            listeners.add(("127.0.0.1" if address in wildcard else address.strip("[]"), int(port)))
    exposed = []
    for address, port in sorted(listeners):
        code, out = run_program(conn, f"python3 -c '{_PROBE}' {address} {port}")
        if any(marker in out for marker in _ADMIN_MARKERS) or re.search(r"HTTP/1\.[01] 200", out):
            exposed.append(f"{address}:{port}: {out[:120]}")
    assert not exposed, f"admin endpoints answer the superuser tenant: {exposed}"


# --- the tenant egress firewall (module_utils/shadowdb_firewall.py) -------------------------------
def tls_subject_command(address: str, port: int) -> str:
    """Open TLS on a PostgreSQL port and print the server certificate's subject (what PostgreSQL
    shows anyone before any authentication: CN=<tenant>.<domain>)."""
    return (
        f"timeout 10 openssl s_client -starttls postgres -connect {address}:{port} </dev/null 2>&1"
        " | grep -E '^(subject|depth)|connect:|errno|refused' | head -5"
    )


@pytest.mark.parametrize("where", ["loopback", "host address", "another host"])
def test_cannot_open_a_connection_to_a_neighbours_port(lab, db1, db2, conn, where):
    """The certificate a PostgreSQL server shows to anyone opening TLS names its tenant; a tenant
    could scan its host's ports (or any host's) and read its neighbours' names, or try their
    passwords. Its processes open no connection at all: the host's egress firewall rejects them,
    while root on the same host (the control) reads the certificate."""
    host = db2 if where == "another host" else db1
    neighbour = "itc" if where == "another host" else OTHER
    address = "127.0.0.1" if where == "loopback" else lab.ip(host)
    port = lab.leases(host)[neighbour]
    control = lab.sh(db1, tls_subject_command(address, port), check=False)
    assert names(neighbour, control), f"root does not read {neighbour}'s certificate: {control}"
    _, out = run_program(conn, tls_subject_command(address, port))
    assert not names(neighbour, out), f"the tenant read {neighbour}'s certificate: {out}"
    assert "refused" in out or "errno=111" in out, out
    # Not the TLS tool: no TCP connection at all, to the neighbour nor to the tenant's own port.
    for target in (port, lab.leases(db1)[SU]):
        code, out = run_program(conn, f"timeout 5 bash -c 'echo > /dev/tcp/{address}/{target}'")
        assert code != 0 and "refused" in out.lower(), f"{address}:{target}: {out}"
    firewall = lab.sh(db1, "nft list table inet shadowdb_tenant_egress")
    uid = lab.sh(db1, f"id -u pg-{SU}").strip()
    assert re.search(rf"elements = {{[^}}]*\b{uid}\b", firewall), firewall


# --- the sandbox, rated -------------------------------------------------------------------------
def test_unit_sandbox_exposure_score(lab, db1, su):
    out = lab.sh(db1, f"systemd-analyze security --no-pager shadowdb-postgres@{su}.service")
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+) (\S+)", out)
    assert match, out[-2000:]
    score = float(match.group(1))
    print(f"\nsystemd-analyze security shadowdb-postgres@{su}.service: {score} {match.group(2)}")
    assert score < SECURITY_THRESHOLD, out[-3000:]


# --- the flag converges both ways (last: it turns the tenant's superuser off) --------------------
def test_superuser_flag_converges_both_ways(lab, db1, su):
    run = lab.onboard(db1, {**SU_SPEC, "superuser": False})
    assert run.rc == 0, run.describe()
    assert lab.psql_root(db1, su, "SELECT rolsuper FROM pg_roles WHERE rolname = 'itsu'") == "f"
    run = lab.onboard(db1, SU_SPEC)
    assert run.rc == 0, run.describe()
    assert lab.psql_root(db1, su, "SELECT rolsuper FROM pg_roles WHERE rolname = 'itsu'") == "t"
    again = lab.onboard(db1, SU_SPEC)
    assert again.rc == 0 and again.recap()[db1]["changed"] == 0, again.changed_tasks()


# --- root never follows a path the tenant controls --------------------------------------------
def test_a_link_planted_for_root_is_refused_not_followed(lab, db1, conn, su):
    """The tenant swaps its server certificate (in its own tls directory, which it owns) for a
    link to a root-only file, then waits for the next converge, which runs as root: the converge
    refuses the link, naming it, and the file it pointed at is neither read nor written."""
    cert = f"/mnt/db/{su}/tls/server.crt"
    shadow_before = lab.sh(db1, "sha256sum /etc/shadow; stat -c '%a %U' /etc/shadow")
    saved = lab.sh(db1, f"cat {cert}")
    code, out = run_program(conn, f"ln -sf /etc/shadow {cert}.new && mv -f {cert}.new {cert}")
    assert code == 0, out  # the tenant may replace its own file by a link
    try:
        run = lab.onboard(db1, SU_SPEC)
        assert run.rc != 0, run.describe()
        assert "server.crt" in run.text and "link" in run.text, run.describe()
        assert lab.sh(db1, "sha256sum /etc/shadow; stat -c '%a %U' /etc/shadow") == shadow_before
    finally:
        lab.sh(db1, f"rm -f {cert} && printf '%s' '{saved}' > {cert} && chown pg-{su}: {cert}")
    again = lab.onboard(db1, SU_SPEC)
    assert again.rc == 0, again.describe()

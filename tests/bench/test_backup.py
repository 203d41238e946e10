"""Backups against a raw copy, and the RPO of a lost host (issue 15's benchmarks).

Two lab hosts: db1 holds a large-tier tenant filled with pgbench (about 1 GiB,
SHADOWDB_BENCH_SCALE), db2 is the backup repository. Figures, printed as ratios of the same run:
- a full backup (pgBackRest, from the repository host, over TLS, lz4, encrypted) against a raw
  copy of the tenant's data directory on its own host (cp -a, after a first copy warmed the cache);
- a restore into an empty directory of the tenant's volume (as the tenant's user, from the
  repository) against the same raw copy; and tenant_restore.yml in place (delta) to the latest;
- the RPO: a writer commits a timestamped row about 10 times a second, then every process of the
  tenant is killed at once (as a lost host stops them, its archiver included); what the
  repository has is restored beside it, started, and compared with the last acknowledged commit.
Targets: backup <= 1.5x, restore <= 2x the raw copy; RPO within the tier's archive_timeout.
SHADOWDB_BENCH_PROCESS_MAX sets the repository's process-max (default: the role's, 1).
Run with `make bench` (or pytest tests/bench/test_backup.py -s).
"""

import json
import os
import threading
import time

import pytest

from tests.labkit import Lab

pytestmark = pytest.mark.bench

SCALE = int(os.environ.get("SHADOWDB_BENCH_SCALE", "65"))  # pgbench scale 65: about 1 GiB
RPO_SECONDS = int(os.environ.get("SHADOWDB_BENCH_RPO_SECONDS", "90"))
PROCESS_MAX = int(os.environ.get("SHADOWDB_BENCH_PROCESS_MAX", "0"))
TENANT = "bench"
HOME = f"/mnt/db/{TENANT}"
PG_BIN = "/usr/lib/postgresql/17/bin"
REPO_PGBACKREST = (
    "runuser -u pgbackrest -- pgbackrest --config=/etc/pgbackrest/pgbackrest.conf "
    f"--config-include-path=/etc/pgbackrest/conf.d --stanza={TENANT} --log-level-console=warn"
)
TENANT_PGBACKREST = (
    f"pgbackrest --config={HOME}/backup/pgbackrest.conf --config-include-path={HOME}/backup/conf.d "
    f"--stanza={TENANT} --log-level-console=warn"
)
UNITS = f"shadowdb-postgres@{TENANT}.service shadowdb-backup-agent@{TENANT}.service"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = Lab(
        "bbak",
        hosts=2,
        inventory_dir=tmp_path_factory.mktemp("bench-backup"),
        backup_host=1,
        backup_default=True,
    )
    lab.up()
    if PROCESS_MAX:  # processes a backup or restore uses (the repository's default is 1)
        lab.write_host_vars(lab.hosts[1], {"backup_repository_process_max": PROCESS_MAX})
    lab.playbook("backup_repository.yml")
    spec = {"tenant_host": lab.hosts[0], "tenant": {"name": TENANT, "tier": "large"}}
    lab.playbook("tenant.yml", "-e", json.dumps(spec))
    yield lab
    lab.down()


def timed(fn) -> float:
    start = time.monotonic()
    fn()
    return time.monotonic() - start


def as_tenant(lab: Lab, script: str) -> str:
    """A shell script run as the tenant's OS user on db1 (the script has no single quote)."""
    return lab.sh(lab.hosts[0], f"runuser -u pg-{TENANT} -- sh -ec '{script}'")


def psql(lab: Lab, port: int, sql: str) -> str:
    return as_tenant(lab, f'{PG_BIN}/psql -X -At -h {HOME}/run -p {port} -U postgres -d {TENANT} -c "{sql}"')


def tenant_port(lab: Lab) -> int:
    return json.loads(lab.sh(lab.hosts[0], "cat /var/lib/shadowdb/ports/postgres.json"))["leases"][TENANT]


def test_backup_and_restore_against_a_raw_copy(lab):
    db1, db2 = lab.hosts
    port = tenant_port(lab)
    init = f"{PG_BIN}/pgbench -h {HOME}/run -p {port} -U postgres -i -q -s {SCALE} {TENANT} >/dev/null 2>&1"
    load = timed(lambda: as_tenant(lab, init))
    psql(lab, port, "CHECKPOINT")
    size = int(as_tenant(lab, f"du -sb {HOME}/data | cut -f1"))
    print(f"\n[bench] backups: tenant {TENANT} (large tier) on {db1}, repository on {db2}")
    print(f"[bench]   data directory {size / 2**30:.2f} GiB (pgbench scale {SCALE}, loaded in {load:.0f} s)")

    copy = f"rm -rf {HOME}/rawcopy; cp -a {HOME}/data {HOME}/rawcopy"
    timed(lambda: as_tenant(lab, copy))  # warms the page cache for the copy and the backup alike
    raw = timed(lambda: as_tenant(lab, copy))
    as_tenant(lab, f"rm -rf {HOME}/rawcopy")

    backup = timed(lambda: lab.sh(db2, f"{REPO_PGBACKREST} --type=full backup"))
    last = json.loads(lab.sh(db2, f"{REPO_PGBACKREST} --output=json info"))[0]["backup"][-1]
    stored = last["info"]["repository"]["delta"]

    target = f"{HOME}/restored"
    restore = timed(
        lambda: as_tenant(
            lab, f"rm -rf {target}; mkdir -m 700 {target}; {TENANT_PGBACKREST} --pg1-path={target} restore"
        )
    )
    as_tenant(lab, f"rm -rf {target}")
    request = {"tenant_host": db1, "tenant": TENANT, "confirm": TENANT, "target": {"latest": True}}
    in_place = timed(lambda: lab.playbook("tenant_restore.yml", "-e", json.dumps(request)))

    print(f"[bench]   raw copy (cp -a, same volume, warm cache) : {raw:6.1f} s")
    print(
        f"[bench]   full backup (to {db2}, lz4, encrypted)  : {backup:6.1f} s = {backup / raw:4.2f}x raw "
        f"(target <= 1.5x); stored {stored / 2**20:.0f} MiB of {size / 2**20:.0f} MiB"
    )
    print(
        f"[bench]   restore into an empty directory          : {restore:6.1f} s = {restore / raw:4.2f}x raw "
        "(target <= 2x)"
    )
    print(
        f"[bench]   tenant_restore.yml in place, to latest   : {in_place:6.1f} s (stop, delta, replay, start)"
    )


def test_rpo_when_the_tenants_processes_are_lost(lab):
    db1 = lab.hosts[0]
    port = tenant_port(lab)
    psql(lab, port, "CREATE TABLE IF NOT EXISTS rpo (id bigserial, at timestamptz DEFAULT clock_timestamp())")
    # The table itself in the repository before the writes start (pgbackrest check switches the
    # WAL and waits until it is archived): what is measured is the loss of the writes only. Without
    # it, a kill before the first WAL switch left a restore without the table at all.
    as_tenant(lab, f"{TENANT_PGBACKREST} check")
    acknowledged: list[float] = []
    stop = threading.Event()

    def writer():
        while not stop.is_set():
            try:
                row = psql(lab, port, "INSERT INTO rpo DEFAULT VALUES RETURNING extract(epoch FROM at)")
                acknowledged.append(float(row.split()[0]))  # the value, then psql's "INSERT 0 1"
            except Exception:  # noqa: BLE001 - the kill ends the writer's last statement
                return
            stop.wait(0.05)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    time.sleep(RPO_SECONDS)
    lab.sh(db1, f"systemctl kill -s KILL {UNITS}")
    stop.set()
    thread.join(timeout=30)
    lab.sh(db1, f"systemctl stop {UNITS}")
    last_ack = max(acknowledged)

    # What the repository has, restored beside the lost cluster and started on another port.
    target = f"{HOME}/rpo"
    as_tenant(lab, f"rm -rf {target}; mkdir -m 700 {target}; {TENANT_PGBACKREST} --pg1-path={target} restore")
    options = f"-c port=5999 -c listen_addresses= -c unix_socket_directories={HOME}/run -c archive_mode=off"
    as_tenant(lab, f'{PG_BIN}/pg_ctl -D {target} -w -t 300 -l {target}.log -o "{options}" start >/dev/null')
    try:
        recovered = float(psql(lab, 5999, "SELECT coalesce(extract(epoch FROM max(at)), 0) FROM rpo"))
    finally:
        as_tenant(
            lab, f"{PG_BIN}/pg_ctl -D {target} -m immediate stop >/dev/null; rm -rf {target} {target}.log"
        )
        lab.sh(db1, f"systemctl start {UNITS}")
    lost = sum(1 for at in acknowledged if at > recovered)
    print(
        f"\n[bench] RPO: {len(acknowledged)} commits in {RPO_SECONDS} s, "
        "then every process of the tenant killed"
    )
    print(
        f"[bench]   last acknowledged commit - last in the repository: {last_ack - recovered:5.1f} s, "
        f"{lost} commits lost (target: within the large tier's archive_timeout, 60 s)"
    )

"""Backups with pgBackRest: a tenant restored to a point in time, bad targets refused before
anything changes, one tenant's identity kept out of another's backups, removal keeping (or
purging) the backups.

The lab's db2 is the repository host (the backup group); the session tenants have no backups
(shadowdb_backup_default false), the tenants here ask for them in their spec: bka on db1, bkb on
db2 (a tenant on the repository host itself).
"""

import json
import re
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

BKA, BKB, BKC = "bka", "bkb", "bkc"
REPO_PATH = "/var/lib/pgbackrest"
REMOVED = "/var/lib/shadowdb/backup-removed"
REPO = Path(__file__).resolve().parents[2]


def pgbackrest_as_tenant(lab, host, tenant, *args):
    """pgBackRest run as the tenant's own OS user with its own configuration (what a tenant that
    is superuser of its cluster can run through COPY ... PROGRAM)."""
    conf = f"/mnt/db/{tenant}/backup"
    return lab.exec(
        host,
        "runuser",
        "-u",
        f"pg-{tenant}",
        "--",
        "pgbackrest",
        f"--config={conf}/pgbackrest.conf",
        f"--config-include-path={conf}/conf.d",
        "--log-level-console=warn",
        *args,
    )


@pytest.fixture(scope="module")
def backups(lab, db1, db2):
    """The repository converged (twice: the second run changes nothing) and two tenants with
    backups; both removed at the end, their backups purged."""
    first = lab.playbook("backup_repository.yml")
    assert first.rc == 0, first.describe()
    again = lab.playbook("backup_repository.yml")
    assert again.rc == 0 and all(r["changed"] == 0 for r in again.recap().values()), again.describe()
    for host in (db1, db2):  # systemd's copy of every unit current: see units_needing_a_reload
        lab.sh(host, "systemctl daemon-reload")
    for host, name in ((db1, BKA), (db2, BKB)):
        run = lab.onboard(host, {"name": name, "backup": True})
        assert run.rc == 0, run.describe()
    yield
    for host, name in ((db1, BKA), (db2, BKB), (db2, BKC)):
        lab.playbook(
            "tenant_remove.yml",
            {"tenant_host": host, "tenant_name": name, "confirm": name, "purge_backups": True},
        )


def info(lab, db2, tenant):
    out = lab.sh(
        db2,
        f"runuser -u pgbackrest -- pgbackrest --config=/etc/pgbackrest/pgbackrest.conf "
        f"--config-include-path=/etc/pgbackrest/conf.d --stanza={tenant} --output=json info",
    )
    return json.loads(out)[0]


def units_needing_a_reload(lab, host) -> list[str]:
    """The host's ShadowDB units whose files systemd says changed since it read them."""
    script = (
        "systemctl list-units --all --plain --no-legend 'shadowdb-*' | awk '{print $1}' | while read -r u;"
        ' do [ "$(systemctl show -p NeedDaemonReload --value "$u")" = yes ] && echo "$u"; done; true'
    )
    return lab.sh(host, script).split()


def test_a_tenant_with_backups_archives_and_converges_unchanged(lab, db1, db2, backups):
    """Its first full backup is taken on its own; its WAL reaches the repository through its
    egress allowance (pgbackrest check, as the tenant); a second run changes nothing."""
    lab.sh(
        db2,
        f"for i in $(seq 60); do systemctl is-active -q 'shadowdb-backup@{BKA}:full.service' || break; "
        "sleep 1; done",
    )
    stanza = info(lab, db2, BKA)
    assert stanza["status"]["message"] == "ok", stanza["status"]
    assert [b["type"] for b in stanza["backup"]] == ["full"], stanza["backup"]
    assert stanza["cipher"] == "aes-256-cbc"
    check = pgbackrest_as_tenant(lab, db1, BKA, f"--stanza={BKA}", "check")
    assert check.returncode == 0, check.stderr
    timers = lab.sh(
        db2, "systemctl list-timers --all --no-legend --plain 'shadowdb-backup-*' | awk '{print $NF}'"
    )
    assert f"shadowdb-backup@{BKA}:full.service" in timers and f"shadowdb-backup@{BKA}:diff.service" in timers
    assert lab.sh(db1, f"systemctl is-enabled shadowdb-backup-agent@{BKA}.service").strip() == "enabled"
    # The agent and the timers are enabled by their links on the file system: an enable through
    # systemd marks every unit of the host as needing a daemon-reload, and the next new tenant's
    # start would pay for one (a second or more on a host of a few hundred tenants).
    for host in (db1, db2):
        assert units_needing_a_reload(lab, host) == [], host
    again = lab.onboard(db1, {"name": BKA, "backup": True})
    assert again.rc == 0 and again.recap()[db1]["changed"] == 0, again.changed_tasks()

    # The API's drift check reads when each tenant's last backup ended (shown as its age).
    drift = subprocess.run(
        ["ansible-playbook", "-i", str(lab.inventory), str(REPO / "api" / "playbooks" / "drift.yml")],
        env=lab.env | {"ANSIBLE_SHOW_CUSTOM_STATS": "1", "ANSIBLE_STDOUT_CALLBACK": "json"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=REPO,
    )
    stats = json.loads(drift.stdout[drift.stdout.index("{") :])["global_custom_stats"]["shadowdb_api_drift"]
    last_stop = max(b["timestamp"]["stop"] for b in stanza["backup"])
    assert stats["backups"][BKA] == last_stop, stats["backups"]


def test_restore_to_a_time_brings_back_exactly_the_rows_of_that_time(lab, db1, db2, backups):
    lab.psql_root(db1, BKA, "CREATE TABLE t (i int); INSERT INTO t SELECT generate_series(1, 100)")
    backup = lab.playbook("tenant_backup.yml", {"tenant": BKA, "type": "diff"})
    assert backup.rc == 0, backup.describe()
    lab.psql_root(db1, BKA, "INSERT INTO t SELECT generate_series(101, 150)")
    target = lab.psql_root(db1, BKA, "SELECT now()")
    lab.psql_root(db1, BKA, "SELECT pg_sleep(1.1); INSERT INTO t SELECT generate_series(151, 200)")
    lab.psql_root(db1, BKA, "DROP TABLE t")
    pid = lab.postmaster_pid(db1, BKA)

    run = lab.playbook(
        "tenant_restore.yml", {"tenant_host": db1, "tenant": BKA, "confirm": BKA, "target": {"time": target}}
    )
    assert run.rc == 0, run.describe()
    assert lab.postmaster_pid(db1, BKA) != pid
    assert lab.psql_root(db1, BKA, "SELECT count(*), min(i), max(i) FROM t") == "150|1|150"
    lab.wait_serving(db1, BKA)
    # It archives again (on its new timeline), and converges unchanged: its configuration is its own.
    check = pgbackrest_as_tenant(lab, db1, BKA, f"--stanza={BKA}", "check")
    assert check.returncode == 0, check.stderr
    again = lab.onboard(db1, {"name": BKA, "backup": True})
    assert again.rc == 0 and again.recap()[db1]["changed"] == 0, again.changed_tasks()


def test_a_clone_on_another_host_has_the_rows_of_its_time_and_the_source_goes_on(lab, db1, db2, backups):
    """bkc, a clone of bka at T on db2: the rows of T under its own names and password, bka still
    has its later rows; a second run changes nothing; a source without the target is refused
    before anything is made."""
    lab.psql_root(
        db1,
        BKA,
        f"CREATE TABLE c (i int); ALTER TABLE c OWNER TO {BKA}; INSERT INTO c SELECT generate_series(1, 10)",
    )
    target = lab.psql_root(db1, BKA, "SELECT now()")
    lab.psql_root(db1, BKA, "SELECT pg_sleep(1.1); INSERT INTO c SELECT generate_series(11, 20)")
    spec = {"name": BKC, "source": {"tenant": BKA, "time": target}}  # the plan archives bka's WAL up to now
    run = lab.onboard(db2, spec)
    assert run.rc == 0, run.describe()
    with lab.connect(db2, BKC) as conn:  # as the clone's owner, with its own password, over TLS
        assert conn.execute(
            "SELECT current_user, current_database(), count(*), max(i) FROM c"
        ).fetchone() == (BKC, BKC, 10, 10)
    assert lab.owner_env(db2, BKC)["PGPASSWORD"] != lab.owner_env(db1, BKA)["PGPASSWORD"]
    assert lab.psql_root(db1, BKA, "SELECT count(*) FROM c") == "20"
    assert not lab.exists(db2, f"/mnt/db/{BKC}/backup/clone"), "the clone's temporary files must go"
    assert not lab.exists(db2, f"/etc/pgbackrest/conf.d/_clone-{BKC}.conf"), (
        "the temporary authorization must go"
    )
    again = lab.onboard(db2, spec)
    assert again.rc == 0 and again.recap()[db2]["changed"] == 0, again.changed_tasks()

    before = lab.snapshot(db1)
    refused = lab.onboard(db1, {"name": "bkd", "source": {"tenant": BKA, "time": "2001-01-01 00:00:00+00"}})
    assert refused.rc != 0 and "before the end of the first backup" in refused.text, refused.describe()
    assert lab.diff(before, lab.snapshot(db1)) == {}, "a refused clone must leave nothing behind"
    run = lab.remove(db2, BKC, confirm=BKC)
    assert run.rc == 0, run.describe()


def test_a_time_after_the_last_commit_is_reached_by_a_clone_and_a_restore(lab, db1, db2, backups):
    """PostgreSQL's recovery to a time stops at the first commit after it, and refuses to end
    without one: a tenant idle since T is still cloned at T (to the end of its archive, once it
    is all replayed) and restored to T (a commit is made before it stops)."""
    lab.psql_root(db1, BKA, "CREATE TABLE idle AS SELECT generate_series(1, 5) AS i")
    lab.psql_root(db1, BKA, "SELECT pg_sleep(1.1)")
    target = lab.psql_root(db1, BKA, "SELECT now()")
    spec = {"name": BKC, "source": {"tenant": BKA, "time": target}}
    try:
        run = lab.onboard(db2, spec)
        assert run.rc == 0, run.describe()
        assert lab.psql_root(db2, BKC, "SELECT count(*), max(i) FROM idle") == "5|5"
    finally:
        lab.remove(db2, BKC, confirm=BKC)

    lab.psql_root(db1, BKA, "SELECT pg_sleep(1.1)")
    run = lab.playbook(
        "tenant_restore.yml", {"tenant_host": db1, "tenant": BKA, "confirm": BKA, "target": {"time": target}}
    )
    assert run.rc == 0, run.describe()
    assert lab.psql_root(db1, BKA, "SELECT count(*), max(i) FROM idle") == "5|5"
    lab.psql_root(db1, BKA, "DROP TABLE idle")


@pytest.mark.parametrize(
    ("extravars", "message"),
    [
        ({"target": {"time": "2999-01-01 00:00:00+00"}, "confirm": BKA}, "is in the future"),
        (
            {"target": {"time": "2001-01-01 00:00:00+00"}, "confirm": BKA},
            "is before the end of the first backup",
        ),
        ({"target": {"time": "yesterday"}, "confirm": BKA}, "is not a time with a zone"),
        ({"target": {"latest": True}, "confirm": "bkb"}, "give -e tenant=<name> -e confirm=<the same name>"),
        ({"target": {"when": "now"}, "confirm": BKA}, "is not a restore target"),
    ],
)
def test_a_bad_restore_changes_nothing(lab, db1, backups, extravars, message):
    pid = lab.postmaster_pid(db1, BKA)
    run = lab.playbook("tenant_restore.yml", {"tenant_host": db1, "tenant": BKA, **extravars})
    assert run.rc != 0
    assert message in run.text, run.describe()
    assert lab.postmaster_pid(db1, BKA) == pid


def test_a_tenant_cannot_reach_another_tenants_backups(lab, db1, db2, backups):
    """bka's identity at the repository is authorized for its own stanza only; bkb's backup agent
    answers the repository's identity only, and bka's processes cannot even connect to it."""
    own_data = f"--pg1-path=/mnt/db/{BKA}/data"
    for command in (
        ["info"],
        ["expire"],
        [own_data, "archive-get", "000000010000000000000001", f"/mnt/db/{BKA}/x"],
    ):
        run = pgbackrest_as_tenant(lab, db1, BKA, f"--stanza={BKB}", *command)
        assert "access denied" in run.stdout + run.stderr, (command, run.stdout + run.stderr)
        assert not lab.exists(db1, f"/mnt/db/{BKA}/x")
    listing = pgbackrest_as_tenant(lab, db1, BKA, "info")
    assert f"stanza: {BKB}" not in listing.stdout and "access denied" in listing.stdout + listing.stderr

    agent_port = json.loads(lab.sh(db2, "cat /var/lib/shadowdb/ports/backup_agent.json"))["leases"][BKB]
    bkb_agent = [
        f"--stanza={BKB}",
        f"--pg1-host={lab.ip(db2)}",
        "--pg1-host-type=tls",
        f"--pg1-host-port={agent_port}",
        f"--pg1-host-ca-file=/mnt/db/{BKA}/backup/ca.crt",
        f"--pg1-host-cert-file=/mnt/db/{BKA}/tls/backup.crt",
        f"--pg1-path=/mnt/db/{BKB}/data",
        "--config=/dev/null",
        "--log-level-console=warn",
        "--io-timeout=2",
        "--protocol-timeout=3",
    ]
    # From bka's own processes: the egress firewall lets them reach the repository's port only.
    blocked = lab.exec(
        db1,
        "runuser",
        "-u",
        f"pg-{BKA}",
        "--",
        "pgbackrest",
        *bkb_agent,
        f"--pg1-host-key-file=/mnt/db/{BKA}/tls/backup.key",
        "check",
        timeout=120,
    )
    assert "Connection refused" in blocked.stdout + blocked.stderr, blocked.stdout + blocked.stderr
    # The same identity from outside the tenant's sandbox (a network client holding bka's key):
    # bkb's agent refuses it.
    stolen = lab.sh(
        db1,
        f"install -m 600 /mnt/db/{BKA}/tls/backup.key /root/stolen.key; "
        f"pgbackrest {' '.join(bkb_agent)} --pg1-host-key-file=/root/stolen.key check 2>&1; "
        "rm -f /root/stolen.key",
        check=False,
    )
    assert "access denied" in stolen, stolen


def test_a_tenant_cannot_make_the_repository_write_outside_its_directories(lab, db1, db2, backups):
    """pgBackRest's server takes the client's repo1-path (the tenant's identity may name any base
    path; its own stanza is always appended): the repository's unit is sandboxed so that its
    pgbackrest user writes only under the repository, spool and log directories."""
    elsewhere = "--repo1-path=/var/lib/pgbackrest/x"
    moved = pgbackrest_as_tenant(lab, db1, BKA, f"--stanza={BKA}", elsewhere, "info")
    assert "missing stanza path" in moved.stdout, moved.stdout + moved.stderr  # the client's path is used
    # Places the pgbackrest user could write without the sandbox: world-writable directories
    # (read-only for the unit, or its private /tmp, /var/tmp and /dev).
    for base in ("/run/lock/sdb-attack", "/var/tmp/sdb-attack", "/tmp/sdb-attack", "/dev/shm/sdb-attack"):
        pgbackrest_as_tenant(lab, db1, BKA, f"--stanza={BKA}", f"--repo1-path={base}", "stanza-create")
        assert not lab.exists(db2, base), base
    # The control: outside the unit's sandbox the same user can write there.
    lab.sh(db2, "runuser -u pgbackrest -- mkdir /run/lock/sdb-control && rmdir /run/lock/sdb-control")
    assert info(lab, db2, BKA)["status"]["message"] == "ok"


def test_a_repository_outage_queues_wal_and_loses_nothing(lab, db1, db2, backups):
    """The repository down for a minute: the tenant keeps serving, its WAL waits on its host, and
    once the repository is back everything is archived: a restore to the latest has every row."""
    lab.psql_root(db1, BKA, f"CREATE TABLE outage (i int); ALTER TABLE outage OWNER TO {BKA}")
    lab.sh(db2, "systemctl stop shadowdb-backup-repository.service")
    try:
        for batch in range(6):
            lab.psql_root(
                db1,
                BKA,
                f"INSERT INTO outage SELECT {batch * 1000} + generate_series(1, 1000); "
                "SELECT pg_switch_wal()",
            )
            with lab.connect(db1, BKA) as conn:  # still serving, through TLS, as a client would
                assert conn.execute("SELECT count(*) FROM outage").fetchone()[0] == (batch + 1) * 1000
            lab.sh(db1, "sleep 10")
        failed = lab.psql_root(db1, BKA, "SELECT failed_count FROM pg_stat_archiver")
        assert int(failed) > 0, "archiving should have failed while the repository was down"
    finally:
        lab.sh(db2, "systemctl start shadowdb-backup-repository.service")
    check = pgbackrest_as_tenant(lab, db1, BKA, f"--stanza={BKA}", "--archive-timeout=120", "check")
    assert check.returncode == 0, check.stderr
    run = lab.playbook(
        "tenant_restore.yml", {"tenant_host": db1, "tenant": BKA, "confirm": BKA, "target": {"latest": True}}
    )
    assert run.rc == 0, run.describe()
    assert lab.psql_root(db1, BKA, "SELECT count(*), max(i) FROM outage") == "6000|6000"


def test_a_backup_killed_half_way_leaves_the_next_one_and_the_repository_sound(lab, db1, db2, backups):
    lab.psql_root(
        db1,
        BKA,
        "CREATE TABLE bulk AS SELECT i, md5(i::text) || repeat('x', 200) AS pad "
        "FROM generate_series(1, 600000) i",
    )
    before = len(info(lab, db2, BKA)["backup"])
    unit = f"shadowdb-backup@{BKA}:full.service"
    # Killed once it has written its first files to the repository.
    result = lab.sh(
        db2,
        f"touch /tmp/kill-mark; systemctl start --no-block '{unit}'; for i in $(seq 400); do "
        f"  [ -n \"$(find {REPO_PATH}/backup/{BKA} -path '*/pg_data/*' -type f -newer /tmp/kill-mark "
        '-print -quit)" ] && break; sleep 0.05; done; '
        f"systemctl kill -s KILL '{unit}'; sleep 1; systemctl show -P Result '{unit}'; "
        f"systemctl reset-failed '{unit}' || true; rm -f /tmp/kill-mark",
    ).strip()
    assert result == "signal", f"the backup was not killed half-way (its result: {result})"
    assert len(info(lab, db2, BKA)["backup"]) == before, "the killed backup must not count as a backup"
    run = lab.playbook("tenant_backup.yml", {"tenant": BKA, "type": "full"})
    assert run.rc == 0, run.describe()
    assert len(info(lab, db2, BKA)["backup"]) == before + 1
    verify = lab.sh(
        db2,
        "runuser -u pgbackrest -- pgbackrest --config=/etc/pgbackrest/pgbackrest.conf "
        f"--config-include-path=/etc/pgbackrest/conf.d --stanza={BKA} --log-level-console=info "
        "verify 2>&1",
    )
    assert "verify command end: completed successfully" in verify, verify
    assert not re.search(r"(invalid|missing|ERROR)", verify.split("verify command end")[0]), verify
    lab.psql_root(db1, BKA, "DROP TABLE bulk")


def test_removal_keeps_the_backups_until_purged(lab, db1, db2, backups):
    lab.sh(db1, f"test -e /etc/shadowdb/tenants/{BKA}/egress.json")
    lab.psql_root(db1, BKA, "CREATE TABLE kept AS SELECT generate_series(1, 42) AS i")
    check = pgbackrest_as_tenant(lab, db1, BKA, f"--stanza={BKA}", "check")  # its last WAL archived
    assert check.returncode == 0, check.stderr
    run = lab.remove(db1, BKA, confirm=BKA)
    assert run.rc == 0, run.describe()
    assert lab.exists(db2, f"{REPO_PATH}/backup/{BKA}/backup.info"), "the backups must outlive the tenant"
    assert lab.exists(db2, f"{REMOVED}/{BKA}")
    assert not lab.exists(db2, f"/etc/pgbackrest/conf.d/{BKA}.conf"), (
        "the removed tenant's identity is still authorized"
    )
    for timer in (f"shadowdb-backup-full@{BKA}.timer", f"shadowdb-backup-diff@{BKA}.timer"):
        state = lab.sh(db2, f"systemctl is-enabled {timer}; systemctl is-active {timer}", check=False).split()
        assert state == ["disabled", "inactive"], (timer, state)
    assert BKA not in lab.sh(db1, "cat /var/lib/shadowdb/ports/backup_agent.json")
    marker_age = datetime.now(UTC) - datetime.fromtimestamp(
        int(lab.sh(db2, f"stat -c %Y {REMOVED}/{BKA}")), UTC
    )
    assert marker_age < timedelta(minutes=10)

    # Made again under its name from its own backups while they are kept: its rows are back.
    again = lab.onboard(db1, {"name": BKA, "backup": True, "source": {"tenant": BKA, "latest": True}})
    assert again.rc == 0, again.describe()
    assert lab.psql_root(db1, BKA, "SELECT count(*) FROM kept") == "42"
    assert not lab.exists(db2, f"{REMOVED}/{BKA}"), "a tenant made again is no longer a removed one"

    run = lab.playbook(
        "tenant_remove.yml", {"tenant_host": db2, "tenant_name": BKB, "confirm": BKB, "purge_backups": True}
    )
    assert run.rc == 0, run.describe()
    for path in (f"{REPO_PATH}/backup/{BKB}", f"{REPO_PATH}/archive/{BKB}", f"{REMOVED}/{BKB}"):
        assert not lab.exists(db2, path), path

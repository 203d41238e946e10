"""Tests of library/shadowdb_backup_agent.py and shadowdb_backup_stanza.py, run for real as
subprocesses on temporary directories, with stand-ins for systemctl and runuser (recording their
calls) on PATH: below a directory the tenant owns nothing planted is followed; a second call
changes nothing; the repository reads its authorizations once per call; removal keeps the backups
(a marker) unless purged."""

import getpass
import os
import stat
import subprocess

import pytest

# systemctl stand-in: is-enabled/is-active answer from files in $FAKE_STATE; every call is logged.
FAKE_SYSTEMCTL = """#!/bin/sh
echo "systemctl $*" >> "$FAKE_STATE/calls"
[ "$1" = --root=/ ] && shift
case "$1" in
  is-enabled|is-active) for unit; do :; done; test -e "$FAKE_STATE/$1-$unit" ;;
  enable) for unit; do :; done; touch "$FAKE_STATE/is-enabled-$unit"; exit 0 ;;
  restart|disable|reload-or-restart|start) for unit; do :; done; touch "$FAKE_STATE/is-enabled-$unit" \
      "$FAKE_STATE/is-active-$unit"; exit 0 ;;
  *) exit 0 ;;
esac
"""
# runuser stand-in: "runuser -u <user> -- <argv>" logs the argv and succeeds.
FAKE_RUNUSER = """#!/bin/sh
shift 3
echo "runuser $*" >> "$FAKE_STATE/calls"
"""


@pytest.fixture
def fakes(tmp_path):
    bin_dir, state = tmp_path / "bin", tmp_path / "state"
    bin_dir.mkdir()
    state.mkdir()
    for name, text in (("systemctl", FAKE_SYSTEMCTL), ("runuser", FAKE_RUNUSER)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", FAKE_STATE=str(state))

    def calls():
        path = state / "calls"
        return path.read_text().splitlines() if path.exists() else []

    return env, calls


@pytest.fixture
def agent(run_module, tmp_path, fakes):
    env, calls = fakes
    home = tmp_path / "acme"
    (home / "tls").mkdir(parents=True)
    base = dict(
        name="acme", os_user=getpass.getuser(), backup_dir=str(home / "backup"), tls_dir=str(home / "tls")
    )

    def run(state, check_mode=False, **extra):
        result, _proc = run_module(
            "shadowdb_backup_agent",
            {"state": state, "tenants": [base | extra]},
            check_mode=check_mode,
            env=env,
        )
        return result

    run.home, run.calls = home, calls
    return run


def test_prepare_makes_the_key_once_and_present_writes_and_starts_once(agent):
    first = agent("prepare")
    acme = first["results"]["acme"]
    assert not acme["failed"] and acme["changed"], first
    key = (agent.home / "tls" / "backup.key").read_text()
    assert stat.S_IMODE(os.stat(agent.home / "tls" / "backup.key").st_mode) == 0o600
    csr_key = subprocess.run(
        ["openssl", "req", "-noout", "-pubkey"], input=acme["csr"], capture_output=True, text=True, check=True
    ).stdout
    own_key = subprocess.run(
        ["openssl", "pkey", "-pubout"], input=key, capture_output=True, text=True, check=True
    )
    assert csr_key == own_key.stdout and "PRIVATE KEY" not in str(first)
    assert stat.S_IMODE(os.stat(agent.home / "backup").st_mode) == 0o700
    assert not agent("prepare")["results"]["acme"]["changed"]

    files = dict(certificate="-----BEGIN CERTIFICATE-----\ncert\n", ca="ca\n", config="[global]\n")
    written = agent("present", **files)["results"]["acme"]
    assert written["changed"] and (agent.home / "backup" / "pgbackrest.conf").read_text() == "[global]\n"
    assert "systemctl restart shadowdb-backup-agent@acme.service" in agent.calls()
    before = len(agent.calls())
    assert not agent("present", **files)["results"]["acme"]["changed"]
    assert not any("restart" in c for c in agent.calls()[before:])
    changed = agent("present", **(files | {"config": "[global]\nx=1\n"}))["results"]["acme"]
    assert changed["changed"] and "systemctl restart shadowdb-backup-agent@acme.service" in agent.calls()[-1]


def test_check_mode_makes_nothing(agent):
    result = agent("prepare", check_mode=True)
    assert result["results"]["acme"]["changed"] and result["results"]["acme"]["csr"] is None
    assert os.listdir(agent.home / "tls") == [] and not (agent.home / "backup").exists()


@pytest.mark.parametrize("planted", ["backup", "tls/backup.key"])
def test_a_planted_link_is_refused_and_not_followed(agent, tmp_path, planted):
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "secret").write_text("root's")
    link = agent.home / planted
    link.symlink_to(target / "secret" if planted.endswith(".key") else target)
    result = agent("prepare")
    assert result["results"]["acme"]["failed"], result
    assert "acme" in result["results"]["acme"]["msg"]
    assert os.listdir(target) == ["secret"] and (target / "secret").read_text() == "root's"


@pytest.fixture
def repository(run_module, tmp_path, fakes):
    env, calls = fakes
    conf_d, repo, removed = tmp_path / "conf.d", tmp_path / "repo", tmp_path / "removed"
    for path in (conf_d, repo, removed):
        path.mkdir()
    me = getpass.getuser()
    shared = dict(conf_d=str(conf_d), repo_path=str(repo), removed_dir=str(removed), user=me)

    def run(tenants, state="present", **extra):
        result, _proc = run_module(
            "shadowdb_backup_stanza", shared | {"state": state, "tenants": tenants} | extra, env=env
        )
        return result

    run.conf_d, run.repo, run.removed, run.calls = conf_d, repo, removed, calls
    return run


def test_stanzas_are_written_and_created_once_and_the_server_reloaded_once(repository, tmp_path):
    tenants = [{"name": "acme", "config": "[acme]\n"}, {"name": "globex", "config": "[globex]\n"}]
    first = repository(tenants)
    assert all(r["created"] and not r["failed"] for r in first["results"].values()), first
    assert (repository.conf_d / "acme.conf").read_text() == "[acme]\n"
    assert stat.S_IMODE(os.stat(repository.conf_d / "acme.conf").st_mode) == 0o640
    calls = repository.calls()
    assert sum("reload-or-restart" in c for c in calls) == 1
    assert any("stanza-create" in c and "--stanza=acme" in c for c in calls)
    assert "systemctl start --no-block shadowdb-backup@acme:full.service" in calls
    for name in ("acme", "globex"):  # what stanza-create makes on a real repository
        (repository.repo / "backup" / name).mkdir(parents=True)
        (repository.repo / "backup" / name / "backup.info").write_text("{}")
    before = len(repository.calls())
    again = repository(tenants)
    assert not again["changed"], again
    assert not any("reload" in c or "stanza-create" in c for c in repository.calls()[before:])


def test_removal_keeps_the_backups_with_a_marker_unless_purged(repository):
    repository([{"name": "acme", "config": "[acme]\n"}, {"name": "globex", "config": "[globex]\n"}])
    for name in ("acme", "globex"):
        for kind in ("backup", "archive"):
            (repository.repo / kind / name).mkdir(parents=True)
    repository([{"name": "acme"}, {"name": "globex", "purge": True}], state="absent")
    assert not (repository.conf_d / "acme.conf").exists() and not (repository.conf_d / "globex.conf").exists()
    assert (repository.removed / "acme").exists() and (repository.repo / "backup" / "acme").is_dir()
    assert (
        not (repository.repo / "backup" / "globex").exists()
        and not (repository.repo / "archive" / "globex").exists()
    )
    assert not (repository.removed / "globex").exists()
    # The tenant made again under its name: its marker goes.
    repository([{"name": "acme", "config": "[acme]\n"}])
    assert not (repository.removed / "acme").exists()


def test_a_name_that_is_not_a_tenants_is_refused(repository):
    result = repository([{"name": "../etc", "config": "x"}])
    assert result.get("failed") and "not a tenant name" in result["msg"]


def clone_item(home, **extra):
    """A clone "copy" of "acme" into the tenant directories under ``home`` (made here)."""
    for sub in ("data", "run", "backup", "tls"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    return {
        "name": "copy",
        "source": "acme",
        "os_user": getpass.getuser(),
        "data_dir": str(home / "data"),
        "socket_dir": str(home / "run"),
        "backup_dir": str(home / "backup"),
        "bin_dir": "/usr/lib/postgresql/17/bin",
        "certificate": "CERT",
        "key_path": str(home / "tls" / "backup.key"),
        "ca": "CA",
        "config": "[global]\n",
        "superuser_password": "clone-superuser-secret",
        "port": 20001,
    } | extra


# runuser stand-in for a clone whose new superuser password cannot be set: the restore and the
# temporary server "work", psql answers the recovery query, and ALTER ROLE fails.
CLONE_RUNUSER = """#!/bin/sh
shift 3
echo "runuser $*" >> "$FAKE_STATE/calls"
case "$*" in
  *"ALTER ROLE postgres PASSWORD"*) echo "ERROR:  cannot execute ALTER ROLE" >&2; exit 1 ;;
  *pg_is_in_recovery*) echo f ;;
esac
exit 0
"""


def test_a_failed_clone_never_shows_the_new_superuser_secret(run_module, tmp_path, fakes):
    env, calls = fakes
    (tmp_path / "bin" / "runuser").write_text(CLONE_RUNUSER)
    home = tmp_path / "copy"
    password = "clone-superuser-secret"  # noqa: S105 - a test value
    item = clone_item(home, superuser_password=password)
    result, proc = run_module("shadowdb_backup_clone", {"tenants": [item]}, env=env)
    why = result["failed_tenants"]["copy"]
    assert "ALTER ROLE postgres PASSWORD (hidden)" in why and "cannot execute ALTER ROLE" in why, why
    assert "SCRAM-SHA-256" not in proc.stdout + proc.stderr and password not in proc.stdout + proc.stderr
    # The failed clone leaves an empty data directory and no temporary files (it starts over).
    assert not os.listdir(home / "data") and not (home / "backup" / "clone").exists()
    assert any("pg_ctl -D" in c and c.endswith("stop") for c in calls())


# runuser stand-in for a clone whose source was idle after its target: the first recovery stops
# ("recovery ended before configured recovery target was reached") after replaying segment ...05;
# the restore to the end of the archive (--delta, no target) then comes out of recovery.
IDLE_SOURCE_RUNUSER = """#!/bin/sh
shift 3
echo "runuser $*" >> "$FAKE_STATE/calls"
case "$*" in
  *"--delta restore") touch "$FAKE_STATE/to-the-end" ;;
  *pg_is_in_recovery*) test -e "$FAKE_STATE/to-the-end" || exit 2; echo f ;;
  *" status") test -e "$FAKE_STATE/to-the-end" || exit 3 ;;
  "tail -c"*) printf '%s\\n' 'LOG:  restored log file "000000020000000000000005" from archive' \\
      'FATAL:  recovery ended before configured recovery target was reached' ;;
  *"--output=json info") printf '[{"archive": [{"id": "17-1", "max": "%s"}]}]' "$(cat "$FAKE_STATE/max")" ;;
esac
exit 0
"""


@pytest.mark.parametrize("archive_max", ["000000020000000000000005", "000000020000000000000007"])
def test_a_clone_of_an_idle_source_recovers_to_the_end_only_of_a_whole_archive(
    run_module, tmp_path, fakes, archive_max
):
    env, calls = fakes
    (tmp_path / "bin" / "runuser").write_text(IDLE_SOURCE_RUNUSER)
    (tmp_path / "state" / "max").write_text(archive_max)
    home = tmp_path / "copy"
    item = clone_item(home, restore_type="time", restore_target="2026-12-02 10:00:00+00")
    result, _proc = run_module("shadowdb_backup_clone", {"tenants": [item]}, env=env)
    restores = [c for c in calls() if c.endswith(" restore")]
    if archive_max.endswith("5"):  # the archive's last segment was replayed: its end is the target's state
        assert not result.get("failed_tenants"), result
        assert "--type=time" in restores[0] and restores[1].endswith("--delta restore"), restores
        assert "recovered to its end" in " ".join(result["results"]["copy"]["actions"])
    else:  # a segment was not given: the clone fails naming both, and starts over next time
        why = result["failed_tenants"]["copy"]
        assert "000000020000000000000005" in why and "000000020000000000000007" in why, why
        assert len(restores) == 1 and not os.listdir(home / "data")

"""systemd's copy of a tenant's unit. A new tenant's server is started without a daemon-reload
(one re-reads every unit file of the host: 0.3 s with 100 tenants, more with each one); but when
systemd already holds a copy of the unit older than its files, the unit is reloaded first, or
the server would start from the old copy.
"""

import pytest

NEW = "itun"
STALE = "itus"
HOLDER = "it-unit-holder.service"


def unit_state(lab, host: str, name: str) -> dict[str, str]:
    unit = f"shadowdb-postgres@{name}.service"
    out = lab.sh(host, f"systemctl show --property=LoadState,NeedDaemonReload,ExecStart {unit}")
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def journal_cursor(lab, host: str) -> str:
    out = lab.sh(host, "journalctl --lines=0 --show-cursor")
    return out.split("-- cursor: ", 1)[1].strip()


def reloads_since(lab, host: str, cursor: str) -> int:
    out = lab.sh(host, f"journalctl --after-cursor='{cursor}' --no-pager --output=cat _PID=1")
    return out.count("Reloading finished")


@pytest.fixture
def new_tenant(lab, db1):
    yield NEW
    lab.remove(db1, NEW, confirm=NEW)


def test_a_new_tenant_is_started_without_a_daemon_reload(lab, db1, session_tenants, new_tenant):
    # A run of a session tenant first: db1's shared part is converged if anything changed it.
    assert lab.onboard(db1, session_tenants["ita"][1]).rc == 0
    cursor = journal_cursor(lab, db1)
    run = lab.onboard(db1, {"name": NEW})
    assert run.rc == 0, run.describe()
    lab.wait_serving(db1, NEW, timeout=30)
    assert reloads_since(lab, db1, cursor) == 0
    state = unit_state(lab, db1, NEW)
    assert state["NeedDaemonReload"] == "no" and "/bin/postgres " in state["ExecStart"], state


@pytest.fixture
def stale_copy(lab, db1):
    """systemd holds the unit of a tenant that does not exist yet, loaded with a drop-in that
    runs /bin/false (kept loaded by a unit ordered after it); the drop-in is then deleted."""
    dropins = f"/etc/systemd/system/shadowdb-postgres@{STALE}.service.d"
    lab.sh(
        db1,
        f"mkdir -p {dropins}\n"
        f"printf '[Service]\\nExecStart=/bin/false\\n' > {dropins}/00-stale.conf\n"
        f"printf '[Unit]\\nAfter=shadowdb-postgres@{STALE}.service\\n[Service]\\nType=oneshot\\n"
        f"RemainAfterExit=yes\\nExecStart=/bin/true\\n' > /etc/systemd/system/{HOLDER}\n"
        f"systemctl daemon-reload\nsystemctl start {HOLDER}\n",
    )
    held = unit_state(lab, db1, STALE)
    assert held["LoadState"] == "loaded" and "/bin/false" in held["ExecStart"], held
    lab.sh(db1, f"rm {dropins}/00-stale.conf")
    yield
    lab.sh(
        db1,
        f"systemctl stop {HOLDER}; rm -f /etc/systemd/system/{HOLDER} {dropins}/00-stale.conf;"
        " systemctl daemon-reload",
        check=False,
    )
    lab.remove(db1, STALE, confirm=STALE)


def test_a_unit_systemd_holds_an_older_copy_of_is_reloaded(lab, db1, stale_copy):
    assert unit_state(lab, db1, STALE)["NeedDaemonReload"] == "yes"
    run = lab.onboard(db1, {"name": STALE})
    assert run.rc == 0, run.describe()
    lab.wait_serving(db1, STALE, timeout=30)
    state = unit_state(lab, db1, STALE)
    assert state["NeedDaemonReload"] == "no", state
    assert "/bin/postgres " in state["ExecStart"] and "/bin/false" not in state["ExecStart"], state

"""Removal: tenant_remove.yml leaves nothing of the tenant behind, and its neighbours never notice.

A throwaway tenant is onboarded and removed on db1 while a background client keeps querying itb
on the same host (a query every 0.2 s on a kept connection, and a fresh TLS connection every
fifth tick). Neither onboarding nor removal may fail a single one of those queries.
"""

import re
import threading
import time

import psycopg

NAME = "itx"


class Prober(threading.Thread):
    """Queries a tenant every `interval` s until stopped; bounded in time and count."""

    def __init__(
        self, conninfo: dict, interval: float = 0.2, max_seconds: float = 600, max_ticks: int = 5000
    ):
        super().__init__(daemon=True)
        self.conninfo = conninfo
        self.interval, self.max_seconds, self.max_ticks = interval, max_seconds, max_ticks
        self.stopped = threading.Event()
        self.ok = 0
        self.failures: list[str] = []

    def _connect(self):
        return psycopg.connect(**self.conninfo, connect_timeout=3, autocommit=True)

    def run(self):
        start = time.monotonic()
        kept = None
        tick = 0
        while (
            not self.stopped.is_set()
            and tick < self.max_ticks
            and time.monotonic() - start < self.max_seconds
        ):
            tick += 1
            try:
                if kept is None:
                    kept = self._connect()
                kept.execute("SELECT count(*) FROM pg_class").fetchone()
                if tick % 5 == 0:
                    with self._connect() as fresh:
                        fresh.execute("SELECT 1").fetchone()
                self.ok += 1
            except psycopg.Error as exc:
                self.failures.append(f"{time.monotonic() - start:.1f}s: {exc}")
                kept = None
            self.stopped.wait(self.interval)
        if kept is not None:
            kept.close()

    def stop(self):
        self.stopped.set()
        self.join(timeout=30)


def test_remove_leaves_nothing_and_neighbours_keep_serving(lab, db1):
    before = lab.snapshot(db1)
    prober = Prober(lab.conninfo(db1, "itb"))
    prober.start()
    try:
        onboard = lab.onboard(db1, {"name": NAME, "tier": "small", "extensions": ["pgcrypto"]})
        assert onboard.rc == 0, onboard.describe()
        lab.wait_serving(db1, NAME, timeout=30)
        failures_onboarding, ok_onboarding = list(prober.failures), prober.ok

        image = f"/var/lib/shadowdb/volumes/{NAME}.img"
        key = lab.image_keys(db1)[image]
        loop = lab.sh(db1, f"losetup -j {image} | cut -d: -f1").strip()
        assert loop.startswith("/dev/loop"), loop
        assert [device for device, _, _ in lab.loops_of([key])] == [loop]  # the machine's view agrees
        port = lab.leases(db1)[NAME]
        uid = lab.sh(db1, f"id -u pg-{NAME}").strip()

        remove = lab.remove(db1, NAME, confirm=NAME)
        assert remove.rc == 0, remove.describe()
    finally:
        prober.stop()

    # The OS user goes last: its UID is freed only once no file of the tenant is left.
    tasks = re.findall(r"^TASK \[(.*)\] \**$", remove.output, re.M)
    user_step = tasks.index("tenant_cluster : Remove the tenant's OS user")
    assert user_step > tasks.index("tenant_volume : Delete the loop image (its label proven above)"), tasks
    assert user_step > tasks.index("tenant_cluster : Stop and disable the tenant's cluster"), tasks

    # The neighbour never noticed.
    assert failures_onboarding == [], f"itb failed while {NAME} was onboarded: {failures_onboarding}"
    assert prober.failures == [], f"itb failed while {NAME} was removed: {prober.failures}"
    assert prober.ok > ok_onboarding > 0

    # Nothing of the tenant is left.
    for unit in (f"shadowdb-postgres@{NAME}.service", f"shadowdb-volume@{NAME}.service"):
        assert lab.sh(db1, f"systemctl show -P ActiveState {unit}").strip() == "inactive", unit
        assert lab.exec(db1, "systemctl", "is-enabled", unit).stdout.strip() != "enabled", unit
    assert lab.exec(db1, "getent", "passwd", f"pg-{NAME}").returncode == 2, "OS user left"
    assert lab.exec(db1, "getent", "group", f"pg-{NAME}").returncode == 2, "OS group left"
    assert lab.sh(db1, f"pgrep -U {uid} || true").strip() == "", "processes of the tenant's OS user left"
    assert lab.exec(db1, "findmnt", f"/mnt/db/{NAME}").returncode != 0, "volume still mounted"
    for path in (
        f"/mnt/db/{NAME}",
        image,
        f"/etc/shadowdb/volumes/{NAME}.env",
        f"/etc/shadowdb/tenants/{NAME}",
        f"/etc/systemd/system/shadowdb-postgres@{NAME}.service.d",
    ):
        assert not lab.exists(db1, path), f"{path} left"
    assert NAME not in lab.leases(db1), "port lease left"
    assert lab.sh(db1, f"ss -Hltn 'sport = :{port}'").strip() == "", f"port {port} still listening"
    deadline = time.monotonic() + 15  # an autocleared loop device goes once its last user is gone
    while lab.loops_of([key]) and time.monotonic() < deadline:
        time.sleep(1)
    assert lab.loops_of([key]) == [], f"loop device ({loop}) still backed by the removed image"
    assert lab.diff(before, lab.snapshot(db1)) == {}

    # Removing it again is a no-op that succeeds.
    again = lab.remove(db1, NAME, confirm=NAME)
    assert again.rc == 0, again.describe()
    assert lab.diff(before, lab.snapshot(db1)) == {}


def test_a_volume_that_does_not_carry_the_tenants_label_is_not_removed(lab, db2):
    """A volume whose filesystem label is not the tenant's name cannot be proven to be its own:
    removal refuses it before anything is stopped, with a message naming the label."""
    name = "itlbl"
    image = f"/var/lib/shadowdb/volumes/{name}.img"
    before = lab.snapshot(db2)
    onboard = lab.onboard(db2, {"name": name, "tier": "small"})
    assert onboard.rc == 0, onboard.describe()
    lab.image_keys(db2)
    loop = lab.sh(db2, f"losetup -j {image} | cut -d: -f1").strip()
    try:
        # sync: ext4 writes its new superblock, and the loop device its blocks to the image file.
        lab.sh(db2, f"e2label {loop} someone-else && sync")
        refused = lab.remove(db2, name, confirm=name)
        assert refused.rc != 0, refused.describe()
        assert f"refusing to destroy {image}: its filesystem label is 'someone-else', not '{name}'" in (
            refused.text
        ), refused.describe()
        # Nothing was touched: the image, the user, the running cluster, its secrets.
        assert lab.exists(db2, image)
        assert lab.exec(db2, "getent", "passwd", f"pg-{name}").returncode == 0
        assert lab.sh(db2, f"systemctl is-active shadowdb-postgres@{name}.service").strip() == "active"
        assert lab.exists(db2, f"/etc/shadowdb/tenants/{name}/owner.env")
        lab.wait_serving(db2, name, timeout=30)

    finally:
        lab.sh(db2, f"e2label {loop} {name} && sync", check=False)
    removed = lab.remove(db2, name, confirm=name)
    assert removed.rc == 0, removed.describe()
    assert lab.diff(before, lab.snapshot(db2)) == {}

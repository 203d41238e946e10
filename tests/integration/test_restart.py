"""A host restart: every tenant on it comes back by itself, on the port it had, with its data."""

import subprocess
import time


def wait_for_systemd(lab, host, timeout=90):
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        proc = lab.exec(host, "systemctl", "is-system-running", "--wait", timeout=60)
        state = proc.stdout.strip()
        if state in ("running", "degraded"):
            return state
        time.sleep(1)
    raise AssertionError(f"{host}: systemd not up after {timeout} s (state {state!r})")


def test_restart_brings_every_tenant_back_on_its_port(lab, db1, db2):
    leases = lab.leases(db1)
    tenants = sorted(leases)
    assert {"ita", "itb"} <= set(tenants), leases
    ports = {tenant: lab.owner_env(db1, tenant)["PGPORT"] for tenant in tenants}
    assert ports == {tenant: str(port) for tenant, port in leases.items()}
    for tenant in tenants:
        with lab.connect(db1, tenant, autocommit=True) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS it_restart (note text)")
            conn.execute("INSERT INTO it_restart VALUES (%s)", (f"before restart {tenant}",))
    lab.remember_loops()

    start = time.monotonic()
    subprocess.run(["podman", "restart", db1], env=lab.env, check=True, capture_output=True, timeout=180)
    state = wait_for_systemd(lab, db1)
    serving = {tenant: lab.wait_serving(db1, tenant, timeout=60) for tenant in tenants}
    print(f"\n[restart] {db1} back in {time.monotonic() - start:.1f} s (systemd {state}); tenants: {serving}")

    assert lab.leases(db1) == leases
    for tenant in tenants:
        assert lab.owner_env(db1, tenant)["PGPORT"] == ports[tenant]
        with lab.connect(db1, tenant, autocommit=True) as conn:
            assert conn.execute("SHOW port").fetchone() == (ports[tenant],)
            notes = [row[0] for row in conn.execute("SELECT note FROM it_restart").fetchall()]
            assert notes == [f"before restart {tenant}"]
            conn.execute("DROP TABLE it_restart")
        # One loop device per image: a stale one would make the volume's label ambiguous.
        devices = lab.sh(db1, f"losetup -j /var/lib/shadowdb/volumes/{tenant}.img").strip().splitlines()
        assert len(devices) == 1, devices
        assert lab.sh(db1, f"findmnt -n -o SOURCE /mnt/db/{tenant}").strip() == devices[0].split(":")[0]
    failed = lab.sh(db1, "systemctl list-units --failed --no-legend --plain 'shadowdb-*'").strip()
    assert failed == "", failed
    lab.remember_loops()
    # The other host was not disturbed.
    lab.wait_serving(db2, "itc", timeout=10)

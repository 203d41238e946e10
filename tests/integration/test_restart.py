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


# A device that is no tenant's, attached by the host's own volume helper (a settings file of its
# own: the helper makes the node of a new loop device in a host without udev, then attaches).
_FOREIGN = "it-foreign"
_FOREIGN_ENV = f"/etc/shadowdb/volumes/{_FOREIGN}.env"
_HELPER = "/usr/local/libexec/shadowdb/shadowdb-volume"


def test_a_label_link_to_another_device_is_never_mounted(lab, db1):
    """`mount LABEL=x` follows /dev/disk/by-label/x without probing the device it names, and on a
    real host that udev link can name another disk than the one the label was checked on (two
    disks of one label: the last probed wins; a relabel udev did not see). Here the link names a
    device of another label while the tenant's own device is the only one carrying the tenant's:
    the volume helper must still mount its own device (it mounts the loop device it checked, and
    checks what got mounted). Before, its `mount LABEL=` mounted the other device."""
    tenant, image, link = "itb", f"/root/{_FOREIGN}.img", "/dev/disk/by-label/itb"
    own = lab.sh(db1, f"losetup -j /var/lib/shadowdb/volumes/{tenant}.img | cut -d: -f1").strip()
    with lab.connect(db1, tenant, autocommit=True) as conn:
        conn.execute("CREATE TABLE it_foreign (note text)")
        conn.execute("INSERT INTO it_foreign VALUES ('on its own volume')")
    foreign = ""
    try:
        settings = f"BACKEND=loop\nSOURCE={image}\nLABEL={_FOREIGN}\nMOUNTPOINT=/mnt/{_FOREIGN}\n"
        lab.sh(db1, f"truncate -s 32M {image} && printf '{settings}' > {_FOREIGN_ENV}")
        foreign = lab.sh(db1, f"{_HELPER} device {_FOREIGN} 2>/dev/null").strip()
        lab.sh(db1, f"mkfs.ext4 -q -L {_FOREIGN} {foreign}")
        lab.sh(db1, f"mkdir -p /dev/disk/by-label && ln -sfn {foreign} {link}")
        assert lab.sh(db1, f"blkid -c /dev/null -o device -t LABEL={tenant}").split() == [own]
        # The tenant's volume is released and mounted again (its cluster with it).
        lab.sh(db1, f"systemctl stop shadowdb-postgres@{tenant} shadowdb-volume@{tenant}")
        lab.sh(db1, f"systemctl start shadowdb-postgres@{tenant}")
        # Its own image again, on whichever loop device was free (the release detached it, and
        # other labs on the machine may have taken its old number meanwhile).
        own = lab.sh(db1, f"losetup -j /var/lib/shadowdb/volumes/{tenant}.img | cut -d: -f1").strip()
        assert own and own != foreign
        assert lab.sh(db1, f"findmnt -n -o SOURCE --mountpoint /mnt/db/{tenant} | tail -n1").strip() == own
        assert lab.sh(db1, f"findmnt -n -S {foreign} || true").strip() == ""  # mounted nowhere
        lab.wait_serving(db1, tenant, timeout=60)
        with lab.connect(db1, tenant, autocommit=True) as conn:
            assert conn.execute("SELECT note FROM it_foreign").fetchall() == [("on its own volume",)]
            conn.execute("DROP TABLE it_foreign")
    finally:
        lab.sh(db1, f"rm -f {link}", check=False)
        if foreign:  # put the tenant back on its own volume if the attack got through
            units = f"shadowdb-postgres@{tenant} shadowdb-volume@{tenant}"
            lab.sh(db1, f"findmnt -S {foreign} >/dev/null && systemctl stop {units}", check=False)
        lab.sh(db1, f"{_HELPER} release {_FOREIGN}", check=False)  # detaches the loop device
        lab.sh(db1, f"rm -f {_FOREIGN_ENV} {image}; systemctl start shadowdb-postgres@{tenant}", check=False)

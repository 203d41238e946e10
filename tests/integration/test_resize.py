"""Growing a tenant's volume (a tier change) while a neighbour's sandbox was started after it.

A tenant service started after another tenant's volume was mounted must not pin that volume in
its own mount namespace: the volume must still grow (offline where the kernel refuses online
resizing, as in these containers) and be released on removal.
"""

import time

NAME = "itg"


def filesystem_bytes(lab, host: str, name: str) -> int:
    return int(lab.sh(host, f"df -B1 --output=size /mnt/db/{name} | tail -n1").strip())


def test_grow_a_volume_a_newer_sandbox_has_seen(lab, db2):
    onboard = lab.onboard(db2, {"name": NAME, "tier": "small"})
    assert onboard.rc == 0, onboard.describe()
    with lab.connect(db2, NAME, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (note text)")
        conn.execute("INSERT INTO kept VALUES ('before the resize')")
    small = filesystem_bytes(lab, db2, NAME)

    # itc's sandbox now starts with itg's volume mounted.
    lab.sh(db2, "systemctl restart shadowdb-postgres@itc.service")
    lab.wait_serving(db2, "itc", timeout=60)

    grow = lab.onboard(db2, {"name": NAME, "tier": "medium"})
    assert grow.rc == 0, grow.describe()
    medium = filesystem_bytes(lab, db2, NAME)
    assert medium > 1.8 * small, (small, medium)
    lab.wait_serving(db2, NAME, timeout=60)
    with lab.connect(db2, NAME) as conn:
        assert conn.execute("SELECT note FROM kept").fetchall() == [("before the resize",)]
        assert conn.execute("SHOW max_connections").fetchone() == ("100",)
    lab.wait_serving(db2, "itc", timeout=10)

    key = lab.image_keys(db2)[f"/var/lib/shadowdb/volumes/{NAME}.img"]
    remove = lab.remove(db2, NAME, confirm=NAME)
    assert remove.rc == 0, remove.describe()
    deadline = time.monotonic() + 15  # an autocleared loop device goes once its last user is gone
    while lab.loops_of([key]) and time.monotonic() < deadline:
        time.sleep(1)
    assert lab.loops_of([key]) == [], "the volume's loop device is still attached"
    assert not lab.exists(db2, f"/mnt/db/{NAME}")

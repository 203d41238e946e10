"""A full disk stays inside its tenant: ita's writes fail cleanly, itb on the same host keeps writing."""

import time

import psycopg
import pytest

FILL = "/mnt/db/ita/it-fill"
# About 8 MB of rows that do not compress (1 KiB of md5 text each, under the TOAST threshold).
INSERT_8MB = "INSERT INTO it_fill SELECT g, repeat(md5(g::text), 32) FROM generate_series(1, 8192) g"

# Fill ita's filesystem as root: preallocate what df reports free, then top it up with zeros
# until ENOSPC (bounded: at most 64 MiB more). Prints the bytes still free.
FILL_SCRIPT = f"""
avail=$(df -B1 --output=avail /mnt/db/ita | tail -n1)
fallocate -l "$avail" {FILL} 2>/dev/null || true
dd if=/dev/zero of={FILL}-top bs=1M count=64 2>/dev/null || true
sync
df -B1 --output=avail /mnt/db/ita | tail -n1
"""


def test_full_disk_fails_writes_of_that_tenant_only(lab, db1):
    with lab.connect(db1, "ita", autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS it_fill")
        conn.execute("CREATE TABLE it_fill (id int, pad text)")
    try:
        free = int(lab.sh(db1, FILL_SCRIPT).strip())
        assert free < 1024 * 1024, f"ita's filesystem still has {free} bytes free"

        with lab.connect(db1, "ita", autocommit=True) as conn:
            with pytest.raises(psycopg.errors.DiskFull) as full:
                conn.execute(INSERT_8MB)
            assert "No space left on device" in str(full.value), full.value
            assert "could not extend file" in str(full.value), full.value
            # Still serving reads.
            assert conn.execute("SELECT count(*) FROM it_fill").fetchone() == (0,)

        # The neighbour on the same host writes as usual.
        with lab.connect(db1, "itb", autocommit=True) as conn:
            conn.execute("DROP TABLE IF EXISTS it_fill")
            conn.execute("CREATE TABLE it_fill (id int, pad text)")
            conn.execute(INSERT_8MB)
            assert conn.execute("SELECT count(*) FROM it_fill").fetchone() == (8192,)
            conn.execute("DROP TABLE it_fill")
    finally:
        lab.sh(db1, f"rm -f {FILL} {FILL}-top")

    # Space is back: ita writes again (bounded retries while the server settles).
    deadline = time.monotonic() + 30
    while True:
        try:
            with lab.connect(db1, "ita", autocommit=True) as conn:
                conn.execute(INSERT_8MB)
                assert conn.execute("SELECT count(*) FROM it_fill").fetchone() == (8192,)
                conn.execute("DROP TABLE it_fill")
            break
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
    assert lab.sh(db1, "systemctl is-active shadowdb-postgres@ita.service").strip() == "active"

"""Density: small tenants onboarded onto ONE lab host until it holds SHADOWDB_DENSITY_N (300), or
until it cannot take one more, then printed: where and why it stopped (memory, file descriptors,
ports, inodes, loop devices), the time of single onboardings at the 1st, 100th, 200th and 300th
tenant (the rest go in batches of SHADOWDB_DENSITY_BATCH), the memory of an idle tenant (PSS of
its processes) and a no-op site.yml over all of them (time and changed count).

Long (about 1 h for 300 on a 2-core machine): run it on its own with `make density`.
"""

import json
import os
import time

import pytest

from tests.labkit import Lab

pytestmark = pytest.mark.density

TARGET = int(os.environ.get("SHADOWDB_DENSITY_N", "300"))
BATCH = int(os.environ.get("SHADOWDB_DENSITY_BATCH", "10"))
CHECKPOINTS = sorted({1, *range(100, TARGET + 1, 100), TARGET})

# Host-wide figures read in the lab host when the run stops (or ends).
LIMITS_SCRIPT = r"""
echo "memory_available_mib $(awk '/MemAvailable/ {print int($2/1024)}' /proc/meminfo)"
echo "file_handles $(cut -f1 /proc/sys/fs/file-nr) of $(cat /proc/sys/fs/file-max)"
echo "inodes_used_root $(df -Pi / | awk 'NR == 2 {print $5}')"
echo "loop_devices $(losetup -a | grep -c /var/lib/shadowdb/volumes || true)"
echo "port_leases $(grep -o '"[a-z0-9-]*": [0-9]*' /var/lib/shadowdb/ports/postgres.json | wc -l)"
"""

# PSS of the postmaster and its children (kB): what an idle tenant really costs the host.
PSS_SCRIPT = r"""
main=$(systemctl show -p MainPID --value shadowdb-postgres@{name}.service)
total=0
for pid in $main $(pgrep -P "$main"); do
  pss=$(awk '/^Pss:/ {{print $2}}' /proc/$pid/smaps_rollup 2>/dev/null || echo 0)
  total=$((total + ${{pss:-0}}))
done
echo $total
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = Lab("bdens", hosts=1, inventory_dir=tmp_path_factory.mktemp("bench-density"), routing=True)
    lab.up()
    lab.playbook("site.yml")
    yield lab
    lab.down()


def onboard(lab: Lab, host: str, names: list[str]) -> tuple[float, str | None]:
    """(seconds, None) or (seconds, the end of the failed run's output)."""
    extra = {"tenant_host": host}
    extra |= {"tenant": {"name": names[0]}} if len(names) == 1 else {"tenants": [{"name": n} for n in names]}
    start = time.monotonic()
    try:
        lab.playbook("tenant.yml", "-e", json.dumps(extra))
    except AssertionError as e:
        return time.monotonic() - start, str(e)[-1500:]
    return time.monotonic() - start, None


def test_density(lab):
    host = lab.hosts[0]
    made, timings, stopped = 0, {}, None
    print(f"\n[density] target {TARGET} small tenants on one lab host, batches of {BATCH}")
    while made < TARGET and stopped is None:
        nxt = made + 1
        if nxt in CHECKPOINTS:
            seconds, stopped = onboard(lab, host, [f"d{nxt}"])
            timings[nxt] = seconds
            print(f"[density]   tenant {nxt:>3}: {seconds:6.1f} s (single onboarding)", flush=True)
            made += 0 if stopped else 1
            continue
        upto = min(made + BATCH, TARGET, *(c - 1 for c in CHECKPOINTS if c > nxt))
        names = [f"d{i}" for i in range(nxt, upto + 1)]
        seconds, stopped = onboard(lab, host, names)
        print(
            f"[density]   tenants {nxt:>3}-{upto:<3}: {seconds:6.1f} s ({seconds / len(names):.1f} s each)",
            flush=True,
        )
        if stopped is None:
            made = upto
    limits = lab.sh(host, LIMITS_SCRIPT)
    print(f"[density] reached {made} tenants" + ("" if stopped is None else f"; stopped: {stopped}"))
    print("[density] host: " + "; ".join(limits.strip().splitlines()))
    first = timings.get(1)
    for n, seconds in sorted(timings.items()):
        growth = f" = {seconds / first:.2f}x the 1st (target <= 1.2x)" if first else ""
        print(f"[density]   onboarding #{n}: {seconds:.1f} s{growth}")

    time.sleep(30)  # let the last tenants settle to idle
    samples = [
        int(lab.sh(host, PSS_SCRIPT.format(name=f"d{n}")).strip() or 0) for n in (1, made // 2 or 1, made)
    ]
    print(
        f"[density] PSS of an idle small tenant: {sum(samples) / len(samples) / 1024:.1f} MiB"
        f" (samples {samples} kB)"
    )

    # site.yml converges what the inventory lists: list the tenants there, settle once (the
    # inventory is part of the host's fingerprint), then time the no-op run.
    lab.write_host_vars(host, {"shadowdb_tenants": [{"name": f"d{n}"} for n in range(1, made + 1)]})
    start = time.monotonic()
    lab.playbook("site.yml")
    settle = time.monotonic() - start
    start = time.monotonic()
    out = lab.playbook("site.yml")
    noop = time.monotonic() - start
    recap = [line for line in out.splitlines() if line.startswith(host)]
    print(
        f"[density] site.yml over {made} tenants: first run {settle:.1f} s, no-op {noop:.1f} s"
        f" (target <= 60 s); {recap[-1] if recap else ''}"
    )
    assert made > 0, stopped

"""The raw baseline of the benches: the shell steps for one tenant done by hand
(tests/bench/raw_tenant.sh), timed on a lab host in the same run as what they are compared with."""

import subprocess
import time
from pathlib import Path

from tests.labkit import Lab

HERE = Path(__file__).parent


def raw_times(
    lab: Lab, host: str, runs: int, prefix: str = "raw", first_port: int = 15000, first_proxy_port: int = 0
) -> list[float]:
    """Seconds of each of `runs` raw tenants on host (removed again afterwards). With
    first_proxy_port, each is also registered in etcd and routed by HAProxy (host is an etcd
    member and a proxy host, as in a routing lab of one host)."""
    lab.copy_to(host, HERE / "raw_tenant.sh", "/root/raw_tenant.sh")
    lab.copy_to(host, HERE / "raw_cleanup.sh", "/root/raw_cleanup.sh")
    times = []
    try:
        for i in range(runs):
            t0 = time.monotonic()
            proc = subprocess.run(
                ["podman", "exec", host, "sh", "/root/raw_tenant.sh", f"{prefix}{i}", str(first_port + i)]
                + ([str(first_proxy_port + i)] if first_proxy_port else []),
                env=lab.env,
                capture_output=True,
                text=True,
            )
            assert proc.returncode == 0, f"raw_tenant.sh failed: {proc.stdout[-2000:]}{proc.stderr[-2000:]}"
            times.append(time.monotonic() - t0)
    finally:
        lab.sh(host, "sh /root/raw_cleanup.sh")
    return times

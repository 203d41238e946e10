"""How much of the machine a stretch of a bench kept busy: the CPU-seconds every process of the
machine used (lab hosts, the controller, the API, its workers, the catalog, the bench's own
clients), from /proc/stat. On a quiet machine that is the stretch's own work, and busy CPU-seconds
divided by the number of cores is a floor no scheduling can go below: a ratio target that asks for
less wall time than that floor cannot be met on this machine, whatever the code does about
waiting."""

import os
import time

CORES = os.cpu_count() or 1


def busy_cpu_seconds() -> float:
    """CPU-seconds the machine has spent on anything but idling (and waiting for I/O) since boot."""
    with open("/proc/stat") as stat:
        # cpu  user nice system idle iowait irq softirq steal (guest time is inside user)
        values = [int(v) for v in stat.readline().split()[1:9]]
    idle = values[3] + values[4]
    steal = values[7]  # another guest's time on the hypervisor: not ours
    return (sum(values) - idle - steal) / os.sysconf("SC_CLK_TCK")


def background_load(seconds: float = 2.0) -> str:
    """How busy the machine is before a bench starts its work: the CPU figures count every
    process of the machine, so they hold only when this is near zero."""
    with CpuMeter() as idle:
        time.sleep(seconds)
    warning = "" if idle.cores_busy < 0.2 else " (NOT quiet: the CPU figures below include other work)"
    return f"machine load before the bench {idle.cores_busy:.2f} of {CORES} cores{warning}"


class CpuMeter:
    """`with CpuMeter() as m: ...`, then m.busy (CPU-seconds), m.wall (s), m.cores_busy."""

    def __enter__(self):
        self._busy0, self._wall0 = busy_cpu_seconds(), time.monotonic()
        return self

    def __exit__(self, *_exc):
        self.busy = busy_cpu_seconds() - self._busy0
        self.wall = time.monotonic() - self._wall0

    @property
    def cores_busy(self) -> float:
        return self.busy / self.wall if self.wall else 0.0

    @property
    def floor(self) -> float:
        """The least wall time this much CPU work needs on this machine's cores."""
        return self.busy / CORES

    def summary(self, tenants: int) -> str:
        return (
            f"CPU {self.busy:6.1f} s busy = {self.busy / tenants:5.2f} s/tenant,"
            f" {self.cores_busy:4.2f} of {CORES} cores busy; floor on {CORES} cores {self.floor:6.1f} s"
        )

"""An HA lab: three db hosts and one etcd + HAProxy host (podman containers booting systemd) on
the lab's own network with fixed addresses, so that a host stopped by a fault comes back at the
same address. Names: sdb-<kind>-<checkout hash>-{db1,db2,db3,px1}; network sdb-<kind>-<hash>.

    lab = HALab("habench", inventory_dir)
    lab.up()                      # removes a stale lab of the same name first
    lab.converge({"name": "hb", "replicas": 2})
    ...
    lab.down()

The network is a free /24 of 10.89.100-249 (the first not taken by another podman network,
from a place derived from the lab's name, so two checkouts' labs do not collide);
SHADOWDB_HA_BENCH_NET (first three octets of a /24, e.g. 10.89.214) fixes it instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

from tests.labkit import Lab

IMAGE = "localhost/shadowdb-lab:trixie-1"
RELEASE_LOOPS = (
    "systemctl stop 'shadowdb-*' 2>/dev/null; for f in /var/lib/shadowdb/volumes/*.img; do "
    '[ -e "$f" ] && losetup -j "$f" | grep -v "(lost)" | cut -d: -f1 | xargs -r -n1 losetup -d; done; true'
)


class HALab(Lab):
    """Lab (tests/labkit.py) with its own start and stop: fixed addresses, a proxy host."""

    def __init__(self, kind: str, inventory_dir: Path, net: str | None = None):
        assert kind.startswith("ha"), "HA labs are named sdb-ha...-<hash>"
        super().__init__(kind, hosts=0, inventory_dir=inventory_dir)
        self.net = net or os.environ.get("SHADOWDB_HA_BENCH_NET") or self._free_net()
        self.db = {f"{self.name}-db{i}": f"{self.net}.{10 + i}" for i in (1, 2, 3)}
        self.proxy = (f"{self.name}-px1", f"{self.net}.10")
        self.hosts = [*self.db, self.proxy[0]]

    def _free_net(self) -> str:
        """The first /24 of 10.89.100-249 that no other podman network holds, searched from a
        place derived from the lab's name (a stale network of this lab's own name counts free)."""
        networks = json.loads(self._podman("network", "ls", "--format", "json").stdout or "[]")
        taken = {
            subnet["subnet"].rsplit(".", 1)[0]
            for network in networks
            if network.get("name") != self.name
            for subnet in network.get("subnets") or []
        }
        first = int(hashlib.sha256(self.name.encode()).hexdigest(), 16) % 150
        for step in range(150):
            net = f"10.89.{100 + (first + step) % 150}"
            if net not in taken:
                return net
        raise RuntimeError("no free /24 in 10.89.100-249 for the HA lab's network")

    def _podman(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["podman", *args], env=self.env, capture_output=True, text=True, check=check)

    def up(self) -> None:
        self.down()
        cache = Path.home() / ".cache" / "shadowdb" / "apt-archives"
        cache.mkdir(parents=True, exist_ok=True)
        self._podman("network", "create", "--subnet", f"{self.net}.0/24", self.name)
        for host, address in [*self.db.items(), self.proxy]:
            self._podman(
                "run", "-d", "--name", host, "--hostname", host, "--network", self.name, "--ip", address,
                "--privileged", "--systemd=always", "--ulimit", "nofile=10000:10000",
                "--ulimit", "nproc=10000:10000", "--pids-limit", "32768",
                "--label", f"shadowdb.lab={self.name}",
                "-v", f"{cache}:/var/cache/apt/archives:O", IMAGE, "/sbin/init",
            )  # fmt: skip
        for host in self.hosts:
            subprocess.run(
                ["podman", "exec", host, "systemctl", "is-system-running", "--wait"],
                env=self.env,
                capture_output=True,
                timeout=180,
            )
        self.inventory_dir.mkdir(parents=True, exist_ok=True)
        inventory = {
            "all": {
                "vars": {
                    "ansible_connection": "containers.podman.podman",
                    "ansible_python_interpreter": "/usr/bin/python3",
                    "shadowdb_manage_global_sysctl": False,
                    "shadowdb_backup_default": False,
                    "shadowdb_ca_dir": str(self.inventory_dir / "pki"),
                },
                "children": {
                    "db": {"hosts": {h: {} for h in self.db}},
                    "etcd": {"hosts": {self.proxy[0]: {}}},
                    "proxy": {"hosts": {self.proxy[0]: {}}},
                    # The proxy host is the backup repository too; tenants have backups only
                    # when their spec asks (backup: true).
                    "backup": {"hosts": {self.proxy[0]: {}}},
                },
            }
        }
        (self.inventory_dir / "hosts.yml").write_text(yaml.safe_dump(inventory, sort_keys=True))

    def down(self) -> None:
        running = self._podman(
            "ps", "--format", "{{.Names}}", "--filter", f"label=shadowdb.lab={self.name}"
        ).stdout
        for host in running.split():
            self._podman("exec", host, "/bin/sh", "-c", RELEASE_LOOPS, check=False)
        for host in self.hosts:
            self._podman("rm", "--force", "--ignore", "--time", "10", host, check=False)
        self._podman("network", "rm", "--force", self.name, check=False)

    def converge(self, tenant: dict) -> None:
        self.playbook("site.yml")
        self.playbook("tenant_ha.yml", "-e", yaml.safe_dump({"tenant": tenant}, default_flow_style=True))


@contextmanager
def converged(kind: str, inventory_dir: Path, net: str | None = None) -> Iterator[HALab]:
    """An HA lab with site.yml converged (etcd, HAProxy, hosts), removed afterwards even when
    something failed: the shape of every tests/ha module's lab fixture."""
    lab = HALab(kind, inventory_dir, net=net)
    lab.up()
    try:
        lab.playbook("site.yml")
        yield lab
    finally:
        lab.down()

"""Placement: a new tenant goes to the inventory's db host with the fewest tenants.

The inventory also says whether routing is deployed (an etcd group): jobs then end with a
routing step (api/jobs.py).
"""

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

_TTL = 60.0


class NoHosts(Exception):
    """The inventory has no host to place a tenant on (HTTP 503)."""


class Inventory:
    """The hosts of one inventory group, read with ansible-inventory (cached for a minute)."""

    def __init__(self, inventory: Path, group: str, repo: Path):
        self.inventory, self.group, self.repo = inventory, group, repo
        self._data: dict = {}
        self._read_at = 0.0
        self._lock = threading.Lock()

    def hosts(self, group: str | None = None) -> list[str]:
        """The hosts of a group (default: the db group) and of its children."""
        with self._lock:
            if time.monotonic() - self._read_at > _TTL:
                self._data = self._read()
                self._read_at = time.monotonic()
            data = self._data
        hosts: set[str] = set()
        todo = [group or self.group]
        while todo:  # the group and its children
            entry = data.get(todo.pop(), {})
            hosts.update(entry.get("hosts", []))
            todo.extend(entry.get("children", []))
        return sorted(hosts)

    def routed(self) -> bool:
        """Whether the inventory deploys routing (a registry: an etcd group with hosts)."""
        return bool(self.hosts("etcd"))

    def _read(self) -> dict:
        bin_dir = os.path.dirname(os.path.abspath(sys.executable))
        env = dict(os.environ, ANSIBLE_CONFIG=str(self.repo / "ansible.cfg"))
        env["PATH"] = f"{bin_dir}:{env.get('PATH', '/usr/bin:/bin')}"
        proc = subprocess.run(
            ["ansible-inventory", "-i", str(self.inventory), "--list"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        if proc.returncode != 0:
            raise NoHosts(f"cannot read the inventory {self.inventory}: {proc.stderr.strip()[-300:]}")
        return json.loads(proc.stdout)


def pick_host(hosts: list[str], counts: dict[str, int]) -> str:
    """The host with the fewest tenants; ties go to the first name."""
    if not hosts:
        raise NoHosts("the inventory has no db host")
    return min(hosts, key=lambda h: (counts.get(h, 0), h))

"""The API's view of the inventory: read once, then refreshed in the background, so that no
request waits for ansible-inventory after the first."""

import threading
import time

import pytest

import api.inventory
from api.inventory import Inventory
from shadowdb import NoHosts

from .conftest import REPO, write_inventory


def view(version: int) -> dict:
    return {"_meta": {"hostvars": {"db-a": {"version": version}}}}


def test_an_old_view_is_served_while_a_new_one_is_read(tmp_path, monkeypatch):
    inventory = Inventory(write_inventory(tmp_path / "inv", ["db-a"]), "db", REPO)
    reads, gate = [], threading.Event()

    def read() -> dict:
        reads.append(len(reads) + 1)
        if len(reads) == 2:
            assert gate.wait(30), "the test never let the second read finish"
        if len(reads) == 3:
            raise NoHosts("cannot read the deployment's inventory")
        return view(len(reads))

    monkeypatch.setattr(inventory, "_read", read)
    assert inventory.hostvars("db-a") == {"version": 1}  # the first read: the request waits
    monkeypatch.setattr(api.inventory, "_TTL", 0.0)  # from now on every view is old

    # The second read hangs until the gate opens: a request that waited for it would hang too.
    assert inventory.hostvars("db-a") == {"version": 1}
    assert inventory.hostvars("db-a") == {"version": 1}
    assert reads == [1, 2], "one read in the background at a time"
    gate.set()
    wait_for_refresh(inventory)
    assert inventory.hostvars("db-a") == {"version": 2}

    # That request started the third read, which fails: the view read before is kept.
    wait_for_refresh(inventory)
    assert reads == [1, 2, 3]
    assert inventory.hostvars("db-a") == {"version": 2}
    wait_for_refresh(inventory)  # the fourth, started by that request


def wait_for_refresh(inventory: Inventory, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while inventory._refreshing:
        if time.monotonic() > deadline:
            pytest.fail("the background read did not end")
        time.sleep(0.01)

"""Pure helpers of the VM lab: QMP framing and client (against a fake server), qemu's command
line, the disk list, and the refusals of shadowdb_vm_disk. No qemu needed."""

import json
import os
import socket
import threading

import pytest
import shadowdb_vm
import shadowdb_vm_disk
from ansible.module_utils import shadowdb_qmp as qmp
from ansible.module_utils import shadowdb_vm as vmu


def test_encode_is_one_json_line():
    data = qmp.encode("device_del", {"id": "disk-acme"}, "sdb-1")
    assert data.endswith(b"\r\n") and data.count(b"\n") == 1
    assert json.loads(data) == {"execute": "device_del", "arguments": {"id": "disk-acme"}, "id": "sdb-1"}
    assert json.loads(qmp.encode("query-status")) == {"execute": "query-status"}


def test_decoder_keeps_partial_lines():
    d = qmp.Decoder()
    assert d.feed(b'{"return": {}, "id": "a"}\r\n{"event": "DEV') == [{"return": {}, "id": "a"}]
    assert d.feed(b'ICE_DELETED", "data": {"device": "x"}}\n\n') == [
        {"event": "DEVICE_DELETED", "data": {"device": "x"}}
    ]
    with pytest.raises(qmp.QMPError, match="not JSON"):
        d.feed(b"garbage\n")


def test_answer_of_matches_the_id_and_raises_errors():
    assert qmp.answer_of({"return": {"x": 1}, "id": "a"}, "a") == (True, {"x": 1})
    assert qmp.answer_of({"return": {}, "id": "b"}, "a") == (False, None)
    assert qmp.answer_of({"event": "RESET", "id": "a"}, "a") == (False, None)
    with pytest.raises(qmp.QMPError, match="GenericError: Duplicate ID"):
        qmp.answer_of({"error": {"class": "GenericError", "desc": "Duplicate ID"}, "id": "a"}, "a")


def test_event_matches_on_name_and_data():
    event = {"event": "DEVICE_DELETED", "data": {"device": "disk-acme", "path": "/x"}}
    assert qmp.event_matches(event, "DEVICE_DELETED", {"device": "disk-acme"})
    assert not qmp.event_matches(event, "DEVICE_DELETED", {"device": "disk-globex"})
    assert not qmp.event_matches(event, "RESET")


def fake_qemu(path, script):
    """A QMP server answering each command from ``script`` ({command: [messages to send]})."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    seen = []

    def serve():
        conn, _ = server.accept()
        with conn:
            conn.sendall(b'{"QMP": {"version": {}, "capabilities": []}}\r\n')
            decoder = qmp.Decoder()
            while True:
                data = conn.recv(4096)
                if not data:
                    return
                for message in decoder.feed(data):
                    seen.append(message)
                    for reply in script.get(message["execute"], [{"return": {}}]):
                        reply = dict(reply)
                        if "event" not in reply:
                            reply["id"] = message.get("id")
                        conn.sendall(json.dumps(reply).encode() + b"\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return server, seen


def test_client_skips_events_and_waits_for_one(tmp_path):
    path = str(tmp_path / "qmp.sock")
    deleted = {"event": "DEVICE_DELETED", "data": {"device": "disk-acme"}}
    server, seen = fake_qemu(
        path,
        {
            "device_del": [{"event": "RESET"}, {"return": {}}, deleted],
            "blockdev-add": [{"error": {"class": "GenericError", "desc": "node exists"}}],
        },
    )
    with server, qmp.QMPClient(path, timeout=5) as client:
        assert client.execute("device_del", id="disk-acme") == {}
        assert client.wait_event("DEVICE_DELETED", {"device": "disk-acme"}, timeout=5) == deleted
        with pytest.raises(qmp.QMPError, match="blockdev-add: GenericError: node exists"):
            client.execute("blockdev-add", **{"node-name": "disk-acme"})
    assert [m["execute"] for m in seen] == ["qmp_capabilities", "device_del", "blockdev-add"]
    assert seen[1]["arguments"] == {"id": "disk-acme"}


SPEC = dict(
    name="sdb-vm-db1",
    vm_dir="/srv/vms/sdb-vm-db1",
    memory_mb=1024,
    cpus=2,
    accel="tcg",
    tb_size_mb=128,
    kernel="/img/k",
    initrd="/img/i",
    ssh_port=22201,
    nice=19,
)


def option(argv, flag):
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def test_qemu_argv_core_options():
    argv = vmu.qemu_argv(dict(SPEC))
    assert argv[:4] == ["nice", "-n", "19", "qemu-system-x86_64"]
    assert option(argv, "-accel") == ["tcg,tb-size=128"]
    assert option(argv, "-cpu") == ["qemu64,-svm"]  # no kvm_amd in the guest (see qemu_argv)
    assert option(argv, "-m") == ["1024M"] and option(argv, "-smp") == ["2"]
    assert option(argv, "-machine") == ["pc"]  # ACPI PCI hotplug
    assert option(argv, "-netdev") == ["user,id=net0,hostfwd=tcp:127.0.0.1:22201-:22"]
    assert option(argv, "-qmp") == ["unix:/srv/vms/sdb-vm-db1/qmp.sock,server=on,wait=off"]
    assert "-daemonize" in argv
    root = json.loads(option(argv, "-blockdev")[0])
    assert root["file"]["filename"] == "/srv/vms/sdb-vm-db1/root.qcow2" and root["driver"] == "qcow2"
    # The root disk in the lowest free slot: a tenant disk can never probe before it (/dev/vda).
    assert "virtio-blk-pci,drive=root,id=root,addr=0x2" in option(argv, "-device")
    assert "systemd.hostname=sdb-vm-db1" in option(argv, "-append")[0]


def test_qemu_argv_attaches_listed_disks_again_in_order():
    argv = vmu.qemu_argv(dict(SPEC, disks={"globex": "/d/globex.raw", "acme": "/d/acme.raw"}, nice=None))
    assert argv[0] == "qemu-system-x86_64"
    blockdevs = [json.loads(b) for b in option(argv, "-blockdev")][1:]
    assert [b["node-name"] for b in blockdevs] == ["disk-acme", "disk-globex"]
    assert blockdevs[0]["file"]["filename"] == "/d/acme.raw"
    devices = option(argv, "-device")
    assert "virtio-blk-pci,id=disk-acme,drive=disk-acme,serial=acme" in devices
    assert "virtio-blk-pci,id=disk-globex,drive=disk-globex,serial=globex" in devices


def test_kvm_has_no_translation_cache_and_append_extra():
    argv = vmu.qemu_argv(dict(SPEC, accel="kvm", append=vmu.kernel_append("x", "quiet")))
    assert option(argv, "-accel") == ["kvm"] and option(argv, "-cpu") == []
    assert option(argv, "-append")[0].endswith(" quiet")


def test_device_add_and_blockdev_arguments():
    assert vmu.disk_device("acme") == {
        "driver": "virtio-blk-pci",
        "id": "disk-acme",
        "drive": "disk-acme",
        "serial": "acme",
    }
    assert vmu.blockdev("acme", "/d/acme.raw")["file"] == {
        "driver": "file",
        "filename": "/d/acme.raw",
        "aio": "threads",
    }


def test_disk_list_round_trip(tmp_path):
    path = str(tmp_path / "disks.json")
    assert vmu.load_disks(path) == {}
    vmu.save_disks(path, {"globex": "/d/g.raw", "acme": "/d/a.raw"})
    assert vmu.load_disks(path) == {"acme": "/d/a.raw", "globex": "/d/g.raw"}
    (tmp_path / "disks.json").write_text("[1]")
    with pytest.raises(ValueError, match="expected"):
        vmu.load_disks(path)


def test_attached_ids_keeps_children_only():
    answer = [
        {"name": "type", "type": "string"},
        {"name": "disk-acme", "type": "child<virtio-blk-pci>"},
        {"name": "root", "type": "child<virtio-blk-pci>"},
    ]
    assert vmu.attached_ids(answer) == {"disk-acme", "root"}


def test_pid_alive(tmp_path):
    import os

    assert vmu.pid_alive(os.getpid())
    assert not vmu.pid_alive(None)
    assert vmu.read_pid(str(tmp_path / "none")) is None


def test_keyscan_lines_name_the_loopback_port():
    out = "# 127.0.0.1:22201 SSH-2.0-OpenSSH_10.0\n[127.0.0.1]:22201 ssh-ed25519 AAAAC3Nza\n"
    assert shadowdb_vm.keyscan_lines(out, 22201) == ["[127.0.0.1]:22201 ssh-ed25519 AAAAC3Nza"]


def test_disk_refusals():
    assert shadowdb_vm_disk.label_refusal("acme", "") is None
    assert shadowdb_vm_disk.label_refusal("acme", "LABEL=acme\nTYPE=ext4\n") is None
    why = shadowdb_vm_disk.label_refusal("acme", "LABEL=globex\nTYPE=ext4\n")
    assert "refusing to delete its disk" in why and "labelled 'globex', which is not tenant acme" in why
    assert shadowdb_vm_disk.shrink_refusal("acme", 2 * vmu.MIB, 1) is not None
    assert shadowdb_vm_disk.shrink_refusal("acme", vmu.MIB, 2) is None


def test_vm_disk_module_check_mode_and_absent_without_vm(run_module, tmp_path):
    vm_dir = tmp_path / "vm"
    vm_dir.mkdir()
    acme = {"dir": str(vm_dir), "tenants": [{"name": "acme", "size_mb": 8}]}
    result, _ = run_module("shadowdb_vm_disk", acme, check_mode=True)
    assert result["changed"] and not result["running"]
    assert not (vm_dir / "disks").exists()
    result, _ = run_module("shadowdb_vm_disk", acme)
    assert (vm_dir / "disks" / "acme.raw").stat().st_size == 8 * vmu.MIB
    assert vmu.load_disks(str(vm_dir / "disks.json")) == {"acme": str(vm_dir / "disks" / "acme.raw")}
    again, _ = run_module("shadowdb_vm_disk", acme)
    assert not again["changed"]
    shrink, _ = run_module("shadowdb_vm_disk", dict(acme, tenants=[{"name": "acme", "size_mb": 4}]))
    assert shrink["failed"] and "shrinking is refused" in shrink["msg"]
    gone, _ = run_module("shadowdb_vm_disk", dict(acme, state="absent"))
    assert gone["changed"] and not (vm_dir / "disks" / "acme.raw").exists()
    assert vmu.load_disks(str(vm_dir / "disks.json")) == {}


def test_vm_disk_module_detached_keeps_the_file_off_the_list(run_module, tmp_path):
    vm_dir = tmp_path / "vm"
    vm_dir.mkdir()
    acme = {"dir": str(vm_dir), "tenants": [{"name": "acme", "size_mb": 8}]}
    run_module("shadowdb_vm_disk", acme)
    (vm_dir / "disks" / "acme.raw").write_bytes(b"data")  # the tenant's filesystem, say
    detached, _ = run_module("shadowdb_vm_disk", dict(acme, state="detached"))
    assert detached["changed"] and detached["actions"] == {"acme": ["took it off the list"]}
    assert (vm_dir / "disks" / "acme.raw").read_bytes().startswith(b"data")
    assert vmu.load_disks(str(vm_dir / "disks.json")) == {}
    again, _ = run_module("shadowdb_vm_disk", dict(acme, state="detached"))
    assert not again["changed"]
    back, _ = run_module("shadowdb_vm_disk", acme)  # listed again, the file grown back to 8 MiB
    assert vmu.load_disks(str(vm_dir / "disks.json")) == {"acme": str(vm_dir / "disks" / "acme.raw")}
    assert (vm_dir / "disks" / "acme.raw").read_bytes().startswith(b"data")


def test_vm_disk_module_resizes_a_plugged_disk_smaller_than_wanted(run_module, tmp_path):
    """The file already has the size (a run failed after growing it): qemu's node is what counts."""
    vm_dir = tmp_path / "vm"
    (vm_dir / "disks").mkdir(parents=True)
    (vm_dir / "disks" / "acme.raw").write_bytes(b"")
    os.truncate(vm_dir / "disks" / "acme.raw", 8 * vmu.MIB)
    vmu.save_disks(str(vm_dir / "disks.json"), {"acme": str(vm_dir / "disks" / "acme.raw")})
    server, seen = fake_qemu(
        str(vm_dir / "qmp.sock"),
        {
            "qom-list": [{"return": [{"name": "disk-acme", "type": "child<virtio-blk-pci>"}]}],
            "query-named-block-nodes": [
                {"return": [{"node-name": "disk-acme", "image": {"virtual-size": 4 * vmu.MIB}}]}
            ],
        },
    )
    with server:
        result, _ = run_module(
            "shadowdb_vm_disk", {"dir": str(vm_dir), "tenants": [{"name": "acme", "size_mb": 8}]}
        )
    assert result["changed"] and result["running"], result
    assert result["actions"] == {"acme": ["told the guest its new size (4 to 8 MiB, block_resize)"]}
    resize = [m for m in seen if m["execute"] == "block_resize"]
    assert [m["arguments"] for m in resize] == [{"node-name": "disk-acme", "size": 8 * vmu.MIB}]
    assert "device_add" not in [m["execute"] for m in seen]

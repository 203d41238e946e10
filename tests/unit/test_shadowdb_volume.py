"""Tests of library/shadowdb_volume.py: pure helpers, and the module's refusals and check mode run
for real as a subprocess on image files (the steps that attach and mount are covered by the
integration tests on lab hosts)."""

import shutil
import subprocess

import pytest
import shadowdb_volume as sv

MODULE = "shadowdb_volume"
MIB = 1048576


def test_parse_blkid_export():
    assert sv.parse_blkid_export("DEVNAME=/dev/loop3\nLABEL=acme\nTYPE=ext4\n\n") == {
        "DEVNAME": "/dev/loop3",
        "LABEL": "acme",
        "TYPE": "ext4",
    }
    assert sv.parse_blkid_export("") == {}


@pytest.mark.parametrize(
    "found, refused",
    [
        ({}, False),
        ({"TYPE": "ext4", "LABEL": "acme"}, False),
        ({"TYPE": "ext4", "LABEL": "globex"}, True),
        ({"TYPE": "xfs", "LABEL": "acme"}, True),
        ({"TYPE": "ext4"}, True),
    ],
)
def test_foreign_filesystem(found, refused):
    why = sv.foreign_filesystem(found, "acme")
    assert (why is not None) == refused
    if refused:
        assert "which is not tenant acme" in why


def test_shrink_refusal_names_both_sizes():
    assert sv.shrink_refusal("acme", 1024 * MIB, 1024) is None
    assert sv.shrink_refusal("acme", 512 * MIB, 1024) is None
    why = sv.shrink_refusal("acme", 2048 * MIB, 1024)
    assert "tenant acme" in why and "2048 MiB" in why and "1024 MiB" in why and "shrinking is refused" in why


def test_parse_sizes_and_growing():
    assert sv.parse_sizes("1073741824 1073741824 mounted\n") == (1073741824, 1073741824, True)
    assert sv.parse_sizes("2147483648 1073741824 unmounted") == (2147483648, 1073741824, False)
    with pytest.raises(sv.VolumeError):
        sv.parse_sizes("garbage")
    assert sv.needs_growing(2048 * MIB, 1024 * MIB)
    assert not sv.needs_growing(1024 * MIB, 1024 * MIB)
    assert not sv.needs_growing(1024 * MIB + 4096, 1024 * MIB)  # within a MiB: ext4 rounding


def volume_args(tmp_path, **extra):
    args = dict(
        name="acme",
        source=str(tmp_path / "acme.img"),
        size_mb=16,
        env_file=str(tmp_path / "volumes" / "acme.env"),
        env_content="BACKEND=loop\n",
        unit="shadowdb-volume@acme.service",
    )
    args.update(extra)
    return args


def test_missing_disk_is_refused_before_anything_is_written(run_module, tmp_path):
    args = volume_args(tmp_path, backend="device", source="/dev/does-not-exist")
    result, _ = run_module(MODULE, args)
    assert result["failed"]
    assert "/dev/does-not-exist" in result["msg"] and "acme" in result["msg"]
    assert "not a block device" in result["msg"]
    assert not (tmp_path / "volumes").exists()


def test_shrinking_an_image_is_refused(run_module, tmp_path):
    image = tmp_path / "acme.img"
    with open(image, "wb") as f:
        f.truncate(32 * MIB)
    result, _ = run_module(MODULE, volume_args(tmp_path))
    assert result["failed"] and "32 MiB, asked for 16 MiB" in result["msg"]
    assert image.stat().st_size == 32 * MIB
    assert not (tmp_path / "volumes").exists()


@pytest.mark.skipif(not shutil.which("mkfs.ext4") or not shutil.which("blkid"), reason="needs e2fsprogs")
def test_an_image_holding_another_tenants_filesystem_is_refused(run_module, tmp_path):
    image = tmp_path / "acme.img"
    with open(image, "wb") as f:
        f.truncate(16 * MIB)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "globex", str(image)], check=True)
    result, _ = run_module(MODULE, volume_args(tmp_path))
    assert result["failed"]
    assert "labelled 'globex'" in result["msg"] and "not tenant acme" in result["msg"]
    assert not (tmp_path / "volumes").exists()


def test_check_mode_reports_a_new_volume_and_changes_nothing(run_module, tmp_path):
    result, _ = run_module(MODULE, volume_args(tmp_path), check_mode=True)
    assert result["changed"], result
    assert result["actions"][0].startswith("wrote ") and "made the 16 MiB image" in result["actions"][1]
    assert not (tmp_path / "acme.img").exists() and not (tmp_path / "volumes").exists()


def test_bad_name_is_refused(run_module, tmp_path):
    result, _ = run_module(MODULE, volume_args(tmp_path, name="Bad_Name"))
    assert result["failed"] and "Bad_Name" in result["msg"]


def test_a_batch_reports_each_tenant_and_one_refusal_does_not_stop_the_others(run_module, tmp_path):
    shrunk = tmp_path / "globex.img"
    with open(shrunk, "wb") as f:
        f.truncate(32 * MIB)
    acme = volume_args(tmp_path)
    globex = volume_args(
        tmp_path, name="globex", source=str(shrunk), env_file=str(tmp_path / "volumes" / "globex.env")
    )
    result, _ = run_module(MODULE, {"tenants": [globex, acme]}, check_mode=True)
    assert not result.get("failed"), result
    assert set(result["results"]) == {"acme", "globex"}
    assert result["failed_tenants"] == {"globex": result["results"]["globex"]["msg"]}
    assert "32 MiB, asked for 16 MiB" in result["failed_tenants"]["globex"]
    assert not result["results"]["acme"]["failed"] and result["results"]["acme"]["changed"]
    assert result["changed"]


def test_a_batch_refuses_a_tenant_listed_twice_and_per_tenant_options_beside_it(run_module, tmp_path):
    acme = volume_args(tmp_path)
    result, _ = run_module(MODULE, {"tenants": [acme, acme]}, check_mode=True)
    assert result["failed"] and "acme listed more than once" in result["msg"]
    result, _ = run_module(MODULE, {"tenants": [acme], "unit": "x.service"}, check_mode=True)
    assert result["failed"] and "unit: give per-tenant options inside tenants" in result["msg"]

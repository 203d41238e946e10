"""Tests of library/shadowdb_member_tls.py (a Patroni member's keys and signing requests), run for
real as a subprocess on temporary directories: below a directory the tenant owns, nothing planted
is followed (the temporary directory stands in for /mnt/db/<tenant>)."""

import getpass
import os
import stat
import subprocess

import pytest

MODULE = "shadowdb_member_tls"


@pytest.fixture
def tls(run_module, tmp_path):
    tls_dir = tmp_path / "acme" / "tls"
    tls_dir.mkdir(parents=True)
    copies = tmp_path / "secrets"
    copies.mkdir(mode=0o700)

    def run(check_mode=False, **args):
        spec = dict(
            tls_dir=str(tls_dir), owner=getpass.getuser(), keys=["server", "etcd"], root_copy_dir=str(copies)
        )
        result, _proc = run_module(MODULE, spec | args, check_mode=check_mode)
        return result

    run.dir, run.copies = tls_dir, copies
    return run


def public_key_of(pem: str, kind: str) -> str:
    args = ["openssl", "req", "-noout", "-pubkey"] if kind == "csr" else ["openssl", "pkey", "-pubout"]
    return subprocess.run(args, input=pem, capture_output=True, text=True, check=True).stdout


def test_keys_are_made_once_and_requests_carry_them(tls):
    first = tls()
    assert first["changed"] is True and sorted(first["made"]) == ["etcd", "server"], first
    for name in ("server", "etcd"):
        key = (tls.dir / f"{name}.key").read_text()
        assert stat.S_IMODE(os.stat(tls.dir / f"{name}.key").st_mode) == 0o600
        assert (tls.copies / f"{name}.key").read_text() == key  # root's copy
        assert public_key_of(first["requests"][name]["csr"], "csr") == public_key_of(key, "key")
        assert first["requests"][name]["existing"] is None
        assert "PRIVATE KEY" not in str(first["requests"][name])  # the key never leaves the host
    (tls.dir / "server.crt").write_text("-----BEGIN CERTIFICATE-----\nx\n")
    again = tls()
    assert again["changed"] is False and again["made"] == [], again
    assert again["requests"]["server"]["existing"].startswith("-----BEGIN CERTIFICATE-----")


def test_a_kept_key_is_given_back_to_the_tenants_user(tls):
    tls()
    key = tls.dir / "server.key"
    os.chmod(key, 0o644)
    if os.geteuid() == 0:  # as root (CI): a key left by an earlier user of the name, another uid
        os.chown(key, 65534, 65534)
    fixed = tls()
    assert fixed["changed"] is True and fixed["made"] == [], fixed
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert os.stat(key).st_uid == os.getuid()
    assert tls()["changed"] is False


def test_check_mode_makes_nothing(tls):
    result = tls(check_mode=True)
    assert result["changed"] is True and result["requests"]["server"] == {"csr": None, "existing": None}
    assert os.listdir(tls.dir) == [] and os.listdir(tls.copies) == []


@pytest.mark.parametrize("planted", ["server.key", "server.crt"])
def test_a_link_planted_by_the_tenant_is_refused_not_followed(tls, tmp_path, planted):
    secret = tmp_path / "shadow"
    secret.write_text("root:$y$secret-hash:19000::::::\n")
    os.symlink(secret, tls.dir / planted)
    result = tls()
    assert result.get("failed") is True, result
    assert "symbolic link" in result["msg"] and str(tls.dir / planted) in result["msg"], result
    assert "secret-hash" not in str(result)
    assert secret.read_text() == "root:$y$secret-hash:19000::::::\n"


def test_a_planted_tls_directory_link_is_refused(tls, tmp_path):
    elsewhere = tmp_path / "etc"
    elsewhere.mkdir()
    os.rmdir(tls.dir)
    os.symlink(elsewhere, tls.dir)
    result = tls()
    assert result.get("failed") is True and "symbolic link" in result["msg"], result
    assert os.listdir(elsewhere) == []

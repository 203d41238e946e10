"""Tests of the pure helpers of library/shadowdb_cluster_prepare.py and shadowdb_cluster_apply.py
(both modules run on real lab hosts in every integration test that onboards a tenant)."""

import pwd
import random
import string

import shadowdb_cluster_apply as ca
import shadowdb_cluster_prepare as cp


def test_missing_extensions_are_named():
    installed = {"/usr/share/postgresql/17/extension/pgcrypto.control"}
    assert cp.missing_extensions(["pgcrypto", "postgis"], 17, exists=installed.__contains__) == ["postgis"]
    assert cp.missing_extensions([], 17, exists=installed.__contains__) == []


def test_version_refusal():
    assert cp.version_refusal("acme", None, 17) is None
    assert cp.version_refusal("acme", "17\n", 17) is None
    why = cp.version_refusal("acme", "16\n", 17)
    assert "PostgreSQL 16" in why and "asks for 17" in why and "acme" in why
    # What a tenant wrote into its own PG_VERSION is never echoed unless it is a version number.
    assert "not a version" not in cp.version_refusal("acme", "not a version", 17)
    assert "(unreadable PG_VERSION)" in cp.version_refusal("acme", "not a version", 17)


def test_new_passwords_are_long_distinct_and_alphanumeric():
    passwords = cp.new_passwords(random.Random(1))
    assert set(passwords) == {"postgres", "owner", "readonly"}
    assert len(set(passwords.values())) == 3
    for value in passwords.values():
        assert len(value) == 32 and set(value) <= set(string.ascii_letters + string.digits)


def test_user_changes():
    entry = pwd.struct_passwd(
        ("pg-acme", "x", 990, 990, "ShadowDB tenant acme", "/mnt/db/acme", "/usr/sbin/nologin")
    )
    assert cp.user_changes(entry, "/mnt/db/acme", 990, "ShadowDB tenant acme") == []
    assert cp.user_changes(entry, "/mnt/db/other", 991, "ShadowDB tenant acme") == [
        "--home",
        "/mnt/db/other",
        "--gid",
        "991",
    ]


def test_pg_file_settings_rows():
    rows = [("shared_buffers", "setting could not be applied"), ("work_mem", "invalid value")]
    assert ca.invalid_settings(rows) == ["work_mem"]
    assert ca.needs_restart(rows)
    assert ca.invalid_settings([("shared_buffers", "setting could not be applied")]) == []
    assert not ca.needs_restart([])


def test_last_error_line():
    journal = "LOG:  starting\nFATAL:  could not map anonymous shared memory\nLOG:  shut down\n"
    assert ca.last_error_line(journal, "fallback") == "FATAL:  could not map anonymous shared memory"
    assert ca.last_error_line("LOG: fine\n", "the server did not come up") == "the server did not come up"
    assert len(ca.last_error_line("FATAL: " + "x" * 1000, "")) == 300

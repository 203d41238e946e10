"""Tests of library/shadowdb_tenant_sql.py's pure helpers (the module itself runs against real
clusters in every integration and HA test that onboards a tenant)."""

import base64

import pytest
import shadowdb_tenant_sql as ts

# Made by PostgreSQL 17 (password_encryption scram-sha-256) for the password 'pencil'.
SERVER_VERIFIER = (
    "SCRAM-SHA-256$4096:+1xre8nsYdX20lpUePxxDg==$TUTJxMLJqV25SO2teQSW64NzXpyaGkPrS4QPEmz64OE="
    ":nLKPQCsCN3qE76z0cdl14KMfk+51p94l31BgRoKK2yw="
)


def test_a_verifier_made_by_the_server_matches_its_password_only():
    assert ts.scram_matches(SERVER_VERIFIER, "pencil")
    assert not ts.scram_matches(SERVER_VERIFIER, "pencil2")


def test_our_verifier_is_the_servers_for_the_same_salt():
    salt = base64.b64decode("+1xre8nsYdX20lpUePxxDg==")
    assert ts.scram_verifier("pencil", salt=salt) == SERVER_VERIFIER


def test_a_new_verifier_has_a_fresh_salt_and_matches():
    first, second = ts.scram_verifier("s3cret"), ts.scram_verifier("s3cret")
    assert first != second
    assert ts.scram_matches(first, "s3cret") and ts.scram_matches(second, "s3cret")
    assert "s3cret" not in first


@pytest.mark.parametrize("stored", [None, "", "md5abcdef", "SCRAM-SHA-256$x", "SCRAM-SHA-256$4096:!!$a:b"])
def test_anything_else_never_matches(stored):
    assert not ts.scram_matches(stored, "pencil")


def test_role_attributes():
    assert ts.flag_words(ts.owner_flags(False)) == (
        "LOGIN CREATEDB NOSUPERUSER NOCREATEROLE NOREPLICATION NOBYPASSRLS"
    )
    assert "SUPERUSER" in ts.flag_words(ts.owner_flags(True)).split()
    assert ts.flag_words(ts.READONLY_FLAGS) == (
        "LOGIN NOCREATEDB NOSUPERUSER NOCREATEROLE NOREPLICATION NOBYPASSRLS"
    )

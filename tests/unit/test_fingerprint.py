"""Unit tests for shadowdb/fingerprint.py: tenant fingerprints and code tree digests."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from pathlib import Path

import pytest

from shadowdb import fingerprint as dg
from shadowdb.fingerprint import FingerprintError

ROOT = Path(__file__).resolve().parents[2]
SPEC = {
    "name": "acme",
    "tier": "small",
    "settings": {"work_mem": "8MB"},
    "extensions": ["pgcrypto", "vector"],
}


# --- shadowdb_fingerprint ---


def test_fingerprint_is_sha256_of_canonical_json():
    expected_text = (
        '[{"extensions":["pgcrypto","vector"],"name":"acme",'
        '"settings":{"work_mem":"8MB"},"tier":"small"},"abc",1]'
    )
    expected = hashlib.sha256(expected_text.encode()).hexdigest()
    assert dg.shadowdb_fingerprint(SPEC, "abc", 1) == expected
    assert json.loads(expected_text) == [SPEC, "abc", 1]


def test_fingerprint_ignores_key_order_but_not_list_order():
    reordered = dict(reversed(list(SPEC.items())))
    assert dg.shadowdb_fingerprint(reordered) == dg.shadowdb_fingerprint(SPEC)
    swapped = SPEC | {"extensions": ["vector", "pgcrypto"]}
    assert dg.shadowdb_fingerprint(swapped) != dg.shadowdb_fingerprint(SPEC)


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ((SPEC,), (SPEC | {"tier": "medium"},)),
        ((SPEC,), (SPEC, "code")),
        ((SPEC, "code-1"), (SPEC, "code-2")),
        ((SPEC, "a", "b"), (SPEC, "b", "a")),
        (({"port": 1},), ({"port": "1"},)),
        (({"on": True},), ({"on": 1},)),
        (({"x": None},), ({},)),
        ((["a", "b"],), (["a"], "b")),
    ],
)
def test_fingerprint_distinguishes(left, right):
    assert dg.shadowdb_fingerprint(*left) != dg.shadowdb_fingerprint(*right)


def test_fingerprint_tuples_and_str_subclasses_hash_as_plain_values():
    class Unsafe(str):
        pass

    assert dg.shadowdb_fingerprint({"a": (1, Unsafe("x"))}) == dg.shadowdb_fingerprint({"a": [1, "x"]})


def test_fingerprint_non_ascii_is_stable():
    assert (
        dg.shadowdb_fingerprint({"name": "Zürich"})
        == hashlib.sha256(b'[{"name":"Z\\u00fcrich"}]').hexdigest()
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"a": {1, 2}}, "the value[0]['a'] is a set"),
        ({"a": b"x"}, "is a bytes"),
        ({1: "a"}, "has the key 1 of type int"),
        ({"a": [math.nan]}, "not canonical JSON data"),
        ({"a": math.inf}, "not canonical JSON data"),
    ],
)
def test_fingerprint_refuses_non_canonical_values(value, message):
    with pytest.raises(FingerprintError, match="^shadowdb_fingerprint: ") as exc:
        dg.shadowdb_fingerprint(value)
    assert message in str(exc.value)


# --- shadowdb_tree_digest ---


@pytest.fixture
def tree(tmp_path):
    """A small copy of a code layout: roles/ and library/ with files to skip."""
    root = tmp_path / "checkout"
    files = {
        "roles/tenant_cluster/tasks/main.yml": "---\n- name: x\n",
        "roles/tenant_cluster/templates/postgresql.conf.j2": "port = {{ port }}\n",
        "library/shadowdb_port.py": "print('port')\n",
        "library/__pycache__/shadowdb_port.cpython-313.pyc": "bytecode",
        "library/stale.pyc": "bytecode",
        "roles/tenant_cluster/.molecule/state.yml": "ephemeral",
    }
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def digest(root, *dirs):
    return dg.shadowdb_tree_digest([str(root / d) for d in dirs])


def test_tree_digest_is_stable_and_independent_of_location(tree, tmp_path):
    first = digest(tree, "roles", "library")
    assert first == digest(tree, "roles", "library")
    assert len(first) == 64 and int(first, 16) >= 0
    moved = tmp_path / "elsewhere" / "checkout"
    shutil.copytree(tree, moved)
    assert digest(moved, "roles", "library") == first


def test_tree_digest_changes_with_content_name_new_and_removed_files(tree):
    base = digest(tree, "roles", "library")
    main = tree / "roles/tenant_cluster/tasks/main.yml"

    main.write_text("---\n- name: y\n")
    edited = digest(tree, "roles", "library")
    assert edited != base
    main.write_text("---\n- name: x\n")
    assert digest(tree, "roles", "library") == base

    main.rename(main.with_name("other.yml"))
    assert digest(tree, "roles", "library") not in (base, edited)
    main.with_name("other.yml").rename(main)

    (tree / "library/new_module.py").write_text("")
    assert digest(tree, "roles", "library") != base
    (tree / "library/new_module.py").unlink()
    assert digest(tree, "roles", "library") == base

    (tree / "library/shadowdb_port.py").unlink()
    assert digest(tree, "roles", "library") != base


def test_tree_digest_skips_bytecode_and_molecule_state(tree):
    base = digest(tree, "roles", "library")
    (tree / "library/__pycache__/shadowdb_port.cpython-313.pyc").write_text("other bytecode")
    (tree / "library/stale.pyc").write_text("other")
    (tree / "library/another.pyc").write_text("new")
    (tree / "roles/tenant_cluster/.molecule/state.yml").write_text("other")
    assert digest(tree, "roles", "library") == base


def test_tree_digest_depends_on_which_directory_holds_a_file(tree):
    # Moving a file to the same relative path under another given directory changes the digest.
    base = digest(tree, "roles", "library")
    (tree / "library/shadowdb_port.py").rename(tree / "roles/shadowdb_port.py")
    assert digest(tree, "roles", "library") != base


def test_tree_digest_boundaries_between_files_are_unambiguous(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "x").write_text("12")
    (a / "y").write_text("3")
    (b / "x").write_text("1")
    (b / "y").write_text("23")
    assert dg.shadowdb_tree_digest([str(a)]) != dg.shadowdb_tree_digest([str(b)])


def test_tree_digest_accepts_a_single_path_and_files(tree):
    assert dg.shadowdb_tree_digest(str(tree / "roles")) == digest(tree, "roles")
    assert dg.shadowdb_tree_digest(tree / "roles") == digest(tree, "roles")
    single = dg.shadowdb_tree_digest([str(tree / "library/shadowdb_port.py")])
    assert single == dg.shadowdb_tree_digest([str(tree / "library/shadowdb_port.py")])
    (tree / "library/shadowdb_port.py").write_text("changed\n")
    assert dg.shadowdb_tree_digest([str(tree / "library/shadowdb_port.py")]) != single


def test_tree_digest_follows_symlinked_files(tree):
    base = digest(tree, "roles")
    target = tree / "shared.yml"
    target.write_text("a: 1\n")
    os.symlink(target, tree / "roles/tenant_cluster/shared.yml")
    linked = digest(tree, "roles")
    assert linked != base
    target.write_text("a: 2\n")
    assert digest(tree, "roles") != linked
    os.symlink(tree / "missing", tree / "roles/dangling.yml")
    assert digest(tree, "roles") == dg.shadowdb_tree_digest([str(tree / "roles")])


def test_tree_digest_missing_path_fails_naming_it(tree):
    missing = str(tree / "playbooks")
    with pytest.raises(FingerprintError, match=r"^shadowdb_tree_digest: paths\[1\]=") as exc:
        dg.shadowdb_tree_digest([str(tree / "roles"), missing])
    assert missing in str(exc.value) and "not a directory or a regular file" in str(exc.value)


@pytest.mark.parametrize("paths", [None, 42, {"roles": 1}, [None], [["roles"]]])
def test_tree_digest_rejects_non_paths(paths):
    with pytest.raises(FingerprintError, match="^shadowdb_tree_digest: "):
        dg.shadowdb_tree_digest(paths)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads unreadable files")
def test_tree_digest_unreadable_file_fails_naming_it(tree):
    secret = tree / "library/secret.py"
    secret.write_text("x")
    secret.chmod(0)
    with pytest.raises(FingerprintError, match="cannot read .*secret.py"):
        digest(tree, "library")


def test_tree_digest_of_this_repository_code():
    dirs = [str(ROOT / d) for d in ("roles", "library", "filter_plugins", "playbooks", "shadowdb")]
    assert dg.shadowdb_tree_digest(dirs) == dg.shadowdb_tree_digest(dirs)

"""Tests of roles/haproxy/library/shadowdb_haproxy_config.py, run for real as a subprocess.

The validator is a small shell command standing in for `haproxy -c`: it refuses a candidate
whose main file contains the word INVALID, so both outcomes are exercised on real files.
"""

import pytest

VALIDATE = ["/bin/sh", "-c", '! grep -q INVALID "$0/haproxy.cfg"', "%s"]


@pytest.fixture
def dest(tmp_path):
    d = tmp_path / "haproxy"
    (d / "conf.d").mkdir(parents=True)
    return d


def apply(run_module, dest, files, check_mode=False, **extra):
    args = {"dest": str(dest), "files": files, "prune": ["conf.d/*.cfg"], "validate": VALIDATE} | extra
    return run_module("shadowdb_haproxy_config", args, check_mode=check_mode)


def test_applies_a_valid_set_then_changes_nothing(run_module, dest):
    files = {"haproxy.cfg": "global\n", "conf.d/acme.cfg": "backend t_acme\n"}
    result, _ = apply(run_module, dest, files)
    assert result["changed"] and sorted(result["changed_files"]) == ["conf.d/acme.cfg", "haproxy.cfg"]
    assert (dest / "conf.d" / "acme.cfg").read_text() == "backend t_acme\n"
    again, _ = apply(run_module, dest, files)
    assert not again["changed"]


def test_refused_candidate_leaves_the_live_files_untouched(run_module, dest):
    apply(run_module, dest, {"haproxy.cfg": "global\n", "conf.d/acme.cfg": "backend t_acme\n"})
    result, proc = apply(run_module, dest, {"haproxy.cfg": "INVALID\n", "conf.d/beta.cfg": "x\n"})
    assert proc.returncode != 0 and result["failed"]
    assert "refused the candidate configuration" in result["msg"] and "untouched" in result["msg"]
    assert (dest / "haproxy.cfg").read_text() == "global\n"
    assert (dest / "conf.d" / "acme.cfg").exists() and not (dest / "conf.d" / "beta.cfg").exists()


def test_prunes_fragments_no_longer_wanted(run_module, dest):
    apply(run_module, dest, {"haproxy.cfg": "global\n", "conf.d/acme.cfg": "a\n", "conf.d/beta.cfg": "b\n"})
    result, _ = apply(run_module, dest, {"haproxy.cfg": "global\n", "conf.d/acme.cfg": "a\n"})
    assert result["changed"] and result["removed_files"] == ["conf.d/beta.cfg"]
    assert not (dest / "conf.d" / "beta.cfg").exists()


def test_check_mode_changes_nothing(run_module, dest):
    result, _ = apply(run_module, dest, {"haproxy.cfg": "global\n"}, check_mode=True, revision=5)
    assert result["changed"]
    assert not (dest / "haproxy.cfg").exists() and not (dest / ".shadowdb-revision").exists()


def test_an_older_registry_view_is_not_applied(run_module, dest):
    """Two runs read the registry at revisions 10 and 12; the one from 10 applies last."""
    newer = {"haproxy.cfg": "global\n", "conf.d/acme.cfg": "a\n", "conf.d/beta.cfg": "b\n"}
    older = {"haproxy.cfg": "global\n", "conf.d/acme.cfg": "a\n"}
    result, _ = apply(run_module, dest, newer, revision=12)
    assert result["changed"] and not result["stale"]
    assert (dest / ".shadowdb-revision").read_text().strip() == "12"

    result, _ = apply(run_module, dest, older, revision=10)
    assert not result["changed"] and result["stale"] and result["applied_revision"] == 12
    assert (dest / "conf.d" / "beta.cfg").exists(), "the older view must not drop beta's route"

    # A newer view (beta removed at revision 13) is applied, and the same revision again changes nothing.
    result, _ = apply(run_module, dest, older, revision=13)
    assert result["changed"] and result["removed_files"] == ["conf.d/beta.cfg"]
    result, _ = apply(run_module, dest, older, revision=13)
    assert not result["changed"] and not result["stale"]


def test_a_newer_revision_alone_is_bookkeeping(run_module, dest):
    files = {"haproxy.cfg": "global\n"}
    apply(run_module, dest, files, revision=3)
    result, _ = apply(run_module, dest, files, revision=7)
    assert not result["changed"]
    assert (dest / ".shadowdb-revision").read_text().strip() == "7"

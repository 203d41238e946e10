"""Tests of library/shadowdb_files.py, run for real as a subprocess on temporary directories."""

import os
import stat

import pytest

MODULE = "shadowdb_files"


def mode_of(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def files(run_module):
    def run(check_mode=False, **args):
        result, _proc = run_module(MODULE, args, check_mode=check_mode)
        return result

    return run


def test_creates_directories_and_files_then_reports_no_change(files, tmp_path):
    conf_dir = tmp_path / "etc" / "unit.d"
    spec = dict(
        directories=[dict(path=str(conf_dir), mode="0750")],
        files=[
            dict(path=str(conf_dir / "a.conf"), content="a = 1\n", mode="0600"),
            dict(path=str(tmp_path / "b.conf"), content="b = 2\n"),
        ],
        _ansible_diff=True,
    )
    first = files(**spec)
    assert first["changed"] is True, first
    assert first["changed_paths"] == [str(conf_dir), str(conf_dir / "a.conf"), str(tmp_path / "b.conf")]
    assert (conf_dir / "a.conf").read_text() == "a = 1\n"
    assert mode_of(conf_dir) == 0o750 and mode_of(tmp_path / "etc") == 0o750
    assert mode_of(conf_dir / "a.conf") == 0o600 and mode_of(tmp_path / "b.conf") == 0o644
    assert [d["after"] for d in first["diff"]] == ["a = 1\n", "b = 2\n"]

    second = files(**spec)
    assert second["changed"] is False, second
    assert second["changed_paths"] == [] and second["diff"] == []


def test_changed_content_is_replaced_and_diffed(files, tmp_path):
    target = tmp_path / "postgresql.conf"
    target.write_text("port = 1\n")
    os.chmod(target, 0o600)
    result = files(files=[dict(path=str(target), content="port = 2\n", mode="0600")], _ansible_diff=True)
    assert result["content_changed"] == [str(target)]
    assert result["diff"][0]["before"] == "port = 1\n" and result["diff"][0]["after"] == "port = 2\n"
    assert target.read_text() == "port = 2\n"
    # No temporary file is left beside it.
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != target.name and "args-" not in p.name) == []


def test_mode_alone_is_corrected_without_rewriting(files, tmp_path):
    target = tmp_path / "x.conf"
    target.write_text("x\n")
    os.chmod(target, 0o644)
    inode = os.stat(target).st_ino
    result = files(files=[dict(path=str(target), content="x\n", mode="0600")])
    assert result["changed_paths"] == [str(target)] and result["content_changed"] == []
    assert mode_of(target) == 0o600 and os.stat(target).st_ino == inode


def test_force_false_keeps_an_existing_file(files, tmp_path):
    secret = tmp_path / "passwords.json"
    secret.write_text("kept\n")
    os.chmod(secret, 0o600)
    result = files(files=[dict(path=str(secret), content="new\n", mode="0600", force=False)])
    assert result["changed"] is False
    assert secret.read_text() == "kept\n"
    (tmp_path / "gone.json").unlink(missing_ok=True)
    created = files(files=[dict(path=str(tmp_path / "gone.json"), content="new\n", mode="0600", force=False)])
    assert created["content_changed"] == [str(tmp_path / "gone.json")]


def test_check_mode_reports_and_writes_nothing(files, tmp_path):
    new_dir = tmp_path / "new"
    result = files(
        check_mode=True,
        directories=[dict(path=str(new_dir))],
        files=[dict(path=str(new_dir / "f"), content="f\n")],
    )
    assert result["changed"] is True and result["changed_paths"] == [str(new_dir), str(new_dir / "f")]
    assert not new_dir.exists()


def test_bad_input_names_the_problem_and_changes_nothing_after_it(files, tmp_path):
    result = files(files=[dict(path=str(tmp_path / "f"), content="f\n", owner="no-such-user-shadowdb")])
    assert result["failed"] is True and "unknown user 'no-such-user-shadowdb'" in result["msg"]
    assert not (tmp_path / "f").exists()

    result = files(files=[dict(path=str(tmp_path / "f"), content="f\n", mode="rw")])
    assert result["failed"] is True and "mode 'rw' is not an octal number" in result["msg"]

    result = files(files=[dict(path=str(tmp_path / "missing" / "f"), content="f\n")])
    assert result["failed"] is True and "does not exist" in result["msg"]

    result = files(files=[dict(path="relative/f", content="f\n")])
    assert result["failed"] is True and "is not absolute" in result["msg"]


def test_a_bad_entry_stops_the_run_before_any_write(files, tmp_path):
    result = files(
        files=[
            dict(path=str(tmp_path / "first"), content="1\n"),
            dict(path=str(tmp_path / "second"), content="2\n", group="no-such-group-shadowdb"),
        ]
    )
    assert result["failed"] is True and "unknown group 'no-such-group-shadowdb'" in result["msg"]
    assert not (tmp_path / "first").exists()

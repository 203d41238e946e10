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


# --- A tenant's directory: root must not follow what the tenant planted there ---------------
# tmp_path sits under /tmp (writable by everyone), so it stands for a directory another user
# controls: below it, no symbolic link may be followed, whoever runs the test.


@pytest.fixture
def secret(tmp_path):
    """A stand-in for /etc/shadow: a file outside the tenant's tree, which must stay untouched."""
    outside = tmp_path / "etc"
    outside.mkdir()
    target = outside / "shadow"
    target.write_text("root:$y$secret-hash:19000::::::\n")
    os.chmod(target, 0o640)
    return target


def untouched(target, before):
    st = os.stat(target)
    assert target.read_text() == "root:$y$secret-hash:19000::::::\n"
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_ino) == before


def snapshot(target):
    st = os.stat(target)
    return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_ino


def test_a_symlink_planted_where_a_file_is_written_is_refused(files, tmp_path, secret):
    data = tmp_path / "mnt" / "db" / "acme" / "data"
    data.mkdir(parents=True)
    os.symlink(secret, data / "postgresql.conf")
    before = snapshot(secret)
    result = files(files=[dict(path=str(data / "postgresql.conf"), content="port = 1\n", mode="0666")])
    assert result.get("failed") is True, result
    assert "symbolic link" in result["msg"] and str(data / "postgresql.conf") in result["msg"], result
    assert "secret-hash" not in json_text(result)
    untouched(secret, before)
    assert os.path.islink(data / "postgresql.conf")


def test_a_symlink_kept_when_only_attributes_would_change_is_refused(files, tmp_path, secret):
    """Same content (force false): the module would only chmod/chown; through a link it must not."""
    data = tmp_path / "t"
    data.mkdir()
    os.symlink(secret, data / "passwords.json")
    before = snapshot(secret)
    result = files(files=[dict(path=str(data / "passwords.json"), content="x", mode="0644", force=False)])
    assert result.get("failed") is True and "symbolic link" in result["msg"], result
    untouched(secret, before)


def test_a_symlinked_directory_component_is_refused(files, tmp_path, secret):
    tenant = tmp_path / "acme"
    tenant.mkdir()
    os.symlink(secret.parent, tenant / "tls")  # the tenant replaced its tls directory by a link
    before = snapshot(secret)
    result = files(
        directories=[dict(path=str(tenant / "tls"), mode="0777")],
        files=[dict(path=str(tenant / "tls" / "shadow"), content="owned\n", mode="0666")],
    )
    assert result.get("failed") is True and "symbolic link" in result["msg"], result
    untouched(secret, before)
    assert stat.S_IMODE(os.stat(secret.parent).st_mode) != 0o777
    # The same through a file entry alone (its directory is the link).
    result = files(files=[dict(path=str(tenant / "tls" / "shadow"), content="owned\n", mode="0666")])
    assert result.get("failed") is True and "symbolic link" in result["msg"], result
    untouched(secret, before)


def test_a_directory_entry_that_is_a_symlink_is_not_chmodded(files, tmp_path, secret):
    tenant = tmp_path / "acme"
    tenant.mkdir()
    os.symlink(secret, tenant / "run")
    before = snapshot(secret)
    result = files(directories=[dict(path=str(tenant / "run"), mode="0700")])
    assert result.get("failed") is True, result
    untouched(secret, before)


def test_a_hard_link_to_another_file_is_refused(files, tmp_path, secret):
    tenant = tmp_path / "acme"
    tenant.mkdir()
    os.link(secret, tenant / "server.crt")
    before = snapshot(secret)
    result = files(files=[dict(path=str(tenant / "server.crt"), content="x\n", mode="0644", force=False)])
    assert result.get("failed") is True and "hard link" in result["msg"], result
    untouched(secret, before)


def test_a_fifo_is_refused_without_blocking(files, tmp_path):
    tenant = tmp_path / "acme"
    tenant.mkdir()
    os.mkfifo(tenant / "postgresql.conf")
    result = files(files=[dict(path=str(tenant / "postgresql.conf"), content="x\n", mode="0600")])
    assert result.get("failed") is True and "not a regular file" in result["msg"], result


def test_read_returns_small_files_and_refuses_links_without_showing_content(files, tmp_path, secret):
    tenant = tmp_path / "acme"
    tenant.mkdir()
    (tenant / "PG_VERSION").write_text("17\n")
    result = files(read=[str(tenant / "PG_VERSION"), str(tenant / "missing")])
    assert result["contents"] == {str(tenant / "PG_VERSION"): "17\n", str(tenant / "missing"): None}
    assert result["changed"] is False
    (tenant / "PG_VERSION").unlink()
    os.symlink(secret, tenant / "PG_VERSION")
    result = files(read=[str(tenant / "PG_VERSION")])
    assert result.get("failed") is True and "symbolic link" in result["msg"], result
    assert "secret-hash" not in json_text(result)


def test_a_link_in_a_trusted_directory_is_still_followed(files, tmp_path):
    """Root's own links (for example /var/run -> /run) keep working: only untrusted ones are refused."""
    import tempfile

    base = tempfile.mkdtemp(dir="/root" if os.geteuid() == 0 else os.path.expanduser("~"))
    try:
        os.chmod(base, 0o700)
        real = os.path.join(base, "real")
        os.mkdir(real)
        os.symlink(real, os.path.join(base, "alias"))
        result = files(files=[dict(path=os.path.join(base, "alias", "f.conf"), content="ok\n", mode="0600")])
        assert result["changed"] is True, result
        with open(os.path.join(real, "f.conf")) as f:
            assert f.read() == "ok\n"
    finally:
        import shutil

        shutil.rmtree(base)


def json_text(result):
    import json

    return json.dumps(result)


def test_absent_removes_a_link_itself_never_what_it_points_to(files, tmp_path, secret):
    tenant = tmp_path / "acme"
    (tenant / "data").mkdir(parents=True)
    (tenant / "data" / "patroni.dynamic.json").write_text("{}\n")
    os.symlink(secret, tenant / "data" / "standby.signal")
    before = snapshot(secret)
    absent = [str(tenant / "data" / name) for name in ("patroni.dynamic.json", "standby.signal", "missing")]
    result = files(absent=absent)
    assert result["changed"] is True and sorted(result["changed_paths"]) == sorted(absent[:2]), result
    assert os.listdir(tenant / "data") == []
    untouched(secret, before)
    assert files(absent=absent)["changed"] is False
    # Through a planted directory link: refused, nothing removed where it points.
    os.rmdir(tenant / "data")
    os.symlink(secret.parent, tenant / "data")
    result = files(absent=[str(tenant / "data" / "shadow")])
    assert result.get("failed") is True and "symbolic link" in result["msg"], result
    untouched(secret, before)

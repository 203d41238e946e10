"""A tenant's view of /etc/passwd and /etc/group (module_utils/shadowdb_identity.py): the view
itself is attacked from inside a tenant's sandbox in tests/integration/test_isolation.py."""

import os
import stat

from ansible.module_utils.shadowdb_identity import converge_identity_view, identity_view

HOST_USERS = (
    "root:x:0:0:root:/root:/bin/bash\n"
    "postgres:x:100:102:PostgreSQL administrator,,,:/var/lib/postgresql:/bin/bash\n"
    "pg-acme:x:999:996:ShadowDB tenant acme:/mnt/db/acme:/usr/sbin/nologin\n"
    "pg-globex:x:998:995:ShadowDB tenant globex:/mnt/db/globex:/usr/sbin/nologin\n"
    "pg-umbrella:x:997:994:ShadowDB tenant umbrella:/mnt/db/umbrella:/usr/sbin/nologin\n"
)
GROUP = (
    "root:x:0:\n"
    "ssl-cert:x:101:postgres,pg-globex,pg-acme\n"
    "pg-acme:x:996:\n"
    "pg-globex:x:995:\n"
    "pg-umbrella:x:994:\n"
)


def test_the_view_keeps_the_host_and_the_tenant_and_drops_the_others():
    passwd, group = identity_view(HOST_USERS, GROUP, "pg-acme")
    assert passwd == HOST_USERS.replace(HOST_USERS.splitlines(keepends=True)[3], "").replace(
        HOST_USERS.splitlines(keepends=True)[4], ""
    )
    assert "globex" not in passwd + group and "umbrella" not in passwd + group
    assert group == "root:x:0:\nssl-cert:x:101:postgres,pg-acme\npg-acme:x:996:\n"


def test_a_tenant_not_yet_made_sees_no_tenant_at_all():
    passwd, group = identity_view(HOST_USERS, GROUP, "pg-initech")
    assert "pg-" not in passwd and "pg-" not in group


def test_views_are_written_once_and_root_owned(tmp_path):
    etc, dest = tmp_path / "etc", tmp_path / "dest"
    etc.mkdir()
    dest.mkdir()
    (etc / "passwd").write_text(HOST_USERS)
    (etc / "group").write_text(GROUP)
    assert converge_identity_view(str(dest), "pg-umbrella", True, etc=str(etc))  # check mode
    assert not (dest / "passwd").exists()
    assert converge_identity_view(str(dest), "pg-umbrella", False, etc=str(etc))
    assert not converge_identity_view(str(dest), "pg-umbrella", False, etc=str(etc))
    written = ((dest / "passwd").read_text(), (dest / "group").read_text())
    assert written == identity_view(HOST_USERS, GROUP, "pg-umbrella")
    for name in ("passwd", "group"):
        st = os.stat(dest / name)
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o644, 0, 0)
    # A new tenant on the host changes nothing in the others' views.
    hooli = "pg-hooli:x:990:990:ShadowDB tenant hooli:/mnt/db/hooli:/usr/sbin/nologin\n"
    (etc / "passwd").write_text(HOST_USERS + hooli)
    assert not converge_identity_view(str(dest), "pg-umbrella", False, etc=str(etc))

# Copyright: ShadowDB contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""A tenant's view of /etc/passwd and /etc/group: the host's, without the other tenants.

Every tenant has a system user and group named after it, so the host's /etc/passwd lists every
tenant of the host. The tenant's unit bind-mounts these views over /etc/passwd and /etc/group in
its sandbox. Used by shadowdb_cluster_prepare (standalone tenants) and shadowdb_identity_view
(Patroni members); modules import it as ``ansible.module_utils.shadowdb_identity``.
"""

import os

from ansible.module_utils.shadowdb_fs import converge_file, wanted_attributes

# Every tenant's user carries this comment (shadowdb_cluster_prepare, the patroni role).
TENANT_COMMENT_PREFIX = "ShadowDB tenant "
VIEW_FILES = ("passwd", "group")


def identity_view(passwd_text, group_text, own_user):
    """(passwd, group) as own_user's sandbox shows them: other tenants' users and groups left out,
    and their names taken out of any group's member list."""
    others = set()
    passwd = []
    for line in passwd_text.splitlines(keepends=True):
        fields = line.split(":")
        if len(fields) >= 5 and fields[4].startswith(TENANT_COMMENT_PREFIX) and fields[0] != own_user:
            others.add(fields[0])
            continue
        passwd.append(line)
    group = []
    for line in group_text.splitlines(keepends=True):
        fields = line.rstrip("\n").split(":")
        if fields[0] in others:
            continue
        if len(fields) == 4 and fields[3]:
            members = [m for m in fields[3].split(",") if m not in others]
            line = ":".join(fields[:3] + [",".join(members)]) + ("\n" if line.endswith("\n") else "")
        group.append(line)
    return "".join(passwd), "".join(group)


def converge_identity_view(directory, own_user, check_mode, etc="/etc"):
    """Write own_user's views into directory (root's, mode 0644); True when one changed."""
    with open(os.path.join(etc, "passwd"), encoding="utf-8") as f:
        passwd_text = f.read()
    with open(os.path.join(etc, "group"), encoding="utf-8") as f:
        group_text = f.read()
    changed = False
    for name, content in zip(VIEW_FILES, identity_view(passwd_text, group_text, own_user), strict=True):
        entry = dict(
            path=os.path.join(directory, name),
            content=content,
            owner="root",
            group="root",
            mode="0644",
            force=True,
        )
        changed |= converge_file(entry, wanted_attributes(entry), check_mode)[0]
    return changed

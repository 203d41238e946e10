# Copyright: ShadowDB contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Directories and files converged without following a link another user planted.

Shared by shadowdb_files and shadowdb_cluster_prepare (modules import it as
``ansible.module_utils.shadowdb_fs``).
"""

import grp
import os
import pwd
import stat

from ansible.module_utils.shadowdb_common import (
    open_safe_dir,
    safe_read_bytes,
    safe_write_atomic,
    split_path,
)

READ_LIMIT = 4096


def resolve_ids(owner, group):
    """(uid, gid) for names; -1 keeps the current process's (a new file) or the file's (os.chown)."""
    uid = gid = -1
    if owner:
        try:
            entry = pwd.getpwnam(owner)
        except KeyError:
            raise ValueError(f"unknown user '{owner}'") from None
        uid, gid = entry.pw_uid, entry.pw_gid
    if group:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise ValueError(f"unknown group '{group}'") from None
    return uid, gid


def parse_mode(text):
    try:
        mode = int(str(text), 8)
    except ValueError:
        raise ValueError(f"mode '{text}' is not an octal number") from None
    if not 0 <= mode <= 0o7777:
        raise ValueError(f"mode '{text}' is out of range")
    return mode


def wanted_attributes(entry):
    uid, gid = resolve_ids(entry.get("owner"), entry.get("group"))
    return parse_mode(entry.get("mode")), uid, gid


def attributes_differ(st, mode, uid, gid):
    return (
        stat.S_IMODE(st.st_mode) != mode
        or (uid != -1 and st.st_uid != uid)
        or (gid != -1 and st.st_gid != gid)
    )


def fix_attributes(fd, mode, uid, gid):
    """Owner and mode through the open descriptor: the name may have been swapped since."""
    os.fchown(fd, uid, gid)
    os.fchmod(fd, mode)


def converge_directory(entry, attributes, check_mode):
    """True if the directory was (or would be) created or corrected.

    The path is walked from "/" one directory at a time (see shadowdb_common.SafeDir): a symbolic
    link planted in a directory another user owns (a tenant's volume) is refused, not followed.
    """
    path = entry["path"]
    mode, uid, gid = attributes
    parts = split_path(path)
    current = open_safe_dir("/")
    try:
        created = False
        for part in parts:
            if current.lstat(part) is None:
                if check_mode:
                    return True
                os.mkdir(part, mode, dir_fd=current.fd)
                created = True
            nxt = current.open_dir(part)
            current.close()
            current = nxt
            if created:
                fix_attributes(current.fd, mode, uid, gid)
        if created:
            return True
        if attributes_differ(os.fstat(current.fd), mode, uid, gid):
            if not check_mode:
                fix_attributes(current.fd, mode, uid, gid)
            return True
        return False
    finally:
        current.close()


def read_current(parent, name):
    """(fd or None, text or None) of name in parent; text "" when not UTF-8 (then it is rewritten)."""
    try:
        fd = parent.open_file(name)
    except FileNotFoundError:
        return None, None
    try:
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read()
    except BaseException:
        os.close(fd)
        raise
    try:
        return fd, data.decode("utf-8")
    except UnicodeDecodeError:
        return fd, ""


def converge_file(entry, attributes, check_mode):
    """(attributes or content changed, content changed, before) of one file."""
    path, content = entry["path"], entry["content"]
    mode, uid, gid = attributes
    directory, name = os.path.split(os.path.normpath(path))
    try:
        parent = open_safe_dir(directory)
    except FileNotFoundError:
        if check_mode:
            return True, True, None
        raise ValueError(f"directory {directory} of {path} does not exist") from None
    with parent:
        st = parent.lstat(name)
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise ValueError(f"{path} is a directory")
        fd, before = read_current(parent, name)
        try:
            write = before is None or (entry["force"] and before != content)
            if write:
                if not check_mode:
                    safe_write_atomic(parent, name, content, mode, uid, gid)
                return True, True, before
            if attributes_differ(os.fstat(fd), mode, uid, gid):
                if not check_mode:
                    fix_attributes(fd, mode, uid, gid)
                return True, False, before
            return False, False, before
        finally:
            if fd is not None:
                os.close(fd)


def remove_file(path, check_mode):
    """Whether path (a file, or a link itself, never what it points to) was, or would be, removed.
    Its directory is walked as open_safe_dir does, so no planted link above it is followed."""
    directory, name = os.path.split(os.path.normpath(path))
    try:
        parent = open_safe_dir(directory)
    except FileNotFoundError:
        return False
    with parent:
        st = parent.lstat(name)
        if st is None:
            return False
        if stat.S_ISDIR(st.st_mode):
            raise ValueError(f"{path} is a directory")
        if not check_mode:
            os.unlink(name, dir_fd=parent.fd)
        return True


def read_small(path):
    """Text of a small file (at most READ_LIMIT bytes, UTF-8 or replaced), None when missing."""
    data = safe_read_bytes(path, READ_LIMIT)
    return None if data is None else data.decode("utf-8", errors="replace")

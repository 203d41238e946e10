# Copyright: ShadowDB contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Helpers shared by ShadowDB's modules: listening TCP ports and atomic file writes.

Modules import it as ``ansible.module_utils.shadowdb_common`` (ansible.cfg points module_utils at
this directory; Ansible ships it to the host inside each module's payload).
"""

import errno
import os
import tempfile

TCP_LISTEN = "0A"
PROC_NET_TCP = ("/proc/net/tcp", "/proc/net/tcp6")


def parse_listening_ports(text):
    """Return the set of local ports in LISTEN state from the content of /proc/net/tcp or /proc/net/tcp6."""
    ports = set()
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 4 or fields[3] != TCP_LISTEN:
            continue
        _addr, sep, port_hex = fields[1].rpartition(":")
        if not sep:
            continue
        try:
            ports.add(int(port_hex, 16))
        except ValueError:
            continue
    return ports


def read_listening_ports(paths=PROC_NET_TCP):
    """Return (listening ports, number of files read) from /proc/net files; unreadable files are skipped."""
    ports = set()
    read = 0
    for path in paths:
        try:
            with open(path, encoding="ascii", errors="replace") as f:
                text = f.read()
        except OSError:
            continue
        read += 1
        ports |= parse_listening_ports(text)
    return ports, read


def ensure_dir(path, mode):
    """Create directory path with mode if it does not exist yet (an existing one is left as it is)."""
    try:
        os.makedirs(path, mode=mode)
    except FileExistsError:
        if not os.path.isdir(path):
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path) from None
        return
    os.chmod(path, mode)  # makedirs mode is subject to the umask


def fsync_dir(directory):
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_atomic(path, text, mode, uid=-1, gid=-1):
    """Replace path with text (UTF-8), mode and owner (-1: ours) atomically: old or new file, never a part."""
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chown(tmp, uid, gid)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(directory)


def read_text(path):
    """Return the text (UTF-8) of path, or None if it does not exist (other OSErrors propagate)."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return None

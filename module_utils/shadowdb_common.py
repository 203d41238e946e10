# Copyright: ShadowDB contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Helpers shared by ShadowDB's modules: listening TCP ports, atomic file writes, safe paths,
enabling a unit.

Modules import it as ``ansible.module_utils.shadowdb_common`` (ansible.cfg points module_utils at
this directory; Ansible ships it to the host inside each module's payload).
"""

import errno
import os
import stat
import tempfile

# Enables a unit by its boot-time link alone, made on the file system (--root=/). `systemctl enable`
# also reloads systemd, which reads every unit file of the host (a second or more with a few hundred
# tenants), and an enable through systemd itself, even with --no-reload, marks every unit as needing
# a reload until the next one (so that the next new tenant's start would pay for one).
ENABLE_ON_DISK = ("systemctl", "--root=/", "enable")

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
            # On the descriptor, never by name: the name could be swapped in between.
            os.fchown(f.fileno(), uid, gid)
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
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


# --- Paths that another user may control -------------------------------------------------
# Root-run modules write into tenants' directories (/mnt/db/<tenant> belongs to the tenant's OS
# user). A path is walked one component at a time from "/" with O_NOFOLLOW, each step relative to
# the directory opened before it (dir_fd), so nothing can be swapped in between. A symbolic link is
# followed only while every directory so far is trusted (owned by root or by us, not writable by
# group or others) and the link itself belongs to root or us; below the first untrusted directory
# no symbolic link is followed, whatever it points to, and a regular file must have one link only
# (a hard link to someone else's file is refused). Nothing is read from a FIFO or device.

O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
O_NOFOLLOW_DIR = O_DIR | os.O_NOFOLLOW


class UnsafePathError(OSError):
    """A path crosses a symbolic link, a hard link or a special file where another user could plant one."""

    def __init__(self, path, why):
        super().__init__(errno.ELOOP, f"{path}: refused, {why}")
        self.filename = path
        self.why = why

    def __str__(self):
        return self.strerror


def _trusted_owners():
    return {0, os.geteuid()}


def _is_trusted_dir(st):
    return st.st_uid in _trusted_owners() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def split_path(path):
    """Components of an absolute path; '..' and relative paths are refused."""
    if not isinstance(path, str) or not os.path.isabs(path):
        raise UnsafePathError(str(path), "the path is not absolute")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafePathError(path, "the path contains '..'")
    return parts


class SafeDir:
    """An open directory (fd) reached without following untrusted links; close() it (or use `with`)."""

    def __init__(self, fd, path, trusted):
        self.fd, self.path, self.trusted = fd, path, trusted

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def child(self, name):
        return os.path.join(self.path, name)

    def lstat(self, name):
        """lstat of name in this directory, None when missing."""
        try:
            return os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def open_dir(self, name):
        """The subdirectory name as a SafeDir (FileNotFoundError when missing)."""
        path = self.child(name)
        try:
            fd = os.open(name, O_NOFOLLOW_DIR, dir_fd=self.fd)
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise type(exc)(exc.errno, exc.strerror, path) from None
            st = self.lstat(name)
            if st is None or not stat.S_ISLNK(st.st_mode):
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path) from None
            if not self.trusted or st.st_uid not in _trusted_owners():
                raise UnsafePathError(
                    path, f"it is a symbolic link in {self.path or '/'}, owned by another user"
                ) from None
            fd = os.open(name, O_DIR, dir_fd=self.fd)  # a trusted link: follow it
        try:
            trusted = self.trusted and _is_trusted_dir(os.fstat(fd))
        except OSError:
            os.close(fd)
            raise
        return SafeDir(fd, path, trusted)

    def open_file(self, name, flags=os.O_RDONLY):
        """fd of the regular file name in this directory (FileNotFoundError when missing)."""
        path = self.child(name)
        try:
            fd = os.open(name, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=self.fd)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise type(exc)(exc.errno, exc.strerror, path) from None
            raise UnsafePathError(path, "it is a symbolic link") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise UnsafePathError(path, "it is not a regular file")
            if not self.trusted and st.st_nlink > 1:
                raise UnsafePathError(
                    path, f"it has {st.st_nlink} hard links in {self.path}, owned by another user"
                )
            os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        return fd


def open_safe_dir(path):
    """Open directory path as a SafeDir, following links only where no other user could plant them."""
    parts = split_path(path)
    fd = os.open("/", O_DIR)
    current = SafeDir(fd, "/", _is_trusted_dir(os.fstat(fd)))
    try:
        for part in parts:
            nxt = current.open_dir(part)
            current.close()
            current = nxt
    except BaseException:
        current.close()
        raise
    current.path = "/" + "/".join(parts)
    return current


def safe_read_bytes(path, limit=None):
    """Bytes of regular file path (at most limit), no untrusted link followed; None if missing."""
    directory, name = os.path.split(os.path.normpath(path))
    if not name:
        raise UnsafePathError(path, "the path names no file")
    try:
        with open_safe_dir(directory) as parent:
            fd = parent.open_file(name)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as f:
        return f.read() if limit is None else f.read(limit)


def safe_read_text(path):
    """Text (UTF-8) of path as safe_read_bytes reads it; None if missing."""
    data = safe_read_bytes(path)
    return None if data is None else data.decode("utf-8")


def safe_write_atomic(parent, name, text, mode, uid=-1, gid=-1):
    """Replace name in the SafeDir parent with text: a new file made and renamed inside the open directory."""
    for _attempt in range(100):
        tmp = f".{name}.{os.urandom(6).hex()}.tmp"
        try:
            fd = os.open(
                tmp,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o600,
                dir_fd=parent.fd,
            )
            break
        except FileExistsError:
            continue
    else:
        raise FileExistsError(errno.EEXIST, "no free temporary name", parent.child(name))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fchown(f.fileno(), uid, gid)
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.rename(tmp, name, src_dir_fd=parent.fd, dst_dir_fd=parent.fd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=parent.fd)
        except OSError:
            pass
        raise
    os.fsync(parent.fd)

# Copyright: ShadowDB contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""A small QMP client (qemu's JSON machine protocol over a unix socket), standard library only.

Shared by shadowdb_vm and shadowdb_vm_disk (modules import it as
``ansible.module_utils.shadowdb_qmp``). QMP is one JSON object per line each way: the server
greets (``{"QMP": ...}``), the client enters command mode with ``qmp_capabilities``, then every
command gets one ``return`` or ``error`` answer, and events (``{"event": ...}``) may arrive between
them at any time. The framing and the answer matching are pure functions, unit tested without qemu.
"""

import json
import socket
import time


class QMPError(Exception):
    """A QMP error answer, a broken connection or a timeout; the text says which command."""


def encode(command, arguments=None, ident=None):
    """One command as the bytes QMP reads: a JSON object and a line end."""
    message = {"execute": command}
    if arguments:
        message["arguments"] = arguments
    if ident is not None:
        message["id"] = ident
    return (json.dumps(message, sort_keys=True) + "\r\n").encode()


class Decoder:
    """Splits the byte stream into messages; keeps a partial line for the next feed."""

    def __init__(self):
        self._buffer = b""

    def feed(self, data):
        self._buffer += data
        messages = []
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            line = line.strip()
            if line:
                try:
                    messages.append(json.loads(line))
                except ValueError as e:
                    raise QMPError(f"QMP sent a line that is not JSON: {line[:200]!r}") from e
        return messages


def answer_of(message, ident):
    """(is the answer to command ``ident``, its value). An error answer raises QMPError."""
    if "event" in message or message.get("id") != ident:
        return False, None
    if "error" in message:
        error = message["error"]
        raise QMPError(f"{error.get('class', 'Error')}: {error.get('desc', '')}")
    if "return" in message:
        return True, message["return"]
    return False, None


def event_matches(message, name, data=None):
    """Whether ``message`` is event ``name`` whose data holds every key/value of ``data``."""
    if message.get("event") != name:
        return False
    got = message.get("data") or {}
    return all(got.get(key) == value for key, value in (data or {}).items())


class QMPClient:
    """One QMP session: ``with QMPClient(path) as qmp: qmp.execute("query-status")``."""

    def __init__(self, path, timeout=10.0):
        self.path = path
        self.timeout = timeout
        self.events = []
        self._decoder = Decoder()
        self._pending = []
        self._ident = 0
        self._sock = None

    def __enter__(self):
        self.connect()
        return self

    def __exit__(self, *exc):
        self.close()

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        greeting = self._next_message(time.monotonic() + self.timeout)
        if "QMP" not in greeting:
            raise QMPError(f"{self.path}: no QMP greeting ({greeting})")
        self.execute("qmp_capabilities")

    def close(self):
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _next_message(self, deadline):
        while not self._pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise QMPError(f"{self.path}: no answer from qemu in time")
            self._sock.settimeout(left)
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                continue
            if not data:
                raise QMPError(f"{self.path}: qemu closed the QMP connection")
            self._pending.extend(self._decoder.feed(data))
        return self._pending.pop(0)

    def execute(self, command, timeout=None, **arguments):
        """Run ``command`` and return its answer; events seen meanwhile go to ``self.events``."""
        self._ident += 1
        ident = f"sdb-{self._ident}"
        self._sock.sendall(encode(command, arguments, ident))
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            message = self._next_message(deadline)
            if "event" in message:
                self.events.append(message)
                continue
            try:
                done, value = answer_of(message, ident)
            except QMPError as e:
                raise QMPError(f"{command}: {e}") from None
            if done:
                return value

    def wait_event(self, name, data=None, timeout=30.0):
        """The first event ``name`` (with ``data``), seen already or arriving within ``timeout``."""
        for i, message in enumerate(self.events):
            if event_matches(message, name, data):
                return self.events.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            message = self._next_message(deadline)
            if event_matches(message, name, data):
                return message
            if "event" in message:
                self.events.append(message)

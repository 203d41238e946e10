"""Wake a job's event streams when its events are written.

Every event is written by api.catalog.add_event(s), which notifies the catalog's channel
EVENTS_CHANNEL with the job's id when its transaction commits, whichever process wrote it (this
API's engine or a worker on another machine). One connection per API process listens on that
channel in a thread of its own and wakes the streams of that job (GET /v1/jobs/{id}/events).
Before, every open stream asked the catalog four times a second: 20 streams kept a tenth of a core
busy in the API and a quarter of that in the catalog. A stream still looks on its own every few
seconds, so a lost listening connection costs latency, never an event.
"""

import asyncio
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from .catalog import EVENTS_CHANNEL

log = logging.getLogger("shadowdb.api")

RECONNECT_SECONDS = 2.0
APPLICATION_NAME = "shadowdb-api-events"


class EventWaker:
    def __init__(self, conninfo: str):
        self.conninfo = conninfo
        self._waiting: dict[str, set[asyncio.Event]] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Listen from now on, waking streams that wait in `loop`."""
        self._loop = loop
        self._thread = threading.Thread(target=self._listen, name="shadowdb-event-waker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @contextmanager
    def subscribe(self, job_id) -> Iterator[asyncio.Event]:
        """An event set whenever the job gets a new event (clear it before looking)."""
        key, woken = str(job_id), asyncio.Event()
        with self._lock:
            self._waiting.setdefault(key, set()).add(woken)
        try:
            yield woken
        finally:
            with self._lock:
                waiting = self._waiting.get(key, set())
                waiting.discard(woken)
                if not waiting:
                    self._waiting.pop(key, None)

    def _wake(self, job_id: str) -> None:
        with self._lock:
            waiting = list(self._waiting.get(job_id, ()))
        for woken in waiting:
            try:
                self._loop.call_soon_threadsafe(woken.set)
            except RuntimeError:  # the loop has closed: the app is shutting down
                return

    def _listen(self) -> None:
        while not self._stopping.is_set():
            try:
                conn = psycopg.connect(self.conninfo, autocommit=True, application_name=APPLICATION_NAME)
                with conn:
                    conn.execute(f"LISTEN {EVENTS_CHANNEL}")
                    while not self._stopping.is_set():
                        for note in conn.notifies(timeout=1.0):
                            self._wake(note.payload)
            except psycopg.Error as e:
                log.warning("event notifications lost (%s); streams look every few seconds until back", e)
                self._stopping.wait(RECONNECT_SECONDS)

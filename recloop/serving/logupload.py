"""The request log's uploader: one thread putting sealed spool files as new whole objects, off the writer's path.

Object stores cannot append, so each spool file ``logspool`` seals becomes a new object:
``<host>-w<worker>-HH.jsonl``, then ``-HH-1.jsonl``, ``-HH-2.jsonl``..., each created only where no object is
(S3 ``If-None-Match``), so no run or restart overwrites another's. A file is renamed to name its target before
the PUT, so a kill between the PUT and the delete is recognised at the next start and not uploaded twice.
A failed upload is retried with doubling waits; given up, its lines are counted as dropped and logged.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import re
import threading
import time
from dataclasses import dataclass

from recloop import storage
from recloop.serving.logcounts import LogCounts
from recloop.serving.logtail import repair_tail

log = logging.getLogger("recloop.serving.requestlog")  # the request log's one logger: operators filter on it

_RETRY_CAP_S = 30.0  # the longest wait between two upload attempts
_SEQS_KEPT = 1_000  # next free object number per hour file: probed again when forgotten


@dataclass
class Sealed:
    """A spool file waiting for upload."""

    path: str  # local; renamed to ``<stem>.<id>.<seq>.put`` before each PUT
    folder: str  # ``<stream>/dt=YYYY-MM-DD`` under ``root``
    stem: str  # ``<host>-w<worker>-HH``
    root: str  # the logs URI the lines belong to
    lines: int
    seq: int | None = None  # the object number a killed run was putting it as


def object_name(stem: str, seq: int) -> str:
    """The ``seq``-th upload of an hour file: ``<stem>.jsonl``, then ``<stem>-1.jsonl``, ``<stem>-2.jsonl``..."""
    return f"{stem}-{seq}.jsonl" if seq else f"{stem}.jsonl"


class Uploader:
    """A request log's upload thread, working through an outbox of sealed files in order.

    Args:
      counts: The log's accounting; its ``cond`` guards the outbox too, so ``flush`` waits on both at once.
      found: Files a killed run left, uploaded first.
      attempts: Tries of each upload before its lines are counted as dropped.
      retry_s: The wait before the first retry; it doubles at each one, up to 30 s.
      name: The thread's name.
      warm: The logs URI the thread connects to first, before any file is due: a store client is built at its
        first call (about a second of CPU for S3's), and under load the first upload would wait for it.
    """

    def __init__(self, counts: LogCounts, found: list[Sealed], *, attempts: int, retry_s: float, name: str,
                 warm: str | None = None) -> None:
        self._counts, self._attempts, self._retry_s, self._warm = counts, attempts, retry_s, warm
        self._outbox: collections.deque[Sealed] = collections.deque(found)  # not uploaded yet (head: in work)
        self._seqs: dict[tuple[str, str, str], int] = {}  # next object number per hour file (this thread only)
        self._last = False  # the writer sealed its last file: stop once the outbox is empty
        self._abort = threading.Event()  # close ran out of time: leave the rest in the spool
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        """Whether the thread still runs."""
        return self._thread.is_alive()

    @property
    def backlog(self) -> int:
        """Sealed files not uploaded or given up yet."""
        return len(self._outbox)

    def send(self, item: Sealed) -> None:
        """Queues a sealed file for upload."""
        with self._counts.cond:
            self._outbox.append(item)
            self._counts.cond.notify_all()

    def last_sent(self) -> None:
        """Says no more files come: the thread ends once the outbox is empty."""
        with self._counts.cond:
            self._last = True
            self._counts.cond.notify_all()

    def finish(self, deadline: float) -> None:
        """Lets the thread empty the outbox until ``deadline`` (monotonic), then stops it; the files left stay."""
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():
            self._abort.set()
            with self._counts.cond:
                self._counts.cond.notify_all()
            self._thread.join(5.0)  # an attempt in flight ends with its own timeout

    def _loop(self) -> None:
        if self._warm is not None:
            try:
                storage.exists(self._warm)
            except Exception as e:  # noqa: BLE001 - the first upload retries and reports it
                log.info("request log: %s not reachable yet (%s); uploads retry", self._warm, e)
        cond = self._counts.cond
        while True:
            with cond:
                cond.wait_for(lambda: self._outbox or self._last or self._abort.is_set())
                if self._abort.is_set() or not self._outbox:
                    return
                item = self._outbox[0]  # left in the outbox until done, so flush() waits for it
            try:
                self._upload(item)
            except Exception:  # a bug, not the store: keep the thread, leave the file for the next start
                log.exception("request log: upload of %s failed unexpectedly; it stays in the spool", item.path)
            if self._abort.is_set():
                return
            with cond:
                self._outbox.popleft()
                cond.notify_all()

    def _upload(self, item: Sealed) -> None:
        """Puts one sealed spool file as a new object, retrying with doubling waits; counts its lines uploaded or,
        given up, dropped."""
        counts = self._counts
        cut = repair_tail(item.path)  # a write that failed midway in this run (those lines are counted lost)
        with open(item.path, "rb") as f:
            data = f.read()
        lines = data.count(b"\n")
        with counts.cond:
            counts.repaired_bytes += cut
            counts.spooled += lines - item.lines  # the writer's count, should the file say otherwise
        folder = storage.join(item.root, item.folder)
        delay = self._retry_s
        for attempt in range(1, self._attempts + 1):
            try:
                uri = self._put(item, folder, data) if lines else None
                break
            except Exception as e:  # noqa: BLE001 - the store down, a missing bucket, no credentials: retried
                with counts.cond:
                    counts.upload_errors += 1
                if attempt == self._attempts:
                    log.error("request log: gave up uploading %s to %s after %d attempts (%s): %d records dropped",
                              item.path, folder, attempt, e, lines)
                    with counts.cond:
                        counts.given_up += lines
                    self._discard(item.path)
                    return
                log.warning("request log: upload of %s to %s failed (attempt %d of %d, next in %.1fs): %s",
                            item.path, folder, attempt, self._attempts, delay, e)
                if self._abort.wait(delay):
                    return  # close ran out of time: the file stays in the spool for the next start
                delay = min(2 * delay, _RETRY_CAP_S)
        with counts.cond:
            counts.uploaded += lines
            if uri is not None:
                fs, path = storage.filesystem(uri)
                counts.files.append(fs.unstrip_protocol(path))
        self._discard(item.path)

    def _put(self, item: Sealed, folder: str, data: bytes) -> str:
        """Creates ``data`` at the hour file's first free object number; returns the object's URI."""
        key = (item.root, item.folder, item.stem)
        if item.seq is not None:  # a killed run was putting this file: done if that object holds these bytes
            uri = storage.join(folder, object_name(item.stem, item.seq))
            if storage.exists(uri) and storage.read_bytes(uri) == data:
                log.info("request log: %s was already uploaded to %s", item.path, uri)
                return uri
            item.seq = None
        seq = self._seqs.pop(key, None)
        if seq is None:  # first upload of this hour file by this run: skip the numbers earlier runs took
            seq = 0  # probed one by one: listing the day's folder would list every server's objects
            while storage.exists(storage.join(folder, object_name(item.stem, seq))):
                seq += 1
        while True:
            intent = re.sub(r"(\.sealed|\.\d+\.put)$", f".{seq}.put", item.path)
            os.rename(item.path, intent)  # names the object first: a kill after the PUT is recognised
            item.path = intent
            uri = storage.join(folder, object_name(item.stem, seq))
            if storage.create(uri, data):
                self._seqs[key] = seq + 1
                while len(self._seqs) > _SEQS_KEPT:
                    del self._seqs[next(iter(self._seqs))]
                return uri
            seq += 1  # taken: another run of this host and worker, or a restart

    def _discard(self, path: str) -> None:
        try:
            os.remove(path)
        except OSError:
            log.exception("request log: could not remove %s (done with it)", path)
        with contextlib.suppress(OSError):  # the day's folder, once empty
            os.rmdir(os.path.dirname(path))

"""The request log's accounting: nothing goes silently.

Every record ``put`` is refused, lost to a write error or written; a remote log's lines in the spool are
uploaded, given up or still there: ``written + recovered == uploaded + upload drops + unsent``, and ``unsent``
(lines in the spool) is 0 after a ``close`` that finished its uploads; what it could not upload stays in the
spool for the next start. The writer (``requestlog``), the spool (``logspool``) and the uploader (``logupload``)
each add what they see to one ``LogCounts``.
"""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass, field

_FILES_KEPT = 10_000  # ``files`` remembers this many: a server runs for weeks


def _recent_files() -> collections.deque[str]:
    return collections.deque(maxlen=_FILES_KEPT)


@dataclass(eq=False)
class LogCounts:
    """One request log's counters, changed under ``cond`` (which also guards the uploader's outbox)."""

    cond: threading.Condition = field(default_factory=threading.Condition)
    accepted: int = 0  # queued by put
    refused: int = 0  # by put: the queue full or the log closed
    written: int = 0  # whole lines in a file (remote: in the spool)
    lost: int = 0  # to write errors
    spooled: int = 0  # remote: lines into the spool (written, recovered, recounted at upload)
    recovered: int = 0  # lines a killed run left in the spool
    uploaded: int = 0
    given_up: int = 0  # lines of uploads given up
    torn: int = 0  # torn last lines of killed runs
    upload_errors: int = 0  # failed upload attempts
    repaired_bytes: int = 0  # partial last lines cut from files
    files: collections.deque[str] = field(default_factory=_recent_files)  # URIs of files in their final place

    @property
    def unsent(self) -> int:
        """Remote: records in the spool, not uploaded yet."""
        return self.spooled - self.uploaded - self.given_up


def _counter(name: str, doc: str) -> property:
    """A read-only property of a ``CountedLog``: the counter ``name`` of its ``LogCounts``."""
    return property(lambda log: getattr(log._counts, name), doc=doc)


class CountedLog:
    """What a request log reports (``/metrics``, its tests), read from its ``_counts``."""

    _counts: LogCounts

    written = _counter("written", "Records written (remote: into the spool).")
    uploaded = _counter("uploaded", "Remote: records uploaded, those a killed run left in the spool included.")
    recovered = _counter("recovered", "Records a killed run left in the spool, found at start (uploaded like the "
                         "others).")
    torn = _counter("torn", "Torn last lines of killed runs cut from files (counted in ``dropped``).")
    upload_errors = _counter("upload_errors", "Failed upload attempts (each retried or, the last, given up).")
    repaired_bytes = _counter("repaired_bytes", "Bytes of partial last lines cut from files.")

    @property
    def depth(self) -> int:
        """Records accepted but not yet written."""
        c = self._counts
        return max(0, c.accepted - c.written - c.lost)  # a gauge: no lock, a snapshot is enough

    @property
    def dropped(self) -> int:
        """Records lost: refused by ``put``, lost to write errors, uploads given up, torn lines of killed runs."""
        c = self._counts
        return c.refused + c.lost + c.given_up + c.torn

    @property
    def unsent(self) -> int:
        """Remote: records in the spool, not uploaded yet."""
        return self._counts.unsent

    @property
    def files(self) -> list[str]:
        """URIs of the files in their final place (the latest 10,000): local ones once created, remote ones once
        uploaded."""
        with self._counts.cond:
            return list(self._counts.files)

"""The request log's spool: a remote log's lines kept on local disk until upload, found again after a kill.

Object stores cannot append, so the writer (``requestlog``) appends a remote ``uri``'s lines to a local spool of
the same layout. A spool file is sealed (renamed) when it is ``upload_s`` old or ``upload_bytes`` big, when its
hour is over, or at ``close``, whichever comes first, and handed to the uploader (``logupload``). A lost pod loses
at most about ``upload_s`` of traffic (plus an upload in flight).

The spool is a fixed folder per host and worker (``default_spool``), locked while in use, that records the URI
its files belong to. A server killed with lines in it leaves them there; the next start cuts their torn last lines
(counted) and uploads the rest.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import glob
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass

from recloop.serving.logcounts import LogCounts
from recloop.serving.logtail import repair_tail
from recloop.serving.logupload import Sealed, Uploader

log = logging.getLogger("recloop.serving.requestlog")  # the request log's one logger: operators filter on it

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_ACTIVE = re.compile(r"^(?P<stem>.+-\d\d)\.jsonl$")  # a spool file being appended to
# a sealed spool file, and one renamed to name the object number it is being put as
_SEALED = re.compile(r"^(?P<stem>.+-\d\d)\.(?P<id>[0-9a-f]{8}-\d+)(?:\.sealed|\.(?P<seq>\d+)\.put)$")
HourKey = tuple[dt.date, int]


@dataclass
class _Pending:
    """A spool file being appended to."""

    key: HourKey
    since: float  # monotonic time of its first line: its age triggers the upload
    size: int
    lines: int


def safe_name(host: str) -> str:
    """``host`` with every character outside ``[A-Za-z0-9._-]`` replaced by ``_``."""
    return _UNSAFE.sub("_", host)


def worker_name(host: str, worker: int) -> str:
    """``<host>-w<worker>``, ``host`` made safe: the prefix of a worker's files, the name of its spool."""
    return f"{safe_name(host)}-w{worker}"


def default_spool(host: str, worker: int, root: str | None = None) -> str:
    """The spool folder of one server worker: ``<root>/<host>-w<worker>``, ``root`` by default
    ``<system temp dir>/recloop-spool``; the same at every start, so a restart finds what a killed run left."""
    return os.path.join(root or os.path.join(tempfile.gettempdir(), "recloop-spool"), worker_name(host, worker))


class Spool:
    """One worker's locked spool folder, from the files the writer appends to until their upload.

    The writer thread calls ``track``, ``grew``, ``due`` and ``seal``; a sealed file goes to ``uploader``.

    Args:
      uri: The logs URI the lines belong to (recorded in the folder for the next start).
      folder: The spool folder; a private temporary one when another live log holds it.
      counts: The log's accounting.
      upload_s: A file whose first line is this old is sealed.
      upload_bytes: A file this big is sealed.
      attempts: Tries of each upload before its lines are counted as dropped.
      retry_s: The wait before the first retry.
      name: The upload thread's name.
    """

    def __init__(self, uri: str, folder: str, counts: LogCounts, *, upload_s: float, upload_bytes: int,
                 attempts: int, retry_s: float, name: str) -> None:
        self._uri, self._counts = uri, counts
        self._upload_s, self._upload_bytes = upload_s, upload_bytes
        self._pending: dict[str, _Pending] = {}  # spool files being appended to (writer thread only)
        self._sealed_n = 0
        self._run_id = uuid.uuid4().hex[:8]  # in sealed names: unique across restarts, whatever the pid
        self._lock_fd: int | None = None
        self._owned = False  # a private folder: removed at close once empty
        self.root = self._take(folder)
        self.uploader = Uploader(counts, self._recover(), attempts=attempts, retry_s=retry_s, name=name, warm=uri)

    def track(self, path: str, key: HourKey, fd: int) -> None:
        """Registers a spool file the writer has opened (``fd``), unless it is already being appended to."""
        if path not in self._pending:
            self._pending[path] = _Pending(key, time.monotonic(), os.fstat(fd).st_size, 0)

    def grew(self, path: str, size: int, lines: int) -> None:
        """Counts bytes and whole lines the writer appended to ``path``."""
        pending = self._pending.get(path)
        if pending is not None:
            pending.size += size
            pending.lines += lines

    def due(self, newest: HourKey) -> list[str]:
        """The files to seal: those of hours before ``newest``, ``upload_bytes`` big or ``upload_s`` old."""
        now = time.monotonic()
        return [path for path, p in self._pending.items()
                if p.key < newest or p.size >= self._upload_bytes or now - p.since >= self._upload_s]

    @property
    def active(self) -> list[str]:
        """The files being appended to."""
        return list(self._pending)

    def seal(self, path: str) -> None:
        """Renames a spool file (its descriptor closed) out of the writer's way and hands it to the uploader."""
        pending = self._pending.pop(path)
        if pending.size == 0:  # every write to it failed: nothing to publish
            with contextlib.suppress(OSError):
                os.remove(path)
            return
        try:
            sealed = self._rename_sealed(path)
        except OSError:
            log.exception("request log: cannot seal %s; it is tried again", path)
            self._pending[path] = pending
            return
        self.uploader.send(Sealed(sealed, self._folder(path), os.path.basename(path).removesuffix(".jsonl"),
                                  self._uri, pending.lines))

    def close(self, deadline: float) -> None:
        """Lets the uploader work until ``deadline`` (monotonic), then unlocks the folder; what is left stays."""
        self.uploader.finish(deadline)
        unsent = self._counts.unsent
        if unsent:
            log.warning("request log: %d records not uploaded by close stay in %s; the next start with this spool "
                        "uploads them", unsent, self.root)
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = None
        if self._owned and not unsent:
            shutil.rmtree(self.root, ignore_errors=True)

    def _rename_sealed(self, path: str) -> str:
        """Renames a ``.jsonl`` spool file to a sealed name no run uses; returns the new path."""
        self._sealed_n += 1
        sealed = f"{path.removesuffix('.jsonl')}.{self._run_id}-{self._sealed_n}.sealed"
        os.rename(path, sealed)
        return sealed

    def _folder(self, path: str) -> str:
        return os.path.relpath(os.path.dirname(path), self.root).replace(os.sep, "/")

    def _take(self, folder: str) -> str:
        """Creates and locks the spool folder; a private one when another live log holds it."""
        os.makedirs(folder, exist_ok=True)
        fd = os.open(os.path.join(folder, ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            private = tempfile.mkdtemp(prefix="recloop-spool-")
            log.warning("request log: spool %s is in use by another server; using %s, which a restart will not "
                        "find (give each server its own --log-spool)", folder, private)
            self._owned = True
            return private
        self._lock_fd = fd
        return folder

    def _recover(self) -> list[Sealed]:
        """The files a killed run left in the spool, their torn last lines cut and counted; records this ``uri``."""
        marker = os.path.join(self.root, "uri")
        try:
            with open(marker, encoding="utf-8") as f:
                owner = f.read().strip() or self._uri
        except FileNotFoundError:
            owner = self._uri
        found: list[Sealed] = []
        torn = cut = 0
        for path in sorted(glob.glob(os.path.join(glob.escape(self.root), "*", "dt=*", "*"))):
            name = os.path.basename(path)
            match = _ACTIVE.match(name) or _SEALED.match(name)
            if match is None or not os.path.isfile(path):
                continue
            n = repair_tail(path)
            cut, torn = cut + n, torn + (n > 0)
            with open(path, "rb") as f:
                lines = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
            if not lines:
                os.remove(path)
                continue
            if match.re is _ACTIVE:  # out of the way of this run's file of the same hour
                path = self._rename_sealed(path)
            seq = match.groupdict().get("seq")
            found.append(Sealed(path, self._folder(path), match["stem"], owner, lines, int(seq) if seq else None))
        tmp = f"{marker}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(self._uri + "\n")
        os.replace(tmp, marker)
        if not found and not torn:
            return found
        lines = sum(item.lines for item in found)
        log.warning("request log: a killed run left %d records in %d files in %s (for %s) and %d torn last "
                    "lines (%d bytes, counted as dropped); uploading the records", lines, len(found), self.root,
                    owner, torn, cut)
        with self._counts.cond:
            self._counts.recovered += lines
            self._counts.spooled += lines
            self._counts.torn += torn
            self._counts.repaired_bytes += cut
        return found

"""The model server's feature log: request records appended to hourly JSON Lines files, off the request path.

Every record is a line under ``<uri>/<stream>/dt=YYYY-MM-DD/`` (the partitions ingest reads), in the file of
its own timestamp's UTC date and hour, never the wall clock's: the server may run on the simulator's.

  * Bounded queue + one writer thread: ``put`` never waits. A slow disk or store fills the queue and records
    are refused and counted (``dropped``) instead of adding latency to requests or growing memory.
  * One ``os.write`` per file per batch on a kept-open ``O_APPEND`` descriptor: one syscall per batch, and
    the batch lands as one append.
  * Tail repair: a kill inside ``write()`` can leave half a line; a file is cut back to its last newline
    before appending and before upload, so a crash loses whole records, never glues a new line onto a broken
    one. A torn line a killed run left is counted as dropped by the run that finds it.
  * A local ``uri`` is appended in place: ``<host>-w<worker>-HH.jsonl``.
  * A remote ``uri`` (object stores cannot append) is written to a local spool of the same layout. A spool file
    is sealed (renamed) when it is ``upload_s`` old or ``upload_bytes`` big, when its hour is over, or at
    ``close``, whichever comes first, and an upload thread puts it as a new whole object:
    ``<host>-w<worker>-HH.jsonl``, then ``-HH-1.jsonl``, ``-HH-2.jsonl``..., each created only where no object
    is (S3 ``If-None-Match``), so no run or restart overwrites another's. A lost pod loses at most about
    ``upload_s`` of traffic (plus an upload in flight).
  * The spool is a fixed folder per host and worker (``default_spool``), locked while in use, that records the
    URI its files belong to. A server killed with lines in it leaves them there; the next start cuts their torn
    last lines (counted) and uploads the rest. A file is renamed to name its target before the PUT, so a kill
    between the PUT and the delete is recognised at the next start and not uploaded twice.
  * A failed upload is retried with doubling waits; given up, its lines are counted as dropped and logged.
    Nothing goes silently: ``written + recovered == uploaded + upload drops + unsent``, and ``unsent`` (lines
    in the spool) is 0 after a ``close`` that finished its uploads; what it could not upload stays in the spool
    for the next start.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import fcntl
import glob
import logging
import os
import queue
import re
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass

from recloop import storage
from recloop.features.logs import partition_dir

log = logging.getLogger(__name__)

_STOP = object()  # queued by close(): everything put before it is written first (FIFO)
_IDLE_S = 60.0  # close a descriptor untouched this long (wall time is fine here: it places nothing)
_RETRY_CAP_S = 30.0  # the longest wait between two upload attempts
_FILES_KEPT = 10_000  # ``files`` remembers this many: a server runs for weeks
_SEQS_KEPT = 1_000  # next free object number per hour file: probed again when forgotten
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_ACTIVE = re.compile(r"^(?P<stem>.+-\d\d)\.jsonl$")  # a spool file being appended to
# a sealed spool file, and one renamed to name the object number it is being put as
_SEALED = re.compile(r"^(?P<stem>.+-\d\d)\.(?P<id>[0-9a-f]{8}-\d+)(?:\.sealed|\.(?P<seq>\d+)\.put)$")
_VALID = {"host": "non-empty", "worker": ">= 0", "max_queue": ">= 1", "flush_interval_s": "> 0",
          "upload_s": "> 0", "upload_bytes": ">= 1", "upload_retries": ">= 0", "retry_s": ">= 0"}
HourKey = tuple[dt.date, int]


@dataclass
class _Handle:
    fd: int
    key: HourKey
    used: float


@dataclass
class _Pending:
    """A spool file being appended to (remote ``uri``)."""

    key: HourKey
    since: float  # monotonic time of its first line: its age triggers the upload
    size: int
    lines: int


@dataclass
class _Sealed:
    """A spool file waiting for upload."""

    path: str  # local; renamed to ``<stem>.<id>.<seq>.put`` before each PUT
    folder: str  # ``<stream>/dt=YYYY-MM-DD`` under ``root``
    stem: str  # ``<host>-w<worker>-HH``
    root: str  # the logs URI the lines belong to
    lines: int
    seq: int | None = None  # the object number a killed run was putting it as


def safe_name(host: str) -> str:
    """``host`` with every character outside ``[A-Za-z0-9._-]`` replaced by ``_``."""
    return _UNSAFE.sub("_", host)


def default_spool(host: str, worker: int, root: str | None = None) -> str:
    """The spool folder of one server worker: ``<root>/<host>-w<worker>``, ``root`` by default
    ``<system temp dir>/recloop-spool``; the same at every start, so a restart finds what a killed run left."""
    return os.path.join(root or os.path.join(tempfile.gettempdir(), "recloop-spool"), f"{safe_name(host)}-w{worker}")


def object_name(stem: str, seq: int) -> str:
    """The ``seq``-th upload of an hour file: ``<stem>.jsonl``, then ``<stem>-1.jsonl``, ``<stem>-2.jsonl``..."""
    return f"{stem}-{seq}.jsonl" if seq else f"{stem}.jsonl"


def repair_tail(path: str) -> int:
    """Cuts a file back to just after its last newline (to empty when it has none), logging a warning.

    Returns:
      The number of bytes cut: 0 when the file is missing, empty or ends with a newline.
    """
    if not os.path.exists(path):
        return 0
    fd = os.open(path, os.O_RDWR)
    try:
        size = end = os.fstat(fd).st_size
        if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
            return 0
        keep = 0
        while end > 0:
            start = max(0, end - 65536)
            cut = os.pread(fd, end - start, start).rfind(b"\n")
            if cut >= 0:
                keep = start + cut + 1
                break
            end = start
        os.ftruncate(fd, keep)
        log.warning("request log: cut %d bytes of a partial last line from %s", size - keep, path)
        return size - keep
    finally:
        os.close(fd)


class RequestLog:
    """The server's request log: one per server worker, whose ``host`` and ``worker`` name its files.

    Args:
      uri: Root of the logs, any fsspec URI; a local path is written in place, others via ``spool_dir``.
      host: The server's host name (made safe for file names).
      worker: The worker number within the host.
      stream: The stream folder under ``uri``.
      max_queue: Records that may wait for the writer before ``put`` refuses them.
      flush_interval_s: The writer's longest wait for a record before housekeeping (closing idle files,
        sealing spool files that are old enough).
      spool_dir: Remote ``uri``: this worker's local folder of lines until upload; ``default_spool(host,
        worker)`` by default. Another live log holding it makes this one use a private temporary folder.
      upload_s: Remote ``uri``: the longest a line waits in the spool before its file is uploaded.
      upload_bytes: Remote ``uri``: a spool file this big is uploaded at once.
      upload_retries: Attempts after a failed upload before its lines are counted as dropped.
      retry_s: The wait before the first retry; it doubles at each one, up to 30 s.

    Attributes:
      recovered: Records a killed run left in the spool, found at start (uploaded like the others).
      torn: Torn last lines of killed runs cut from files (counted in ``dropped``).
      upload_errors: Failed upload attempts (each retried or, the last, given up).
      repaired_bytes: Bytes of partial last lines cut from files.

    Raises:
      ValueError: when ``host`` is empty or a number is out of its range.
    """

    def __init__(self, uri: str, host: str, *, worker: int = 0, stream: str = "requests",
                 max_queue: int = 10_000, flush_interval_s: float = 0.2, spool_dir: str | None = None,
                 upload_s: float = 60.0, upload_bytes: int = 16 << 20, upload_retries: int = 5,
                 retry_s: float = 1.0) -> None:
        for name, value, bad in (("host", host, not host), ("worker", worker, worker < 0),
                                 ("max_queue", max_queue, max_queue < 1),
                                 ("flush_interval_s", flush_interval_s, flush_interval_s <= 0),
                                 ("upload_s", upload_s, upload_s <= 0),
                                 ("upload_bytes", upload_bytes, upload_bytes < 1),
                                 ("upload_retries", upload_retries, upload_retries < 0),
                                 ("retry_s", retry_s, retry_s < 0)):
            if bad:
                raise ValueError(f"RequestLog {name} must be {_VALID[name]}, got {value!r}")
        self._uri, self._stream, self._interval = uri, stream, flush_interval_s
        self._upload_s, self._upload_bytes = upload_s, upload_bytes
        self._attempts, self._retry_s = upload_retries + 1, retry_s
        self._prefix = f"{safe_name(host)}-w{worker}"
        self._remote = not storage.is_local(uri)
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self._cond = threading.Condition()  # guards the counters below, self._files and self._outbox
        self._accepted = self._refused = self._written = self._lost = 0
        self._uploaded = self._given_up = self._spooled = self.recovered = self.torn = self.upload_errors = 0
        self.repaired_bytes = 0  # partial last lines cut from files
        self._files: collections.deque[str] = collections.deque(maxlen=_FILES_KEPT)
        self._closed = False
        self._open: dict[str, _Handle] = {}
        self._pending: dict[str, _Pending] = {}  # remote: spool files being appended to (writer thread only)
        self._seen: set[str] = set()  # local: files this run opened (a torn tail in one is an earlier run's)
        self._outbox: collections.deque[_Sealed] = collections.deque()  # sealed, not uploaded yet (head: in work)
        self._seqs: dict[tuple[str, str, str], int] = {}  # next object number per hour file (upload thread only)
        self._sealed_n = 0
        self._run_id = uuid.uuid4().hex[:8]  # in sealed names: unique across restarts, whatever the pid
        self._newest: HourKey = (dt.date.min, 0)  # the latest hour seen
        self._writer_done = False
        self._abort = threading.Event()  # close ran out of time: leave the rest in the spool
        self._lock_fd: int | None = None
        self._owned_spool = False
        self._uploader: threading.Thread | None = None
        if self._remote:
            self._root = self._take_spool(spool_dir or default_spool(host, worker))
            self._recover()
            self._uploader = threading.Thread(target=self._upload_loop, name=f"requestlog-up-{self._prefix}",
                                              daemon=True)
            self._uploader.start()
        else:
            self._root = storage.filesystem(uri)[1]
        self._thread = threading.Thread(target=self._run, name=f"requestlog-{self._prefix}", daemon=True)
        self._thread.start()

    def put(self, line: str, ts: dt.datetime) -> bool:
        """Queues one serialised record (no newline) without blocking.

        Args:
          line: The request record as JSON, one line.
          ts: The record's timezone-aware timestamp; picks its date and hour file.

        Returns:
          True when queued; False (counted in ``dropped``) when the queue is full or the log is closed.

        Raises:
          ValueError: when ``ts`` is naive.
        """
        if ts.utcoffset() is None:
            raise ValueError(f"RequestLog.put ts must be timezone-aware, got naive {ts.isoformat()}")
        if not self._closed:
            try:
                self._queue.put_nowait((line, ts))
                with self._cond:
                    self._accepted += 1
                return True
            except queue.Full:
                pass
        with self._cond:
            self._refused += 1
        return False

    def flush(self, timeout_s: float = 10.0) -> None:
        """Blocks until every record accepted so far is written (remote: into the spool) and every spool file
        sealed so far is uploaded or given up.

        Raises:
          TimeoutError: when records are still queued or files unsent after ``timeout_s`` seconds.
        """
        with self._cond:
            target = self._accepted
            uploading = self._uploader is not None and self._uploader.is_alive()
            if not self._cond.wait_for(lambda: self._written + self._lost >= target
                                       and not (self._outbox and uploading), timeout_s):
                raise TimeoutError(f"RequestLog.flush: {self.depth} records still queued, {len(self._outbox)} "
                                   f"files unsent after {timeout_s}s")

    def close(self, timeout_s: float = 10.0) -> None:
        """Writes what is queued, closes the files, uploads remote ones, stops the threads; idempotent.

        Files not uploaded within ``timeout_s`` (a store down) stay in the spool for the next start (logged).

        Raises:
          TimeoutError: when the writer has not finished after ``timeout_s`` seconds.
        """
        deadline = time.monotonic() + timeout_s
        if not self._closed:
            self._closed = True
            try:
                self._queue.put(_STOP, timeout=timeout_s)  # waits for room: close is never refused
            except queue.Full:
                self._closed = False
                raise TimeoutError(f"RequestLog.close: queue still full after {timeout_s}s") from None
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():
            raise TimeoutError(f"RequestLog.close: writer still busy after {timeout_s}s, depth {self.depth}")
        late = 0  # puts that raced with close, queued after the writer's last look
        while not self._queue.empty():  # the writer is gone: no other consumer
            late += self._queue.get_nowait() is not _STOP
        self._account(0, late)
        if self._uploader is not None:
            self._finish_uploads(deadline)

    @property
    def depth(self) -> int:
        """Records accepted but not yet written."""
        return max(0, self._accepted - self._written - self._lost)  # a gauge: no lock, a snapshot is enough

    @property
    def dropped(self) -> int:
        """Records lost: refused by ``put``, lost to write errors, uploads given up, torn lines of killed runs."""
        return self._refused + self._lost + self._given_up + self.torn

    @property
    def written(self) -> int:
        """Records written (remote: into the spool)."""
        return self._written

    @property
    def uploaded(self) -> int:
        """Remote: records uploaded, those a killed run left in the spool included."""
        return self._uploaded

    @property
    def unsent(self) -> int:
        """Remote: records in the spool, not uploaded yet."""
        return self._spooled - self._uploaded - self._given_up

    @property
    def files(self) -> list[str]:
        """URIs of the files in their final place (the latest 10,000): local ones once created, remote ones once
        uploaded."""
        with self._cond:
            return list(self._files)

    def _account(self, written: int, lost: int, spooled: int = 0) -> None:
        with self._cond:
            self._written += written
            self._lost += lost
            self._spooled += spooled
            self._cond.notify_all()

    # ------------------------------------------------------------ writer thread

    def _run(self) -> None:
        stop = False
        while not stop:
            try:
                batch = [self._queue.get(timeout=self._interval)]
            except queue.Empty:
                self._tidy()
                continue
            batch += [self._queue.get_nowait() for _ in range(self._queue.qsize())]  # we are the only consumer
            stop = any(item is _STOP for item in batch)
            self._drain([item for item in batch if item is not _STOP])
        for path in list(self._pending):
            self._seal(path)
        for path in list(self._open):
            self._close_fd(path)
        with self._cond:
            self._writer_done = True
            self._cond.notify_all()

    def _drain(self, batch: list[tuple[str, dt.datetime]]) -> None:
        written = 0
        try:
            groups: dict[HourKey, list[str]] = {}
            for line, ts in batch:
                utc = ts.astimezone(dt.UTC)
                groups.setdefault((utc.date(), utc.hour), []).append(line)
            for key, lines in groups.items():
                written += self._write_group(key, lines)
            self._newest = max([self._newest, *groups])
            self._tidy()  # seals what is due, before flush() wakes, so it waits for those uploads too
        except Exception:
            log.exception("request log: batch of %d records failed", len(batch))
        finally:
            self._account(written, len(batch) - written, written if self._remote else 0)

    def _write_group(self, key: HourKey, lines: list[str]) -> int:
        """Appends one hour's lines in one write; returns how many whole lines reached the file."""
        path = f"{partition_dir(self._root, self._stream, key[0])}/{self._prefix}-{key[1]:02d}.jsonl"
        data = ("\n".join(lines) + "\n").encode("utf-8")
        done = 0
        try:
            fd = self._fd(path, key)
            done = self._append(fd, data)
            while done < len(data):  # a short write (rare): the rest, so the batch stays whole
                done += self._append(fd, data[done:])
        except OSError:
            log.exception("request log: lost %d records writing %s", len(lines) - data.count(b"\n", 0, done), path)
            if done:
                self._close_fd(path)  # reopen later through the tail repair: the file may end mid-line
        whole = len(lines) if done == len(data) else data.count(b"\n", 0, done)
        pending = self._pending.get(path)
        if pending is not None:
            pending.size += done
            pending.lines += whole
        return whole

    def _append(self, fd: int, data: bytes) -> int:
        return os.write(fd, data)

    def _fd(self, path: str, key: HourKey) -> int:
        """The open descriptor of ``path``, opened (after the tail repair) and registered on first use."""
        handle = self._open.get(path)
        if handle is None:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            cut = repair_tail(path)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            handle = self._open[path] = _Handle(fd, key, 0)
            with self._cond:
                self.repaired_bytes += cut
                if cut and not self._remote and path not in self._seen:  # an earlier run was killed mid-line
                    self.torn += 1
            if self._remote:
                if path not in self._pending:
                    self._pending[path] = _Pending(key, time.monotonic(), os.fstat(fd).st_size, 0)
            elif path not in self._seen:
                self._seen.add(path)
                uri = storage.filesystem(self._uri)[0].unstrip_protocol(path) if "://" in self._uri else path
                with self._cond:
                    self._files.append(uri)
        handle.used = time.monotonic()
        return handle.fd

    def _close_fd(self, path: str) -> None:
        handle = self._open.pop(path, None)
        if handle is not None:
            with contextlib.suppress(OSError):  # nothing left to do about a failed close
                os.close(handle.fd)

    def _tidy(self) -> None:
        """Closes idle files and those of hours before the newest seen; seals the spool files that are due."""
        now = time.monotonic()
        for path in [p for p, h in self._open.items() if h.key < self._newest or now - h.used > _IDLE_S]:
            self._close_fd(path)
        for path, p in list(self._pending.items()):
            if p.key < self._newest or p.size >= self._upload_bytes or now - p.since >= self._upload_s:
                self._seal(path)

    def _seal(self, path: str) -> None:
        """Renames a spool file out of the writer's way and hands it to the upload thread."""
        self._close_fd(path)
        pending = self._pending.pop(path)
        if pending.size == 0:  # every write to it failed: nothing to publish
            with contextlib.suppress(OSError):
                os.remove(path)
            return
        self._sealed_n += 1
        sealed = f"{path.removesuffix('.jsonl')}.{self._run_id}-{self._sealed_n}.sealed"
        try:
            os.rename(path, sealed)
        except OSError:
            log.exception("request log: cannot seal %s; it is tried again", path)
            self._pending[path] = pending
            return
        folder = os.path.relpath(os.path.dirname(path), self._root).replace(os.sep, "/")
        self._send(_Sealed(sealed, folder, os.path.basename(path).removesuffix(".jsonl"), self._uri, pending.lines))

    # ------------------------------------------------------------ spool and upload thread

    def _take_spool(self, folder: str) -> str:
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
            self._owned_spool = True
            return private
        self._lock_fd = fd
        return folder

    def _recover(self) -> None:
        """Queues for upload the files a killed run left in the spool, their torn last lines cut and counted."""
        marker = os.path.join(self._root, "uri")
        try:
            with open(marker, encoding="utf-8") as f:
                owner = f.read().strip() or self._uri
        except FileNotFoundError:
            owner = self._uri
        found: list[_Sealed] = []
        torn = cut = 0
        for path in sorted(glob.glob(os.path.join(glob.escape(self._root), "*", "dt=*", "*"))):
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
                self._sealed_n += 1
                sealed = f"{path.removesuffix('.jsonl')}.{self._run_id}-{self._sealed_n}.sealed"
                os.rename(path, sealed)
                path = sealed
            folder = os.path.relpath(os.path.dirname(path), self._root).replace(os.sep, "/")
            seq = match.groupdict().get("seq")
            found.append(_Sealed(path, folder, match["stem"], owner, lines, int(seq) if seq else None))
        tmp = f"{marker}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(self._uri + "\n")
        os.replace(tmp, marker)
        if not found and not torn:
            return
        lines = sum(item.lines for item in found)
        log.warning("request log: a killed run left %d records in %d files in %s (for %s) and %d torn last "
                    "lines (%d bytes, counted as dropped); uploading the records", lines, len(found), self._root,
                    owner, torn, cut)
        with self._cond:
            self.recovered += lines
            self._spooled += lines
            self.torn += torn
            self.repaired_bytes += cut
            self._outbox.extend(found)

    def _send(self, item: _Sealed) -> None:
        with self._cond:
            self._outbox.append(item)
            self._cond.notify_all()

    def _upload_loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._outbox or self._writer_done or self._abort.is_set())
                if self._abort.is_set() or not self._outbox:
                    return
                item = self._outbox[0]  # left in the outbox until done, so flush() waits for it
            try:
                self._upload(item)
            except Exception:  # a bug, not the store: keep the thread, leave the file for the next start
                log.exception("request log: upload of %s failed unexpectedly; it stays in the spool", item.path)
            if self._abort.is_set():
                return
            with self._cond:
                self._outbox.popleft()
                self._cond.notify_all()

    def _upload(self, item: _Sealed) -> None:
        """Puts one sealed spool file as a new object, retrying with doubling waits; counts its lines uploaded or,
        given up, dropped."""
        cut = repair_tail(item.path)  # a write that failed midway in this run (those lines are counted lost)
        with open(item.path, "rb") as f:
            data = f.read()
        lines = data.count(b"\n")
        with self._cond:
            self.repaired_bytes += cut
            self._spooled += lines - item.lines  # the writer's count, should the file say otherwise
        folder = storage.join(item.root, item.folder)
        delay = self._retry_s
        for attempt in range(1, self._attempts + 1):
            try:
                uri = self._put(item, folder, data) if lines else None
                break
            except Exception as e:  # noqa: BLE001 - the store down, a missing bucket, no credentials: retried
                with self._cond:
                    self.upload_errors += 1
                if attempt == self._attempts:
                    log.error("request log: gave up uploading %s to %s after %d attempts (%s): %d records dropped",
                              item.path, folder, attempt, e, lines)
                    with self._cond:
                        self._given_up += lines
                    self._discard(item.path)
                    return
                log.warning("request log: upload of %s to %s failed (attempt %d of %d, next in %.1fs): %s",
                            item.path, folder, attempt, self._attempts, delay, e)
                if self._abort.wait(delay):
                    return  # close ran out of time: the file stays in the spool for the next start
                delay = min(2 * delay, _RETRY_CAP_S)
        with self._cond:
            self._uploaded += lines
            if uri is not None:
                fs, path = storage.filesystem(uri)
                self._files.append(fs.unstrip_protocol(path))
        self._discard(item.path)

    def _put(self, item: _Sealed, folder: str, data: bytes) -> str:
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

    def _finish_uploads(self, deadline: float) -> None:
        """Lets the upload thread empty the outbox until ``deadline``; reports what stays in the spool."""
        assert self._uploader is not None
        self._uploader.join(max(0.0, deadline - time.monotonic()))
        if self._uploader.is_alive():
            self._abort.set()
            with self._cond:
                self._cond.notify_all()
            self._uploader.join(5.0)  # an attempt in flight ends with its own timeout
        if self.unsent:
            log.warning("request log: %d records not uploaded by close stay in %s; the next start with this spool "
                        "uploads them", self.unsent, self._root)
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = None
        if self._owned_spool and not self.unsent:
            shutil.rmtree(self._root, ignore_errors=True)

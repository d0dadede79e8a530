"""The model server's feature log: request records appended to hourly JSON Lines files, off the request path.

Each record is a line of ``<uri>/<stream>/dt=YYYY-MM-DD/<host>-w<worker>-HH.jsonl`` (the partitions ingest
reads), placed by the record's own timestamp, never the wall clock: the server may run on the simulator's.

  * Bounded queue + one daemon thread: ``put`` never waits. A slow disk or store fills the queue and records
    are refused and counted (``dropped``) instead of adding latency to requests or growing memory.
  * One ``os.write`` per file per batch on a kept-open ``O_APPEND`` descriptor: one syscall per batch, and
    the batch lands as one append.
  * Tail repair: a kill inside ``write()`` can leave half a line; an existing file is cut back to its last
    newline before appending (and before upload), so a crash loses whole records, never glues a new line
    onto a broken one.
  * Object stores cannot append: remote URIs are written to a local buffer of the same layout, each file
    uploaded whole when its hour is over (a later hour's record arrives) and at ``close``; a name taken by
    an earlier run of the same hour gets ``-<n>``, so nothing is overwritten.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import posixpath
import queue
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass

import fsspec
from fsspec.implementations.local import LocalFileSystem

from recloop.features.logs import partition_dir

log = logging.getLogger(__name__)

_STOP = object()  # queued by close(): everything put before it is written first (FIFO)
_IDLE_S = 60.0  # close a descriptor untouched this long (wall time is fine here: it places nothing)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_VALID = {"host": "non-empty", "worker": ">= 0", "max_queue": ">= 1", "flush_interval_s": "> 0"}
HourKey = tuple[dt.date, int]


@dataclass
class _Handle:
    fd: int
    key: HourKey
    used: float


def safe_name(host: str) -> str:
    """``host`` with every character outside ``[A-Za-z0-9._-]`` replaced by ``_``."""
    return _UNSAFE.sub("_", host)


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
      uri: Root of the logs, any fsspec URI; a local path is written in place, others via ``buffer_dir``.
      host: The server's host name (made safe for file names).
      worker: The worker number within the host.
      stream: The stream folder under ``uri``.
      max_queue: Records that may wait for the writer before ``put`` refuses them.
      flush_interval_s: The writer's longest wait for a record before housekeeping (closing idle files).
      buffer_dir: Local folder of remote files until upload; a fresh temporary folder by default.

    Raises:
      ValueError: when ``host`` is empty, ``worker`` negative, ``max_queue`` < 1 or ``flush_interval_s`` <= 0.
    """

    def __init__(self, uri: str, host: str, *, worker: int = 0, stream: str = "requests",
                 max_queue: int = 10_000, flush_interval_s: float = 0.2, buffer_dir: str | None = None) -> None:
        for name, value, bad in (("host", host, not host), ("worker", worker, worker < 0),
                                 ("max_queue", max_queue, max_queue < 1),
                                 ("flush_interval_s", flush_interval_s, flush_interval_s <= 0)):
            if bad:
                raise ValueError(f"RequestLog {name} must be {_VALID[name]}, got {value!r}")
        self._uri, self._stream, self._interval = uri, stream, flush_interval_s
        self._prefix = f"{safe_name(host)}-w{worker}"
        self._fs, self._base = fsspec.core.url_to_fs(uri)
        self._remote = not isinstance(self._fs, LocalFileSystem)
        self._owned_buffer = self._remote and buffer_dir is None
        self._root = (buffer_dir or tempfile.mkdtemp(prefix="recloop-log-")) if self._remote else self._base
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self._cond = threading.Condition()  # guards the counters below and self._files
        self._accepted = self._refused = self._written = self._lost = 0
        self._files: list[str] = []
        self._closed = False
        self.repaired_bytes = 0  # partial last lines cut from files found on disk
        self._open: dict[str, _Handle] = {}
        self._unsent: dict[str, HourKey] = {}  # remote: buffer files not uploaded yet (writer thread only)
        self._newest: HourKey = (dt.date.min, 0)  # the latest hour seen
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
        """Blocks until every record accepted so far is written (remote: into the local buffer).

        Raises:
          TimeoutError: when records are still queued after ``timeout_s`` seconds.
        """
        with self._cond:
            target = self._accepted
            if not self._cond.wait_for(lambda: self._written + self._lost >= target, timeout_s):
                raise TimeoutError(f"RequestLog.flush: {self.depth} records still queued after {timeout_s}s")

    def close(self, timeout_s: float = 10.0) -> None:
        """Writes what is queued, closes the files, uploads remote ones, stops the thread; idempotent.

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

    @property
    def depth(self) -> int:
        """Records accepted but not yet written."""
        return max(0, self._accepted - self._written - self._lost)  # a gauge: no lock, a snapshot is enough

    @property
    def dropped(self) -> int:
        """Records refused by ``put`` plus records lost to write errors."""
        return self._refused + self._lost

    @property
    def written(self) -> int:
        """Records written (remote: into the local buffer)."""
        return self._written

    @property
    def files(self) -> list[str]:
        """URIs of the files in their final place: local ones once created, remote ones once uploaded."""
        with self._cond:
            return list(self._files)

    def _account(self, written: int, lost: int) -> None:
        with self._cond:
            self._written += written
            self._lost += lost
            self._cond.notify_all()

    def _run(self) -> None:
        stop = False
        while not stop:
            try:
                batch = [self._queue.get(timeout=self._interval)]
            except queue.Empty:
                self._tidy(upload=False)
                continue
            batch += [self._queue.get_nowait() for _ in range(self._queue.qsize())]  # we are the only consumer
            stop = any(item is _STOP for item in batch)
            self._drain([item for item in batch if item is not _STOP])
        for path in list(self._open):
            self._close_fd(path)
        for path in list(self._unsent):
            self._upload(path)
        if self._owned_buffer and not self._unsent:
            shutil.rmtree(self._root, ignore_errors=True)

    def _drain(self, batch: list[tuple[str, dt.datetime]]) -> None:
        written = 0
        try:
            groups: dict[HourKey, list[str]] = {}
            for line, ts in batch:
                utc = ts.astimezone(dt.UTC)
                groups.setdefault((utc.date(), utc.hour), []).append(line)
            for key, lines in groups.items():
                written += self._write_group(key, lines)
            newest = max([self._newest, *groups])
            advanced, self._newest = newest > self._newest, newest
            self._tidy(upload=advanced)  # a later hour began: the earlier ones are over
        except Exception:
            log.exception("request log: batch of %d records failed", len(batch))
        finally:  # before flush() wakes, so a rotation's uploads are done by then
            self._account(written, len(batch) - written)

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
            return data.count(b"\n", 0, done)
        return len(lines)

    def _append(self, fd: int, data: bytes) -> int:
        return os.write(fd, data)

    def _fd(self, path: str, key: HourKey) -> int:
        """The open descriptor of ``path``, opened (after the tail repair) and registered on first use."""
        handle = self._open.get(path)
        if handle is None:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            self.repaired_bytes += repair_tail(path)
            handle = self._open[path] = _Handle(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644), key, 0)
            if self._remote:
                self._unsent[path] = key
            else:
                uri = self._fs.unstrip_protocol(path) if "://" in self._uri else path
                with self._cond:
                    if uri not in self._files:
                        self._files.append(uri)
        handle.used = time.monotonic()
        return handle.fd

    def _close_fd(self, path: str) -> None:
        handle = self._open.pop(path, None)
        if handle is not None:
            with contextlib.suppress(OSError):  # nothing left to do about a failed close
                os.close(handle.fd)

    def _tidy(self, upload: bool) -> None:
        """Closes idle files and those of hours before the newest seen; uploads the latter (remote)."""
        now = time.monotonic()
        for path in [p for p, h in self._open.items() if h.key < self._newest or now - h.used > _IDLE_S]:
            self._close_fd(path)
        for path in [p for p, key in self._unsent.items() if upload and key < self._newest]:
            self._upload(path)  # a failed upload is retried at the next hour and at close

    def _upload(self, path: str) -> None:
        """Puts one local buffer file under ``uri`` at a free name; kept for a retry when that fails."""
        self._close_fd(path)
        rel = os.path.relpath(path, self._root).replace(os.sep, "/")
        target = posixpath.join(self._base, rel)
        try:
            self.repaired_bytes += repair_tail(path)
            if os.path.getsize(path) == 0:  # every write to it failed: nothing to publish
                del self._unsent[path]
                os.remove(path)
                return
            n = 0
            while self._fs.exists(target):
                n += 1
                target = posixpath.join(self._base, rel.removesuffix(".jsonl") + f"-{n}.jsonl")
            self._fs.makedirs(posixpath.dirname(target), exist_ok=True)
            self._fs.put_file(path, target)
        except Exception:
            log.exception("request log: upload of %s to %s failed; the file stays there", path, target)
            return
        del self._unsent[path]
        with self._cond:
            self._files.append(self._fs.unstrip_protocol(target))
        try:
            os.remove(path)
        except OSError:
            log.exception("request log: %s is uploaded to %s but could not be removed", path, target)

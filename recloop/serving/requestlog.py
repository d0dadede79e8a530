"""The model server's feature log: request records appended to hourly JSON Lines files, off the request path.

Every record is a line under ``<uri>/<stream>/dt=YYYY-MM-DD/`` (the partitions ingest reads), in the file of
its own timestamp's UTC date and hour, never the wall clock's: the server may run on the simulator's.

  * Bounded queue + one writer thread: ``put`` never waits. A slow disk or store fills the queue and records
    are refused and counted (``dropped``) instead of adding latency to requests or growing memory.
  * One ``os.write`` per file per batch on a kept-open ``O_APPEND`` descriptor: one syscall per batch, and
    the batch lands as one append.
  * Tail repair (``logtail``): a file is cut back to its last newline before appending, so a crash loses whole
    records. A torn line a killed run left is counted as dropped by the run that finds it.
  * A local ``uri`` is appended in place: ``<host>-w<worker>-HH.jsonl``.
  * A remote ``uri`` (object stores cannot append) is written to a local spool of the same layout (``logspool``),
    whose files are sealed when due and uploaded as new whole objects (``logupload``).
  * Nothing goes silently: every record is counted (``logcounts``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass

from recloop import storage
from recloop.features.logs import partition_dir
from recloop.serving.logcounts import CountedLog, LogCounts
from recloop.serving.logspool import HourKey, Spool, default_spool, worker_name
from recloop.serving.logtail import repair_tail

log = logging.getLogger(__name__)

_STOP = object()  # queued by close(): everything put before it is written first (FIFO)
_IDLE_S = 60.0  # close a descriptor untouched this long (wall time is fine here: it places nothing)
_VALID = {"host": "non-empty", "worker": ">= 0", "max_queue": ">= 1", "flush_interval_s": "> 0",
          "upload_s": "> 0", "upload_bytes": ">= 1", "upload_retries": ">= 0", "retry_s": ">= 0"}


@dataclass
class _Handle:
    fd: int
    key: HourKey
    used: float


class RequestLog(CountedLog):
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
        self._prefix = worker_name(host, worker)
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self._counts = LogCounts()
        self._closed = False
        self._open: dict[str, _Handle] = {}
        self._seen: set[str] = set()  # local: files this run opened (a torn tail in one is an earlier run's)
        self._newest: HourKey = (dt.date.min, 0)  # the latest hour seen
        self._spool: Spool | None = None  # remote only
        if storage.is_local(uri):
            self._root = storage.filesystem(uri)[1]
        else:
            self._spool = Spool(uri, spool_dir or default_spool(host, worker), self._counts, upload_s=upload_s,
                                upload_bytes=upload_bytes, attempts=upload_retries + 1, retry_s=retry_s,
                                name=f"requestlog-up-{self._prefix}")
            self._root = self._spool.root
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
        c = self._counts
        if not self._closed:
            try:
                self._queue.put_nowait((line, ts))
                with c.cond:
                    c.accepted += 1
                return True
            except queue.Full:
                pass
        with c.cond:
            c.refused += 1
        return False

    def flush(self, timeout_s: float = 10.0) -> None:
        """Blocks until every record accepted so far is written (remote: into the spool) and every spool file
        sealed so far is uploaded or given up.

        Raises:
          TimeoutError: when records are still queued or files unsent after ``timeout_s`` seconds.
        """
        c = self._counts
        with c.cond:
            target = c.accepted
            uploading = self._spool is not None and self._spool.uploader.alive
            if not c.cond.wait_for(lambda: c.written + c.lost >= target and not (self._backlog and uploading),
                                   timeout_s):
                raise TimeoutError(f"RequestLog.flush: {self.depth} records still queued, {self._backlog} "
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
        if self._spool is not None:
            self._spool.close(deadline)

    @property
    def _backlog(self) -> int:
        """Remote: sealed spool files not uploaded or given up yet."""
        return self._spool.uploader.backlog if self._spool is not None else 0

    def _account(self, written: int, lost: int) -> None:
        c = self._counts
        with c.cond:
            c.written += written
            c.lost += lost
            c.spooled += written if self._spool is not None else 0
            c.cond.notify_all()

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
        if self._spool is not None:
            for path in self._spool.active:
                self._seal(self._spool, path)
        for path in list(self._open):
            self._close_fd(path)
        if self._spool is not None:
            self._spool.uploader.last_sent()

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
        whole = len(lines) if done == len(data) else data.count(b"\n", 0, done)
        if self._spool is not None:
            self._spool.grew(path, done, whole)
        return whole

    @staticmethod
    def _create(path: str, tries: int = 3) -> tuple[int, int]:
        """Opens ``path`` for appending, its folder made and its torn tail cut: (bytes cut, descriptor). The
        uploader removes a day's spool folder once it emptied it (``logupload``), which can happen between
        making the folder and creating the file: then both are tried again."""
        attempt = 1
        while True:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            try:
                cut = repair_tail(path)
                return cut, os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            except FileNotFoundError:
                if attempt == tries:
                    raise
                attempt += 1

    def _append(self, fd: int, data: bytes) -> int:
        return os.write(fd, data)

    def _fd(self, path: str, key: HourKey) -> int:
        """The open descriptor of ``path``, opened (after the tail repair) and registered on first use."""
        handle = self._open.get(path)
        if handle is None:
            cut, fd = self._create(path)
            handle = self._open[path] = _Handle(fd, key, 0)
            c = self._counts
            with c.cond:
                c.repaired_bytes += cut
                if cut and self._spool is None and path not in self._seen:  # an earlier run was killed mid-line
                    c.torn += 1
            if self._spool is not None:
                self._spool.track(path, key, fd)
            elif path not in self._seen:
                self._seen.add(path)
                uri = storage.filesystem(self._uri)[0].unstrip_protocol(path) if "://" in self._uri else path
                with c.cond:
                    c.files.append(uri)
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
        if self._spool is not None:
            for path in self._spool.due(self._newest):
                self._seal(self._spool, path)

    def _seal(self, spool: Spool, path: str) -> None:
        """Closes a spool file's descriptor (the writer reopens a new file of that hour) and seals it."""
        self._close_fd(path)
        spool.seal(path)

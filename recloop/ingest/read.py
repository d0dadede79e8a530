"""Which log files a span's ingest reads, and reading them into join buckets.

Lines are routed to a bucket by a hash of their ``request_id`` (found without
parsing the line), so a request and its events meet in the same bucket, and the
shuffle moves a few thousand chunks of raw lines instead of one element per
record: a per-record CoGroupByKey runs ~13k impressions/s on the DirectRunner
(docs/stack.md), and parsing after the shuffle keeps what is shuffled compact.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import apache_beam as beam
import fsspec
import numpy as np

from recloop import storage
from recloop.features import logs
from recloop.ingest.progress import report

Role = Literal["requests", "events", "keys"]
CHUNK_LINES = 20_000  # lines per read chunk: bounds a worker's memory on large files
NAMESPACE = "recloop.ingest"  # Beam counters

# The server writes request_id first; a line that does not is parsed to find it.
_PREFIX = re.compile(r'^\{\s*"request_id"\s*:\s*"([^"\\]*)"')
_ANYWHERE = re.compile(r'"request_id"\s*:\s*"([^"\\]*)"')


@dataclass(frozen=True)
class Span:
    """The dates an ingest covers and the windows around them.

    Attributes:
      start, end: the span's first and last UTC date (by ``dt=`` partition).
      eval_days: the last days of the span, held out as eval.
      attribution_hours: how long after a request its events count.
      freshness_days: only this many days before the eval period are trained on.
    """

    start: dt.date
    end: dt.date
    eval_days: int = 1
    attribution_hours: int = 24
    freshness_days: int | None = None

    @property
    def window_seconds(self) -> int:
        return self.attribution_hours * 3600

    @property
    def margin_days(self) -> int:
        """Days of partitions read beyond the span for events (and request ids) in the window."""
        return math.ceil(self.attribution_hours / 24)

    @property
    def eval_start(self) -> dt.datetime:
        """The first instant of the eval period; training uses nothing at or after it."""
        day = self.end + dt.timedelta(days=1 - self.eval_days)
        return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)

    @property
    def fresh_start(self) -> dt.datetime | None:
        """Training examples before this instant are stale (no freshness window: None)."""
        if self.freshness_days is None:
            return None
        return self.eval_start - dt.timedelta(days=self.freshness_days)


@dataclass(frozen=True)
class InputFile:
    """One log file and what the span reads it for.

    ``role`` is ``requests`` (the span's requests), ``events``, or ``keys``:
    requests just outside the span, read only for their ids so that an event on
    them is counted as out of span rather than dead-lettered as unknown.
    """

    path: str
    role: Role
    size: int


def plan_inputs(logs_root: str, span: Span) -> list[InputFile]:
    """The files an ingest of ``span`` reads, with their sizes (bytes on disk)."""
    margin = dt.timedelta(days=span.margin_days)
    fs, _ = storage.filesystem(logs_root)
    plan = [("requests", "requests", span.start, span.end),
            ("keys", "requests", span.start - margin, span.start - dt.timedelta(days=1)),
            ("keys", "requests", span.end + dt.timedelta(days=1), span.end + margin),
            ("events", "events", span.start, span.end + margin)]
    out = []
    for role, stream, first, last in plan:
        if last < first:
            continue
        for path in logs.partition_files(logs_root, stream, first, last):
            out.append(InputFile(path, role, fs.size(path)))  # type: ignore[arg-type]
    return out


def bucket_count(files: list[InputFile], bytes_per_bucket: int = 8 << 20) -> int:
    """Join buckets for these inputs: ~8 MiB of compressed logs each, 16 to 4096."""
    return min(4096, max(16, math.ceil(sum(f.size for f in files) / bytes_per_bucket)))


def request_id_of(line: str) -> str | None:
    """The ``request_id`` of a log line without validating it; a best effort for broken lines."""
    m = _PREFIX.match(line)
    if m:
        return m.group(1)
    try:
        value = json.loads(line)
    except ValueError:
        m = _ANYWHERE.search(line)  # a truncated line usually still names its request
        return m.group(1) if m else None
    rid = value.get("request_id") if isinstance(value, dict) else None
    return rid if isinstance(rid, str) else None


def bucket_of(key: str, buckets: int) -> int:
    """A stable bucket (the same in every process and run) for a request id."""
    return zlib.crc32(key.encode("utf-8")) % buckets


Chunk = tuple[str, str, list]  # (role, source path, [(line number, line)] or [request id])


class ReadLines(beam.DoFn):
    """Reads one log file into ``(bucket, chunk)`` pairs.

    A line whose request id cannot be found goes to a bucket chosen by its
    position, where parsing dead-letters it. Line numbers are 1-based physical
    lines, blank lines included, so ``sed -n Np`` finds a dead letter's source.
    """

    def __init__(self, buckets: int, progress: str | None = None):
        self.buckets = buckets
        self.progress = progress

    def process(self, file: InputFile) -> Iterator[tuple[int, Chunk]]:
        counter = beam.metrics.Metrics.counter(NAMESPACE, f"{file.role}.lines" if file.role != "keys"
                                               else "requests.context_lines")
        blank = beam.metrics.Metrics.counter(NAMESPACE, f"{file.role}.blank_lines")
        # bytes that are not UTF-8 become "\xNN" escapes, which no JSON parser accepts: the line is then a
        # dead letter (invalid_json) with its bytes shown, instead of an error that stops the whole job
        with fsspec.open(file.path, "rt", compression="infer", encoding="utf-8", errors="backslashreplace",
                         newline="\n") as f:
            chunk: dict[int, list] = {}
            n = 0
            for number, line in enumerate(f, start=1):
                line = line.rstrip("\n")
                if not line.strip():
                    blank.inc()
                    continue
                rid = request_id_of(line)
                bucket = bucket_of(rid if rid is not None else f"{file.path}:{number}", self.buckets)
                if file.role == "keys":
                    if rid is not None:  # a broken neighbour line: not this span's to account for
                        chunk.setdefault(bucket, []).append(rid)
                else:
                    chunk.setdefault(bucket, []).append((number, line))
                n += 1
                if n % CHUNK_LINES == 0:
                    yield from self._emit(file, chunk)
                    chunk = {}
            yield from self._emit(file, chunk)
        counter.inc(n)
        report(self.progress, "read", file.size)

    def _emit(self, file: InputFile, chunk: dict[int, list]) -> Iterator[tuple[int, Chunk]]:
        for bucket, items in chunk.items():
            yield bucket, (file.role, file.path, pack(items) if file.role != "keys" else items)


def pack(lines: list[tuple[int, str]]) -> tuple[bytes, bytes]:
    """Compresses numbered lines for the shuffle (~7x smaller; moving bytes is the runner's main cost)."""
    numbers = np.fromiter((n for n, _ in lines), dtype=np.int64, count=len(lines))
    return numbers.tobytes(), zlib.compress("\n".join(t for _, t in lines).encode("utf-8"), 1)


def unpack(packed: tuple[bytes, bytes]) -> list[tuple[int, str]]:
    numbers, text = packed
    return list(zip(np.frombuffer(numbers, dtype=np.int64).tolist(), zlib.decompress(text).decode("utf-8").split("\n")))

"""JSON Lines partitions of the logs: ``<root>/<stream>/dt=YYYY-MM-DD/*.jsonl[.gz]``.

Paths go through fsspec, so the same code reads a local copy of the logs or an
object store. Writes are atomic per file (temporary name, then rename), so a
reader never sees half a partition file.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
from collections.abc import Iterable, Iterator
from typing import Any, Literal

import fsspec

from recloop import storage

Stream = Literal["requests", "events"]
STREAMS: tuple[Stream, ...] = ("requests", "events")
_SUFFIXES = (".jsonl", ".jsonl.gz")


def partition_dir(root: str, stream: str, day: dt.date) -> str:
    """``<root>/<stream>/dt=YYYY-MM-DD``."""
    return f"{root.rstrip('/')}/{stream}/dt={day.isoformat()}"


def days(start: dt.date, end: dt.date) -> list[dt.date]:
    """Every date from ``start`` to ``end``, both included."""
    if end < start:
        raise ValueError(f"end {end} is before start {start}")
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]


def partition_files(root: str, stream: str, start: dt.date, end: dt.date) -> list[str]:
    """The log files of a stream for the dates ``start..end`` (inclusive), sorted.

    Missing dates are skipped: a day without traffic has no partition.
    """
    fs, base = storage.filesystem(root)
    files: list[str] = []
    for day in days(start, end):
        folder = partition_dir(base, stream, day)
        if not fs.isdir(folder):
            continue
        names = sorted(p for p in fs.ls(folder, detail=False) if p.endswith(_SUFFIXES))
        files += [fs.unstrip_protocol(p) if "://" in root else p for p in names]
    return files


def partition_date(path: str) -> dt.date:
    """The ``dt=`` date of a partition file.

    Raises:
      ValueError: when the path holds no ``dt=YYYY-MM-DD`` folder.
    """
    for part in reversed(path.split("/")):
        if part.startswith("dt="):
            try:
                return dt.date.fromisoformat(part[3:])
            except ValueError as e:
                raise ValueError(f"{path!r}: partition folder {part!r} is not dt=YYYY-MM-DD ({e})") from None
    raise ValueError(f"{path!r} is not inside a dt=YYYY-MM-DD partition")


def read_lines(path: str) -> Iterator[str]:
    """Yields the non-empty lines of a ``.jsonl`` or ``.jsonl.gz`` file, without newline."""
    with fsspec.open(path, "rt", compression="infer", encoding="utf-8", newline="\n") as f:
        for line in f:
            line = line.rstrip("\n")
            if line:
                yield line


def write_lines(path: str, lines: Iterable[str], compresslevel: int = 6) -> int:
    """Writes lines to ``path`` atomically (gzip when it ends in ``.gz``).

    Returns:
      The number of lines written.
    """
    text = [line + "\n" for line in lines]
    data = "".join(text).encode("utf-8")
    if path.endswith(".gz"):
        data = gzip.compress(data, compresslevel=compresslevel, mtime=0)  # mtime=0: same bytes every run
    storage.write_bytes(path, data)  # whole: a rename on a disk, one PUT on an object store
    return len(text)


def write_json(path: str, value: Any) -> None:
    """Writes one JSON document atomically (indented, for people to read)."""
    write_lines(path, [json.dumps(value, indent=2, sort_keys=True, default=str)])


def read_json(path: str) -> Any:
    """Reads one JSON document written by ``write_json``."""
    with fsspec.open(path, "rt", compression="infer", encoding="utf-8") as f:
        return json.load(f)

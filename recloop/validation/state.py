"""The run state: what validation keeps between pipeline runs, at a URI (a folder, or a bucket prefix).

    RUN_STATE/previous.json              points at the newest accepted span's statistics (the drift
                                         reference): a blocked week is never the next week's baseline
    RUN_STATE/previous/<span>/train.pb   those statistics, one folder per accepted span, never rewritten
    RUN_STATE/previous/<span>/measures.json   that span's delivery and logging measures (``delivery.py``,
                                         ``logged.py``)
    RUN_STATE/schemas/vNNN.pbtxt         the schema versions (``schema.py``), never rewritten
    RUN_STATE/undelivered.jsonl          alerts Alertmanager did not take (``alerts.py``)
    RUN_STATE/lock.json                  held while a run reads and writes the state

Every write is a whole object, and a new reference is written before the pointer that names it
(write new, then point), so a run killed at any moment leaves the state as it was or as it
became. The lock is created only if absent (an exclusive create on the store), so two runs of the
same pipeline never write the state at once: the second one is refused, naming the first.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import posixpath
import socket
from collections.abc import Iterator
from typing import Any

from recloop import storage

LOCK = "lock.json"
POINTER = "previous.json"
MEASURES = "measures.json"  # beside a span's train.pb
STALE_AFTER = dt.timedelta(hours=6)  # longer than any validation: a holder this old died without letting go


class StateLocked(RuntimeError):
    """Another run holds the run state."""


@contextlib.contextmanager
def locked(state: str, holder: str, now: dt.datetime | None = None,
           stale_after: dt.timedelta = STALE_AFTER) -> Iterator[None]:
    """Holds the run state's lock for the ``with`` block.

    Args:
      holder: who holds it, for the message a second run gets (a run, a span, a host).
      stale_after: a lock older than this was left by a run that died; it is taken over.

    Raises:
      StateLocked: another run holds the lock, naming it, since when, and what to do.
    """
    now = now or dt.datetime.now(dt.UTC)
    uri = storage.join(state, LOCK)
    record = json.dumps({"holder": holder, "host": socket.gethostname(), "pid": os.getpid(),
                         "since": now.isoformat()}).encode("utf-8")
    for _ in range(2):
        if storage.create(uri, record):
            break
        held = _read_lock(uri)
        if not held:
            continue  # released meanwhile: try again
        since = dt.datetime.fromisoformat(held["since"])
        if now - since < stale_after:
            raise StateLocked(
                f"{uri}: the run state is held by {held['holder']!r} on {held['host']} since {since:%Y-%m-%d %H:%M} "
                f"UTC; another run of this pipeline is validating (the recurring run allows one run at a time). "
                f"If that run died, delete {uri} or wait until {since + stale_after:%Y-%m-%d %H:%M} UTC")
        storage.remove(uri)  # taken over: its holder died without letting go
    else:
        raise StateLocked(f"{uri}: another run took the run state's lock first")
    try:
        yield
    finally:
        storage.remove(uri)


def _read_lock(uri: str) -> dict[str, Any]:
    try:
        return storage.read_json(uri)
    except (FileNotFoundError, ValueError):  # released meanwhile, or a torn local write: nothing to name
        return {}


def previous_measures(state: str) -> dict[str, Any]:
    """The newest accepted span's measures (``{"delivery": ..., "logged": ...}``); empty before the first,
    or for a span kept before they were."""
    stats = previous_stats(state)
    if stats is None:
        return {}
    uri = storage.join(posixpath.dirname(stats), MEASURES)
    return storage.read_json(uri) if storage.exists(uri) else {}


def previous_stats(state: str) -> str | None:
    """The URI of the newest accepted span's training statistics, or None before the first."""
    pointer = storage.join(state, POINTER)
    if not storage.exists(pointer):
        return None
    return storage.join(state, storage.read_json(pointer)["stats"])


def accept(state: str, train_stats: str, span: str, data: str, measures: dict[str, Any] | None = None) -> str:
    """Makes a span's training statistics (a local ``stats/train.pb``) and its measures (delivery, what each
    version logged) the next run's drift reference.

    Returns:
      The URI the statistics were kept at.
    """
    folder = "previous/" + "".join(c if c.isalnum() or c in "-." else "_" for c in span)
    key = f"{folder}/train.pb"
    storage.upload(train_stats, storage.join(state, key))
    if measures is not None:
        storage.write_json(storage.join(state, folder, MEASURES), measures)
    storage.write_json(storage.join(state, POINTER), {"stats": key, "span": span, "data": data})  # last: the switch
    return storage.join(state, key)

"""Progress of a local ingest run, reported from inside Beam DoFns.

DoFns are pickled even on the in-process DirectRunner, so they cannot hold the
progress bar itself; they hold a run id and look the callback up here. On a
remote runner nothing is registered in the worker's process and reports are
dropped: progress there is the runner's own UI.
"""

from __future__ import annotations

from collections.abc import Callable

Callback = Callable[[str, int], None]  # (stage, amount done since the last report)
_CALLBACKS: dict[str, Callback] = {}


def register(run_id: str, callback: Callback) -> None:
    _CALLBACKS[run_id] = callback


def unregister(run_id: str) -> None:
    _CALLBACKS.pop(run_id, None)


def report(run_id: str | None, stage: str, amount: int = 1) -> None:
    callback = _CALLBACKS.get(run_id) if run_id else None
    if callback is not None:
        callback(stage, amount)

"""Which version each server replica actually serves: reports the servers write beside the registry pointer.

Servers follow the registry pointer (``recloop serve --registry``), so a push is one pointer write and
every replica hot-swaps within its poll interval. What serves can still differ from the pointer: a replica
that has not polled yet, or one that rejected the new version and kept the old one. Each replica therefore
writes what it serves to ``REGISTRY/serving/<replica>.json`` (whole objects, on change and at least every
``report_s`` seconds), and the gate, the daily skew check and ``recloop models`` read these reports to
name the version that actually serves. A report older than ``FRESH`` is from a replica that is gone.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict

from recloop import storage

FOLDER = "serving"
FRESH = dt.timedelta(minutes=10)  # several report intervals: a replica silent this long is gone
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


class Report(BaseModel):
    """What one replica said it serves, and when."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    replica: str
    version: str | None  # None: the heuristic serves (nothing pushed yet, or nothing loadable)
    reason: str | None  # why the heuristic serves, when it does
    pointer: str | None  # what the registry pointer named at the replica's last poll
    rejected: list[str]  # versions this replica refused to serve
    since: dt.datetime  # when it started serving ``version``
    at: dt.datetime  # when it wrote this report


def path(registry: str, replica: str) -> str:
    """The URI of a replica's report."""
    return storage.join(registry, FOLDER, _UNSAFE.sub("_", replica) + ".json")


def write(registry: str, report: Report) -> None:
    """Writes (replaces) a replica's report, whole."""
    storage.write_text(path(registry, report.replica), report.model_dump_json())


def remove(registry: str, replica: str) -> None:
    """Removes a replica's report (it stops serving)."""
    storage.remove(path(registry, replica))


def read(registry: str) -> list[Report]:
    """Every report in the registry, newest first (unreadable ones are skipped: a replica rewrites its own)."""
    reports = []
    for name in storage.listdir(storage.join(registry, FOLDER)):
        if name.endswith(".json"):
            try:
                reports.append(Report.model_validate_json(storage.read_bytes(storage.join(registry, FOLDER, name))))
            except (FileNotFoundError, ValueError):  # removed meanwhile, or not a report
                continue
    return sorted(reports, key=lambda r: r.at, reverse=True)


def fresh(reports: Sequence[Report], now: dt.datetime, within: dt.timedelta = FRESH) -> list[Report]:
    """The reports of replicas that are still there."""
    return [r for r in reports if now - r.at <= within]


def serving_version(pointer: str | None, reports: Sequence[Report]) -> tuple[str | None, str]:
    """The version that actually serves, given the pointer and the fresh reports, and why it is that one.

    No report (no server watches this registry yet, or a local run): the pointer. A replica serving the
    pointer's version: the pointer (a rollout in progress counts as done). Otherwise the version most
    replicas serve, with a note naming what the pointer says.
    """
    if not reports:
        return pointer, "the registry pointer (no server reports what it serves)"
    served = Counter(r.version for r in reports)
    if pointer in served:
        return pointer, f"the registry pointer, served by {served[pointer]} of {len(reports)} replica(s)"
    version, n = served.most_common(1)[0]
    rejected = sum(pointer in r.rejected for r in reports)
    return version, (f"served by {n} of {len(reports)} replica(s); the registry pointer names {pointer}, which "
                     f"{rejected} replica(s) rejected" + ("" if rejected else " (not loaded yet)"))


class Reporter:
    """A server's side: writes its report when what it serves changes, and at least every ``every_s`` seconds
    (so readers can tell a live replica from a gone one). Writes never fail the server: a store that cannot
    be written now is tried again at the next poll."""

    def __init__(self, registry: str, replica: str, every_s: float = 60.0):
        self.registry, self.replica, self.every_s = registry, replica, every_s
        self._last: tuple | None = None
        self._since = dt.datetime.now(dt.UTC)
        self._written_at = 0.0

    def update(self, version: str | None, reason: str | None, pointer: str | None, rejected: Sequence[str],
               monotonic: float) -> bool:
        """Writes the report if it changed or is due; returns whether it wrote."""
        state = (version, reason, pointer, tuple(sorted(rejected)))
        now = dt.datetime.now(dt.UTC)
        if self._last is not None and state[0] != self._last[0]:
            self._since = now
        if state == self._last and monotonic - self._written_at < self.every_s:
            return False
        write(self.registry, Report(replica=self.replica, version=version, reason=reason, pointer=pointer,
                                    rejected=list(state[3]), since=self._since, at=now))
        self._last, self._written_at = state, monotonic
        return True

    def close(self) -> None:
        """Removes the report: this replica no longer serves."""
        remove(self.registry, self.replica)

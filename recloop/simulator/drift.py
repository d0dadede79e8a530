"""Drift and serving-bug injection: ``KIND@W[:D]`` from week W, for D weeks (or to the end).

Bugs change only what is served and logged, never what members do; real changes
(a new category, a taste shift) change the world or the behaviour and leave the
logging alone. Validation must flag the bugs as skew/drift, and retraining must
absorb the real changes.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass

import numpy as np

from recloop.simulator.world import SimulationConfigError

KINDS = {
    "unit-bug": "item duration logged in seconds instead of minutes (serving bug)",
    "platform-rename": "platform 'android' served and logged as 'Android' (serving bug)",
    "null-surge": "member country missing from 85% of requests (serving bug)",
    "new-category": "items of an unseen category ('boxing') released and served (real change)",
    "taste-shift": "members' category and latent tastes move (real behaviour change, logs look alike)",
    "event-dup": "a client retries 30% of its event posts, so those events arrive twice (client bug)",
    "event-clock": "20% of events carry a client clock 2 days ahead, past the attribution window (client bug)",
    "propensity-bug": "every impression is logged with propensity 1, the logger's greedy shortcut (logging bug)",
    "explored-bug": "the explored flag is never logged true (logging bug)",
    "event-lag": "a client queues its event posts and stamps them when sent: 30% of events arrive 1-5 minutes late (client bug)",
    "request-dup": "the server's log shipper retries 10% of its writes, so those requests are logged twice (logging bug)",
    "row-case": "a page-config release names the rows in title case ('Popular_Now' for 'popular_now') (logging bug)",
    "hour-tz": "clients send hour_of_day in their UTC+8 local time while ts stays UTC (clock bug)",
    "tenure-default": "the member-profile lookup times out for 40% of requests; tenure_days falls back to 0 (defaults bug)",
    "stale-category": "the server's item cache serves a fifth of the items with a stale category (stale metadata)",
}
RENAMED_PLATFORM = ("android", "Android")
DUPLICATED_EVENT_SHARE = 0.3
CLOCK_AHEAD_SHARE, CLOCK_AHEAD_S = 0.2, 2 * 86_400
LAGGED_SHARE, LAG_S = 0.3, (60, 300)
NULL_SURGE_SHARE = 0.85
DUPLICATED_REQUEST_SHARE = 0.1
HOUR_AHEAD = 8
DEFAULT_TENURE_SHARE = 0.4
STALE_ITEM_EVERY = 5  # every fifth item (by index) is stale under stale-category
SECONDS_PER_MINUTE = 60.0

_PATTERN = re.compile(r"^(?P<kind>[a-z-]+)@(?P<week>\d+)(?::(?P<weeks>\d+))?$")


@dataclass(frozen=True)
class Drift:
    """One injected change, active for weeks ``week .. week + weeks - 1`` (all later weeks if None)."""

    kind: str
    week: int
    weeks: int | None = None

    def active(self, week: int) -> bool:
        return week >= self.week and (self.weeks is None or week < self.week + self.weeks)

    def __str__(self) -> str:
        return f"{self.kind}@{self.week}" + ("" if self.weeks is None else f":{self.weeks}")


def parse_drift(text: str) -> Drift:
    """Parses ``KIND@W[:D]``.

    Raises:
      SimulationConfigError: naming the text, the expected form and the known kinds.
    """
    match = _PATTERN.match(text.strip())
    if not match or match["kind"] not in KINDS:
        raise SimulationConfigError(f"drift {text!r}: expected KIND@WEEK[:WEEKS] with KIND one of {', '.join(KINDS)}")
    weeks = None if match["weeks"] is None else int(match["weeks"])
    if weeks is not None and weeks < 1:
        raise SimulationConfigError(f"drift {text!r}: the number of weeks must be >= 1")
    return Drift(match["kind"], int(match["week"]), weeks)


def active(drifts: list[Drift], kind: str, week: int) -> bool:
    """Whether a drift of ``kind`` is on in ``week``."""
    return any(d.kind == kind and d.active(week) for d in drifts)


def deliver(by_day: dict[int, list[str]], drifts: list[Drift], week: int, rng: np.random.Generator
            ) -> dict[int, list[str]]:
    """The week's event lines as the collector receives them under the client bugs active in ``week``
    (``event-dup``, ``event-clock``, ``event-lag``); the same lines when none is."""
    dup, clock, lag = (active(drifts, kind, week) for kind in ("event-dup", "event-clock", "event-lag"))
    if not (dup or clock or lag):
        return by_day
    out: dict[int, list[str]] = {}
    for day in sorted(by_day):
        lines = []
        for line in by_day[day]:
            if clock and rng.random() < CLOCK_AHEAD_SHARE:
                line = _later(line, CLOCK_AHEAD_S)
            if lag and rng.random() < LAGGED_SHARE:
                line = _later(line, int(rng.integers(*LAG_S, endpoint=True)))
            lines.append(line)
            if dup and rng.random() < DUPLICATED_EVENT_SHARE:
                lines.append(line)
        out[day] = lines
    return out


def _later(line: str, seconds: int) -> str:
    """An event line with its ``ts`` moved ``seconds`` later."""
    record = json.loads(line)
    record["ts"] = (dt.datetime.fromisoformat(record["ts"]) + dt.timedelta(seconds=seconds)).strftime(
        "%Y-%m-%dT%H:%M:%SZ")
    return json.dumps(record, separators=(",", ":"))


def ship_requests(by_day: dict[int, list[str]], drifts: list[Drift], week: int, rng: np.random.Generator
                  ) -> dict[int, list[str]]:
    """The week's request lines as the log store receives them under ``request-dup`` (a retried write
    right after its original); the same lines when it is off."""
    if not active(drifts, "request-dup", week):
        return by_day
    return {day: [copy for line in lines for copy in ([line, line] if rng.random() < DUPLICATED_REQUEST_SHARE
                                                      else [line])]
            for day, lines in sorted(by_day.items())}


def as_named(rows: np.ndarray, drifts: list[Drift], week: int) -> np.ndarray:
    """The row names the request log records (title case under ``row-case``)."""
    if not active(drifts, "row-case", week):
        return rows
    return np.vectorize(str.title, otypes=[object])(rows)


def as_logged(propensity: np.ndarray, explored: np.ndarray, drifts: list[Drift], week: int
              ) -> tuple[np.ndarray, np.ndarray]:
    """The propensities and explored flags the request log records under the logging bugs active in
    ``week`` (``propensity-bug``, ``explored-bug``); what the policy did is unchanged."""
    if active(drifts, "propensity-bug", week):
        propensity = np.ones_like(propensity)
    if active(drifts, "explored-bug", week):
        explored = np.zeros_like(explored)
    return propensity, explored

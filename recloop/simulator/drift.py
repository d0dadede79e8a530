"""Drift and serving-bug injection: ``KIND@W[:D]`` from week W, for D weeks (or to the end).

Bugs change only what is served and logged, never what members do; real changes
(a new category, a taste shift) change the world or the behaviour and leave the
logging alone. Validation must flag the bugs as skew/drift, and retraining must
absorb the real changes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from recloop.simulator.world import SimulationConfigError

KINDS = {
    "unit-bug": "item duration logged in seconds instead of minutes (serving bug)",
    "platform-rename": "platform 'android' served and logged as 'Android' (serving bug)",
    "null-surge": "member country missing from 85% of requests (serving bug)",
    "new-category": "items of an unseen category ('boxing') released and served (real change)",
    "taste-shift": "members' category and latent tastes move (real behaviour change, logs look alike)",
}
RENAMED_PLATFORM = ("android", "Android")
NULL_SURGE_SHARE = 0.85
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

"""When members visit: one request per visit, with its true context.

Visits follow each member's activity rate; the hour follows their chronotype
(morning, midday or evening person); the platform is mostly their primary one.
Members who join mid-week only visit after joining.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from recloop.features.spec import PLATFORMS
from recloop.simulator.world import CHRONOTYPE_PEAK, TRAFFIC, World, stream

EPOCH = dt.date(1970, 1, 1).toordinal()


@dataclass
class Visits:
    """A week of requests in time order (true values, before any serving bug)."""

    member: np.ndarray  # world member index
    ts: np.ndarray  # unix seconds
    day: np.ndarray  # date ordinal
    hour: np.ndarray
    dow: np.ndarray  # 0 = Monday
    platform: np.ndarray  # index into PLATFORMS

    def __len__(self) -> int:
        return len(self.ts)


def weekday(ordinal: np.ndarray) -> np.ndarray:
    """0 = Monday, as ``date.weekday``."""
    return (ordinal + 6) % 7


def visits(world: World, week: int) -> Visits:
    """Draws week ``week``'s requests (the world must have been advanced to it)."""
    rng = stream(world.seed, TRAFFIC, week)
    n = world.scale.requests_per_week
    m = world.members
    d0 = world.week_start(week).toordinal()
    present = np.clip((d0 + 7 - m.joined) / 7.0, 0.0, 1.0)  # share of the week they are members
    weight = m.activity * present
    member = rng.choice(len(weight), n, p=weight / weight.sum())
    first = np.maximum(m.joined[member], d0)
    day = first + np.floor(rng.random(n) * (d0 + 7 - first)).astype(np.int64)
    routine = rng.random(n) < 0.85
    hour = np.where(routine, np.floor(CHRONOTYPE_PEAK[m.chronotype[member]] + rng.normal(0.0, 1.5, n)),
                    rng.integers(0, 24, n)).astype(np.int64) % 24
    seconds = rng.integers(0, 3600, n)
    platform = np.where(rng.random(n) < 0.75, m.platform[member], rng.integers(0, len(PLATFORMS), n))
    ts = (day - EPOCH) * 86_400 + hour * 3600 + seconds
    order = np.argsort(ts, kind="stable")
    return Visits(member=member[order], ts=ts[order], day=day[order], hour=hour[order],
                  dow=weekday(day[order]), platform=platform[order])

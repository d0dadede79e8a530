"""Simulated time: weeks pass in minutes, and every timestamp follows this clock."""

from __future__ import annotations

import datetime as dt


class SimClock:
    """A clock the simulator moves forward and a server in the loop reads (``now``).

    Only forward moves are allowed, so logs written under it stay in time order.
    """

    def __init__(self, now: dt.datetime):
        self._now = self._aware(now)

    @staticmethod
    def _aware(t: dt.datetime) -> dt.datetime:
        if t.tzinfo is None:
            raise ValueError(f"simulated time must be timezone-aware (UTC), got {t!r}")
        return t.astimezone(dt.UTC)

    def now(self) -> dt.datetime:
        return self._now

    def advance_to(self, t: dt.datetime) -> None:
        """Moves the clock to ``t``.

        Raises:
          ValueError: if ``t`` is before the current simulated time.
        """
        t = self._aware(t)
        if t < self._now:
            raise ValueError(f"the simulated clock only moves forward: now {self._now}, asked {t}")
        self._now = t

"""The server's notion of now: the wall clock in production, the simulator's time in a simulated loop.

The time of each request decides the day it is served for (the item feed, item
ages) and the time it is logged with, so a simulated week runs in minutes yet
serves and logs as if it took a week (docs/architecture.md, "Time").
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from recloop.features.records import parse_ts
from recloop.serving.request import InvalidRequest

TIME_HEADER = "x-recloop-time"


class Clock:
    """The server's notion of now: the wall clock, or (``simulated``) the time each request carries
    in the ``x-recloop-time`` header, which the simulator sets (docs/architecture.md, "Time")."""

    def __init__(self, simulated: bool = False, start: dt.datetime | None = None):
        self.simulated = simulated
        self._latest = start or dt.datetime.now(dt.UTC)

    def request_time(self, headers: Mapping[str, str] | None) -> dt.datetime:
        """The time of a request.

        Raises:
          InvalidRequest: on a simulated clock, when the header is missing or not an RFC 3339 time.
        """
        if not self.simulated:
            return dt.datetime.now(dt.UTC)
        value = (headers or {}).get(TIME_HEADER)
        try:
            now = parse_ts(value)
        except ValueError as e:
            raise InvalidRequest(f"header {TIME_HEADER}: this server runs on a simulated clock and needs the "
                                 f"request time ({e}), got {value!r}") from None
        self._latest = max(self._latest, now)
        return now

    def now(self) -> dt.datetime:
        """The latest time seen (simulated) or the wall clock."""
        return self._latest if self.simulated else dt.datetime.now(dt.UTC)

"""Popular in context: items ranked by recent clicks in the same daypart and platform.

Sparse contexts back off to the daypart and then to all traffic, so an unseen
platform (a renamed one, a new client) still gets a sensible ranking instead of
an error. Ties (items nobody clicked yet) keep the caller's candidate order.
Data without an hour (a feature declaration with no ``hour`` role) passes
``NO_HOUR``: every request then falls in one daypart, ``any``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# hour_of_day -> daypart; the hidden behaviour of the simulator does not use these
# buckets, they are only the heuristic's notion of "in context".
_DAYPARTS = np.array(["night"] * 5 + ["morning"] * 7 + ["afternoon"] * 5 + ["evening"] * 5 + ["night"] * 2)

NO_HOUR = -1  # no hour of day is known (features.roles.ABSENT): one daypart for every request

# Weight of each back-off level in the score: exact context, daypart, everything.
_BACKOFF = (1.0, 0.2, 0.05)


def daypart(hour_of_day: int) -> str:
    """``night`` (22-4), ``morning`` (5-11), ``afternoon`` (12-16) or ``evening`` (17-21)."""
    if not 0 <= hour_of_day <= 23:
        raise ValueError(f"hour_of_day must be 0-23, got {hour_of_day}")
    return str(_DAYPARTS[hour_of_day])


def context_key(hour_of_day: int, platform: str) -> tuple[str, str]:
    """The context bucket a request falls in (daypart ``any`` for ``NO_HOUR``)."""
    return _part(hour_of_day), platform


def _part(hour_of_day: int) -> str:
    return "any" if hour_of_day == NO_HOUR else daypart(hour_of_day)


class PopularInContext:
    """Click counts per (daypart, platform) bucket with back-off.

    Fit it on logged impressions (decay-weighted clicks), then ``rank`` candidates
    for a request context.
    """

    def __init__(self, counts: dict[tuple[str, str], dict[str, float]]):
        self._exact = counts
        self._daypart: dict[str, dict[str, float]] = {}
        self._all: dict[str, float] = {}
        for (part, _), items in counts.items():
            bucket = self._daypart.setdefault(part, {})
            for item, w in items.items():
                bucket[item] = bucket.get(item, 0.0) + w
                self._all[item] = self._all.get(item, 0.0) + w

    @classmethod
    def fit(
        cls,
        item_id: Sequence[str],
        hour_of_day: Sequence[int],
        platform: Sequence[str],
        weight: Sequence[float],
    ) -> PopularInContext:
        """Builds the table from impressions.

        Args:
          item_id, hour_of_day, platform: one entry per impression, as logged.
          weight: the click weight of each impression (0 for no click, a decayed
            1 for a click; see ``decay_weights``).
        """
        counts: dict[tuple[str, str], dict[str, float]] = {}
        for item, hour, plat, w in zip(item_id, hour_of_day, platform, weight, strict=True):
            if w:
                bucket = counts.setdefault(context_key(int(hour), str(plat)), {})
                bucket[str(item)] = bucket.get(str(item), 0.0) + float(w)
        return cls(counts)

    def scores(self, hour_of_day: int, platform: str, candidates: Sequence[str]) -> np.ndarray:
        """Back-off popularity score of each candidate in this context (0 if never clicked)."""
        part = _part(hour_of_day)
        levels = (self._exact.get((part, platform), {}), self._daypart.get(part, {}), self._all)
        out = np.zeros(len(candidates))
        for w, table in zip(_BACKOFF, levels, strict=True):
            if table:
                out += w * np.fromiter((table.get(c, 0.0) for c in candidates), float, len(candidates))
        return out

    def rank(self, hour_of_day: int, platform: str, candidates: Sequence[str]) -> tuple[list[str], np.ndarray]:
        """Candidates by score, best first; ties keep the given order (a stable sort).

        Returns:
          ``(items, scores)``, both in ranked order.
        """
        scores = self.scores(hour_of_day, platform, candidates)
        order = np.argsort(-scores, kind="stable")
        return [candidates[i] for i in order], scores[order]

    def to_dict(self) -> dict[str, dict[str, float]]:
        """JSON-ready form (``daypart|platform`` keys), for the serving tables."""
        return {f"{p}|{pl}": dict(items) for (p, pl), items in sorted(self._exact.items())}

    @classmethod
    def from_dict(cls, data: dict[str, dict[str, float]]) -> PopularInContext:
        """Inverse of ``to_dict``."""
        return cls({tuple(k.split("|", 1)): dict(v) for k, v in data.items()})  # type: ignore[misc]

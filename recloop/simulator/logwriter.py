"""Turns a simulated week into log lines in the contract's format.

Lines are assembled from pre-serialised pieces (item metadata per item and day)
because a default-scale week is a million impressions; the tests parse every
line back through ``recloop.features`` to keep this honest.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections import defaultdict

import numpy as np

from recloop.features.spec import CATEGORIES, LANGUAGES
from recloop.simulator.behaviour import Outcome
from recloop.simulator.drift import STALE_ITEM_EVERY
from recloop.simulator.policy import Requests, Slates
from recloop.simulator.traffic import EPOCH
from recloop.simulator.world import ALL_CATEGORIES, World, creator_id, item_id


def rfc3339(ts: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def day_of(ts: int) -> int:
    """Date ordinal of unix seconds (UTC)."""
    return ts // 86_400 + EPOCH


class ItemJson:
    """Item metadata as served, serialised once per (item, day, unit). ``stale``: every
    ``STALE_ITEM_EVERY``-th item is served with the next category over (a stale cache, ``stale-category``)."""

    def __init__(self, world: World, stale: bool = False):
        self.world, self.stale = world, stale
        self._cache: dict[tuple[int, int, float], str] = {}

    def __call__(self, item: int, day: int, unit: float) -> str:
        key = (item, day, unit)
        text = self._cache.get(key)
        if text is None:
            it = self.world.items
            release = int(it.release[item])
            category = int(it.category[item])
            if self.stale and item % STALE_ITEM_EVERY == 0:
                category = (category + 1) % len(CATEGORIES)  # still in the vocabulary
            text = json.dumps({
                "category": ALL_CATEGORIES[category],
                "creator": creator_id(it.creator[item]),
                "duration_min": float(it.duration[item]) * unit,
                "language": LANGUAGES[it.language[item]],
                "release_date": _iso(release),
                "age_days": day - release,
            }, separators=(",", ":"))
            self._cache[key] = text
        return text


def _iso(ordinal: int) -> str:
    return dt.date.fromordinal(ordinal).isoformat()


def request_lines(requests: Requests, slates: Slates, item_json: ItemJson, units: np.ndarray
                  ) -> dict[int, list[str]]:
    """Request records per day ordinal. ``units`` scales each request's served durations."""
    by_day: dict[int, list[str]] = defaultdict(list)
    ids = item_json.world.item_ids()
    rows = {name: json.dumps(name) for name in set(slates.row.ravel())}  # row names come from the policy
    for r in range(len(requests)):
        day = int(requests.day[r])
        member = {"member_id": requests.member_id[r], "tenure_days": int(requests.tenure_days[r]),
                  "country": requests.country[r], "preferred_category": requests.preferred_category[r]}
        context = {"hour_of_day": int(requests.hour[r]), "day_of_week": int(requests.dow[r]),
                   "platform": requests.platform[r]}
        unit = float(units[r])
        shown = ",".join(
            f'{{"item_id":"{ids[i]}","position":{k},"row":{rows[slates.row[r, k]]},'
            f'"score":{float(slates.score[r, k])!r},"propensity":{float(slates.propensity[r, k])!r},'
            f'"explored":{"true" if slates.explored[r, k] else "false"},'
            f'"item":{item_json(int(i), day, unit)}}}'
            for k, i in enumerate(slates.item[r]))
        by_day[day].append(
            f'{{"request_id":"{requests.request_id[r]}","ts":"{rfc3339(int(requests.ts[r]))}",'
            f'"model_version":{json.dumps(slates.model_version[r])},"member":{json.dumps(member)},'
            f'"context":{json.dumps(context)},"impressions":[{shown}]}}')
    return by_day


def event_lines(requests: Requests, slates: Slates, outcome: Outcome) -> dict[int, list[str]]:
    """Event records per day ordinal of the event, in time order within a day."""
    _n, k = slates.item.shape
    request_ts = np.repeat(requests.ts, k)
    rows = []
    for name, delay in (("click", outcome.t_click), ("start", outcome.t_start),
                        ("complete", outcome.t_complete), ("like", outcome.t_like)):
        hit = np.flatnonzero(delay >= 0)
        rows += [(int(request_ts[j] + delay[j]), j, name) for j in hit]
    rows.sort()
    by_day: dict[int, list[str]] = defaultdict(list)
    for ts, j, name in rows:
        by_day[day_of(ts)].append(
            f'{{"request_id":"{requests.request_id[j // k]}","item_id":"{item_id(slates.item[j // k, j % k])}",'
            f'"event":"{name}","ts":"{rfc3339(ts)}"}}')
    return by_day

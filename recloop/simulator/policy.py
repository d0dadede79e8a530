"""Logging policies: who decides what the simulated members are shown.

``HeuristicPolicy`` is the bootstrap: the heuristics of ``baselines`` (popular in
context, the member's usual) with epsilon exploration, refitted each week on the
logs so far. A served model plugs in through the same ``Policy`` protocol
(``served.ServedPolicy``), and the closed loop logs what it chose.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from recloop.baselines import MemberUsual, PopularInContext, daypart, decay_weights, epsilon_greedy
from recloop.simulator.traffic import EPOCH
from recloop.simulator.world import ALL_CATEGORIES, World

TOP = 30  # candidates kept per ranking: enough to fill a row whatever was shown above it


@dataclass
class Requests:
    """A batch of requests as the server receives them (serving bugs included)."""

    request_id: list[str]
    ts: np.ndarray  # unix seconds
    day: np.ndarray  # date ordinal
    member_id: list[str]
    tenure_days: np.ndarray
    country: list[str | None]
    preferred_category: list[str | None]
    hour: np.ndarray
    dow: np.ndarray
    platform: list[str]

    def __len__(self) -> int:
        return len(self.request_id)


@dataclass
class Slates:
    """What a policy showed: (requests, slots) arrays; items are world indices."""

    item: np.ndarray
    row: np.ndarray  # str
    score: np.ndarray
    propensity: np.ndarray
    explored: np.ndarray
    model_version: list[str]
    # a served policy's: the server's request id and fallback reason (None: the model served) per request
    request_id: list[str] | None = None
    fallback: list[str | None] | None = None


@dataclass
class Feedback:
    """Logged impressions with their click outcome, as a policy may learn from them."""

    member_id: list[str] = field(default_factory=list)
    item_id: list[str] = field(default_factory=list)
    category: list[str] = field(default_factory=list)
    creator: list[str] = field(default_factory=list)
    hour: list[int] = field(default_factory=list)
    platform: list[str] = field(default_factory=list)
    ts: list[int] = field(default_factory=list)
    click: list[int] = field(default_factory=list)

    def extend(self, other: Feedback) -> None:
        for name in self.__dataclass_fields__:
            getattr(self, name).extend(getattr(other, name))

    def since(self, ts: int) -> Feedback:
        keep = [i for i, t in enumerate(self.ts) if t >= ts]
        return Feedback(**{n: [getattr(self, n)[i] for i in keep] for n in self.__dataclass_fields__})


class Policy(Protocol):
    """Chooses slates for a week of requests and learns from what was logged.

    ``logs_requests``: the policy (a model server) logs the request records itself and its slates
    carry its request ids; the simulator then writes only the events, under those ids.
    """

    logs_requests: bool

    def recommend(self, requests: Requests, world: World, week: int, rng: np.random.Generator) -> Slates: ...

    def observe(self, feedback: Feedback) -> None: ...


class HeuristicPolicy:
    """The bootstrap logging policy: rows "popular_now" then "for_your_usual", epsilon-greedy.

    "for_your_usual" puts the member's usual category first (from their clicks,
    else their declared preferred category). With no history yet (week 0) every
    item ties and the newest releases lead.
    """

    version = "heuristic-v1"
    logs_requests = False  # the simulator writes its request records

    def __init__(self, epsilon: float = 0.1, rows: tuple[tuple[str, int], ...] = (("popular_now", 5),
                 ("for_your_usual", 5)), window_days: int = 28, half_life_days: float = 7.0):
        self.epsilon, self.rows = epsilon, rows
        self.window_days, self.half_life_days = window_days, half_life_days
        self.history = Feedback()

    def observe(self, feedback: Feedback) -> None:
        self.history.extend(feedback)

    def _tables(self, now: int) -> tuple[PopularInContext, MemberUsual]:
        self.history = self.history.since(now - self.window_days * 86_400)
        h = self.history
        w = decay_weights(h.click, (now - np.asarray(h.ts, dtype=float)) / 86_400, self.half_life_days)
        return (PopularInContext.fit(h.item_id, h.hour, h.platform, w),
                MemberUsual.fit(h.member_id, h.item_id, h.category, h.creator, h.ts, w))

    def recommend(self, requests: Requests, world: World, week: int, rng: np.random.Generator) -> Slates:
        slots = sum(n for _, n in self.rows)
        n = len(requests)
        u = rng.random((n, slots, 2))  # always drawn, so a fixed stream gives fixed slates
        now = int((world.week_start(week).toordinal() - EPOCH) * 86_400)
        popular, usual = self._tables(now)
        items = world.items
        week_end = world.week_start(week).toordinal() + 6
        # newest first: the order ties keep, so with no clicks yet new releases lead
        candidates = np.lexsort((np.arange(len(items.release)), -items.release))
        candidates = candidates[items.release[candidates] <= week_end]
        ids = world.item_ids(candidates)
        cat_of = items.category[candidates]
        bucket_scores: dict[tuple[str, str], np.ndarray] = {}
        rankings: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}

        def ranking(day: int, hour: int, platform: str, category: int | None) -> tuple[np.ndarray, np.ndarray]:
            key = (day, daypart(hour), platform, category)
            if key not in rankings:
                bucket = key[1:3]
                if bucket not in bucket_scores:  # relative to the context's most popular item: in [0, 1], as served
                    raw = popular.scores(hour, platform, ids)
                    bucket_scores[bucket] = raw / raw.max() if raw.size and raw.max() > 0 else np.zeros(len(ids))
                pool = np.flatnonzero(items.release[candidates] <= day)  # positions in candidates
                score = bucket_scores[bucket][pool]
                first = np.zeros(len(pool)) if category is None else (cat_of[pool] == category).astype(float)
                order = np.lexsort((np.arange(len(pool)), -score, -first))[:TOP]
                rankings[key] = (order, pool)
            return rankings[key]

        out_item = np.zeros((n, slots), dtype=np.int64)
        out_row = np.empty((n, slots), dtype=object)
        out_score = np.zeros((n, slots))
        out_prop = np.zeros((n, slots))
        out_explored = np.zeros((n, slots), dtype=bool)
        row_names = [name for name, k in self.rows for _ in range(k)]
        for r in range(n):
            day, hour, platform = int(requests.day[r]), int(requests.hour[r]), requests.platform[r]
            profile = usual.get(requests.member_id[r])
            usual_cat = profile.usual_category if profile else requests.preferred_category[r]
            cat = ALL_CATEGORIES.index(usual_cat) if usual_cat in ALL_CATEGORIES else None
            pop_rank, pool = ranking(day, hour, platform, None)
            usual_rank, _ = ranking(day, hour, platform, cat) if cat is not None else (pop_rank, pool)
            per_slot = [pop_rank if name == "popular_now" else usual_rank for name in row_names]
            filled = epsilon_greedy(per_slot, len(pool), self.epsilon, u[r, :, 0], u[r, :, 1])
            chosen = pool[[s.item for s in filled]]
            out_item[r] = candidates[chosen]
            out_score[r] = bucket_scores[(daypart(hour), platform)][chosen]
            out_prop[r] = [s.propensity for s in filled]
            out_explored[r] = [s.explored for s in filled]
            out_row[r] = row_names
        return Slates(item=out_item, row=out_row, score=out_score, propensity=out_prop,
                      explored=out_explored, model_version=[self.version] * n)

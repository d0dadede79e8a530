"""Rows: ranked candidates -> rows by filters, with epsilon exploration and exact propensities.

The last step of the funnel (retrieval -> ranking -> rows). Each row keeps the
ranked candidates its filter admits, best combined score first; the slots are
then filled row by row with ``baselines.epsilon_greedy``, so no item appears
twice on the page and every impression carries the probability it had in its
slot (what off-policy estimates divide by). Rows and filters are one config.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from recloop.baselines import MemberProfile, epsilon_greedy
from recloop.features import roles

Filter = Literal["usual", "quick", "new", "popular"]
QUICK_MINUTES = 20.0
NEW_DAYS = 7


class RowSpec(BaseModel):
    """One row: its name (logged as ``row``) and the filter its items pass."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    filter: Filter


class RowsConfig(BaseModel):
    """The rows of a page, in order, and the share of slots explored."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    rows: tuple[RowSpec, ...] = (RowSpec(name="for_your_usual", filter="usual"),
                                 RowSpec(name="quick", filter="quick"),
                                 RowSpec(name="something_new", filter="new"),
                                 RowSpec(name="popular_now", filter="popular"))
    epsilon: float = Field(0.1, ge=0.0, le=1.0)
    popular_top: int = Field(50, gt=0)  # "popular now" = among the context's most popular this many


@dataclass(frozen=True)
class Candidates:
    """The ranked pool of one request: metadata, scores and heads, aligned (pool order is arbitrary)."""

    item_id: np.ndarray
    category: np.ndarray
    creator: np.ndarray
    duration_min: np.ndarray
    release_day: np.ndarray  # date ordinal
    score: np.ndarray  # combined ranking score in [0, 1]
    heads: Mapping[str, np.ndarray]
    popularity: np.ndarray  # popularity in the request's context (0 = never clicked)
    index: np.ndarray | None = None  # catalog row of each pool item, for the caller

    @classmethod
    def from_catalog(cls, catalog: Mapping[str, np.ndarray], index: np.ndarray, score: np.ndarray,
                     heads: Mapping[str, np.ndarray], popularity: np.ndarray) -> Candidates:
        """The candidates at catalog rows ``index``, with what the filters read: the declared features playing
        the category, creator and duration roles (``features.roles``: "" or -1 where none does)."""
        n = len(catalog["item_id"])
        return cls(item_id=catalog["item_id"][index], category=roles.column("category", catalog, n)[index],
                   creator=roles.column("creator", catalog, n)[index],
                   duration_min=roles.column("duration", catalog, n)[index], release_day=catalog["release_day"][index],
                   score=score, heads=heads, popularity=popularity, index=index)


@dataclass(frozen=True)
class Impression:
    """One filled slot."""

    row: str
    position: int
    index: int  # into the candidate pool
    propensity: float
    explored: bool


def admitted(spec: RowSpec, pool: Candidates, profile: MemberProfile | None, preferred: str | None, day: int,
             popular_top: int) -> np.ndarray:
    """Boolean mask of the pool items a row's filter admits.

    ``usual``: the member's usual category or creator (the declared category for a
    member without clicks); ``quick``: at most 20 minutes; ``new``: released in the
    last 7 days or a category the member has not tried; ``popular``: among the
    context's ``popular_top`` most popular items that anyone clicked. A category or
    creator "" and a duration < 0 are unknown (no feature declared for that role, or
    a missing value) and match nothing.
    """
    category, creator = pool.category != "", pool.creator != ""
    if spec.filter == "usual":
        if profile is not None:
            return ((pool.category == profile.usual_category) & category) | \
                ((pool.creator == profile.usual_creator) & creator)
        return pool.category == preferred if preferred else np.zeros(len(pool.item_id), dtype=bool)
    if spec.filter == "quick":
        return (pool.duration_min >= 0) & (pool.duration_min <= QUICK_MINUTES)
    if spec.filter == "new":
        tried = sorted(profile.categories_tried) if profile is not None else []
        return ((day - pool.release_day) <= NEW_DAYS) | (~np.isin(pool.category, tried) & category)
    top = np.argsort(-pool.popularity, kind="stable")[:popular_top]
    mask = np.zeros(len(pool.item_id), dtype=bool)
    mask[top[pool.popularity[top] > 0]] = True
    return mask


def slot_rankings(pool: Candidates, config: RowsConfig, k: int, profile: MemberProfile | None,
                  preferred: str | None, day: int, rows: Sequence[str] | None = None
                  ) -> tuple[list[list[int]], list[str]]:
    """Per slot of the page, the ranking its row's filter admits (pool indices, best first) and the row name.

    A pool smaller than the page gives as many slots as it has items.

    Raises:
      ValueError: naming an unknown row.
    """
    specs = list(config.rows)
    if rows is not None:
        known = {s.name: s for s in specs}
        unknown = [r for r in rows if r not in known]
        if unknown:
            raise ValueError(f"unknown row {unknown[0]!r}; configured rows: {list(known)}")
        specs = [known[r] for r in rows]
    by_score = np.argsort(-pool.score, kind="stable")
    rankings: list[list[int]] = []
    names: list[str] = []
    for spec in specs:
        mask = admitted(spec, pool, profile, preferred, day, config.popular_top)
        ranking = by_score[mask[by_score]].tolist()
        rankings += [ranking] * k
        names += [spec.name] * k
    del rankings[len(pool.item_id):], names[len(pool.item_id):]  # a tiny catalog: the last rows come up short
    return rankings, names


def fill(pool: Candidates, config: RowsConfig, k: int, profile: MemberProfile | None, preferred: str | None,
         day: int, rng: np.random.Generator, rows: Sequence[str] | None = None) -> list[Impression]:
    """Fills ``k`` slots per row; rows that admit fewer than ``k`` items are explored uniformly, and a
    pool smaller than the page fills as many slots as it has items.

    Args:
      pool: the ranked candidates of the request.
      k: items per row.
      profile, preferred: the member's usual (None without clicks) and declared category.
      day: the request's date ordinal.
      rng: the request's random stream (seeded per request, so a page can be replayed).
      rows: names of the rows asked for (all configured rows when None).

    Raises:
      ValueError: naming an unknown row.
    """
    rankings, names = slot_rankings(pool, config, k, profile, preferred, day, rows)
    u = rng.random((2, len(rankings)))
    slots = epsilon_greedy(rankings, len(pool.item_id), config.epsilon, u[0], u[1])
    return [Impression(row=name, position=i, index=s.item, propensity=s.propensity, explored=s.explored)
            for i, (name, s) in enumerate(zip(names, slots, strict=True))]

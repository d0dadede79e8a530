"""Rows: ranked candidates -> rows by filters, sampled with full support and exact propensities.

The last step of the funnel (retrieval -> ranking -> rows). Each slot of a row
shows, with probability ``catalog_share``, an item drawn uniformly from every
released item the row's filter admits (the whole catalog, not the retrieved
pool), and otherwise an item drawn from a softmax over the ranking scores of the
retrieved items the row admits (``temperature`` 0: the best one). No item
appears twice on the page, and every impression carries the probability it had
in its slot given the items above it (what off-policy estimates divide by).

So every item a row admits can be shown (full support: a candidate is never
judged only by what the logging model retrieved), and the catalog-wide slots
(``explored``) are a uniform sample of the catalog the row admits, which is what
the unbiased offline views read. ``slot_probability`` is the one formula
serving and replay share. Rows, filters and exploration are one config.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from recloop.baselines import MemberProfile
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
    """The rows of a page, in order, and how their slots explore."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    rows: tuple[RowSpec, ...] = (RowSpec(name="for_your_usual", filter="usual"),
                                 RowSpec(name="quick", filter="quick"),
                                 RowSpec(name="something_new", filter="new"),
                                 RowSpec(name="popular_now", filter="popular"))
    # softmax temperature over the combined ranking score (in [0, 1]); 0 shows the best admitted item. Chosen by
    # measurement (bench/README.md, off-policy section): 0.05 and 0.1 cost 10-14% of the clicks, and the effective
    # sample size they buy a candidate's estimate on a small week stays far below what the gate needs
    temperature: float = Field(0.0, ge=0.0)
    # share of slots drawn uniformly from every released item the row admits (the catalog-wide exploration)
    catalog_share: float = Field(0.05, ge=0.0, le=1.0)
    popular_top: int = Field(50, gt=0)  # "popular now" = among the context's most popular this many


class Sorted:
    """A set of catalog rows held as a sorted array."""

    def __init__(self, rows: np.ndarray):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def count_in(self, items: np.ndarray) -> int:
        """How many of ``items`` (distinct catalog rows) are in the set."""
        if not len(self.rows):
            return 0
        at = np.minimum(np.searchsorted(self.rows, items), len(self.rows) - 1)
        return int((self.rows[at] == items).sum())

    def contains(self, item: int) -> bool:
        at = int(self.rows.searchsorted(item))
        return at < len(self.rows) and int(self.rows[at]) == item

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """An ordered uniform sample without replacement of ``min(size, len)`` rows."""
        return rng.choice(self.rows, size=min(size, len(self.rows)), replace=False)


class Parts:
    """A set of released items kept lazy, as it can be most of a million-item catalog: disjoint parts of the
    released items (positions into ``rows``, the sorted catalog rows of every released item) and a test of
    membership by position that agrees with them."""

    def __init__(self, rows: np.ndarray, parts: Sequence[np.ndarray], member: Callable[[np.ndarray], np.ndarray]):
        self.rows, self.parts, self.member = rows, [p for p in parts if len(p)], member
        self.ends = np.cumsum([len(p) for p in self.parts], dtype=np.int64)

    def __len__(self) -> int:
        return int(self.ends[-1]) if len(self.ends) else 0

    def _members(self, items: np.ndarray) -> np.ndarray:
        at = np.minimum(np.searchsorted(self.rows, items), len(self.rows) - 1)
        released = self.rows[at] == items
        return released & self.member(at)

    def count_in(self, items: np.ndarray) -> int:
        return int(self._members(items).sum()) if len(self.rows) else 0

    def contains(self, item: int) -> bool:
        at = int(self.rows.searchsorted(item))
        return at < len(self.rows) and int(self.rows[at]) == item and bool(self.member(np.array([at]))[0])

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """An ordered uniform sample without replacement: uniform over the parts' concatenation, which lists
        every member once."""
        picked = rng.choice(len(self), size=min(size, len(self)), replace=False)
        part = np.searchsorted(self.ends, picked, side="right")
        starts = np.concatenate([[0], self.ends[:-1]])
        return self.rows[[int(self.parts[p][i - starts[p]]) for p, i in zip(part.tolist(), picked.tolist(),
                                                                              strict=True)]].astype(np.int64)


ItemSet = Sorted | Parts


@dataclass(frozen=True)
class RowDraws:
    """What a row's catalog-wide share draws from: every released item it admits (catalog rows) and a
    uniformly random ordered sample of them, long enough for a page (the first not yet shown is uniform over
    the admitted items not yet shown)."""

    admitted: ItemSet
    sample: np.ndarray


@dataclass(frozen=True)
class Exploration:
    """A request's catalog-wide draws: per row name, and over every released item (for a row that has nothing
    left to show)."""

    rows: Mapping[str, RowDraws]
    released: RowDraws

    def items(self) -> np.ndarray:
        """Every catalog row a slot may draw: what the ranker must score besides the retrieved pool."""
        return np.unique(np.concatenate([self.released.sample, *(d.sample for d in self.rows.values())]).astype(
            np.int64))


@dataclass(frozen=True)
class Candidates:
    """The ranked pool of one request: metadata, scores and heads, aligned (pool order is arbitrary).

    ``retrieved`` marks the items the softmax share may show (None: all); the rest were scored only because the
    catalog-wide share may draw them (``exploration``).
    """

    item_id: np.ndarray
    category: np.ndarray
    creator: np.ndarray
    duration_min: np.ndarray
    release_day: np.ndarray  # date ordinal
    score: np.ndarray  # combined ranking score in [0, 1]
    heads: Mapping[str, np.ndarray]
    popularity: np.ndarray  # popularity in the request's context (0 = never clicked)
    index: np.ndarray | None = None  # catalog row of each pool item, for the caller
    retrieved: np.ndarray | None = None
    exploration: Exploration | None = None

    @classmethod
    def from_catalog(cls, catalog: Mapping[str, np.ndarray], index: np.ndarray, score: np.ndarray,
                     heads: Mapping[str, np.ndarray], popularity: np.ndarray, retrieved: np.ndarray | None = None,
                     exploration: Exploration | None = None) -> Candidates:
        """The candidates at catalog rows ``index``, with what the filters read: the declared features playing
        the category, creator and duration roles (``features.roles``: "" or -1 where none does)."""
        n = len(catalog["item_id"])
        return cls(item_id=catalog["item_id"][index], category=roles.column("category", catalog, n)[index],
                   creator=roles.column("creator", catalog, n)[index],
                   duration_min=roles.column("duration", catalog, n)[index], release_day=catalog["release_day"][index],
                   score=score, heads=heads, popularity=popularity, index=index, retrieved=retrieved,
                   exploration=exploration)

    @property
    def catalog_rows(self) -> np.ndarray:
        """Catalog rows of the pool (pool positions when the pool was not built from a catalog)."""
        return self.index if self.index is not None else np.arange(len(self.item_id))


@dataclass(frozen=True)
class Impression:
    """One filled slot."""

    row: str
    position: int
    index: int  # into the candidate pool
    propensity: float
    explored: bool  # drawn by the catalog-wide share


@dataclass(frozen=True)
class Stage:
    """Where a slot draws from, as catalog rows: retrieved items best first, with their softmax logits
    ``score / temperature`` (None: temperature 0), and the catalog-wide draws."""

    ranked: np.ndarray
    logits: np.ndarray | None
    draws: RowDraws


@dataclass(frozen=True)
class SlotChoice:
    """What one slot may show: its row (the retrieved items the row admits, and every released item it
    admits), and once the row has nothing left to show, every retrieved item and the released catalog."""

    row: Stage
    rest: Stage

    def stage(self, gone: np.ndarray) -> tuple[Stage, np.ndarray, int]:
        """The stage a slot draws from given the catalog rows ``gone`` above it: the retrieved items of it left
        (mask) and how many of its catalog-wide items are left."""
        return self.first(lambda stage: _left(stage, gone))

    def first(self, left_of: Callable[[Stage], tuple[np.ndarray, int]]) -> tuple[Stage, np.ndarray, int]:
        """The row's stage while it has anything left to show, else the rest's, with what ``left_of`` says it
        has left."""
        for stage in (self.row, self.rest):
            left, open_catalog = left_of(stage)
            if left.any() or open_catalog:
                break
        return stage, left, open_catalog


def _left(stage: Stage, gone: np.ndarray) -> tuple[np.ndarray, int]:
    """A stage's retrieved items not in ``gone`` (mask over ``ranked``) and how many of its catalog-wide items
    are not."""
    return _not_in(stage.ranked, gone), len(stage.draws.admitted) - stage.draws.admitted.count_in(gone)


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
        untried = category.copy()
        for tried in profile.categories_tried if profile is not None else ():  # a few: cheaper than np.isin
            untried &= pool.category != tried
        return ((day - pool.release_day) <= NEW_DAYS) | untried
    top = _top(pool.popularity, popular_top)
    mask = np.zeros(len(pool.item_id), dtype=bool)
    mask[top[pool.popularity[top] > 0]] = True
    return mask


def _top(values: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` largest values, largest first, ties in index order (as a stable sort gives)."""
    if n < len(values):
        # everything above the n-th largest value, and the first of those equal to it
        cut = np.partition(values, len(values) - n)[len(values) - n]
        values_above = np.flatnonzero(values > cut)
        ties = np.flatnonzero(values == cut)[: n - len(values_above)]
        candidates = np.concatenate([values_above, ties])
        return candidates[np.argsort(-values[candidates], kind="stable")] if len(candidates) else candidates
    return np.argsort(-values, kind="stable")


def _specs(config: RowsConfig, rows: Sequence[str] | None) -> list[RowSpec]:
    specs = list(config.rows)
    if rows is None:
        return specs
    known = {s.name: s for s in specs}
    unknown = [r for r in rows if r not in known]
    if unknown:
        raise ValueError(f"unknown row {unknown[0]!r}; configured rows: {list(known)}")
    return [known[r] for r in rows]


def explore(released: Candidates, config: RowsConfig, k: int, profile: MemberProfile | None, preferred: str | None,
            day: int, rng: np.random.Generator, rows: Sequence[str] | None = None) -> Exploration:
    """The catalog-wide draws of a request over ``released`` (every released item, ``index`` = catalog rows):
    per row, the items its filter admits and a random ordered sample of them as long as the page.

    Raises:
      ValueError: naming an unknown row.
    """
    items = released.catalog_rows
    ordered = len(items) < 2 or bool((items[1:] >= items[:-1]).all())  # a pool standing for the catalog may not be

    def admit(spec: RowSpec) -> ItemSet:
        found = items[admitted(spec, released, profile, preferred, day, config.popular_top)]
        return Sorted(found if ordered else np.sort(found))

    return _explore(Sorted(items if ordered else np.sort(items)), admit, config, k, rng, rows)


def _explore(released: ItemSet, admit: Callable[[RowSpec], ItemSet], config: RowsConfig, k: int,
             rng: np.random.Generator, rows: Sequence[str] | None) -> Exploration:
    """``explore`` given every released item and, per row, the set it admits."""
    specs = _specs(config, rows)
    slots = min(k * len(specs), len(released))

    def draws(items: ItemSet) -> RowDraws:
        # an ordered uniform sample without replacement: its first item not yet shown is uniform over the rest
        return RowDraws(admitted=items, sample=items.sample(rng, slots))

    per_row = {s.name: draws(admit(s)) for s in specs}
    return Exploration(rows=per_row, released=draws(released))


def _grouped(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions grouped by code (positions in order within a group) and where each code's group starts."""
    order = np.argsort(codes, kind="stable")
    return order, np.concatenate([[0], np.cumsum(np.bincount(codes, minlength=int(codes.max(initial=0)) + 1))])


@dataclass(frozen=True)
class ReleasedIndex:
    """The items released by a day, prepared once for the row filters: category and creator as integer codes,
    positions grouped by each, the member-independent sets. ``explore`` draws from every released item a row
    admits on every request; these keep each set lazy (``Parts``), so a request costs about the same over a
    million items as over ten thousand, and admit exactly what ``admitted`` admits over the released items."""

    items: Candidates  # every released item, ``index`` = catalog rows (sorted)
    day: int
    category: np.ndarray  # code of each item's category ("" has a code too, and matches nothing)
    categories: Mapping[str, int]  # known category -> code
    by_category: tuple[np.ndarray, np.ndarray]  # ``_grouped``
    creator: np.ndarray
    creators: Mapping[str, int]
    by_creator: tuple[np.ndarray, np.ndarray]
    quick: Sorted
    recent: np.ndarray  # mask: released in the last NEW_DAYS days
    recent_at: np.ndarray  # their positions
    everything: Sorted

    @classmethod
    def of(cls, items: Candidates, day: int) -> ReleasedIndex:
        def codes(values: np.ndarray) -> tuple[np.ndarray, dict[str, int]]:
            names, code = np.unique(values, return_inverse=True)
            known = {n: i for i, n in enumerate(names.tolist()) if n != ""}
            return code.astype(np.int64), known

        category, categories = codes(items.category)
        creator, creators = codes(items.creator)
        rows = items.catalog_rows
        quick = Sorted(rows[admitted(RowSpec(name="quick", filter="quick"), items, None, None, day, 1)])
        recent = (day - items.release_day) <= NEW_DAYS
        return cls(items, day, category, categories, _grouped(category), creator, creators, _grouped(creator), quick,
                   recent, np.flatnonzero(recent), Sorted(rows))

    def _group(self, by: tuple[np.ndarray, np.ndarray], code: int | None) -> np.ndarray:
        order, starts = by
        return order[starts[code]:starts[code + 1]] if code is not None else order[:0]

    def admitted(self, spec: RowSpec, profile: MemberProfile | None, preferred: str | None,
                 popular: np.ndarray) -> ItemSet:
        """The released items ``spec``'s filter admits; ``popular``: the catalog rows of the context's
        ``popular_top`` most popular released items that anyone clicked."""
        rows = self.items.catalog_rows
        if spec.filter == "quick":
            return self.quick
        if spec.filter == "popular":
            return Sorted(np.sort(popular))
        if spec.filter == "usual":
            usual = (profile.usual_category, profile.usual_creator) if profile is not None else (preferred, None)
            cat = self.categories.get(usual[0]) if usual[0] else None
            cre = self.creators.get(usual[1]) if usual[1] else None
            by_creator = self._group(self.by_creator, cre)
            if cat is not None:
                by_creator = by_creator[self.category[by_creator] != cat]  # those are in the category's part
            return Parts(rows, [self._group(self.by_category, cat), by_creator],
                         lambda at: (self.category[at] == (-1 if cat is None else cat))
                         | (self.creator[at] == (-1 if cre is None else cre)))
        untried = np.zeros(len(self.by_category[1]) - 1, dtype=bool)
        untried[list(self.categories.values())] = True  # "" matches nothing
        for tried in profile.categories_tried if profile is not None else ():
            if tried in self.categories:
                untried[self.categories[tried]] = False
        recent = self.recent_at
        return Parts(rows, [*(self._group(self.by_category, c) for c in np.flatnonzero(untried).tolist()),
                            recent[~untried[self.category[recent]]]],
                     lambda at: self.recent[at] | untried[self.category[at]])


def explore_released(index: ReleasedIndex, config: RowsConfig, k: int, profile: MemberProfile | None,
                     preferred: str | None, popular: np.ndarray, rng: np.random.Generator,
                     rows: Sequence[str] | None = None) -> Exploration:
    """``explore`` over a day's ``ReleasedIndex``: the same sets, drawn from as uniformly; ``popular`` as for
    ``ReleasedIndex.admitted``."""
    return _explore(index.everything, lambda spec: index.admitted(spec, profile, preferred, popular), config, k,
                    rng, rows)


def slot_choices(pool: Candidates, config: RowsConfig, k: int, profile: MemberProfile | None,
                 preferred: str | None, day: int, rows: Sequence[str] | None = None
                 ) -> tuple[list[SlotChoice], list[str]]:
    """Per slot of the page, what it may show (``SlotChoice``) and the row name.

    A pool without catalog-wide draws (``exploration`` None) draws from itself. A catalog smaller than the page
    gives as many slots as it has items.

    Raises:
      ValueError: naming an unknown row.
    """
    specs = _specs(config, rows)
    # without draws, the pool is the catalog (the sample is only read by ``fill``, which draws its own)
    plan = pool.exploration or explore(pool, config, k, profile, preferred, day, np.random.default_rng(0), rows)
    by_score = np.argsort(-pool.score, kind="stable")
    if pool.retrieved is not None:
        by_score = by_score[pool.retrieved[by_score]]

    def stage(ranked: np.ndarray, draws: RowDraws) -> Stage:
        logits = pool.score[ranked].astype(np.float64) / config.temperature if config.temperature > 0 else None
        return Stage(ranked=pool.catalog_rows[ranked], logits=logits, draws=draws)

    rest = stage(by_score, plan.released)
    choices: list[SlotChoice] = []
    names: list[str] = []
    for spec in specs:
        mask = admitted(spec, pool, profile, preferred, day, config.popular_top)
        choices += [SlotChoice(row=stage(by_score[mask[by_score]], plan.rows[spec.name]), rest=rest)] * k
        names += [spec.name] * k
    size = len(plan.released.admitted)
    del choices[size:], names[size:]  # a tiny catalog: the last rows come up short
    return choices, names


def slot_probability(choice: SlotChoice, taken: Sequence[int], item: int | None, config: RowsConfig) -> float:
    """The probability that ``fill`` shows catalog row ``item`` in a slot, given the catalog rows ``taken`` above.

    ``catalog_share / |admitted not taken| + (1 - catalog_share) * softmax(item)`` over what the row has left: the
    softmax share alone when the row admits nothing else of the catalog, the catalog share alone when nothing
    retrieved is left. A row with nothing left at all draws the same way from every retrieved item and the
    released catalog (a row that comes up short is filled from the rest of the ranking). An item outside the
    support (``None``, taken, not admitted) has probability zero. The server logs it for what it shows; replay
    computes it for what another version would show.
    """
    if item is None or item in taken:
        return 0.0
    stage, left, open_catalog = choice.stage(np.asarray(sorted(set(taken)), dtype=np.int64))
    return _probability(stage, left, open_catalog, item, config)


def _probability(stage: Stage, left: np.ndarray, open_catalog: int, item: int, config: RowsConfig) -> float:
    """``slot_probability`` once the slot's stage and what it has left are known (``item`` not taken)."""
    uniform = 1.0 / open_catalog if open_catalog and stage.draws.admitted.contains(item) else 0.0
    if not left.any():
        return uniform
    share = config.catalog_share if open_catalog else 0.0
    return share * uniform + (1.0 - share) * _softmax(stage, left, item)


class _Left:
    """What each stage of a page has left as its slots fill: the retrieved items not shown (mask over
    ``ranked``) and how many of its catalog-wide items are not shown, updated item by item, so a slot
    costs a compare per stage rather than one per item above it (``SlotChoice.stage`` computes the same
    from scratch, for replay)."""

    def __init__(self) -> None:
        self.taken: list[int] = []
        self._stages: dict[int, tuple[Stage, np.ndarray, list[int]]] = {}  # id -> (stage, left, [open count])

    def of(self, stage: Stage) -> tuple[np.ndarray, int]:
        if id(stage) not in self._stages:
            left, open_catalog = _left(stage, np.asarray(sorted(self.taken), np.int64))
            self._stages[id(stage)] = (stage, left, [open_catalog])
        _, left, count = self._stages[id(stage)]
        return left, count[0]

    def take(self, item: int) -> None:
        self.taken.append(item)
        for stage, left, count in self._stages.values():
            left &= stage.ranked != item
            count[0] -= stage.draws.admitted.contains(item)


def _not_in(values: np.ndarray, items: np.ndarray) -> np.ndarray:
    """``~np.isin(values, items)`` for the few items of a page prefix (a loop of compares is faster)."""
    out = np.ones(len(values), dtype=bool)
    for item in items.tolist():
        out &= values != item
    return out


def _softmax(stage: Stage, left: np.ndarray, item: int) -> float:
    if stage.logits is None:  # temperature 0: the best retrieved item left
        return float(stage.ranked[left][0] == item)
    w = _weights(stage.logits[left])
    return float(w[stage.ranked[left] == item].sum() / w.sum())


def _weights(logits: np.ndarray) -> np.ndarray:
    """Unnormalised softmax weights of what is left, the largest 1 (no underflow at any temperature)."""
    return np.exp(logits - logits.max())


def fill(pool: Candidates, config: RowsConfig, k: int, profile: MemberProfile | None, preferred: str | None,
         day: int, rng: np.random.Generator, rows: Sequence[str] | None = None) -> list[Impression]:
    """Fills ``k`` slots per row, each with its exact probability; a catalog smaller than the page fills as many
    slots as it has items.

    Args:
      pool: the ranked candidates of the request, with its catalog-wide draws (``explore``); without them, the
        pool is the catalog.
      k: items per row.
      profile, preferred: the member's usual (None without clicks) and declared category.
      day: the request's date ordinal.
      rng: the request's random stream (seeded per request, so a page can be replayed).
      rows: names of the rows asked for (all configured rows when None).

    Raises:
      ValueError: naming an unknown row.
    """
    if pool.exploration is None:  # the pool is the catalog
        pool = replace(pool, exploration=explore(pool, config, k, profile, preferred, day, rng, rows))
    choices, names = slot_choices(pool, config, k, profile, preferred, day, rows)
    at = {r: i for i, r in enumerate(pool.catalog_rows.tolist())}
    u = rng.random((2, len(choices)))
    state = _Left()
    out = []
    for position, (name, choice) in enumerate(zip(names, choices, strict=True)):
        stage, left, open_catalog = choice.first(state.of)
        explored = bool(not left.any() or (open_catalog > 0 and u[0, position] < config.catalog_share))
        if not explored:
            item = int(stage.ranked[left][0] if stage.logits is None else _pick(stage, left, u[1, position]))
        else:
            taken = set(state.taken)
            item = next(s for s in stage.draws.sample.tolist() if s not in taken)
        p = _probability(stage, left, open_catalog, item, config)  # the formula replay computes
        out.append(Impression(row=name, position=position, index=at[item], propensity=p, explored=explored))
        state.take(item)
    return out


def _pick(stage: Stage, left: np.ndarray, u: float) -> int:
    w = _weights(stage.logits[left])  # type: ignore[index]
    cdf = np.cumsum(w) / w.sum()
    return int(stage.ranked[left][min(int(np.searchsorted(cdf, u, side="right")), len(w) - 1)])

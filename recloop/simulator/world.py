"""The simulated platform's population: catalog, creators and members, week by week.

Everything is drawn from random streams keyed by (seed, stream, week), so week w
of a world is the same whether it is simulated alone or after ten others, and a
drift that touches one stream leaves the others bit-identical. The hidden
parameters here (tastes, qualities, latent vectors) are read only by
``behaviour`` and written under ``truth/``; they never reach the logs.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, fields

import numpy as np

from recloop.features.spec import CATEGORIES, COUNTRIES, LANGUAGES, PLATFORMS

NEW_CATEGORY = "boxing"  # served only under the new-category drift
ALL_CATEGORIES = (*CATEGORIES, NEW_CATEGORY)
LATENT_DIM = 8
DURATIONS = np.array([5, 10, 15, 20, 30, 45, 60], dtype=float)
# P(duration | category), rows in ALL_CATEGORIES order
_DURATION_MIX = np.array([
    [.05, .10, .15, .20, .25, .15, .10],  # yoga
    [.10, .20, .25, .25, .15, .05, .00],  # hiit
    [.00, .10, .15, .25, .30, .15, .05],  # strength
    [.00, .00, .10, .20, .30, .25, .15],  # running
    [.00, .00, .05, .20, .30, .30, .15],  # cycling
    [.30, .35, .20, .10, .05, .00, .00],  # meditation
    [.05, .15, .20, .30, .20, .10, .00],  # dance
    [.20, .30, .25, .15, .10, .00, .00],  # stretching
    [.10, .20, .25, .25, .15, .05, .00],  # boxing
])
_LANGUAGE_P = [.55, .15, .10, .10, .10]
_COUNTRY_P = [.35, .12, .10, .08, .08, .10, .08, .09]
COUNTRY_LANGUAGE = np.array([LANGUAGES.index(x) for x in ("en", "en", "de", "es", "fr", "pt", "es", "en")])
_PLATFORM_P = [.35, .35, .15, .15]
CHRONOTYPE_PEAK = np.array([7.0, 12.5, 19.0])  # morning, midday and evening people
_CHRONOTYPE_P = [.35, .25, .40]

class SimulationConfigError(ValueError):
    """Parameters a simulation cannot run with; the message names the parameter and the fix."""


# random streams
CATALOG, MEMBERS, TRAFFIC, POLICY, BEHAVIOUR, DRIFT, CORRUPT, NEWCAT, DELIVERY, LOGGING = range(1, 11)


def stream(seed: int, kind: int, week: int) -> np.random.Generator:
    """The random stream of one purpose in one week (week -1 = the world before start)."""
    return np.random.default_rng([seed, kind, week + 1])


def item_id(index: int) -> str:
    """The public id of the item at a world index."""
    return f"i{index:06d}"


def creator_id(index: int) -> str:
    return f"c{index:05d}"


@dataclass(frozen=True)
class Scale:
    """Population sizes of a simulated world."""

    members: int
    items: int
    creators: int
    requests_per_week: int
    new_members_per_week: int
    new_items_per_week: int
    slots: int = 10


SCALES = {
    "tiny": Scale(members=200, items=300, creators=30, requests_per_week=2_000,
                  new_members_per_week=10, new_items_per_week=9),
    "small": Scale(members=2_000, items=2_000, creators=200, requests_per_week=20_000,
                   new_members_per_week=100, new_items_per_week=60),
    "default": Scale(members=20_000, items=10_000, creators=1_000, requests_per_week=100_000,
                     new_members_per_week=1_000, new_items_per_week=300),
}


@dataclass
class Items:
    """The catalog (public metadata) and each item's hidden quality and latent vector."""

    category: np.ndarray  # index into ALL_CATEGORIES
    creator: np.ndarray  # index into Creators
    duration: np.ndarray  # minutes
    language: np.ndarray  # index into LANGUAGES
    release: np.ndarray  # date ordinal
    quality: np.ndarray
    latent: np.ndarray  # (n, LATENT_DIM)


@dataclass
class Creators:
    category: np.ndarray
    language: np.ndarray
    quality: np.ndarray


@dataclass
class Members:
    """Members: public static features and hidden taste."""

    joined: np.ndarray  # date ordinal
    country: np.ndarray  # index into COUNTRIES
    preferred: np.ndarray  # declared category index, -1 = not given
    affinity: np.ndarray  # (n, len(ALL_CATEGORIES)) hidden category taste
    taste: np.ndarray  # (n, LATENT_DIM)
    taste_after_shift: np.ndarray  # (n, LATENT_DIM), used under the taste-shift drift
    duration_taste: np.ndarray  # + likes long items, - likes short ones
    chronotype: np.ndarray  # index into CHRONOTYPE_PEAK
    platform: np.ndarray  # primary platform, index into PLATFORMS
    activity: np.ndarray  # relative visit rate


def _append(dst, src) -> None:
    for f in fields(dst):
        setattr(dst, f.name, np.concatenate([getattr(dst, f.name), getattr(src, f.name)]))


def _new_creators(rng: np.random.Generator, n: int, category: int | None = None) -> Creators:
    cat = rng.integers(0, len(CATEGORIES), n) if category is None else np.full(n, category)
    return Creators(category=cat, language=rng.choice(len(LANGUAGES), n, p=_LANGUAGE_P),
                    quality=rng.normal(0.0, 0.4, n))


def _new_items(rng: np.random.Generator, creators: Creators, creator_ids: np.ndarray,
               release: np.ndarray, mixed: bool = True) -> Items:
    n = len(creator_ids)
    category = creators.category[creator_ids].copy()
    if mixed:  # a creator mostly, not only, teaches their main category
        other = rng.random(n) < 0.2
        category[other] = rng.integers(0, len(CATEGORIES), other.sum())
    u = rng.random(n)
    duration = DURATIONS[(u[:, None] > np.cumsum(_DURATION_MIX[category], axis=1)).sum(axis=1).clip(0, 6)]
    return Items(category=category, creator=creator_ids, duration=duration,
                 language=creators.language[creator_ids].copy(), release=release,
                 quality=creators.quality[creator_ids] + rng.normal(0.0, 0.3, n),
                 latent=rng.normal(0.0, 0.6, (n, LATENT_DIM)))


def _new_members(rng: np.random.Generator, joined: np.ndarray) -> Members:
    n = len(joined)
    fav = rng.integers(0, len(CATEGORIES), n)
    affinity = rng.normal(-0.3, 0.5, (n, len(ALL_CATEGORIES)))
    affinity[np.arange(n), fav] = 1.2
    u = rng.random(n)
    declared = np.where(u < 0.7, fav, rng.integers(0, len(CATEGORIES), n))
    declared[u > 0.9] = -1
    return Members(joined=joined, country=rng.choice(len(COUNTRIES), n, p=_COUNTRY_P), preferred=declared,
                   affinity=affinity, taste=rng.normal(0.0, 0.6, (n, LATENT_DIM)),
                   taste_after_shift=rng.normal(0.0, 0.6, (n, LATENT_DIM)),
                   duration_taste=rng.normal(0.0, 0.5, n),
                   chronotype=rng.choice(3, n, p=_CHRONOTYPE_P),
                   platform=rng.choice(len(PLATFORMS), n, p=_PLATFORM_P),
                   activity=rng.lognormal(0.0, 0.8, n))


@dataclass
class World:
    """The population, grown one simulated week at a time by ``advance``."""

    seed: int
    scale: Scale
    start: dt.date  # a Monday: week w covers start + 7w .. start + 7w + 6
    items: Items
    creators: Creators
    members: Members
    weeks_built: int = 0
    new_category_weeks: set[int] = field(default_factory=set)

    @classmethod
    def create(cls, seed: int, scale: Scale, start: dt.date) -> World:
        """The world as it is on ``start``: a year of catalog, two years of members."""
        if start.weekday() != 0:
            raise SimulationConfigError(f"start must be a Monday (weeks run Monday-Sunday), got {start} "
                             f"({start.strftime('%A')})")
        rng = stream(seed, CATALOG, -1)
        creators = _new_creators(rng, scale.creators)
        day0 = start.toordinal()
        items = _new_items(rng, creators, rng.integers(0, scale.creators, scale.items),
                           day0 - rng.integers(1, 366, scale.items))
        members = _new_members(stream(seed, MEMBERS, -1), day0 - rng.integers(1, 731, scale.members))
        return cls(seed=seed, scale=scale, start=start, items=items, creators=creators, members=members)

    def week_start(self, week: int) -> dt.date:
        return self.start + dt.timedelta(days=7 * week)

    def advance(self, week: int, new_category: bool = False) -> None:
        """Releases week ``week``'s items and lets its members join (weeks in order)."""
        if week != self.weeks_built:
            raise ValueError(f"weeks are built in order: next is {self.weeks_built}, asked for {week}")
        day0 = self.week_start(week).toordinal()
        rng = stream(self.seed, CATALOG, week)
        n = self.scale.new_items_per_week
        _append(self.items, _new_items(rng, self.creators, rng.integers(0, self.scale.creators, n),
                                       day0 + rng.integers(0, 7, n)))
        rng = stream(self.seed, MEMBERS, week)
        _append(self.members, _new_members(rng, day0 + rng.integers(0, 7, self.scale.new_members_per_week)))
        if new_category:  # extra releases by new creators: other streams stay untouched
            rng = stream(self.seed, NEWCAT, week)
            first = len(self.creators.quality)
            k = max(2, self.scale.creators // 50)
            _append(self.creators, _new_creators(rng, k, category=ALL_CATEGORIES.index(NEW_CATEGORY)))
            m = max(3, n // 3)
            _append(self.items, _new_items(rng, self.creators, first + rng.integers(0, k, m),
                                           day0 + rng.integers(0, 7, m), mixed=False))
            self.new_category_weeks.add(week)
        self.weeks_built += 1

    def item_ids(self, idx: np.ndarray | None = None) -> list[str]:
        """Public item ids of world indices (all items when ``idx`` is None)."""
        idx = np.arange(len(self.items.quality)) if idx is None else idx
        return [item_id(i) for i in idx]

    def creator_ids(self, idx: np.ndarray) -> list[str]:
        return [creator_id(i) for i in idx]

    def member_ids(self, idx: np.ndarray) -> list[str]:
        return [f"m{i:07d}" for i in idx]

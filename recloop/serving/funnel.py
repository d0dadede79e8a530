"""The funnel of one model version: retrieval -> ranking -> rows, batched over a request's instances.

A ``Version`` is a registry version loaded for serving: the query tower and
the ranker (in numpy from their plain form where the export has one that agrees
with the SavedModel, ``plain``), the current catalog embedded per day with the
saved candidate tower (items released after training included: no retraining),
and the serving tables. ``recommend`` makes one query-tower call and one ranker
call per batch of instances, whatever their number; retrieval searches the
released items (``ann``: an exact dot product, a ScaNN index from 100k items)
and adds the context's most popular items, so the "popular now" row always has
material. The items the rows' catalog-wide
exploration may draw for a request (``rows.explore``) are ranked with the pool,
so every slot it fills has a score and heads.
"""

from __future__ import annotations

import datetime as dt
import logging
import posixpath
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from recloop import storage
from recloop.baselines import MemberProfile, PopularInContext, context_key
from recloop.features import logs, recorded, roles
from recloop.features.catalog import QUERY_INPUTS, RANKING_INPUTS, candidate_inputs, embed
from recloop.features.spec import LABELS, feature, features_for, missing_value
from recloop.serving import ann, plain
from recloop.serving.registry import read_card
from recloop.serving.rows import Candidates, Exploration, Impression, ReleasedIndex, RowsConfig, explore_released, fill

MEMBER_FIELDS = tuple(f.name for f in features_for(group="member") if f.name != "member_id")  # declared
CONTEXT_FIELDS = tuple(f.name for f in features_for(group="context"))
# what the models read of a request, in spec order: the member id and the declared member and context inputs
REQUEST_INPUTS = tuple(n for n in ("member_id", *MEMBER_FIELDS, *CONTEXT_FIELDS) if n in {*QUERY_INPUTS, *RANKING_INPUTS})
MAX_CONTEXTS = 256
RANKER_NUMPY_ROWS = 1024  # above this many (instance, item) pairs a batch is ranked by TensorFlow (``plain.by_size``)
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Query:
    """One instance of a request, already validated: member, context and the page asked for."""

    request_id: str
    member_id: str
    member: Mapping[str, Any]  # MEMBER_FIELDS as received; a missing one is absent or None
    context: Mapping[str, Any]  # CONTEXT_FIELDS as received
    day: int  # date ordinal of the request
    k: int = 10
    rows: Sequence[str] | None = None

    @property
    def popular_context(self) -> tuple[int, str]:
        """The hour and platform popularity is looked up by (the declared roles; ``features.roles``)."""
        return roles.value("hour", self.context), roles.value("platform", self.context)


@dataclass(frozen=True)
class Page:
    """What one instance gets: its impressions (row, position, item, score, heads, propensity)."""

    query: Query
    impressions: list[Impression]
    pool: Candidates


@dataclass
class Heuristic:
    """The serving tables over a catalog: what every page needs, and what the fallback serves alone."""

    catalog: dict[str, np.ndarray]
    popularity: PopularInContext
    profiles: dict[str, MemberProfile]
    _popular: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    _released: dict[int, ReleasedIndex] = field(default_factory=dict)

    def popular_scores(self, hour: int, platform: str) -> np.ndarray:
        """Popularity of every catalog item in a context (computed once per context)."""
        return self._context(hour, platform)[0]

    def popular_order(self, hour: int, platform: str) -> np.ndarray:
        """Catalog rows of the items anyone clicked in a context, most popular first (ties: catalog order)."""
        return self._context(hour, platform)[1]

    def popular_released(self, day: int, hour: int, platform: str, n: int) -> np.ndarray:
        """Catalog rows of the ``n`` most popular items in a context released by ``day`` that anyone clicked."""
        order = self.popular_order(hour, platform)
        return order[self.catalog["release_day"][order] <= day][:n]

    def released(self, day: int) -> ReleasedIndex:
        """Every item released by ``day`` (date ordinal), indexed for the row filters: what the rows'
        catalog-wide exploration draws from."""
        def build() -> ReleasedIndex:
            index = np.flatnonzero(self.catalog["release_day"] <= day)
            return ReleasedIndex.of(Candidates.from_catalog(self.catalog, index, np.zeros(len(index)), {},
                                                            np.zeros(len(index))), day)

        return _per_day(self._released, day, build)

    def exploration(self, query: Query, config: RowsConfig) -> Exploration:
        """A request's catalog-wide draws (``rows.explore``), from its own random stream."""
        return explore_released(self.released(query.day), config, query.k, self.profiles.get(query.member_id),
                                roles.value("preferred_category", query.member),
                                self.popular_released(query.day, *query.popular_context, config.popular_top),
                                _stream(query, 1), query.rows)

    def _context(self, hour: int, platform: str) -> tuple[np.ndarray, np.ndarray]:
        key = context_key(hour, platform)
        if key not in self._popular:
            if len(self._popular) >= MAX_CONTEXTS:  # clients can send any platform string: bound the cache
                self._popular.clear()
            scores = self.popularity.scores(hour, platform, self.catalog["item_id"].tolist())
            order = np.argsort(-scores, kind="stable")
            self._popular[key] = (scores, order[scores[order] > 0])
        return self._popular[key]


@dataclass
class Version:
    """A model version loaded for serving over a catalog.

    Item age is a candidate-tower input, so the catalog is embedded and indexed per request day (on a real
    clock ``Service`` builds the next day's ahead; otherwise the first request of a day pays for it): a page
    depends only on the version, the feed, the request's day and id, never on when the server loaded them,
    so a logged page can be replayed exactly (``replay``).
    """

    version: str
    query_tower: plain.Model  # numpy columns in, numpy columns out (``plain``: in numpy, or the SavedModel)
    ranker: plain.Model
    candidate_tower: Any  # the SavedModel signature: embeds the catalog (``embed``)
    candidates: int
    tables: Heuristic
    encoded: dict[str, np.ndarray] = field(default_factory=dict)  # catalog, strings as UTF-8 bytes (for TF)
    runtime: str = "tensorflow"  # what evaluates the query tower and the ranker: "numpy" or "tensorflow"
    ann_min_items: int = ann.ANN_MIN_ITEMS  # released items from which retrieval searches a ScaNN index
    _searches: dict[int, ann.Search] = field(default_factory=dict)
    _building: threading.Lock = field(default_factory=threading.Lock)

    @property
    def catalog(self) -> dict[str, np.ndarray]:
        return self.tables.catalog

    def search(self, day: int) -> ann.Search:
        """Retrieval's search over the items released by a day (date ordinal), embedded for that day; built on
        first use (``Service`` builds the next day's ahead, off the request path); the last few days are kept."""
        def build() -> ann.Search:
            rows = np.flatnonzero(self.catalog["release_day"] <= day)
            vectors = embed(self.candidate_tower, candidate_inputs({n: v[rows] for n, v in self.catalog.items()}, day))
            return ann.build(rows, vectors, self.candidates, self.ann_min_items)

        found = self._searches.get(day)
        if found is None:
            with self._building:  # one build per day, whichever thread asks first
                found = _per_day(self._searches, day, build)
        return found

    @property
    def profiles(self) -> dict[str, MemberProfile]:
        return self.tables.profiles

    def popular_scores(self, hour: int, platform: str) -> np.ndarray:
        return self.tables.popular_scores(hour, platform)


def _per_day(cache: dict[int, Any], day: int, build: Callable[[], Any]) -> Any:
    """``cache[day]``, built on a miss; the last few days are kept (a simulated clock can go back and forth
    around midnight, and ``Service`` adds the next day's ahead of it)."""
    found = cache.get(day)
    if found is None:
        found = build()
        if len(cache) >= 3:
            cache.pop(min(cache), None)
        cache[day] = found
    return found


def load_tables(version_dir: str, catalog: Mapping[str, np.ndarray]) -> Heuristic:
    """A version's serving tables (popularity in context, member profiles) over ``catalog``."""
    tables = posixpath.join(version_dir, "tables")
    popular = logs.read_json(posixpath.join(tables, "popularity.json"))["contexts"]
    members = logs.read_json(posixpath.join(tables, "profiles.json.gz"))["members"]
    profiles = {m: MemberProfile(usual_category=p["usual_category"], usual_creator=p["usual_creator"],
                                 categories_tried=frozenset(p["categories_tried"]),
                                 recent_items=tuple(p["recent_items"])) for m, p in members.items()}
    return Heuristic(catalog=dict(catalog), popularity=PopularInContext.from_dict(popular), profiles=profiles)


def load_version(version_dir: str, catalog: Mapping[str, np.ndarray], day: dt.date, runtime: str = "numpy",
                 ann_min_items: int = ann.ANN_MIN_ITEMS) -> Version:
    """Loads a trainer export (a registry version) over ``catalog`` and embeds it for ``day`` (other days
    are embedded when a request of that day comes, or ahead of it). ``runtime`` "numpy" serves the query tower
    and the ranker in numpy where the export allows it (``plain``), "tensorflow" with the SavedModels; from
    ``ann_min_items`` released items retrieval searches a ScaNN index (``ann``).

    Raises:
      OSError, ValueError: from TensorFlow or the tables when the version is broken;
        the server treats any exception here as "this version failed to load".
      recorded.DeclarationMismatch: the version was trained under another feature declaration.
    """
    import tensorflow as tf

    # TensorFlow loads SavedModels from local paths (not s3://): a remote version is copied here for the load;
    # once loaded, the models live in memory and the copy can go
    with storage.local_view(version_dir) as local:
        recorded.check(local, "model", shown=version_dir)  # its inputs must mean what this server's requests hold

        def signature(name: str) -> Any:
            return tf.saved_model.load(posixpath.join(local, name)).signatures["serving_default"]

        card = read_card(local)
        tables = load_tables(local, catalog)
        signatures = {"query_tower": signature("query_tower"), "ranking": signature("ranking")}
        (query_tower, ranker), runtime = _runtime(local, signatures, version_dir, runtime)
        version = Version(version=card["version"], query_tower=query_tower, ranker=ranker, runtime=runtime,
                          candidate_tower=signature("candidate_tower"),
                          candidates=int(card["config"]["retrieval"]["candidates"]), tables=tables,
                          encoded={n: _encoded(v) for n, v in tables.catalog.items()}, ann_min_items=ann_min_items)
    version.search(day.toordinal())  # embedded and indexed now, so a broken candidate tower fails the load
    return version


def _runtime(local: str, signatures: Mapping[str, Any], shown: str, wanted: str) -> tuple[list[plain.Model], str]:
    """The models in numpy (``_numpy``) when ``wanted`` is "numpy" and each has its plain form; otherwise the
    SavedModels themselves (asked for, an export from before ``plain.npz``, or one that disagrees)."""
    if wanted == "numpy":
        models = [_numpy(local, name, signature, shown) for name, signature in signatures.items()]
        if all(m is not None for m in models):
            return models, "numpy"
    return [plain.tensorflow(s) for s in signatures.values()], "tensorflow"


def _numpy(local: str, name: str, signature: Any, shown: str) -> plain.Model | None:
    """A model's plain form if the export has one and it agrees with the SavedModel (the ranker on batches
    above ``RANKER_NUMPY_ROWS`` rows stays TensorFlow); None otherwise, said in the log when they disagree."""
    fast = plain.load(posixpath.join(local, name))
    if fast is None:
        return None
    try:
        worst = plain.check(signature, fast)
    except ValueError as e:
        logger.warning("%s/%s: %s; serving it with TensorFlow", shown, name, e)
        return None
    logger.info("%s/%s: numpy within %.1e of the SavedModel", shown, name, worst)
    return plain.by_size(fast, plain.tensorflow(signature), RANKER_NUMPY_ROWS) if name == "ranking" else fast


def _encoded(values: np.ndarray) -> np.ndarray:
    # fixed-width bytes go into a tf string tensor in one copy; numpy unicode is encoded element by element
    return np.char.encode(values, "utf-8") if values.dtype.kind == "U" else values


def query_inputs(queries: Sequence[Query]) -> dict[str, np.ndarray]:
    """The raw inputs the models read of each request (``REQUEST_INPUTS``); a missing feature becomes
    ``missing_value``."""
    cols: dict[str, list[Any]] = {n: [] for n in REQUEST_INPUTS}
    missing = {n: missing_value(feature(n).dtype) for n in REQUEST_INPUTS}
    members = set(MEMBER_FIELDS)
    for q in queries:
        cols["member_id"].append(q.member_id)
        for name in REQUEST_INPUTS[1:]:
            value = (q.member if name in members else q.context).get(name)
            cols[name].append(missing[name] if value is None else value)
    kinds = {str: str, int: np.int64, float: np.float32}
    return {n: _encoded(np.array(_padded(n, v), dtype=kinds[feature(n).dtype])) for n, v in cols.items()}


def _padded(name: str, values: list[Any]) -> list[Any]:
    """A list feature's values padded with "" (its lookup's mask) to the declared length; others as they are."""
    length = feature(name).max_length
    if length is None:
        return values
    return [[*(v or ()), *[""] * (length - len(v or ()))][:length] for v in values]


def retrieve(version: Version, queries: Sequence[Query], inputs: Mapping[str, np.ndarray],
             popular_top: int) -> list[np.ndarray]:
    """Per query, catalog indices of its pool: the best ``candidates`` by dot product and the context's
    ``popular_top`` most popular items."""
    q = version.query_tower({n: inputs[n] for n in QUERY_INPUTS})["embedding"]
    days = np.array([query.day for query in queries])
    best: list[np.ndarray] = [np.zeros(0, np.int64)] * len(queries)
    for day in np.unique(days):  # a search covers only the items released by its day
        rows = np.flatnonzero(days == day)
        for i, found in zip(rows, version.search(int(day)).top(q[rows], version.candidates), strict=True):
            best[i] = found
    release = version.catalog["release_day"]
    pools = []
    for i, query in enumerate(queries):
        top = version.tables.popular_released(query.day, *query.popular_context, popular_top)
        pool = np.union1d(best[i], top)
        pools.append(pool[release[pool] <= query.day])
    return pools


def rank(version: Version, queries: Sequence[Query], inputs: Mapping[str, np.ndarray],
         pools: Sequence[np.ndarray]) -> list[dict[str, np.ndarray]]:
    """Head probabilities and combined score of every pool item, in one ranker call for all queries."""
    sizes = [len(p) for p in pools]
    index = np.concatenate(pools)
    rows = np.repeat(np.arange(len(queries)), sizes)
    days = np.repeat(np.array([query.day for query in queries]), sizes)
    items = candidate_inputs({n: v[index] for n, v in version.encoded.items()}, days, RANKING_INPUTS)
    pairs = {n: v[rows] for n, v in inputs.items() if n in RANKING_INPUTS} | items
    out = version.ranker(pairs)
    parts = {k: np.split(v, np.cumsum(sizes)[:-1]) for k, v in out.items()}
    return [{k: parts[k][i] for k in parts} for i in range(len(pools))]


Timer = Callable[[str, float], None]


def recommend(version: Version, queries: Sequence[Query], config: RowsConfig, timer: Timer | None = None
              ) -> list[Page]:
    """Pages for a batch of instances: retrieval, ranking and rows, with the random stream of each
    request seeded by its request id (so a logged page can be replayed).

    ``timer(stage, seconds)`` is told how long each stage took for the whole batch.
    """
    clock = _Stages(timer)
    pools = candidates(version, queries, config, clock)
    pages = [_page(query, pool, version.tables, config) for query, pool in zip(queries, pools, strict=True)]
    clock("rows")
    return pages


def candidates(version: Version, queries: Sequence[Query], config: RowsConfig,
               clock: Callable[[str], None] = lambda stage: None) -> list[Candidates]:
    """The ranked pool of every query: retrieval, then ranking (``clock`` is told after each)."""
    inputs = query_inputs(queries)
    retrieved = retrieve(version, queries, inputs, config.popular_top)
    plans = [version.tables.exploration(query, config) for query in queries]
    # the items the catalog-wide share may draw are ranked too, so every slot has a score and heads
    pools = [np.concatenate([pool, np.setdiff1d(plan.items(), pool)]) for pool, plan in zip(retrieved, plans,
                                                                                           strict=True)]
    clock("retrieval")
    scored = rank(version, queries, inputs, pools)
    clock("ranking")
    out = []
    cat = version.catalog
    for query, pool_index, n, plan, s in zip(queries, pools, map(len, retrieved), plans, scored, strict=True):
        popular = version.popular_scores(*query.popular_context)[pool_index]
        out.append(Candidates.from_catalog(cat, pool_index, s["score"], {h: s[h] for h in LABELS}, popular,
                                           retrieved=np.arange(len(pool_index)) < n, exploration=plan))
    return out


def heuristic_pages(tables: Heuristic, queries: Sequence[Query], config: RowsConfig, pool_size: int = 500
                    ) -> list[Page]:
    """The fallback: pages from the popular-in-context heuristic alone (no model), newest items first among
    equally popular ones, so a registry with no model yet still serves something sensible.

    The score is the item's popularity relative to the context's most popular item, in [0, 1]; no heads.
    """
    cat = tables.catalog
    pages = []
    for query in queries:
        released = np.flatnonzero(cat["release_day"] <= query.day)
        everywhere = tables.popular_scores(*query.popular_context)
        popular = everywhere[released]
        order = np.lexsort((-cat["release_day"][released], -popular))[:pool_size]
        plan = tables.exploration(query, config)
        index = np.concatenate([released[order], np.setdiff1d(plan.items(), released[order])])
        popular = everywhere[index]
        top = float(popular.max()) if len(popular) else 0.0
        score = popular / top if top > 0 else np.zeros(len(index))
        pages.append(_page(query, Candidates.from_catalog(cat, index, score, {}, popular,
                                                          retrieved=np.arange(len(index)) < len(order),
                                                          exploration=plan), tables, config))
    return pages


def _page(query: Query, pool: Candidates, tables: Heuristic, config: RowsConfig) -> Page:
    impressions = fill(pool, config, query.k, tables.profiles.get(query.member_id),
                       roles.value("preferred_category", query.member), query.day, _stream(query, 0), query.rows)
    return Page(query=query, impressions=impressions, pool=pool)


def _stream(query: Query, purpose: int) -> np.random.Generator:
    """A random stream of the request, from its id: 0 fills the slots, 1 draws the catalog-wide sample (so a
    logged page can be replayed, and the two do not depend on each other)."""
    return np.random.default_rng([purpose, *query.request_id.encode("utf-8")])


class _Stages:
    def __init__(self, timer: Timer | None):
        self.timer, self.t = timer, time.perf_counter()

    def __call__(self, stage: str) -> None:
        now = time.perf_counter()
        if self.timer is not None:
            self.timer(stage, now - self.t)
        self.t = now

"""Offline evaluation on the eval split: the models, the popularity baseline and (bench only) the oracle.

Every scorer is measured by the same code on the same examples:

- retrieval: each eval request is a query scored against the whole catalog;
  recall@K of the requests' positives, sliced by cohort, and the popularity
  bias of the top-K lists (how few items make up 50% / 90% of them, coverage);
- ranking: each request's logged impressions are re-ranked; AUC per head over
  impressions, NDCG@K and MAP@K of clicks per request, sliced by cohort.

Logged feedback only exists for what the logging policy chose to show, and
clicks depend on where it was shown. So every figure comes in two views:
``logged`` (all eval feedback: it rewards agreeing with the logging policy, and
a popularity heuristic that logged the data scores high on it) and an unbiased
one: retrieval recall over positives in *explored* slots (items shown uniformly
at random, ``baselines.explore``), ranking AUC over explored impressions, and
NDCG with clicks weighted by the inverse of the examination probability of
their position (IPS; Joachims et al., WSDM 2017), estimated from explored
training impressions, where item and position are independent.

Cohorts: ``member=new`` (no training example) vs ``member=active``,
``platform=<p>``, ``item=new`` (not in the training data) vs ``item=established``.
Every cohort reports its size, so an empty one says so instead of vanishing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from recloop.features.spec import LABELS
from recloop.trainer import metrics
from recloop.trainer.data import Examples
from recloop.trainer.towers import QUERY

# (queries, catalog) -> (n_queries, n_items) scores; queries hold QUERY columns + ts
RetrievalScorer = Callable[[Examples, Examples], np.ndarray]
# impressions -> {"score": (n,), and per head when the scorer has heads}
RankingScorer = Callable[[Examples], dict[str, np.ndarray]]
# A slot explored uniformly logs a propensity of epsilon / pool; a greedy one
# (1 - epsilon) + that. Anything below one half was explored.
EXPLORED_BELOW = 0.5
CHUNK = 1024  # queries scored at a time: bounds memory to CHUNK x catalog floats


def clean(value: Any) -> Any:
    """JSON-ready metrics: NaN -> None, numpy scalars -> Python, recursively."""
    if isinstance(value, Mapping):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else round(float(value), 6)
    if isinstance(value, np.integer):
        return int(value)
    return value


def cohorts(train: Examples, rows: Examples) -> dict[str, np.ndarray]:
    """Boolean masks over ``rows`` for every cohort (all of them, even when empty)."""
    new_member = ~np.isin(rows["member_id"], np.unique(train["member_id"]))
    new_item = ~np.isin(rows["item_id"], np.unique(train["item_id"]))
    out = {"member=new": new_member, "member=active": ~new_member,
           "item=new": new_item, "item=established": ~new_item}
    for p in sorted(set(np.unique(train["platform"])) | set(np.unique(rows["platform"]))):
        out[f"platform={p}"] = rows["platform"] == p
    return out


def request_queries(rows: Examples) -> tuple[Examples, np.ndarray]:
    """One query per request (its member and context) and each row's query index."""
    _, first, inverse = np.unique(rows["request_id"], return_index=True, return_inverse=True)
    return Examples(rows.take(first).features((*QUERY, "ts", "request_id"))), inverse


def evaluate_retrieval(scorer: RetrievalScorer, train: Examples, positives: Examples, catalog: Examples,
                       ks: tuple[int, ...], top_k: int, max_queries: int,
                       truth: RetrievalScorer | None = None) -> dict[str, Any]:
    """Recall@K over the catalog in both views, by cohort, and the popularity bias of the top-K lists.

    Args:
      scorer: the model or baseline under test.
      train: the training split (for the cohorts).
      positives: eval examples that are positives (one per (request, item)).
      catalog: the items to rank (every positive's item must be in it).
      ks: the K of recall@K.
      top_k: list length of the popularity-bias figures.
      max_queries: at most this many requests are scored (a stable sample by request id).
      truth: the true click probability of every (query, item) (the simulator's,
        in benchmarks): adds the ``expected`` view, the share of a query's
        expected clicks under uniform exposure that its top K holds. It is what
        the explored view estimates, without the sampling noise.
    """
    keep = _sample(positives["request_id"], max_queries)
    positives = positives.take(keep)
    queries, inverse = request_queries(positives)
    index = {item: i for i, item in enumerate(catalog["item_id"])}
    missing = sorted(set(positives["item_id"]) - index.keys())
    if missing:
        raise ValueError(f"{len(missing)} eval positives' items are not in the catalog, e.g. {missing[:3]}")
    target = np.array([index[i] for i in positives["item_id"]], dtype=np.int64)
    greater = np.zeros(len(positives), np.int64)
    ties = np.zeros(len(positives), np.int64)
    top = np.zeros((len(queries), min(top_k, len(catalog))), dtype=np.int64)
    expected = {k: np.zeros(len(queries)) for k in ks}
    for lo in range(0, len(queries), CHUNK):
        hi = min(lo + CHUNK, len(queries))
        chunk = queries.take(np.arange(lo, hi))
        scores = np.asarray(scorer(chunk, catalog), dtype=np.float64)
        # ties in a ranked list are broken by catalog order: the bias figures need one list
        order = np.argsort(-scores, axis=1, kind="stable")
        top[lo:hi] = order[:, : top.shape[1]]
        if truth is not None:
            p = np.asarray(truth(chunk, catalog), dtype=np.float64)
            for k in ks:
                expected[k][lo:hi] = np.take_along_axis(p, order[:, :k], axis=1).sum(axis=1) / p.sum(axis=1)
        rows = np.flatnonzero((inverse >= lo) & (inverse < hi))
        greater[rows], ties[rows] = metrics.positive_ranks(scores[inverse[rows] - lo], target[rows])
    result: dict[str, Any] = {}
    groups = cohorts(train, positives)
    for view, mask in (("logged", np.ones(len(positives), dtype=bool)), ("explored", explored(positives))):
        result[view] = {"overall": _recall(greater[mask], ties[mask], ks) | {"positives": int(mask.sum())},
                        "cohorts": {name: _recall(greater[m & mask], ties[m & mask], ks) | {
                            "positives": int((m & mask).sum())} for name, m in groups.items()}}
    if truth is not None:
        result["expected"] = {"overall": {f"recall@{k}": float(v.mean()) for k, v in expected.items()}}
    result["queries"] = len(queries)
    result["popularity_bias"] = metrics.concentration(catalog["item_id"][top], len(catalog))
    return result


def _recall(greater: np.ndarray, ties: np.ndarray, ks: tuple[int, ...]) -> dict[str, float]:
    out: dict[str, float] = {}
    for k, r in metrics.recall_at_k(greater, ties, ks).items():
        out[f"recall@{k}"] = r
        # binomial standard error: the explored view has few positives, say how sure a figure is
        out[f"recall@{k}_se"] = math.sqrt(r * (1 - r) / len(greater)) if len(greater) else float("nan")
    return out


def explored(rows: Examples) -> np.ndarray:
    """Rows whose slot was explored (shown uniformly at random), by logged propensity."""
    return rows["propensity"] < EXPLORED_BELOW


def examination(train: Examples, max_position: int) -> np.ndarray:
    """Relative examination probability per position (1 at position 0), from explored training impressions.

    Explored items are random, so click rate by position differs only by how
    often the position is looked at. Fitted as a power law ``(1 + p) ** -a`` by
    click-weighted least squares on log rates, so positions with few explored
    clicks borrow strength from the rest; 1 everywhere when there are too few.
    """
    m = explored(train)
    pos, clicks = train["position"][m], train["label_click"][m]
    n = np.bincount(pos, minlength=max_position + 1).astype(float)
    c = np.bincount(pos, weights=clicks, minlength=max_position + 1)
    ok = (n > 0) & (c > 0)
    if ok.sum() < 3 or c.sum() < 50:
        return np.ones(max_position + 1)
    x, y, w = np.log1p(np.flatnonzero(ok)), np.log(c[ok] / n[ok]), c[ok]
    slope = np.sum(w * (x - np.average(x, weights=w)) * (y - np.average(y, weights=w))) / np.sum(
        w * (x - np.average(x, weights=w)) ** 2)
    return np.power(1.0 + np.arange(max_position + 1), min(slope, 0.0))


def _sample(keys: np.ndarray, limit: int) -> np.ndarray:
    """Rows of at most ``limit`` distinct keys, chosen by a stable hash (the same in every run)."""
    uniq = np.unique(keys)
    if len(uniq) <= limit:
        return np.ones(len(keys), dtype=bool)
    chosen = uniq[np.argsort(metrics.tiebreak_key(uniq), kind="stable")[:limit]]
    return np.isin(keys, chosen)


def evaluate_ranking(scorer: RankingScorer, train: Examples, rows: Examples, k: int,
                     seen: np.ndarray) -> dict[str, Any]:
    """AUC per head, NDCG@k and MAP@k of clicks per request, overall and by cohort.

    A scorer without heads (a baseline, the oracle) is measured on every head
    with its one score.

    Args:
      seen: relative examination probability per position (``examination``).
    """
    out = scorer(rows)
    tiebreak = metrics.tiebreak_key(rows["request_id"], rows["item_id"])
    shown_at_random = explored(rows)
    # IPS gain click / seen(position), passed as a graded label: (2 ** log2(1 + g)) - 1 = g
    ips = np.log2(1.0 + rows["label_click"] / seen[np.clip(rows["position"], 0, len(seen) - 1)])

    def measure(mask: np.ndarray) -> dict[str, Any]:
        res: dict[str, Any] = {}
        for view, m in (("", mask), ("_explored", mask & shown_at_random)):
            res |= {f"auc_{h}{view}": metrics.auc(rows[f"label_{h}"][m], out.get(h, out["score"])[m]) for h in LABELS}
        groups, scores, ties = rows["request_id"][mask], out["score"][mask], tiebreak[mask]
        clicks = rows["label_click"][mask]
        res[f"ndcg@{k}"], res["requests_with_click"] = metrics.ndcg_at_k(groups, clicks, scores, ties, k)
        res[f"ndcg@{k}_debiased"], _ = metrics.ndcg_at_k(groups, ips[mask], scores, ties, k)
        res[f"map@{k}"], _ = metrics.map_at_k(groups, clicks, scores, ties, k)
        res["impressions"] = int(mask.sum())
        res["explored_impressions"] = int((mask & shown_at_random).sum())
        return res

    everything = np.ones(len(rows), dtype=bool)
    return {"overall": measure(everything),
            "cohorts": {name: measure(m) for name, m in cohorts(train, rows).items()}}


def ratios(results: Mapping[str, Any], path: tuple[str, ...], baseline: str) -> dict[str, float]:
    """The figure at ``path`` (under each scorer) of every scorer divided by the baseline's."""

    def at(r: Mapping[str, Any]) -> float:
        for key in path:
            r = r[key]
        return float(r)  # type: ignore[arg-type]

    base = at(results[baseline])
    return {name: at(r) / base if base else float("nan") for name, r in results.items() if name != baseline}

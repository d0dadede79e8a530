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
one: retrieval recall over positives in *explored* slots (items drawn uniformly
from every item the slot's row admits, the serving rows' catalog-wide share,
logged as ``explored``), ranking AUC over explored impressions, and
NDCG with clicks weighted by the inverse of the examination probability of
their position (IPS; Joachims et al., WSDM 2017), estimated from explored
training impressions, where item and position are independent.

Cohorts: ``member=new`` (no training example) vs ``member=active``,
``platform=<p>``, ``item=new`` (not in the training data) vs ``item=established``.
Every cohort reports its size, so an empty one says so instead of vanishing.

Every figure ``m`` comes with ``m_se``, its standard error: recall in the logged
and explored views is binomial over positives; the expected view and NDCG/MAP
are std / sqrt(n) of per-query or per-request values; AUC is DeLong's with
requests as clusters (``metrics.auc_estimate``; a page's impressions are not
independent). Scorers are compared with the baseline paired on the same
requests (``paired_ratios``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, MutableMapping
from statistics import NormalDist
from typing import Any

import numpy as np

from recloop.features.spec import LABELS, role
from recloop.trainer import metrics
from recloop.trainer.data import Examples
from recloop.trainer.towers import QUERY

# (queries, catalog) -> (n_queries, n_items) scores; queries hold QUERY columns + ts
RetrievalScorer = Callable[[Examples, Examples], np.ndarray]
# impressions -> {"score": (n,), and per head when the scorer has heads}
RankingScorer = Callable[[Examples], dict[str, np.ndarray]]
CHUNK = 256  # queries scored at a time: bounds memory to CHUNK x catalog floats (a few copies of ~25 MB at 12k items)
CONFIDENCE = 0.95  # of the intervals in metrics.json and the tables
Z = NormalDist().inv_cdf(0.5 + CONFIDENCE / 2)  # 1.96
# figure name (``retrieval_recall@K_<view>``, ``ranking_<metric>``) -> its overall estimate, for one scorer
Estimates = MutableMapping[str, metrics.Estimate]


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
    # as str arrays: np.isin compares object arrays (streamed columns) pair by pair
    new_member = ~np.isin(rows["member_id"].astype(str), np.unique(train["member_id"]).astype(str))
    new_item = ~np.isin(rows["item_id"].astype(str), np.unique(train["item_id"]).astype(str))
    out = {"member=new": new_member, "member=active": ~new_member,
           "item=new": new_item, "item=established": ~new_item}
    platform = role("platform")  # the declared feature slices are named after (none: no platform slices)
    if platform is not None:
        for p in sorted(set(np.unique(train[platform])) | set(np.unique(rows[platform]))):
            out[f"platform={p}"] = rows[platform] == p
    return out


def request_queries(rows: Examples) -> tuple[Examples, np.ndarray]:
    """One query per request (its member and context) and each row's query index."""
    _, first, inverse = np.unique(rows["request_id"], return_index=True, return_inverse=True)
    return Examples(rows.take(first).features((*QUERY, "ts", "request_id"))), inverse


def sizes(rows: Examples) -> dict[str, Any]:
    """What an evaluation set's figures rest on: impressions, requests, members and positives per head."""
    clicked = rows["request_id"][rows["label_click"] == 1]
    return {"impressions": len(rows), "requests": len(np.unique(rows["request_id"])),
            "members": len(np.unique(rows["member_id"])), "requests_with_click": len(np.unique(clicked)),
            "explored_impressions": int(explored(rows).sum()),
            "positives": {h: int(rows[f"label_{h}"].sum()) for h in LABELS}}


def evaluate_retrieval(scorer: RetrievalScorer, train: Examples, positives: Examples, catalog: Examples,
                       ks: tuple[int, ...], top_k: int, max_queries: int,
                       truth: RetrievalScorer | None = None, estimates: Estimates | None = None) -> dict[str, Any]:
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
      estimates: receives the recall of every view as ``retrieval_recall@K_<view>``, clustered by request
        (for paired comparisons between scorers), and per cohort under ``estimate_key``.
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
        if estimates is not None:  # clustered by request: one page's positives are not independent
            for slice_, m in (("overall", mask), *((name, g & mask) for name, g in groups.items())):
                for k in ks:
                    hit = np.clip((k - greater[m]) / (ties[m] + 1.0), 0.0, 1.0)  # as metrics.recall_at_k
                    estimates[estimate_key(f"retrieval_recall@{k}_{view}", slice_)] = metrics.mean_estimate(
                        hit, inverse[m])
    if truth is not None:
        found = {k: metrics.mean_estimate(v, np.arange(len(queries))) for k, v in expected.items()}
        result["expected"] = {"overall": {key: value for k, e in found.items()
                                          for key, value in ((f"recall@{k}", e.value), (f"recall@{k}_se", e.se))}}
        if estimates is not None:
            estimates.update((f"retrieval_recall@{k}_expected", e) for k, e in found.items())
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
    """Rows whose slot was explored: drawn uniformly from every item its row admitted (the logged flag)."""
    return rows["explored"] == 1


def examination(train: Examples, max_position: int) -> np.ndarray:
    """Relative examination probability per position (1 at position 0), from explored training impressions.

    An explored item is drawn uniformly from what its row admits, so within a row
    the click rate by position differs only by how often the position is looked
    at (rows differ in what they admit, so each row gets its own level). Fitted as
    a power law ``(1 + p) ** -a`` by click-weighted least squares on log rates with
    a level per row, so positions with few explored clicks borrow strength from the
    rest; 1 everywhere when there are too few.
    """
    m = explored(train)
    pos, clicks = train["position"][m], train["label_click"][m]
    row = np.unique(train["row"][m], return_inverse=True)[1].reshape(-1) if m.any() else np.zeros(0, np.int64)
    cell = row * (max_position + 1) + np.minimum(pos, max_position)
    size = (int(row.max()) + 1 if len(row) else 1) * (max_position + 1)
    n = np.bincount(cell, minlength=size).astype(float)
    c = np.bincount(cell, weights=clicks, minlength=size)
    ok = (n > 0) & (c > 0)
    if ok.sum() < 3 or c.sum() < 50:
        return np.ones(max_position + 1)
    at = np.flatnonzero(ok)
    group, x, y, w = at // (max_position + 1), np.log1p(at % (max_position + 1)), np.log(c[ok] / n[ok]), c[ok]
    # within each row: deviations from the row's click-weighted means
    mean = lambda v: (np.bincount(group, weights=w * v) / np.maximum(np.bincount(group, weights=w), 1e-12))[group]
    dx, dy = x - mean(x), y - mean(y)
    if np.sum(w * dx**2) <= 0:  # one position per row: nothing within a row to compare
        return np.ones(max_position + 1)
    slope = np.sum(w * dx * dy) / np.sum(w * dx**2)
    return np.power(1.0 + np.arange(max_position + 1), min(slope, 0.0))


def _sample(keys: np.ndarray, limit: int) -> np.ndarray:
    """Rows of at most ``limit`` distinct keys, chosen by a stable hash (the same in every run)."""
    uniq = np.unique(keys)
    if len(uniq) <= limit:
        return np.ones(len(keys), dtype=bool)
    chosen = uniq[np.argsort(metrics.tiebreak_key(uniq), kind="stable")[:limit]]
    return np.isin(keys, chosen)


def evaluate_ranking(scorer: RankingScorer, train: Examples, rows: Examples, k: int,
                     seen: np.ndarray, estimates: Estimates | None = None) -> dict[str, Any]:
    """AUC per head, NDCG@k and MAP@k of clicks per request, overall and by cohort, each with its ``_se``.

    A scorer without heads (a baseline, the oracle) is measured on every head
    with its one score.

    Args:
      seen: relative examination probability per position (``examination``).
      estimates: receives every figure as ``ranking_<metric>`` (for paired comparisons), per cohort under
        ``estimate_key``.
    """
    out = scorer(rows)
    tiebreak = metrics.tiebreak_key(rows["request_id"], rows["item_id"])
    shown_at_random = explored(rows)
    # requests as int codes: the groups of NDCG/MAP and the clusters of every standard error (strings sorted once)
    request = np.unique(rows["request_id"], return_inverse=True)[1].reshape(-1)
    # IPS gain click / seen(position), passed as a graded label: (2 ** log2(1 + g)) - 1 = g
    ips = np.log2(1.0 + rows["label_click"] / seen[np.clip(rows["position"], 0, len(seen) - 1)])

    def measure(mask: np.ndarray, slice_: str) -> dict[str, Any]:
        found: dict[str, metrics.Estimate] = {}
        for view, m in (("", mask), ("_explored", mask & shown_at_random)):
            for h in LABELS:
                found[f"auc_{h}{view}"] = metrics.auc_estimate(rows[f"label_{h}"][m], out.get(h, out["score"])[m],
                                                               request[m])
        groups, scores, ties = request[mask], out["score"][mask], tiebreak[mask]
        clicks, ids = rows["label_click"][mask], np.unique(groups)
        for name, by_group, labels in ((f"ndcg@{k}", metrics.ndcg_by_group, clicks),
                                       (f"ndcg@{k}_debiased", metrics.ndcg_by_group, ips[mask]),
                                       (f"map@{k}", metrics.map_by_group, clicks)):
            values = by_group(groups, labels, scores, ties, k)
            counted = ~np.isnan(values)  # requests with a click
            found[name] = metrics.mean_estimate(values[counted], ids[counted])
        res: dict[str, Any] = {}
        for name, e in found.items():
            res[name], res[f"{name}_se"] = e.value, e.se
        if estimates is not None:
            estimates.update((estimate_key(f"ranking_{name}", slice_), e) for name, e in found.items())
        res["requests_with_click"] = len(found[f"ndcg@{k}"].clusters)
        res["impressions"] = int(mask.sum())
        res["explored_impressions"] = int((mask & shown_at_random).sum())
        return res

    everything = np.ones(len(rows), dtype=bool)
    return {"overall": measure(everything, "overall"),
            "cohorts": {name: measure(m, name) for name, m in cohorts(train, rows).items()}}


def estimate_key(figure: str, slice_: str = "overall") -> str:
    """Where ``evaluate_retrieval``/``evaluate_ranking`` keep a figure's estimate: ``figure`` overall,
    ``figure[slice]`` for a cohort."""
    return figure if slice_ == "overall" else f"{figure}[{slice_}]"


def paired_ratios(estimates: Mapping[str, Mapping[str, metrics.Estimate]], figure: str, baseline: str,
                  z: float = Z) -> dict[str, dict[str, float | int]]:
    """Every scorer against ``baseline`` on one figure, paired on the same requests.

    Args:
      estimates: ``{scorer: {figure: estimate}}``, as ``evaluate_retrieval`` and ``evaluate_ranking`` fill them.
      figure: the figure's name, e.g. ``ranking_ndcg@10_debiased``.
      baseline: the scorer every other one is divided by.
      z: the intervals' half-width in standard errors.

    Returns:
      ``{scorer: {"ratio", "low", "high", "difference", "difference_se", "difference_low",
      "difference_high", "requests"}}``. The ratio's interval is the delta method's on the log scale (it
      stays positive and is not symmetric); the difference's is ``difference -/+ z * se``. NaN where the
      baseline's figure is zero or undefined.
    """
    base = estimates[baseline][figure]
    out: dict[str, dict[str, float | int]] = {}
    for name, found in estimates.items():
        if name == baseline:
            continue
        d, r = metrics.difference(found[figure], base), metrics.ratio(found[figure], base)
        spread = z * r.se / r.value if r.value > 0 else math.nan
        d_low, d_high = d.interval(z)
        out[name] = {"ratio": r.value, "low": r.value * math.exp(-spread), "high": r.value * math.exp(spread),
                     "difference": d.value, "difference_se": d.se, "difference_low": d_low,
                     "difference_high": d_high, "requests": len(d.clusters)}
    return out


def truth_agreement(results: Mapping[str, Any], k: int, n: int) -> dict[str, Any]:
    """How well each offline figure orders the scorers of a run as the truth does (the simulator's, in benchmarks).

    Spearman's rank correlation, across scorers, between each offline figure and the expected recall@``k``
    (the share of the true expected clicks the top ``k`` holds); None below three scorers or with ties only.
    """
    truth_path = ("retrieval", "expected", "overall", f"recall@{k}")
    figures = {f"recall@{k}_explored": ("retrieval", "explored", "overall", f"recall@{k}"),
               f"recall@{k}_logged": ("retrieval", "logged", "overall", f"recall@{k}"),
               f"ndcg@{n}_debiased": ("ranking", "overall", f"ndcg@{n}_debiased"),
               f"ndcg@{n}": ("ranking", "overall", f"ndcg@{n}"),
               "auc_click_explored": ("ranking", "overall", "auc_click_explored")}

    def at(r: Any, path: tuple[str, ...]) -> float:
        for key in path:
            r = r.get(key, {}) if isinstance(r, Mapping) else {}
        return float(r) if isinstance(r, (int, float)) and r is not None else math.nan

    names = [s for s, r in results.items() if not math.isnan(at(r, truth_path))]
    truth = np.array([at(results[s], truth_path) for s in names])
    out: dict[str, Any] = {"scorers": names, "truth": f"expected recall@{k}"}
    for figure, path in figures.items():
        values = np.array([at(results[s], path) for s in names])
        ok = ~np.isnan(values)
        out[figure] = _spearman(values[ok], truth[ok]) if ok.sum() >= 3 else None
    return out


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks with ties sharing their mean rank (as Spearman's coefficient needs)."""
    inverse = np.unique(x, return_inverse=True)[1].reshape(-1)
    counts = np.bincount(inverse)
    starts = np.cumsum(counts) - counts
    return (starts + (counts - 1) / 2.0)[inverse]


def _spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    ra, rb = _average_ranks(a), _average_ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return None
    return float(np.corrcoef(ra, rb)[0, 1])

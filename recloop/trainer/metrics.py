"""Offline ranking metrics, computed exactly in numpy outside the TensorFlow graph.

The trainer's offline evaluation of the retrieval and ranking models, and of the
baselines they must beat, goes through these functions so that all are scored the
same way. They replace the in-graph TFRS ``FactorizedTopK`` metric, which
under-reports recall because float rounding makes tied scores unequal. Here ties
are explicit: recall is the exact expectation under uniformly random tie-breaking,
and per-request metrics break ties with a deterministic key the caller supplies
(never the logged position, which would leak the logging policy's ranking).

Standard errors: impressions and positives of one request are not independent
(one member, one page), requests are. So a figure's uncertainty is taken over
requests: an ``Estimate`` holds each request's first-order influence on the
figure, the standard error is the cluster-robust sum of their squares, and two
scorers measured on the same requests are compared paired (``difference``,
``ratio``). For a mean of per-request values this is std / sqrt(n); for AUC it is
DeLong's variance with requests as clusters (Obuchowski, Biometrics 1997).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _columns(n: int | None, **arrays: object) -> list[np.ndarray]:
    """The arrays as 1-D numpy arrays of one length (``n`` if given), in keyword order."""
    out = []
    for name, value in arrays.items():
        a = np.asarray(value)
        if a.ndim != 1:
            raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
        if n is None:
            n = len(a)
        elif len(a) != n:
            raise ValueError(f"{name} has {len(a)} rows, expected {n}")
        out.append(a)
    return out


def _scores(scores: np.ndarray) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if np.isnan(s).any():
        raise ValueError(f"scores must not be NaN, got {int(np.isnan(s).sum())} NaN value(s)")
    return s


@dataclass(frozen=True)
class Estimate:
    """A figure and each cluster's (request's) first-order influence on it.

    ``value`` minus its expectation is about ``influence.sum()``, a sum of independent
    terms, so ``se = sqrt(K / (K - 1) * sum(influence ** 2))`` over the K clusters.
    Two estimates on the same rows pair by cluster (``difference``, ``ratio``).
    """

    value: float
    clusters: np.ndarray  # sorted distinct cluster keys
    influence: np.ndarray  # one per cluster, in that order

    @classmethod
    def undefined(cls) -> Estimate:
        return cls(math.nan, np.zeros(0, dtype=np.int64), np.zeros(0))

    @property
    def se(self) -> float:
        """The standard error; NaN when the value is undefined or rests on fewer than two clusters."""
        k = len(self.influence)
        if k < 2 or math.isnan(self.value):
            return math.nan
        return math.sqrt(k / (k - 1) * float(np.sum(self.influence**2)))

    def interval(self, z: float) -> tuple[float, float]:
        """``value -/+ z * se``."""
        return self.value - z * self.se, self.value + z * self.se


def mean_estimate(values: np.ndarray, clusters: np.ndarray) -> Estimate:
    """The mean of ``values`` with each cluster's influence ``sum(value - mean) / n``.

    With one value per cluster the standard error is ``std(values, ddof=1) / sqrt(n)``.

    Args:
      values: (n,) per-row values (a request's NDCG, a positive's hit).
      clusters: (n,) the cluster of each row.

    Returns:
      The estimate; NaN value and no clusters for no rows.

    Raises:
      ValueError: on mismatched shapes or NaN values.
    """
    v, c = _columns(None, values=values, clusters=clusters)
    v = v.astype(np.float64)
    if np.isnan(v).any():
        raise ValueError(f"values must not be NaN, got {int(np.isnan(v).sum())} NaN value(s)")
    if not len(v):
        return Estimate.undefined()
    keys, inverse = np.unique(c, return_inverse=True)
    mean = float(v.mean())
    return Estimate(mean, keys, np.bincount(inverse.reshape(-1), weights=v - mean, minlength=len(keys)) / len(v))


def _paired(a: Estimate, b: Estimate) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The union of both estimates' clusters and each one's influence on it (0 where it has none)."""
    keys = np.union1d(a.clusters, b.clusters)
    out = []
    for e in (a, b):
        influence = np.zeros(len(keys))
        influence[np.searchsorted(keys, e.clusters)] = e.influence
        out.append(influence)
    return keys, out[0], out[1]


def difference(a: Estimate, b: Estimate) -> Estimate:
    """``a - b``, paired by cluster: on the same requests the shared noise cancels."""
    keys, ia, ib = _paired(a, b)
    return Estimate(a.value - b.value, keys, ia - ib)


def ratio(a: Estimate, b: Estimate) -> Estimate:
    """``a / b``, paired by cluster; its influence by the delta method, ``(ia - ratio * ib) / b``.

    NaN when ``b`` is zero or undefined.
    """
    if not b.value or math.isnan(b.value) or math.isnan(a.value):
        return Estimate.undefined()
    keys, ia, ib = _paired(a, b)
    r = a.value / b.value
    return Estimate(r, keys, (ia - r * ib) / b.value)


def positive_ranks(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each row's positive item ranks among its candidates.

    Args:
      scores: (n, m) candidate scores, one row per query.
      positive: (n,) int column of each row's positive item, in ``[0, m)``.

    Returns:
      ``(greater, ties)``, both (n,) int64: candidates scored strictly higher than the
      positive, and other candidates scored exactly the same.

    Raises:
      ValueError: on a bad shape, a non-integer or out-of-range index, or NaN scores.
    """
    s = np.asarray(scores)
    if s.ndim != 2:
        raise ValueError(f"scores must be 2-D (n, m), got shape {s.shape}")
    (p,) = _columns(s.shape[0], positive=positive)
    if len(p) and not np.issubdtype(p.dtype, np.integer):
        raise ValueError(f"positive must hold integer column indices, got dtype {p.dtype}")
    p = p.astype(np.int64)
    bad = (p < 0) | (p >= s.shape[1])
    if bad.any():
        raise ValueError(f"positive index {int(p[bad][0])} out of range for {s.shape[1]} candidates")
    s = _scores(s)
    pos = s[np.arange(len(p)), p][:, None]
    return (s > pos).sum(axis=1).astype(np.int64), (s == pos).sum(axis=1).astype(np.int64) - 1


def recall_at_k(greater: np.ndarray, ties: np.ndarray, ks: Sequence[int]) -> dict[int, float]:
    """Expected recall@k with ties broken uniformly at random.

    The positive's 0-based rank is uniform over ``greater..greater + ties``, so
    ``P(rank < k) = clip((k - greater) / (ties + 1), 0, 1)``.

    Args:
      greater, ties: (n,) counts from ``positive_ranks``.
      ks: cut-offs, positive ints.

    Returns:
      ``{k: mean over rows}``; NaN for every k when there are no rows.

    Raises:
      ValueError: on a non-positive k, mismatched shapes or negative counts.
    """
    g, t = (a.astype(np.float64) for a in _columns(None, greater=greater, ties=ties))
    ks = [_positive_int("k", k) for k in ks]
    if (g < 0).any() or (t < 0).any():
        raise ValueError(f"greater and ties must be >= 0, got minima {g.min()} and {t.min()}")
    if not len(g):
        return {k: math.nan for k in ks}
    return {k: float(np.clip((k - g) / (t + 1.0), 0.0, 1.0).mean()) for k in ks}


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC by the Mann-Whitney U statistic (average ranks, so a tie counts one half).

    Args:
      labels: (n,) 0/1 (or bool) labels.
      scores: (n,) scores, higher meaning more likely positive.

    Returns:
      The AUC; NaN when only one class (or nothing) is present.

    Raises:
      ValueError: on mismatched shapes, labels other than 0/1, or NaN scores.
    """
    y, s = _columns(None, labels=labels, scores=scores)
    bad = (y != 0) & (y != 1)
    if bad.any():
        raise ValueError(f"labels must be 0 or 1, got {y[bad][0]!r}")
    s, pos = _scores(s), y == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if not n_pos or not n_neg:
        return math.nan
    order = np.argsort(s, kind="stable")
    v = s[order]
    starts = np.flatnonzero(np.r_[True, v[1:] != v[:-1]])
    counts = np.diff(np.r_[starts, len(v)])
    ranks = np.empty(len(v))
    ranks[order] = np.repeat(starts + (counts + 1) / 2.0, counts)  # 1-based, ties share their mean
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def auc_estimate(labels: np.ndarray, scores: np.ndarray, clusters: np.ndarray) -> Estimate:
    """``auc`` with each cluster's influence: DeLong's placement values summed per cluster (Obuchowski 1997).

    A positive's placement is its share of negatives scored lower (a tie counts one half), a negative's
    its share of positives scored higher; AUC is the mean of either. Each cluster's influence is
    ``sum(placement - AUC) / count`` over its positives plus the same over its negatives.

    Args:
      labels, scores: as ``auc``.
      clusters: (n,) the cluster of each row (request ids or int codes).

    Returns:
      The estimate; NaN value and no clusters when only one class (or nothing) is present.

    Raises:
      ValueError: as ``auc``, or on a clusters column of another length.
    """
    value = auc(labels, scores)
    y, s, c = _columns(None, labels=labels, scores=scores, clusters=clusters)
    if math.isnan(value):
        return Estimate.undefined()
    s, pos = s.astype(np.float64), y == 1
    negatives, positives = np.sort(s[~pos]), np.sort(s[pos])
    below = (np.searchsorted(negatives, s[pos], "left") + np.searchsorted(negatives, s[pos], "right")) / 2.0
    above = len(positives) - (np.searchsorted(positives, s[~pos], "left")
                              + np.searchsorted(positives, s[~pos], "right")) / 2.0
    keys, inverse = np.unique(c, return_inverse=True)
    inverse = inverse.reshape(-1)
    influence = (np.bincount(inverse[pos], weights=below / len(negatives) - value, minlength=len(keys))
                 / len(positives)
                 + np.bincount(inverse[~pos], weights=above / len(positives) - value, minlength=len(keys))
                 / len(negatives))
    return Estimate(value, keys, influence)


def tiebreak_key(*parts: Sequence[str]) -> np.ndarray:
    """A deterministic uint32 key per row, the CRC-32 of its strings joined (same in every process and run).

    Args:
      parts: one or more (n,) sequences of strings, e.g. request ids and item ids.

    Returns:
      (n,) uint32 keys.

    Raises:
      ValueError: with no parts or parts of different lengths.
    """
    if not parts:
        raise ValueError("tiebreak_key needs at least one sequence of strings, got none")
    lengths = [len(p) for p in parts]
    if len(set(lengths)) > 1:
        raise ValueError(f"parts must have one length, got lengths {lengths}")
    # "\x1f" (unit separator) keeps ("a", "bc") and ("ab", "c") apart
    rows = ("\x1f".join(map(str, row)).encode("utf-8") for row in zip(*parts))
    return np.fromiter((zlib.crc32(r) for r in rows), dtype=np.uint32, count=lengths[0])


def _codes(values: np.ndarray) -> np.ndarray:
    """Dense int codes that sort like ``values``."""
    return np.unique(values, return_inverse=True)[1].reshape(-1)


def _order(codes: np.ndarray, scores: np.ndarray, tiebreak: np.ndarray) -> np.ndarray:
    return np.lexsort((_codes(tiebreak) if tiebreak.dtype == object else tiebreak, -_scores(scores), codes))


def order_within_groups(groups: np.ndarray, scores: np.ndarray, tiebreak: np.ndarray) -> np.ndarray:
    """Row order by group, then score descending, then ``tiebreak`` ascending.

    Args:
      groups, scores, tiebreak: (n,) group of each row (request ids: strings or ints), model
        scores, and a deterministic sortable key (e.g. from ``tiebreak_key``).

    Returns:
      (n,) int index that sorts the rows.

    Raises:
      ValueError: on mismatched shapes or NaN scores.
    """
    g, s, t = _columns(None, groups=groups, scores=scores, tiebreak=tiebreak)
    return _order(_codes(g), s, t)


def _ranked(groups, labels, scores, tiebreak, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels in ranked order, each row's group code (dense, non-decreasing) and 0-based position in it."""
    _positive_int("k", k)
    g, y, s, t = _columns(None, groups=groups, labels=labels, scores=scores, tiebreak=tiebreak)
    y = y.astype(np.float64)
    bad = (y < 0) | np.isnan(y)
    if bad.any():
        raise ValueError(f"labels must be >= 0, got {y[bad][0]}")
    codes = _codes(g)
    order = _order(codes, s, t)
    group = codes[order]
    sizes = np.bincount(group)
    return y[order], group, np.arange(len(group)) - (np.cumsum(sizes) - sizes)[group]


def _mean_counted(per_group: np.ndarray) -> tuple[float, int]:
    counted = ~np.isnan(per_group)
    n = int(counted.sum())
    return (float(per_group[counted].mean()), n) if n else (math.nan, 0)


def ndcg_by_group(
    groups: np.ndarray, labels: np.ndarray, scores: np.ndarray, tiebreak: np.ndarray, k: int = 10
) -> np.ndarray:
    """NDCG@k of each group, in the order of ``np.unique(groups)``; NaN for a group without a positive.

    Gain ``2**label - 1`` at 0-based position ``r`` is discounted by ``log2(r + 2)``;
    a group's DCG@k is divided by its ideal DCG@k (labels sorted descending).

    Args:
      groups, labels, scores, tiebreak: (n,) arrays (see ``order_within_groups``); labels graded, >= 0.
      k: cut-off, a positive int.

    Raises:
      ValueError: on mismatched shapes, negative labels, NaN scores or a bad k.
    """
    y, group, position = _ranked(groups, labels, scores, tiebreak, k)
    discount = np.where(position < k, 1.0 / np.log2(position + 2.0), 0.0)
    dcg = np.bincount(group, weights=(np.exp2(y) - 1.0) * discount)
    ideal_y = y[np.lexsort((-y, group))]  # group is non-decreasing, so positions stay the same
    ideal = np.bincount(group, weights=(np.exp2(ideal_y) - 1.0) * discount)
    return np.divide(dcg, ideal, where=ideal > 0, out=np.full(len(dcg), math.nan))


def ndcg_at_k(
    groups: np.ndarray, labels: np.ndarray, scores: np.ndarray, tiebreak: np.ndarray, k: int = 10
) -> tuple[float, int]:
    """Mean NDCG@k over groups with at least one positive label (``ndcg_by_group``).

    Returns:
      ``(mean NDCG@k, groups counted)``; ``(nan, 0)`` when no group has a positive.

    Raises:
      ValueError: as ``ndcg_by_group``.
    """
    return _mean_counted(ndcg_by_group(groups, labels, scores, tiebreak, k))


def map_by_group(
    groups: np.ndarray, labels: np.ndarray, scores: np.ndarray, tiebreak: np.ndarray, k: int = 10
) -> np.ndarray:
    """Average precision@k of each group, in the order of ``np.unique(groups)``; NaN without a positive.

    ``AP@k = sum_{i<k} precision@(i+1) * rel_i / min(k, positives in the group)``, a row
    being relevant when its label is > 0. Args and Raises as ``ndcg_by_group``.
    """
    y, group, position = _ranked(groups, labels, scores, tiebreak, k)
    rel = (y > 0).astype(np.float64)
    cum, first = np.cumsum(rel), position == 0
    hits = cum - (cum[first] - rel[first])[group]  # relevant rows at or above each row, in its group
    ap_sum = np.bincount(group, weights=np.where(position < k, hits / (position + 1.0) * rel, 0.0))
    n_pos = np.bincount(group, weights=rel)
    return np.where(n_pos > 0, ap_sum / np.maximum(np.minimum(k, n_pos), 1.0), math.nan)


def map_at_k(
    groups: np.ndarray, labels: np.ndarray, scores: np.ndarray, tiebreak: np.ndarray, k: int = 10
) -> tuple[float, int]:
    """Mean average precision@k over groups with at least one positive (``map_by_group``).

    Returns and Raises as ``ndcg_at_k``.
    """
    return _mean_counted(map_by_group(groups, labels, scores, tiebreak, k))


def concentration(
    recommended: np.ndarray, catalog_size: int, shares: Sequence[float] = (0.5, 0.9)
) -> dict[str, float]:
    """How concentrated recommendation lists are on a few (popular) items.

    Args:
      recommended: (n_queries, k) recommended item ids (strings or ints).
      catalog_size: items that could be recommended, a positive int.
      shares: shares of all slots to report, each in ``(0, 1]``.

    Returns:
      ``items_for_{round(share * 100)}pct``: the fewest distinct items (most frequent
      first) that fill at least that share of the slots; ``distinct_items``; and
      ``coverage``, ``distinct_items / catalog_size``.

    Raises:
      ValueError: on a bad shape, catalog_size or share, or more distinct items than catalog_size.
    """
    rec = np.asarray(recommended)
    if rec.ndim != 2:
        raise ValueError(f"recommended must be 2-D (n_queries, k), got shape {rec.shape}")
    catalog_size = _positive_int("catalog_size", catalog_size)
    counts = np.sort(np.unique(rec.reshape(-1), return_counts=True)[1])[::-1]
    if len(counts) > catalog_size:
        raise ValueError(f"{len(counts)} distinct items recommended, more than catalog_size={catalog_size}")
    cum = np.cumsum(counts)
    out: dict[str, float] = {}
    for share in shares:
        if not 0.0 < share <= 1.0:
            raise ValueError(f"shares must be in (0, 1], got {share!r}")
        key = f"items_for_{round(share * 100)}pct"
        if key in out:
            raise ValueError(f"shares {list(shares)} give the key {key!r} twice")
        needed = math.ceil(Fraction(str(share)) * rec.size)  # the share as written: 0.1 is 1/10, not a float above it
        out[key] = int(np.searchsorted(cum, needed) + 1) if needed else 0
    out["distinct_items"] = len(counts)
    out["coverage"] = len(counts) / catalog_size
    return out

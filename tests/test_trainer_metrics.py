"""Tests of recloop.trainer.metrics: exact offline ranking metrics, checked by hand and against slow loops."""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest

from recloop.trainer.metrics import (
    Estimate,
    auc,
    auc_estimate,
    concentration,
    difference,
    map_at_k,
    map_by_group,
    mean_estimate,
    ndcg_at_k,
    ndcg_by_group,
    order_within_groups,
    positive_ranks,
    ratio,
    recall_at_k,
    tiebreak_key,
)

LOG2_3 = math.log2(3)

# ---------------------------------------------------------------- retrieval: ranks and recall


def test_positive_ranks_counts_higher_and_tied_candidates():
    scores = np.array([[0.1, 0.5, 0.5, 0.9], [3.0, 1.0, 2.0, 0.0]])
    # row 0: positive 0.5 -> higher: 0.9 (1); the other 0.5 ties (1)
    # row 1: positive 0.0 -> higher: 3, 1, 2 (3); no ties
    greater, ties = positive_ranks(scores, np.array([1, 3]))
    assert greater.tolist() == [1, 3]
    assert ties.tolist() == [1, 0]


def test_positive_ranks_empty():
    greater, ties = positive_ranks(np.zeros((0, 5)), np.zeros(0, dtype=int))
    assert greater.shape == ties.shape == (0,)


@pytest.mark.parametrize(
    ("scores", "positive", "match"),
    [
        (np.zeros(4), np.array([0]), r"scores must be 2-D \(n, m\), got shape \(4,\)"),
        (np.zeros((2, 3)), np.array([0, 1, 2]), "positive has 3 rows, expected 2"),
        (np.zeros((2, 3)), np.array([[0], [1]]), r"positive must be 1-D, got shape \(2, 1\)"),
        (np.zeros((2, 3)), np.array([0, 3]), "positive index 3 out of range for 3 candidates"),
        (np.zeros((2, 3)), np.array([-1, 0]), "positive index -1 out of range for 3 candidates"),
        (np.zeros((2, 3)), np.array([0.0, 1.0]), "positive must hold integer column indices, got dtype float64"),
        (np.array([[0.0, np.nan]]), np.array([0]), r"scores must not be NaN, got 1 NaN value\(s\)"),
    ],
)
def test_positive_ranks_rejects_bad_input(scores, positive, match):
    with pytest.raises(ValueError, match=match):
        positive_ranks(scores, positive)


def test_recall_with_ties_is_the_expectation_over_tie_breaks():
    # greater=1, ties=3: the positive's 0-based rank is uniform over 1, 2, 3, 4
    # k=1: P(rank < 1) = 0; k=2: only rank 1 -> 1/4; k=4: ranks 1..3 -> 3/4; k=5: all -> 1
    assert recall_at_k(np.array([1]), np.array([3]), [1, 2, 4, 5]) == {1: 0.0, 2: 0.25, 4: 0.75, 5: 1.0}


def test_recall_means_over_rows():
    # k=2: row (0, 0) -> rank 0 -> 1; row (1, 3) -> 1/4; row (5, 0) -> rank 5 -> 0; mean = 1.25 / 3
    got = recall_at_k(np.array([0, 1, 5]), np.array([0, 3, 0]), [2])
    assert got[2] == pytest.approx(1.25 / 3)


def test_recall_of_nothing_is_nan():
    got = recall_at_k(np.zeros(0, dtype=int), np.zeros(0, dtype=int), [1, 10])
    assert list(got) == [1, 10]
    assert all(math.isnan(v) for v in got.values())


@pytest.mark.parametrize(
    ("greater", "ties", "ks", "match"),
    [
        ([0], [0], [0], "k must be a positive int, got 0"),
        ([0], [0], [2.5], "k must be a positive int, got 2.5"),
        ([0], [0], [True], "k must be a positive int, got True"),
        ([0, 1], [0], [1], "ties has 1 rows, expected 2"),
        ([-1], [0], [1], "greater and ties must be >= 0"),
    ],
)
def test_recall_rejects_bad_input(greater, ties, ks, match):
    with pytest.raises(ValueError, match=match):
        recall_at_k(np.array(greater), np.array(ties), ks)


# ---------------------------------------------------------------- AUC


def _auc_pairs(labels, scores) -> float:
    """The definition: the share of (positive, negative) pairs ordered right, a tie counting 1/2."""
    pos = [s for y, s in zip(labels, scores) if y == 1]
    neg = [s for y, s in zip(labels, scores) if y == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def test_auc_with_ties():
    labels = np.array([1, 0, 1, 0, 0])
    scores = np.array([0.9, 0.9, 0.5, 0.1, 0.5])
    # positives 0.9, 0.5 against negatives 0.9, 0.1, 0.5:
    # 0.9 -> 1/2 + 1 + 1 = 2.5; 0.5 -> 0 + 1 + 1/2 = 1.5; AUC = 4 / 6
    assert auc(labels, scores) == pytest.approx(4 / 6)
    assert auc(labels, scores) == pytest.approx(_auc_pairs(labels, scores))
    assert auc(labels.astype(bool), scores) == pytest.approx(4 / 6)


def test_auc_extremes_and_one_class():
    assert auc(np.array([0, 0, 1, 1]), np.array([1, 2, 3, 4])) == 1.0
    assert auc(np.array([1, 1, 0, 0]), np.array([1, 2, 3, 4])) == 0.0
    assert auc(np.array([1, 0]), np.array([7, 7])) == 0.5
    assert math.isnan(auc(np.array([1, 1]), np.array([0.2, 0.3])))
    assert math.isnan(auc(np.zeros(0), np.zeros(0)))


def test_auc_rejects_bad_input():
    with pytest.raises(ValueError, match="labels must be 0 or 1, got 2"):
        auc(np.array([0, 2]), np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match="scores has 3 rows, expected 2"):
        auc(np.array([0, 1]), np.array([0.1, 0.2, 0.3]))


# ---------------------------------------------------------------- per-request order, NDCG and MAP


def test_order_within_groups_sorts_by_group_then_score_then_tiebreak():
    groups = np.array(["b", "a", "b", "a"])
    scores = np.array([1.0, 2.0, 1.0, 0.0])
    tiebreak = np.array([5, 0, 2, 0])
    # group a: rows 1 (2.0), 3 (0.0); group b: rows 0 and 2 tie at 1.0, tiebreak 2 < 5 -> row 2 first
    assert order_within_groups(groups, scores, tiebreak).tolist() == [1, 3, 2, 0]


# Three requests: "a" with 4 items, "b" with 3, "c" with 3 and no positive.
GROUPS = np.array(["a", "a", "a", "a", "b", "b", "b", "c", "c", "c"])
LABELS = np.array([1, 0, 1, 0, 0, 0, 1, 0, 0, 0])
SCORES = np.array([0.9, 0.8, 0.3, 0.1, 0.5, 0.7, 0.6, 0.4, 0.2, 0.3])
TIEBREAK = np.arange(10)


def test_ndcg_by_hand():
    # a ranked: labels 1, 0, 1, 0 -> DCG = 1/log2(2) + 1/log2(4) = 1.5; ideal 1, 1, 0, 0 -> 1 + 1/log2(3)
    # b ranked by 0.7, 0.6, 0.5: labels 0, 1, 0 -> DCG = 1/log2(3); ideal = 1
    # c has no positive: skipped, not counted
    expected = (1.5 / (1 + 1 / LOG2_3) + 1 / LOG2_3) / 2
    value, n = ndcg_at_k(GROUPS, LABELS, SCORES, TIEBREAK)
    assert n == 2
    assert value == pytest.approx(expected)
    # k=2: a -> DCG 1, ideal 1 + 1/log2(3); b unchanged (its positive is at position 1)
    value, n = ndcg_at_k(GROUPS, LABELS, SCORES, TIEBREAK, k=2)
    assert (value, n) == (pytest.approx((1 / (1 + 1 / LOG2_3) + 1 / LOG2_3) / 2), 2)


def test_ndcg_graded_labels():
    # ranked by score 0.9, 0.5, 0.2: labels 0, 1, 2 -> gains 0, 1, 3
    # DCG = 1/log2(3) + 3/log2(4); ideal labels 2, 1, 0 -> 3/log2(2) + 1/log2(3)
    value, n = ndcg_at_k(np.array([7, 7, 7]), np.array([2, 0, 1]), np.array([0.2, 0.9, 0.5]), np.arange(3))
    assert n == 1
    assert value == pytest.approx((1 / LOG2_3 + 1.5) / (3 + 1 / LOG2_3))


def test_map_by_hand():
    # a ranked: labels 1, 0, 1, 0 -> (P@1 + P@3) / 2 = (1 + 2/3) / 2 = 5/6
    # b ranked: labels 0, 1, 0 -> P@2 / 1 = 1/2; c skipped -> mean (5/6 + 1/2) / 2 = 2/3
    assert map_at_k(GROUPS, LABELS, SCORES, TIEBREAK) == (pytest.approx(2 / 3), 2)
    # k=2: a -> P@1 / min(2, 2) = 1/2; b -> P@2 / min(2, 1) = 1/2
    assert map_at_k(GROUPS, LABELS, SCORES, TIEBREAK, k=2) == (pytest.approx(0.5), 2)
    # k=1: a -> P@1 / 1 = 1; b -> 0 / 1 = 0
    assert map_at_k(GROUPS, LABELS, SCORES, TIEBREAK, k=1) == (pytest.approx(0.5), 2)
    # graded labels are binarised: a 2 counts as a 1
    assert map_at_k(GROUPS, LABELS * 2, SCORES, TIEBREAK) == (pytest.approx(2 / 3), 2)


def test_ties_are_broken_by_the_tiebreak_not_the_input_order():
    groups, labels, scores = np.array(["r", "r"]), np.array([0, 1]), np.array([0.5, 0.5])
    # positive's key 3 < 7: it ranks first -> NDCG 1, AP 1
    assert ndcg_at_k(groups, labels, scores, np.array([7, 3])) == (pytest.approx(1.0), 1)
    assert map_at_k(groups, labels, scores, np.array([7, 3])) == (pytest.approx(1.0), 1)
    # positive's key 7 > 3: it ranks second -> NDCG 1/log2(3), AP 1/2
    assert ndcg_at_k(groups, labels, scores, np.array([3, 7])) == (pytest.approx(1 / LOG2_3), 1)
    assert map_at_k(groups, labels, scores, np.array([3, 7])) == (pytest.approx(0.5), 1)
    # the same rows in reverse input order score the same
    assert ndcg_at_k(groups, labels[::-1], scores, np.array([7, 3])) == (pytest.approx(1 / LOG2_3), 1)
    # string keys work too
    assert ndcg_at_k(groups, labels, scores, np.array(["z", "a"], dtype=object)) == (pytest.approx(1.0), 1)


def test_groups_without_positives():
    groups, scores = np.array([1, 1, 2]), np.array([0.3, 0.2, 0.1])
    for metric in (ndcg_at_k, map_at_k):
        value, n = metric(groups, np.zeros(3), scores, np.arange(3))
        assert math.isnan(value) and n == 0
        value, n = metric(np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0))
        assert math.isnan(value) and n == 0
        # one group with a positive at the top, one without: mean over the one counted
        assert metric(groups, np.array([1, 0, 0]), scores, np.arange(3)) == (pytest.approx(1.0), 1)


@pytest.mark.parametrize("metric", [ndcg_at_k, map_at_k])
def test_grouped_metrics_reject_bad_input(metric):
    g, y, s, t = np.array([1, 1]), np.array([0, 1]), np.array([0.1, 0.2]), np.arange(2)
    with pytest.raises(ValueError, match="labels has 3 rows, expected 2"):
        metric(g, np.array([0, 1, 0]), s, t)
    with pytest.raises(ValueError, match=r"tiebreak must be 1-D, got shape \(2, 1\)"):
        metric(g, y, s, t[:, None])
    with pytest.raises(ValueError, match="k must be a positive int, got 0"):
        metric(g, y, s, t, k=0)
    with pytest.raises(ValueError, match="labels must be >= 0, got -1.0"):
        metric(g, np.array([0, -1]), s, t)
    with pytest.raises(ValueError, match="scores must not be NaN"):
        metric(g, y, np.array([0.1, np.nan]), t)


# ---------------------------------------------------------------- tie-break keys


def test_tiebreak_key_is_a_fixed_crc32():
    keys = tiebreak_key(["req-1", "req-2"], ["item-9", "item-9"])
    assert keys.dtype == np.uint32
    # zlib.crc32(b"req-1\x1fitem-9"), computed once: the same in every process and run
    assert keys[0] == 814891728
    assert keys[1] == zlib.crc32(b"req-2\x1fitem-9")
    # the separator keeps the parts apart
    assert tiebreak_key(["a"], ["bc"])[0] != tiebreak_key(["ab"], ["c"])[0]
    assert tiebreak_key(np.array(["x", "y"])).tolist() == [zlib.crc32(b"x"), zlib.crc32(b"y")]


def test_tiebreak_key_rejects_bad_input():
    with pytest.raises(ValueError, match="got none"):
        tiebreak_key()
    with pytest.raises(ValueError, match=r"got lengths \[2, 1\]"):
        tiebreak_key(["a", "b"], ["c"])


# ---------------------------------------------------------------- popularity concentration


def test_concentration_by_hand():
    recommended = np.array([["a", "b", "c"], ["a", "b", "d"], ["a", "e", "b"], ["a", "c", "f"]])
    # 12 slots; counts a 4, b 3, c 2, d 1, e 1, f 1 -> cumulative 4, 7, 9, 10, 11, 12
    # 50% = 6 slots -> a, b (7); 90% = 10.8 -> 11 slots -> 5 items; 6 distinct of 10 -> coverage 0.6
    assert concentration(recommended, catalog_size=10) == {
        "items_for_50pct": 2,
        "items_for_90pct": 5,
        "distinct_items": 6,
        "coverage": 0.6,
    }
    assert concentration(np.array([[1, 2], [1, 3]]), 3, shares=(0.5, 1.0)) == {
        "items_for_50pct": 1,  # item 1 fills 2 of 4 slots
        "items_for_100pct": 3,
        "distinct_items": 3,
        "coverage": 1.0,
    }


def test_concentration_share_is_exact():
    # 30 slots, item 0 in 3 of them: 10% is exactly 3 slots -> 1 item (0.1 * 30 in floats is 3.0000000000000004)
    recommended = np.r_[[0, 0, 0], np.arange(1, 28)].reshape(10, 3)
    assert concentration(recommended, 100, shares=(0.1,))["items_for_10pct"] == 1


def test_concentration_rejects_bad_input():
    with pytest.raises(ValueError, match=r"recommended must be 2-D \(n_queries, k\), got shape \(3,\)"):
        concentration(np.array([1, 2, 3]), 10)
    with pytest.raises(ValueError, match="catalog_size must be a positive int, got 0"):
        concentration(np.array([[1]]), 0)
    with pytest.raises(ValueError, match="3 distinct items recommended, more than catalog_size=2"):
        concentration(np.array([[1, 2, 3]]), 2)
    with pytest.raises(ValueError, match=r"shares must be in \(0, 1\], got 1.5"):
        concentration(np.array([[1]]), 2, shares=(1.5,))


# ---------------------------------------------------------------- against slow obvious loops


def _slow_grouped(groups, labels, scores, tiebreak, k):
    by_group: dict[str, list[tuple[float, int, float]]] = {}
    for g, y, s, t in zip(groups, labels, scores, tiebreak):
        by_group.setdefault(g, []).append((s, t, y))
    ndcgs, aps = [], []
    for rows in by_group.values():
        ranked = [y for _, _, y in sorted(rows, key=lambda r: (-r[0], r[1]))]
        ideal = sorted(ranked, reverse=True)
        dcg = sum((2**y - 1) / math.log2(i + 2) for i, y in enumerate(ranked[:k]))
        idcg = sum((2**y - 1) / math.log2(i + 2) for i, y in enumerate(ideal[:k]))
        if idcg > 0:
            ndcgs.append(dcg / idcg)
        rel = [1 if y > 0 else 0 for y in ranked]
        if sum(rel):
            ap = sum(sum(rel[: i + 1]) / (i + 1) * rel[i] for i in range(min(k, len(rel))))
            aps.append(ap / min(k, sum(rel)))
    return (sum(ndcgs) / len(ndcgs), len(ndcgs)), (sum(aps) / len(aps), len(aps))


@pytest.mark.parametrize("k", [1, 3, 10])
def test_vectorised_metrics_match_slow_loops(k):
    rng = np.random.default_rng(20260105)
    n = 2_000
    groups = np.array([f"req-{i}" for i in rng.integers(0, 300, n)])
    labels = rng.choice([0, 0, 0, 0, 1, 2], size=n)
    scores = np.round(rng.random(n), 1)  # coarse, so many ties
    tiebreak = tiebreak_key(groups, [str(i) for i in range(n)])
    (ndcg, n_ndcg), (ap, n_ap) = _slow_grouped(groups, labels, scores, tiebreak, k)
    assert ndcg_at_k(groups, labels, scores, tiebreak, k=k) == (pytest.approx(ndcg), n_ndcg)
    assert map_at_k(groups, labels, scores, tiebreak, k=k) == (pytest.approx(ap), n_ap)

    binary = (labels > 0).astype(int)
    assert auc(binary, scores) == pytest.approx(_auc_pairs(binary, scores))

    cand = np.round(rng.random((200, 30)), 1)
    positive = rng.integers(0, 30, 200)
    greater, ties = positive_ranks(cand, positive)
    # expected recall: average over every place the positive can take among its ties
    slow = []
    for row, p in zip(cand, positive):
        higher = sum(s > row[p] for s in row)
        same = sum(s == row[p] for s in row) - 1
        slow.append(sum(higher + u < k for u in range(same + 1)) / (same + 1))
    assert recall_at_k(greater, ties, [k])[k] == pytest.approx(sum(slow) / len(slow))


# ---------------------------------------------------------------- standard errors over requests


def test_per_group_values_are_in_the_order_of_the_distinct_groups():
    # groups a, b, c (see test_ndcg_by_hand / test_map_by_hand); c has no positive: NaN, not 0
    ndcg = ndcg_by_group(GROUPS, LABELS, SCORES, TIEBREAK)
    np.testing.assert_allclose(ndcg, [1.5 / (1 + 1 / LOG2_3), 1 / LOG2_3, np.nan])
    np.testing.assert_allclose(map_by_group(GROUPS, LABELS, SCORES, TIEBREAK), [5 / 6, 0.5, np.nan])
    assert ndcg_at_k(GROUPS, LABELS, SCORES, TIEBREAK) == (pytest.approx(np.nanmean(ndcg)), 2)


def test_a_mean_of_one_value_per_cluster_has_the_textbook_standard_error():
    values = np.array([0.2, 0.9, 0.4, 0.4, 1.0])
    e = mean_estimate(values, np.array(["e", "d", "c", "b", "a"]))
    assert e.value == pytest.approx(0.58)
    assert e.se == pytest.approx(values.std(ddof=1) / math.sqrt(5))
    assert e.clusters.tolist() == ["a", "b", "c", "d", "e"] and e.influence.sum() == pytest.approx(0)
    # two positives of one request are one observation, not two: the request's sum is what varies
    clustered = mean_estimate(np.array([1.0, 1.0, 0.0, 0.0]), np.array([1, 1, 2, 2]))
    assert clustered.se == pytest.approx(0.5) and mean_estimate(np.array([1.0, 1.0, 0.0, 0.0]),
                                                                 np.arange(4)).se == pytest.approx(math.sqrt(1 / 12))
    assert math.isnan(mean_estimate(np.zeros(0), np.zeros(0)).value)
    assert math.isnan(mean_estimate(np.ones(1), np.ones(1)).se)  # one cluster says nothing about the spread
    with pytest.raises(ValueError, match="values must not be NaN"):
        mean_estimate(np.array([np.nan]), np.array([1]))


def test_auc_estimate_is_delong_with_one_row_per_cluster():
    rng = np.random.default_rng(3)
    y = (rng.random(400) < 0.3).astype(int)
    s = rng.normal(size=400) + y
    e = auc_estimate(y, s, np.arange(400))
    assert e.value == auc(y, s)
    pos, neg = s[y == 1], s[y == 0]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
    delong = math.sqrt(v10.var(ddof=1) / len(pos) + v01.var(ddof=1) / len(neg))
    assert e.se == pytest.approx(delong, rel=0.01)  # DeLong's per-class (n - 1) vs one (K - 1) for all rows
    assert math.isnan(auc_estimate(np.ones(3), np.arange(3.0), np.arange(3)).value)


def test_auc_standard_error_counts_requests_not_impressions_and_matches_a_request_bootstrap():
    rng = np.random.default_rng(11)
    requests, per = 150, 10
    cluster = np.repeat(np.arange(requests), per)
    # a request-level effect shared by its impressions' labels and scores: impressions are not independent
    effect = np.repeat(rng.normal(size=requests), per)
    y = (rng.random(len(cluster)) < 1 / (1 + np.exp(-(effect * 2 - 1.5)))).astype(int)
    s = effect * 1.5 + rng.normal(size=len(cluster)) + 0.3 * y
    e = auc_estimate(y, s, cluster)
    naive = auc_estimate(y, s, np.arange(len(cluster)))
    boot = []
    for _ in range(400):
        pick = rng.integers(0, requests, requests)
        rows = (pick[:, None] * per + np.arange(per)).ravel()
        boot.append(auc(y[rows], s[rows]))
    assert e.se == pytest.approx(np.std(boot, ddof=1), rel=0.2)
    assert e.se > 1.3 * naive.se


def test_paired_differences_cancel_the_noise_both_scorers_share():
    rng = np.random.default_rng(5)
    hard = rng.random(500)  # per request: what every scorer finds hard
    a = mean_estimate(np.clip(hard + 0.05 + rng.normal(0, 0.02, 500), 0, 1), np.arange(500))
    b = mean_estimate(hard, np.arange(500))
    d = difference(a, b)
    assert d.value == pytest.approx(a.value - b.value)
    assert d.se < 0.1 * math.hypot(a.se, b.se)  # unpaired would call this noise; paired it is clear
    assert difference(a, a).se == 0
    r = ratio(a, b)
    assert r.value == pytest.approx(a.value / b.value) and 0 < r.se < 0.1 * r.value
    assert math.isnan(ratio(a, Estimate(0.0, b.clusters, b.influence)).value)
    # clusters present in one estimate only count with no influence from the other
    part = difference(mean_estimate(np.array([1.0, 0.0]), np.array([0, 900])), b)
    assert part.clusters.tolist() == [*range(500), 900] and part.influence[-1] == pytest.approx(-0.5 / 2)

"""Rows by filters with epsilon exploration: filters hold, no repeats, propensities are exact."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from recloop.baselines import MemberProfile
from recloop.serving.rows import Candidates, RowsConfig, RowSpec, fill

DAY = dt.date(2026, 1, 19).toordinal()
CATEGORIES = ("yoga", "hiit", "running", "dance")


def _pool(n: int = 40, seed: int = 0) -> Candidates:
    rng = np.random.default_rng(seed)
    return Candidates(
        item_id=np.array([f"i{i:03d}" for i in range(n)]),
        category=np.array([CATEGORIES[i % 4] for i in range(n)]),
        creator=np.array([f"c{i % 7}" for i in range(n)]),
        duration_min=np.array([(5.0, 15.0, 30.0, 45.0, 60.0)[i % 5] for i in range(n)]),
        release_day=np.array([DAY - (i * 3) for i in range(n)]),
        score=rng.random(n), heads={"click": rng.random(n)},
        popularity=np.where(np.arange(n) % 3 == 0, rng.random(n) + 0.1, 0.0))


PROFILE = MemberProfile(usual_category="yoga", usual_creator="c3", categories_tried=frozenset({"yoga", "hiit"}))


def test_greedy_rows_obey_their_filters_in_score_order_without_repeats():
    pool = _pool()
    page = fill(pool, RowsConfig(epsilon=0.0), k=4, profile=PROFILE, preferred="dance", day=DAY,
                rng=np.random.default_rng(1))
    assert [s.row for s in page] == ["for_your_usual"] * 4 + ["quick"] * 4 + ["something_new"] * 4 + \
        ["popular_now"] * 4
    assert [s.position for s in page] == list(range(16))
    assert len({s.index for s in page}) == 16  # no item twice on the page
    assert all(s.propensity == 1.0 and not s.explored for s in page)
    for s in page:
        i = s.index
        assert {
            "for_your_usual": pool.category[i] == "yoga" or pool.creator[i] == "c3",
            "quick": pool.duration_min[i] <= 20,
            "something_new": DAY - pool.release_day[i] <= 7 or pool.category[i] not in {"yoga", "hiit"},
            "popular_now": pool.popularity[i] > 0,
        }[s.row], (s.row, i)
    usual = [pool.score[s.index] for s in page if s.row == "for_your_usual"]
    assert usual == sorted(usual, reverse=True)
    # the first usual item is the best-scored admitted one
    admitted = [i for i in range(40) if pool.category[i] == "yoga" or pool.creator[i] == "c3"]
    assert page[0].index == max(admitted, key=lambda i: pool.score[i])


def test_a_new_member_gets_the_declared_category_and_every_category_is_new():
    pool = _pool()
    page = fill(pool, RowsConfig(epsilon=0.0), k=3, profile=None, preferred="running", day=DAY,
                rng=np.random.default_rng(2), rows=["for_your_usual", "something_new"])
    assert [pool.category[s.index] for s in page[:3]] == ["running"] * 3
    top_rest = [i for i in np.argsort(-pool.score, kind="stable") if i not in {s.index for s in page[:3]}][:3]
    assert [s.index for s in page[3:]] == top_rest


def test_a_row_with_too_few_items_is_filled_by_exploration_with_its_probability():
    pool = _pool(12)
    config = RowsConfig(rows=(RowSpec(name="quick", filter="quick"),), epsilon=0.0)
    page = fill(pool, config, k=8, profile=PROFILE, preferred=None, day=DAY, rng=np.random.default_rng(3))
    assert int((pool.duration_min <= 20).sum()) == 6  # durations cycle 5, 15, 30, 45, 60 over 12 items
    assert [s.explored for s in page] == [False] * 6 + [True] * 2
    for s in page[6:]:  # nothing left to pick greedily: uniform over the items not yet shown
        assert s.propensity == pytest.approx(1 / (12 - s.position))
        assert pool.duration_min[s.index] > 20


def test_logged_propensities_match_how_often_items_are_shown():
    pool = _pool(20)
    config = RowsConfig(rows=(RowSpec(name="quick", filter="quick"),), epsilon=0.3)
    counts: dict[int, int] = {}
    logged: dict[int, float] = {}
    n = 4000
    for seed in range(n):
        first = fill(pool, config, k=2, profile=None, preferred=None, day=DAY, rng=np.random.default_rng(seed))[0]
        counts[first.index] = counts.get(first.index, 0) + 1
        logged.setdefault(first.index, first.propensity)
    for i, c in counts.items():
        assert c / n == pytest.approx(logged[i], abs=0.025), i
    best_quick = max((i for i in range(20) if pool.duration_min[i] <= 20), key=lambda i: pool.score[i])
    assert logged[best_quick] == pytest.approx(0.7 + 0.3 / 20)


def test_bad_rows_are_named_and_small_pools_fill_what_they_can():
    with pytest.raises(ValueError, match="unknown row 'trending'"):
        fill(_pool(), RowsConfig(), k=2, profile=None, preferred=None, day=DAY, rng=np.random.default_rng(0),
             rows=["trending"])
    short = fill(_pool(5), RowsConfig(), k=2, profile=None, preferred=None, day=DAY, rng=np.random.default_rng(0))
    assert [s.row for s in short] == ["for_your_usual"] * 2 + ["quick"] * 2 + ["something_new"]
    assert sorted(s.index for s in short) == list(range(5))
    page = fill(_pool(), RowsConfig(epsilon=0.0), k=2, profile=None, preferred=None, day=DAY,
                rng=np.random.default_rng(0), rows=["popular_now"])
    assert len(page) == 2

"""Rows by filters with softmax and catalog-wide exploration: filters hold, no repeats, propensities are exact."""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pytest

from recloop.baselines import MemberProfile
from recloop.serving.rows import (
    Candidates,
    ReleasedIndex,
    RowsConfig,
    RowSpec,
    admitted,
    explore,
    explore_released,
    fill,
    slot_choices,
    slot_probability,
)

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
    page = fill(pool, RowsConfig(temperature=0.0, catalog_share=0.0), k=4, profile=PROFILE, preferred="dance", day=DAY,
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
    page = fill(pool, RowsConfig(temperature=0.0, catalog_share=0.0), k=3, profile=None, preferred="running", day=DAY,
                rng=np.random.default_rng(2), rows=["for_your_usual", "something_new"])
    assert [pool.category[s.index] for s in page[:3]] == ["running"] * 3
    top_rest = [i for i in np.argsort(-pool.score, kind="stable") if i not in {s.index for s in page[:3]}][:3]
    assert [s.index for s in page[3:]] == top_rest


def test_a_row_with_too_few_items_is_filled_from_the_rest_of_the_ranking_with_its_probability():
    pool = _pool(12)
    config = RowsConfig(rows=(RowSpec(name="quick", filter="quick"),), temperature=0.0, catalog_share=0.0)
    page = fill(pool, config, k=8, profile=PROFILE, preferred=None, day=DAY, rng=np.random.default_rng(3))
    assert int((pool.duration_min <= 20).sum()) == 6  # durations cycle 5, 15, 30, 45, 60 over 12 items
    assert [pool.duration_min[s.index] <= 20 for s in page] == [True] * 6 + [False] * 2
    # nothing admitted is left: the best-scored items of the rest, as a greedy slot
    rest = [i for i in np.argsort(-pool.score, kind="stable") if pool.duration_min[i] > 20][:2]
    assert [s.index for s in page[6:]] == rest and all(s.propensity == 1.0 and not s.explored for s in page[6:])
    # with a catalog share, the rest's share is uniform over every released item not yet shown
    shared = fill(pool, config.model_copy(update={"catalog_share": 0.5}), k=8, profile=PROFILE, preferred=None,
                  day=DAY, rng=np.random.default_rng(3))
    choices, _ = slot_choices(pool, config, 8, PROFILE, None, DAY)
    taken = [s.index for s in shared[:7]]
    top = next(int(i) for i in np.argsort(-pool.score, kind="stable") if i not in taken)
    assert slot_probability(choices[7], taken, top, config.model_copy(update={"catalog_share": 0.5})) == \
        pytest.approx(0.5 + 0.5 / 5)


@pytest.mark.parametrize(("temperature", "share"), [(0.2, 0.3), (0.0, 0.3), (0.05, 0.0)])
def test_logged_propensities_match_how_often_items_are_shown(temperature, share):
    pool = _pool(20)
    config = RowsConfig(rows=(RowSpec(name="quick", filter="quick"),), temperature=temperature, catalog_share=share)
    counts: dict[tuple[int, int], int] = {}
    logged: dict[tuple[int, int], float] = {}
    n = 4000
    for seed in range(n):
        first, second = fill(pool, config, k=2, profile=None, preferred=None, day=DAY, rng=np.random.default_rng(seed))
        for key, p in (((0, first.index), first.propensity), ((1, first.index, second.index), second.propensity)):
            counts[key] = counts.get(key, 0) + 1
            logged.setdefault(key, p)
    firsts = {key: c for key, c in counts.items() if len(key) == 2}
    for key, c in firsts.items():
        assert c / n == pytest.approx(logged[key], abs=0.025), key
    for key, c in counts.items():  # the second slot, given the first: the frequency given the prefix
        if len(key) == 3 and firsts[(0, key[1])] >= 400:
            assert c / firsts[(0, key[1])] == pytest.approx(logged[key], abs=0.07), key
    quick = [i for i in range(20) if pool.duration_min[i] <= 20]
    assert all(logged[(0, i)] >= share / len(quick) - 1e-12 for i in quick if (0, i) in logged)
    if share:  # full support: every admitted item is shown, with at least the catalog share's uniform probability
        assert {key[1] for key in firsts} == set(quick)
        assert sum(logged[(0, i)] for i in quick) == pytest.approx(1.0)


def test_slot_probabilities_sum_to_one_and_reproduce_the_logged_ones():
    pool = _pool(40, seed=5)
    config = RowsConfig(temperature=0.1, catalog_share=0.2)
    for seed in range(20):
        page = fill(pool, config, k=3, profile=PROFILE, preferred="dance", day=DAY, rng=np.random.default_rng(seed))
        choices, names = slot_choices(pool, config, 3, PROFILE, "dance", DAY)
        assert names == [s.row for s in page]
        taken: list[int] = []
        for s, choice in zip(page, choices, strict=True):
            everything = [slot_probability(choice, taken, i, config) for i in range(40)]
            assert sum(everything) == pytest.approx(1.0)
            assert slot_probability(choice, taken, s.index, config) == s.propensity  # what replay computes
            assert type(s.explored) is bool and type(s.propensity) is float  # JSON-ready, as the log needs
            taken.append(s.index)


def test_the_catalog_share_shows_items_the_pool_never_retrieved():
    catalog = _pool(200, seed=7)
    retrieved = np.zeros(200, dtype=bool)
    retrieved[:30] = True  # the model retrieved 30 of 200 items; the rest are only there to be drawn
    config = RowsConfig(rows=(RowSpec(name="quick", filter="quick"),), temperature=0.05, catalog_share=0.5)
    pool = dataclasses.replace(catalog, index=np.arange(200), retrieved=retrieved)
    shown, outside = 0, 0
    for seed in range(300):
        rng = np.random.default_rng(seed)
        plan = explore(catalog, config, 4, None, None, DAY, rng)
        for s in fill(dataclasses.replace(pool, exploration=plan), config, k=4, profile=None, preferred=None,
                      day=DAY, rng=rng):
            shown += 1
            outside += not retrieved[s.index]
            assert s.explored or retrieved[s.index]  # the softmax share keeps to what was retrieved
            assert catalog.duration_min[s.index] <= 20  # the row's filter holds for the catalog-wide share too
    assert 0.3 < outside / shown < 0.6  # about the catalog share (times 170 of 200 items outside the pool)


def test_bad_rows_are_named_and_small_pools_fill_what_they_can():
    with pytest.raises(ValueError, match="unknown row 'trending'"):
        fill(_pool(), RowsConfig(), k=2, profile=None, preferred=None, day=DAY, rng=np.random.default_rng(0),
             rows=["trending"])
    short = fill(_pool(5), RowsConfig(), k=2, profile=None, preferred=None, day=DAY, rng=np.random.default_rng(0))
    assert [s.row for s in short] == ["for_your_usual"] * 2 + ["quick"] * 2 + ["something_new"]
    assert sorted(s.index for s in short) == list(range(5))
    page = fill(_pool(), RowsConfig(temperature=0.0, catalog_share=0.0), k=2, profile=None, preferred=None, day=DAY,
                rng=np.random.default_rng(0), rows=["popular_now"])
    assert len(page) == 2


def test_the_gate_replays_with_the_servers_default_exploration():
    from recloop.trainer.gate_config import OffPolicyConfig

    served, gated = RowsConfig(), OffPolicyConfig()
    assert (gated.temperature, gated.catalog_share) == (served.temperature, served.catalog_share)


def test_a_tiny_temperature_is_greedy_without_overflow():
    pool = _pool(40, seed=5)
    config = RowsConfig(temperature=1e-4, catalog_share=0.0)
    greedy = fill(pool, RowsConfig(temperature=0.0, catalog_share=0.0), 3, PROFILE, "dance", DAY,
                  np.random.default_rng(0))
    page = fill(pool, config, 3, PROFILE, "dance", DAY, np.random.default_rng(0))
    assert [s.index for s in page] == [s.index for s in greedy]
    assert [s.propensity for s in page] == pytest.approx([s.propensity for s in greedy], abs=1e-4)  # no NaN


@pytest.mark.parametrize("profile, preferred", [
    (PROFILE, None),
    (MemberProfile(usual_category="", usual_creator="c5", categories_tried=frozenset({"dance", "pilates"})), "yoga"),
    (MemberProfile(usual_category="boxing", usual_creator="", categories_tried=frozenset()), None),
    (None, "running"), (None, "boxing"), (None, None)])
def test_the_released_index_admits_what_the_filters_admit(profile, preferred):
    catalog = dataclasses.replace(_pool(300, seed=3), index=np.arange(300) * 2 + 5)  # catalog rows, sorted
    catalog = dataclasses.replace(catalog, category=np.where(np.arange(300) % 11 == 0, "", catalog.category),
                                  creator=np.where(np.arange(300) % 13 == 0, "", catalog.creator))
    config = RowsConfig(popular_top=20)
    index = ReleasedIndex.of(dataclasses.replace(catalog, popularity=np.zeros(300)), DAY)
    top = np.argsort(-catalog.popularity, kind="stable")[:20]
    popular = catalog.catalog_rows[top[catalog.popularity[top] > 0]]
    everything = np.arange(-1, 610)  # every catalog row, and some that are not released items
    plan = explore_released(index, config, 5, profile, preferred, popular, np.random.default_rng(4))
    for spec in config.rows:
        want = catalog.catalog_rows[admitted(spec, catalog, profile, preferred, DAY, config.popular_top)]
        got = index.admitted(spec, profile, preferred, popular)
        assert [r for r in everything.tolist() if got.contains(r)] == want.tolist(), spec.filter
        assert len(got) == len(want) and got.count_in(everything) == len(want), spec.filter
        sample = plan.rows[spec.name].sample
        assert len(sample) == min(20, len(want)) and len(set(sample.tolist())) == len(sample)
        assert set(sample.tolist()) <= set(want.tolist())


def test_a_lazy_admitted_set_draws_uniformly():
    from recloop.serving.rows import Parts

    rows = np.arange(100) * 3
    member = np.zeros(100, dtype=bool)
    parts = [np.arange(10, 40), np.array([90, 5, 70])]  # disjoint, in any order
    member[np.concatenate(parts)] = True
    items = Parts(rows, parts, lambda at: member[at])
    rng = np.random.default_rng(0)
    firsts = np.array([items.sample(rng, 5)[0] for _ in range(6600)])
    counts = np.bincount(firsts // 3, minlength=100)
    assert set(np.flatnonzero(counts)) == set(np.flatnonzero(member))
    assert counts[member].min() > 130 and counts[member].max() < 270  # 200 each expected

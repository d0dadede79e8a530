"""Tests of recloop.baselines: popular in context, the member's usual, epsilon-greedy with propensities."""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter

import recloop  # noqa: F401  (first: sets the Keras switch before anything imports TensorFlow)

# isort: split
import numpy as np
import pytest

from recloop.baselines import (
    MemberProfile,
    MemberUsual,
    PopularInContext,
    Slot,
    context_key,
    daypart,
    decay_weights,
    epsilon_greedy,
)
from recloop.baselines.usual import RECENT_ITEMS

# ---------------------------------------------------------------- dayparts


def test_daypart_boundaries() -> None:
    expected = {**{h: "night" for h in (22, 23, 0, 1, 2, 3, 4)}, **{h: "morning" for h in range(5, 12)},
                **{h: "afternoon" for h in range(12, 17)}, **{h: "evening" for h in range(17, 22)}}
    assert {h: daypart(h) for h in range(24)} == expected
    assert context_key(7, "tv") == ("morning", "tv")


@pytest.mark.parametrize("hour", [24, -1, 100])
def test_daypart_rejects_hours_outside_0_23(hour: int) -> None:
    with pytest.raises(ValueError, match=f"0-23, got {hour}"):
        daypart(hour)


# ---------------------------------------------------------------- popular in context


def _popular() -> PopularInContext:
    # morning/ios: b 3 clicks, a 1; morning/tv: c 5; evening/ios: d 2; no-click impressions ignored
    rows = [("a", 7, "ios", 1.0), ("b", 8, "ios", 1.0), ("b", 9, "ios", 1.0), ("b", 10, "ios", 1.0),
            ("c", 6, "tv", 5.0), ("d", 19, "ios", 2.0), ("e", 7, "ios", 0.0), ("e", 19, "tv", 0)]
    item, hour, platform, weight = zip(*rows, strict=True)
    return PopularInContext.fit(item, hour, platform, weight)


def test_popular_ranks_by_clicks_in_the_context_bucket() -> None:
    pop = _popular()
    items, scores = pop.rank(9, "ios", ["a", "b", "c", "d", "e"])
    assert items[:2] == ["b", "a"]
    # exact bucket (weight 1), daypart (0.2) and global (0.05) levels add up
    assert dict(zip(items, scores, strict=True)) == pytest.approx({
        "b": 3 * 1.25, "a": 1 * 1.25, "c": 5 * 0.25, "d": 2 * 0.05, "e": 0.0})
    # in the morning on tv, c leads; in the evening on ios, d leads
    assert pop.rank(6, "tv", ["a", "b", "c", "d"])[0][0] == "c"
    assert pop.rank(20, "ios", ["a", "b", "c", "d"])[0][0] == "d"


def test_popular_backs_off_to_daypart_then_global() -> None:
    pop = _popular()
    # an unseen platform in the morning: the morning daypart ranks c (5) over b (3) over a (1)
    items, scores = pop.rank(8, "Android", ["d", "a", "b", "c"])
    assert items == ["c", "b", "a", "d"]
    assert scores[-1] == pytest.approx(2 * 0.05), "d is known only globally"
    # an unseen daypart and platform: the global counts
    items, _ = pop.rank(14, "Android", ["a", "d", "b", "c"])
    assert items == ["c", "b", "d", "a"]


def test_popular_keeps_candidate_order_on_ties() -> None:
    pop = _popular()
    assert pop.rank(9, "ios", ["z", "y", "x"])[0] == ["z", "y", "x"]
    assert pop.rank(9, "ios", ["y", "b", "z", "x"])[0] == ["b", "y", "z", "x"]
    empty = PopularInContext.fit([], [], [], [])
    items, scores = empty.rank(3, "web", ["q", "p", "r"])
    assert items == ["q", "p", "r"] and list(scores) == [0.0, 0.0, 0.0]


def test_popular_round_trips_through_a_dict() -> None:
    pop = _popular()
    data = pop.to_dict()
    assert set(data) == {"morning|ios", "morning|tv", "evening|ios"}
    assert data["morning|ios"] == {"a": 1.0, "b": 3.0}
    again = PopularInContext.from_dict(json.loads(json.dumps(data)))
    assert again.to_dict() == data
    candidates = ["a", "b", "c", "d", "e"]
    for hour, platform in itertools.product(range(24), ("ios", "tv", "web", "Android")):
        assert np.array_equal(again.scores(hour, platform, candidates), pop.scores(hour, platform, candidates))


def test_popular_fit_needs_aligned_inputs() -> None:
    with pytest.raises(ValueError):
        PopularInContext.fit(["a", "b"], [1], ["ios", "ios"], [1.0, 1.0])


# ---------------------------------------------------------------- the member's usual


def test_decay_weights_halve_every_half_life() -> None:
    w = decay_weights([1, 1, 1, 0, 1], [0, 7, 14, 3, -2], half_life_days=7.0)
    assert w == pytest.approx([1.0, 0.5, 0.25, 0.0, 1.0])
    assert decay_weights([1], [3], half_life_days=3)[0] == pytest.approx(0.5)
    assert decay_weights([2.0], [10.0], half_life_days=5.0)[0] == pytest.approx(0.5)


@pytest.mark.parametrize("half_life", [0, -1.0])
def test_decay_weights_reject_a_non_positive_half_life(half_life: float) -> None:
    with pytest.raises(ValueError, match="half_life_days must be > 0"):
        decay_weights([1], [1], half_life_days=half_life)


def test_member_usual_on_a_hand_made_example() -> None:
    rows = [  # member, item, category, creator, ts, weight
        ("m1", "i1", "yoga", "c1", 100, 1.0),
        ("m1", "i2", "yoga", "c2", 200, 0.5),
        ("m1", "i3", "hiit", "c2", 300, 1.0),
        ("m1", "i4", "dance", "c3", 400, 0.0),  # no click: ignored
        ("m1", "i1", "yoga", "c1", 500, 0.25),  # clicked again: newest, listed once
        ("m2", "i5", "running", "c9", 50, 1.0),
        ("m3", "i6", "yoga", "c1", 10, 0.0),  # never clicked: no profile
    ]
    usual = MemberUsual.fit(*zip(*rows, strict=True))
    assert len(usual) == 2
    assert usual.get("m1") == MemberProfile(
        usual_category="yoga",  # 1 + 0.5 + 0.25 over hiit's 1
        usual_creator="c2",  # 0.5 + 1 over c1's 1 + 0.25
        categories_tried=frozenset({"yoga", "hiit"}),
        recent_items=("i1", "i3", "i2"),
    )
    assert usual.get("m2") == MemberProfile("running", "c9", frozenset({"running"}), ("i5",))
    assert usual.get("m3") is None
    assert usual.get("nobody") is None


def test_member_usual_breaks_ties_by_name() -> None:
    usual = MemberUsual.fit(["m", "m", "m"], ["i1", "i2", "i3"], ["yoga", "yoga", "dance"], ["c2", "c2", "c1"],
                            [1, 2, 3], [0.5, 0.5, 1.0])
    profile = usual.get("m")
    assert profile is not None
    assert profile.usual_category == "dance" and profile.usual_creator == "c1"  # 1.0 each: by name


def test_member_usual_keeps_the_most_recent_items() -> None:
    n = RECENT_ITEMS + 5
    usual = MemberUsual.fit(["m"] * n, [f"i{k:02d}" for k in range(n)], ["yoga"] * n, ["c1"] * n,
                            [1000 - k for k in range(n)], [1.0] * n)  # i00 is the newest
    profile = usual.get("m")
    assert profile is not None
    assert profile.recent_items == tuple(f"i{k:02d}" for k in range(RECENT_ITEMS))


# ---------------------------------------------------------------- epsilon-greedy


def test_epsilon_zero_is_greedy_with_propensity_one() -> None:
    rankings = [[3, 1, 4, 0, 2]] * 2 + [[1, 0, 2, 3, 4]] * 2
    slots = epsilon_greedy(rankings, 6, 0.0, [0.5] * 4, [0.9] * 4)
    assert slots == [Slot(3, 1.0, False), Slot(1, 1.0, False), Slot(0, 1.0, False), Slot(2, 1.0, False)]


def test_epsilon_one_explores_uniformly_over_the_rest() -> None:
    slots = epsilon_greedy([[0, 1, 2]] * 3, 4, 1.0, [0.0] * 3, [0.0, 0.0, 0.99])
    assert [s.item for s in slots] == [0, 1, 3]
    assert [s.explored for s in slots] == [True] * 3
    assert [s.propensity for s in slots] == pytest.approx([1 / 4, 1 / 3, 1 / 2])


def test_a_ranking_that_runs_out_explores() -> None:
    slots = epsilon_greedy([[2], [2], [2]], 3, 0.0, [0.9] * 3, [0.0, 0.0, 0.0])
    assert slots[0] == Slot(2, 1.0, False)
    assert slots[1] == Slot(0, 0.5, True) and slots[2] == Slot(1, 1.0, True)


def test_epsilon_greedy_never_repeats_an_item() -> None:
    rng = np.random.default_rng(1)
    for _ in range(2000):
        pool = int(rng.integers(5, 15))
        n = int(rng.integers(1, pool + 1))
        rankings = [list(rng.permutation(pool)[: rng.integers(0, pool + 1)]) for _ in range(n)]
        eps = float(rng.choice([0.0, 0.1, 0.5, 1.0]))
        slots = epsilon_greedy(rankings, pool, eps, rng.random(n), rng.random(n))
        items = [s.item for s in slots]
        assert len(set(items)) == n and all(0 <= i < pool for i in items)
        assert all(0.0 < s.propensity <= 1.0 for s in slots)


def test_epsilon_greedy_rejects_a_small_pool_and_a_bad_epsilon() -> None:
    with pytest.raises(ValueError, match="pool of 2 items cannot fill 3 slots"):
        epsilon_greedy([[0, 1]] * 3, 2, 0.1, [0.5] * 3, [0.5] * 3)
    for eps in (-0.1, 1.5):
        with pytest.raises(ValueError, match="epsilon"):
            epsilon_greedy([[0]], 3, eps, [0.5], [0.5])


def test_logged_propensities_are_the_slate_probabilities() -> None:
    """Monte Carlo: how often each slate is drawn equals the product of its logged propensities."""
    rankings = [[0, 1, 2, 3, 4], [0, 1, 2, 3, 4], [4, 3, 2, 1, 0]]  # two rows
    pool, eps, draws = 5, 0.3, 50_000
    rng = np.random.default_rng(12345)
    u = rng.random((draws, 3, 2))
    seen: Counter[tuple[int, ...]] = Counter()
    probability: dict[tuple[int, ...], float] = {}
    for d in range(draws):
        slots = epsilon_greedy(rankings, pool, eps, u[d, :, 0], u[d, :, 1])
        slate = tuple(s.item for s in slots)
        seen[slate] += 1
        p = math.prod(s.propensity for s in slots)
        assert abs(probability.setdefault(slate, p) - p) < 1e-15, "propensity depends on the draw"
    assert len(probability) == 5 * 4 * 3, "every slate of 3 distinct items out of 5 can be drawn"
    assert sum(probability.values()) == pytest.approx(1.0, abs=1e-12)
    for slate, p in probability.items():
        assert seen[slate] / draws == pytest.approx(p, abs=0.01), slate
    greedy = (0, 1, 4)
    assert probability[greedy] == pytest.approx((0.7 + 0.3 / 5) * (0.7 + 0.3 / 4) * (0.7 + 0.3 / 3))

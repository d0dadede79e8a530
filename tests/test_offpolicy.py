"""Tests of recloop.trainer.offpolicy: IPS/SNIPS click-rate estimates, by hand and in a synthetic world.

The synthetic world has a known answer. Requests come from ``TYPES`` member types
(drawn uniformly); a type's click probability for item ``i`` in slot ``k`` is
``relevance[type, i] * EXAMINATION[k]``, so the item-position model holds. The
logging and the target policies fill ``SLOTS`` slots epsilon-greedily over a pool
of ``POOL`` items, each ranking by relevance plus its own noise (the target's
ranking is the better one). Every expected value is computed exactly by
enumerating the page prefixes of each type.

Which truth each estimate is checked against:

- With the server's propensities (conditional on the logged items above the slot)
  and the target's probability given the same logged prefix, the estimate is
  exactly unbiased for the *hybrid* value: the target choosing slot ``k`` below
  the logging policy's slots ``1..k-1``. Its intervals are checked against that.
- With marginal probabilities of the item at the slot (Li et al.'s item-position
  model), it is unbiased for the target's own online value: checked against that.
- The gap between the two values is the bias of conditioning on the logged prefix;
  ``test_conditioning_on_the_logged_prefix_is_optimistic_and_small_here`` measures it
  (+4% of the click rate in this world) and checks it is small next to the interval.

The pages of the replications come from a numpy copy of ``epsilon_greedy`` (the
same rule over the same uniform draws, checked slate for slate against it) so that
200 replications of 60,000 impressions run in seconds.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from recloop.baselines import epsilon_greedy
from recloop.trainer.offpolicy import OffPolicyEstimate, estimate

TYPES, POOL, SLOTS = 20, 40, 3
EXAMINATION = np.array([1.0, 0.7, 0.5])
EPSILON = 0.2  # both policies: an explored slot holding the target's greedy item weighs (1 - 0.2) * 40 / 0.2 + 1 = 161
REQUESTS = 20_000  # per replication
REPLICATIONS = 200

# ---------------------------------------------------------------- the synthetic world


def _world() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Click probabilities (types, pool, slots) and the logging and target rankings (types, pool)."""
    rng = np.random.default_rng(2015)
    relevance = 0.02 + 0.4 * rng.beta(0.7, 3.0, (TYPES, POOL))
    logging = np.argsort(-(relevance + 0.1 * rng.standard_normal((TYPES, POOL))), axis=1)
    target = np.argsort(-(relevance + 0.03 * rng.standard_normal((TYPES, POOL))), axis=1)
    return relevance[:, :, None] * EXAMINATION, logging, target


CLICK, LOGGING, TARGET = _world()


def _greedy(top: np.ndarray, prefix: np.ndarray) -> np.ndarray:
    """Each row's best item not in its prefix; ``top`` holds at least ``prefix width + 1`` ranked items."""
    k = prefix.shape[1]
    free = ~(top[:, : k + 1, None] == prefix[:, None, :]).any(axis=2)
    return top[np.arange(len(top)), np.argmax(free, axis=1)]


def _step(rank: np.ndarray, prefixes: np.ndarray) -> np.ndarray:
    """(prefixes, pool): the epsilon-greedy probability of each item in the next slot."""
    n, k = prefixes.shape
    p = np.full((n, POOL), EPSILON / (POOL - k))
    p[np.arange(n)[:, None], prefixes] = 0.0
    p[np.arange(n), _greedy(np.broadcast_to(rank, (n, POOL)), prefixes)] += 1.0 - EPSILON
    return p


def _slot_marginals(above: np.ndarray, chooser: np.ndarray) -> np.ndarray:
    """(slots, pool): the probability that ``chooser`` puts each item in each slot when the
    slots above were filled by ``above`` (both rankings of one type)."""
    prefixes, weight = np.zeros((1, 0), np.int64), np.ones(1)
    out = np.zeros((SLOTS, POOL))
    for k in range(SLOTS):
        out[k] = weight @ _step(chooser, prefixes)
        if k + 1 < SLOTS:
            p = _step(above, prefixes)
            row, item = np.nonzero(p)
            prefixes, weight = np.column_stack([prefixes[row], item]), weight[row] * p[row, item]
    return out


def _marginals(above: np.ndarray, chooser: np.ndarray) -> np.ndarray:
    return np.stack([_slot_marginals(above[t], chooser[t]) for t in range(TYPES)])  # (types, slots, pool)


def _click_rate(marginals: np.ndarray) -> float:
    """Expected clicks per impression, types equally likely."""
    return float(np.einsum("tkm,tmk->", marginals, CLICK) / (TYPES * SLOTS))


LOGGING_MARGINALS = _marginals(LOGGING, LOGGING)
TARGET_MARGINALS = _marginals(TARGET, TARGET)
ONLINE = _click_rate(TARGET_MARGINALS)  # the target filling its own pages
HYBRID = _click_rate(_marginals(LOGGING, TARGET))  # the target at each slot, below the logged slots
LOGGED = _click_rate(LOGGING_MARGINALS)


def _pages(top: np.ndarray, u_explore: np.ndarray, u_pick: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``epsilon_greedy`` for many requests at once: (requests, slots) items and propensities."""
    items = np.empty(u_pick.shape, np.int64)
    propensity = np.empty(u_pick.shape)
    for k in range(SLOTS):
        greedy = _greedy(top, items[:, :k])
        left = POOL - k
        pick = np.minimum((u_pick[:, k] * left).astype(np.int64), left - 1)
        for shown in np.sort(items[:, :k], axis=1).T:  # the pick-th item not yet shown, as epsilon_greedy counts
            pick += shown <= pick
        items[:, k] = np.where(u_explore[:, k] < EPSILON, pick, greedy)
        propensity[:, k] = EPSILON / left + (1.0 - EPSILON) * (items[:, k] == greedy)
    return items, propensity


def _target_given_logged_prefix(top: np.ndarray, items: np.ndarray) -> np.ndarray:
    """(requests, slots): the target's probability of each logged item given the logged items above it."""
    return np.column_stack(
        [EPSILON / (POOL - k) + (1.0 - EPSILON) * (items[:, k] == _greedy(top, items[:, :k])) for k in range(SLOTS)]
    )


def _replicate(seed: int) -> tuple[OffPolicyEstimate, OffPolicyEstimate]:
    """One day of logs: estimates with conditional (server-logged) and with marginal probabilities."""
    rng = np.random.default_rng(seed)
    kind = rng.integers(TYPES, size=REQUESTS)
    u = rng.random((REQUESTS, SLOTS, 3))
    items, propensity = _pages(LOGGING[kind, :SLOTS], u[:, :, 0], u[:, :, 1])
    slot = np.arange(SLOTS)
    clicks = u[:, :, 2] < CLICK[kind[:, None], items, slot]
    requests = np.repeat(np.arange(REQUESTS), SLOTS)
    conditional = estimate(
        clicks.ravel(), propensity.ravel(), _target_given_logged_prefix(TARGET[kind, :SLOTS], items).ravel(), requests
    )
    marginal = estimate(
        clicks.ravel(),
        LOGGING_MARGINALS[kind[:, None], slot, items].ravel(),
        TARGET_MARGINALS[kind[:, None], slot, items].ravel(),
        requests,
    )
    return conditional, marginal


@pytest.fixture(scope="module")
def replications() -> list[tuple[OffPolicyEstimate, OffPolicyEstimate]]:
    return [_replicate(seed) for seed in range(REPLICATIONS)]


def _coverage(intervals: list[tuple[float, float]], truth: float) -> float:
    return float(np.mean([lo <= truth <= hi for lo, hi in intervals]))


# ---------------------------------------------------------------- the world is what it claims


def test_numpy_pages_are_epsilon_greedy_slate_for_slate():
    rng = np.random.default_rng(3)
    kind, u = rng.integers(TYPES, size=2000), rng.random((2000, SLOTS, 2))
    items, propensity = _pages(LOGGING[kind, :SLOTS], u[:, :, 0], u[:, :, 1])
    for r in range(2000):
        slots = epsilon_greedy([LOGGING[kind[r]]] * SLOTS, POOL, EPSILON, u[r, :, 0], u[r, :, 1])
        assert [s.item for s in slots] == items[r].tolist()
        assert [s.propensity for s in slots] == pytest.approx(propensity[r].tolist(), abs=1e-12)


def test_exact_online_value_matches_a_monte_carlo_run_of_the_target():
    rng = np.random.default_rng(4)
    kind, u = rng.integers(TYPES, size=400_000), rng.random((400_000, SLOTS, 2))
    items, _ = _pages(TARGET[kind, :SLOTS], u[:, :, 0], u[:, :, 1])
    q = CLICK[kind[:, None], items, np.arange(SLOTS)].mean(axis=1)  # expected clicks per impression, per page
    assert abs(q.mean() - ONLINE) < 4 * q.std() / math.sqrt(len(q))
    assert LOGGING_MARGINALS.sum(axis=2) == pytest.approx(np.ones((TYPES, SLOTS)))


# ---------------------------------------------------------------- coverage in the synthetic world


def test_intervals_cover_the_value_they_estimate(replications):
    conditional = [c for c, _ in replications]
    ips = _coverage([e.ips_ci for e in conditional], HYBRID)
    snips = _coverage([e.snips_ci for e in conditional], HYBRID)
    logged = _coverage([e.logged_ci for e in conditional], LOGGED)
    ess = np.mean([e.ess for e in conditional])
    print(
        f"\nconditional weights, {REPLICATIONS} replications of {REQUESTS * SLOTS} impressions: coverage of the "
        f"{HYBRID:.4f} hybrid value IPS {ips:.3f}, SNIPS {snips:.3f}; logged rate {LOGGED:.4f} covered {logged:.3f}; "
        f"mean ESS {ess:.0f}, max weight {max(e.max_weight for e in conditional):.0f}"
    )
    assert ips >= 0.9
    assert snips >= 0.9
    assert logged >= 0.9
    assert np.mean([e.mean_weight for e in conditional]) == pytest.approx(1.0, abs=0.01)


def test_marginal_probabilities_cover_the_online_value(replications):
    marginal = [m for _, m in replications]
    ips = _coverage([e.ips_ci for e in marginal], ONLINE)
    snips = _coverage([e.snips_ci for e in marginal], ONLINE)
    ess = np.mean([e.ess for e in marginal])
    print(
        f"\nmarginal weights: coverage of the {ONLINE:.4f} online value IPS {ips:.3f}, SNIPS {snips:.3f}; ESS {ess:.0f}"
    )
    assert ips >= 0.9
    assert snips >= 0.9


def test_conditioning_on_the_logged_prefix_is_optimistic_and_small_here(replications):
    # The target's favourite item, when the logging policy did not show it above, is
    # credited again lower down, so the hybrid value is above the online one. The gap
    # does not shrink with more logs: here it is a quarter of the interval's half-width,
    # with ten times the logs it would be most of it.
    agree = np.mean(LOGGING[:, 0] == TARGET[:, 0])
    half_width = np.median([(e.snips_ci[1] - e.snips_ci[0]) / 2 for e, _ in replications])
    online = _coverage([e.snips_ci for e, _ in replications], ONLINE)
    print(
        f"\nhybrid - online = {HYBRID - ONLINE:+.4f} ({HYBRID / ONLINE - 1:+.1%}) with first greedy items agreeing "
        f"for {agree:.0%} of types; SNIPS half-width {half_width:.4f}; conditional SNIPS covers the online value {online:.3f}"
    )
    assert 0 < HYBRID - ONLINE < 0.05 * ONLINE
    assert HYBRID - ONLINE < 0.3 * half_width
    assert online >= 0.9


# ---------------------------------------------------------------- exact values on tiny data


def test_hand_computed_estimates_and_intervals():
    # request a: (c=1, mu=0.5, pi=1) and (c=0, mu=1, pi=0.5); request b: (c=1, mu=0.25, pi=0.5)
    # w = 2, 0.5, 2; w*c = 2, 0, 2. Per request: Y = (2, 2), W = (2.5, 2), N = (2, 1), C = (1, 1)
    e = estimate([1, 0, 1], [0.5, 1.0, 0.25], [1.0, 0.5, 0.5], ["a", "a", "b"])
    z = 1.959963984540054
    assert (e.impressions, e.requests) == (3, 2)
    assert e.ips == pytest.approx(4 / 3)
    assert e.snips == pytest.approx(4 / 4.5)
    assert e.logged_rate == pytest.approx(2 / 3)
    # residuals A_r - estimate * B_r, variance R / (R - 1) * sum(residual^2) / (sum B)^2 with R = 2
    ips_se = math.sqrt(2 * ((2 - 4 / 3 * 2) ** 2 + (2 - 4 / 3) ** 2)) / 3
    snips_se = math.sqrt(2 * ((2 - 8 / 9 * 2.5) ** 2 + (2 - 8 / 9 * 2) ** 2)) / 4.5
    logged_se = math.sqrt(2 * ((1 - 2 / 3 * 2) ** 2 + (1 - 2 / 3) ** 2)) / 3
    assert e.ips_ci == pytest.approx((4 / 3 - z * ips_se, 4 / 3 + z * ips_se))
    assert e.snips_ci == pytest.approx((8 / 9 - z * snips_se, 8 / 9 + z * snips_se))
    assert e.logged_ci == pytest.approx((2 / 3 - z * logged_se, 2 / 3 + z * logged_se))
    assert e.ess == pytest.approx(4.5**2 / 8.25)
    assert (e.mean_weight, e.max_weight, e.zero_weight_share) == (pytest.approx(1.5), 2.0, 0.0)
    narrower = estimate([1, 0, 1], [0.5, 1.0, 0.25], [1.0, 0.5, 0.5], ["a", "a", "b"], confidence=0.9)
    assert narrower.ips_ci[1] - narrower.ips == pytest.approx(1.6448536269514722 * ips_se)


def test_target_equal_to_logging_weighs_every_impression_one():
    rng = np.random.default_rng(5)
    mu = rng.uniform(0.01, 1.0, 300)
    clicks = rng.random(300) < 0.2
    requests = np.repeat(np.arange(100), 3)
    e = estimate(clicks, mu, mu, requests)
    assert e.ips == pytest.approx(e.logged_rate) and e.snips == pytest.approx(e.logged_rate)
    assert e.ips_ci == pytest.approx(e.logged_ci) and e.snips_ci == pytest.approx(e.logged_ci)
    assert (e.ess, e.mean_weight, e.max_weight, e.zero_weight_share) == (pytest.approx(300), 1.0, 1.0, 0.0)


def test_target_that_never_shows_the_logged_items():
    e = estimate([1, 0, 1, 1], [0.5, 0.9, 0.1, 0.2], [0, 0, 0, 0], [1, 1, 2, 3])
    assert (e.ips, e.ips_ci, e.zero_weight_share) == (0.0, (0.0, 0.0), 1.0)
    assert e.ess == e.mean_weight == e.max_weight == 0.0
    assert math.isnan(e.snips) and all(math.isnan(x) for x in e.snips_ci)
    d = json.loads(json.dumps(e.to_dict(), allow_nan=False))
    assert d["snips"] is None and d["snips_ci"] == [None, None]
    assert d["ips_ci"] == [0.0, 0.0] and d["logged_rate"] == 0.75 and d["impressions"] == 4


def test_one_request_has_no_interval():
    e = estimate([1, 0], [0.5, 0.5], [0.5, 0.25], ["r", "r"])
    assert e.ips == pytest.approx(0.5) and e.snips == pytest.approx(2 / 3)
    assert all(math.isnan(x) for x in (*e.ips_ci, *e.snips_ci, *e.logged_ci))
    assert e.to_dict()["ips_ci"] == [None, None]


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (([], [], [], []), {}, "clicks must be non-empty, got 0 rows"),
        (([[1]], [0.5], [0.5], [1]), {}, r"clicks must be 1-D, got shape \(1, 1\)"),
        (([1, 0], [0.5], [0.5, 0.5], [1, 1]), {}, r"logging_propensity has 1 rows, expected 2"),
        (([1], [0.5], [0.5, 0.5], [1]), {}, r"target_probability has 2 rows, expected 1"),
        (([1], [0.5], [0.5], [1, 2]), {}, r"requests has 2 rows, expected 1"),
        (([2], [0.5], [0.5], [1]), {}, r"clicks must be in \[0, 1\], got 2.0 at row 0"),
        (([1, 0], [0.5, 0.0], [0.5, 0.5], [1, 1]), {}, r"logging_propensity must be in \(0, 1\], got 0.0 at row 1"),
        (([1], [1.5], [0.5], [1]), {}, r"logging_propensity must be in \(0, 1\], got 1.5"),
        (([1], [0.5], [-0.1], [1]), {}, r"target_probability must be in \[0, 1\], got -0.1"),
        (([1], [0.5], [np.nan], [1]), {}, r"target_probability must not be NaN, got 1 NaN value\(s\)"),
        (([np.nan], [0.5], [0.5], [1]), {}, r"clicks must not be NaN"),
        ((["yes"], [0.5], [0.5], [1]), {}, "clicks must be numeric, got dtype <U3"),
        (([1, 1], [0.5, 0.5], [0.5, 0.5], np.array(["a", None], dtype=object)), {}, "requests must be sortable ids"),
        (([1], [0.5], [0.5], [1]), {"confidence": 1.0}, r"confidence must be a number in \(0, 1\), got 1.0"),
        (([1], [0.5], [0.5], [1]), {"confidence": 0}, r"confidence must be a number in \(0, 1\), got 0"),
    ],
)
def test_bad_inputs_name_the_argument(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        estimate(*args, **kwargs)

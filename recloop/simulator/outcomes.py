"""How well a week's pages did: click rates per serving group, and the best any policy could expect.

``Simulation.run_week`` adds both to each week's summary (``simulation.json``), so
the closed loop (``recloop demo``) can show the model, the server's online holdout
and the oracle side by side, measured on the same simulated weeks. The groups come
from each page's ``model_version`` as a served policy reports it; the strings are
the server's, matched here (``served.HOLDOUT_VERSION``, ``served.FALLBACK_VERSION``)
because the simulator never imports the server.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from recloop.simulator import behaviour
from recloop.simulator.policy import HeuristicPolicy
from recloop.simulator.served import FALLBACK_VERSION, HOLDOUT_VERSION
from recloop.simulator.traffic import Visits
from recloop.simulator.world import World

ORACLE_STREAM = 101  # random stream of the oracle's request sample (world.py's streams are 1-8)
ORACLE_SAMPLE = 2_000  # requests the oracle scores per week
_CHUNK_PAIRS = 100_000  # (request, item) pairs scored at once: bounds memory; measured faster than 250k+
_Z95 = 1.959963984540054

_GROUPS = {HOLDOUT_VERSION: "holdout", FALLBACK_VERSION: "fallback", HeuristicPolicy.version: "heuristic"}


def policy_group(model_version: str) -> str:
    """The group of a page: ``heuristic`` (the bootstrap policy), ``holdout`` (the server's online holdout),
    ``fallback`` (the server without a working model) or ``model`` (any model version)."""
    return _GROUPS.get(model_version, "model")


def by_policy(model_version: list[str], click: np.ndarray, p_click: np.ndarray) -> dict[str, dict[str, Any]]:
    """Click statistics of each group of pages that served this week.

    Args:
      model_version: per request, who served its page.
      click: (requests, slots) bool, the realised clicks.
      p_click: (requests, slots), each impression's true click probability (position bias included).

    Returns:
      ``{group: {requests, impressions, clicks, click_rate, expected_click_rate, click_rate_ci95}}``,
      groups in name order. ``expected_click_rate`` is the mean ``p_click``: the noise-free rate of these
      very impressions. ``click_rate_ci95`` is a 95% normal interval of the realised rate, clustered by
      request (the variance of per-request click counts, so members' differences count; a binomial interval
      would be too narrow), None with fewer than two requests.

    Raises:
      ValueError: when the shapes do not match (one version per request, one probability per impression).
    """
    click, p_click = np.asarray(click, dtype=bool), np.asarray(p_click, dtype=float)
    if click.ndim != 2 or p_click.shape != click.shape or len(model_version) != len(click):
        raise ValueError(f"by_policy expects one model_version per request and (requests, slots) clicks and "
                         f"p_click, got {len(model_version)} versions, click {click.shape}, p_click {p_click.shape}")
    groups = np.array([policy_group(v) for v in model_version])
    out: dict[str, dict[str, Any]] = {}
    for name in sorted(set(groups.tolist())):
        rows = groups == name
        per_request = click[rows].sum(axis=1)
        n, impressions, clicks = int(rows.sum()), int(click[rows].size), int(per_request.sum())
        rate = clicks / impressions
        out[name] = {"requests": n, "impressions": impressions, "clicks": clicks, "click_rate": rate,
                     "expected_click_rate": float(p_click[rows].mean()),
                     "click_rate_ci95": _clustered_ci(per_request, click.shape[1], rate)}
    return out


def _clustered_ci(per_request: np.ndarray, slots: int, rate: float) -> list[float] | None:
    """Cluster-robust (by request) 95% interval of a ratio of clicks to impressions, clipped to [0, 1]."""
    n = len(per_request)
    if n < 2:
        return None
    residual = per_request - rate * slots
    half = _Z95 * np.sqrt(n / (n - 1) * np.sum(residual**2)) / (n * slots)
    return [max(0.0, rate - half), min(1.0, rate + half)]


def oracle_click_rate(world: World, v: Visits, slots: int, rng: np.random.Generator,
                      taste_shift: bool = False, sample: int = ORACLE_SAMPLE) -> float:
    """The expected click rate of the oracle's pages on this week's requests: the best any policy can do.

    For a sample of at most ``sample`` of the week's requests (drawn from ``rng``), every item released by
    the request's day is scored with ``behaviour.relevance``, the function the week's clicks are sampled
    from (with the week's taste shift); the ``slots`` most relevant fill the page in order, and the rate is
    the mean of ``examine(position) * sigmoid(relevance)`` over slots and requests. Row filters (duration,
    novelty, the member's usual) are ignored, so no page of rows can beat it in expectation.

    Args:
      world: the world advanced to this week.
      v: the week's visits (true context, before any serving bug).
      slots: impressions per page this week.
      rng: the sample's random stream (the same seed gives the same sample).
      taste_shift: whether the taste-shift drift is on this week.
      sample: requests scored at most.

    Returns:
      The expected clicks per impression, 0.0 for a week without requests.
    """
    n = len(v)
    if n == 0:
        return 0.0
    pick = np.sort(rng.choice(n, min(n, sample), replace=False))
    n_items = len(world.items.release)
    examine = behaviour.examine(np.arange(slots))
    chunk = max(1, _CHUNK_PAIRS // n_items)
    page_rates = []
    for start in range(0, len(pick), chunk):
        r = pick[start : start + chunk]
        rep = lambda a, r=r: np.repeat(a[r], n_items)
        item = np.tile(np.arange(n_items), len(r))
        rel = behaviour.relevance(world, rep(v.member), item, rep(v.hour), rep(v.dow), rep(v.platform),
                                  rep(v.day), taste_shift=taste_shift).relevance.reshape(len(r), n_items)
        rel[world.items.release[None, :] > v.day[r][:, None]] = -np.inf  # not released yet on that day
        k = min(slots, n_items)
        top = -np.sort(-np.partition(rel, n_items - k, axis=1)[:, n_items - k :], axis=1)
        p = examine[:k] / (1.0 + np.exp(-top))  # an unfilled slot (too few releases) adds nothing
        page_rates.append(p.sum(axis=1) / slots)
    return float(np.concatenate(page_rates).mean())

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


def by_policy(model_version: list[str], click: np.ndarray, p_click: np.ndarray,
              members: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Click statistics of each group of pages that served this week.

    Args:
      model_version: per request, who served its page.
      click: (requests, slots) bool, the realised clicks.
      p_click: (requests, slots), each impression's true click probability (position bias included).
      members: per request, the member who made it: the clusters of the intervals (None: each request).

    Returns:
      ``{group: {requests, members, impressions, clicks, click_rate, click_rate_se, click_rate_ci95,
      expected_click_rate}}``, groups in name order. ``expected_click_rate`` is the mean ``p_click``: the
      noise-free rate of these very impressions. ``click_rate_se`` and the 95% normal interval
      ``click_rate_ci95`` are clustered by member (a member's requests share their taste: a binomial or a
      per-request interval would be too narrow), None with fewer than two clusters.

    Raises:
      ValueError: when the shapes do not match (one version per request, one probability per impression).
    """
    click, p_click = np.asarray(click, dtype=bool), np.asarray(p_click, dtype=float)
    if click.ndim != 2 or p_click.shape != click.shape or len(model_version) != len(click):
        raise ValueError(f"by_policy expects one model_version per request and (requests, slots) clicks and "
                         f"p_click, got {len(model_version)} versions, click {click.shape}, p_click {p_click.shape}")
    groups = np.array([policy_group(v) for v in model_version])
    cluster = np.unique(np.asarray(members if members is not None else np.arange(len(click))),
                        return_inverse=True)[1].reshape(-1)
    out: dict[str, dict[str, Any]] = {}
    for name in sorted(set(groups.tolist())):
        rows = groups == name
        per_request = click[rows].sum(axis=1)
        n, impressions, clicks = int(rows.sum()), int(click[rows].size), int(per_request.sum())
        rate = clicks / impressions
        ids, within = np.unique(cluster[rows], return_inverse=True)
        se = _clustered_se(np.bincount(within, weights=per_request), np.bincount(within) * click.shape[1], rate)
        out[name] = {"requests": n, "members": len(ids), "impressions": impressions, "clicks": clicks,
                     "click_rate": rate, "click_rate_se": se,
                     "click_rate_ci95": None if se is None else [max(0.0, rate - _Z95 * se),
                                                                 min(1.0, rate + _Z95 * se)],
                     "expected_click_rate": float(p_click[rows].mean())}
    return out


def _clustered_se(clicks: np.ndarray, impressions: np.ndarray, rate: float) -> float | None:
    """Cluster-robust standard error of a ratio of clicks to impressions (one entry per cluster)."""
    n = len(clicks)
    if n < 2:
        return None
    residual = clicks - rate * impressions
    return float(np.sqrt(n / (n - 1) * np.sum(residual**2)) / impressions.sum())


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

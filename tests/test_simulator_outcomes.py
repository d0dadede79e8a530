"""Tests of recloop.simulator.outcomes: click rates per serving group and the oracle's expected rate."""

from __future__ import annotations

import json
from pathlib import Path

import recloop  # noqa: F401  (first: sets the Keras switch before anything imports TensorFlow)

# isort: split
import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import START, SimWorld

from recloop.simulator import Simulation, behaviour, outcomes
from recloop.simulator.outcomes import by_policy, oracle_click_rate, policy_group
from recloop.simulator.traffic import visits

SLOTS = 10


def worlds(clean_world: SimWorld, base_world: SimWorld) -> list[dict]:
    return [w for world in (clean_world, base_world) for w in world.manifest["weeks"]]


# ---------------------------------------------------------------- by_policy


def test_groups_follow_the_server_versions() -> None:
    assert [policy_group(v) for v in ("heuristic-v1", "heuristic-holdout", "heuristic-fallback",
                                      "20260118-1a2b3c")] == ["heuristic", "holdout", "fallback", "model"]


def test_by_policy_counts_and_clustered_interval_by_hand() -> None:
    versions = ["v7", "heuristic-holdout", "v7", "v7", "v7", "v7", "v7"]
    click = np.array([[1, 0], [1, 1], [0, 1], [1, 0], [0, 0], [1, 1]] + [[0, 1]], dtype=bool)
    p = np.full(click.shape, 0.25)
    p[1] = 0.9
    out = by_policy(versions, click, p)
    assert list(out) == ["holdout", "model"]
    model = out["model"]
    assert (model["requests"], model["impressions"], model["clicks"]) == (6, 12, 6)
    assert model["click_rate"] == 0.5 and model["expected_click_rate"] == pytest.approx(0.25)
    # per-request clicks 1, 1, 1, 0, 2, 1 around 0.5 * 2 = 1: residuals sum of squares 2; var = 6/5 * 2 / 12^2
    half = 1.959963984540054 * np.sqrt(6 / 5 * 2) / 12
    assert model["click_rate_ci95"] == pytest.approx([0.5 - half, 0.5 + half])
    assert out["holdout"]["click_rate"] == 1.0 and out["holdout"]["click_rate_ci95"] is None  # one request
    with pytest.raises(ValueError, match="one model_version per request.*got 3 versions"):
        by_policy(versions[:3], click, p)
    # clustered by member: member a made requests 0 and 5 (3 clicks in 4 impressions), b the other four (3 in 8):
    # residuals 3 - 0.5 * 4 = 1 and 3 - 0.5 * 8 = -1
    members = ["a", "h", "b", "b", "b", "a", "b"]
    by_member = by_policy(versions, click, p, members)["model"]
    assert by_member["members"] == 2 and by_member["click_rate"] == 0.5
    assert by_member["click_rate_se"] == pytest.approx(np.sqrt(2 / 1 * (1 + 1)) / 12)


def test_by_policy_reconciles_with_the_week_and_its_truth(clean_world: SimWorld, base_world: SimWorld) -> None:
    for world in (clean_world, base_world):
        for w in world.manifest["weeks"]:
            groups = w["by_policy"]
            assert list(groups) == ["heuristic"], "the bootstrap policy is one group"
            assert sum(g["requests"] for g in groups.values()) == w["requests"]
            assert sum(g["impressions"] for g in groups.values()) == w["impressions"]
            assert sum(g["clicks"] for g in groups.values()) == w["events"]["click"]
            assert groups["heuristic"]["click_rate"] == w["click_rate"]
            truth = pq.read_table(Path(world.root, "truth", "impressions", f"week-{w['week']:05d}.parquet"))
            assert groups["heuristic"]["expected_click_rate"] == pytest.approx(
                np.mean(truth["p_click"].to_numpy()), rel=1e-12)


def test_realised_click_rate_is_within_its_interval_of_the_expected_rate(clean_world: SimWorld,
                                                                         base_world: SimWorld) -> None:
    weeks = worlds(clean_world, base_world)
    for w in weeks:  # 2,000 requests x 10 slots a week
        g = w["by_policy"]["heuristic"]
        low, high = g["click_rate_ci95"]
        assert low < g["expected_click_rate"] < high, (w["week"], g)
        # about +-2 standard errors of 20k impressions of ~1,000 members (clustered by member: wider than binomial)
        assert 0.002 < high - low < 0.03, (w["week"], g)


# ---------------------------------------------------------------- the oracle


def test_the_oracle_beats_the_heuristic_and_is_bounded_by_examination(clean_world: SimWorld,
                                                                      base_world: SimWorld) -> None:
    ceiling = behaviour.examine(np.arange(SLOTS)).mean()  # every examined slot clicked
    for w in worlds(clean_world, base_world):
        assert w["by_policy"]["heuristic"]["expected_click_rate"] < w["oracle_click_rate"] <= ceiling, w


@pytest.fixture(scope="module")
def week0(tmp_path_factory: pytest.TempPathFactory):
    sim = Simulation(out=str(tmp_path_factory.mktemp("oracle")), start=START, scale="tiny", seed=4)
    sim.world.advance(0)
    return sim.world, visits(sim.world, 0)


def brute_force(world, v, r: int, slots: int, shift: bool = False, unreleased: bool = False) -> float:
    """The oracle page of one request, item by item: the released items by true click probability."""
    released = np.flatnonzero((world.items.release <= v.day[r]) | unreleased)
    n = len(released)
    rel = behaviour.relevance(world, np.full(n, v.member[r]), released, np.full(n, v.hour[r]),
                              np.full(n, v.dow[r]), np.full(n, v.platform[r]), np.full(n, v.day[r]),
                              taste_shift=shift).relevance
    best = np.sort(rel)[::-1][:slots]
    return float(np.sum(behaviour.examine(np.arange(len(best))) / (1 + np.exp(-best))) / slots)


def test_the_oracle_equals_a_brute_force_page_per_request(week0, monkeypatch) -> None:
    world, v = week0
    monkeypatch.setattr(outcomes, "_CHUNK_PAIRS", 1_000)  # several chunks of 3 requests
    sample = np.sort(np.random.default_rng(9).choice(len(v), 20, replace=False))
    for shift in (False, True):
        got = oracle_click_rate(world, v, SLOTS, np.random.default_rng(9), taste_shift=shift, sample=20)
        expected = np.mean([brute_force(world, v, r, SLOTS, shift) for r in sample])
        assert got == pytest.approx(expected, rel=1e-12)


def test_the_oracle_shows_only_released_items(week0, monkeypatch) -> None:
    world, v = week0
    release = np.full(len(world.items.release), v.day.max() + 1)
    release[:4] = v.day.min()  # four items out by the first request, the rest after the last
    monkeypatch.setattr(world.items, "release", release)
    got = oracle_click_rate(world, v, SLOTS, np.random.default_rng(3), sample=50)
    assert got < behaviour.examine(np.arange(4)).sum() / SLOTS, "only four slots can be filled"
    sample = np.sort(np.random.default_rng(3).choice(len(v), 50, replace=False))
    assert got == pytest.approx(np.mean([brute_force(world, v, r, SLOTS) for r in sample]), rel=1e-12)
    assert got < np.mean([brute_force(world, v, r, SLOTS, unreleased=True) for r in sample])


def test_the_oracle_sample_is_deterministic_and_bounded(week0) -> None:
    world, v = week0
    a = oracle_click_rate(world, v, 12, np.random.default_rng(1), sample=300)
    assert a == oracle_click_rate(world, v, 12, np.random.default_rng(1), sample=300)
    assert a != oracle_click_rate(world, v, 12, np.random.default_rng(2), sample=300)
    # more slots: the extra ones are lower down the page, so the rate per slot falls
    assert oracle_click_rate(world, v, 20, np.random.default_rng(1), sample=300) < a


def test_the_week_summary_is_in_simulation_json(clean_world: SimWorld) -> None:
    on_disk = json.loads(Path(clean_world.root, "simulation.json").read_text())
    for w in on_disk["weeks"]:
        assert set(w["by_policy"]["heuristic"]) == {"requests", "members", "impressions", "clicks", "click_rate",
                                                    "click_rate_se", "expected_click_rate", "click_rate_ci95"}
        assert isinstance(w["oracle_click_rate"], float)

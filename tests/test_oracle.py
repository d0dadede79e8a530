"""Tests of recloop.simulator.oracle: the hidden relevance, read back from truth/, equals what the simulation used."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import recloop  # noqa: F401  (first: sets the Keras switch before anything imports TensorFlow)

# isort: split
import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import BASE_SEED, SimWorld, read_requests

from recloop.simulator import behaviour
from recloop.simulator.oracle import Oracle, member_id, parse_item_id, parse_member_id

TOL = 1e-9


@pytest.fixture(scope="module")
def oracle(clean_world: SimWorld) -> Oracle:
    return Oracle.load(clean_world.root)


def _impressions(world: SimWorld) -> dict[str, np.ndarray]:
    """Every logged impression with its request's member and context, as aligned arrays."""
    rows = [(r["request_id"], r["member"]["member_id"], im["item_id"], r["context"]["hour_of_day"],
             r["context"]["day_of_week"], r["context"]["platform"], r["ts"].date().toordinal())
            for r in read_requests(world.root) for im in r["impressions"]]
    names = ("request_id", "member_id", "item_id", "hour", "dow", "platform", "day")
    return {name: np.array(column) for name, column in zip(names, zip(*rows, strict=True), strict=True)}


def _recomputed(oracle: Oracle, imp: dict[str, np.ndarray]) -> np.ndarray:
    return oracle.relevance(imp["member_id"], imp["item_id"], imp["hour"], imp["dow"], imp["platform"], imp["day"])


def test_logged_impressions_score_what_the_simulation_used(oracle: Oracle, clean_world: SimWorld) -> None:
    imp = _impressions(clean_world)
    logged = oracle.impression_relevance(imp["request_id"], imp["item_id"])
    assert not np.isnan(logged).any(), "every logged impression is in truth/impressions"
    np.testing.assert_allclose(_recomputed(oracle, imp), logged, rtol=0, atol=TOL)
    truth = pq.read_table(f"{clean_world.root}/truth/impressions/week-00001.parquet").to_pydict()
    np.testing.assert_array_equal(oracle.impression_relevance(truth["request_id"], truth["item_id"]),
                                  truth["relevance"])


@pytest.mark.parametrize("spec", ["taste-shift@1", "platform-rename@1"])
def test_drifts_that_reach_behaviour_are_honoured(make_world, spec: str) -> None:
    world = make_world(BASE_SEED, 2, drifts=(spec,))  # the drift tests' world: shared in a full session
    oracle = Oracle.load(world.root)
    imp = _impressions(world)
    logged = oracle.impression_relevance(imp["request_id"], imp["item_id"])
    np.testing.assert_allclose(_recomputed(oracle, imp), logged, rtol=0, atol=TOL)
    week1 = imp["day"] >= world.week_start(1).toordinal()
    if spec.startswith("taste-shift"):
        assert oracle.taste_shift(imp["day"]).tolist() == week1.tolist()
        unshifted = behaviour.relevance(oracle.world, oracle.member_index(imp["member_id"]),
                                        oracle.item_index(imp["item_id"]), imp["hour"], imp["dow"],
                                        np.zeros(len(week1), dtype=int), imp["day"]).relevance
        assert np.abs(unshifted - logged)[week1].max() > 0.1, "the test would pass with the shift ignored"
    else:
        assert "Android" in set(imp["platform"][week1]) and "android" not in set(imp["platform"][week1])


def test_catalog_scores_are_relevance_for_every_item(oracle: Oracle, clean_world: SimWorld) -> None:
    imp = _impressions(clean_world)
    q = np.arange(0, len(imp["request_id"]), 997)[:7]  # a few queries, chunked unevenly
    items = oracle.world.item_ids()
    days = [dt.date.fromordinal(int(d)) for d in imp["day"][q]]  # dates work as well as ordinals
    scores = oracle.catalog_scores(imp["member_id"][q], imp["hour"][q], imp["dow"][q], imp["platform"][q],
                                   days, items, chunk=3)
    assert scores.shape == (len(q), oracle.n_items)
    for row, k in enumerate(q):
        n = len(items)
        expected = oracle.relevance([imp["member_id"][k]] * n, items, [imp["hour"][k]] * n, [imp["dow"][k]] * n,
                                    [imp["platform"][k]] * n, np.full(n, imp["day"][k]))
        np.testing.assert_allclose(scores[row], expected, rtol=0, atol=TOL)
        shown = items.index(imp["item_id"][k])
        assert abs(scores[row, shown] - oracle.impression_relevance([imp["request_id"][k]], [imp["item_id"][k]])[0]
                   ) < TOL


def test_unknown_ids_and_values_are_named(oracle: Oracle) -> None:
    ok = {"hour_of_day": [8], "day_of_week": [0], "platform": ["ios"], "day": [dt.date(2026, 1, 5)]}
    assert oracle.relevance(["m0000001"], ["i000002"], **ok).shape == (1,)
    too_far = member_id(oracle.n_members)
    for members, items, name in ((["m0000001"], ["i999999"], "i999999"), ([too_far], ["i000002"], too_far),
                                 (["m1"], ["i000002"], "m1"), (["m0000001"], ["x000002"], "x000002")):
        with pytest.raises(KeyError, match=name):
            oracle.relevance(members, items, **ok)
    with pytest.raises(ValueError, match="blackberry"):
        oracle.relevance(["m0000001"], ["i000002"], **{**ok, "platform": ["blackberry"]})
    with pytest.raises(ValueError, match="hour_of_day"):
        oracle.relevance(["m0000001"], ["i000002"], **{**ok, "hour_of_day": [24]})
    with pytest.raises(ValueError, match="2 member ids but 1 item ids"):
        oracle.relevance(["m0000001", "m0000002"], ["i000002"], **ok)
    assert np.isnan(oracle.impression_relevance(["r7-000-0000000", "nope"], ["i999999", "i000001"])).all()
    assert parse_member_id("m0000123") == 123 and parse_item_id("i000123") == 123
    with pytest.raises(ValueError, match="i123"):
        parse_item_id("i123")


def test_load_names_the_missing_file(tmp_path: Path, clean_world: SimWorld) -> None:
    with pytest.raises(FileNotFoundError, match="simulation.json"):
        Oracle.load(str(tmp_path))
    (tmp_path / "simulation.json").write_bytes(Path(clean_world.root, "simulation.json").read_bytes())
    with pytest.raises(FileNotFoundError, match=r"truth/world\.npz"):
        Oracle.load(str(tmp_path))
    again = Oracle.load(f"file://{clean_world.root}")  # any fsspec path
    assert again.world.start == dt.date(2026, 1, 5) and again.n_items == Oracle.load(clean_world.root).n_items

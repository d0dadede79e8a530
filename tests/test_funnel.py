"""The funnel over the session's tiny trained model: retrieval -> ranking -> rows, batched."""

from __future__ import annotations

import datetime as dt
import time

import numpy as np
import pytest

from recloop.features.catalog import item_columns, read_items, snapshot
from recloop.serving.funnel import Query, load_version, recommend
from recloop.serving.registry import read_card
from recloop.serving.rows import RowsConfig

DAY = dt.date(2026, 1, 19)
NEW_ITEM = {"item_id": "i900000", "category": "yoga", "creator": "c00001", "duration_min": 10.0, "language": "en",
            "release_date": "2026-01-19"}


@pytest.fixture(scope="module")
def version(tiny_model, clean_world):
    feed = snapshot(clean_world.root, DAY)
    assert feed and feed.endswith("dt=2026-01-12/items.jsonl.gz")
    return load_version(tiny_model, item_columns([*read_items(feed), NEW_ITEM]), DAY)


def _query(request_id: str, member_id: str = "m0000001", platform: str = "ios", **member) -> Query:
    return Query(request_id=request_id, member_id=member_id,
                 member={"tenure_days": 40, "country": "US", "preferred_category": "yoga"} | member,
                 context={"hour_of_day": 7, "day_of_week": 0, "platform": platform}, day=DAY.toordinal(), k=3)


def test_a_page_has_every_row_scored_with_heads_and_propensities(version, tiny_model):
    assert version.version == read_card(tiny_model)["version"]
    search = version.search(DAY.toordinal())  # the items released by the day, embedded for it
    assert search.kind == "exact" and search.vectors.shape == (len(search.rows), 32)
    assert search.rows.tolist() == np.flatnonzero(version.catalog["release_day"] <= DAY.toordinal()).tolist()
    member = next(iter(version.profiles))  # a member with clicks: "for your usual" uses the profile
    [page] = recommend(version, [_query("r-1", member)], RowsConfig())
    assert [i.row for i in page.impressions] == ["for_your_usual"] * 3 + ["quick"] * 3 + ["something_new"] * 3 + \
        ["popular_now"] * 3
    shown = [i.index for i in page.impressions]
    assert len(set(shown)) == 12
    assert ((page.pool.score >= 0) & (page.pool.score <= 1)).all()
    for head in ("click", "complete", "like"):
        assert ((page.pool.heads[head] >= 0) & (page.pool.heads[head] <= 1)).all()
    assert all(0 < i.propensity <= 1 for i in page.impressions)
    profile = version.profiles[member]
    for i in page.impressions:
        if i.row == "for_your_usual" and not i.explored:
            assert page.pool.category[i.index] == profile.usual_category or \
                page.pool.creator[i.index] == profile.usual_creator
        if i.row == "quick" and not i.explored:
            assert page.pool.duration_min[i.index] <= 20


def test_batching_and_replay_give_the_same_pages(version):
    queries = [_query("r-a"), _query("r-b", "a-member-nobody-saw", country=None, tenure_days=None),
               _query("r-c", platform="a-new-platform")]
    together = recommend(version, queries, RowsConfig())
    alone = [recommend(version, [q], RowsConfig())[0] for q in queries]
    for a, b in zip(together, alone, strict=True):
        assert [i.index for i in a.impressions] == [i.index for i in b.impressions]
        np.testing.assert_allclose(a.pool.score, b.pool.score, rtol=1e-5)
    again = recommend(version, queries[:1], RowsConfig())[0]
    assert [(i.index, i.propensity) for i in again.impressions] == \
        [(i.index, i.propensity) for i in together[0].impressions]


def test_an_item_released_after_training_is_embedded_and_retrieved(version):
    new = int(np.flatnonzero(version.catalog["item_id"] == "i900000")[0])
    search = version.search(DAY.toordinal())
    assert np.abs(search.vectors[search.rows == new]).sum() > 0  # from its metadata: its id was never trained
    [page] = recommend(version, [_query("r-new")], RowsConfig(temperature=0.0, catalog_share=0.0))
    assert "i900000" in page.pool.item_id
    assert len(page.pool.item_id) >= version.candidates  # the retrieval pool, plus popular items


def test_one_request_runs_in_milliseconds(version):
    query = [_query("r-warm")]
    recommend(version, query, RowsConfig())  # trace once
    times = []
    for i in range(20):
        t0 = time.perf_counter()
        recommend(version, [_query(f"r-t{i}")], RowsConfig())
        times.append(time.perf_counter() - t0)
    assert np.median(times) < 0.05, f"median {np.median(times) * 1000:.1f} ms"

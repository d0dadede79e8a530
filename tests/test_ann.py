"""Retrieval's search at scale: a ScaNN index against exact search, and a new feed indexed off the request path."""

from __future__ import annotations

import datetime as dt
import shutil
import threading
import time

import numpy as np

from recloop.features.catalog import item_columns, read_items, snapshot
from recloop.features.logs import read_lines, write_lines
from recloop.serving import ann
from recloop.serving.clock import Clock
from recloop.serving.funnel import Query, load_version, recommend
from recloop.serving.rows import RowsConfig
from recloop.serving.service import Service
from recloop.serving.settings import ServeSettings

DAY = dt.date(2026, 1, 19)


def test_the_index_finds_what_exact_search_finds():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(300, 32))  # items cluster (by their metadata), ids spread them
    vectors = (centres[rng.integers(0, 300, 60_000)] + rng.normal(0, 0.3, (60_000, 32))).astype(np.float32)
    rows = np.arange(60_000) * 3 + 1  # catalog rows of the released items
    index = ann.build(rows, vectors, 200, min_items=50_000)
    exact = ann.build(rows, vectors, 200, min_items=10**9)
    assert (index.kind, exact.kind) == ("scann", "exact")
    queries = vectors[rng.choice(60_000, 100, replace=False)] + rng.normal(0, 0.1, (100, 32)).astype(np.float32)
    found, truth = index.top(queries, 200), exact.top(queries, 200)
    assert found.shape == truth.shape == (100, 200) and np.isin(found, rows).all()
    scores = queries @ vectors.T
    kth = np.sort(scores, axis=1)[:, -200]
    recall = np.mean([(scores[i, (found[i] - 1) // 3] >= kth[i] - 1e-5).mean() for i in range(100)])
    assert recall >= 0.95, recall
    # the tree's training is seeded: the same vectors give the same index, so a logged page can be replayed
    assert (ann.build(rows, vectors, 200, min_items=50_000).top(queries, 200) == found).all()
    assert len(set(truth[0].tolist())) == 200 and ann.build(rows[:5], vectors[:5], 200).top(queries, 200).shape == \
        (100, 5)


def _query(i: int, day: dt.date) -> Query:
    return Query(request_id=f"r{i}", member_id="m0000001", member={"country": "US"},
                 context={"hour_of_day": 8, "day_of_week": 0, "platform": "ios"}, day=day.toordinal(), k=4)


def test_a_version_serves_from_a_scann_index_over_a_large_catalog(tiny_model, clean_world):
    catalog = item_columns(read_items(snapshot(clean_world.root, DAY)))
    version = load_version(tiny_model, catalog, DAY, ann_min_items=10)
    assert version.search(DAY.toordinal()).kind == "scann"
    [page] = recommend(version, [_query(1, DAY)], RowsConfig())
    assert len(page.impressions) == 16 and len(page.pool.item_id) >= version.candidates
    exact = load_version(tiny_model, catalog, DAY)  # the same pool from exact search, but for near ties
    [same] = recommend(exact, [_query(1, DAY)], RowsConfig())
    assert len(set(page.pool.item_id) & set(same.pool.item_id)) >= 0.95 * len(same.pool.item_id)


def test_a_new_feed_is_indexed_while_the_old_one_keeps_serving(tiny_model, clean_world, tmp_path):
    root = tmp_path / "feed"
    shutil.copytree(f"{clean_world.root}/catalog", root / "catalog")
    service = Service(ServeSettings(model=tiny_model, catalog=str(root), ann_min_items=10), Clock())
    assert service.refresh()
    today = dt.datetime.now(dt.UTC).date()
    old = service.served
    service.prepare_ahead()  # tomorrow's index, built on this (the watcher's) thread
    assert (today + dt.timedelta(days=1)).toordinal() in old.version._searches
    # a feed for today with one more item: loading and indexing it must not hold requests up
    newest = snapshot(str(root), today)
    lines = list(read_lines(newest))
    lines.append(lines[0].replace(lines[0].split('"item_id":"')[1].split('"')[0], "i-released-today"))
    write_lines(str(root / f"catalog/dt={today}/items.jsonl.gz"), lines)
    loading = threading.Thread(target=service.refresh)
    started = time.perf_counter()
    loading.start()
    waits = []
    while loading.is_alive():
        t = time.perf_counter()
        [answer] = service.serve([_query(len(waits), today)], [dt.datetime.now(dt.UTC)])
        waits.append(time.perf_counter() - t)
        assert answer["fallback"] is None
    loading.join()
    load_s = time.perf_counter() - started
    assert service.served is not old and len(service.served.tables.catalog["item_id"]) == \
        len(old.tables.catalog["item_id"]) + 1
    assert len(waits) >= 3 and max(waits) < load_s / 2, (len(waits), max(waits), load_s)

"""The serving state in-process (no HTTP): what serves, model errors at request time, unreleased items."""

from __future__ import annotations

import datetime as dt

import pytest
from conftest import Lines

from recloop.features.records import parse_request
from recloop.serving.clock import Clock
from recloop.serving.funnel import Query
from recloop.serving.rows import RowsConfig
from recloop.serving.service import Service
from recloop.serving.settings import FALLBACK_VERSION, ServeSettings

NOW = dt.datetime(2026, 1, 19, 8, tzinfo=dt.UTC)


def _query(i: int, member: str = "m0000001") -> Query:
    return Query(request_id=f"r{i}", member_id=member, member={"country": "US"},
                 context={"hour_of_day": 8, "day_of_week": 0, "platform": "ios"}, day=NOW.date().toordinal(), k=4)


@pytest.fixture(scope="module")
def service(tiny_model, clean_world) -> Service:
    s = Service(ServeSettings(model=tiny_model, catalog=clean_world.root), Clock(simulated=True, start=NOW), Lines())
    assert s.refresh() and not s.refresh()  # the second check finds nothing new
    return s


def test_a_model_error_at_request_time_serves_the_fallback_and_logs_it(service, monkeypatch):
    def broken(_inputs):
        raise RuntimeError("ranker exploded")

    monkeypatch.setattr(service.served.version, "ranker", broken)
    [page] = service.serve([_query(1)], [NOW])
    assert (page["model_version"], page["fallback"]) == (FALLBACK_VERSION, "model_error")
    assert all(item["heads"] is None and 0 <= item["score"] <= 1 for row in page["rows"] for item in row["items"])
    record = parse_request(service.log.lines[-1])
    assert record["model_version"] == FALLBACK_VERSION and len(record["impressions"]) == 16


def test_items_released_after_the_request_day_are_never_served(tiny_model, clean_world):
    tuesday = dt.datetime(2026, 1, 13, 8, tzinfo=dt.UTC)  # the feed of the week lists its releases up front
    # half the slots drawn from the catalog: the released filter must hold for the catalog-wide share too
    s = Service(ServeSettings(model=tiny_model, catalog=clean_world.root, rows=RowsConfig(catalog_share=0.5)),
                Clock(simulated=True, start=tuesday))
    s.refresh()
    cat = s.served.tables.catalog
    later = {str(i) for i, d in zip(cat["item_id"], cat["release_day"], strict=True) if d > tuesday.toordinal()}
    assert later
    shown = set()
    for i in range(30):
        query = Query(request_id=f"r{i}", member_id=f"member-{i}", member={},
                      context={"hour_of_day": 8, "day_of_week": 1, "platform": "ios"}, day=tuesday.toordinal(), k=10)
        [page] = s.serve([query], [tuesday])
        shown |= {item["item_id"] for row in page["rows"] for item in row["items"]}
    assert len(shown) > 100 and not shown & later


def test_a_model_that_fails_to_warm_is_rejected(tiny_model, clean_world, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tiny_model, bad)
    shutil.rmtree(bad / "ranking" / "variables")
    s = Service(ServeSettings(model=str(bad), catalog=clean_world.root), Clock(simulated=True, start=NOW))
    assert s.refresh()
    assert s.served.version is None and s.served.reason == "model_load_failed"
    assert "ranking" in next(iter(s.rejected.values()))
    assert len(s.served.tables.profiles) > 0  # its tables still serve the fallback's "for your usual"
    assert not s.refresh()  # rejected: not retried until the pointer or the catalog moves

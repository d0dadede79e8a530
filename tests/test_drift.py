"""Tests of recloop.simulator.drift: each injected change does exactly what it says, and nothing else.

Every drifted world has the seed of the 4-week baseline (``base_world``), so its
week 0 must be byte-identical and its week 1 must differ from the baseline's
week 1 only where the drift says.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from typing import Any

import recloop  # noqa: F401  (first: sets the Keras switch before anything imports TensorFlow)

# isort: split
import pytest
from conftest import (
    BASE_SEED,
    SimWorld,
    read_catalog,
    week_files,
    week_lines,
    week_request_dicts,
)

from recloop.simulator import DRIFT_KINDS, Drift, parse_drift
from recloop.simulator.drift import active


@pytest.fixture(scope="module")
def drifted(make_world):
    """``drifted("unit-bug@1")``: the baseline's seed with one drift, 2 weeks (or ``weeks``)."""
    return lambda spec, weeks=2: make_world(BASE_SEED, weeks, drifts=(spec,))


def _same_week(a: SimWorld, b: SimWorld, week: int) -> None:
    fa, fb = week_files(a.root, week), week_files(b.root, week)
    assert sorted(fa) == sorted(fb)
    assert any(p.startswith("requests/") for p in fa) and any(p.startswith("events/") for p in fa)
    for path in fa:
        assert fa[path] == fb[path], f"week {week}: {path} differs"


def _events(world: SimWorld, week: int) -> list[dict[str, Any]]:
    return [json.loads(line) for line in week_lines(world.root, "events", week)]


def _strip_impressions(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != "impressions"}


ALL_KINDS = ("unit-bug", "null-surge", "platform-rename", "new-category", "taste-shift", "event-dup", "event-clock",
             "propensity-bug", "explored-bug", "event-lag", "request-dup", "row-case", "hour-tz", "tenure-default", "stale-category")


def test_the_kinds_are_the_documented_ones() -> None:
    assert set(DRIFT_KINDS) == set(ALL_KINDS)


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_week_before_the_drift_is_byte_identical(kind: str, drifted, base_world: SimWorld) -> None:
    world = drifted(f"{kind}@1")
    _same_week(world, base_world, 0)
    weeks = world.manifest["weeks"]
    assert weeks[0]["drifts"] == [] and weeks[1]["drifts"] == [f"{kind}@1"]
    assert world.manifest["params"]["drifts"] == [f"{kind}@1"]


def test_unit_bug_multiplies_durations_by_60_and_nothing_else(drifted, base_world: SimWorld) -> None:
    world = drifted("unit-bug@1")
    base, bugged = week_request_dicts(base_world.root, 1), week_request_dicts(world.root, 1)
    assert base.keys() == bugged.keys() and len(base) > 0
    for rid, record in bugged.items():
        expected = copy.deepcopy(base[rid])
        for im in expected["impressions"]:
            im["item"]["duration_min"] *= 60
        assert record == expected, rid
    assert _events(world, 1) == _events(base_world, 1)
    # the catalog feed is not the server: it keeps minutes
    assert read_catalog(world.root, world.week_start(1)) == read_catalog(base_world.root, world.week_start(1))


def test_null_surge_nulls_country_in_about_85_percent(drifted, base_world: SimWorld) -> None:
    world = drifted("null-surge@1")
    base, surged = week_request_dicts(base_world.root, 1), week_request_dicts(world.root, 1)
    assert base.keys() == surged.keys()
    assert all(r["member"]["country"] is not None for r in base.values())
    nulls = 0
    for rid, record in surged.items():
        expected = copy.deepcopy(base[rid])
        if record["member"]["country"] is None:
            nulls += 1
            expected["member"]["country"] = None
        assert record == expected, rid
    assert 0.80 <= nulls / len(surged) <= 0.90
    assert _events(world, 1) == _events(base_world, 1)


def test_event_dup_sends_some_events_twice_and_changes_nothing_else(drifted, base_world: SimWorld) -> None:
    world = drifted("event-dup@1")
    assert week_request_dicts(world.root, 1) == week_request_dicts(base_world.root, 1)
    base, sent = _events(base_world, 1), _events(world, 1)
    twice = len(sent) - len(base)
    assert 0.25 <= twice / len(base) <= 0.35
    deduped = [e for i, e in enumerate(sent) if i == 0 or e != sent[i - 1]]  # a retry follows its original
    assert deduped == base


def test_event_clock_puts_some_events_two_days_ahead(drifted, base_world: SimWorld) -> None:
    world = drifted("event-clock@1")
    assert week_request_dicts(world.root, 1) == week_request_dicts(base_world.root, 1)
    base, sent = _events(base_world, 1), _events(world, 1)
    assert len(sent) == len(base)
    ahead = 0
    for was, now in zip(base, sent, strict=True):
        assert {k: v for k, v in now.items() if k != "ts"} == {k: v for k, v in was.items() if k != "ts"}
        if now["ts"] != was["ts"]:
            ahead += 1
            shift = dt.datetime.fromisoformat(now["ts"]) - dt.datetime.fromisoformat(was["ts"])
            assert shift == dt.timedelta(days=2)
    assert 0.15 <= ahead / len(base) <= 0.25


def test_event_lag_posts_some_events_one_to_five_minutes_late(drifted, base_world: SimWorld) -> None:
    world = drifted("event-lag@1")
    assert week_request_dicts(world.root, 1) == week_request_dicts(base_world.root, 1)
    base, sent = _events(base_world, 1), _events(world, 1)
    lagged = 0
    for was, now in zip(base, sent, strict=True):
        assert {k: v for k, v in now.items() if k != "ts"} == {k: v for k, v in was.items() if k != "ts"}
        late = (dt.datetime.fromisoformat(now["ts"]) - dt.datetime.fromisoformat(was["ts"])).total_seconds()
        assert late == 0 or 60 <= late <= 300
        lagged += late > 0
    assert 0.25 <= lagged / len(base) <= 0.35


@pytest.mark.parametrize(("kind", "field", "value"), [("propensity-bug", "propensity", 1.0),
                                                      ("explored-bug", "explored", False)])
def test_a_logging_bug_changes_one_logged_field_and_nothing_members_do(kind, field, value, drifted,
                                                                       base_world: SimWorld) -> None:
    world = drifted(f"{kind}@1")
    base, bugged = week_request_dicts(base_world.root, 1), week_request_dicts(world.root, 1)
    assert base.keys() == bugged.keys()
    changed = 0
    for rid, record in bugged.items():
        expected = copy.deepcopy(base[rid])
        for im in expected["impressions"]:
            changed += im[field] != value
            im[field] = value
        assert record == expected, rid
    assert changed > 0.05 * sum(len(r["impressions"]) for r in base.values())
    assert _events(world, 1) == _events(base_world, 1)


def test_request_dup_logs_some_requests_twice_and_changes_nothing_else(drifted, base_world: SimWorld) -> None:
    world = drifted("request-dup@1")
    base, sent = week_lines(base_world.root, "requests", 1), week_lines(world.root, "requests", 1)
    deduped = [line for i, line in enumerate(sent) if i == 0 or line != sent[i - 1]]  # a retry follows its original
    assert deduped == base
    assert 0.07 <= (len(sent) - len(base)) / len(base) <= 0.13
    assert _events(world, 1) == _events(base_world, 1)


def test_row_case_renames_the_rows_and_nothing_else(drifted, base_world: SimWorld) -> None:
    world = drifted("row-case@1")
    base, bugged = week_request_dicts(base_world.root, 1), week_request_dicts(world.root, 1)
    assert base.keys() == bugged.keys()
    for rid, record in bugged.items():
        expected = copy.deepcopy(base[rid])
        for im in expected["impressions"]:
            im["row"] = im["row"].title()
        assert record == expected, rid
    assert {im["row"] for r in bugged.values() for im in r["impressions"]} == {"Popular_Now", "For_Your_Usual"}


def test_hour_tz_moves_the_logged_hour_8_hours_ahead_of_ts(drifted, base_world: SimWorld) -> None:
    world = drifted("hour-tz@1")
    base, bugged = week_request_dicts(base_world.root, 1), week_request_dicts(world.root, 1)
    assert base.keys() == bugged.keys()
    for rid, record in bugged.items():
        was = base[rid]
        assert record["context"]["hour_of_day"] == (was["context"]["hour_of_day"] + 8) % 24
        assert dt.datetime.fromisoformat(record["ts"]).hour == was["context"]["hour_of_day"]  # ts stays UTC
        assert record["member"] == was["member"] and record["ts"] == was["ts"]


def test_tenure_default_sends_0_for_about_40_percent(drifted, base_world: SimWorld) -> None:
    world = drifted("tenure-default@1")
    base, bugged = week_request_dicts(base_world.root, 1), week_request_dicts(world.root, 1)
    assert base.keys() == bugged.keys()
    defaulted = 0
    for rid, record in bugged.items():
        expected = copy.deepcopy(base[rid])
        if record["member"]["tenure_days"] != expected["member"]["tenure_days"]:
            defaulted += 1
            assert record["member"]["tenure_days"] == 0
            expected["member"]["tenure_days"] = 0
        assert _strip_impressions(record) == _strip_impressions(expected), rid
    assert 0.3 <= defaulted / len(bugged) <= 0.45  # 40% of requests, less those of members who joined that day


def test_stale_category_serves_a_fifth_of_items_with_another_category(drifted, base_world: SimWorld) -> None:
    world = drifted("stale-category@1")
    base, bugged = week_request_dicts(base_world.root, 1), week_request_dicts(world.root, 1)
    assert base.keys() == bugged.keys()
    stale, items = set(), set()
    for rid, record in bugged.items():
        for now, was in zip(record["impressions"], base[rid]["impressions"], strict=True):
            items.add(now["item_id"])
            if now["item"]["category"] != was["item"]["category"]:
                stale.add(now["item_id"])
            assert {**now, "item": {**now["item"], "category": None}} == \
                {**was, "item": {**was["item"], "category": None}}, rid
    assert 0.1 <= len(stale) / len(items) <= 0.3
    assert _events(world, 1) == _events(base_world, 1)
    # the catalog feed is the truth: it keeps every category
    assert read_catalog(world.root, world.week_start(1)) == read_catalog(base_world.root, world.week_start(1))


def test_platform_rename_serves_android_as_Android(drifted, base_world: SimWorld) -> None:
    world = drifted("platform-rename@1")
    base, renamed = week_request_dicts(base_world.root, 1), week_request_dicts(world.root, 1)
    assert base.keys() == renamed.keys()
    platforms = {r["context"]["platform"] for r in renamed.values()}
    assert "Android" in platforms and "android" not in platforms
    android = set()
    for rid, record in renamed.items():
        was = base[rid]["context"]["platform"]
        if was == "android":
            android.add(rid)
            assert record["context"]["platform"] == "Android"
            expected = dict(base[rid], context=dict(base[rid]["context"], platform="Android"))
            assert _strip_impressions(record) == _strip_impressions(expected), rid
        else:  # the policy ranks other platforms exactly as before
            assert record == base[rid], rid
    assert android
    # members behave as before: events on requests of other platforms are unchanged
    def others(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [e for e in events if e["request_id"] not in android]

    assert others(_events(world, 1)) == others(_events(base_world, 1))


def test_new_category_appears_from_its_week_only(drifted, base_world: SimWorld) -> None:
    world = drifted("new-category@1")

    def categories(w: SimWorld, week: int) -> tuple[set[str], set[str]]:
        catalog = {it["category"] for it in read_catalog(w.root, w.week_start(week)).values()}
        served = {im["item"]["category"] for r in week_request_dicts(w.root, week).values()
                  for im in r["impressions"]}
        return catalog, served

    assert all("boxing" not in c for week in range(base_world.weeks) for c in categories(base_world, week))
    assert all("boxing" not in c for c in categories(world, 0))
    catalog, served = categories(world, 1)
    assert "boxing" in catalog and "boxing" in served
    # the old catalog is untouched: the new items come on top
    base_catalog = read_catalog(base_world.root, world.week_start(1))
    new_catalog = read_catalog(world.root, world.week_start(1))
    assert {i: it for i, it in new_catalog.items() if i in base_catalog} == base_catalog
    assert {it["category"] for i, it in new_catalog.items() if i not in base_catalog} == {"boxing"}
    assert world.manifest["weeks"][1]["items"] == len(new_catalog) > base_world.manifest["weeks"][1]["items"]
    # same traffic: request ids, times, members and contexts
    base, drifted_requests = week_request_dicts(base_world.root, 1), week_request_dicts(world.root, 1)
    assert base.keys() == drifted_requests.keys()
    for rid, record in drifted_requests.items():
        assert _strip_impressions(record) == _strip_impressions(base[rid]), rid


def test_taste_shift_keeps_the_requests_and_changes_the_events(drifted, base_world: SimWorld) -> None:
    world = drifted("taste-shift@1")
    assert week_lines(world.root, "requests", 1) == week_lines(base_world.root, "requests", 1)
    shifted, base = _events(world, 1), _events(base_world, 1)
    assert shifted != base
    def clicked(events: list[dict[str, Any]]) -> set[tuple[str, str]]:
        return {(e["request_id"], e["item_id"]) for e in events if e["event"] == "click"}

    a, b = clicked(shifted), clicked(base)
    assert len(a ^ b) > 0.2 * len(a | b), "a taste shift should move a good share of the clicks"


def test_a_drift_with_a_duration_ends(make_world, base_world: SimWorld) -> None:
    world = make_world(BASE_SEED, 3, drifts=("unit-bug@1:1",))
    assert [w["drifts"] for w in world.manifest["weeks"]] == [[], ["unit-bug@1:1"], []]
    _same_week(world, base_world, 0)
    _same_week(world, base_world, 2)
    base, bugged = week_request_dicts(base_world.root, 1), week_request_dicts(world.root, 1)
    for rid, record in bugged.items():
        assert [im["item"]["duration_min"] for im in record["impressions"]] == [
            60 * im["item"]["duration_min"] for im in base[rid]["impressions"]]
    assert _events(world, 1) == _events(base_world, 1)


# ---------------------------------------------------------------- parsing KIND@W[:D]


@pytest.mark.parametrize(("text", "expected"), [
    ("unit-bug@1", Drift("unit-bug", 1)),
    (" null-surge@0 ", Drift("null-surge", 0)),
    ("taste-shift@3:2", Drift("taste-shift", 3, 2)),
    ("new-category@10:1", Drift("new-category", 10, 1)),
])
def test_parse_drift(text: str, expected: Drift) -> None:
    drift = parse_drift(text)
    assert drift == expected
    assert parse_drift(str(drift)) == drift


@pytest.mark.parametrize("text", ["unit-bug", "unit_bug@1", "Unit-Bug@1", "unit-bug@-1", "unit-bug@1:",
                                  "unit-bug@x", "earthquake@2", "", "unit-bug@1:2:3"])
def test_parse_drift_errors_name_the_text_and_the_kinds(text: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_drift(text)
    message = str(info.value)
    assert repr(text) in message
    assert "KIND@WEEK[:WEEKS]" in message
    for kind in ALL_KINDS:
        assert kind in message


def test_parse_drift_rejects_zero_weeks() -> None:
    with pytest.raises(ValueError, match=r"'unit-bug@1:0'.*>= 1"):
        parse_drift("unit-bug@1:0")


def test_active_weeks() -> None:
    open_ended, bounded = parse_drift("unit-bug@2"), parse_drift("null-surge@1:2")
    assert [open_ended.active(w) for w in range(5)] == [False, False, True, True, True]
    assert [bounded.active(w) for w in range(5)] == [False, True, True, False, False]
    drifts = [open_ended, bounded]
    assert active(drifts, "unit-bug", 3) and not active(drifts, "null-surge", 3)
    assert not active(drifts, "taste-shift", 2) and not active([], "unit-bug", 0)

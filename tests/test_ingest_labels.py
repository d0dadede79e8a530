"""Labelling rules of ingest on hand-built requests and events (no Beam)."""

import datetime as dt
import json

import recloop  # noqa: F401  (first: sets the Keras switch before anything imports TensorFlow)

# isort: split
import pytest

from recloop.features.records import EventRecord, RequestRecord, event_record, parse_request
from recloop.ingest.labels import label_request

T0 = dt.datetime(2026, 1, 5, 7, 30, tzinfo=dt.UTC)
DAY = 86_400


def _request(*items: str) -> RequestRecord:
    item = {"category": "yoga", "creator": "c1", "duration_min": 10.0, "language": "en",
            "release_date": "2026-01-01", "age_days": 4}
    return parse_request(json.dumps({
        "request_id": "r1", "ts": "2026-01-05T07:30:00Z", "model_version": "v1",
        "member": {"member_id": "m1", "tenure_days": 3, "country": "US", "preferred_category": None},
        "context": {"hour_of_day": 7, "day_of_week": 0, "platform": "ios"},
        "impressions": [{"item_id": i, "position": p, "row": "popular_now", "score": 1.0, "propensity": 0.5, "explored": False,
                         "item": item} for p, i in enumerate(items)],
    }))


def _event(item: str, event: str, seconds: float) -> EventRecord:
    return event_record({"request_id": "r1", "item_id": item, "event": event, "ts": T0 + dt.timedelta(seconds=seconds)})


def _labels(result, item):
    ex = next(e for e in result.examples if e["item_id"] == item)
    return ex["label_click"], ex["label_complete"], ex["label_like"]


def test_click_inside_the_window_labels_the_impression_and_only_it():
    r = label_request(_request("a", "b"), [_event("a", "click", 30), _event("a", "start", 31)], DAY)
    assert _labels(r, "a") == (1, 0, 0)
    assert _labels(r, "b") == (0, 0, 0)
    assert [e["label_start"] for e in r.examples] == [1, 0]  # a start labels no head, but is kept
    assert r.events_used == 2 and not r.drops and not r.dead_events


def test_each_used_click_is_counted_in_its_delay_bucket_and_later_events_are_not():
    events = [_event("a", "click", 0), _event("b", "click", 9.9), _event("c", "click", 10), _event("d", "click", 599),
              _event("e", "click", 600), _event("a", "start", 700), _event("f", "click", DAY + 1)]
    r = label_request(_request("a", "b", "c", "d", "e", "f"), events, DAY)
    assert r.click_delays == {"under_10s": 2, "10s_to_1m": 1, "1m_to_10m": 1, "over_10m": 1}  # f: past the window


def test_an_event_at_the_same_second_as_the_request_counts():
    r = label_request(_request("a"), [_event("a", "click", 0)], DAY)
    assert _labels(r, "a") == (1, 0, 0)


def test_the_window_edge_is_inclusive_and_later_events_are_counted_not_used():
    r = label_request(_request("a", "b"), [_event("a", "click", DAY), _event("b", "click", DAY + 1)], DAY)
    assert _labels(r, "a") == (1, 0, 0)
    assert _labels(r, "b") == (0, 0, 0)
    assert r.drops == {"outside_window": 1} and r.events_used == 1


def test_a_duplicate_event_is_counted_once():
    e = _event("a", "like", 600)
    r = label_request(_request("a"), [e, e, _event("a", "complete", 590)], DAY)
    assert _labels(r, "a") == (0, 1, 1)
    assert r.drops == {"duplicate_event": 1} and r.events_used == 2


def test_events_before_the_request_or_for_unshown_items_are_dead_letters():
    early, stranger = _event("a", "click", -5), _event("zz", "click", 5)
    r = label_request(_request("a"), [early, stranger], DAY)
    assert _labels(r, "a") == (0, 0, 0)
    assert r.dead_events == [("before_request", early), ("no_impression", stranger)]
    assert r.events_used == 0


def test_a_repeated_item_is_one_example_and_a_counted_duplicate_impression():
    r = label_request(_request("a", "b", "a"), [_event("a", "click", 3)], DAY)
    assert [e["item_id"] for e in r.examples] == ["a", "b"]
    assert [e["position"] for e in r.examples] == [0, 1]  # the first showing is kept
    assert r.drops == {"duplicate_impression": 1}
    assert len(r.examples) + r.drops["duplicate_impression"] == 3


@pytest.mark.parametrize("hours", [1, 24, 48])
def test_every_event_is_accounted_for_exactly_once(hours):
    events = [_event("a", "click", s) for s in (-1, 0, 3600, 2 * DAY, 3 * DAY)] + [_event("q", "like", 9)]
    events.append(events[2])  # one duplicate
    r = label_request(_request("a", "b"), events, hours * 3600)
    accounted = r.events_used + sum(r.drops.values()) + len(r.dead_events)
    assert accounted == len(events)


def test_a_cutoff_keeps_events_from_eval_time_out_of_training_labels():
    cutoff = T0 + dt.timedelta(seconds=100)
    events = [_event("a", "click", 99), _event("a", "like", 100), _event("b", "click", 5000)]
    r = label_request(_request("a", "b"), events, DAY, cutoff=cutoff)
    assert _labels(r, "a") == (1, 0, 0)
    assert _labels(r, "b") == (0, 0, 0)
    assert r.drops == {"after_split": 2} and r.events_used == 1

"""Tests of recloop.features.records: the typed request and event log records."""

from __future__ import annotations

import copy
import datetime as dt
import json
from typing import Any

import recloop  # noqa: F401  (first: sets the Keras switch before anything imports TensorFlow)

# isort: split
import pytest

from recloop.features.records import (
    EVENT_TYPES,
    EventRecord,
    RecordError,
    RequestRecord,
    event_record,
    format_ts,
    parse_event,
    parse_request,
    request_record,
    to_json_line,
)

UTC = dt.UTC


def request_dict() -> dict[str, Any]:
    """A valid request record with two impressions (a fresh copy each call)."""
    item = {
        "category": "yoga",
        "creator": "c7",
        "duration_min": 20.0,
        "language": "en",
        "release_date": "2025-12-01",
        "age_days": 35,
    }
    return {
        "request_id": "req-1",
        "ts": "2026-01-05T08:30:00+01:00",  # 07:30 UTC
        "model_version": "v3",
        "member": {"member_id": "m1", "tenure_days": 120, "country": "US", "preferred_category": "hiit"},
        "context": {"hour_of_day": 7, "day_of_week": 0, "platform": "ios"},
        "impressions": [
            {"item_id": "i1", "position": 0, "row": "top", "score": 0.75, "propensity": 0.5, "explored": False, "item": item},
            {"item_id": "i2", "position": 1, "row": "top", "score": 0.25, "propensity": 1.0, "explored": False,
             "item": dict(item, category="hiit", duration_min=45.5, age_days=0, release_date="2026-01-05")},
        ],
    }


def event_dict() -> dict[str, Any]:
    return {"request_id": "req-1", "item_id": "i1", "event": "click", "ts": "2026-01-05T07:31:02Z"}


def _set(record: dict, path: str, value: Any) -> dict:
    """Sets a dotted path (list indices as numbers) in a copy of record."""
    record = copy.deepcopy(record)
    *parents, last = path.split(".")
    node: Any = record
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    node[int(last) if isinstance(node, list) else last] = value
    return record


def _drop(record: dict, path: str) -> dict:
    record = copy.deepcopy(record)
    *parents, last = path.split(".")
    node: Any = record
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    del node[last]
    return record


# --- valid records -----------------------------------------------------------------


def test_request_round_trips_through_json():
    record: RequestRecord = parse_request(json.dumps(request_dict()))
    assert isinstance(record, dict)
    assert record["ts"] == dt.datetime(2026, 1, 5, 7, 30, tzinfo=UTC)
    assert record["ts"].utcoffset() == dt.timedelta(0)
    assert record["member"]["member_id"] == "m1"
    assert record["context"]["hour_of_day"] == 7
    assert [i["item_id"] for i in record["impressions"]] == ["i1", "i2"]
    assert record["impressions"][1]["item"]["release_date"] == dt.date(2026, 1, 5)
    assert record["impressions"][1]["item"]["duration_min"] == 45.5

    line = to_json_line(record)
    assert json.loads(line)["ts"] == "2026-01-05T07:30:00Z"  # normalised to UTC, Z suffix
    assert json.loads(line) == json.loads(json.dumps(request_dict())) | {"ts": "2026-01-05T07:30:00Z"}
    again = parse_request(line)
    assert again == record
    assert to_json_line(again) == line


def test_event_round_trips_through_json():
    raw = dict(event_dict(), ts="2026-01-05T02:31:02-05:00")
    record: EventRecord = parse_event(json.dumps(raw))
    assert record["ts"] == dt.datetime(2026, 1, 5, 7, 31, 2, tzinfo=UTC)
    line = to_json_line(record)
    assert json.loads(line) == event_dict()  # ts re-written as UTC "Z"
    assert parse_event(line) == record


@pytest.mark.parametrize("event", EVENT_TYPES)
def test_every_event_type_parses(event):
    assert parse_event(json.dumps(dict(event_dict(), event=event)))["event"] == event


def test_parse_accepts_bytes():
    assert parse_event(json.dumps(event_dict()).encode("utf-8")) == parse_event(json.dumps(event_dict()))
    assert parse_request(json.dumps(request_dict()).encode("utf-8"))["request_id"] == "req-1"


@pytest.mark.parametrize("ts", ["2026-01-05T07:30:00Z", "2026-01-05T07:30:00z", "2026-01-05t07:30:00+00:00",
                                "2026-01-05 09:30:00+02:00", "2026-01-05T07:30:00.000Z"])
def test_rfc3339_variants_are_the_same_instant(ts):
    record = parse_event(json.dumps(dict(event_dict(), ts=ts)))
    assert record["ts"] == dt.datetime(2026, 1, 5, 7, 30, tzinfo=UTC)
    assert json.loads(to_json_line(record))["ts"] == "2026-01-05T07:30:00Z"


@pytest.mark.parametrize("how", ["null", "absent"])
def test_nullable_member_features_may_be_null_or_absent(how):
    raw = request_dict()
    for name in ("tenure_days", "country", "preferred_category"):
        if how == "null":
            raw["member"][name] = None
        else:
            del raw["member"][name]
    record = parse_request(json.dumps(raw))
    assert record["member"].get("tenure_days") is None
    assert record["member"].get("country") is None
    assert record["member"].get("preferred_category") is None
    assert parse_request(to_json_line(record)) == record


def test_out_of_vocabulary_and_out_of_expected_range_values_are_valid_records():
    # Domains are validation's job, not parsing's (spec.py docstring).
    raw = _set(request_dict(), "context.platform", "Android")
    raw = _set(raw, "impressions.0.item.duration_min", 1200.0)
    raw = _set(raw, "member.country", "ZZ")
    raw = _set(raw, "impressions.0.item.category", "juggling")
    record = parse_request(json.dumps(raw))
    assert record["context"]["platform"] == "Android"
    assert record["impressions"][0]["item"]["duration_min"] == 1200.0
    assert record["member"]["country"] == "ZZ"


def test_integer_is_accepted_for_float_fields():
    raw = _set(request_dict(), "impressions.0.item.duration_min", 20)
    raw = _set(raw, "impressions.0.score", 1)
    record = parse_request(json.dumps(raw))
    assert record["impressions"][0]["item"]["duration_min"] == 20.0
    assert record["impressions"][0]["score"] == 1.0


def test_propensity_bounds_are_exclusive_zero_inclusive_one():
    for value in (1.0, 1e-9):
        raw = _set(request_dict(), "impressions.0.propensity", value)
        assert parse_request(json.dumps(raw))["impressions"][0]["propensity"] == value


def test_format_ts():
    assert format_ts(dt.datetime(2026, 1, 5, 8, 30, 15, 999, tzinfo=dt.timezone(dt.timedelta(hours=1)))) == (
        "2026-01-05T07:30:15Z"
    )
    with pytest.raises(ValueError, match="no time zone"):
        format_ts(dt.datetime(2026, 1, 5, 7, 30))


def test_naive_python_datetime_is_rejected():
    with pytest.raises(RecordError, match="timezone-aware"):
        event_record({"request_id": "r", "item_id": "i", "event": "click", "ts": dt.datetime(2026, 1, 5, 7, 30)})
    when = dt.datetime(2026, 1, 5, 7, 30, tzinfo=UTC)
    aware = event_record({"request_id": "r", "item_id": "i", "event": "click", "ts": when})
    assert parse_event(to_json_line(aware)) == aware


def test_python_built_request_is_checked_like_a_parsed_one():
    record = parse_request(json.dumps(request_dict()))
    assert request_record(record) == record
    with pytest.raises(RecordError) as info:
        request_record(_set(record, "context.hour_of_day", 24))
    assert info.value.field == "context.hour_of_day" and info.value.reason == "value"


# --- malformed records -------------------------------------------------------------

# (id, parser, line, field, reason, fragments the message must contain)
BAD = [
    ("hour_of_day as string", "request", _set(request_dict(), "context.hour_of_day", "7"),
     "context.hour_of_day", "type", ["valid integer", "'7' (str)"]),
    ("hour_of_day 25", "request", _set(request_dict(), "context.hour_of_day", 25),
     "context.hour_of_day", "value", ["less than or equal to 23", "25 (int)"]),
    ("hour_of_day float", "request", _set(request_dict(), "context.hour_of_day", 7.5),
     "context.hour_of_day", "type", ["integer", "7.5 (float)"]),
    ("day_of_week -1", "request", _set(request_dict(), "context.day_of_week", -1),
     "context.day_of_week", "value", ["greater than or equal to 0", "-1 (int)"]),
    ("propensity 0", "request", _set(request_dict(), "impressions.0.propensity", 0),
     "impressions.0.propensity", "value", ["greater than 0", "got 0 (int)"]),
    ("propensity 1.5", "request", _set(request_dict(), "impressions.1.propensity", 1.5),
     "impressions.1.propensity", "value", ["less than or equal to 1", "1.5 (float)"]),
    ("score 3.7", "request", _set(request_dict(), "impressions.1.score", 3.7),
     "impressions.1.score", "value", ["less than or equal to 1", "3.7 (float)"]),
    ("score -0.5", "request", _set(request_dict(), "impressions.0.score", -0.5),
     "impressions.0.score", "value", ["greater than or equal to 0", "-0.5 (float)"]),
    ("negative position", "request", _set(request_dict(), "impressions.0.position", -1),
     "impressions.0.position", "value", ["greater than or equal to 0", "-1 (int)"]),
    ("negative tenure", "request", _set(request_dict(), "member.tenure_days", -3),
     "member.tenure_days", "value", ["greater than or equal to 0", "-3 (int)"]),
    ("duration 0", "request", _set(request_dict(), "impressions.0.item.duration_min", 0),
     "impressions.0.item.duration_min", "value", ["greater than 0", "0 (int)"]),
    ("duration as string", "request", _set(request_dict(), "impressions.0.item.duration_min", "20"),
     "impressions.0.item.duration_min", "type", ["valid number", "'20' (str)"]),
    ("member_id as int", "request", _set(request_dict(), "member.member_id", 42),
     "member.member_id", "type", ["valid string", "42 (int)"]),
    ("empty member_id", "request", _set(request_dict(), "member.member_id", ""),
     "member.member_id", "value", ["at least 1 character", "'' (str)"]),
    ("country as int", "request", _set(request_dict(), "member.country", 1),
     "member.country", "type", ["valid string", "1 (int)"]),
    ("missing ts", "request", _drop(request_dict(), "ts"),
     "ts", "missing", ["required field 'ts' is missing"]),
    ("missing member.member_id", "request", _drop(request_dict(), "member.member_id"),
     "member.member_id", "missing", ["required field 'member.member_id' is missing"]),
    ("missing item metadata", "request", _drop(request_dict(), "impressions.0.item"),
     "impressions.0.item", "missing", ["'impressions.0.item'", "missing"]),
    ("unexpected top-level field", "request", _set(request_dict(), "debug", True),
     "debug", "unexpected", ["unexpected field 'debug'", "not in the log contract"]),
    ("unexpected nested field", "request", _set(request_dict(), "context.locale", "en_US"),
     "context.locale", "unexpected", ["unexpected field 'context.locale'"]),
    ("unix seconds as string", "request", _set(request_dict(), "ts", "1767598200"),
     "ts", "value", ["RFC 3339", "'1767598200' (str)"]),
    ("unix seconds as int", "request", _set(request_dict(), "ts", 1767598200),
     "ts", "value", ["RFC 3339", "1767598200 (int)"]),
    ("naive timestamp", "request", _set(request_dict(), "ts", "2026-01-05T07:30:00"),
     "ts", "value", ["RFC 3339", "'2026-01-05T07:30:00' (str)"]),
    ("date-only timestamp", "request", _set(request_dict(), "ts", "2026-01-05"),
     "ts", "value", ["RFC 3339", "'2026-01-05' (str)"]),
    ("impossible date in timestamp", "request", _set(request_dict(), "ts", "2026-02-30T07:30:00Z"),
     "ts", "value", ["'2026-02-30T07:30:00Z' (str)"]),
    ("empty impressions", "request", _set(request_dict(), "impressions", []),
     "impressions", "value", ["at least 1 item", "[] (list)"]),
    ("impressions not a list", "request", _set(request_dict(), "impressions", {"item_id": "i1"}),
     "impressions", "type", ["valid array", "(dict)"]),
    ("invalid release_date", "request", _set(request_dict(), "impressions.0.item.release_date", "2025-13-40"),
     "impressions.0.item.release_date", "value", ["valid date", "'2025-13-40' (str)"]),
    ("release_date as text", "request", _set(request_dict(), "impressions.1.item.release_date", "last week"),
     "impressions.1.item.release_date", "value", ["valid date", "'last week' (str)"]),
    ("unknown event type", "event", dict(event_dict(), event="share"),
     "event", "value", ["'click', 'start', 'complete' or 'like'", "'share' (str)"]),
    ("event missing item_id", "event", {k: v for k, v in event_dict().items() if k != "item_id"},
     "item_id", "missing", ["required field 'item_id' is missing"]),
    ("event naive timestamp", "event", dict(event_dict(), ts="2026-01-05T07:30:00"),
     "ts", "value", ["RFC 3339", "'2026-01-05T07:30:00' (str)"]),
    ("event unexpected field", "event", dict(event_dict(), user_agent="x"),
     "user_agent", "unexpected", ["unexpected field 'user_agent'"]),
    ("event request_id null", "event", dict(event_dict(), request_id=None),
     "request_id", "type", ["valid string", "None (NoneType)"]),
]


@pytest.mark.parametrize(("parser", "raw", "field", "reason", "fragments"),
                         [case[1:] for case in BAD], ids=[case[0] for case in BAD])
def test_malformed_record_raises_record_error(parser, raw, field, reason, fragments):
    parse = parse_request if parser == "request" else parse_event
    with pytest.raises(RecordError) as info:
        parse(json.dumps(raw), source="requests/dt=2026-01-05/part-0.jsonl:17")
    error = info.value
    assert isinstance(error, ValueError)
    assert error.kind == parser
    assert error.field == field
    assert error.reason == reason
    message = str(error)
    assert message.startswith(f"{parser} record (requests/dt=2026-01-05/part-0.jsonl:17): ")
    assert f"'{field}'" in message  # the dotted field path
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize(
    "line",
    [
        '{"request_id": "req-1", "ts": "2026-01-05T07:3',  # truncated mid-write
        json.dumps(request_dict())[:-1],  # missing closing brace
        "",
        "not json at all",
    ],
    ids=["truncated-string", "missing-brace", "empty", "garbage"],
)
@pytest.mark.parametrize("parser", ["request", "event"])
def test_invalid_json_is_reason_json_on_the_line(parser, line):
    parse = parse_request if parser == "request" else parse_event
    with pytest.raises(RecordError) as info:
        parse(line, source="events.jsonl:3")
    assert info.value.reason == "json"
    assert info.value.field == "<line>"
    assert info.value.kind == parser
    assert str(info.value).startswith(f"{parser} record (events.jsonl:3): not valid JSON")


def test_json_that_is_not_an_object_is_a_type_error_on_the_line():
    with pytest.raises(RecordError) as info:
        parse_request("[1, 2]")
    assert (info.value.field, info.value.reason) == ("<line>", "type")
    assert "[1, 2] (list)" in str(info.value)


def test_message_without_source_has_no_parenthesis():
    with pytest.raises(RecordError) as info:
        parse_request(json.dumps(_set(request_dict(), "context.hour_of_day", 25)))
    assert str(info.value).startswith("request record: field 'context.hour_of_day': ")


def test_source_appears_in_every_kind_of_message():
    source = "gs://bucket/logs/requests/dt=2026-01-05/a.jsonl.gz:99"
    lines = [
        json.dumps(_drop(request_dict(), "ts")),
        json.dumps(_set(request_dict(), "x", 1)),
        json.dumps(_set(request_dict(), "context.hour_of_day", "7")),
        "{",
    ]
    for line in lines:
        with pytest.raises(RecordError, match="gs://bucket/logs/requests/dt=2026-01-05/a.jsonl.gz:99"):
            parse_request(line, source=source)


def test_several_errors_report_the_first_and_count_the_rest():
    raw = _drop(_drop(event_dict(), "event"), "ts")
    with pytest.raises(RecordError) as info:
        parse_event(json.dumps(raw))
    assert info.value.field == "event"
    assert info.value.reason == "missing"
    assert str(info.value).endswith("and 1 more error(s)")


@pytest.mark.parametrize("ts", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_timestamp_out_of_datetime_range_is_a_record_error(ts):
    with pytest.raises(RecordError) as info:
        parse_event(json.dumps(dict(event_dict(), ts=ts)), source="events.jsonl:1")
    assert (info.value.field, info.value.reason) == ("ts", "value")
